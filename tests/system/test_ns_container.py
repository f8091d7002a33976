"""ns_container with real namespaces and real processes, run through Ansible against localhost (root).

Every container a test starts is found again through its state file and killed by PID (after its
start time is checked) at teardown, together with any process still running inside the test's
own root file system.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import BIN, REPO, ModuleRunner, ansible_env, kill_module_after, snapshot_tree
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import locking
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
    first = run_module('ns_container', containers.args(name, root_method='chroot'))
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

    second = run_module('ns_container', containers.args(name, root_method='chroot'))
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
    chrooted = run_module('ns_container', containers.args(containers.new_name(), root_method='chroot'))
    pivoted = run_module('ns_container', containers.args(
        containers.new_name(), namespaces=['pid', 'net', 'mount', 'uts'], hostname='pivot',
        workdir='/app'))
    assert pivoted['changed'] is True and pivoted['root_method'] == 'pivot_root', pivoted.get('msg')
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
                     'namespaces': ['pid', 'net', 'mount'], 'hostname': None, 'mount_proc': True, 'root_method': 'pivot_root',
                     'env': {}, 'workdir': None, 'capabilities': 'all', 'no_new_privs': False, 'seccomp': 'unconfined',
                     'memory': None, 'pids_limit': None, 'cpus': None, 'cpu_shares': None, 'cgroup_parent': None,
                     'userns_remap': None, 'volumes': []}
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
    (_setup_started, dict(root_method='chroot'), True),
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
    (lambda tmp, root: dict(root_method='pivot_root', namespaces=['pid', 'net']), 'root_method pivot_root (the default) needs "mount"'),
    (lambda tmp, root: dict(name='../escape'), 'name "../escape" is not a safe container name'),
    (lambda tmp, root: dict(workdir='/nowhere'), 'workdir /nowhere is not a directory inside {root}'),
    (lambda tmp, root: dict(state_dir=os.path.join(root, 'tmp', 'state')), 'lies inside rootfs'),
    (lambda tmp, root: dict(rootfs=_rootfs_without_proc(tmp, root)), 'mount_proc needs a directory {root}/proc'),
    (lambda tmp, root: dict(namespaces=['pid', 'mnt']), 'namespaces'),
    (lambda tmp, root: dict(rootfs=None), 'rootfs is missing: state=started'),
    # Family 4 of issue 10: `$` accepted a trailing newline; a state directory "NAME\n" was created.
    (lambda tmp, root: dict(name='talk\n', state_dir=None), 'name "talk\\n" is not a safe container name'),
    (lambda tmp, root: dict(name='talk\n', state='absent', state_dir=None), 'name "talk\\n" is not a safe container name'),
    (lambda tmp, root: dict(hostname='web01\n', namespaces=['pid', 'net', 'mount', 'uts']),
     'hostname "web01\\n" is not a valid host name'),
    (lambda tmp, root: dict(env={'GREETING\n': 'hello'}), 'env has the variable name "GREETING\\n"'),
    (lambda tmp, root: dict(lock_timeout=-1), 'lock_timeout must be 0 or more seconds'),
], ids=['relative-rootfs', 'rootfs-is-slash', 'missing-rootfs', 'not-a-root-fs', 'program-missing', 'command-string',
        'hostname-without-uts', 'mount-proc-without-pid', 'pivot-root-without-mount', 'unsafe-name', 'missing-workdir',
        'state-dir-in-rootfs', 'no-proc-dir', 'unknown-namespace', 'missing-rootfs-option', 'name-newline',
        'name-newline-absent', 'hostname-newline', 'env-name-newline', 'negative-lock-timeout'])
def test_bad_input_is_refused_and_changes_nothing(run_module, containers, rootfs, tmp_path, make_overrides, fragment):
    overrides = make_overrides(tmp_path, rootfs)
    args = containers.args(overrides.pop('name', containers.new_name()), **overrides)
    processes, tree = our_processes(rootfs), snapshot_tree(rootfs)
    result = run_module('ns_container', args)
    assert result.get('failed') is True and result['changed'] is False
    assert fragment.format(tmp=tmp_path, root=rootfs) in result['msg'], result['msg']
    assert not os.path.exists(args.get('state_dir') or container.default_state_dir(args['name']))
    assert our_processes(rootfs) == processes
    assert snapshot_tree(rootfs) == tree


def _link(tmp, name, target):
    os.symlink(target, tmp / name)
    return str(tmp / name)


@pytest.mark.parametrize('make_overrides, fragment, target', [
    (lambda tmp, root: dict(state_dir=_link(tmp, 'state-link', '/media')),
     'state_dir "{tmp}/state-link" leads to /media through a symbolic link', '/media'),
    (lambda tmp, root: dict(state_dir=os.path.join(_link(tmp, 'etc-link', '/etc'), 'talk')),
     'state_dir "{tmp}/etc-link/talk" leads to /etc/talk through a symbolic link', '/etc'),
    (lambda tmp, root: dict(rootfs=_link(tmp, 'root-link', '/')),
     'rootfs "{tmp}/root-link" leads to / through a symbolic link', '/'),
    (lambda tmp, root: dict(rootfs=_link(tmp, 'root-link', '../../../../../../../../..')),
     'rootfs "{tmp}/root-link" leads to / through a symbolic link', '/'),
    (lambda tmp, root: dict(rootfs=_link(tmp, 'usr-link', '/usr')),
     'rootfs "{tmp}/usr-link" leads to /usr through a symbolic link', '/usr'),
], ids=['state-dir-to-media', 'state-dir-into-etc', 'rootfs-to-slash', 'rootfs-dotdot-to-slash', 'rootfs-to-usr'])
def test_a_symbolic_link_to_a_system_directory_is_refused(run_module, containers, rootfs, tmp_path, make_overrides,
                                                          fragment, target):
    """Family 1 of issue 10: a state_dir or rootfs that leads to a system directory through a symbolic link (paths.py
    decides, for every module). Nothing is written there, no process started."""
    overrides = make_overrides(tmp_path, rootfs)
    args = containers.args(containers.new_name(), **overrides)
    listing, processes, tree = sorted(os.listdir(target)), our_processes(rootfs), snapshot_tree(rootfs)
    for state in ('started', 'absent'):
        # rootfs matters to state=absent too: the containers started by hand there are stopped (adopt).
        result = run_module('ns_container', dict(args, state=state))
        assert result.get('failed') is True and result['changed'] is False
        assert fragment.format(tmp=tmp_path) in result['msg'], result['msg']
    assert sorted(os.listdir(target)) == listing
    assert not os.path.exists(os.path.join('/etc', args['name'])) and not os.path.exists(os.path.join('/media', args['name']))
    assert our_processes(rootfs) == processes and snapshot_tree(rootfs) == tree


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


@pytest.mark.parametrize('launch', ['plain', 'volume', 'preset'])
def test_a_command_that_exits_at_once_fails_with_its_output(run_module, containers, tmp_path, launch):
    """Whatever ran before the exec (the pivot_root stage, a volume's bind, the confinement's) is not the command's
    start: its CPU time does not count towards the command having begun (process.has_begun)."""
    extra = {'plain': {}, 'volume': {'volumes': [f'{tmp_path}:/app:ro']}, 'preset': {'preset': 'docker'}}[launch]
    name = containers.new_name()
    result = run_module('ns_container', containers.args(name, command=['sh', '-c', 'echo "no config found" >&2; exit 3'],
                                                        **extra))
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


# ---- issue 10, family 6: the overlay remounted behind the container's back -------------------------------------------

@pytest.fixture
def overlay(workdir, rootfs):
    """An overlay with the busybox root as its lower layer, mounted at MERGED; ``remount()`` mounts a new one there."""
    merged = workdir / 'merged'
    merged.mkdir()
    generations = itertools.count()

    def mount():
        number = next(generations)
        upper, work = workdir / f'upper{number}', workdir / f'work{number}'
        upper.mkdir()
        work.mkdir()
        subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o', f'lowerdir={rootfs},upperdir={upper},workdir={work}',
                        str(merged)], check=True, capture_output=True, timeout=60)
        return str(upper)

    first_upper = mount()
    return {'merged': str(merged), 'upper': first_upper, 'mount': mount}


@pytest.mark.parametrize('root_method', ['chroot', 'pivot_root'])
def test_a_container_left_on_an_unmounted_overlay_is_restarted_on_the_live_one(run_module, containers, overlay, root_method):
    merged = overlay['merged']
    args = containers.args(containers.new_name(), rootfs=merged, root_method=root_method)
    first = run_module('ns_container', args)
    assert first['changed'] is True, first.get('msg')
    old = containers.identity(first['state_dir'])
    assert os.stat(f'/proc/{old.pid}/root').st_dev == os.stat(merged).st_dev

    # Behind the module's back: the overlay is unmounted. The container runs on, on the detached overlay.
    subprocess.run(['umount', merged], check=True, capture_output=True, timeout=60)
    refused = run_module('ns_container', args)
    assert refused['failed'] is True and refused['changed'] is False
    assert f'rootfs {merged} is an empty directory' in refused['msg']
    assert f'(PID {old.pid}) still runs, on the root file system that was at {merged} when it started' in refused['msg']
    assert process.is_running(old)

    # ... and mounted again: the container still writes into the old one, which no path of the host shows.
    new_upper = overlay['mount']()
    inside(old.pid, 'sh', '-c', 'echo lost > /written-after-remount')
    assert os.path.exists(os.path.join(overlay['upper'], 'written-after-remount'))
    assert not os.path.exists(os.path.join(merged, 'written-after-remount'))

    predicted = run_module('ns_container', args, check=True)
    assert predicted['changed'] is True and not predicted.get('failed'), predicted.get('msg')
    assert predicted['msg'].startswith('Would be restarted: its root file system was remounted: '), predicted['msg']
    assert process.is_running(old)

    healed = run_module('ns_container', args)
    assert healed['changed'] is True and healed['msg'].startswith(
        f'Restarted: its root file system was remounted: the container (PID {old.pid}) still runs on the root that was '
        f'at {merged} when it started'), healed['msg']
    assert not process.is_running(old)
    new = containers.identity(healed['state_dir'])
    assert os.stat(f'/proc/{new.pid}/root').st_dev == os.stat(merged).st_dev
    inside(new.pid, 'sh', '-c', 'echo kept > /written-after-restart')
    assert os.path.exists(os.path.join(new_upper, 'written-after-restart'))
    assert run_module('ns_container', args)['changed'] is False


# ---- issue 10, family 7: the module killed at any instant -------------------------------------------------------------

def find_descendant(ancestor: int, wanted):
    """A running descendant of ``ancestor`` whose argument list ``wanted(cmdline)`` accepts, as a ProcessIdentity."""
    for pid in process.all_pids():
        cmdline = process.read_cmdline(pid)
        if cmdline and wanted(cmdline) and ancestor in process.ancestors_of(pid):
            return process.identity_of(pid)
    return None


def direct_children(pid: int) -> list[int]:
    """The children of a single-threaded process, read in one go (no scan of /proc): fast enough to catch the few
    milliseconds between the module's spawn of unshare and its record of the PID."""
    try:
        with open(f'/proc/{pid}/task/{pid}/children', encoding='ascii') as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def is_module(cmdline) -> bool:
    """The python that runs the module (AnsiballZ runs it in-process), not the sh -c around it nor its chmod."""
    return len(cmdline) == 2 and cmdline[0] == sys.executable and cmdline[1].endswith('/AnsiballZ_ns_container.py')


