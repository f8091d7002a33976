"""cgroups.py: Docker's limit syntax, host detection from real samples, and the plan, create (with rollback), remove,
usage and leftovers on fake cgroup trees (plain directories in tmp_path laid out as cgroup v2 and v1 lay theirs out).

The real kernel's side (this machine: v1 controllers, a v2 hierarchy without controllers) is tests/system/test_cgroups_kernel.py.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import cgroups, mountinfo

# This machine (Debian 12 VM, Linux 6.x, hybrid): /proc/self/cgroup of a test process and its cgroup mounts.
HYBRID_PROC_CGROUP = """9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/cf74cd9e5c8a913006395bb585102c0c
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
HYBRID_MOUNTS = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# Debian 12 as installed (systemd, cgroup v2 only), a root shell over ssh; and Debian 10 with co-mounted cpu,cpuacct.
UNIFIED_PROC_CGROUP = '0::/user.slice/user-1000.slice/session-3.scope\n'
UNIFIED_MOUNTS = '30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n'
LEGACY_PROC_CGROUP = """6:pids:/system.slice/ssh.service
4:cpu,cpuacct:/system.slice/ssh.service
3:memory:/system.slice/ssh.service
1:name=systemd:/system.slice/ssh.service
"""
LEGACY_MOUNTS = """25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
"""


# --- limits ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('64m', 64 << 20), ('64M', 64 << 20), ('1g', 1 << 30), ('512k', 512 << 10), ('1048576', 1 << 20),
    ('64MiB', 64 << 20), ('64mb', 64 << 20), ('1.5g', 3 << 29), ('64 m', 64 << 20), ('100b', 100), (67108864, 64 << 20),
])
def test_parse_memory_takes_dockers_sizes(text, expected):
    assert cgroups.parse_memory(text) == expected


@pytest.mark.parametrize('text', ['64X', '-1', '', 'm', '1e6', '64m\n1', '0x40', True, '.5g'])
def test_parse_memory_refuses_what_docker_refuses(text):
    with pytest.raises(ValueError):
        cgroups.parse_memory(text)


@pytest.mark.parametrize('size, shown', [(64 << 20, '64M'), (1 << 30, '1G'), (512 << 10, '512K'), (1536 << 20, '1536M'),
                                         (1000, '1000')])
def test_format_size_is_exact(size, shown):
    assert cgroups.format_size(size) == shown
    assert cgroups.parse_memory(shown) == size


@pytest.mark.parametrize('shares, weight', [(2, 1), (1024, 39), (512, 20), (262144, 10000), (100, 4)])
def test_shares_convert_to_weight_as_runc_does(shares, weight):
    assert cgroups.cpu_shares_to_weight(shares) == weight


def test_parse_limits_valid():
    limits, problems = cgroups.parse_limits('64m', 20, '0.50', 512, cpu_count=2)
    assert problems == []
    assert limits == cgroups.Limits(memory=64 << 20, pids_limit=20, cpus='0.5', cpu_shares=512)
    assert limits.controllers == ('memory', 'pids', 'cpu')
    assert limits.cpu_quota_us == 50000
    assert cgroups.parse_limits(None, None, 2, None, cpu_count=2)[0].cpus == '2'
    assert cgroups.parse_limits(cpus=0.01, cpu_count=1)[0].cpu_quota_us == 1000
    assert cgroups.parse_limits()[0] == cgroups.Limits() and not cgroups.Limits().any()


