"""ns_container's userns_remap and volumes on a real kernel: root inside a remapped container is an unprivileged uid on
the host, and a root-only file of the host given through a volume stays closed to it, while the same volume is open to
the talk's (unmapped) container.

A remap account of this module's own (REMAP_USER, with a range in /etc/subuid and /etc/subgid made by usermod, as
dockerd makes dockremap's) is removed at the end. The root file system is a busybox tree shifted into the range (a
chowned copy, as the userns role's remapped layers are), in a directory every user may pass, under /var/tmp.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import make_busybox_rootfs, snapshot_mounts, snapshot_tree
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import process

pytestmark = pytest.mark.root

REMAP_USER = 'unboxed-t-nsremap'
COUNT = 65536
TAIL = ['tail', '-f', '/dev/null']
_names = itertools.count()


def _subid_lines():
    found = []
    for path in (container.SUBUID_FILE, container.SUBGID_FILE):
        try:
            with open(path, encoding='utf-8') as handle:
                found.append(idmap.parse_subid(handle.read())[0])
        except FileNotFoundError:
            found.append([])
    return found


@pytest.fixture(scope='module')
def remap():
    if os.geteuid() != 0:
        pytest.skip('needs root: user namespaces with a mapped range, bind mounts')
    for program in ('newuidmap', 'newgidmap', 'setpriv', 'busybox'):
        if not shutil.which(program):
            pytest.skip(f'{program} is not installed (package uidmap, util-linux, busybox-static)')
    created = False
    try:
        account = pwd.getpwnam(REMAP_USER)
    except KeyError:
        subprocess.run(['useradd', '--system', '--no-create-home', '--shell', '/usr/sbin/nologin', REMAP_USER], check=True)
        account = pwd.getpwnam(REMAP_USER)
        created = True
    uids, gids = _subid_lines()
    mine = idmap.first_range(uids, REMAP_USER), idmap.first_range(gids, REMAP_USER)
    added = None
    if None in mine:
        start = idmap.first_free([uids, gids], COUNT, 300000)
        added = f'{start}-{start + COUNT - 1}'
        subprocess.run(['usermod', '--add-subuids', added, '--add-subgids', added, REMAP_USER], check=True)
    uids, gids = _subid_lines()
    uid_range, gid_range = idmap.first_range(uids, REMAP_USER), idmap.first_range(gids, REMAP_USER)
    yield container.Remap(REMAP_USER, account.pw_uid, account.pw_gid, uid_range.start, uid_range.count,
                          gid_range.start, gid_range.count)
    if added:
        subprocess.run(['usermod', '--del-subuids', added, '--del-subgids', added, REMAP_USER], check=False)
    if created:
        subprocess.run(['userdel', REMAP_USER], check=False)


@pytest.fixture
def place():
    """A directory every user may pass (the remapped root must reach its root file system and the volumes)."""
    base = tempfile.mkdtemp(prefix='unboxed-t-nsremap.', dir='/var/tmp')
    os.chmod(base, 0o755)
    yield base
    subprocess.run(['umount', '-R', '-l', base], check=False, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def shifted_rootfs(place, remap, name='rootfs'):
    """A busybox root file system, every file owned by the mapped root's range (ID n -> start + n)."""
    root = make_busybox_rootfs(os.path.join(place, name))
    for directory, dirnames, filenames in os.walk(root):
        for entry in [directory] + [os.path.join(directory, item) for item in dirnames + filenames]:
            info = os.lstat(entry)
            os.lchown(entry, remap.uid_start + info.st_uid, remap.gid_start + info.st_gid)
    return root