class Interrupter:
    """Runs ns_container through the ansible CLI and SIGKILLs the module (the AnsiballZ python) at a chosen instant."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.runs = itertools.count()

    def run(self, args, kill_after=None, kill_at_launch=None):
        """``kill_after``: seconds after the module process appeared; ``kill_at_launch``: 'unshare' (as soon as the
        module started unshare) or 'pid1' (as soon as unshare has a child); neither: no kill.
        Returns (killed, seconds from the module's appearance to its end)."""
        run_dir = self.tmp_path / f'interrupted-{next(self.runs)}'
        run_dir.mkdir()
        argv = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
                '-e', f'ansible_python_interpreter={sys.executable}', '-m', 'unboxed.lab.ns_container',
                '-a', json.dumps(args)]
        env = dict(ansible_env(str(run_dir)), ANSIBLE_REMOTE_TMP=str(run_dir / 'remote-tmp'))
        cli = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        killed = False
        try:
            module = None
            while module is None and cli.poll() is None:
                module = find_descendant(cli.pid, is_module)
                time.sleep(0.002)
            appeared = time.monotonic()
            if module is not None:
                if kill_after is not None:
                    time.sleep(kill_after)
                while kill_at_launch and process.is_running(module):
                    launchers = [pid for pid in direct_children(module.pid) if args['rootfs'] in (process.read_cmdline(pid) or [])]
                    if launchers and (kill_at_launch == 'unshare' or direct_children(launchers[0])):
                        break
                    time.sleep(0.0002)
                if kill_after is not None or kill_at_launch:
                    killed = process.send_signal(module, signal.SIGKILL)
                process.wait_until_not_running(module, 60, interval=0.002)
            ran_for = time.monotonic() - appeared
        finally:
            cli.wait(timeout=300)
        return killed, ran_for


