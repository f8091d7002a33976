"""ansible-pull mode for real (docs/pull.md): two Debian 13 seats of the lab ``pulltest`` clone the work tree under
test from the controller's git daemon on the lab's bridge, fetch the base archive from its file server, and
converge themselves; a second pull changes nothing; the controller collects both seats' reports into one.

The tests run in order against one lab; the module fixture takes it down (and the servers with it) at the end.
"""

from __future__ import annotations

import base64
import glob
import ipaddress
import json
import os
import subprocess
import sys

import pytest

from conftest import BIN, REPO, ansible_env, run_adhoc

sys.path.insert(0, os.path.join(REPO, 'scripts'))
from local_lab import serve  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [pytest.mark.lab, pytest.mark.root]

LAB = 'pulltest'
LABCTL = os.path.join(REPO, 'scripts', 'labctl.py')
CONTROLLER_ARCHIVES = '/var/cache/unboxed/base'
REPORT = '/var/lib/unboxed/pull/lab_report/pull.json'
TALK_STAGES = ('layers', 'build', 'overlay', 'chroot', 'namespaces')


def labctl(*args) -> dict:
    completed = subprocess.run([sys.executable, LABCTL, *args, '--json', '--lab', LAB], capture_output=True, text=True,
                               check=False, timeout=600)
    assert completed.returncode == 0, f'labctl {" ".join(args)} failed:\n{completed.stdout}\n{completed.stderr}'
    return json.loads(completed.stdout)


class PullLab:
    def __init__(self, tmp: str):
        self.tmp = tmp
        self.inventory = os.path.join(tmp, 'hosts.yml')
        self.report_dir = os.path.join(tmp, 'lab_report')
        self.state: dict = {}
        self.served: dict = {}

    def env(self) -> dict:
        env = ansible_env(self.tmp)
        # The lab report is what these tests read: on, into the test's own directory.
        env['ANSIBLE_CALLBACKS_ENABLED'] = 'unboxed.lab.lab_report'
        env['UNBOXED_LAB_REPORT_DIR'] = self.report_dir
        return env

    def playbook(self, playbook: str, *extra: str) -> subprocess.CompletedProcess:
        completed = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', self.inventory, playbook, *extra], cwd=REPO,
                                   env=self.env(), capture_output=True, text=True, check=False, timeout=600, stdin=subprocess.DEVNULL)
        assert completed.returncode == 0, f'{playbook} failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}'
        return completed

    def on_seats(self, module: str, args: str, pattern: str = 'all') -> dict:
        code, results, completed = run_adhoc(self.tmp, self.inventory, pattern, module, args, env=self.env())
        assert code == 0, f'{module} {args} failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}'
        return results

    def pull(self) -> dict:
        """One pull on every seat, at once, as their timers would start it."""
        return self.on_seats('ansible.builtin.command', '/usr/local/sbin/unboxed-pull')

    def seat_reports(self) -> dict:
        results = self.on_seats('ansible.builtin.slurp', f'src={REPORT}')
        return {host: json.loads(base64.b64decode(result['content'])) for host, result in results.items()}

    def collected(self) -> dict:
        self.playbook('playbooks/pull_report.yml')
        with open(os.path.join(self.report_dir, 'pull.json'), encoding='utf-8') as handle:
            return json.load(handle)


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('the local lab needs root')
    tmp = str(tmp_path_factory.mktemp('pull'))
    under_test = PullLab(tmp)
    labctl('down')  # what an interrupted earlier run may have left
    try:
        under_test.state = labctl('up', '--hosts', '2', '--releases', 'trixie', '--packages', 'git,ansible-core',
                                  '--inventory', under_test.inventory)
        # The controller's base archive, as a push would distribute it (built once per machine when missing).
        under_test.playbook('site.yml', '--tags', 'base_archive')
        archives = sorted(glob.glob(os.path.join(CONTROLLER_ARCHIVES, 'debian-*.tar.gz')))
        assert archives, f'no base archive in {CONTROLLER_ARCHIVES}'
        serve.publish_archives(archives, os.path.join(tmp, 'files'))
        serve.snapshot_repository(REPO, os.path.join(tmp, 'srv', 'unboxed'))
        under_test.served = labctl('serve', '--repository', os.path.join(tmp, 'srv', 'unboxed'), '--files', os.path.join(tmp, 'files'))
        under_test.playbook('playbooks/pull_setup.yml', '-e', f'pull_repository_url={under_test.served["git_url"]}',
                            '-e', f'pull_base_url={under_test.served["files_url"]}')
        yield under_test
    finally:
        labctl('down')


