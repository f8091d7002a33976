"""ns_container with real namespaces and real processes, run through Ansible against localhost (root).

Every container a test starts is found again through its state file and killed by PID (after its
start time is checked) at teardown, together with any process still running inside the test's
own root file system.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import REPO, snapshot_tree
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import process

pytestmark = pytest.mark.root

# tail -f /dev/null, as PID 1 of its own PID namespace, ignores SIGTERM: every stop waits this long, then SIGKILLs.
STOP_TIMEOUT = 1
TALK_COMMAND = ['tail', '-f', '/dev/null']
_names = itertools.count()


@pytest.fixture
def rootfs(busybox_rootfs):
    """The busybox root file system (with /dev/null for `tail -f /dev/null`) and a directory to work in."""
    os.mkdir(os.path.join(busybox_rootfs, 'app'))
    return busybox_rootfs


def our_processes(rootfs):
    """Processes that belong to this test's containers: those naming or living in its rootfs, and their descendants.

    The rest of the machine's process table is not ours to compare: other test runs share this host.
    """
    table = {}
    for pid in process.all_pids():
        stat_line = process.read_proc_stat(pid)
        cmdline = process.read_cmdline(pid)
        if stat_line is None or cmdline is None:
            continue
        try:
            root = os.readlink(f'/proc/{pid}/root')
        except OSError:
            root = ''
        table[pid] = (stat_line, cmdline, root)
    ours = {pid for pid, (_stat, cmdline, root) in table.items()
            if any(rootfs in arg for arg in cmdline) or (root and paths.is_inside(root, rootfs))}
    grown = True
    while grown:
        more = {pid for pid, (stat_line, _cmdline, _root) in table.items() if stat_line.ppid in ours} - ours
        ours |= more
        grown = bool(more)
    return sorted((pid, table[pid][0].start_time, tuple(table[pid][1])) for pid in ours)


class Containers:
    """Names, arguments and cleanup for the containers of one test."""

    def __init__(self, tmp_path, rootfs):
        self.tmp_path = tmp_path
        self.rootfs = rootfs
        self.state_dirs = set()

    def new_name(self):
        return f'pytest{os.getpid()}n{next(_names)}'

    def args(self, name, **overrides):
        args = {'name': name, 'rootfs': self.rootfs, 'command': TALK_COMMAND,
                'state_dir': str(self.tmp_path / 'state' / name), 'stop_timeout': STOP_TIMEOUT}
        args.update(overrides)
        state_dir = args.get('state_dir') or container.default_state_dir(name)
        self.state_dirs.add(state_dir)
        return {key: value for key, value in args.items() if value is not None}

    def identity(self, state_dir):
        return container.recorded_process(container.read_state(state_dir))

    def cleanup(self):
        for state_dir in self.state_dirs:
            try:
                identity = self.identity(state_dir)
            except container.StateFileError:
                identity = None
            if process.send_signal(identity, signal.SIGKILL):
                process.wait_until_not_running(identity, 30)
            if state_dir.startswith(container.STATE_ROOT + '/'):
                for name in (container.STATE_FILE, container.LOG_FILE):
                    if os.path.exists(os.path.join(state_dir, name)):
                        os.unlink(os.path.join(state_dir, name))
                if os.path.isdir(state_dir):
                    os.rmdir(state_dir)
        for pid, start_time, _cmdline in our_processes(self.rootfs):
            identity = process.ProcessIdentity(pid, start_time)
            if process.send_signal(identity, signal.SIGKILL):
                process.wait_until_not_running(identity, 30)


@pytest.fixture
def containers(tmp_path, rootfs):
    tracker = Containers(tmp_path, rootfs)
    yield tracker
    tracker.cleanup()


def inside(pid, *argv):
    """Run argv inside the container: all its namespaces, its root and its working directory."""
    result = subprocess.run(['nsenter', '--target', str(pid), '--all', '--root', '--wd', *argv],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def mount_points_in_namespace_of(pid):
    """Every mount in the container's mount namespace, seen from that namespace's root (not the container's)."""
    text = subprocess.run(['nsenter', '--target', str(pid), '--mount', '--pid', 'cat', '/proc/self/mountinfo'],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split()[4] for line in text.splitlines()]


def running(result):
    return process.is_running(process.identity_of(result['pid'])) if result['pid'] else False


# ---- starting, and what the container is ----------------------------------------------------------------------------

def test_started_runs_the_talks_container_once(run_module, containers, rootfs):
    name = containers.new_name()
    tree = snapshot_tree(rootfs)
    first = run_module('ns_container', containers.args(name))
    assert first['changed'] is True and not first.get('failed'), first.get('msg')
    assert first['state'] == 'started'
    assert first['shell_command'] == f'unshare --fork --pid --net --mount-proc={rootfs}/proc chroot {rootfs} tail -f /dev/null'
    assert first['command'] == TALK_COMMAND and first['rootfs'] == rootfs and first['root_method'] == 'chroot'
    pid = first['pid']
    identity = containers.identity(first['state_dir'])
    assert identity.pid == pid and process.is_running(identity)
    assert first['started_at'] == process.started_at_iso(identity)

    # The tracked process is PID 1 of its own namespace, running the command itself (not unshare, not chroot).
    assert process.read_nspids(pid) == [pid, 1]
    assert process.read_cmdline(pid) == TALK_COMMAND
    assert process.read_proc_stat(process.read_proc_stat(pid).ppid).comm == 'unshare'
    ps_inside = inside(pid, 'ps', '-o', 'pid,args').splitlines()
    assert ps_inside[1].split(None, 1) == ['1', 'tail -f /dev/null']
    assert [line.split()[1] for line in inside(pid, 'ip', '-o', 'link').splitlines()] == ['lo:']

    for kind, report in first['namespaces'].items():
        expected = kind in ('pid', 'net', 'mount')
        assert report['isolated'] is expected, kind
        ns_file = {'mount': 'mnt'}.get(kind, kind)
        assert f"[{report['inode']}]" in os.readlink(f'/proc/{pid}/ns/{ns_file}')
        assert f"[{report['host_inode']}]" in os.readlink(f'/proc/self/ns/{ns_file}')
        assert (report['inode'] != report['host_inode']) is expected

    second = run_module('ns_container', containers.args(name))
    assert second['changed'] is False
    assert second['pid'] == pid and second['started_at'] == first['started_at']
    assert second['msg'] == f'Nothing to do: it runs with this spec (PID {pid}).'
    assert snapshot_tree(rootfs) == tree


def test_the_container_is_a_daemon_that_outlived_the_task(run_module, containers):
    result = run_module('ns_container', containers.args(containers.new_name()))
    pid = result['pid']
    # Ansible has returned (no inherited pipe kept it waiting), and the container runs on in a session of its own.
    assert running(result)
    launcher = process.read_proc_stat(pid).ppid
    assert os.getsid(launcher) == launcher != os.getsid(0)
    assert os.readlink(f'/proc/{pid}/fd/0') == '/dev/null'
    assert os.readlink(f'/proc/{pid}/fd/1') == result['log_path'] == os.readlink(f'/proc/{pid}/fd/2')
    assert sorted(os.listdir(f'/proc/{launcher}/fd')) == ['0', '1', '2']
    with open(f'/proc/{pid}/environ', 'rb') as handle:
        environment = process.parse_cmdline(handle.read())
    assert sorted(environment) == sorted([f'PATH={environ.DEFAULT_PATH}', 'HOME=/root'])
    with open(result['log_path'], encoding='utf-8') as handle:
        assert f'started PID {pid}' in handle.read()


def test_default_state_dir_is_under_run(run_module, containers):
    name = containers.new_name()
    result = run_module('ns_container', containers.args(name, state_dir=None))
    assert result['state_dir'] == f'/run/unboxed/containers/{name}'
    assert containers.identity(result['state_dir']).pid == result['pid'] and running(result)
    gone = run_module('ns_container', {'name': name, 'state': 'absent', 'stop_timeout': STOP_TIMEOUT})
    assert gone['changed'] is True and not os.path.exists(result['state_dir'])


def test_hostname_workdir_and_env(run_module, containers, rootfs):
    host_name = socket.gethostname()
    result = run_module('ns_container', containers.args(
        containers.new_name(), namespaces=['pid', 'net', 'mount', 'uts', 'ipc'], hostname='web01', workdir='/app',
        env={'GREETING': 'hello world'}))
    assert result['changed'] is True, result.get('msg')
    pid = result['pid']
    assert inside(pid, 'hostname').strip() == 'web01'
    assert socket.gethostname() == host_name
    assert inside(pid, 'pwd').strip() == '/app'
    assert process.read_nspids(pid)[-1] == 1 and process.read_cmdline(pid) == TALK_COMMAND
    with open(f'/proc/{pid}/environ', 'rb') as handle:
        environment = process.parse_cmdline(handle.read())
    assert sorted(environment) == sorted([f'PATH={environ.DEFAULT_PATH}', 'HOME=/root', 'GREETING=hello world'])
    assert result['namespaces']['uts']['isolated'] and result['namespaces']['ipc']['isolated']
    assert result['shell_command'].startswith("env 'GREETING=hello world' unshare --fork")


def test_pivot_root_detaches_the_host_root_that_chroot_keeps(run_module, containers, rootfs):
    chrooted = run_module('ns_container', containers.args(containers.new_name()))
    pivoted = run_module('ns_container', containers.args(
        containers.new_name(), root_method='pivot_root', namespaces=['pid', 'net', 'mount', 'uts'], hostname='pivot',
        workdir='/app'))
    assert pivoted['changed'] is True, pivoted.get('msg')
    assert process.read_nspids(pivoted['pid'])[-1] == 1 and process.read_cmdline(pivoted['pid']) == TALK_COMMAND
    # chroot: the host's whole mount tree is still in the container's mount namespace, the rootfs one path among many.
    chroot_mounts = mount_points_in_namespace_of(chrooted['pid'])
    assert '/' in chroot_mounts and f'{rootfs}/proc' in chroot_mounts and '/proc' in chroot_mounts
    # pivot_root: only the rootfs (now /) and the container's /proc are left; the old root is gone.
    assert mount_points_in_namespace_of(pivoted['pid']) == ['/', '/proc']
    assert inside(pivoted['pid'], 'hostname').strip() == 'pivot'
    assert inside(pivoted['pid'], 'pwd').strip() == '/app'
    ps_inside = inside(pivoted['pid'], 'ps', '-o', 'pid,args').splitlines()
    assert ps_inside[1].split(None, 1) == ['1', 'tail -f /dev/null']


def test_user_namespace_maps_root_to_root(run_module, containers):
    result = run_module('ns_container', containers.args(containers.new_name(), namespaces=['pid', 'net', 'mount', 'user']))
    assert result['changed'] is True, result.get('msg')
    assert result['namespaces']['user']['isolated'] is True
    with open(f"/proc/{result['pid']}/uid_map", encoding='ascii') as handle:
        assert handle.read().split() == ['0', '0', '1']


# ---- stopping, restarting, removing ---------------------------------------------------------------------------------

def test_stopped_keeps_the_log_and_started_brings_it_back(run_module, containers):
    name = containers.new_name()
    started = run_module('ns_container', containers.args(name))
    identity = containers.identity(started['state_dir'])

    stopped = run_module('ns_container', containers.args(name, state='stopped'))
    assert stopped['changed'] is True and stopped['state'] == 'stopped' and stopped['pid'] is None
    assert stopped['stop_signal'] == 'SIGKILL'  # tail, PID 1 of its namespace, has no SIGTERM handler
    assert stopped['msg'] == f'Stopped: PID {identity.pid} was running; SIGTERM did not end it, SIGKILL did after {STOP_TIMEOUT} s.'
    assert not process.is_running(identity)
    assert sorted(os.listdir(started['state_dir'])) == ['container.log', 'state.json']
    with open(stopped['log_path'], encoding='utf-8') as handle:
        log = handle.read()
    assert f'stopping PID {identity.pid}' in log and f'PID {identity.pid} ended after SIGKILL' in log

    assert run_module('ns_container', containers.args(name, state='stopped'))['changed'] is False

    again = run_module('ns_container', containers.args(name))
    assert again['changed'] is True and again['state'] == 'started'
    assert containers.identity(again['state_dir']) != identity and running(again)


def test_sigterm_stops_a_pid_1_that_handles_it(run_module, containers):
    name = containers.new_name()
    command = ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1; done']
    started = run_module('ns_container', containers.args(name, command=command, stop_timeout=120))
    assert started['changed'] is True, started.get('msg')
    stopped = run_module('ns_container', containers.args(name, command=command, state='stopped', stop_timeout=120))
    assert stopped['changed'] is True and stopped['stop_signal'] == 'SIGTERM'


def test_restarted_always_changes(run_module, containers):
    name = containers.new_name()
    from_nothing = run_module('ns_container', containers.args(name, state='restarted'))
    assert from_nothing['changed'] is True and running(from_nothing)
    first = containers.identity(from_nothing['state_dir'])
    again = run_module('ns_container', containers.args(name, state='restarted'))
    assert again['changed'] is True and running(again)
    assert containers.identity(again['state_dir']) != first and not process.is_running(first)


def test_absent_stops_and_removes_only_its_state(run_module, containers, rootfs):
    name = containers.new_name()
    started = run_module('ns_container', containers.args(name))
    identity = containers.identity(started['state_dir'])
    tree = snapshot_tree(rootfs)
    absent = run_module('ns_container', containers.args(name, state='absent'))
    assert absent['changed'] is True and absent['state'] == 'absent' and absent['pid'] is None
    assert not process.is_running(identity)
    assert not os.path.exists(started['state_dir'])
    assert snapshot_tree(rootfs) == tree
    assert run_module('ns_container', containers.args(name, state='absent'))['changed'] is False


def test_absent_keeps_a_file_it_did_not_create(run_module, containers):
    name = containers.new_name()
    started = run_module('ns_container', containers.args(name))
    notes = os.path.join(started['state_dir'], 'notes.txt')
    with open(notes, 'w', encoding='utf-8') as handle:
        handle.write('mine\n')
    absent = run_module('ns_container', containers.args(name, state='absent'))
    assert absent['changed'] is True
    assert os.listdir(started['state_dir']) == ['notes.txt']
    assert any('notes.txt' in warning for warning in absent.get('warnings', []))
    assert run_module('ns_container', containers.args(name, state='absent'))['changed'] is False


def test_changed_spec_restarts_with_a_diff(run_module, containers):
    name = containers.new_name()
    first = run_module('ns_container', containers.args(name))
    old = containers.identity(first['state_dir'])
    changed = run_module('ns_container', containers.args(name, command=['sleep', '100000'], env={'A': '1'}), diff=True)
    assert changed['changed'] is True
    assert changed['msg'].startswith('Restarted: command, env changed; SIGTERM did not end it')
    diff = changed['diff']
    assert diff['before']['command'] == TALK_COMMAND and diff['after']['command'] == ['sleep', '100000']
    assert diff['before']['env'] == {} and diff['after']['env'] == {'A': '1'}
    assert diff['before']['pid'] == old.pid and diff['after']['pid'] == changed['pid']
    assert not process.is_running(old) and process.read_cmdline(changed['pid']) == ['sleep', '100000']
    same = run_module('ns_container', containers.args(name, command=['sleep', '100000'], env={'A': '1'}), diff=True)
    assert same['changed'] is False and same['diff']['before'] == same['diff']['after']


def test_diff_shows_state_pid_and_spec(run_module, containers, rootfs):
    name = containers.new_name()
    predicted = run_module('ns_container', containers.args(name), check=True, diff=True)
    assert predicted['diff']['before'] == {'state': 'absent'}
    assert predicted['diff']['after']['state'] == 'started' and predicted['diff']['after']['pid'] == 'new'
    started = run_module('ns_container', containers.args(name), diff=True)
    after = started['diff']['after']
    assert started['diff']['before'] == {'state': 'absent'}
    assert after == {'state': 'started', 'pid': started['pid'], 'rootfs': rootfs, 'command': TALK_COMMAND,
                     'namespaces': ['pid', 'net', 'mount'], 'hostname': None, 'mount_proc': True, 'root_method': 'chroot',
                     'env': {}, 'workdir': None}
    stopped = run_module('ns_container', containers.args(name, state='stopped'), diff=True)
    assert stopped['diff']['before'] == after
    assert stopped['diff']['after'] == dict(after, state='stopped', pid=None)
    # What ansible-playbook --diff prints.
    assert f'--- before: container {name}\n+++ after: container {name}' in stopped['_stdout']
    assert '-    state: started\n+    state: stopped' in stopped['_stdout']
    assert f"-    pid: {started['pid']}\n+    pid: null" in stopped['_stdout']


# ---- check mode -----------------------------------------------------------------------------------------------------

def _setup_nothing(run_module, containers, name):
    pass


def _setup_started(run_module, containers, name):
    assert run_module('ns_container', containers.args(name))['changed'] is True


def _setup_stopped(run_module, containers, name):
    _setup_started(run_module, containers, name)
    assert run_module('ns_container', containers.args(name, state='stopped'))['changed'] is True


def _setup_killed(run_module, containers, name):
    result = run_module('ns_container', containers.args(name))
    identity = containers.identity(result['state_dir'])
    os.kill(identity.pid, signal.SIGKILL)
    assert process.wait_until_not_running(identity, 30)


@pytest.mark.parametrize('setup, overrides, expected', [
    (_setup_nothing, dict(), True),
    (_setup_started, dict(), False),
    (_setup_started, dict(env={'A': '1'}), True),
    (_setup_started, dict(root_method='pivot_root'), True),
    (_setup_killed, dict(), True),
    (_setup_stopped, dict(), True),
    (_setup_started, dict(state='stopped'), True),
    (_setup_stopped, dict(state='stopped'), False),
    (_setup_nothing, dict(state='stopped'), False),
    (_setup_started, dict(state='restarted'), True),
    (_setup_stopped, dict(state='restarted'), True),
    (_setup_started, dict(state='absent'), True),
    (_setup_stopped, dict(state='absent'), True),
    (_setup_nothing, dict(state='absent'), False),
], ids=['start', 'running-same', 'running-changed-env', 'running-changed-method', 'killed', 'stopped-start',
        'stop', 'stopped-stop', 'nothing-stop', 'restart', 'stopped-restart', 'absent', 'stopped-absent', 'nothing-absent'])
def test_check_mode_changes_nothing_and_predicts_changed(run_module, containers, rootfs, setup, overrides, expected):
    name = containers.new_name()
    setup(run_module, containers, name)
    args = containers.args(name, **overrides)
    state_dir = args['state_dir']
    before = (our_processes(rootfs), snapshot_tree(rootfs), os.path.isdir(state_dir) and snapshot_tree(state_dir))

    predicted = run_module('ns_container', args, check=True)
    assert not predicted.get('failed'), predicted.get('msg')
    assert predicted['changed'] is expected
    assert (our_processes(rootfs), snapshot_tree(rootfs), os.path.isdir(state_dir) and snapshot_tree(state_dir)) == before

    real = run_module('ns_container', args)
    assert real['changed'] is predicted['changed']
    assert real['state'] == predicted['state']


# ---- bad input ------------------------------------------------------------------------------------------------------

def _empty_rootfs_with_proc(tmp_path):
    path = tmp_path / 'empty-root'
    (path / 'proc').mkdir(parents=True)
    return str(path)


def _rootfs_without_proc(tmp_path, rootfs):
    os.rmdir(os.path.join(rootfs, 'proc'))
    return rootfs


@pytest.mark.parametrize('make_overrides, fragment', [
    (lambda tmp, root: dict(rootfs=os.path.relpath(root, '/')), 'rootfs must be an absolute path'),
    (lambda tmp, root: dict(rootfs='/'), 'rootfs is "/", the host\'s own root'),
    (lambda tmp, root: dict(rootfs=str(tmp / 'missing')), 'rootfs {tmp}/missing does not exist'),
    (lambda tmp, root: dict(rootfs=_empty_rootfs_with_proc(tmp)),
     'command: tail (searched in PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin) not found inside {tmp}/empty-root'),
    (lambda tmp, root: dict(command=['/opt/app/server']), 'command: /opt/app/server not found inside {root}'),
    (lambda tmp, root: dict(command=['tail -f /dev/null']), 'command is an argument list'),
    (lambda tmp, root: dict(hostname='web01'), 'hostname "web01" needs "uts" in namespaces'),
    (lambda tmp, root: dict(mount_proc=True, namespaces=['net', 'mount']), 'mount_proc needs "pid" in namespaces'),
    (lambda tmp, root: dict(root_method='pivot_root', namespaces=['pid', 'net']), 'root_method pivot_root needs "mount"'),
    (lambda tmp, root: dict(name='../escape'), 'name "../escape" is not a safe container name'),
    (lambda tmp, root: dict(workdir='/nowhere'), 'workdir /nowhere is not a directory inside {root}'),
    (lambda tmp, root: dict(state_dir=os.path.join(root, 'tmp', 'state')), 'lies inside rootfs'),
    (lambda tmp, root: dict(rootfs=_rootfs_without_proc(tmp, root)), 'mount_proc needs a directory {root}/proc'),
    (lambda tmp, root: dict(namespaces=['pid', 'mnt']), 'namespaces'),
    (lambda tmp, root: dict(rootfs=None), 'missing: rootfs'),
], ids=['relative-rootfs', 'rootfs-is-slash', 'missing-rootfs', 'not-a-root-fs', 'program-missing', 'command-string',
        'hostname-without-uts', 'mount-proc-without-pid', 'pivot-root-without-mount', 'unsafe-name', 'missing-workdir',
        'state-dir-in-rootfs', 'no-proc-dir', 'unknown-namespace', 'missing-rootfs-option'])
def test_bad_input_is_refused_and_changes_nothing(run_module, containers, rootfs, tmp_path, make_overrides, fragment):
    overrides = make_overrides(tmp_path, rootfs)
    args = containers.args(overrides.pop('name', containers.new_name()), **overrides)
    processes, tree = our_processes(rootfs), snapshot_tree(rootfs)
    result = run_module('ns_container', args)
    assert result.get('failed') is True and result['changed'] is False
    assert fragment.format(tmp=tmp_path, root=rootfs) in result['msg'], result['msg']
    assert not os.path.exists(args['state_dir'])
    assert our_processes(rootfs) == processes
    assert snapshot_tree(rootfs) == tree


# ---- process identity -----------------------------------------------------------------------------------------------

@pytest.fixture
def bystander():
    """An unrelated process of ours that the module must never signal."""
    child = subprocess.Popen(['sleep', '100000'])
    yield child
    if child.poll() is None:
        child.kill()
    child.wait()


def _record(args, identity):
    """A state file as the module writes it, for the spec in ``args`` and the given process."""
    spec = container.ContainerSpec.build(rootfs=args['rootfs'], command=args['command'])
    os.makedirs(args['state_dir'], exist_ok=True)
    container.write_state(args['state_dir'], {'name': args['name'], 'spec': spec.to_dict(), 'process': identity.to_dict()})


@pytest.mark.parametrize('state, expected_changed', [('started', True), ('stopped', False), ('restarted', True), ('absent', True)])
def test_a_reused_pid_is_never_signalled(run_module, containers, bystander, state, expected_changed):
    name = containers.new_name()
    args = containers.args(name, state=state)
    real = process.identity_of(bystander.pid)
    _record(args, process.ProcessIdentity(real.pid, real.start_time + 7))

    result = run_module('ns_container', args)
    assert result['changed'] is expected_changed and not result.get('failed'), result.get('msg')
    assert bystander.poll() is None and process.is_running(real), 'the module signalled a process that is not its container'
    assert result['pid'] != bystander.pid
    if state != 'absent':
        assert f'PID {real.pid} now belongs to another process (sleep, started later), which was left alone' in result['msg']
    if state in ('started', 'restarted'):
        assert running(result) and process.read_cmdline(result['pid']) == TALK_COMMAND


def test_a_zombie_is_not_a_running_container(run_module, containers):
    name = containers.new_name()
    args = containers.args(name)
    zombie = subprocess.Popen([sys.executable, '-c', 'pass'])
    try:
        identity = process.identity_of(zombie.pid)
        assert process.wait_until_not_running(identity, 30) and process.read_proc_stat(zombie.pid).state == 'Z'
        _record(args, identity)
        result = run_module('ns_container', args)
        assert result['changed'] is True and result['pid'] != zombie.pid and running(result)
    finally:
        zombie.wait()


def test_a_sigkilled_container_is_started_again(run_module, containers):
    name = containers.new_name()
    first = run_module('ns_container', containers.args(name))
    identity = containers.identity(first['state_dir'])
    os.kill(identity.pid, signal.SIGKILL)
    assert process.wait_until_not_running(identity, 30)
    back = run_module('ns_container', containers.args(name))
    assert back['changed'] is True and running(back)
    assert back['msg'] in (f'Started: its process (PID {identity.pid}) has ended.',
                           f'Started: its process (PID {identity.pid}) is a zombie.')
    assert containers.identity(back['state_dir']) != identity
    assert process.read_nspids(back['pid'])[-1] == 1


def test_an_unreadable_state_file_starts_nothing(run_module, containers, rootfs):
    name = containers.new_name()
    args = containers.args(name)
    os.makedirs(args['state_dir'])
    with open(os.path.join(args['state_dir'], 'state.json'), 'w', encoding='utf-8') as handle:
        handle.write('{"format": 1, "process": ')
    result = run_module('ns_container', args)
    assert result.get('failed') is True and 'cannot be read' in result['msg'] and 'starts nothing' in result['msg']
    assert our_processes(rootfs) == []
    assert run_module('ns_container', containers.args(name, state='absent'))['changed'] is True
    assert not os.path.exists(args['state_dir'])


def test_a_command_that_exits_at_once_fails_with_its_output(run_module, containers):
    name = containers.new_name()
    result = run_module('ns_container', containers.args(name, command=['sh', '-c', 'echo "no config found" >&2; exit 3']))
    assert result.get('failed') is True
    assert f'Could not start container {name}' in result['msg'] and '(exit code 3)' in result['msg']
    assert 'no config found' in result['msg']
    assert not process.is_running(containers.identity(result['state_dir']))


# ---- the kernel refuses -----------------------------------------------------------------------------------------------

def test_user_namespace_inside_a_chroot_is_explained(run_module, containers, tmp_path):
    """Ansible itself runs chrooted (into a bind of /, so every path still works); the kernel then refuses CLONE_NEWUSER."""
    name = containers.new_name()
    args = containers.args(name, namespaces=['pid', 'mount', 'user'])
    root = tmp_path / 'chroot'
    root.mkdir()
    # In a private mount namespace, / is bound at ROOT; sh stays outside the chroot and runs Ansible inside it
    # (unshare --root: chroot, then cd to the repository, with no new namespace).
    in_chroot = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --rbind / "$0" && "$@"',
                 str(root), 'unshare', f'--root={root}', f'--wd={REPO}']
    result = run_module('ns_container', args, prefix=in_chroot)
    assert result['_status'] == 'failed', result['_stdout']
    message = result['msg']
    assert 'This module runs inside a chroot' in message and 'EPERM' in message, message
    assert not os.path.exists(args['state_dir'])


