# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker's default bridge networking, by hand: the plan (bridge, subnet, veth names, addresses, published ports)
and the iproute2 argv lists that make it, as a student would type them.

Pure functions (validation, allocation, names, argv, reading ``ip -j`` output), tested as tables; the module
(container_network) runs the argv lists and reads the kernel's state as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import tempfile

DEFAULT_BRIDGE = 'unboxed0'
# Outside Docker's default address pools (172.17-31.0.0/16 and 192.168.0.0/16 in /20s), podman's 10.88.0.0/16,
# libvirt's 192.168.122.0/24 and the local lab's 10.213.0.0/16.
DEFAULT_SUBNET = '10.47.0.0/24'
NETWORK_DIR = '/var/lib/unboxed/networks'
FORWARDING_FILE = 'forwarding.json'
RECORD_PREFIX = 'bridge-'
RECORD_FORMAT = 1
# What marks a bridge as ours: its ifalias (ip link set BRIDGE alias ...), as the kernel keeps it.
BRIDGE_ALIAS = 'unboxed.lab container_network'
CONTAINER_INTERFACE = 'eth0'
# Interface names: at most 15 bytes (IFNAMSIZ - 1). A bridge's name is also an nftables word and a sysctl path
# component: letters, digits and underscores only.
BRIDGE_PATTERN = re.compile(r'[a-z][a-z0-9_]{0,14}')
PORT_PATTERN = re.compile(r'(?:(?P<host_ip>[0-9.]+):)?(?P<host_port>[0-9]{1,5}):(?P<container_port>[0-9]{1,5})'
                          r'(?:/(?P<protocol>tcp|udp))?')
PROTOCOLS = ('tcp', 'udp')
ANY_ADDRESS = '0.0.0.0'
MIN_PREFIX = 8
MAX_PREFIX = 29


@dataclasses.dataclass(frozen=True, order=True)
class PublishedPort:
    """One ``-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL]``."""
    protocol: str
    host_port: int
    container_port: int
    host_ip: str = ANY_ADDRESS

    def __str__(self) -> str:
        host = '' if self.host_ip == ANY_ADDRESS else f'{self.host_ip}:'
        return f'{host}{self.host_port}:{self.container_port}/{self.protocol}'

    def clashes_with(self, other: PublishedPort) -> bool:
        """Both would take the same host port: same protocol and port, and an address in common."""
        same_port = self.protocol == other.protocol and self.host_port == other.host_port
        return same_port and (self.host_ip == other.host_ip or ANY_ADDRESS in (self.host_ip, other.host_ip))


def parse_port(text: str) -> PublishedPort:
    """Docker's ``-p`` syntax: ``8080:80``, ``8080:80/udp``, ``127.0.0.1:8080:80/tcp``. Raises ValueError."""
    match = PORT_PATTERN.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f'{text!r} is not HOST_PORT:CONTAINER_PORT[/tcp|udp] or HOST_IP:HOST_PORT:CONTAINER_PORT')
    host_ip = match.group('host_ip') or ANY_ADDRESS
    try:
        host_ip = str(ipaddress.IPv4Address(host_ip))
    except ValueError:
        raise ValueError(f'{text!r}: {host_ip} is not an IPv4 address') from None
    ports = {}
    for field in ('host_port', 'container_port'):
        number = int(match.group(field))
        if not 1 <= number <= 65535:
            raise ValueError(f'{text!r}: {field.replace("_", " ")} {number} is not between 1 and 65535')
        ports[field] = number
    return PublishedPort(protocol=match.group('protocol') or 'tcp', host_ip=host_ip, **ports)


def port_problems(option: str, texts) -> tuple[list[PublishedPort], list[str]]:
    """The parsed ports and every problem (unparsable, two taking the same host port), each naming ``option``."""
    ports, problems = [], []
    for text in texts:
        try:
            port = parse_port(text)
        except ValueError as error:
            problems.append(f'{option}: {error}.')
            continue
        clash = next((other for other in ports if other.clashes_with(port)), None)
        if clash:
            problems.append(f'{option}: {port} and {clash} take the same host port.')
        else:
            ports.append(port)
    return sorted(ports), problems


def bridge_problem(bridge: str, option: str = 'bridge') -> str | None:
    if not BRIDGE_PATTERN.fullmatch(bridge or ''):
        return (f'{option} must be 1 to 15 lower-case letters, digits or underscores, starting with a letter (an '
                f'interface name that is also an nftables word), got {bridge!r}.')
    return None


