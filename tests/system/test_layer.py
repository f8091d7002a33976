"""layer on a real file system and under a real overlay mount, run through Ansible against localhost (root)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import snapshot_tree

pytestmark = pytest.mark.root

TALK_FILES = [{'path': '/file01.txt', 'content': 'Texto\n'}]


def layer_args(path, files=None, **overrides):
    args = {'path': str(path), 'files': files if files is not None else TALK_FILES}
    args.update(overrides)
    return args


def test_check_mode_predicts_the_layer_and_then_it_holds(run_module, workdir):
    layer = workdir / 'overlay' / 'lower2-file'
    tree_before = snapshot_tree(workdir)
    predicted = run_module('layer', layer_args(layer), check=True)
    assert predicted['changed'] is True
    assert snapshot_tree(workdir) == tree_before          # not even the directories
    assert predicted['actions'] == [f'create directory {workdir}/overlay', f'create directory {layer}',
                                    f'create {layer}/file01.txt']

    real = run_module('layer', layer_args(layer))
    assert real['changed'] is True and real['actions'] == predicted['actions']
    assert (layer / 'file01.txt').read_text() == 'Texto\n'
    assert oct(os.stat(layer / 'file01.txt').st_mode & 0o7777) == oct(0o644)
    assert oct(os.stat(layer).st_mode & 0o7777) == oct(0o755)
    assert real['command'] == f'mkdir -p {layer}; echo Texto > {layer}/file01.txt'

    tree = snapshot_tree(workdir)
    assert run_module('layer', layer_args(layer))['changed'] is False
    assert run_module('layer', layer_args(layer), check=True)['changed'] is False
    assert snapshot_tree(workdir) == tree


def test_a_changed_content_is_shown_as_a_diff_and_replaced(run_module, workdir):
    layer = workdir / 'layer'
    run_module('layer', layer_args(layer))
    inode = os.stat(layer / 'file01.txt').st_ino
    changed = [{'path': 'file01.txt', 'content': 'Otro\n'}]

    predicted = run_module('layer', layer_args(layer, changed), check=True, diff=True)
    assert predicted['changed'] is True
    assert predicted['diff'] == [{'before_header': f'{layer}/file01.txt', 'after_header': f'{layer}/file01.txt',
                                  'before': 'Texto\n', 'after': 'Otro\n'}]
    assert '-Texto' in predicted['_stdout'] and '+Otro' in predicted['_stdout']
    assert (layer / 'file01.txt').read_text() == 'Texto\n'

    result = run_module('layer', layer_args(layer, changed), diff=True)
    assert result['changed'] is True and result['actions'] == [f'change content of {layer}/file01.txt']
    assert (layer / 'file01.txt').read_text() == 'Otro\n'
    assert os.stat(layer / 'file01.txt').st_ino != inode       # replaced by rename, never written in place
    assert [name for name in os.listdir(layer) if name.startswith('.')] == []    # no temporary file left


def test_mode_and_owner_change_without_rewriting(run_module, workdir):
    layer = workdir / 'layer'
    run_module('layer', layer_args(layer))
    inode = os.stat(layer / 'file01.txt').st_ino
    files = [{'path': '/file01.txt', 'content': 'Texto\n', 'mode': '0600', 'owner': '4242', 'group': '4343'}]
    result = run_module('layer', layer_args(layer, files), diff=True)
    assert result['changed'] is True
    assert result['actions'] == [f'change mode, owner, group of {layer}/file01.txt']
    assert 'diff' not in result                     # no content changed: nothing to show
    info = os.stat(layer / 'file01.txt')
    assert (info.st_ino, info.st_mode & 0o7777, info.st_uid, info.st_gid) == (inode, 0o600, 4242, 4343)
    assert run_module('layer', layer_args(layer, files))['changed'] is False


def test_files_in_subdirectories_and_what_a_user_left_in_the_layer(run_module, workdir):
    layer = workdir / 'layer'
    layer.mkdir()
    (layer / 'notes.txt').write_text('mine\n')
    files = TALK_FILES + [{'path': 'usr/local/bin/hello', 'content': '#!/bin/sh\necho hello\n', 'mode': '0755'}]
    result = run_module('layer', layer_args(layer, files))
    assert result['changed'] is True
    assert result['unlisted'] == ['notes.txt']
    assert (layer / 'notes.txt').read_text() == 'mine\n'                   # never deleted
    assert os.access(layer / 'usr' / 'local' / 'bin' / 'hello', os.X_OK)
    assert oct(os.stat(layer / 'usr' / 'local').st_mode & 0o7777) == oct(0o755)


def test_a_mounted_overlay_stops_a_change_of_its_layer_but_not_a_rerun(run_module, workdir):
    base = workdir / 'overlay'
    run_module('layer', layer_args(base / 'lower2-file'))
    (base / 'lower1-base' / 'etc').mkdir(parents=True)
    for name in ('upper', 'work', 'merged'):
        (base / name).mkdir()
    subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o',
                    f'lowerdir={base}/lower2-file:{base}/lower1-base,upperdir={base}/upper,workdir={base}/work',
                    str(base / 'merged')], check=True)
    tree = snapshot_tree(base / 'lower2-file')

    assert run_module('layer', layer_args(base / 'lower2-file'))['changed'] is False
    for check in (True, False):
        refused = run_module('layer', layer_args(base / 'lower2-file', [{'path': '/file01.txt', 'content': 'Otro\n'}]),
                             check=check)
        assert refused['failed'] is True and refused['changed'] is False
        assert f'{base}/merged (as lowerdir)' in refused['msg'] and 'Unmount the overlay first' in refused['msg']
    upper = run_module('layer', layer_args(base / 'upper', [{'path': '/x', 'content': 'x\n'}]))
    assert upper['failed'] is True and f'{base}/merged (as upperdir)' in upper['msg']
    assert snapshot_tree(base / 'lower2-file') == tree
    assert not (base / 'upper' / 'x').exists()


def test_a_symlink_out_of_the_layer_is_refused(run_module, workdir):
    layer = workdir / 'layer'
    outside = workdir / 'outside'
    outside.mkdir()
    layer.mkdir()
    (layer / 'etc').symlink_to(outside)
    result = run_module('layer', layer_args(layer, [{'path': '/etc/motd', 'content': 'x\n'}]))
    assert result['failed'] is True
    assert f'{layer}/etc is a symbolic link' in result['msg']
    assert os.listdir(outside) == []


@pytest.mark.parametrize('args, fragment', [
    ({'files': [{'path': '../escape', 'content': 'x'}]}, 'contains ".."'),
    ({'files': [{'path': '/a', 'content': 'x', 'mode': 'u+rwx'}]}, "octal mode such as '0644'"),
    ({'files': [{'path': '/a', 'content': 'x', 'owner': 'no-such-user-xyz'}]}, 'does not exist on this host'),
    ({'files': []}, 'files is empty'),
    ({'files': [{'path': '/a'}]}, 'content'),
    ({'directory_mode': 'rwx'}, 'directory_mode must be an octal mode'),
])
def test_bad_input_fails_with_the_reason_and_creates_nothing(run_module, workdir, args, fragment):
    layer = workdir / 'layer'
    result = run_module('layer', layer_args(layer, **args))
    assert result['failed'] is True, result
    assert fragment in result['msg'], result['msg']
    assert not layer.exists()


def test_a_system_directory_is_no_layer(run_module):
    result = run_module('layer', layer_args('/etc', [{'path': '/unboxed-test', 'content': 'x'}]))
    assert result['failed'] is True and 'system directory' in result['msg']
    assert not os.path.exists('/etc/unboxed-test')


SPECIAL_BIT_FILES = [
    # An owner that exists by name, a group that exists nowhere: numbers are taken as they are.
    {'path': '/usr/local/bin/setuid-tool', 'content': '#!/bin/sh\nid\n', 'mode': '4755', 'owner': 'nobody', 'group': '4343'},
    {'path': '/usr/local/bin/setgid-tool', 'content': '#!/bin/sh\nid\n', 'mode': '2755', 'owner': '4242', 'group': '4343'},
    {'path': '/usr/local/bin/both', 'content': '#!/bin/sh\nid\n', 'mode': '6750', 'owner': '4242', 'group': 'nogroup'},
]


def special_bits(layer):
    """(mode, uid, gid) of each file of SPECIAL_BIT_FILES, as stat shows them."""
    found = []
    for item in SPECIAL_BIT_FILES:
        info = os.stat(layer / item['path'].lstrip('/'))
        found.append((oct(info.st_mode & 0o7777), info.st_uid, info.st_gid))
    return found


def test_setuid_and_setgid_files_of_another_owner_converge_in_one_run(run_module, workdir):
    # chown(2) clears the setuid and setgid bits: the owner must be set before the mode, or run 2 changes the mode again.
    import grp
    import pwd
    nobody, nogroup = pwd.getpwnam('nobody').pw_uid, grp.getgrnam('nogroup').gr_gid
    expected = [(oct(0o4755), nobody, 4343), (oct(0o2755), 4242, 4343), (oct(0o6750), 4242, nogroup)]
    layer = workdir / 'layer'

    predicted = run_module('layer', layer_args(layer, SPECIAL_BIT_FILES), check=True)
    assert predicted['changed'] is True and not layer.exists()
    first = run_module('layer', layer_args(layer, SPECIAL_BIT_FILES))
    assert first['changed'] is True and first['actions'] == predicted['actions']
    assert special_bits(layer) == expected
    assert f'chown {nobody}:4343 {layer}/usr/local/bin/setuid-tool; chmod 4755 {layer}/usr/local/bin/setuid-tool' \
        in first['command']
    assert run_module('layer', layer_args(layer, SPECIAL_BIT_FILES))['changed'] is False
    assert run_module('layer', layer_args(layer, SPECIAL_BIT_FILES), check=True)['changed'] is False

    # The same on files that exist already, owned by root with plain modes: changed in place, in one run.
    plain = [dict(item, mode='0644', owner='0', group='0') for item in SPECIAL_BIT_FILES]
    assert run_module('layer', layer_args(layer, plain))['changed'] is True
    assert special_bits(layer) == [(oct(0o644), 0, 0)] * 3
    assert run_module('layer', layer_args(layer, SPECIAL_BIT_FILES), check=True)['changed'] is True
    again = run_module('layer', layer_args(layer, SPECIAL_BIT_FILES))
    assert again['actions'] == [f'change mode, owner, group of {layer}{item["path"]}' for item in SPECIAL_BIT_FILES]
    assert special_bits(layer) == expected
    assert run_module('layer', layer_args(layer, SPECIAL_BIT_FILES))['changed'] is False


def absent_args(path, **overrides):
    return dict({'path': str(path), 'state': 'absent'}, **overrides)


def test_absent_removes_the_tree_and_never_follows_a_link_out_of_it(run_module, workdir):
    layer = workdir / 'overlay' / 'lower2-file'
    run_module('layer', layer_args(layer, TALK_FILES + [{'path': '/etc/motd', 'content': 'hi\n'}]))
    outside = workdir / 'outside'
    outside.mkdir()
    (outside / 'keep.txt').write_text('not the layer\'s\n')
    (layer / 'etc' / 'elsewhere').symlink_to(outside)                 # a link to a directory outside the layer
    (layer / 'keep-link').symlink_to(outside / 'keep.txt')            # a link to a file outside the layer
    tree = snapshot_tree(workdir)
    gone = {'path': str(layer), 'state': 'absent'}

    predicted = run_module('layer', absent_args(layer), check=True, diff=True)
    assert predicted['changed'] is True and snapshot_tree(workdir) == tree
    assert predicted['removed'] == {'files': 4, 'directories': 2} and predicted['in_use'] == []
    assert predicted['diff'] == {'before': {'path': str(layer), 'state': 'directory', 'files': 4, 'directories': 2},
                                 'after': gone}
    assert predicted['actions'] == [f'remove directory {layer} (4 files, 2 directories)']
    assert '-    state: directory\n+    state: absent' in predicted['_stdout']
    assert predicted['command'] == f'rm -rf --one-file-system {layer}'

    removed = run_module('layer', absent_args(layer), diff=True)
    assert removed['changed'] is True
    assert {key: removed[key] for key in ('removed', 'actions', 'diff', 'command')} == \
        {key: predicted[key] for key in ('removed', 'actions', 'diff', 'command')}
    assert not os.path.lexists(layer) and (workdir / 'overlay').is_dir()        # the parent stays
    assert (outside / 'keep.txt').read_text() == 'not the layer\'s\n'

    for check in (True, False):
        again = run_module('layer', absent_args(layer), check=check, diff=True)
        assert again['changed'] is False and again['actions'] == [] and again['diff'] == {'before': gone, 'after': gone}
        assert again['removed'] == {'files': 0, 'directories': 0}


def mount_talk_overlay(base):
    for name in ('upper', 'work', 'merged'):
        (base / name).mkdir(exist_ok=True)
    subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o',
                    f'lowerdir={base}/lower2-file:{base}/lower1-base,upperdir={base}/upper,workdir={base}/work',
                    str(base / 'merged')], check=True)


def test_absent_refuses_while_an_overlay_uses_the_layers_and_removes_them_after_unmount(run_module, workdir):
    base = workdir / 'overlay'
    run_module('layer', layer_args(base / 'lower2-file'))
    run_module('layer', layer_args(base / 'lower1-base', [{'path': '/etc/os-release', 'content': 'ID=debian\n'}]))
    mount_talk_overlay(base)
    (base / 'merged' / 'student.txt').write_text('written in the container\n')     # lands in upper
    layers = ('lower2-file', 'lower1-base', 'upper', 'work')
    trees = {name: snapshot_tree(base / name) for name in layers}
    merged = f'{base}/merged'

    expected = {
        'lower1-base': [f'the overlay mounted at {merged} uses {base}/lower1-base as lowerdir'],
        'upper': [f'the overlay mounted at {merged} uses {base}/upper as upperdir'],
        'merged': [f'{base}/merged is a mount point (overlay from overlay)'],
        '.': [f'{merged} (overlay) is mounted inside {base}',
              f'the overlay mounted at {merged} uses {base}/lower2-file as lowerdir, {base}/lower1-base as lowerdir, '
              f'{base}/upper as upperdir, {base}/work as workdir'],
    }
    for name, fragments in expected.items():
        path = os.path.normpath(base / name)
        refused = run_module('layer', absent_args(path))
        assert refused['failed'] is True and refused['changed'] is False, refused
        assert len(refused['problems']) == len(fragments)
        for problem, fragment in zip(refused['problems'], fragments):
            assert problem.startswith(fragment), (problem, fragment)
        assert 'Unmount' in refused['msg'] and refused['in_use']
        # Check mode: a warning, and the removal predicted (an earlier task of a --check run would unmount).
        predicted = run_module('layer', absent_args(path), check=True)
        assert predicted['changed'] is True and not predicted['failed']
        assert any('a real run refuses' in warning for warning in predicted['warnings'])
    assert {name: snapshot_tree(base / name) for name in layers} == trees      # byte for byte
    assert (base / 'merged' / 'student.txt').read_text() == 'written in the container\n'

    subprocess.run(['umount', merged], check=True)
    for name in layers + ('merged',):
        predicted = run_module('layer', absent_args(base / name), check=True)
        assert predicted['changed'] is True and 'warnings' not in predicted and predicted['in_use'] == []
        assert run_module('layer', absent_args(base / name))['changed'] is True
        assert not os.path.lexists(base / name)
        assert run_module('layer', absent_args(base / name))['changed'] is False
    assert os.listdir(base) == []
    last = run_module('layer', absent_args(base))
    assert last['removed'] == {'files': 0, 'directories': 1} and last['actions'] == [f'remove directory {base} (0 files, 1 directory)']
    assert not os.path.lexists(base)


def test_absent_refuses_a_mount_point_of_its_own_and_a_mount_inside(run_module, workdir):
    lab = workdir / 'lab'
    (lab / 'inside').mkdir(parents=True)
    (lab / 'file.txt').write_text('x\n')
    subprocess.run(['mount', '-t', 'tmpfs', 'unboxed-test', str(lab / 'inside')], check=True)
    (lab / 'inside' / 'on-tmpfs.txt').write_text('y\n')
    tree = snapshot_tree(lab)
    refused = run_module('layer', absent_args(lab))
    assert refused['failed'] is True
    assert refused['msg'] == (f'{lab}/inside (tmpfs) is mounted inside {lab}: removing {lab} would delete through the '
                              f'mount. Unmount it first (umount {lab}/inside).')
    assert refused['in_use'] == [{'mount_point': f'{lab}/inside', 'fstype': 'tmpfs', 'use': 'mounted inside',
                                  'directory': f'{lab}/inside'}]
    refused = run_module('layer', absent_args(lab / 'inside'))
    assert refused['msg'].startswith(f'{lab}/inside is a mount point (tmpfs from unboxed-test): removing it would delete')
    assert snapshot_tree(lab) == tree


@pytest.mark.parametrize('make_path, args, fragment', [
    (lambda w: w / 'layer', {'files': TALK_FILES}, 'state=absent removes the whole layer directory, so leave files out'),
    (lambda w: w / 'link', {}, 'is a symbolic link (to '),
    (lambda w: w / 'file', {}, 'exists and is not a directory'),
    (lambda w: w / 'to-root' / 'etc', {}, 'leads to /etc through a symbolic link'),
    (lambda w: 'relative/layer', {}, 'path must be an absolute path'),
    (lambda w: '/var/lib', {}, 'system directory'),
])
def test_absent_bad_input_names_the_problem_and_removes_nothing(run_module, workdir, make_path, args, fragment):
    (workdir / 'layer').mkdir()
    (workdir / 'layer' / 'f').write_text('x\n')
    (workdir / 'link').symlink_to(workdir / 'layer')
    (workdir / 'file').write_text('x\n')
    (workdir / 'to-root').symlink_to('/')
    tree = snapshot_tree(workdir)
    result = run_module('layer', absent_args(make_path(workdir), **args))
    assert result['failed'] is True and fragment in result['msg'], result['msg']
    assert snapshot_tree(workdir) == tree and os.path.isdir('/etc') and os.path.isdir('/var/lib')
