"""The talk end to end on three local lab hosts over SSH: site.yml, verify.yml and reset.yml.

The tests share a lab of their own (LAB), brought up and down through scripts/labctl, so neither the
default lab nor the lab tests' lab is touched. Each test brings the hosts into the state it starts from
(fixtures fresh and converged): any one of them runs alone or in any order. The controller's base archive is built
into a temporary cache of this module, so the first check run really meets a fresh controller and
fresh hosts, and nothing the user cached in /var/cache/unboxed is used or removed.

What a host holds is read over SSH, through Ansible, as a user would look at it. As on a classroom's seats,
Ansible logs in as the unprivileged account student and every task, the snapshot's too, runs as root through
become (sudo): the inventory labctl writes says so, and nothing here adds it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
from ansible_collections.unboxed.lab.plugins.module_utils import netdev
from conftest import ansible_env, run_adhoc

pytestmark = [pytest.mark.lab, pytest.mark.root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LABCTL = os.path.join(REPO, 'scripts', 'labctl')

LAB = 'talktest'
HOSTS = ['lab1', 'lab2', 'lab3']
CONTAINER = 'talk'
# layers, build, overlay, chroot and namespaces (15); cgroups (4), capabilities (2), seccomp (2) and the closing
# comparison with Docker's defaults (6); network (5) and userns (4) (verify.yml)
OBSERVATIONS_PER_HOST = 38

RECAP_LINE = re.compile(r'^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$')

# What a host shows of the talk: the lab's directory tree, the host's archive cache and the container's
# state directory (files with mode, size and mtime; directories with their mode - verify's probe file
# touches the upper layer's mtime and nothing else), the mount table and the talk's processes. Not the
# modules' lock files (/run/unboxed/locks): every real run takes its locks again and writes its PID into
# them; they hold no state of the talk. And the cgroups the talk made (the confined container's), by name.
SNAPSHOT_SCRIPT = r"""
echo "login $(id -un "${SUDO_UID:-$(id -u)}") as $(id -un)"
for dir in /overlay /var/cache/unboxed /run/unboxed; do
  if [ -e "$dir" ]; then
    find "$dir" -xdev -path /run/unboxed/locks -prune -o \( -type d -printf '%p d %m\n' \) -o -printf '%p %y %m %s %T@\n' | sort
  else
    echo "$dir absent"
  fi
