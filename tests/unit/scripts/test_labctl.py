"""Pure parts of scripts/labctl: apt sources, addresses, names, rendered files. Real samples, no root."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _load_labctl():
    """scripts/labctl.py is a program, not a package module: load it from its path."""
    spec = importlib.util.spec_from_file_location('labctl', os.path.join(REPO, 'scripts', 'labctl.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules['labctl'] = module  # dataclasses looks the module up while the class is built
    spec.loader.exec_module(module)
    return module


labctl = _load_labctl()

# This machine's /etc/apt/sources.list.d/debian.sources, verbatim.
DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# A deb822 stanza whose Signed-By holds the key itself, one that is disabled, and a source package stanza.
DEB822_INLINE_KEY = """\
Types: deb deb-src
URIs: https://mirror.example.edu/debian/
Suites: bookworm
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEY865UxYJKwYBBAHaRw8BAQdAd7Z0srwuhlB6JKFkcf4HU4SSS/xcRfwEQWzr
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://old.example.org/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
"""

# A classic /etc/apt/sources.list of a Debian 12 installation.
ONE_LINE = """\
#deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 NETINST with firmware 20240210-11:27]/ bookworm contrib main non-free-firmware

deb http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware
deb-src http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware

deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg arch=amd64] http://security.debian.org/debian-security bookworm-security main non-free-firmware
deb http://ftp.fr.debian.org/debian/ bookworm-updates main non-free-firmware  # updates
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
"""


def test_deb822_sources_of_this_machine_give_three_mirror_lines():
    lines = labctl.mirror_lines(labctl.parse_deb822_sources(DEB822), 'bookworm')
    key = '[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]'
    assert lines == [
        f'deb {key} http://deb.debian.org/debian bookworm main',
        f'deb {key} http://deb.debian.org/debian bookworm-updates main',
        f'deb {key} http://deb.debian.org/debian-security bookworm-security main',
    ]


def test_deb822_inline_key_is_not_passed_on_and_disabled_or_source_stanzas_are_skipped():
    sources = labctl.parse_deb822_sources(DEB822_INLINE_KEY)
    assert [source.uris for source in sources] == [('https://mirror.example.edu/debian/',), ('http://deb.debian.org/debian',)]
    assert sources[0].signed_by is None
    assert labctl.mirror_lines(sources, 'bookworm') == ['deb https://mirror.example.edu/debian/ bookworm main contrib']


def test_one_line_sources_keep_options_and_ignore_comments_sources_and_other_suites():
    lines = labctl.mirror_lines(labctl.parse_one_line_sources(ONE_LINE), 'bookworm')
    assert lines == [
        'deb http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware',
        'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.debian.org/debian-security '
        'bookworm-security main non-free-firmware',
        'deb http://ftp.fr.debian.org/debian/ bookworm-updates main non-free-firmware',
    ]


def test_no_mirror_for_another_suite():
    assert labctl.mirror_lines(labctl.parse_deb822_sources(DEB822), 'trixie') == []


def test_base_key_changes_with_the_recipe_only():
    mirrors = ['deb http://deb.debian.org/debian bookworm main']
    key = labctl.base_key('bookworm', ['python3', 'tini'], mirrors, [])
    assert key == labctl.base_key('bookworm', ['tini', 'python3'], mirrors, [])
    assert key != labctl.base_key('bookworm', ['python3', 'tini', 'rsync'], mirrors, [])
    assert key != labctl.base_key('trixie', ['python3', 'tini'], mirrors, [])
    assert len(key) == 12


def test_addresses_of_a_lab():
    subnet = labctl.default_subnet(1)
    assert str(subnet) == '10.213.1.0/24'
    assert str(labctl.bridge_address(subnet)) == '10.213.1.1/24'
    assert str(labctl.host_address(subnet, 1)) == '10.213.1.11/24'
    assert str(labctl.host_address(subnet, 3)) == '10.213.1.13/24'
    assert str(labctl.default_subnet(254)) == '10.213.254.0/24'


def test_a_small_subnet_refuses_hosts_it_has_no_room_for():
    subnet = ipaddress.ip_network('10.99.0.0/28')
    assert str(labctl.host_address(subnet, 4)) == '10.99.0.14/28'
    with pytest.raises(labctl.LabError, match='no room for host 5'):
        labctl.host_address(subnet, 5)


def test_mac_is_locally_administered_and_a_function_of_the_address():
    mac = labctl.mac_for(ipaddress.ip_address('10.213.1.11'))
    assert mac == '02:75:0a:d5:01:0b'
    assert int(mac.split(':')[0], 16) & 0b10 and not int(mac.split(':')[0], 16) & 0b1  # local, unicast
    assert labctl.mac_for(ipaddress.ip_address('10.213.1.12')) != mac


def test_interface_names_fit_in_ifnamsiz():
    assert labctl.bridge_name(254) == 'ulab254'
    assert len(labctl.veth_name(254, labctl.MAX_HOSTS)) <= 15


def test_netns_prefix_of_a_lab_never_matches_another_lab():
    assert not labctl.netns_name('a-b', 'lab1').startswith(labctl.netns_name('a', ''))
    assert labctl.netns_name('a', 'lab1').startswith(labctl.netns_name('a', ''))


@pytest.mark.parametrize('name', ['default', 'pytest', 'mol-ubuntu2', 'a'])
def test_good_names(name):
    assert labctl.name_problem('The lab name', name) is None


@pytest.mark.parametrize('name', ['', 'Lab', '1lab', 'my_lab', 'my.lab', 'x' * 25, 'lab/1'])
def test_bad_names_are_explained(name):
    assert 'lower-case letter' in labctl.name_problem('The lab name', name)


def test_nspid_of_a_namespace_init_and_of_a_host_process():
    assert labctl.parse_nspid('Name:\ttini\nNSpid:\t32422\t1\nNSpgid:\t32420\t0\n') == [32422, 1]
    assert labctl.parse_nspid('Name:\tbash\nNSpid:\t815\n') == [815]
    assert labctl.parse_vm_rss_kib('VmHWM:\t    1400 kB\nVmRSS:\t    1024 kB\n') == 1024


def test_known_hosts_block_is_replaced_in_place_and_other_lines_stay():
    begin, end = labctl.block_markers('try')
    other_begin, other_end = labctl.block_markers('other')
    text = (f'192.0.2.9 ssh-ed25519 AAAAuser\n{begin}\n10.213.1.11 ssh-ed25519 OLD\n{end}\n'
            f'{other_begin}\n10.213.2.11 ssh-ed25519 KEEP\n{other_end}\n')
    updated = labctl.replace_block(text, 'try', '10.213.1.11 ssh-ed25519 NEW\n')
    assert updated == (f'192.0.2.9 ssh-ed25519 AAAAuser\n{begin}\n10.213.1.11 ssh-ed25519 NEW\n{end}\n'
                       f'{other_begin}\n10.213.2.11 ssh-ed25519 KEEP\n{other_end}\n')
    assert labctl.replace_block(updated, 'try', '10.213.1.11 ssh-ed25519 NEW\n') == updated
    removed = labctl.replace_block(updated, 'try', '')
    assert removed == f'192.0.2.9 ssh-ed25519 AAAAuser\n{other_begin}\n10.213.2.11 ssh-ed25519 KEEP\n{other_end}\n'


def test_known_hosts_block_is_appended_to_a_file_without_final_newline():
    begin, end = labctl.block_markers('try')
    assert labctl.replace_block('user-line', 'try', 'k\n') == f'user-line\n{begin}\nk\n{end}\n'
    assert labctl.replace_block('', 'try', '') == ''


def test_inventory_is_valid_yaml_with_both_transports_configured():
    import yaml

    lab = labctl.Lab(name='pytest', index=7, subnet=ipaddress.ip_network('10.213.7.0/24'),
                     host_prefix='lab', inventory='/tmp/x/hosts.yml')
    for position, name in enumerate(['lab1', 'lab2'], 1):
        lab.hosts[name] = lab.new_host(name, position)
    text = labctl.render_inventory(lab)
    assert text.startswith(labctl.inventory_marker('pytest'))
    group = yaml.safe_load(text)['all']['children'][labctl.INVENTORY_GROUP]
    assert group['hosts'] == {'lab1': {'ansible_host': '10.213.7.11'}, 'lab2': {'ansible_host': '10.213.7.12'}}
    variables = group['vars']
    assert variables['ansible_user'] == 'root'
    assert variables['ansible_python_interpreter'] == '/usr/bin/python3'
    assert variables['ansible_private_key_file'] == '/var/lib/unboxed/lab/pytest/ssh/id_ed25519'
    assert '-o UserKnownHostsFile=/var/lib/unboxed/lab/pytest/ssh/known_hosts' in variables['ansible_ssh_common_args']
    assert '-o StrictHostKeyChecking=yes' in variables['ansible_ssh_common_args']
    assert variables['ansible_paramiko_host_key_checking'] is True


def test_state_record_round_trips():
    lab = labctl.Lab(name='pytest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'),
                     host_prefix='lab', inventory='/tmp/hosts.yml')
    host = lab.new_host('lab1', 1)
    host.init = labctl.process.ProcessIdentity(4242, 987654)
    lab.hosts['lab1'] = host
    again = labctl.Lab.from_dict(lab.to_dict())
    assert again.to_dict() == lab.to_dict()
    assert again.hosts['lab1'].init == host.init
    assert again.hosts['lab1'].netns == 'unboxed.pytest.lab1'
    assert again.hosts['lab1'].veth == 'ulab3h1'
