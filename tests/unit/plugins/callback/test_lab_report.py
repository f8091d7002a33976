"""Tests of the unboxed.lab.lab_report callback: stage rules, failure messages, aggregation and rendering."""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys

import pytest
import yaml

from ansible.errors import AnsibleError

from ansible_collections.unboxed.lab.plugins.callback.lab_report import (
    DEFAULT_STAGES,
    LabReport,
    StageRules,
    failure_message,
    parse_stage_map,
    render_html,
    render_text,
    write_report,
)

# Task results as ansible-core 2.19 hands them to callbacks (captured from real runs, timestamps trimmed).
COMMAND_FAILURE = {
    'changed': True, 'cmd': ['/bin/sh', '-c', 'echo "mount: ..." >&2; exit 32'], 'failed': True, 'msg': 'non-zero return code',
    'rc': 32, 'stderr': 'mount: /overlay/merged: special device overlay does not exist.',
    'stderr_lines': ['mount: /overlay/merged: special device overlay does not exist.'], 'stdout': '', 'stdout_lines': [],
}
LOOP_FAILURE = {
    'changed': True, 'failed': True, 'msg': 'One or more items failed', 'skipped': False,
    'results': [
        {'ansible_loop_var': 'item', 'changed': True, 'failed': False, 'item': 'lower1-base', 'msg': '', 'rc': 0, 'stderr': ''},
        {'ansible_loop_var': 'item', 'changed': True, 'failed': True, 'item': 'lower2-file', 'msg': 'non-zero return code', 'rc': 1,
         'stderr': 'cp: cannot stat /srv/file: No such file or directory'},
    ],
}
FAIL_MODULE = {'changed': False, 'failed': True, 'msg': '/overlay/merged is not mounted'}
INTERPRETER_MISSING = {'changed': False, 'module_stderr': '/bin/sh: 1: /usr/bin/python3.nonexistent: not found\n', 'module_stdout': '',
                       'msg': "The module interpreter '/usr/bin/python3.nonexistent' was not found.", 'rc': 127}
MODULE_CRASH = {'failed': True, 'msg': 'MODULE FAILURE\nSee stdout/stderr for the exact error', 'rc': 1, 'module_stdout': '',
                'module_stderr': 'Traceback (most recent call last):\n  File "x.py", line 1\nModuleNotFoundError: No module named \'apt\'\n'}
UNREACHABLE = {'changed': False, 'unreachable': True,
               'msg': 'Task failed: Data could not be sent to remote host "127.0.0.2". Make sure this host can be reached over ssh: '
                      'ssh: connect to host 127.0.0.2 port 1: Connection refused\r\n'}
CENSORED = {'censored': "the output has been hidden due to the fact that 'no_log: true' was specified for this result", 'changed': True}

RULES = StageRules()


# --- stages -------------------------------------------------------------------------------------------

def test_stage_comes_from_the_first_tag_that_names_one():
    assert RULES.stage_of(['always', 'lab', 'Overlay', 'chroot']) == 'overlay'


def test_stage_falls_back_to_the_role_with_or_without_its_collection():
    assert RULES.stage_of(['lab'], 'unboxed.lab.namespaces') == 'namespaces'
    assert RULES.stage_of([], 'verify') == 'verify'


def test_the_confinement_slides_come_after_namespaces_in_slide_order():
    assert DEFAULT_STAGES[DEFAULT_STAGES.index('namespaces'):] == \
        ('namespaces', 'cgroups', 'capabilities', 'seccomp', 'network', 'userns', 'verify')
    # Each slide's role and tag name its column; the closing comparison (tagged with the three slides, from role
    # cgroups) counts in the first of them.
    for slide in ('cgroups', 'capabilities', 'seccomp'):
        assert RULES.stage_of([], f'unboxed.lab.{slide}') == slide
        assert RULES.stage_of([slide], 'unboxed.lab.cgroups') == slide
    assert RULES.stage_of(['cgroups', 'capabilities', 'seccomp'], 'unboxed.lab.cgroups') == 'cgroups'


def test_tags_win_over_the_role():
    assert RULES.stage_of(['verify'], 'unboxed.lab.overlay') == 'verify'


def test_task_matching_no_stage_goes_to_other():
    assert RULES.stage_of(['always'], 'common') == 'other'
    assert StageRules(other='setup').stage_of() == 'setup'


