# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hand-built container: its spec, its state directory, how it is launched, and finding its process.

The one place that knows where a container's state lives and which process is the container,
so ns_container, roles and verify playbooks all agree. A container is tracked the way runc
tracks one: a state file holding the PID of the process that is PID 1 inside the container
(never ``unshare`` itself) together with its start time from /proc/PID/stat.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import signal
import tempfile
import time

from ansible_collections.unboxed.lab.plugins.module_utils import cgroups
from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import namespaces as ns_utils
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import process
from ansible_collections.unboxed.lab.plugins.module_utils.command import shell_join

STATE_ROOT = '/run/unboxed/containers'
STATE_FILE = 'state.json'
LOG_FILE = 'container.log'
# write_state's temporary file, renamed onto STATE_FILE.
STATE_TEMP_PREFIX = '.state.'
STATE_FORMAT = 1

ROOT_METHODS = ('chroot', 'pivot_root')
# pivot_root, as runc and Docker do: chroot leaves the host's files one chroot(); chdir("..") away. The talk's slide
# asks for chroot explicitly, since that escape is its lesson.
DEFAULT_ROOT_METHOD = 'pivot_root'
DEFAULT_NAMESPACES = ('pid', 'net', 'mount')

# Validating patterns are matched with fullmatch: `$` also matches before a final newline, and a name "talk\n" once
# became a state directory with a newline in its name.
# Safe as one path component, as Docker's container names are.
NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')
# RFC 1123 labels; the kernel keeps at most 64 bytes of hostname.
HOSTNAME_PATTERN = re.compile(r'(?=.{1,64}\Z)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*',
                              re.DOTALL)

# Sets the hostname inside the new UTS namespace, then runs the rest of its arguments.
# Fixed text: the hostname and the command reach it only as arguments ("$1", "$@").
# The shell exports PWD; unset, the container's environment stays exactly the documented one.
HOSTNAME_SCRIPT = '{hostname} "$1" && shift && unset PWD && exec "$@"'

# What root_method=pivot_root runs as PID 1 of the new namespaces, before the command.
# A shell cannot do it: once the old root is stacked on top of the new one, every program
# is looked up in the new root, and umount must still run. Python (the interpreter the module
# itself runs with) does the last step with umount2(2) in-process.
# The confined variant takes one more argument, the confinement settings (JSON, see confine.py), reads what it
# needs from the host before pivot_root, and applies it right before the command is executed.
_PIVOT_ROOT_TEMPLATE = '''\
import ctypes, os, socket, subprocess, sys
<ARGUMENTS>
# The command gets exactly the environment this stage was started with (Python may add LC_CTYPE, PEP 538).
with open('/proc/self/environ', 'rb') as handle:
    environment = dict(item.split(b'=', 1) for item in handle.read().split(b'\\0') if b'=' in item)
if hostname:
    socket.sethostname(hostname)
<PREPARE># pivot_root needs the new root to be a mount point: bind the rootfs onto itself, /proc included.
if subprocess.call([mount, '--rbind', rootfs, rootfs]) != 0:
    sys.exit('unboxed: could not bind-mount ' + rootfs + ' onto itself')
os.chdir(rootfs)
# pivot_root . . makes the rootfs / and stacks the old root on top of it ...
if subprocess.call([pivot_root, '.', '.']) != 0:
    sys.exit('unboxed: pivot_root failed')
# ... then the old root is detached: no path leads back to the host's files (after chroot they all stay).
if ctypes.CDLL(None, use_errno=True).umount2(b'.', 2) != 0:  # 2 = MNT_DETACH
    sys.exit('unboxed: could not detach the old root: ' + os.strerror(ctypes.get_errno()))
os.chdir(workdir)
<APPLY>try:
    os.execvpe(command[0], command, environment)
except OSError as error:
    sys.stderr.write('unboxed: cannot run ' + command[0] + ': ' + error.strerror + '\\n')
    sys.exit(127)
'''
# What makes `volumes` (bind mounts) in the container's own mount namespace, before the next stage changes its root:
# after unshare has made the namespaces (and mounted /proc), run as the process that becomes PID 1 - so nothing appears
# on the seat's mount table - then it executes the next stage. Fixed text: the paths reach it as arguments only. A
# target that leads out of the root file system (a symbolic link inside it, followed on the host) is refused.
VOLUME_STAGE = '''\
import json, os, subprocess, sys
mount, rootfs, volumes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
rest = sys.argv[4:]
with open('/proc/self/environ', 'rb') as handle:
    environment = dict(item.split(b'=', 1) for item in handle.read().split(b'\\0') if b'=' in item)
for host, inside, read_only in volumes:
    target = os.path.realpath(os.path.join(rootfs, inside.lstrip('/')))
    if target != rootfs and not target.startswith(rootfs.rstrip('/') + '/'):
        sys.exit('unboxed: volume ' + inside + ' leads out of the root file system, to ' + target)
    if subprocess.call([mount, '--bind'] + (['-o', 'ro'] if read_only else []) + [host, target]) != 0:
        sys.exit('unboxed: could not bind-mount ' + host + ' onto ' + inside)
os.execve(rest[0], rest, environment)
'''
PIVOT_ROOT_STAGE = _PIVOT_ROOT_TEMPLATE.replace(
    '<ARGUMENTS>', 'mount, pivot_root, rootfs, workdir, hostname = sys.argv[1:6]\ncommand = sys.argv[6:]').replace(
    '<PREPARE>', '').replace('<APPLY>', '')
# With capabilities, no_new_privs or seccomp: confine.py's stage functions, then the same steps.
PIVOT_ROOT_CONFINED_STAGE = confine.stage_script(_PIVOT_ROOT_TEMPLATE.replace(
    '<ARGUMENTS>', 'mount, pivot_root, rootfs, workdir, hostname, settings = sys.argv[1:7]\ncommand = sys.argv[7:]').replace(
    '<PREPARE>', '# Read on the host, before its root is detached: the filter, libc, the last capability.\n'
                 'prepared = unboxed_confine_prepare(json.loads(settings))\n').replace(
    '<APPLY>', '# As late as possible: after this only execve runs (and capset, without no_new_privs).\n'
               'try:\n'
               '    unboxed_confine_apply(prepared)\n'
               'except OSError as error:\n'
               '    sys.exit(str(error))\n'))


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Host programs a launch uses: absolute paths to run them, plain names to show them."""

    unshare: str = 'unshare'
    chroot: str = 'chroot'
    sh: str = 'sh'
    hostname: str = 'hostname'
    mount: str = 'mount'
    pivot_root: str = 'pivot_root'
    python: str = 'python3'
    setpriv: str = 'setpriv'


# The names a student types; the rendered shell command uses these.
DISPLAY_BINARIES = Binaries()


@dataclasses.dataclass(frozen=True)
class Remap:
    """userns_remap, resolved: the remap account and the first range of /etc/subuid and /etc/subgid it owns. Container
    uid n is host uid uid_start + n (0 <= n < uid_count), as dockerd's --userns-remap maps them."""

    user: str
    uid: int          # the account's own uid and primary gid: unshare runs as them, so newuidmap grants their range
    gid: int
    uid_start: int
    uid_count: int
    gid_start: int
    gid_count: int

    @property
    def uid_map(self) -> str:
        return f'0 {self.uid_start} {self.uid_count}'

    @property
    def gid_map(self) -> str:
        return f'0 {self.gid_start} {self.gid_count}'

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> Remap | None:
        if data is None:
            return None
        return cls(user=str(data['user']), **{key: int(data[key]) for key in
                                              ('uid', 'gid', 'uid_start', 'uid_count', 'gid_start', 'gid_count')})


