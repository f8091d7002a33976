# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""End-of-run report of a classroom: which seat reached which stage of the lab, and why the others did not."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lab_report
type: aggregate
short_description: Table of seats by lab stage at the end of a run, also written as HTML and JSON
version_added: 0.1.0
author:
  - unboxed developers (@unboxed)
description:
  - At the end of a playbook run, prints a table with one row per host (seat) and one column per stage of
    the lab (by default the slides C(layers), C(build), C(overlay), C(chroot), C(namespaces), C(cgroups),
    C(capabilities), C(seccomp), then C(verify)), and writes the same
    table as a self-contained HTML page (no external assets, no script) and as JSON.
  - "Each cell is the worst outcome of the host's tasks in that stage: C(unreachable), C(failed),
    C(changed), C(ok), C(skipped), or not run (C(-)). A failed or unreachable cell carries the first failure
    message of that stage; each row carries the first failure of the host (the reason it is behind)."
  - "Rows of hosts that failed or were unreachable come first, so the seats that are behind are at the
    top; when the inventory comes from P(unboxed.lab.roster#inventory), the student's name, seat and room
    are shown beside the host name."
  - "B(Which stage a task belongs to): the task's tags are looked at first, in order (they include the
    tags inherited from its block, role and play; C(always) and C(never) are ignored), then the name of
    the role the task comes from (with and without its collection prefix). Each name is looked up in
    O(stage_map), then compared with the stage names themselves (case-insensitive). The first match wins;
    a task that matches nothing counts in the O(other_stage) column, which is shown only when such
    tasks ran (fact gathering, for example)."
  - "A failure rescued by a block's C(rescue) still shows as failed: it did happen. A failure with
    C(ignore_errors) counts as ok. C(include_tasks) and C(include_role) count only when they fail
    (a failed C(include_role) belongs to the stage of the role it names)."
  - "Enable it with C(callbacks_enabled = unboxed.lab.lab_report) in the C([defaults]) section of
    C(ansible.cfg) (or C(ANSIBLE_CALLBACKS_ENABLED)); it works beside any stdout callback."
requirements:
  - Enabled in configuration (C(callbacks_enabled)).
options:
  output_dir:
    description:
      - Directory the report is written to, created if missing. A relative path is taken from the current
        directory; the absolute path is printed at the end of the run.
      - The files are named after the playbook (C(site.yml) gives C(site.html) and C(site.json)), so the
        reports of C(site.yml) and C(verify.yml) sit side by side; each run replaces its previous report.
    type: path
    default: lab_report
    env:
      - name: UNBOXED_LAB_REPORT_DIR
    ini:
      - section: callback_lab_report
        key: output_dir
  stages:
    description:
      - The stages of the lab, in the order of the columns.
    type: list
    elements: str
    default: [layers, build, overlay, chroot, namespaces, cgroups, capabilities, seccomp, network, userns, verify]
    env:
      - name: UNBOXED_LAB_REPORT_STAGES
    ini:
      - section: callback_lab_report
        key: stages
  stage_map:
    description:
      - Extra names that mean a stage, as C(name=stage) items, where C(name) is a tag or a role name of your own
        content (V(base_image=layers), V(my.lab.rootfs=layers), V(mount=overlay)).
      - A name equal to a stage needs no entry. Each slide of this collection has one name everywhere - its role,
        its tag in C(site.yml), C(verify.yml) and C(reset.yml), and its column here (C(layers), C(build),
        C(overlay), C(chroot), C(namespaces), C(cgroups), C(capabilities), C(seccomp)) - so the collection's own content
        needs none; the role C(unboxed.lab.base_rootfs) tags its tasks C(layers), the slide it belongs to.
    type: list
    elements: str
    default: []
    env:
      - name: UNBOXED_LAB_REPORT_STAGE_MAP
    ini:
      - section: callback_lab_report
        key: stage_map
  other_stage:
    description: Column of the tasks that belong to no stage.
    type: str
    default: other
    env:
      - name: UNBOXED_LAB_REPORT_OTHER_STAGE
    ini:
      - section: callback_lab_report
        key: other_stage
  title:
    description: Title of the report (the playbook name is added to it).
    type: str
    default: Lab report
    env:
      - name: UNBOXED_LAB_REPORT_TITLE
    ini:
      - section: callback_lab_report
        key: title
  print_table:
    description: Print the table at the end of the run, not only write the files.
    type: bool
    default: true
    env:
      - name: UNBOXED_LAB_REPORT_PRINT
    ini:
      - section: callback_lab_report
        key: print_table
