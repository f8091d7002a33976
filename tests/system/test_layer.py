"""layer on a real file system and under a real overlay mount, run through Ansible against localhost (root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import BIN, REPO, ansible_env, kill_module_after, snapshot_tree

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


# --- Family 1: symbolic links that lead into system directories ------------------------------------------------


@pytest.mark.parametrize('target, below', [('/etc', ''), ('/', 'etc'), ('/media', ''), ('/proc', 'driver'),
                                           ('/usr/lib', ''), ('/srv', '')])
def test_a_layer_path_that_leads_into_a_system_directory_writes_nothing_there(run_module, workdir, target, below):
    (workdir / 'link').symlink_to(target)
    path = workdir / 'link' / below if below else workdir / 'link'
    resolved = os.path.join(target, below) if below else target
    watched = os.path.realpath(resolved) if os.path.isdir(resolved) else os.path.dirname(resolved)
    listing, tree = sorted(os.listdir(watched)), snapshot_tree(workdir)
    for check in ((True, False) if target in ('/etc', '/') else (False,)):
        result = run_module('layer', layer_args(path), check=check)
        assert result['failed'] is True and result['changed'] is False
        assert f'path "{path}" leads to {os.path.normpath(resolved)} through a symbolic link' in result['msg'], result['msg']
    assert sorted(os.listdir(watched)) == listing and snapshot_tree(workdir) == tree
    assert not os.path.lexists(os.path.join(resolved, 'file01.txt'))


# --- Families 3 and 5: everything validated before the first change, and files named by item ---------------------


@pytest.mark.parametrize('files, fragment', [
    ([{'path': '/file01.txt', 'content': 'x', 'owner': '4294967296'}], 'files[0].owner 4294967296 is too large'),
    ([{'path': '/a', 'content': 'x'}, {'path': '/b', 'content': 'x', 'group': '99999999999'}], 'files[1].group 99999999999'),
    ('just a string', 'files must be a list of files, each a dictionary with path and content'),
    ('path=/a content=x', "files must be a list of files"),
    (['/file01.txt'], "files[0] must be a dictionary with path and content"),
    ([{'content': 'x'}], 'files[0].path is missing'),
    ([{'path': '/a', 'content': 'x', 'bogus': 1}], 'files[0] has unknown key bogus'),
    ([{'path': ['a'], 'content': 'x'}], 'files[0].path must be a path inside the layer, as a string; got a list'),
    ([{'path': '/' + 'n' * 256, 'content': 'x'}], 'files[0].path has a name longer than 255 bytes'),
])
def test_a_bad_file_fails_naming_it_and_nothing_is_created(run_module, workdir, files, fragment):
    layer = workdir / 'parent' / 'layer'
    result = run_module('layer', layer_args(layer, files))
    assert result['failed'] is True and result['changed'] is False
    assert fragment in result['msg'], result['msg']
    assert os.listdir(workdir) == []


def test_a_failure_part_way_undoes_the_run(run_module, workdir):
    layer = workdir / 'layer'
    old = [{'path': f'/f{index}', 'content': f'old {index}\n'} for index in range(4)]
    run_module('layer', layer_args(layer, old))
    (layer / 'notes.txt').write_text('mine\n')
    tree = snapshot_tree(workdir)
    subprocess.run(['chattr', '+i', str(layer / 'f3')], check=True)      # renaming over it fails with EPERM
    try:
        new = [{'path': f'/f{index}', 'content': f'new {index}\n', 'mode': '0600'} for index in range(4)] + \
              [{'path': '/new/dir/g', 'content': 'g\n'}]
        result = run_module('layer', layer_args(layer, new))
    finally:
        subprocess.run(['chattr', '-i', str(layer / 'f3')], check=True)
    assert result['failed'] is True and result['changed'] is False, result
    assert f'Could not put the files in place: Operation not permitted ({layer}/f3)' in result['msg']
    assert 'Everything this run had done was undone.' in result['msg']
    assert snapshot_tree(workdir) == tree          # f0..f2 back, new/dir gone, no staging directory


def test_a_layer_that_is_a_mount_point_writes_its_temporary_files_beside_them_and_removes_them(run_module, workdir):
    layer = workdir / 'layer'
    layer.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', 'unboxed-test', str(layer)], check=True)
    result = run_module('layer', layer_args(layer, TALK_FILES + [{'path': '/etc/motd', 'content': 'hi\n'}]))
    assert result['changed'] is True and (layer / 'etc' / 'motd').read_text() == 'hi\n'
    assert sorted(os.listdir(layer)) == ['etc', 'file01.txt'] and os.listdir(workdir) == ['layer']


# --- Family 7: a run killed at any instant leaves no debris in the layer and the rerun heals -----------------------

KILL_FILES = 400


def kill_files(version):
    """Enough files that writing them takes a while: each a distinct content, in a few directories."""
    return [{'path': f'/d{index % 6}/f{index:03d}', 'content': f'{version} {index} ' * 100 + '\n', 'mode': '0640'}
            for index in range(KILL_FILES)]


def files_variables(tmp_dir, files):
    """An extra-vars file holding ``layer_files``: too large for one command line argument."""
    variables = os.path.join(tmp_dir, f'files-{time.monotonic_ns()}.json')
    with open(variables, 'w', encoding='utf-8') as handle:
        json.dump({'layer_files': files}, handle)
    return variables


def async_layer_run(tmp_dir, layer, files, record_to=None):
    """``ansible -m unboxed.lab.layer`` in the background; the files come through an extra-vars file (too large
    for one command line argument)."""
    argv = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
            '-e', f'ansible_python_interpreter={sys.executable}', '-e', f'@{files_variables(tmp_dir, files)}',
            '-m', 'unboxed.lab.layer', '-a', json.dumps({'path': str(layer), 'files': '{{ layer_files }}'})]
    return subprocess.Popen(argv, cwd=REPO, env=ansible_env(tmp_dir, record_to=record_to), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_and_kill(tmp_dir, layer, files, delay):
    """Start a run, wait for the module process, SIGKILL it ``delay`` seconds later (None: let it finish).
    Returns how long the module process lived."""
    proc = async_layer_run(tmp_dir, layer, files)
    return kill_module_after(proc, 'layer', delay)


@pytest.fixture(scope='module')
def module_run_time(tmp_path_factory):
    """How long the module process takes for KILL_FILES files on this machine, measured once."""
    if os.geteuid() != 0:
        pytest.skip('needs root')
    scratch = tmp_path_factory.mktemp('calibrate')
    return run_and_kill(str(scratch), scratch / 'layer', kill_files('new'), None)


def layer_state(layer):
    """Every entry of the layer: {relative path: content or 'dir'}."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(layer):
        for name in dirnames:
            state[os.path.relpath(os.path.join(dirpath, name), layer)] = 'dir'
        for name in filenames:
            with open(os.path.join(dirpath, name), encoding='utf-8') as handle:
                state[os.path.relpath(os.path.join(dirpath, name), layer)] = handle.read()
    return state


