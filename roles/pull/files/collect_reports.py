#!/usr/bin/env python
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One lab report of the class out of the seats' own reports (ansible-pull mode, docs/pull.md).

Reads on stdin what roles/pull/tasks/collect.yml slurped from every seat ({host: slurp result}), rebuilds the
class's report with the lab_report callback's own code (plugins/callback/lab_report.py: the same summary,
order and HTML page as a pushed run) and writes DIRECTORY/pull.json and pull.html when they differ from
what is there. Prints {"changed", "html", "json", "summary"} as JSON.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys

REPORT_STEM = 'pull'


def load_lab_report():
    """The lab_report callback of this collection (roles/pull/files -> the collection's root)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    path = os.path.join(root, 'plugins', 'callback', 'lab_report.py')
    spec = importlib.util.spec_from_file_location('unboxed_lab_report_callback', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def seat_document(result: dict) -> tuple[dict | None, str | None, str]:
    """(the seat's report, why there is none, the status that stands for it) from a slurp result."""
    if result.get('unreachable'):
        return None, f"unreachable: {result.get('msg', '')}".strip(), 'unreachable'
    if 'content' not in result:
        return None, 'no pull has written a report on this seat yet', 'failed'
    try:
        return json.loads(base64.b64decode(result['content'])), None, 'ok'
    except ValueError as error:
        return None, f'its report is not JSON ({error})', 'failed'


def collect(lab_report, seats: dict) -> dict:
    documents = {host: seat_document(result or {}) for host, result in seats.items()}
    stages: list[str] = []
    for document, _problem, _status in documents.values():
        for stage in (document or {}).get('stages', []):
            if stage not in stages:
                stages.append(stage)
    other = 'other'
    rules = lab_report.StageRules(stages=tuple(stage for stage in stages if stage != other) or lab_report.DEFAULT_STAGES, other=other)
    report = lab_report.LabReport(rules)
    started, finished, check_mode = [], [], False
    for host, (document, problem, status) in documents.items():
        if document is None:
            report.record(host, status, other, 'ansible-pull', problem)
            continue
        started.append(document.get('started') or '')
        finished.append(document.get('finished') or '')
        check_mode = check_mode or bool(document.get('check_mode'))
        for entry in document.get('hosts', []):
            record = report.host(entry['host'])
            record.student, record.seat, record.room = entry.get('student'), entry.get('seat'), entry.get('room')
            record.release = entry.get('release')
            record.first_failure = entry.get('reason')
            for stage, cell in entry.get('stages', {}).items():
                counts = {name: int(cell.get(name) or 0) for name in ('ok', 'changed', 'failed', 'unreachable', 'skipped')}
                if any(counts.values()):
                    record.cells[stage] = lab_report.StageCell(failure=cell.get('failure'), **counts)
    report.playbook = 'pull.yml'
    report.check_mode = check_mode
    document = report.document()
    # The times of the pulls themselves, so that collecting the same reports again writes the same file.
    document['started'] = min((value for value in started if value), default=document['started'])
    document['finished'] = max((value for value in finished if value), default=document['finished'])
    document['title'] = f"{document['title']} (collected from {len(seats)} seats' pulls)"
    return document


def main() -> int:
    directory = os.path.abspath(sys.argv[1])
    lab_report = load_lab_report()
    document = collect(lab_report, json.load(sys.stdin))
    json_path = os.path.join(directory, f'{REPORT_STEM}.json')
    try:
        with open(json_path, encoding='utf-8') as handle:
            changed = json.load(handle) != document
    except (OSError, ValueError):
        changed = True
    html_path = os.path.join(directory, f'{REPORT_STEM}.html')
    if changed:
        html_path, json_path = lab_report.write_report(document, directory, REPORT_STEM)
    print(json.dumps({'changed': changed, 'html': html_path, 'json': json_path, 'summary': lab_report.summary_sentence(document)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