notes:
  - "The JSON file holds what the HTML page shows: C(stages), C(summary) (hosts, behind, failed,
    unreachable, on_track, and per stage the number of seats done) and C(hosts), each with C(status), C(behind),
    C(release) (what the seat runs, e.g. C(Debian 13.1 (trixie)), when the run gathered distribution facts, as
    C(verify.yml) does; else null), C(reason) (stage, task, status,
    message) and per stage C(status), the counts C(ok), C(changed), C(failed), C(unreachable),
    C(skipped), and C(failure)."
  - "In check mode the report says so, and C(changed) then means that a task would change something."
"""

import datetime
import html
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ansible import constants as C
from ansible import context
from ansible.errors import AnsibleError
from ansible.plugins.callback import CallbackBase

REPORT_FORMAT = 'unboxed.lab.lab_report/1'
DEFAULT_STAGES = ('layers', 'build', 'overlay', 'chroot', 'namespaces', 'cgroups', 'capabilities', 'seccomp', 'network', 'userns',
                  'verify')
NOT_RUN = 'not_run'
# Worst last: a cell shows the worst outcome of its tasks.
SEVERITY = (NOT_RUN, 'skipped', 'ok', 'changed', 'failed', 'unreachable')
BEHIND = ('failed', 'unreachable')
# Tags that say when a task runs, not what it belongs to.
SCHEDULING_TAGS = frozenset(('always', 'never', 'all', 'tagged', 'untagged'))
MESSAGE_LIMIT = 400
# Messages modules use when the real cause is in stderr.
GENERIC_MESSAGES = ('non-zero return code', 'MODULE FAILURE', 'One or more items failed', '')
TASK_FAILED_PREFIX = 'Task failed: '
# Including tasks or a role is no work of its own: it counts only when it fails (a role not found, say).
INCLUDE_ACTIONS = frozenset(('include_tasks', 'include_role'))
DONE = ('ok', 'changed')


def parse_stage_map(items: Iterable[str], stages: Sequence[str]) -> dict[str, str]:
    """``['mount=overlay']`` -> ``{'mount': 'overlay'}``; an item naming an unknown stage is an error."""
    mapping = {}
    for item in items:
        name, separator, stage = str(item).partition('=')
        name, stage = name.strip().lower(), stage.strip().lower()
        if not separator or not name or not stage:
            raise AnsibleError(f'lab_report stage_map item "{item}" is not of the form name=stage (for example mount=overlay)')
        if stage not in stages:
            raise AnsibleError(f'lab_report stage_map item "{item}" names stage "{stage}", which is not one of the stages: {", ".join(stages)}')
        mapping[name] = stage
    return mapping


@dataclass(frozen=True)
class StageRules:
    """How a task is assigned to a stage: its tags first, then its role, through stage_map or by name."""

    stages: tuple[str, ...] = DEFAULT_STAGES
    stage_map: Mapping[str, str] = field(default_factory=dict)
    other: str = 'other'

    def stage_of(self, tags: Iterable[str] = (), role: str | None = None) -> str:
        names = [str(tag) for tag in tags if str(tag).lower() not in SCHEDULING_TAGS]
        if role:
            names.append(role)
            if '.' in role:
                names.append(role.rsplit('.', 1)[1])
        for name in names:
            key = name.strip().lower()
            if key in self.stage_map:
                return self.stage_map[key]
            if key in self.stages:
                return key
        return self.other


def natural_key(name: str) -> tuple:
    """``lab2`` before ``lab10``, as ``ansible-inventory`` lists seats: digit runs compare as numbers."""
    return tuple((0, int(part), '') if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r'(\d+)', name) if part)


def release_text(facts: Mapping) -> str | None:
    """``Debian 13.1 (trixie)`` from distribution facts, as setup returns them (with or without the ansible_ prefix)."""
    def fact(name):
        value = facts.get(f'ansible_{name}', facts.get(name))
        return str(value).strip() if value not in (None, '', 'NA') else ''
    name, version, codename = fact('distribution'), fact('distribution_version'), fact('distribution_release')
    if not name:
        return None
    return ' '.join(part for part in (name, version, f'({codename})' if codename else '') if part)


def _one_line(text: object) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    message = ' / '.join(lines)
    # ansible-core 2.19 prefixes every failure with this; in a column titled "why" it only takes room.
    message = message.removeprefix(TASK_FAILED_PREFIX)
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT - 1] + '…'


def _last_line(text: object) -> str:
    lines = [line.strip() for line in str(text or '').splitlines() if line.strip()]
    return lines[-1] if lines else ''


def failure_message(result: Mapping) -> str:
    """The sentence that says why a task failed: its msg, or the failed loop item's, or the command's stderr."""
    if result.get('censored'):
        return 'details hidden (no_log)'
    items = result.get('results')
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping) and (item.get('failed') or item.get('unreachable')):
                label = item.get('_ansible_item_label', item.get('item'))
                inner = failure_message(item)
                return _one_line(f'item {label}: {inner}' if label is not None else inner)
    message = str(result.get('msg') or result.get('reason') or '').strip()
    if message.split('\n', 1)[0].strip() in GENERIC_MESSAGES:
        detail = _last_line(result.get('stderr')) or _last_line(result.get('module_stderr')) or _last_line(result.get('module_stdout'))
        if detail:
            rc = result.get('rc')
            message = f'{detail} (exit code {rc})' if isinstance(rc, int) and rc else detail
    return _one_line(message) or 'failed without a message'


@dataclass
class StageCell:
    """What happened to one host in one stage."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failure: dict | None = None

    @property
    def status(self) -> str:
        for status in reversed(SEVERITY[1:]):
            if getattr(self, status):
                return status
        return NOT_RUN


