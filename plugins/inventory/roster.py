# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory from a class roster: one host per student seat, grouped by class, room and shift."""

from __future__ import annotations

DOCUMENTATION = r"""
name: roster
short_description: Classroom inventory from a roster of students and their seats (CSV or YAML)
version_added: 0.1.0
author:
  - unboxed developers (@unboxed)
description:
  - Reads a class roster and yields one host per student, so a whole classroom can be provisioned
    with C(ansible-playbook -i roster.csv site.yml).
  - Each roster row names a student and the seat machine they sit at (a host name or an IP address,
    optionally with C(:port)), and optionally the SSH user and port, the room, the shift and extra groups.
  - "Hosts are put in these groups: the class (O(class_name), or the row's C(class)), C(room_<room>) and
    C(shift_<shift>) when those are given (prefixes: O(room_group_prefix), O(shift_group_prefix)), and every
    group named in the row's C(groups). Group names are lower-cased, runs of other characters than letters,
    digits and C(_) become C(_): room C(B 204) gives group C(room_b_204). A name that would start with a
    digit gets a prefix (class C(101) gives group C(class_101), group C(2nd year) gives C(group_2nd_year))."
  - "Every host gets these variables: C(ansible_host) (the seat), C(ansible_user) and C(ansible_port) when
    given, C(roster_student) (the name as written), C(roster_seat), C(roster_class), C(roster_room),
    C(roster_shift) (when given) and C(roster_source) (C(file:line), for finding the row again).
    A CSV column the plugin does not know becomes a host variable of that name (values stay strings);
    in YAML, put such variables under the student's C(vars)."
  - "B(The source is recognised by its file name): C(roster.csv), C(roster.yml), C(roster.yaml), or a name
    ending in C(.roster.csv), C(.roster.yml) or C(.roster.yaml) (for example C(cont101.roster.csv))."
  - "B(CSV roster): the first row that is not empty or a comment names the columns: C(student) and C(seat)
    are required; C(user), C(port), C(room), C(shift), C(groups) (separated by spaces or C(;)) and
    C(class) are optional. Column names are case-insensitive; C(name) is accepted for C(student),
    C(host), C(address) and C(ansible_host) for C(seat), C(ssh_user) and C(ansible_user) for C(user),
    C(ssh_port) and C(ansible_port) for C(port). The delimiter is C(,), C(;) or a tab, whichever the header
    row uses most (spreadsheets in many locales export C(;)). Lines starting with C(#) are comments.
    A UTF-8 byte order mark (Excel) is ignored. Options for a CSV roster come from C(ansible.cfg) or the
    environment, since the file itself cannot hold them."
  - "B(YAML roster): a plugin configuration file (C(plugin: unboxed.lab.roster)) that holds the options
    and the students inline under O(students)."
  - "B(Errors): a malformed roster stops with an error that names the file, the line and the column
    (for YAML, Ansible prints the line and column of the offending value under the message). Two rows that
    give the same host name, or the same seat (address and SSH port, 22 when not given), are an error naming
    both lines: two inventory hosts on one machine would build the same C(/overlay) at the same time."
  - "Inventory plugins must be enabled: list C(unboxed.lab.roster) in C(enable_plugins) in the
    C([inventory]) section of C(ansible.cfg) (YAML rosters also load through the C(auto) plugin).
    B(Leave ini out of that list) when rosters are used: Ansible tries every enabled plugin on a source
    the first one failed on, and C(ini) reads a malformed CSV roster as a list of host names such as
    C(Alice,10.0.0.21,22) without any error. With C(any_unparsed_is_failed = true) in the same section,
    a broken roster stops the run instead of leaving an empty inventory."
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description:
      - Marks a YAML file as a roster for this plugin; required in a YAML roster, not used in a CSV roster.
    type: str
    choices: [unboxed.lab.roster]
  students:
    description:
      - The students of a YAML roster, one mapping per student.
      - Keys are those of the CSV columns (C(student), C(seat), C(user), C(port), C(room), C(shift),
        C(class), C(groups) as a list or a string) plus C(vars), a mapping of extra host variables.
      - Unknown keys are an error, so a typo such as C(stduent) is caught rather than ignored.
    type: list
    elements: dict
    default: []
  class_name:
    description:
      - Name of the class, the group every student of the roster belongs to (rows may override it with a
        C(class) column or key).
      - When not set, the file name before C(.roster.) (C(cont101.roster.csv) gives C(cont101)); for a file
        named just C(roster.csv) or C(roster.yml), the name of the directory holding it.
    type: str
    env:
      - name: UNBOXED_ROSTER_CLASS_NAME
    ini:
      - section: inventory_plugin_unboxed_roster
        key: class_name
  hostname_from:
    description:
      - What the inventory host name of a student's seat is made of.
      - V(student) makes it from the student's name (C(Zoë Martin) gives C(zoe-martin)), the most
        useful when seats are IP addresses; V(seat) uses the seat's host name as written.
    type: str
    choices: [student, seat]
    default: student
    env:
      - name: UNBOXED_ROSTER_HOSTNAME_FROM
    ini:
      - section: inventory_plugin_unboxed_roster
        key: hostname_from
  room_group_prefix:
    description: Prefix of the group made from the room of each student.
    type: str
    default: room_
    env:
      - name: UNBOXED_ROSTER_ROOM_GROUP_PREFIX
    ini:
      - section: inventory_plugin_unboxed_roster
        key: room_group_prefix
  shift_group_prefix:
    description: Prefix of the group made from the shift of each student.
    type: str
    default: shift_
    env:
      - name: UNBOXED_ROSTER_SHIFT_GROUP_PREFIX
    ini:
      - section: inventory_plugin_unboxed_roster
        key: shift_group_prefix
notes:
  - The roster names seats, it does not reach them; nothing is contacted while the inventory is read.
seealso:
  - name: Inventory plugins
    description: Enabling and using inventory plugins.
    link: https://docs.ansible.com/ansible/latest/plugins/inventory.html
"""

