from __future__ import annotations

import os

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.modules import layer


def params(files=None, **overrides):
    base = dict(path='/overlay/lower2-file', state='present', directory_mode='0755',
                files=files if files is not None else [file_item('/file01.txt', 'Texto\n')])
    base.update(overrides)
    return base


def file_item(path, content, mode='0644', owner=None, group=None):
    return dict(path=path, content=content, mode=mode, owner=owner, group=group)


def test_the_talks_layer_is_valid():
    problems, wanted, directory_mode = layer.request_problems(params())
    assert problems == []
    assert directory_mode == 0o755
    assert wanted == [{'inner': '/file01.txt', 'content': b'Texto\n', 'mode': 0o644, 'uid': None, 'gid': None,
                       'option': 'files[0]'}]


@pytest.mark.parametrize('value, expected', [('0644', 0o644), ('644', 0o644), ('0755', 0o755), ('1777', 0o1777),
                                             (420, 0o644)])
def test_modes_are_octal(value, expected):
    assert layer.parse_mode('mode', value) == (expected, None)


@pytest.mark.parametrize('value', ['u+rwx', '0844', '64', 'rw-r--r--', '', 99999, True])
def test_a_mode_that_is_not_octal_is_refused(value):
    mode, problem = layer.parse_mode('files[0].mode', value)
    assert mode is None and problem.startswith('files[0].mode')


@pytest.mark.parametrize('inner, expected', [('file01.txt', '/file01.txt'), ('/etc//motd', '/etc/motd'),
                                             ('./a/./b', '/a/b'), ('//x', '/x')])
def test_inner_paths_are_seen_from_the_layers_root(inner, expected):
    assert layer.normalize_inner(inner) == expected


@pytest.mark.parametrize('path, fragment', [
    ('', 'must name a file'), ('/', 'must name a file'), ('../etc/passwd', '".."'),
    ('/a/../../b', '".."'), ('a\nb', 'newline'),
])
def test_file_paths_that_leave_the_layer_are_refused(path, fragment):
    problems, _wanted, _mode = layer.request_problems(params([file_item(path, 'x')]))
    assert len(problems) == 1 and fragment in problems[0]


@pytest.mark.parametrize('path, fragment', [
    ('relative/dir', 'absolute path'), ('/', 'system directory'), ('/etc', 'system directory'), ('//usr//', 'system directory'),
])
def test_a_layer_directory_must_be_a_directory_of_its_own(path, fragment):
    problems, _wanted, _mode = layer.request_problems(params(path=path))
    assert any(fragment in problem for problem in problems), problems


def test_a_file_listed_twice_or_under_another_file_is_refused():
    problems, _wanted, _mode = layer.request_problems(params([file_item('/a', 'x'), file_item('a', 'y')]))
    assert problems == ['files[1].path names /a again (files[0] did already): list each file once.']
    problems, _wanted, _mode = layer.request_problems(params([file_item('/etc', 'x'), file_item('/etc/motd', 'y')]))
    assert problems == ['files[0].path /etc is a file, yet files[1].path /etc/motd lies below it.']


def test_an_empty_file_list_and_unknown_owners_are_refused():
    problems, _wanted, _mode = layer.request_problems(params([]))
    assert problems == ['files is empty: list at least one file for the layer (path and content).']
    problems, _wanted, _mode = layer.request_problems(params([file_item('/a', 'x', owner='no-such-user-xyz', group='no-such-group-xyz')]))
    assert problems == ['files[0].owner "no-such-user-xyz" does not exist on this host.',
                        'files[0].group "no-such-group-xyz" does not exist on this host.']


def test_owners_by_name_or_number():
    _problems, wanted, _mode = layer.request_problems(params([file_item('/a', 'x', owner='root', group='0'),
                                                              file_item('/b', 'x', owner='4242', group='4343')]))
    assert [(item['uid'], item['gid']) for item in wanted] == [(0, 0), (4242, 4343)]


