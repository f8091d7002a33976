from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import overlay

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
    return overlay.desired_from_params(params(**overrides))


def no_defaults(_key):
    return None


def test_the_talks_request_is_valid():
    assert overlay.request_problems(params()) == []


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
    problems = overlay.request_problems(params(**overrides))
    assert any(fragment in problem for problem in problems), problems


def test_unmounting_needs_no_layers():
    assert overlay.request_problems(params(state='unmounted', lowerdirs=None, upperdir=None, workdir=None)) == []


@pytest.mark.parametrize('args, error', [
    ({'path': '/m', 'upperdir': '/u', 'state': 'unmounted'}, 'parameters are required together: upperdir, workdir'),
    ({'path': '/m', 'workdir': '/w', 'lowerdirs': ['/a', '/b']}, 'parameters are required together: upperdir, workdir'),
    ({'path': '/m'}, 'state is mounted but all of the following are missing: lowerdirs'),
    ({'path': '/m', 'state': 'unmounted', 'persist': True}, 'persist is True but all of the following are missing: lowerdirs'),
    ({'path': '/m', 'state': 'unmounted'}, None),
    ({'path': '/m', 'lowerdirs': ['/a', '/b']}, None),
])
def test_argument_spec_declares_what_goes_together(args, error):
    result = ArgumentSpecValidator(overlay.argument_spec(), **overlay.constraints()).validate(args)
    assert result.error_messages == ([error] if error else [])


def test_mount_command_as_the_talk_typed_it():
    argv = overlay.mount_argv('mount', desired(options=['index=off']))
    assert argv == ['mount', '-t', 'overlay', 'overlay', '-o',
                    'lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work,index=off',
                    '/overlay/merged']


def test_read_only_overlay_has_no_upper_options():
    argv = overlay.mount_argv('mount', desired(upperdir=None, workdir=None))
    assert argv[5] == 'lowerdir=/overlay/lower2-file:/overlay/lower1-base'


def test_equal_mount_has_no_differences():
    assert overlay.differences(desired(), LIVE, no_defaults) == []
    assert overlay.differences(desired(options=['redirect_dir=on', 'rw']), LIVE, no_defaults) == []


def test_layer_order_matters():
    found = overlay.differences(desired(lowerdirs=['/overlay/lower1-base', '/overlay/lower2-file']), LIVE, no_defaults)
    assert len(found) == 1 and 'lowerdirs are' in found[0]


def test_each_difference_is_named():
    found = overlay.differences(desired(upperdir='/overlay/upper2', workdir='/overlay/work2', options=['index=on']),
                                LIVE, no_defaults)
    assert [item.split(' ', maxsplit=1)[0] for item in found] == ['upperdir', 'workdir', 'option']


def test_not_mounted_and_foreign_mounts():
    assert overlay.differences(desired(), None) == ['not mounted']
    tmpfs = mountinfo.parse_mountinfo_line('50 27 0:40 / /overlay/merged rw - tmpfs tmpfs rw')
    assert 'tmpfs' in overlay.differences(desired(), tmpfs)[0]


def test_options_hidden_at_their_kernel_default():
    # The kernel does not show index=off when index is off by default: then it is in effect.
    assert overlay.option_satisfied('index=off', LIVE, lambda key: 'off')
    assert not overlay.option_satisfied('index=off', LIVE, lambda key: 'on')
    assert overlay.option_satisfied('redirect_dir=on', LIVE, no_defaults)
    assert not overlay.option_satisfied('redirect_dir=off', LIVE, no_defaults)
    assert overlay.option_satisfied('noatime', mountinfo.parse_mountinfo_line(
        '45 27 0:39 / /m ro,noatime - overlay overlay ro,lowerdir=/a:/b'), no_defaults)
    assert overlay.option_satisfied('nosuid', LIVE, no_defaults) is False
    assert overlay.option_satisfied('ro', LIVE, no_defaults) is False


def test_overlay_from_entry():
    current = overlay.overlay_from_entry(LIVE)
    assert current['lowerdirs'] == ['/overlay/lower2-file', '/overlay/lower1-base']
    assert current['upperdir'] == '/overlay/upper'
    assert 'uuid=on' in current['options'] and all(not option.startswith('lowerdir') for option in current['options'])


FSTAB = '# /etc/fstab\nUUID=abc / ext4 defaults 0 1\n'


