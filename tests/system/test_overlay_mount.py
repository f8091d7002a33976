"""overlay_mount on real overlay mounts, run through Ansible against localhost (root)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import BIN, REPO, ModuleRunner, ansible_env, make_busybox_rootfs, snapshot_mounts, snapshot_tree
from ansible_collections.unboxed.lab.plugins.module_utils import locking, mountinfo, process

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


# ---------------------------------------------------------------------------------------------------------------
# Issue 10: what the kernel does to the request, validation before action, this mount's kernel reason, state changed
# behind the module's back, interrupted runs and concurrent runs - all on real mounts.

def _one_overlay_at(path):
    """mountinfo lines that mount at ``path`` exactly: one when mounted once, never two stacked."""
    return [line for line in snapshot_mounts(path) if mountinfo.parse_mountinfo_line(line).mount_point == str(path)]


@pytest.mark.parametrize('make_args, fragment', [
    # "l\1" beside "l1": overlayfs would unescape the first and mount the second while mountinfo shows the first
    (lambda b: talk_args(b, lowerdirs=[f'{b}/l\\1', f'{b}/lower1-base']), 'contains a backslash'),
    (lambda b: talk_args(b, upperdir=f'{b}/up\\per'), 'upperdir "'),
    (lambda b: talk_args(b, workdir=f'{b}/wo\\rk'), 'workdir "'),
    (lambda b: talk_args(b, lowerdirs=[f'{b}/a"b', f'{b}/lower1-base']), 'contains a double quote'),
    (lambda b: talk_args(b, options=['lowerdir+=/tmp']), 'adds a layer: give every lower layer in lowerdirs'),
    (lambda b: talk_args(b, options=['datadir+=/tmp']), 'adds a layer'),
])
def test_what_the_kernel_would_reinterpret_is_refused_by_name(run_module, layers, make_args, fragment):
    (layers / 'l\\1').mkdir()
    (layers / 'l1').mkdir()
    (layers / 'l1' / 'which').write_text('l1, not l\\1\n')
    (layers / 'a"b').mkdir()
    _assert_refused(run_module, layers, make_args(layers), fragment)


def test_an_option_string_longer_than_a_page_is_refused_before_anything(run_module, layers):
    lowers = [f'{layers}/' + f'{index:02d}-'.ljust(100, 'x') for index in range(40)]
    for lower in lowers:
        os.mkdir(lower)
    args = talk_args(layers, lowerdirs=lowers)
    length = len(f'lowerdir={":".join(lowers)},upperdir={layers}/upper,workdir={layers}/work')
    assert length > os.sysconf('SC_PAGE_SIZE')
    _assert_refused(run_module, layers, args, f'mount option string of {length} bytes')
    result = run_module('overlay_mount', args)
    assert f'at most {os.sysconf("SC_PAGE_SIZE") - 1}' in result['msg'] and 'lowerdirs' in result['msg']
    assert not (layers / 'upper').exists() and not (layers / 'merged').exists()


@pytest.fixture
def cutting_mount(tmp_path, monkeypatch):
    """A mount(8) in PATH that hands the kernel only what survives a cut before ",upperdir" - what mount(2) does to a
    string longer than a page - so that the real kernel mounts something other than the module asked for."""
    bin_dir = tmp_path / 'cutting-bin'
    bin_dir.mkdir()
    real_mount = shutil.which('mount')
    (bin_dir / 'mount').write_text(
        f'#!{sys.executable}\nimport os, sys\nargv = sys.argv[1:]\n'
        f'if argv[:2] == ["-t", "overlay"]:\n    at = argv.index("-o") + 1\n    argv[at] = argv[at].split(",upperdir=")[0]\n'
        f'os.execv({real_mount!r}, ["mount"] + argv)\n')
    (bin_dir / 'mount').chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')


def test_a_mount_that_differs_from_the_request_fails_and_is_undone(run_module, layers, cutting_mount):
    tree = snapshot_tree(layers)
    result = run_module('overlay_mount', talk_args(layers))
    assert result['failed'] is True, result
    assert result['msg'].startswith(f'The kernel mounted something other than asked at {layers}/merged: '), result['msg']
    assert f'upperdir is None, want {layers}/upper' in result['msg'] and 'was undone' in result['msg']
    assert _one_overlay_at(layers / 'merged') == []
    assert snapshot_tree(layers) == tree                 # upper, work and merged made by this run are gone again


@pytest.mark.parametrize('make_fstab, fragment', [
    (lambda tmp: str(tmp / 'fstab-dir'), 'is a directory'),
    (lambda tmp: 'fstab', 'fstab must be an absolute path'),
    (lambda tmp: str(tmp / 'no-such-dir' / 'fstab'), 'cannot be created: its directory'),
    (lambda tmp: str(tmp / 'ro' / 'fstab'), 'is not writable'),
])
def test_a_bad_fstab_fails_before_the_overlay_is_mounted(run_module, layers, tmp_path, make_fstab, fragment):
    (tmp_path / 'fstab-dir').mkdir()
    (tmp_path / 'ro').mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro', 'tmpfs', str(tmp_path / 'ro')], check=True)
    try:
        _assert_refused(run_module, layers, talk_args(layers, persist=True, fstab=make_fstab(tmp_path)), fragment)
        assert not (layers / 'merged').exists() and not (layers / 'upper').exists()
    finally:
        subprocess.run(['umount', str(tmp_path / 'ro')], check=True)


def test_an_fstab_write_that_fails_after_the_mount_undoes_the_mount_and_the_directories(run_module, layers, tmp_path):
    full = tmp_path / 'full'
    full.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', str(full)], check=True)
    try:
        (full / 'fstab').write_text('UUID=abc / ext4 defaults 0 1\n')
        with open(full / 'filler', 'wb') as handle:      # the file system is full: the new fstab cannot be written
            try:
                handle.write(b'x' * 65536)
            except OSError:
                pass
        tree = snapshot_tree(layers)
        result = run_module('overlay_mount', talk_args(layers, persist=True, fstab=str(full / 'fstab')))
        assert result['failed'] is True and 'Could not write fstab' in result['msg'], result
        assert _one_overlay_at(layers / 'merged') == []
        assert snapshot_tree(layers) == tree
        assert (full / 'fstab').read_text() == 'UUID=abc / ext4 defaults 0 1\n'
        assert not (full / 'fstab.unboxed.tmp').exists()
    finally:
        subprocess.run(['umount', str(full)], check=True)


def test_an_unknown_option_does_not_borrow_an_older_kernel_line(run_module, layers):
    # an older, unrelated overlayfs line in the kernel log, as another mount leaves it
    os.mkdir(layers / 'decoy')
    subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o', f'lowerdir={layers}/no-such-lower:{layers}/lower1-base',
                    str(layers / 'decoy')], capture_output=True, check=False)
    result = run_module('overlay_mount', talk_args(layers, options=['unboxed_no_such_option']))
    assert result['failed'] is True
    assert 'no-such-lower' not in result['msg'] and 'failed to resolve' not in result['msg']
    assert result['msg'].endswith('The kernel logged no reason for this mount.'), result['msg']


def test_the_kernels_own_reason_for_this_mount_is_quoted(run_module, layers):
    result = run_module('overlay_mount', talk_args(layers, options=['metacopy=on', 'redirect_dir=off']))
    assert result['failed'] is True
    assert 'The kernel said: "conflicting options: metacopy=on,redirect_dir=' in result['msg'], result['msg']


def test_remounted_read_only_behind_the_modules_back_is_healed(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    (layers / 'merged' / 'mine.txt').write_text('student work\n')
    subprocess.run(['mount', '-o', 'remount,ro', str(layers / 'merged')], check=True)
    assert live(layers / 'merged').read_only

    predicted = run_module('overlay_mount', talk_args(layers), check=True, diff=True)
    assert predicted['changed'] is True
    assert predicted['actions'] == ['remount (the mount is read-only (ro), want read-write (rw))']
    assert predicted['diff'][0]['before']['flags'] == ['ro', 'relatime'] and predicted['diff'][0]['after']['flags'] == ['rw', 'relatime']
    assert live(layers / 'merged').read_only

    mount_id = live(layers / 'merged').mount_id
    result = run_module('overlay_mount', talk_args(layers))
    assert result['changed'] is True and result['actions'] == predicted['actions']
    assert not live(layers / 'merged').read_only and live(layers / 'merged').mount_id == mount_id   # healed in place
    (layers / 'merged' / 'after.txt').write_text('writable again\n')
    assert (layers / 'upper' / 'mine.txt').read_text() == 'student work\n'
    assert run_module('overlay_mount', talk_args(layers))['changed'] is False


def test_flags_set_behind_the_modules_back_are_healed(run_module, layers):
    run_module('overlay_mount', talk_args(layers, options=['noatime']))
    subprocess.run(['mount', '-o', 'remount,bind,ro,nosuid,noexec', str(layers / 'merged')], check=True)
    result = run_module('overlay_mount', talk_args(layers, options=['noatime']))
    assert result['changed'] is True
    assert result['actions'] == ['remount (the mount is read-only (ro), want read-write (rw); nosuid is in effect but was not '
                                 'asked for; noexec is in effect but was not asked for)']
    entry = live(layers / 'merged')
    assert not entry.read_only and entry.option('nosuid') is None and entry.option('noexec') is None and entry.option('noatime')
    assert run_module('overlay_mount', talk_args(layers, options=['noatime']))['changed'] is False


@pytest.fixture
def namespace_holder():
    """Processes in a mount namespace of their own (unshare --mount), killed by PID at the end."""
    started = []

    def start(*argv):
        holder = subprocess.Popen(['unshare', '--mount', '--propagation', 'private', *argv])
        started.append(holder)
        for _attempt in range(200):                     # until it lives in its own namespace
            if os.readlink(f'/proc/{holder.pid}/ns/mnt') != os.readlink('/proc/self/ns/mnt'):
                break
            time.sleep(0.01)
        return holder

    yield start
    for holder in started:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize('chrooted', [False, True], ids=['host-root', 'chrooted-into-the-overlay'])
def test_an_overlay_a_container_still_holds_is_never_mounted_twice(run_module, layers, namespace_holder, chrooted):
    if chrooted:
        make_busybox_rootfs(str(layers / 'lower1-base'))
    run_module('overlay_mount', talk_args(layers))
    argv = ['chroot', str(layers / 'merged'), '/bin/sleep', '300'] if chrooted else ['sleep', '300']
    holder = namespace_holder(*argv)
    subprocess.run(['umount', str(layers / 'merged')], check=True)     # behind the module's back; the container keeps its copy

    tree = snapshot_tree(layers)
    for check in (True, False):
        result = run_module('overlay_mount', talk_args(layers), check=check)
        assert result['failed'] is True, result
        assert f'upperdir "{layers}/upper" is the upperdir of an overlay' in result['msg']
        assert f'in the mount namespace of PID {holder.pid} (' in result['msg']
        assert 'Stop that container (unboxed.lab.ns_container state=stopped)' in result['msg']
        assert _one_overlay_at(layers / 'merged') == []
        assert snapshot_tree(layers) == tree

    holder.kill()
    holder.wait()
    assert run_module('overlay_mount', talk_args(layers))['changed'] is True
    assert len(_one_overlay_at(layers / 'merged')) == 1


def test_changed_layers_are_refused_while_a_container_runs_on_the_overlay(run_module, layers, namespace_holder):
    run_module('overlay_mount', talk_args(layers))
    holder = namespace_holder('sleep', '300')
    (layers / 'lower3').mkdir()
    mounts = snapshot_mounts(layers)
    result = run_module('overlay_mount', talk_args(layers, lowerdirs=[f'{layers}/lower3', f'{layers}/lower1-base']))
    assert result['failed'] is True and f'PID {holder.pid} (sleep)' in result['msg'], result
    assert snapshot_mounts(layers) == mounts              # the live overlay was not unmounted either


def test_a_second_overlay_on_the_same_upper_here_is_refused(run_module, layers):
    run_module('overlay_mount', talk_args(layers))
    _assert_refused(run_module, layers, talk_args(layers, path=f'{layers}/merged2'),
                    f'upperdir "{layers}/upper" is the upperdir of the overlay mounted at {layers}/merged')


def _ansible_argv(args):
    return [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
            '-e', f'ansible_python_interpreter={sys.executable}', '-m', 'unboxed.lab.overlay_mount', '-a', json.dumps(args)]


def test_two_runs_at_once_mount_once(layers, tmp_path):
    for attempt in range(3):
        runners = [ModuleRunner(str(tmp_path / f'run-{attempt}-{index}')) for index in range(2)]
        for runner in runners:
            os.makedirs(runner.tmp_dir)
        results = [None, None]
        threads = [threading.Thread(target=lambda index=index: results.__setitem__(
            index, runners[index]('overlay_mount', talk_args(layers)))) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [result.get('failed') for result in results] == [False, False], results
        assert sorted(result['changed'] for result in results) == [False, True]
        assert len(_one_overlay_at(layers / 'merged')) == 1
        subprocess.run(['umount', str(layers / 'merged')], check=True)


def test_a_run_that_cannot_get_the_lock_says_who_holds_it(run_module, layers):
    tree = snapshot_tree(layers)
    with locking.exclusive('overlay', os.path.realpath(f'{layers}/merged'), note='held by the test'):
        result = run_module('overlay_mount', talk_args(layers, lock_timeout=1))
    assert result['failed'] is True
    assert result['msg'].startswith(f'Another run is working on the overlay at {layers}/merged (PID {os.getpid()} '), result['msg']
    assert 'did not finish within 1 s' in result['msg']
    assert _one_overlay_at(layers / 'merged') == [] and snapshot_tree(layers) == tree


def _module_process_below(ancestor):
    for pid in process.all_pids():
        cmdline = process.read_cmdline(pid) or []
        if any('AnsiballZ_overlay_mount' in part for part in cmdline) and ancestor in process.ancestors_of(pid):
            return pid
    return None


# Instants across the module's run, by what it has done so far (its own work lasts a few milliseconds after
# a few hundred of Python start-up, so fixed delays alone would only hit "before" and "after").
KILL_INSTANTS = {
    'module started': lambda layers, fstab: True,
    'work directory made': lambda layers, fstab: (layers / 'work').exists(),
    'merged directory made': lambda layers, fstab: (layers / 'merged').exists(),
    'mounted': lambda layers, fstab: os.path.ismount(layers / 'merged'),
    'fstab being written': lambda layers, fstab: os.path.exists(f'{fstab}.unboxed.tmp'),
    'fstab written': lambda layers, fstab: fstab.read_text().count('\n') == 2,
}


@pytest.mark.parametrize('instant, delay_ms', [
    ('module started', 0), ('module started', 100), ('work directory made', 0), ('merged directory made', 0),
    ('mounted', 0), ('mounted', 2), ('fstab being written', 0), ('fstab written', 0), ('module started', 1500),
])
def test_a_run_killed_at_any_instant_is_healed_by_the_next(run_module, layers, tmp_path, instant, delay_ms):
    fstab = tmp_path / 'fstab'
    fstab.write_text('UUID=abc / ext4 defaults 0 1\n')
    (layers / 'upper').mkdir()
    (layers / 'upper' / 'mine.txt').write_text('student work\n')
    args = talk_args(layers, persist=True, fstab=str(fstab))

    env = ansible_env(str(tmp_path))
    run = subprocess.Popen(_ansible_argv(args), cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while _module_process_below(run.pid) is None and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    reached = KILL_INSTANTS[instant]
    while not reached(layers, fstab) and run.poll() is None and time.monotonic() < deadline:
        pass
    time.sleep(delay_ms / 1000)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    healed = run_module('overlay_mount', args)
    assert not healed.get('failed'), healed
    assert len(_one_overlay_at(layers / 'merged')) == 1
    assert (layers / 'merged' / 'mine.txt').read_text() == 'student work\n'
    assert (layers / 'merged' / 'file01.txt').read_text() == 'Texto\n'
    lines = fstab.read_text().splitlines()
    assert lines[0] == 'UUID=abc / ext4 defaults 0 1' and len(lines) == 2 and lines[1].startswith(f'overlay {layers}/merged overlay ')
    assert not os.path.exists(f'{fstab}.unboxed.tmp')
    assert run_module('overlay_mount', args)['changed'] is False