@pytest.mark.parametrize('fraction', [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.7, 0.9])
def test_a_run_killed_at_any_instant_leaves_no_debris_and_the_rerun_heals(run_module, workdir, module_run_time, fraction):
    layer = workdir / 'layer'
    old, new = kill_files('old'), kill_files('new')
    for item in old[::2]:                                   # half the files exist with an older content
        os.makedirs(os.path.dirname(f'{layer}{item["path"]}'), exist_ok=True)
        with open(f'{layer}{item["path"]}', 'w', encoding='utf-8') as handle:
            handle.write(item['content'])
    (layer / 'notes.txt').write_text('the student\'s own\n')
    allowed = {item['path'].lstrip('/'): {old_item['content'] for old_item in old[::2] if old_item['path'] == item['path']}
               | {item['content']} for item in new}
    allowed.update({'notes.txt': {'the student\'s own\n'}}, **{f'd{index}': {'dir'} for index in range(6)})

    run_and_kill(str(workdir.parent), layer, new, fraction * module_run_time)
    killed = layer_state(layer)
    debris = {name for name in killed if name not in allowed}
    assert debris == set(), f'killed at {fraction:.0%} of {module_run_time:.2f} s: temporary files in the layer {debris}'
    assert all(content in allowed[name] for name, content in killed.items())      # whole old or whole new, never half

    rerun = run_module('layer', {'path': str(layer), 'files': '{{ layer_files }}'},
                       extra=('-e', f'@{files_variables(str(workdir.parent), new)}'))
    assert rerun['failed'] is False, rerun
    assert rerun['unlisted'] == ['notes.txt']
    healed = layer_state(layer)
    assert healed == {**{item['path'].lstrip('/'): item['content'] for item in new}, 'notes.txt': 'the student\'s own\n',
                      **{f'd{index}': 'dir' for index in range(6)}}
    assert all(os.stat(f'{layer}{item["path"]}').st_mode & 0o7777 == 0o640 for item in new)
    assert sorted(os.listdir(workdir)) == ['layer']          # the staging directory went with the rerun