@dataclass
class HostRecord:
    name: str
    student: str | None = None
    seat: str | None = None
    room: str | None = None
    release: str | None = None
    cells: dict[str, StageCell] = field(default_factory=dict)
    first_failure: dict | None = None


class LabReport:
    """Collects task outcomes per host and stage; ``document()`` is the report that every view renders."""

    def __init__(self, rules: StageRules, title: str = 'Lab report'):
        self.rules = rules
        self.title = title
        self.playbook: str | None = None
        self.check_mode = False
        self.started = _now()
        self.hosts: dict[str, HostRecord] = {}

    def host(self, name: str, roster: Mapping | None = None) -> HostRecord:
        if name not in self.hosts:
            roster = roster or {}
            self.hosts[name] = HostRecord(name=name, student=_text_or_none(roster.get('roster_student')),
                                          seat=_text_or_none(roster.get('roster_seat') or roster.get('ansible_host')),
                                          room=_text_or_none(roster.get('roster_room')))
        return self.hosts[name]

    def note_facts(self, host: str, facts: Mapping, roster: Mapping | None = None) -> None:
        """Keep what the seat runs when a task gathered its distribution facts (verify.yml does)."""
        release = release_text(facts)
        if release:
            self.host(host, roster).release = release

    def record(self, host: str, status: str, stage: str, task: str, message: str | None = None, roster: Mapping | None = None) -> None:
        """Count one task outcome (ok, changed, failed, unreachable, skipped) of ``host`` in ``stage``."""
        if status not in SEVERITY[1:]:
            raise ValueError(f'unknown task status {status!r}')
        record = self.host(host, roster)
        cell = record.cells.setdefault(stage, StageCell())
        setattr(cell, status, getattr(cell, status) + 1)
        if status in BEHIND:
            failure = {'stage': stage, 'task': task, 'status': status, 'message': message or status}
            cell.failure = cell.failure or failure
            record.first_failure = record.first_failure or failure

    def stages(self) -> list[str]:
        stages = list(self.rules.stages)
        if any(self.rules.other in record.cells for record in self.hosts.values()):
            stages.append(self.rules.other)
        return stages

    def document(self) -> dict:
        stages = self.stages()
        hosts = []
        for record in self.hosts.values():
            cells = {stage: record.cells.get(stage, StageCell()) for stage in stages}
            statuses = [cell.status for cell in cells.values()]
            status = max(statuses, key=SEVERITY.index) if statuses else NOT_RUN
            hosts.append({
                'host': record.name,
                'student': record.student,
                'seat': record.seat,
                'room': record.room,
                'release': record.release,
                'status': status,
                'behind': status in BEHIND,
                'reason': record.first_failure,
                'stages': {stage: {'status': cell.status, 'ok': cell.ok, 'changed': cell.changed, 'failed': cell.failed,
                                   'unreachable': cell.unreachable, 'skipped': cell.skipped, 'failure': cell.failure}
                           for stage, cell in cells.items()},
            })
        # Seats that are behind first (unreachable, then failed), then by room and name: the instructor reads top down.
        hosts.sort(key=lambda host: (-BEHIND.index(host['status']) if host['behind'] else 1,
                                     natural_key(host['room'] or ''), natural_key(host['host'])))
        count = {status: sum(1 for host in hosts if host['status'] == status) for status in BEHIND}
        # How far the class got: per stage, the seats whose tasks there all went through.
        stage_done = {stage: sum(1 for host in hosts if host['stages'][stage]['status'] in DONE) for stage in stages}
        return {
            'format': REPORT_FORMAT,
            'title': self.title,
            'playbook': self.playbook,
            'check_mode': self.check_mode,
            'started': self.started,
            'finished': _now(),
            'stages': stages,
            'summary': {'hosts': len(hosts), 'behind': count['failed'] + count['unreachable'], 'failed': count['failed'],
                        'unreachable': count['unreachable'], 'on_track': len(hosts) - count['failed'] - count['unreachable'],
                        'stage_done': stage_done},
            'hosts': hosts,
        }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec='seconds')


