# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of the paths users hand to unboxed modules, with messages a student understands."""

from __future__ import annotations

import os
import stat

from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

# Where an unboxed module may never put a mount point, a layer, a container root or its state, decided on the path
# as the kernel reaches it (symbolic links followed). Two kinds:
# - the directory itself is refused, a directory of its own below it is fine: /srv, /opt, /tmp, /home, /mnt,
#   /media, /var/lib, /run... are where lab directories belong (/srv/lab/merged, /var/lib/unboxed/...).
SYSTEM_DIRECTORIES = frozenset((
    '/', '/home', '/lost+found', '/media', '/mnt', '/opt', '/root', '/run', '/srv', '/tmp', '/var', '/var/cache',
    '/var/lib', '/var/local', '/var/opt', '/var/spool', '/var/tmp',
))
# - the directory and everything below it is refused: the kernel's own file systems and the installed system.
SYSTEM_TREES = {
    '/proc': 'the kernel\'s process file system', '/sys': 'the kernel\'s sysfs', '/dev': 'the device directory',
    '/etc': 'the host\'s configuration', '/boot': 'the boot files', '/bin': 'the installed system',
    '/sbin': 'the installed system', '/lib': 'the installed system', '/lib32': 'the installed system',
    '/lib64': 'the installed system', '/libx32': 'the installed system', '/usr': 'the installed system',
    '/var/log': 'the system logs', '/var/lib/dpkg': 'the package database', '/var/lib/apt': 'the package database',
    '/var/lib/systemd': 'systemd\'s state', '/run/systemd': 'systemd\'s runtime state', '/run/udev': 'udev\'s runtime state',
    '/run/dbus': 'the system bus', '/run/lock': 'the system\'s lock files', '/run/unboxed/locks': 'the unboxed modules\' locks',
}
# File systems that are the kernel's interface, wherever they are mounted: a path on them is no lab directory.
KERNEL_FILE_SYSTEMS = frozenset((
    'proc', 'sysfs', 'devtmpfs', 'devpts', 'cgroup', 'cgroup2', 'debugfs', 'tracefs', 'securityfs', 'pstore',
    'bpf', 'configfs', 'efivarfs', 'fusectl', 'hugetlbfs', 'mqueue', 'binfmt_misc', 'autofs', 'nsfs',
))

# Characters the overlay mount option syntax cannot carry in a path.
OVERLAY_RESERVED = {':': 'a colon', ',': 'a comma', '\n': 'a newline'}


def normalize(path: str) -> str:
    if not path:
        return path
    normalized = os.path.normpath(path)
    # POSIX lets normpath keep exactly two leading slashes; for Linux they name / like one.
    return '/' + normalized.lstrip('/') if normalized.startswith('//') else normalized


def absolute_path_problem(option: str, path: str) -> str | None:
    if not path:
        return f'{option} must not be empty.'
    if not os.path.isabs(path):
        return f'{option} must be an absolute path, got "{path}" (write it from /, e.g. /overlay/{os.path.basename(path) or "dir"}).'
    if '\n' in path or '\0' in path:
        return f'{option} must not contain a newline or NUL byte: {path!r}.'
    return None


def overlay_path_problem(option: str, path: str) -> str | None:
    problem = absolute_path_problem(option, path)
    if problem:
        return problem
    for char, name in OVERLAY_RESERVED.items():
        if char in path:
            return (f'{option} "{path}" contains {name}: overlayfs separates layers with ":" and '
                    f'options with ",", so such a path cannot be passed to mount. Rename the directory.')
    return None


def resolve(path: str) -> str:
    """The path the kernel reaches for ``path``: every symbolic link in the part that exists followed (``..``
    after a link applies to the link's target, as in the kernel), the missing rest appended as written."""
    return normalize(os.path.realpath(path))


def _resolutions(path: str) -> list[str]:
    """Every path ``path`` may reach: the kernel's reading of it as written, and of its normalized form (which the
    modules go on to use; normpath drops ``link/..`` textually where the kernel would follow the link first)."""
    if not os.path.isabs(path):
        return []
    return list(dict.fromkeys((resolve(path), resolve(normalize(path)))))


def _tree_of(path: str) -> str | None:
    for tree in SYSTEM_TREES:
        if is_inside(path, tree):
            return tree
    return None


def _system_reason(path: str, entries=None) -> str | None:
    """What ``path`` (resolved, normalized) is, when that makes it no place for a module's directory, or None:
    "a system directory", "inside /proc, a system directory (the kernel's process file system)"..."""
    if path in SYSTEM_DIRECTORIES:
        return 'a system directory'
    tree = _tree_of(path)
    if tree:
        return f'{"" if path == tree else f"inside {tree}, "}a system directory ({SYSTEM_TREES[tree]})'
    if os.path.isabs(path):
        entry = mountinfo.mount_containing(path, entries)
        if entry is not None and entry.fstype in KERNEL_FILE_SYSTEMS:
            return f'on a {entry.fstype} file system (mounted at {entry.mount_point}), a kernel interface'
    return None