def assert_exactly_one_tracked_container(rootfs, state_dir):
    """One launcher (unshare) and its child, the container's PID 1 running the command; it is the recorded one; the
    state directory holds the state and the log only."""
    identity = container.recorded_process(container.read_state(state_dir))
    assert process.is_running(identity)
    ours = our_processes(rootfs)
    pid1s = [pid for pid, _start, cmdline in ours if list(cmdline) == TALK_COMMAND]
    launchers = [pid for pid, _start, cmdline in ours if os.path.basename(cmdline[0]) == 'unshare']
    assert pid1s == [identity.pid] and len(launchers) == 1 and len(ours) == 2, ours
    assert process.read_proc_stat(identity.pid).ppid == launchers[0]
    assert sorted(os.listdir(state_dir)) == ['container.log', 'state.json']


def kill_our_containers(rootfs):
    for pid, start_time, _cmdline in our_processes(rootfs):
        identity = process.ProcessIdentity(pid, start_time)
        if process.send_signal(identity, signal.SIGKILL):
            process.wait_until_not_running(identity, 30)


def test_a_module_killed_at_any_instant_never_leaves_two_containers(run_module, containers, rootfs, tmp_path):
    """Killed between starting unshare and recording the PID, the module used to leave an untracked container, and the
    rerun started a second one. Kill it at instants spread across its run, and right at the spawn; rerun each time."""
    interrupter = Interrupter(tmp_path)
    calibration = containers.args(containers.new_name())
    killed, module_time = interrupter.run(calibration)  # not killed: how long a start takes
    assert not killed and module_time > 0
    assert_exactly_one_tracked_container(rootfs, calibration['state_dir'])
    kill_our_containers(rootfs)

    # Spread across the module's run (its start-up, the probe, the intent record, the spawn, the record, the wait for the
    # command), and right at the spawn: after unshare started, after it forked PID 1 - before the PID is recorded.
    instants = [dict(kill_after=module_time * fraction) for fraction in (0.05, 0.25, 0.45, 0.65, 0.85)]
    instants += [dict(kill_at_launch='unshare'), dict(kill_at_launch='pid1'), dict(kill_at_launch='pid1')]
    kills = 0
    for when in instants:
        args = containers.args(containers.new_name())
        killed, _ran = interrupter.run(args, **when)
        kills += killed
        rerun = run_module('ns_container', args)
        assert not rerun.get('failed') and rerun['state'] == 'started', (when, rerun.get('msg'))
        assert_exactly_one_tracked_container(rootfs, args['state_dir'])
        if 'kill_at_launch' in when:
            assert run_module('ns_container', args)['changed'] is False
        kill_our_containers(rootfs)
    assert kills >= len(instants) - 2, f'only {kills} of {len(instants)} runs were killed before they ended'


def orphan_of_a_killed_start(interrupter, containers, rootfs):
    """A container whose start was killed after unshare forked PID 1 and before the PID was recorded. The window is a
    few milliseconds wide: a kill that came too late (the PID recorded) is cleaned up and tried again."""
    for _attempt in range(5):
        args = containers.args(containers.new_name())
        assert interrupter.run(args, kill_at_launch='pid1')[0]
        state_record = container.read_state(args['state_dir'])
        if state_record['process'] is None:
            assert state_record['launching']['argv'][-3:] == TALK_COMMAND
            assert tuple(TALK_COMMAND) in [cmdline for _pid, _start, cmdline in our_processes(rootfs)]
            return args
        kill_our_containers(rootfs)
    raise AssertionError('5 kills at the spawn all came after the PID was recorded')


@pytest.mark.parametrize('state, status, done', [('started', 'started', 'Tracked again'), ('stopped', 'stopped', 'Stopped'),
                                                 ('absent', 'absent', 'Removed')])
def test_an_interrupted_start_is_found_by_what_it_is(run_module, containers, rootfs, tmp_path, state, status, done):
    """The container of a run killed before it recorded the PID is found - by its launch command and its log file -
    tracked again, stopped or removed, and check mode predicts it. Never a second container."""
    args = orphan_of_a_killed_start(Interrupter(tmp_path), containers, rootfs)
    orphan = [(pid, start) for pid, start, cmdline in our_processes(rootfs) if list(cmdline) == TALK_COMMAND]
    predicted = run_module('ns_container', dict(args, state=state), check=True)
    assert predicted['changed'] is True and predicted['state'] == status, predicted['msg']
    assert f'PID {orphan[0][0]} was started by an interrupted run that did not record it' in predicted['msg']
    result = run_module('ns_container', dict(args, state=state))
    assert result['changed'] is True and result['state'] == status and result['msg'].startswith(f'{done}: PID '), result['msg']
    if state == 'started':
        assert (result['pid'], containers.identity(args['state_dir']).start_time) == orphan[0]
        assert_exactly_one_tracked_container(rootfs, args['state_dir'])
        assert run_module('ns_container', args)['changed'] is False
    else:
        assert our_processes(rootfs) == []


