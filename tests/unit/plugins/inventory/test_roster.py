"""Tests of the unboxed.lab.roster inventory plugin: roster parsing in-process, the plugin through ansible-inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.unboxed.lab.plugins.inventory.roster import (
    RosterError,
    assign_host_names,
    csv_rows,
    default_class_name,
    group_name_for,
    host_name_for,
    read_roster,
    roster_format,
    student_from_fields,
    yaml_rows,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
EXAMPLE_CSV = os.path.join(REPO, 'inventories', 'classroom', 'roster.csv')
EXAMPLE_YAML = os.path.join(REPO, 'inventories', 'classroom', 'evening.roster.yml')
BIN = os.path.dirname(sys.executable)
# ini is left out on purpose: it would accept a broken CSV roster as a list of host names.
ENABLED_PLUGINS = 'unboxed.lab.roster,host_list,script,auto,yaml,toml'


def students_of(text: str):
    return [student_from_fields(fields, row) for fields, row in csv_rows(text)]


def error_of(text: str) -> RosterError:
    with pytest.raises(RosterError) as caught:
        assign_host_names(students_of(text), 'student')
    return caught.value


# --- file names and names derived from the roster --------------------------------------------------------

@pytest.mark.parametrize('path, expected', [
    ('inventories/classroom/roster.csv', 'csv'),
    ('cont101.roster.csv', 'csv'),
    ('/srv/class/evening.roster.yml', 'yaml'),
    ('roster.yaml', 'yaml'),
    ('B204.roster.CSV', 'csv'),
    ('hosts.yml', None),
    ('myroster.csv', None),
    ('roster.txt', None),
    ('roster.csv.bak', None),
])
def test_roster_format_follows_the_file_name_convention(path, expected):
    assert roster_format(path) == expected


def test_default_class_name_comes_from_the_file_name_or_its_directory():
    assert default_class_name('/srv/rosters/cont101.roster.csv') == 'cont101'
    assert default_class_name('/srv/classroom/roster.yml') == 'classroom'


@pytest.mark.parametrize('student, host', [
    ('Alice Martin', 'alice-martin'),
    ('Zoë  Martin-Durand', 'zoe-martin-durand'),
    ("Seán O'Brien", 'sean-o-brien'),
    ('李雷', '李雷'),
    ('under_score', 'under-score'),
])
def test_host_name_for_a_student_is_lower_case_and_limit_friendly(student, host):
    assert host_name_for(student) == host


def test_group_name_for_a_room_is_a_valid_group_name():
    assert group_name_for('room_', 'B 204') == 'room_b_204'
    assert group_name_for('shift_', 'Après-midi') == 'shift_apres_midi'
    assert group_name_for('', '2nd year') == 'group_2nd_year'
    assert group_name_for('', '101', 'class_') == 'class_101'


# --- CSV rosters ---------------------------------------------------------------------------------------

def test_example_csv_roster_reads_every_student_with_their_line():
    students = read_roster(EXAMPLE_CSV, 'csv')
    assert len(students) == 10
    chloe = next(student for student in students if student.name == 'Chloé Bernard')
    assert (chloe.seat, chloe.user, chloe.port, chloe.room, chloe.shift, chloe.groups) == \
        ('127.0.1.3', 'student', None, 'B204', 'morning', ('pairs',))
    with open(EXAMPLE_CSV, encoding='utf-8') as handle:
        assert handle.read().splitlines()[chloe.where.line - 1].startswith('Chloé Bernard,')
    emma = next(student for student in students if student.name == 'Emma Rossi')
    assert emma.port == 2222


def test_semicolon_roster_with_bom_crlf_comments_aliases_and_extra_columns(tmp_path):
    roster = tmp_path / 'cont101.roster.csv'
    roster.write_bytes(
        '\ufeff# exported from the school spreadsheet\r\n'
        'Name;Address;SSH User;Room;Editor\r\n'
        '\r\n'
        'Zoë Durand;[2001:db8::7]:2200;zoe;B 206;nano\r\n'
        '# Bob is absent today\r\n'
        'Bob Okafor;pc-b206-02.lab.example;;B 206;\r\n'.encode('utf-8'))
    zoe, bob = read_roster(str(roster), 'csv')
    assert (zoe.name, zoe.seat, zoe.port, zoe.user, zoe.room, zoe.variables) == \
        ('Zoë Durand', '2001:db8::7', 2200, 'zoe', 'B 206', {'editor': 'nano'})
    assert zoe.where.line == 4
    assert (bob.seat, bob.port, bob.user, bob.variables, bob.where.line) == ('pc-b206-02.lab.example', None, None, {}, 6)


def test_fewer_fields_than_columns_leave_the_optional_columns_empty():
    (student,) = students_of('student,seat,user,port,room\nAlice,127.0.0.1\n')
    assert (student.user, student.port, student.room) == (None, None, None)


def test_groups_column_splits_on_spaces_and_semicolons():
    (student,) = students_of('student,seat,groups\nAlice,127.0.0.1,"pairs; needs help  Front-Row"\n')
    assert student.groups == ('pairs', 'needs', 'help', 'front_row')


@pytest.mark.parametrize('text, line, column, words', [
    ('student,seat,port\nAlice,127.0.0.1,22\nBob,127.0.0.2,abc\n', 3, 3, ['"abc" is not a port number']),
    ('student,seat,port\nAlice,127.0.0.1,70000\n', 2, 3, ['port 70000 is out of range']),
    ('student,seat,port\nAlice,127.0.0.1,²\n', 2, 3, ['"²" is not a port number']),
    ('student,seat\n\nAlice,127.0.0.1,extra\n', 3, 3, ['3 fields', 'header names 2 columns']),
    ('student,seat,room\n,127.0.0.1,B204\n', 2, 1, ['student name is empty']),
    ('student,seat\nAlice,pc 12\n', 2, 2, ['"pc 12" is not a host name or IP address']),
    ('student,seat\nAlice,\n', 2, 2, ['seat is empty']),
    ('student,seat,port\nAlice,127.0.0.1:2222,2200\n', 2, 3, ['seat says port 2222', 'port column says 2200']),
    ('student,seat,user\nAlice,127.0.0.1,alice smith\n', 2, 3, ['"alice smith" is not a user name']),
    ('student,seat,name\nAlice,127.0.0.1,Alice\n', 1, 3, ['"name" repeats column 1']),
    ('student,,seat\n', 1, 2, ['no name']),
    ('student,seat,e-mail address!\n', 1, 3, ['cannot be a variable name']),
])
def test_csv_errors_name_the_line_and_column(text, line, column, words):
    error = error_of(text)
    assert (error.where.line, error.where.column) == (line, column)
    assert f'line {line}, column {column}' in str(error)
    for word in words:
        assert word in error.message


def test_csv_header_without_required_columns_says_which_are_missing():
    error = error_of('# comment\nname,ip\nAlice,127.0.0.1\n')
    assert error.where.line == 2
    assert 'lacks the column(s) seat' in error.message and 'found: name, ip' in error.message


def test_csv_unterminated_quote_is_reported_at_its_line():
    error = error_of('student,seat\nAlice,127.0.0.1\n"Bob,127.0.0.2\n')
    assert error.where.line == 3
    assert 'not valid CSV' in error.message


def test_empty_roster_is_an_error():
    assert 'roster is empty' in error_of('# nobody yet\n\n').message


def test_non_utf8_roster_names_the_line(tmp_path):
    roster = tmp_path / 'roster.csv'
    roster.write_bytes('student,seat\nAlice,127.0.0.1\nZo\xeb,127.0.0.2\n'.encode('latin-1'))
    with pytest.raises(RosterError) as caught:
        read_roster(str(roster), 'csv')
    assert caught.value.where.line == 3
    assert 'CSV UTF-8' in caught.value.message


def test_two_students_with_the_same_host_name_are_reported_with_both_lines():
    error = error_of('student,seat\nZoë Martin,127.0.0.1\nBob,127.0.0.2\nZoe  Martin,127.0.0.3\n')
    assert error.where.line == 4
    assert '"zoe-martin", already taken by "Zoë Martin" (line 2)' in error.message


@pytest.mark.parametrize('first, second', [
    ('127.0.0.1', '127.0.0.1:22'),
    ('PC-12.lab.example', 'pc-12.lab.example'),
    ('[2001:db8::1]:2222', '[2001:0db8:0::1]:2222'),
])
def test_two_students_on_the_same_seat_are_reported_with_both_lines(first, second):
    error = error_of(f'student,seat\nAlice,"{first}"\nBob,"{second}"\n')
    assert error.where.line == 3
    assert '"Bob" and to "Alice" (line 2)' in error.message


def test_same_address_on_other_ports_are_different_seats():
    students = students_of('student,seat,port\nAlice,127.0.0.1,2201\nBob,127.0.0.1,2202\n')
    assert sorted(assign_host_names(students, 'student')) == ['alice', 'bob']


def test_hostname_from_seat_uses_the_seat_and_rejects_a_shared_host_name():
    students = students_of('student,seat,port\nAlice,pc-01,2201\nBob,pc-02\nCarol,pc-01,2202\n')
    with pytest.raises(RosterError) as caught:
        assign_host_names(students, 'seat')
    assert 'host name "pc-01", already taken by "Alice" (line 2)' in caught.value.message
    assert sorted(assign_host_names(students[:2], 'seat')) == ['pc-01', 'pc-02']


# --- YAML rosters (as Ansible's loader hands them over) ----------------------------------------------

def yaml_students(entries):
    return [student_from_fields(fields, row) for fields, row in yaml_rows(entries)]


def test_yaml_students_take_typed_ports_group_lists_and_vars():
    (student,) = yaml_students([{'student': 'Alice', 'seat': '127.0.0.1', 'port': 2222, 'groups': ['pairs', 'Front Row'],
                                 'class': 'cont101', 'vars': {'unboxed_editor': 'nano'}}])
    assert (student.port, student.groups, student.class_name, student.variables) == \
        (2222, ('pairs', 'front_row'), 'cont101', {'unboxed_editor': 'nano'})
    assert str(student.where) == 'students[0]'


@pytest.mark.parametrize('entries, field, words', [
    ([{'student': 'Alice', 'seat': '127.0.0.1'}, {'stduent': 'Bob', 'seat': '127.0.0.2'}], 'students[1].stduent', ['unknown key "stduent"']),
    ([{'student': 'Alice'}], 'students[0]', ['no seat']),
    ([{'student': 'Alice', 'seat': '127.0.0.1', 'port': True}], 'students[0].port', ['True is not a port number']),
    ([{'student': 'Alice', 'seat': ['127.0.0.1']}], 'students[0].seat', ['expected a single value']),
    ([{'student': 'Alice', 'seat': '127.0.0.1', 'vars': ['x']}], 'students[0].vars', ['vars must be a mapping']),
    ([{'student': 'Alice', 'seat': '127.0.0.1', 'vars': {'bad-name': 1}}], 'students[0].vars', ['"bad-name" is not a valid variable name']),
    (['Alice'], 'students[0]', ['expected a mapping']),
    ({'Alice': '127.0.0.1'}, 'students', ['must be a list']),
])
def test_yaml_errors_name_the_student_and_key(entries, field, words):
    with pytest.raises(RosterError) as caught:
        yaml_students(entries)
    assert caught.value.where.field == field
    for word in words:
        assert word in caught.value.message


# --- the plugin, through ansible-inventory -----------------------------------------------------------

def ansible_inventory(tmp_path, *args, env=None):
    environment = dict(os.environ)
    environment.update({
        'ANSIBLE_CONFIG': os.path.join(REPO, 'ansible.cfg'),
        'ANSIBLE_HOME': str(tmp_path / 'ansible-home'),
        'ANSIBLE_LOCAL_TEMP': str(tmp_path / 'ansible-tmp'),
        'ANSIBLE_INVENTORY_ENABLED': ENABLED_PLUGINS,
        'ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED': 'true',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
    })
    environment.update(env or {})
    return subprocess.run([os.path.join(BIN, 'ansible-inventory'), *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False)


def plain(value):
    """--list marks roster text as unsafe (never templated): compare the values themselves."""
    if isinstance(value, dict):
        if set(value) == {'__ansible_unsafe'}:
            return value['__ansible_unsafe']
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def inventory_list(tmp_path, source, env=None):
    proc = ansible_inventory(tmp_path, '-i', source, '--list', env=env)
    assert proc.returncode == 0, proc.stderr
    return plain(json.loads(proc.stdout))


def test_example_csv_roster_groups_by_class_room_and_shift(tmp_path):
    inventory = inventory_list(tmp_path, EXAMPLE_CSV)
    assert inventory['classroom']['hosts'] == ['alice-martin', 'bob-okafor', 'chloe-bernard', 'david-nguyen', 'emma-rossi',
                                               'farid-haddad', 'grace-kim', 'hugo-lefevre', 'ines-moreau', 'jonas-weber']
    assert inventory['room_b206']['hosts'] == ['grace-kim', 'hugo-lefevre', 'ines-moreau', 'jonas-weber']
    assert inventory['shift_afternoon']['hosts'] == ['emma-rossi', 'farid-haddad', 'ines-moreau', 'jonas-weber']
    assert inventory['pairs']['hosts'] == ['chloe-bernard', 'david-nguyen']
    emma = inventory['_meta']['hostvars']['emma-rossi']
    from_roster = {
        'ansible_host': '127.0.1.5', 'ansible_user': 'student', 'ansible_port': 2222,
        'roster_student': 'Emma Rossi', 'roster_seat': '127.0.1.5', 'roster_class': 'classroom',
        'roster_room': 'B204', 'roster_shift': 'afternoon', 'roster_source': f'{EXAMPLE_CSV}:12',
    }
    # The rest comes from inventories/classroom/group_vars, which ansible-inventory loads beside the roster.
    assert {key: emma.get(key) for key in from_roster} == from_roster
    assert not {key for key in emma if key.startswith('roster_')} - set(from_roster)


def test_example_rosters_graph_together_as_one_classroom_directory(tmp_path):
    proc = ansible_inventory(tmp_path, '-i', EXAMPLE_CSV, '-i', EXAMPLE_YAML, '--graph')
    assert proc.returncode == 0, proc.stderr
    graph = proc.stdout
    for line in ('@classroom:', '@evening:', '@room_b204:', '@room_b206:', '@shift_morning:', '|--lea-fontaine', '|--alice-martin'):
        assert line in graph
    assert 'WARNING' not in proc.stderr


def test_example_yaml_roster_sets_port_from_seat_and_student_vars(tmp_path):
    inventory = inventory_list(tmp_path, EXAMPLE_YAML)
    assert inventory['evening']['hosts'] == ['karim-benali', 'lea-fontaine', 'marco-bianchi']
    marco = inventory['_meta']['hostvars']['marco-bianchi']
    assert (marco['ansible_host'], marco['ansible_port'], marco['unboxed_editor'], marco['roster_class']) == \
        ('127.0.2.3', 2222, 'nano', 'evening')


def test_yaml_roster_options_and_constructed_groups(tmp_path):
    roster = tmp_path / 'B204.roster.yml'
    roster.write_text(
        'plugin: unboxed.lab.roster\n'
        'hostname_from: seat\n'
        'room_group_prefix: salle_\n'
        'keyed_groups:\n'
        '  - key: roster_shift\n'
        '    prefix: tp\n'
        'students:\n'
        '  - {student: Alice, seat: pc-01, port: 2201, room: B204, shift: morning}\n'
        '  - {name: Bob, host: pc-02, room: B204, shift: evening, class: cont102}\n', encoding='utf-8')
    inventory = inventory_list(tmp_path, str(roster))
    assert inventory['b204']['hosts'] == ['pc-01']
    assert inventory['cont102']['hosts'] == ['pc-02']
    assert inventory['salle_b204']['hosts'] == ['pc-01', 'pc-02']
    assert inventory['tp_evening']['hosts'] == ['pc-02']
    assert inventory['_meta']['hostvars']['pc-02']['roster_student'] == 'Bob'
    assert inventory['_meta']['hostvars']['pc-01']['ansible_port'] == 2201


def test_group_names_from_digits_are_valid_without_warnings(tmp_path):
    roster = tmp_path / '101.roster.csv'
    roster.write_text('student,seat,room,groups\nAlice,127.0.0.1,204,2nd-year\n', encoding='utf-8')
    proc = ansible_inventory(tmp_path, '-i', str(roster), '--graph')
    assert proc.returncode == 0, proc.stderr
    assert '@class_101:' in proc.stdout and '@room_204:' in proc.stdout and '@group_2nd_year:' in proc.stdout
    assert 'WARNING' not in proc.stderr


def test_csv_roster_takes_options_from_the_environment(tmp_path):
    roster = tmp_path / 'roster.csv'
    roster.write_text('student,seat\nAlice,pc-01\n', encoding='utf-8')
    inventory = inventory_list(tmp_path, str(roster), env={'UNBOXED_ROSTER_HOSTNAME_FROM': 'seat',
                                                           'UNBOXED_ROSTER_CLASS_NAME': 'cont101'})
    assert inventory['cont101']['hosts'] == ['pc-01']


def test_broken_csv_roster_stops_with_line_and_column(tmp_path):
    roster = tmp_path / 'roster.csv'
    roster.write_text('student,seat,port\nAlice,127.0.0.1,22\nBob,127.0.0.2,abc\n', encoding='utf-8')
    proc = ansible_inventory(tmp_path, '-i', str(roster), '--graph')
    assert proc.returncode != 0
    assert f'roster {roster}: line 3, column 3 (port): "abc" is not a port number' in proc.stderr
    assert 'Bob,127.0.0.2,abc' not in proc.stdout


def test_broken_yaml_roster_shows_the_offending_line_and_column(tmp_path):
    roster = tmp_path / 'cont101.roster.yml'
    roster.write_text('plugin: unboxed.lab.roster\n'
                      'students:\n'
                      '  - student: Alice\n'
                      '    seat: 127.0.0.1\n'
                      '  - student: Bob\n'
                      '    seat: 127.0.0.2\n'
                      '    port: abc\n', encoding='utf-8')
    proc = ansible_inventory(tmp_path, '-i', str(roster), '--graph')
    assert proc.returncode != 0
    assert 'students[1].port: "abc" is not a port number' in proc.stderr
    assert f'Origin: {roster}:7:11' in proc.stderr


def test_files_outside_the_naming_convention_are_left_to_other_plugins(tmp_path):
    roster = tmp_path / 'students.csv'
    roster.write_text('student,seat\nAlice,127.0.0.1\n', encoding='utf-8')
    proc = ansible_inventory(tmp_path, '-i', str(roster), '--list', '-vvv')
    assert 'inventory.roster declined parsing' in proc.stdout + proc.stderr
    assert proc.returncode != 0


def test_roster_text_is_never_templated(tmp_path):
    roster = tmp_path / 'roster.csv'
    roster.write_text('student,seat,note\n"{{ 6 * 7 }} Alice",127.0.0.1,"{{ lookup(\'pipe\', \'id\') }}"\n', encoding='utf-8')
    proc = ansible_inventory(tmp_path, '-i', str(roster), '--list')
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)['_meta']['hostvars']['6-7-alice']
    assert hostvars['roster_student'] == {'__ansible_unsafe': '{{ 6 * 7 }} Alice'}
    assert hostvars['note'] == {'__ansible_unsafe': "{{ lookup('pipe', 'id') }}"}


def test_ansible_doc_renders_the_documentation_and_examples(tmp_path):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_HOME=str(tmp_path))
    proc = subprocess.run([os.path.join(BIN, 'ansible-doc'), '-t', 'inventory', '--json', 'unboxed.lab.roster'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    plugin = json.loads(proc.stdout)['unboxed.lab.roster']
    assert {'students', 'class_name', 'hostname_from', 'room_group_prefix', 'shift_group_prefix', 'keyed_groups'} <= set(plugin['doc']['options'])
    assert 'plugin: unboxed.lab.roster' in plugin['examples']
