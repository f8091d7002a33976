"""A seat's cgroups (local_lab/cgroups.py: which hierarchies, where below labctl's own cgroup, what the seat mounts
at /sys/fs/cgroup) and who logs in (local_lab/account.py, the sshd settings): pure parts, with real samples."""

from __future__ import annotations

import ipaddress
import json

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

from local_lab import account, cgroups, host, rootfs, ssh, state
from local_lab.system import LabError

# The development VM: cgroup v1 controllers beside cgroup2 at unified (the hybrid layout); labctl runs in a memory
# cgroup of its own and at the top of the others.
HYBRID_MOUNTINFO = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 24 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
35 33 0:30 / /sys/fs/cgroup/cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpuacct
36 33 0:31 / /sys/fs/cgroup/cpuset rw,relatime shared:12 - cgroup cgroup rw,cpuset
37 33 0:32 / /sys/fs/cgroup/memory rw,relatime shared:13 - cgroup cgroup rw,memory
38 33 0:33 / /sys/fs/cgroup/devices rw,relatime shared:14 - cgroup cgroup rw,devices
41 33 0:36 / /sys/fs/cgroup/pids rw,relatime shared:17 - cgroup cgroup rw,pids
42 33 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:18 - cgroup cgroup rw,name=systemd
43 33 0:38 / /sys/fs/cgroup/unified rw,relatime shared:19 - cgroup2 cgroup2 rw
"""
HYBRID_PROC_CGROUP = """\
9:name=systemd:/
8:pids:/
5:devices:/
4:memory:/process_api/bfa96e1ae4a9b371f2e3c459fbfec080
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
# A Debian 12/13 machine as installed: cgroup v2 alone, labctl in a user session's scope.
UNIFIED_MOUNTINFO = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 24 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
UNIFIED_PROC_CGROUP = '0::/user.slice/user-0.slice/session-3.scope\n'
# Debian 10 and systemd's "legacy" mode: cpu and cpuacct co-mounted, linked by their own names.
LEGACY_MOUNTINFO = """\
33 24 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
37 33 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
41 33 0:36 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
"""
LEGACY_PROC_CGROUP = '4:pids:/system.slice/ssh.service\n3:memory:/system.slice/ssh.service\n2:cpu,cpuacct:/system.slice\n'


def hierarchies(mounts: str, proc_cgroup: str) -> list[cgroups.Hierarchy]:
    return cgroups.machine_hierarchies(mountinfo.parse_mountinfo(mounts), proc_cgroup)


def test_proc_cgroup_lines():
    assert cgroups.parse_proc_cgroup(HYBRID_PROC_CGROUP)[0] == (9, ('name=systemd',), '/')
    assert cgroups.parse_proc_cgroup('2:cpu,cpuacct:/a:b\n0::/\n') == [(2, ('cpu', 'cpuacct'), '/a:b'), (0, (), '/')]


def test_hybrid_machine_gives_a_seat_memory_pids_cpu_cpuacct_and_unified_below_labctls_own_cgroups():
    found = hierarchies(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP)
    assert [hierarchy.key for hierarchy in found] == ['pids', 'memory', 'cpuacct', 'cpu', 'unified']
    own = {hierarchy.key: hierarchy.own_dir for hierarchy in found}
    assert own['memory'] == '/sys/fs/cgroup/memory/process_api/bfa96e1ae4a9b371f2e3c459fbfec080'
    assert own['unified'] == '/sys/fs/cgroup/unified' and own['pids'] == '/sys/fs/cgroup/pids'
    memory = found[1]
    assert cgroups.seat_dir(memory, 'default', 'lab1') == \
        '/sys/fs/cgroup/memory/process_api/bfa96e1ae4a9b371f2e3c459fbfec080/unboxed-lab/default/lab1'
    assert cgroups.layout(found) == 'hybrid'


