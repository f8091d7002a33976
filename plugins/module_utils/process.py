# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Process identity the way runc does it: a PID plus its start time from /proc/PID/stat.

A PID alone is not an identity: the kernel reuses PIDs. A recorded (pid, start_time) whose
start time no longer matches belongs to somebody else and must never be signalled.
This is the one place in unboxed that reads /proc/PID/stat.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import time

PROC = '/proc'

# Process states that are not "running" for a container: zombie, dead.
_DEAD_STATES = frozenset('ZXx')
# States of a process that has begun its work and now waits: asleep until something happens (S), stopped (T, t).
# D (uninterruptible, e.g. paging its binary in) is not one: a command that ends at once passes through it too.
_WAITING_STATES = frozenset('STt')
# CPU time (clock ticks, 1/100 s on Linux) after which a process that never waits (a busy loop) has begun its work: a
# command that ends at once (a shell printing an error and exiting) uses well under one tick.
BEGUN_CPU_TICKS = 3


@dataclasses.dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    start_time: int  # clock ticks after boot, field 22 of /proc/PID/stat
    cpu_ticks: int = 0  # user + system CPU time in clock ticks, fields 14 and 15


def parse_proc_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat. comm may hold spaces and parentheses: it ends at the LAST ')'."""
    open_paren = text.find('(')
    close_paren = text.rfind(')')
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError(f'not a /proc/PID/stat line: {text!r}')
    rest = text[close_paren + 2:].split()
    # rest[0] is field 3 (state); fields 14 and 15 (utime, stime) are rest[11] and rest[12]; field 22 (starttime) rest[19].
    if len(rest) < 20:
        raise ValueError(f'truncated /proc/PID/stat line: {text!r}')
    return ProcStat(
        pid=int(text[:open_paren].strip()),
        comm=text[open_paren + 1:close_paren],
        state=rest[0],
        ppid=int(rest[1]),
        start_time=int(rest[19]),
        cpu_ticks=int(rest[11]) + int(rest[12]),
    )


def read_proc_stat(pid: int, proc: str = PROC) -> ProcStat | None:
    """The stat of a live (or zombie) process, or None when there is no such PID."""
    try:
        with open(f'{proc}/{pid}/stat', encoding='utf-8', errors='surrogateescape') as handle:
            return parse_proc_stat(handle.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


@dataclasses.dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_time: int

    def to_dict(self) -> dict:
        return {'pid': self.pid, 'start_time': self.start_time}

    @classmethod
    def from_dict(cls, data) -> ProcessIdentity | None:
        try:
            return cls(pid=int(data['pid']), start_time=int(data['start_time']))
        except (KeyError, TypeError, ValueError):
            return None


def identity_of(pid: int, proc: str = PROC) -> ProcessIdentity | None:
    stat = read_proc_stat(pid, proc)
    return None if stat is None else ProcessIdentity(stat.pid, stat.start_time)


def is_same_process(identity: ProcessIdentity | None, proc: str = PROC) -> bool:
    """The recorded process still exists: same PID and same start time (zombies included)."""
    if identity is None:
        return False
    stat = read_proc_stat(identity.pid, proc)
    return stat is not None and stat.start_time == identity.start_time


def is_running(identity: ProcessIdentity | None, proc: str = PROC) -> bool:
    """The recorded process exists and is not a zombie. kill -0 cannot tell a zombie apart."""
    if identity is None:
        return False
    stat = read_proc_stat(identity.pid, proc)
    return stat is not None and stat.start_time == identity.start_time and stat.state not in _DEAD_STATES


def has_begun(identity: ProcessIdentity | None, since_ticks: int = 0, proc: str = PROC) -> bool:
    """The recorded process is alive and has begun its work: it waits for something (a read, a sleep, a child: state S)
    or has used BEGUN_CPU_TICKS of CPU beyond SINCE_TICKS. This tells "it runs" from "it ends at once" by what the
    process did, not by how long somebody watched it - on a loaded machine a command that exits at once may still be
    alive a second later. A process's CPU time counts from its fork and exec does not reset it: a caller that waits
    for the program a process exec'd into passes the ticks it had when it saw the exec (cpu_ticks_of)."""
    if identity is None:
        return False
    stat = read_proc_stat(identity.pid, proc)
    if stat is None or stat.start_time != identity.start_time or stat.state in _DEAD_STATES:
        return False
    return stat.state in _WAITING_STATES or stat.cpu_ticks - since_ticks >= BEGUN_CPU_TICKS


def cpu_ticks_of(identity: ProcessIdentity | None, proc: str = PROC) -> int:
    """The CPU time the recorded process has used so far (clock ticks), 0 when it is gone or somebody else."""
    stat = None if identity is None else read_proc_stat(identity.pid, proc)
    return stat.cpu_ticks if stat is not None and stat.start_time == identity.start_time else 0


def parse_cmdline(raw: bytes) -> list[str]:
    """/proc/PID/cmdline: NUL-terminated arguments; empty arguments are kept (``a\\0\\0`` is ``['a', '']``)."""
    if not raw:
        return []
    if raw.endswith(b'\0'):
        raw = raw[:-1]
    return [arg.decode('utf-8', 'surrogateescape') for arg in raw.split(b'\0')]