def test_fstab_gets_exactly_one_line_and_loses_it_again():
    wanted = desired()
    persisted = overlay.desired_fstab(FSTAB, wanted, persist=True)
    assert persisted == FSTAB + overlay.fstab_line(wanted) + '\n'
    assert overlay.desired_fstab(persisted, wanted, persist=True) == persisted
    doubled = persisted + overlay.fstab_line(wanted) + '\n'
    assert overlay.desired_fstab(doubled, wanted, persist=True) == persisted
    assert overlay.desired_fstab(persisted, wanted, persist=False) == FSTAB
    assert overlay.desired_fstab(FSTAB, wanted, persist=False) == FSTAB


def test_fstab_line_is_replaced_when_layers_change():
    persisted = overlay.desired_fstab(FSTAB, desired(), persist=True)
    changed = overlay.desired_fstab(persisted, desired(lowerdirs=['/overlay/lower3', '/overlay/lower1-base']), persist=True)
    assert changed.count('overlay /overlay/merged overlay') == 1
    assert 'lowerdir=/overlay/lower3:' in changed and changed.startswith(FSTAB)


def test_fstab_escapes_spaces_and_ignores_other_file_systems():
    spaced = desired(path='/srv/my lab/merged')
    line = overlay.fstab_line(spaced)
    assert line.split()[1] == '/srv/my\\040lab/merged'
    other = 'tmpfs /srv/my\\040lab/merged tmpfs defaults 0 0\n'
    assert overlay.desired_fstab(other, spaced, persist=False) == other


# --- what the kernel would do to the request (issue 10, family 2) ---

@pytest.mark.parametrize('overrides, fragment', [
    (dict(lowerdirs=['/overlay/l\\1', '/overlay/lower1-base']), 'lowerdirs[0] "/overlay/l\\1" contains a backslash'),
    (dict(lowerdirs=['/overlay/lower2-file', '/overlay/a"b']), 'lowerdirs[1] "/overlay/a"b" contains a double quote'),
    (dict(upperdir='/overlay/up\\per'), 'upperdir "/overlay/up\\per" contains a backslash'),
    (dict(workdir='/overlay/wo\\rk'), 'workdir "/overlay/wo\\rk" contains a backslash'),
    (dict(workdir='/overlay/wo"rk'), 'workdir "/overlay/wo"rk" contains a double quote'),
    (dict(options=['lowerdir+=/overlay/x']), 'adds a layer: give every lower layer in lowerdirs'),
    (dict(options=['datadir+=/overlay/x']), 'adds a layer'),
    (dict(options=['index=o\\ff']), 'contains a backslash or a double quote'),
    (dict(fstab='etc/fstab'), 'fstab must be an absolute path'),
    (dict(lock_timeout=-1), 'lock_timeout is -1'),
    (dict(lowerdirs=['/etc/overlay-lower', '/overlay/lower1-base']), 'lowerdirs[0] is "/etc/overlay-lower", inside /etc'),
    (dict(upperdir='/usr/lib/upper'), 'upperdir is "/usr/lib/upper", inside /usr'),
    (dict(workdir='/proc/driver'), 'workdir is "/proc/driver", inside /proc'),
])
def test_what_mount_would_reinterpret_is_refused_by_name(overrides, fragment):
    problems = overlay.request_problems(params(**overrides))
    assert any(fragment in problem for problem in problems), problems


def test_a_layer_symlinked_into_a_system_tree_is_refused(tmp_path):
    (tmp_path / 'to-etc').symlink_to('/etc')
    problems = overlay.request_problems(params(upperdir=f'{tmp_path}/to-etc/upper'))
    assert any(problem.startswith(f'upperdir "{tmp_path}/to-etc/upper" leads to /etc/upper through a symbolic link')
               for problem in problems), problems


def test_an_option_string_longer_than_a_page_is_refused_with_length_and_limit():
    lowers = [f'/overlay/{index:02d}-' + 'x' * 90 for index in range(44)]
    length = len(overlay.option_string(desired(lowerdirs=lowers)))
    assert length > 4095
    problems = overlay.request_problems(params(lowerdirs=lowers), data_limit=4095)
    assert len(problems) == 1 and f'mount option string of {length} bytes' in problems[0] and 'at most 4095' in problems[0]
    assert '(44 now)' in problems[0]
    assert overlay.request_problems(params(lowerdirs=lowers), data_limit=length) == []
    # unmounting needs no option string at all
    assert overlay.request_problems(params(lowerdirs=lowers, state='unmounted'), data_limit=10) == []


