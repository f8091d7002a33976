# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a confined container may do: its capabilities, no_new_privs and its seccomp filter.

The one place that knows Docker's default capabilities, turns a seccomp profile in Docker's JSON format into a
filter, and holds the code that applies both to a process just before it executes the container's command.

How it is used (ns_container, and ns_exec for a command run inside a running container):

1. On the managed host, in the module, before anything is started:
   ``confinement = Confinement.build(capabilities, no_new_privs, seccomp)`` after ``capabilities_problems``;
   ``seccomp_problems(confinement)`` validates the profile (file, JSON, actions, operators, syscall names) - every
   bad input is refused here, never in the stage.
2. ``launch = prepare_launch(confinement)`` compiles the seccomp filter with libseccomp (through ctypes) into the
   kernel's BPF program, for this host's architecture, kernel and the container's capabilities, exactly as Docker
   filters its profile (includes/excludes by caps, arches, minKernel). ``stage_settings(confinement, fd)`` is a
   small JSON text for the stage's argument list; ``launch.filter_fd()`` a memfd that holds the BPF program (None
   when unconfined), to be inherited by the stage as descriptor ``fd`` (ns_container dups it to 3, FILTER_FD;
   with ``subprocess``/``run_command`` pass it in ``pass_fds`` and name its own number).
3. The stage is a ``python3 -I -c SCRIPT ...`` process built with ``stage_script(body)``: ``STAGE_FUNCTIONS``
   followed by the caller's own code. That code calls, in this order:
   ``prepared = unboxed_confine_prepare(json.loads(settings))`` while the host's root is still reachable (it
   reads /proc/sys/kernel/cap_last_cap and the filter), then - after pivot_root, or after joining the
   container's namespaces and root (ns_exec) - ``unboxed_confine_apply(prepared)`` as late as possible, and then
   ``os.execvpe`` at once. ``unboxed_confine_apply`` orders the steps as runc does: no_new_privs; ambient and
   bounding sets dropped; without no_new_privs the filter is loaded while CAP_SYS_ADMIN is still effective;
   capset; with no_new_privs the filter is loaded last. After the filter is loaded only capset (without
   no_new_privs) and execve run, which Docker's profile allows.

A Confinement equal to ``Confinement.NONE`` (every capability, no no_new_privs, no seccomp) needs no stage step at
all: the talk's container is launched exactly as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import json
import os

from ansible_collections.unboxed.lab.plugins.module_utils import seccomp_docker

# ---- capabilities -------------------------------------------------------------------------------------------------

# linux/capability.h, by number. The kernel of the host may know fewer (cap_last_cap).
CAPABILITIES = (
    'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
    'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN',
    'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT',
    'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE',
    'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
    'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND',
    'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
)
CAPABILITY_NUMBERS = {name: number for number, name in enumerate(CAPABILITIES)}

# What `docker run` keeps (moby oci/caps/defaults.go): CapEff 00000000a80425fb in /proc/1/status.
DOCKER_CAPABILITIES = (
    'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
    'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
)
DOCKER_CAP_EFF = '00000000a80425fb'

# Words of the capabilities option besides names.
ALL = 'all'
DOCKER = 'docker'
NONE = 'none'

CAP_LAST_CAP = '/proc/sys/kernel/cap_last_cap'


def capability_name(word: str) -> str | None:
    """``net_admin``, ``NET_ADMIN`` or ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; None for an unknown name."""
    name = str(word).strip().upper()
    if not name.startswith('CAP_'):
        name = 'CAP_' + name
    return name if name in CAPABILITY_NUMBERS else None


def capabilities_problems(option: str, words) -> list[str]:
    """What is wrong with a capabilities list (``all``, ``docker``, ``none``, names, ``[docker, NET_ADMIN]``)."""
    if words is None:
        return []
    problems = []
    lowered = [str(word).strip().lower() for word in words]
    for special in (ALL, NONE):
        if special in lowered and len(lowered) > 1:
            problems.append(f'{option}: "{special}" stands alone (it means {"every capability" if special == ALL else "no capability"}), '
                            f'got {list(words)}. Use "{DOCKER}" plus names to add capabilities to Docker\'s set.')
    unknown = [str(word) for word, low in zip(words, lowered) if low not in (ALL, NONE, DOCKER) and capability_name(word) is None]
    if unknown:
        problems.append(f'{option}: unknown capability {", ".join(json.dumps(word) for word in unknown)}. Use "{ALL}", '
                        f'"{DOCKER}" (Docker\'s default 14), "{NONE}", or names from capabilities(7) such as NET_ADMIN '
                        f'or CAP_NET_ADMIN ("CAP_" and case optional).')
    return problems