def system_directory_problem(option: str, path: str, entries=None) -> str | None:
    """Refuses a path that leads - as written, or through symbolic links as the kernel follows them - to a system
    directory, or into a kernel or system tree (/proc/..., /etc/..., /usr/...). ``entries``: mountinfo, for tests."""
    given = normalize(path)
    for candidate in dict.fromkeys([given] + _resolutions(path)):
        reason = _system_reason(candidate, entries)
        if not reason:
            continue
        if candidate == given:
            what = f'{option} is "{given}", {reason}'
        else:
            what = f'{option} "{path}" leads to {candidate} through a symbolic link, and {candidate} is {reason}'
        return (f'{what}: using it would hide or damage the running system. '
                f'Use a directory of its own, such as /overlay/merged.')
    return None


def root_directory_problem(option: str, path: str, entries=None) -> str | None:
    """A directory meant to become "/" for a chroot or a container: absolute, and neither the host's own
    root nor a system directory, also not through a symbolic link."""
    problem = absolute_path_problem(option, path)
    if problem:
        return problem
    given = normalize(path)
    if '/' in [given] + _resolutions(path):
        how = 'is "/",' if given == '/' else f'"{path}" leads to / through a symbolic link, so it is'
        return (f'{option} {how} the host\'s own root: the command would see and change every file of the host, '
                f'which is no lesson in isolation. Give the directory of a root file system of its own, such as /overlay/merged.')
    return system_directory_problem(option, path, entries)


def usable_directory_problem(option: str, path: str, entries=None) -> str | None:
    """An absolute path that is no system directory, as written nor as the kernel resolves it."""
    return absolute_path_problem(option, path) or system_directory_problem(option, path, entries)


def symbolic_link_problem(option: str, path: str) -> str | None:
    """Refuses ``path`` when it is itself a symbolic link (for operations that must never follow one)."""
    if os.path.islink(path):
        return (f'{option} {path} is a symbolic link (to {os.readlink(path)}), not a directory: this is never '
                f'followed. Give the directory itself.')
    return None


def is_inside(path: str, parent: str) -> bool:
    """``path`` equals ``parent`` or lies below it (textually, after normalisation)."""
    path, parent = normalize(path), normalize(parent)
    return path == parent or path.startswith(parent.rstrip('/') + '/')


def join_inside(root: str, inner: str) -> str:
    """The host path of ``inner``, a path inside the root file system ``root``."""
    return os.path.join(root, inner.lstrip('/'))


def missing_directories(path: str) -> list[str]:
    """The directories ``mkdir -p path`` would create, outermost first (empty when ``path`` exists)."""
    missing = []
    while not os.path.exists(path):
        missing.insert(0, path)
        path = os.path.dirname(path)
    return missing


def resolve_inside(root: str, inner: str, max_links: int = 40) -> str | None:
    """The host path that ``inner`` names inside the root file system ``root``, following symlinks
    as the kernel would after chroot(root): absolute link targets restart at ``root``, ``..`` stops at it.

    Returns None when a component is missing or the links loop.
    """
    pending = [part for part in inner.split('/') if part]
    resolved = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == '.':
            continue
        if part == '..':
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(candidate)
            if target.startswith('/'):
                resolved = []
            pending = [piece for piece in target.split('/') if piece] + pending
            continue
        if not os.path.lexists(candidate):
            return None
        resolved.append(part)
    return os.path.join(root, *resolved)


def mount_target_inside(root: str, inner: str, option: str) -> tuple[str, str | None]:
    """(host path, problem) of the directory ``inner`` inside ``root`` on which something is to be mounted.

    mount(8) follows symbolic links on the host, not inside the root: a ``ROOT/dev`` that is a link to ``/dev`` or
    ``../../..`` would put the mount on a host directory. So every component from ``root`` down must be a real
    directory - no symbolic link at all, even one that stays inside - and the result must lie inside ``root``.
    """
    real_root = resolve(root)
    target = real_root
    for part in [piece for piece in inner.split('/') if piece]:
        if part in ('.', '..'):
            return target, f'{option}: {inner} must not contain "." or "..".'
        target = os.path.join(target, part)
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            return target, f'{option}: {target} does not exist, so nothing can be mounted there.'
        if stat.S_ISLNK(info.st_mode):
            return target, (f'{option}: {target} is a symbolic link (to {os.readlink(target)}): mount follows it on the host, '
                            f'where it leads to {resolve(target)}, not inside {root}. Make {inner} a real directory '
                            f'inside the root (rm {target}; mkdir {target}).')
        if not stat.S_ISDIR(info.st_mode):
            return target, f'{option}: {target} is not a directory to mount on.'
    if not is_inside(resolve(target), real_root):
        return target, f'{option}: {target} leads to {resolve(target)}, outside the root {root}.'
    return target, None


def find_program_inside(root: str, program: str, search_path: str = environ.DEFAULT_PATH) -> str | None:
    """Where ``program`` (a name looked up in ``search_path``, or a path) is inside ``root``.

    Returns the path as seen inside the root, or None when it is missing or not executable.
    """
    candidates = [program] if '/' in program else [f'{directory}/{program}' for directory in search_path.split(':') if directory]
    for candidate in candidates:
        host_path = resolve_inside(root, candidate if candidate.startswith('/') else '/' + candidate)
        if host_path and os.path.isfile(host_path) and os.access(host_path, os.X_OK):
            return candidate
    return None
