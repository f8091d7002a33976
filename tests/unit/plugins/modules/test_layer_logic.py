from __future__ import annotations

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
    ({'path': '/overlay/lower2-file'}, 'state is present but all of the following are missing: files'),
    ({'path': '/overlay/lower2-file', 'state': 'absent'}, None),
])
def test_argument_spec_declares_that_a_layer_to_write_needs_files(args, error):
    result = ArgumentSpecValidator(layer.argument_spec(), **layer.constraints()).validate(args)
    assert result.error_messages == ([error] if error else [])
