"""ns_container's confinement and limits on this machine's kernel, as root, through Ansible: capabilities,
no_new_privs, seccomp (Docker's default profile and one of our own), preset docker, and cgroups that bite.

The probes run inside the container itself - its command is a busybox shell script that tries each call, writes
what happened into the container's /tmp and then becomes ``tail -f /dev/null`` - so what they show is what the
container's own processes may do (nsenter would bring none of its confinement along).

This machine is "hybrid": cgroup v1 controllers (memory, pids, cpu...) beside a v2 hierarchy that has none of
them. The limits are shown to bite on v1; the v2 hierarchy is used for real as far as it goes (the container's
cgroup is created there, its processes are placed in it, it is removed). Every cgroup is created below the test
process's own cgroup (the module's default parent).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import cgroups
from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import process

pytestmark = pytest.mark.root

STOP_TIMEOUT = 1
_names = itertools.count()

# Each probe: a call, its exit code and its error text in /tmp/probe/NAME.{rc,err}. The last line is the sign that
# all probes ran; then the shell becomes the container's long-running PID 1.
PROBES = {
    'status': 'grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status',
    'unshare': 'unshare -U true',
    'mount': 'mount -t tmpfs none /mnt',
    'mknod': 'mknod /tmp/probe/sda b 8 0',
    'mkdir': 'mkdir /tmp/probe/made',
    'chown': 'chown 1:1 /tmp/probe',
}


def probe_command(extra: str = '') -> list[str]:
    lines = ['mkdir -p /tmp/probe']
    for name, call in PROBES.items():
        lines.append(f'{call} >/tmp/probe/{name}.out 2>/tmp/probe/{name}.err; echo $? >/tmp/probe/{name}.rc')
    lines.append(extra)
    lines.append('echo ok >/tmp/probe.done')
    lines.append('exec tail -f /dev/null')
    return ['sh', '-c', '\n'.join(line for line in lines if line)]


@pytest.fixture
def rootfs(busybox_rootfs):
    for name in ('mnt', 'tmp'):
        os.makedirs(os.path.join(busybox_rootfs, name), exist_ok=True)
    zero = os.path.join(busybox_rootfs, 'dev', 'zero')
    if not os.path.exists(zero):
        os.mknod(zero, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    return busybox_rootfs


class Tracker:
    """Names, arguments and cleanup (processes by PID and start time, recorded cgroups) for one test's containers."""

    def __init__(self, tmp_path, rootfs):
        self.tmp_path = tmp_path
        self.rootfs = rootfs
        self.state_dirs = set()

    def args(self, name=None, **overrides):
        name = name or f'pyconf{os.getpid()}n{next(_names)}'
        args = {'name': name, 'rootfs': self.rootfs, 'command': probe_command(), 'state_dir': str(self.tmp_path / 'state' / name),
                'stop_timeout': STOP_TIMEOUT}
        args.update(overrides)
        self.state_dirs.add(args['state_dir'])
        return {key: value for key, value in args.items() if value is not None}

    def cleanup(self):
        for state_dir in self.state_dirs:
            try:
                state = container.read_state(state_dir)
            except container.StateFileError:
                state = None
            identity = container.recorded_process(state)
            if process.send_signal(identity, signal.SIGKILL):
                process.wait_until_not_running(identity, 30)
            plan = cgroups.Plan.from_dict((state or {}).get('cgroup') or {})
            if plan is not None:
                for pid in cgroups.processes(plan):
                    own = process.identity_of(pid)
                    if own is not None and process.send_signal(own, signal.SIGKILL):
                        process.wait_until_not_running(own, 30)
                cgroups.remove(plan)


@pytest.fixture
def tracker(tmp_path, rootfs):
    found = Tracker(tmp_path, rootfs)
    yield found
    found.cleanup()