def test_every_slide_role_of_the_collection_is_its_own_stage():
    """One name per slide: each role site.yml runs is a stage by its name and by its tag, with no stage_map (which is
    empty by default), in the order of the stages; base_rootfs, part of the layers slide, tags every task of its entry
    point `layers` instead. (Roles that are no slide, such as pull, are not in site.yml.)"""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    with open(os.path.join(repo, 'playbooks', 'site.yml'), encoding='utf-8') as handle:
        (play,) = yaml.safe_load(handle)
    slides = [entry['role'].rsplit('.', 1)[1] for entry in play['roles']]
    assert slides == [stage for stage in DEFAULT_STAGES if stage != 'verify']
    assert [entry['tags'] for entry in play['roles']] == [[slide] for slide in slides]
    assert {role: RULES.stage_of([], f'unboxed.lab.{role}') for role in slides} == {role: role for role in slides}
    with open(os.path.join(repo, 'roles', 'base_rootfs', 'tasks', 'main.yml'), encoding='utf-8') as handle:
        tasks = yaml.safe_load(handle)
    assert tasks and all('layers' in task.get('tags', []) for task in tasks)


def test_stage_map_names_tags_and_roles_for_stages():
    rules = StageRules(stage_map=parse_stage_map(['base_image=layers', 'unboxed.lab.rootfs=LAYERS', ' Mount = overlay'], RULES.stages))
    assert rules.stage_of(['base_image']) == 'layers'
    assert rules.stage_of([], 'unboxed.lab.rootfs') == 'layers'
    assert rules.stage_of(['mount']) == 'overlay'


@pytest.mark.parametrize('item, words', [
    ('mount', 'not of the form name=stage'),
    ('=overlay', 'not of the form name=stage'),
    ('mount=networking', 'names stage "networking", which is not one of the stages: layers, build, overlay'),
])
def test_stage_map_rejects_malformed_items(item, words):
    with pytest.raises(AnsibleError, match=words):
        parse_stage_map([item], RULES.stages)


# --- failure messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize('result, message', [
    (COMMAND_FAILURE, 'mount: /overlay/merged: special device overlay does not exist. (exit code 32)'),
    (LOOP_FAILURE, 'item lower2-file: cp: cannot stat /srv/file: No such file or directory (exit code 1)'),
    (FAIL_MODULE, '/overlay/merged is not mounted'),
    (INTERPRETER_MISSING, "The module interpreter '/usr/bin/python3.nonexistent' was not found."),
    (MODULE_CRASH, "ModuleNotFoundError: No module named 'apt' (exit code 1)"),
    (UNREACHABLE, 'Data could not be sent to remote host "127.0.0.2". Make sure this host can be reached over ssh: '
                  'ssh: connect to host 127.0.0.2 port 1: Connection refused'),
    (CENSORED, 'details hidden (no_log)'),
    ({'failed': True}, 'failed without a message'),
])
def test_failure_message_says_why_in_one_line(result, message):
    assert failure_message(result) == message


def test_failure_message_is_shortened_to_fit_a_cell():
    message = failure_message({'failed': True, 'msg': 'x' * 1000})
    assert len(message) == 400 and message.endswith('…')


# --- aggregation --------------------------------------------------------------------------------------

def classroom_report() -> LabReport:
    """Three seats: alice done, bob failing at overlay after a retry of layers, carol unreachable at once."""
    report = LabReport(RULES, title='Lab report')
    report.playbook = 'site.yml'
    alice = {'roster_student': 'Alice Martin', 'roster_seat': '127.0.1.1', 'roster_room': 'B204'}
    bob = {'roster_student': 'Bob <Okafor>', 'ansible_host': '127.0.1.2', 'roster_room': 'B204'}
    for stage in RULES.stages:
        report.record('alice-martin', 'changed', stage, f'Build {stage}', roster=alice)
        report.record('alice-martin', 'ok', stage, f'Check {stage}', roster=alice)
    report.record('bob-okafor', 'ok', 'layers', 'Build layers', roster=bob)
    report.record('bob-okafor', 'skipped', 'layers', 'Fetch the base layer', roster=bob)
    report.record('bob-okafor', 'failed', 'overlay', 'Mount the overlay', failure_message(COMMAND_FAILURE), roster=bob)
    report.record('bob-okafor', 'failed', 'overlay', 'Show the mounts', 'second failure', roster=bob)
    report.record('carol-diaz', 'unreachable', 'other', 'Gathering Facts', failure_message(UNREACHABLE))
    return report