class FakeStat:
    def __init__(self, mode=0o100644, uid=0, gid=0):
        self.st_mode, self.st_uid, self.st_gid = mode, uid, gid


def wanted_item(**overrides):
    item = {'inner': '/f', 'content': b'Texto\n', 'mode': 0o644, 'uid': None, 'gid': None, 'option': 'files[0]'}
    item.update(overrides)
    return item


def test_file_changes_names_each_difference():
    assert layer.file_changes(wanted_item(), None, None) == ['create']
    assert layer.file_changes(wanted_item(), b'Texto\n', FakeStat()) == []
    assert layer.file_changes(wanted_item(), b'Otro\n', FakeStat()) == ['content']
    assert layer.file_changes(wanted_item(uid=1, gid=2), b'Texto\n', FakeStat(mode=0o100600)) == ['mode', 'owner', 'group']
    # No owner asked: whoever owns the file may keep it.
    assert layer.file_changes(wanted_item(), b'Texto\n', FakeStat(uid=1000, gid=1000)) == []


@pytest.mark.parametrize('content, expected', [
    (b'Texto\n', 'echo Texto > /l/f'),
    (b'two words\n', "echo 'two words' > /l/f"),
    (b'\n', 'echo > /l/f'),
    (b'no newline', "printf %s 'no newline' > /l/f"),
    (b'-n\n', "printf %s '-n\n' > /l/f"),
    (b'a\\tb\n', "printf %s 'a\\tb\n' > /l/f"),
])
def test_the_equivalent_shell_line_is_the_dockerfiles_echo_where_it_fits(content, expected):
    assert layer.describe_write('/l/f', content) == expected


def test_the_equivalent_command_of_the_talks_layer():
    _problems, wanted, _mode = layer.request_problems(params([file_item('/file01.txt', 'Texto\n'),
                                                              file_item('/usr/local/bin/hi', 'x\n', mode='0755')]))
    assert layer.equivalent_command('/overlay/lower2-file', wanted) == (
        'mkdir -p /overlay/lower2-file; echo Texto > /overlay/lower2-file/file01.txt; '
        'mkdir -p /overlay/lower2-file/usr/local/bin; echo x > /overlay/lower2-file/usr/local/bin/hi; '
        'chmod 0755 /overlay/lower2-file/usr/local/bin/hi')


def test_missing_directories_are_listed_parents_first(tmp_path):
    layer_dir = str(tmp_path / 'a' / 'layer')
    wanted = [wanted_item(inner='/etc/motd'), wanted_item(inner='/etc/skel/.bashrc'), wanted_item(inner='/top')]
    assert layer.missing_directories(layer_dir, wanted) == [
        str(tmp_path / 'a'), layer_dir, f'{layer_dir}/etc', f'{layer_dir}/etc/skel']


def test_symlinks_and_non_directories_on_the_way_are_refused(tmp_path):
    (tmp_path / 'etc').symlink_to('/etc')
    (tmp_path / 'file').write_text('x')
    (tmp_path / 'dir').mkdir()
    problems = layer.path_problems(str(tmp_path), [wanted_item(inner='/etc/passwd'), wanted_item(inner='/file/below'),
                                                   wanted_item(inner='/dir'), wanted_item(inner='/new/file')])
    assert problems == [
        f'{tmp_path}/etc is a symbolic link: /etc/passwd would be written wherever it points (on the host, outside the '
        'layer). Replace the link by a directory or a file first.',
        f'{tmp_path}/file is not a directory, so /file/below cannot be created below it.',
        f'{tmp_path}/dir exists and is not a regular file; the module replaces files only.',
    ]
    assert layer.path_problems(str(tmp_path / 'file'), [wanted_item()]) == [f'path "{tmp_path}/file" exists and is not a directory.']


