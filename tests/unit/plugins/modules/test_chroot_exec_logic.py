from __future__ import annotations

import pytest

from ansible_collections.unboxed.lab.plugins.modules import chroot_exec


def params(**overrides):
    base = dict(root='/overlay/merged', argv=['ps', 'ax'], cmd=None, chdir=None, env={}, creates=None,
                removes=None, stdin=None, stdin_add_newline=True, mounts=[])
    base.update(overrides)
    return base


@pytest.mark.parametrize('overrides, fragment', [
    (dict(root='overlay/merged'), 'root must be an absolute path'),
    (dict(root='/'), 'root is "/", the host\'s own root'),
    (dict(cmd='ps ax'), 'mutually exclusive'),
    (dict(argv=None), 'give the command to run'),
    (dict(argv=['']), 'argv[0]'),
    (dict(chdir='tmp'), 'chdir is a path inside the root and must be absolute'),
    (dict(creates='file01.txt'), 'creates is a path inside the root'),
    (dict(env={'BAD-NAME': 'x'}), 'not a valid name'),
])
def test_bad_requests_name_the_problem(overrides, fragment):
    problems = chroot_exec.request_problems(params(**overrides))
    assert any(fragment in problem for problem in problems), problems


def test_shell_form_runs_the_roots_shell():
    assert chroot_exec.inner_argv(params(argv=None, cmd='echo "Texto" > /file01.txt')) == ['/bin/sh', '-c', 'echo "Texto" > /file01.txt']


def test_argv_starts_clean_and_never_uses_a_host_shell():
    argv = chroot_exec.chroot_argv('/usr/bin/env', '/usr/sbin/chroot', '/r', ['ls', '$HOME; rm -rf /'], {'PATH': '/bin', 'A': '1'})
    assert argv == ['/usr/bin/env', '-i', 'A=1', 'PATH=/bin', '/usr/sbin/chroot', '/r', 'ls', '$HOME; rm -rf /']


def test_chdir_goes_through_a_fixed_script_with_the_directory_as_data():
    argv = chroot_exec.chroot_argv('env', 'chroot', '/r', ['ls'], {}, chdir='/tmp; reboot')
    assert argv[-6:] == ['/bin/sh', '-c', chroot_exec.CHDIR_SCRIPT, 'unboxed-chdir', '/tmp; reboot', 'ls']


def test_environment_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv('TERM', raising=False)
    env = chroot_exec.environment(params(env={'PATH': '/opt/bin', 'N': 3}))
    assert env == {'PATH': '/opt/bin', 'HOME': '/root', 'N': '3'}


def test_equivalent_command_shows_the_mounts_around_the_chroot():
    shown = chroot_exec.equivalent_command(params(mounts=['proc', 'dev']), ['ps', 'ax'], {})
    assert shown == ('mount -t proc proc /overlay/merged/proc; mount --bind /dev /overlay/merged/dev; '
                     'chroot /overlay/merged ps ax; umount /overlay/merged/dev; umount /overlay/merged/proc')
