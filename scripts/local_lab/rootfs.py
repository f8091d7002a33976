# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's own root file system: a copy of the base made into this host (name, machine id, sshd), and its removal."""

from __future__ import annotations

import json
import os
import shutil

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

from . import ssh
from .changes import Changes
from .image import BaseImage
from .state import HostRecord, Lab
from .system import LabError, run, write_file_atomically, write_inside


def provision_rootfs(lab: Lab, host: HostRecord, base: BaseImage) -> None:
    """Copy the base into the host's root and make it this host: name, machine id, keys, sshd."""
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
    write_file_atomically(host.marker, json.dumps({'base': base.key, 'tarball': base.tarball}) + '\n')


def ensure_rootfs(changes: Changes, lab: Lab, hosts: list[HostRecord], base: BaseImage | None) -> None:
    changes.make_together((f'copy the base into {host.rootfs} and make it {host.name}', provision_rootfs, lab, host, base)
                          for host in hosts)


def remove_tree(path: str) -> None:
    """Remove a host's directory, but never through a mount that is still there."""
    entries = mountinfo.read_mountinfo()
    still_mounted = [entry for entry in entries if entry.mount_point == path] + mountinfo.mounts_below(path, entries)
    if still_mounted:
        raise LabError(f'{path} cannot be removed: {", ".join(entry.mount_point for entry in still_mounted)} '
                       f'is still mounted there (labctl did not mount it; unmount it first).')
    shutil.rmtree(path)
