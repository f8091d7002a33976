"""Which mirror the lab hosts of each release come from (local_lab/apt.py) and what the cached base is keyed by (image.py)."""

from __future__ import annotations

from local_lab import account, apt, image

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
    lines = apt.mirror_lines(apt.parse_deb822_sources(DEB822), 'bookworm')
    key = '[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]'
    assert lines == [
        f'deb {key} http://deb.debian.org/debian bookworm main',
        f'deb {key} http://deb.debian.org/debian bookworm-updates main',
        f'deb {key} http://deb.debian.org/debian-security bookworm-security main',
    ]


def test_deb822_inline_key_is_not_passed_on_and_disabled_or_source_stanzas_are_skipped():
    sources = apt.parse_deb822_sources(DEB822_INLINE_KEY)
    assert [source.uris for source in sources] == [('https://mirror.example.edu/debian/',), ('http://deb.debian.org/debian',)]
    assert sources[0].signed_by is None
    assert apt.mirror_lines(sources, 'bookworm') == ['deb https://mirror.example.edu/debian/ bookworm main contrib']


def test_one_line_sources_keep_options_and_ignore_comments_sources_and_other_suites():
    lines = apt.mirror_lines(apt.parse_one_line_sources(ONE_LINE), 'bookworm')
    assert lines == [
        'deb http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware',
        'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.debian.org/debian-security '
        'bookworm-security main non-free-firmware',
        'deb http://ftp.fr.debian.org/debian/ bookworm-updates main non-free-firmware',
    ]


def test_no_mirror_for_another_suite():
    assert apt.mirror_lines(apt.parse_deb822_sources(DEB822), 'trixie') == []


def test_trixie_comes_from_this_machines_bookworm_mirrors_updates_and_security_included():
    lines = apt.release_mirror_lines(apt.parse_deb822_sources(DEB822), 'trixie', 'bookworm')
    key = '[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]'
    assert lines == [
        f'deb {key} http://deb.debian.org/debian trixie main',
        f'deb {key} http://deb.debian.org/debian trixie-updates main',
        f'deb {key} http://deb.debian.org/debian-security trixie-security main',
    ]
    # The machine's own release is untouched by the renaming.
    assert apt.release_mirror_lines(apt.parse_deb822_sources(DEB822), 'bookworm', 'bookworm') == \
        apt.mirror_lines(apt.parse_deb822_sources(DEB822), 'bookworm')


def test_trixie_from_one_line_sources_keeps_each_mirror_its_components_and_skips_other_repositories():
    lines = apt.release_mirror_lines(apt.parse_one_line_sources(ONE_LINE), 'trixie', 'bookworm')
    assert lines == [
        'deb http://ftp.fr.debian.org/debian/ trixie main non-free-firmware',
        'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.debian.org/debian-security '
        'trixie-security main non-free-firmware',
        'deb http://ftp.fr.debian.org/debian/ trixie-updates main non-free-firmware',
    ]
    assert not any('google' in line for line in lines)


# A machine whose apt has neither -updates nor a security mirror: trixie gets neither.
MAIN_ONLY = """Types: deb
URIs: http://mirror.example.edu/debian
Suites: bookworm
Components: main
"""

# A machine already on trixie that also lists bookworm (an upgraded one, say): each release's own lines win.
BOTH = """Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie trixie-updates
Components: main

Types: deb
URIs: http://archive.example.org/debian
Suites: bookworm
Components: main
"""


def test_only_the_suites_the_machine_has_are_derived():
    assert apt.release_mirror_lines(apt.parse_deb822_sources(MAIN_ONLY), 'trixie', 'bookworm') == [
        'deb http://mirror.example.edu/debian trixie main']


def test_a_release_apt_names_itself_is_taken_as_it_is():
    sources = apt.parse_deb822_sources(BOTH)
    assert apt.release_mirror_lines(sources, 'bookworm', 'trixie') == ['deb http://archive.example.org/debian bookworm main']
    assert apt.release_mirror_lines(sources, 'trixie', 'trixie') == [
        'deb http://deb.debian.org/debian trixie main', 'deb http://deb.debian.org/debian trixie-updates main']


def test_without_the_machines_release_nothing_is_guessed():
    assert apt.release_mirror_lines(apt.parse_deb822_sources(DEB822), 'trixie', None) == []
    assert apt.release_mirror_lines(apt.parse_deb822_sources(DEB822), 'trixie', 'bullseye') == []


def test_base_key_changes_with_the_recipe_only():
    mirrors = ['deb http://deb.debian.org/debian bookworm main']
    key = image.base_key('bookworm', ['python3', 'tini'], mirrors, [])
    assert key == image.base_key('bookworm', ['tini', 'python3'], mirrors, [])
    assert key != image.base_key('bookworm', ['python3', 'tini', 'rsync'], mirrors, [])
    assert key != image.base_key('trixie', ['python3', 'tini'], mirrors, [])
    assert len(key) == 12


def test_each_release_has_its_own_cached_tarball():
    bookworm = image.BaseImage(release='bookworm', key='563b39d6bdc1', mirrors=())
    trixie = image.BaseImage(release='trixie', key='28e98db1e7b7', mirrors=())
    assert bookworm.tarball == f'{image.CACHE_DIR}/bookworm-563b39d6bdc1.tar'
    assert trixie.tarball == f'{image.CACHE_DIR}/trixie-28e98db1e7b7.tar'
    assert trixie.manifest == f'{image.CACHE_DIR}/trixie-28e98db1e7b7.json'


def test_the_bookworm_base_keeps_the_key_it_had_before_releases():
    """The recipe without sudo and the student account hashes as it did (a cached base of that recipe keeps its
    name); with them, the key is new, so no seat is made from a base without the account (nor, since, without
    nftables and uidmap)."""
    mirrors = apt.release_mirror_lines(apt.parse_deb822_sources(DEB822), 'bookworm', 'bookworm')
    before = tuple(package for package in image.BASE_PACKAGES if package not in ('sudo', 'nftables', 'uidmap'))
    assert image.base_key('bookworm', before, mirrors, image.DPKG_OPTIONS) == '563b39d6bdc1'
    now = image.base_key('bookworm', image.BASE_PACKAGES, mirrors, image.DPKG_OPTIONS, account.BASE_HOOKS)
    assert now != '563b39d6bdc1'
    assert now != image.base_key('bookworm', image.BASE_PACKAGES, mirrors, image.DPKG_OPTIONS)


def test_the_base_has_sudo_and_makes_the_student_account_with_the_seats_own_useradd():
    assert 'sudo' in image.BASE_PACKAGES
    assert account.BASE_HOOKS == (
        'chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/bash --comment "Lab student" student',)
