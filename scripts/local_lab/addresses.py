# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a lab host gets its address: every name and number of a lab's network, computed, never stored.

Lab N (its slot, 1-254) gets 10.213.N.0/24 unless told otherwise; the bridge (the controller's side) is .1,
host i is .(10 + i), and a host's MAC is a function of its address. Pure functions: net.py makes it so in
the kernel.
"""

from __future__ import annotations

import ipaddress

from .system import LabError

ADDRESS_POOL = ipaddress.ip_network('10.213.0.0/16')
FIRST_HOST_OFFSET = 10
MAX_LAB_INDEX = 254
MAX_HOSTS = 100


def default_subnet(index: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(f'{ADDRESS_POOL.network_address + (index << 8)}/24')


def bridge_address(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    return ipaddress.ip_interface(f'{subnet.network_address + 1}/{subnet.prefixlen}')


def host_address(subnet: ipaddress.IPv4Network, position: int) -> ipaddress.IPv4Interface:
    """Host number ``position`` (1-based) of a lab; fails when the subnet has no room for it."""
    address = subnet.network_address + FIRST_HOST_OFFSET + position
    if address >= subnet.broadcast_address:
        raise LabError(f'{subnet} has no room for host {position}: use a larger --subnet or fewer hosts.')
    return ipaddress.ip_interface(f'{address}/{subnet.prefixlen}')


def mac_for(address: ipaddress.IPv4Address) -> str:
    """A locally administered MAC that is a function of the IPv4 address.

    A host recreated on the same address answers ARP with the same MAC, so neighbours that still
    cache the old entry keep working.
    """
    return '02:75:' + ':'.join(f'{octet:02x}' for octet in address.packed)


def bridge_name(index: int) -> str:
    return f'ulab{index}'


def veth_name(index: int, position: int) -> str:
    # IFNAMSIZ is 16: 'ulab254h100' fits, a name built from the lab's name would not.
    return f'ulab{index}h{position}'


def netns_name(lab: str, host: str) -> str:
    # Dots cannot occur in lab or host names, so the prefix 'unboxed.LAB.' belongs to one lab only.
    return f'unboxed.{lab}.{host}'


def link_alias(lab: str) -> str:
    """The alias set on every link of a lab, so `down` finds them in the kernel even without a state file."""
    return f'unboxed-lab:{lab}'


def free_index(taken, existing_links) -> int:
    """The first lab slot that no other lab records and whose bridge name no link of this machine has."""
    for index in range(1, MAX_LAB_INDEX + 1):
        if index not in taken and bridge_name(index) not in existing_links:
            return index
    raise LabError(f'All {MAX_LAB_INDEX} lab slots are in use: bring a lab down first (`labctl list` shows them).')


def subnet_problem(subnet: ipaddress.IPv4Network, other_labs: dict, routed) -> str | None:
    """Why ``subnet`` cannot be a lab's: ``other_labs`` maps lab names to their subnets, ``routed`` lists the
    networks this machine already reaches directly (a lab must not shadow one of them)."""
    if not subnet.is_private:
        return f'{subnet} is not a private network: a lab uses addresses nobody else does.'
    for name, other in other_labs.items():
        if other.overlaps(subnet):
            return f'{subnet} overlaps lab "{name}" ({other}).'
    for network in routed:
        if network.overlaps(subnet) and network.prefixlen < 32:
            return f'{subnet} overlaps {network}, which this machine already routes.'
    return None


def choose_subnet(index: int, name: str, requested: str | None, other_labs: dict, routed) -> ipaddress.IPv4Network:
    """The requested subnet if it is free; else the lab's default /24, or the first free /24 of the pool."""
    if requested:
        try:
            subnet = ipaddress.ip_network(requested)
        except ValueError as error:
            raise LabError(f'--subnet {requested} is not a network: {error} (write it like 10.213.7.0/24).') from error
        problem = subnet_problem(subnet, other_labs, routed)
        if problem:
            raise LabError(problem)
        return subnet
    if not subnet_problem(default_subnet(index), other_labs, routed):
        return default_subnet(index)
    for candidate in ADDRESS_POOL.subnets(new_prefix=24):
        if candidate.network_address != ADDRESS_POOL.network_address and not subnet_problem(candidate, other_labs, routed):
            return candidate
    raise LabError(f'No free /24 in {ADDRESS_POOL} for lab "{name}": pass --subnet.')
