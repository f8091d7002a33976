from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.modules import chroot_exec

PROGRAMS = {'env': '/usr/bin/env', 'chroot': '/usr/sbin/chroot', 'mount': '/usr/bin/mount', 'umount': '/usr/bin/umount'}
CLEAN = 'env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


def params(**overrides):
    base = dict(root='/overlay/merged', argv=['ps', 'ax'], cmd=None, chdir=None, env={}, creates=None,
                removes=None, stdin=None, stdin_add_newline=True, mounts=[])
    base.update(overrides)
    return base


@pytest.mark.parametrize('overrides, problems', [
    (dict(), []),
    (dict(argv=None, cmd='echo "Texto" > /file01.txt'), []),
    (dict(root='overlay/merged'), ['root must be an absolute path, got "overlay/merged" (write it from /, e.g. /overlay/merged).']),
    (dict(argv=None), ['give the command to run inside the root, as argv (a list, e.g. [ps, ax]) or as cmd (a shell string).']),
    (dict(argv=[]), ['argv is empty: give the program and its arguments as a list, e.g. [ps, ax].']),
    (dict(argv=['']), ['argv[0], the program to run, is empty.']),
    (dict(argv=None, cmd='  '), ['cmd is empty: give the shell command line to run inside the root, e.g. "ps ax".']),
    (dict(chdir='tmp', creates='file01.txt'), ['chdir is a path inside the root and must be absolute, got "tmp".',
                                               'creates is a path inside the root and must be absolute, got "file01.txt".']),
    (dict(env={'BAD-NAME': 'x'}), ['env has the variable name "BAD-NAME", which is not a valid name (letters, digits and _, '
                                   'not starting with a digit).']),
])
def test_request_problems_are_collected_at_once(overrides, problems):
    assert chroot_exec.request_problems(params(**overrides)) == problems


def test_the_host_root_is_refused():
    assert chroot_exec.request_problems(params(root='/'))[0].startswith('root is "/", the host\'s own root')


@pytest.mark.parametrize('args, error', [
    ({'root': '/r', 'argv': ['ls'], 'cmd': 'ls'}, 'parameters are mutually exclusive: argv|cmd|commands'),
    ({'root': '/r', 'argv': ['ls'], 'commands': [['ls']]}, 'parameters are mutually exclusive: argv|cmd|commands'),
    ({'root': '/r'}, 'one of the following is required: argv, cmd, commands'),
    ({'root': '/r', 'cmd': 'ls'}, None),
    ({'root': '/r', 'commands': [['ps', 'ax'], ['ip', 'addr']]}, None),
])
def test_argument_spec_declares_exactly_one_of_argv_cmd_and_commands(args, error):
    result = ArgumentSpecValidator(chroot_exec.argument_spec(), **chroot_exec.constraints()).validate(args)
    assert result.error_messages == ([error] if error else [])


def test_shell_form_runs_the_roots_shell():
    assert chroot_exec.inner_argv(params(argv=None, cmd='echo "Texto" > /file01.txt')) == ['/bin/sh', '-c', 'echo "Texto" > /file01.txt']


def test_argv_starts_clean_and_never_uses_a_host_shell():
    argv = chroot_exec.chroot_argv(PROGRAMS, '/r', ['ls', '$HOME; rm -rf /'], {'PATH': '/bin', 'A': '1'})
    assert argv == ['/usr/bin/env', '-i', 'A=1', 'PATH=/bin', '/usr/sbin/chroot', '/r', 'ls', '$HOME; rm -rf /']


def test_chdir_goes_through_a_fixed_script_with_the_directory_as_data():
    argv = chroot_exec.chroot_argv(PROGRAMS, '/r', ['ls'], {}, chdir='/tmp; reboot')
    assert argv[-6:] == ['/bin/sh', '-c', chroot_exec.CHDIR_SCRIPT, 'unboxed-chdir', '/tmp; reboot', 'ls']


def test_environment_defaults_and_overrides(monkeypatch):
    monkeypatch.setenv('TERM', 'xterm')
    env = chroot_exec.environment(params(env={'PATH': '/opt/bin', 'N': 3}))
    assert env == {'PATH': '/opt/bin', 'HOME': '/root', 'N': '3'}


def test_equivalent_command_is_what_runs_mounts_around_the_chroot():
    request = params(mounts=['proc', 'dev'])
    env = chroot_exec.environment(request)
    shown = chroot_exec.equivalent_command(request, '/overlay/merged', ['ps', 'ax'], env)
    assert shown == ('mount -t proc proc /overlay/merged/proc; mount --bind /dev /overlay/merged/dev; '
                     f'{CLEAN} chroot /overlay/merged ps ax; umount /overlay/merged/dev; umount /overlay/merged/proc')
    # A real run runs the same argv lists, with the programs' absolute paths.
    run = chroot_exec.command_steps(PROGRAMS, request, '/overlay/merged', ['ps', 'ax'], env)
    by_name = {path: name for name, path in PROGRAMS.items()}
    assert '; '.join(chroot_exec.cmd.shell_join(by_name.get(arg, arg) for arg in step) for step in run) == shown


