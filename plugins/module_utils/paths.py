# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of the paths users hand to unboxed modules, with messages a student understands."""

from __future__ import annotations

import os

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
    return os.path.normpath(path) if path else path


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


def is_inside(path: str, parent: str) -> bool:
    """``path`` equals ``parent`` or lies below it (textually, after normalisation)."""
    path, parent = normalize(path), normalize(parent)
    return path == parent or path.startswith(parent.rstrip('/') + '/')


def join_inside(root: str, inner: str) -> str:
    """The host path of ``inner``, a path inside the root file system ``root``."""
    return os.path.join(root, inner.lstrip('/'))