def resolve_capabilities(words) -> tuple | None:
    """The capabilities a container keeps, as sorted names; None means every capability (nothing dropped)."""
    if words is None:
        return None
    lowered = [str(word).strip().lower() for word in words]
    if lowered == [ALL]:
        return None
    if lowered == [NONE]:
        return ()
    kept = set()
    for word, low in zip(words, lowered):
        if low == DOCKER:
            kept.update(DOCKER_CAPABILITIES)
        else:
            kept.add(capability_name(word))
    return tuple(sorted(kept, key=CAPABILITY_NUMBERS.get))


def last_capability(path: str = CAP_LAST_CAP) -> int:
    """The highest capability number this kernel knows (CAP_CHECKPOINT_RESTORE = 40 on Linux 5.9 and later)."""
    try:
        with open(path, encoding='ascii') as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def capability_mask(names) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[name]
    return mask


def mask_text(mask: int) -> str:
    """As /proc/PID/status shows a capability set: 16 hex digits."""
    return f'{mask:016x}'


def names_of_mask(mask: int) -> list[str]:
    return [name for number, name in enumerate(CAPABILITIES) if mask >> number & 1]


def read_status_fields(pid, proc: str = '/proc') -> dict:
    """Cap*, NoNewPrivs and Seccomp lines of /proc/PID/status (empty when the process is gone)."""
    fields = {}
    try:
        with open(f'{proc}/{pid}/status', encoding='utf-8', errors='replace') as handle:
            for line in handle:
                key, _sep, value = line.partition(':')
                if key.startswith('Cap') or key in ('NoNewPrivs', 'Seccomp'):
                    fields[key] = value.strip()
    except OSError:
        return {}
    return fields


# ---- the confinement of one container -----------------------------------------------------------------------------

UNCONFINED = 'unconfined'


@dataclasses.dataclass(frozen=True)
class Confinement:
    """Capabilities kept (None: all), no_new_privs, and the seccomp profile: ``unconfined``, ``docker`` or a path."""

    capabilities: tuple | None = None
    no_new_privs: bool = False
    seccomp: str = UNCONFINED

    @classmethod
    def build(cls, capabilities=None, no_new_privs=False, seccomp=None) -> Confinement:
        return cls(capabilities=resolve_capabilities(capabilities), no_new_privs=bool(no_new_privs),
                   seccomp=seccomp or UNCONFINED)

    @property
    def confined(self) -> bool:
        return self != Confinement()

    def to_dict(self) -> dict:
        return {
            'capabilities': ALL if self.capabilities is None else list(self.capabilities),
            'no_new_privs': self.no_new_privs,
            'seccomp': self.seccomp,
        }

    @classmethod
    def from_dict(cls, data) -> Confinement:
        """The recorded confinement; a record written before confinement existed means none."""
        data = data or {}
        capabilities = data.get('capabilities', ALL)
        return cls.build(capabilities=[ALL] if capabilities == ALL else capabilities,
                         no_new_privs=data.get('no_new_privs', False), seccomp=data.get('seccomp'))

    def bounding_names(self, last_cap: int | None = None) -> list[str]:
        """The container's bounding set (what Docker's includes/excludes ``caps`` test), by name."""
        if self.capabilities is not None:
            return list(self.capabilities)
        last = last_capability() if last_cap is None else last_cap
        return list(CAPABILITIES[:last + 1])


# ---- seccomp: Docker's JSON profile -> libseccomp -> BPF ----------------------------------------------------------

DOCKER_PROFILE = 'docker'