def test_the_limit_is_one_page_less_its_nul():
    import os
    assert overlay.mount_data_limit() == os.sysconf('SC_PAGE_SIZE') - 1


# --- the live mount's generic flags (family 6: remounted read-only behind the module's back) ---

def line(mount_options, super_options='rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,'
                                      'workdir=/overlay/work,uuid=on'):
    return mountinfo.parse_mountinfo_line(f'45 27 0:39 / /overlay/merged {mount_options} - overlay overlay {super_options}')


@pytest.mark.parametrize('entry, wanted_options, fragment', [
    (line('ro,relatime', 'ro,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work'),
     [], 'the mount is read-only (ro), want read-write (rw)'),
    (line('ro,relatime'), [], 'the mount is read-only (ro), want read-write (rw)'),          # per mount only (bind remount)
    (line('rw,nosuid,relatime'), [], 'nosuid is in effect but was not asked for'),
    (line('rw,noexec,relatime'), [], 'noexec is in effect but was not asked for'),
    (line('rw,relatime'), ['nodev'], 'option nodev is not in effect'),
    (line('rw,noatime'), [], 'access times are noatime, want relatime'),
    (line('rw'), [], 'access times are strictatime, want relatime'),
    (line('rw,relatime'), ['ro'], 'the mount is read-write (rw), want read-only (ro)'),
    (line('rw,relatime,nosymfollow'), [], 'nosymfollow is in effect but was not asked for'),
])
def test_flags_changed_behind_the_modules_back_are_differences(entry, wanted_options, fragment):
    found = overlay.differences(desired(options=wanted_options), entry, no_defaults)
    assert fragment in found, found
    assert overlay.layer_differences(desired(options=wanted_options), entry, no_defaults) == []


@pytest.mark.parametrize('entry, wanted_options', [
    (line('rw,relatime'), []),
    (line('rw,relatime'), ['rw', 'suid', 'relatime', 'atime']),
    (line('rw,nosuid,nodev,noexec,noatime'), ['nosuid', 'nodev', 'noexec', 'noatime']),
    (line('ro,relatime', 'ro,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work'), ['ro']),
    (line('rw', 'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work'), ['strictatime']),
])
def test_flags_as_asked_are_no_difference(entry, wanted_options):
    assert overlay.differences(desired(options=wanted_options), entry, no_defaults) == []


def test_a_read_only_overlay_is_read_only_by_its_superblock():
    entry = mountinfo.parse_mountinfo_line('45 27 0:39 / /m rw,relatime - overlay overlay ro,lowerdir=/a:/b,redirect_dir=on')
    wanted = overlay.desired_from_params(params(path='/m', lowerdirs=['/a', '/b'], upperdir=None, workdir=None))
    assert overlay.differences(wanted, entry, no_defaults) == []
    assert overlay.flag_words(overlay.live_flags(entry)) == ['ro', 'relatime']


def test_remount_sets_every_flag_and_ignores_fstab_and_the_live_options():
    argv = overlay.remount_argv('mount', desired(options=['nosuid', 'noatime', 'index=off']))
    assert argv == ['mount', '--options-mode', 'ignore', '-o', 'remount,rw,nosuid,noatime,dev,exec,diratime', '/overlay/merged']
    read_only = overlay.remount_argv('mount', desired(upperdir=None, workdir=None))
    assert read_only == ['mount', '--options-mode', 'ignore', '-o', 'remount,bind,rw,relatime,suid,dev,exec,diratime', '/overlay/merged']


def test_a_live_mount_with_lowerdir_plus_is_read_as_its_layers():
    entry = mountinfo.parse_mountinfo_line('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
                                           'rw,lowerdir+=/overlay/lower2-file,lowerdir+=/overlay/lower1-base,'
                                           'upperdir=/overlay/upper,workdir=/overlay/work')
    assert overlay.differences(desired(), entry, no_defaults) == []
    data = mountinfo.parse_mountinfo_line('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
                                          'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base::/overlay/data,'
                                          'upperdir=/overlay/upper,workdir=/overlay/work')
    assert overlay.differences(desired(), data, no_defaults) == ["data-only layers ['/overlay/data'] are mounted, want none"]


