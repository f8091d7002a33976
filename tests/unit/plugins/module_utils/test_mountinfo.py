from __future__ import annotations

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

# Real lines: this machine's root, an overlay as the talk mounts it, a systemd host's shared
# propagation fields, and a path with a space the kernel escapes as \040.
ROOT = '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534'
OVERLAY = ('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
           'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work,uuid=on')
SHARED = '36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue'
ESCAPED = ('44 27 0:39 / /tmp/my\\040lab/merged rw,relatime - overlay overlay '
           'ro,lowerdir=/tmp/sp\\040ace:/tmp/ovt/l1,redirect_dir=on')
TAB_AND_BACKSLASH = '50 27 0:40 / /mnt/a\\011b\\134c rw - tmpfs tmp\\040fs rw,size=1024k'


def test_parses_fields_of_a_plain_line():
    entry = mountinfo.parse_mountinfo_line(ROOT)
    assert (entry.mount_id, entry.parent_id, entry.device) == (27, 1, '254:0')
    assert (entry.root, entry.mount_point, entry.fstype, entry.source) == ('/', '/', 'ext4', '/dev/vda')
    assert entry.option('resuid') == '65534'
    assert entry.option('discard') is True
    assert entry.optional_fields == ()
    assert not entry.read_only


def test_overlay_layers_are_split_in_order():
    entry = mountinfo.parse_mountinfo_line(OVERLAY)
    assert entry.fstype == 'overlay'
    assert entry.option('lowerdir') == '/overlay/lower2-file:/overlay/lower1-base'
    assert entry.option('upperdir') == '/overlay/upper'
    assert entry.option('workdir') == '/overlay/work'


def test_optional_fields_before_separator():
    entry = mountinfo.parse_mountinfo_line(SHARED)
    assert entry.optional_fields == ('master:1', 'shared:7')
    assert entry.fstype == 'ext3'
    assert entry.root == '/mnt1' and entry.mount_point == '/mnt2'
    assert entry.option('noatime') is True


def test_octal_escapes_in_mount_point_and_options():
    entry = mountinfo.parse_mountinfo_line(ESCAPED)
    assert entry.mount_point == '/tmp/my lab/merged'
    assert entry.option('lowerdir') == '/tmp/sp ace:/tmp/ovt/l1'
    assert entry.read_only is True  # a read-only superblock (no upper layer) refuses writes whatever the mount says


def test_tab_backslash_and_source_unescaped():
    entry = mountinfo.parse_mountinfo_line(TAB_AND_BACKSLASH)
    assert entry.mount_point == '/mnt/a\tb\\c'
    assert entry.source == 'tmp fs'


@pytest.mark.parametrize('line', ['', 'garbage', '1 2 3 4 5 6 7 8'])
def test_rejects_lines_that_are_not_mountinfo(line):
    with pytest.raises(ValueError):
        mountinfo.parse_mountinfo_line(line)


def test_find_mount_returns_the_top_of_a_stack():
    lower = OVERLAY
    upper = OVERLAY.replace('45 27', '46 45').replace('lower2-file:', 'lower3:')
    entries = mountinfo.parse_mountinfo('\n'.join([ROOT, lower, upper]))
    assert mountinfo.find_mount('/overlay/merged', entries).mount_id == 46
    assert mountinfo.find_mount('/nowhere', entries) is None


def test_mounts_below_and_mount_containing():
    proc = '60 45 0:5 / /overlay/merged/proc rw - proc proc rw'
    entries = mountinfo.parse_mountinfo('\n'.join([ROOT, OVERLAY, proc]))
    assert [entry.mount_point for entry in mountinfo.mounts_below('/overlay/merged', entries)] == ['/overlay/merged/proc']
    assert mountinfo.mounts_below('/overlay/merged/proc', entries) == []
    assert mountinfo.mount_containing('/overlay/merged/etc/passwd', entries).mount_id == 45
    assert mountinfo.mount_containing('/overlay/upper', entries).mount_id == 27
    assert mountinfo.mount_containing('/overlay/mergedx', entries).mount_id == 27