def test_cells_take_the_worst_outcome_and_the_first_failure():
    document = classroom_report().document()
    bob = next(host for host in document['hosts'] if host['host'] == 'bob-okafor')
    assert bob['stages']['layers'] == {'status': 'ok', 'ok': 1, 'changed': 0, 'failed': 0, 'unreachable': 0, 'skipped': 1, 'failure': None}
    assert bob['stages']['overlay']['status'] == 'failed'
    assert bob['stages']['overlay']['failed'] == 2
    assert bob['stages']['overlay']['failure']['task'] == 'Mount the overlay'
    assert [bob['stages'][stage]['status'] for stage in ('chroot', 'namespaces', 'verify')] == ['not_run'] * 3
    assert bob['reason'] == {'stage': 'overlay', 'task': 'Mount the overlay', 'status': 'failed',
                             'message': 'mount: /overlay/merged: special device overlay does not exist. (exit code 32)'}
    assert (bob['status'], bob['behind'], bob['student'], bob['seat'], bob['room']) == ('failed', True, 'Bob <Okafor>', '127.0.1.2', 'B204')


def test_seats_behind_come_first_and_the_summary_counts_them():
    document = classroom_report().document()
    assert [host['host'] for host in document['hosts']] == ['carol-diaz', 'bob-okafor', 'alice-martin']
    assert [host['status'] for host in document['hosts']] == ['unreachable', 'failed', 'changed']
    assert document['summary'] == {'hosts': 3, 'behind': 2, 'failed': 1, 'unreachable': 1, 'on_track': 1,
                                   'stage_done': {'layers': 2, 'build': 1, 'overlay': 1, 'chroot': 1, 'namespaces': 1, 'cgroups': 1,
                                                  'capabilities': 1, 'seccomp': 1, 'network': 1, 'userns': 1, 'verify': 1,
                                                  'other': 0}}


def test_seats_come_in_natural_order_as_ansible_inventory_lists_them():
    report = LabReport(RULES)
    for host in ('lab10', 'lab2', 'Lab1', 'lab1b', 'lab20', 'lab3'):
        report.record(host, 'ok', 'layers', 'Build layers', roster={'roster_room': 'B10' if host == 'lab3' else 'B9'})
    assert [host['host'] for host in report.document()['hosts']] == ['Lab1', 'lab1b', 'lab2', 'lab10', 'lab20', 'lab3']


def test_a_seats_release_comes_from_its_distribution_facts():
    report = LabReport(RULES)
    report.note_facts('lab1', {'ansible_distribution': 'Debian', 'ansible_distribution_version': '13.1',
                               'ansible_distribution_release': 'trixie'})
    report.note_facts('lab2', {'distribution': 'Debian', 'distribution_version': '12.12', 'distribution_release': 'bookworm'})
    report.note_facts('lab3', {'ansible_env': {}})  # facts without a distribution say nothing
    for host in ('lab1', 'lab2', 'lab3'):
        report.record(host, 'ok', 'verify', 'Fail when an observation is wrong')
    document = report.document()
    assert {host['host']: host['release'] for host in document['hosts']} == {
        'lab1': 'Debian 13.1 (trixie)', 'lab2': 'Debian 12.12 (bookworm)', 'lab3': None}
    table = [line for line, _status in render_text(document)]
    assert table[1].split()[:3] == ['HOST', 'STUDENT', 'RELEASE']
    assert 'Debian 13.1 (trixie)' in table[2] and 'Debian 12.12 (bookworm)' in table[3]
    assert 'Debian 13.1 (trixie)' in render_html(document)


def test_no_release_column_when_no_seat_gathered_facts():
    document = classroom_report().document()
    assert 'RELEASE' not in render_text(document)[1][0]


def test_other_column_appears_only_when_tasks_fell_outside_the_stages():
    report = LabReport(RULES)
    report.record('alice', 'ok', 'layers', 'Build layers')
    assert report.document()['stages'] == list(RULES.stages)
    assert classroom_report().document()['stages'] == list(RULES.stages) + ['other']


def test_unknown_status_is_a_programming_error():
    with pytest.raises(ValueError):
        LabReport(RULES).record('alice', 'done', 'layers', 'Build layers')


# --- views --------------------------------------------------------------------------------------------