# ---- issue 10, family 8: two runs at once ---------------------------------------------------------------------------

def modules_of(run_dir_prefix) -> list[int]:
    """The ns_container module processes (AnsiballZ) of this test's ansible runs, known by the result file in their
    environment (other runs on this machine are not ours)."""
    found = []
    for pid in process.all_pids():
        if not is_module(process.read_cmdline(pid) or []):
            continue
        try:
            with open(f'/proc/{pid}/environ', 'rb') as handle:
                environment = handle.read().decode('utf-8', 'replace')
        except OSError:
            continue
        if f'UNBOXED_RECORD_RESULTS={run_dir_prefix}' in environment:
            found.append(pid)
    return found


def test_two_runs_at_once_start_exactly_one_container(containers, rootfs, tmp_path):
    """Two ansible runs for the same container, released at the same instant: one starts it, the other finds it."""
    for attempt in range(2):
        name = containers.new_name()
        args = containers.args(name)
        runners = []
        for index in range(2):
            (tmp_path / f'concurrent-{attempt}-{index}').mkdir()
            runners.append(ModuleRunner(str(tmp_path / f'concurrent-{attempt}-{index}')))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # The test holds the container's lock until both modules run and wait for it, then lets them race.
            with locking.exclusive('container', name, note='pytest: lets two runs race'):
                futures = [pool.submit(runner, 'ns_container', args) for runner in runners]
                deadline = time.monotonic() + 120
                while len(modules_of(tmp_path / f'concurrent-{attempt}-')) < 2:
                    assert time.monotonic() < deadline, 'the two modules never ran at the same time'
                    time.sleep(0.01)
                time.sleep(0.3)
            results = [future.result() for future in futures]
        assert [result.get('failed', False) for result in results] == [False, False], [r.get('msg') for r in results]
        assert sorted(result['changed'] for result in results) == [False, True]
        assert results[0]['pid'] == results[1]['pid']
        assert_exactly_one_tracked_container(rootfs, args['state_dir'])
        kill_our_containers(rootfs)


def test_a_run_that_waits_too_long_for_the_lock_says_who_holds_it(run_module, containers, rootfs):
    name = containers.new_name()
    args = containers.args(name, lock_timeout=1)
    with locking.exclusive('container', name, note='pytest holds it'):
        predicted = run_module('ns_container', args, check=True)  # check mode reads only, takes no lock
        waited = run_module('ns_container', args)
    assert predicted['changed'] is True and not predicted.get('failed')
    assert waited['failed'] is True and waited['changed'] is False
    assert waited['msg'].startswith(f'Another run is working on container {name} (PID {os.getpid()} {name} pytest holds it) '
                                    f'and did not finish within 1 s.'), waited['msg']
    assert 'lock_timeout' in waited['msg'] and locking.lock_file_path('container', name) in waited['msg']
    assert not os.path.exists(args['state_dir']) and our_processes(rootfs) == []
    assert run_module('ns_container', args)['changed'] is True


# ---- containers started by hand: adopted when they match, replaced when they are a wrong try ----------------------

def start_by_hand(rootfs, *flags, command=tuple(TALK_COMMAND)):
    """Start a container as a student types it (unshare FLAGS chroot ROOTFS COMMAND &); (launcher PID, its PID 1)."""
    argv = ['unshare', *flags, 'chroot', rootfs, *command] if flags else ['chroot', rootfs, *command]
    launcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        forked = '--fork' in flags
        pids = [child.pid for child in process.children_of(launcher.pid)] if forked else [launcher.pid]
        for pid in pids:
            if process.read_cmdline(pid) == list(command) and os.readlink(f'/proc/{pid}/root') == rootfs:
                return launcher, pid
        time.sleep(0.02)
    raise AssertionError(f'{argv} did not start')


def right_flags(rootfs):
    return ('--fork', '--pid', '--net', f'--mount-proc={rootfs}/proc')


def test_a_matching_container_started_by_hand_is_adopted(run_module, containers, rootfs):
    launcher, pid = start_by_hand(rootfs, *right_flags(rootfs))
    name = containers.new_name()
    args = containers.args(name, root_method='chroot')

    predicted = run_module('ns_container', args, check=True, diff=True)

    assert not predicted.get('failed'), predicted.get('msg')
    assert predicted['changed'] is True and predicted['action'] == 'adopted' and predicted['pid'] == pid
    assert not os.path.exists(args['state_dir'])
    assert predicted['diff']['after']['pid'] == pid and predicted['diff']['before'] == {'state': 'absent'}

    adopted = run_module('ns_container', args, diff=True)

    assert adopted['changed'] is True and adopted['action'] == 'adopted', adopted.get('msg')
    assert adopted['pid'] == pid and adopted['replaced'] == []
    assert adopted['msg'].startswith('Adopted: no container was recorded, and PID')
    state = container.read_state(args['state_dir'])
    assert state['process'] == process.identity_of(pid).to_dict()
    assert state['launcher'] == process.identity_of(launcher.pid).to_dict() and state['adopted'] is True
    assert adopted['diff']['after']['pid'] == pid and adopted['diff']['after']['root_method'] == 'chroot'

    again = run_module('ns_container', args)
    assert again['changed'] is False and again['pid'] == pid and again['action'] is None
    # The adopted container is stopped like one the module started: it and its unshare are gone.
    assert run_module('ns_container', containers.args(name, state='absent'))['changed'] is True
    assert not process.is_running(process.identity_of(pid) or process.ProcessIdentity(pid, 0))
    assert launcher.wait(timeout=30) is not None


