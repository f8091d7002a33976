from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.modules import overlay_mount

LIVE = mountinfo.parse_mountinfo_line(
    '45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
    'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work,redirect_dir=on,uuid=on')


def params(**overrides):
    base = dict(path='/overlay/merged', lowerdirs=['/overlay/lower2-file', '/overlay/lower1-base'],
                upperdir='/overlay/upper', workdir='/overlay/work', options=[], state='mounted',
                persist=False, fstab='/etc/fstab', create_dirs=True)
    base.update(overrides)
    return base


def desired(**overrides):
    return overlay_mount.desired_from_params(params(**overrides))


def no_defaults(_key):
    return None


def test_the_talks_request_is_valid():
    assert overlay_mount.request_problems(params()) == []


@pytest.mark.parametrize('overrides, fragment', [
    (dict(path='overlay/merged'), 'path must be an absolute path'),
    (dict(path='/'), 'system directory'),
    (dict(path='/usr'), 'system directory'),
    (dict(lowerdirs=[]), 'lowerdirs is empty'),
    (dict(state='unmounted', persist=True, lowerdirs=[]), 'lowerdirs is empty'),
    (dict(upperdir=''), 'upperdir must not be empty'),
    # Given as null: AnsibleModule's required_together and required_if count them as given.
    (dict(workdir=None), 'upperdir is set but workdir is empty'),
    (dict(upperdir=None), 'workdir is set but upperdir is empty'),
    (dict(lowerdirs=None), 'lowerdirs is empty'),
    (dict(lowerdirs=['/overlay/a:b']), 'contains a colon'),
    (dict(lowerdirs=['/overlay/lower1-base', '/overlay/lower1-base/']), 'more than once'),
    (dict(upperdir=None, workdir=None, lowerdirs=['/overlay/lower1-base']), 'needs at least two lowerdirs'),
    (dict(workdir='/overlay/upper/work'), 'inside one another'),
    (dict(upperdir='/overlay/merged/upper'), 'is inside path'),
    (dict(upperdir='/overlay/lower1-base/up'), 'overlap'),
    (dict(lowerdirs=['/overlay/merged/x', '/overlay/b']), 'overlap'),
    (dict(options=['lowerdir=/x']), 'use the lowerdirs/lowerdir option'),
    (dict(options=['index=off,ro']), 'single mount option'),
    (dict(upperdir='/overlay/up,per'), 'contains a comma'),
])
def test_bad_requests_name_the_problem(overrides, fragment):
    problems = overlay_mount.request_problems(params(**overrides))
    assert any(fragment in problem for problem in problems), problems


def test_unmounting_needs_no_layers():
    assert overlay_mount.request_problems(params(state='unmounted', lowerdirs=None, upperdir=None, workdir=None)) == []


@pytest.mark.parametrize('args, error', [
    ({'path': '/m', 'upperdir': '/u', 'state': 'unmounted'}, 'parameters are required together: upperdir, workdir'),
    ({'path': '/m', 'workdir': '/w', 'lowerdirs': ['/a', '/b']}, 'parameters are required together: upperdir, workdir'),
    ({'path': '/m'}, 'state is mounted but all of the following are missing: lowerdirs'),
    ({'path': '/m', 'state': 'unmounted', 'persist': True}, 'persist is True but all of the following are missing: lowerdirs'),
    ({'path': '/m', 'state': 'unmounted'}, None),
    ({'path': '/m', 'lowerdirs': ['/a', '/b']}, None),
])
def test_argument_spec_declares_what_goes_together(args, error):
    result = ArgumentSpecValidator(overlay_mount.argument_spec(), **overlay_mount.constraints()).validate(args)
    assert result.error_messages == ([error] if error else [])


def test_mount_command_as_the_talk_typed_it():
    argv = overlay_mount.mount_argv('mount', desired(options=['index=off']))
    assert argv == ['mount', '-t', 'overlay', 'overlay', '-o',
                    'lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work,index=off',
                    '/overlay/merged']


def test_read_only_overlay_has_no_upper_options():
    argv = overlay_mount.mount_argv('mount', desired(upperdir=None, workdir=None))
    assert argv[5] == 'lowerdir=/overlay/lower2-file:/overlay/lower1-base'