def test_text_table_lines_up_and_carries_the_reason():
    lines = render_text(classroom_report().document())
    assert lines[0] == ('LAB REPORT site.yml - 3 seats: 1 on track, 2 behind (1 failed, 1 unreachable)', 'title')
    header, carol, bob, alice = (text for text, _status in lines[1:])
    assert header.split() == ['HOST', 'STUDENT', 'LAYERS', 'BUILD', 'OVERLAY', 'CHROOT', 'NAMESPACES', 'CGROUPS', 'CAPABILITIES', 'SECCOMP',
                              'NETWORK', 'USERNS', 'VERIFY', 'OTHER', 'WHY']
    assert [status for _text, status in lines[2:]] == ['unreachable', 'failed', 'changed']
    # Every column starts where its header starts.
    for column in ('OVERLAY', 'VERIFY', 'WHY'):
        start = header.index(column)
        assert bob[start - 2:start] == '  ' and bob[start] != ' '
    assert bob.split()[:10] == ['bob-okafor', 'Bob', '<Okafor>', 'ok', '-', 'FAILED', '-', '-', '-', '-']
    assert bob.endswith('overlay: Mount the overlay: mount: /overlay/merged: special device overlay does not exist. (exit code 32)')
    assert 'UNREACHABLE' in carol and carol.endswith('port 1: Connection refused')
    assert alice.split()[3:12] == ['changed'] * 9


def test_text_table_says_when_it_was_a_check_run():
    report = classroom_report()
    report.check_mode = True
    assert 'check mode' in render_text(report.document())[0][0]


class PageParser(html.parser.HTMLParser):
    """Collects what a reader of the page gets: rows with their cells' text and classes, and every URL."""

    def __init__(self):
        super().__init__()
        self.rows, self.urls, self.scripts, self.text = {}, [], 0, []
        self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls.extend(value for name, value in attrs.items() if name in ('src', 'href', 'srcset') and value)
        self.scripts += tag == 'script'
        if tag == 'tr' and 'data-host' in attrs:
            self._row = self.rows.setdefault(attrs['data-host'], {'class': attrs.get('class'), 'cells': []})
        elif tag == 'td' and self._row is not None:
            self._cell = {'class': attrs.get('class', ''), 'stage': attrs.get('data-stage'), 'title': attrs.get('title'), 'text': ''}
            self._row['cells'].append(self._cell)

    def handle_endtag(self, tag):
        if tag == 'tr':
            self._row = None
        if tag == 'td':
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell['text'] += data


def parse_page(document) -> PageParser:
    parser = PageParser()
    parser.feed(render_html(document))
    return parser


def test_html_page_shows_each_seat_with_its_stages_and_reason():
    page = parse_page(classroom_report().document())
    assert list(page.rows) == ['carol-diaz', 'bob-okafor', 'alice-martin']
    bob = page.rows['bob-okafor']
    assert bob['class'] == 'failed behind'
    overlay = next(cell for cell in bob['cells'] if cell['stage'] == 'overlay')
    assert overlay['class'] == 'cell failed'
    assert overlay['text'] == 'FAILED2 failed'
    assert overlay['title'].startswith('Mount the overlay: mount: /overlay/merged')
    why = bob['cells'][-1]
    assert why['class'] == 'why'
    assert 'special device overlay does not exist' in why['text']
    assert [cell['class'] for cell in page.rows['alice-martin']['cells'][1:6]] == ['cell changed'] * 5
    assert page.rows['alice-martin']['cells'][-1]['text'] == 'on track'
    text = ''.join(page.text)
    assert 'Behind (2)' in text and 'Done2 / 3' in text.replace('\n', '')


def test_html_page_is_self_contained_and_escapes_roster_text():
    page = parse_page(classroom_report().document())
    assert page.urls == [] and page.scripts == 0
    source = render_html(classroom_report().document())
    assert 'Bob &lt;Okafor&gt;' in source and 'Bob <Okafor>' not in source
    assert 'http' not in source and '@import' not in source and 'url(' not in source


def test_html_page_for_a_class_on_track():
    report = LabReport(RULES)
    report.record('alice', 'ok', 'layers', 'Build layers')
    page = parse_page(report.document())
    assert 'Every seat is on track' in ''.join(page.text)


def test_report_files_hold_the_document_and_its_page(tmp_path):
    document = classroom_report().document()
    html_path, json_path = write_report(document, str(tmp_path / 'reports'), 'site')
    assert (html_path, json_path) == (str(tmp_path / 'reports' / 'site.html'), str(tmp_path / 'reports' / 'site.json'))
    with open(json_path, encoding='utf-8') as handle:
        assert json.load(handle) == document
    with open(html_path, encoding='utf-8') as handle:
        assert handle.read() == render_html(document)
    assert sorted(os.listdir(tmp_path / 'reports')) == ['site.html', 'site.json']
    assert oct(os.stat(html_path).st_mode & 0o777) == '0o644'


# --- the callback's event handlers --------------------------------------------------------------------

class FakeRole:
    def __init__(self, name):
        self.name = name

    def get_name(self):
        return self.name


