from __future__ import annotations

from ansible_collections.unboxed.lab.plugins.module_utils import command


def test_shell_join_quotes_what_a_shell_would_split():
    assert command.shell_join(['mount', '-t', 'overlay', 'overlay', '-o', 'lowerdir=/a b:/c', '/m']) == \
        "mount -t overlay overlay -o 'lowerdir=/a b:/c' /m"
    assert command.shell_join(['echo', '$HOME', ';', 'rm']) == "echo '$HOME' ';' rm"


def test_option_formats():
    assert command.as_opt_val('--mount-proc', '/overlay/merged/proc') == ['--mount-proc=/overlay/merged/proc']
    assert command.as_opt_val('--hostname', None) == []
    assert command.as_flags(['pid', 'net']) == ['--pid', '--net']
