# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few things every part of labctl does: run a command, read and write a file, wait, fail in plain words."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time

from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils.command import shell_join


class LabError(Exception):
    """A failure with a message for the person at the keyboard."""


def run(argv, what: str, **kwargs) -> str:
    """Run an argv list with the C locale; on failure raise LabError with the command and its words."""
    completed = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, check=False,
                               env=dict(os.environ, LC_ALL='C', LANG='C'), stdin=subprocess.DEVNULL, **kwargs)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip() or f'exit code {completed.returncode}'
        raise LabError(f'Could not {what}: {detail}\n  command: {shell_join(argv)}')
    return completed.stdout


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError('labctl needs root: it creates network namespaces, bridges and mounts (run it with sudo).')


def read_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_file_atomically(path: str, content: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.labctl-')
    try:
        with os.fdopen(handle, 'w', encoding='utf-8') as stream:
            stream.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_inside(root: str, inner: str, content: str, mode: int = 0o644) -> None:
    """Write ``inner`` (a path inside ``root``) the way a process chrooted into ``root`` would see it.

    The parent directory is resolved inside the root, and a symlink in place of the file is replaced
    rather than followed: a root file system's links must never send a write onto the controller.
    """
    parent = paths.resolve_inside(root, os.path.dirname(inner))
    if parent is None:
        os.makedirs(paths.join_inside(root, os.path.dirname(inner)), mode=0o755, exist_ok=True)
        parent = paths.resolve_inside(root, os.path.dirname(inner))
    if parent is None or not paths.is_inside(os.path.realpath(parent), os.path.realpath(root)):
        raise LabError(f'{inner} cannot be written inside {root}: its directory leads outside the root file system.')
    target = os.path.join(parent, os.path.basename(inner))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(descriptor, 'w', encoding='utf-8') as stream:
        stream.write(content)
    os.chmod(target, mode)


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def tail(path: str, lines: int = 8) -> str:
    """The last lines of a log, on one line, for an error message."""
    text = read_file(path) or ''
    return 'console log: ' + ' | '.join(text.strip().splitlines()[-lines:]) if text.strip() else 'no console output'
