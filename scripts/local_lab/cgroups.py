# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A seat's cgroups: where they live on this machine, what the seat sees at /sys/fs/cgroup, and their removal.

A real Debian seat finds its cgroup hierarchies mounted under /sys/fs/cgroup, and a module that sets a
limit (memory, pids, CPU) looks for them there. A lab seat gets the same: labctl makes it a cgroup of its own
in each hierarchy it gives the seat, always BELOW the cgroup labctl itself runs in (never elsewhere in the
machine's hierarchies, which belong to the machine's own services), starts the seat in a new cgroup namespace
rooted there, and mounts the hierarchies inside the seat's mount namespace, laid out as this machine lays
its own out:

- cgroup v2 alone at /sys/fs/cgroup (Debian 11 and later, as installed): cgroup2 at /sys/fs/cgroup;
- the hybrid layout (v1 controllers under /sys/fs/cgroup/CONTROLLER, cgroup2 at /sys/fs/cgroup/unified), or v1
  alone: a read-only tmpfs at /sys/fs/cgroup, the v1 hierarchies of SEAT_V1_CONTROLLERS in it under the names
  this machine gives them (a co-mounted ``cpu,cpuacct`` with its ``cpu`` and ``cpuacct`` links), and
  cgroup2 at unified when the machine has it.

On the machine, seat lab1 of lab default lives in ``OWN/unboxed-lab/default/lab1`` of each hierarchy, OWN
being labctl's own cgroup there (/proc/self/cgroup), and every process of the seat in its ``init.scope``:
the seat's root cgroup holds no process itself, so that on cgroup v2 it can hand controllers down to the
cgroups made inside it, as a real seat's root cgroup does (systemd's init.scope). Inside, /proc/self/cgroup
says ``0::/init.scope``, and a ``mkdir /sys/fs/cgroup/memory/c1`` lands in ``OWN/unboxed-lab/default/lab1/c1``.

