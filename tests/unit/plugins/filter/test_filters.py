"""The collection's filters on real output: ps ax from procps and busybox, ps -ef, verify's observations."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.unboxed.lab.plugins.filter.observation_lines import observation_lines
from ansible_collections.unboxed.lab.plugins.filter.ps_table import ps_table

# procps-ng 4.0.2 (Debian 12), `ps ax` inside the talk's container and inside the chroot.
PROCPS_CONTAINER = """\
    PID TTY      STAT   TIME COMMAND
      1 ?        S      0:00 tail -f /dev/null
      7 ?        R      0:00 ps ax
"""
PROCPS_HOST = """\
  PID TTY      STAT   TIME COMMAND
    1 ?        SLl    0:01 /process_api --firecracker-init --addr 0.0.0.0:2024
    2 ?        S      0:00 [kthreadd]
 3051 pts/0    Ss+    0:00 -bash
"""
# busybox 1.35 `ps`: other columns, other alignment.
BUSYBOX = """\
PID   USER     TIME  COMMAND
    1 root      0:00 tail -f /dev/null
   12 root      0:00 ps
"""
# `ps -ef`: PID is not the first column, CMD the last.
PS_EF = """\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 Nov29 ?        00:00:01 /sbin/init splash
root        4242       1  0 15:45 ?        00:00:00 sleep 300
"""


def test_procps_rows_keep_the_command_whole():
    rows = ps_table(PROCPS_CONTAINER)
    assert rows == [
        {'pid': 1, 'tty': '?', 'stat': 'S', 'time': '0:00', 'command': 'tail -f /dev/null'},
        {'pid': 7, 'tty': '?', 'stat': 'R', 'time': '0:00', 'command': 'ps ax'},
    ]


def test_stdout_lines_read_the_same_as_stdout():
    assert ps_table(PROCPS_HOST.splitlines()) == ps_table(PROCPS_HOST)
    assert [row['pid'] for row in ps_table(PROCPS_HOST)] == [1, 2, 3051]
    assert ps_table(PROCPS_HOST)[0]['command'] == '/process_api --firecracker-init --addr 0.0.0.0:2024'


def test_busybox_columns_come_from_its_header():
    assert ps_table(BUSYBOX)[0] == {'pid': 1, 'user': 'root', 'time': '0:00', 'command': 'tail -f /dev/null'}


def test_ps_ef_numbers_pid_and_ppid():
    first, second = ps_table(PS_EF)
    assert (first['pid'], first['ppid'], first['cmd']) == (1, 0, '/sbin/init splash')
    assert (second['pid'], second['ppid'], second['uid']) == (4242, 1, 'root')


def test_empty_output_has_no_process():
    assert ps_table('') == []
    assert ps_table([]) == []


@pytest.mark.parametrize('output, words', [
    ('hello world\n 1 x\n', 'not a ps header'),
    ('  PID TTY STAT TIME COMMAND\n  one ? S 0:00 tail\n', 'PID "one" is not a number'),
    ('  PID TTY STAT TIME COMMAND\n  1 ?\n', 'fewer values'),
    (42, 'not int'),
])
def test_what_is_not_ps_output_is_refused(output, words):
    with pytest.raises(AnsibleFilterError, match=words):
        ps_table(output)


def test_observation_lines_mark_each_observation():
    observations = [
        {'slide': 'overlay', 'check': 'file01.txt says Texto', 'ok': True, 'seen': 'Texto\n'},
        {'slide': 'namespaces', 'check': 'only lo exists', 'ok': False, 'seen': 'lo, eth0'},
    ]
    assert observation_lines(observations) == [
        'ok   overlay: file01.txt says Texto - Texto',
        'FAIL namespaces: only lo exists - lo, eth0',
    ]
    assert observation_lines([]) == []


def test_observation_without_its_keys_is_refused():
    with pytest.raises(AnsibleFilterError, match='observation 1 lacks ok, seen'):
        observation_lines([{'slide': 'layers', 'check': 'x'}])