done
echo '--- cgroups'
find /sys/fs/cgroup -type d -name 'unboxed*' | sort
echo '--- mounts'
findmnt --list --noheadings --output TARGET,FSTYPE,OPTIONS | sort
echo '--- network'
ip -br link show type bridge | sort
ip -br link show type veth | sort
nft list tables 2>/dev/null | sort
grep -h '^unboxed-remap:' /etc/subuid /etc/subgid || true
getent passwd unboxed-remap || true
echo '--- processes'
ps -eo args= | grep -E '^(tail -f /dev/null|unshare |setpriv |perl )' | sort || true
"""


@dataclasses.dataclass
class Run:
    argv: list
    rc: int
    stdout: str
    stderr: str
    results: list

    def recap(self) -> dict:
        """PLAY RECAP counts per host: {'lab1': {'ok': 17, 'changed': 9, ...}}."""
        recap = {}
        after_recap = False
        for line in self.stdout.splitlines():
            if line.startswith('PLAY RECAP'):
                after_recap = True
                continue
            match = RECAP_LINE.match(line.strip()) if after_recap else None
            if match:
                recap[match['host']] = {key: int(value) for key, value in
                                        (pair.split('=') for pair in match['counts'].split())}
        return recap

    def changed(self) -> set:
        """(host, task) for every task result that reported a change."""
        return {(entry['host'], entry['task']) for entry in self.results
                if entry['status'] == 'ok' and entry['result'].get('changed')}

    def statuses(self, task: str) -> dict:
        return {entry['host']: entry['status'] for entry in self.results if entry['task'] == task}

    def explain(self) -> str:
        return f'$ {" ".join(self.argv)}\nrc={self.rc}\n{self.stdout[-6000:]}\n{self.stderr[-3000:]}'


@dataclasses.dataclass
class TalkLab:
    tmp: str
    inventory: str
    cache_dir: str
    runs: int = 0
    # The test running now and the one that ran before it (set by _track_tests), and the test whose last steps
    # showed the talk converged on every host (mark_converged: site.yml ran ok, or a snapshot equal to a converged
    # one). Only when that is the test just before does the next `converged` test skip its own site.yml run.
    current_test: str | None = None
    previous_test: str | None = None
    converged_after: str | None = None

    def mark_converged(self) -> None:
        """Called as a test's last step, after its last assertion held: the hosts hold the talk as site.yml leaves it."""
        self.converged_after = self.current_test

    def env(self, record_to: str | None = None) -> dict:
        return ansible_env(self.tmp, record_to=record_to)

    def labctl(self, *args) -> dict:
        completed = subprocess.run([LABCTL, *args, '--json', '--lab', LAB], capture_output=True, text=True,
                                   check=False, timeout=600, stdin=subprocess.DEVNULL)
        assert completed.returncode == 0, f'labctl {" ".join(args)} failed:\n{completed.stdout}\n{completed.stderr}'
        return json.loads(completed.stdout)

    def playbook(self, playbook: str, *extra, inventory: str | None = None) -> Run:
        self.runs += 1
        record = os.path.join(self.tmp, f'results-{self.runs}.jsonl')
        argv = [os.path.join(BIN, 'ansible-playbook'), '-i', inventory or self.inventory, playbook,
                '-e', f'base_rootfs_cache_dir={self.cache_dir}', *extra]
        completed = subprocess.run(argv, cwd=REPO, env=self.env(record), capture_output=True, text=True,
                                   check=False, timeout=1200, stdin=subprocess.DEVNULL)
        results = []
        if os.path.exists(record):
            with open(record, encoding='utf-8') as handle:
                results = [json.loads(line) for line in handle]
        for entry in results:
            # "unboxed.lab.overlay : Show the mount command of this slide" -> "Show the mount command of this slide"
            entry['task'] = entry['task'].rpartition(' : ')[2]
        return Run(argv, completed.returncode, completed.stdout, completed.stderr, results)

    def adhoc(self, module: str, args: str, host: str = 'all') -> dict:
        """One module on every lab host (or on one); each host's result."""
        _rc, results, completed = run_adhoc(self.tmp, self.inventory, host, module, args, env=self.env())
        expected = HOSTS if host == 'all' else [host]
        assert sorted(results) == expected, f'ansible {module} gave no result for {expected}:\n{completed.stdout}\n{completed.stderr}'
        return results

    def snapshot(self) -> dict:
        """What every host holds of the talk (see SNAPSHOT_SCRIPT)."""
        results = self.adhoc('ansible.builtin.shell', SNAPSHOT_SCRIPT)
        for host, result in results.items():
            assert result.get('rc') == 0, f'snapshot failed on {host}: {result}'
            # The seat let in its account, and sudo made the snapshot root: become, as on a classroom's seat.
            assert result['stdout_lines'][0] == 'login student as root', f'{host}: {result["stdout_lines"][:1]}'
        return {host: result['stdout'] for host, result in results.items()}


def cached_archives(lab: TalkLab) -> list[str]:
    """The archives in the controller's cache, each with the file of its checksum beside it (written last)."""
    names = sorted(os.listdir(lab.cache_dir))
    archives = [name for name in names if name.endswith('.tar.gz')]
    assert names == sorted(archives + [archive + '.sha256' for archive in archives]), names
    return archives


def assert_ok(run: Run):
    assert run.rc == 0, run.explain()
    recap = run.recap()
    assert sorted(recap) == HOSTS, run.explain()
    for host, counts in recap.items():
        assert counts['failed'] == 0 and counts['unreachable'] == 0, f'{host}: {counts}\n{run.explain()}'


def assert_nothing_changed(run: Run):
    assert_ok(run)
    assert {host: counts['changed'] for host, counts in run.recap().items()} == dict.fromkeys(HOSTS, 0), run.explain()
    assert run.changed() == set(), run.explain()


def summary_lines(run: Run) -> dict:
    """verify.yml's per-host summary lines."""
    return {entry['host']: entry['result']['msg'] for entry in run.results
            if entry['task'] == 'Summarize the observations of this host'}


@pytest.fixture(scope='module')
def talk_lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('needs root: the local lab uses network namespaces, bridges and mounts')
    tmp = str(tmp_path_factory.mktemp('talk'))
    lab = TalkLab(tmp=tmp, inventory=os.path.join(tmp, 'hosts.yml'), cache_dir=os.path.join(tmp, 'base-cache'))
    lab.labctl('down')  # what an interrupted earlier run may have left
    try:
        up = lab.labctl('up', '--hosts', str(len(HOSTS)), '--inventory', lab.inventory)
        assert up['user'] == 'student', up
        yield lab
    finally:
        lab.labctl('down')