def test_equal_mount_has_no_differences():
    assert overlay_mount.differences(desired(), LIVE, no_defaults) == []
    assert overlay_mount.differences(desired(options=['redirect_dir=on', 'rw']), LIVE, no_defaults) == []


def test_layer_order_matters():
    found = overlay_mount.differences(desired(lowerdirs=['/overlay/lower1-base', '/overlay/lower2-file']), LIVE, no_defaults)
    assert len(found) == 1 and 'lowerdirs are' in found[0]


def test_each_difference_is_named():
    found = overlay_mount.differences(desired(upperdir='/overlay/upper2', workdir='/overlay/work2', options=['index=on']),
                                      LIVE, no_defaults)
    assert [item.split(' ', maxsplit=1)[0] for item in found] == ['upperdir', 'workdir', 'option']


def test_not_mounted_and_foreign_mounts():
    assert overlay_mount.differences(desired(), None) == ['not mounted']
    tmpfs = mountinfo.parse_mountinfo_line('50 27 0:40 / /overlay/merged rw - tmpfs tmpfs rw')
    assert 'tmpfs' in overlay_mount.differences(desired(), tmpfs)[0]


def test_options_hidden_at_their_kernel_default():
    # The kernel does not show index=off when index is off by default: then it is in effect.
    assert overlay_mount.option_satisfied('index=off', LIVE, lambda key: 'off')
    assert not overlay_mount.option_satisfied('index=off', LIVE, lambda key: 'on')
    assert overlay_mount.option_satisfied('redirect_dir=on', LIVE, no_defaults)
    assert not overlay_mount.option_satisfied('redirect_dir=off', LIVE, no_defaults)
    assert overlay_mount.option_satisfied('noatime', mountinfo.parse_mountinfo_line(
        '45 27 0:39 / /m ro,noatime - overlay overlay ro,lowerdir=/a:/b'), no_defaults)
    assert overlay_mount.option_satisfied('nosuid', LIVE, no_defaults) is False
    assert overlay_mount.option_satisfied('ro', LIVE, no_defaults) is False


def test_overlay_from_entry():
    current = overlay_mount.overlay_from_entry(LIVE)
    assert current['lowerdirs'] == ['/overlay/lower2-file', '/overlay/lower1-base']
    assert current['upperdir'] == '/overlay/upper'
    assert 'uuid=on' in current['options'] and all(not option.startswith('lowerdir') for option in current['options'])


FSTAB = '# /etc/fstab\nUUID=abc / ext4 defaults 0 1\n'


def test_fstab_gets_exactly_one_line_and_loses_it_again():
    wanted = desired()
    persisted = overlay_mount.desired_fstab(FSTAB, wanted, persist=True)
    assert persisted == FSTAB + overlay_mount.fstab_line(wanted) + '\n'
    assert overlay_mount.desired_fstab(persisted, wanted, persist=True) == persisted
    doubled = persisted + overlay_mount.fstab_line(wanted) + '\n'
    assert overlay_mount.desired_fstab(doubled, wanted, persist=True) == persisted
    assert overlay_mount.desired_fstab(persisted, wanted, persist=False) == FSTAB
    assert overlay_mount.desired_fstab(FSTAB, wanted, persist=False) == FSTAB


def test_fstab_line_is_replaced_when_layers_change():
    persisted = overlay_mount.desired_fstab(FSTAB, desired(), persist=True)
    changed = overlay_mount.desired_fstab(persisted, desired(lowerdirs=['/overlay/lower3', '/overlay/lower1-base']), persist=True)
    assert changed.count('overlay /overlay/merged overlay') == 1
    assert 'lowerdir=/overlay/lower3:' in changed and changed.startswith(FSTAB)


def test_fstab_escapes_spaces_and_ignores_other_file_systems():
    spaced = desired(path='/srv/my lab/merged')
    line = overlay_mount.fstab_line(spaced)
    assert line.split()[1] == '/srv/my\\040lab/merged'
    other = 'tmpfs /srv/my\\040lab/merged tmpfs defaults 0 0\n'
    assert overlay_mount.desired_fstab(other, spaced, persist=False) == other