@pytest.mark.parametrize('kwargs, option, words', [
    ({'memory': '0'}, 'memory', 'unlimited'),
    ({'memory': '-1'}, 'memory', 'not a size'),
    ({'memory': '64X'}, 'memory', 'not a size'),
    ({'memory': '4m'}, 'memory', '6m'),
    ({'pids_limit': 0}, 'pids_limit', 'at least 1'),
    ({'pids_limit': '-5'}, 'pids_limit', 'at least 1'),
    ({'pids_limit': 'many'}, 'pids_limit', 'whole number'),
    ({'pids_limit': True}, 'pids_limit', 'whole number'),
    ({'cpus': '3'}, 'cpus', 'only 2 CPUs'),
    ({'cpus': 2.5}, 'cpus', 'only 2 CPUs'),
    ({'cpus': '0.001'}, 'cpus', 'too small'),
    ({'cpus': '0'}, 'cpus', 'too small'),
    ({'cpus': 'half'}, 'cpus', 'not a number'),
    ({'cpus': '-1'}, 'cpus', 'not a number'),
    ({'cpu_shares': 1}, 'cpu_shares', '2 to 262144'),
    ({'cpu_shares': 262145}, 'cpu_shares', '2 to 262144'),
    ({'cpu_shares': 'lots'}, 'cpu_shares', 'whole number'),
])
def test_parse_limits_names_the_option(kwargs, option, words):
    limits, problems = cgroups.parse_limits(cpu_count=2, **kwargs)
    assert limits is None
    assert len(problems) == 1
    assert problems[0].startswith(f'{option}: ') and words in problems[0], problems


def test_parse_limits_collects_every_problem():
    _limits, problems = cgroups.parse_limits('64X', 0, '9', 1, cpu_count=2)
    assert [problem.split(':')[0] for problem in problems] == ['memory', 'pids_limit', 'cpus', 'cpu_shares']


def test_limits_round_trip_and_refuse_garbage():
    limits = cgroups.parse_limits('1g', 7, '1.5', 2048, cpu_count=2)[0]
    assert cgroups.Limits.from_dict(limits.to_dict()) == limits
    assert cgroups.Limits.from_dict({'memory': '64X'}) is None
    assert cgroups.Limits.from_dict('nope') is None
    # A record of a bigger host stays readable: the CPU count is checked on a request, not on a record.
    assert cgroups.Limits.from_dict({'cpus': '64'}).cpus == '64'


# --- detection -------------------------------------------------------------------------------------------------

def test_detect_this_machine_hybrid():
    host = cgroups.detect(mountinfo.parse_mountinfo(HYBRID_MOUNTS), HYBRID_PROC_CGROUP)
    assert host.layout == 'hybrid'
    assert host.hierarchy_for('memory').mount_point == '/sys/fs/cgroup/memory'
    assert host.hierarchy_for('memory').own_path == '/process_api/cf74cd9e5c8a913006395bb585102c0c'
    assert host.hierarchy_for('pids').version == 1 and host.hierarchy_for('cpu').key == 'cpu'
    assert host.unified.mount_point == '/sys/fs/cgroup/unified'
    assert 'name=systemd' not in [hierarchy.key for hierarchy in host.hierarchies]
    assert host.hierarchies[-1].version == 2


def test_detect_unified_reads_the_controllers(tmp_path):
    root = tmp_path / 'cgroup'
    root.mkdir()
    (root / 'cgroup.controllers').write_text('cpuset cpu io memory hugetlb pids rdma misc\n')
    mounts = UNIFIED_MOUNTS.replace('/sys/fs/cgroup', str(root))
    host = cgroups.detect(mountinfo.parse_mountinfo(mounts), UNIFIED_PROC_CGROUP)
    assert host.layout == 'unified'
    assert host.hierarchy_for('memory') is host.unified
    assert host.unified.own_path == '/user.slice/user-1000.slice/session-3.scope'
    assert host.unified.directory_of('/unboxed') == f'{root}/unboxed'


def test_detect_legacy_co_mounted_cpu():
    host = cgroups.detect(mountinfo.parse_mountinfo(LEGACY_MOUNTS), LEGACY_PROC_CGROUP)
    assert host.layout == 'legacy' and host.unified is None
    cpu = host.hierarchy_for('cpu')
    assert cpu.key == 'cpu,cpuacct' and cpu.mount_point == '/sys/fs/cgroup/cpu,cpuacct'
    assert cpu.directory_of('/system.slice/ssh.service') == '/sys/fs/cgroup/cpu,cpuacct/system.slice/ssh.service'


def test_detect_nothing_mounted():
    host = cgroups.detect([], HYBRID_PROC_CGROUP)
    assert host.layout == 'none' and host.hierarchies == ()