# --- Family 8: two runs at once on the same layer ------------------------------------------------------------------


def recorded(record):
    with open(record, encoding='utf-8') as handle:
        return [json.loads(line) for line in handle]


def test_two_runs_at_once_on_the_same_layer_take_turns(workdir):
    layer = workdir / 'layer'
    for round_, contents in enumerate([('same', 'same'), ('first', 'second')]):
        records = [str(workdir.parent / f'record-{round_}-{index}.jsonl') for index in range(2)]
        procs = [async_layer_run(str(workdir.parent), layer, kill_files(content), record_to=record)
                 for content, record in zip(contents, records)]
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
        results = [recorded(record)[0] for record in records]
        assert [entry['status'] for entry in results] == ['ok', 'ok'], outputs
        changed = sorted(entry['result']['changed'] for entry in results)
        # The same files: one run writes them, the other finds them written. Different files: both write, in turn.
        assert changed == ([False, True] if round_ == 0 else [True, True]), outputs
        state = layer_state(layer)
        assert sorted(os.listdir(workdir)) == ['layer']
        winners = {content for content in contents if state == {
            **{item['path'].lstrip('/'): item['content'] for item in kill_files(content)},
            **{f'd{index}': 'dir' for index in range(6)}}}
        assert winners, 'the layer holds a mix of both runs'


# --------------------------------------------------------------------------- a layer from an archive (FROM debian)


def make_archive(path, files):
    """A gzip-compressed tar archive of ``files`` ({inner path: content}), as mmdebstrap writes the base: ./ paths."""
    source = path.parent / f'{path.name}.src'
    for inner, content in files.items():
        (source / inner).parent.mkdir(parents=True, exist_ok=True)
        (source / inner).write_text(content)
    subprocess.run(['tar', '--create', '--gzip', f'--file={path}', f'--directory={source}', '.'], check=True)
    subprocess.run(['rm', '-rf', str(source)], check=True)
    return path


