"""ns_exec on this machine's kernel, as root, through Ansible: containers started by ns_container (busybox root
file systems), commands run inside them, and what they can see and do there.

Every container is removed with ns_container state=absent at the end; any process left in a test's root file system
(only ever this test's own) is killed by PID after its start time is checked.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, REPO, ModuleRunner, ansible_env, kill_module_after, make_busybox_rootfs, unmount_below
from ansible_collections.unboxed.lab.plugins.module_utils import cgroups, container, paths, process

pytestmark = pytest.mark.root

TALK_COMMAND = ['tail', '-f', '/dev/null']
_names = itertools.count()


class Lab:
    """A busybox root file system and the containers of the tests that use it."""

    def __init__(self, base):
        self.base = base
        self.rootfs = make_busybox_rootfs(os.path.join(base, 'rootfs'))
        os.makedirs(os.path.join(self.rootfs, 'app'), exist_ok=True)
        self.run = ModuleRunner(base)
        self.state_dirs = []

    def state_dir(self, name):
        return os.path.join(self.base, 'state', name)

    def start(self, **overrides):
        name = f'exec{os.getpid()}n{next(_names)}'
        args = {'name': name, 'rootfs': self.rootfs, 'command': TALK_COMMAND, 'state_dir': self.state_dir(name),
                'stop_timeout': 1}
        args.update(overrides)
        self.state_dirs.append(args['state_dir'])
        result = self.run('ns_container', args)
        assert result['changed'] and not result['failed'], result
        return name, result

    def exec(self, name, command, check=False, **args):
        return self.run('ns_exec', dict({'name': name, 'command': command, 'state_dir': self.state_dir(name)}, **args),
                        check=check)

    def remove(self, name):
        result = self.run('ns_container', {'name': name, 'state': 'absent', 'state_dir': self.state_dir(name),
                                           'stop_timeout': 1})
        assert not result['failed'], result

    def cleanup(self):
        for state_dir in self.state_dirs:
            if os.path.exists(container.state_file_path(state_dir)):
                self.remove(os.path.basename(state_dir))
        for pid in process.all_pids():
            try:
                root = os.readlink(f'/proc/{pid}/root')
            except OSError:
                continue
            identity = process.identity_of(pid)
            if paths.is_inside(root, self.rootfs) and process.send_signal(identity, signal.SIGKILL):
                process.wait_until_not_running(identity, 30)


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('needs root: namespaces')
    base = str(tmp_path_factory.mktemp('ns_exec'))
    made = Lab(base)
    yield made
    made.cleanup()
    unmount_below(base)


@pytest.fixture(scope='module')
def talk(lab):
    """The talk's container (pid, net, mount; pivot_root), running for every test of this file that only looks."""
    name, result = lab.start(hostname=None)
    return name, result['pid']


def ns_link(pid, namespace):
    return os.readlink(f'/proc/{pid}/ns/{namespace}')


def processes_inside(lab, name):
    result = lab.exec(name, ['ps', '-o', 'pid,comm'])
    assert result['rc'] == 0, result
    return [line.split()[1] for line in result['stdout_lines'][1:]]


# ---- what the command sees ------------------------------------------------------------------------------------

def test_the_command_runs_in_the_containers_namespaces_and_root(lab, talk):
    name, pid = talk
    result = lab.exec(name, ['sh', '-c', 'ps -o pid,comm; for n in net pid mnt uts; do readlink /proc/self/ns/$n; '
                                         'done; pwd; ls /'])
    assert result['changed'] and result['rc'] == 0 and not result['failed'], result
    lines = result['stdout_lines']
    assert lines[1].split() == ['1', 'tail']  # PID 1 of its PID namespace is the container's
    assert [line.split()[1] for line in lines[1:4]] == ['tail', 'sh', 'ps']
    assert lines[4:8] == [ns_link(pid, 'net'), ns_link(pid, 'pid'), ns_link(pid, 'mnt'), ns_link(pid, 'uts')]
    assert lines[4] != ns_link('self', 'net') and lines[7] == ns_link('self', 'uts')
    assert lines[8] == '/'
    assert sorted(lines[9:]) == sorted(os.listdir(lab.rootfs))
    assert result['namespaces'] == ['net', 'pid', 'mount'] and result['pid'] == pid
    assert result['cgroups'] == [] and result['confinement'] == {'capabilities': 'all', 'no_new_privs': False,
                                                                 'seccomp': 'unconfined'}