def test_a_mount_of_a_subtree_maps_paths_below_it():
    mounts = '41 31 0:38 /seat /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n'
    host = cgroups.detect(mountinfo.parse_mountinfo(mounts), '0::/seat/init.scope\n')
    assert host.unified.directory_of('/seat/init.scope') == '/sys/fs/cgroup/init.scope'
    assert host.unified.directory_of('/other') is None


@pytest.mark.parametrize('parent', ['unboxed', '/a/../b', '/a/', '/a//b', '/a/./b', '/a b', '/a\n', '/..', ''])
def test_cgroup_parent_must_be_a_clean_absolute_path(parent):
    assert cgroups.cgroup_parent_problem(parent).startswith('cgroup_parent: ')


@pytest.mark.parametrize('parent', ['/', '/unboxed', '/user.slice/user-1000.slice', '/a.b/c_d:e@f'])
def test_cgroup_parent_accepts_cgroup_paths(parent):
    assert cgroups.cgroup_parent_problem(parent) is None


# --- fake trees ------------------------------------------------------------------------------------------------

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_cgroup(directory, controllers='', subtree='', procs='', root=False):
    """A v2 cgroup directory as the kernel shows it: the root has no cgroup.type."""
    directory.mkdir(parents=True, exist_ok=True)
    write(directory / 'cgroup.controllers', controllers + '\n')
    write(directory / 'cgroup.subtree_control', subtree + '\n')
    write(directory / 'cgroup.procs', procs)
    if not root:
        write(directory / 'cgroup.type', 'domain\n')
    return directory


def v2_host(tmp_path, own_path='/', controllers='cpu memory pids', root_subtree='cpu memory pids'):
    root = v2_cgroup(tmp_path / 'cgroup2', controllers, root_subtree, procs='1\n', root=True)
    mounts = f'30 22 0:26 / {root} rw - cgroup2 cgroup2 rw\n'
    return root, cgroups.detect(mountinfo.parse_mountinfo(mounts), f'0::{own_path}\n')


def v1_host(tmp_path, own_paths=None, controllers=('memory', 'pids', 'cpu')):
    own_paths = own_paths or {}
    lines, proc = [], []
    for number, controller in enumerate(controllers, 30):
        mount_point = tmp_path / 'v1' / controller
        mount_point.mkdir(parents=True)
        write(mount_point / 'cgroup.procs', '1\n')
        lines.append(f'{number} 25 0:{number} / {mount_point} rw - cgroup cgroup rw,{controller}')
        proc.append(f'{number - 28}:{controller}:{own_paths.get(controller, "/")}')
    if 'memory' in controllers:
        write(tmp_path / 'v1' / 'memory' / 'memory.memsw.limit_in_bytes', '9223372036854771712\n')
    return tmp_path / 'v1', cgroups.detect(mountinfo.parse_mountinfo('\n'.join(lines)), '\n'.join(proc))


def snapshot(root):
    found = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, root)] = None if os.path.isdir(path) else open(path, encoding='ascii').read()
    return found


LIMITS = cgroups.Limits(memory=64 << 20, pids_limit=20, cpus='0.5', cpu_shares=1024)


# --- plan: cgroup v2 -------------------------------------------------------------------------------------------

def test_v2_plan_below_a_delegating_root(tmp_path):
    root, host = v2_host(tmp_path)
    plan = cgroups.plan(host, 'web', LIMITS)
    directory = f'{root}/unboxed-web'
    assert [(step.action, step.path, step.value) for step in plan.steps()] == [
        ('mkdir', directory, None),
        ('write', f'{directory}/memory.max', '64M'),
        ('write', f'{directory}/memory.swap.max', '64M'),
        ('write', f'{directory}/pids.max', '20'),
        ('write', f'{directory}/cpu.max', '50000 100000'),
        ('write', f'{directory}/cpu.weight', '39'),
    ]
    assert plan.cgroups[0].path == '/unboxed-web' and plan.cgroups[0].controllers == ('memory', 'pids', 'cpu')
    assert cgroups.setup_commands(plan)[:2] == [f'mkdir {directory}', f'echo 64M > {directory}/memory.max']
    assert cgroups.setup_commands(plan)[-1] == f'echo $$ > {directory}/cgroup.procs'


