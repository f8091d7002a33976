"""overlay_mount on real overlay mounts, run through Ansible against localhost (root)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import snapshot_mounts, snapshot_tree
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

pytestmark = pytest.mark.root


@pytest.fixture
def layers(workdir):
    base = workdir / 'overlay'
    (base / 'lower1-base' / 'etc').mkdir(parents=True)
    (base / 'lower1-base' / 'etc' / 'debian_version').write_text('12.0\n')
    (base / 'lower2-file').mkdir()
    (base / 'lower2-file' / 'file01.txt').write_text('Texto\n')
    return base


def talk_args(base, **overrides):
    args = {'path': f'{base}/merged', 'lowerdirs': [f'{base}/lower2-file', f'{base}/lower1-base'],
            'upperdir': f'{base}/upper', 'workdir': f'{base}/work'}
    args.update(overrides)
    return args


def live(path):
    return mountinfo.find_mount(str(path))


def test_check_mode_predicts_the_mount_and_changes_nothing(run_module, layers):
    mounts_before, tree_before = snapshot_mounts(layers), snapshot_tree(layers)
    predicted = run_module('overlay_mount', talk_args(layers), check=True)
    assert predicted['changed'] is True and predicted['mounted'] is True
    assert snapshot_mounts(layers) == mounts_before
    assert snapshot_tree(layers) == tree_before          # not even the missing directories were created

    real = run_module('overlay_mount', talk_args(layers))
    assert real['changed'] is predicted['changed']
    assert real['actions'] == predicted['actions']


def test_mounts_the_talks_overlay_once(run_module, layers):
    first = run_module('overlay_mount', talk_args(layers))
    assert first['changed'] is True and not first.get('failed')
    entry = live(layers / 'merged')
    assert entry.fstype == 'overlay'
    assert entry.option('lowerdir') == f'{layers}/lower2-file:{layers}/lower1-base'
    assert (layers / 'merged' / 'file01.txt').read_text() == 'Texto\n'
    assert (layers / 'merged' / 'etc' / 'debian_version').exists()
    assert first['command'] == (f'mount -t overlay overlay -o lowerdir={layers}/lower2-file:{layers}/lower1-base,'
                                f'upperdir={layers}/upper,workdir={layers}/work {layers}/merged')

    mounts = snapshot_mounts(layers)
    second = run_module('overlay_mount', talk_args(layers))
    assert second['changed'] is False
    assert run_module('overlay_mount', talk_args(layers), check=True)['changed'] is False
    assert snapshot_mounts(layers) == mounts


def test_a_write_in_merged_lands_in_upper_only(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    (layers / 'merged' / 'file02.txt').write_text('nuevo\n')
    assert (layers / 'upper' / 'file02.txt').read_text() == 'nuevo\n'
    assert not (layers / 'lower1-base' / 'file02.txt').exists()
    assert not (layers / 'lower2-file' / 'file02.txt').exists()


def test_diff_shows_before_and_after(run_module, layers):
    result = run_module('overlay_mount', talk_args(layers), diff=True)
    mount_diff = result['diff'][0]
    assert mount_diff['before'] == {'mounted': False}
    assert mount_diff['after']['mounted'] is True
    assert mount_diff['after']['lowerdirs'] == [f'{layers}/lower2-file', f'{layers}/lower1-base']
    header = f'overlay at {layers}/merged'
    shown = result['_stdout']
    assert f'--- before: {header}\n+++ after: {header}\n' in shown
    assert '\n-    mounted: false\n' in shown and '\n+    mounted: true\n' in shown
    assert f'\n+    - {layers}/lower2-file\n+    - {layers}/lower1-base\n' in shown
    assert f'\n+    upperdir: {layers}/upper\n+    workdir: {layers}/work\n' in shown


def test_changed_layers_remount_and_keep_the_upper_layer(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    (layers / 'merged' / 'mine.txt').write_text('student work\n')
    (layers / 'lower3').mkdir()
    (layers / 'lower3' / 'file03.txt').write_text('tres\n')
    new_order = [f'{layers}/lower3', f'{layers}/lower2-file', f'{layers}/lower1-base']

    predicted = run_module('overlay_mount', talk_args(layers, lowerdirs=new_order), check=True, diff=True)
    assert predicted['changed'] is True
    assert live(layers / 'merged').option('lowerdir') == f'{layers}/lower2-file:{layers}/lower1-base'

    result = run_module('overlay_mount', talk_args(layers, lowerdirs=new_order), diff=True)
    assert result['changed'] is True
    assert result['diff'][0]['before']['lowerdirs'] == [f'{layers}/lower2-file', f'{layers}/lower1-base']
    assert result['diff'][0]['after']['lowerdirs'] == new_order
    assert live(layers / 'merged').option('lowerdir') == ':'.join(new_order)
    assert (layers / 'merged' / 'file03.txt').read_text() == 'tres\n'
    assert (layers / 'merged' / 'mine.txt').read_text() == 'student work\n'
    assert run_module('overlay_mount', talk_args(layers, lowerdirs=new_order))['changed'] is False


def test_option_hidden_at_kernel_default_is_idempotent(run_module, layers):
    args = talk_args(layers, options=['index=off', 'noatime'])
    assert run_module('overlay_mount', args)['changed'] is True
    assert live(layers / 'merged').option('noatime') is True
    assert run_module('overlay_mount', args)['changed'] is False
    assert run_module('overlay_mount', talk_args(layers, options=['index=off', 'noatime', 'redirect_dir=on']))['changed'] is True
    assert live(layers / 'merged').option('redirect_dir') == 'on'


def test_read_only_overlay_from_two_lowers(run_module, layers):
    args = {'path': f'{layers}/merged', 'lowerdirs': [f'{layers}/lower2-file', f'{layers}/lower1-base']}
    assert run_module('overlay_mount', args)['changed'] is True
    assert live(layers / 'merged').read_only
    assert run_module('overlay_mount', args)['changed'] is False


def test_unmounted_keeps_every_file_and_is_idempotent(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    (layers / 'merged' / 'mine.txt').write_text('student work\n')
    unmount = {'path': f'{layers}/merged', 'state': 'unmounted'}
    predicted = run_module('overlay_mount', unmount, check=True)
    assert predicted['changed'] is True and live(layers / 'merged') is not None

    result = run_module('overlay_mount', unmount)
    assert result['changed'] is True and result['mounted'] is False
    assert live(layers / 'merged') is None
    tree = snapshot_tree(layers)
    assert (layers / 'upper' / 'mine.txt').read_text() == 'student work\n'
    assert (layers / 'lower2-file' / 'file01.txt').read_text() == 'Texto\n'
    assert run_module('overlay_mount', unmount)['changed'] is False
    assert snapshot_tree(layers) == tree


def test_unmounted_behind_the_modules_back_is_mounted_again(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    subprocess.run(['umount', f'{layers}/merged'], check=True)
    result = run_module('overlay_mount', talk_args(layers))
    assert result['changed'] is True and result['actions'] == ['mount']
    assert live(layers / 'merged') is not None


def test_busy_mount_names_the_process_holding_it(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    holder = subprocess.Popen(['sleep', '300'], cwd=f'{layers}/merged')
    try:
        mounts = snapshot_mounts(layers)
        result = run_module('overlay_mount', {'path': f'{layers}/merged', 'state': 'unmounted'})
        assert result.get('failed') is True
        assert f'PID {holder.pid} (sleep: cwd)' in result['msg']
        assert 'busy' in result['msg']
        assert snapshot_mounts(layers) == mounts
        assert holder.poll() is None                         # never killed: it is the user's process
    finally:
        holder.kill()
        holder.wait()


def test_persist_keeps_one_fstab_line_and_removes_it_again(run_module, layers, tmp_path):
    fstab = tmp_path / 'fstab'
    fstab.write_text('UUID=abc / ext4 defaults 0 1\n')
    args = talk_args(layers, persist=True, fstab=str(fstab))
    first = run_module('overlay_mount', args, diff=True)
    assert first['changed'] is True
    lines = fstab.read_text().splitlines()
    assert lines[0] == 'UUID=abc / ext4 defaults 0 1'
    assert lines[1].startswith(f'overlay {layers}/merged overlay lowerdir=')
    assert any(diff.get('before_header') == str(fstab) for diff in first['diff'])
    assert run_module('overlay_mount', args)['changed'] is False
    removed = run_module('overlay_mount', talk_args(layers, persist=False, fstab=str(fstab)))
    assert removed['changed'] is True
    assert fstab.read_text() == 'UUID=abc / ext4 defaults 0 1\n'
    assert live(layers / 'merged') is not None


def _assert_refused(run_module, layers, args, fragment):
    mounts_before, tree_before = snapshot_mounts(layers), snapshot_tree(layers)
    result = run_module('overlay_mount', args)
    assert result.get('failed') is True, result
    assert fragment in result['msg'], result['msg']
    assert snapshot_mounts(layers) == mounts_before
    assert snapshot_tree(layers) == tree_before


@pytest.mark.parametrize('make_args, fragment', [
    (lambda b: talk_args(b, path='overlay/merged'), 'path must be an absolute path'),
    (lambda b: talk_args(b, path='/'), 'system directory'),
    (lambda b: talk_args(b, lowerdirs=[f'{b}/lower:2', f'{b}/lower1-base']), 'contains a colon'),
    (lambda b: talk_args(b, workdir=None), 'upperdir is set but workdir is empty'),
    (lambda b: {key: value for key, value in talk_args(b).items() if key != 'workdir'},
     'parameters are required together: upperdir, workdir'),
    (lambda b: {'path': f'{b}/merged'}, 'state is mounted but all of the following are missing: lowerdirs'),
    (lambda b: talk_args(b, workdir=f'{b}/upper/work'), 'inside one another'),
    (lambda b: talk_args(b, lowerdirs=[f'{b}/missing', f'{b}/lower1-base'], create_dirs=False), 'does not exist and create_dirs is false'),
    (lambda b: talk_args(b, lowerdirs=[f'{b}/lower2-file/file01.txt', f'{b}/lower1-base']), 'is not a directory'),
    (lambda b: talk_args(b, options=['upperdir=/tmp/x']), 'use the upperdir option'),
])
def test_bad_input_is_refused_and_changes_nothing(run_module, layers, make_args, fragment):
    _assert_refused(run_module, layers, make_args(layers), fragment)


def test_upper_layer_on_an_overlay_is_refused_with_advice(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    inner = f'{layers}/merged/nested'
    os.mkdir(inner)
    args = {'path': f'{layers}/m2', 'lowerdirs': [f'{layers}/lower1-base'], 'upperdir': f'{inner}/upper', 'workdir': f'{inner}/work'}
    _assert_refused(run_module, layers, args, 'on a overlay file system')
    assert 'tmpfs' in run_module('overlay_mount', args)['msg']


def test_upper_and_work_on_different_mounts_are_refused(run_module, layers):
    (layers / 'scratch').mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', str(layers / 'scratch')], check=True)
    args = talk_args(layers, workdir=f'{layers}/scratch/work')
    _assert_refused(run_module, layers, args, 'are on different mounts')


def test_a_foreign_file_system_at_path_is_left_alone(run_module, layers):
    (layers / 'merged').mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', str(layers / 'merged')], check=True)
    _assert_refused(run_module, layers, talk_args(layers), 'is a mount point of a tmpfs file system')
    _assert_refused(run_module, layers, {'path': f'{layers}/merged', 'state': 'unmounted'}, 'not an overlay')
    assert live(layers / 'merged').fstype == 'tmpfs'


def test_a_mount_the_kernel_refuses_says_so_and_removes_the_directories_it_made(run_module, layers):
    tree = snapshot_tree(layers)
    result = run_module('overlay_mount', talk_args(layers, options=['unboxed_no_such_option']))
    assert result['failed'] is True and result['changed'] is False
    assert result['msg'].startswith(f'Could not mount the overlay at {layers}/merged: mount: {layers}/merged: '), result['msg']
    program, shown = result['cmd'].split(' ', 1)
    assert program.endswith('/mount') and shown.startswith('-t overlay overlay -o lowerdir=') and result['rc'] != 0
    assert 'unboxed_no_such_option' in result['cmd']
    assert snapshot_tree(layers) == tree            # upper, work and merged were made by this run, and removed again
    assert live(layers / 'merged') is None


def test_an_unmount_of_a_busy_overlay_names_the_process(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    holder = subprocess.Popen(['sleep', '600'], cwd=f'{layers}/merged')
    try:
        result = run_module('overlay_mount', {'path': f'{layers}/merged', 'state': 'unmounted'})
        assert result['failed'] is True
        assert result['msg'].startswith(f'Could not unmount {layers}/merged: umount: {layers}/merged: target is busy. '
                                        f'used by '), result['msg']
        assert f'PID {holder.pid} (sleep: cwd)' in result['msg']
        assert result['msg'].endswith('Stop those processes (for a container: unboxed.lab.ns_container state=stopped) '
                                      'or unmount what is inside first.')
        assert {'pid': holder.pid, 'comm': 'sleep', 'uses': ['cwd']} in result['holders']
        assert live(layers / 'merged').fstype == 'overlay'
    finally:
        holder.kill()
        holder.wait()
    assert run_module('overlay_mount', {'path': f'{layers}/merged', 'state': 'unmounted'})['changed'] is True
