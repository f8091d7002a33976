"""chroot_exec on a real root file system, run through Ansible against localhost (root)."""

from __future__ import annotations

import os

import pytest

from conftest import snapshot_mounts, snapshot_tree
from ansible_collections.unboxed.lab.plugins.module_utils import environ

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