def test_v2_root_with_processes_enables_only_the_needed_controllers(tmp_path):
    root, host = v2_host(tmp_path, root_subtree='')
    plan = cgroups.plan(host, 'web', cgroups.Limits(pids_limit=5))
    assert [(step.action, step.path, step.value) for step in plan.steps()][:2] == [
        ('enable', str(root), '+pids'), ('mkdir', f'{root}/unboxed-web', None)]
    assert cgroups.setup_commands(plan)[0] == f'echo +pids > {root}/cgroup.subtree_control'


def test_v2_parent_with_processes_is_refused_naming_cgroup_parent(tmp_path):
    root, host = v2_host(tmp_path, own_path='/init.scope')
    v2_cgroup(root / 'init.scope', 'cpu memory pids', '', procs='1\n77\n')
    before = snapshot(tmp_path)
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20))
    assert caught.value.option == 'cgroup_parent'
    message = str(caught.value)
    assert 'no internal processes' in message and '1, 77' in message and '/init.scope' in message
    assert 'memory' in message
    assert snapshot(tmp_path) == before


def test_v2_parent_with_processes_is_fine_for_placement_only(tmp_path):
    root, host = v2_host(tmp_path, own_path='/init.scope')
    v2_cgroup(root / 'init.scope', 'cpu memory pids', '', procs='1\n')
    plan = cgroups.plan(host, 'web', cgroups.Limits())
    assert [step.action for step in plan.steps()] == ['mkdir']
    assert plan.cgroups[0].path == '/init.scope/unboxed-web' and plan.cgroups[0].controllers == ()


def test_v2_empty_parent_is_ours_to_enable(tmp_path):
    root, host = v2_host(tmp_path, own_path='/')
    v2_cgroup(root / 'unboxed', 'cpu memory pids', 'memory')
    plan = cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20, pids_limit=3), cgroup_parent='/unboxed')
    assert [(step.action, step.path, step.value) for step in plan.steps()][:2] == [
        ('enable', f'{root}/unboxed', '+pids'), ('mkdir', f'{root}/unboxed/unboxed-web', None)]


def test_v2_controller_not_delegated_names_the_option(tmp_path):
    root, host = v2_host(tmp_path, own_path='/user.slice')
    v2_cgroup(root / 'user.slice', 'memory pids', '')
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.plan(host, 'web', cgroups.Limits(cpus='0.5', cpu_shares=100))
    assert caught.value.option == 'cpus'
    assert 'cpus, cpu_shares: the cpu controller is not delegated to /user.slice' in str(caught.value)


def test_v2_missing_parents_are_made_and_given_the_controllers(tmp_path):
    root, host = v2_host(tmp_path)
    plan = cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20), cgroup_parent='/unboxed/class')
    assert [(step.action, step.path, step.value) for step in plan.steps()][:5] == [
        ('mkdir', f'{root}/unboxed', None), ('enable', f'{root}/unboxed', '+memory'),
        ('mkdir', f'{root}/unboxed/class', None), ('enable', f'{root}/unboxed/class', '+memory'),
        ('mkdir', f'{root}/unboxed/class/unboxed-web', None)]


def test_v2_never_changes_a_cgroup_above_the_parent(tmp_path):
    root, host = v2_host(tmp_path, root_subtree='pids')
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20), cgroup_parent='/unboxed')
    assert caught.value.option == 'memory'
    assert 'above cgroup_parent /unboxed' in str(caught.value) and 'not delegated' in str(caught.value)


def test_controller_missing_on_the_host(tmp_path):
    _root, host = v2_host(tmp_path, controllers='memory', root_subtree='memory')
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20, pids_limit=4))
    assert caught.value.option == 'pids_limit'
    assert 'pids_limit: this host has no pids controller' in str(caught.value)


# --- plan: cgroup v1 and hybrid --------------------------------------------------------------------------------

