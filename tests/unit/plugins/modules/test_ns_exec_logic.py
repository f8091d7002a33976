"""ns_exec's pure logic: request validation, why a container cannot be joined, the namespaces joined and their
order, the stage's configuration, the equivalent nsenter command, exit codes and the stage's error reports.

The stage itself (setns, fork, cgroups, chroot, confinement, exec) runs for real in tests/system/test_ns_exec.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import confine, container, process
from ansible_collections.unboxed.lab.plugins.modules import ns_exec


def params(**overrides):
    base = dict(name='talk', command=['ps', '-ef'], env={}, workdir=None, state_dir=None, timeout=0)
    base.update(overrides)
    return base


@pytest.mark.parametrize('overrides, problems', [
    (dict(), []),
    (dict(workdir='/app', state_dir='/srv/state', timeout=30, env={'A': '1'}), []),
    (dict(name='../etc'), ['name "../etc" is not a safe container name']),
    (dict(name='talk\n'), ['name "talk\\n" is not a safe container name']),
    (dict(command=[]), ['command must name a program']),
    (dict(command=['']), ['command must name a program']),
    (dict(env={'BAD-NAME': 'x'}), ['env has the variable name "BAD-NAME"']),
    (dict(workdir='app'), ['workdir must be an absolute path, got "app"']),
    (dict(state_dir='state'), ['state_dir must be an absolute path, got "state"']),
    (dict(timeout=-1), ['timeout must be 0 (no limit) or more seconds, got -1.']),
    (dict(name='', command=[], timeout=-5), ['name "" is not a safe container name', 'command must name a program',
                                             'timeout must be 0']),
])
def test_request_problems_are_collected_at_once(overrides, problems):
    found = ns_exec.request_problems(params(**overrides))
    assert len(found) == len(problems), found
    for problem, start in zip(found, problems):
        assert problem.startswith(start), (problem, start)


def test_argument_spec_validates_types():
    result = ArgumentSpecValidator(ns_exec.argument_spec()).validate({'name': 'talk', 'command': 'ps'})
    assert result.error_messages == [] and result.validated_parameters['command'] == ['ps']
    result = ArgumentSpecValidator(ns_exec.argument_spec()).validate({'name': 'talk'})
    assert result.error_messages == ['missing required arguments: command']
    result = ArgumentSpecValidator(ns_exec.argument_spec()).validate({'name': 'talk', 'command': ['ps'], 'timeout': 'x'})
    assert 'timeout' in result.error_messages[0]


def test_state_dir_default_and_given():
    assert ns_exec.state_dir_of(params()) == '/run/unboxed/containers/talk'
    assert ns_exec.state_dir_of(params(state_dir='/srv//state/')) == '/srv/state'


# --- is it running? -------------------------------------------------------------------------------------------

def reason_of(state):
    """Why container.running_process says a recorded container cannot be joined (None: it runs)."""
    identity, reason = container.running_process(state)
    assert (identity is None) == (reason is not None)
    return reason


def test_not_running_reasons(sleeper):
    own = process.identity_of(sleeper.pid)
    assert reason_of(None) == 'no such container'
    assert reason_of({'process': None}) == 'it is not running (it was stopped)'
    assert 'did not finish' in reason_of({'process': None, 'launching': {'argv': ['x']}})
    assert reason_of({'process': own.to_dict()}) is None
    reused = {'process': {'pid': own.pid, 'start_time': own.start_time - 1}}
    assert reason_of(reused) == (
        f'it is not running: PID {own.pid} now belongs to another process (sleep), which is left alone')
    sleeper.kill()
    sleeper.wait()
    assert reason_of({'process': own.to_dict()}) == (
        f'it is not running: its process (PID {own.pid}) has ended')


def test_a_zombie_is_not_running():
    child = subprocess.Popen(['true'])
    deadline = time.monotonic() + 5
    while process.read_proc_stat(child.pid).state != 'Z' and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        reason = reason_of({'process': process.identity_of(child.pid).to_dict()})
        assert reason == f'it is not running: its process (PID {child.pid}) is a zombie'
    finally:
        child.wait()


def test_a_process_on_the_hosts_root_is_still_being_started(sleeper):
    assert 'still being started' in ns_exec.root_problem(sleeper.pid, '/srv/rootfs')
    assert 'cannot be read' in ns_exec.root_problem(2 ** 22 + 7, '/srv/rootfs')


# --- namespaces, stage, command --------------------------------------------------------------------------------

def test_namespaces_are_joined_in_nsenters_order(sleeper):
    assert ns_exec.joined_namespaces(sleeper.pid) == []  # the same as ours: nothing to join
    assert ns_exec.JOIN_ORDER[0] == 'user' and ns_exec.JOIN_ORDER[-1] == 'mount'
    assert set(ns_exec.JOIN_ORDER) == set(ns_exec.CLONE_FLAGS)


def test_stage_config_is_json_with_the_flags():
    config = json.loads(ns_exec.stage_config(4242, 99, ['user', 'pid', 'mount'], ['/sys/fs/cgroup/pids/unboxed-x/cgroup.procs'],
                                             '/app', None, 5, 6))
    assert config == {
        'pid': 4242, 'start_time': 99, 'workdir': '/app', 'confine': None, 'status_fd': 5, 'env_fd': 6,
        'namespaces': [['user', 'user', 0x10000000], ['pid', 'pid', 0x20000000], ['mount', 'mnt', 0x00020000]],
        'procs': ['/sys/fs/cgroup/pids/unboxed-x/cgroup.procs'],
    }
    settings = confine.stage_settings(confine.Confinement.build(['docker'], True, None), 7)
    assert json.loads(ns_exec.stage_config(1, 2, [], [], '/', settings, 5, 6))['confine']['no_new_privs'] is True


def test_stage_argv_carries_the_confinement_functions_and_the_command():
    argv = ns_exec.stage_argv('/usr/bin/python3', '{}', ['sh', '-c', 'echo "$1"', 'sh', 'a b'])
    assert argv[:3] == ['/usr/bin/python3', '-I', '-c']
    assert 'def unboxed_confine_apply' in argv[3] and 'os.fork()' in argv[3]
    assert argv[4:] == ['{}', 'sh', '-c', 'echo "$1"', 'sh', 'a b']


def test_the_stage_compiles():
    compile(confine.stage_script(ns_exec.STAGE_BODY), 'stage', 'exec')


def test_shell_command_without_cgroups():
    assert ns_exec.shell_command(4242, '/overlay/merged', '/', [], ['ps', '-o', 'pid,comm']) == (
        'nsenter --target 4242 --all --root --wd=/overlay/merged ps -o pid,comm')
    assert ns_exec.shell_command(4242, '/overlay/merged', '/app', [], ['sh', '-c', 'echo $HOME']) == (
        "nsenter --target 4242 --all --root --wd=/overlay/merged/app sh -c 'echo $HOME'")


def test_shell_command_moves_a_new_shell_into_the_cgroups():
    procs = ['/sys/fs/cgroup/pids/unboxed-c/cgroup.procs', '/sys/fs/cgroup/unified/unboxed-c/cgroup.procs']
    assert ns_exec.shell_command(7, '/r', '/', procs, ['ls']) == (
        "sh -c 'echo $$ > /sys/fs/cgroup/pids/unboxed-c/cgroup.procs && echo $$ > "
        "/sys/fs/cgroup/unified/unboxed-c/cgroup.procs && exec \"$@\"' sh nsenter --target 7 --all --root --wd=/r ls")


class _Spec:
    workdir = '/app'


def test_workdir_defaults_to_the_containers():
    assert ns_exec.container_workdir(_Spec(), None) == '/app'
    assert ns_exec.container_workdir(_Spec(), '/tmp/') == '/tmp'
    assert ns_exec.container_workdir(None, None) == '/'


@pytest.mark.parametrize('returncode, rc', [(0, 0), (3, 3), (137, 137), (-9, 137), (-15, 143)])
def test_exit_code_as_a_shell_shows_it(returncode, rc):
    assert ns_exec.exit_code(returncode) == rc


@pytest.mark.parametrize('text, expected, message', [
    (b'', None, None),
    (b'{"code": 127, "error": "nope: command not found inside the container (PATH=/bin)"}', 127,
     'Command not found inside container talk: nope: command not found'),
    (b'{"code": 126, "error": "workdir /x: No such file or directory inside the container"}', 126,
     'Could not start the command inside container talk: workdir /x'),
    (b'{"code": 125, "error": "the container (PID 9) ended while it was being joined"}', 125,
     'Could not join container talk: the container (PID 9) ended'),
    (b'garbage', 125, 'Could not join container talk: garbage'),
])
def test_stage_failures_become_messages(text, expected, message):
    report = ns_exec.stage_failure(text)
    if expected is None:
        assert report is None
        return
    assert report['code'] == expected
    assert ns_exec.failure_message('talk', report).startswith(message)


def test_deadline_kills_the_stages_process_group():
    # A stage stand-in: a session of its own with a child, as the stage and the command it forks.
    stage = subprocess.Popen([sys.executable, '-c', 'import os, time\nos.setsid()\nif os.fork() == 0:\n'
                              '    time.sleep(60)\nprint("begun", flush=True); time.sleep(60)'], stdout=subprocess.PIPE)
    deadline = ns_exec.Deadline(1)
    deadline.start(stage)
    try:
        assert stage.stdout.readline() == b'begun\n'
        assert stage.wait(timeout=10) == -9 and deadline.fired
    finally:
        deadline.cancel()
        stage.stdout.close()
    wait_until = time.monotonic() + 5
    while live_members(stage.pid) and time.monotonic() < wait_until:
        time.sleep(0.02)
    assert live_members(stage.pid) == []


def test_no_timeout_no_timer(sleeper):
    deadline = ns_exec.Deadline(0)
    deadline.start(sleeper)
    deadline.cancel()
    assert deadline.timer is None and not deadline.fired and sleeper.poll() is None


def test_environment_travels_on_a_descriptor():
    descriptor = ns_exec.environment_fd({'PATH': '/bin', 'GREETING': 'olá'})
    try:
        assert json.loads(os.read(descriptor, 4096)) == {'PATH': '/bin', 'GREETING': 'olá'}
    finally:
        os.close(descriptor)


def live_members(group):
    """Processes of a process group that still run (a killed child waits as a zombie for whoever reaps it)."""
    found = []
    for pid in process.all_pids():
        try:
            with open(f'/proc/{pid}/stat', encoding='utf-8') as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in 'ZX':
            found.append(pid)
    return found