def read_cmdline(pid: int, proc: str = PROC) -> list[str] | None:
    """The argument list of a process, or None when it is gone. A zombie's is empty."""
    try:
        with open(f'{proc}/{pid}/cmdline', 'rb') as handle:
            return parse_cmdline(handle.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def parse_nspids(status_text: str) -> list[int]:
    """The ``NSpid:`` line of /proc/PID/status: the PID in each nested pid namespace, outermost first.

    ``NSpid:\\t4242\\t1`` is a process that is 4242 on the host and PID 1 inside its own namespace.
    """
    for line in status_text.splitlines():
        if line.startswith('NSpid:'):
            return [int(field) for field in line.split()[1:]]
    return []


def read_nspids(pid: int, proc: str = PROC) -> list[int]:
    try:
        with open(f'{proc}/{pid}/status', encoding='utf-8', errors='surrogateescape') as handle:
            return parse_nspids(handle.read())
    except (FileNotFoundError, ProcessLookupError):
        return []


def send_signal(identity: ProcessIdentity | None, signum: int, proc: str = PROC) -> bool:
    """Signal the recorded process only if it is still that process; True if the signal was sent.

    The start time is checked *after* taking a pidfd: a pidfd pins one process, so a PID reused
    between the check and the kill cannot receive the signal (kill(2) by number could hit it).
    """
    if identity is None:
        return False
    try:
        pidfd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError) as error:
        # Python < 3.9 or a kernel < 5.3: kill(2), still only right after the start time matched.
        if isinstance(error, OSError) and error.errno != errno.ENOSYS:
            raise
        if not is_same_process(identity, proc):
            return False
        try:
            os.kill(identity.pid, signum)
        except ProcessLookupError:
            return False
        return True
    try:
        if not is_same_process(identity, proc):
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def wait_until_not_running(identity: ProcessIdentity | None, timeout: float, proc: str = PROC,
                           interval: float = 0.05) -> bool:
    """Poll until the process is gone or a zombie; True if that happened within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_running(identity, proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def clock_ticks() -> int:
    return os.sysconf('SC_CLK_TCK')


def boot_time(proc: str = PROC) -> float:
    with open(f'{proc}/stat', encoding='ascii') as handle:
        for line in handle:
            if line.startswith('btime '):
                return float(line.split()[1])
    raise ValueError(f'no btime line in {proc}/stat')


def started_at_epoch(identity: ProcessIdentity, proc: str = PROC) -> float:
    """Wall-clock start of the process, in seconds since the epoch."""
    return boot_time(proc) + identity.start_time / clock_ticks()


def started_at_iso(identity: ProcessIdentity, proc: str = PROC) -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(started_at_epoch(identity, proc)))


def all_pids(proc: str = PROC) -> list[int]:
    return sorted(int(name) for name in os.listdir(proc) if name.isdigit())


def children_of(pid: int, proc: str = PROC) -> list[ProcStat]:
    """Direct children of ``pid``, oldest first."""
    found = []
    for candidate in all_pids(proc):
        stat = read_proc_stat(candidate, proc)
        if stat is not None and stat.ppid == pid:
            found.append(stat)
    return sorted(found, key=lambda stat: stat.start_time)


def ancestors_of(pid: int, proc: str = PROC) -> list[int]:
    """Parent, grandparent... of ``pid`` up to PID 1 (or as far as /proc shows them), nearest first."""
    found = []
    stat = read_proc_stat(pid, proc)
    while stat is not None and stat.ppid > 0 and stat.ppid not in found:
        found.append(stat.ppid)
        stat = read_proc_stat(stat.ppid, proc)
    return found


def _is_under(link_target: str, path: str) -> bool:
    return link_target == path or link_target.startswith(path.rstrip('/') + '/')


def processes_using(path: str, proc: str = PROC) -> list[dict]:
    """Processes whose root, cwd, executable or an open file lies at or below ``path``.

    Used to say *who* keeps a mount busy, the way ``fuser -vm`` does.
    """
    holders = []
    for pid in all_pids(proc):
        base = f'{proc}/{pid}'
        uses = []
        for what in ('root', 'cwd', 'exe'):
            try:
                if _is_under(os.readlink(f'{base}/{what}'), path):
                    uses.append(what)
            except OSError:
                continue
        try:
            for descriptor in os.listdir(f'{base}/fd'):
                try:
                    if _is_under(os.readlink(f'{base}/fd/{descriptor}'), path):
                        uses.append('open file')
                        break
                except OSError:
                    continue
        except OSError:
            pass
        if uses:
            stat = read_proc_stat(pid, proc)
            holders.append({'pid': pid, 'comm': stat.comm if stat else '?', 'uses': uses})
    return holders


def describe_holders(holders: list[dict]) -> str:
    return ', '.join(f"PID {h['pid']} ({h['comm']}: {'/'.join(h['uses'])})" for h in holders)


def catches_signal(pid: int, signum: int, proc: str = PROC) -> bool | None:
    """Whether the process installed a handler for ``signum`` (the SigCgt mask of /proc/PID/status); None if unknown.

    A signal sent from outside to the PID 1 of a PID namespace is dropped unless PID 1 handles it (SIGKILL aside):
    `tail -f /dev/null` as PID 1 never sees a SIGTERM.
    """
    try:
        with open(f'{proc}/{pid}/status', encoding='ascii', errors='replace') as handle:
            for line in handle:
                if line.startswith('SigCgt:'):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None