EXAMPLES = r"""
# ansible.cfg: enable the plugin; without ini, which would misread a broken CSV roster as host names
#   [inventory]
#   enable_plugins = unboxed.lab.roster, host_list, script, auto, yaml, toml
#   any_unparsed_is_failed = true

# inventories/classroom/roster.csv (class name: the directory, "classroom")
#   # Morning group, room B204
#   student,seat,user,port,room,shift
#   Alice Martin,10.0.0.21,student,,B204,morning
#   Bob Okafor,pc-b204-02.lab.example,student,2222,B204,morning
#   Zoë Durand,10.0.0.23:22,,,B206,afternoon
#
#   ansible-inventory -i inventories/classroom/roster.csv --graph
#   ansible-playbook -i inventories/classroom/roster.csv site.yml --limit room_b204

# cont101.roster.yml: a YAML roster, options and students in one file
plugin: unboxed.lab.roster
class_name: cont101
hostname_from: student
students:
  - student: Alice Martin
    seat: 10.0.0.21
    user: student
    room: B204
    shift: morning
  - student: Bob Okafor
    seat: pc-b204-02.lab.example
    port: 2222
    room: B204
    groups: [pairs, needs_help]
    vars:
      unboxed_editor: nano
# constructed options work as usual
keyed_groups:
  - key: roster_shift | default('none')
    prefix: shift_group
"""

import csv
import ipaddress
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.parsing.utils.addresses import parse_address
from ansible.plugins.inventory import BaseFileInventoryPlugin, Constructable

ROSTER_EXTENSIONS = {'.csv': 'csv', '.yml': 'yaml', '.yaml': 'yaml'}
DEFAULT_SSH_PORT = 22