def test_v1_plan_each_hierarchy_below_its_own_cgroup(tmp_path):
    base, host = v1_host(tmp_path, own_paths={'memory': '/process_api/x'})
    (base / 'memory' / 'process_api' / 'x').mkdir(parents=True)
    plan = cgroups.plan(host, 'web', LIMITS)
    assert [cgroup.hierarchy for cgroup in plan.cgroups] == ['memory', 'pids', 'cpu']
    memory = plan.cgroups[0]
    assert memory.path == '/process_api/x/unboxed-web'
    assert [(step.action, os.path.basename(step.path), step.value) for step in plan.steps()] == [
        ('mkdir', 'unboxed-web', None),
        ('write', 'memory.limit_in_bytes', '64M'), ('write', 'memory.memsw.limit_in_bytes', '128M'),
        ('mkdir', 'unboxed-web', None), ('write', 'pids.max', '20'),
        ('mkdir', 'unboxed-web', None), ('write', 'cpu.cfs_period_us', '100000'),
        ('write', 'cpu.cfs_quota_us', '50000'), ('write', 'cpu.shares', '1024'),
    ]


def test_v1_cgroup_parent_applies_to_every_hierarchy(tmp_path):
    base, host = v1_host(tmp_path, controllers=('memory', 'pids'))
    plan = cgroups.plan(host, 'web', cgroups.Limits(pids_limit=3), cgroup_parent='/unboxed')
    assert [(step.action, step.path) for step in plan.steps()] == [
        ('mkdir', f'{base}/pids/unboxed'), ('mkdir', f'{base}/pids/unboxed/unboxed-web'),
        ('write', f'{base}/pids/unboxed/unboxed-web/pids.max')]


def test_hybrid_places_in_v2_too(tmp_path):
    _base, v1 = v1_host(tmp_path, controllers=('pids',))
    _root, v2 = v2_host(tmp_path, controllers='', root_subtree='')
    host = cgroups.Host('hybrid', v1.hierarchies + v2.hierarchies)
    plan = cgroups.plan(host, 'web', cgroups.Limits(pids_limit=3))
    assert [(cgroup.hierarchy, cgroup.version, cgroup.controllers) for cgroup in plan.cgroups] == [
        ('pids', 1, ('pids',)), ('unified', 2, ())]
    assert plan.describe()['hierarchies'][1] == {
        'hierarchy': 'unified', 'version': 2, 'path': '/unboxed-web', 'directory': plan.cgroups[1].directory,
        'controllers': []}
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20))
    assert caught.value.option == 'memory' and 'no memory controller' in str(caught.value)


def test_cgroup_parent_not_shown_by_a_subtree_mount(tmp_path):
    root = v2_cgroup(tmp_path / 'cgroup2', 'pids', 'pids', root=True)
    host = cgroups.detect(mountinfo.parse_mountinfo(f'30 22 0:26 /seat {root} rw - cgroup2 cgroup2 rw\n'), '0::/seat\n')
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.plan(host, 'web', cgroups.Limits(), cgroup_parent='/elsewhere')
    assert caught.value.option == 'cgroup_parent' and 'shows only /seat' in str(caught.value)


# --- create, rollback, remove ----------------------------------------------------------------------------------

class FakeKernel:
    """What cgroupfs does that a plain directory does not: rmdir takes a cgroup with its control files, and
    cgroup.subtree_control takes "+x -y" and shows the controllers enabled. ``refuse``: {file name: errno}."""

    def __init__(self):
        self.refuse = {}
        self.writes = []

    def write(self, path, value):
        name = os.path.basename(path)
        if name in self.refuse:
            raise OSError(self.refuse[name], os.strerror(self.refuse[name]))
        self.writes.append((path, value))
        if name == 'cgroup.subtree_control':
            enabled = open(path, encoding='ascii').read().split() if os.path.exists(path) else []
            for word in value.split():
                if word[0] == '+' and word[1:] not in enabled:
                    enabled.append(word[1:])
                elif word[0] == '-' and word[1:] in enabled:
                    enabled.remove(word[1:])
            value = ' '.join(enabled) + '\n'
        with open(path, 'w', encoding='ascii') as handle:
            handle.write(value)

    @staticmethod
    def rmdir(path):
        for entry in os.scandir(path):
            if entry.is_file():
                os.unlink(entry.path)
        os.rmdir(path)


