# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lab's network in the kernel: one bridge on the controller, and per host a network namespace joined to
it by a veth pair (``eth0`` inside). The names and numbers come from addresses.py; this file reads the
kernel (``ip -json``) and changes it (``ip``), and nothing else.

Every lab link carries the alias ``unboxed-lab:LAB``, so `down` finds a lab's links even without its record.
IPv6 is off on every lab link: no router solicitation or multicast report leaves a lab host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils.command import shell_join

from .addresses import link_alias, mac_for
from .changes import Changes
from .state import HostRecord, Lab, save_controller
from .system import LabError, run

NETNS_DIR = '/run/netns'


# --- reading ---------------------------------------------------------------------------------------

def ip_json(*args, netns: str | None = None) -> list:
    argv = ['ip'] + (['-n', netns] if netns else []) + ['-j', *args]
    output = run(argv, f'read the network state ({shell_join(argv)})')
    return json.loads(output) if output.strip() else []


def links_by_name(netns: str | None = None) -> dict[str, dict]:
    return {link['ifname']: link for link in ip_json('-d', 'address', 'show', netns=netns)}


def link_addresses(link: dict) -> set[str]:
    return {f"{info['local']}/{info['prefixlen']}" for info in link.get('addr_info', []) if info.get('family') == 'inet'}


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except OSError:
        return None


def routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine already reaches directly: a lab must not shadow one of them."""
    networks = []
    for route in ip_json('-4', 'route', 'show', 'table', 'all'):
        destination = route.get('dst', '')
        if destination in ('', 'default') or route.get('type') in ('local', 'broadcast'):
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(destination if '/' in destination else f'{destination}/32', strict=False))
    return networks


# --- the lab's bridge -----------------------------------------------------------------------------

def bridge_ready(lab: Lab, links: dict) -> bool:
    bridge = links.get(lab.bridge)
    return (bridge is not None and bridge.get('linkinfo', {}).get('info_kind') == 'bridge'
            and str(lab.bridge_address) in link_addresses(bridge) and 'UP' in bridge.get('flags', [])
            and bridge.get('address') == mac_for(lab.bridge_address.ip)
            and bridge.get('ifalias') == link_alias(lab.name))


def ensure_bridge(changes: Changes, lab: Lab) -> None:
    links = links_by_name()
    if not bridge_ready(lab, links):
        changes.make(f'create the bridge {lab.bridge} with {lab.bridge_address}', create_bridge, lab, links)


def create_bridge(lab: Lab, links: dict) -> None:
    if lab.bridge not in links:
        run(['ip', 'link', 'add', lab.bridge, 'type', 'bridge'], f'create the bridge {lab.bridge}')
    # A bridge without a MAC of its own takes the lowest of its ports' and changes it as hosts come and go,
    # which leaves the hosts' ARP entries for the controller stale. Give it a fixed one.
    run(['ip', 'link', 'set', lab.bridge, 'address', mac_for(lab.bridge_address.ip)], f'set the MAC of {lab.bridge}')
    run(['ip', 'link', 'set', lab.bridge, 'alias', link_alias(lab.name)], f'label the bridge {lab.bridge}')
    disable_ipv6(lab.bridge)
    run(['ip', 'address', 'replace', str(lab.bridge_address), 'dev', lab.bridge], f'address the bridge {lab.bridge}')
    run(['ip', 'link', 'set', lab.bridge, 'up'], f'bring the bridge {lab.bridge} up')


def disable_ipv6(interface: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        with open(f'/proc/sys/net/ipv6/conf/{interface}/disable_ipv6', 'w', encoding='ascii') as handle:
            handle.write('1')


# --- a host's namespace and veth pair -------------------------------------------------------------

def ensure_host_network(changes: Changes, lab: Lab, host: HostRecord, controller: dict) -> None:
    if not netns_exists(host.netns):
        changes.make(f'create the network namespace {host.netns}', create_netns, host, controller)
    links = links_by_name()
    if changes.check and not netns_exists(host.netns):
        ready = False
    else:
        ready = veth_ready(lab, host, links)
    if not ready:
        changes.make(f'connect {host.name} to {lab.bridge} as {host.address} ({host.mac})', create_veth, lab, host, links)


def create_netns(host: HostRecord, controller: dict) -> None:
    run_netns_was_mounted = mountinfo.find_mount(NETNS_DIR) is not None
    run(['ip', 'netns', 'add', host.netns], f'create the network namespace {host.netns}')
    # The first `ip netns add` on a machine bind-mounts /run/netns onto itself; remember that it was us.
    if not run_netns_was_mounted and mountinfo.find_mount(NETNS_DIR) is not None:
        controller['mounted_run_netns'] = True
        save_controller(controller)
    run(['nsenter', f'--net={netns_path(host.netns)}', '--', 'sysctl', '-q', '-w',
         'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'],
        f'turn IPv6 off in {host.netns}')
    run(['ip', '-n', host.netns, 'link', 'set', 'lo', 'up'], f'bring lo up in {host.netns}')


def create_veth(lab: Lab, host: HostRecord, links: dict) -> None:
    if host.veth in links:
        run(['ip', 'link', 'delete', host.veth], f'remove the incomplete veth {host.veth}')
    with contextlib.suppress(LabError):
        run(['ip', '-n', host.netns, 'link', 'delete', 'eth0'], 'remove a stale eth0')
    run(['ip', 'link', 'add', host.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.netns],
        f'create the veth pair {host.veth} <-> {host.netns}:eth0')
    disable_ipv6(host.veth)
    run(['ip', 'link', 'set', host.veth, 'alias', link_alias(lab.name)], f'label {host.veth}')
    run(['ip', 'link', 'set', host.veth, 'master', lab.bridge], f'attach {host.veth} to {lab.bridge}')
    run(['ip', 'link', 'set', host.veth, 'up'], f'bring {host.veth} up')
    run(['ip', '-n', host.netns, 'link', 'set', 'eth0', 'address', host.mac], f'set the MAC of {host.name}')
    run(['ip', '-n', host.netns, 'address', 'add', str(host.address), 'dev', 'eth0'], f'address {host.name}')
    run(['ip', '-n', host.netns, 'link', 'set', 'eth0', 'up'], f'bring eth0 of {host.name} up')
    # A host recreated on an address the controller has cached in ARP: forget the old entry.
    run(['ip', 'neighbour', 'flush', 'to', str(host.address.ip), 'dev', lab.bridge], f'flush ARP for {host.address.ip}')


def veth_ready(lab: Lab, host: HostRecord, links: dict) -> bool:
    outside = links.get(host.veth)
    if outside is None or outside.get('master') != lab.bridge or 'UP' not in outside.get('flags', []):
        return False
    inside = links_by_name(host.netns).get('eth0')
    return (inside is not None and inside.get('address') == host.mac and str(host.address) in link_addresses(inside)
            and 'UP' in inside.get('flags', []))


# --- removing -------------------------------------------------------------------------------------

def delete_link(name: str) -> None:
    """Delete a link unless it is gone already: the kernel frees a deleted namespace's veth pairs on its own time."""
    if name not in links_by_name():
        return
    try:
        run(['ip', 'link', 'delete', name], f'remove the link {name}')
    except LabError:
        if name in links_by_name():
            raise


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run(['ip', 'netns', 'delete', name], f'remove the network namespace {name}')


def remove_host_network(host: HostRecord) -> None:
    # The veth first: it takes its peer along at once, while a deleted namespace frees its links later.
    delete_link(host.veth)
    delete_netns(host.netns)
