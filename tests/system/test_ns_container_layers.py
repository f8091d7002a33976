"""ns_container's per-container layers (docker run on an image): O(overlay) mounted at rootfs, then the start - real
mounts and real processes, run through Ansible against localhost (root).

Every container a test starts is killed by PID (after its start time is checked) at teardown; the workdir fixture
then unmounts what is left below the test's directory.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile

import pytest

from conftest import ModuleRunner, make_busybox_rootfs, require_root, snapshot_mounts, snapshot_tree, unmount_below, user_exists
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import process
from test_ns_container import Containers, inside

pytestmark = pytest.mark.root

STOP_TIMEOUT = 1
TALK_COMMAND = ['tail', '-f', '/dev/null']
_names = itertools.count()


@pytest.fixture
def layers(workdir, busybox_rootfs):
    """The busybox root as the image's layer, and where the container's own layer and merged view go (not made)."""
    return {'lower': busybox_rootfs, 'upper': str(workdir / 'upper'), 'work': str(workdir / 'work'),
            'merged': str(workdir / 'merged'), 'workdir': workdir}


@pytest.fixture
def containers(tmp_path, layers):
    tracker = Containers(tmp_path, layers['merged'])
    yield tracker
    tracker.cleanup()


def overlay_of(layers, **overrides):
    options = {'lowerdirs': [layers['lower']], 'upperdir': layers['upper'], 'workdir': layers['work']}
    options.update(overrides)
    return options


def args_of(containers, layers, name=None, **overrides):
    return containers.args(name or containers.new_name(), rootfs=layers['merged'], command=TALK_COMMAND,
                           overlay=overlay_of(layers), **overrides)


def mounted_overlay(path):
    entry = mountinfo.find_mount(path)
    return entry if entry is not None and entry.fstype == 'overlay' else None


def running(result):
    return process.is_running(process.identity_of(result['pid'])) if result['pid'] else False


def test_overlay_mounted_and_started_in_one_run(run_module, containers, layers):
    args = args_of(containers, layers)
    before_tree = snapshot_tree(str(layers['workdir']))

    predicted = run_module('ns_container', args, check=True, diff=True)
    assert predicted['changed'] is True and not predicted['failed'], predicted.get('msg')
    assert predicted['overlay']['actions'][-1] == 'mount' and predicted['overlay']['changed'] is True
    assert predicted['state'] == 'started' and predicted['pid'] is None
    assert not [warning for warning in predicted.get('warnings', []) if 'rootfs' in warning]
    assert mounted_overlay(layers['merged']) is None
    assert snapshot_tree(str(layers['workdir'])) == before_tree
    assert not os.path.exists(args['state_dir'])

    real = run_module('ns_container', args, diff=True)
    assert real['changed'] is True and not real['failed'], real.get('msg')
    entry = mounted_overlay(layers['merged'])
    assert entry is not None and mountinfo.overlay_layers(entry)['upperdir'] == layers['upper']
    assert real['overlay']['mounted'] is True and real['overlay']['actions'][-1] == 'mount'
    assert running(real)
    assert os.stat(f'/proc/{real["pid"]}/root').st_dev == os.stat(layers['merged']).st_dev
    assert real['commands'][0] == real['overlay']['command'] and real['commands'][0].startswith('mount -t overlay')
    assert real['commands'][-1] == real['shell_command']
    assert real['msg'].startswith('Started: ') and 'Overlay at ' in real['msg']
    assert [diff['before_header'] for diff in real['diff'] if 'before_header' in diff][:1] == [
        f'overlay at {layers["merged"]}']

    # What the container writes lands in its own layer.
    inside(real['pid'], 'sh', '-c', 'echo data > /root/kept')
    assert os.path.exists(os.path.join(layers['upper'], 'root', 'kept'))

    again = run_module('ns_container', args)
    assert again['changed'] is False, again['msg']
    assert again['pid'] == real['pid'] and again['overlay']['changed'] is False and again['overlay']['actions'] == []
    assert again['commands'][0].startswith('mount -t overlay')
    checked = run_module('ns_container', args, check=True)
    assert checked['changed'] is False and checked['pid'] == real['pid'], checked['msg']


def test_absent_stops_then_unmounts_and_keeps_the_upper_layer(run_module, containers, layers):
    args = args_of(containers, layers)
    started = run_module('ns_container', args)
    assert started['changed'] is True, started['msg']
    identity = containers.identity(args['state_dir'])
    inside(started['pid'], 'sh', '-c', 'echo data > /root/kept')
    kept = snapshot_tree(layers['upper'])

    absent_args = dict(args, state='absent')
    predicted = run_module('ns_container', absent_args, check=True)
    assert predicted['changed'] is True and predicted['overlay']['actions'] == ['unmount (state=unmounted)']
    assert process.is_running(identity) and mounted_overlay(layers['merged']) is not None

    removed = run_module('ns_container', absent_args)
    assert removed['changed'] is True and not removed['failed'], removed['msg']
    assert not process.is_running(identity)
    assert mounted_overlay(layers['merged']) is None
    assert removed['overlay']['mounted'] is False
    assert removed['commands'][-1] == f'umount {layers["merged"]}'
    assert snapshot_tree(layers['upper']) == kept
    assert os.path.isdir(layers['work']) and os.path.isdir(layers['lower'])

    again = run_module('ns_container', absent_args)
    assert again['changed'] is False, again['msg']
    assert run_module('ns_container', absent_args, check=True)['changed'] is False


def test_stopped_unmounts_and_started_mounts_again_with_the_data(run_module, containers, layers):
    args = args_of(containers, layers)
    first = run_module('ns_container', args)
    inside(first['pid'], 'sh', '-c', 'echo data > /root/kept')

    stopped = run_module('ns_container', dict(args, state='stopped'))
    assert stopped['changed'] is True and stopped['state'] == 'stopped', stopped['msg']
    assert mounted_overlay(layers['merged']) is None and os.listdir(layers['merged']) == []
    assert run_module('ns_container', dict(args, state='stopped'))['changed'] is False

    predicted = run_module('ns_container', args, check=True)
    assert predicted['changed'] is True and predicted['overlay']['actions'] == ['mount']
    again = run_module('ns_container', args)
    assert again['changed'] is True and running(again), again['msg']
    assert inside(again['pid'], 'cat', '/root/kept') == 'data\n'


def test_containers_each_with_its_overlay_in_one_run(run_module, containers, layers, workdir):
    second = {name: str(workdir / f'{name}2') for name in ('upper', 'work', 'merged')}
    items = [
        {'name': containers.new_name(), 'rootfs': layers['merged'], 'command': TALK_COMMAND,
         'overlay': overlay_of(layers), 'stop_timeout': STOP_TIMEOUT},
        {'name': containers.new_name(), 'rootfs': second['merged'], 'command': TALK_COMMAND, 'stop_timeout': STOP_TIMEOUT,
         'overlay': overlay_of(layers, upperdir=second['upper'], workdir=second['work'])},
    ]
    for item in items:
        item['state_dir'] = containers.args(item['name'])['state_dir']
    extra = Containers(containers.tmp_path, second['merged'])
    extra.state_dirs = {items[1]['state_dir']}
    try:
        predicted = run_module('ns_container', {'containers': items}, check=True)
        assert predicted['changed'] is True, predicted['msg']
        assert [item['overlay']['actions'] for item in predicted['containers']] == [['create directory ' + layers['upper'],
                                                                                     'create directory ' + layers['work'],
                                                                                     'create directory ' + layers['merged'],
                                                                                     'mount'],
                                                                                    ['create directory ' + second['upper'],
                                                                                     'create directory ' + second['work'],
                                                                                     'create directory ' + second['merged'],
                                                                                     'mount']]
        real = run_module('ns_container', {'containers': items})
        assert real['changed'] is True and not real['failed'], real['msg']
        assert all(running(item) for item in real['containers'])
        assert mounted_overlay(layers['merged']) and mounted_overlay(second['merged'])
        rerun = run_module('ns_container', {'containers': items})
        assert rerun['changed'] is False, rerun['msg']
        assert run_module('ns_container', {'containers': items}, check=True)['changed'] is False
        gone = run_module('ns_container', {'containers': [dict(item, state='absent') for item in items]})
        assert gone['changed'] is True, gone['msg']
        assert not mounted_overlay(layers['merged']) and not mounted_overlay(second['merged'])
    finally:
        extra.cleanup()


def _tmpfs_at_rootfs(layers):
    os.makedirs(layers['merged'])
    subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', layers['merged']], check=True, capture_output=True, timeout=60)
    return {}


@pytest.mark.parametrize('make_overrides, fragment', [
    (lambda layers: {'rootfs': None}, 'overlay needs rootfs'),
    (lambda layers: {'overlay': overlay_of(layers, lowerdirs=[])}, 'overlay.lowerdirs is empty'),
    (lambda layers: {'overlay': overlay_of(layers, lowerdirs=['relative/layer'])}, 'overlay.lowerdirs[0]'),
    (lambda layers: {'overlay': overlay_of(layers, workdir=None)}, 'overlay.upperdir is set but overlay.workdir is empty'),
    (lambda layers: {'overlay': overlay_of(layers, upperdir=layers['merged'] + '/upper')}, 'overlay.upperdir'),
    (lambda layers: {'overlay': overlay_of(layers, options=['lowerdir=/x'])}, 'overlay.options'),
    (lambda layers: {'overlay': overlay_of(layers, upperdir='/etc/upper')}, 'overlay.upperdir'),
    (_tmpfs_at_rootfs, 'not an overlay'),
], ids=['no-rootfs', 'no-lowerdirs', 'relative-lower', 'no-workdir', 'upper-in-rootfs', 'layer-option', 'system-dir',
        'tmpfs-at-rootfs'])
def test_bad_overlay_input_names_the_option_and_changes_nothing(run_module, containers, layers, make_overrides, fragment):
    overrides = make_overrides(layers)
    args = {key: value for key, value in dict(args_of(containers, layers), **overrides).items() if value is not None}
    tree = snapshot_tree(str(layers['workdir']))
    mounts = snapshot_mounts(str(layers['workdir']))
    for check in (True, False):
        result = run_module('ns_container', args, check=check)
        assert result['failed'] is True and result['changed'] is False, result.get('msg')
        assert fragment in result['msg'], result['msg']
        assert snapshot_tree(str(layers['workdir'])) == tree
        assert snapshot_mounts(str(layers['workdir'])) == mounts
        assert not os.path.exists(os.path.join(args['state_dir'], container.STATE_FILE))


def test_a_bad_item_overlay_is_named_with_its_item(run_module, containers, layers):
    good = args_of(containers, layers)
    bad = dict(args_of(containers, layers), rootfs=layers['merged'] + '2', overlay=overlay_of(layers, lowerdirs=['rel']))
    tree = snapshot_tree(str(layers['workdir']))
    result = run_module('ns_container', {'containers': [good, bad]})
    assert result['failed'] is True and result['changed'] is False
    assert 'containers[1].overlay.lowerdirs[0]' in result['msg'], result['msg']
    assert snapshot_tree(str(layers['workdir'])) == tree and mounted_overlay(layers['merged']) is None


# ---- userns_remap with overlay: the image's layers shifted into the remap user's range, in the same run -------------

REMAP_USER = 'unboxed-t-nslayers'    # made by the module (userns_remap_create) and removed by layer_remap at teardown


@pytest.fixture
def remapped(tmp_path):
    """A scratch directory every user may traverse (the mapped root must reach its rootfs), the image's layer in it,
    and where the container's directories and the shifted copies go. Teardown: the container killed by PID, then the
    copies and the remap user removed by layer_remap (state=absent, create_user), then everything unmounted."""
    require_root()
    assert not user_exists(REMAP_USER), f'{REMAP_USER} is left over: userdel {REMAP_USER} and remove its subid lines'
    base = tempfile.mkdtemp(prefix='nslayers-', dir='/var/tmp')
    os.chmod(base, 0o755)
    lower = make_busybox_rootfs(os.path.join(base, 'image', 'lower1-base'))
    own = os.path.join(base, 'remapped')
    layers = {'lower': lower, 'upper': os.path.join(own, 'upper'), 'work': os.path.join(own, 'work'),
              'merged': os.path.join(own, 'merged'), 'own': own, 'root': os.path.join(base, 'remap'), 'base': base}
    tracker = Containers(tmp_path, layers['merged'])
    layers['containers'] = tracker
    yield layers
    tracker.cleanup()
    unmount_below(base)
    os.makedirs(tmp_path / 'teardown', exist_ok=True)
    runner = ModuleRunner(str(tmp_path / 'teardown'))
    if user_exists(REMAP_USER):
        gone = runner('layer_remap', {'user': REMAP_USER, 'src': [lower], 'root': layers['root'], 'create_user': True,
                                      'state': 'absent'})
        assert not gone['failed'], gone['msg']
    subprocess.run(['rm', '-rf', '--one-file-system', base], check=False)
    assert not user_exists(REMAP_USER)


def remapped_args(remapped, **overrides):
    tracker = remapped['containers']
    args = tracker.args(tracker.new_name(), rootfs=remapped['merged'], command=TALK_COMMAND, namespaces=['pid', 'mount'],
                        userns_remap=REMAP_USER, userns_remap_create=True, userns_remap_root=remapped['root'],
                        overlay={'lowerdirs': [remapped['lower']], 'upperdir': remapped['upper'],
                                 'workdir': remapped['work']})
    args.update(overrides)
    return args


def test_remapped_layers_overlay_and_start_in_one_run(run_module, remapped):
    args = remapped_args(remapped)
    tree = snapshot_tree(remapped['base'])

    predicted = run_module('ns_container', args, check=True)
    assert predicted['changed'] is True and not predicted['failed'], predicted.get('msg')
    assert predicted['remap_layers']['changed'] is True and predicted['overlay']['actions'][-1] == 'mount'
    assert predicted['state'] == 'started'
    assert not user_exists(REMAP_USER) and snapshot_tree(remapped['base']) == tree
    assert mounted_overlay(remapped['merged']) is None

    real = run_module('ns_container', args)
    assert real['changed'] is True and not real['failed'], real.get('msg')
    assert user_exists(REMAP_USER) and running(real)
    shifted = real['remap_layers']
    uid, gid = shifted['uid_start'], shifted['gid_start']
    assert (predicted['remap_layers']['uid_start'], predicted['remap_layers']['gid_start']) == (uid, gid)
    dest = shifted['copies'][0]['dest']
    assert dest == os.path.join(remapped['root'], f'{uid}.{gid}', 'lower1-base')
    assert (os.lstat(os.path.join(dest, 'bin', 'busybox')).st_uid, os.lstat(dest).st_gid) == (uid, gid)
    entry = mounted_overlay(remapped['merged'])
    assert entry is not None and mountinfo.overlay_layers(entry)['lowerdirs'] == [dest]
    for directory in (remapped['own'], remapped['upper'], remapped['work'], remapped['merged']):
        assert (os.stat(directory).st_uid, os.stat(directory).st_gid) == (uid, gid), directory
    assert real['userns'] == {'uid_map': f'0 {uid} 65536', 'gid_map': f'0 {gid} 65536'}
    commands = real['commands']
    assert commands.index(real['overlay']['command']) == len(shifted['commands'])
    assert commands[:len(shifted['commands'])] == shifted['commands'] and commands[-1] == real['shell_command']

    # Root inside, the range's first uid outside: what it writes lands in the upper layer as that uid.
    assert inside(real['pid'], 'id', '-u') == '0\n'
    inside(real['pid'], 'sh', '-c', 'echo data > /root/kept')
    kept = os.path.join(remapped['upper'], 'root', 'kept')
    assert os.lstat(kept).st_uid == uid

    again = run_module('ns_container', args)
    assert again['changed'] is False, again['msg']
    assert again['pid'] == real['pid'] and again['remap_layers']['changed'] is False
    assert run_module('ns_container', args, check=True)['changed'] is False

    gone = run_module('ns_container', dict(args, state='absent'))
    assert gone['changed'] is True and mounted_overlay(remapped['merged']) is None, gone['msg']
    assert os.path.exists(kept) and os.path.isdir(dest)
    assert run_module('ns_container', dict(args, state='absent'))['changed'] is False


@pytest.mark.parametrize('overrides, fragment', [
    ({'overlay': None}, 'userns_remap_create needs userns_remap and overlay'),
    ({'userns_remap_root': 'remap'}, 'userns_remap_root'),
    ({'userns_remap': 'Bad User!'}, 'userns_remap'),
    ('two-lowers-one-name', 'overlay.lowerdirs[1]'),
], ids=['create-without-overlay', 'relative-root', 'bad-user', 'same-last-component'])
def test_bad_remapped_input_names_the_option_and_changes_nothing(run_module, remapped, overrides, fragment):
    if overrides == 'two-lowers-one-name':
        other = make_busybox_rootfs(os.path.join(remapped['base'], 'other', 'lower1-base'))
        overrides = {'overlay': {'lowerdirs': [remapped['lower'], other], 'upperdir': remapped['upper'],
                                 'workdir': remapped['work']}}
    args = {key: value for key, value in remapped_args(remapped, **overrides).items() if value is not None}
    tree = snapshot_tree(remapped['base'])
    for check in (True, False):
        result = run_module('ns_container', args, check=check)
        assert result['failed'] is True and result['changed'] is False, result.get('msg')
        assert fragment in result['msg'], result['msg']
        assert not user_exists(REMAP_USER) and snapshot_tree(remapped['base']) == tree
        assert snapshot_mounts(remapped['base']) == []