def test_split_and_join_options_round_trip():
    pairs = mountinfo.split_options('rw,lowerdir=/a:/b,index=off')
    assert pairs == [('rw', None), ('lowerdir', '/a:/b'), ('index', 'off')]
    assert mountinfo.join_options(pairs) == 'rw,lowerdir=/a:/b,index=off'


def test_reads_this_machines_mountinfo():
    entries = mountinfo.read_mountinfo()
    assert mountinfo.find_mount('/', entries) is not None
    assert mountinfo.find_mount('/proc', entries).fstype == 'proc'


OVERLAY_LINE = ('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
                'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work')
EXT4_LINE = '27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw'


def test_overlay_layers_of_a_live_mount():
    entry = mountinfo.parse_mountinfo_line(OVERLAY_LINE)
    assert mountinfo.overlay_layers(entry) == {'lowerdirs': ['/overlay/lower2-file', '/overlay/lower1-base'],
                                               'upperdir': '/overlay/upper', 'workdir': '/overlay/work', 'datadirs': []}


@pytest.mark.parametrize('path, option', [
    ('/overlay/lower2-file', 'lowerdir'), ('/overlay/lower1-base/etc', 'lowerdir'), ('/overlay/upper', 'upperdir'),
    ('/overlay/work', 'workdir'), ('/overlay/merged', None), ('/overlay', None), ('/overlay/lower2', None),
])
def test_overlays_using_a_directory(path, option):
    entries = mountinfo.parse_mountinfo('\n'.join([EXT4_LINE, OVERLAY_LINE]))
    found = mountinfo.overlays_using(path, entries)
    assert [used_as for _entry, used_as in found] == ([option] if option else [])


PROC_IN_MERGED = '46 45 0:5 / /overlay/merged/proc rw - proc proc rw'
TMPFS_LAB = '40 27 0:41 / /overlay rw - tmpfs tmpfs rw'


@pytest.mark.parametrize('path, uses', [
    # The talk's layout while its overlay is mounted, with a /proc inside the merged view.
    ('/overlay/lower1-base', [('lowerdir', '/overlay/lower1-base')]),
    ('/overlay/lower1-base/etc', [('lowerdir', '/overlay/lower1-base')]),
    ('/overlay/upper', [('upperdir', '/overlay/upper')]),
    ('/overlay/merged', [('mount point', '/overlay/merged'), ('mounted inside', '/overlay/merged/proc')]),
    ('/overlay', [('mounted inside', '/overlay/merged'), ('lowerdir', '/overlay/lower2-file'),
                  ('lowerdir', '/overlay/lower1-base'), ('upperdir', '/overlay/upper'), ('workdir', '/overlay/work'),
                  ('mounted inside', '/overlay/merged/proc')]),
    ('/overlay/lower2', []), ('/overlay/merged2', []), ('/srv', []),
])
def test_uses_of_a_tree_name_every_mount_that_keeps_it_in_use(path, uses):
    entries = mountinfo.parse_mountinfo('\n'.join([EXT4_LINE, OVERLAY_LINE, PROC_IN_MERGED]))
    assert [(use.use, use.directory) for use in mountinfo.uses_of_tree(path, entries)] == uses


def test_a_tree_that_is_a_mount_point_of_its_own_is_in_use():
    entries = mountinfo.parse_mountinfo('\n'.join([EXT4_LINE, TMPFS_LAB]))
    found = mountinfo.uses_of_tree('/overlay', entries)
    assert [(use.use, use.entry.fstype) for use in found] == [('mount point', 'tmpfs')]
    assert mountinfo.uses_of_tree('/', entries)[0].use == 'mount point'


def test_overlay_layers_added_one_by_one_and_data_only_layers():
    plus = mountinfo.parse_mountinfo_line('45 27 0:39 / /m rw - overlay overlay ro,lowerdir+=/l1,lowerdir+=/l2,datadir+=/d1')
    assert mountinfo.overlay_layers(plus) == {'lowerdirs': ['/l1', '/l2'], 'upperdir': None, 'workdir': None, 'datadirs': ['/d1']}
    joined = mountinfo.parse_mountinfo_line('45 27 0:39 / /m rw - overlay overlay ro,lowerdir=/l1:/l2::/d1:/d2')
    assert mountinfo.overlay_layers(joined)['lowerdirs'] == ['/l1', '/l2']
    assert mountinfo.overlay_layers(joined)['datadirs'] == ['/d1', '/d2']