def _text_or_none(value: object) -> str | None:
    return None if value is None or value == '' else str(value)


# --- views --------------------------------------------------------------------------------------------

CELL_WORDS = {NOT_RUN: '-', 'skipped': 'skipped', 'ok': 'ok', 'changed': 'changed', 'failed': 'FAILED', 'unreachable': 'UNREACHABLE'}


def summary_sentence(document: Mapping) -> str:
    summary = document['summary']
    if not summary['hosts']:
        return 'no host ran a task'
    seats = 'seat' if summary['hosts'] == 1 else 'seats'
    text = f"{summary['hosts']} {seats}: {summary['on_track']} on track, {summary['behind']} behind"
    details = [f"{summary[status]} {status}" for status in BEHIND if summary[status]]
    return f"{text} ({', '.join(details)})" if details else text


def reason_text(reason: Mapping | None) -> str:
    if not reason:
        return ''
    return f"{reason['stage']}: {reason['task']}: {reason['message']}"


def render_text(document: Mapping) -> list[tuple[str, str]]:
    """The table for the terminal, as (line, status) pairs so the caller can colour each row."""
    stages = document['stages']
    # The seat's release, when the run gathered it (verify.yml does; site.yml saves the round trip).
    releases = any(host.get('release') for host in document['hosts'])
    header = ['HOST', 'STUDENT'] + (['RELEASE'] if releases else []) + [stage.upper() for stage in stages] + ['WHY']
    rows = [[host['host'], host['student'] or ''] + ([host.get('release') or ''] if releases else [])
            + [CELL_WORDS[host['stages'][stage]['status']] for stage in stages]
            + [reason_text(host['reason'])] for host in document['hosts']]
    widths = [max(len(row[index]) for row in [header] + rows) for index in range(len(header) - 1)]

    def line(cells):
        return '  '.join(cell.ljust(width) for cell, width in zip(cells, widths)) + '  ' + cells[-1]

    title = f"{document['title'].upper()} {document['playbook'] or ''}".strip()
    mode = ' [check mode: changed means would change]' if document.get('check_mode') else ''
    lines = [(f'{title} - {summary_sentence(document)}{mode}', 'title'), (line(header).rstrip(), 'header')]
    lines.extend((line(row).rstrip(), host['status']) for row, host in zip(rows, document['hosts']))
    return lines