def test_the_equivalent_command_sets_the_owner_before_the_mode():
    # chown clears setuid and setgid: typed the other way round, the mode would not hold.
    _problems, wanted, _mode = layer.request_problems(params([file_item('/s', 'x\n', mode='4755', owner='4242', group='4343'),
                                                              file_item('/g', 'x\n', group='4343')]))
    assert layer.equivalent_command('/l', wanted) == (
        'mkdir -p /l; echo x > /l/s; chown 4242:4343 /l/s; chmod 4755 /l/s; echo x > /l/g; chown :4343 /l/g')


@pytest.mark.parametrize('overrides, problems', [
    (dict(files=None), []),
    (dict(files=[file_item('/a', 'x')]), ['files lists what to write into the layer; state=absent removes the whole layer directory, so leave files out.']),
    (dict(files=None, path='/var/lib'), ['path is "/var/lib", a system directory: using it would hide or damage the running '
                                         'system. Use a directory of its own, such as /overlay/merged.']),
    (dict(files=None, path='overlay'), ['path must be an absolute path, got "overlay" (write it from /, e.g. /overlay/overlay).']),
])
def test_what_state_absent_accepts(overrides, problems):
    request = params(state='absent')
    request.update(overrides)
    assert layer.request_problems(request)[0] == problems


TALK_MOUNTS = mountinfo.parse_mountinfo('\n'.join([
    '27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw',
    '45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
    'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work',
]))


@pytest.mark.parametrize('path, problems', [
    ('/overlay/lower2-file', ['the overlay mounted at /overlay/merged uses /overlay/lower2-file as lowerdir: removing a '
                              'layer under a mounted overlay is undefined behaviour. Unmount the overlay first (reset.yml, '
                              'or unboxed.lab.overlay_mount path=/overlay/merged state=unmounted).']),
    ('/overlay/merged', ['/overlay/merged is a mount point (overlay from overlay): removing it would delete the files of '
                         'the mounted file system. Unmount it first (umount /overlay/merged).']),
    ('/overlay', ['/overlay/merged (overlay) is mounted inside /overlay: removing /overlay would delete through the mount. '
                  'Unmount it first (umount /overlay/merged).',
                  'the overlay mounted at /overlay/merged uses /overlay/lower2-file as lowerdir, /overlay/lower1-base as '
                  'lowerdir, /overlay/upper as upperdir, /overlay/work as workdir: removing a layer under a mounted overlay '
                  'is undefined behaviour. Unmount the overlay first (reset.yml, or unboxed.lab.overlay_mount '
                  'path=/overlay/merged state=unmounted).']),
    ('/overlay/lower3', []),
])
def test_a_layer_in_use_is_refused_naming_the_mount(path, problems):
    assert layer.in_use_problems(path, mountinfo.uses_of_tree(path, TALK_MOUNTS)) == problems


def test_remove_tree_removes_links_and_never_what_they_point_to(tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'keep').write_text('x')
    tree = tmp_path / 'layer'
    (tree / 'a' / 'b').mkdir(parents=True)
    (tree / 'a' / 'b' / 'f').write_text('x')
    (tree / 'a' / 'to-dir').symlink_to(outside)
    (tree / 'to-file').symlink_to(outside / 'keep')
    (tree / 'dangling').symlink_to(tmp_path / 'nowhere')
    assert layer.count_tree(str(tree)) == {'files': 4, 'directories': 3}
    layer.remove_tree(str(tree))
    assert not tree.exists() and (outside / 'keep').read_text() == 'x'


def test_differences_are_the_change_test_and_the_reason(tmp_path):
    layer_dir = tmp_path / 'layer'
    wanted = [wanted_item(inner='/etc/motd', content=b'hola\n'), wanted_item(inner='/file01.txt', content=b'Texto\n', mode=0o600)]
    found = layer.differences(str(layer_dir), wanted)
    assert found.actions == [f'create directory {layer_dir}', f'create directory {layer_dir}/etc',
                             f'create {layer_dir}/etc/motd', f'create {layer_dir}/file01.txt']
    assert found.directories == [str(layer_dir), f'{layer_dir}/etc']
    assert [diff['before_header'] for diff in found.diffs] == [f'{layer_dir}/etc/motd (absent)', f'{layer_dir}/file01.txt (absent)']

    (layer_dir / 'etc').mkdir(parents=True)
    (layer_dir / 'etc' / 'motd').write_text('hola\n')
    (layer_dir / 'etc' / 'motd').chmod(0o644)
    (layer_dir / 'file01.txt').write_text('Otro\n')
    (layer_dir / 'file01.txt').chmod(0o644)
    found = layer.differences(str(layer_dir), wanted)
    assert found.actions == [f'change content, mode of {layer_dir}/file01.txt']
    assert [(path, changes) for path, _item, changes in found.writes] == [(f'{layer_dir}/file01.txt', ['content', 'mode'])]
    assert found.diffs[0]['before'] == 'Otro\n' and found.diffs[0]['after'] == 'Texto\n'


