# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which Debian mirror the lab hosts come from: the one apt on this machine already uses.

Both formats of /etc/apt/sources.list*, one-line ``deb ...`` and deb822 ``.sources``, are read into
AptSource records; mirror_lines turns them into the ``deb ...`` arguments mmdebstrap takes. A release apt
here has no source for (trixie on a bookworm machine) comes from the same mirrors as the machine's own
release: its suites renamed, -updates and -security only where the machine has them.
"""

from __future__ import annotations

import dataclasses
import glob
import re

from . import releases
from .system import read_file

APT_SOURCE_FILES = ('/etc/apt/sources.list', '/etc/apt/sources.list.d/*.list', '/etc/apt/sources.list.d/*.sources')
OS_RELEASE = '/etc/os-release'


@dataclasses.dataclass(frozen=True)
class AptSource:
    types: tuple
    uris: tuple
    suites: tuple
    components: tuple
    signed_by: str | None = None


def parse_one_line_sources(text: str) -> list[AptSource]:
    """``deb [signed-by=/k.gpg arch=amd64] http://deb.debian.org/debian bookworm main`` lines."""
    sources = []
    for raw in text.splitlines():
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        kind, rest = line.split(maxsplit=1) if ' ' in line else (line, '')
        options = {}
        rest = rest.strip()
        if rest.startswith('[') and ']' in rest:
            option_text, rest = rest[1:].split(']', 1)
            for option in option_text.split():
                key, value = option.split('=', 1) if '=' in option else (option, '')
                options[key.lower()] = value
        fields = rest.split()
        if len(fields) < 2:
            continue
        sources.append(AptSource((kind,), (fields[0],), (fields[1],), tuple(fields[2:]), options.get('signed-by')))
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    """The deb822 ``.sources`` format: stanzas of ``Field: value`` separated by blank lines."""
    sources = []
    for stanza in re.split(r'\n\s*\n', text):
        fields: dict[str, str] = {}
        current = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith('#'):
                continue
            if line[0] in ' \t' and current:
                fields[current] += '\n' + line.strip()
                continue
            key, value = line.split(':', 1) if ':' in line else (line, '')
            current = key.strip().lower()
            fields[current] = value.strip()
        if not fields.get('types') or not fields.get('uris') or fields.get('enabled', 'yes').lower() == 'no':
            continue
        signed_by = fields.get('signed-by', '').strip()
        # Signed-By may hold the key itself (an armored block); only a path can be passed on.
        if not signed_by or '\n' in signed_by or not signed_by.startswith('/'):
            signed_by = None
        sources.append(AptSource(tuple(fields['types'].split()), tuple(fields['uris'].split()),
                                 tuple(fields.get('suites', '').split()), tuple(fields.get('components', '').split()),
                                 signed_by))
    return sources


SUITE_TAILS = ('', '-updates', '-security')


def mirror_lines(sources: list[AptSource], suite: str, like: str | None = None) -> list[str]:
    """One-line ``deb`` sources for ``suite`` and its -updates and -security suites, as mmdebstrap takes them.

    With ``like``, the sources of that suite are taken and named ``suite`` instead: a machine whose apt reads
    bookworm from a mirror gives trixie from the same mirror, with the same components and key.
    """
    renamed = {f'{like or suite}{tail}': f'{suite}{tail}' for tail in SUITE_TAILS}
    lines = []
    for source in sources:
        if 'deb' not in source.types:
            continue
        options = f'[signed-by={source.signed_by}] ' if source.signed_by else ''
        for uri in source.uris:
            for source_suite in source.suites:
                if source_suite in renamed and source.components:
                    line = f'deb {options}{uri} {renamed[source_suite]} {" ".join(source.components)}'
                    if line not in lines:
                        lines.append(line)
    return lines


def release_mirror_lines(sources: list[AptSource], release: str, machine_release: str | None) -> list[str]:
    """The mirror lines of ``release``: those apt on this machine names for it, or else those it names for
    its own release (``machine_release``), renamed. Only the mirrors apt already uses, never another."""
    lines = mirror_lines(sources, release)
    if not lines and machine_release and machine_release != release:
        lines = mirror_lines(sources, release, like=machine_release)
    return lines


def host_apt_sources() -> list[AptSource]:
    """The sources apt on this machine reads, in apt's order of files."""
    sources = []
    for pattern in APT_SOURCE_FILES:
        for path in sorted(glob.glob(pattern)):
            text = read_file(path) or ''
            sources += parse_deb822_sources(text) if path.endswith('.sources') else parse_one_line_sources(text)
    return sources


def machine_release() -> str | None:
    """This machine's Debian codename (VERSION_CODENAME of /etc/os-release), or None."""
    return releases.parse_os_release(read_file(OS_RELEASE) or '').get('VERSION_CODENAME') or None