HTML_STYLE = """
:root { color-scheme: light; font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; }
body { margin: 1.5rem 2rem; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
.meta { color: #555; margin: 0 0 1rem; }
.summary { display: flex; gap: .8rem; flex-wrap: wrap; margin: 0 0 1rem; }
.chip { border-radius: .4rem; padding: .5rem .9rem; font-size: 1.1rem; border: 1px solid #ccc; }
.chip strong { font-size: 1.5rem; }
.chip.on_track { background: #e6f4ea; border-color: #7cc08d; }
.chip.failed { background: #fde8e7; border-color: #e0736b; }
.chip.unreachable { background: #ece7f6; border-color: #9a84c8; }
.chip.check { background: #fff4d6; border-color: #e0b84f; }
h2 { font-size: 1.2rem; margin: 1.2rem 0 .5rem; }
ul.behind { margin: 0 0 1rem; padding-left: 1.2rem; }
ul.behind li { margin: .25rem 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #d0d0d0; padding: .35rem .6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; font-size: .95rem; }
td.seat { min-width: 20rem; }
td.seat .host { font-weight: bold; font-size: 1.05rem; }
td.seat .who { color: #444; font-size: .9rem; }
tr.behind td.seat { border-left: .45rem solid #c62828; }
tr.unreachable td.seat { border-left-color: #5e35b1; }
td.cell { text-align: center; white-space: nowrap; min-width: 6.5rem; }
td.cell .status { font-weight: bold; }
td.cell .counts { display: block; color: #555; font-size: .8rem; }
/* changed is as good as ok for a seat: a calm blue, so that only red and purple catch the eye */
td.ok { background: #e6f4ea; color: #1e6b34; }
td.changed { background: #e3f0fb; color: #1d4f7a; }
td.skipped { background: #f4f6f8; color: #56606a; }
td.not_run { background: #fafafa; color: #9a9a9a; }
td.failed { background: #c62828; color: #fff; }
td.unreachable { background: #5e35b1; color: #fff; }
td.failed .counts, td.unreachable .counts { color: #f5f5f5; }
td.why { font-size: .95rem; max-width: 32rem; }
td.why .stage { font-weight: bold; }
td.why .fine { color: #1e6b34; }
tfoot th { background: #f2f2f2; }
tfoot th.done { text-align: center; }
td.why .task { color: #444; }
td.why .message { font-family: "DejaVu Sans Mono", monospace; font-size: .85rem; display: block; margin-top: .2rem; overflow-wrap: anywhere; }
.legend { margin-top: 1rem; color: #555; font-size: .9rem; }
.legend span { display: inline-block; padding: .1rem .5rem; margin-right: .2rem; border-radius: .2rem; }
.legend .ok { background: #e6f4ea; } .legend .changed { background: #e3f0fb; }
.legend .failed { background: #c62828; color: #fff; } .legend .unreachable { background: #5e35b1; color: #fff; }
.legend .skipped { background: #f4f6f8; } .legend .not_run { background: #fafafa; border: 1px solid #e0e0e0; }
"""


def _when(started: str, finished: str) -> str:
    try:
        start, end = datetime.datetime.fromisoformat(started), datetime.datetime.fromisoformat(finished)
    except (TypeError, ValueError):
        return f'Finished {finished}'
    seconds = int((end - start).total_seconds())
    took = f'{seconds // 60} min {seconds % 60} s' if seconds >= 60 else f'{seconds} s'
    return f'Finished {end:%Y-%m-%d %H:%M:%S %Z}, the run took {took}'


def _e(value: object) -> str:
    return html.escape('' if value is None else str(value), quote=True)


def _cell_counts(cell: Mapping) -> str:
    counts = [f"{cell[status]} {status}" for status in ('ok', 'changed', 'failed', 'unreachable', 'skipped') if cell[status]]
    return ', '.join(counts)