@pytest.mark.parametrize('args, error', [
    ({'path': '/overlay/lower2-file'}, 'state is present but any of the following are missing: files, archive, layers'),
    ({'path': '/overlay/lower2-file', 'state': 'absent'}, None),
    ({'path': '/overlay/lower1-base', 'archive': '/var/cache/unboxed/base/debian.tar.gz'}, None),
])
def test_argument_spec_declares_that_a_layer_to_write_needs_files_or_an_archive(args, error):
    result = ArgumentSpecValidator(layer.argument_spec(), **layer.constraints()).validate(args)
    assert result.error_messages == ([error] if error else [])


@pytest.mark.parametrize('files, expected', [
    ('abc', 'files must be a list of files, each a dictionary with path and content'),
    ('path=/a content=x', "got the string 'path=/a content=x'"),
    ({'path': '/a', 'content': 'x'}, 'files must be a list of files'),
    (5, 'got the number 5'),
    (['/a', '/b'], "files[0] must be a dictionary with path and content, such as {path: /file01.txt"),
    ([None], 'files[0] must be a dictionary with path and content'),
    ([[{'path': '/a', 'content': 'x'}]], 'files[0] must be a dictionary with path and content'),
    ([file_item('/a', 'x'), {'content': 'x'}], 'files[1].path is missing'),
    ([{'path': '/a'}], 'files[0].content is missing'),
    ([dict(file_item('/a', 'x'), bogus=1, other=2)], 'files[0] has unknown keys bogus, other; a file takes path, content, mode, owner, group.'),
    ([file_item(['x'], 'x')], 'files[0].path must be a path inside the layer, as a string; got a list'),
    ([file_item('/a', {'a': 1})], 'files[0].content must be text; got a dictionary'),
    ([file_item('/a', True)], 'files[0].content must be text; got the boolean True'),
    ([file_item('/a', 'x', owner=['root'])], 'files[0].owner must be a user name or number; got a list'),
    ([file_item('/a', 'x', group={'g': 1})], 'files[0].group must be a group name or number; got a dictionary'),
    ([file_item('/a', 'x', mode=True)], "files[0].mode must be an octal mode such as '0644'"),
])
def test_every_wrong_shape_of_files_names_the_item_and_what_was_expected(files, expected):
    problems, _wanted, _mode = layer.request_problems(params(files))
    assert any(expected in problem for problem in problems), problems


def test_numbers_where_yaml_reads_them_are_taken_as_text():
    problems, wanted, _mode = layer.request_problems(params([file_item('/a', 42, owner=4242, group=0)]))
    assert problems == [] and (wanted[0]['content'], wanted[0]['uid'], wanted[0]['gid']) == (b'42', 4242, 0)


@pytest.mark.parametrize('owner, group, expected', [
    ('4294967294', None, []),
    ('4294967295', None, ['files[0].owner 4294967295 is too large for a user or group ID (at most 4294967294).']),
    ('99999999999999999999', None, ['files[0].owner 99999999999999999999 is too large for a user or group ID (at most 4294967294).']),
    (None, '4294967296', ['files[0].group 4294967296 is too large for a user or group ID (at most 4294967294).']),
    ('-1', None, ['files[0].owner "-1" does not exist on this host.']),
    ('١٢', None, ['files[0].owner "١٢" does not exist on this host.']),      # digits, but not ASCII ones
])
def test_an_owner_number_must_fit_a_user_id(owner, group, expected):
    assert layer.request_problems(params([file_item('/a', 'x', owner=owner, group=group)]))[0] == expected


