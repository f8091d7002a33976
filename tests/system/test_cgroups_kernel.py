"""cgroups.py on this machine's kernel, as root: real cgroup directories, real processes, limits that bite.

This machine is hybrid: the memory, pids and cpu controllers are on cgroup v1 (/sys/fs/cgroup/CONTROLLER), and the
cgroup v2 hierarchy at /sys/fs/cgroup/unified has none of them (its cgroup.controllers lists at most hugetlb: every
other controller is bound to v1, and the kernel gives a controller to one hierarchy only). So v1 is tested for real
(create, attach, each limit bites, remove), v2 for real as far as this kernel allows - creating the container's
cgroup, placing a process in it, removing it, and a refused v2 limit that names its option - and the v2 limit files
(memory.max, pids.max, cpu.max, cpu.weight, subtree_control) against fake trees in
tests/unit/plugins/module_utils/test_cgroups.py.

Every cgroup is made below the test's own cgroup in each hierarchy (/proc/self/cgroup; the memory one is not the
root here), named unboxed-systestPID-N, and removed at the end; only processes the test started are signalled.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import cgroups

pytestmark = pytest.mark.root

_counter = itertools.count()


def read(path):
    with open(path, encoding='ascii') as handle:
        return handle.read().strip()


@pytest.fixture
def host():
    if os.geteuid() != 0:
        pytest.skip('needs root: cgroup directories')
    detected = cgroups.detect_host()
    missing = [name for name in ('memory', 'pids', 'cpu') if detected.hierarchy_for(name) is None]
    if missing:
        pytest.skip(f'this machine has no {", ".join(missing)} controller')
    return detected


class Lab:
    """Plans made and processes started by one test; everything is stopped and removed at the end."""

    def __init__(self, host):
        self.host = host
        self.plans = []
        self.children = []

    def name(self):
        return f'systest{os.getpid()}-{next(_counter)}'

    def create(self, limits, host=None, name=None):
        plan = cgroups.plan(host or self.host, name or self.name(), limits)
        self.plans.append(plan)
        done = cgroups.create(plan)
        self.plans.append(done)
        return done

    def start_inside(self, plan, argv, **kwargs):
        """Start argv already inside the plan's cgroups: the child moves itself in (writes "0" into each
        cgroup.procs) before it execs, as the container's launcher does - it never runs a moment unlimited."""
        procs_files = plan.procs_files()

        def enter():
            for procs in procs_files:
                with open(procs, 'w', encoding='ascii') as handle:
                    handle.write('0')

        child = subprocess.Popen(argv, preexec_fn=enter, **kwargs)  # pylint: disable=subprocess-popen-preexec-fn
        self.children.append(child)
        return child

    def close(self):
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()
        for plan in reversed(self.plans):
            for pid in cgroups.processes(plan):
                # Only what this test started may be left inside (its children's children).
                if pid_is_ours(pid, [child.pid for child in self.children]):
                    os.kill(pid, signal.SIGKILL)
            try:
                cgroups.remove(plan)
            except cgroups.CgroupError:
                pass


def pid_is_ours(pid, roots):
    from ansible_collections.unboxed.lab.plugins.module_utils import process
    return pid in roots or any(ancestor in roots for ancestor in process.ancestors_of(pid))


@pytest.fixture
def lab(host):
    created = Lab(host)
    yield created
    created.close()
    for plan in created.plans:
        assert cgroups.leftovers(plan) == [], 'the test left cgroups behind'


def own_cgroups():
    return {key: path for _id, key, path in
            ((number, ','.join(controllers) or 'unified', path)
             for number, controllers, path in cgroups.parse_proc_cgroup(read('/proc/self/cgroup')))}


def test_this_host_is_hybrid_and_its_v2_has_no_limit_controllers(host):
    assert host.layout == 'hybrid'
    assert {'memory', 'pids', 'cpu'}.isdisjoint(host.unified.controllers)
    assert host.hierarchy_for('memory').version == 1
    # The test process runs in a cgroup of its own in the memory hierarchy: the plan goes below it.
    assert host.hierarchy_for('memory').own_path == own_cgroups()['memory']