SUBUID_FILE = '/etc/subuid'
SUBGID_FILE = '/etc/subgid'


def resolve_remap(user: str, account, subuid_text: str | None, subgid_text: str | None) -> tuple:
    """(Remap or None, problems) for ``userns_remap: USER``. ``account`` is its passwd entry (pwd.struct_passwd) or
    None; the texts are /etc/subuid and /etc/subgid, None when the file is missing. Pure; every problem names the
    option."""
    problems = []
    if account is None:
        return None, [f'userns_remap: there is no user "{user}" on this host. Create it as dockerd does for its '
                      f'dockremap user (a system account without login) with its ranges in /etc/subuid and /etc/subgid '
                      f'(the role userns of this collection does), or name another.']
    ranges = {}
    for path, text in ((SUBUID_FILE, subuid_text), (SUBGID_FILE, subgid_text)):
        if text is None:
            problems.append(f'userns_remap: {path} does not exist, so {user} has no range of IDs to map the container\'s '
                            f'root to (usermod --add-subuids/--add-subgids makes one).')
            continue
        lines, _bad = idmap.parse_subid(text)
        found = idmap.first_range(lines, user, account.pw_uid)
        if found is None or found.count < 1:
            problems.append(f'userns_remap: {path} has no range for {user} (a line {user}:START:COUNT, e.g. '
                            f'{user}:100000:65536).')
        else:
            ranges[path] = found
    if problems:
        return None, problems
    uids, gids = ranges[SUBUID_FILE], ranges[SUBGID_FILE]
    return Remap(user, account.pw_uid, account.pw_gid, uids.start, uids.count, gids.start, gids.count), []


@dataclasses.dataclass(frozen=True)
class Volume:
    """One of `volumes`: HOST:CONTAINER[:ro], Docker's -v syntax."""

    host: str
    inside: str
    read_only: bool = False

    def text(self) -> str:
        return f'{self.host}:{self.inside}' + (':ro' if self.read_only else '')


def parse_volume(text) -> tuple:
    """(Volume or None, problem) for one ``HOST:CONTAINER[:ro|rw]``, both absolute. Pure."""
    if not isinstance(text, str) or '\0' in text or '\n' in text:
        return None, f'volumes: {_quoted(text)} is not a HOST:CONTAINER[:ro] string.'
    fields = text.split(':')
    mode = None
    if len(fields) == 3:
        mode = fields.pop()
    if len(fields) != 2 or mode not in (None, 'ro', 'rw'):
        return None, (f'volumes: {_quoted(text)} is not HOST:CONTAINER or HOST:CONTAINER:ro (as docker run -v; paths '
                      f'with ":" cannot be given, and the only modes are ro and rw).')
    host, inside = fields
    for what, path in (('host path', host), ('container path', inside)):
        if not path.startswith('/'):
            return None, f'volumes: in {_quoted(text)} the {what} {_quoted(path)} must be absolute.'
        if '..' in path.split('/'):
            return None, f'volumes: in {_quoted(text)} the {what} must not contain "..".'
    if paths.normalize(inside) == '/':
        return None, f'volumes: in {_quoted(text)} the container path is the root itself; name a directory or file in it.'
    return Volume(paths.normalize(host), paths.normalize(inside), mode == 'ro'), None


def parse_volumes(texts) -> tuple:
    """(tuple of Volumes, problems): each entry parsed, a container path given twice refused."""
    volumes, problems, seen = [], [], set()
    for text in texts or ():
        volume, problem = parse_volume(text)
        if problem:
            problems.append(problem)
            continue
        if volume.inside in seen:
            problems.append(f'volumes: the container path {volume.inside} is given twice.')
            continue
        seen.add(volume.inside)
        volumes.append(volume)
    return tuple(volumes), problems


def unreachable_for(uid: int, gid: int, path: str) -> str | None:
    """The first directory on the way to ``path`` (itself included when it is a directory) that a process with this
    uid and gid and no capabilities on the host cannot search, with its owner and mode; None when it can."""
    current = '/'
    parts = [part for part in paths.normalize(path).split('/') if part]
    for index in range(len(parts) + 1):
        try:
            info = os.stat(current)
        except OSError:
            return None
        if not os.path.isdir(current):
            return None
        if info.st_uid == uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return f'{current} (owner {info.st_uid}:{info.st_gid}, mode {info.st_mode & 0o7777:04o})'
        if index < len(parts):
            current = os.path.join(current, parts[index])
    return None


