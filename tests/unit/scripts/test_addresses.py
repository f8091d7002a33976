"""How a lab host gets its address, MAC and names (local_lab/addresses.py), and which names labctl accepts."""

from __future__ import annotations

import ipaddress

import pytest

from local_lab import addresses, state
from local_lab.system import LabError

NET = ipaddress.ip_network


def test_addresses_of_a_lab():
    subnet = addresses.default_subnet(1)
    assert str(subnet) == '10.213.1.0/24'
    assert str(addresses.bridge_address(subnet)) == '10.213.1.1/24'
    assert str(addresses.host_address(subnet, 1)) == '10.213.1.11/24'
    assert str(addresses.host_address(subnet, 3)) == '10.213.1.13/24'
    assert str(addresses.default_subnet(254)) == '10.213.254.0/24'


def test_a_small_subnet_refuses_hosts_it_has_no_room_for():
    subnet = NET('10.99.0.0/28')
    assert str(addresses.host_address(subnet, 4)) == '10.99.0.14/28'
    with pytest.raises(LabError, match='no room for host 5'):
        addresses.host_address(subnet, 5)


def test_mac_is_locally_administered_and_a_function_of_the_address():
    mac = addresses.mac_for(ipaddress.ip_address('10.213.1.11'))
    assert mac == '02:75:0a:d5:01:0b'
    assert int(mac.split(':')[0], 16) & 0b10 and not int(mac.split(':')[0], 16) & 0b1  # local, unicast
    assert addresses.mac_for(ipaddress.ip_address('10.213.1.12')) != mac


def test_interface_names_fit_in_ifnamsiz():
    assert addresses.bridge_name(254) == 'ulab254'
    assert len(addresses.veth_name(254, addresses.MAX_HOSTS)) <= 15


def test_netns_prefix_of_a_lab_never_matches_another_lab():
    assert not addresses.netns_name('a-b', 'lab1').startswith(addresses.netns_name('a', ''))
    assert addresses.netns_name('a', 'lab1').startswith(addresses.netns_name('a', ''))


@pytest.mark.parametrize('name', ['default', 'pytest', 'mol-ubuntu2', 'a'])
def test_good_names(name):
    assert state.name_problem('The lab name', name) is None


@pytest.mark.parametrize('name', ['', 'Lab', '1lab', 'my_lab', 'my.lab', 'x' * 25, 'lab/1'])
def test_bad_names_are_explained(name):
    assert 'lower-case letter' in state.name_problem('The lab name', name)


def test_a_lab_takes_the_first_slot_nobody_uses():
    assert addresses.free_index(set(), {'lo': {}, 'eth0': {}}) == 1
    # Slot 2 is recorded by another lab, slot 1's bridge exists without a record (a lab cut short).
    assert addresses.free_index({2}, {'ulab1': {}}) == 3
    with pytest.raises(LabError, match='All 254 lab slots are in use'):
        addresses.free_index(set(range(1, 255)), {})


def test_a_lab_gets_its_default_subnet_when_it_is_free():
    routed = [NET('192.168.122.0/24'), NET('10.0.2.0/24'), NET('10.213.9.1/32')]  # a /32 route shadows nothing
    assert addresses.choose_subnet(9, 'new', None, {}, routed) == NET('10.213.9.0/24')


def test_a_lab_whose_default_subnet_is_taken_gets_the_first_free_one_of_the_pool():
    other_labs = {'first': NET('10.213.3.0/24')}
    routed = [NET('10.213.1.0/24')]
    assert addresses.choose_subnet(3, 'new', None, other_labs, routed) == NET('10.213.2.0/24')


@pytest.mark.parametrize('requested, other_labs, routed, message', [
    ('10.213.5.0/24', {'first': NET('10.213.5.0/24')}, [], r'overlaps lab "first" \(10.213.5.0/24\)'),
    ('10.0.0.0/8', {}, [NET('10.0.2.0/24')], 'overlaps 10.0.2.0/24, which this machine already routes'),
    ('8.8.8.0/24', {}, [], 'is not a private network'),
    ('10.213.5.1/24', {}, [], r'is not a network: .* \(write it like 10.213.7.0/24\)'),
    ('lab', {}, [], 'is not a network'),
])
def test_a_requested_subnet_is_refused_with_the_reason(requested, other_labs, routed, message):
    with pytest.raises(LabError, match=message):
        addresses.choose_subnet(5, 'new', requested, other_labs, routed)


def test_a_free_requested_subnet_is_taken_as_it_is():
    assert addresses.choose_subnet(5, 'new', '172.30.8.0/28', {'first': NET('10.213.5.0/24')}, []) == NET('172.30.8.0/28')