@pytest.fixture
def fresh(talk_lab):
    """Hosts that hold nothing of the talk and a controller without the base archive, as before a first run."""
    if not all('/overlay absent' in text for text in talk_lab.snapshot().values()) or os.path.exists(talk_lab.cache_dir):
        assert_ok(talk_lab.playbook('reset.yml', '-e', 'unboxed_purge=true'))
    return talk_lab


@pytest.fixture
def converged(talk_lab):
    """Hosts on which site.yml has run: each test that needs the talk in place brings it there itself, so that
    every test runs alone (pytest -k) or in any order - unless the test just before it ended by showing the hosts
    converged (TalkLab.mark_converged, called only after that test's last assertion held)."""
    if talk_lab.converged_after is None or talk_lab.converged_after != talk_lab.previous_test:
        assert_ok(talk_lab.playbook('site.yml'))
    return talk_lab


@pytest.fixture(autouse=True)
def _track_tests(request, talk_lab):
    """Which test runs now, and which ran just before (whether it passed or not)."""
    talk_lab.current_test = request.node.nodeid
    yield
    talk_lab.previous_test = request.node.nodeid


def test_check_on_fresh_hosts_predicts_the_converge_exactly(fresh):
    before = fresh.snapshot()
    assert all('/overlay absent' in text for text in before.values()), before

    check = fresh.playbook('site.yml', '--check')

    assert_ok(check)
    assert fresh.snapshot() == before
    assert not os.path.exists(fresh.cache_dir), 'check mode built the controller cache'
    predicted = check.changed()
    for host in HOSTS:
        assert (host, 'Put the base into /overlay/lower1-base and lower2-file above it') in predicted, check.explain()
        assert (host, 'Run the container in its own namespaces') in predicted, check.explain()
        assert (host, 'Run the confined container with memory, pids and CPU limits') in predicted, check.explain()

    site = fresh.playbook('site.yml')

    assert_ok(site)
    assert site.changed() == predicted
    assert {host: counts['changed'] for host, counts in site.recap().items()} == \
        {host: counts['changed'] for host, counts in check.recap().items()}
    # The base was built once, on the controller, for all three hosts.
    builds = [entry for entry in site.results if entry['task'] == 'Build the base root file system with mmdebstrap']
    assert len(builds) == 1 and builds[0]['result']['changed'], site.explain()
    assert len(cached_archives(fresh)) == 1, os.listdir(fresh.cache_dir)
    fresh.mark_converged()


def test_second_run_changes_nothing_and_skips_the_transfer(converged):
    again = converged.playbook('site.yml')

    assert_nothing_changed(again)
    # A host holding the same checksum gets no copy: one layer task that compares the record and sends nothing.
    bases = [entry for entry in again.results if entry['task'] == 'Put the base into /overlay/lower1-base and lower2-file above it']
    assert {entry['host']: entry['status'] for entry in bases} == dict.fromkeys(HOSTS, 'ok')
    assert not any(entry['result']['changed'] or entry['result']['transferred'] for entry in bases), again.explain()
    converged.mark_converged()


def test_check_after_convergence_changes_nothing(converged):
    before = converged.snapshot()

    check = converged.playbook('site.yml', '--check')

    assert_nothing_changed(check)
    assert converged.snapshot() == before
    converged.mark_converged()


def test_verify_sees_every_observation_and_changes_nothing(converged):
    before = converged.snapshot()

    verify = converged.playbook('verify.yml')

    assert_nothing_changed(verify)
    assert converged.snapshot() == before, 'verify left something behind (its probe file?)'
    summaries = summary_lines(verify)
    assert sorted(summaries) == HOSTS
    for host, lines in summaries.items():
        assert len(lines) == OBSERVATIONS_PER_HOST, lines
        assert all(line.startswith('ok ') for line in lines), lines
        text = '\n'.join(lines)
        assert 'PID 1 is "tail -f /dev/null"' in text
        assert 'probe found in /overlay/upper; removed again' in text
        # The confined container's limits, capabilities and seccomp filter bite; it is as confined as Docker's default.
        assert re.search(r'ok   cgroups: a fork loop .* - started \d+ of 100 processes, then: .*Cannot fork', text), text
        assert 'the hog ended with status 137 (137: SIGKILL)' in text and 'talk still runs' in text
        assert re.search(r'ok   capabilities: mounting .* - confined: mount: /mnt: permission denied', text), text
        assert 'unshare failed: Operation not permitted' in text
        assert 'ok   docker: capabilities (CapEff) - Docker: 00000000a80425fb - confined: 00000000a80425fb' in text
        # The bridge carries traffic both ways and the published port answers; root in the remapped container is 0
        # inside, the range's first uid on the seat, and shut out of the seat's root-only file.
        assert 'ok   network: the client container reaches web by its address' in text, text
        assert 'ok   network: the published port 8080:80 answers on the seat itself' in text, text
        assert "ok   network: the talk's container (talk) still has only lo (network mode none)" in text, text
        assert 'ok   userns: on the seat the container\'s PID 1 runs as the range\'s first uid, not as root' in text, text
        assert 'ok   userns: root in the remapped container cannot read the seat\'s root-only file' in text, text
    converged.mark_converged()


