# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's own root file system: a copy of its release's base made into this host (name, machine id, sshd),
which release it holds, and its removal."""

from __future__ import annotations

import json
import os
import shutil

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths

from . import account, releases, ssh
from .changes import Changes
from .image import BaseImage
from .state import HostRecord, Lab
from .system import LabError, read_file, run, write_file_atomically, write_inside


# What a seat is made of, recorded in its marker: 1 (no record) root logged in over SSH; 2 the student account
# with sudo, root login off, cgroups of its own. A host of an earlier format is made again by `up`.
SEAT_FORMAT = 2


def provision_rootfs(lab: Lab, host: HostRecord, base: BaseImage) -> None:
    """Copy the base of the host's release into its root and make it this host: name, machine id, keys, sshd."""
    if os.path.lexists(host.dir):
        remove_tree(host.dir)
    os.makedirs(host.rootfs, mode=0o755)
    run(['tar', '--extract', '--preserve-permissions', '--numeric-owner', '--file', base.tarball,
         '--directory', host.rootfs], f'copy the base root file system into {host.rootfs}')
    root = host.rootfs
    write_inside(root, '/etc/hostname', host.name + '\n')
    write_inside(root, '/etc/hosts', f'127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n')
    write_inside(root, '/etc/resolv.conf', '# The unboxed lab has no DNS: its hosts reach only each other by address.\n')
    write_inside(root, '/etc/machine-id', os.urandom(16).hex() + '\n', 0o444)
    ssh.set_up_sshd(lab, host)
    write_file_atomically(host.marker, json.dumps({'base': base.key, 'tarball': base.tarball, 'release': base.release,
                                                   'seat_format': SEAT_FORMAT}) + '\n')


def seat_format(host: HostRecord) -> int:
    """The format of the host's files (SEAT_FORMAT when made by this labctl); 1 for a marker without one."""
    try:
        return int(json.loads(read_file(host.marker) or '{}').get('seat_format', 1))
    except (ValueError, TypeError, AttributeError):
        return 1


def outdated_reason(host: HostRecord) -> str | None:
    """Why a host made by an earlier labctl is made again, or None."""
    if seat_format(host) < SEAT_FORMAT:
        return (f'an earlier labctl made it (root logs in over SSH, no {account.LAB_USER} account with sudo, no cgroups '
                f'of its own); its files go, address and MAC stay, its host key is new')
    return None


def ensure_rootfs(changes: Changes, lab: Lab, hosts: list[HostRecord], bases: dict[str, BaseImage]) -> None:
    """``bases``: the base of each release, by codename."""
    changes.make_together((f'copy the {host.release} base into {host.rootfs} and make it {host.name}', provision_rootfs, lab, host,
                           bases[host.release]) for host in hosts)


def os_release(host: HostRecord) -> dict[str, str]:
    """The host's /etc/os-release, read inside its root (it is a link into /usr/lib there)."""
    path = paths.resolve_inside(host.rootfs, '/etc/os-release')
    return releases.parse_os_release(read_file(path) or '') if path else {}


def installed_release(host: HostRecord) -> str | None:
    """The codename the host's root file system holds: what a student's `cat /etc/os-release` says."""
    return os_release(host).get('VERSION_CODENAME') or None


def debian_version(host: HostRecord) -> str | None:
    """The host's /etc/debian_version (the point release, e.g. 13.1)."""
    path = paths.resolve_inside(host.rootfs, '/etc/debian_version')
    text = read_file(path) if path else None
    return text.strip() if text else None


def remove_tree(path: str) -> None:
    """Remove a host's directory, but never through a mount that is still there."""
    entries = mountinfo.read_mountinfo()
    still_mounted = [entry for entry in entries if entry.mount_point == path] + mountinfo.mounts_below(path, entries)
    if still_mounted:
        raise LabError(f'{path} cannot be removed: {", ".join(entry.mount_point for entry in still_mounted)} '
                       f'is still mounted there (labctl did not mount it; unmount it first).')
    shutil.rmtree(path)
