# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live class board: which seat is where in the talk, from grade.yml's results, kept across runs."""

from __future__ import annotations

DOCUMENTATION = r"""
name: class_board
type: aggregate
short_description: A self-refreshing page of the class - one row per seat, one column per slide - from slide_grade results
version_added: 0.3.0
author:
  - unboxed developers (@unboxed)
description:
  - At the end of a run in which M(unboxed.lab.slide_grade) graded the seats in a task tagged C(class_board)
    (C(grade.yml), and C(solve.yml)'s grading after it solved), writes C(board.html) and C(board.json) into
    O(output_dir). Other runs leave the board alone.
  - "One row per seat, with the student's name, seat and room when the inventory comes from
    P(unboxed.lab.roster#inventory); one column per slide: C(done) (with the time the seat finished it),
    C(in progress), C(stuck) with the hint the student should read, C(not started), C(not graded); a seat that
    could not be reached is marked C(unreachable) in every column and keeps its last known states below. The top
    of the page shows the class's progress: seats done per slide and the whole class's share of slides done."
  - "The page reloads itself every O(refresh) seconds (C(meta refresh)): open it as a file, or serve the directory
    with C(python3 -m http.server --bind 127.0.0.1 --directory DIR). Nothing else is needed: no script, no
    external resource."
  - "History is kept across runs in C(board.json): when each seat first finished each slide, when its state last
    changed, and every change (C(events)), so the board of a C(make watch) loop says who finished the overlay slide
    when."
  - Enable it with C(callbacks_enabled = unboxed.lab.class_board) (C(ANSIBLE_CALLBACKS_ENABLED)); it works beside
    the lab report and any stdout callback.
requirements:
  - Enabled in configuration (C(callbacks_enabled)).
options:
  output_dir:
    description: Directory of C(board.html) and C(board.json), created if missing.
    type: path
    default: class_board
    env:
      - name: UNBOXED_CLASS_BOARD_DIR
    ini:
      - section: callback_class_board
        key: output_dir
  refresh:
    description: Seconds between two reloads of the page (the grading loop's period is a good value).
    type: int
    default: 10
    env:
      - name: UNBOXED_CLASS_BOARD_REFRESH
    ini:
      - section: callback_class_board
        key: refresh
  slides:
    description: The columns, in the talk's order. A slide the run did not grade keeps its last known state.
    type: list
    elements: str
    default: [layers, build, overlay, chroot, namespaces, cgroups, capabilities, seccomp]
    env:
      - name: UNBOXED_CLASS_BOARD_SLIDES
    ini:
      - section: callback_class_board
        key: slides
  title:
    description: Title of the page.
    type: str
    default: Class board
    env:
      - name: UNBOXED_CLASS_BOARD_TITLE
    ini:
      - section: callback_class_board
        key: title
"""

import datetime
import html
import json
import os
from collections.abc import Mapping

from ansible.plugins.callback import CallbackBase

from ansible_collections.unboxed.lab.plugins.callback.lab_report import natural_key, write_atomically

BOARD_FORMAT = 'unboxed.lab.class_board/1'
STATES = ('done', 'in_progress', 'stuck', 'not_started', 'not_graded', 'unknown')
WORDS = {'done': 'done', 'in_progress': 'in progress', 'stuck': 'stuck', 'not_started': 'not started',
         'not_graded': 'not graded', 'unknown': '-', 'unreachable': 'unreachable', 'error': 'not graded (error)'}
EVENT_LIMIT = 5000
GRADE_ACTIONS = frozenset(('unboxed.lab.slide_grade', 'slide_grade'))
# Only the gradings tagged so draw the board (grade.yml's, solve.yml's last): reset_slide.yml also asks slide_grade
# what runs on a seat before it takes it apart, which is not where the student is.
BOARD_TAG = 'class_board'


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def empty_board(slides, title='Class board') -> dict:
    return {'format': BOARD_FORMAT, 'title': title, 'slides': list(slides), 'updated': None, 'rounds': 0,
            'seats': {}, 'events': []}


def load_board(path: str, slides, title='Class board') -> dict:
    """The board kept by earlier runs, or a new one when there is none (or it is not a board)."""
    try:
        with open(path, encoding='utf-8') as handle:
            board = json.load(handle)
    except (OSError, ValueError):
        return empty_board(slides, title)
    if not isinstance(board, dict) or board.get('format') != BOARD_FORMAT or not isinstance(board.get('seats'), dict):
        return empty_board(slides, title)
    board['slides'] = list(slides)
    board['title'] = title
    board.setdefault('events', [])
    return board