def _who(host: Mapping) -> str:
    parts = [host['student'], f"seat {host['seat']}" if host['seat'] and host['seat'] != host['host'] else None,
             f"room {host['room']}" if host['room'] else None, host.get('release')]
    return ' · '.join(part for part in parts if part)


def render_html(document: Mapping) -> str:
    """A self-contained page: inline style, no script, no external resource."""
    stages = document['stages']
    summary = document['summary']
    title = f"{document['title']}: {document['playbook']}" if document['playbook'] else document['title']
    out = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f'<title>{_e(title)}</title>', f'<style>{HTML_STYLE}</style>', '</head>', '<body>',
           f'<h1>{_e(title)}</h1>',
           f'<p class="meta">{_e(_when(document["started"], document["finished"]))}</p>',
           '<div class="summary">',
           f'<div class="chip on_track"><strong>{summary["on_track"]}</strong> on track</div>']
    for status in BEHIND:
        out.append(f'<div class="chip {status}"><strong>{summary[status]}</strong> {status}</div>')
    if document.get('check_mode'):
        out.append('<div class="chip check">check mode: "changed" means "would change"</div>')
    out.append('</div>')

    behind = [host for host in document['hosts'] if host['behind']]
    if behind:
        out.append(f'<h2>Behind ({len(behind)})</h2>')
        out.append('<ul class="behind">')
        for host in behind:
            reason = host['reason'] or {}
            who = _who(host)
            out.append(f'<li><strong>{_e(host["host"])}</strong>{" (" + _e(who) + ")" if who else ""}: '
                       f'{_e(reason.get("status", host["status"]))} at <strong>{_e(reason.get("stage", "?"))}</strong> '
                       f'— {_e(reason.get("message", ""))}</li>')
        out.append('</ul>')
    elif document['hosts']:
        out.append('<h2>Every seat is on track</h2>')

    out.append('<table>')
    out.append('<thead><tr><th>Seat</th>' + ''.join(f'<th>{_e(stage)}</th>' for stage in stages) + '<th>Why</th></tr></thead>')
    out.append('<tbody>')
    for host in document['hosts']:
        row_class = f'{host["status"]}{" behind" if host["behind"] else ""}'
        who = _who(host)
        cells = [f'<td class="seat"><span class="host">{_e(host["host"])}</span>'
                 + (f'<br><span class="who">{_e(who)}</span>' if who else '') + '</td>']
        for stage in stages:
            cell = host['stages'][stage]
            tooltip = f' title="{_e(cell["failure"]["task"] + ": " + cell["failure"]["message"])}"' if cell['failure'] else ''
            counts = _cell_counts(cell)
            cells.append(f'<td class="cell {cell["status"]}" data-stage="{_e(stage)}"{tooltip}>'
                         f'<span class="status">{_e(CELL_WORDS[cell["status"]])}</span>'
                         + (f'<span class="counts">{_e(counts)}</span>' if counts else '') + '</td>')
        reason = host['reason']
        if reason:
            cells.append(f'<td class="why"><span class="stage">{_e(reason["stage"])}</span> · '
                         f'<span class="task">{_e(reason["task"])}</span>'
                         f'<span class="message">{_e(reason["message"])}</span></td>')
        else:
            cells.append('<td class="why"><span class="fine">on track</span></td>')
        out.append(f'<tr class="{_e(row_class)}" data-host="{_e(host["host"])}">' + ''.join(cells) + '</tr>')
    out.append('</tbody>')
    if document['hosts']:
        done = summary['stage_done']
        out.append('<tfoot><tr><th>Done</th>' + ''.join(f'<th class="done">{done[stage]} / {summary["hosts"]}</th>' for stage in stages)
                   + '<th></th></tr></tfoot>')
    out.append('</table>')
    legend = ' '.join(f'<span class="{status}">{_e(CELL_WORDS[status] + (" not run" if status == NOT_RUN else ""))}</span>'
                      for status in reversed(SEVERITY))
    out.append(f'<p class="legend">Each cell is the worst outcome of the stage\'s tasks: {legend}</p>')
    out.append('</body>')
    out.append('</html>')
    return '\n'.join(out) + '\n'