# Spreadsheet headers differ; these are the spellings accepted for each known column.
COLUMN_ALIASES = {
    'student': 'student', 'name': 'student',
    'seat': 'seat', 'host': 'seat', 'address': 'seat', 'ansible_host': 'seat',
    'user': 'user', 'ssh_user': 'user', 'ansible_user': 'user',
    'port': 'port', 'ssh_port': 'port', 'ansible_port': 'port',
    'room': 'room',
    'shift': 'shift',
    'groups': 'groups',
    'class': 'class',
}
REQUIRED_COLUMNS = ('student', 'seat')
YAML_STUDENT_KEYS = frozenset(COLUMN_ALIASES.values()) | {'vars'}
CSV_DELIMITERS = (',', ';', '\t')

# A login name as useradd accepts it by default (NAME_REGEX), plus upper case for other systems.
USER_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_.-]*\$?')
VARIABLE_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


@dataclass(frozen=True)
class Where:
    """Where a value sits in a roster, to point the instructor at it."""

    line: int | None = None
    column: int | None = None
    field: str | None = None
    # YAML values loaded by Ansible carry their origin; Ansible prints its line and column under the error.
    obj: object = None

    def __str__(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f'line {self.line}')
        if self.column is not None:
            parts.append(f'column {self.column}')
        text = ', '.join(parts)
        if self.field:
            text = f'{text} ({self.field})' if text else self.field
        return text


class RosterError(Exception):
    """A roster problem, with where it is; the plugin turns it into AnsibleParserError."""

    def __init__(self, message: str, where: Where):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f'{self.where}: {self.message}' if str(self.where) else self.message


@dataclass
class Student:
    """One roster row, validated: a student and the seat machine they work on."""

    name: str
    seat: str
    where: Where
    port: int | None = None
    user: str | None = None
    room: str | None = None
    shift: str | None = None
    class_name: str | None = None
    groups: tuple[str, ...] = ()
    variables: dict[str, object] = field(default_factory=dict)


def roster_format(path: str) -> str | None:
    """'csv' or 'yaml' when the file name follows the roster convention, else None."""
    base = os.path.basename(path)
    stem, extension = os.path.splitext(base)
    kind = ROSTER_EXTENSIONS.get(extension.lower())
    if kind and (stem == 'roster' or stem.endswith('.roster')):
        return kind
    return None