@pytest.fixture
def started(run_module, place):
    """Run ns_container, remember each state_dir, and stop every container at the end (by its recorded identity)."""
    state_dirs = []

    def run(args, check=False):
        args = dict({'name': f'pytest{os.getpid()}u{next(_names)}', 'command': TAIL, 'stop_timeout': 1,
                     'root_method': 'chroot'}, **args)
        args.setdefault('state_dir', os.path.join(place, 'state', args['name']))
        state_dirs.append(args['state_dir'])
        return run_module('ns_container', args, check=check), args

    yield run
    for state_dir in state_dirs:
        try:
            identity = container.recorded_process(container.read_state(state_dir))
        except container.StateFileError:
            identity = None
        if process.send_signal(identity, signal.SIGKILL):
            process.wait_until_not_running(identity, 30)


def inside(pid, *argv):
    """Run argv in every namespace of the container, in its root (as its root: uid 0 of its user namespace)."""
    return subprocess.run(['nsenter', '--target', str(pid), '--all', '--root', '--wd', *argv], capture_output=True,
                          text=True, check=False, timeout=60)


def host_ids(pid, field):
    with open(f'/proc/{pid}/status', encoding='ascii') as handle:
        line = next(line for line in handle if line.startswith(f'{field}:'))
    return [int(word) for word in line.split()[1:]]


def test_root_inside_is_the_remap_range_outside(started, place, remap):
    rootfs = shifted_rootfs(place, remap)

    first, args = started({'rootfs': rootfs, 'userns_remap': REMAP_USER})

    assert first['changed'] is True and not first.get('failed'), first.get('msg')
    pid = first['pid']
    assert first['userns'] == {'uid_map': f'0 {remap.uid_start} {remap.uid_count}',
                               'gid_map': f'0 {remap.gid_start} {remap.gid_count}'}
    assert host_ids(pid, 'Uid') == [remap.uid_start] * 4 and host_ids(pid, 'Gid') == [remap.gid_start] * 4
    assert inside(pid, 'id', '-u').stdout.strip() == '0'
    assert process.read_nspids(pid)[-1] == 1 and process.read_cmdline(pid) == TAIL
    assert first['namespaces']['user']['isolated'] is True
    assert first['shell_command'] == (
        f'setpriv --reuid={remap.uid} --regid={remap.gid} --clear-groups unshare --fork --pid --net '
        f'--mount-proc={rootfs}/proc --user --map-users={remap.uid_start},0,{remap.uid_count} '
        f'--map-groups={remap.gid_start},0,{remap.gid_count} --setuid=0 --setgid=0 chroot {rootfs} tail -f /dev/null')
    # ps inside sees only the container: its own /proc, mounted by the mapped root.
    assert inside(pid, 'ps', '-o', 'pid,args').stdout.split('\n')[1].split(None, 1) == ['1', 'tail -f /dev/null']

    again, _args = started(args)
    assert again['changed'] is False and again['pid'] == pid, again.get('msg')
    # Without userns_remap the spec differs: the container is restarted as the talk's (root is root).
    plain, _args = started(dict(args, userns_remap=None))
    assert plain['changed'] is True and plain['userns'] is None and host_ids(plain['pid'], 'Uid') == [0] * 4


def test_pivot_root_works_for_a_remapped_root(started, place, remap):
    rootfs = shifted_rootfs(place, remap)
    result, _args = started({'rootfs': rootfs, 'userns_remap': REMAP_USER, 'root_method': 'pivot_root'})
    assert result['changed'] is True and not result.get('failed'), result.get('msg')
    assert host_ids(result['pid'], 'Uid')[0] == remap.uid_start
    assert inside(result['pid'], 'id', '-u').stdout.strip() == '0'