def test_verify_fails_on_the_host_where_an_observation_is_wrong(converged):
    # Stop the container on lab2, and on lab3 put a second file into the layer that should hold file01.txt alone.
    stopped = converged.adhoc('unboxed.lab.ns_container', json.dumps({'name': CONTAINER, 'state': 'stopped'}), 'lab2')
    assert stopped['lab2']['state'] == 'stopped', stopped
    stray = {'dest': '/overlay/lower2-file/stray.txt', 'content': 'not from the Dockerfile\n'}
    converged.adhoc('ansible.builtin.copy', json.dumps(stray), 'lab3')
    try:
        verify = converged.playbook('verify.yml')

        assert verify.rc == 2, verify.explain()
        recap = verify.recap()
        assert recap['lab1']['failed'] == 0
        assert recap['lab2']['failed'] == 1 and recap['lab3']['failed'] == 1, verify.explain()
        summaries = summary_lines(verify)
        assert all(line.startswith('ok ') for line in summaries['lab1'])
        failed_lab2 = [line for line in summaries['lab2'] if line.startswith('FAIL')]
        # The talk's container is gone: its own slide fails, and so do the observations that need it beside the
        # confined one (the talk's keeps running after the memory hog; the same commands side by side) or beside the
        # bridge (the talk's container keeps only lo).
        assert any(line.startswith('FAIL namespaces:') for line in failed_lab2), summaries['lab2']
        assert {line.split(':', 1)[0] for line in failed_lab2} <= \
            {'FAIL namespaces', 'FAIL cgroups', 'FAIL capabilities', 'FAIL network'}, summaries['lab2']
        failed_lab3 = [line for line in summaries['lab3'] if line.startswith('FAIL')]
        assert failed_lab3 == ['FAIL layers: lower2-file holds file01.txt and nothing else - file01.txt, stray.txt'], \
            summaries['lab3']

        # site.yml starts the container again; a file it did not write into a layer is not its to delete.
        site = converged.playbook('site.yml')
        assert_ok(site)
        assert {host for host, _task in site.changed()} == {'lab2'}, site.explain()
    finally:
        converged.adhoc('ansible.builtin.file', json.dumps({'path': stray['dest'], 'state': 'absent'}), 'lab3')
    assert_nothing_changed(converged.playbook('verify.yml'))
    converged.mark_converged()


def test_a_different_base_is_not_swapped_under_a_mounted_overlay(converged):
    before = converged.snapshot()

    # Another strategy records another base; installing it would first remove the one the overlay uses.
    site = converged.playbook('site.yml', '-e', 'base_rootfs_strategy=debootstrap')

    assert site.rc == 2, site.explain()
    assert site.statuses('Remove the base, unless a mounted overlay uses it') == dict.fromkeys(HOSTS, 'failed')
    assert {host: counts['failed'] for host, counts in site.recap().items()} == dict.fromkeys(HOSTS, 1)
    assert converged.snapshot() == before
    converged.mark_converged()


def test_an_unreachable_host_fails_alone(talk_lab):
    # lab3 on a port where nothing listens: its connection is refused, the other two carry on.
    with open(talk_lab.inventory, encoding='utf-8') as handle:
        text = handle.read()
    broken = os.path.join(talk_lab.tmp, 'one-unreachable.yml')
    with open(broken, 'w', encoding='utf-8') as handle:
        handle.write(_with_port(text, 'lab3', 2))

    site = talk_lab.playbook('site.yml', inventory=broken)

    assert site.rc == 4, site.explain()
    recap = site.recap()
    assert recap['lab3']['unreachable'] == 1, site.explain()
    for host in ('lab1', 'lab2'):
        assert recap[host]['failed'] == 0 and recap[host]['unreachable'] == 0, site.explain()
    # The others went through to the last slide.
    assert site.statuses('Run the container in its own namespaces') == {'lab1': 'ok', 'lab2': 'ok'}
    assert re.search(r'^fatal: \[lab3\]: UNREACHABLE!', site.stdout, re.MULTILINE), site.explain()


