from __future__ import annotations

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import command


def test_shell_join_quotes_what_a_shell_would_split():
    assert command.shell_join(['mount', '-t', 'overlay', 'overlay', '-o', 'lowerdir=/a b:/c', '/m']) == \
        "mount -t overlay overlay -o 'lowerdir=/a b:/c' /m"
    assert command.shell_join(['echo', '$HOME', ';', 'rm']) == "echo '$HOME' ';' rm"


class Failed(Exception):
    pass


class FakeModule:
    """Records run_command calls and answers with a canned result; fail_json raises as AnsibleModule exits."""

    def __init__(self, rc=0, stdout='', stderr=''):
        self.answer = (rc, stdout, stderr)
        self.calls = []

    def run_command(self, argv, **kwargs):
        self.calls.append((argv, kwargs))
        return self.answer

    def fail_json(self, **result):
        raise Failed(result)


def test_every_command_runs_as_an_argv_with_the_c_locale():
    module = FakeModule(stdout='out')
    assert command.run(module, ['umount', 42], data='x') == (0, 'out', '')
    assert module.calls == [(['umount', '42'], {'environ_update': {'LC_ALL': 'C', 'LANG': 'C'}, 'data': 'x'})]
    assert command.run_checked(module, ['true'], 'do nothing') == 'out'


@pytest.mark.parametrize('answer, explain, msg', [
    ((32, '', 'mount: /m: wrong fs type.\n'), None, 'Could not mount /m: mount: /m: wrong fs type.'),
    ((1, 'only stdout\n', ''), None, 'Could not mount /m: only stdout'),
    ((3, '', ''), None, 'Could not mount /m: exit code 3'),
    ((32, '', 'mount: /m: busy.'), lambda: 'PID 7 holds it.', 'Could not mount /m: mount: /m: busy. PID 7 holds it.'),
    ((32, '', 'busy'), lambda: None, 'Could not mount /m: busy'),
])
def test_a_failure_says_what_was_attempted_and_what_the_command_said(answer, explain, msg):
    with pytest.raises(Failed) as failed:
        command.run_checked(FakeModule(*answer), ['mount', '/m'], 'mount /m', explain=explain)
    assert failed.value.args[0] == {'msg': msg, 'cmd': 'mount /m', 'rc': answer[0], 'stdout': answer[1], 'stderr': answer[2]}


def test_a_caller_may_undo_its_work_before_failing():
    undone = []

    def fail(**result):
        undone.append(result['msg'])

    assert command.run_checked(FakeModule(1, '', 'no'), ['mount', '/m'], 'mount /m', fail=fail) == ''
    assert undone == ['Could not mount /m: no']