@pytest.fixture
def fake_kernel(monkeypatch):
    kernel = FakeKernel()
    monkeypatch.setattr(cgroups, '_write', kernel.write)
    monkeypatch.setattr(cgroups, '_rmdir', kernel.rmdir)
    return kernel


def test_create_writes_in_order_and_remove_undoes_everything(tmp_path, fake_kernel):
    root, host = v2_host(tmp_path)
    before = snapshot(tmp_path)
    plan = cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20, pids_limit=5), cgroup_parent='/unboxed')
    done = cgroups.create(plan)
    directory = root / 'unboxed' / 'unboxed-web'
    assert (directory / 'memory.max').read_text() == '64M' and (directory / 'pids.max').read_text() == '5'
    assert not (directory / 'memory.swap.max').exists()  # optional: this fake kernel accounts no swap
    assert (root / 'unboxed' / 'cgroup.subtree_control').read_text() == 'memory pids\n'
    assert [os.path.basename(path) for path, _value in fake_kernel.writes] == [
        'cgroup.subtree_control', 'memory.max', 'pids.max']
    assert cgroups.leftovers(done) == [str(directory)]
    # What create really did, recorded for the state file, comes back the same.
    assert cgroups.Plan.from_dict(done.to_dict()) == done
    assert cgroups.remove(done) == [str(directory)]
    assert cgroups.leftovers(done) == []
    assert snapshot(tmp_path) == before


def test_create_rolls_back_on_failure(tmp_path, fake_kernel):
    _base, host = v1_host(tmp_path)
    plan = cgroups.plan(host, 'web', LIMITS, cgroup_parent='/class')
    before = snapshot(tmp_path)
    fake_kernel.refuse['cpu.cfs_quota_us'] = 22
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.create(plan)
    assert 'Could not write "50000" to' in str(caught.value) and 'cpu.cfs_quota_us: Invalid argument' in str(caught.value)
    assert snapshot(tmp_path) == before


def test_v2_rollback_disables_what_it_enabled(tmp_path, fake_kernel):
    root, host = v2_host(tmp_path, root_subtree='')
    plan = cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20, pids_limit=5))
    before = snapshot(tmp_path)
    fake_kernel.refuse['pids.max'] = 16
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.create(plan)
    assert 'Device or resource busy' in str(caught.value)
    assert snapshot(tmp_path) == before
    assert (root / 'cgroup.subtree_control').read_text().split() == []


def test_create_replaces_an_empty_leftover_and_refuses_a_busy_one(tmp_path, fake_kernel):
    root, host = v2_host(tmp_path)
    plan = cgroups.plan(host, 'web', cgroups.Limits())
    (root / 'unboxed-web').mkdir()
    cgroups.create(plan)
    assert (root / 'unboxed-web').is_dir()
    write(root / 'unboxed-web' / 'cgroup.procs', '4242\n')
    before = snapshot(tmp_path)
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.create(plan)
    assert '4242' in str(caught.value) and 'left as it is' in str(caught.value)
    assert snapshot(tmp_path) == before


def test_remove_leaves_a_cgroup_with_processes(tmp_path, fake_kernel):
    root, host = v2_host(tmp_path)
    done = cgroups.create(cgroups.plan(host, 'web', cgroups.Limits()))
    write(root / 'unboxed-web' / 'cgroup.procs', '4242\n')
    with pytest.raises(cgroups.CgroupError) as caught:
        cgroups.remove(done, timeout=0.1)
    assert 'still holds processes 4242' in str(caught.value)
    assert (root / 'unboxed-web').is_dir()
    assert cgroups.processes(done) == [4242]