def test_names_and_paths_longer_than_linux_allows_are_refused_before_anything():
    problems, _wanted, _mode = layer.request_problems(params([file_item('/' + 'n' * 256, 'x')]))
    assert problems and 'longer than 255 bytes' in problems[0]
    deep = '/'.join(['d' * 200] * 21)
    problems, _wanted, _mode = layer.request_problems(params([file_item(deep, 'x')]))
    assert problems and 'more than Linux allows (4095)' in problems[0]


@pytest.mark.parametrize('text', ['0644\n', '644\n', '0755 '])
def test_a_mode_with_a_trailing_newline_is_refused(text):
    assert layer.parse_mode('mode', text)[0] is None


def test_the_staging_directory_is_a_hidden_sibling_of_the_layer():
    assert layer.staging_directory('/overlay/lower2-file') == '/overlay/.lower2-file.unboxed-staging'
    long_name = layer.staging_directory('/srv/' + 'x' * 250)
    assert long_name.startswith('/srv/.') and long_name.endswith('.unboxed-staging') and len(os.path.basename(long_name)) <= 255


def staged_layer(tmp_path):
    layer_dir = tmp_path / 'layer'
    layer_dir.mkdir()
    (layer_dir / 'a').write_text('old a\n')
    (layer_dir / 'm').write_text('mode\n')
    (layer_dir / 'm').chmod(0o644)
    return layer_dir


def staged_transaction(layer_dir, found):
    """A layer.Transaction with the run's new directories made and every new content staged, not yet committed."""
    transaction = layer.Transaction(str(layer_dir))
    for directory in found.directories:
        transaction.make_directory(directory, 0o755)
    for host_path, item, changes in found.writes:
        if 'content' in changes or 'create' in changes:
            transaction.stage(host_path, item)
    return transaction


def test_a_transaction_puts_everything_in_place_and_leaves_nothing_behind(tmp_path):
    layer_dir = staged_layer(tmp_path)
    wanted = [wanted_item(inner='/a', content=b'new a\n'), wanted_item(inner='/d/b', content=b'b\n'),
              wanted_item(inner='/m', content=b'mode\n', mode=0o600)]
    found = layer.differences(str(layer_dir), wanted)
    transaction = staged_transaction(layer_dir, found)
    assert sorted(os.listdir(layer_dir)) == ['a', 'd', 'm']          # staged contents are not in the layer
    assert len(os.listdir(layer.staging_directory(str(layer_dir)))) == 2
    transaction.commit(found.writes)
    transaction.finish()
    assert (layer_dir / 'a').read_text() == 'new a\n' and (layer_dir / 'd' / 'b').read_text() == 'b\n'
    assert os.stat(layer_dir / 'm').st_mode & 0o7777 == 0o600
    assert not os.path.lexists(layer.staging_directory(str(layer_dir)))
    assert layer.differences(str(layer_dir), wanted).actions == []


def test_a_failure_while_putting_files_in_place_undoes_the_whole_run(tmp_path):
    layer_dir = staged_layer(tmp_path)
    before = {name: (layer_dir / name).read_text() for name in ('a', 'm')}
    wanted = [wanted_item(inner='/m', content=b'mode\n', mode=0o600), wanted_item(inner='/a', content=b'new a\n'),
              wanted_item(inner='/d/b', content=b'b\n'), wanted_item(inner='/z', content=b'z\n')]
    found = layer.differences(str(layer_dir), wanted)
    transaction = staged_transaction(layer_dir, found)
    (layer_dir / 'z').mkdir()              # appears meanwhile: the last rename fails (a file cannot replace a directory)
    with pytest.raises(OSError):
        transaction.commit(found.writes)
    assert transaction.rollback() == []
    (layer_dir / 'z').rmdir()
    assert sorted(os.listdir(layer_dir)) == ['a', 'm']
    assert {name: (layer_dir / name).read_text() for name in ('a', 'm')} == before
    assert os.stat(layer_dir / 'm').st_mode & 0o7777 == 0o644
    assert not os.path.lexists(layer.staging_directory(str(layer_dir)))