def write_atomically(path: str, text: str) -> None:
    # A browser reloading the page mid-write must see the old report or the new one, never half of one.
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(prefix='.lab_report-', dir=directory)
    try:
        with os.fdopen(handle, 'w', encoding='utf-8') as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_report(document: Mapping, directory: str, stem: str) -> tuple[str, str]:
    """Write ``<stem>.html`` and ``<stem>.json`` into ``directory``; return their absolute paths."""
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    html_path = os.path.join(directory, f'{stem}.html')
    json_path = os.path.join(directory, f'{stem}.json')
    write_atomically(json_path, json.dumps(document, indent=2, ensure_ascii=False) + '\n')
    write_atomically(html_path, render_html(document))
    return html_path, json_path


# --- the callback -------------------------------------------------------------------------------------

def _task_result(result):
    # ansible-core 2.19 made the result public as .result/.host/.task; older versions only have the _ names.
    return result.result if hasattr(type(result), 'result') else result._result


def _result_host(result):
    return result.host if hasattr(type(result), 'host') else result._host


def _result_task(result):
    return result.task if hasattr(type(result), 'task') else result._task


class CallbackModule(CallbackBase):
    """Collects each task outcome per host and stage, then prints and writes the classroom report."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'unboxed.lab.lab_report'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self.report: LabReport | None = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        stages = tuple(str(stage).strip().lower() for stage in self.get_option('stages') if str(stage).strip())
        rules = StageRules(stages=stages, stage_map=parse_stage_map(self.get_option('stage_map'), stages),
                           other=self.get_option('other_stage'))
        self.report = LabReport(rules, title=self.get_option('title'))

    def v2_playbook_on_start(self, playbook):
        self.report.playbook = os.path.basename(playbook._file_name)
        self.report.check_mode = bool(context.CLIARGS.get('check', False))

    def _record(self, result, status: str) -> None:
        task = _result_task(result)
        host = _result_host(result)
        role = getattr(task, '_role', None)
        role_name = role.get_name() if role else None
        action = (task.action or '').rsplit('.', 1)[-1]
        if action in INCLUDE_ACTIONS:
            if status not in BEHIND:
                return
            if action == 'include_role':
                role_name = str(task.args.get('name') or role_name or '')
        stage = self.report.rules.stage_of(task.tags or (), role_name)
        message = failure_message(_task_result(result)) if status in BEHIND else None
        self.report.record(host.get_name(), status, stage, task.get_name().strip(), message, roster=host.vars)

    def v2_runner_on_ok(self, result):
        facts = _task_result(result).get('ansible_facts')
        if isinstance(facts, Mapping):
            host = _result_host(result)
            self.report.note_facts(host.get_name(), facts, roster=host.vars)
        self._record(result, 'changed' if _task_result(result).get('changed') else 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'ok' if ignore_errors else 'failed')

    def v2_runner_on_unreachable(self, result):
        self._record(result, 'unreachable')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')

    def v2_playbook_on_stats(self, stats):
        document = self.report.document()
        stem = os.path.splitext(document['playbook'] or 'lab_report')[0]
        try:
            html_path, json_path = write_report(document, self.get_option('output_dir'), stem)
        except OSError as error:
            self._display.warning(f'lab_report: could not write the report to {self.get_option("output_dir")}: {error}')
            html_path = json_path = None
        if self.get_option('print_table'):
            colours = {'title': C.COLOR_HIGHLIGHT, 'header': None, 'ok': C.COLOR_OK, 'changed': C.COLOR_CHANGED,
                       'skipped': C.COLOR_SKIP, NOT_RUN: None, 'failed': C.COLOR_ERROR, 'unreachable': C.COLOR_UNREACHABLE}
            self._display.display('')
            for text, status in render_text(document):
                self._display.display(text, color=colours.get(status))
        if html_path:
            self._display.display(f'Lab report: {html_path} (JSON: {json_path})')