def merge_round(board: dict, graded: Mapping, unreachable: Mapping, errors: Mapping, roster: Mapping, at: str) -> dict:
    """Add one grading round to the board (in place, returned too).

    ``graded``: host -> slide_grade's ``slides`` result; ``unreachable``/``errors``: host -> message;
    ``roster``: host -> {student, seat, room}. A state change is an event; the first ``done`` of a slide is kept
    as ``done_at`` for good (who finished what when), even if the seat later resets it.
    """
    board['rounds'] = board.get('rounds', 0) + 1
    board['updated'] = at
    for host in set(graded) | set(unreachable) | set(errors):
        seat = board['seats'].setdefault(host, {'slides': {}, 'reach': 'ok', 'last_graded': None, 'message': None})
        for key in ('student', 'seat', 'room'):
            if roster.get(host, {}).get(key):
                seat[key] = roster[host][key]
        if host in unreachable:
            if seat.get('reach') != 'unreachable':
                board['events'].append({'at': at, 'host': host, 'slide': None, 'state': 'unreachable'})
            seat.update(reach='unreachable', message=unreachable[host])
            continue
        if host in errors:
            seat.update(reach='error', message=errors[host])
            continue
        seat.update(reach='ok', message=None, last_graded=at)
        for slide, result in graded[host].items():
            state = result.get('state', 'unknown')
            cell = seat['slides'].setdefault(slide, {'state': 'unknown', 'hint': None, 'since': at, 'done_at': None})
            if cell['state'] != state:
                board['events'].append({'at': at, 'host': host, 'slide': slide, 'state': state})
                cell['since'] = at
            cell['state'] = state
            cell['hint'] = result.get('hint') if state != 'done' else None
            if state == 'done' and not cell.get('done_at'):
                cell['done_at'] = at
    del board['events'][:-EVENT_LIMIT]
    return board


def progress(board: Mapping) -> dict:
    """Per slide the number of seats done (and stuck); the share of (seat, slide) pairs done, in percent."""
    seats = board['seats']
    per_slide = {}
    for slide in board['slides']:
        states = [seat['slides'].get(slide, {}).get('state') for seat in seats.values()]
        per_slide[slide] = {'done': states.count('done'), 'stuck': states.count('stuck'),
                            'in_progress': states.count('in_progress')}
    graded_slides = [slide for slide in board['slides']
                     if any(seat['slides'].get(slide, {}).get('state') != 'not_graded' for seat in seats.values())]
    total = len(seats) * len(graded_slides)
    done = sum(per_slide[slide]['done'] for slide in graded_slides)
    return {'seats': len(seats), 'per_slide': per_slide, 'done': done, 'total': total,
            'percent': round(100 * done / total) if total else 0,
            'unreachable': sum(1 for seat in seats.values() if seat.get('reach') == 'unreachable'),
            'stuck': sum(1 for seat in seats.values() if any(cell.get('state') == 'stuck' for cell in seat['slides'].values()))}


def _e(value: object) -> str:
    return html.escape('' if value is None else str(value), quote=True)


def _clock(stamp: str | None) -> str:
    """``2026-11-29T19:42:07Z`` -> ``19:42`` (UTC, as every time on the board)."""
    return stamp[11:16] if stamp and len(stamp) >= 16 else ''


BOARD_STYLE = """
:root { color-scheme: light; font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; }
body { margin: 1rem 1.5rem; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
.meta { color: #555; margin: 0 0 .6rem; font-size: .9rem; }
.progress { display: flex; gap: .6rem; flex-wrap: wrap; align-items: stretch; margin: 0 0 .8rem; }
.chip { border: 1px solid #ccc; border-radius: .4rem; padding: .35rem .7rem; font-size: .95rem; background: #fafafa; }
.chip strong { font-size: 1.25rem; }
.chip.class { min-width: 16rem; }
.bar { height: .55rem; background: #e6e6e6; border-radius: .3rem; margin-top: .25rem; overflow: hidden; }
.bar span { display: block; height: 100%; background: #2e7d32; }
.chip.stuck { background: #fde8e7; border-color: #e0736b; }
.chip.unreachable { background: #ece7f6; border-color: #9a84c8; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 1px solid #d6d6d6; padding: .2rem .4rem; text-align: left; vertical-align: top; font-size: .82rem; }
th { background: #f2f2f2; }
th.seat, td.seat { width: 13rem; }
td.seat .host { font-weight: bold; }
td.seat .who { color: #444; }
td.seat .room { color: #777; font-size: .75rem; }
td.cell .state { font-weight: bold; }
td.cell .when { color: inherit; opacity: .8; font-size: .75rem; margin-left: .3rem; }
td.cell .hint { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden;
  font-size: .74rem; line-height: 1.15; margin-top: .1rem; }
td.done { background: #e6f4ea; color: #1e6b34; }
td.in_progress { background: #fff4d6; color: #6b4e00; }
td.stuck { background: #c62828; color: #fff; }
td.not_started, td.unknown { background: #fafafa; color: #9a9a9a; }
td.not_graded { background: #f4f6f8; color: #8a939c; font-style: italic; }
tr.unreachable td.cell { background: #5e35b1; color: #fff; }
tr.unreachable td.seat { border-left: .4rem solid #5e35b1; }
tr.error td.seat { border-left: .4rem solid #c62828; }
tfoot th { text-align: center; font-weight: normal; }
.legend { margin-top: .6rem; color: #555; font-size: .8rem; }
.legend span { display: inline-block; padding: .05rem .45rem; margin-right: .2rem; border-radius: .2rem; }
.legend .done { background: #e6f4ea; } .legend .in_progress { background: #fff4d6; }
.legend .stuck { background: #c62828; color: #fff; } .legend .not_started { background: #fafafa; border: 1px solid #ddd; }
.legend .unreachable { background: #5e35b1; color: #fff; }
"""