def test_check_mode_before_the_rootfs_exists_predicts_a_start(run_module, containers, tmp_path):
    """In a --check run of the whole site, the overlay that becomes the rootfs is not mounted either."""
    name = containers.new_name()
    missing = str(tmp_path / 'merged-not-yet')
    predicted = run_module('ns_container', containers.args(name, rootfs=missing), check=True)
    assert predicted['changed'] is True and not predicted['failed']
    assert any('does not exist yet' in warning for warning in predicted.get('warnings', []))
    assert not os.path.exists(missing)
    assert not os.path.exists(containers.args(name)['state_dir'])
    real = run_module('ns_container', containers.args(name, rootfs=missing))
    assert real['failed'] is True and 'does not exist' in real['msg']


def test_check_mode_on_an_empty_merged_directory_predicts_a_start(run_module, containers, tmp_path):
    """The overlay's merged directory exists (created by an earlier site.yml or by hand) but the overlay is not mounted."""
    name = containers.new_name()
    merged = tmp_path / 'merged'
    merged.mkdir()
    args = containers.args(name, rootfs=str(merged))
    predicted = run_module('ns_container', args, check=True, diff=True)
    assert predicted['changed'] is True and not predicted['failed'] and predicted['state'] == 'started'
    assert predicted['msg'] == 'Would be started: no container was recorded.'
    assert [warning for warning in predicted['warnings'] if 'empty directory' in warning] == [
        f'rootfs {merged} is an empty directory (as an overlay\'s merged directory is before the overlay is mounted): '
        f'check mode assumes an earlier task of this run builds or mounts it; a real run fails if it is still not a root '
        f'file system.']
    assert os.listdir(merged) == [] and not os.path.exists(args['state_dir'])
    real = run_module('ns_container', args)
    assert real['failed'] is True and real['changed'] is False
    assert real['msg'] == (f'rootfs {merged} is an empty directory, not a root file system: is the overlay mounted? Build '
                           f'or mount the root file system first (for example with unboxed.lab.overlay_mount).')
    assert os.listdir(merged) == [] and not os.path.exists(args['state_dir'])
