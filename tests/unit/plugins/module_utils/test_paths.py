from __future__ import annotations

import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths


@pytest.mark.parametrize('value, fragment', [
    ('overlay/merged', 'must be an absolute path'),
    ('', 'must not be empty'),
    ('/overlay/a:b', 'contains a colon'),
    ('/overlay/a,b', 'contains a comma'),
    ('/overlay/a\nb', 'newline'),
])
def test_overlay_path_problems(value, fragment):
    assert fragment in paths.overlay_path_problem('path', value)


def test_good_overlay_path_has_no_problem():
    assert paths.overlay_path_problem('path', '/overlay/merged') is None


@pytest.mark.parametrize('value', ['/', '/usr', '/etc/', '/var/lib', '//', '/srv', '/tmp/', '/run', '/home', '/media'])
def test_system_directories_are_refused(value):
    assert 'system directory' in paths.system_directory_problem('path', value)


@pytest.mark.parametrize('value, fragment', [
    ('/proc/driver', 'inside /proc'),
    ('/proc/self/root', 'inside /proc'),
    ('/sys/fs/cgroup/x', 'inside /sys'),
    ('/dev/shm/lab', 'inside /dev'),
    ('/etc/unboxed', 'inside /etc'),
    ('/boot/grub', 'inside /boot'),
    ('/usr/lib/lab', 'inside /usr'),
    ('/usr/local', 'inside /usr'),
    ('/var/log/lab', 'inside /var/log'),
    ('/var/lib/dpkg/info', 'inside /var/lib/dpkg'),
    ('/run/systemd/lab', 'inside /run/systemd'),
    ('/run/unboxed/locks/x', 'inside /run/unboxed/locks'),
])
def test_everything_below_a_system_tree_is_refused(value, fragment):
    assert fragment in paths.system_directory_problem('path', value)


@pytest.mark.parametrize('value', [
    '/srv/lab/merged', '/opt/lab', '/var/lib/unboxed/lab/hosts/lab1/rootfs', '/run/unboxed/containers/talk',
    '/home/student/lab', '/tmp/lab', '/var/tmp/lab', '/mnt/lab', '/media/lab', '/overlay/merged',
    '/var/cache/unboxed/base', '/root/lab',
])
def test_places_of_their_own_stay_allowed(value):
    assert paths.system_directory_problem('path', value, entries=[]) is None


def test_the_pytest_tmp_path_is_allowed(tmp_path):
    assert paths.system_directory_problem('path', str(tmp_path / 'lab')) is None
    assert paths.root_directory_problem('root', str(tmp_path)) is None


@pytest.fixture
def links(tmp_path):
    """Real symbolic links in a scratch directory, each to a place a module must refuse (or accept)."""
    made = {
        'to-root': '/', 'to-etc': '/etc', 'to-media': '/media', 'to-proc-driver': '/proc/driver',
        'to-usr-lib': '/usr/lib', 'relative-up': '../' * 30 + 'etc', 'to-srv-lab': '/srv/unboxed-test-lab',
        'to-tmp-sibling': str(tmp_path / 'real'), 'dangling-into-etc': '/etc/unboxed-does-not-exist',
    }
    (tmp_path / 'real').mkdir()
    for name, target in made.items():
        (tmp_path / name).symlink_to(target)
    (tmp_path / 'chain').symlink_to('to-etc')                     # a link to a link
    (tmp_path / 'dir').mkdir()
    (tmp_path / 'dir' / 'up').symlink_to('..')
    return tmp_path


@pytest.mark.parametrize('name, resolved', [
    ('to-etc', '/etc'),
    ('to-etc/ssh', '/etc/ssh'),
    ('to-media', '/media'),
    ('to-proc-driver', '/proc/driver'),
    ('to-usr-lib/x', '/usr/lib/x'),
    ('relative-up', '/etc'),
    ('chain', '/etc'),
    ('chain/new/dir', '/etc/new/dir'),
    ('dangling-into-etc', '/etc/unboxed-does-not-exist'),
])
def test_a_symbolic_link_into_a_system_directory_is_refused_naming_where_it_leads(links, name, resolved):
    path = str(links / name)
    problem = paths.system_directory_problem('path', path)
    assert problem is not None
    assert f'"{path}" leads to {resolved} through a symbolic link' in problem


@pytest.mark.parametrize('name', ['to-root', 'dir/up/to-root', 'to-root/.'])
def test_a_symbolic_link_to_the_hosts_root_is_no_root_directory(links, name):
    problem = paths.root_directory_problem('root', str(links / name))
    assert 'leads to / through a symbolic link' in problem and "host's own root" in problem


@pytest.mark.parametrize('name', ['to-tmp-sibling', 'to-tmp-sibling/sub', 'to-srv-lab', 'dir/up/real', 'real'])
def test_a_symbolic_link_to_a_place_of_its_own_is_allowed(links, name):
    assert paths.system_directory_problem('path', str(links / name)) is None
    assert paths.root_directory_problem('root', str(links / name)) is None


def test_dot_dot_after_a_link_is_applied_to_its_target_as_the_kernel_does(links):
    # dir/up -> .. ; so dir/up/to-etc is links/to-etc, and to-etc/.. is / (the kernel resolves the link first).
    assert paths.resolve(str(links / 'dir' / 'up' / 'to-etc')) == '/etc'
    assert paths.resolve(str(links / 'to-etc' / '..')) == '/'
    assert 'leads to / through' in paths.root_directory_problem('root', str(links / 'to-etc' / '..'))