def _seat_order(item):
    host, seat = item
    return (natural_key(seat.get('room') or ''), natural_key(host))


def render_board(board: Mapping, refresh: int = 10) -> str:
    """The page: self-contained (inline style, no script), reloading itself every ``refresh`` seconds."""
    summary = progress(board)
    slides = board['slides']
    title = board.get('title') or 'Class board'
    out = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
           f'<meta http-equiv="refresh" content="{int(refresh)}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f'<title>{_e(title)} - {summary["percent"]}%</title>', f'<style>{BOARD_STYLE}</style>', '</head>', '<body>',
           f'<h1>{_e(title)}</h1>',
           f'<p class="meta" id="updated" data-updated="{_e(board.get("updated"))}">Graded {_e(_clock(board.get("updated")))} UTC'
           f' (round {board.get("rounds", 0)}); this page reloads every {int(refresh)} s.</p>',
           '<div class="progress">',
           f'<div class="chip class" id="class-progress"><strong>{summary["percent"]}%</strong> of the class\'s slides done '
           f'({summary["done"]} / {summary["total"]})<div class="bar"><span style="width: {summary["percent"]}%"></span></div></div>']
    for slide in slides:
        counts = summary['per_slide'][slide]
        out.append(f'<div class="chip slide" data-slide="{_e(slide)}"><strong>{counts["done"]}</strong> / {summary["seats"]} '
                   f'{_e(slide)}</div>')
    out.append(f'<div class="chip stuck"><strong>{summary["stuck"]}</strong> stuck</div>')
    out.append(f'<div class="chip unreachable"><strong>{summary["unreachable"]}</strong> unreachable</div>')
    out.append('</div>')
    out.append('<table>')
    out.append('<thead><tr><th class="seat">Seat</th>' + ''.join(f'<th>{_e(slide)}</th>' for slide in slides) + '</tr></thead>')
    out.append('<tbody>')
    for host, seat in sorted(board['seats'].items(), key=_seat_order):
        reach = seat.get('reach', 'ok')
        who = seat.get('student') or ''
        where = ' · '.join(part for part in (f"seat {seat['seat']}" if seat.get('seat') and seat.get('seat') != host else '',
                                             f"room {seat['room']}" if seat.get('room') else '') if part)
        cells = [f'<td class="seat"><span class="host">{_e(host)}</span>'
                 + (f'<br><span class="who">{_e(who)}</span>' if who else '')
                 + (f'<br><span class="room">{_e(where)}</span>' if where else '')
                 + (f'<br><span class="room" title="{_e(seat.get("message"))}">{_e(WORDS[reach])}</span>' if reach != 'ok' else '')
                 + '</td>']
        for slide in slides:
            cell = seat['slides'].get(slide) or {'state': 'unknown', 'hint': None, 'done_at': None}
            state = cell['state'] if cell['state'] in WORDS else 'unknown'
            word = WORDS['unreachable'] if reach == 'unreachable' else WORDS[state]
            when = ''
            if reach == 'unreachable':
                # What the seat showed when it was last reached.
                when = f'<span class="when">(was {_e(WORDS[state])})</span>' if state != 'unknown' else ''
            elif state == 'done' and cell.get('done_at'):
                when = f'<span class="when">{_e(_clock(cell["done_at"]))}</span>'
            elif state in ('stuck', 'in_progress') and cell.get('since'):
                when = f'<span class="when">since {_e(_clock(cell["since"]))}</span>'
            hint = cell.get('hint') if state in ('stuck', 'in_progress') else None
            tip = f' title="{_e(hint)}"' if hint else ''
            cells.append(f'<td class="cell {state}" data-slide="{_e(slide)}" data-state="{_e(state)}"{tip}>'
                         f'<span class="state">{_e(word)}</span>{when}'
                         + (f'<span class="hint">{_e(hint)}</span>' if hint and state == 'stuck' else '') + '</td>')
        out.append(f'<tr class="{_e(reach)}" data-host="{_e(host)}">' + ''.join(cells) + '</tr>')
    out.append('</tbody>')
    done = ''.join(f'<th>{summary["per_slide"][slide]["done"]} / {summary["seats"]}</th>' for slide in slides)
    out.append(f'<tfoot><tr><th>done</th>{done}</tr></tfoot>')
    out.append('</table>')
    legend = ' '.join(f'<span class="{state}">{_e(WORDS[state])}</span>'
                      for state in ('done', 'in_progress', 'stuck', 'not_started', 'unreachable'))
    out.append(f'<p class="legend">{legend} - times are UTC; a stuck cell shows the hint its student should read '
               f'(hover an in-progress cell for its next step).</p>')
    out.append('</body>')
    out.append('</html>')
    return '\n'.join(out) + '\n'


