"""site.yml as AWX runs it: `ansible-runner run` on a private data directory, against a local lab.

AWX (and Ansible Automation Platform) never calls ansible-playbook itself: it lays out a private data directory -
`project/` (the project's checkout), `inventory/`, `env/` (environment variables, settings) - and hands it to
ansible-runner, which runs the playbook from the project directory and records every event under `artifacts/`.
This test does the same with the clone's tracked files as the project, on seat lab1 of a lab of its own (LAB),
while a plain `ansible-playbook` run converges seat lab2 from the clone. Both seats must end with the same
per-host results, task by task and in the lab report, and verify.yml run through ansible-runner must see every
observation on both seats.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ansible_env

pytestmark = [pytest.mark.lab, pytest.mark.root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The project's copy for the runner's private data directory is made as labctl serve snapshots the tree.
sys.path.insert(0, os.path.join(REPO, 'scripts'))
from local_lab import serve  # noqa: E402

BIN = os.path.dirname(sys.executable)
LABCTL = os.path.join(REPO, 'scripts', 'labctl')
LAB = 'runnertest'

# ansible-runner's job events of a task result, and the status the plain run's callback gives the same result.
RESULT_EVENTS = {'runner_on_ok': 'ok', 'runner_on_failed': 'failed', 'runner_on_skipped': 'skipped',
                 'runner_on_unreachable': 'unreachable'}
BASE_BUILD_TASK = 'Build the base root file system with mmdebstrap'


def run(argv, timeout=900, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                          timeout=timeout, **kwargs)


def task_name(name: str) -> str:
    """"unboxed.lab.overlay : Mount the layers" -> "Mount the layers" (ansible-runner's events carry the latter)."""
    return name.rpartition(' : ')[2]


def controller_task_names() -> set:
    """The tasks base_rootfs runs on the controller, once per play (the base archive in its cache): they run on
    whichever seat comes first, and only the first run after a cold cache builds anything."""
    def names(tasks):
        for task in tasks or []:
            if 'name' in task:
                yield task['name']
            for key in ('block', 'rescue', 'always'):
                yield from names(task.get(key))
    with open(os.path.join(REPO, 'roles', 'base_rootfs', 'tasks', 'controller_archive.yml'), encoding='utf-8') as handle:
        return set(names(yaml.safe_load(handle)))


def job_results(private_data_dir: str, ident: str) -> list:
    """Every task result of an ansible-runner job, in order: {'host', 'task', 'status', 'changed'}."""
    events_dir = os.path.join(private_data_dir, 'artifacts', ident, 'job_events')
    events = []
    for name in os.listdir(events_dir):
        with open(os.path.join(events_dir, name), encoding='utf-8') as handle:
            events.append(json.load(handle))
    results = []
    for event in sorted(events, key=lambda event: event['counter']):
        if event['event'] in RESULT_EVENTS:
            data = event['event_data']
            results.append({'host': data['host'], 'task': task_name(data['task']),
                            'status': RESULT_EVENTS[event['event']], 'changed': bool((data.get('res') or {}).get('changed'))})
    return results


def per_host(results: list, host: str, leave_out=frozenset()) -> list:
    return [(entry['task'], entry['status'], entry['changed']) for entry in results
            if entry['host'] == host and entry['task'] not in leave_out]


def report_row(report_dir: str, playbook: str, host: str) -> dict:
    with open(os.path.join(report_dir, f'{playbook}.json'), encoding='utf-8') as handle:
        report = json.load(handle)
    assert report['playbook'] == f'{playbook}.yml'
    return next(row for row in report['hosts'] if row['host'] == host)


class RunnerLab:
    """A lab of two seats, a private data directory as AWX lays it out, and the plain runs' directory."""

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.inventory = os.path.join(tmp, 'hosts.yml')
        self.private_data_dir = os.path.join(tmp, 'private')
        self.report_dir = os.path.join(self.private_data_dir, 'lab_report')
        self.plain_report_dir = os.path.join(tmp, 'plain-report')
        self.jobs = 0

    def labctl(self, *args) -> dict:
        completed = run([LABCTL, *args, '--json', '--lab', LAB], timeout=600)
        assert completed.returncode == 0, f'labctl {" ".join(args)} failed:\n{completed.stdout}\n{completed.stderr}'
        return json.loads(completed.stdout)

    def lay_out_private_data_dir(self):
        project = os.path.join(self.private_data_dir, 'project')
        serve.copy_work_tree(REPO, project)
        os.makedirs(os.path.join(self.private_data_dir, 'inventory'))
        shutil.copy(self.inventory, os.path.join(self.private_data_dir, 'inventory', 'hosts.yml'))
        os.makedirs(os.path.join(self.private_data_dir, 'env'))
        envvars = {
            # The lab report's files go beside the job's artifacts, not into the project checkout.
            'UNBOXED_LAB_REPORT_DIR': self.report_dir,
            'ANSIBLE_HOME': os.path.join(self.private_data_dir, 'ansible-home'),
            'ANSIBLE_LOCAL_TEMP': os.path.join(self.private_data_dir, 'ansible-tmp'),
            'ANSIBLE_NOCOLOR': '1',
        }
        with open(os.path.join(self.private_data_dir, 'env', 'envvars'), 'w', encoding='utf-8') as handle:
            yaml.safe_dump(envvars, handle)
        with open(os.path.join(self.private_data_dir, 'env', 'settings'), 'w', encoding='utf-8') as handle:
            yaml.safe_dump({'job_timeout': 900}, handle)

    def runner(self, playbook: str, limit: str) -> tuple:
        """`ansible-runner run` of a playbook of the project: (completed process, ident)."""
        self.jobs += 1
        ident = f'job{self.jobs}-{playbook.removesuffix(".yml")}'
        env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
        for name in [name for name in env if name.startswith('ANSIBLE_')]:
            del env[name]  # AWX's jobs get only what env/ says
        completed = run([os.path.join(BIN, 'ansible-runner'), 'run', self.private_data_dir, '--playbook', playbook,
                         '--limit', limit, '--ident', ident], env=env)
        return completed, ident

    def plain(self, playbook: str, limit: str) -> tuple:
        """ansible-playbook from the clone, recording each task result and writing the lab report."""
        record = os.path.join(self.tmp, f'plain-{playbook}.jsonl')
        env = ansible_env(self.tmp, record_to=record)
        env['ANSIBLE_CALLBACKS_ENABLED'] = 'record_results,unboxed.lab.lab_report'
        env['UNBOXED_LAB_REPORT_DIR'] = self.plain_report_dir
        completed = run([os.path.join(BIN, 'ansible-playbook'), '-i', self.inventory, '--limit', limit,
                         os.path.join(REPO, playbook)], cwd=REPO, env=env)
        results = []
        if os.path.exists(record):
            with open(record, encoding='utf-8') as handle:
                for line in handle:
                    entry = json.loads(line)
                    results.append({'host': entry['host'], 'task': task_name(entry['task']), 'status': entry['status'],
                                    'changed': bool(entry['result'].get('changed'))})
        return completed, results


@pytest.fixture(scope='module')
def runner_lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('needs root: the local lab uses network namespaces, bridges and mounts')
    lab = RunnerLab(str(tmp_path_factory.mktemp('runner')))
    lab.labctl('down')  # what an interrupted earlier run may have left
    try:
        up = lab.labctl('up', '--hosts', '2', '--inventory', lab.inventory)
        assert up['user'] == 'student', up
        lab.lay_out_private_data_dir()
        yield lab
    finally:
        lab.labctl('down')


@pytest.fixture(scope='module')
def converged(runner_lab):
    """lab1 converged by an ansible-runner job, lab2 by ansible-playbook, once for the module's tests:
    (the job's results, its ident, the plain run's results)."""
    job, ident = runner_lab.runner('site.yml', 'lab1')
    artifacts = os.path.join(runner_lab.private_data_dir, 'artifacts', ident)
    with open(os.path.join(artifacts, 'status'), encoding='utf-8') as handle:
        status = handle.read().strip()
    assert job.returncode == 0 and status == 'successful', job.stdout[-4000:] + job.stderr
    plain, plain_results = runner_lab.plain('site.yml', 'lab2')
    assert plain.returncode == 0, plain.stdout[-4000:] + plain.stderr
    return job_results(runner_lab.private_data_dir, ident), ident, plain_results


def test_site_through_ansible_runner_converges_a_seat_as_ansible_playbook_does(runner_lab, converged):
    runner_results, ident, plain_results = converged
    with open(os.path.join(runner_lab.private_data_dir, 'artifacts', ident, 'stdout'), encoding='utf-8') as handle:
        assert 'PLAY RECAP' in handle.read()

    # Task by task, the same results on both seats. The controller's base archive is built by the first run only
    # when the cache was cold: then those controller tasks differ, and only those.
    cold_cache = any(entry['task'] == BASE_BUILD_TASK and entry['changed'] for entry in runner_results)
    leave_out = controller_task_names() if cold_cache else frozenset()
    assert BASE_BUILD_TASK in controller_task_names()
    from_runner, from_plain = per_host(runner_results, 'lab1', leave_out), per_host(plain_results, 'lab2', leave_out)
    assert any(changed for _task, _status, changed in from_runner), from_runner
    assert not [entry for entry in from_runner if entry[1] in ('failed', 'unreachable')], from_runner
    assert from_runner == from_plain
    assert per_host(runner_results, 'lab2') == [], 'the job ran outside its limit'

    # The lab report of the job, beside its artifacts, shows the seat as the plain run's report shows lab2.
    runner_row = report_row(runner_lab.report_dir, 'site', 'lab1')
    plain_row = report_row(runner_lab.plain_report_dir, 'site', 'lab2')
    assert runner_row['status'] == plain_row['status'] and not runner_row['behind'], runner_row
    stages = [stage for stage in runner_row['stages'] if not (cold_cache and stage == 'layers')]
    assert stages and {stage: runner_row['stages'][stage] for stage in stages} == \
        {stage: plain_row['stages'][stage] for stage in stages}
    assert not os.path.exists(os.path.join(runner_lab.private_data_dir, 'project', 'lab_report'))


@pytest.mark.usefixtures('converged')
def test_verify_through_ansible_runner_sees_every_observation_on_both_seats(runner_lab):
    job, ident = runner_lab.runner('verify.yml', 'all')

    assert job.returncode == 0, job.stdout[-4000:] + job.stderr
    results = job_results(runner_lab.private_data_dir, ident)
    for host in ('lab1', 'lab2'):
        host_results = per_host(results, host)
        assert host_results and not [entry for entry in host_results if entry[1] in ('failed', 'unreachable')]
        assert not [entry for entry in host_results if entry[2]], f'verify changed something on {host}'
        row = report_row(runner_lab.report_dir, 'verify', host)
        assert row['status'] == 'ok' and not row['behind'], row
        assert row['stages']['verify']['ok'] > 0 and row['stages']['verify']['failed'] == 0, row
    with open(os.path.join(runner_lab.private_data_dir, 'artifacts', ident, 'stdout'), encoding='utf-8') as handle:
        stdout = handle.read()
    # The report's table is printed at the end of the job's output too, as AWX shows it.
    assert 'lab1' in stdout.split('PLAY RECAP')[-1] and 'lab2' in stdout.split('PLAY RECAP')[-1]
