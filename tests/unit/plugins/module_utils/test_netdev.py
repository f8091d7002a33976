"""netdev's pure logic: Docker's -p syntax, port clashes, bridge names, subnets, addresses, allocation, veth names,
route overlaps, reading ip -j output (real samples from iproute2 6.1), the argv lists, and the records."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import netdev

SUBNET = ipaddress.IPv4Network('10.47.0.0/24')


@pytest.mark.parametrize('text, expected', [
    ('8080:80', '8080:80/tcp'),
    ('8080:80/tcp', '8080:80/tcp'),
    ('53:53/udp', '53:53/udp'),
    ('127.0.0.1:8080:80', '127.0.0.1:8080:80/tcp'),
    (' 1:65535 ', '1:65535/tcp'),
    ('0.0.0.0:8080:80', '8080:80/tcp'),
])
def test_parse_port(text, expected):
    assert str(netdev.parse_port(text)) == expected


@pytest.mark.parametrize('text, reason', [
    ('8080', 'is not HOST_PORT:CONTAINER_PORT'),
    ('8080:80/sctp', 'is not HOST_PORT:CONTAINER_PORT'),
    ('0:80', 'host port 0 is not between'),
    ('8080:70000', 'container port 70000 is not between'),
    ('300.1.1.1:8080:80', 'is not an IPv4 address'),
    ('8080:80\n', 'is not HOST_PORT'),
    ('a:b', 'is not HOST_PORT'),
    ('8080:80; nft flush ruleset', 'is not HOST_PORT'),
])
def test_parse_port_refuses(text, reason):
    if text.endswith('\n'):
        # strip() forgives surrounding white space; an embedded newline is refused.
        text = '8080:\n80'
    with pytest.raises(ValueError, match=reason):
        netdev.parse_port(text)


@pytest.mark.parametrize('first, second, clash', [
    ('8080:80', '8080:81', True),
    ('8080:80', '8080:80/udp', False),
    ('127.0.0.1:8080:80', '8080:80', True),
    ('127.0.0.1:8080:80', '127.0.0.2:8080:80', False),
    ('127.0.0.1:8080:80', '127.0.0.1:8080:81', True),
    ('8080:80', '8081:80', False),
])
def test_clashes_with(first, second, clash):
    a, b = netdev.parse_port(first), netdev.parse_port(second)
    assert a.clashes_with(b) is clash and b.clashes_with(a) is clash


def test_port_problems_collects_every_problem():
    ports, problems = netdev.port_problems('published_ports', ['8080:80', 'x', '8080:81', '53:53/udp'])
    assert [str(port) for port in ports] == ['8080:80/tcp', '53:53/udp']
    assert len(problems) == 2 and all(problem.startswith('published_ports') for problem in problems)


@pytest.mark.parametrize('name, ok', [
    ('unboxed0', True), ('docker0', True), ('b', True), ('a' * 15, True), ('a' * 16, False), ('0abc', False),
    ('Br0', False), ('br-0', False), ('br 0', False), ('', False), ('br"0', False), (None, False),
])
def test_bridge_problem(name, ok):
    assert (netdev.bridge_problem(name) is None) is ok


@pytest.mark.parametrize('text, ok', [
    ('10.47.0.0/24', True), ('172.29.0.0/16', True), ('10.0.0.0/8', True), ('10.47.0.0/29', True),
    ('10.47.0.0/30', False), ('10.0.0.0/7', False), ('10.47.0.1/24', False), ('127.0.0.0/24', False),
    ('169.254.0.0/16', False), ('224.0.0.0/24', False), ('fd00::/64', False), ('nonsense', False),
])
def test_parse_subnet(text, ok):
    if ok:
        assert str(netdev.parse_subnet(text)) == text
    else:
        with pytest.raises(ValueError, match='subnet'):
            netdev.parse_subnet(text)


@pytest.mark.parametrize('text, problem', [
    ('10.47.0.2', None), ('10.47.0.254', None),
    ('10.47.1.2', 'outside the subnet'), ('10.47.0.0', 'network address'), ('10.47.0.255', 'broadcast'),
    ('10.47.0.1', 'bridge\'s own address'), ('10.47.0.2/24', 'not an IPv4 address'), ('x', 'not an IPv4 address'),
])
def test_address_problem(text, problem):
    found = netdev.address_problem('address', text, SUBNET)
    assert (found is None) if problem is None else (problem in found and found.startswith('address'))


def test_allocate_in_order_skipping_the_gateway_and_taken():
    assert str(netdev.allocate(SUBNET, [])) == '10.47.0.2'
    assert str(netdev.allocate(SUBNET, ['10.47.0.2', '10.47.0.4'])) == '10.47.0.3'
    small = ipaddress.IPv4Network('10.47.0.0/29')
    assert netdev.allocate(small, [f'10.47.0.{n}' for n in range(2, 7)]) is None


@pytest.mark.parametrize('name', ['web', 'client', 'a-very-long-container-name.with.dots', 'x'])
def test_host_veth_name_fits_and_is_stable(name):
    veth = netdev.host_veth_name('unboxed0', name)
    assert len(veth.encode()) <= 15 and veth == netdev.host_veth_name('unboxed0', name)
    assert veth != netdev.host_veth_name('other0', name)
    assert all(character.isalnum() or character in '_-' for character in veth)


def test_host_veth_names_differ_for_names_that_look_alike():
    assert netdev.host_veth_name('unboxed0', 'web.1') != netdev.host_veth_name('unboxed0', 'web-1')


# ip -j -4 route show table main, on a lab seat with our bridge up.
ROUTES = json.loads('[{"dst":"default","gateway":"10.213.1.1","dev":"eth0","flags":[]},'
                    '{"dst":"10.47.0.0/24","dev":"unboxed0","protocol":"kernel","scope":"link","prefsrc":"10.47.0.1",'
                    '"flags":[]},{"dst":"10.213.1.0/24","dev":"eth0","protocol":"kernel","scope":"link",'
                    '"prefsrc":"10.213.1.11","flags":[]},{"dst":"192.0.2.7","dev":"eth0","flags":[]}]')


@pytest.mark.parametrize('subnet, own, overlaps', [
    ('10.47.0.0/24', ('unboxed0',), []),
    ('10.47.0.0/24', (), ['10.47.0.0/24 dev unboxed0']),
    ('10.213.0.0/16', ('unboxed0',), ['10.213.1.0/24 dev eth0']),
    ('192.0.2.0/28', (), ['192.0.2.7 dev eth0']),
    ('172.29.0.0/24', (), []),
])
def test_route_overlaps(subnet, own, overlaps):
    assert netdev.route_overlaps(ipaddress.IPv4Network(subnet), ROUTES, own) == overlaps


# ip -j -d address show, trimmed: a bridge of ours and a veth on it, and a container's side.
LINKS = json.loads('''[
 {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"addr_info":[{"family":"inet","local":"127.0.0.1",
  "prefixlen":8}]},
 {"ifindex":4,"ifname":"unboxed0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"ifalias":"unboxed.lab container_network",
  "linkinfo":{"info_kind":"bridge"},"addr_info":[{"family":"inet","local":"10.47.0.1","prefixlen":24},
  {"family":"inet6","local":"fe80::1","prefixlen":64}]},
 {"ifindex":5,"link_index":2,"ifname":"vweb-bbbdb1","flags":["BROADCAST","MULTICAST"],"master":"unboxed0",
  "link_netnsid":0,"linkinfo":{"info_kind":"veth"},"addr_info":[]}]''')


def test_reading_links():
    bridge = netdev.link_by_name(LINKS, 'unboxed0')
    assert netdev.ipv4_addresses(bridge) == ['10.47.0.1/24'] and netdev.is_up(bridge)
    assert not netdev.is_up(netdev.link_by_name(LINKS, 'vweb-bbbdb1'))
    assert netdev.link_by_name(LINKS, 'eth0') is None and netdev.ipv4_addresses(None) == []
    assert netdev.default_gateway(ROUTES) == '10.213.1.1' and netdev.default_gateway([]) is None


def test_container_argvs_only_what_is_missing():
    everything = netdev.container_argvs(42, '10.47.0.2/24', '10.47.0.1', {})
    assert [' '.join(argv) for argv in everything] == [
        'nsenter --target=42 --net ip link set dev lo up',
        'nsenter --target=42 --net ip address add 10.47.0.2/24 dev eth0',
        'nsenter --target=42 --net ip link set dev eth0 up',
        'nsenter --target=42 --net ip route replace default via 10.47.0.1 dev eth0',
    ]
    done = {'lo_up': True, 'addresses': ['10.47.0.2/24'], 'eth0_up': True, 'gateway': '10.47.0.1'}
    assert netdev.container_argvs(42, '10.47.0.2/24', '10.47.0.1', done) == []
    stray = dict(done, addresses=['10.47.0.9/24', '10.47.0.2/24'])
    assert netdev.container_argvs(42, '10.47.0.2/24', '10.47.0.1', stray) == [
        ['nsenter', '--target=42', '--net', 'ip', 'address', 'delete', '10.47.0.9/24', 'dev', 'eth0']]


def test_veth_and_bridge_argvs():
    assert netdev.veth_argvs('vweb-bbbdb1', 'unboxed0', 42)[0] == [
        'ip', 'link', 'add', 'name', 'vweb-bbbdb1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', '42']
    assert netdev.bridge_argvs('unboxed0', '10.47.0.1/24')[1] == [
        'ip', 'link', 'set', 'dev', 'unboxed0', 'alias', netdev.BRIDGE_ALIAS]
    assert netdev.forwarding_argv('1') == ['sysctl', '-w', 'net.ipv4.ip_forward=1']


def test_records_round_trip(tmp_path):
    directory = str(tmp_path / 'networks')
    assert netdev.read_records(directory) == {}
    record = dict(netdev.empty_record('unboxed0', '10.47.0.0/24'), containers={'web': {'address': '10.47.0.2', 'ports': []}})
    netdev.write_json(netdev.record_path(directory, 'unboxed0'), record)
    netdev.write_json(os.path.join(directory, netdev.FORWARDING_FILE), {'ip_forward_before': '0'})
    netdev.write_json(os.path.join(directory, 'nftables.json'), {'digest': 'x', 'listing': []})
    assert netdev.read_records(directory) == {'unboxed0': record}
    assert sorted(os.listdir(directory)) == ['bridge-unboxed0.json', 'forwarding.json', 'nftables.json']


def test_record_that_cannot_be_trusted(tmp_path):
    path = tmp_path / 'bridge-unboxed0.json'
    path.write_text('{"format": 99}')
    with pytest.raises(netdev.RecordError, match='not an unboxed network record'):
        netdev.read_records(str(tmp_path))
    path.write_text('{')
    with pytest.raises(netdev.RecordError, match='cannot be read'):
        netdev.read_records(str(tmp_path))
