"""roles/pull/files/collect_reports.py: the class's report out of the seats' own pull reports, with real documents
of the lab_report callback's format (slurp results as the collect tasks hand them over)."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, 'roles', 'pull', 'files', 'collect_reports.py')


def load_script():
    spec = importlib.util.spec_from_file_location('collect_reports_under_test', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COLLECT = load_script()
LAB_REPORT = COLLECT.load_lab_report()


def seat_report(host: str, started: str, finished: str, changed: int = 0, failure: dict | None = None) -> dict:
    """What a seat's pull writes: a lab_report document of one host, made by the callback's own LabReport."""
    report = LAB_REPORT.LabReport(LAB_REPORT.StageRules())
    report.playbook = 'pull.yml'
    for stage in ('layers', 'build', 'overlay', 'chroot', 'namespaces'):
        for _unused in range(changed):
            report.record(host, 'changed', stage, f'a {stage} task')
        report.record(host, 'ok', stage, f'another {stage} task')
    if failure:
        report.record(host, 'failed', failure['stage'], failure['task'], failure['message'])
    document = report.document()
    document['started'], document['finished'] = started, finished
    return document


def slurped(document: dict) -> dict:
    return {'content': base64.b64encode(json.dumps(document).encode()).decode(), 'encoding': 'base64', 'changed': False}


def test_seats_become_one_report_with_the_summary_recomputed():
    seats = {
        'lab1': slurped(seat_report('lab1', '2026-11-29T19:00:00+00:00', '2026-11-29T19:01:00+00:00', changed=1)),
        'lab2': slurped(seat_report('lab2', '2026-11-29T19:00:05+00:00', '2026-11-29T19:02:00+00:00',
                                    failure={'stage': 'overlay', 'task': 'Mount the layers', 'message': 'mount: no overlay'})),
    }
    document = COLLECT.collect(LAB_REPORT, seats)
    assert [host['host'] for host in document['hosts']] == ['lab2', 'lab1'], 'the seat that is behind first'
    assert document['summary']['hosts'] == 2 and document['summary']['failed'] == 1 and document['summary']['on_track'] == 1
    assert document['summary']['stage_done']['layers'] == 2 and document['summary']['stage_done']['overlay'] == 1
    lab1 = document['hosts'][1]
    assert lab1['stages']['layers'] == {'status': 'changed', 'ok': 1, 'changed': 1, 'failed': 0, 'unreachable': 0, 'skipped': 0,
                                        'failure': None}
    assert document['hosts'][0]['reason']['message'] == 'mount: no overlay'
    assert (document['started'], document['finished']) == ('2026-11-29T19:00:00+00:00', '2026-11-29T19:02:00+00:00')


def test_a_seat_without_a_report_and_an_unreachable_one_are_rows_that_say_so():
    seats = {
        'lab1': slurped(seat_report('lab1', '2026-11-29T19:00:00+00:00', '2026-11-29T19:01:00+00:00')),
        'lab2': {'failed': True, 'msg': 'file not found: /var/lib/unboxed/pull/lab_report/pull.json'},
        'lab3': {'unreachable': True, 'msg': 'Failed to connect to the host via ssh'},
    }
    document = COLLECT.collect(LAB_REPORT, seats)
    rows = {host['host']: host for host in document['hosts']}
    assert rows['lab2']['status'] == 'failed' and 'no pull has written a report' in rows['lab2']['reason']['message']
    assert rows['lab3']['status'] == 'unreachable' and 'Failed to connect' in rows['lab3']['reason']['message']
    assert [host['host'] for host in document['hosts']] == ['lab3', 'lab2', 'lab1']


def test_the_script_writes_once_and_reports_no_change_for_the_same_pulls(tmp_path):
    seats = {'lab1': slurped(seat_report('lab1', '2026-11-29T19:00:00+00:00', '2026-11-29T19:01:00+00:00'))}
    runs = [subprocess.run([sys.executable, SCRIPT, str(tmp_path)], input=json.dumps(seats), capture_output=True, text=True, check=True)
            for _unused in range(2)]
    first, second = (json.loads(run.stdout) for run in runs)
    assert first['changed'] and not second['changed']
    assert first['summary'] == '1 seat: 1 on track, 0 behind'
    assert sorted(os.listdir(tmp_path)) == ['pull.html', 'pull.json']
