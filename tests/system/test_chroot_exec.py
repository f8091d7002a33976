"""chroot_exec on a real root file system, run through Ansible against localhost (root)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, REPO, ansible_env, descendants, module_pids, snapshot_mounts, snapshot_tree
from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.modules import chroot_exec

pytestmark = pytest.mark.root


def test_chroot_is_not_isolation_host_processes_and_interfaces_are_visible(run_module, busybox_rootfs):
    mounts = snapshot_mounts(busybox_rootfs)
    ps = run_module('chroot_exec', {'root': busybox_rootfs, 'argv': ['ps'], 'mounts': ['proc']})
    assert ps['rc'] == 0 and ps['changed'] is True
    # The test runner itself is a host process: chroot does not hide it.
    assert any(line.split()[0] == str(os.getpid()) for line in ps['stdout_lines'][1:])
    assert ps['command'] == (f'mount -t proc proc {busybox_rootfs}/proc; env -i HOME=/root PATH={environ.DEFAULT_PATH} '
                             f'chroot {busybox_rootfs} ps; umount {busybox_rootfs}/proc')
    assert snapshot_mounts(busybox_rootfs) == mounts        # /proc was unmounted again

    ip = run_module('chroot_exec', {'root': busybox_rootfs, 'argv': ['ip', 'addr']})
    for interface in os.listdir('/sys/class/net'):
        assert f': {interface}' in ip['stdout']


def test_commands_run_in_one_task_in_order_and_the_mounts_come_down_once(run_module, busybox_rootfs):
    mounts = snapshot_mounts(busybox_rootfs)
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'commands': [['ps'], ['ip', 'addr']], 'mounts': ['proc']})
    assert result['rc'] == 0 and [entry['cmd'] for entry in result['results']] == [['ps'], ['ip', 'addr']]
    ps, ip = result['results']
    assert any(line.split()[0] == str(os.getpid()) for line in ps['stdout_lines'][1:])
    for interface in os.listdir('/sys/class/net'):
        assert f': {interface}' in ip['stdout']
    assert result['stdout'] == ip['stdout'] and result['cmd'] == ['ip', 'addr']
    assert result['command'] == (f'mount -t proc proc {busybox_rootfs}/proc; '
                                 f'env -i HOME=/root PATH={environ.DEFAULT_PATH} chroot {busybox_rootfs} ps; '
                                 f'env -i HOME=/root PATH={environ.DEFAULT_PATH} chroot {busybox_rootfs} ip addr; '
                                 f'umount {busybox_rootfs}/proc')
    assert snapshot_mounts(busybox_rootfs) == mounts


def test_commands_stop_at_the_first_failure_and_name_it(run_module, busybox_rootfs):
    mounts = snapshot_mounts(busybox_rootfs)
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'commands': [['true'], ['false'], ['touch', '/never']],
                                        'mounts': ['proc']})
    assert result['failed'] is True and result['rc'] == 1
    assert 'commands[1] (false)' in result['msg'] and len(result['results']) == 2
    assert not os.path.exists(os.path.join(busybox_rootfs, 'never'))
    assert snapshot_mounts(busybox_rootfs) == mounts


def test_commands_with_a_string_item_are_refused_naming_it(run_module, busybox_rootfs):
    tree = snapshot_tree(busybox_rootfs)
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'commands': ['ps ax']})
    assert result['failed'] is True and 'commands[0] must be an argument list' in result['msg']
    assert snapshot_tree(busybox_rootfs) == tree


def test_shell_form_runs_inside_and_creates_makes_it_idempotent(run_module, busybox_rootfs):
    host_had_file = os.path.exists('/file01.txt')
    args = {'root': busybox_rootfs, 'cmd': 'echo "Texto" > /file01.txt', 'creates': '/file01.txt'}
    predicted = run_module('chroot_exec', args, check=True)
    assert predicted['changed'] is True and not os.path.exists(f'{busybox_rootfs}/file01.txt')
    assert predicted['msg'] == f"Command would have run if not in check mode ('/file01.txt' does not exist inside {busybox_rootfs})"
    first = run_module('chroot_exec', args)
    assert first['changed'] is True and first['cmd'] == ['/bin/sh', '-c', 'echo "Texto" > /file01.txt']
    with open(f'{busybox_rootfs}/file01.txt', encoding='utf-8') as handle:
        assert handle.read() == 'Texto\n'
    assert os.path.exists('/file01.txt') == host_had_file   # the redirection happened inside the root
    second = run_module('chroot_exec', args)
    assert second['changed'] is False and 'exists inside' in second['msg']
    assert run_module('chroot_exec', args, check=True)['changed'] is False


def test_removes_skips_when_the_path_is_missing_inside(run_module, busybox_rootfs):
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'argv': ['rm', '/gone'], 'removes': '/gone'})
    assert result['changed'] is False and 'does not exist inside' in result['msg']


def test_check_mode_without_creates_skips_and_changes_nothing(run_module, busybox_rootfs):
    tree, mounts = snapshot_tree(busybox_rootfs), snapshot_mounts(busybox_rootfs)
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'argv': ['touch', '/new'], 'mounts': ['proc']}, check=True)
    assert result['_status'] == 'skipped'
    assert snapshot_tree(busybox_rootfs) == tree and snapshot_mounts(busybox_rootfs) == mounts


def test_chdir_env_and_stdin_reach_the_command(run_module, busybox_rootfs):
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'cmd': 'pwd; echo "$GREETING $HOME"; cat', 'chdir': '/etc',
                                        'env': {'GREETING': 'hola mundo'}, 'stdin': 'from stdin'})
    assert result['stdout_lines'] == ['/etc', 'hola mundo /root', 'from stdin']
    assert result['command'] == (f'env -i \'GREETING=hola mundo\' HOME=/root PATH={environ.DEFAULT_PATH} chroot {busybox_rootfs} '
                                 f'/bin/sh -c \'cd -- "$1" || exit 127; shift; exec "$@"\' unboxed-chdir /etc '
                                 f'/bin/sh -c \'pwd; echo "$GREETING $HOME"; cat\'')


def test_environment_is_clean_not_the_modules(run_module, busybox_rootfs, monkeypatch):
    # The local connection hands this variable to the module process; the chrooted command must not see it.
    monkeypatch.setenv('UNBOXED_HOST_ONLY', 'leaked')
    monkeypatch.setenv('TERM', 'xterm')
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'argv': ['env']})
    assert sorted(result['stdout_lines']) == ['HOME=/root', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']


def test_a_failing_command_fails_and_still_unmounts(run_module, busybox_rootfs):
    mounts = snapshot_mounts(busybox_rootfs)
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'cmd': 'echo oops >&2; exit 3', 'mounts': ['proc', 'sys', 'dev']})
    assert result['failed'] is True and result['rc'] == 3 and result['stderr'] == 'oops'
    assert snapshot_mounts(busybox_rootfs) == mounts


def test_existing_mount_is_reused_and_left_in_place(run_module, busybox_rootfs):
    import subprocess
    subprocess.run(['mount', '-t', 'proc', 'proc', f'{busybox_rootfs}/proc'], check=True)
    mounts = snapshot_mounts(busybox_rootfs)
    run_module('chroot_exec', {'root': busybox_rootfs, 'argv': ['true'], 'mounts': ['proc']})
    assert snapshot_mounts(busybox_rootfs) == mounts     # the user's own /proc mount stays


@pytest.mark.parametrize('make_args, fragment', [
    (lambda r: {'root': r, 'argv': ['nosuchprogram']}, 'nosuchprogram (searched in PATH='),
    (lambda r: {'root': r + '-missing', 'argv': ['ls']}, 'does not exist: build or mount the root file system first'),
    (lambda r: {'root': r, 'argv': ['ls'], 'cmd': 'ls'}, 'parameters are mutually exclusive: argv|cmd'),
    (lambda r: {'root': r, 'chdir': '/etc'}, 'one of the following is required: argv, cmd'),
    (lambda r: {'root': r, 'argv': [], 'mounts': ['proc']}, 'argv is empty'),
    (lambda r: {'root': r, 'argv': ['ls'], 'chdir': '/no/such/dir'}, 'is not a directory inside'),
    (lambda r: {'root': r, 'argv': ['ls'], 'mounts': ['proc'], 'env': {'1BAD': 'x'}}, 'not a valid name'),
    (lambda r: {'root': 'relative/root', 'argv': ['ls']}, 'root must be an absolute path'),
])
def test_bad_input_is_refused_and_changes_nothing(run_module, busybox_rootfs, make_args, fragment):
    tree, mounts = snapshot_tree(busybox_rootfs), snapshot_mounts(busybox_rootfs)
    result = run_module('chroot_exec', make_args(busybox_rootfs))
    assert result['failed'] is True and fragment in result['msg'], result['msg']
    assert snapshot_tree(busybox_rootfs) == tree and snapshot_mounts(busybox_rootfs) == mounts


def test_shell_form_without_a_shell_in_the_root_says_so(run_module, workdir):
    root = workdir / 'empty-root'
    root.mkdir()
    result = run_module('chroot_exec', {'root': str(root), 'cmd': 'echo hi'})
    assert result['failed'] is True
    assert result['msg'].startswith(f'/bin/sh not found inside {root}')


def test_check_mode_before_the_root_exists_predicts_a_run(run_module, workdir):
    missing = str(workdir / 'not-built-yet')
    skipped = run_module('chroot_exec', {'root': missing, 'argv': ['ps', 'ax']}, check=True)
    assert skipped['_status'] == 'skipped'
    predicted = run_module('chroot_exec', {'root': missing, 'cmd': 'echo "Texto" > /file01.txt', 'creates': '/file01.txt'}, check=True)
    assert predicted['changed'] is True and not predicted['failed']
    assert any('does not exist yet' in warning for warning in predicted.get('warnings', []))
    assert not os.path.exists(missing)
    assert run_module('chroot_exec', {'root': missing, 'argv': ['ps', 'ax']})['failed'] is True


# --- Family 1: symbolic links out of the root, and a root that is one ------------------------------------------------


def mount_points():
    """Every mount point with how many mounts are stacked there: a new mount anywhere on the host shows."""
    counts = {}
    for line in snapshot_mounts():
        point = mountinfo.parse_mountinfo_line(line).mount_point
        counts[point] = counts.get(point, 0) + 1
    return counts


@pytest.mark.parametrize('target, resolved', [('/', '/'), ('/etc', '/etc'), ('/usr/lib', '/usr/lib')])
def test_a_root_that_leads_to_a_system_directory_runs_nothing(run_module, workdir, target, resolved):
    (workdir / 'link').symlink_to(target)
    marker = os.path.join(resolved, 'unboxed-chroot-marker')
    result = run_module('chroot_exec', {'root': str(workdir / 'link'), 'cmd': 'touch /unboxed-chroot-marker'})
    assert result['failed'] is True and result.get('rc') is None
    assert f'"{workdir}/link" leads to {resolved} through a symbolic link' in result['msg'], result['msg']
    assert not os.path.exists(marker)


@pytest.mark.parametrize('name, link, fragment', [
    ('dev', '/dev', 'is a symbolic link (to /dev)'),
    ('proc', '../../../../../../../../..', 'is a symbolic link (to ../../'),
    ('sys', 'tmp', 'is a symbolic link (to tmp)'),           # even a link that stays inside
])
def test_a_mount_target_that_is_a_link_is_refused_and_nothing_mounted(run_module, busybox_rootfs, name, link, fragment):
    shutil.rmtree(f'{busybox_rootfs}/{name}')
    os.symlink(link, f'{busybox_rootfs}/{name}')
    tree, points = snapshot_tree(busybox_rootfs), mount_points()
    result = run_module('chroot_exec', {'root': busybox_rootfs, 'cmd': 'touch /ran', 'mounts': [name]})
    assert result['failed'] is True and result.get('rc') is None
    assert f'mounts includes {name}, but {busybox_rootfs}/{name} {fragment}' in result['msg'], result['msg']
    assert 'mount follows it on the host' in result['msg']
    assert snapshot_tree(busybox_rootfs) == tree
    assert {point: count for point, count in mount_points().items() if point in ('/dev', '/proc', '/sys', '/')} == \
        {point: count for point, count in points.items() if point in ('/dev', '/proc', '/sys', '/')}


# --- Families 7 and 8: mounts shared by runs at once, and left by a killed run -----------------------------------------


def chroot_run_async(tmp_dir, args):
    argv = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
            '-e', f'ansible_python_interpreter={sys.executable}', '-m', 'unboxed.lab.chroot_exec', '-a', json.dumps(args)]
    record = os.path.join(tmp_dir, f'record-{time.monotonic_ns()}.jsonl')
    proc = subprocess.Popen(argv, cwd=REPO, env=ansible_env(tmp_dir, record_to=record), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, record


def finished(proc, record):
    output = proc.communicate(timeout=120)[0]
    with open(record, encoding='utf-8') as handle:
        return json.loads(handle.readline())['result'], output


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


def test_two_runs_on_one_root_never_unmount_what_the_other_uses(run_module, busybox_rootfs, tmp_path):
    mounts = snapshot_mounts(busybox_rootfs)
    root = busybox_rootfs

    def mounted(name):
        return mountinfo.find_mount(f'{root}/{name}') is not None

    # The first run mounts proc and waits; the second starts while proc is mounted, also needs it (and sys), and
    # is still in its command when the first one ends.
    first, first_record = chroot_run_async(str(tmp_path), {
        'root': root, 'mounts': ['proc'], 'cmd': 'while [ ! -e /first-may-end ]; do sleep 0.1; done'})
    wait_for(lambda: mounted('proc'))
    second, second_record = chroot_run_async(str(tmp_path), {
        'root': root, 'mounts': ['proc', 'sys'],
        'cmd': 'touch /second-started; while [ ! -e /second-may-end ]; do sleep 0.1; done; '
               'test -r /proc/self/stat && test -d /sys/kernel && echo still-mounted'})
    wait_for(lambda: os.path.exists(f'{root}/second-started'))
    open(f'{root}/first-may-end', 'w', encoding='utf-8').close()
    result, output = finished(first, first_record)
    assert result['rc'] == 0, output
    assert mounted('proc') and mounted('sys')          # the second run still uses them: the first one left them
    open(f'{root}/second-may-end', 'w', encoding='utf-8').close()
    result, output = finished(second, second_record)
    assert result['rc'] == 0 and result['stdout'] == 'still-mounted', output
    assert snapshot_mounts(root) == mounts
    assert not os.path.exists(chroot_exec.users_file(root))


def test_mounts_left_by_a_killed_run_are_taken_down_by_the_next_run(run_module, busybox_rootfs, tmp_path):
    mounts = snapshot_mounts(busybox_rootfs)
    proc, _record = chroot_run_async(str(tmp_path), {'root': busybox_rootfs, 'cmd': 'sleep 60', 'mounts': ['proc', 'sys']})
    wait_for(lambda: mountinfo.find_mount(f'{busybox_rootfs}/sys') is not None)
    module = module_pids(proc.pid, 'chroot_exec')
    assert len(module) == 1
    command = descendants(module[0])
    assert command                                  # the chroot command, sleeping
    for pid in module + command:                    # the module and its command, as a kill -9 of the run would
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert snapshot_mounts(busybox_rootfs) != mounts           # the killed run left proc and sys mounted
    healed = run_module('chroot_exec', {'root': busybox_rootfs, 'argv': ['true']})
    assert healed['rc'] == 0
    assert snapshot_mounts(busybox_rootfs) == mounts
    assert not os.path.exists(chroot_exec.users_file(busybox_rootfs))