class FakeTask:
    def __init__(self, name, tags=(), role=None, action='ansible.builtin.command', args=None):
        self.name, self.tags, self.action, self.args = name, list(tags), action, args or {}
        self._role = FakeRole(role) if role else None

    def get_name(self):
        return self.name


class FakeHost:
    def __init__(self, name, variables=None):
        self.name, self.vars = name, variables or {}

    def get_name(self):
        return self.name


class FakeResult:
    """The attributes of ansible-core's CallbackTaskResult the callback reads."""

    def __init__(self, host, task, result):
        self._host, self._task, self._result = host, task, result


@pytest.fixture
def callback():
    from ansible_collections.unboxed.lab.plugins.callback.lab_report import CallbackModule
    module = CallbackModule()
    module.report = LabReport(StageRules(stage_map=parse_stage_map(['lab_namespaces=namespaces'], RULES.stages)))
    return module


def test_callback_files_each_event_under_its_host_and_stage(callback):
    alice = FakeHost('alice-martin', {'roster_student': 'Alice Martin', 'roster_room': 'B204'})
    callback.v2_runner_on_ok(FakeResult(alice, FakeTask('Unpack the base layer', ['layers']), {'changed': True}))
    callback.v2_runner_on_ok(FakeResult(alice, FakeTask('Enter', role='unboxed.lab.lab_namespaces'), {'changed': False}))
    callback.v2_runner_on_skipped(FakeResult(alice, FakeTask('Mount', ['overlay']), {'skipped': True}))
    callback.v2_runner_on_failed(FakeResult(alice, FakeTask('Probe cgroup v2', ['chroot']), FAIL_MODULE), ignore_errors=True)
    callback.v2_runner_on_failed(FakeResult(alice, FakeTask('Check', ['verify']), FAIL_MODULE))
    host = callback.report.document()['hosts'][0]
    assert (host['host'], host['student'], host['room']) == ('alice-martin', 'Alice Martin', 'B204')
    assert {stage: cell['status'] for stage, cell in host['stages'].items()} == \
        {'layers': 'changed', 'build': 'not_run', 'overlay': 'skipped', 'chroot': 'ok', 'namespaces': 'ok',
         'cgroups': 'not_run', 'capabilities': 'not_run', 'seccomp': 'not_run', 'network': 'not_run', 'userns': 'not_run',
         'verify': 'failed'}
    assert host['reason'] == {'stage': 'verify', 'task': 'Check', 'status': 'failed', 'message': '/overlay/merged is not mounted'}


def test_callback_counts_includes_only_when_they_fail(callback):
    bob = FakeHost('bob-okafor')
    callback.v2_runner_on_ok(FakeResult(bob, FakeTask('Include', action='ansible.builtin.include_role', args={'name': 'lab_namespaces'}), {}))
    callback.v2_runner_on_ok(FakeResult(bob, FakeTask('More', action='include_tasks'), {}))
    assert callback.report.document()['hosts'] == []
    callback.v2_runner_on_failed(FakeResult(bob, FakeTask('Start the container', action='include_role', args={'name': 'lab_namespaces'}),
                                            {'failed': True, 'msg': "the role 'lab_namespaces' was not found"}))
    host = callback.report.document()['hosts'][0]
    assert host['stages']['namespaces']['status'] == 'failed'
    assert host['reason']['message'] == "the role 'lab_namespaces' was not found"


def test_callback_records_unreachable_hosts(callback):
    carol = FakeHost('carol-diaz', {'ansible_host': '127.0.0.2'})
    callback.v2_runner_on_unreachable(FakeResult(carol, FakeTask('Unpack the base layer', ['layers']), UNREACHABLE))
    host = callback.report.document()['hosts'][0]
    assert (host['status'], host['seat'], host['stages']['layers']['unreachable']) == ('unreachable', '127.0.0.2', 1)


def test_ansible_doc_renders_the_documentation(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, 'ansible.cfg'), ANSIBLE_HOME=str(tmp_path))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-doc'), '-t', 'callback', '--json', 'unboxed.lab.lab_report'],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)['unboxed.lab.lab_report']['doc']
    assert doc['type'] == 'aggregate'
    assert sorted(doc['options']) == ['other_stage', 'output_dir', 'print_table', 'stage_map', 'stages', 'title']
    assert doc['options']['stages']['default'] == list(DEFAULT_STAGES) == \
        ['layers', 'build', 'overlay', 'chroot', 'namespaces', 'cgroups', 'capabilities', 'seccomp', 'network', 'userns', 'verify']