def parse_subnet(text: str, option: str = 'subnet') -> ipaddress.IPv4Network:
    """Raises ValueError with the reason, naming ``option``."""
    try:
        subnet = ipaddress.IPv4Network(str(text), strict=True)
    except ValueError as error:
        raise ValueError(f'{option} {text!r} is not an IPv4 network like {DEFAULT_SUBNET}: {error}') from None
    if not MIN_PREFIX <= subnet.prefixlen <= MAX_PREFIX:
        raise ValueError(f'{option} {text!r}: the prefix must be /{MIN_PREFIX} to /{MAX_PREFIX} (room for the bridge and '
                         f'containers)')
    if subnet.is_loopback or subnet.is_multicast or subnet.is_link_local or subnet.is_unspecified:
        raise ValueError(f'{option} {text!r} is a loopback, multicast, link-local or unspecified range')
    return subnet


def gateway_of(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's own address: the first host, as docker0's 172.17.0.1."""
    return subnet.network_address + 1


def address_problem(option: str, text: str, subnet: ipaddress.IPv4Network) -> str | None:
    try:
        address = ipaddress.IPv4Address(str(text))
    except ValueError:
        return f'{option} {text!r} is not an IPv4 address.'
    if address not in subnet:
        return f'{option} {address} is outside the subnet {subnet}.'
    if address == subnet.network_address:
        return f'{option} {address} is the network address of {subnet}, not a host address.'
    if address == subnet.broadcast_address:
        return f'{option} {address} is the broadcast address of {subnet}.'
    if address == gateway_of(subnet):
        return f'{option} {address} is the bridge\'s own address (the gateway) in {subnet}.'
    return None


def allocate(subnet: ipaddress.IPv4Network, taken) -> ipaddress.IPv4Address | None:
    """The lowest free host address after the gateway (Docker's IPAM hands them out in order), or None when full."""
    taken = {ipaddress.IPv4Address(str(address)) for address in taken}
    for address in subnet.hosts():
        if address != gateway_of(subnet) and address not in taken:
            return address
    return None


def host_veth_name(bridge: str, container_name: str) -> str:
    """The host end of a container's veth pair: ``v`` + the container's name (its first 7 safe characters) + ``-`` +
    6 hex digits of a digest of bridge and name - 15 bytes at most, stable, different for different containers."""
    digest = hashlib.sha256(f'{bridge}\0{container_name}'.encode('utf-8')).hexdigest()[:6]
    visible = re.sub(r'[^A-Za-z0-9_]', '', container_name)[:7]
    return f'v{visible}-{digest}'


def route_overlaps(subnet: ipaddress.IPv4Network, routes, own_devices=()) -> list[str]:
    """The routes of ``ip -j route`` (main table) whose destination overlaps ``subnet``, as ``DST dev DEV``; the
    default route and routes through our own devices (the bridge itself) do not count."""
    found = []
    for route in routes or []:
        destination = route.get('dst')
        if not destination or destination == 'default' or route.get('dev') in own_devices:
            continue
        try:
            network = ipaddress.IPv4Network(destination, strict=False)
        except ValueError:
            continue
        if network.overlaps(subnet):
            found.append(f'{destination} dev {route.get("dev", "?")}')
    return found


# iproute2's JSON, read into what the plan compares.

def link_by_name(links, name: str) -> dict | None:
    return next((link for link in links or [] if link.get('ifname') == name), None)


def ipv4_addresses(addr_entry: dict | None) -> list[str]:
    """``ADDRESS/PREFIX`` of an ``ip -j addr show dev X`` entry, IPv4 only."""
    if not addr_entry:
        return []
    return [f'{info["local"]}/{info["prefixlen"]}' for info in addr_entry.get('addr_info', [])
            if info.get('family') == 'inet' and 'local' in info]


def is_up(link: dict | None) -> bool:
    return bool(link) and 'UP' in link.get('flags', [])


def default_gateway(routes) -> str | None:
    for route in routes or []:
        if route.get('dst') == 'default':
            return route.get('gateway')
    return None


# The commands, as argv lists; the module runs them and returns them joined for the slide.

def bridge_argvs(bridge: str, gateway_cidr: str) -> list[list[str]]:
    return [
        ['ip', 'link', 'add', 'name', bridge, 'type', 'bridge'],
        ['ip', 'link', 'set', 'dev', bridge, 'alias', BRIDGE_ALIAS],
        ['ip', 'address', 'add', gateway_cidr, 'dev', bridge],
        ['ip', 'link', 'set', 'dev', bridge, 'up'],
    ]


def route_localnet_argv(bridge: str) -> list[str]:
    """Lets the seat's own 127.0.0.1:PORT reach a published port: DNATed packets from 127.0.0.1 may leave by the bridge."""
    return ['sysctl', '-w', f'net.ipv4.conf.{bridge}.route_localnet=1']


def forwarding_argv(value: str) -> list[str]:
    return ['sysctl', '-w', f'net.ipv4.ip_forward={value}']


def in_container(pid: int, argv: list[str]) -> list[str]:
    """argv run in the network namespace of ``pid`` only (nsenter --net): the host's ip, the container's interfaces."""
    return ['nsenter', f'--target={pid}', '--net'] + list(argv)


def veth_argvs(host_veth: str, bridge: str, pid: int) -> list[list[str]]:
    return [
        ['ip', 'link', 'add', 'name', host_veth, 'type', 'veth', 'peer', 'name', CONTAINER_INTERFACE, 'netns', str(pid)],
        ['ip', 'link', 'set', 'dev', host_veth, 'master', bridge],
        ['ip', 'link', 'set', 'dev', host_veth, 'up'],
    ]


def delete_link_argv(name: str) -> list[str]:
    return ['ip', 'link', 'delete', 'dev', name]


def container_argvs(pid: int, address_cidr: str, gateway: str, current: dict) -> list[list[str]]:
    """What the container's side still needs: ``current`` says what it has (lo_up, addresses of eth0, eth0_up,
    gateway of the default route)."""
    argvs = []
    if not current.get('lo_up'):
        argvs.append(in_container(pid, ['ip', 'link', 'set', 'dev', 'lo', 'up']))
    for stray in current.get('addresses', []):
        if stray != address_cidr:
            argvs.append(in_container(pid, ['ip', 'address', 'delete', stray, 'dev', CONTAINER_INTERFACE]))
    if address_cidr not in current.get('addresses', []):
        argvs.append(in_container(pid, ['ip', 'address', 'add', address_cidr, 'dev', CONTAINER_INTERFACE]))
    if not current.get('eth0_up'):
        argvs.append(in_container(pid, ['ip', 'link', 'set', 'dev', CONTAINER_INTERFACE, 'up']))
    if current.get('gateway') != gateway:
        argvs.append(in_container(pid, ['ip', 'route', 'replace', 'default', 'via', gateway, 'dev',
                                        CONTAINER_INTERFACE]))
    return argvs


# The record: which container has which address and ports on a bridge, one JSON file per bridge.

class RecordError(Exception):
    """A record exists but cannot be trusted."""


def record_path(network_dir: str, bridge: str) -> str:
    return os.path.join(network_dir, f'{RECORD_PREFIX}{bridge}.json')


def empty_record(bridge: str, subnet: str) -> dict:
    return {'format': RECORD_FORMAT, 'bridge': bridge, 'subnet': subnet, 'containers': {}}


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding='utf-8') as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RecordError(f'{path} cannot be read: {error}') from None
    if not isinstance(data, dict) or data.get('format') != RECORD_FORMAT:
        raise RecordError(f'{path} is not an unboxed network record (format {RECORD_FORMAT})')
    return data


def read_records(network_dir: str) -> dict:
    """Every bridge's record in ``network_dir``, by bridge name."""
    records = {}
    try:
        names = sorted(os.listdir(network_dir))
    except FileNotFoundError:
        return records
    for name in names:
        bridge = name[len(RECORD_PREFIX):-len('.json')]
        if name.startswith(RECORD_PREFIX) and name.endswith('.json') and BRIDGE_PATTERN.fullmatch(bridge):
            record = read_json(os.path.join(network_dir, name))
            if record is not None:
                records[bridge] = record
    return records


def write_json(path: str, data: dict) -> None:
    """Atomically: a reader sees the old or the new file, never half of one."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix='.record.', dir=directory)
    try:
        with os.fdopen(descriptor, 'w', encoding='utf-8') as handle:
            json.dump(dict(data, format=RECORD_FORMAT), handle, indent=2, sort_keys=True)
            handle.write('\n')
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