def test_a_hybrid_seat_mounts_what_a_hybrid_debian_seat_has():
    mounts = cgroups.seat_mounts(hierarchies(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP))
    assert [(mount.fstype, mount.target, mount.options) for mount in mounts] == [
        ('tmpfs', '/sys/fs/cgroup', 'nosuid,nodev,noexec,mode=755,size=4k'),
        ('cgroup', '/sys/fs/cgroup/pids', 'nosuid,nodev,noexec,pids'),
        ('cgroup', '/sys/fs/cgroup/memory', 'nosuid,nodev,noexec,memory'),
        ('cgroup', '/sys/fs/cgroup/cpuacct', 'nosuid,nodev,noexec,cpuacct'),
        ('cgroup', '/sys/fs/cgroup/cpu', 'nosuid,nodev,noexec,cpu'),
        ('cgroup2', '/sys/fs/cgroup/unified', 'nosuid,nodev,noexec'),
    ]
    assert [mount.read_only_after for mount in mounts] == [True] + [False] * 5
    # What _boot is handed, and reads back.
    assert [cgroups.SeatMount.from_dict(json.loads(json.dumps(mount.to_dict()))) for mount in mounts] == mounts


def test_a_unified_machine_gives_cgroup2_at_sys_fs_cgroup_without_its_system_wide_options():
    found = hierarchies(UNIFIED_MOUNTINFO, UNIFIED_PROC_CGROUP)
    assert [(hierarchy.key, hierarchy.own_dir) for hierarchy in found] == \
        [('unified', '/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope')]
    assert cgroups.layout(found) == 'unified'
    # nsdelegate and memory_recursiveprot belong to the machine's mount: set from its cgroup namespace only.
    assert cgroups.seat_mounts(found) == [cgroups.SeatMount('cgroup2', 'cgroup2', '/sys/fs/cgroup', 'nosuid,nodev,noexec')]


def test_co_mounted_cpu_and_cpuacct_keep_their_directory_and_links():
    found = hierarchies(LEGACY_MOUNTINFO, LEGACY_PROC_CGROUP)
    assert cgroups.layout(found) == 'legacy'
    cpu = [mount for mount in cgroups.seat_mounts(found) if 'cpu' in mount.options]
    assert cpu == [cgroups.SeatMount('cgroup', 'cgroup', '/sys/fs/cgroup/cpu,cpuacct', 'nosuid,nodev,noexec,cpu,cpuacct',
                                     (('cpu', 'cpu,cpuacct'), ('cpuacct', 'cpu,cpuacct')))]
    assert [hierarchy.own_dir for hierarchy in found] == ['/sys/fs/cgroup/pids/system.slice/ssh.service',
                                                          '/sys/fs/cgroup/memory/system.slice/ssh.service',
                                                          '/sys/fs/cgroup/cpu,cpuacct/system.slice']


def test_no_cgroup_mounts_give_nothing_to_mount():
    assert cgroups.machine_hierarchies([], HYBRID_PROC_CGROUP) == []
    assert cgroups.seat_mounts([]) == []


def test_a_cgroup_the_machines_mount_does_not_show_is_refused():
    subtree = UNIFIED_MOUNTINFO.replace(' / /sys/fs/cgroup ', ' /system.slice /sys/fs/cgroup ')
    with pytest.raises(LabError, match='below its own'):
        hierarchies(subtree, UNIFIED_PROC_CGROUP)
    assert hierarchies(subtree, '0::/system.slice/ssh.service\n')[0].own_dir == '/sys/fs/cgroup/ssh.service'


@pytest.mark.parametrize('path, expected', [
    ('/sys/fs/cgroup/memory/x/unboxed-lab/pytest/lab1', True),
    ('/sys/fs/cgroup/unified/unboxed-lab/pytest/lab1', True),
    ('/sys/fs/cgroup/unified/unboxed-lab/pytest/lab2', False),      # another seat
    ('/sys/fs/cgroup/unified/unboxed-lab/other/lab1', False),       # another lab
    ('/sys/fs/cgroup/memory', False),                               # the machine's own
    ('/sys/fs/cgroup/memory/unboxed-lab/pytest/lab1/../../../..', False),
    ('/tmp/unboxed-lab/pytest/lab1', False),
])
def test_only_a_seats_own_cgroup_is_ever_removed(path, expected):
    assert cgroups.is_seat_dir(path, 'pytest', 'lab1') is expected