def sha256_of(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_layer_from_an_archive_is_sent_once_unpacked_once_and_a_rerun_only_reads_its_record(run_module, workdir):
    controller = workdir / 'controller'
    controller.mkdir()
    archive = make_archive(controller / 'debian-test.tar.gz', {'etc/debian_version': '13.2\n', 'bin/sh': '#!\n'})
    layer, kept = workdir / 'overlay' / 'lower1-base', workdir / 'host-cache'
    args = {'path': str(layer), 'archive': str(archive), 'keep_archive_in': str(kept)}
    record = workdir / 'overlay' / '.lower1-base.sha256'
    line = f'{sha256_of(archive)}  debian-test.tar.gz\n'

    host_before = snapshot_tree(workdir / 'controller')
    predicted = run_module('layer', args, check=True, diff=True)
    assert predicted['changed'] is True and predicted['transferred'] is False
    assert not os.path.lexists(layer) and not os.path.lexists(kept) and snapshot_tree(controller) == host_before
    assert predicted['diff']['after'] == line and predicted['diff']['before'] == ''

    real = run_module('layer', args)
    assert real['changed'] is True and real['transferred'] is True and real['actions'] == predicted['actions']
    assert (layer / 'etc' / 'debian_version').read_text() == '13.2\n'
    assert record.read_text() == line and real['record'] == line.rstrip('\n')
    assert (kept / 'debian-test.tar.gz').read_bytes() == archive.read_bytes()
    assert sorted(os.listdir(workdir / 'overlay')) == ['.lower1-base.sha256', 'lower1-base']   # no unpack debris

    tree = snapshot_tree(workdir / 'overlay')
    for check in (False, True):
        again = run_module('layer', args, check=check)
        assert again['changed'] is False and again['transferred'] is False and again['actions'] == []
    assert snapshot_tree(workdir / 'overlay') == tree

    # Removed (reset.yml), the layer comes back from the kept copy: nothing is sent.
    gone = run_module('layer', {'path': str(layer), 'state': 'absent'})
    assert gone['changed'] is True and not os.path.lexists(layer) and not os.path.lexists(record)
    back = run_module('layer', args)
    assert back['changed'] is True and back['transferred'] is False and record.read_text() == line
    assert snapshot_tree(workdir / 'overlay') == tree


def test_another_archive_replaces_the_layer_unless_a_mounted_overlay_uses_it(run_module, workdir):
    controller = workdir / 'controller'
    controller.mkdir()
    first = make_archive(controller / 'bookworm.tar.gz', {'etc/debian_version': '12.9\n', 'old.txt': 'old\n'})
    second = make_archive(controller / 'trixie.tar.gz', {'etc/debian_version': '13.2\n'})
    base = workdir / 'overlay'
    layer = base / 'lower1-base'
    assert run_module('layer', {'path': str(layer), 'archive': str(first)})['changed'] is True
    run_module('layer', layer_args(base / 'lower2-file'))
    mount_talk_overlay(base)
    try:
        tree = snapshot_tree(layer)
        refused = run_module('layer', {'path': str(layer), 'archive': str(second)})
        assert refused['failed'] is True and f'the overlay mounted at {base}/merged uses {layer} as lowerdir' in refused['msg']
        assert snapshot_tree(layer) == tree and (base / '.lower1-base.sha256').read_text().endswith('  bookworm.tar.gz\n')
        predicted = run_module('layer', {'path': str(layer), 'archive': str(second)}, check=True)
        assert predicted['changed'] is True and any('Check mode assumes' in warning for warning in predicted['warnings'])
    finally:
        subprocess.run(['umount', str(base / 'merged')], check=True)
    replaced = run_module('layer', {'path': str(layer), 'archive': str(second)}, diff=True)
    assert replaced['changed'] is True and replaced['diff']['before'].endswith('  bookworm.tar.gz\n')
    assert sorted(os.listdir(layer)) == ['etc'] and (layer / 'etc' / 'debian_version').read_text() == '13.2\n'
    assert not [name for name in os.listdir(base) if 'unboxed' in name]


@pytest.mark.parametrize('args, fragment', [
    ({'checksum': '0' * 64}, 'has the SHA-256'),
    ({'checksum': 'not-a-digest'}, 'checksum must be the archive\'s SHA-256'),
    ({'files': TALK_FILES}, 'files and archive are mutually exclusive'),
    ({'archive': '/nonexistent/debian.tar.gz'}, 'was not found on the controller'),
    ({'remote_src': True, 'archive': '/nonexistent/debian.tar.gz', 'checksum': '0' * 64}, 'no usable copy'),
])
def test_a_bad_archive_request_fails_naming_it_and_changes_nothing(run_module, workdir, args, fragment):
    controller = workdir / 'controller'
    controller.mkdir()
    archive = make_archive(controller / 'debian.tar.gz', {'etc/debian_version': '13.2\n'})
    request = {'path': str(workdir / 'overlay' / 'lower1-base'), 'archive': str(archive),
               'keep_archive_in': str(workdir / 'host-cache')}
    request.update(args)
    before = snapshot_tree(workdir)
    result = run_module('layer', request)
    assert result['failed'] is True and fragment in result['msg'], result['msg']
    assert snapshot_tree(workdir) == before


# --------------------------------------------------------------------------- several layers in one task (an image)


def module_runs(stdout):
    """How many times the run started a module on the host: the connection's EXEC of a Python interpreter (-vvv)."""
    return sum(1 for line in stdout.splitlines() if re.match(r'<[^>]+> EXEC ', line) and 'python' in line)


def archive_transfers(stdout, name):
    return sum(1 for line in stdout.splitlines() if re.match(r'<[^>]+> PUT ', line) and name in line)


def test_two_layers_are_checked_in_one_module_run_and_written_in_order(run_module, workdir):
    base = workdir / 'overlay'
    layers = [{'path': str(base / 'lower2-file'), 'files': TALK_FILES},
              {'path': str(base / 'lower3'), 'files': [{'path': '/etc/motd', 'content': 'hola\n', 'mode': '0600'}]}]
    before = snapshot_tree(workdir)
    predicted = run_module('layer', {'layers': layers}, check=True, diff=True)
    assert predicted['changed'] is True and snapshot_tree(workdir) == before
    assert [layer['changed'] for layer in predicted['layers']] == [True, True]
    assert predicted['actions'] == [f'create directory {base}', f'create directory {base}/lower2-file',
                                    f'create {base}/lower2-file/file01.txt', f'create directory {base}/lower3',
                                    f'create directory {base}/lower3/etc', f'create {base}/lower3/etc/motd']
    assert '+Texto' in predicted['_stdout'] and '+hola' in predicted['_stdout']       # both diffs shown

    real = run_module('layer', {'layers': layers}, diff=True)
    assert real['changed'] is True and real['actions'] == predicted['actions']
    assert [layer['path'] for layer in real['layers']] == [str(base / 'lower2-file'), str(base / 'lower3')]
    assert (base / 'lower2-file' / 'file01.txt').read_text() == 'Texto\n'
    assert os.stat(base / 'lower3' / 'etc' / 'motd').st_mode & 0o7777 == 0o600
    assert sorted(os.listdir(base)) == ['lower2-file', 'lower3']                       # no staging left

    tree = snapshot_tree(workdir)
    for check in (False, True):
        again = run_module('layer', {'layers': layers}, check=check, extra=('-vvv',))
        assert again['changed'] is False and again['actions'] == [] and module_runs(again['_stdout']) == 1, again['_stdout']
        assert [layer['changed'] for layer in again['layers']] == [False, False]
    assert snapshot_tree(workdir) == tree

    # One layer changed by hand: only it is rewritten, the other is no change.
    (base / 'lower3' / 'etc' / 'motd').write_text('adios\n')
    fixed = run_module('layer', {'layers': layers})
    assert [layer['changed'] for layer in fixed['layers']] == [False, True]
    assert fixed['actions'] == [f'change content of {base}/lower3/etc/motd']


@pytest.mark.parametrize('second, fragment', [
    ({'path': 'PLACE/lower3', 'files': [{'path': '/a', 'content': 'x', 'mode': 'u+rwx'}]},
     "layers[1].files[0].mode must be an octal mode such as '0644'"),
    ({'path': 'PLACE/lower3', 'files': [{'path': '../escape', 'content': 'x'}]}, 'layers[1].files[0].path "../escape" contains ".."'),
    ({'path': 'PLACE/lower3', 'files': TALK_FILES, 'bogus': 1}, 'layers[1] has unknown key bogus'),
    ({'path': 'PLACE/lower2-file/inner', 'files': TALK_FILES}, 'layers[1].path PLACE/lower2-file/inner lies inside layers[0].path'),
    ({'path': '/etc/unboxed', 'files': TALK_FILES}, 'layers[1].path'),
    ({'path': 'PLACE/a-file', 'files': TALK_FILES}, 'layers[1] (PLACE/a-file): path "PLACE/a-file" exists and is not a directory'),
    ({'path': 'PLACE/lower3', 'files': [{'path': '/link/x', 'content': 'x'}]}, 'PLACE/lower3/link is a symbolic link'),
])
def test_a_bad_second_layer_changes_nothing_in_the_first(run_module, workdir, second, fragment):
    base = workdir / 'overlay'
    (base / 'lower2-file').mkdir(parents=True)
    (base / 'lower2-file' / 'file01.txt').write_text('Otro\n')
    (base / 'a-file').write_text('not a directory\n')
    (base / 'lower3').mkdir()
    (base / 'lower3' / 'link').symlink_to(workdir)
    second = json.loads(json.dumps(second).replace('PLACE', str(base)))
    before = snapshot_tree(workdir)
    for check in (True, False):
        result = run_module('layer', {'layers': [{'path': str(base / 'lower2-file'), 'files': TALK_FILES}, second]}, check=check)
        assert result['failed'] is True and fragment.replace('PLACE', str(base)) in result['msg'], result['msg']
        assert result.get('changed', False) is False
        assert snapshot_tree(workdir) == before


def test_an_archive_layer_and_a_files_layer_one_transfer_then_one_run(run_module, workdir):
    controller = workdir / 'controller'
    controller.mkdir()
    archive = make_archive(controller / 'debian-test.tar.gz', {'etc/debian_version': '13.2\n', 'bin/sh': '#!\n'})
    base, kept = workdir / 'overlay', workdir / 'host-cache'
    layers = [{'path': str(base / 'lower1-base'), 'archive': str(archive), 'keep_archive_in': str(kept)},
              {'path': str(base / 'lower2-file'), 'files': TALK_FILES}]
    line = f'{sha256_of(archive)}  debian-test.tar.gz\n'

    before = snapshot_tree(workdir)
    predicted = run_module('layer', {'layers': layers}, check=True, diff=True)
    assert predicted['changed'] is True and predicted['transferred'] is False and snapshot_tree(workdir) == before
    assert [layer['changed'] for layer in predicted['layers']] == [True, True]
    assert predicted['diff'][0]['after'] == line

    real = run_module('layer', {'layers': layers}, extra=('-vvv',))
    assert real['changed'] is True and real['transferred'] is True, real
    assert [(layer['changed'], layer.get('transferred')) for layer in real['layers']] == [(True, True), (True, None)]
    assert real['actions'] == predicted['actions']
    # A first converge: one run that finds the archive missing, the transfer, one run that writes both layers.
    assert module_runs(real['_stdout']) == 2 and archive_transfers(real['_stdout'], 'debian-test.tar.gz') == 1
    assert (base / 'lower1-base' / 'etc' / 'debian_version').read_text() == '13.2\n'
    assert (base / '.lower1-base.sha256').read_text() == line
    assert (base / 'lower2-file' / 'file01.txt').read_text() == 'Texto\n'
    assert (kept / 'debian-test.tar.gz').read_bytes() == archive.read_bytes()
    assert sorted(os.listdir(base)) == ['.lower1-base.sha256', 'lower1-base', 'lower2-file']

    tree = snapshot_tree(workdir)
    for check in (False, True):
        again = run_module('layer', {'layers': layers}, check=check, extra=('-vvv',))
        assert again['changed'] is False and again['transferred'] is False and again['actions'] == []
        assert module_runs(again['_stdout']) == 1 and archive_transfers(again['_stdout'], 'debian-test.tar.gz') == 0
    assert snapshot_tree(workdir) == tree

    # Both removed in one task (reset.yml), then the base comes back from the kept copy: one run, nothing sent.
    gone = run_module('layer', {'layers': [{'path': layer['path']} for layer in layers], 'state': 'absent'})
    assert gone['changed'] is True and sorted(os.listdir(base)) == []
    assert [layer['removed']['files'] for layer in gone['layers']] == [2, 1]
    assert run_module('layer', {'layers': [{'path': layer['path']} for layer in layers], 'state': 'absent'})['changed'] is False
    back = run_module('layer', {'layers': layers}, extra=('-vvv',))
    assert back['changed'] is True and back['transferred'] is False and module_runs(back['_stdout']) == 1
    assert snapshot_tree(workdir) == tree


def test_check_mode_without_the_archive_on_the_controller_predicts_it_and_asks_the_host_for_the_rest(run_module, workdir):
    base = workdir / 'overlay'
    layers = [{'path': str(base / 'lower1-base'), 'archive': str(workdir / 'not-built-yet.tar.gz')},
              {'path': str(base / 'lower2-file'), 'files': TALK_FILES}]
    before = snapshot_tree(workdir)
    predicted = run_module('layer', {'layers': layers}, check=True)
    assert predicted['changed'] is True and predicted['failed'] is False and snapshot_tree(workdir) == before
    assert predicted['layers'][0]['changed'] is True and 'not on the controller yet' in predicted['layers'][0]['msg']
    assert predicted['layers'][1]['actions'][-1] == f'create {base}/lower2-file/file01.txt'
    # The layers that were sent are named by their place in the task, not in what was sent.
    layers[1]['files'] = [{'path': '/a', 'content': 'x', 'mode': 'u+rwx'}]
    refused = run_module('layer', {'layers': layers}, check=True)
    assert refused['failed'] is True and refused['msg'].startswith('layers[1].files[0].mode'), refused['msg']
    # A real run cannot do without it.
    missing = run_module('layer', {'layers': layers[:1]})
    assert missing['failed'] is True and 'layers[0].archive' in missing['msg'] and 'was not found on the controller' in missing['msg']
    assert snapshot_tree(workdir) == before
