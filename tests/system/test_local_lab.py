"""The local lab for real: three Debian hosts in namespaces, of two releases (Debian 13 beside Debian 12, as in
a classroom set up this term), reached by Ansible over ssh and paramiko as a classroom's seats are: the
unprivileged account student logs in, sudo makes it root (become), root cannot log in, and each seat sees its
own cgroups at /sys/fs/cgroup, made below the cgroup labctl (this test) runs in.

The tests run in order against one lab of their own (LAB), so the default lab is never touched; the
module fixture brings it down at the end whatever happened.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from conftest import ansible_env, run_adhoc

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import namespaces
from ansible_collections.unboxed.lab.plugins.module_utils import process

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'scripts'))
from local_lab import cgroups  # noqa: E402  pylint: disable=wrong-import-position
from local_lab import host as host_module  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [pytest.mark.lab, pytest.mark.root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LABCTL = os.path.join(REPO, 'scripts', 'labctl.py')
PLAYBOOK = os.path.join(REPO, 'local_lab.yml')
STATE_ROOT = '/var/lib/unboxed/lab'
SYSTEM_KNOWN_HOSTS = '/etc/ssh/ssh_known_hosts'

LAB = 'pytest'
SECOND_LAB = 'pytest-second'
HOSTS = ['lab1', 'lab2', 'lab3']
# Handed out in turn: lab1 trixie, lab2 bookworm, lab3 trixie.
RELEASES = 'trixie,bookworm'
RELEASE_OF = {'lab1': 'trixie', 'lab2': 'bookworm', 'lab3': 'trixie'}
# What each release's seat has: /etc/debian_version's major number and python3's minor version.
DEBIAN_MAJOR = {'trixie': '13', 'bookworm': '12'}
PYTHON_VERSION = {'trixie': '3.13', 'bookworm': '3.11'}
NETNS_PREFIX = f'unboxed.{LAB}.'
LAB_DIR = os.path.join(STATE_ROOT, LAB)
USER = 'student'
# Ansible's options for a task run as the account itself, without sudo.
WITHOUT_BECOME = ('-e', 'ansible_become=false')
PROBE = 'pytest-probe'


@dataclasses.dataclass
class LabUnderTest:
    inventory: str
    tmp: str
    netns_mounted_before: bool

    def env(self) -> dict:
        return ansible_env(self.tmp)

    def labctl(self, *args, lab=LAB) -> dict:
        completed = subprocess.run([sys.executable, LABCTL, *args, '--json', '--lab', lab], capture_output=True,
                                   text=True, check=False, timeout=600, stdin=subprocess.DEVNULL)
        assert completed.returncode == 0, f'labctl {" ".join(args)} failed:\n{completed.stdout}\n{completed.stderr}'
        return json.loads(completed.stdout)

    def playbook(self, *extra, state='up') -> subprocess.CompletedProcess:
        argv = [os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', PLAYBOOK, '-e', f'lab_state={state}',
                '-e', f'lab_name={LAB}', '-e', f'lab_host_count={len(HOSTS)}', '-e', f'lab_inventory={self.inventory}',
                '-e', f'lab_releases={RELEASES}', *extra]
        return subprocess.run(argv, cwd=REPO, env=self.env(), capture_output=True, text=True, check=False,
                              timeout=600, stdin=subprocess.DEVNULL)

    def adhoc(self, module: str, args: str | None = None, *extra, inventory=None, pattern='all') -> tuple[int, dict]:
        """Run one module on the lab hosts ``pattern`` names; returns ansible's exit code and each host's result."""
        rc, results, completed = run_adhoc(self.tmp, inventory or self.inventory, pattern, module, args, extra, self.env())
        assert results, f'ansible gave no result (rc={rc}):\n{completed.stdout}\n{completed.stderr}'
        return rc, results


def recap_changed(output: str) -> int:
    """changed=N of localhost in a PLAY RECAP."""
    for line in output.splitlines():
        if line.startswith('localhost') and 'changed=' in line:
            return int(line.split('changed=')[1].split()[0])
    raise AssertionError(f'no PLAY RECAP for localhost in:\n{output}')


def lab_netns() -> list[str]:
    return sorted(name for name in os.listdir('/run/netns') if name.startswith(NETNS_PREFIX)) if os.path.isdir('/run/netns') else []


def lab_links() -> list[str]:
    links = json.loads(subprocess.run(['ip', '-j', '-d', 'link', 'show'], capture_output=True, text=True, check=True).stdout)
    return sorted(link['ifname'] for link in links if link.get('ifalias') == f'unboxed-lab:{LAB}')


def lab_mounts() -> list[str]:
    return [entry.mount_point for entry in mountinfo.read_mountinfo()
            if entry.mount_point.startswith(LAB_DIR + '/') or entry.mount_point.startswith('/run/netns/' + NETNS_PREFIX)]


def read_text(path: str) -> str:
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read()
    except FileNotFoundError:
        return ''


def known_hosts_by_address() -> dict[str, str]:
    return {line.split()[0]: line for line in read_text(f'{LAB_DIR}/ssh/known_hosts').splitlines()}


def recorded_cgroups() -> dict[str, dict[str, str]]:
    """{host: {hierarchy: the seat's cgroup on this machine}} from lab.json."""
    with open(os.path.join(LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        return {name: host.get('cgroups', {}) for name, host in json.load(handle)['hosts'].items()}


def cgroup_pids(directory: str) -> set[int]:
    """Every process in a cgroup and the cgroups below it."""
    pids = set()
    for parent, _children, files in os.walk(directory):
        if 'cgroup.procs' in files:
            pids |= set(cgroups.processes_in(parent))
    return pids


def recorded_processes() -> list[process.ProcessIdentity]:
    with open(os.path.join(LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        record = json.load(handle)
    identities = []
    for host in record['hosts'].values():
        identities += [process.ProcessIdentity.from_dict(host[key]) for key in ('init', 'supervisor') if host.get(key)]
    return identities


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('needs root: network namespaces, bridges and mounts')
    tmp = str(tmp_path_factory.mktemp('local-lab'))
    under_test = LabUnderTest(inventory=os.path.join(tmp, 'hosts.yml'), tmp=tmp,
                              netns_mounted_before=mountinfo.find_mount('/run/netns') is not None)
    for name in (LAB, SECOND_LAB):
        under_test.labctl('down', lab=name)  # what an interrupted earlier run may have left
    try:
        yield under_test
    finally:
        for name in (LAB, SECOND_LAB):
            under_test.labctl('down', lab=name)


def test_check_on_a_new_lab_plans_everything_and_changes_nothing(lab):
    run = lab.playbook('--check')
    assert run.returncode == 0, run.stdout + run.stderr
    assert recap_changed(run.stdout) == 1
    assert 'would start lab3' in run.stdout
    assert not os.path.exists(LAB_DIR)
    assert not os.path.exists(lab.inventory)
    assert lab_netns() == [] and lab_links() == []


def test_up_creates_three_running_hosts(lab):
    run = lab.playbook()
    assert run.returncode == 0, run.stdout + run.stderr
    assert recap_changed(run.stdout) == 1
    status = lab.labctl('status')
    assert sorted(status['hosts']) == HOSTS
    assert all(host['running'] for host in status['hosts'].values())
    assert lab_netns() == [NETNS_PREFIX + host for host in HOSTS]
    assert len(lab_links()) == 1 + len(HOSTS)  # the bridge and one veth per host
    addresses = [host['address'] for host in status['hosts'].values()]
    assert len(set(addresses)) == len(HOSTS)


def test_each_seat_runs_its_release(lab):
    status = lab.labctl('status')
    assert {name: host['release'] for name, host in status['hosts'].items()} == RELEASE_OF
    assert status['releases'] == RELEASES.split(',')
    script = ('cat /etc/debian_version; . /etc/os-release; echo "$VERSION_CODENAME"; '
              'python3 -c "import sys; print(\'%d.%d\' % sys.version_info[:2])"')
    rc, results = lab.adhoc('ansible.builtin.shell', script)
    assert rc == 0, results
    for host, release in RELEASE_OF.items():
        debian_version, codename, python_version = results[host]['stdout_lines']
        assert debian_version.split('.')[0] == DEBIAN_MAJOR[release], (host, debian_version)
        assert debian_version == status['hosts'][host]['debian_version']
        assert codename == release
        assert python_version == PYTHON_VERSION[release]


def test_the_inventory_groups_seats_by_release(lab):
    for group, release in (('debian13', 'trixie'), ('debian12', 'bookworm')):
        rc, results = lab.adhoc('ansible.builtin.debug', 'var=unboxed_lab_debian_release', pattern=group)
        assert rc == 0, results
        assert sorted(results) == sorted(host for host, host_release in RELEASE_OF.items() if host_release == release)
        assert {result['unboxed_lab_debian_release'] for result in results.values()} == {release}


def test_the_written_inventory_is_clean_for_make_lint(lab):
    # The default lab writes it into the repository, where `make lint` runs yamllint --strict on it.
    completed = subprocess.run([os.path.join(BIN, 'yamllint'), '--strict', '-c', os.path.join(REPO, '.yamllint'), lab.inventory],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_second_up_changes_nothing_and_check_agrees(lab):
    again = lab.playbook()
    assert again.returncode == 0, again.stdout + again.stderr
    assert recap_changed(again.stdout) == 0
    checked = lab.playbook('--check')
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert recap_changed(checked.stdout) == 0


@pytest.mark.parametrize('transport', ['ssh', 'paramiko'])
def test_ping_every_host(lab, transport):
    rc, results = lab.adhoc('ansible.builtin.ping', None, '-c', transport)
    assert rc == 0, results
    assert sorted(results) == HOSTS
    assert all(result.get('ping') == 'pong' for result in results.values()), results


def ssh_to(lab, host: str, user: str, *command: str) -> subprocess.CompletedProcess:
    """Plain ssh with the lab's key and known_hosts, as a person at the controller would log in."""
    status = lab.labctl('status')
    lab_key = os.path.join(LAB_DIR, 'ssh', 'id_ed25519')
    argv = ['ssh', '-i', lab_key, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes',
            '-o', f'UserKnownHostsFile={LAB_DIR}/ssh/known_hosts', '-o', 'StrictHostKeyChecking=yes',
            '-o', 'ConnectTimeout=20', f'{user}@{status["hosts"][host]["address"]}', *command]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize('transport', ['ssh', 'paramiko'])
def test_seats_are_reached_as_student_who_becomes_root_with_sudo(lab, transport):
    rc, results = lab.adhoc('ansible.builtin.shell', 'id -un; id -u; sudo -n true && echo sudo-ok', '-c', transport, *WITHOUT_BECOME)
    assert rc == 0, results
    assert all(result['stdout_lines'] == [USER, '1000', 'sudo-ok'] for result in results.values()), results
    # The inventory's become (sudo) makes every task root, as on a classroom's seat.
    rc, results = lab.adhoc('ansible.builtin.command', 'id -u', '-c', transport)
    assert rc == 0, results
    assert sorted(results) == HOSTS and all(result['stdout'] == '0' for result in results.values()), results


def test_root_cannot_log_in_over_ssh(lab):
    refused = ssh_to(lab, 'lab1', 'root', 'true')
    assert refused.returncode == 255 and 'Permission denied' in refused.stderr, refused.stderr
    # The same key, the same options: the account logs in, so it is root that is refused.
    allowed = ssh_to(lab, 'lab1', USER, 'id', '-un')
    assert allowed.returncode == 0 and allowed.stdout.strip() == USER, allowed.stderr
    rc, results = lab.adhoc('ansible.builtin.ping', None, '-e', 'ansible_user=root', *WITHOUT_BECOME)
    assert rc == 4 and all(result.get('unreachable') for result in results.values()), results


def test_each_seat_sees_its_own_cgroups_at_sys_fs_cgroup_as_this_machine_lays_them_out(lab):
    hierarchies = cgroups.current_hierarchies()
    expected_mounts = cgroups.seat_mounts(hierarchies)
    assert expected_mounts, 'this machine mounts no cgroup hierarchy under /sys/fs/cgroup'
    script = 'findmnt -R -n -l -o TARGET,FSTYPE,OPTIONS /sys/fs/cgroup; echo ---; cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup'
    rc, results = lab.adhoc('ansible.builtin.shell', script)
    assert rc == 0, results
    status = lab.labctl('status')
    for host in HOSTS:
        mounts, own, init = (part.strip().splitlines() for part in results[host]['stdout'].split('---'))
        seen = [line.split() for line in mounts]
        assert [(target, fstype) for target, fstype, _options in seen] == \
            [(mount.target, mount.fstype) for mount in expected_mounts], mounts
        if expected_mounts[0].read_only_after:
            assert seen[0][2].startswith('ro,'), seen[0]
        # Inside its cgroup namespace, a seat's processes are in /init.scope of every hierarchy it has, as
        # systemd's PID 1 is on a real seat; the hierarchies it does not have show the namespace's root.
        for lines in (own, init):
            paths = {tuple(filter(None, controllers.split(','))) or ('unified',): path
                     for _id, controllers, path in (line.split(':', 2) for line in lines)}
            for hierarchy in hierarchies:
                key = ('unified',) if hierarchy.version == 2 else hierarchy.controllers
                assert paths[key] == '/init.scope', (host, lines)
        # On the machine: each cgroup below this test's own (labctl ran as its child), holding every process of
        # the seat (everything in its network namespace, and the supervisor outside it).
        recorded = status['hosts'][host]['cgroups']
        assert sorted(recorded) == sorted(hierarchy.key for hierarchy in hierarchies)
        seat_pids = set(host_module.pids_in_netns(f'{NETNS_PREFIX}{host}'))
        assert seat_pids
        for hierarchy in hierarchies:
            assert recorded[hierarchy.key] == cgroups.seat_dir(hierarchy, LAB, host)
            assert recorded[hierarchy.key].startswith(hierarchy.own_dir.rstrip('/') + '/unboxed-lab/')
            assert cgroups.processes_in(recorded[hierarchy.key]) == []  # the seat's root cgroup holds no process
            assert seat_pids <= cgroup_pids(recorded[hierarchy.key]), (host, hierarchy.key)


def test_a_cgroup_made_inside_a_seat_lands_below_labctls_cgroup_with_its_limit(lab):
    hierarchies = cgroups.current_hierarchies()
    targets = [mount.target for mount in cgroups.seat_mounts(hierarchies) if mount.fstype.startswith('cgroup')]
    memory = [mount.target for mount in cgroups.seat_mounts(hierarchies) if mount.options.endswith(',memory')]
    limit = 48 * 1024 * 1024
    script = ' && '.join([f'mkdir {target}/{PROBE}' for target in targets]
                         + [f'echo {limit} > {target}/{PROBE}/memory.limit_in_bytes' for target in memory])
    rc, results = lab.adhoc('ansible.builtin.shell', script, pattern='lab1')
    assert rc == 0, results
    for directory in recorded_cgroups()['lab1'].values():
        assert os.path.isdir(os.path.join(directory, PROBE)), directory
    if memory:
        memory_dir = recorded_cgroups()['lab1']['memory']
        with open(os.path.join(memory_dir, PROBE, 'memory.limit_in_bytes'), encoding='ascii') as handle:
            assert int(handle.read()) == limit
    # Not below the other seats.
    for host in ('lab2', 'lab3'):
        assert not [directory for directory in recorded_cgroups()[host].values() if os.path.exists(os.path.join(directory, PROBE))]


def test_each_host_has_its_own_hostname_and_namespaces(lab):
    # One line per fact, so each host answers in the same shape.
    script = ('hostname; for ns in pid net mnt uts ipc cgroup; do readlink /proc/self/ns/$ns; done; '
              'ps -e --no-headers -o comm | wc -l; tr "\\0" " " < /proc/1/cmdline; echo; '
              'ip -4 -o address show dev eth0 | awk "{print \\$4}"; ip route | wc -l')
    rc, results = lab.adhoc('ansible.builtin.shell', script)
    assert rc == 0, results
    controller = {ns: namespaces.namespace_inode('self', name) for ns, name in
                  (('pid', 'pid'), ('net', 'net'), ('mnt', 'mount'), ('uts', 'uts'), ('ipc', 'ipc'), ('cgroup', 'cgroup'))}
    seen = {ns: set() for ns in controller}
    status = lab.labctl('status')
    for host in HOSTS:
        lines = results[host]['stdout_lines']
        hostname, ns_links, process_count, init_cmdline, address, route_count = lines[0], lines[1:7], lines[7], lines[8], lines[9], lines[10]
        assert hostname == host
        for ns, link in zip(controller, ns_links):
            inode = namespaces.parse_ns_link(link)
            assert inode != controller[ns], f'{host} shares the controller\'s {ns} namespace'
            seen[ns].add(inode)
        # The netns labctl named for this host is the one its sshd lives in.
        assert namespaces.parse_ns_link(ns_links[1]) == os.stat(f'/run/netns/{NETNS_PREFIX}{host}').st_ino
        # tini, sshd, the session's sshd, sudo, the module's sh and python, ps, wc: none of the controller's processes.
        assert int(process_count) < 20
        assert init_cmdline.split()[0] == '/usr/bin/tini'
        assert address == status['hosts'][host]['address'] + '/24'
        assert int(route_count) == 1  # the lab's own subnet, no default route: nothing leaves the lab
    assert all(len(inodes) == len(HOSTS) for inodes in seen.values()), seen


def test_a_stopped_host_fails_alone_and_up_starts_it_again(lab):
    lab2_cgroups = recorded_cgroups()['lab2']
    assert lab2_cgroups and all(os.path.isdir(directory) for directory in lab2_cgroups.values())
    stopped = lab.labctl('stop', 'lab2')
    assert stopped['changed'] and not stopped['hosts']['lab2']['running']
    # Its processes are gone, so are its cgroups; the others keep theirs.
    assert stopped['hosts']['lab2']['cgroups'] == {}
    assert [directory for directory in lab2_cgroups.values() if os.path.exists(directory)] == []
    assert all(os.path.isdir(directory) for directory in stopped['hosts']['lab1']['cgroups'].values())
    assert stopped['hosts']['lab1']['running'] and stopped['hosts']['lab3']['running']

    rc, results = lab.adhoc('ansible.builtin.ping')
    assert rc == 4  # some hosts were unreachable
    assert results['lab2'].get('unreachable') is True
    assert results['lab1'].get('ping') == 'pong' and results['lab3'].get('ping') == 'pong'

    predicted = lab.playbook('--check')
    assert recap_changed(predicted.stdout) == 1 and 'would start lab2' in predicted.stdout
    assert not lab.labctl('status')['hosts']['lab2']['running']

    restarted = lab.labctl('up', '--hosts', str(len(HOSTS)), '--inventory', lab.inventory)
    assert len(restarted['changes']) == 1 and restarted['changes'][0].startswith('start lab2'), restarted['changes']
    rc, results = lab.adhoc('ansible.builtin.ping')
    assert rc == 0, results


def test_a_host_recreated_on_its_address_gets_a_new_key_and_is_reached_by_both_transports(lab):
    old_keys = known_hosts_by_address()
    lab3 = lab.labctl('status')['hosts']['lab3']['address']
    shrunk = lab.labctl('up', '--hosts', '2', '--inventory', lab.inventory)
    assert 'remove lab3' in shrunk['changes'] and 'lab3' not in shrunk['hosts']
    assert not os.path.exists(f'/run/netns/{NETNS_PREFIX}lab3')
    grown = lab.labctl('up', '--hosts', '3', '--inventory', lab.inventory)
    assert grown['hosts']['lab3']['address'] == lab3
    new_keys = known_hosts_by_address()
    assert new_keys[lab3] != old_keys[lab3]  # host keys are made per host, never reused
    lab1 = grown['hosts']['lab1']['address']
    assert new_keys[lab1] == old_keys[lab1]
    for transport in ('ssh', 'paramiko'):
        rc, results = lab.adhoc('ansible.builtin.ping', None, '-c', transport)
        assert rc == 0, (transport, results)


def test_a_host_whose_release_changes_is_made_again_as_planned(lab):
    old_keys = known_hosts_by_address()
    status = lab.labctl('status')
    planned = lab.labctl('up', '--hosts', str(len(HOSTS)), '--releases', 'trixie', '--check')
    assert any(change.startswith('make lab2 again as Debian 13 (trixie): it runs Debian 12 (bookworm)')
               for change in planned['changes']), planned['changes']
    assert not [change for change in planned['changes'] if 'lab1' in change or 'lab3' in change]
    assert lab.labctl('status')['hosts']['lab2']['installed_release'] == 'bookworm'

    made = lab.labctl('up', '--hosts', str(len(HOSTS)), '--releases', 'trixie')
    assert made['changes'] == planned['changes']
    assert made['hosts']['lab2']['address'] == status['hosts']['lab2']['address']
    assert made['hosts']['lab2']['debian_version'].startswith('13.')
    lab2 = made['hosts']['lab2']['address']
    assert known_hosts_by_address()[lab2] != old_keys[lab2]
    for transport in ('ssh', 'paramiko'):
        rc, results = lab.adhoc('ansible.builtin.command', 'cat /etc/debian_version', '-c', transport, pattern='debian13')
        assert rc == 0 and sorted(results) == HOSTS, (transport, results)
    assert lab.labctl('up', '--hosts', str(len(HOSTS)))['changed'] is False  # the lab keeps the releases it was given

    back = lab.playbook()
    assert back.returncode == 0, back.stdout + back.stderr
    assert {name: host['release'] for name, host in lab.labctl('status')['hosts'].items()} == RELEASE_OF
    assert recap_changed(lab.playbook().stdout) == 0


def test_a_second_lab_lives_beside_the_first_and_goes_alone(lab):
    inventory = os.path.join(lab.tmp, 'second.yml')
    second = lab.labctl('up', '--hosts', '1', '--releases', 'bookworm', '--inventory', inventory, lab=SECOND_LAB)
    first = lab.labctl('status')
    assert second['subnet'] != first['subnet'] and second['bridge'] != first['bridge']
    rc, results = lab.adhoc('ansible.builtin.command', 'hostname', inventory=inventory)
    assert rc == 0 and results['lab1']['stdout'] == 'lab1', results
    # Same host name, another lab: the second lab's lab1 is not the first lab's.
    assert second['hosts']['lab1']['address'] != first['hosts']['lab1']['address']

    gone = lab.labctl('down', lab=SECOND_LAB)
    assert gone['changed'] and not os.path.exists(inventory)
    assert not os.path.exists(os.path.join(STATE_ROOT, SECOND_LAB))
    assert all(host['running'] for host in lab.labctl('status')['hosts'].values())
    rc, results = lab.adhoc('ansible.builtin.ping')
    assert rc == 0, results


def test_down_leaves_no_namespace_link_mount_process_file_or_cgroup(lab):
    processes = recorded_processes()
    assert len(processes) == 2 * len(HOSTS) and all(process.is_running(identity) for identity in processes)
    seat_cgroups = [directory for host in recorded_cgroups().values() for directory in host.values()]
    hierarchies = cgroups.current_hierarchies()
    assert len(seat_cgroups) == len(HOSTS) * len(hierarchies)
    # lab1 still holds the cgroup made inside it (test_a_cgroup_made_inside_a_seat...): down removes it too.
    assert any(os.path.isdir(os.path.join(directory, PROBE)) for directory in recorded_cgroups()['lab1'].values())
    run = lab.playbook(state='down')
    assert run.returncode == 0, run.stdout + run.stderr
    assert recap_changed(run.stdout) == 1
    assert lab_netns() == []
    assert lab_links() == []
    assert lab_mounts() == []
    assert [directory for directory in seat_cgroups if os.path.exists(directory)] == []
    assert [cgroups.lab_dir(hierarchy, LAB) for hierarchy in hierarchies if os.path.exists(cgroups.lab_dir(hierarchy, LAB))] == []
    # Zombies would pass kill -0; is_running reads the state in /proc/PID/stat.
    assert [identity for identity in processes if process.is_running(identity)] == []
    assert not os.path.exists(LAB_DIR)
    assert not os.path.exists(lab.inventory)
    assert f'unboxed lab "{LAB}"' not in read_text(SYSTEM_KNOWN_HOSTS)
    other_labs = [name for name in os.listdir(STATE_ROOT) if os.path.isfile(os.path.join(STATE_ROOT, name, 'lab.json'))]
    if not lab.netns_mounted_before and not other_labs:
        assert mountinfo.find_mount('/run/netns') is None
    again = lab.playbook(state='down')
    assert recap_changed(again.stdout) == 0