def test_equivalent_command_with_chdir_shows_the_script_that_runs():
    request = params(argv=['ls'], chdir='/etc', env={'LANG': 'C.UTF-8'})
    shown = chroot_exec.equivalent_command(request, '/r', ['ls'], chroot_exec.environment(request))
    assert shown == ('env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin '
                     'chroot /r /bin/sh -c \'cd -- "$1" || exit 127; shift; exec "$@"\' unboxed-chdir /etc ls')


@pytest.mark.parametrize('overrides, expected', [
    (dict(), (True, 'no creates or removes to say its work is done')),
    (dict(creates='/file01.txt'), (False, "'/file01.txt' exists inside {root}")),
    (dict(creates='/new.txt'), (True, "'/new.txt' does not exist inside {root}")),
    (dict(removes='/gone'), (False, "'/gone' does not exist inside {root}")),
    (dict(removes='/file01.txt', creates='/new.txt'),
     (True, "'/new.txt' does not exist inside {root} and '/file01.txt' exists inside {root}")),
])
def test_differences_decide_the_run_and_say_why(tmp_path, overrides, expected):
    (tmp_path / 'file01.txt').write_text('Texto\n')
    must_run, reason = chroot_exec.differences(params(**overrides), str(tmp_path))
    assert (must_run, reason) == (expected[0], expected[1].format(root=tmp_path))


def test_a_mount_target_that_is_a_link_is_refused_before_anything_runs(tmp_path):
    root = tmp_path / 'root'
    (root / 'bin').mkdir(parents=True)
    (root / 'bin' / 'ps').write_text('#!/bin/sh\n')
    (root / 'bin' / 'ps').chmod(0o755)
    (root / 'proc').mkdir()
    (root / 'dev').symlink_to('/dev')
    request = params(root=str(root), mounts=['proc', 'dev'], argv=['/bin/ps'])
    problems = chroot_exec.root_problems(request, ['/bin/ps'], chroot_exec.environment(request))
    assert len(problems) == 1
    assert problems[0].startswith(f'mounts includes dev, but {root}/dev is a symbolic link (to /dev): mount follows it '
                                  f'on the host, where it leads to /dev, not inside {root}.')


def test_mount_targets_are_inside_the_root_as_the_kernel_resolves_it(tmp_path):
    (tmp_path / 'rootfs').mkdir()
    (tmp_path / 'link').symlink_to('rootfs')
    assert chroot_exec.mount_targets(str(tmp_path / 'link'), ['proc']) == {'proc': str(tmp_path / 'rootfs' / 'proc')}
    # One record per root, whatever name it is given by.
    assert chroot_exec.users_file(str(tmp_path / 'link'), '/d') == chroot_exec.users_file(str(tmp_path / 'rootfs'), '/d')


def test_the_users_of_the_mounts_are_recorded_and_dead_ones_dropped(tmp_path):
    import os
    from ansible_collections.unboxed.lab.plugins.module_utils import process
    record = str(tmp_path / 'users' / 'r.json')
    me = process.identity_of(os.getpid()).to_dict()
    gone = dict(me, start_time=me['start_time'] - 1)            # same PID, another start: a process that ended
    chroot_exec.write_users(record, str(tmp_path), {'/r/proc': [me, gone]})
    assert chroot_exec.read_users(record) == {'/r/proc': [me, gone]}
    assert chroot_exec.living(chroot_exec.read_users(record)['/r/proc']) == [me]
    chroot_exec.write_users(record, str(tmp_path), {})
    assert not os.path.exists(record) and chroot_exec.read_users(record) == {}


@pytest.mark.parametrize('commands, problems', [
    ([['ps', 'ax'], ['ip', '-json', 'addr']], []),
    ([], ['commands is empty: give at least one command, each an argument list, e.g. [[ps, ax], [ip, addr]].']),
    (['ps ax'], ["commands[0] must be an argument list of strings, such as [ps, ax]; got 'ps ax'."]),
    ([['ps'], [], ['ip', 3]], ['commands[1] must name a program to run: got [].',
                               'commands[2] must be an argument list of strings, such as [ps, ax]; got [\'ip\', 3].']),
])
def test_commands_are_argument_lists_and_each_problem_is_named(commands, problems):
    assert chroot_exec.request_problems(params(argv=None, commands=commands)) == problems


def test_commands_run_in_order_between_one_mount_and_one_unmount():
    request = params(argv=None, commands=[['ps', 'ax'], ['ip', '-json', 'addr']], mounts=['proc'])
    argvs = chroot_exec.inner_argvs(request)
    assert argvs == [['ps', 'ax'], ['ip', '-json', 'addr']]
    steps = chroot_exec.command_steps(PROGRAMS, request, '/overlay/merged', argvs, {'PATH': '/bin'})
    assert [step[0] for step in steps] == ['/usr/bin/mount', '/usr/bin/env', '/usr/bin/env', '/usr/bin/umount']
    assert steps[1][-2:] == ['ps', 'ax'] and steps[2][-3:] == ['ip', '-json', 'addr']