# --- the kernel's reason is this mount's (family 5) ---

def test_kmsg_records_are_read_as_their_text():
    assert overlay.kmsg_message("3,1234,5678,-;overlayfs: failed to resolve '/x': -2\n SUBSYSTEM=x\n") == \
        "overlayfs: failed to resolve '/x': -2"


def test_reasons_are_only_overlayfs_lines_about_this_mount():
    records = ['6,10,1,-;eth0: link up\n',
               "3,11,2,-;overlayfs: failed to resolve '/other/lower': -2\n",     # another mount, at the same time
               "3,12,3,-;overlayfs: failed to resolve '/overlay/lower1-base/': -2\n",
               '4,13,4,-;overlayfs: upperdir is in use by another mount\n']
    assert overlay.overlay_reasons(records, ['/overlay/lower1-base', '/overlay/merged']) == [
        "failed to resolve '/overlay/lower1-base/': -2", 'upperdir is in use by another mount']
    assert overlay.overlay_reasons(records[:2], ['/overlay/merged']) == []


def test_an_unreadable_kernel_log_is_said_so(tmp_path):
    log = overlay.KernelLog(str(tmp_path / 'no-kmsg'))
    assert log.fd is None and 'No such file' in log.error
    assert log.new_records() == []


def test_only_records_written_after_the_mark_are_read(tmp_path):
    kmsg = tmp_path / 'kmsg'
    kmsg.write_text("3,1,1,-;overlayfs: old line from another mount\n")
    log = overlay.KernelLog(str(kmsg))
    try:
        assert log.new_records() == []
        with open(kmsg, 'a', encoding='utf-8') as handle:
            handle.write("3,2,2,-;overlayfs: missing 'lowerdir'\n")
        assert [overlay.kmsg_message(record) for record in log.new_records()] == ["overlayfs: missing 'lowerdir'"]
    finally:
        log.close()


# --- fstab checked before anything changes (family 3) ---

def test_fstab_problems_are_found_before_any_change(tmp_path):
    wanted = desired()
    (tmp_path / 'dir').mkdir()
    assert 'is a directory' in overlay.fstab_problems(str(tmp_path / 'dir'), wanted, True)[0]
    assert 'is a directory' in overlay.fstab_problems(str(tmp_path / 'dir'), wanted, False)[0]
    missing_parent = overlay.fstab_problems(str(tmp_path / 'nowhere' / 'fstab'), wanted, True)
    assert f'its directory {tmp_path}/nowhere does not exist' in missing_parent[0]
    assert overlay.fstab_problems(str(tmp_path / 'nowhere' / 'fstab'), wanted, False) == []
    (tmp_path / 'binary').write_bytes(b'\xff\xfe\x00')
    assert 'cannot be read' in overlay.fstab_problems(str(tmp_path / 'binary'), wanted, True)[0]
    os_fifo = tmp_path / 'fifo'
    import os
    os.mkfifo(os_fifo)
    assert 'not a regular file' in overlay.fstab_problems(str(os_fifo), wanted, True)[0]
    (tmp_path / 'fstab').write_text(FSTAB)
    assert overlay.fstab_problems(str(tmp_path / 'fstab'), wanted, True) == []
    assert overlay.fstab_problems(str(tmp_path / 'new-fstab'), wanted, True) == []


def test_values_longer_than_fsconfig_takes_are_refused_only_where_mount_uses_it():
    lowers = [f'/overlay/{index:02d}-' + 'x' * 60 for index in range(4)]
    wanted = desired(lowerdirs=lowers, options=['index=off'])
    length = len(':'.join(lowers))
    assert overlay.long_option_values(wanted) == [('lowerdir', length)]
    new_api = 'mount from util-linux 2.41 (libmount 2.41.0: selinux, btrfs, verity, namespaces, idmapping, fd-based-mount)\n'
    problems = overlay.fsconfig_problems(wanted, new_api)
    assert len(problems) == 1 and f'lowerdirs make a lowerdir= value of {length} bytes' in problems[0]
    assert 'at most 255 bytes per value' in problems[0] and '(mount from util-linux 2.41' in problems[0]
    old_api = 'mount from util-linux 2.38.1 (libmount 2.38.1: selinux, smack, btrfs, verity, namespaces, assert, debug)\n'
    assert overlay.fsconfig_problems(wanted, old_api) == []
    assert overlay.long_option_values(desired()) == []