def runnable_by(uid: int, gid: int, program: str) -> bool:
    """Whether a process with this uid and gid (no capabilities on the host) can execute ``program``."""
    real = os.path.realpath(program)
    try:
        info = os.stat(real)
    except OSError:
        return False
    bit = 0o100 if info.st_uid == uid else 0o010 if info.st_gid == gid else 0o001
    return bool(info.st_mode & bit) and unreachable_for(uid, gid, os.path.dirname(real)) is None


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """Everything that defines a running container. A difference in any field means a restart."""

    rootfs: str
    command: tuple
    namespaces: tuple = DEFAULT_NAMESPACES
    hostname: str | None = None
    mount_proc: bool = True
    root_method: str = DEFAULT_ROOT_METHOD
    env: tuple = ()  # sorted (name, value) pairs, so that equal dicts give equal specs
    workdir: str | None = None
    # Confinement (confine.py): capabilities kept, sorted (None: all), no_new_privs, seccomp profile.
    capabilities: tuple | None = None
    no_new_privs: bool = False
    seccomp: str = confine.UNCONFINED
    # Limits (cgroups.py, normalized as cgroups.parse_limits returns them) and where the cgroup goes (None: below the
    # cgroup of the process that starts the container, resolved at each start, so it is not part of what is compared).
    memory: int | None = None
    pids_limit: int | None = None
    cpus: str | None = None
    cpu_shares: int | None = None
    cgroup_parent: str | None = None
    # userns_remap (resolved: Remap) and volumes (Volume, in the order given); the talk's container has neither.
    userns_remap: Remap | None = None
    volumes: tuple = ()

    @classmethod
    def build(cls, rootfs, command, namespaces=DEFAULT_NAMESPACES, hostname=None, mount_proc=True,
              root_method=DEFAULT_ROOT_METHOD, env=None, workdir=None, confinement=None, limits=None,
              cgroup_parent=None, userns_remap=None, volumes=()) -> ContainerSpec:
        confinement = confinement or confine.Confinement()
        # A remapped root implies the user namespace, created first and owning the others.
        namespaces = list(namespaces) + (['user'] if userns_remap is not None else [])
        return cls(
            rootfs=paths.normalize(rootfs),
            command=tuple(str(arg) for arg in command),
            namespaces=tuple(ns_utils.canonical_order(namespaces)),
            hostname=hostname or None,
            mount_proc=bool(mount_proc),
            root_method=root_method,
            env=tuple(sorted((str(key), str(value)) for key, value in (env or {}).items())),
            workdir=paths.normalize(workdir) if workdir else None,
            capabilities=confinement.capabilities,
            no_new_privs=confinement.no_new_privs,
            seccomp=confinement.seccomp,
            memory=getattr(limits, 'memory', None),
            pids_limit=getattr(limits, 'pids_limit', None),
            cpus=getattr(limits, 'cpus', None),
            cpu_shares=getattr(limits, 'cpu_shares', None),
            cgroup_parent=cgroup_parent or None,
            userns_remap=userns_remap,
            volumes=tuple(volumes or ()),
        )

    @property
    def confinement(self) -> confine.Confinement:
        return confine.Confinement(self.capabilities, self.no_new_privs, self.seccomp)

    @property
    def limits(self) -> cgroups.Limits:
        return cgroups.Limits(memory=self.memory, pids_limit=self.pids_limit, cpus=self.cpus, cpu_shares=self.cpu_shares)

    @property
    def wants_cgroup(self) -> bool:
        """Limits, or a parent named: the container gets cgroups of its own (the talk's container gets none)."""
        return self.limits.any() or self.cgroup_parent is not None

    def to_dict(self) -> dict:
        spec = {
            'rootfs': self.rootfs,
            'command': list(self.command),
            'namespaces': list(self.namespaces),
            'hostname': self.hostname,
            'mount_proc': self.mount_proc,
            'root_method': self.root_method,
            'env': dict(self.env),
            'workdir': self.workdir,
        }
        spec.update(self.confinement.to_dict())
        spec.update(memory=self.memory, pids_limit=self.pids_limit, cpus=self.cpus, cpu_shares=self.cpu_shares,
                    cgroup_parent=self.cgroup_parent)
        spec.update(userns_remap=self.userns_remap.to_dict() if self.userns_remap else None,
                    volumes=[volume.text() for volume in self.volumes])
        return spec

    @classmethod
    def from_dict(cls, data) -> ContainerSpec | None:
        """The spec recorded in a state file, or None when it is not a spec this code wrote. A record written before
        confinement and limits existed has neither."""
        try:
            limits = cgroups.Limits.from_dict({key: data.get(key) for key in ('memory', 'pids_limit', 'cpus', 'cpu_shares')})
            if limits is None:
                return None
            volumes, problems = parse_volumes(data.get('volumes') or [])
            if problems:
                return None
            return cls.build(
                rootfs=data['rootfs'], command=data['command'], namespaces=data['namespaces'],
                hostname=data.get('hostname'), mount_proc=data['mount_proc'],
                root_method=data['root_method'], env=data.get('env') or {}, workdir=data.get('workdir'),
                confinement=confine.Confinement.from_dict(data), limits=limits, cgroup_parent=data.get('cgroup_parent'),
                userns_remap=Remap.from_dict(data.get('userns_remap')), volumes=volumes,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


SPEC_FIELDS = tuple(field.name for field in dataclasses.fields(ContainerSpec))


def spec_changes(before: ContainerSpec | None, after: ContainerSpec) -> list[str]:
    """Names of the spec fields that differ, in declaration order (all of them when there is no before)."""
    if before is None:
        return list(SPEC_FIELDS)
    return [name for name in SPEC_FIELDS if getattr(before, name) != getattr(after, name)]


def name_problem(name: str) -> str | None:
    if not NAME_PATTERN.fullmatch(name or ''):
        return (f'name {_quoted(name)} is not a safe container name: use 1 to 64 letters, digits, ".", "_" or "-", '
                f'starting with a letter or digit (it becomes a directory name under {STATE_ROOT}).')
    return None


def hostname_problem(hostname: str) -> str | None:
    if not HOSTNAME_PATTERN.fullmatch(hostname):
        return (f'hostname {_quoted(hostname)} is not a valid host name: use letters, digits and "-" in labels '
                f'separated by ".", at most 64 characters, e.g. container01.')
    return None


def _quoted(text) -> str:
    """A value in double quotes with its control characters escaped, so that a trailing newline shows as \\n."""
    return json.dumps(text, ensure_ascii=False)


def default_state_dir(name: str) -> str:
    return os.path.join(STATE_ROOT, name)


def state_file_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_FILE)


def log_file_path(state_dir: str) -> str:
    return os.path.join(state_dir, LOG_FILE)


class StateFileError(Exception):
    """A state file exists but cannot be trusted (unreadable, not JSON, not written by this code)."""


def read_state(state_dir: str) -> dict | None:
    """The recorded state of the container in ``state_dir``, or None when nothing is recorded."""
    path = state_file_path(state_dir)
    try:
        with open(path, encoding='utf-8') as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StateFileError(f'{path} cannot be read: {error}') from None
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise StateFileError(f'{path} is not an unboxed container state file (format {STATE_FORMAT})')
    return state


def write_state(state_dir: str, state: dict) -> None:
    """Replace the state file atomically: a reader sees the old or the new file, never half of one."""
    state = dict(state, format=STATE_FORMAT)
    descriptor, temporary = tempfile.mkstemp(prefix=STATE_TEMP_PREFIX, dir=state_dir)
    try:
        with os.fdopen(descriptor, 'w', encoding='utf-8') as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
            handle.write('\n')
        os.chmod(temporary, 0o600)
        os.replace(temporary, state_file_path(state_dir))
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def recorded_process(state: dict | None) -> process.ProcessIdentity | None:
    if not state or not state.get('process'):
        return None
    return process.ProcessIdentity.from_dict(state['process'])


def running_process(state: dict | None) -> tuple[process.ProcessIdentity | None, str | None]:
    """(identity, None) when the recorded container's PID 1 runs - the same PID and start time - else (None, why not):
    what ns_exec and container_network tell a student before they join or attach a container."""
    if state is None:
        return None, 'no such container'
    identity = recorded_process(state)
    if identity is None and state.get('launching'):
        return None, 'it is not running: a run that was starting it did not finish'
    if identity is None:
        return None, 'it is not running (it was stopped)'
    stat = process.read_proc_stat(identity.pid)
    if stat is None:
        return None, f'it is not running: its process (PID {identity.pid}) has ended'
    if stat.start_time != identity.start_time:
        return None, f'it is not running: PID {identity.pid} now belongs to another process ({stat.comm}), which is left alone'
    if stat.state in 'ZXx':
        return None, f'it is not running: its process (PID {identity.pid}) is a zombie'
    return identity, None


def recorded_spec(state: dict | None) -> ContainerSpec | None:
    if not state or not isinstance(state.get('spec'), dict):
        return None
    return ContainerSpec.from_dict(state['spec'])


def namespace_flags(spec: ContainerSpec, proc_mount_point: str) -> list[str]:
    """unshare(1) options for the spec's namespaces, in the order the talk typed them."""
    flags = ['--fork']
    for namespace in spec.namespaces:
        if namespace == 'mount' and spec.mount_proc:
            # --mount-proc implies --mount: the new proc is mounted in the new mount namespace only.
            flags.append(f'--mount-proc={proc_mount_point}')
        elif namespace == 'user' and spec.userns_remap is not None:
            # Root inside is the remap user's first subordinate range outside (dockerd's --userns-remap). The comma
            # form (outer,inner,count) is the one util-linux 2.38 (Debian 12) knows; 2.41 (Debian 13) still reads it
            # beside its inner:outer:count. unshare runs as the remap user (setpriv, the stage before), so the
            # newuidmap/newgidmap it calls grant exactly that user's ranges; --setuid/--setgid 0 then make the process
            # root of the new namespace - the user that unshare ran as is mapped to nothing there.
            remap = spec.userns_remap
            flags += ['--user', f'--map-users={remap.uid_start},0,{remap.uid_count}',
                      f'--map-groups={remap.gid_start},0,{remap.gid_count}', '--setuid=0', '--setgid=0']
        elif namespace == 'user':
            # Root outside stays root inside (uid 0 -> 0): files in the rootfs keep their owners.
            flags += ['--user', '--map-root-user']
        else:
            flags.append(f'--{namespace}')
    return flags


