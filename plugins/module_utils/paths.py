# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of the paths users hand to unboxed modules, with messages a student understands."""

from __future__ import annotations

import os

from ansible_collections.unboxed.lab.plugins.module_utils import environ

# Directories that must never become a mount point, a container root or a chroot target
# by accident: mounting over them hides the running system.
SYSTEM_DIRECTORIES = frozenset((
    '/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/libx32',
    '/media', '/mnt', '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp',
    '/usr', '/usr/bin', '/usr/lib', '/usr/local', '/usr/sbin', '/usr/share', '/var',
    '/var/lib', '/var/log', '/var/tmp',
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


def system_directory_problem(option: str, path: str) -> str | None:
    if normalize(path) in SYSTEM_DIRECTORIES:
        return (f'{option} is "{path}", a system directory: using it would hide or damage the running '
                f'system. Use a directory of its own, such as /overlay/merged.')
    return None


def root_directory_problem(option: str, path: str) -> str | None:
    """A directory meant to become "/" for a chroot or a container: absolute, and neither the host's own
    root nor a system directory."""
    problem = absolute_path_problem(option, path)
    if problem:
        return problem
    if normalize(path) == '/':
        return (f'{option} is "/", the host\'s own root: the command would see and change every file of the host, '
                f'which is no lesson in isolation. Give the directory of a root file system of its own, such as /overlay/merged.')
    return system_directory_problem(option, normalize(path))


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
