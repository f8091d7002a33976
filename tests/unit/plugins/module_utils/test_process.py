"""Process identity: /proc/PID/stat parsing, start-time checks, zombies, cmdline, NSpid, safe signalling."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import process

# Real lines read from this machine's /proc (Linux 6.x): a program named "x) (y z", one named
# "tmux: server", the container PID 1 of `unshare --fork --pid ... chroot ROOT sleep 5`, and a zombie.
STAT_PARENS = ('10278 (x) (y z) S 10228 10226 2822 0 -1 4194304 76 0 0 0 0 0 0 0 20 0 1 0 161234 2990080 413 '
               '18446744073709551615 93939865927680 93939865945609 140720898989904 0 0 0 0 0 0 1 0 0 17 1 0 0 0 0 0 '
               '93939865959696 93939865960960 93940200226816 140720898996520 140720898996540 140720898996540 '
               '140720898998247 0\n')
STAT_COLON_SPACE = ('10296 (tmux: server) S 10228 10226 2822 0 -1 4194304 76 0 0 0 0 0 0 0 20 0 1 0 161285 2990080 421 '
                    '18446744073709551615 94539251826688 94539251844617 140731045984160 0 0 0 0 0 0 1 0 0 17 0 0 0 0 0 0 '
                    '94539251858704 94539251859968 94539269783552 140731045992734 140731045992759 140731045992759 '
                    '140731045994466 0\n')
STAT_CONTAINER_PID1 = ('9871 (sleep) S 9869 9869 9869 0 -1 4194560 129 0 0 0 0 0 0 0 20 0 1 0 160388 2322432 315 '
                       '18446744073709551615 4198400 5785993 140727187939712 0 0 0 0 6 0 1 0 0 17 1 0 0 0 0 0 6141704 '
                       '6178576 723451904 140727187946221 140727187946229 140727187946229 140727187947501 0\n')
STAT_ZOMBIE = ('10021 (true) Z 9979 9931 2822 0 -1 4227084 48 0 0 0 0 0 0 0 20 0 1 0 160928 0 0 18446744073709551615 '
               '0 0 0 0 0 0 0 0 0 1 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n')

STATUS_CONTAINER_PID1 = 'Name:\tsleep\nState:\tS (sleeping)\nTgid:\t9871\nNgid:\t0\nPid:\t9871\nPPid:\t9869\nNSpid:\t9871\t1\nNStgid:\t9871\t1\n'


@pytest.mark.parametrize('text, pid, comm, state, ppid, start_time', [
    (STAT_PARENS, 10278, 'x) (y z', 'S', 10228, 161234),
    (STAT_COLON_SPACE, 10296, 'tmux: server', 'S', 10228, 161285),
    (STAT_CONTAINER_PID1, 9871, 'sleep', 'S', 9869, 160388),
    (STAT_ZOMBIE, 10021, 'true', 'Z', 9979, 160928),
])
def test_parse_proc_stat_reads_fields_after_the_last_parenthesis(text, pid, comm, state, ppid, start_time):
    stat = process.parse_proc_stat(text)
    assert (stat.pid, stat.comm, stat.state, stat.ppid, stat.start_time) == (pid, comm, state, ppid, start_time)


@pytest.mark.parametrize('text', ['', 'garbage', '12 (sleep S 1 2 3', '12 (sleep) S 1 2 3\n'])
def test_parse_proc_stat_rejects_what_is_not_a_stat_line(text):
    with pytest.raises(ValueError):
        process.parse_proc_stat(text)


def fake_proc(tmp_path, entries):
    """A directory laid out like /proc with the given {pid: stat line} entries."""
    root = tmp_path / 'proc'
    for pid, stat in entries.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / 'stat').write_text(stat)
    return str(root)


def test_same_pid_with_another_start_time_is_somebody_else(tmp_path):
    proc = fake_proc(tmp_path, {10278: STAT_PARENS})
    assert process.is_running(process.ProcessIdentity(10278, 161234), proc)
    assert not process.is_running(process.ProcessIdentity(10278, 161233), proc)
    assert not process.is_same_process(process.ProcessIdentity(10278, 999), proc)


def test_a_zombie_exists_but_is_not_running(tmp_path):
    proc = fake_proc(tmp_path, {10021: STAT_ZOMBIE})
    zombie = process.ProcessIdentity(10021, 160928)
    assert process.is_same_process(zombie, proc)
    assert not process.is_running(zombie, proc)


def test_a_vanished_pid_is_not_running(tmp_path):
    proc = fake_proc(tmp_path, {})
    assert process.read_proc_stat(4242, proc) is None
    assert not process.is_running(process.ProcessIdentity(4242, 1), proc)
    assert not process.is_running(None, proc)


def stat_with(text, state, utime=0, stime=0):
    """TEXT with another state and CPU times (fields 3, 14 and 15)."""
    head, _sep, tail = text.rpartition(') ')
    rest = tail.split(' ')
    rest[0], rest[11], rest[12] = state, str(utime), str(stime)
    return f'{head}) {" ".join(rest)}'


def test_parse_proc_stat_reads_the_cpu_time():
    assert process.parse_proc_stat(stat_with(STAT_CONTAINER_PID1, 'R', utime=7, stime=2)).cpu_ticks == 9
    assert process.parse_proc_stat(STAT_CONTAINER_PID1).cpu_ticks == 0


@pytest.mark.parametrize('state, utime, stime, begun', [
    ('S', 0, 0, True),     # waits for something (tail -f, sleep, a server's accept): it runs
    ('T', 0, 0, True),     # stopped, but alive and past its start
    ('R', 0, 0, False),    # still on its way: it may end at once (sh -c 'echo error >&2; exit 3')
    ('D', 0, 0, False),    # paging its binary in: a command that ends at once passes through it too
    ('R', 2, 1, True),     # a busy loop: BEGUN_CPU_TICKS of CPU
    ('R', 1, 1, False),
    ('Z', 0, 0, False),    # ended
])
def test_has_begun_by_what_the_process_did(tmp_path, state, utime, stime, begun):
    proc = fake_proc(tmp_path, {9871: stat_with(STAT_CONTAINER_PID1, state, utime, stime)})
    assert process.has_begun(process.ProcessIdentity(9871, 160388), proc=proc) is begun
    assert process.has_begun(process.ProcessIdentity(9871, 160387), proc=proc) is False  # the PID of somebody else
    assert process.has_begun(None, proc=proc) is False


def test_cpu_time_from_before_the_exec_is_not_the_commands(tmp_path):
    """A container's PID 1 ran the launch stages (python) before it exec'd the command: 4 ticks then, 1 since."""
    proc = fake_proc(tmp_path, {9871: stat_with(STAT_CONTAINER_PID1, 'R', utime=3, stime=2)})
    pid1 = process.ProcessIdentity(9871, 160388)
    assert process.cpu_ticks_of(pid1, proc) == 5
    assert process.has_begun(pid1, proc=proc) is True
    assert process.has_begun(pid1, since_ticks=4, proc=proc) is False
    assert process.has_begun(pid1, since_ticks=2, proc=proc) is True
    assert process.cpu_ticks_of(process.ProcessIdentity(9871, 1), proc) == 0  # somebody else's
    assert process.cpu_ticks_of(None, proc) == 0


def test_has_begun_for_real_processes():
    """A real sleeper waits (S); a real busy loop reaches BEGUN_CPU_TICKS; a process that exited (a zombie, not yet
    reaped) has not begun."""
    sleeper = subprocess.Popen(['sleep', '30'])
    spinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    quitter = subprocess.Popen(['true'])
    children = {'sleeper': sleeper, 'spinner': spinner, 'quitter': quitter}
    try:
        identities = {name: process.identity_of(child.pid) for name, child in children.items()}
        deadline = time.monotonic() + 30
        while not (process.has_begun(identities['sleeper']) and process.has_begun(identities['spinner'])
                   and process.read_proc_stat(quitter.pid).state == 'Z'):
            assert time.monotonic() < deadline, {name: process.read_proc_stat(child.pid) for name, child in children.items()}
            time.sleep(0.01)
        assert not process.has_begun(identities['quitter'])
    finally:
        for child in children.values():
            child.kill()
            child.wait()


def test_identity_round_trips_through_a_state_file_dict():
    identity = process.ProcessIdentity(9871, 160388)
    assert process.ProcessIdentity.from_dict(identity.to_dict()) == identity
    assert process.ProcessIdentity.from_dict({'pid': 'x', 'start_time': 1}) is None
    assert process.ProcessIdentity.from_dict(None) is None
    assert process.ProcessIdentity.from_dict({'pid': 1}) is None


@pytest.mark.parametrize('raw, argv', [
    (b'tail\0-f\0/dev/null\0', ['tail', '-f', '/dev/null']),
    (b'sh\0-c\0\0', ['sh', '-c', '']),  # an empty last argument is kept
    (b'', []),  # a zombie or a kernel thread
    (b'caf\xc3\xa9\0\xff\0', ['caf\u00e9', '\udcff']),
])
def test_parse_cmdline(raw, argv):
    assert process.parse_cmdline(raw) == argv


def test_parse_nspids_shows_pid_1_inside_a_pid_namespace():
    assert process.parse_nspids(STATUS_CONTAINER_PID1) == [9871, 1]
    assert process.parse_nspids('Name:\tbash\nNSpid:\t9852\n') == [9852]
    assert process.parse_nspids('Name:\told kernel\n') == []


def test_children_of_lists_direct_children_oldest_first(tmp_path):
    older = STAT_CONTAINER_PID1.replace('9871 (sleep) S 9869', '501 (a) S 500').replace(' 160388 ', ' 100 ')
    younger = STAT_CONTAINER_PID1.replace('9871 (sleep) S 9869', '502 (b) S 500').replace(' 160388 ', ' 200 ')
    other = STAT_CONTAINER_PID1.replace('9871 (sleep) S 9869', '503 (c) S 1')
    proc = fake_proc(tmp_path, {502: younger, 501: older, 503: other})
    assert [child.pid for child in process.children_of(500, proc)] == [501, 502]


def test_send_signal_refuses_a_reused_pid(sleeper):
    real = process.identity_of(sleeper.pid)
    impostor = process.ProcessIdentity(real.pid, real.start_time + 1)
    assert process.send_signal(impostor, signal.SIGKILL) is False
    assert sleeper.poll() is None, 'a process with another start time was signalled'


def test_send_signal_reaches_the_recorded_process(sleeper):
    identity = process.identity_of(sleeper.pid)
    assert process.is_running(identity)
    assert process.send_signal(identity, signal.SIGTERM) is True
    assert sleeper.wait() == -signal.SIGTERM


def test_an_unreaped_child_is_a_zombie_and_not_running():
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    identity = process.identity_of(child.pid)
    try:
        # Not reaped yet: the PID stays taken until wait(), in state Z.
        assert process.wait_until_not_running(identity, timeout=30)
        assert process.read_proc_stat(child.pid).state == 'Z'
        assert process.is_same_process(identity)
    finally:
        child.wait()
    assert not process.is_same_process(identity)
    assert process.send_signal(identity, signal.SIGKILL) is False


def test_started_at_is_when_the_process_started(sleeper):
    # btime in /proc/stat has a resolution of one second; start_time of one clock tick.
    identity = process.identity_of(sleeper.pid)
    started = process.started_at_epoch(identity)
    assert process.boot_time() < started <= time.time() + 1
    assert started >= process.started_at_epoch(process.identity_of(os.getpid())) - 1
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', process.started_at_iso(identity))
