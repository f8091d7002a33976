"""overlay, the mount code that overlay_mount and ns_container's overlay option share.

The pure parts as tables: request_problems naming each overlay option with the caller's prefix and the mount point
with the caller's name for it, OPTION_SPEC as suboptions, the defaults a caller may leave out, OverlayError. Then
Overlay.run() itself on a real kernel with a real AnsibleModule, in a mount namespace of the test's own (unshare
--mount), so that what a real run mounts goes with the namespace: what check mode predicts with and without
expect_layers (and that it makes nothing, no lock either), the real run that ignores expect_layers, a mount and its
rerun, an fstab the caller did not ask about left alone, OverlayError after a refusal, and the lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import locking, overlay

# The directory that holds ansible_collections/, wherever this run imported the collection from (a clone's
# collections/ link, or ansible-test's copy).
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(overlay.__file__)))))))

PREFIX = 'containers[1].overlay.'
ROOTFS = 'containers[1].rootfs'
# An option of overlay_mount's named without the caller's prefix (``path "`` is how a message names the mount point).
UNPREFIXED = re.compile(r'(?<![.\w])(lowerdirs|upperdir|workdir|create_dirs|options(?= item| make)|path(?= "))\b(?!=)')


def suboptions(**given):
    """The overlay option's value as ns_container's argument spec hands it over (defaults filled in)."""
    spec = {'overlay': dict(type='dict', options=overlay.OPTION_SPEC)}
    validated = ArgumentSpecValidator(spec).validate({'overlay': given})
    assert not validated.error_messages, validated.error_messages
    return validated.validated_parameters['overlay']


def container_request(**overrides):
    """What ns_container passes: the mount point and the overlay option's value, nothing of overlay_mount's own."""
    layers = dict(lowerdirs=['/srv/c/l2', '/srv/c/l1'], upperdir='/srv/c/upper', workdir='/srv/c/work')
    layers.update(overrides)
    path = layers.pop('path', '/srv/c/rootfs')
    return dict(suboptions(**layers), path=path)


def test_option_spec_is_overlay_mount_s_overlay_options():
    spec = overlay.argument_spec()
    assert sorted(overlay.OPTION_SPEC) == ['create_dirs', 'lowerdirs', 'options', 'upperdir', 'workdir']
    for option, entry in overlay.OPTION_SPEC.items():
        assert spec[option] == entry
    assert sorted(set(spec) - set(overlay.OPTION_SPEC)) == ['fstab', 'lock_timeout', 'path', 'persist', 'state']
    assert suboptions(lowerdirs=['/a', '/b']) == {'lowerdirs': ['/a', '/b'], 'upperdir': None, 'workdir': None,
                                                  'options': [], 'create_dirs': True}
    # argument_spec() hands out copies: a caller that changes its spec does not change the next one's.
    spec['options']['default'].append('ro')
    assert overlay.OPTION_SPEC['options']['default'] == []


def test_a_caller_may_leave_overlay_mount_s_own_options_out():
    params = overlay.with_defaults({'path': '/srv/c/rootfs', 'lowerdirs': ['/a', '/b'], 'state': None, 'options': None})
    assert params == {'path': '/srv/c/rootfs', 'lowerdirs': ['/a', '/b'], 'upperdir': None, 'workdir': None,
                      'options': [], 'create_dirs': True, 'state': 'mounted', 'persist': False,
                      'fstab': '/etc/fstab', 'lock_timeout': 60}
    assert overlay.request_problems({'path': '/srv/c/rootfs', 'lowerdirs': ['/a', '/b']}) == []
    assert overlay.request_problems(container_request(), PREFIX, path_option=ROOTFS) == []


@pytest.mark.parametrize('overrides, fragments', [
    (dict(lowerdirs=[]), [f'{PREFIX}lowerdirs is empty']),
    (dict(lowerdirs=None), [f'{PREFIX}lowerdirs is empty']),
    (dict(lowerdirs=['/srv/c/a:b', '/srv/c/l1']), [f'{PREFIX}lowerdirs[0]', 'colon']),
    (dict(lowerdirs=['/srv/c/l1', '/srv/c/a\\b']), [f'{PREFIX}lowerdirs[1] "/srv/c/a\\b" contains a backslash']),
    (dict(lowerdirs=['/srv/c/l1', '/srv/c/l1/']), [f'{PREFIX}lowerdirs lists "/srv/c/l1" more than once']),
    (dict(lowerdirs=['/etc/ssl', '/srv/c/l1']), [f'{PREFIX}lowerdirs[0]', 'system directory']),
    (dict(workdir=None), [f'{PREFIX}upperdir is set but {PREFIX}workdir is empty']),
    (dict(upperdir=None), [f'{PREFIX}workdir is set but {PREFIX}upperdir is empty']),
    (dict(upperdir='', workdir='/srv/c/work'), [f'{PREFIX}upperdir']),
    (dict(upperdir=None, workdir=None, lowerdirs=['/srv/c/l1']),
     [f'no {PREFIX}upperdir) needs at least two {PREFIX}lowerdirs; add an {PREFIX}upperdir and {PREFIX}workdir']),
    (dict(workdir='/srv/c/upper/work'), [f'{PREFIX}upperdir "/srv/c/upper" and {PREFIX}workdir "/srv/c/upper/work" are inside']),
    (dict(upperdir='/srv/c/rootfs/upper'), [f'{PREFIX}upperdir "/srv/c/rootfs/upper" is inside {ROOTFS} "/srv/c/rootfs"']),
    (dict(upperdir='/srv/c/l1/up'), [f'{PREFIX}upperdir "/srv/c/l1/up" and lower layer "/srv/c/l1" overlap']),
    (dict(lowerdirs=['/srv/c/rootfs/x', '/srv/c/l1']), [f'and {ROOTFS} "/srv/c/rootfs" overlap']),
    (dict(options=['index=off,ro']), [f'{PREFIX}options item \'index=off,ro\' must be a single mount option']),
    (dict(options=['lowerdir=/x']), [f'{PREFIX}options item "lowerdir=/x" sets a layer: use {PREFIX}lowerdirs instead.']),
    (dict(options=['upperdir=/x']), [f'{PREFIX}options item "upperdir=/x" sets a layer: use {PREFIX}upperdir instead.']),
    (dict(options=['lowerdir+=/x']), [f'give every lower layer in {PREFIX}lowerdirs instead']),
    (dict(options=['a"b']), [f'{PREFIX}options item \'a"b\' contains a backslash or a double quote']),
    (dict(path='srv/rootfs'), [f'{ROOTFS} must be an absolute path']),
    (dict(path='/usr/lib/rootfs'), [ROOTFS, 'system directory']),
])
def test_problems_name_the_caller_s_options(overrides, fragments):
    problems = overlay.request_problems(container_request(**overrides), PREFIX, path_option=ROOTFS)
    assert problems and all(any(fragment in problem for problem in problems) for fragment in fragments), problems
    # Not one option named as overlay_mount's: every name a problem gives carries the caller's prefix.
    for problem in problems:
        assert not UNPREFIXED.findall(problem), problem


def test_the_unprefixed_check_can_fail():
    assert UNPREFIXED.findall(overlay.request_problems(container_request(lowerdirs=[]))[0]) == ['lowerdirs']
    assert UNPREFIXED.findall('path "/srv/c/rootfs" and options item "x"') == ['path', 'options']


def test_the_option_string_limit_names_the_caller_s_options():
    lowers = [f'/srv/c/layer-{index:03d}' for index in range(40)]
    problems = overlay.request_problems(container_request(lowerdirs=lowers), PREFIX, data_limit=100, path_option=ROOTFS)
    assert len(problems) == 1
    assert problems[0].startswith(f'{PREFIX}lowerdirs, {PREFIX}upperdir, {PREFIX}workdir and {PREFIX}options make a mount '
                                  f'option string of ')


def test_overlay_mount_s_messages_stay_as_they_were():
    problems = overlay.request_problems({'path': '/overlay/merged', 'lowerdirs': ['/overlay/l1'], 'options': ['lowerdir=/x'],
                                         'lock_timeout': -1})
    assert problems == [
        'a read-only overlay (no upperdir) needs at least two lowerdirs; add an upperdir and workdir to make it writable, '
        'or a second lower layer.',
        'lock_timeout is -1: give the seconds to wait for another run, 0 or more.',
        'options item "lowerdir=/x" sets a layer: use the lowerdirs/lowerdir option of this module instead.',
    ]


def test_filesystem_problems_name_the_caller_s_options(tmp_path):
    desired = overlay.desired_from_params(container_request(
        path=str(tmp_path / 'rootfs'), lowerdirs=[str(tmp_path / 'l2'), str(tmp_path / 'l1')],
        upperdir=str(tmp_path / 'upper'), workdir=str(tmp_path / 'work')))
    (tmp_path / 'work').mkdir()
    (tmp_path / 'work' / 'left-over').write_text('x')
    (tmp_path / 'l1').write_text('a file, not a layer')
    problems = overlay.filesystem_problems(desired, False, [], PREFIX, ROOTFS)
    assert problems == [
        f'{PREFIX}lowerdirs[0] "{tmp_path}/l2" does not exist and {PREFIX}create_dirs is false: create the layer '
        f'directory first or set {PREFIX}create_dirs: true.',
        f'{PREFIX}lowerdirs[1] "{tmp_path}/l1" exists but is not a directory.',
        f'{ROOTFS} "{tmp_path}/rootfs" does not exist and {PREFIX}create_dirs is false.',
        f'{PREFIX}upperdir "{tmp_path}/upper" does not exist and {PREFIX}create_dirs is false.',
        f'{PREFIX}workdir "{tmp_path}/work" is not empty: it must be an empty directory reserved for overlayfs (only its '
        f'own "work" and "index" entries may be there).',
    ]
    # Layers an earlier step of the run makes are no problem; the mount point and a file in a layer's place still are.
    expected = [problems[1], problems[2], problems[4]]
    assert overlay.filesystem_problems(desired, False, [], PREFIX, ROOTFS, expect_layers=True) == expected


def test_overlay_error_keeps_the_result_without_its_message():
    error = overlay.OverlayError('Could not mount.', {'msg': 'older', 'path': '/srv/c/rootfs', 'actions': ['mount']})
    assert str(error) == error.msg == 'Could not mount.'
    assert error.result == {'path': '/srv/c/rootfs', 'actions': ['mount']}


# Overlay.run() for real: a real AnsibleModule in a mount namespace of its own, each step of a list in turn (a step
# is a run of Overlay with its params, or a tmpfs mounted at a path first).
RUN = r'''
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.unboxed.lab.plugins.module_utils import overlay
outcomes = []
for step in json.loads(sys.argv[2]):
    if 'tmpfs' in step:
        subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', step['tmpfs']], check=True)
        continue
    with patch_module_args(dict(_ansible_check_mode=step['check_mode'], _ansible_diff=True)):
        module = basic.AnsibleModule(argument_spec={}, supports_check_mode=True)
    try:
        outcome = {'result': overlay.Overlay(module, step['params'], step.get('prefix', ''),
                                             step.get('path_option', 'path')).run(expect_layers=step['expect_layers'])}
    except overlay.OverlayError as error:
        outcome = {'error': error.msg, 'result': error.result}
    outcomes.append(outcome)
print(json.dumps(outcomes))
'''

needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'), reason='needs root and unshare')


def run_steps(*steps):
    requests = [dict({'check_mode': False, 'expect_layers': False}, **step) for step in steps]
    completed = subprocess.run(['unshare', '--mount', sys.executable, '-c', RUN, os.path.abspath(COLLECTIONS),
                                json.dumps(requests)], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def snapshot(root):
    """Every path below ``root`` with its type and content digest: what a run must leave as it was."""
    found = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            found[os.path.join(directory, name)] = 'dir'
        for name in files:
            with open(os.path.join(directory, name), 'rb') as handle:
                found[os.path.join(directory, name)] = hashlib.sha256(handle.read()).hexdigest()
    return found


@pytest.fixture
def seat(tmp_path):
    """A container's directories as ns_container's request names them; nothing made yet but the lowest layer."""
    (tmp_path / 'l1').mkdir()
    (tmp_path / 'l1' / 'base-file').write_text('base\n')
    params = container_request(path=str(tmp_path / 'rootfs'), lowerdirs=[str(tmp_path / 'l2'), str(tmp_path / 'l1')],
                               upperdir=str(tmp_path / 'upper'), workdir=str(tmp_path / 'work'), create_dirs=False)
    return tmp_path, params


def lock_files(path, upperdir):
    return [locking.lock_file_path('overlay', os.path.realpath(path)),
            locking.lock_file_path('overlay', 'upperdir ' + os.path.realpath(upperdir))]


@needs_kernel
def test_check_mode_predicts_the_mount_on_layers_an_earlier_step_makes(seat):
    root, params = seat
    (root / 'rootfs').mkdir()
    before = snapshot(root)
    without, with_layers = run_steps(
        dict(params=params, check_mode=True, prefix=PREFIX, path_option=ROOTFS),
        dict(params=params, check_mode=True, prefix=PREFIX, path_option=ROOTFS, expect_layers=True))
    assert without['error'] == ' '.join(without['result']['problems'])
    assert without['result']['problems'] == [
        f'{PREFIX}lowerdirs[0] "{root}/l2" does not exist and {PREFIX}create_dirs is false: create the layer directory '
        f'first or set {PREFIX}create_dirs: true.',
        f'{PREFIX}upperdir "{root}/upper" does not exist and {PREFIX}create_dirs is false.',
        f'{PREFIX}workdir "{root}/work" does not exist and {PREFIX}create_dirs is false.']
    result = with_layers['result']
    assert 'error' not in with_layers
    assert (result['changed'], result['mounted'], result['actions']) == (True, True, ['mount'])
    assert result['command'] == (f'mount -t overlay overlay -o lowerdir={root}/l2:{root}/l1,upperdir={root}/upper,'
                                 f'workdir={root}/work {root}/rootfs')
    assert result['diff'][0]['after']['mounted'] is True and result['diff'][0]['before'] == {'mounted': False}
    assert snapshot(root) == before
    assert not any(os.path.exists(lock) for lock in lock_files(params['path'], params['upperdir']))


@needs_kernel
def test_expect_layers_does_not_hide_the_directories_the_run_itself_would_create(seat):
    root, params = seat
    params = dict(params, create_dirs=True)
    before = snapshot(root)
    without, with_layers = run_steps(dict(params=params, check_mode=True),
                                     dict(params=params, check_mode=True, expect_layers=True))
    assert without['result']['actions'] == [f'create directory {root}/l2', f'create directory {root}/upper',
                                            f'create directory {root}/work', f'create directory {root}/rootfs', 'mount']
    assert with_layers['result']['actions'] == [f'create directory {root}/rootfs', 'mount']
    assert snapshot(root) == before


@needs_kernel
def test_a_real_run_ignores_expect_layers(seat):
    root, params = seat
    (root / 'rootfs').mkdir()
    before = snapshot(root)
    [real] = run_steps(dict(params=params, prefix=PREFIX, path_option=ROOTFS, expect_layers=True))
    assert f'{PREFIX}lowerdirs[0] "{root}/l2" does not exist and {PREFIX}create_dirs is false' in real['error']
    assert snapshot(root) == before


@needs_kernel
def test_a_real_run_mounts_then_a_rerun_changes_nothing_and_fstab_is_left_alone(seat):
    root, params = seat
    params = dict(params, create_dirs=True)
    fstab = root / 'fstab'
    fstab.write_text(f'overlay {root}/rootfs overlay lowerdir={root}/l1:{root}/l0 0 0\n')
    first, check, rerun, unmount, mountinfo_line = run_steps(
        dict(params=dict(params, fstab=str(fstab)), prefix=PREFIX, path_option=ROOTFS),
        dict(params=params, check_mode=True),
        dict(params=params),
        dict(params=dict(params, state='unmounted', fstab=str(fstab)), check_mode=True),
        # overlay_mount's own: persist given (false), the overlay line of the mount point goes from fstab
        dict(params=dict(params, state='unmounted', fstab=str(fstab), persist=False), check_mode=True))
    assert first['result']['changed'] is True and first['result']['mounted'] is True
    assert first['result']['actions'] == [f'create directory {root}/l2', f'create directory {root}/upper',
                                          f'create directory {root}/work', f'create directory {root}/rootfs', 'mount']
    assert first['result']['current'] is None
    assert check['result']['changed'] is False and rerun['result']['changed'] is False
    assert rerun['result']['current']['lowerdirs'] == [f'{root}/l2', f'{root}/l1']
    assert unmount['result']['actions'] == ['unmount (state=unmounted)']
    assert mountinfo_line['result']['actions'] == ['unmount (state=unmounted)',
                                                   f'remove overlay line for {root}/rootfs from {fstab}']
    assert fstab.read_text() == f'overlay {root}/rootfs overlay lowerdir={root}/l1:{root}/l0 0 0\n'
    # The mount went with the test's mount namespace.
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        assert f' {root}/rootfs ' not in handle.read()


@needs_kernel
def test_a_refusal_raises_overlay_error_with_the_result_and_the_caller_s_names(seat):
    root, params = seat
    params = dict(params, create_dirs=True)
    (root / 'rootfs').mkdir()
    [refused] = run_steps(dict(tmpfs=str(root / 'rootfs')), dict(params=params, prefix=PREFIX, path_option=ROOTFS))
    assert refused['error'] == (f'{root}/rootfs is a mount point of a tmpfs file system (tmpfs), not an overlay: the '
                                f'containers[1].overlay option will not stack on it or unmount it. Unmount it first or '
                                f'choose another {ROOTFS}.')
    assert 'msg' not in refused['result']
    assert refused['result']['mounted'] is False and refused['result']['actions'] == []
    assert not (root / 'upper').exists() and not (root / 'l2').exists()


@needs_kernel
def test_the_real_run_takes_the_lock_check_mode_takes_none(seat):
    root, params = seat
    params = dict(params, create_dirs=True, lock_timeout=0)
    (root / 'rootfs').mkdir()
    before = snapshot(root)
    with locking.exclusive('overlay', os.path.realpath(params['path']), timeout=5, note='test holds it'):
        real, check = run_steps(dict(params=params, prefix=PREFIX, path_option=ROOTFS),
                                dict(params=params, check_mode=True, expect_layers=True))
    assert real['error'].startswith(f'Another run is working on the overlay at {root}/rootfs (')
    assert 'test holds it' in real['error'] and lock_files(params['path'], params['upperdir'])[0] in real['error']
    assert real['result']['mounted'] is None and real['result']['actions'] == []
    assert check['result']['actions'] == ['mount'] and check['result']['changed'] is True
    assert snapshot(root) == before
