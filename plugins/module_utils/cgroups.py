# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A container's cgroups: what this host has, the limits Docker would accept, and the directories that apply them.

The one place in unboxed that knows cgroups. ns_container (and ns_exec, which joins a running container) use it;
nothing else writes below /sys/fs/cgroup.

Detection (per host, from /proc/self/mountinfo through mountinfo.py and /proc/self/cgroup):
  - ``unified``: cgroup v2 alone (Debian 11 and later as installed): controllers listed in ``cgroup.controllers``,
    handed to children through the parent's ``cgroup.subtree_control``;
  - ``hybrid``: v1 hierarchies (``/sys/fs/cgroup/memory``, ``.../pids``, ``.../cpu``...) beside a cgroup2 mount
    (``/sys/fs/cgroup/unified``) that usually holds no controller at all (each is bound to its v1 hierarchy);
  - ``legacy``: v1 alone; ``none``: nothing mounted.
  Each controller is used where it is: in its v1 hierarchy, or in v2 when v2 lists it.

Limits, validated as ``docker run`` does (``detect``/``parse_limits`` say which option is wrong and why):
  - ``memory``: Docker's sizes (``64m``, ``1g``, ``512k``, ``1048576``, ``64MiB``; binary units, case-insensitive),
    at least 6 MiB as Docker requires. v2 ``memory.max`` (and ``memory.swap.max`` = the same again, Docker's default
    swap, where the kernel accounts swap); v1 ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` = twice).
  - ``pids_limit``: >= 1; ``pids.max`` in both.
  - ``cpus``: Docker's ``--cpus``: quota = cpus * 100000 us per period of 100000 us, from 0.01 up to the CPUs this
    process may run on (its cpuset/affinity); v2 ``cpu.max`` = ``QUOTA 100000``; v1 ``cpu.cfs_period_us`` then
    ``cpu.cfs_quota_us``.
  - ``cpu_shares``: 2..262144; v1 ``cpu.shares``; v2 ``cpu.weight`` = 1 + ((shares - 2) * 9999) // 262142, as runc
    converts it (1024 -> 39).

Where: the container's cgroup is ``PARENT/unboxed-NAME`` in every hierarchy that has a controller the limits need,
and in the v2 hierarchy whenever one is mounted (to hold the container's processes together even on a hybrid
host, where it sets no limit). PARENT is, per hierarchy, the cgroup of the process that runs the module
(its /proc/self/cgroup line: a container never escapes the limits of its starter), or ``cgroup_parent`` (an absolute
cgroup path, as /proc/self/cgroup writes them) in every hierarchy; missing directories on the way are created.

cgroup v2 and its controllers: a controller reaches the container's cgroup only when its parent enables it in
``cgroup.subtree_control``, and the parent may only enable what it has in ``cgroup.controllers``. The plan enables
the controllers the limits need - no others - only in directories that are ours to change: the parent itself (the
module's own cgroup, or the one ``cgroup_parent`` names) and the directories the plan creates. A cgroup above the
parent is never changed: if it does not hand a controller down, the error says that it is not delegated.
The "no internal processes" rule: a non-root v2 cgroup that holds processes cannot enable a controller for its
children (the kernel answers EBUSY). The plan does not move anybody's processes: it refuses with an error naming
``cgroup_parent`` and the PIDs, and the way out (a ``cgroup_parent`` without processes, e.g. ``/unboxed``, which is
created). On a classroom seat the parent is the root of the hierarchy, which the rule exempts.
Controllers the plan enabled are disabled again when the last cgroup below them goes (rollback or remove); the
parent directories it created are removed once empty.

API (everything takes its paths as parameters, so tests run it on a fake tree):
  ``parse_memory(text)``, ``parse_cpus(value)``, ``cpu_shares_to_weight(shares)``, ``format_size(bytes)``
  ``parse_limits(memory, pids_limit, cpus, cpu_shares, cpu_count=None) -> (Limits | None, [problems])``
  ``Limits``: ``.controllers``, ``.any()``, ``.to_dict()``, ``Limits.from_dict()``
  ``parse_proc_cgroup(text)``, ``detect(mount_entries, proc_cgroup_text) -> Host``, ``detect_host()``
  ``Host``: ``.layout``, ``.hierarchies``, ``.hierarchy_for(controller)``, ``.unified``, ``.to_dict()``
  ``cgroup_parent_problem(cgroup_parent)``
  ``plan(host, name, limits, cgroup_parent=None) -> Plan`` (raises ``CgroupError`` with ``.option`` and ``.problems``)
  ``Plan``: ``.cgroups`` (``CgroupDir``: hierarchy, version, path, directory, controllers), ``.steps()``,
      ``.directories()``, ``.procs_files()``, ``.describe()`` (the module's ``cgroup`` return), ``.to_dict()``,
      ``Plan.from_dict()`` (None for what this code did not write)
  ``create(plan) -> Plan`` (what was really done; on failure everything undone, then ``CgroupError``)
  ``attach(plan, pid)`` (pid 0: the writer itself), ``usage(plan) -> dict``
  ``processes(plan) -> [pid]``, ``leftovers(plan) -> [directory]``, ``remove(plan, timeout) -> [directory]``
  ``stray_cgroups(host, cgroup_parent=None)``: every ``unboxed-*`` cgroup below the parents, with its processes
  ``setup_commands(plan, pid='$$') -> [str]``: the shell commands a student types before the launch.
"""

from __future__ import annotations

import dataclasses
import decimal
import errno
import os
import posixpath
import re
import shlex
import time

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

CGROUP_ROOT = '/sys/fs/cgroup'
PROC_SELF_CGROUP = '/proc/self/cgroup'
DIRECTORY_PREFIX = 'unboxed-'
UNIFIED = 'unified'
PLAN_FORMAT = 1

# The controllers that container limits use, in the order their files are written.
LIMIT_CONTROLLERS = ('memory', 'pids', 'cpu')
# Which module option needs which controller (for messages).
OPTION_CONTROLLER = {'memory': 'memory', 'pids_limit': 'pids', 'cpus': 'cpu', 'cpu_shares': 'cpu'}

CPU_PERIOD_US = 100000
# The kernel refuses a CFS quota below 1 ms; Docker's smallest --cpus is 0.01 for the same reason.
MIN_CPU_QUOTA_US = 1000
# Docker: "Minimum memory limit allowed is 6MB".
MIN_MEMORY = 6 * 1024 * 1024
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262144
EMPTY_TIMEOUT = 5.0

_UNITS = {'': 1, 'k': 1024, 'm': 1024 ** 2, 'g': 1024 ** 3, 't': 1024 ** 4, 'p': 1024 ** 5}
# Docker's RAMInBytes (go-units): digits, optional fraction, optional space, unit, optional "i" and "b".
_SIZE = re.compile(r'([0-9]+(?:\.[0-9]+)?) ?(?:([kmgtp])i?)?b?', re.IGNORECASE)
_CPUS = re.compile(r'[0-9]*\.?[0-9]+')
# A cgroup path as /proc/self/cgroup writes it: absolute, one "/" between names, no "." or ".." component.
_CGROUP_PATH = re.compile(r'/|(/(?!\.\.?(?:/|\Z))[A-Za-z0-9_.:@+=-]+)+')
# A cgroup this code makes: unboxed-NAME (NAME as container.NAME_PATTERN allows).
_OWN_DIRECTORY = re.compile(r'unboxed-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')


class CgroupError(Exception):
    """A request that cannot be applied, or a cgroup operation that failed. ``option`` names the module option at
    fault (None for a failure of the host), ``problems`` lists every reason."""

    def __init__(self, problems, option: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.option = option
        super().__init__(' '.join(self.problems))


# --- limits ----------------------------------------------------------------------------------------------------

def parse_memory(text) -> int:
    """Docker's memory size in bytes (``64m`` -> 67108864). Raises ValueError with the reason."""
    if isinstance(text, bool):
        raise ValueError(f'{text!r} is not a size')
    raw = str(text).strip()
    match = _SIZE.fullmatch(raw)
    if not match:
        raise ValueError(f'"{raw}" is not a size: write a number with an optional unit b, k, m or g (64m, 1g, 512k, '
                         f'1048576)')
    number = decimal.Decimal(match.group(1))
    return int(number * _UNITS[(match.group(2) or '').lower()])


def format_size(size: int) -> str:
    """Bytes in the largest unit that holds them exactly, as the kernel reads them back (``64M``, ``1G``)."""
    for suffix, factor in (('G', 1024 ** 3), ('M', 1024 ** 2), ('K', 1024)):
        if size >= factor and size % factor == 0:
            return f'{size // factor}{suffix}'
    return str(size)


def parse_cpus(value) -> decimal.Decimal:
    """Docker's ``--cpus`` (``0.5``, ``"1.5"``, ``2``) as a Decimal. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f'{value!r} is not a number of CPUs')
    raw = str(value).strip()
    if not _CPUS.fullmatch(raw):
        raise ValueError(f'"{raw}" is not a number of CPUs: write a decimal number such as 0.5 or 2')
    return decimal.Decimal(raw)


def cpu_quota_us(cpus: decimal.Decimal) -> int:
    return int(cpus * CPU_PERIOD_US)


def cpu_shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares -> v2 cpu.weight, as runc converts them (integer arithmetic): 2 -> 1, 1024 -> 39,
    262144 -> 10000."""
    return 1 + ((shares - 2) * 9999) // 262142


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity, which the cpuset cgroup narrows, never more than the host's."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    return min(allowed, os.cpu_count() or allowed)


@dataclasses.dataclass(frozen=True)
class Limits:
    """A container's limits; None: not limited."""

    memory: int | None = None       # bytes
    pids_limit: int | None = None
    cpus: str | None = None         # Docker's --cpus, normalized ("0.5")
    cpu_shares: int | None = None

    def any(self) -> bool:
        return any(value is not None for value in dataclasses.astuple(self))

    @property
    def controllers(self) -> tuple:
        """The controllers these limits need, in LIMIT_CONTROLLERS order."""
        needed = {OPTION_CONTROLLER[name] for name, value in dataclasses.asdict(self).items() if value is not None}
        return tuple(controller for controller in LIMIT_CONTROLLERS if controller in needed)

    def options_for(self, controller: str) -> list[str]:
        return [name for name, value in dataclasses.asdict(self).items()
                if value is not None and OPTION_CONTROLLER[name] == controller]

    @property
    def cpu_quota_us(self) -> int | None:
        return None if self.cpus is None else cpu_quota_us(decimal.Decimal(self.cpus))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> Limits | None:
        if not isinstance(data, dict):
            return None
        limits, problems = parse_limits(data.get('memory'), data.get('pids_limit'), data.get('cpus'),
                                        data.get('cpu_shares'), cpu_count=None)
        return None if problems else limits


def _whole_number(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def parse_limits(memory=None, pids_limit=None, cpus=None, cpu_shares=None, cpu_count: int | None = -1):
    """Validate the limit options as ``docker run`` does: (Limits, []) or (None, [every problem, naming its option]).

    ``cpu_count``: how many CPUs ``cpus`` may reach (default: ``available_cpus()``; None: not checked, for a record).
    """
    if cpu_count == -1:
        cpu_count = available_cpus()
    problems = []
    memory_bytes = None
    if memory is not None and str(memory).strip() != '':
        try:
            memory_bytes = parse_memory(memory)
        except ValueError as error:
            problems.append(f'memory: {error}.')
        else:
            if memory_bytes == 0:
                problems.append('memory: 0 is no limit (Docker reads it as "unlimited"): leave memory unset for no '
                                'limit, or give a size such as 64m.')
            elif memory_bytes < MIN_MEMORY:
                problems.append(f'memory: {memory} is below the smallest limit Docker allows, 6m (6 MiB): a smaller '
                                f'cgroup could not even start a shell.')
    pids = None
    if pids_limit is not None:
        pids = _whole_number(pids_limit)
        if pids is None:
            problems.append(f'pids_limit: {pids_limit!r} is not a whole number of processes.')
        elif pids < 1:
            problems.append(f'pids_limit: must be at least 1 (the container\'s own first process), got {pids}.')
    cpus_text = None
    if cpus is not None and str(cpus).strip() != '':
        try:
            cpus_value = parse_cpus(cpus)
        except ValueError as error:
            problems.append(f'cpus: {error}.')
        else:
            top = f'{cpu_count}.00' if cpu_count is not None else 'the number of CPUs'
            if cpu_quota_us(cpus_value) < MIN_CPU_QUOTA_US:
                problems.append(f'cpus: {cpus} is too small: the range of CPUs is from 0.01 to {top} '
                                f'(the kernel needs a quota of at least {MIN_CPU_QUOTA_US} us per {CPU_PERIOD_US} us).')
            elif cpu_count is not None and cpus_value > cpu_count:
                problems.append(f'cpus: {cpus} is more than this host gives: the range of CPUs is from 0.01 to {top}, '
                                f'as there are only {cpu_count} CPUs available to this process.')
            else:
                cpus_text = format(cpus_value.normalize(), 'f')
    shares = None
    if cpu_shares is not None:
        shares = _whole_number(cpu_shares)
        if shares is None:
            problems.append(f'cpu_shares: {cpu_shares!r} is not a whole number.')
        elif not MIN_CPU_SHARES <= shares <= MAX_CPU_SHARES:
            problems.append(f'cpu_shares: must be from {MIN_CPU_SHARES} to {MAX_CPU_SHARES} (Docker\'s range; '
                            f'1024 is the default weight), got {shares}.')
    if problems:
        return None, problems
    return Limits(memory=memory_bytes, pids_limit=pids, cpus=cpus_text, cpu_shares=shares), []


# --- detection ---------------------------------------------------------------------------------------------------

def parse_proc_cgroup(text: str) -> list[tuple[int, tuple, str]]:
    """/proc/PID/cgroup: (hierarchy id, controllers, path) per line; v2 is id 0 with no controllers,
    a named v1 hierarchy has ('name=systemd',)."""
    lines = []
    for line in text.splitlines():
        if line.count(':') < 2:
            continue
        hierarchy_id, controllers, path = line.split(':', 2)
        lines.append((int(hierarchy_id), tuple(name for name in controllers.split(',') if name), path))
    return lines


def read_words(path: str) -> list[str] | None:
    """The words of a small kernel file, or None when it cannot be read."""
    try:
        with open(path, encoding='ascii', errors='replace') as handle:
            return handle.read().split()
    except OSError:
        return None


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy of this host, as the module process sees it."""

    key: str              # 'unified' for v2; the v1 controllers as /proc/self/cgroup names them ('cpu,cpuacct')
    version: int
    controllers: tuple    # v1: the hierarchy's controllers; v2: those its top cgroup has (cgroup.controllers)
    mount_point: str      # e.g. /sys/fs/cgroup/memory
    mount_root: str       # the cgroup the mount shows at its top ('/' unless a subtree is mounted)
    own_path: str         # this process's cgroup in it (/proc/self/cgroup)

    def directory_of(self, cgroup_path: str) -> str | None:
        """The directory of a cgroup path, or None when this mount does not show it."""
        root = self.mount_root.rstrip('/')
        if cgroup_path != self.mount_root and not cgroup_path.startswith(root + '/'):
            return None
        relative = cgroup_path[len(root):].strip('/')
        return posixpath.join(self.mount_point, relative) if relative else self.mount_point

    def path_of(self, directory: str) -> str:
        relative = posixpath.relpath(directory, self.mount_point)
        return self.mount_root if relative == '.' else posixpath.join(self.mount_root, relative)

    def to_dict(self) -> dict:
        return {'hierarchy': self.key, 'version': self.version, 'controllers': list(self.controllers),
                'mount_point': self.mount_point, 'own_cgroup': self.own_path}


@dataclasses.dataclass(frozen=True)
class Host:
    layout: str           # 'unified', 'hybrid', 'legacy' or 'none'
    hierarchies: tuple

    @property
    def unified(self) -> Hierarchy | None:
        return next((hierarchy for hierarchy in self.hierarchies if hierarchy.version == 2), None)

    def hierarchy_for(self, controller: str) -> Hierarchy | None:
        """The hierarchy that has ``controller``: its v1 hierarchy, else v2 when v2 lists it."""
        for hierarchy in self.hierarchies:
            if controller in hierarchy.controllers:
                return hierarchy
        return None

    def to_dict(self) -> dict:
        return {'layout': self.layout, 'hierarchies': [hierarchy.to_dict() for hierarchy in self.hierarchies]}


def _v1_subsystems(entry: mountinfo.MountEntry) -> set:
    return {key for key, value in entry.super_options if value is None or key == 'name'} | \
        {f'name={value}' for key, value in entry.super_options if key == 'name'}


def _preferred(mounts, cgroup_root: str):
    """Of several mounts of one hierarchy: the one under /sys/fs/cgroup, the shortest path first."""
    return sorted(mounts, key=lambda entry: (not (entry.mount_point == cgroup_root
                                                  or entry.mount_point.startswith(cgroup_root + '/')),
                                             len(entry.mount_point)))[0]


def layout_of(hierarchies) -> str:
    versions = {hierarchy.version for hierarchy in hierarchies}
    if not versions:
        return 'none'
    if versions == {2}:
        return 'unified'
    return 'hybrid' if 2 in versions else 'legacy'


def detect(entries, proc_cgroup_text: str, cgroup_root: str = CGROUP_ROOT) -> Host:
    """This host's cgroup hierarchies, from its mounts and this process's /proc/self/cgroup. v1 hierarchies that
    hold only a name (name=systemd) and no controller are left out: no limit lives there."""
    cgroup_mounts = [entry for entry in entries if entry.fstype in ('cgroup', 'cgroup2')]
    hierarchies = []
    for hierarchy_id, controllers, own_path in parse_proc_cgroup(proc_cgroup_text):
        if hierarchy_id == 0:
            mounts = [entry for entry in cgroup_mounts if entry.fstype == 'cgroup2']
        else:
            if not [name for name in controllers if not name.startswith('name=')]:
                continue
            mounts = [entry for entry in cgroup_mounts
                      if entry.fstype == 'cgroup' and set(controllers) <= _v1_subsystems(entry)]
        # A mount that does not show this process's cgroup (another subtree) cannot place anything below it.
        mounts = [entry for entry in mounts if own_path == entry.root or own_path.startswith(entry.root.rstrip('/') + '/')]
        if not mounts:
            continue
        mount = _preferred(mounts, cgroup_root)
        if hierarchy_id == 0:
            available = tuple(read_words(posixpath.join(mount.mount_point, 'cgroup.controllers')) or ())
            hierarchies.append(Hierarchy(UNIFIED, 2, available, mount.mount_point, mount.root, own_path))
        else:
            named = tuple(name for name in controllers if not name.startswith('name='))
            hierarchies.append(Hierarchy(','.join(controllers), 1, named, mount.mount_point, mount.root, own_path))
    # v1 first: on a hybrid host a controller is in one of them only, and the plan lists v1 before v2.
    hierarchies.sort(key=lambda hierarchy: hierarchy.version)
    return Host(layout_of(hierarchies), tuple(hierarchies))


def detect_host(mountinfo_path: str = mountinfo.MOUNTINFO_PATH, proc_cgroup_path: str = PROC_SELF_CGROUP) -> Host:
    with open(proc_cgroup_path, encoding='utf-8', errors='surrogateescape') as handle:
        text = handle.read()
    return detect(mountinfo.read_mountinfo(mountinfo_path), text)


def cgroup_parent_problem(cgroup_parent: str | None) -> str | None:
    if cgroup_parent is None:
        return None
    if not _CGROUP_PATH.fullmatch(cgroup_parent):
        return (f'cgroup_parent: "{cgroup_parent}" is not a cgroup path: write it absolute, as /proc/self/cgroup shows '
                f'them, e.g. /unboxed (names of letters, digits and _.:@+=-, no "." or ".." and no trailing "/").')
    return None


# --- the plan ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One thing done to the cgroup tree: ``mkdir`` a directory, ``enable`` controllers in a directory's
    cgroup.subtree_control (value "+memory +pids"), or ``write`` a value into a file. ``optional``: a file the kernel
    has only with a feature (swap accounting); written when it exists."""

    action: str
    path: str
    value: str | None = None
    optional: bool = False

    def to_dict(self) -> dict:
        return {'action': self.action, 'path': self.path, 'value': self.value, 'optional': self.optional}

    @classmethod
    def from_dict(cls, data) -> Step:
        return cls(str(data['action']), str(data['path']), None if data.get('value') is None else str(data['value']),
                   bool(data.get('optional')))

    def command(self) -> str:
        if self.action == 'mkdir':
            return f'mkdir {shlex.quote(self.path)}'
        target = posixpath.join(self.path, 'cgroup.subtree_control') if self.action == 'enable' else self.path
        return f'echo {shlex.quote(self.value)} > {shlex.quote(target)}'


@dataclasses.dataclass(frozen=True)
class CgroupDir:
    """The container's cgroup in one hierarchy, and the steps that make it."""

    hierarchy: str        # Hierarchy.key
    version: int
    controllers: tuple    # the controllers whose limits are set here (none: placement only)
    path: str             # as /proc/PID/cgroup will show it, e.g. /unboxed/unboxed-web
    directory: str        # /sys/fs/cgroup/memory/unboxed/unboxed-web
    steps: tuple          # Step, in order: parents made, controllers enabled, the directory, its limit files

    @property
    def procs_file(self) -> str:
        return posixpath.join(self.directory, 'cgroup.procs')

    def to_dict(self) -> dict:
        return {'hierarchy': self.hierarchy, 'version': self.version, 'controllers': list(self.controllers),
                'path': self.path, 'directory': self.directory, 'steps': [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data) -> CgroupDir:
        return cls(str(data['hierarchy']), int(data['version']), tuple(str(name) for name in data['controllers']),
                   str(data['path']), str(data['directory']), tuple(Step.from_dict(step) for step in data['steps']))


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    layout: str
    limits: Limits
    cgroup_parent: str | None
    cgroups: tuple        # CgroupDir, v1 hierarchies first, then v2

    def steps(self) -> list[Step]:
        return [step for cgroup in self.cgroups for step in cgroup.steps]

    def directories(self) -> list[str]:
        return [cgroup.directory for cgroup in self.cgroups]

    def procs_files(self) -> list[str]:
        """The files a launcher writes its own PID into (``0`` = the writer) before it execs the container."""
        return [cgroup.procs_file for cgroup in self.cgroups]

    def describe(self) -> dict:
        """What the module returns as ``cgroup``: layout, each hierarchy's version and path, the limits."""
        limits = self.limits
        return {
            'layout': self.layout,
            'cgroup_parent': self.cgroup_parent,
            'hierarchies': [{'hierarchy': cgroup.hierarchy, 'version': cgroup.version, 'path': cgroup.path,
                             'directory': cgroup.directory, 'controllers': list(cgroup.controllers)}
                            for cgroup in self.cgroups],
            'limits': {'memory': limits.memory, 'pids_limit': limits.pids_limit, 'cpus': limits.cpus,
                       'cpu_quota_us': limits.cpu_quota_us, 'cpu_period_us': CPU_PERIOD_US if limits.cpus else None,
                       'cpu_shares': limits.cpu_shares},
        }

    def to_dict(self) -> dict:
        return {'format': PLAN_FORMAT, 'name': self.name, 'layout': self.layout, 'limits': self.limits.to_dict(),
                'cgroup_parent': self.cgroup_parent, 'cgroups': [cgroup.to_dict() for cgroup in self.cgroups]}

    @classmethod
    def from_dict(cls, data) -> Plan | None:
        """The plan recorded in a state file, or None when it is not one this code wrote (a record that names
        directories other than ``.../unboxed-NAME`` is never acted on)."""
        try:
            if data.get('format') != PLAN_FORMAT:
                return None
            limits = Limits.from_dict(data['limits'])
            cgroups = tuple(CgroupDir.from_dict(cgroup) for cgroup in data['cgroups'])
            plan = cls(str(data['name']), str(data['layout']), limits, data.get('cgroup_parent'), cgroups)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if limits is None or not _plan_is_own(plan):
            return None
        return plan


def _plan_is_own(plan: Plan) -> bool:
    own_name = DIRECTORY_PREFIX + plan.name
    for cgroup in plan.cgroups:
        directory = cgroup.directory
        if (posixpath.normpath(directory) != directory or not directory.startswith('/')
                or posixpath.basename(directory) != own_name or not _OWN_DIRECTORY.fullmatch(own_name)):
            return False
        for step in cgroup.steps:
            if step.action not in ('mkdir', 'enable', 'write') or posixpath.normpath(step.path) != step.path:
                return False
            if step.action == 'write' and posixpath.dirname(step.path) != directory:
                return False
            if step.action in ('mkdir', 'enable') and not (directory == step.path
                                                           or directory.startswith(step.path.rstrip('/') + '/')):
                return False
    return True


def limit_files(version: int, controller: str, limits: Limits) -> list[Step]:
    """The files that set ``limits`` for one controller, in the order they must be written (relative paths)."""
    steps = []
    if controller == 'memory' and limits.memory is not None:
        if version == 2:
            steps += [Step('write', 'memory.max', format_size(limits.memory)),
                      Step('write', 'memory.swap.max', format_size(limits.memory), optional=True)]
        else:
            steps += [Step('write', 'memory.limit_in_bytes', format_size(limits.memory)),
                      Step('write', 'memory.memsw.limit_in_bytes', format_size(2 * limits.memory), optional=True)]
    if controller == 'pids' and limits.pids_limit is not None:
        steps.append(Step('write', 'pids.max', str(limits.pids_limit)))
    if controller == 'cpu':
        if limits.cpus is not None:
            if version == 2:
                steps.append(Step('write', 'cpu.max', f'{limits.cpu_quota_us} {CPU_PERIOD_US}'))
            else:
                steps += [Step('write', 'cpu.cfs_period_us', str(CPU_PERIOD_US)),
                          Step('write', 'cpu.cfs_quota_us', str(limits.cpu_quota_us))]
        if limits.cpu_shares is not None:
            if version == 2:
                steps.append(Step('write', 'cpu.weight', str(cpu_shares_to_weight(limits.cpu_shares))))
            else:
                steps.append(Step('write', 'cpu.shares', str(limits.cpu_shares)))
    return steps


def processes_in(directory: str) -> list[int]:
    return [int(word) for word in read_words(posixpath.join(directory, 'cgroup.procs')) or () if word.isdigit()]


def _is_v2_root(directory: str) -> bool:
    # Every v2 cgroup but the root has cgroup.type; the root is exempt from the "no internal processes" rule.
    return not os.path.exists(posixpath.join(directory, 'cgroup.type'))


def _existing_and_missing(directory: str, mount_point: str) -> tuple[str, list[str]]:
    """The nearest existing directory at or above ``directory`` (not above the mount) and the missing ones below
    it, top-down."""
    missing = []
    current = directory
    while not os.path.isdir(current) and current != mount_point:
        missing.insert(0, current)
        current = posixpath.dirname(current)
    return current, missing


def _option_names(limits: Limits, controllers) -> str:
    names = [name for controller in controllers for name in limits.options_for(controller)]
    return ', '.join(names)


def _plan_v2_controllers(hierarchy: Hierarchy, limits: Limits, parent_path: str, existing: str, missing: list[str],
                         controllers: tuple, parent_named: bool) -> tuple[list[Step], list[str]]:
    """The enable steps for the v2 controllers ``controllers``, or the problems that forbid them."""
    problems = []
    if not controllers:
        return [Step('mkdir', directory) for directory in missing], problems
    existing_path = hierarchy.path_of(existing)
    available = read_words(posixpath.join(existing, 'cgroup.controllers')) or []
    delegated = read_words(posixpath.join(existing, 'cgroup.subtree_control')) or []
    parent_words = (f'cgroup_parent {parent_path}' if parent_named
                    else f'the default cgroup_parent {parent_path} (the cgroup this module runs in)')
    not_available = [name for name in controllers if name not in available]
    if not_available:
        for controller in not_available:
            problems.append(f'{_option_names(limits, [controller])}: the {controller} controller is not delegated to '
                            f'{existing_path} in the cgroup v2 hierarchy at {hierarchy.mount_point}: its '
                            f'cgroup.controllers lists only "{" ".join(available)}". unboxed never changes a cgroup '
                            f'above {parent_words}; enable {controller} in the cgroup.subtree_control of the cgroups '
                            f'above it, or choose another cgroup_parent.')
        return [], problems
    steps = []
    to_enable = [name for name in controllers if name not in delegated]
    if missing:
        if to_enable:
            # The nearest existing cgroup is above the parent: not ours to change.
            problems.append(f'{_option_names(limits, to_enable)}: {existing_path} in the cgroup v2 hierarchy at '
                            f'{hierarchy.mount_point} does not hand {" and ".join(to_enable)} to its children '
                            f'(cgroup.subtree_control: "{" ".join(delegated)}"), and it is above cgroup_parent '
                            f'{parent_path}, so unboxed does not change it: the controller is not delegated.')
            return [], problems
    elif to_enable:
        holders = processes_in(existing)
        if holders and not _is_v2_root(existing):
            shown = ', '.join(str(pid) for pid in holders[:8]) + (', ...' if len(holders) > 8 else '')
            problems.append(f'cgroup_parent: {parent_words} holds processes (PIDs {shown}), and cgroup v2\'s "no '
                            f'internal processes" rule lets a cgroup that is not the root hand a controller '
                            f'({" ".join(to_enable)}, for {_option_names(limits, to_enable)}) to its children only '
                            f'while it holds no process itself. unboxed does not move other processes: set '
                            f'cgroup_parent to a cgroup without processes, e.g. /unboxed (it is created if missing).')
            return [], problems
        steps.append(Step('enable', existing, ' '.join(f'+{name}' for name in to_enable)))
    for directory in missing:
        steps.append(Step('mkdir', directory))
        steps.append(Step('enable', directory, ' '.join(f'+{name}' for name in controllers)))
    return steps, problems


def plan(host: Host, name: str, limits: Limits, cgroup_parent: str | None = None) -> Plan:
    """The container's cgroups on this host: directories, files and values, in order. Reads the tree, changes
    nothing. Raises CgroupError with every problem (controller missing on this host, not delegated, a parent with
    processes on v2, a parent this host does not show)."""
    problem = cgroup_parent_problem(cgroup_parent)
    if problem:
        raise CgroupError(problem, 'cgroup_parent')
    problems = []
    first_option = None
    used = {}
    for controller in limits.controllers:
        hierarchy = host.hierarchy_for(controller)
        if hierarchy is None:
            options = _option_names(limits, [controller])
            shown = ', '.join(f'{h.key} (v{h.version}) at {h.mount_point}' for h in host.hierarchies) or 'none is mounted'
            problems.append(f'{options}: this host has no {controller} controller in any cgroup hierarchy it mounts '
                            f'({shown}): the limit cannot be applied here.')
            first_option = first_option or options.split(', ', maxsplit=1)[0]
            continue
        used.setdefault(hierarchy.key, []).append(controller)

    def order(hierarchy):
        # v1 before v2; among v1, memory, pids, cpu as LIMIT_CONTROLLERS lists them.
        first = min((LIMIT_CONTROLLERS.index(name) for name in used.get(hierarchy.key, ())), default=len(LIMIT_CONTROLLERS))
        return (hierarchy.version, first)

    hierarchies = sorted((hierarchy for hierarchy in host.hierarchies if hierarchy.key in used or hierarchy.version == 2),
                         key=order)
    cgroups = []
    for hierarchy in hierarchies:
        controllers = tuple(used.get(hierarchy.key, ()))
        parent_path = cgroup_parent or hierarchy.own_path
        parent_directory = hierarchy.directory_of(parent_path)
        if parent_directory is None:
            problems.append(f'cgroup_parent: the {hierarchy.key} hierarchy mounted at {hierarchy.mount_point} shows '
                            f'only {hierarchy.mount_root} and below, not {parent_path}.')
            first_option = first_option or 'cgroup_parent'
            continue
        directory = posixpath.join(parent_directory, DIRECTORY_PREFIX + name)
        existing, missing = _existing_and_missing(parent_directory, hierarchy.mount_point)
        if not os.path.isdir(existing):
            problems.append(f'{hierarchy.mount_point}: the {hierarchy.key} hierarchy is not there any more.')
            continue
        steps = []
        if hierarchy.version == 2:
            enable_steps, v2_problems = _plan_v2_controllers(hierarchy, limits, parent_path, existing, missing,
                                                             controllers, cgroup_parent is not None)
            if v2_problems:
                problems += v2_problems
                first_option = first_option or v2_problems[0].split(':', maxsplit=1)[0].split(', ', maxsplit=1)[0]
                continue
            steps += enable_steps
        else:
            steps += [Step('mkdir', missing_directory) for missing_directory in missing]
        steps.append(Step('mkdir', directory))
        for controller in controllers:
            steps += [dataclasses.replace(step, path=posixpath.join(directory, step.path))
                      for step in limit_files(hierarchy.version, controller, limits)]
        cgroups.append(CgroupDir(hierarchy.key, hierarchy.version, controllers,
                                 posixpath.join(parent_path, DIRECTORY_PREFIX + name), directory, tuple(steps)))
    if problems:
        raise CgroupError(problems, first_option)
    return Plan(name, host.layout, limits, cgroup_parent, tuple(cgroups))


def setup_commands(cgroup_plan: Plan, pid: str = '$$') -> list[str]:
    """The shell commands a student types before the launch, then ``echo $$ > .../cgroup.procs`` for each cgroup
    (the shell moves itself in; what it starts next inherits the cgroups)."""
    commands = [step.command() for step in cgroup_plan.steps()]
    return commands + [f'echo {pid} > {shlex.quote(procs)}' for procs in cgroup_plan.procs_files()]


# --- on the host -------------------------------------------------------------------------------------------------

def _write(path: str, value: str) -> None:
    with open(path, 'w', encoding='ascii') as handle:
        handle.write(value)


def _rmdir(path: str) -> None:
    # A cgroup directory goes with its control files in it: rmdir, never a recursive delete.
    os.rmdir(path)


def _describe_write_error(step: Step, error: OSError) -> str:
    reason = error.strerror or str(error)
    if step.action == 'enable':
        extra = ''
        if error.errno == errno.EBUSY:
            extra = ' (EBUSY: the cgroup holds processes, and cgroup v2 lets only a cgroup without any hand controllers down)'
        return f'Could not enable {step.value} in {step.path}/cgroup.subtree_control: {reason}{extra}.'
    if step.action == 'mkdir':
        return f'Could not create the cgroup {step.path}: {reason}.'
    extra = ''
    if error.errno == errno.EINVAL and step.path.endswith(('cfs_quota_us', 'cpu.max')):
        extra = ' (a CPU quota above the one of a cgroup above it is refused)'
    elif error.errno == errno.EBUSY and 'memory' in step.path:
        extra = ' (the cgroup already uses more memory than that)'
    return f'Could not write "{step.value}" to {step.path}: {reason}{extra}.'


def _is_empty_leftover(directory: str) -> bool:
    if processes_in(directory):
        return False
    return not any(entry.is_dir() for entry in os.scandir(directory))


def create(cgroup_plan: Plan, timeout: float = EMPTY_TIMEOUT) -> Plan:
    """Make the plan's cgroups and write their limits. Returns the plan of what was really done (a parent made in
    the meantime by someone else is not ours to remove later), for the state file.

    An empty ``unboxed-NAME`` left by a killed container is removed and made afresh; one that holds processes is an
    error. On any failure everything done so far is undone (in reverse) before CgroupError is raised.
    """
    done_by_cgroup = []
    try:
        for cgroup in cgroup_plan.cgroups:
            done = []
            done_by_cgroup.append((cgroup, done))
            for step in cgroup.steps:
                if step.action == 'mkdir':
                    if step.path == cgroup.directory and os.path.isdir(step.path):
                        if not _is_empty_leftover(step.path):
                            raise CgroupError(f'The cgroup {step.path} already exists and holds processes '
                                              f'{", ".join(map(str, processes_in(step.path)))} or cgroups of its own: '
                                              f'another container of this name runs there; it is left as it is.')
                        _rmdir_when_empty(step.path, timeout)
                    try:
                        os.mkdir(step.path, 0o755)
                    except FileExistsError:
                        if step.path != cgroup.directory:
                            continue  # a parent someone else made meanwhile: not ours
                        raise
                    done.append(step)
                elif step.action == 'enable':
                    enabled = read_words(posixpath.join(step.path, 'cgroup.subtree_control')) or []
                    wanted = [word for word in step.value.split() if word[1:] not in enabled]
                    if not wanted:
                        continue
                    step = dataclasses.replace(step, value=' '.join(wanted))
                    _write(posixpath.join(step.path, 'cgroup.subtree_control'), step.value)
                    done.append(step)
                else:
                    if step.optional and not os.path.exists(step.path):
                        continue
                    _write(step.path, step.value)
                    done.append(step)
    except (OSError, CgroupError) as error:
        message = error.problems if isinstance(error, CgroupError) else [_describe_write_error(step, error)]
        undo_problems = _undo([step for _cgroup, done in done_by_cgroup for step in done], timeout)
        raise CgroupError(message + undo_problems) from None
    return dataclasses.replace(cgroup_plan, cgroups=tuple(
        dataclasses.replace(cgroup, steps=tuple(done)) for cgroup, done in done_by_cgroup))


def _rmdir_when_empty(directory: str, timeout: float) -> None:
    """rmdir a cgroup: the kernel empties it a moment after its last process exited (EBUSY meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
        time.sleep(0.02)


def _undo(done: list[Step], timeout: float) -> list[str]:
    """Undo steps in reverse; what could not be undone, as sentences."""
    problems = []
    for step in reversed(done):
        try:
            if step.action == 'mkdir':
                for child in _cgroups_below(step.path)[:-1]:
                    _rmdir_when_empty(child, timeout)
                _rmdir_when_empty(step.path, timeout)
            elif step.action == 'enable':
                if not _child_cgroups(step.path):
                    disable = ' '.join('-' + word[1:] for word in step.value.split())
                    _write(posixpath.join(step.path, 'cgroup.subtree_control'), disable)
        except OSError as error:
            problems.append(f'Could not undo "{step.command()}": {error.strerror or error}.')
    return problems


def _child_cgroups(directory: str) -> list[str]:
    try:
        return [entry.path for entry in os.scandir(directory) if entry.is_dir()]
    except OSError:
        return []


def _cgroups_below(directory: str) -> list[str]:
    """``directory`` and every cgroup below it, deepest first (the order rmdir needs)."""
    found = []
    for parent, children, _files in os.walk(directory, topdown=False):
        found += [posixpath.join(parent, child) for child in children]
    return found + [directory]


def attach(cgroup_plan: Plan, pid: int) -> None:
    """Move ``pid`` (0: the calling process) into every cgroup of the plan; its later children stay there."""
    for procs in cgroup_plan.procs_files():
        try:
            _write(procs, str(pid))
        except OSError as error:
            raise CgroupError(f'Could not move process {pid or os.getpid()} into {posixpath.dirname(procs)}: '
                              f'{error.strerror or error}.') from None


def processes(cgroup_plan: Plan) -> list[int]:
    """Every process in the plan's cgroups and below (sorted, each once)."""
    found = set()
    for directory in cgroup_plan.directories():
        if os.path.isdir(directory):
            for cgroup in _cgroups_below(directory):
                found.update(processes_in(cgroup))
    return sorted(found)


def leftovers(cgroup_plan: Plan) -> list[str]:
    """The plan's directories that exist (after the container is gone: what a killed run left)."""
    return [directory for directory in cgroup_plan.directories() if os.path.isdir(directory)]


def remove(cgroup_plan: Plan, timeout: float = EMPTY_TIMEOUT) -> list[str]:
    """Remove the plan's cgroups (with any cgroup made inside them) once their processes are gone - waiting up to
    ``timeout`` for the kernel to empty them - then the parents the plan made, when empty, and the controllers it
    enabled, when nothing is below them any more. Returns the container directories removed. Call it after the
    container's processes were stopped: a cgroup that still holds processes raises CgroupError and stays."""
    removed = []
    problems = []
    for cgroup in cgroup_plan.cgroups:
        directory = cgroup.directory
        if not os.path.isdir(directory):
            continue
        deadline = time.monotonic() + timeout
        while True:
            left = [pid for below in _cgroups_below(directory) for pid in processes_in(below)]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if left:
            problems.append(f'The cgroup {directory} still holds processes {", ".join(map(str, sorted(set(left))))} '
                            f'after {timeout:g} s: it is left as it is.')
            continue
        try:
            for below in _cgroups_below(directory):
                _rmdir_when_empty(below, max(0.0, deadline - time.monotonic()) + 1.0)
        except OSError as error:
            problems.append(f'Could not remove the cgroup {directory}: {error.strerror or error}.')
            continue
        removed.append(directory)
    for cgroup in cgroup_plan.cgroups:
        own_steps = [step for step in cgroup.steps
                     if step.action == 'enable' or (step.action == 'mkdir' and step.path != cgroup.directory)]
        for step in reversed(own_steps):
            try:
                if step.action == 'mkdir':
                    _rmdir(step.path)
                elif os.path.isdir(step.path) and not _child_cgroups(step.path):
                    enabled = read_words(posixpath.join(step.path, 'cgroup.subtree_control')) or []
                    disable = ' '.join('-' + word[1:] for word in step.value.split() if word[1:] in enabled)
                    if disable:
                        _write(posixpath.join(step.path, 'cgroup.subtree_control'), disable)
            except OSError as error:
                # A parent still used by another container (or its processes) stays, as it should.
                if error.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
                    problems.append(f'Could not undo "{step.command()}": {error.strerror or error}.')
    if problems:
        raise CgroupError(problems)
    return removed


def stray_cgroups(host: Host, cgroup_parent: str | None = None) -> list[dict]:
    """Every ``unboxed-*`` cgroup directly below the parent (default: this process's cgroup) in each hierarchy
    that has no cgroup below it, with the processes in it: {hierarchy, path, directory, processes}. Candidates for
    a caller that knows which containers it recorded; nothing here removes them."""
    found = []
    for hierarchy in host.hierarchies:
        parent_path = cgroup_parent or hierarchy.own_path
        parent_directory = hierarchy.directory_of(parent_path)
        if parent_directory is None or not os.path.isdir(parent_directory):
            continue
        for entry in sorted(os.scandir(parent_directory), key=lambda item: item.name):
            # A container's cgroup has no cgroup of its own below it; a tree that does (labctl's unboxed-lab) is
            # somebody else's.
            if entry.is_dir() and _OWN_DIRECTORY.fullmatch(entry.name) and not _child_cgroups(entry.path):
                found.append({'hierarchy': hierarchy.key, 'path': posixpath.join(parent_path, entry.name),
                              'directory': entry.path, 'processes': processes_in(entry.path)})
    return found


# --- usage -------------------------------------------------------------------------------------------------------

USAGE_KEYS = ('memory_current', 'memory_peak', 'pids_current', 'oom_kills', 'cpu_nr_throttled', 'cpu_throttled_usec')


def read_int(path: str) -> int | None:
    words = read_words(path)
    if not words or not words[0].lstrip('-').isdigit():
        return None
    return int(words[0])


def read_flat_keyed(path: str) -> dict:
    """A ``key value`` per line file (memory.events, cpu.stat, memory.oom_control) as {key: int}."""
    found = {}
    try:
        with open(path, encoding='ascii', errors='replace') as handle:
            for line in handle:
                words = line.split()
                if len(words) == 2 and words[1].isdigit():
                    found[words[0]] = int(words[1])
    except OSError:
        pass
    return found


def usage_of(version: int, directory: str) -> dict:
    """What one cgroup directory tells (None where its files do not exist or say nothing)."""
    def join(name):
        return posixpath.join(directory, name)

    if version == 2:
        events = read_flat_keyed(join('memory.events'))
        cpu = read_flat_keyed(join('cpu.stat'))
        return {'memory_current': read_int(join('memory.current')), 'memory_peak': read_int(join('memory.peak')),
                'pids_current': read_int(join('pids.current')), 'oom_kills': events.get('oom_kill'),
                'cpu_nr_throttled': cpu.get('nr_throttled'), 'cpu_throttled_usec': cpu.get('throttled_usec')}
    oom = read_flat_keyed(join('memory.oom_control'))
    cpu = read_flat_keyed(join('cpu.stat'))
    throttled_ns = cpu.get('throttled_time')
    return {'memory_current': read_int(join('memory.usage_in_bytes')),
            'memory_peak': read_int(join('memory.max_usage_in_bytes')),
            'pids_current': read_int(join('pids.current')), 'oom_kills': oom.get('oom_kill'),
            'cpu_nr_throttled': cpu.get('nr_throttled'),
            'cpu_throttled_usec': None if throttled_ns is None else throttled_ns // 1000}


def usage(cgroup_plan: Plan) -> dict:
    """memory_current, memory_peak, pids_current, oom_kills, cpu_nr_throttled, cpu_throttled_usec: each from the
    cgroup whose controller counts it (v1 hierarchies first), None where this host cannot tell."""
    found = dict.fromkeys(USAGE_KEYS)
    for cgroup in cgroup_plan.cgroups:
        for key, value in usage_of(cgroup.version, cgroup.directory).items():
            if found[key] is None:
                found[key] = value
    return found