def test_v1_create_attach_read_back_and_remove(lab):
    limits = cgroups.parse_limits('64m', 20, '0.5', 512)[0]
    plan = lab.create(limits)
    assert [cgroup.hierarchy for cgroup in plan.cgroups] == ['memory', 'pids', 'cpu', 'unified']
    memory, pids, cpu, unified = plan.cgroups
    assert memory.path == own_cgroups()['memory'].rstrip('/') + '/' + os.path.basename(memory.directory)
    assert read(f'{memory.directory}/memory.limit_in_bytes') == str(64 << 20)
    assert read(f'{memory.directory}/memory.memsw.limit_in_bytes') == str(128 << 20)
    assert read(f'{pids.directory}/pids.max') == '20'
    assert (read(f'{cpu.directory}/cpu.cfs_period_us'), read(f'{cpu.directory}/cpu.cfs_quota_us')) == ('100000', '50000')
    assert read(f'{cpu.directory}/cpu.shares') == '512'
    sleeper = subprocess.Popen(['sleep', '60'])
    lab.children.append(sleeper)
    cgroups.attach(plan, sleeper.pid)
    shown = read(f'/proc/{sleeper.pid}/cgroup')
    for cgroup in plan.cgroups:
        key = '' if cgroup.version == 2 else cgroup.hierarchy
        assert f':{key}:{cgroup.path}' in shown
    assert cgroups.processes(plan) == [sleeper.pid]
    assert cgroups.usage(plan)['pids_current'] == 1
    # A killed container: its cgroups empty a moment later, and remove waits for that.
    sleeper.kill()
    assert sorted(cgroups.remove(plan)) == sorted(plan.directories())
    sleeper.wait()
    assert cgroups.leftovers(plan) == []
    assert not any(os.path.exists(directory) for directory in [unified.directory])


def test_pids_limit_stops_a_fork_loop(lab):
    plan = lab.create(cgroups.Limits(pids_limit=5))
    loop = '''
import os, sys, time
made, refused = [], 0
for _ in range(30):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    made.append(pid)
print(len(made), refused, flush=True)
with open(sys.argv[1]) as handle:
    print(handle.read().strip(), flush=True)
for pid in made:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
'''
    pids = next(cgroup for cgroup in plan.cgroups if cgroup.hierarchy == 'pids')
    bomb = lab.start_inside(plan, [sys.executable, '-c', loop, f'{pids.directory}/pids.current'],
                            stdout=subprocess.PIPE, text=True)
    output = bomb.communicate(timeout=60)[0]
    made, refused, current = (int(word) for word in output.split())
    # The loop itself is one of the 5: four children, every other fork refused with EAGAIN.
    assert (made, refused, current) == (4, 26, 5)
    assert bomb.returncode == 0
    # The host is untouched: this test process still forks.
    assert subprocess.run(['true'], check=False).returncode == 0


def test_memory_limit_oom_kills_a_hog_inside(lab):
    plan = lab.create(cgroups.Limits(memory=32 << 20))
    hog = '''
chunks = []
while True:
    chunks.append(bytearray(1 << 20))  # zero-filled: every page touched
'''
    before = cgroups.usage(plan)['oom_kills']
    child = lab.start_inside(plan, [sys.executable, '-c', hog])
    assert child.wait(timeout=60) == -signal.SIGKILL
    used = cgroups.usage(plan)
    assert used['oom_kills'] == before + 1
    assert (30 << 20) <= used['memory_peak'] <= (32 << 20)
    # The test process (the host side) lives on.
    assert os.getpid() and subprocess.run(['true'], check=False).returncode == 0