# libseccomp's seccomp.h.
ACTIONS = {
    'SCMP_ACT_KILL': 0x00000000, 'SCMP_ACT_KILL_THREAD': 0x00000000, 'SCMP_ACT_KILL_PROCESS': 0x80000000,
    'SCMP_ACT_TRAP': 0x00030000, 'SCMP_ACT_ERRNO': 0x00050000, 'SCMP_ACT_TRACE': 0x7ff00000,
    'SCMP_ACT_LOG': 0x7ffc0000, 'SCMP_ACT_ALLOW': 0x7fff0000,
}
# Docker accepts it too, but it hands the call to a listener process (listenerPath) that this module does not run.
UNSUPPORTED_ACTIONS = {'SCMP_ACT_NOTIFY': 'it needs a seccomp agent listening on listenerPath, which this module does not run'}
OPERATORS = {'SCMP_CMP_NE': 1, 'SCMP_CMP_LT': 2, 'SCMP_CMP_LE': 3, 'SCMP_CMP_EQ': 4, 'SCMP_CMP_GE': 5, 'SCMP_CMP_GT': 6,
             'SCMP_CMP_MASKED_EQ': 7}
SYSCALL_MAX_ARGUMENTS = 6
# libseccomp's architecture names (SCMP_ARCH_<NAME upper-cased> in Docker's profiles).
LIBSECCOMP_ARCHES = ('x86', 'x86_64', 'x32', 'arm', 'aarch64', 'loongarch64', 'mips', 'mipsel', 'mips64', 'mips64n32',
                     'mipsel64', 'mipsel64n32', 'ppc', 'ppc64', 'ppc64le', 's390', 's390x', 'parisc', 'parisc64',
                     'riscv64')
# libseccomp's native architecture name -> the name Docker's includes/excludes "arches" use (moby's goToNative).
DOCKER_ARCH_NAMES = {'x86_64': 'amd64', 'x86': 'x86', 'x32': 'x32', 'aarch64': 'arm64', 'arm': 'arm',
                     'mips64': 'mips64', 'mips64n32': 'mips64n32', 'mipsel64': 'mipsel64', 'mipsel64n32': 'mips3l64n32',
                     'mipsel': 'mipsel', 'mips': 'mips', 'ppc': 'ppc', 'ppc64': 'ppc64', 'ppc64le': 'ppc64le',
                     'riscv64': 'riscv64', 's390': 's390', 's390x': 's390x', 'loongarch64': 'loongarch64'}
NR_SCMP_ERROR = -1
BPF_INSTRUCTION_SIZE = 8