def probe_flags(spec: ContainerSpec) -> list[str]:
    """The unshare options of the launch, in a form that is safe to try before anything starts: the same namespaces,
    no /proc mounted, and --root/--wd (when the launch uses them) pointing at / - so that a kernel that refuses a
    namespace, or an unshare too old for an option, is explained before the container is started."""
    flags = namespace_flags(dataclasses.replace(spec, mount_proc=False), '/proc')
    if spec.root_method == 'chroot' and spec.workdir is not None:
        flags += ['--root=/', '--wd=/']
    return flags


def launch_stages(spec: ContainerSpec, binaries: Binaries = DISPLAY_BINARIES) -> list[list[str]]:
    """The launch command, cut where one program execs the next; the last stage is the container's command.

    The process that becomes PID 1 passes through every stage with the same PID: while its
    /proc/PID/cmdline still shows an earlier stage, the command has not started yet.
    """
    stages = _namespaced_stages(spec, binaries)
    if spec.userns_remap is not None:
        remap = spec.userns_remap
        # unshare runs as the remap account (not root), so that newuidmap maps the range that account owns.
        stages.insert(0, [binaries.setpriv, f'--reuid={remap.uid}', f'--regid={remap.gid}', '--clear-groups'])
    return stages


def volume_stage(spec: ContainerSpec, binaries: Binaries) -> list[str]:
    volumes = json.dumps([[volume.host, volume.inside, volume.read_only] for volume in spec.volumes])
    return [binaries.python, '-I', '-c', VOLUME_STAGE, binaries.mount, spec.rootfs, volumes]


def _namespaced_stages(spec: ContainerSpec, binaries: Binaries) -> list[list[str]]:
    rootfs = spec.rootfs
    command = list(spec.command)
    proc_in_rootfs = os.path.join(rootfs, 'proc')
    # The binds go in the container's own mount namespace, right after unshare made it, before the root changes. With
    # userns_remap they are made by the mapped root, which looks the host path up as its host uid (the module checks
    # that it can: see unreachable_for) - no earlier stage has the container's mount namespace to make them in.
    volumes = [volume_stage(spec, binaries)] if spec.volumes else []
    if spec.root_method == 'pivot_root':
        if spec.confinement.confined:
            # The settings as JSON, an argument no shell reads; the seccomp filter itself arrives on descriptor 3.
            pivot = [binaries.python, '-I', '-c', PIVOT_ROOT_CONFINED_STAGE, binaries.mount, binaries.pivot_root,
                     rootfs, spec.workdir or '/', spec.hostname or '', confine.stage_settings(spec.confinement)]
        else:
            pivot = [binaries.python, '-I', '-c', PIVOT_ROOT_STAGE, binaries.mount, binaries.pivot_root,
                     rootfs, spec.workdir or '/', spec.hostname or '']
        return [[binaries.unshare] + namespace_flags(spec, proc_in_rootfs)] + volumes + [pivot, command]
    if spec.hostname is None and not volumes:
        if spec.workdir is None:
            # The talk: unshare --fork --pid --net --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null
            return [[binaries.unshare] + namespace_flags(spec, proc_in_rootfs), [binaries.chroot, rootfs], command]
        # chroot(8) always starts in /; unshare's own --root/--wd change root and then directory.
        # With --root, --mount-proc names a path inside the new root.
        return [[binaries.unshare] + namespace_flags(spec, '/proc') + [f'--root={rootfs}', f'--wd={spec.workdir}'], command]
    set_hostname = [[binaries.sh, '-c', HOSTNAME_SCRIPT.format(hostname=_sh_word(binaries.hostname)), 'sh',
                     spec.hostname]] if spec.hostname is not None else []
    if spec.workdir is None:
        enter_root = [binaries.chroot, rootfs]
    else:
        enter_root = [binaries.unshare, f'--root={rootfs}', f'--wd={spec.workdir}']
    return [[binaries.unshare] + namespace_flags(spec, proc_in_rootfs)] + set_hostname + volumes + [enter_root, command]


def launcher_cmdline(stages: list[list[str]]) -> list[str]:
    """The command line the launcher (unshare, which stays as PID 1's parent) shows: the launch argv, less setpriv,
    which executes unshare in its own process."""
    if len(stages) > 1 and os.path.basename(stages[0][0]) == 'setpriv':
        return launch_argv(stages[1:])
    return launch_argv(stages)


def probe_argv(spec: ContainerSpec, binaries: Binaries, true: str) -> list[str]:
    """What tries the namespaces before the start (probe_flags), as the launch's own user (setpriv with a remap)."""
    argv = [binaries.unshare] + probe_flags(spec) + [true]
    if spec.userns_remap is not None:
        remap = spec.userns_remap
        argv = [binaries.setpriv, f'--reuid={remap.uid}', f'--regid={remap.gid}', '--clear-groups'] + argv
    return argv


def _sh_word(word: str) -> str:
    # Only ever a path from get_bin_path or a plain program name, never user input.
    return shell_join([word])


def launch_argv(stages: list[list[str]]) -> list[str]:
    """The one argument list that runs every stage: each stage's program execs the next stage."""
    return [arg for stage in stages for arg in stage]


def transitional_cmdlines(stages: list[list[str]]) -> list[list[str]]:
    """The command lines PID 1 shows before it runs the container's command (one per earlier stage)."""
    return [launch_argv(stages[index:]) for index in range(len(stages) - 1)]


def shell_command(spec: ContainerSpec) -> str:
    """The launch as a student would type it. The container starts with a clean environment
    (PATH, HOME) plus ``env``; only ``env`` is shown, as an ``env NAME=VALUE`` prefix."""
    prefix = ['env'] + [f'{key}={value}' for key, value in spec.env] if spec.env else []
    return shell_join(prefix + launch_argv(launch_stages(spec, DISPLAY_BINARIES)))


def directory_identity(path: str) -> tuple | None:
    """(mount ID, device, inode) of a directory. The mount ID tells a bind mount of / apart from / itself."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        status = os.fstat(descriptor)
        mount_id = None
        with open(f'{process.PROC}/self/fdinfo/{descriptor}', encoding='ascii') as handle:
            for line in handle:
                if line.startswith('mnt_id:'):
                    mount_id = int(line.split()[1])
        return (mount_id, status.st_dev, status.st_ino)
    except (OSError, ValueError):
        return None
    finally:
        os.close(descriptor)


def file_identity(path: str) -> tuple | None:
    """(device, inode) of what ``path`` leads to, or None when it cannot be reached."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def root_remounted_problem(pid: int, rootfs: str, proc: str = process.PROC) -> str | None:
    """Why the running container ``pid`` is not on what is mounted at ``rootfs`` now, or None.

    /proc/PID/root leads to the directory the container uses as "/", in its own mount namespace. After the overlay at
    ``rootfs`` was unmounted (and mounted again) on the host, the container keeps the old overlay, detached from every
    path of the host: the same directory no more (another device - each overlay mount has its own - or inode).
    None also when either side cannot be read: nothing is then claimed.
    """
    running_on = file_identity(f'{proc}/{pid}/root')
    mounted_now = file_identity(rootfs)
    if running_on is None or mounted_now is None or running_on == mounted_now:
        return None
    return (f'its root file system was remounted: the container (PID {pid}) still runs on the root that was at {rootfs} '
            f'when it started (device {_device(running_on[0])}, inode {running_on[1]}), which is no longer what is there '
            f'(device {_device(mounted_now[0])}, inode {mounted_now[1]}); its writes would not reach the live mount')