def test_a_wrong_container_started_by_hand_is_replaced(run_module, containers, rootfs):
    launcher, pid = start_by_hand(rootfs, '--fork', '--pid', f'--mount-proc={rootfs}/proc')  # no --net
    identity = process.identity_of(pid)
    args = containers.args(containers.new_name(), root_method='chroot')
    expected = [{'pid': pid, 'command': TALK_COMMAND, 'why': "shares the seat's network namespace (no --net)"}]

    predicted = run_module('ns_container', args, check=True)
    assert predicted['changed'] is True and predicted['action'] == 'replaced', predicted.get('msg')
    assert predicted['replaced'] == expected
    assert process.is_running(identity), 'check mode stopped a container'

    replaced = run_module('ns_container', args)

    assert replaced['changed'] is True and replaced['action'] == 'replaced', replaced.get('msg')
    assert replaced['replaced'] == expected
    assert not process.is_running(identity) and launcher.wait(timeout=30) is not None
    assert replaced['pid'] != pid and replaced['namespaces']['net']['isolated'] is True
    assert 'replaced, started by hand: PID' in replaced['msg']
    assert run_module('ns_container', args)['changed'] is False


def test_a_chroot_shell_is_no_container_and_is_left_alone(run_module, containers, rootfs):
    shell, pid = start_by_hand(rootfs, command=['sleep', '1000'])  # chroot ROOTFS sleep 1000: every seat namespace
    identity = process.identity_of(pid)
    args = containers.args(containers.new_name(), root_method='chroot')

    started = run_module('ns_container', args)

    assert started['changed'] is True and started['action'] == 'started', started.get('msg')
    assert started['replaced'] == [] and process.is_running(identity)
    assert any(f'PID {pid} (sleep)' in warning for warning in started.get('warnings', [])), started.get('warnings')
    removed = run_module('ns_container', containers.args(args['name'], state='absent', rootfs=rootfs))
    assert removed['stopped_by_hand'] == [] and process.is_running(identity)
    shell.kill()
    shell.wait(timeout=30)


def test_two_matching_containers_the_oldest_is_adopted_the_other_replaced(run_module, containers, rootfs):
    _first, oldest = start_by_hand(rootfs, *right_flags(rootfs))
    _second, newest = start_by_hand(rootfs, *right_flags(rootfs))
    newest_identity = process.identity_of(newest)
    args = containers.args(containers.new_name(), root_method='chroot')

    result = run_module('ns_container', args)

    assert result['action'] == 'adopted' and result['pid'] == oldest, result.get('msg')
    assert result['replaced'] == [{'pid': newest, 'command': TALK_COMMAND,
                                   'why': f'a second container of the same spec (PID {oldest} is adopted)'}]
    assert not process.is_running(newest_identity)
    assert [entry.pid for entry in container.processes_rooted_at(rootfs)] == [oldest]


def test_adopt_false_and_absent_with_rootfs(run_module, containers, rootfs):
    _launcher, pid = start_by_hand(rootfs, *right_flags(rootfs))
    identity = process.identity_of(pid)
    args = containers.args(containers.new_name(), root_method='chroot', adopt=False)

    started = run_module('ns_container', args)
    assert started['action'] == 'started' and started['pid'] != pid and process.is_running(identity)
    # A second start of the same container sees its own record, and the hand-made one is not another try at it.
    assert run_module('ns_container', dict(args, adopt=True))['changed'] is False

    predicted = run_module('ns_container', containers.args(args['name'], state='absent', rootfs=rootfs), check=True)
    assert predicted['stopped_by_hand'][0]['pid'] == pid and process.is_running(identity)
    removed = run_module('ns_container', containers.args(args['name'], state='absent', rootfs=rootfs))
    assert removed['changed'] is True and [entry['pid'] for entry in removed['stopped_by_hand']] == [pid]
    assert not process.is_running(identity) and container.processes_rooted_at(rootfs) == []
    assert run_module('ns_container', containers.args(args['name'], state='absent', rootfs=rootfs))['changed'] is False


# ---- several containers in one run (containers, as docker compose up) ---------------------------------------------

def items_of(containers, *names, **overrides):
    """The items of a containers task: each container's own arguments (lock_timeout is the module's)."""
    return [containers.args(name, **overrides) for name in names]


def test_containers_start_in_one_run_rerun_and_check_mode_agree(run_module, containers, rootfs):
    web, client = containers.new_name(), containers.new_name()
    items = items_of(containers, web, client)
    items[0].update(namespaces=['pid', 'net', 'mount', 'uts'], hostname='web')
    before = (our_processes(rootfs), snapshot_tree(rootfs))

    predicted = run_module('ns_container', {'containers': items}, check=True, diff=True)
    assert not predicted.get('failed') and predicted['changed'] is True, predicted.get('msg')
    assert [item['action'] for item in predicted['containers']] == ['started', 'started']
    assert (our_processes(rootfs), snapshot_tree(rootfs)) == before
    assert not any(os.path.exists(item['state_dir']) for item in items)
    assert predicted['_stdout'].count('container pytest') >= 2, predicted['_stdout']   # a diff per container

    started = run_module('ns_container', {'containers': items})
    assert not started.get('failed') and started['changed'] is True, started.get('msg')
    assert [(item['name'], item['action'], item['changed']) for item in started['containers']] == \
        [(web, 'started', True), (client, 'started', True)]
    pids = [item['pid'] for item in started['containers']]
    assert all(process.is_running(containers.identity(item['state_dir'])) for item in items)
    assert [containers.identity(item['state_dir']).pid for item in items] == pids
    assert inside(pids[0], 'hostname').strip() == 'web'
    assert started['msg'] == f'{web}: Started: no container was recorded. {client}: Started: no container was recorded.'

    for check in (True, False):
        again = run_module('ns_container', {'containers': items}, check=check)
        assert not again.get('failed') and again['changed'] is False, again.get('msg')
        assert [item['pid'] for item in again['containers']] == pids
        assert all(item['action'] is None for item in again['containers'])

    # One item changed: only that container restarts, in the same one run; check mode says exactly that.
    items[1]['env'] = {'GREETING': 'hello'}
    predicted = run_module('ns_container', {'containers': items}, check=True)
    changed = run_module('ns_container', {'containers': items})
    assert [item['changed'] for item in predicted['containers']] == [item['changed'] for item in changed['containers']] \
        == [False, True]
    assert changed['containers'][0]['pid'] == pids[0] and changed['containers'][1]['pid'] != pids[1]

    # Both removed in one run.
    gone = run_module('ns_container', {'containers': [dict(item, state='absent') for item in items]})
    assert gone['changed'] is True and [item['action'] for item in gone['containers']] == ['removed', 'removed']
    assert not any(os.path.exists(item['state_dir']) for item in items) and our_processes(rootfs) == []