def probes(rootfs, timeout=20.0) -> dict:
    """What each probe did inside the container: {name: (exit code, error text, output)}."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(rootfs, 'tmp', 'probe.done')):
        assert time.monotonic() < deadline, 'the probes inside the container did not finish'
        time.sleep(0.05)
    found = {}
    for name in PROBES:
        base = os.path.join(rootfs, 'tmp', 'probe', name)
        with open(base + '.rc', encoding='utf-8') as rc, open(base + '.err', encoding='utf-8') as err, \
                open(base + '.out', encoding='utf-8') as out:
            found[name] = (int(rc.read()), err.read(), out.read())
    return found


def status_of(pid) -> dict:
    return confine.read_status_fields(pid)


def ok(result):
    assert not result['failed'], result.get('msg')
    return result


def cgroup_lines(pid) -> dict:
    """/proc/PID/cgroup as {hierarchy key: path} (v2: 'unified'; v1: its controllers joined by ',')."""
    found = {}
    with open(f'/proc/{pid}/cgroup', encoding='utf-8') as handle:
        for line in handle:
            _id, controllers, path = line.rstrip('\n').split(':', 2)
            found[controllers or cgroups.UNIFIED] = path
    return found


def unboxed_cgroups_of(name) -> list[str]:
    """Every cgroup directory of this container name anywhere below /sys/fs/cgroup (that should be gone)."""
    found = []
    for parent, directories, _files in os.walk('/sys/fs/cgroup'):
        found += [os.path.join(parent, directory) for directory in directories if directory == f'unboxed-{name}']
    return found


# ---- capabilities, no_new_privs, seccomp ----------------------------------------------------------------------------

def test_preset_docker_is_dockers_default_confinement(run_module, tracker, rootfs):
    args = tracker.args(preset='docker')
    result = ok(run_module('ns_container', args))
    assert result['changed'] and result['root_method'] == 'pivot_root'
    live = status_of(result['pid'])
    assert live['CapEff'] == live['CapPrm'] == live['CapBnd'] == confine.DOCKER_CAP_EFF == '00000000a80425fb'
    assert live['CapInh'] == live['CapAmb'] == '0000000000000000'
    assert live['NoNewPrivs'] == '0' and live['Seccomp'] == '2'
    assert result['confinement'] == {'capabilities': list(confine.resolve_capabilities(['docker'])),
                                     'cap_eff': '00000000a80425fb', 'no_new_privs': False, 'seccomp': 'docker',
                                     'seccomp_mode': 2}
    seen = probes(rootfs)
    assert 'CapEff:\t00000000a80425fb' in seen['status'][2] and 'Seccomp:\t2' in seen['status'][2]
    # Blocked by Docker's profile without CAP_SYS_ADMIN (and by the missing capability): EPERM. busybox mount says
    # EPERM (or EACCES) in its own words.
    assert seen['unshare'][0] != 0 and 'Operation not permitted' in seen['unshare'][1], seen['unshare']
    assert seen['mount'][0] != 0 and 'permission denied (are you root?)' in seen['mount'][1], seen['mount']
    # Allowed: Docker keeps CAP_CHOWN and CAP_MKNOD, and its profile allows mkdir, chown and mknod.
    assert seen['mkdir'][0] == 0 and seen['chown'][0] == 0 and seen['mknod'][0] == 0, seen
    # Idempotent, and check mode predicts it.
    again = ok(run_module('ns_container', args, check=True))
    assert not again['changed']
    again = ok(run_module('ns_container', args))
    assert not again['changed'] and again['pid'] == result['pid']
    assert again['confinement']['cap_eff'] == '00000000a80425fb'


def test_no_new_privs_and_docker_capabilities_plus_one(run_module, tracker, rootfs):
    args = tracker.args(capabilities=['docker', 'net_admin'], no_new_privs=True, seccomp='docker')
    result = ok(run_module('ns_container', args))
    live = status_of(result['pid'])
    expected = confine.mask_text(int(confine.DOCKER_CAP_EFF, 16) | 1 << confine.CAPABILITY_NUMBERS['CAP_NET_ADMIN'])
    assert live['CapEff'] == live['CapBnd'] == expected == result['confinement']['cap_eff']
    assert live['NoNewPrivs'] == '1' and live['Seccomp'] == '2'
    assert 'NoNewPrivs:\t1' in probes(rootfs)['status'][2]


def test_mknod_of_a_block_device_fails_without_the_capability_and_works_unconfined(run_module, tracker, rootfs,
                                                                                   tmp_path):
    confined = ok(run_module('ns_container', tracker.args(capabilities=['none'])))
    assert status_of(confined['pid'])['CapEff'] == '0000000000000000'
    seen = probes(rootfs)
    assert seen['mknod'][0] != 0 and 'Operation not permitted' in seen['mknod'][1]
    assert seen['mount'][0] != 0 and seen['chown'][0] != 0
    assert not os.path.exists(os.path.join(rootfs, 'tmp', 'probe', 'sda'))
    ok(run_module('ns_container', tracker.args(name=confined['name'], state='absent')))
    # The same probes in the talk's container (chroot, nothing dropped): root may do it all.
    subprocess.run(['rm', '-rf', os.path.join(rootfs, 'tmp', 'probe'), os.path.join(rootfs, 'tmp', 'probe.done')],
                   check=True)
    talk = ok(run_module('ns_container', tracker.args(root_method='chroot')))
    assert status_of(talk['pid'])['Seccomp'] == '0'
    seen = probes(rootfs)
    assert seen['mknod'][0] == 0 and stat.S_ISBLK(os.lstat(os.path.join(rootfs, 'tmp', 'probe', 'sda')).st_mode)
    assert seen['mount'][0] == 0 and seen['chown'][0] == 0


def test_a_profile_of_our_own_fails_mkdir_with_its_errno(run_module, tracker, rootfs, tmp_path):
    profile = dict(json.loads(json.dumps(confine.seccomp_docker.PROFILE)))
    # EDQUOT: an errno no real mkdir here would give, so the message can only come from the profile.
    profile['syscalls'] = [{'names': ['mkdir', 'mkdirat'], 'action': 'SCMP_ACT_ERRNO', 'errnoRet': 122}] + profile['syscalls']
    path = tmp_path / 'no-mkdir.json'
    path.write_text(json.dumps(profile))
    os.makedirs(os.path.join(rootfs, 'tmp', 'probe'))  # the probes cannot make it under this profile
    result = ok(run_module('ns_container', tracker.args(preset='docker', seccomp=str(path))))
    assert result['confinement']['seccomp'] == str(path) and result['confinement']['seccomp_mode'] == 2
    seen = probes(rootfs)
    assert seen['mkdir'][0] != 0 and 'Disk quota exceeded' in seen['mkdir'][1], seen['mkdir']
    assert seen['chown'][0] == 0  # the rest of Docker's profile still allows what it allows
    # The profile is read at a start: a running container keeps its filter, a restart reads the file again.
    args = tracker.args(name=result['name'], preset='docker', seccomp=str(path))
    path.unlink()
    assert ok(run_module('ns_container', args))['changed'] is False
    refused = run_module('ns_container', dict(args, state='restarted'))
    assert refused['failed'] and 'seccomp: cannot read the profile' in refused['msg'] and 'still runs' in refused['msg']
    assert process.is_running(process.identity_of(result['pid']))


def test_a_changed_confinement_restarts_and_the_diff_shows_it(run_module, tracker):
    args = tracker.args(preset='docker')
    first = ok(run_module('ns_container', args))
    changed = dict(args, capabilities=['docker', 'sys_ptrace'])
    predicted = ok(run_module('ns_container', changed, check=True, diff=True))
    assert predicted['changed'] and 'capabilities changed' in predicted['msg']
    assert predicted['diff']['before']['capabilities'] == list(confine.resolve_capabilities(['docker']))
    assert 'CAP_SYS_PTRACE' in predicted['diff']['after']['capabilities']
    assert process.is_running(process.identity_of(first['pid']))
    second = ok(run_module('ns_container', changed))
    assert second['changed'] and second['pid'] != first['pid']
    assert int(status_of(second['pid'])['CapEff'], 16) >> confine.CAPABILITY_NUMBERS['CAP_SYS_PTRACE'] & 1


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('make_overrides, option, fragment', [
    (lambda tmp: dict(capabilities=['docker', 'cap_bogus']), 'capabilities', 'unknown capability "cap_bogus"'),
    (lambda tmp: dict(preset='docker', root_method='chroot'), 'preset', 'preset docker needs root_method pivot_root'),
    (lambda tmp: dict(capabilities=['docker'], root_method='chroot'), 'capabilities', 'need root_method pivot_root'),
    (lambda tmp: dict(seccomp=_write(tmp, 'bad.json', '{"defaultAction": ')), 'seccomp', 'is not valid JSON'),
    (lambda tmp: dict(seccomp=_write(tmp, 'act.json', json.dumps({'defaultAction': 'SCMP_ACT_ALOW', 'syscalls': []}))),
     'seccomp', 'unknown action "SCMP_ACT_ALOW"'),
    (lambda tmp: dict(seccomp=_write(tmp, 'call.json', json.dumps(
        {'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': [{'names': ['mkdri'], 'action': 'SCMP_ACT_ERRNO'}]}))),
     'seccomp', 'unknown system call "mkdri"'),
    (lambda tmp: dict(seccomp=str(tmp / 'missing.json')), 'seccomp', 'cannot read the profile'),
    (lambda tmp: dict(memory='64X'), 'memory', 'memory'),
    (lambda tmp: dict(pids_limit=0), 'pids_limit', 'pids_limit'),
    (lambda tmp: dict(cpus=os.cpu_count() + 1), 'cpus', 'cpus'),
    (lambda tmp: dict(cgroup_parent='relative/parent'), 'cgroup_parent', 'cgroup_parent'),
])
def test_bad_input_names_the_option_and_creates_nothing(run_module, tracker, rootfs, tmp_path, make_overrides, option,
                                                        fragment):
    args = tracker.args(**make_overrides(tmp_path))
    before = sorted(os.listdir('/proc'))
    # Check mode refuses the same (shown for the ones read from the host: the profile, the limits).
    for check in ((True, False) if option in ('seccomp', 'memory') else (False,)):
        result = run_module('ns_container', args, check=check)
        assert result['failed'], result
        assert fragment in result['msg'] and option in result['msg'], result['msg']
        assert not os.path.exists(args['state_dir'])
        assert unboxed_cgroups_of(args['name']) == []
    assert not any(pid not in before and any(rootfs in arg for arg in process.read_cmdline(int(pid)) or [])
                   for pid in os.listdir('/proc') if pid.isdigit())


# ---- cgroups ------------------------------------------------------------------------------------------------------

def test_the_container_and_its_children_are_in_its_cgroups_from_the_start(run_module, tracker, rootfs):
    args = tracker.args(pids_limit=50, command=['sh', '-c', 'sleep 1000 & exec tail -f /dev/null'])
    predicted = ok(run_module('ns_container', args, check=True))
    assert predicted['changed'] and predicted['cgroup'] and predicted['setup_commands']
    assert not os.path.exists(args['state_dir']) and unboxed_cgroups_of(args['name']) == []
    result = ok(run_module('ns_container', args))
    assert result['cgroup'] == predicted['cgroup'] and result['setup_commands'] == predicted['setup_commands']
    hierarchies = {entry['hierarchy']: entry for entry in result['cgroup']['hierarchies']}
    assert 'pids' in hierarchies
    has_v2 = os.path.isdir('/sys/fs/cgroup/unified') or os.path.exists('/sys/fs/cgroup/cgroup.controllers')
    assert (cgroups.UNIFIED in hierarchies) == has_v2
    deadline = time.monotonic() + 10
    while not process.children_of(result['pid']) and time.monotonic() < deadline:
        time.sleep(0.05)
    members = [result['pid']] + [child.pid for child in process.children_of(result['pid'])]
    assert len(members) == 2
    own = cgroup_lines(os.getpid())
    for pid in members:
        lines = cgroup_lines(pid)
        for key, entry in hierarchies.items():
            assert lines[key] == entry['path'], (pid, key, lines)
            # Below the cgroup of the process that ran the module: this test's own.
            assert entry['path'] == own[key].rstrip('/') + f'/unboxed-{args["name"]}'
        assert pid in cgroups.processes_in(hierarchies['pids']['directory'])
    assert ok(run_module('ns_container', args))['changed'] is False
    assert result['usage']['pids_current'] >= 2
    gone = ok(run_module('ns_container', dict(args, state='stopped')))
    assert gone['changed'] and gone['usage']['pids_current'] is None
    for entry in hierarchies.values():
        assert not os.path.exists(entry['directory'])


def test_a_fork_loop_stops_at_the_pids_limit(run_module, tracker, rootfs):
    # In a subshell: busybox sh gives up (exit 2) when it cannot fork, and PID 1 must survive it.
    loop = '(i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done) 2>/tmp/fork.err; echo ok >/tmp/forked'
    args = tracker.args(pids_limit=10, command=['sh', '-c', loop + '; exec tail -f /dev/null'])
    result = ok(run_module('ns_container', args))
    deadline = time.monotonic() + 20
    while not os.path.exists(os.path.join(rootfs, 'tmp', 'forked')):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with open(os.path.join(rootfs, 'tmp', 'fork.err'), encoding='utf-8') as handle:
        assert "can't fork" in handle.read()
    usage = ok(run_module('ns_container', args))['usage']
    pids_dir = next(entry['directory'] for entry in result['cgroup']['hierarchies'] if entry['hierarchy'] == 'pids')
    inside = cgroups.processes_in(pids_dir)
    # unshare, PID 1 and the sleeps that fitted (the subshell that forked them has ended): never more than 10.
    assert 8 <= len(inside) == usage['pids_current'] <= 10
    sleeps = [pid for pid in inside if (process.read_cmdline(pid) or [''])[0] == 'sleep']
    assert 6 <= len(sleeps) < 10
    ok(run_module('ns_container', dict(args, state='absent')))
    assert unboxed_cgroups_of(args['name']) == []


def test_a_memory_hog_is_oom_killed_inside_while_the_host_survives(run_module, tracker, rootfs):
    bystander = subprocess.Popen(['sleep', '600'])
    try:
        hog = 'dd if=/dev/zero of=/dev/null bs=64M count=1; echo $? >/tmp/hog.rc'
        args = tracker.args(memory='16m', command=['sh', '-c', hog + '; exec tail -f /dev/null'])
        result = ok(run_module('ns_container', args))
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(rootfs, 'tmp', 'hog.rc')):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with open(os.path.join(rootfs, 'tmp', 'hog.rc'), encoding='utf-8') as handle:
            assert int(handle.read()) == 128 + signal.SIGKILL  # killed by the OOM killer
        again = ok(run_module('ns_container', args))
        assert not again['changed'] and again['pid'] == result['pid']  # PID 1 survived
        assert again['usage']['oom_kills'] >= 1
        assert bystander.poll() is None  # the host's own process was not touched
        ok(run_module('ns_container', dict(args, state='absent')))
        assert unboxed_cgroups_of(args['name']) == []
    finally:
        bystander.kill()
        bystander.wait()


def test_a_killed_containers_cgroups_are_removed_by_the_next_run(run_module, tracker):
    args = tracker.args(pids_limit=20)
    result = ok(run_module('ns_container', args))
    directories = [entry['directory'] for entry in result['cgroup']['hierarchies']]
    identity = process.identity_of(result['pid'])
    process.send_signal(identity, signal.SIGKILL)
    assert process.wait_until_not_running(identity, 10)
    assert all(os.path.isdir(directory) for directory in directories)
    predicted = ok(run_module('ns_container', dict(args, state='stopped'), check=True))
    assert predicted['changed'] and all(os.path.isdir(directory) for directory in directories)
    cleaned = ok(run_module('ns_container', dict(args, state='stopped')))
    assert cleaned['changed'] and 'cleaned up' in cleaned['msg'].lower()
    assert not any(os.path.exists(directory) for directory in directories)
    assert not ok(run_module('ns_container', dict(args, state='stopped')))['changed']


def test_a_cpu_quota_throttles_a_busy_loop(run_module, tracker):
    args = tracker.args(cpus='0.1', command=['sh', '-c', 'while :; do :; done'])
    result = ok(run_module('ns_container', args))
    assert result['cgroup']['limits']['cpu_quota_us'] == 10000 and result['cgroup']['limits']['cpu_period_us'] == 100000
    time.sleep(1.5)
    usage = ok(run_module('ns_container', args))['usage']
    assert usage['cpu_nr_throttled'] >= 5 and usage['cpu_throttled_usec'] > 0, usage
    ok(run_module('ns_container', dict(args, state='absent')))
    assert unboxed_cgroups_of(args['name']) == []


# ---- a run killed at the spawn --------------------------------------------------------------------------------------

@pytest.mark.parametrize('when', [dict(kill_at_launch='unshare'), dict(kill_at_launch='pid1'), dict(kill_after=0.5)])
def test_a_confined_start_killed_at_any_instant_leaves_one_container_in_its_cgroups(
        run_module, tracker, rootfs, tmp_path, when):
    """The confined launch (settings as an argument, filter on descriptor 3, cgroups joined before unshare) is found
    again by its command line after a kill, as the talk's is; nothing is left twice, no cgroup is left over."""
    from test_ns_container import TALK_COMMAND, Interrupter, assert_exactly_one_tracked_container
    args = tracker.args(command=TALK_COMMAND, preset='docker', pids_limit=20)
    Interrupter(tmp_path).run(args, **when)
    rerun = ok(run_module('ns_container', args))
    assert rerun['state'] == 'started', rerun['msg']
    assert_exactly_one_tracked_container(rootfs, args['state_dir'])
    directories = sorted(entry['directory'] for entry in rerun['cgroup']['hierarchies'])
    assert sorted(unboxed_cgroups_of(args['name'])) == directories
    pids_dir = next(entry['directory'] for entry in rerun['cgroup']['hierarchies'] if entry['hierarchy'] == 'pids')
    assert rerun['pid'] in cgroups.processes_in(pids_dir)
    assert status_of(rerun['pid'])['CapEff'] == confine.DOCKER_CAP_EFF and status_of(rerun['pid'])['Seccomp'] == '2'
    assert ok(run_module('ns_container', args))['changed'] is False
    ok(run_module('ns_container', dict(args, state='absent')))
    assert unboxed_cgroups_of(args['name']) == []