def fake_proc(tmp_path, namespaces):
    """A /proc with ``namespaces`` ({ns: {pid: (root, mountinfo text)}}); this process lives in the first one."""
    proc = tmp_path / 'proc'
    first = True
    for namespace, pids in namespaces.items():
        for pid, (root, text) in pids.items():
            (proc / str(pid) / 'ns').mkdir(parents=True)
            (proc / str(pid) / 'ns' / 'mnt').symlink_to(namespace)
            (proc / str(pid) / 'root').symlink_to(root)
            (proc / str(pid) / 'mountinfo').write_text(text)
            if first:
                (proc / 'self').symlink_to(str(pid))
                first = False
    return str(proc)


def overlay_line(mount_id, point, upper, work, device='0:52'):
    return f'{mount_id} 27 {device} / {point} rw,relatime - overlay overlay rw,lowerdir=/l1:/l2,upperdir={upper},workdir={work}\n'


def test_a_detached_overlay_in_a_containers_namespace_holds_its_upper_layer(tmp_path):
    upper, work = tmp_path / 'upper', tmp_path / 'work'
    upper.mkdir()
    work.mkdir()
    container_root = tmp_path / 'merged'
    container_root.mkdir()
    proc = fake_proc(tmp_path, {
        'mnt:[1]': {100: ('/', ROOT + '\n')},
        # a container chrooted into the overlay: its layers were given by the host, they name nothing in its root
        'mnt:[2]': {200: (str(container_root), overlay_line(300, '/', upper, work)), 201: (str(container_root), '')},
    })
    views = mountinfo.mount_namespaces(proc)
    assert [(view.namespace, view.pids, view.own) for view in views] == [('mnt:[1]', (100,), True), ('mnt:[2]', (200, 201), False)]
    holders = mountinfo.overlays_holding({'upperdir': str(upper), 'workdir': str(work)}, views, proc)
    assert [(holder.view.pids, holder.entry.mount_point, holder.option, holder.asked) for holder in holders] == \
        [((200, 201), '/', 'upperdir', 'upperdir')]


def test_a_lab_hosts_own_overlay_on_the_same_path_text_is_not_ours(tmp_path):
    upper, work = tmp_path / 'overlay' / 'upper', tmp_path / 'overlay' / 'work'
    upper.mkdir(parents=True)
    work.mkdir()
    lab_root = tmp_path / 'labroot'
    (lab_root / str(tmp_path).lstrip('/') / 'overlay' / 'upper').mkdir(parents=True)
    (lab_root / str(tmp_path).lstrip('/') / 'overlay' / 'work').mkdir(parents=True)
    proc = fake_proc(tmp_path, {
        'mnt:[1]': {100: ('/', ROOT + '\n')},
        # the same text, resolved in the lab host's own root: another directory
        'mnt:[3]': {300: (str(lab_root), overlay_line(400, str(tmp_path / 'merged'), upper, work))},
    })
    assert mountinfo.overlays_holding({'upperdir': str(upper), 'workdir': str(work)}, None, proc) == []


def test_an_overlay_here_on_a_symlinked_name_of_our_work_directory_holds_it(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (tmp_path / 'alias').symlink_to(work)
    proc = fake_proc(tmp_path, {'mnt:[1]': {100: ('/', overlay_line(45, '/other', tmp_path / 'u', tmp_path / 'alias'))}})
    holders = mountinfo.overlays_holding({'upperdir': str(tmp_path / 'upper-missing'), 'workdir': str(work)}, None, proc)
    assert [(holder.view.own, holder.option, holder.asked, holder.directory) for holder in holders] == \
        [(True, 'workdir', 'workdir', str(work))]