@pytest.mark.parametrize('make_items, fragments', [
    (lambda containers, tmp, root: [containers.args(containers.new_name()),
                                    containers.args(containers.new_name(), hostname='client')],
     ['containers[1].hostname "client" needs "uts" in namespaces']),
    (lambda containers, tmp, root: [containers.args(containers.new_name(), rootfs='relative'),
                                    containers.args(containers.new_name(), stop_timeout=-1)],
     ['containers[0].rootfs must be an absolute path', 'containers[1].stop_timeout must be 0 or more seconds']),
    (lambda containers, tmp, root: [containers.args('pytestsame'), containers.args('pytestsame', state_dir=str(tmp / 'b'))],
     ['containers[1].name "pytestsame" is the name of containers[0] again']),
    (lambda containers, tmp, root: [containers.args(containers.new_name()),
                                    containers.args(containers.new_name(), command=None)],
     ['containers[1].command is missing: state=started']),
    # Seen only on the host: the first item is not started either (every item is read before the first change).
    (lambda containers, tmp, root: [containers.args(containers.new_name()),
                                    containers.args(containers.new_name(), command=['/opt/app/server'])],
     ['containers[1] (pytest', 'command: /opt/app/server not found inside {root}', 'No container was changed before it']),
    (lambda containers, tmp, root: [containers.args(containers.new_name()), containers.args(containers.new_name()),
                                    containers.args(containers.new_name(), workdir='/nowhere')],
     ['containers[2] (pytest', 'workdir /nowhere is not a directory inside {root}']),
], ids=['hostname-without-uts', 'two-items-two-problems', 'same-name-twice', 'missing-command', 'program-missing',
        'missing-workdir'])
def test_containers_bad_item_is_named_and_nothing_changes(run_module, containers, rootfs, tmp_path, make_items, fragments):
    items = make_items(containers, tmp_path, rootfs)
    processes, tree = our_processes(rootfs), snapshot_tree(rootfs)
    for check in (True, False):
        result = run_module('ns_container', {'containers': items}, check=check)
        assert result.get('failed') is True and result['changed'] is False, result.get('msg')
        for fragment in fragments:
            assert fragment.format(tmp=tmp_path, root=rootfs) in result['msg'], result['msg']
        assert not any(os.path.exists(item['state_dir']) for item in items)
        assert our_processes(rootfs) == processes
        assert snapshot_tree(rootfs) == tree


def test_containers_and_the_options_of_one_container_do_not_mix(run_module, containers, rootfs):
    name = containers.new_name()
    result = run_module('ns_container', {'containers': items_of(containers, name), 'rootfs': rootfs})
    assert result.get('failed') is True and 'mutually exclusive: containers|rootfs' in result['msg'], result['msg']
    result = run_module('ns_container', {'containers': [dict(containers.args(name), lock_timeout=5)]})
    assert result.get('failed') is True and 'containers.lock_timeout' in result['msg'], result['msg']
    assert our_processes(rootfs) == []


def test_containers_a_failed_start_says_what_the_items_before_it_did(run_module, containers, rootfs):
    first, second, third = containers.new_name(), containers.new_name(), containers.new_name()
    items = items_of(containers, first, second, third)
    items[1]['command'] = ['sh', '-c', 'echo "no config found" >&2; exit 3']
    result = run_module('ns_container', {'containers': items})
    assert result.get('failed') is True and result['changed'] is True and result['failed_index'] == 1, result
    assert result['msg'].startswith(f'containers[1] ({second}): Could not start container {second}'), result['msg']
    assert '(exit code 3)' in result['msg'] and 'no config found' in result['msg']
    assert f'Before it: containers[0] ({first}): Started: no container was recorded.' in result['msg']
    assert [item['name'] for item in result['containers']] == [first, second]
    assert result['containers'][0]['action'] == 'started' and result['containers'][1]['failed'] is True
    assert process.is_running(containers.identity(items[0]['state_dir']))
    assert not os.path.exists(items[2]['state_dir'])


# ---- network: docker run --network bridge -p, in the container's own run -------------------------------------------
# A seat of its own (a named network namespace, test_network's Seat): every link, address and nftables rule is made
# there, never on this machine's own network.

from test_network import Seat, http_get, nc_get, netns_run, seat  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

WEB_HTTPD = ['httpd', '-f', '-p', '80', '-h', '/www']


def seat_args(seat, name, command=tuple(TALK_COMMAND), **network):
    """One container of the seat, attached with network (its records in the seat's own directory)."""
    if name not in seat.containers:
        seat.containers.append(name)
    return {'name': name, 'rootfs': seat.rootfs, 'command': list(command), 'state_dir': seat.state_dir(name),
            'stop_timeout': STOP_TIMEOUT, 'network': dict(network, network_dir=seat.network_dir)}