def _with_port(inventory_text: str, host: str, port: int) -> str:
    """The lab's inventory with one host moved to another SSH port."""
    marker = f'        {host}:\n'
    assert marker in inventory_text, inventory_text
    return inventory_text.replace(marker, f'{marker}          ansible_port: {port}\n', 1)


def test_reset_leaves_hosts_clean_as_check_predicted_and_site_reuses_the_hosts_copy_of_the_archive(converged):
    """reset.yml: check mode predicts it, the hosts are left clean but keep their copy of the base archive (and the
    controller its cache); site.yml after it unpacks the host's copy again and sends nothing."""
    talk_lab = converged
    before = talk_lab.snapshot()
    check = talk_lab.playbook('reset.yml', '--check')
    assert_ok(check)
    assert talk_lab.snapshot() == before

    reset = talk_lab.playbook('reset.yml')

    assert_ok(reset)
    assert reset.changed() == check.changed()
    for host in HOSTS:
        assert (host, 'Stop and remove the container') in reset.changed()
        assert (host, 'Stop and remove the confined container') in reset.changed()
        assert (host, "Remove the lab's directory when nothing else is in it") in reset.changed()
    for host, text in talk_lab.snapshot().items():
        assert '/overlay absent' in text, f'{host}:\n{text}'
        assert '/run/unboxed/containers/talk' not in text, f'{host}:\n{text}'
        assert '/run/unboxed/containers/confined' not in text, f'{host}:\n{text}'
        cgroups = text.split('--- cgroups', 1)[1].split('--- mounts', 1)[0]
        assert cgroups.strip() == '', f'{host}: cgroups left behind:\n{cgroups}'
        mounts, processes = text.split('--- mounts', 1)[1].split('--- processes', 1)
        mounts, network = mounts.split('--- network', 1)
        assert 'overlay' not in mounts, f'{host}:\n{mounts}'
        # The network and userns slides: no bridge, veth, nftables table, subuid/subgid line or remap user of ours.
        for left in ('unboxed0', 'table ip unboxed', 'unboxed-remap'):
            assert left not in network, f'{host}: {left} left behind:\n{network}'
        # A container's end on the seat: netdev.host_veth_name's v + name + - + 6 hex digits.
        assert netdev.host_veth_name('unboxed0', 'web') not in network, f'{host}:\n{network}'
        assert not re.search(r'^v[\w.-]+-[0-9a-f]{6}[@\s]', network, re.MULTILINE), f'{host}: a veth left behind:\n{network}'
        assert processes.strip() == '', f'{host}:\n{processes}'
        assert re.search(r'^/var/cache/unboxed/base/\S+\.tar\.gz f ', text, re.MULTILINE), f'{host}:\n{text}'
    assert len(cached_archives(talk_lab)) == 1, os.listdir(talk_lab.cache_dir)

    assert_nothing_changed(talk_lab.playbook('reset.yml'))

    site = talk_lab.playbook('site.yml')

    assert_ok(site)
    # The seat's own copy of the archive is unpacked again: nothing is sent.
    bases = [entry for entry in site.results if entry['task'] == 'Put the base into /overlay/lower1-base and lower2-file above it']
    assert {entry['host']: entry['status'] for entry in bases} == dict.fromkeys(HOSTS, 'ok')
    assert all(entry['result']['changed'] and not entry['result']['transferred'] for entry in bases), site.explain()
    assert all(host in {h for h, _task in site.changed()} for host in HOSTS)
    assert_nothing_changed(talk_lab.playbook('verify.yml'))
    talk_lab.mark_converged()


def test_reset_with_purge_removes_the_caches_too(talk_lab):
    purge = talk_lab.playbook('reset.yml', '-e', 'unboxed_purge=true')

    assert_ok(purge)
    for host, text in talk_lab.snapshot().items():
        assert '/overlay absent' in text and '/var/cache/unboxed/base' not in text, f'{host}:\n{text}'
    assert not os.path.exists(talk_lab.cache_dir)
    assert_nothing_changed(talk_lab.playbook('reset.yml', '-e', 'unboxed_purge=true'))