class SeccompError(Exception):
    """A seccomp profile that cannot become a filter; the text names the profile and says why."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [('arg', ctypes.c_uint), ('op', ctypes.c_int), ('datum_a', ctypes.c_uint64), ('datum_b', ctypes.c_uint64)]


_LIBSECCOMP = []


def libseccomp():
    """libseccomp.so.2 (Debian's libseccomp2), loaded once, with its prototypes declared."""
    if _LIBSECCOMP:
        return _LIBSECCOMP[0]
    name = ctypes.util.find_library('seccomp') or 'libseccomp.so.2'
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as error:
        raise SeccompError(f'libseccomp is not installed on this host ({error}); install the package libseccomp2') from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    _LIBSECCOMP.append(lib)
    return lib


def libseccomp_version() -> str:
    class _Version(ctypes.Structure):
        _fields_ = [('major', ctypes.c_uint), ('minor', ctypes.c_uint), ('micro', ctypes.c_uint)]
    lib = libseccomp()
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    version = lib.seccomp_version().contents
    return f'{version.major}.{version.minor}.{version.micro}'


def arch_token(name: str) -> int:
    """libseccomp's token for an architecture name (``x86_64``), 0 when this libseccomp does not know it."""
    return libseccomp().seccomp_arch_resolve_name(name.encode())


def native_arch() -> str:
    native = libseccomp().seccomp_arch_native()
    for name in LIBSECCOMP_ARCHES:
        if arch_token(name) == native:
            return name
    raise SeccompError(f'libseccomp reports a native architecture (0x{native:x}) this module does not know')


def syscall_known_anywhere(name: str) -> bool:
    """Whether libseccomp knows the system call on any architecture (a negative pseudo-number counts: it is known,
    just not a real call on that architecture, such as socket on 32-bit x86)."""
    lib = libseccomp()
    for arch in LIBSECCOMP_ARCHES:
        token = arch_token(arch)
        if token and lib.seccomp_syscall_resolve_name_arch(token, name.encode()) != NR_SCMP_ERROR:
            return True
    return False


def docker_syscall_names() -> frozenset:
    return frozenset(name for rule in seccomp_docker.PROFILE['syscalls'] for name in rule.get('names') or ())


def kernel_version(release: str | None = None) -> tuple:
    """``6.1.0-18-amd64`` -> (6, 1), as moby's parseRelease reads it."""
    release = release or os.uname().release
    parts = release.split('.')
    try:
        return (int(parts[0]), int(''.join(ch for ch in parts[1].split('-')[0] if ch.isdigit()) or 'x'))
    except (IndexError, ValueError):
        raise SeccompError(f'cannot read the kernel version from "{release}"') from None


def _min_kernel(text, where: str) -> tuple:
    parts = str(text).split('.')
    if len(parts) != 2 or not all(part.isdigit() for part in parts) or parts == ['0', '0']:
        raise SeccompError(f'{where}: minKernel "{text}" is not "<kernel>.<major>", e.g. "4.8"')
    return (int(parts[0]), int(parts[1]))


def load_profile(seccomp: str) -> dict:
    """The profile named by the seccomp option, as Docker's JSON format decodes it."""
    if seccomp == DOCKER_PROFILE:
        return seccomp_docker.PROFILE
    try:
        with open(seccomp, encoding='utf-8') as handle:
            text = handle.read()
    except OSError as error:
        raise SeccompError(f'cannot read the profile {seccomp}: {error.strerror}') from None
    except UnicodeDecodeError:
        raise SeccompError(f'the profile {seccomp} is not UTF-8 text, hence not JSON') from None
    try:
        profile = json.loads(text)
    except ValueError as error:
        raise SeccompError(f'the profile {seccomp} is not valid JSON: {error}') from None
    if not isinstance(profile, dict):
        raise SeccompError(f'the profile {seccomp} is JSON but not an object with defaultAction and syscalls')
    return profile


def _action(name, errno_ret, where: str) -> int:
    if not isinstance(name, str) or name not in ACTIONS:
        why = UNSUPPORTED_ACTIONS.get(name)
        if why:
            raise SeccompError(f'{where}: action {name} is not supported here: {why}')
        raise SeccompError(f'{where}: unknown action {json.dumps(name)}; known: {", ".join(sorted(ACTIONS))}')
    code = ACTIONS[name]
    if name in ('SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE'):
        # runc's default for an ERRNO or TRACE rule without errnoRet.
        value = errno.EPERM if errno_ret is None else errno_ret
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xffff:
            raise SeccompError(f'{where}: errnoRet {json.dumps(value)} is not an error number (0 to 65535)')
        code |= value
    return code


def _names(rule: dict, where: str) -> list[str]:
    name = rule.get('name')
    names = rule.get('names')
    if name and names:
        raise SeccompError(f"{where}: both 'name' and 'names' are given; use either")
    names = [name] if name else names
    if not isinstance(names, list) or not names or not all(isinstance(item, str) and item for item in names):
        raise SeccompError(f'{where}: "names" must be a non-empty list of system call names')
    return names


def _condition(argument, where: str) -> tuple:
    if not isinstance(argument, dict):
        raise SeccompError(f'{where}: each of "args" is an object with index, value, valueTwo and op')
    index, op = argument.get('index'), argument.get('op')
    value, value_two = argument.get('value', 0), argument.get('valueTwo', 0)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < SYSCALL_MAX_ARGUMENTS:
        raise SeccompError(f'{where}: argument index {json.dumps(index)} is not 0 to {SYSCALL_MAX_ARGUMENTS - 1}')
    if op not in OPERATORS:
        raise SeccompError(f'{where}: unknown operator {json.dumps(op)}; known: {", ".join(sorted(OPERATORS))}')
    for number in (value, value_two):
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 1 << 64:
            raise SeccompError(f'{where}: argument value {json.dumps(number)} is not an unsigned 64-bit number')
    return (index, OPERATORS[op], value, value_two)


def _filter_applies(condition, include: bool, arch: str, bounding: set, kernel: tuple, where: str) -> bool:
    """Whether an includes/excludes block keeps the rule, as moby's setupSeccomp decides it."""
    if condition is None:
        return True
    if not isinstance(condition, dict):
        raise SeccompError(f'{where}: includes/excludes must be objects with caps, arches or minKernel')
    arches, caps = condition.get('arches') or [], condition.get('caps') or []
    min_kernel = condition.get('minKernel')
    if include:
        if arches and arch not in arches:
            return False
        if caps and not all(cap in bounding for cap in caps):
            return False
        if min_kernel and kernel < _min_kernel(min_kernel, where):
            return False
        return True
    if arches and arch in arches:
        return False
    if caps and any(cap in bounding for cap in caps):
        return False
    if min_kernel and kernel >= _min_kernel(min_kernel, where):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class FilterPlan:
    """A profile reduced to what libseccomp is told: default action, architectures, rules (number, action, args)."""

    default_action: int
    arches: tuple
    rules: tuple  # ((syscall number, action, ((index, op, a, b), ...)), ...)
    skipped: tuple  # names Docker lists that this libseccomp does not know (refused with the default action)


def plan_filter(profile: dict, source: str, bounding_names, kernel: tuple | None = None,
                arch: str | None = None) -> FilterPlan:
    """Docker's profile semantics (moby profiles/seccomp/seccomp_linux.go setupSeccomp, runc's matchCall).

    Raises SeccompError naming what is wrong - also for a profile with neither defaultAction nor syscalls, which
    Docker reads as "no filter": here that is said with ``unconfined``. A syscall that libseccomp knows on no architecture is an error (a typo)
    unless Docker's own default profile lists it (a call newer than this libseccomp, skipped as runc does).
    """
    lib = libseccomp()
    where = f'profile {source}'
    default_name = profile.get('defaultAction', '')
    syscalls = profile.get('syscalls') or []
    if not default_name and not syscalls:
        raise SeccompError(f'{where} has neither defaultAction nor syscalls, so it filters nothing (Docker reads it as '
                           f'"unconfined"; say so with seccomp: {UNCONFINED})')
    if not isinstance(syscalls, list):
        raise SeccompError(f'{where}: "syscalls" must be a list')
    default_errno = profile.get('defaultErrnoRet')
    default_action = _action(default_name, default_errno, f'{where}: defaultAction')
    arch = arch or native_arch()
    docker_arch = DOCKER_ARCH_NAMES.get(arch, arch)
    kernel = kernel or kernel_version()
    bounding = set(bounding_names)
    if profile.get('architectures') and profile.get('archMap'):
        raise SeccompError(f"{where}: both 'architectures' and 'archMap' are given; use either")
    arches = [arch]
    for entry in profile.get('architectures') or []:
        arches.append(_arch_name(entry, where))
    for entry in profile.get('archMap') or []:
        if not isinstance(entry, dict):
            raise SeccompError(f'{where}: each of "archMap" is an object with architecture and subArchitectures')
        if _arch_name(entry.get('architecture'), where) == arch:
            arches.extend(_arch_name(sub, where) for sub in entry.get('subArchitectures') or [])
    known_to_docker = docker_syscall_names()
    rules, skipped = [], []
    for number, rule in enumerate(syscalls):
        rule_where = f'{where}: syscalls[{number}]'
        if not isinstance(rule, dict):
            raise SeccompError(f'{rule_where} is not an object with names and action')
        names = _names(rule, rule_where)
        action = _action(rule.get('action'), rule.get('errnoRet'), rule_where)
        args = rule.get('args') or []
        if not isinstance(args, list):
            raise SeccompError(f'{rule_where}: "args" must be a list')
        conditions = tuple(_condition(argument, rule_where) for argument in args)
        for name in names:
            if lib.seccomp_syscall_resolve_name_arch(arch_token(arch), name.encode()) == NR_SCMP_ERROR \
                    and not syscall_known_anywhere(name):
                if name in known_to_docker:
                    skipped.append(name)
                    continue
                raise SeccompError(f'{rule_where}: unknown system call "{name}" (libseccomp {libseccomp_version()} '
                                   f'knows no call of that name on any architecture)')
        keep = _filter_applies(rule.get('excludes'), False, docker_arch, bounding, kernel, rule_where) and \
            _filter_applies(rule.get('includes'), True, docker_arch, bounding, kernel, rule_where)
        if not keep or action == default_action:
            continue
        for name in names:
            if name in skipped:
                continue
            syscall = lib.seccomp_syscall_resolve_name_arch(arch_token(arch), name.encode())
            rules.append((syscall, action, conditions))
    return FilterPlan(default_action, tuple(dict.fromkeys(arches)), tuple(rules), tuple(sorted(set(skipped))))


def _arch_name(entry, where: str) -> str:
    if not isinstance(entry, str) or not entry.startswith('SCMP_ARCH_') or entry[10:].lower() not in LIBSECCOMP_ARCHES:
        raise SeccompError(f'{where}: unknown architecture {json.dumps(entry)} (SCMP_ARCH_X86_64, SCMP_ARCH_AARCH64...)')
    return entry[10:].lower()


def compile_filter(plan: FilterPlan) -> bytes:
    """The BPF program libseccomp builds for ``plan`` (struct sock_filter[]), ready for seccomp(2)."""
    lib = libseccomp()
    context = lib.seccomp_init(plan.default_action)
    if not context:
        raise SeccompError('libseccomp could not start a filter (seccomp_init failed)')
    try:
        for arch in plan.arches:
            result = lib.seccomp_arch_add(context, arch_token(arch))
            if result not in (0, -errno.EEXIST):
                raise SeccompError(f'libseccomp refused the architecture {arch}: {os.strerror(-result)}')
        for syscall, action, conditions in plan.rules:
            _add_rule(lib, context, syscall, action, conditions)
        descriptor = os.memfd_create('unboxed-seccomp-bpf', os.MFD_CLOEXEC)
        try:
            result = lib.seccomp_export_bpf(context, descriptor)
            if result != 0:
                raise SeccompError(f'libseccomp could not export the filter: {os.strerror(-result)}')
            os.lseek(descriptor, 0, os.SEEK_SET)
            chunks = []
            while True:
                chunk = os.read(descriptor, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(descriptor)
    finally:
        lib.seccomp_release(context)
    program = b''.join(chunks)
    if not program or len(program) % BPF_INSTRUCTION_SIZE:
        raise SeccompError('libseccomp exported no usable filter')
    return program


def _add_rule(lib, context, syscall: int, action: int, conditions):
    # runc's matchCall: conditions on distinct arguments are ANDed in one rule; when an argument is tested more than
    # once, each condition becomes a rule of its own (ORed), as Docker's profiles expect.
    indexes = [condition[0] for condition in conditions]
    groups = [conditions] if len(set(indexes)) == len(indexes) else [(condition,) for condition in conditions]
    for group in groups:
        array = (_ArgCmp * max(len(group), 1))(*[_ArgCmp(*condition) for condition in group])
        result = lib.seccomp_rule_add_array(context, action, syscall, len(group), array)
        if result != 0:
            raise SeccompError(f'libseccomp refused a rule for system call {syscall}: {os.strerror(-result)}')


def seccomp_problems(option: str, confinement: Confinement) -> list[str]:
    """Everything wrong with the seccomp option, found on the host before anything starts."""
    if confinement.seccomp in (UNCONFINED, DOCKER_PROFILE):
        pass
    elif not os.path.isabs(confinement.seccomp):
        return [f'{option} must be "{UNCONFINED}", "{DOCKER_PROFILE}" or an absolute path to a profile in Docker\'s '
                f'JSON format on the managed host, got {json.dumps(confinement.seccomp)}.']
    if confinement.seccomp == UNCONFINED:
        return []
    try:
        compile_filter(plan_filter(load_profile(confinement.seccomp), confinement.seccomp, confinement.bounding_names()))
    except SeccompError as error:
        return [f'{option}: {error}.']
    return []


# ---- handing the confinement to the stage -------------------------------------------------------------------------

# The descriptor ns_container's launch passes the filter on (the stage reads and closes it).
FILTER_FD = 3


def stage_settings(confinement: Confinement, filter_fd: int = FILTER_FD) -> str:
    """JSON for the stage's argument list: no shell ever reads it, and it is the same for the same confinement (a
    killed run's launch is found again by its exact command line). The filter itself travels on ``filter_fd``."""
    caps = None if confinement.capabilities is None else [CAPABILITY_NUMBERS[name] for name in confinement.capabilities]
    return json.dumps({'capabilities': caps, 'no_new_privs': confinement.no_new_privs, 'seccomp': confinement.seccomp,
                       'seccomp_filter_fd': None if confinement.seccomp == UNCONFINED else filter_fd},
                      sort_keys=True, separators=(',', ':'))


@dataclasses.dataclass(frozen=True)
class Launch:
    """The confinement of one launch and its compiled seccomp filter (None: unconfined)."""

    confinement: Confinement
    program: bytes | None
    skipped: tuple = ()

    def filter_fd(self) -> int | None:
        """A memfd holding the BPF program, positioned at its start (close-on-exec: the caller passes it on as the
        descriptor named in ``stage_settings``)."""
        if not self.program:
            return None
        descriptor = os.memfd_create('unboxed-seccomp-filter', os.MFD_CLOEXEC)
        os.write(descriptor, self.program)
        os.lseek(descriptor, 0, os.SEEK_SET)
        return descriptor


def prepare_launch(confinement: Confinement) -> Launch:
    """Compile the seccomp filter of this confinement on this host. Raises SeccompError (never for a confinement
    that ``seccomp_problems`` accepted, unless the profile file changed in between)."""
    if confinement.seccomp == UNCONFINED:
        return Launch(confinement, None)
    plan = plan_filter(load_profile(confinement.seccomp), confinement.seccomp, confinement.bounding_names())
    return Launch(confinement, compile_filter(plan), plan.skipped)


# Python run by the stage (``python3 -I -c``), before the caller's own code: it cannot import this collection.
STAGE_FUNCTIONS = '''\
import ctypes, json, os


def unboxed_confine_prepare(settings):
    """Read what needs the host: the kernel's last capability, libc, the seccomp filter (from its descriptor)."""
    prepared = {'settings': settings, 'libc': ctypes.CDLL(None, use_errno=True), 'program': None}
    with open('/proc/sys/kernel/cap_last_cap') as handle:
        prepared['last_cap'] = int(handle.read())
    descriptor = settings.get('seccomp_filter_fd')
    if descriptor is not None:
        chunks = []
        while True:
            chunk = os.read(descriptor, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(descriptor)
        program = b''.join(chunks)
        if not program or len(program) % 8:
            raise OSError('unboxed: the seccomp filter did not arrive whole')

        class SockFprog(ctypes.Structure):
            _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]
        buffer = ctypes.create_string_buffer(program, len(program))
        prepared['program'] = (SockFprog(len(program) // 8, ctypes.addressof(buffer)), buffer)
    return prepared


def unboxed_confine_apply(prepared):
    """no_new_privs, capabilities and the seccomp filter, in runc's order; the caller execs right after."""
    settings, libc = prepared['settings'], prepared['libc']
    keep = settings.get('capabilities')
    no_new_privs = settings.get('no_new_privs')

    def check(result, what):
        if result != 0:
            number = ctypes.get_errno()
            raise OSError(number, 'unboxed: ' + what + ' failed: ' + os.strerror(number))

    def load_filter():
        if prepared['program'] is not None:
            # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            check(libc.prctl(22, 2, ctypes.byref(prepared['program'][0]), 0, 0), 'loading the seccomp filter')

    if no_new_privs:
        check(libc.prctl(38, 1, 0, 0, 0), 'prctl(PR_SET_NO_NEW_PRIVS)')
    if keep is not None:
        check(libc.prctl(47, 4, 0, 0, 0), 'prctl(PR_CAP_AMBIENT_CLEAR_ALL)')
        for number in range(prepared['last_cap'] + 1):
            if number not in keep:
                check(libc.prctl(24, number, 0, 0, 0), 'prctl(PR_CAPBSET_DROP, %d)' % number)
    if not no_new_privs:
        # Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a filter: load it while it is still effective.
        load_filter()
    if keep is not None:
        mask = 0
        for number in keep:
            mask |= 1 << number
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)(mask & 0xffffffff, mask & 0xffffffff, 0, mask >> 32, mask >> 32, 0)
        check(libc.capset(header, data), 'capset')
    if no_new_privs:
        load_filter()
'''


def stage_script(body: str) -> str:
    """A stage's ``-c`` text: the confinement functions, then the caller's code."""
    return STAGE_FUNCTIONS + body