def test_network_attaches_in_the_containers_own_run(seat):
    args = seat_args(seat, 'web', WEB_HTTPD, published_ports=['8080:80'])
    predicted = seat.run('ns_container', args, check=True, diff=True)
    assert not predicted['failed'] and predicted['changed'] and predicted['pid'] is None, predicted['msg']
    assert predicted['network']['address'] == '10.47.0.2/24' and predicted['network']['changed']
    assert 'unboxed0' not in seat.links() and not os.path.exists(seat.network_dir)
    # The start is predicted in the same run: no "does not run" warning from the attachment.
    assert predicted.get('warnings', []) == [], predicted['warnings']
    assert 'network unboxed0' in predicted['_stdout'] and 'container web' in predicted['_stdout']   # both diffs

    started = seat.run('ns_container', args)
    assert not started['failed'] and started['changed'] and started['action'] == 'started', started['msg']
    # The prediction's commands, with the PID it could not know.
    assert started['network']['commands'] == [line.replace(' PID', f' {started["pid"]}').replace('=PID', f'={started["pid"]}')
                                              for line in predicted['network']['commands']]
    assert started['network']['address'] == '10.47.0.2/24' and started['network']['pid'] == started['pid']
    assert started['commands'] == [started['shell_command']] + started['network']['commands']
    assert started['msg'] == 'Started: no container was recorded. Attached web to unboxed0 as 10.47.0.2/24, publishing 8080:80/tcp.'
    assert http_get(seat.name, '127.0.0.1', 8080) == 'hello from web\n'
    assert seat.links()[started['network']['host_veth']]['master'] == 'unboxed0'

    # Rerun: it runs and is attached - nothing changes, and check mode agrees.
    for check in (True, False):
        again = seat.run('ns_container', args, check=check)
        assert not again['failed'] and again['changed'] is False, again['msg']
        assert again['pid'] == started['pid'] and not again['network']['changed']

    # A changed spec restarts it: a new network namespace, plumbed again with the same address; check mode predicts it.
    changed = dict(args, env={'GREETING': 'hello'})
    predicted = seat.run('ns_container', changed, check=True)
    assert predicted['changed'] and predicted['network']['changed'], predicted['msg']
    restarted = seat.run('ns_container', changed)
    assert restarted['action'] == 'restarted' and restarted['network']['changed'], restarted['msg']
    assert restarted['network']['address'] == '10.47.0.2/24' and restarted['pid'] != started['pid']
    assert http_get(seat.name, '127.0.0.1', 8080) == 'hello from web\n'

    # state=absent frees its address, veth and port (docker rm); the bridge stays.
    for check in (True, False):
        removed = seat.run('ns_container', dict(changed, state='absent'), check=check)
        assert not removed['failed'] and removed['changed'], removed['msg']
        assert removed['msg'].endswith('Detached web from unboxed0.'), removed['msg']
    links = seat.links()
    assert 'unboxed0' in links and restarted['network']['host_veth'] not in links
    assert 'dnat' not in seat.ruleset()
    with open(os.path.join(seat.network_dir, 'bridge-unboxed0.json'), encoding='utf-8') as handle:
        assert json.load(handle)['containers'] == {}
    assert not seat.run('ns_container', dict(changed, state='absent'))['changed']


def test_containers_with_network_start_and_attach_in_one_run(seat):
    items = [seat_args(seat, 'web', WEB_HTTPD, published_ports=['8080:80']), seat_args(seat, 'client')]
    predicted = seat.run('ns_container', {'containers': items}, check=True)
    assert not predicted['failed'] and predicted['changed'], predicted['msg']
    assert [item['network']['changed'] for item in predicted['containers']] == [True, True]
    assert 'unboxed0' not in seat.links()

    started = seat.run('ns_container', {'containers': items})
    assert not started['failed'] and started['changed'], started['msg']
    # Each attachment is predicted alone (on the seat as it is): what changes is exact, the client's address not.
    assert [(item['changed'], item['network']['changed']) for item in started['containers']] == \
        [(item['changed'], item['network']['changed']) for item in predicted['containers']]
    assert [item['network']['address'] for item in started['containers']] == ['10.47.0.2/24', '10.47.0.3/24']
    fetched = seat.exec('client', nc_get('10.47.0.2', 80))
    assert fetched['stdout'].endswith('hello from web'), fetched
    assert http_get(seat.name, '127.0.0.1', 8080) == 'hello from web\n'

    for check in (True, False):
        again = seat.run('ns_container', {'containers': items}, check=check)
        assert not again['failed'] and again['changed'] is False, again['msg']

    # The client stopped (docker stop): its address is freed, the web container keeps its own.
    stopped = seat.run('ns_container', {'containers': [items[0], dict(items[1], state='stopped')]})
    assert [item['changed'] for item in stopped['containers']] == [False, True], stopped['msg']
    assert stopped['containers'][1]['network']['address'] is None
    assert [name for name in seat.links() if name.startswith('vclient-')] == []


def test_network_bad_input_is_named_and_nothing_changes(seat):
    seat.run('ns_container', seat_args(seat, 'web', WEB_HTTPD, published_ports=['8080:80']))
    cases = [
        (dict(seat_args(seat, 'other'), namespaces=['pid', 'mount']), 'network needs "net" in namespaces'),
        (seat_args(seat, 'other', published_ports=['8080']), 'network.published_ports'),
        (seat_args(seat, 'other', subnet='10.47.0.0/33'), 'network.subnet'),
        (seat_args(seat, 'other', address='10.48.0.5'), 'network.address 10.48.0.5 is outside the subnet'),
        (seat_args(seat, 'other', bridge='Bad-Name'), 'network.bridge'),
        ({'containers': [seat_args(seat, 'other'), seat_args(seat, 'more', published_ports=['70000:80'])]},
         'containers[1].network.published_ports'),
        ({'containers': [seat_args(seat, 'other', published_ports=['9090:80']),
                         seat_args(seat, 'more', published_ports=['127.0.0.1:9090:81'])]},
         'containers[1].network.published_ports: 127.0.0.1:9090:81/tcp takes the host port of 9090:80/tcp, published by containers[0]'),
    ]
    for args, fragment in cases:
        before = seat.snapshot()
        refused = seat.run('ns_container', args)
        assert refused['failed'] and fragment in refused['msg'], (args, refused['msg'])
        assert seat.snapshot() == before
        assert not os.path.exists(seat.state_dir('other')) and not os.path.exists(seat.state_dir('more'))


def test_an_attach_that_fails_says_the_container_runs(seat):
    seat.run('ns_container', seat_args(seat, 'web', WEB_HTTPD, published_ports=['8080:80']))
    refused = seat.run('ns_container', seat_args(seat, 'client', published_ports=['8080:81']))
    assert refused['failed'] and refused['changed'], refused['msg']
    assert 'published_ports: host port 8080/tcp is already published by container web' in refused['msg']
    assert f'Container client runs (PID {refused["pid"]}), but it is not attached to unboxed0' in refused['msg']
    assert process.is_running(process.identity_of(refused['pid']))
    # Fixed, the next run attaches it without restarting it.
    fixed = seat.run('ns_container', seat_args(seat, 'client', published_ports=['8081:81']))
    assert fixed['changed'] and fixed['pid'] == refused['pid'] and fixed['network']['address'] == '10.47.0.3/24'