def _device(number: int) -> str:
    return f'{os.major(number)}:{os.minor(number)}'


@dataclasses.dataclass(frozen=True)
class Launched:
    """A container found by what it is: its launcher (unshare) and the launcher's child, the container's PID 1."""

    launcher: process.ProcessIdentity
    pid1: process.ProcessIdentity


def same_open_file(pid: int, descriptor: int, identity: tuple, proc: str = process.PROC) -> bool:
    return file_identity(f'{proc}/{pid}/fd/{descriptor}') == identity


def find_launched(argv: list[str], log_path: str, proc: str = process.PROC) -> Launched | None:
    """The container a run started with ``argv`` (recorded before the start) and then lost track of, e.g. when it was
    killed between starting unshare and recording the PID.

    It is found by what it is, never by a name alone: a process whose command line is exactly ``argv`` (absolute
    paths, the rootfs, the command) and whose standard output is this container's own log file (the same inode),
    with a living child - the container's PID 1. None when there is no such process.
    """
    log = file_identity(log_path)
    if log is None:
        return None
    for pid in process.all_pids(proc):
        if process.read_cmdline(pid, proc) != argv or not same_open_file(pid, 1, log, proc):
            continue
        launcher = process.identity_of(pid, proc)
        children = [child for child in process.children_of(pid, proc) if child.state not in 'ZXx']
        if launcher is not None and children:
            return Launched(launcher, process.ProcessIdentity(children[0].pid, children[0].start_time))
    return None


class DetachedProcess:
    """A program started as a daemon - own session, stdin from /dev/null, output to a file, no other descriptors -
    that stays our child while we run, so that its exit status can still be collected.

    subprocess.Popen would do the same; Ansible modules are held to run_command, which waits for its command,
    so the fork and exec are spelled out here (as subprocess does them, including its error pipe).
    """

    # The descriptor a passed file arrives on (confine.FILTER_FD: the stage reads the seccomp filter there).
    PASSED_FD = confine.FILTER_FD
    # Python ignores SIGPIPE and SIGXFSZ for itself; an ignored signal stays ignored across exec.
    RESTORED_SIGNALS = tuple(getattr(signal, name) for name in ('SIGPIPE', 'SIGXFSZ') if hasattr(signal, name))

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None

    @classmethod
    def spawn(cls, argv: list[str], env: dict, output_fd: int, cwd: str = '/', pass_fd: int | None = None,
              in_child=None) -> DetachedProcess:
        """fork, setsid, redirect, exec ``argv`` (argv[0] an absolute path). Raises OSError if exec fails.

        ``pass_fd`` is handed to the program as descriptor ``PASSED_FD`` (3), the only one besides 0-2.
        ``in_child`` runs in the child just before exec (e.g. moving itself into the container's cgroups, so that
        nothing of the container ever runs outside them); an exception there fails the spawn with its text.
        """
        error_read, error_write = os.pipe()
        os.set_inheritable(error_read, False)
        os.set_inheritable(error_write, False)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only ever leaves through exec or _exit
            stage = f'{argv[0]}: '
            try:
                os.close(error_read)
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(output_fd, 1)
                os.dup2(output_fd, 2)
                keep = {error_write}
                if pass_fd is not None:
                    if error_write == cls.PASSED_FD:
                        error_write = os.dup(error_write)  # non-inheritable, like the original
                        keep = {error_write}
                    if pass_fd != cls.PASSED_FD:
                        os.dup2(pass_fd, cls.PASSED_FD)
                    os.set_inheritable(cls.PASSED_FD, True)
                    keep.add(cls.PASSED_FD)
                # Nothing of the module reaches the daemon: above all not Ansible's stdout pipe, which would keep
                # Ansible waiting for the container to end.
                for descriptor in [int(name) for name in os.listdir('/proc/self/fd')]:
                    if descriptor > 2 and descriptor not in keep:
                        try:
                            os.close(descriptor)
                        except OSError:
                            pass
                for signum in cls.RESTORED_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                os.chdir(cwd)
                if in_child is not None:
                    stage = ''
                    in_child()
                    stage = f'{argv[0]}: '
                os.execve(argv[0], argv, env)
            except BaseException as error:
                os.write(error_write, f'{stage}{error}'.encode('utf-8', 'replace'))
            finally:
                os._exit(127)
        os.close(error_write)
        chunks = []
        while True:
            chunk = os.read(error_read, 4096)  # EOF as soon as exec closed the close-on-exec write end
            if not chunk:
                break
            chunks.append(chunk)
        os.close(error_read)
        spawned = cls(pid)
        if chunks:
            spawned.wait(timeout=10)
            text = b''.join(chunks).decode('utf-8', 'replace')
            raise OSError(f'cannot run {text}' if text.startswith(f'{argv[0]}: ') else text)
        return spawned

    def poll(self) -> int | None:
        """The exit code (negative: the signal that killed it) once it has ended, else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def wait(self, timeout: float, interval: float = 0.02) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(interval)
        return self.returncode


def is_chrooted(proc: str = process.PROC) -> bool | None:
    """Whether this process runs inside a chroot, as the kernel's user-namespace check sees it; None when it cannot tell.

    Compares our root directory with PID 1's (as systemd's running_in_chroot does), and, where PID 1 is out of
    reach, with our ancestors': an ancestor in the same mount namespace with another root means a chroot in between.
    """
    own_root = directory_identity('/')
    own_mount_ns = ns_utils.namespace_inode('self', 'mount', proc)
    if own_root is None or own_mount_ns is None:
        return None
    candidates = [1] + [pid for pid in process.ancestors_of(os.getpid(), proc) if pid != 1]
    for pid in candidates:
        if ns_utils.namespace_inode(pid, 'mount', proc) != own_mount_ns:
            continue
        root = directory_identity(f'{proc}/{pid}/root/')
        if root is None:
            continue
        if root != own_root:
            return True
        if pid == 1:
            return False
    return None


def unshare_refusal_problem(detail: str, namespaces, chrooted: bool | None) -> str:
    """Explain why the kernel refused to create the namespaces, from unshare's error text."""
    wanted = ', '.join(namespaces) or 'none'
    text = f'namespaces: the kernel refused to create the requested namespaces ({wanted}): {detail.strip()}.'
    lowered = detail.lower()
    if 'user' in namespaces and 'operation not permitted' in lowered:
        chroot_rule = 'Linux never lets a chrooted process create a user namespace (unshare(CLONE_NEWUSER) fails with EPERM)'
        if chrooted:
            return (f'{text} This module runs inside a chroot, and {chroot_rule}. Run it outside the chroot, or remove '
                    f'"user" from namespaces.')
        where = 'It could not be determined whether this module runs inside a chroot; if it does, that is the reason: ' \
            f'{chroot_rule}. ' if chrooted is None else ''
        return (f'{text} Creating a user namespace was refused with EPERM. {where}A security module (e.g. AppArmor '
                f'restricting unprivileged user namespaces) or a seccomp filter can also refuse it. Remove "user" from '
                f'namespaces or lift the restriction.')
    if 'no space left on device' in lowered:
        return (text + ' ENOSPC means a namespace limit was reached: see /proc/sys/user/max_*_namespaces '
                '(0 disables that namespace type).')
    if 'invalid argument' in lowered:
        return text + ' EINVAL usually means this kernel was built without one of these namespace types.'
    if 'operation not permitted' in lowered:
        return text + ' Creating namespaces needs root (CAP_SYS_ADMIN): run the task with become: true.'
    return text


