# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which Debian release each lab host runs: the releases labctl builds, the names it accepts, and which host
runs which (pure).

A lab has a list of releases and hands them out in turn: with ``trixie,bookworm`` host 1 runs trixie, host 2
bookworm, host 3 trixie... A classroom set up this term has both, so a new lab has both unless told otherwise.
"""

from __future__ import annotations

# Codename -> Debian version. The order is the newest first, as in DEFAULT_RELEASES.
SUPPORTED = {'trixie': 13, 'bookworm': 12}
# A new lab's releases: Debian 13 first (host 1, 3, ...), Debian 12 beside it (host 2, 4, ...).
DEFAULT_RELEASES = ('trixie', 'bookworm')
# What every host was before labctl knew releases: a lab recorded then is a bookworm lab.
RECORDED_BEFORE_RELEASES = ('bookworm',)


def accepted_names() -> str:
    return ', '.join(f'{codename} ({version})' for codename, version in SUPPORTED.items())


def codename(name: str) -> str | None:
    """``trixie``, ``13`` or ``debian13`` (any case) -> ``trixie``; None for a release labctl does not build."""
    wanted = name.strip().lower()
    for release, version in SUPPORTED.items():
        if wanted in (release, str(version), f'debian{version}'):
            return release
    return None


def parse_releases(text: str) -> tuple[str, ...]:
    """``trixie,bookworm`` -> ('trixie', 'bookworm'); ValueError naming every word that is not a release."""
    names = [name.strip() for name in (text or '').split(',')]
    if not any(names):
        raise ValueError(f'the releases must name at least one Debian release: {accepted_names()}')
    unknown = [name for name in names if codename(name) is None]
    if unknown:
        what = 'is not a Debian release' if len(unknown) == 1 else 'are not Debian releases'
        raise ValueError(f'{", ".join(repr(name) for name in unknown)} {what} labctl builds: '
                         f'use {accepted_names()}, separated by commas, e.g. "trixie,bookworm"')
    return tuple(codename(name) for name in names)


def release_for(releases, position: int) -> str:
    """The release of host ``position`` (1, 2, ...): the lab's releases in turn."""
    return releases[(position - 1) % len(releases)]


def version(release: str) -> int:
    return SUPPORTED[release]


def group_name(release: str) -> str:
    """The inventory group of a release's hosts: ``debian13`` (``ansible-playbook -l debian13``)."""
    return f'debian{SUPPORTED[release]}'


def describe(release: str | None) -> str:
    """``Debian 13 (trixie)``, as a message to a person says it."""
    if release in SUPPORTED:
        return f'Debian {SUPPORTED[release]} ({release})'
    return f'an unknown release ({release})' if release else 'an unknown release'


def parse_os_release(text: str) -> dict[str, str]:
    """/etc/os-release (``KEY=value`` lines, values possibly quoted) as a dict."""
    fields = {}
    for line in text.splitlines():
        if '=' in line and not line.lstrip().startswith('#'):
            key, value = line.split('=', 1)
            fields[key.strip()] = value.strip().strip('"\'')
    return fields