def test_a_root_only_file_in_a_volume_is_closed_to_the_remapped_root_and_open_to_the_talks(started, place, remap):
    rootfs = shifted_rootfs(place, remap)
    secrets = os.path.join(place, 'secrets')
    os.mkdir(secrets, 0o755)
    secret = os.path.join(secrets, 'shadow-copy')
    with open(secret, 'w', encoding='ascii') as handle:
        handle.write('only root may read this\n')
    os.chmod(secret, 0o600)
    volumes = [f'{secret}:/secret:ro', f'{secrets}:/tmp/secrets']
    mounts = snapshot_mounts(place)

    remapped, _args = started({'rootfs': rootfs, 'userns_remap': REMAP_USER, 'volumes': volumes})

    assert remapped['changed'] is True and not remapped.get('failed'), remapped.get('msg')
    denied = inside(remapped['pid'], 'cat', '/secret')
    assert denied.returncode != 0 and 'Permission denied' in denied.stderr, denied
    # The directory volume is there (its entry listed), the file in it closed too.
    assert inside(remapped['pid'], 'ls', '/tmp/secrets').stdout.split() == ['shadow-copy']
    assert inside(remapped['pid'], 'cat', '/tmp/secrets/shadow-copy').returncode != 0
    # The file volume's mount point was made in the root, owned by the mapped root.
    info = os.lstat(os.path.join(rootfs, 'secret'))
    assert (info.st_uid, info.st_gid, info.st_size) == (remap.uid_start, remap.gid_start, 0)
    assert snapshot_mounts(place) == mounts, 'the volumes appeared on the seat\'s mount table'

    talk, _args = started({'rootfs': rootfs, 'volumes': volumes})

    assert talk['changed'] is True and not talk.get('failed'), talk.get('msg')
    assert inside(talk['pid'], 'cat', '/secret').stdout == 'only root may read this\n'
    assert inside(talk['pid'], 'cat', '/tmp/secrets/shadow-copy').stdout == 'only root may read this\n'
    # :ro holds: not even the talk's root writes through it.
    assert inside(talk['pid'], 'sh', '-c', 'echo x > /secret').returncode != 0
    assert snapshot_mounts(place) == mounts


@pytest.mark.parametrize('overrides, fragment', [
    (dict(userns_remap='unboxed-t-nobody'), 'userns_remap: there is no user "unboxed-t-nobody" on this host'),
    (dict(userns_remap='Bad User'), 'userns_remap must be a user name'),
    (dict(userns_remap=REMAP_USER, shifted=False), 'userns_remap: rootfs {rootfs} belongs to 0:0, not to the container'),
    (dict(volumes=['relative:/data']), 'volumes: in "relative:/data" the host path "relative" must be absolute.'),
    (dict(volumes=['/srv:/data:rx']), 'volumes: "/srv:/data:rx" is not HOST:CONTAINER or HOST:CONTAINER:ro'),
    (dict(volumes=['/etc/shadow:/data']), 'volumes is "/etc/shadow", inside /etc, a system directory'),
    (dict(volumes=['{place}/missing:/data']), 'volumes: the host path {place}/missing (of {place}/missing:/data) does not exist.'),
    (dict(volumes=['{place}:/no/such/dir']), 'volumes: {rootfs}/no does not exist, so nothing can be mounted there.'),
    (dict(volumes=['{place}:/bin/busybox']), 'a bind mount needs the same kind on both sides'),
    (dict(volumes=['{place}:/etc', '{place}:/etc']), 'volumes: the container path /etc is given twice.'),
], ids=['no-user', 'bad-name', 'rootfs-not-shifted', 'relative', 'mode', 'system-dir', 'missing-host', 'missing-parent',
        'kinds', 'twice'])
def test_bad_input_names_the_option_and_changes_nothing(started, place, remap, overrides, fragment):
    overrides = dict(overrides)
    shifted = overrides.pop('shifted', True)
    rootfs = shifted_rootfs(place, remap) if shifted else make_busybox_rootfs(os.path.join(place, 'plain'))
    if 'volumes' in overrides:
        overrides['volumes'] = [text.format(place=place) for text in overrides['volumes']]
        overrides.setdefault('userns_remap', REMAP_USER)
    tree, mounts = snapshot_tree(place), snapshot_mounts(place)

    result, args = started(dict({'rootfs': rootfs}, **overrides))

    assert result.get('failed') is True and result['changed'] is False, result
    assert fragment.format(rootfs=rootfs, place=place) in result['msg'], result['msg']
    assert snapshot_tree(place) == tree and snapshot_mounts(place) == mounts
    assert not os.path.exists(args['state_dir'])