def test_a_recorded_cgroup_that_is_not_the_seats_is_refused_and_left():
    with pytest.raises(LabError, match='not a cgroup labctl makes'):
        cgroups.remove_seat_cgroups(['/sys/fs/cgroup/memory'], 'pytest', 'lab1')


def test_the_seat_boots_in_its_cgroups_with_its_mounts():
    lab = state.Lab(name='pytest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'),
                    host_prefix='lab', inventory='/tmp/hosts.yml')
    mounts = cgroups.seat_mounts(hierarchies(UNIFIED_MOUNTINFO, UNIFIED_PROC_CGROUP))
    seat = '/sys/fs/cgroup/user.slice/unboxed-lab/pytest/lab1'
    argv = host.boot_argv(lab.new_host('lab1', 1), [seat], mounts)
    assert argv[argv.index('--cgroup') + 1] == seat
    assert json.loads(argv[argv.index('--cgroup-mounts') + 1]) == [mount.to_dict() for mount in mounts]
    assert cgroups.scope_procs_files([seat]) == [f'{seat}/init.scope/cgroup.procs']


def test_a_host_record_keeps_its_cgroups():
    lab = state.Lab(name='pytest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'),
                    host_prefix='lab', inventory='/tmp/hosts.yml')
    record = lab.new_host('lab1', 1)
    record.cgroups = {'memory': '/sys/fs/cgroup/memory/unboxed-lab/pytest/lab1'}
    lab.hosts['lab1'] = record
    assert state.Lab.from_dict(lab.to_dict()).hosts['lab1'].cgroups == record.cgroups
    older = lab.to_dict()
    del older['hosts']['lab1']['cgroups']  # a record from before cgroups
    assert state.Lab.from_dict(older).hosts['lab1'].cgroups == {}


def test_root_does_not_log_in_and_the_student_becomes_root_with_sudo():
    settings = [line.split() for line in ssh.SSHD_CONFIG.splitlines() if line and not line.startswith('#')]
    assert ['PermitRootLogin', 'no'] in settings
    assert ['PasswordAuthentication', 'no'] in settings
    rules = [line for line in account.SUDOERS.splitlines() if line and not line.startswith('#')]
    assert rules == ['student ALL=(ALL) NOPASSWD: ALL']
    assert account.AUTHORIZED_KEYS == '/home/student/.ssh/authorized_keys'


def test_the_accounts_ids_come_from_the_seats_passwd():
    passwd = 'root:x:0:0:root:/root:/bin/bash\nstudent:x:1000:1000:Lab student:/home/student:/bin/bash\n'
    assert account.parse_passwd_ids(passwd, 'student') == (1000, 1000)
    assert account.parse_passwd_ids(passwd, 'nobody') is None


def test_a_host_made_by_an_earlier_labctl_is_outdated(tmp_path, monkeypatch):
    lab = state.Lab(name='pytest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'),
                    host_prefix='lab', inventory='/tmp/hosts.yml')
    record = lab.new_host('lab1', 1)
    marker = tmp_path / 'provisioned.json'
    monkeypatch.setattr(state.HostRecord, 'marker', property(lambda self: str(marker)))
    marker.write_text(json.dumps({'base': 'x', 'release': 'trixie'}))
    assert rootfs.seat_format(record) == 1
    assert 'root logs in over SSH' in rootfs.outdated_reason(record)
    marker.write_text(json.dumps({'base': 'x', 'release': 'trixie', 'seat_format': rootfs.SEAT_FORMAT}))
    assert rootfs.outdated_reason(record) is None