# Which module option makes the launch use an unshare option, for the message when unshare does not know it.
UNSHARE_OPTION_CAUSES = {
    '--mount-proc': 'mount_proc', '--root': 'workdir', '--wd': 'workdir', '--user': 'namespaces: user',
    '--map-root-user': 'namespaces: user', '--cgroup': 'namespaces: cgroup', '--ipc': 'namespaces: ipc',
    '--uts': 'namespaces: uts', '--pid': 'namespaces: pid', '--net': 'namespaces: net', '--mount': 'namespaces: mount',
    '--fork': 'every container', '--map-users': 'userns_remap', '--map-groups': 'userns_remap',
    '--setuid': 'userns_remap', '--setgid': 'userns_remap',
}
_UNKNOWN_OPTION = re.compile(r"(?:unrecognized|unknown) option [`'\"]?(--?[A-Za-z0-9][A-Za-z0-9-]*)")
_UTIL_LINUX_VERSION = re.compile(r'util-linux(?:-ng)?\s+v?([0-9][0-9A-Za-z.~+-]*)')


def unknown_option(detail: str) -> str | None:
    """The option a util-linux program refused as unknown (getopt's "unrecognized option '--wd=/app'"), or None."""
    match = _UNKNOWN_OPTION.search(detail or '')
    return match.group(1) if match else None


def util_linux_version(version_text: str) -> str | None:
    """``unshare from util-linux 2.38.1`` (``unshare --version``) -> ``2.38.1``."""
    match = _UTIL_LINUX_VERSION.search(version_text or '')
    return match.group(1) if match else None


def unsupported_option_problem(program: str, detail: str, version_text: str | None) -> str | None:
    """When ``program`` (unshare) refused an option it does not know, say which, which module option needs it, and
    which util-linux was found; None when ``detail`` is about something else."""
    option = unknown_option(detail)
    if option is None:
        return None
    version = util_linux_version(version_text or '')
    found = f'util-linux {version}' if version else 'a util-linux whose version it did not tell (unshare --version)'
    cause = UNSHARE_OPTION_CAUSES.get(option)
    needed = f', which {cause} needs' if cause else ''
    return (f'{program} on this host does not know the option {option}{needed}: it is {found}, too old for this launch. '
            f'Install a newer util-linux (2.38, as in Debian 12, knows every option this module uses), or '
            f'change the option that needs it. {program} said: {detail.strip()}')


def read_log_tail(path: str, offset: int = 0, max_lines: int = 20) -> str:
    """The last lines written to a log since ``offset`` (for error messages)."""
    try:
        with open(path, 'rb') as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError as error:
        if error.errno == errno.ENOENT:
            return ''
        raise
    lines = data.decode('utf-8', 'replace').splitlines()
    return '\n'.join(lines[-max_lines:])


# ---- containers found by what they are: the /proc scan, adoption and replacement ---------------------------------

@dataclasses.dataclass(frozen=True)
class RootedProcess:
    """A live process whose root directory is a given directory (or was, on an older mount there)."""

    pid: int
    start_time: int
    ppid: int
    comm: str
    cmdline: tuple
    namespaces: dict          # {'pid': inode, 'net': inode, ...}
    nspids: tuple             # NSpid: its PID in each nested pid namespace, the outermost first
    inner_pid1: tuple | None  # what /proc/1/cmdline shows from inside its root; None: no /proc there
    remounted: str | None = None  # root_remounted_problem: its root's path reads so, but it is an older mount

    @property
    def identity(self) -> process.ProcessIdentity:
        return process.ProcessIdentity(self.pid, self.start_time)

    @property
    def is_pid1(self) -> bool:
        return self.nspids[-1:] == (1,)


def _read_cmdline_file(path: str) -> tuple | None:
    try:
        with open(path, 'rb') as handle:
            return tuple(process.parse_cmdline(handle.read()))
    except OSError:
        return None


def namespaces_of(pid, proc: str = process.PROC) -> dict:
    return {name: ns_utils.namespace_inode(pid, name, proc) for name in ns_utils.NAMESPACE_TYPES}


def processes_rooted_at(directory: str, proc: str = process.PROC) -> list[RootedProcess]:
    """Every live process whose root directory is ``directory`` - the one /proc scan of the collection (grading and
    ns_container's adoption both use it).

    The root is compared as a directory (device and inode), never as a path string: a container that pivot_root'ed
    into a bind mount of the directory shows "/" as its root's path and is the same directory. A process whose root's
    path still reads as ``directory`` but is another directory runs on an older mount (unmounted and mounted again
    since): it is listed with ``remounted`` saying so. Zombies, and processes that end while we read, are skipped.
    """
    found = []
    wanted = file_identity(directory)
    if wanted is None:
        return found
    for pid in process.all_pids(proc):
        same = file_identity(f'{proc}/{pid}/root') == wanted
        if not same:
            try:
                if os.path.normpath(os.readlink(f'{proc}/{pid}/root')) != os.path.normpath(directory):
                    continue
            except OSError:
                continue
        stat = process.read_proc_stat(pid, proc)
        cmdline = process.read_cmdline(pid, proc)
        if stat is None or cmdline is None or stat.state in 'ZXx':
            continue
        found.append(RootedProcess(
            pid=pid, start_time=stat.start_time, ppid=stat.ppid, comm=stat.comm, cmdline=tuple(cmdline),
            namespaces=namespaces_of(pid, proc), nspids=tuple(process.read_nspids(pid, proc)),
            inner_pid1=_read_cmdline_file(f'{proc}/{pid}/root/proc/1/cmdline'),
            remounted=None if same else root_remounted_problem(pid, directory, proc),
        ))
    return found


def recorded_containers(state_root: str = STATE_ROOT, proc: str = process.PROC) -> dict:
    """{(pid, start time): name} of the running processes ns_container recorded below ``state_root``: each container's
    PID 1 and its launcher (unshare, whose root pivot_root moves along with its mount namespace's)."""
    found = {}
    try:
        names = os.listdir(state_root)
    except OSError:
        return found
    for name in names:
        try:
            state = read_state(os.path.join(state_root, name))
        except StateFileError:
            continue
        identities = [recorded_process(state), process.ProcessIdentity.from_dict((state or {}).get('launcher') or {})]
        for identity in identities:
            if identity is not None and process.is_running(identity, proc):
                found[(identity.pid, identity.start_time)] = name
    return found