def test_a_kernel_file_system_mounted_anywhere_is_refused():
    entries = [mountinfo.parse_mountinfo_line('22 1 0:5 / / rw - ext4 /dev/vda1 rw'),
               mountinfo.parse_mountinfo_line('23 22 0:6 / /srv/lab/p rw - proc proc rw')]
    assert 'on a proc file system (mounted at /srv/lab/p)' in paths.system_directory_problem('path', '/srv/lab/p/x', entries)
    assert paths.system_directory_problem('path', '/srv/lab/q', entries) is None


def test_a_link_itself_is_named():
    assert paths.symbolic_link_problem('path', '/srv/no-such-thing') is None


def test_usable_directory_problem_checks_absolute_first():
    assert 'absolute' in paths.usable_directory_problem('state_dir', 'relative/dir')
    assert 'system directory' in paths.usable_directory_problem('state_dir', '/srv')


def test_is_inside():
    assert paths.is_inside('/overlay/upper/x', '/overlay/upper')
    assert paths.is_inside('/overlay/upper', '/overlay/upper/')
    assert not paths.is_inside('/overlay/upper2', '/overlay/upper')


@pytest.fixture
def root(tmp_path):
    (tmp_path / 'usr' / 'bin').mkdir(parents=True)
    (tmp_path / 'bin').symlink_to('usr/bin')                       # Debian's merged /usr
    program = tmp_path / 'usr' / 'bin' / 'busybox'
    program.write_text('#!/bin/true\n')
    program.chmod(0o755)
    (tmp_path / 'usr' / 'bin' / 'sh').symlink_to('busybox')        # relative link
    (tmp_path / 'usr' / 'bin' / 'abs').symlink_to('/usr/bin/busybox')  # absolute link: must stay inside root
    (tmp_path / 'usr' / 'bin' / 'loop').symlink_to('loop')
    (tmp_path / 'usr' / 'bin' / 'data').write_text('not executable')
    return tmp_path


def test_resolve_inside_follows_links_within_the_root(root):
    assert paths.resolve_inside(str(root), '/bin/sh') == str(root / 'usr' / 'bin' / 'busybox')
    assert paths.resolve_inside(str(root), '/bin/abs') == str(root / 'usr' / 'bin' / 'busybox')
    assert paths.resolve_inside(str(root), '/../../bin/sh') == str(root / 'usr' / 'bin' / 'busybox')
    assert paths.resolve_inside(str(root), '/bin/missing') is None
    assert paths.resolve_inside(str(root), '/bin/loop') is None


def test_find_program_inside(root):
    assert paths.find_program_inside(str(root), 'sh') == '/usr/bin/sh'
    assert paths.find_program_inside(str(root), '/bin/abs') == '/bin/abs'
    assert paths.find_program_inside(str(root), 'data') is None
    assert paths.find_program_inside(str(root), 'bash') is None


def test_an_absolute_link_never_resolves_to_the_hosts_file(root):
    # /usr/bin/abs -> /usr/bin/busybox exists on many hosts; inside root it must be root's own copy.
    resolved = paths.resolve_inside(str(root), '/usr/bin/abs')
    assert resolved.startswith(str(root) + os.sep)


@pytest.mark.parametrize('value, fragment', [
    ('merged', 'must be an absolute path'),
    ('/', 'the host\'s own root'),
    ('//', 'the host\'s own root'),
    ('/usr', 'system directory'),
])
def test_root_directory_problems(value, fragment):
    assert fragment in paths.root_directory_problem('rootfs', value)
    assert paths.root_directory_problem('rootfs', '/overlay/merged') is None


def test_missing_directories_outermost_first(tmp_path):
    assert paths.missing_directories(str(tmp_path)) == []
    assert paths.missing_directories(str(tmp_path / 'a' / 'b')) == [str(tmp_path / 'a'), str(tmp_path / 'a' / 'b')]


@pytest.fixture
def tricky_root(tmp_path):
    root = tmp_path / 'root'
    for name in ('proc', 'sys', 'real'):
        (root / name).mkdir(parents=True)
    (root / 'dev').symlink_to('/dev')                             # leads out of the root
    (root / 'up').symlink_to('../../..')
    (root / 'inner').symlink_to('real')                           # stays inside, still a link
    (root / 'file').write_text('')
    return root


@pytest.mark.parametrize('inner, fragment', [
    ('/dev', 'is a symbolic link (to /dev)'),
    ('/up', 'is a symbolic link (to ../../..)'),
    ('/inner', 'is a symbolic link (to real)'),
    ('/missing', 'does not exist'),
    ('/file', 'is not a directory'),
    ('/real/../dev', 'must not contain'),
])
def test_a_mount_target_inside_a_root_must_be_a_real_directory_there(tricky_root, inner, fragment):
    target, problem = paths.mount_target_inside(str(tricky_root), inner, 'mounts')
    assert fragment in problem and problem.startswith('mounts: ')


def test_a_mount_target_inside_a_root(tricky_root):
    assert paths.mount_target_inside(str(tricky_root), '/proc', 'mounts') == (str(tricky_root / 'proc'), None)
    assert paths.mount_target_inside(str(tricky_root), 'sys', 'mounts') == (str(tricky_root / 'sys'), None)


def test_a_normalized_path_that_leads_elsewhere_is_checked_too(links):
    # normpath reads x/../to-etc as links/to-etc (-> /etc); the kernel reads it through x's target.
    (links / 'x').symlink_to(str(links / 'real'))
    path = str(links / 'x' / '..' / 'to-etc')
    assert 'leads to /etc through a symbolic link' in paths.system_directory_problem('path', path)