The parsing and the plan are pure (tested with this machine's samples); the rest writes only below OWN.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import posixpath

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
# /proc/PID/cgroup is read the way the modules read it (one parser, in the collection).
from ansible_collections.unboxed.lab.plugins.module_utils.cgroups import parse_proc_cgroup

from .system import LabError, read_file, wait_until

CGROUP_ROOT = '/sys/fs/cgroup'
# The v1 controllers a seat gets (where the machine has them on v1): the limits a container runtime sets.
# The others (cpuset, devices, freezer, blkio, named hierarchies) are not given: no limit of the talk needs them.
SEAT_V1_CONTROLLERS = ('memory', 'pids', 'cpu', 'cpuacct')
# Below labctl's own cgroup: TOP/LAB/HOST, and the seat's processes in HOST/SCOPE.
TOP = 'unboxed-lab'
SCOPE = 'init.scope'
UNIFIED = 'unified'
# Mount options of every cgroup file system inside a seat, as Debian mounts them.
MOUNT_OPTIONS = 'nosuid,nodev,noexec'
EMPTY_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy of this machine that a seat gets."""

    key: str              # 'unified' for cgroup v2; the v1 controllers otherwise, as /proc/self/cgroup names them ('cpu,cpuacct')
    version: int
    mount_point: str      # where this machine mounts it, e.g. /sys/fs/cgroup/memory
    mount_root: str       # the cgroup that mount shows as its top (/ unless the machine mounts a subtree)
    own_path: str         # labctl's own cgroup in it, from /proc/self/cgroup

    @property
    def controllers(self) -> tuple:
        return () if self.version == 2 else tuple(self.key.split(','))

    @property
    def own_dir(self) -> str:
        """labctl's own cgroup as a directory of the machine's mount."""
        relative = posixpath.relpath(self.own_path, self.mount_root)
        return self.mount_point if relative == '.' else posixpath.join(self.mount_point, relative)


@dataclasses.dataclass(frozen=True)
class SeatMount:
    """A mount inside the seat (target is a path inside its root). ``links``: (name, target) symlinks made in
    ``target``'s parent beside it; ``read_only_after``: remounted read-only once the mounts inside it are made."""

    fstype: str
    source: str
    target: str
    options: str
    links: tuple = ()
    read_only_after: bool = False

    def to_dict(self) -> dict:
        return {'fstype': self.fstype, 'source': self.source, 'target': self.target, 'options': self.options,
                'links': [list(link) for link in self.links], 'read_only_after': self.read_only_after}

    @classmethod
    def from_dict(cls, data: dict) -> SeatMount:
        return cls(fstype=data['fstype'], source=data['source'], target=data['target'], options=data['options'],
                   links=tuple(tuple(link) for link in data.get('links', ())), read_only_after=bool(data.get('read_only_after')))


def _under_cgroup_root(entry: mountinfo.MountEntry) -> bool:
    return entry.mount_point == CGROUP_ROOT or entry.mount_point.startswith(CGROUP_ROOT + '/')


def _v1_subsystems(entry: mountinfo.MountEntry) -> set:
    return {key for key, value in entry.super_options if value is None}


def machine_hierarchies(entries, proc_cgroup_text: str) -> list[Hierarchy]:
    """The hierarchies a seat gets, from this machine's mounts (mountinfo) and labctl's own /proc/self/cgroup:
    cgroup v2 when mounted under /sys/fs/cgroup, and each v1 hierarchy there holding a controller of
    SEAT_V1_CONTROLLERS. Only mounts under /sys/fs/cgroup count: that is where a seat's modules look."""
    cgroup_mounts = [entry for entry in entries if entry.fstype in ('cgroup', 'cgroup2') and _under_cgroup_root(entry)]
    hierarchies = []
    for hierarchy_id, controllers, path in parse_proc_cgroup(proc_cgroup_text):
        if hierarchy_id == 0:
            mounts = [entry for entry in cgroup_mounts if entry.fstype == 'cgroup2']
            key = UNIFIED
        elif set(controllers) & set(SEAT_V1_CONTROLLERS):
            mounts = [entry for entry in cgroup_mounts if entry.fstype == 'cgroup' and set(controllers) <= _v1_subsystems(entry)]
            key = ','.join(controllers)
        else:
            continue
        # The shortest mount point first: /sys/fs/cgroup/memory rather than a second mount deeper down.
        mounts.sort(key=lambda entry: len(entry.mount_point))
        if not mounts:
            continue
        mount = mounts[0]
        if not (path == mount.root or path.startswith(mount.root.rstrip('/') + '/')):
            raise LabError(f'labctl runs in the cgroup {path} of the {key} hierarchy, which its mount at {mount.mount_point} '
                           f'does not show (it shows {mount.root}): labctl makes the seats\' cgroups only below its own.')
        hierarchies.append(Hierarchy(key=key, version=2 if hierarchy_id == 0 else 1, mount_point=mount.mount_point,
                                     mount_root=mount.root, own_path=path))
    return hierarchies


def current_hierarchies() -> list[Hierarchy]:
    return machine_hierarchies(mountinfo.read_mountinfo(), read_file('/proc/self/cgroup') or '')


def layout(hierarchies) -> str:
    """'unified' when this machine has cgroup v2 alone at /sys/fs/cgroup, 'hybrid' (v1 and v2), 'legacy' (v1
    alone), or 'none' (no hierarchy to give: the seat gets no /sys/fs/cgroup mounts)."""
    versions = {hierarchy.version for hierarchy in hierarchies}
    if not versions:
        return 'none'
    if versions == {2} and any(hierarchy.mount_point == CGROUP_ROOT for hierarchy in hierarchies):
        return 'unified'
    return 'hybrid' if 2 in versions else 'legacy'


def seat_mounts(hierarchies) -> list[SeatMount]:
    """What the seat mounts at /sys/fs/cgroup, in order, mirroring this machine's layout."""
    kind = layout(hierarchies)
    if kind == 'none':
        return []
    if kind == 'unified':
        return [SeatMount('cgroup2', 'cgroup2', CGROUP_ROOT, MOUNT_OPTIONS)]
    mounts = [SeatMount('tmpfs', 'tmpfs', CGROUP_ROOT, f'{MOUNT_OPTIONS},mode=755,size=4k', read_only_after=True)]
    for hierarchy in hierarchies:
        if hierarchy.version == 2:
            continue
        name = posixpath.basename(hierarchy.mount_point)
        links = tuple((controller, name) for controller in hierarchy.controllers if controller != name)
        mounts.append(SeatMount('cgroup', 'cgroup', f'{CGROUP_ROOT}/{name}', f'{MOUNT_OPTIONS},{hierarchy.key}', links))
    if 2 in {hierarchy.version for hierarchy in hierarchies}:
        mounts.append(SeatMount('cgroup2', 'cgroup2', f'{CGROUP_ROOT}/{UNIFIED}', MOUNT_OPTIONS))
    return mounts


def lab_dir(hierarchy: Hierarchy, lab_name: str) -> str:
    return posixpath.join(hierarchy.own_dir, TOP, lab_name)


def seat_dir(hierarchy: Hierarchy, lab_name: str, host_name: str) -> str:
    return posixpath.join(lab_dir(hierarchy, lab_name), host_name)


def is_seat_dir(path: str, lab_name: str, host_name: str) -> bool:
    """A directory labctl may have made for this seat: below /sys/fs/cgroup, ending in unboxed-lab/LAB/HOST.
    A record that says otherwise is never acted on."""
    normal = posixpath.normpath(path)
    return (normal == path and normal.startswith(CGROUP_ROOT + '/')
            and normal.split('/')[-3:] == [TOP, lab_name, host_name])


# --- on the machine --------------------------------------------------------------------------------

def _make_dir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as error:
        raise LabError(f'Could not create the cgroup {path}: {error.strerror}.') from error


def _delegate_controllers(directory: str) -> None:
    """cgroup v2: hand every controller this cgroup has down to its children, as systemd does at a seat's root.
    Only ever called on cgroups labctl made; labctl's own cgroup is left as it is."""
    available = (read_file(posixpath.join(directory, 'cgroup.controllers')) or '').split()
    enabled = (read_file(posixpath.join(directory, 'cgroup.subtree_control')) or '').split()
    missing = [name for name in available if name not in enabled]
    if not missing:
        return
    try:
        with open(posixpath.join(directory, 'cgroup.subtree_control'), 'w', encoding='ascii') as handle:
            handle.write(' '.join(f'+{name}' for name in missing))
    except OSError as error:
        raise LabError(f'Could not hand the controllers {", ".join(missing)} of {directory} down to its children: '
                       f'{error.strerror}.') from error


def create_seat_cgroups(hierarchies, lab_name: str, host_name: str) -> dict[str, str]:
    """The seat's cgroup and its init.scope in every hierarchy, below labctl's own; {hierarchy key: seat directory}."""
    made = {}
    for hierarchy in hierarchies:
        seat = seat_dir(hierarchy, lab_name, host_name)
        levels = [posixpath.join(hierarchy.own_dir, TOP), lab_dir(hierarchy, lab_name), seat]
        for directory in levels:
            _make_dir(directory)
            if hierarchy.version == 2:
                _delegate_controllers(directory)
        _make_dir(posixpath.join(seat, SCOPE))
        made[hierarchy.key] = seat
    return made


def scope_procs_files(seat_dirs) -> list[str]:
    return [posixpath.join(directory, SCOPE, 'cgroup.procs') for directory in seat_dirs]


def join_cgroups(procs_files) -> None:
    """Move the calling process into each cgroup (its cgroup.procs); "0" is the writer itself, in every
    PID namespace."""
    for path in procs_files:
        with open(path, 'w', encoding='ascii') as handle:
            handle.write('0')


def processes_in(directory: str) -> list[int]:
    text = read_file(posixpath.join(directory, 'cgroup.procs')) or ''
    return [int(pid) for pid in text.split()]


def _cgroups_below(directory: str) -> list[str]:
    """``directory`` and every cgroup below it, deepest first (the order rmdir needs)."""
    found = []
    for parent, children, _files in os.walk(directory, topdown=False):
        found += [posixpath.join(parent, child) for child in children]
    return found + [directory]


def _remove_empty_cgroup(directory: str) -> None:
    """rmdir a cgroup once the processes that were in it are gone (a killed process leaves it a moment later)."""
    if not wait_until(lambda: not os.path.isdir(directory) or not processes_in(directory), EMPTY_TIMEOUT, 0.05):
        raise LabError(f'The cgroup {directory} still holds processes {", ".join(map(str, processes_in(directory)))}: '
                       f'they are not the seat\'s (its processes are stopped), so labctl leaves it.')

    def removed() -> bool:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            return True
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise LabError(f'Could not remove the cgroup {directory}: {error.strerror}.') from error
            return False
        return True

    if not wait_until(removed, EMPTY_TIMEOUT, 0.05):
        raise LabError(f'Could not remove the cgroup {directory}: it stayed busy for {EMPTY_TIMEOUT:.0f} s.')


def _remove_if_empty(directory: str) -> None:
    """A shared level (unboxed-lab, LAB): removed when no other lab or seat is below it."""
    try:
        os.rmdir(directory)
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
            raise LabError(f'Could not remove the cgroup {directory}: {error.strerror}.') from error


def remove_seat_cgroups(seat_dirs, lab_name: str, host_name: str) -> list[str]:
    """Remove each seat directory with what was made inside it (by the seat itself too), once empty, then the
    lab's and labctl's levels above it if nothing else is there. Call only after the seat's processes are gone.
    Returns the seat directories removed."""
    removed = []
    for directory in sorted(set(seat_dirs)):
        if not is_seat_dir(directory, lab_name, host_name):
            raise LabError(f'{directory} is not a cgroup labctl makes for {host_name} of lab "{lab_name}": left as it is.')
        if not os.path.isdir(directory):
            continue
        for cgroup in _cgroups_below(directory):
            _remove_empty_cgroup(cgroup)
        removed.append(directory)
        lab_level = posixpath.dirname(directory)
        _remove_if_empty(lab_level)
        _remove_if_empty(posixpath.dirname(lab_level))
    return removed


def stray_lab_cgroups(hierarchies, lab_name: str, known_hosts) -> list[str]:
    """Below labctl's own cgroup, this lab's seat cgroups of no host in ``known_hosts`` (a labctl that lost its
    record started them), and the lab's level when nothing is below it."""
    stray = []
    for hierarchy in hierarchies:
        directory = lab_dir(hierarchy, lab_name)
        if not os.path.isdir(directory):
            continue
        seats = [name for name in sorted(os.listdir(directory)) if os.path.isdir(posixpath.join(directory, name))]
        stray += [posixpath.join(directory, name) for name in seats if name not in known_hosts]
        if not seats:
            stray.append(directory)
    return stray


def remove_stray_cgroups(stray) -> None:
    for directory in stray:
        if posixpath.basename(posixpath.dirname(directory)) == TOP:  # the lab's level, empty
            _remove_if_empty(directory)
            _remove_if_empty(posixpath.dirname(directory))
        else:
            seat = posixpath.basename(directory)
            remove_seat_cgroups([directory], posixpath.basename(posixpath.dirname(directory)), seat)