def test_env_and_workdir(lab, talk):
    name, _pid = talk
    result = lab.exec(name, ['sh', '-c', 'echo "$GREETING"; pwd; echo "$PATH"'], env={'GREETING': 'olá mundo'},
                      workdir='/app')
    assert result['stdout_lines'] == ['olá mundo', '/app', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']
    assert result['workdir'] == '/app'


def test_cmd_is_the_same_exec_with_nsenter(lab, talk):
    name, pid = talk
    command = ['sh', '-c', 'readlink /proc/self/ns/net; readlink /proc/self/ns/mnt; pwd; ls /']
    result = lab.exec(name, command, workdir='/app')
    assert result['cmd'] == ('nsenter --target %d --all --root --wd=%s/app sh -c '
                             "'readlink /proc/self/ns/net; readlink /proc/self/ns/mnt; pwd; ls /'" % (pid, lab.rootfs))
    typed = subprocess.run(['sh', '-c', result['cmd']], capture_output=True, text=True, check=False, timeout=60)
    assert typed.returncode == 0, typed.stderr
    assert typed.stdout.splitlines() == result['stdout_lines']


def test_a_background_child_does_not_hold_the_task(lab, talk):
    name, _pid = talk
    started = time.monotonic()
    result = lab.exec(name, ['sh', '-c', 'sleep 60 & echo started'])
    assert result['stdout'] == 'started' and result['rc'] == 0
    assert time.monotonic() - started < 30
    assert 'sleep' in processes_inside(lab, name)  # it goes on inside the container, as after docker exec


# ---- errors ---------------------------------------------------------------------------------------------------

def test_command_not_found_inside(lab, talk):
    name, _pid = talk
    result = lab.exec(name, ['python3', '-V'])  # the host has it, the container does not
    assert result['failed'] and result['rc'] == 127 and not result['changed']
    assert result['msg'].startswith(f'Command not found inside container {name}: python3: command not found')


def test_workdir_missing_inside(lab, talk):
    name, _pid = talk
    result = lab.exec(name, ['ls'], workdir='/work')
    assert result['failed'] and result['rc'] == 126
    assert 'workdir /work: No such file or directory inside the container' in result['msg']


def test_a_failing_command_fails_the_task_with_its_output(lab, talk):
    name, _pid = talk
    result = lab.exec(name, ['sh', '-c', 'echo out; echo err >&2; exit 3'])
    assert result['failed'] and result['changed'] and result['rc'] == 3
    assert (result['msg'], result['stdout'], result['stderr']) == ('non-zero return code', 'out', 'err')


def test_timeout_kills_the_command_and_what_it_started(lab, talk):
    name, _pid = talk
    result = lab.exec(name, ['sh', '-c', 'sleep 120 & sleep 121'], timeout=2)
    assert result['failed'] and result['rc'] == 137
    assert 'did not end within 2 s (timeout)' in result['msg']
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = [proc for proc in process.all_pids()
                if (process.read_cmdline(proc) or [''])[:2] in (['sleep', '120'], ['sleep', '121'])]
        if not seen:
            break
        time.sleep(0.1)
    assert not seen


def test_check_mode_runs_nothing(lab, talk):
    name, _pid = talk
    marker = os.path.join(lab.rootfs, 'tmp', 'check-mode-marker')
    result = lab.exec(name, ['touch', '/tmp/check-mode-marker'], check=True)
    assert result['_status'] == 'skipped' or result.get('skipped'), result
    assert result['msg'] == f'Command would have run in container {name} if not in check mode'
    assert not os.path.exists(marker)


def test_no_such_container(lab):
    result = lab.exec('nothing-here', ['ls'])
    assert result['failed'] and result['msg'].startswith('No such container: nothing-here')


def test_bad_input_names_the_option(lab, talk):
    name, _pid = talk
    result = lab.exec(name, ['ls'], workdir='app', timeout=-1)
    assert result['failed']
    assert 'workdir must be an absolute path' in result['msg'] and 'timeout must be 0' in result['msg']


def test_a_reused_pid_is_never_joined(lab, talk):
    """A record whose PID now names another process (here: the container's own, with another start time)."""
    name, pid = talk
    state = container.read_state(lab.state_dir(name))
    forged_dir = lab.state_dir('forged')
    os.makedirs(forged_dir)
    try:
        state['process']['start_time'] -= 1
        container.write_state(forged_dir, state)
        result = lab.exec('forged', ['touch', '/tmp/reused-marker'])
    finally:
        shutil.rmtree(forged_dir)
    assert result['failed'] and f'PID {pid} now belongs to another process (tail)' in result['msg']
    assert not os.path.exists(os.path.join(lab.rootfs, 'tmp', 'reused-marker'))


def test_a_stopped_container_is_not_running(lab):
    name, _result = lab.start()
    stopped = lab.run('ns_container', {'name': name, 'state': 'stopped', 'state_dir': lab.state_dir(name),
                                       'stop_timeout': 1})
    assert stopped['changed'], stopped
    result = lab.exec(name, ['ls'])
    assert result['failed'] and result['msg'].startswith(f'Container {name} cannot run a command: it is not running')
    lab.remove(name)


def stages_and_commands_of(lab, pid, marker):
    """This test's own processes for the container ``pid``: exec stages (their config names the PID) and commands
    (``marker`` is their argument)."""
    found = []
    for proc in process.all_pids():
        argv = process.read_cmdline(proc) or []
        if marker in argv or (len(argv) > 4 and argv[1:3] == ['-I', '-c'] and f'"pid":{pid},' in argv[4]):
            found.append(proc)
    return found


def test_a_killed_module_leaves_the_container_as_it_was(lab, talk):
    """SIGKILL the module at instants across its run: the container runs on, what was started in it ends by itself
    (as after a docker exec client that was killed), and the next exec works."""
    name, pid = talk
    args = {'name': name, 'command': ['sleep', '1.5'], 'state_dir': lab.state_dir(name)}
    argv = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local', '-e',
            f'ansible_python_interpreter={sys.executable}', '-m', 'unboxed.lab.ns_exec', '-a', json.dumps(args)]
    lives = []
    for delay in (0.02, 0.1, 0.25, 0.5, 0.8, 1.2):
        run = subprocess.Popen(argv, cwd=REPO, env=ansible_env(lab.base), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lives.append(kill_module_after(run, 'ns_exec', delay))
    assert all(lived is not None for lived in lives), lives
    deadline = time.monotonic() + 15
    while stages_and_commands_of(lab, pid, '1.5') and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stages_and_commands_of(lab, pid, '1.5') == []
    assert process.is_running(process.identity_of(pid))
    assert lab.exec(name, ['true'])['rc'] == 0


# ---- cgroups, confinement, other kinds of container -------------------------------------------------------------

def test_the_command_joins_the_containers_cgroups_and_their_limits(lab):
    name, started = lab.start(memory='32m', pids_limit=8)
    plan = cgroups.Plan.from_dict(container.read_state(lab.state_dir(name))['cgroup'])
    result = lab.exec(name, ['cat', '/proc/self/cgroup'])
    assert result['cgroups'] == plan.directories()
    for cgroup in plan.cgroups:
        key = '' if cgroup.version == 2 else cgroup.hierarchy
        assert any(line.endswith(f':{key}:{cgroup.path}') for line in result['stdout_lines']), result['stdout']
    assert result['cmd'].startswith("sh -c 'echo $$ > ")
    # A memory hog run by exec is OOM-killed inside the container's limit; the container's PID 1 lives on.
    hog = lab.exec(name, ['sh', '-c', 'x=a; while true; do x="$x$x"; done'])
    assert hog['failed'] and hog['rc'] == 137, hog
    assert cgroups.usage(plan)['oom_kills'] >= 1
    assert process.is_running(process.identity_of(started['pid']))
    # A fork loop run by exec stops at the container's pids limit.
    bomb = lab.exec(name, ['sh', '-c', 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & done; wait'], timeout=20)
    assert "can't fork" in bomb['stderr'], bomb
    lab.remove(name)
    assert cgroups.leftovers(plan) == []


def test_a_confined_container_confines_the_command(lab):
    name, started = lab.start(preset='docker', no_new_privs=True)
    result = lab.exec(name, ['sh', '-c', 'grep -E "^(CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):" /proc/self/status; '
                                         'unshare -n true; echo "unshare=$?"'])
    fields = dict(line.split(':\t') for line in result['stdout_lines'][:5])
    assert {key: value.strip() for key, value in fields.items()} == {
        'CapEff': '00000000a80425fb', 'CapBnd': '00000000a80425fb', 'CapAmb': '0000000000000000',
        'NoNewPrivs': '1', 'Seccomp': '2'}
    assert result['stdout_lines'][5] == 'unshare=1' and 'Operation not permitted' in result['stderr']
    assert result['confinement']['seccomp'] == 'docker' and result['confinement']['no_new_privs'] is True
    assert started['confinement']['cap_eff'] == '00000000a80425fb'
    lab.remove(name)


def test_a_chroot_container_with_user_uts_and_ipc_namespaces(lab):
    name, started = lab.start(root_method='chroot', namespaces=['pid', 'net', 'mount', 'user', 'uts', 'ipc'],
                              hostname='box1')
    result = lab.exec(name, ['sh', '-c', 'hostname; id -u; readlink /proc/self/ns/user; readlink /proc/self/ns/ipc; ls /'])
    assert result['namespaces'] == ['user', 'ipc', 'uts', 'net', 'pid', 'mount'], result
    lines = result['stdout_lines']
    assert lines[:2] == ['box1', '0']
    assert lines[2:4] == [ns_link(started['pid'], 'user'), ns_link(started['pid'], 'ipc')]
    assert sorted(lines[4:]) == sorted(os.listdir(lab.rootfs))
    lab.remove(name)