def default_class_name(path: str) -> str:
    """``cont101.roster.csv`` -> ``cont101``; ``classroom/roster.csv`` -> ``classroom``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem.endswith('.roster'):
        return stem[:-len('.roster')]
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or 'class'


def _fold(text: str) -> str:
    # Accents go (so "Zoë" and "Zoe" meet), letters of other scripts stay: a host name for every student.
    decomposed = unicodedata.normalize('NFKD', text)
    return ''.join(char for char in decomposed if not unicodedata.combining(char)).lower()


def host_name_for(student_name: str) -> str:
    """``Zoë  Martin-Durand`` -> ``zoe-martin-durand``: usable with --limit, stable across runs."""
    return re.sub(r'[^\w]+|_+', '-', _fold(student_name)).strip('-')


def group_name_for(prefix: str, text: str, prefix_if_digit: str = 'group_') -> str:
    """``room_`` + ``B 204`` -> ``room_b_204``: a valid Ansible group name (``101`` -> ``group_101``)."""
    name = re.sub(r'\W+', '_', _fold(f'{prefix}{text}')).strip('_')
    # Ansible warns about group names that are not valid variable names, such as "101".
    return f'{prefix_if_digit}{name}' if name[:1].isdigit() else name


def _scalar_text(value: object, where: Where) -> str | None:
    """A roster cell as stripped text, None when empty; a list or mapping where text belongs is an error."""
    if value is None:
        return None
    if isinstance(value, (Mapping, list, tuple, set)):
        raise RosterError(f'expected a single value, got a {"mapping" if isinstance(value, Mapping) else "list"}', where)
    if isinstance(value, bool):
        raise RosterError(f'expected text, got the boolean {value}; quote it if it is a name', where)
    text = str(value).strip()
    return text or None


def _port(value: object, where: Where) -> int | None:
    if isinstance(value, bool):
        raise RosterError(f'{value} is not a port number; expected a whole number from 1 to 65535', where)
    if isinstance(value, int):
        port = value
    else:
        text = _scalar_text(value, where)
        if text is None:
            return None
        if not re.fullmatch(r'[0-9]+', text):
            raise RosterError(f'"{text}" is not a port number; expected a whole number from 1 to 65535', where)
        port = int(text)
    if not 1 <= port <= 65535:
        raise RosterError(f'port {port} is out of range; expected a whole number from 1 to 65535', where)
    return port


def _seat(value: object, where: Where) -> tuple[str, int | None]:
    text = _scalar_text(value, where)
    if text is None:
        raise RosterError('the seat is empty; give the host name or IP address of the student\'s machine', where)
    try:
        host, port = parse_address(text, allow_ranges=False)
    except AnsibleError:
        host, port = None, None
    if host is None:
        raise RosterError(f'"{text}" is not a host name or IP address (optionally with :port, [IPv6]:port)', where)
    return host, port


def _groups(value: object, where: Where) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        names = re.split(r'[\s;]+', value)
    elif isinstance(value, Sequence):
        names = [_scalar_text(item, where) or '' for item in value]
    else:
        raise RosterError(f'expected group names (a list, or a string separated by spaces or ";"), got {value!r}', where)
    groups = []
    for name in names:
        if name and (group := group_name_for('', name)) not in groups:
            groups.append(group)
    return tuple(groups)


def student_from_fields(fields: Mapping[str, tuple[object, Where]], row: Where) -> Student:
    """Validate one roster row given as {canonical column: (value, where)} and return the student."""
    def value(column):
        return fields.get(column, (None, row))

    name_value, name_where = value('student')
    name = _scalar_text(name_value, name_where)
    if name is None:
        raise RosterError('the student name is empty', name_where)
    if not host_name_for(name):
        raise RosterError(f'the student name "{name}" has no letter or digit to make a host name from', name_where)

    seat_value, seat_where = value('seat')
    seat, seat_port = _seat(seat_value, seat_where)
    port_value, port_where = value('port')
    port = _port(port_value, port_where)
    if seat_port is not None and port is not None and seat_port != port:
        raise RosterError(f'the seat says port {seat_port} but the port column says {port}; give the port once', port_where)

    user_value, user_where = value('user')
    user = _scalar_text(user_value, user_where)
    if user is not None and not USER_NAME.fullmatch(user):
        raise RosterError(f'"{user}" is not a user name (letters, digits, "_", "-", "."; not starting with a digit or "-")', user_where)

    texts = {column: _scalar_text(*value(column)) for column in ('room', 'shift', 'class')}
    groups_value, groups_where = value('groups')

    variables: dict[str, object] = {}
    for column, (extra_value, _where) in fields.items():
        if column in YAML_STUDENT_KEYS:
            continue
        if extra_value is not None and extra_value != '':
            variables[column] = extra_value
    vars_value, vars_where = value('vars')
    if vars_value is not None:
        if not isinstance(vars_value, Mapping):
            raise RosterError(f'vars must be a mapping of variable names to values, got {vars_value!r}', vars_where)
        for var_name, var_value in vars_value.items():
            if not isinstance(var_name, str) or not VARIABLE_NAME.fullmatch(var_name):
                raise RosterError(f'"{var_name}" is not a valid variable name (letters, digits and "_")', vars_where)
            variables[var_name] = var_value

    return Student(name=name, seat=seat, port=seat_port if port is None else port, user=user,
                   room=texts['room'], shift=texts['shift'], class_name=texts['class'],
                   groups=_groups(groups_value, groups_where), variables=variables, where=row)


def _uncommented(text: str) -> Iterator[str]:
    # Comment lines become empty lines rather than vanishing, so csv's line numbers stay the file's.
    for line in text.splitlines(keepends=True):
        yield '\n' if line.lstrip().startswith('#') else line


def _csv_header(cells: list[str], line: int) -> list[str]:
    columns: list[str] = []
    for index, cell in enumerate(cells, start=1):
        where = Where(line=line, column=index)
        label = re.sub(r'[\s-]+', '_', cell.strip().lower())
        if not label:
            raise RosterError('this column has no name in the header row', where)
        column = COLUMN_ALIASES.get(label, label)
        if not VARIABLE_NAME.fullmatch(column):
            raise RosterError(f'column name "{cell.strip()}" cannot be a variable name (use letters, digits and "_")', where)
        if column in columns:
            first = columns.index(column) + 1
            raise RosterError(f'column "{cell.strip()}" repeats column {first} ("{cells[first - 1].strip()}"), both meaning "{column}"', where)
        columns.append(column)
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise RosterError(f'the header row lacks the column(s) {", ".join(missing)}; found: {", ".join(c.strip() for c in cells)}',
                          Where(line=line))
    return columns


def csv_rows(text: str) -> Iterator[tuple[dict[str, tuple[object, Where]], Where]]:
    """Rows of a CSV roster as ({column: (value, where)}, where of the row), header and comments skipped."""
    lines = list(_uncommented(text))
    header_line = next((line for line in lines if line.strip()), '')
    delimiter = max(CSV_DELIMITERS, key=header_line.count) if header_line else ','
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    columns: list[str] | None = None
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise RosterError(f'not valid CSV: {error}', Where(line=reader.line_num)) from None
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if columns is None:
            columns = _csv_header(cells, line)
            continue
        if len(cells) > len(columns):
            raise RosterError(f'this row has {len(cells)} fields but the header names {len(columns)} columns '
                              f'(quote a value that contains "{delimiter}")', Where(line=line, column=len(columns) + 1))
        fields = {column: (cell, Where(line=line, column=index, field=column))
                  for index, (column, cell) in enumerate(zip(columns, cells), start=1)}
        yield fields, Where(line=line)
    if columns is None:
        raise RosterError('the roster is empty: expected a header row naming at least the columns student and seat', Where(line=1))


def yaml_rows(students: object) -> Iterator[tuple[dict[str, tuple[object, Where]], Where]]:
    """Rows of a YAML roster's ``students`` list, in the shape csv_rows gives."""
    if not isinstance(students, Sequence) or isinstance(students, (str, bytes)):
        raise RosterError('students must be a list of mappings, one per student', Where(field='students', obj=students))
    for index, entry in enumerate(students):
        row = Where(field=f'students[{index}]', obj=entry)
        if not isinstance(entry, Mapping):
            raise RosterError(f'expected a mapping with at least student and seat, got {entry!r}', row)
        fields: dict[str, tuple[object, Where]] = {}
        for key, value in entry.items():
            where = Where(field=f'students[{index}].{key}', obj=value if value is not None else entry)
            column = COLUMN_ALIASES.get(str(key).lower()) or ('vars' if key == 'vars' else None)
            if column is None:
                raise RosterError(f'unknown key "{key}"; known keys: {", ".join(sorted(YAML_STUDENT_KEYS))} '
                                  f'(put extra host variables under vars)', Where(field=where.field, obj=key))
            if column in fields:
                raise RosterError(f'"{key}" repeats "{column}" given by another key of this student', where)
            fields[column] = (value, where)
        for column in REQUIRED_COLUMNS:
            if column not in fields:
                raise RosterError(f'this student has no {column}', row)
        yield fields, row


