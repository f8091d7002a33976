# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rows of a ``ps`` listing as dictionaries, so that roles compare processes instead of cutting columns."""

from __future__ import annotations

DOCUMENTATION = r"""
name: ps_table
author: unboxed developers (@unboxed-lab)
version_added: 0.2.0
short_description: Turn the output of ps into a list of processes
description:
  - Reads the output of C(ps) as the talk types it (C(ps ax), C(ps -ef), busybox C(ps)) by its header line and
    returns one dictionary per process, keyed by the lower-cased column names.
  - The last column (C(COMMAND), C(CMD) or C(ARGS)) keeps its spaces; every other column is one word, as C(ps) prints
    them. C(pid) and C(ppid) become integers.
  - Procps and busybox align their columns differently; the header names the columns, so both read the same way.
positional: _input
options:
  _input:
    description: The output of C(ps), as a string (C(stdout)) or a list of lines (C(stdout_lines)), header first.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Run ps ax inside the chroot
  unboxed.lab.chroot_exec:
    root: /overlay/merged
    argv: [ps, ax]
    mounts: [proc]
  register: chroot_ps

- name: Show PID 1 as the chroot sees it
  ansible.builtin.debug:
    msg: "{{ (chroot_ps.stdout | unboxed.lab.ps_table | selectattr('pid', 'eq', 1) | first).command }}"
"""

RETURN = r"""
_value:
  description: One dictionary per process, in the order C(ps) printed them; keys are the header's column names in lower case.
  type: list
  elements: dict
  sample:
    - {pid: 1, tty: '?', stat: Ss, time: '0:00', command: tail -f /dev/null}
"""

from ansible.errors import AnsibleFilterError

INTEGER_COLUMNS = frozenset(('pid', 'ppid'))


def ps_table(output) -> list[dict]:
    if isinstance(output, str):
        lines = output.splitlines()
    elif isinstance(output, (list, tuple)):
        lines = [str(line) for line in output]
    else:
        raise AnsibleFilterError(f'ps_table expects the output of ps (a string or a list of lines), not {type(output).__name__}')
    lines = [line for line in lines if line.strip()]
    if not lines:
        return []
    columns = [name.lower() for name in lines[0].split()]
    if 'pid' not in columns:
        raise AnsibleFilterError(f'ps_table: the first line is not a ps header with a PID column: "{lines[0].strip()}"')
    rows = []
    for line in lines[1:]:
        values = line.split(None, len(columns) - 1)
        if len(values) < len(columns) - 1:
            raise AnsibleFilterError(f'ps_table: "{line.strip()}" has fewer values than the header has columns ({", ".join(columns)})')
        # A process whose command line is empty (a kernel thread in some ps formats) has no last value.
        values += [''] * (len(columns) - len(values))
        row = dict(zip(columns, values))
        for name in INTEGER_COLUMNS.intersection(row):
            try:
                row[name] = int(row[name])
            except ValueError:
                raise AnsibleFilterError(f'ps_table: {name.upper()} "{row[name]}" is not a number in "{line.strip()}"') from None
        rows.append(row)
    return rows


class FilterModule:
    def filters(self):
        return {'ps_table': ps_table}