def test_cpu_quota_throttles(lab):
    plan = lab.create(cgroups.parse_limits(cpus='0.1')[0])
    busy = 'import time\nend = time.monotonic() + 0.5\nwhile time.monotonic() < end:\n    pass\n'
    started = time.monotonic()
    assert lab.start_inside(plan, [sys.executable, '-c', busy]).wait(timeout=60) == 0
    used = cgroups.usage(plan)
    assert used['cpu_nr_throttled'] > 0 and used['cpu_throttled_usec'] > 0
    assert time.monotonic() - started >= 0.5


def test_v2_placement_only(lab, host):
    """v2 on this kernel: the container's cgroup is made, holds the process, and is removed; no limit is set there."""
    plan = lab.create(cgroups.Limits(), host=cgroups.Host('unified', (host.unified,)))
    (unified,) = plan.cgroups
    assert unified.version == 2 and unified.controllers == ()
    assert read(f'{unified.directory}/cgroup.type') == 'domain'
    child = lab.start_inside(plan, ['sleep', '60'])
    deadline = time.monotonic() + 5
    while cgroups.processes(plan) != [child.pid] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f'0::{unified.path}' in read(f'/proc/{child.pid}/cgroup')
    child.kill()
    child.wait()
    assert cgroups.remove(plan) == [unified.directory]
    assert not os.path.exists(unified.directory)


def test_v2_limit_here_is_refused_naming_the_option(host):
    only_v2 = cgroups.Host('unified', (host.unified,))
    before = sorted(os.listdir(host.unified.mount_point))
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.plan(only_v2, 'refused', cgroups.Limits(pids_limit=5))
    assert caught.value.option == 'pids_limit'
    assert 'no pids controller' in str(caught.value)
    assert sorted(os.listdir(host.unified.mount_point)) == before


def test_a_refused_write_rolls_everything_back(lab):
    name = lab.name()
    plan = cgroups.plan(lab.host, name, cgroups.Limits(memory=64 << 20, pids_limit=5))
    # The kernel refuses this value (EINVAL): the memory and pids cgroups made before must go again.
    broken = dataclasses.replace(plan, cgroups=tuple(
        dataclasses.replace(cgroup, steps=tuple(
            dataclasses.replace(step, value='lots') if step.path.endswith('pids.max') else step
            for step in cgroup.steps)) for cgroup in plan.cgroups))
    lab.plans.append(plan)
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.create(broken)
    assert 'pids.max: Invalid argument' in str(caught.value)
    assert cgroups.leftovers(plan) == []


def test_the_students_shell_commands_do_what_create_does(lab):
    name = lab.name()
    plan = cgroups.plan(lab.host, name, cgroups.parse_limits('64m', 7, '0.5')[0])
    lab.plans.append(plan)
    script = '\n'.join(cgroups.setup_commands(plan)) + '\nexec sleep 60\n'
    shell = subprocess.Popen(['sh', '-e', '-c', script])
    lab.children.append(shell)
    deadline = time.monotonic() + 10
    while sorted(set(cgroups.processes(plan))) != [shell.pid] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cgroups.processes(plan) == [shell.pid]
    memory, pids, cpu, _unified = plan.cgroups
    assert read(f'{memory.directory}/memory.limit_in_bytes') == str(64 << 20)
    assert read(f'{pids.directory}/pids.max') == '7'
    assert read(f'{cpu.directory}/cpu.cfs_quota_us') == '50000'
    shell.kill()
    shell.wait()
    assert sorted(cgroups.remove(plan)) == sorted(plan.directories())


def test_stray_cgroups_finds_what_a_killed_run_left(lab):
    plan = lab.create(cgroups.Limits(pids_limit=3))
    names = {stray['directory'] for stray in cgroups.stray_cgroups(lab.host)}
    assert set(plan.directories()) <= names
    cgroups.remove(plan)
    names = {stray['directory'] for stray in cgroups.stray_cgroups(lab.host)}
    assert not set(plan.directories()) & names