def assign_host_names(students: Sequence[Student], hostname_from: str) -> dict[str, Student]:
    """Inventory host name -> student; two rows on one host name or one seat are an error naming both."""
    by_host: dict[str, Student] = {}
    by_seat: dict[tuple[str, int], Student] = {}
    for student in students:
        host = host_name_for(student.name) if hostname_from == 'student' else student.seat
        if host in by_host:
            other = by_host[host]
            hint = 'add an initial to tell them apart' if hostname_from == 'student' else 'or use hostname_from=student'
            raise RosterError(f'"{student.name}" gets host name "{host}", already taken by "{other.name}" ({other.where}); '
                              f'host names must be unique, {hint}', student.where)
        seat_key = (_seat_identity(student.seat), student.port or DEFAULT_SSH_PORT)
        if seat_key in by_seat:
            other = by_seat[seat_key]
            raise RosterError(f'seat {student.seat} port {seat_key[1]} is given to "{student.name}" and to "{other.name}" '
                              f'({other.where}); one machine can only build one lab at a time', student.where)
        by_host[host] = student
        by_seat[seat_key] = student
    return by_host


def _seat_identity(seat: str) -> str:
    try:
        return str(ipaddress.ip_address(seat))
    except ValueError:
        return seat.lower()


def read_roster(path: str, kind: str, students: object = None) -> list[Student]:
    """All students of a roster file (CSV read from path; YAML given as the loaded students list)."""
    if kind == 'csv':
        try:
            with open(path, 'rb') as handle:
                raw = handle.read()
        except OSError as error:
            raise RosterError(f'cannot read the roster: {error.strerror}', Where()) from None
        try:
            text = raw.decode('utf-8-sig')
        except UnicodeDecodeError as error:
            line = raw.count(b'\n', 0, error.start) + 1
            raise RosterError('not UTF-8 text; save the spreadsheet as "CSV UTF-8"', Where(line=line)) from None
        rows = csv_rows(text)
    else:
        rows = yaml_rows(students)
    return [student_from_fields(fields, row) for fields, row in rows]