def listening_addresses(port: int) -> set[str]:
    """The local addresses of this machine's listening TCP sockets on ``port`` (IPv4 and IPv6)."""
    output = subprocess.run(['ss', '--listening', '--tcp', '--numeric', '--no-header'], capture_output=True, text=True,
                            check=True).stdout
    found = set()
    for line in output.splitlines():
        local = line.split()[3]
        address, _separator, local_port = local.rpartition(':')
        if local_port == str(port):
            found.add(address.strip('[]'))
    return found


def test_servers_listen_on_the_lab_bridge_only(lab):
    bridge = lab.served['address']
    assert ipaddress.ip_address(bridge) in ipaddress.ip_network(lab.state['subnet'])
    assert listening_addresses(serve.GIT_PORT) == {bridge}
    assert listening_addresses(serve.HTTP_PORT) == {bridge}


def test_first_pull_converges_each_seat(lab):
    results = lab.pull()
    assert sorted(results) == ['lab1', 'lab2']
    reports = lab.seat_reports()
    for host, report in reports.items():
        assert report['playbook'] == 'pull.yml'
        (seat,) = report['hosts']
        assert seat['host'] == host, 'a seat reports under its own name, not localhost'
        assert not seat['behind'], seat['reason']
        for stage in TALK_STAGES:
            assert seat['stages'][stage]['status'] in ('ok', 'changed'), (host, stage, seat['stages'][stage])
        assert sum(cell['changed'] for cell in seat['stages'].values()) > 0, 'a first converge changes the seat'
    # What the talk built, seen on the seats themselves.
    files = lab.on_seats('ansible.builtin.command', 'cat /overlay/merged/file01.txt')
    assert {host: result['stdout'] for host, result in files.items()} == {'lab1': 'Texto', 'lab2': 'Texto'}
    containers = lab.on_seats('ansible.builtin.command', 'pgrep -x tail')
    assert all(result['stdout'].strip() for result in containers.values())


def test_second_pull_changes_nothing(lab):
    lab.pull()
    for host, report in lab.seat_reports().items():
        (seat,) = report['hosts']
        assert not seat['behind'], seat['reason']
        changed = {stage: cell['changed'] for stage, cell in seat['stages'].items() if cell['changed']}
        assert changed == {}, f'{host}: a second pull changed {changed}'


def test_collected_report_has_both_seats(lab):
    document = lab.collected()
    assert sorted(host['host'] for host in document['hosts']) == ['lab1', 'lab2']
    assert document['summary']['hosts'] == 2 and document['summary']['on_track'] == 2
    for stage in TALK_STAGES:
        assert document['summary']['stage_done'][stage] == 2
    with open(os.path.join(lab.report_dir, 'pull.html'), encoding='utf-8') as handle:
        page = handle.read()
    assert 'lab1' in page and 'lab2' in page
    # Collecting the same pulls again writes the same report.
    assert lab.collected() == document


def test_collected_report_shows_a_seat_that_never_pulled(lab):
    lab.on_seats('ansible.builtin.file', f'path={REPORT} state=absent', pattern='lab2')
    document = lab.collected()
    lab2 = next(host for host in document['hosts'] if host['host'] == 'lab2')
    assert lab2['behind'] and 'no pull has written a report' in lab2['reason']['message']
    assert document['hosts'][0]['host'] == 'lab2', 'the seat that is behind comes first'