def test_no_nft_says_install_nftables_and_the_container_runs(seat):
    """The role's retry path: nft hidden (/dev/null bound over it in a mount namespace of the run's own)."""
    nft_path = os.path.realpath(subprocess.run(['which', 'nft'], capture_output=True, text=True, check=True).stdout.strip())
    hide = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind /dev/null "$0" && exec "$@"',
            nft_path]
    args = {'containers': [seat_args(seat, 'web', WEB_HTTPD, published_ports=['8080:80']), seat_args(seat, 'client')]}
    result = seat.run_module('ns_container', args, prefix=['ip', 'netns', 'exec', seat.name] + hide)
    assert result['failed'] and 'install nftables' in result['msg'], result['msg']
    assert result['msg'].startswith('containers[0] (web): Started') and 'Container web runs (PID' in result['msg']
    assert 'unboxed0' not in seat.links()
    healed = seat.run('ns_container', args)
    assert not healed['failed'] and [item['action'] for item in healed['containers']] == [None, 'started'], healed['msg']
    assert healed['containers'][0]['network']['changed'] and http_get(seat.name, '127.0.0.1', 8080) == 'hello from web\n'


def assert_each_container_once_and_attached(seat, items):
    """Per item: one recorded, running PID 1 with its command and one unshare; one veth on the bridge; and the
    published port answering."""
    ours = our_processes(seat.rootfs)
    for item in items:
        identity = container.recorded_process(container.read_state(item['state_dir']))
        assert process.is_running(identity), item['name']
        assert [pid for pid, _start, cmdline in ours if list(cmdline) == item['command']] == [identity.pid], ours
        assert [name for name in seat.links() if name.startswith(f'v{item["name"]}-')] != [], item['name']
        assert len([name for name in seat.links() if name.startswith(f'v{item["name"]}-')]) == 1
    assert len([pid for pid, _start, cmdline in ours if os.path.basename(cmdline[0]) == 'unshare']) == len(items), ours
    assert http_get(seat.name, '127.0.0.1', 8080) == 'hello from web\n'


def test_containers_with_network_killed_at_any_instant_are_healed_by_the_next_run(seat):
    """The module's python SIGKILLed at instants spread across a first run of two containers with network (starts,
    records, bridge, veths, table): the next run must finish the job - each container once, tracked and attached, with
    the addresses in order - and the run after it change nothing."""
    items = [seat_args(seat, 'web', WEB_HTTPD, published_ports=['8080:80']), seat_args(seat, 'client')]
    args = {'containers': items}
    removal = {'containers': [dict(item, state='absent') for item in items]}

    def killed_run(delay):
        argv = ['ip', 'netns', 'exec', seat.name, os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,',
                '-c', 'local', '-e', f'ansible_python_interpreter={sys.executable}', '-m', 'unboxed.lab.ns_container',
                '-a', json.dumps(args)]
        run = subprocess.Popen(argv, cwd=REPO, env=ansible_env(seat.workdir), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        return kill_module_after(run, 'ns_container', delay)

    assert killed_run(None)         # not killed: the first run makes the bridge and the table
    assert_each_container_once_and_attached(seat, items)
    removed = seat.run('ns_container', removal)
    assert not removed['failed'], removed['msg']
    module_time = killed_run(None)  # how long a run takes that each killed one stands for (the bridge is there)
    assert module_time, module_time
    assert_each_container_once_and_attached(seat, items)
    lives, unfinished = [], []
    for fraction in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85):
        removed = seat.run('ns_container', removal)
        assert not removed['failed'], removed['msg']
        lives.append(killed_run(module_time * fraction))
        healed = seat.run('ns_container', args)
        assert not healed['failed'], (fraction, healed['msg'])
        unfinished.append(healed['changed'])
        assert [item['network']['address'] for item in healed['containers']] == ['10.47.0.2/24', '10.47.0.3/24']
        assert_each_container_once_and_attached(seat, items)
        assert seat.run('ns_container', args)['changed'] is False, fraction
    # The early kills interrupted the run (the next one had work left); the last ones may have come too late.
    assert all(unfinished[:2]), (unfinished, lives, module_time)
    print('module time', module_time, 'killed after', lives, 'next run changed', unfinished)


def test_two_runs_of_containers_in_opposite_orders_neither_wait_for_each_other(containers, rootfs, tmp_path):
    """Two ansible runs at once, [x, y] and [y, x]. The test holds the lock of the first name (in sorted order) until both
    modules wait, then lets them race: a module that took its own first lock (y) and then waited for x would deadlock
    with the other (until lock_timeout); locks taken in one order (by name) never do. One run starts both, the other
    finds both running. Three times: the race that would deadlock is won by either run."""
    for attempt in range(3):
        items = items_of(containers, containers.new_name(), containers.new_name())
        first_lock = min(item['name'] for item in items)
        runners = []
        for index in range(2):
            (tmp_path / f'opposite-{attempt}-{index}').mkdir()
            runners.append(ModuleRunner(str(tmp_path / f'opposite-{attempt}-{index}')))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            with locking.exclusive('container', first_lock, note='pytest: lets two runs race'):
                futures = [pool.submit(runner, 'ns_container', {'containers': order, 'lock_timeout': 10})
                           for runner, order in zip(runners, (items, items[::-1]))]
                deadline = time.monotonic() + 120
                while len(modules_of(tmp_path / f'opposite-{attempt}-')) < 2:
                    assert time.monotonic() < deadline, 'the two modules never ran at the same time'
                    time.sleep(0.01)
                time.sleep(0.3)
            released = time.monotonic()
            results = [future.result() for future in futures]
            waited = time.monotonic() - released
        assert [result.get('failed', False) for result in results] == [False, False], [r.get('msg') for r in results]
        assert sorted(result['changed'] for result in results) == [False, True]
        assert waited < 10, waited
        pids = {item['name']: item['pid'] for item in results[0]['containers']}
        assert pids == {item['name']: item['pid'] for item in results[1]['containers']}
        for item in items:
            assert containers.identity(item['state_dir']).pid == pids[item['name']]
        kill_our_containers(rootfs)
