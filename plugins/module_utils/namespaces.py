# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Linux namespace inspection through /proc/PID/ns: the one place that maps names to files."""

from __future__ import annotations

import os
import re

# The names users write (as in unshare(1) long options) and the /proc/PID/ns entries.
NAMESPACE_FILES = {
    'pid': 'pid',
    'net': 'net',
    'mount': 'mnt',
    'uts': 'uts',
    'ipc': 'ipc',
    'user': 'user',
    'cgroup': 'cgroup',
}
NAMESPACE_TYPES = tuple(NAMESPACE_FILES)

_LINK = re.compile(r'[a-z_]+:\[(\d+)\]')


def parse_ns_link(target: str) -> int:
    """``net:[4026531840]`` -> 4026531840."""
    match = _LINK.fullmatch(target)
    if not match:
        raise ValueError(f'not a namespace link: {target!r}')
    return int(match.group(1))


def namespace_inode(pid, namespace: str, proc: str = '/proc') -> int | None:
    """Inode of the namespace ``namespace`` of process ``pid`` ('self' allowed), None if unreadable."""
    try:
        return parse_ns_link(os.readlink(f'{proc}/{pid}/ns/{NAMESPACE_FILES[namespace]}'))
    except (OSError, ValueError):
        return None


def namespace_report(pid, reference='self', proc: str = '/proc') -> dict:
    """For each namespace type: the process's inode, the reference's, and whether they differ."""
    report = {}
    for namespace in NAMESPACE_TYPES:
        inode = namespace_inode(pid, namespace, proc)
        reference_inode = namespace_inode(reference, namespace, proc)
        report[namespace] = {
            'inode': inode,
            'host_inode': reference_inode,
            'isolated': inode is not None and reference_inode is not None and inode != reference_inode,
        }
    return report


def canonical_order(namespaces) -> list[str]:
    """Namespace names without duplicates, in NAMESPACE_TYPES order (so [net, pid, net] equals [pid, net])."""
    wanted = set(namespaces)
    unknown = wanted - set(NAMESPACE_TYPES)
    if unknown:
        raise ValueError(f'unknown namespace type(s): {", ".join(sorted(unknown))}')
    return [namespace for namespace in NAMESPACE_TYPES if namespace in wanted]


def isolated_types(report: dict) -> list[str]:
    """The namespace types a namespace_report marks as isolated, in NAMESPACE_TYPES order."""
    return [namespace for namespace in NAMESPACE_TYPES if report.get(namespace, {}).get('isolated')]