def write_board(board: Mapping, directory: str, refresh: int) -> tuple[str, str]:
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    html_path = os.path.join(directory, 'board.html')
    json_path = os.path.join(directory, 'board.json')
    write_atomically(json_path, json.dumps(board, indent=1, ensure_ascii=False) + '\n')
    write_atomically(html_path, render_board(board, refresh))
    return html_path, json_path


def _attr(result, name):
    # ansible-core 2.19 made the result public as .result/.host/.task; older versions only have the _ names.
    return getattr(result, name) if hasattr(type(result), name) else getattr(result, f'_{name}')


class CallbackModule(CallbackBase):
    """Collects slide_grade results per seat and redraws the board at the end of the run."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'unboxed.lab.class_board'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self.graded = {}
        self.unreachable = {}
        self.errors = {}
        self.roster = {}
        self.grading = False

    def _is_grade(self, task) -> bool:
        return (task.action or '') in GRADE_ACTIONS and BOARD_TAG in (task.tags or ())

    def v2_playbook_on_task_start(self, task, is_conditional):
        if self._is_grade(task):
            self.grading = True

    def _note_host(self, host):
        variables = host.vars
        self.roster[host.get_name()] = {'student': variables.get('roster_student'),
                                        'seat': variables.get('roster_seat') or variables.get('ansible_host'),
                                        'room': variables.get('roster_room')}

    def v2_runner_on_ok(self, result):
        task, host = _attr(result, 'task'), _attr(result, 'host')
        if not self._is_grade(task):
            return
        slides = _attr(result, 'result').get('slides')
        if isinstance(slides, Mapping):
            self._note_host(host)
            # A later grading in the same run (solve.yml grades again after solving) is the newer state.
            self.graded.setdefault(host.get_name(), {}).update(slides)
            self.errors.pop(host.get_name(), None)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        task, host = _attr(result, 'task'), _attr(result, 'host')
        if self._is_grade(task) and host.get_name() not in self.graded:
            self._note_host(host)
            self.errors[host.get_name()] = str(_attr(result, 'result').get('msg') or 'slide_grade failed')

    def v2_runner_on_unreachable(self, result):
        host = _attr(result, 'host')
        self._note_host(host)
        self.unreachable[host.get_name()] = str(_attr(result, 'result').get('msg') or 'unreachable')

    def v2_playbook_on_stats(self, stats):
        if not self.grading:
            return
        directory = self.get_option('output_dir')
        slides = [str(slide) for slide in self.get_option('slides')]
        board = load_board(os.path.join(os.path.abspath(os.path.expanduser(directory)), 'board.json'), slides,
                           self.get_option('title'))
        unreachable = {host: message for host, message in self.unreachable.items() if host not in self.graded}
        merge_round(board, self.graded, unreachable, self.errors, self.roster, _now())
        try:
            html_path, _json_path = write_board(board, directory, self.get_option('refresh'))
        except OSError as error:
            self._display.warning(f'class_board: could not write the board to {directory}: {error}')
            return
        self._display.display(f'Class board: {html_path} ({progress(board)["percent"]}% of the class\'s slides done)')