class InventoryModule(BaseFileInventoryPlugin, Constructable):

    NAME = 'unboxed.lab.roster'

    def verify_file(self, path):
        return super().verify_file(path) and roster_format(path) is not None

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        kind = roster_format(path)
        try:
            if kind == 'yaml':
                self._read_config_data(path)
                students = read_roster(path, kind, self.get_option('students'))
            else:
                self.set_options()
                students = read_roster(path, kind)
            hosts = assign_host_names(students, self.get_option('hostname_from'))
        except RosterError as error:
            raise AnsibleParserError(f'roster {path}: {error}', obj=error.where.obj) from None
        class_name = self.get_option('class_name') or default_class_name(path)
        for host, student in hosts.items():
            self._add_student(host, student, class_name, path)

    def _add_student(self, host: str, student: Student, class_name: str, path: str) -> None:
        student_class = student.class_name or class_name
        groups = [group_name_for('', student_class, 'class_')]
        if student.room:
            groups.append(group_name_for(self.get_option('room_group_prefix'), student.room, 'room_'))
        if student.shift:
            groups.append(group_name_for(self.get_option('shift_group_prefix'), student.shift, 'shift_'))
        groups.extend(student.groups)

        for group in groups:
            self.inventory.add_group(group)
            self.inventory.add_host(host, group=group)

        line = f':{student.where.line}' if student.where.line else ''
        variables = dict(student.variables)
        variables.update({
            'ansible_host': student.seat,
            'roster_student': student.name,
            'roster_seat': student.seat,
            'roster_class': student_class,
            'roster_source': f'{path}{line}' if line else f'{path} ({student.where})',
        })
        optional = {'ansible_user': student.user, 'ansible_port': student.port,
                    'roster_room': student.room, 'roster_shift': student.shift}
        variables.update({name: value for name, value in optional.items() if value is not None})
        for name, value in variables.items():
            self.inventory.set_variable(host, name, value)

        strict = self.get_option('strict')
        self._set_composite_vars(self.get_option('compose'), variables, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option('groups'), variables, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option('keyed_groups'), variables, host, strict=strict)
