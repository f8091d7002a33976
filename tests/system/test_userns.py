"""The userns slide's modules on this machine, as root, through Ansible: remap_account on the real /etc/subuid and
/etc/subgid with real users, layer_remap on real trees (setuid files, hard links, symbolic links, devices, owners
0/1000/65534, file capabilities, ACLs), and the shifted copy entered from a real user namespace."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from conftest import BIN, REPO, ansible_env, kill_module_after, make_busybox_rootfs, require_root, unmount_below, user_exists

pytestmark = pytest.mark.root

USER = 'unboxed-t-userns'          # made and removed by these tests through remap_account
CREATED_USER = 'unboxed-t-created'  # made and removed by layer_remap's create_user
PLAIN_USER = 'unboxed-t-norange'   # a real user with no range, made with useradd and removed again
SUBID_FILES = ('/etc/subuid', '/etc/subgid')
# The seat's own root-only file, as the role binds it (debconf's password store, 0600 root:root on every Debian seat):
# read to /dev/null, never shown.
SEAT_SECRET = '/var/cache/debconf/passwords.dat'


def read(path):
    with open(path, encoding='utf-8') as handle:
        return handle.read()


def subid_text():
    return {path: read(path) for path in SUBID_FILES}


def our_lines(name):
    return {path: [line for line in read(path).splitlines() if line.split(':')[0] == name] for path in SUBID_FILES}


@pytest.fixture(scope='module')
def remap(tmp_path_factory):
    """The remap user, made by remap_account (checked: check mode predicts, a rerun changes nothing) and removed by it."""
    require_root()
    from conftest import ModuleRunner
    runner = ModuleRunner(str(tmp_path_factory.mktemp('remap')))
    assert not user_exists(USER), f'{USER} is left over from an earlier run: userdel {USER} and remove its subid lines'
    before = subid_text()
    predicted = runner('remap_account', {'name': USER}, check=True, diff=True)
    assert predicted['changed'] is True and not user_exists(USER) and subid_text() == before
    made = runner('remap_account', {'name': USER})
    assert made['changed'] is True and made['created']['user'] is True
    assert (made['uid_start'], made['gid_start'], made['count']) == (predicted['uid_start'], predicted['gid_start'], 65536)
    assert made['commands'] == predicted['commands']
    assert our_lines(USER) == {path: [f'{USER}:{made["uid_start"]}:65536'] for path in SUBID_FILES}
    again = runner('remap_account', {'name': USER})
    assert again['changed'] is False
    yield made
    gone = runner('remap_account', {'name': USER, 'state': 'absent'})
    assert gone['changed'] is True
    assert not user_exists(USER) and our_lines(USER) == {path: [] for path in SUBID_FILES}


def remap_args(remap, sources, root, **more):
    args = {'user': USER, 'src': [str(source) for source in sources], 'root': str(root)}
    args.update(more)
    return args


def make_tree(root):
    """A real layer: busybox and its applets, and every kind of entry a Debian layer holds."""
    make_busybox_rootfs(root)
    os.makedirs(os.path.join(root, 'usr', 'bin'))
    setuid = os.path.join(root, 'usr', 'bin', 'su-like')
    with open(os.path.join(root, 'bin', 'busybox'), 'rb') as source, open(setuid, 'wb') as target:
        target.write(source.read())
    os.chmod(setuid, 0o4755)
    setgid_dir = os.path.join(root, 'var', 'mail')
    os.makedirs(setgid_dir)
    os.chown(setgid_dir, 0, 8)
    os.chmod(setgid_dir, 0o2775)
    home = os.path.join(root, 'home', 'student')
    os.makedirs(home)
    with open(os.path.join(home, 'notes.txt'), 'w', encoding='utf-8') as handle:
        handle.write('mine\n')
    os.chown(os.path.join(home, 'notes.txt'), 1000, 1000)
    os.chown(home, 1000, 1000)
    os.chmod(home, 0o700)
    nobody = os.path.join(root, 'var', 'nobody')
    with open(nobody, 'w', encoding='utf-8') as handle:
        handle.write('nobody\n')
    os.chown(nobody, 65534, 65534)
    os.link(os.path.join(home, 'notes.txt'), os.path.join(root, 'var', 'notes-link'))
    os.symlink('/etc/absolute-target', os.path.join(root, 'etc', 'dangling'))
    os.symlink('../bin/busybox', os.path.join(root, 'usr', 'bin', 'relative'))
    os.lchown(os.path.join(root, 'usr', 'bin', 'relative'), 1000, 1000)
    os.mknod(os.path.join(root, 'dev', 'sda'), 0o660 | stat.S_IFBLK, os.makedev(8, 0))
    os.mkfifo(os.path.join(root, 'dev', 'fifo'), 0o620)
    tmp = os.path.join(root, 'tmp')
    os.chmod(tmp, 0o1777)
    os.setxattr(os.path.join(root, 'var', 'nobody'), 'user.note', b'kept')
    # ping's capability, revision 2: the copy must carry it as revision 3 for the container's root.
    capped = os.path.join(root, 'usr', 'bin', 'ping-like')
    with open(capped, 'wb') as handle:
        handle.write(b'#!/bin/sh\n')
    os.chmod(capped, 0o755)
    subprocess.run(['setcap', 'cap_net_raw=ep', capped], check=True)
    # user::rw-, user:1000:r--, group::r--, mask::r--, other::--- as setfacl writes it.
    acl = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', *entry) for entry in [
        (0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)])
    with open(os.path.join(root, 'etc', 'shared'), 'w', encoding='utf-8') as handle:
        handle.write('acl\n')
    os.chmod(os.path.join(root, 'etc', 'shared'), 0o640)
    os.setxattr(os.path.join(root, 'etc', 'shared'), 'system.posix_acl_access', acl)
    # Old times, as an image's files have them.
    os.utime(os.path.join(root, 'var', 'nobody'), ns=(1_000_000_000_123_456_789, 1_100_000_000_987_654_321))
    return root


def snapshot(root):
    """As _snapshot, read twice: the first read of a file or directory after its last write moves its atime (relatime),
    so that the second shows what stays until something else reads or writes it."""
    _snapshot(root)
    return _snapshot(root)


def _snapshot(root):
    """Every entry with type, mode, owner, size, times, device, link target, content digest and xattrs."""
    state = {}
    for directory, subdirectories, files in os.walk(root):
        for name in ['.'] * (directory == str(root)) + subdirectories + files:
            path = os.path.normpath(os.path.join(directory, name))
            info = os.lstat(path)
            digest = None
            if stat.S_ISREG(info.st_mode):
                with open(path, 'rb') as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            xattrs = {}
            if not stat.S_ISLNK(info.st_mode):
                xattrs = {key: os.getxattr(path, key, follow_symlinks=False) for key in os.listxattr(path, follow_symlinks=False)}
            state[os.path.relpath(path, root)] = dict(
                mode=info.st_mode, uid=info.st_uid, gid=info.st_gid, size=info.st_size, mtime=info.st_mtime_ns,
                atime=info.st_atime_ns, rdev=info.st_rdev, nlink=info.st_nlink, digest=digest, xattrs=xattrs,
                target=os.readlink(path) if stat.S_ISLNK(info.st_mode) else None, inode=info.st_ino)
    return state


def assert_shifted(source_state, copy_state, start):
    assert set(copy_state) == set(source_state)
    for path, source in source_state.items():
        copy_ = copy_state[path]
        assert (copy_['uid'], copy_['gid']) == (source['uid'] + start, source['gid'] + start), path
        for key in ('mode', 'size', 'rdev', 'digest', 'target', 'nlink'):
            assert copy_[key] == source[key], (path, key)
        if not stat.S_ISLNK(source['mode']):
            assert copy_['mtime'] == source['mtime'], path
    # Hard links stay hard links; other entries are other inodes than the source's.
    assert copy_state['home/student/notes.txt']['inode'] == copy_state['var/notes-link']['inode']
    assert copy_state['var/nobody']['xattrs'] == {'user.note': b'kept'}
    # A revision 3 capability whose root is the container's root (the seat's uid START).
    capability = copy_state['usr/bin/ping-like']['xattrs']['security.capability']
    assert struct.unpack_from('<I', capability, 0)[0] >> 24 == 3 and struct.unpack_from('<I', capability, 20)[0] == start
    acl = copy_state['etc/shared']['xattrs']['system.posix_acl_access']
    assert struct.unpack_from('<HHI', acl, 12)[2] == 1000 + start


@pytest.fixture
def tree(workdir):
    return make_tree(str(workdir / 'layers' / 'lower1-base'))


@pytest.fixture
def open_workdir():
    """A scratch directory every user may traverse (pytest's own are 0700): the container's root, whose uid is the
    range's start, must be able to look up its root directory and the file bind-mounted in."""
    require_root()
    base = tempfile.mkdtemp(prefix='usernstest-', dir='/var/tmp')
    os.chmod(base, 0o755)
    yield pathlib.Path(base)
    unmount_below(base)
    subprocess.run(['rm', '-rf', '--one-file-system', base], check=False)


def test_a_real_tree_is_copied_shifted_and_the_source_is_untouched(run_module, workdir, tree, remap):
    start = remap['uid_start']
    root = workdir / 'remap'
    source_before = snapshot(tree)
    predicted = run_module('layer_remap', remap_args(remap, [tree], root, directories=[str(workdir / 'userns' / 'upper')]),
                           check=True, diff=True)
    assert predicted['changed'] is True, predicted.get('msg')
    assert not root.exists() and not (workdir / 'userns').exists()
    entries = len(source_before)
    assert predicted['copies'][0]['add'] == entries and predicted['copies'][0]['entries'] == entries

    made = run_module('layer_remap', remap_args(remap, [tree], root, directories=[str(workdir / 'userns' / 'upper')]), diff=True)
    assert made['changed'] is True and made['copies'] == predicted['copies'] and made['commands'] == predicted['commands']
    dest = root / f'{start}.{start}' / 'lower1-base'
    assert made['copies'][0]['dest'] == str(dest)
    assert_shifted(source_before, snapshot(dest), start)
    assert snapshot(tree) == source_before                   # content, owners, modes, times (atime too), xattrs
    upper = os.lstat(workdir / 'userns' / 'upper')
    assert (upper.st_uid, upper.st_gid, stat.S_IMODE(upper.st_mode)) == (start, start, 0o755)
    assert made['commands'][1] == f'cp -a {tree} {dest}'

    for check in (True, False):
        again = run_module('layer_remap', remap_args(remap, [tree], root, directories=[str(workdir / 'userns' / 'upper')]),
                           check=check)
        assert again['changed'] is False, again
        assert again['copies'][0]['add'] == 0 and again['commands'] == []
    assert snapshot(tree) == source_before


def test_a_changed_source_is_copied_again_in_part_and_check_mode_predicts_it(run_module, workdir, tree, remap):
    start = remap['uid_start']
    root = workdir / 'remap'
    assert run_module('layer_remap', remap_args(remap, [tree], root))['changed'] is True
    dest = root / f'{start}.{start}' / 'lower1-base'
    # The source changes: a new file, a changed one, a removed directory, a chmod, a chown.
    with open(os.path.join(tree, 'etc', 'hostname'), 'w', encoding='utf-8') as handle:
        handle.write('new\n')
    with open(os.path.join(tree, 'var', 'nobody'), 'a', encoding='utf-8') as handle:
        handle.write('more\n')
    subprocess.run(['rm', '-rf', os.path.join(tree, 'home')], check=True)
    os.chmod(os.path.join(tree, 'usr', 'bin', 'su-like'), 0o755)
    os.chown(os.path.join(tree, 'etc', 'dangling'), 1000, 1000, follow_symlinks=False)
    # Someone deleted a file in the copy: it comes back.
    os.unlink(dest / 'bin' / 'busybox')
    copy_before = snapshot(dest)
    predicted = run_module('layer_remap', remap_args(remap, [tree], root), check=True, diff=True)
    assert snapshot(dest) == copy_before
    counts = {key: predicted['copies'][0][key] for key in ('add', 'update', 'remove')}
    # etc/hostname added; var/nobody, su-like, dangling, bin/busybox updated (notes-link lost its partner: its group);
    # home, home/student, notes.txt removed.
    assert counts == {'add': 1, 'update': 5, 'remove': 3}, predicted['copies']
    assert 'etc/hostname' in predicted['_stdout'] or predicted['diff']
    made = run_module('layer_remap', remap_args(remap, [tree], root))
    assert made['copies'] == predicted['copies']
    assert_shifted_partly = snapshot(dest)
    assert 'home' not in assert_shifted_partly
    assert stat.S_IMODE(assert_shifted_partly['usr/bin/su-like']['mode']) == 0o755
    assert assert_shifted_partly['etc/dangling']['uid'] == 1000 + start
    assert assert_shifted_partly['bin/busybox']['uid'] == start
    assert run_module('layer_remap', remap_args(remap, [tree], root))['changed'] is False


def test_root_in_the_user_namespace_owns_the_copy_and_cannot_read_the_seats_secret(run_module, open_workdir, remap):
    """The kernel's own view: a process in a user namespace mapped as --userns-remap maps it, chrooted into the shifted
    copy, is uid 0 and owns / and /bin/busybox there; the seat's root-only SEAT_SECRET bind-mounted in is unreadable.
    Read to /dev/null: its content never reaches this test's output."""
    workdir = open_workdir
    tree = make_tree(str(workdir / 'layers' / 'lower1-base'))
    start = remap['uid_start']
    root = workdir / 'remap'
    assert run_module('layer_remap', remap_args(remap, [tree], root))['changed'] is True
    dest = str(root / f'{start}.{start}' / 'lower1-base')
    secret = SEAT_SECRET
    open(os.path.join(dest, 'secret'), 'w', encoding='utf-8').close()   # the bind mount's target, in the copy only
    os.chown(os.path.join(dest, 'secret'), start, start)
    stage = textwrap.dedent(f'''
        import ctypes, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000 | 0x00020000) != 0:      # CLONE_NEWUSER | CLONE_NEWNS
            sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
        print("ready", flush=True)
        sys.stdin.readline()                                 # the parent writes uid_map and gid_map meanwhile
        os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
        if libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None) != 0:   # MS_REC | MS_PRIVATE
            sys.exit("mount: " + os.strerror(ctypes.get_errno()))
        if libc.mount({str(secret).encode()!r}, {os.path.join(dest, "secret").encode()!r}, None, 0x1000, None) != 0:
            sys.exit("bind: " + os.strerror(ctypes.get_errno()))
        os.chroot({dest!r}); os.chdir("/")
        os.execv("/bin/busybox", ["sh", "-c", "id -u; stat -c %u / /bin/busybox; cat /secret > /dev/null; echo rc=$?"])
    ''')
    child = subprocess.Popen([sys.executable, '-c', stage], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == 'ready', child.stderr.read()
        with open(f'/proc/{child.pid}/uid_map', 'w', encoding='utf-8') as handle:
            handle.write(f'0 {start} 65536\n')
        with open(f'/proc/{child.pid}/gid_map', 'w', encoding='utf-8') as handle:
            handle.write(f'0 {start} 65536\n')
        child.stdin.write('go\n')
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out.split('\n')[:3] == ['0', '0', '0'], (out, err)
    assert 'Permission denied' in err and 'rc=1' in out, (out, err)
    # On the seat the same file stays readable by root, and the copy's owner is the range's start.
    with open(SEAT_SECRET, 'rb') as handle:
        handle.read(1)
    assert stat.S_IMODE(os.stat(SEAT_SECRET).st_mode) & 0o077 == 0      # root's alone: no group or other bits
    assert os.stat(os.path.join(dest, 'bin', 'busybox')).st_uid == start


@pytest.mark.parametrize('delay', [0.05, 0.3, 0.6, 1.0])
def test_a_killed_copy_is_completed_by_the_next_run(run_module, workdir, tree, remap, delay, tmp_path):
    start = remap['uid_start']
    root = workdir / 'remap'
    # A larger tree, so that the kill lands during the copy: 300 files of 64 KiB.
    bulk = os.path.join(tree, 'usr', 'share', 'bulk')
    os.makedirs(bulk)
    for number in range(300):
        with open(os.path.join(bulk, f'f{number}'), 'wb') as handle:
            handle.write(os.urandom(65536))
    source_before = snapshot(tree)
    argv = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local', '-e',
            f'ansible_python_interpreter={sys.executable}', '-m', 'unboxed.lab.layer_remap', '-a',
            json.dumps(remap_args(remap, [tree], root))]
    run = subprocess.Popen(argv, cwd=REPO, env=ansible_env(str(tmp_path / 'killed')), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    kill_module_after(run, 'layer_remap', delay)
    healed = run_module('layer_remap', remap_args(remap, [tree], root))
    assert healed['failed'] is False, healed.get('msg')
    dest = root / f'{start}.{start}' / 'lower1-base'
    assert_shifted(source_before, snapshot(dest), start)
    assert not (root / f'{start}.{start}' / '.lower1-base.unboxed-staging').exists()
    assert run_module('layer_remap', remap_args(remap, [tree], root))['changed'] is False
    assert snapshot(tree) == source_before


def test_absent_removes_the_copies_and_directories_it_is_given_and_nothing_else(run_module, workdir, tree, remap):
    start = remap['uid_start']
    root = workdir / 'remap'
    upper = workdir / 'userns' / 'upper'
    args = remap_args(remap, [tree], root, directories=[str(upper)])
    assert run_module('layer_remap', args)['changed'] is True
    (upper / 'written-by-the-container').write_text('x', encoding='utf-8')
    source_before = snapshot(tree)
    predicted = run_module('layer_remap', dict(args, state='absent'), check=True)
    assert predicted['changed'] is True and (root / f'{start}.{start}' / 'lower1-base').exists()
    gone = run_module('layer_remap', dict(args, state='absent'))
    assert gone['changed'] is True and gone['commands'] == predicted['commands']
    assert not (root / f'{start}.{start}').exists() and not upper.exists() and root.exists()
    assert snapshot(tree) == source_before
    assert run_module('layer_remap', dict(args, state='absent'))['changed'] is False


def test_a_copy_in_use_by_a_mounted_overlay_is_not_changed(run_module, workdir, tree, remap):
    start = remap['uid_start']
    root = workdir / 'remap'
    upper, work, merged = (workdir / 'userns' / name for name in ('upper', 'work', 'merged'))
    args = remap_args(remap, [tree], root, directories=[str(upper), str(work)])
    made = run_module('layer_remap', args)
    mounted = run_module('overlay_mount', {'path': str(merged), 'lowerdirs': [made['copies'][0]['dest'], str(tree)],
                                           'upperdir': str(upper), 'workdir': str(work)})
    assert mounted['changed'] is True, mounted.get('msg')
    assert os.stat(merged).st_uid == start                   # the container's / is its root's
    assert run_module('layer_remap', args)['changed'] is False   # nothing to change: no refusal
    with open(os.path.join(tree, 'etc', 'hostname'), 'w', encoding='utf-8') as handle:
        handle.write('changed under the mount\n')
    copy_before = snapshot(root)
    # As Docker keeps a running container's layers: left as it is, with a warning, and the play goes on.
    for check in (True, False):
        kept = run_module('layer_remap', args, check=check)
        assert kept.get('failed') is not True and kept['changed'] is False, kept
        assert any('in use by a mount' in warning and str(merged) in warning for warning in kept.get('warnings', [])), kept
        assert snapshot(root) == copy_before
    refused = run_module('layer_remap', dict(args, state='absent'))
    assert refused['failed'] is True and 'in use by a mount' in refused['msg']
    assert run_module('overlay_mount', {'path': str(merged), 'state': 'unmounted'})['changed'] is True
    assert run_module('layer_remap', args)['copies'][0]['add'] == 1    # etc/hostname, now the mount is gone


@contextlib.contextmanager
def plain_user():
    """A real user with no subordinate range (useradd --system adds none)."""
    subprocess.run(['useradd', '--system', '--no-create-home', PLAIN_USER], check=True)
    try:
        yield PLAIN_USER
    finally:
        subprocess.run(['userdel', PLAIN_USER], check=False)


PREDICTED = 'check mode predicts it'


def test_bad_inputs_name_the_option_and_change_nothing(run_module, workdir, tree, remap):
    root = workdir / 'remap'
    link_to_etc = workdir / 'etc-link'
    os.symlink('/etc', link_to_etc)
    not_ours = workdir / 'not-ours'
    (not_ours / f'{remap["uid_start"]}.{remap["gid_start"]}' / 'lower1-base').mkdir(parents=True)
    (not_ours / f'{remap["uid_start"]}.{remap["gid_start"]}' / 'lower1-base' / 'mine').write_text('x', encoding='utf-8')
    wide = workdir / 'wide'
    wide.mkdir()
    (wide / 'big-uid').write_text('x', encoding='utf-8')
    os.chown(wide / 'big-uid', 70000, 0)
    cases = [
        (remap_args(remap, ['/etc/ssl'], root), 'src[0] is "/etc/ssl", inside /etc'),
        (remap_args(remap, [link_to_etc], root), f'src[0] "{link_to_etc}" leads to /etc'),
        (remap_args(remap, [tree], '/var/lib'), 'root is "/var/lib", a system directory'),
        (remap_args(remap, [tree], os.path.join(tree, 'remap')), 'is inside src[0]'),
        (remap_args(remap, [tree], root, directories=[os.path.join(tree, 'upper')]), 'directories[0]'),
        (remap_args(remap, [tree, tree], root), 'src[1]'),
        (remap_args(remap, [workdir / 'missing'], root), 'does not exist', PREDICTED),
        (remap_args(remap, [tree], not_ours), 'this module did not make it'),
        (remap_args(remap, [wide], root), 'big-uid (owner 70000:0)'),
        (dict(remap_args(remap, [tree], root), user='no-such-user-here'), 'user: there is no user no-such-user-here', PREDICTED),
        (dict(remap_args(remap, [tree], root), user='Bad Name'), 'user must be a user name'),
    ]
    with plain_user():
        cases.append((dict(remap_args(remap, [tree], root), user=PLAIN_USER),
                      f'user: {PLAIN_USER} has no range in /etc/subuid nor in /etc/subgid', PREDICTED))
        tree_before, subids = snapshot(workdir), subid_text()
        for args, fragment, *predicted in cases:
            for check in (True, False):
                result = run_module('layer_remap', args, check=check)
                if check and predicted:
                    # What an earlier task of a --check run would make (the remap account, the talk's layers) is
                    # assumed, with a warning; the real run below refuses.
                    assert result.get('failed') is not True and result['changed'] is True, (args, result)
                    assert result.get('warnings'), result
                else:
                    assert result['failed'] is True, (args, result)
                    assert fragment in result['msg'], (fragment, result['msg'])
                assert snapshot(workdir) == tree_before, args
        assert subid_text() == subids
    bad_accounts = [({'name': 'root'}, 'name must not be root'), ({'name': USER, 'count': 0}, 'count must be'),
                    ({'name': USER, 'first': 0}, 'first must be'), ({'name': 'x y'}, 'name must be a user name')]
    for args, fragment in bad_accounts:
        result = run_module('remap_account', args)
        assert result['failed'] is True and fragment in result['msg'], result
    assert subid_text() == subids


def test_remap_account_takes_the_first_free_range_and_removes_only_its_own(run_module, remap):
    """Another user's range in the way: the new one starts after it; absent leaves that line and a user made before."""
    other = 'unboxed-t-other'
    start = remap['uid_start'] + 65536
    lines = {path: f'{other}:{start}:70000' for path in SUBID_FILES}
    for path, line in lines.items():
        with open(path, 'a', encoding='utf-8') as handle:
            handle.write(line + '\n')
    try:
        with plain_user():
            # Other tests on this machine may hold ranges too: the first start free in both files, past the other's.
            existing = [idmap.parse_subid(read(path))[0] for path in SUBID_FILES]
            expected = idmap.first_free(existing)
            assert expected >= start + 70000
            made = run_module('remap_account', {'name': PLAIN_USER}, diff=True)
            assert made['changed'] is True and made['created']['user'] is False
            assert made['uid_start'] == made['gid_start'] == expected
            assert our_lines(PLAIN_USER) == {path: [f'{PLAIN_USER}:{expected}:65536'] for path in SUBID_FILES}
            for lines_of_file in existing:
                assert not idmap.overlapping(lines_of_file, expected, 65536)
            assert run_module('remap_account', {'name': PLAIN_USER})['changed'] is False
            predicted = run_module('remap_account', {'name': PLAIN_USER, 'state': 'absent'}, check=True)
            gone = run_module('remap_account', {'name': PLAIN_USER, 'state': 'absent'})
            assert predicted['changed'] is gone['changed'] is True and predicted['commands'] == gone['commands']
            assert our_lines(PLAIN_USER) == {path: [] for path in SUBID_FILES}
            assert user_exists(PLAIN_USER)                          # it was there before: it stays
            assert our_lines(other) == {path: [line] for path, line in lines.items()}
            assert run_module('remap_account', {'name': PLAIN_USER, 'state': 'absent'})['changed'] is False
    finally:
        for path, line in lines.items():
            text = read(path)
            with open(path, 'w', encoding='utf-8') as handle:
                handle.write(''.join(kept + '\n' for kept in text.splitlines() if kept != line))


def create_args(workdir, tree, user=CREATED_USER, **more):
    args = {'user': user, 'create_user': True, 'src': [str(tree)], 'root': str(workdir / 'remap'),
            'directories': [str(workdir / 'userns' / 'upper')]}
    args.update(more)
    return args


@contextlib.contextmanager
def account_cleanup(run_module, name):
    """Whatever a test leaves of the account, taken back by remap_account (the same code, the same record)."""
    try:
        yield
    finally:
        run_module('remap_account', {'name': name, 'state': 'absent'})


def test_layer_remap_creates_the_remap_user_in_its_own_run_and_removes_it(run_module, workdir, tree):
    """create_user: the account and the copies in one run, as dockerd --userns-remap=default makes dockremap; check mode
    predicts it from the same plan (no warning); remap_account sees the same account; absent takes everything back."""
    assert not user_exists(CREATED_USER), f'{CREATED_USER} is left over: userdel {CREATED_USER}, remove its subid lines'
    args = create_args(workdir, tree)
    before, source_before = subid_text(), snapshot(tree)
    with account_cleanup(run_module, CREATED_USER):
        predicted = run_module('layer_remap', args, check=True, diff=True)
        assert predicted['changed'] is True and not predicted.get('warnings'), predicted
        assert not user_exists(CREATED_USER) and subid_text() == before and not (workdir / 'remap').exists()
        made = run_module('layer_remap', args, diff=True)
        assert made['changed'] is True, made.get('msg')
        for key in ('uid_start', 'gid_start', 'count', 'copies', 'directories', 'commands', 'account', 'newuidmap'):
            assert made[key] == predicted[key], key
        start = made['uid_start']
        line = f'{CREATED_USER}:{start}:65536'
        assert made['commands'][:3] == [
            f'useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {CREATED_USER}',
            f'echo {line} >> /etc/subuid', f'echo {line} >> /etc/subgid']
        assert made['account'] == {'name': CREATED_USER, 'changed': True, 'commands': made['commands'][:3],
                                   'created': {'user': True, 'subuid': line, 'subgid': line}}
        assert user_exists(CREATED_USER) and our_lines(CREATED_USER) == {path: [line] for path in SUBID_FILES}
        dest = workdir / 'remap' / f'{start}.{start}' / 'lower1-base'
        assert made['copies'][0]['dest'] == str(dest)
        assert_shifted(source_before, snapshot(dest), start)
        # remap_account is the same code and the same record: it finds the account made, and would change nothing.
        seen = run_module('remap_account', {'name': CREATED_USER}, check=True)
        assert seen['changed'] is False and (seen['uid_start'], seen['count']) == (start, 65536)
        assert seen['created'] == made['account']['created']
        for check in (True, False):
            again = run_module('layer_remap', args, check=check)
            assert again['changed'] is False and again['commands'] == [], again
            assert again['account']['changed'] is False and again['uid_start'] == start
        predicted_gone = run_module('layer_remap', dict(args, state='absent'), check=True, diff=True)
        assert predicted_gone['changed'] is True and user_exists(CREATED_USER) and dest.exists()
        gone = run_module('layer_remap', dict(args, state='absent'))
        assert gone['changed'] is True and gone['commands'] == predicted_gone['commands']
        assert gone['commands'][-1] == f'userdel {CREATED_USER}' and gone['account']['changed'] is True
        assert not user_exists(CREATED_USER) and subid_text() == before
        assert not (workdir / 'remap' / f'{start}.{start}').exists() and not (workdir / 'userns' / 'upper').exists()
        assert snapshot(tree) == source_before
        assert run_module('layer_remap', dict(args, state='absent'))['changed'] is False


def test_two_concurrent_runs_make_one_account_and_one_copy(run_module, workdir, tree, tmp_path):
    """Two real ansible runs at once with create_user for the same new user: the account's lock makes one of them create
    it, the other finds it made - one user, one line per file, one copy, nothing duplicated."""
    from conftest import ModuleRunner
    assert not user_exists(CREATED_USER)
    args = create_args(workdir, tree)
    before = subid_text()
    runners = [ModuleRunner(str(tmp_path / name)) for name in ('first', 'second')]
    for runner in runners:
        os.makedirs(runner.tmp_dir)
    results = [None, None]

    def run(index):
        results[index] = runners[index]('layer_remap', args)

    with account_cleanup(run_module, CREATED_USER):
        threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert all(result is not None and result['failed'] is False for result in results), results
        assert sorted(result['account']['changed'] for result in results) == [False, True], results
        assert results[0]['uid_start'] == results[1]['uid_start']
        start = results[0]['uid_start']
        assert our_lines(CREATED_USER) == {path: [f'{CREATED_USER}:{start}:65536'] for path in SUBID_FILES}
        assert sum(1 for line in read('/etc/passwd').splitlines() if line.split(':')[0] == CREATED_USER) == 1
        assert_shifted(snapshot(tree), snapshot(workdir / 'remap' / f'{start}.{start}' / 'lower1-base'), start)
        assert run_module('layer_remap', args)['changed'] is False
        assert run_module('layer_remap', dict(args, state='absent'))['changed'] is True
    assert not user_exists(CREATED_USER) and subid_text() == before


def test_create_user_keeps_a_user_made_before_and_removes_only_its_lines(run_module, workdir, tree):
    with plain_user(), account_cleanup(run_module, PLAIN_USER):
        args = create_args(workdir, tree, user=PLAIN_USER)
        made = run_module('layer_remap', args)
        assert made['changed'] is True and made['account']['created']['user'] is False, made
        assert not any(command.startswith('useradd') for command in made['commands'])
        assert our_lines(PLAIN_USER) == {path: [f'{PLAIN_USER}:{made["uid_start"]}:65536'] for path in SUBID_FILES}
        gone = run_module('layer_remap', dict(args, state='absent'))
        assert gone['changed'] is True and not any(command.startswith('userdel') for command in gone['commands'])
        assert user_exists(PLAIN_USER) and our_lines(PLAIN_USER) == {path: [] for path in SUBID_FILES}


def test_create_user_changes_nothing_when_the_request_fails(run_module, workdir, tree):
    """Everything is planned before the first change: a request that fails on the seat makes no user and no line."""
    assert not user_exists(CREATED_USER)
    not_ours = workdir / 'not-ours'
    expected_start = idmap.first_free([idmap.parse_subid(read(path))[0] for path in SUBID_FILES])
    (not_ours / f'{expected_start}.{expected_start}' / 'lower1-base').mkdir(parents=True)
    (not_ours / f'{expected_start}.{expected_start}' / 'lower1-base' / 'mine').write_text('x', encoding='utf-8')
    cases = [
        (create_args(workdir, tree, user='root'), 'user must not be root', False),
        (create_args(workdir, tree, user='0'), 'user must not be root', False),
        (create_args(workdir, workdir / 'missing'), f'src {workdir / "missing"} does not exist', True),
        (create_args(workdir, tree, root=str(not_ours)), 'this module did not make it', False),
    ]
    before, tree_before = subid_text(), snapshot(workdir)
    with account_cleanup(run_module, CREATED_USER):
        for args, fragment, predicted in cases:
            for check in (True, False):
                result = run_module('layer_remap', args, check=check)
                if check and predicted:
                    # The layers made earlier in a --check run: assumed, with a warning; the real run below refuses.
                    assert result.get('failed') is not True and result['changed'] is True and result.get('warnings'), result
                else:
                    assert result['failed'] is True and fragment in result['msg'], (fragment, result)
                    assert result['changed'] is False, result
                assert not user_exists(CREATED_USER) and subid_text() == before, args
                assert snapshot(workdir) == tree_before, args


def test_without_create_user_a_missing_user_is_an_error_that_says_how(run_module, workdir, tree):
    result = run_module('layer_remap', dict(create_args(workdir, tree), create_user=False))
    assert result['failed'] is True and not user_exists(CREATED_USER)
    assert f'there is no user {CREATED_USER}' in result['msg'] and 'create_user: true' in result['msg'], result['msg']


def ns_container_has_userns_remap():
    from ansible_collections.unboxed.lab.plugins.modules import ns_container
    return 'userns_remap' in ns_container.argument_spec() and 'volumes' in ns_container.argument_spec()


def test_a_remapped_container_on_the_shifted_overlay(run_module, open_workdir, remap):
    """ns_container's userns_remap on the shifted copy: root inside, the range's start outside, the seat's root-only
    file bound read-only and unreadable - as the role binds it; a companion without the remap reads it. Never printed."""
    workdir = open_workdir
    tree = make_tree(str(workdir / 'layers' / 'lower1-base'))
    try:
        has_options = ns_container_has_userns_remap()
    except Exception as error:          # noqa: BLE001 - an older module without argument_spec()
        has_options = False
        reason = str(error)
    else:
        reason = 'ns_container has no userns_remap/volumes options yet'
    if not has_options:
        pytest.skip(reason)
    if not all(os.path.exists(f'/usr/bin/{name}') for name in ('newuidmap', 'newgidmap')):
        pytest.skip('newuidmap/newgidmap (package uidmap) are not installed on this machine')
    start = remap['uid_start']
    root = workdir / 'remap'
    upper, work, merged = (workdir / 'userns' / name for name in ('upper', 'work', 'merged'))
    made = run_module('layer_remap', remap_args(remap, [tree], root, directories=[str(upper), str(work)]))
    assert run_module('overlay_mount', {'path': str(merged), 'lowerdirs': [made['copies'][0]['dest']],
                                        'upperdir': str(upper), 'workdir': str(work)})['failed'] is False
    name = f'usernstest-{os.getpid()}'
    state_dir = str(workdir / 'containers')
    shadow_before = os.stat(SEAT_SECRET)
    started = run_module('ns_container', {'name': name, 'rootfs': str(merged), 'command': ['tail', '-f', '/dev/null'],
                                          'namespaces': ['pid', 'mount', 'uts', 'ipc', 'net'], 'userns_remap': USER,
                                          'volumes': [f'{SEAT_SECRET}:/seat-secret:ro'], 'state_dir': state_dir})
    companion_root = make_busybox_rootfs(str(workdir / 'companion'))
    companion = f'usernstest-companion-{os.getpid()}'
    companion_state_dir = str(workdir / 'companion-state')      # state_dir is one container's own directory
    started_companion = run_module('ns_container', {
        'name': companion, 'rootfs': companion_root, 'command': ['sleep', '600'], 'namespaces': ['pid', 'mount', 'uts', 'ipc', 'net'],
        'volumes': [f'{SEAT_SECRET}:/seat-secret:ro'], 'state_dir': companion_state_dir})
    try:
        assert started['failed'] is False, started.get('msg')
        pid = started['pid']
        status = read(f'/proc/{pid}/status')
        uid_line = next(line for line in status.splitlines() if line.startswith('Uid:'))
        assert uid_line.split()[1] == str(start)
        assert started['userns']['uid_map'].split() == ['0', str(start), '65536']
        # As docker exec and the role's verify do: nsenter becomes the user namespace's root (uid 0 inside).
        inside = subprocess.run(['nsenter', '--target', str(pid), '--all', '--root', '--wd', 'sh', '-c',
                                 'id -u; stat -c %u /bin/busybox; cat /seat-secret > /dev/null && echo read'],
                                capture_output=True, text=True, check=False, timeout=60)
        assert inside.stdout.splitlines()[:2] == ['0', '0'], (inside.stdout, inside.stderr)
        assert 'Permission denied' in inside.stderr and inside.returncode == 1
        # docker exec by ns_exec: it becomes the user namespace's root too.
        by_ns_exec = run_module('ns_exec', {'name': name, 'command': ['sh', '-c', 'id -u; cat /seat-secret > /dev/null && echo read'],
                                            'state_dir': state_dir})
        assert by_ns_exec['stdout'].splitlines() == ['0'], by_ns_exec
        assert 'Permission denied' in by_ns_exec['stderr'] and by_ns_exec['rc'] == 1
        # The companion, root without the remap, reads it - as docker run -v /etc/shadow:/shadow does with that file.
        assert started_companion['failed'] is False, started_companion.get('msg')
        read_by_root = run_module('ns_exec', {'name': companion, 'command': ['sh', '-c', 'cat /seat-secret > /dev/null && echo read'],
                                              'state_dir': companion_state_dir})
        assert read_by_root['rc'] == 0 and read_by_root['stdout'].splitlines() == ['read'], read_by_root
        # Bound read-only: not even the companion's root can change the seat's file.
        written = run_module('ns_exec', {'name': companion, 'command': ['sh', '-c', ': >> /seat-secret'],
                                         'state_dir': companion_state_dir})
        assert written['rc'] != 0 and 'Read-only file system' in written['stderr'], written
    finally:
        run_module('ns_container', {'name': name, 'state': 'absent', 'state_dir': state_dir})
        run_module('ns_container', {'name': companion, 'state': 'absent', 'state_dir': companion_state_dir})
        after = os.stat(SEAT_SECRET)
        assert (after.st_mode, after.st_uid, after.st_gid) == (shadow_before.st_mode, shadow_before.st_uid, shadow_before.st_gid)
        run_module('overlay_mount', {'path': str(merged), 'state': 'unmounted'})