def started_by_ns_container(pid: int, proc: str = process.PROC) -> bool:
    """Whether ns_container started this process, whatever its state_dir: its output goes to a container.log with a
    state file beside it (every container it starts writes there, PID 1 and its launcher alike)."""
    try:
        output = os.readlink(f'{proc}/{pid}/fd/1')
    except OSError:
        return False
    return os.path.basename(output) == LOG_FILE and os.path.isfile(state_file_path(os.path.dirname(output)))


def is_container(rooted: RootedProcess, seat_namespaces: dict) -> bool:
    """Whether a process rooted in a root file system is a container (as opposed to, say, a student's chroot shell).

    A container is PID 1 of a PID namespace of its own (``unshare --fork --pid``), or - started without ``--fork`` or
    without ``--pid`` - a process of the seat's PID namespace in at least one other namespace of its own (net, mount...).
    A process of another PID namespace that is not its PID 1 belongs to a container (its PID 1 stands for it); a
    process in every namespace of the seat is a chroot.
    """
    if rooted.namespaces.get('pid') != seat_namespaces.get('pid'):
        return rooted.is_pid1
    return any(rooted.namespaces.get(name) != seat_namespaces.get(name)
               for name in ns_utils.NAMESPACE_TYPES if name != 'pid')


def launcher_of(rooted: RootedProcess, proc: str = process.PROC) -> process.ProcessIdentity | None:
    """The ``unshare`` that forked this container's PID 1 (its parent, as ns_container records for its own launches),
    or None when its parent is something else (a shell, after unshare without --fork)."""
    parent = process.read_proc_stat(rooted.ppid, proc)
    cmdline = process.read_cmdline(rooted.ppid, proc) or []
    if parent is None or not cmdline or os.path.basename(cmdline[0]) != 'unshare':
        return None
    return process.ProcessIdentity(parent.pid, parent.start_time)


@dataclasses.dataclass(frozen=True)
class Observed:
    """What can honestly be read of a running process to compare it with a spec, beside its RootedProcess."""

    hostname: str | None = None        # its UTS namespace's hostname
    keeps_host_root: bool | None = None  # its mount namespace's root is the seat's (chroot), not the rootfs (pivot_root)
    environment: dict | None = None    # /proc/PID/environ
    in_workdir: bool | None = None     # /proc/PID/cwd is the spec's workdir inside the rootfs
    status: dict = dataclasses.field(default_factory=dict)  # CapBnd, NoNewPrivs, Seccomp of /proc/PID/status
    uid_map: str | None = None         # /proc/PID/uid_map, normalized


# Words a student knows for each namespace, and the unshare option that makes it.
NAMESPACE_WORDS = {'pid': 'PID', 'net': 'network', 'mount': 'mount', 'uts': 'UTS (hostname)', 'ipc': 'IPC',
                   'user': 'user', 'cgroup': 'cgroup'}

# What adoption compares, in this order (docs and tests name the same fields).
ADOPTION_COMPARED = ('rootfs', 'command', 'namespaces', 'mount_proc', 'root_method', 'hostname', 'workdir', 'env',
                     'capabilities', 'no_new_privs', 'seccomp', 'limits', 'user mapping')


def normalize_id_map(text: str | None) -> str | None:
    """/proc/PID/uid_map lines with their padding removed: ``0 100000 65536`` (lines joined by '; ')."""
    if text is None:
        return None
    return '; '.join(' '.join(line.split()) for line in text.splitlines() if line.strip())


def expected_uid_map(spec: ContainerSpec) -> str | None:
    """The uid_map a container of this spec shows, or None without a user namespace."""
    if 'user' not in spec.namespaces:
        return None
    return spec.userns_remap.uid_map if spec.userns_remap is not None else '0 0 1'


def adoption_mismatch(spec: ContainerSpec, rooted: RootedProcess, observed: Observed, seat_namespaces: dict,
                      bounding_mask: int | None = None) -> str | None:
    """The first way a running container differs from ``spec``, in words a student understands; None when it matches.

    Pure: ``rooted`` and ``observed`` hold what was read of the process, ``seat_namespaces`` the module's own
    namespaces. ``bounding_mask`` is the capability bounding set the spec's container gets (every capability when the
    spec drops none). Fields that cannot be told apart from a running process count as different (a seccomp profile,
    cgroup limits: the module sets those up only for a container it starts).
    """
    if tuple(rooted.cmdline) != tuple(spec.command):
        return f'runs "{shell_join(list(rooted.cmdline))}", not "{shell_join(list(spec.command))}"'
    for name in ns_utils.NAMESPACE_TYPES:
        own = rooted.namespaces.get(name) != seat_namespaces.get(name)
        wanted = name in spec.namespaces
        option = 'mount' if name == 'mount' else name
        if wanted and not own:
            if name == 'pid':
                return 'runs in the seat\'s PID namespace (no --pid, or unshare without --fork)'
            return f'shares the seat\'s {NAMESPACE_WORDS[name]} namespace (no --{option})'
        if own and not wanted:
            return f'has a {NAMESPACE_WORDS[name]} namespace of its own (--{option}), which is not asked for'
    if 'pid' in spec.namespaces and not rooted.is_pid1:
        return f'is PID {rooted.nspids[-1] if rooted.nspids else "?"} of its PID namespace, not PID 1 (unshare without --fork)'
    if spec.mount_proc:
        if rooted.inner_pid1 is None:
            return 'has no /proc of its own mounted (no --mount-proc)'
        if tuple(rooted.inner_pid1) != tuple(rooted.cmdline):
            return f'its /proc is not its PID namespace\'s (PID 1 there is "{shell_join(list(rooted.inner_pid1))}")'
    if observed.keeps_host_root is None:
        return 'how it entered its root (chroot or pivot_root) could not be read'
    if spec.root_method == 'chroot' and not observed.keeps_host_root:
        return 'entered its root with pivot_root, not chroot'
    if spec.root_method == 'pivot_root' and observed.keeps_host_root:
        return 'entered its root with chroot: the seat\'s files stay in its mount namespace (pivot_root is asked for)'
    if spec.hostname is not None and observed.hostname != spec.hostname:
        return f'its hostname is "{observed.hostname}", not "{spec.hostname}"'
    if observed.in_workdir is False:
        return f'its working directory is not {spec.workdir or "/"}'
    environment = observed.environment or {}
    for key, value in spec.env:
        if environment.get(key) != value:
            return f'its environment has no {key}={value}'
    if bounding_mask is not None and 'CapBnd' in observed.status:
        try:
            live = int(observed.status['CapBnd'], 16)
        except ValueError:
            live = None
        if live != bounding_mask:
            return f'its capability bounding set is {observed.status["CapBnd"]}, not {confine.mask_text(bounding_mask)}'
    if (observed.status.get('NoNewPrivs') == '1') != spec.no_new_privs:
        return f'no_new_privs is {"set" if not spec.no_new_privs else "not set"} (NoNewPrivs in /proc/PID/status)'
    if spec.seccomp != confine.UNCONFINED:
        return 'a seccomp profile cannot be compared with a running filter'
    if observed.status.get('Seccomp', '0') != '0':
        return 'it runs under a seccomp filter, and none is asked for'
    if spec.wants_cgroup:
        return 'cgroup limits are asked for, which the module sets up only for a container it starts'
    if spec.volumes:
        return 'volumes are asked for, which the module binds only in a container it starts'
    if expected_uid_map(spec) is not None and observed.uid_map != expected_uid_map(spec):
        return f'its user namespace maps "{observed.uid_map}", not "{expected_uid_map(spec)}"'
    return None