def test_remove_keeps_a_parent_someone_else_uses(tmp_path, fake_kernel):
    root, host = v2_host(tmp_path)
    first = cgroups.create(cgroups.plan(host, 'one', cgroups.Limits(), cgroup_parent='/unboxed'))
    second = cgroups.create(cgroups.plan(host, 'two', cgroups.Limits(), cgroup_parent='/unboxed'))
    assert [step.action for step in second.steps()] == ['mkdir']  # /unboxed was the first one's
    cgroups.remove(first)
    assert (root / 'unboxed' / 'unboxed-two').is_dir()
    cgroups.remove(second)
    # Made by "one", busy when "one" went: it stays, as Docker leaves a --cgroup-parent it did not make.
    assert (root / 'unboxed').is_dir()
    assert cgroups.stray_cgroups(host, '/unboxed') == []


def test_plan_from_dict_refuses_foreign_records(tmp_path):
    _root, host = v2_host(tmp_path)
    data = cgroups.plan(host, 'web', LIMITS).to_dict()
    assert cgroups.Plan.from_dict(data).limits == LIMITS
    for tamper in ({'directory': '/etc'}, {'directory': data['cgroups'][0]['directory'] + '/../x'},
                   {'steps': [{'action': 'write', 'path': '/etc/passwd', 'value': 'x'}]},
                   {'steps': [{'action': 'unlink', 'path': data['cgroups'][0]['directory']}]}):
        bad = dict(data, cgroups=[dict(data['cgroups'][0], **tamper)])
        assert cgroups.Plan.from_dict(bad) is None, tamper
    assert cgroups.Plan.from_dict(dict(data, format=99)) is None
    assert cgroups.Plan.from_dict({'name': 'web'}) is None
    assert cgroups.Plan.from_dict(None) is None


# --- usage, strays ----------------------------------------------------------------------------------------------

def test_usage_v2(tmp_path):
    root, host = v2_host(tmp_path)
    done = cgroups.create(cgroups.plan(host, 'web', cgroups.Limits(memory=64 << 20)))
    directory = root / 'unboxed-web'
    write(directory / 'memory.current', '1048576\n')
    write(directory / 'memory.events', 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n')
    write(directory / 'pids.current', '3\n')
    write(directory / 'cpu.stat', 'usage_usec 10\nnr_periods 5\nnr_throttled 2\nthrottled_usec 7000\n')
    assert cgroups.usage(done) == {'memory_current': 1048576, 'memory_peak': None, 'pids_current': 3, 'oom_kills': 1,
                                   'cpu_nr_throttled': 2, 'cpu_throttled_usec': 7000}


def test_usage_v1_and_nothing_known(tmp_path):
    base, host = v1_host(tmp_path)
    done = cgroups.create(cgroups.plan(host, 'web', LIMITS))
    write(base / 'memory' / 'unboxed-web' / 'memory.usage_in_bytes', '4096\n')
    write(base / 'memory' / 'unboxed-web' / 'memory.max_usage_in_bytes', '8192\n')
    write(base / 'memory' / 'unboxed-web' / 'memory.oom_control', 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n')
    write(base / 'cpu' / 'unboxed-web' / 'cpu.stat', 'nr_periods 9\nnr_throttled 4\nthrottled_time 2500000\n')
    assert cgroups.usage(done) == {'memory_current': 4096, 'memory_peak': 8192, 'pids_current': None, 'oom_kills': 2,
                                   'cpu_nr_throttled': 4, 'cpu_throttled_usec': 2500}
    empty = cgroups.Plan('web', 'none', cgroups.Limits(), None, ())
    assert cgroups.usage(empty) == dict.fromkeys(cgroups.USAGE_KEYS)


def test_stray_cgroups_lists_only_ours(tmp_path):
    root, host = v2_host(tmp_path)
    v2_cgroup(root / 'unboxed-old', procs='')
    v2_cgroup(root / 'unboxed-busy', procs='99\n')
    v2_cgroup(root / 'system.slice')
    v2_cgroup(root / 'unboxed-lab' / 'default' / 'lab1')  # labctl's tree, not a container's
    strays = cgroups.stray_cgroups(host)
    assert [(stray['path'], stray['processes']) for stray in strays] == [('/unboxed-busy', [99]), ('/unboxed-old', [])]