def test_leftovers_of_an_interrupted_run_are_found_and_reported(tmp_path):
    layer_dir = staged_layer(tmp_path)
    staging = layer.staging_directory(str(layer_dir))
    os.mkdir(staging)
    for name in ('new.1', 'new.2'):
        with open(os.path.join(staging, name), 'w', encoding='utf-8') as handle:
            handle.write('half')
    (layer_dir / '.unboxed-tmp.new.3').write_text('half')
    (layer_dir / '.user-file').write_text('mine')
    found = layer.differences(str(layer_dir), [wanted_item(inner='/a', content=b'old a\n')])
    assert found.leftovers == [f'{staging}/new.1', f'{staging}/new.2', f'{layer_dir}/.unboxed-tmp.new.3']
    assert found.actions == [f'remove 3 temporary files of an interrupted run (in {staging}, {layer_dir})']
    layer.Transaction(str(layer_dir)).remove_leftovers(found.leftovers)
    assert not os.path.lexists(staging) and sorted(os.listdir(layer_dir)) == ['.user-file', 'a', 'm']


DIGEST = 'a' * 64


@pytest.mark.parametrize('overrides, problems', [
    (dict(), []),
    (dict(files=[file_item('/f', 'x')]), ['files and archive are mutually exclusive: a layer is either the files listed or '
                                          'the files of an archive.']),
    (dict(checksum=None), ['checksum is required with archive (the SHA-256 of the archive, 64 hexadecimal digits); through '
                           'the action plugin it is read from ARCHIVE.sha256 on the controller or computed.']),
    (dict(checksum='A' * 64), [f"checksum must be the archive's SHA-256, 64 hexadecimal digits in lower case; got {'A' * 64!r}."]),
    (dict(checksum=DIGEST + '\n'), [f"checksum must be the archive's SHA-256, 64 hexadecimal digits in lower case; got {DIGEST + chr(10)!r}."]),
    (dict(keep_archive_in='cache'), ['keep_archive_in must be an absolute path, got "cache" (write it from /, e.g. /overlay/cache).']),
])
def test_a_layer_from_an_archive_is_checked_before_anything_is_read(overrides, problems):
    request = dict(path='/overlay/lower1-base', state='present', directory_mode='0755', files=None,
                   archive='/var/cache/unboxed/base/debian.tar.gz', checksum=DIGEST, keep_archive_in='/var/cache/unboxed/base',
                   remote_src=False, lock_timeout=60)
    request.update(overrides)
    assert layer.request_problems(request)[0] == problems


def test_the_record_of_a_layer_from_an_archive_is_what_sha256sum_prints_beside_the_layer():
    assert layer.record_path('/overlay/lower1-base') == '/overlay/.lower1-base.sha256'
    assert layer.record_line(DIGEST, 'debian.tar.gz') == f'{DIGEST}  debian.tar.gz\n'


def test_a_copy_with_another_checksum_is_never_used(tmp_path):
    archive = tmp_path / 'debian.tar.gz'
    archive.write_bytes(b'not the archive')
    found, problems = layer.archive_on_host({'keep_archive_in': str(tmp_path), 'archive': str(archive)}, 'debian.tar.gz', DIGEST)
    assert found is None and problems == [f'the copy kept in {tmp_path} ({archive}) has the SHA-256 '
                                          f'{layer.file_sha256(str(archive))}, not the checksum {DIGEST}']
    right = layer.file_sha256(str(archive))
    assert layer.archive_on_host({'keep_archive_in': str(tmp_path), 'archive': str(archive)}, 'debian.tar.gz', right) == (str(archive), [])