def is_attempt(spec: ContainerSpec, rooted: RootedProcess, observed: Observed, bounding_mask: int | None) -> bool:
    """Whether a container that does not match ``spec`` is an attempt at it (to be replaced), rather than another
    container sharing the root file system (left alone): it runs the spec's command and is confined no more than the
    spec asks (capability bounding set, no_new_privs, seccomp)."""
    if tuple(rooted.cmdline) != tuple(spec.command):
        return False
    status = observed.status
    try:
        if bounding_mask is not None and 'CapBnd' in status and int(status['CapBnd'], 16) & bounding_mask != bounding_mask:
            return False
    except ValueError:
        return False
    if status.get('NoNewPrivs') == '1' and not spec.no_new_privs:
        return False
    return not (status.get('Seccomp', '0') != '0' and spec.seccomp == confine.UNCONFINED)


def read_environment(pid: int, proc: str = process.PROC) -> dict | None:
    try:
        with open(f'{proc}/{pid}/environ', 'rb') as handle:
            raw = handle.read()
    except OSError:
        return None
    return {key.decode('utf-8', 'surrogateescape'): value.decode('utf-8', 'surrogateescape')
            for key, _sep, value in (item.partition(b'=') for item in raw.split(b'\0') if b'=' in item)}


_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000


def peek_namespaces(pid: int, proc: str = process.PROC) -> tuple:
    """(hostname, keeps_host_root) of a process, read from inside its namespaces: a child of this process joins its
    UTS namespace (hostname) and its mount namespace, whose root it then stands in - the seat's own root for a chroot,
    the root file system itself after pivot_root. (None, None) where the kernel refuses.

    A forked child does it, so that this process never leaves its own namespaces. setns(2) into a mount namespace sets
    the caller's root and working directory to that namespace's root; the child does it first for its own mount
    namespace (the seat's root as seen from a namespace's root, whatever chroot the module runs in) and then for the
    container's, and compares the two.
    """
    import ctypes
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which only leaves through _exit
        answer = {'hostname': None, 'keeps_host_root': None}
        try:
            os.close(read_end)
            libc = ctypes.CDLL(None, use_errno=True)
            try:
                uts = os.open(f'{proc}/{pid}/ns/uts', os.O_RDONLY)
                if libc.setns(uts, _CLONE_NEWUTS) == 0:
                    answer['hostname'] = os.uname().nodename
            except OSError:
                pass
            own = os.open(f'{proc}/self/ns/mnt', os.O_RDONLY)
            theirs = os.open(f'{proc}/{pid}/ns/mnt', os.O_RDONLY)
            if libc.setns(own, _CLONE_NEWNS) == 0:
                seat_root = os.stat('/')
                if libc.setns(theirs, _CLONE_NEWNS) == 0:
                    their_root = os.stat('/')
                    answer['keeps_host_root'] = (seat_root.st_dev, seat_root.st_ino) == (their_root.st_dev, their_root.st_ino)
        except BaseException:  # pylint: disable=broad-except
            pass
        finally:
            try:
                os.write(write_end, json.dumps(answer).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(child, 0)
    try:
        answer = json.loads(b''.join(chunks) or b'{}')
    except ValueError:
        answer = {}
    return answer.get('hostname'), answer.get('keeps_host_root')


def observe(rooted: RootedProcess, spec: ContainerSpec, proc: str = process.PROC) -> Observed:
    """Read what adoption compares of ``rooted`` (beside what the scan already read)."""
    hostname, keeps_host_root = peek_namespaces(rooted.pid, proc)
    workdir = paths.resolve_inside(spec.rootfs, spec.workdir or '/')
    cwd = file_identity(f'{proc}/{rooted.pid}/cwd')
    try:
        with open(f'{proc}/{rooted.pid}/uid_map', encoding='ascii') as handle:
            uid_map = normalize_id_map(handle.read())
    except OSError:
        uid_map = None
    return Observed(
        hostname=hostname, keeps_host_root=keeps_host_root, environment=read_environment(rooted.pid, proc),
        in_workdir=None if cwd is None or not workdir else cwd == file_identity(workdir),
        status=confine.read_status_fields(rooted.pid, proc), uid_map=uid_map,
    )


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A container found on a root file system: what it is, its launcher, and how it differs from a spec."""

    rooted: RootedProcess
    launcher: process.ProcessIdentity | None
    mismatch: str | None
    attempt: bool

    def summary(self, why: str | None = None) -> dict:
        return {'pid': self.rooted.pid, 'command': list(self.rooted.cmdline), 'why': why or self.mismatch}


def find_candidates(spec: ContainerSpec | None, rootfs: str, exclude=(), proc: str = process.PROC,
                    bounding_mask: int | None = None) -> tuple:
    """(containers, bystanders) on ``rootfs`` that no ns_container record owns: the containers as Candidates compared
    with ``spec`` (None: not compared), the other processes rooted there (chroot shells) as RootedProcess.

    Launchers are left out: an ``unshare`` whose root pivot_root moved along is not a container of its own. So are
    the containers ns_container started (recorded below STATE_ROOT, or writing to a container.log beside a state file
    elsewhere) and ``exclude``, (pid, start time) pairs owned elsewhere.
    """
    seat = namespaces_of('self', proc)
    owned = set(recorded_containers(proc=proc)) | set(exclude)
    rooted = [entry for entry in processes_rooted_at(rootfs, proc)
              if entry.remounted is None and (entry.pid, entry.start_time) not in owned
              and not started_by_ns_container(entry.pid, proc)]
    containers = [entry for entry in rooted if is_container(entry, seat)]
    launchers = {}
    for entry in containers:
        launcher = launcher_of(entry, proc) if entry.is_pid1 else None
        if launcher is not None:
            launchers[entry.pid] = launcher
    launcher_pids = {identity.pid for identity in launchers.values()}
    found, bystanders = [], []
    for entry in rooted:
        if entry.pid in launcher_pids:
            continue
        if entry not in containers:
            bystanders.append(entry)
            continue
        if spec is None:
            found.append(Candidate(entry, launchers.get(entry.pid), None, True))
            continue
        observed = observe(entry, spec, proc)
        mismatch = adoption_mismatch(spec, entry, observed, seat, bounding_mask)
        found.append(Candidate(entry, launchers.get(entry.pid), mismatch,
                               mismatch is None or is_attempt(spec, entry, observed, bounding_mask)))
    found.sort(key=lambda candidate: candidate.rooted.start_time)
    return found, bystanders


def adoption_plan(candidates: list) -> tuple:
    """(the container to adopt or None, [(candidate, why) to replace], [candidates left alone]). Pure.

    The oldest matching container is adopted, the other matching ones are replaced (a second container of the same
    spec); a container that does not match is replaced when it is an attempt at the spec and none matches (the
    student's try, to be done again right); other containers sharing the root file system are left alone.
    """
    matching = [candidate for candidate in candidates if candidate.mismatch is None]
    adopted = matching[0] if matching else None
    replaced, left = [], []
    for candidate in candidates:
        if candidate is adopted:
            continue
        if candidate.mismatch is None:
            replaced.append((candidate, f'a second container of the same spec (PID {adopted.rooted.pid} is adopted)'))
        elif candidate.attempt and adopted is None:
            replaced.append((candidate, candidate.mismatch))
        else:
            left.append(candidate)
    return adopted, replaced, left
