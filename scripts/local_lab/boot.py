# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``labctl _boot``: PID 1 of a new lab host, what a container runtime's init does before the container runs.

It runs inside the host's new namespaces (host.py starts it in the seat's init.scope cgroups), still seeing the
controller's files: it enters a cgroup namespace of its own rooted at the seat's cgroups (cgroups.py), mounts
/proc, /sys, the seat's cgroup hierarchies at /sys/fs/cgroup, /dev and /run into the host's root, pivots into
that root and detaches the old one, sets the hostname and execs tini, which runs sshd.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket

from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import paths

from . import cgroups
from .system import LabError, run

# (type, source, target inside the root, options). /sys read-only: a lab host must not reconfigure the machine.
KERNEL_MOUNTS = (
    ('proc', 'proc', '/proc', 'nosuid,nodev,noexec'),
    ('sysfs', 'sysfs', '/sys', 'ro,nosuid,nodev,noexec'),
    ('tmpfs', 'tmpfs', '/dev', 'nosuid,mode=0755,size=65536k'),
    ('devpts', 'devpts', '/dev/pts', 'nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5'),
    ('tmpfs', 'shm', '/dev/shm', 'nosuid,nodev,mode=1777'),
    ('tmpfs', 'tmpfs', '/run', 'nosuid,nodev,mode=0755'),
)
# (name, major, minor): the character devices a Debian userland expects, as a container runtime creates them.
DEVICE_NODES = (('null', 1, 3), ('zero', 1, 5), ('full', 1, 7), ('random', 1, 8), ('urandom', 1, 9), ('tty', 5, 0))
DEVICE_LINKS = (('fd', '/proc/self/fd'), ('stdin', '/proc/self/fd/0'), ('stdout', '/proc/self/fd/1'),
                ('stderr', '/proc/self/fd/2'), ('ptmx', 'pts/ptmx'))
OLD_ROOT = '.unboxed-old-root'
INIT_ARGV = ('/usr/bin/tini', '--', '/usr/sbin/sshd', '-D', '-e')
LAB_HOST_PATH = environ.DEFAULT_PATH
MNT_DETACH = 2
CLONE_NEWCGROUP = 0x02000000


def boot(root: str, hostname: str, cgroup_dirs=(), cgroup_mounts: str = '[]') -> None:
    """``cgroup_dirs``: the seat's cgroups on the machine (host.py made them and started this process in their
    init.scope); ``cgroup_mounts``: cgroups.seat_mounts as JSON."""
    if os.getpid() != 1:
        raise LabError('_boot runs only as PID 1 of a new PID namespace; `labctl up` starts it.')
    root = os.path.realpath(root)
    libc = ctypes.CDLL(None, use_errno=True)
    enter_cgroup_namespace(libc, list(cgroup_dirs))
    # pivot_root needs the new root to be a mount point of its own.
    run(['mount', '--bind', root, root], f'bind-mount {root} onto itself')
    for fstype, source, target, options in KERNEL_MOUNTS:
        mount_point = paths.join_inside(root, target)
        os.makedirs(mount_point, exist_ok=True)
        run(['mount', '-t', fstype, '-o', options, source, mount_point], f'mount {fstype} on {target}')
        if target == '/dev':
            populate_dev(mount_point)
        if target == '/run':
            for directory in ('sshd', 'lock'):
                os.makedirs(os.path.join(mount_point, directory), mode=0o755)
        if target == '/sys':
            mount_cgroups(root, [cgroups.SeatMount.from_dict(entry) for entry in json.loads(cgroup_mounts)])
    os.chdir(root)
    os.makedirs(OLD_ROOT, exist_ok=True)
    run(['pivot_root', '.', OLD_ROOT], f'pivot into {root}')
    os.chdir('/')
    if libc.umount2(f'/{OLD_ROOT}'.encode(), MNT_DETACH) != 0:
        raise LabError(f'Could not detach the old root: {os.strerror(ctypes.get_errno())}')
    os.rmdir(f'/{OLD_ROOT}')
    socket.sethostname(hostname)
    os.execve(INIT_ARGV[0], list(INIT_ARGV), {'PATH': LAB_HOST_PATH, 'LANG': 'C.UTF-8'})


def populate_dev(dev: str) -> None:
    os.makedirs(os.path.join(dev, 'pts'), exist_ok=True)
    os.makedirs(os.path.join(dev, 'shm'), exist_ok=True)
    previous_umask = os.umask(0)
    try:
        for name, major, minor in DEVICE_NODES:
            os.mknod(os.path.join(dev, name), 0o666 | 0o020000, os.makedev(major, minor))
    finally:
        os.umask(previous_umask)
    for name, target in DEVICE_LINKS:
        os.symlink(target, os.path.join(dev, name))


def enter_cgroup_namespace(libc, seat_dirs) -> None:
    """A cgroup namespace rooted at the seat's cgroups, with this process back in their init.scope.

    The namespace's root is the cgroup the caller is in when it is made: this process steps up from init.scope
    into the seat's cgroup, makes the namespace, and steps down again; the seat's own cgroup keeps no process."""
    if not seat_dirs:
        return
    cgroups.join_cgroups([os.path.join(directory, 'cgroup.procs') for directory in seat_dirs])
    if libc.unshare(CLONE_NEWCGROUP) != 0:
        raise LabError(f'Could not make a cgroup namespace: {os.strerror(ctypes.get_errno())}')
    cgroups.join_cgroups(cgroups.scope_procs_files(seat_dirs))


def mount_cgroups(root: str, mounts) -> None:
    """The seat's cgroup file systems at /sys/fs/cgroup (inside its cgroup namespace: each shows the seat's
    cgroup as its top), then the tmpfs that holds the v1 hierarchies made read-only, as on a Debian seat."""
    for seat_mount in mounts:
        mount_point = paths.join_inside(root, seat_mount.target)
        os.makedirs(mount_point, exist_ok=True)
        run(['mount', '-t', seat_mount.fstype, '-o', seat_mount.options, seat_mount.source, mount_point],
            f'mount {seat_mount.fstype} on {seat_mount.target}')
        for name, target in seat_mount.links:
            os.symlink(target, os.path.join(os.path.dirname(mount_point), name))
    for seat_mount in mounts:
        if seat_mount.read_only_after:
            mount_point = paths.join_inside(root, seat_mount.target)
            run(['mount', '-o', f'remount,ro,{seat_mount.options}', mount_point], f'make {seat_mount.target} read-only')
