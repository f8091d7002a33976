"""Which Debian release each lab host runs (local_lab/releases.py) and what the lab's record keeps of it (state.py)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from local_lab import releases, state

# /etc/os-release of a trixie seat and of this (bookworm) machine, verbatim.
TRIXIE_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 13 (trixie)"
NAME="Debian GNU/Linux"
VERSION_ID="13"
VERSION="13 (trixie)"
VERSION_CODENAME=trixie
DEBIAN_VERSION_FULL=13.8
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""
BOOKWORM_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""


@pytest.mark.parametrize(('text', 'expected'), [
    ('trixie,bookworm', ('trixie', 'bookworm')),
    ('13,12', ('trixie', 'bookworm')),
    ('Debian13, bookworm ,trixie', ('trixie', 'bookworm', 'trixie')),
    ('bookworm', ('bookworm',)),
])
def test_releases_by_codename_or_version(text, expected):
    assert releases.parse_releases(text) == expected


@pytest.mark.parametrize(('text', 'message'), [
    ('', 'must name at least one Debian release'),
    (' , ', 'must name at least one Debian release'),
    ('trixie,buster', "'buster' is not a Debian release labctl builds"),
    ('sid,14,bookworm', "'sid', '14' are not Debian releases labctl builds"),
    ('trixie,', "'' is not a Debian release"),
])
def test_a_release_labctl_does_not_build_is_refused_by_name(text, message):
    with pytest.raises(ValueError, match=message) as raised:
        releases.parse_releases(text)
    assert 'trixie (13), bookworm (12)' in str(raised.value)


def test_releases_are_handed_out_in_turn():
    mixed = ('trixie', 'bookworm')
    assert [releases.release_for(mixed, position) for position in range(1, 6)] == ['trixie', 'bookworm', 'trixie', 'bookworm', 'trixie']
    assert [releases.release_for(('bookworm',), position) for position in (1, 2, 3)] == ['bookworm'] * 3
    assert releases.DEFAULT_RELEASES[0] == 'trixie' and set(releases.DEFAULT_RELEASES) == {'trixie', 'bookworm'}


def test_group_names_and_descriptions():
    assert [releases.group_name(release) for release in releases.SUPPORTED] == ['debian13', 'debian12']
    assert releases.describe('trixie') == 'Debian 13 (trixie)'
    assert releases.describe(None) == 'an unknown release'


def test_os_release_gives_the_codename():
    assert releases.parse_os_release(TRIXIE_OS_RELEASE)['VERSION_CODENAME'] == 'trixie'
    assert releases.parse_os_release(TRIXIE_OS_RELEASE)['PRETTY_NAME'] == 'Debian GNU/Linux 13 (trixie)'
    assert releases.parse_os_release(BOOKWORM_OS_RELEASE)['VERSION_CODENAME'] == 'bookworm'
    assert releases.parse_os_release('# nothing\n') == {}


def make_lab(lab_releases=('trixie', 'bookworm'), count=3) -> state.Lab:
    lab = state.Lab(name='pytest', index=7, subnet=ipaddress.ip_network('10.213.7.0/24'), host_prefix='lab',
                    inventory='/tmp/x/hosts.yml', releases=lab_releases)
    for position, name in enumerate(state.host_names('lab', count), 1):
        lab.hosts[name] = lab.new_host(name, position)
    return lab


def test_a_lab_gives_its_hosts_their_release_and_keeps_it_in_its_record():
    lab = make_lab()
    assert [host.release for host in lab.hosts_in_order()] == ['trixie', 'bookworm', 'trixie']
    again = state.Lab.from_dict(lab.to_dict())
    assert again.releases == ('trixie', 'bookworm')
    assert [host.release for host in again.hosts_in_order()] == ['trixie', 'bookworm', 'trixie']


def test_new_releases_give_each_host_its_release_again():
    lab = make_lab()
    lab.set_releases(('bookworm', 'trixie'))
    assert [host.release for host in lab.hosts_in_order()] == ['bookworm', 'trixie', 'bookworm']


def test_a_lab_recorded_before_releases_is_a_bookworm_lab():
    record = make_lab().to_dict()
    del record['releases']
    lab = state.Lab.from_dict(record)
    assert lab.releases == ('bookworm',)
    assert {host.release for host in lab.hosts.values()} == {'bookworm'}


def test_an_unknown_release_in_the_record_is_reported_as_an_unreadable_record(tmp_path, monkeypatch):
    monkeypatch.setattr(state, 'STATE_ROOT', str(tmp_path))
    record = make_lab().to_dict()
    record['releases'] = ['buster']
    (tmp_path / 'pytest').mkdir()
    (tmp_path / 'pytest' / 'lab.json').write_text(json.dumps(record), encoding='utf-8')
    with pytest.raises(state.LabError, match='record of lab "pytest" .* is unreadable'):
        state.load_lab('pytest')
