# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run at a time per object: a container, an overlay mount point, a layer directory.

Two ``ansible-playbook`` runs against the same seat (an instructor's and a student's, or a loop and a
retry) would otherwise both see "not running" and both start a container, or both rename into the same
layer. Every module that changes an object holds an exclusive ``flock(2)`` on a lock file of its own for
that object while it reads, compares and changes. The lock files live in ``/run/unboxed/locks`` (a tmpfs:
gone after a reboot, like the locks) and never inside a layer or a root file system, where a container
would see them. The kernel releases a lock when its holder dies, so a killed run never blocks the next.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import time

LOCK_ROOT = '/run/unboxed/locks'
DEFAULT_TIMEOUT = 60.0


def lock_file_path(kind: str, key: str, lock_root: str = LOCK_ROOT) -> str:
    """``/run/unboxed/locks/KIND-DIGEST.lock``: one file per object, whatever characters its path holds."""
    digest = hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()[:24]
    return os.path.join(lock_root, f'{kind}-{digest}.lock')


class LockTimeout(Exception):
    """Another holder kept the lock for longer than the caller would wait."""

    def __init__(self, path: str, waited: float, holder: str | None):
        self.path, self.waited, self.holder = path, waited, holder
        super().__init__(f'{path} held for {waited:.0f} s' + (f' by {holder}' if holder else ''))


def _holder(fd: int) -> str | None:
    """What the holder wrote into the lock file when it took it ("PID 4242 ..."), for the message."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode('utf-8', 'replace').strip()
    except OSError:
        return None
    return text or None


@contextlib.contextmanager
def exclusive(kind: str, key: str, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.05,
              lock_root: str = LOCK_ROOT, note: str = ''):
    """Hold the lock of ``kind``/``key`` for the ``with`` block, waiting up to ``timeout`` seconds.

    Raises LockTimeout when another holder keeps it longer. ``note`` (what this run does) is written into the
    file for the message another waiter gets.
    """
    os.makedirs(lock_root, mode=0o700, exist_ok=True)
    path = lock_file_path(kind, key, lock_root)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(path, time.monotonic() - started, _holder(fd)) from None
                time.sleep(interval)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'PID {os.getpid()} {key} {note}'.strip().encode('utf-8', 'surrogateescape') + b'\n', 0)
        yield path
    finally:
        # Closing the descriptor releases the lock; the file stays for the next holder (removing it would let
        # a waiter lock a file that a newer run no longer sees).
        os.close(fd)


def timeout_message(what: str, error: LockTimeout) -> str:
    """A sentence for fail_json: who holds it, for how long, and what to do."""
    holder = f' ({error.holder})' if error.holder else ''
    return (f'Another run is working on {what}{holder} and did not finish within {error.waited:.0f} s. '
            f'Wait for it to end (or stop it), then run again; the lock is {error.path}.')
