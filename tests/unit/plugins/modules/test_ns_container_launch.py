"""How ns_container launches and finds a container (module_utils/container.py): argv, stages, state file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import process

TALK = 'unshare --fork --pid --net --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null'
HOST = container.Binaries(unshare='/usr/bin/unshare', chroot='/usr/sbin/chroot', sh='/bin/sh', hostname='/usr/bin/hostname',
                          mount='/usr/bin/mount', pivot_root='/usr/sbin/pivot_root', python='/usr/bin/python3')


def spec(**overrides):
    """The talk's container: chroot, as the talk types it (the module's default is pivot_root)."""
    base = dict(rootfs='/overlay/merged', command=['tail', '-f', '/dev/null'], root_method='chroot')
    base.update(overrides)
    return container.ContainerSpec.build(**base)


def test_the_default_spec_is_the_talks_command():
    assert container.shell_command(spec()) == TALK


def test_the_launch_runs_what_is_shown_with_absolute_programs():
    assert container.launch_argv(container.launch_stages(spec(), HOST)) == [
        '/usr/bin/unshare', '--fork', '--pid', '--net', '--mount-proc=/overlay/merged/proc',
        '/usr/sbin/chroot', '/overlay/merged', 'tail', '-f', '/dev/null']


@pytest.mark.parametrize('overrides, shown', [
    (dict(mount_proc=False), 'unshare --fork --pid --net --mount chroot /overlay/merged tail -f /dev/null'),
    (dict(namespaces=['net']), 'unshare --fork --net chroot /overlay/merged tail -f /dev/null'),
    (dict(namespaces=['cgroup', 'ipc', 'uts', 'pid', 'net', 'mount']),
     'unshare --fork --pid --net --mount-proc=/overlay/merged/proc --uts --ipc --cgroup chroot /overlay/merged tail -f /dev/null'),
    (dict(namespaces=['pid', 'mount', 'user']),
     'unshare --fork --pid --mount-proc=/overlay/merged/proc --user --map-root-user chroot /overlay/merged tail -f /dev/null'),
    (dict(env={'GREETING': 'hello world'}),
     "env 'GREETING=hello world' " + TALK),
    (dict(workdir='/srv/app'),
     'unshare --fork --pid --net --mount-proc=/proc --root=/overlay/merged --wd=/srv/app tail -f /dev/null'),
    (dict(namespaces=['pid', 'net', 'mount', 'uts'], hostname='web01'),
     "unshare --fork --pid --net --mount-proc=/overlay/merged/proc --uts "
     "sh -c 'hostname \"$1\" && shift && unset PWD && exec \"$@\"' sh web01 chroot /overlay/merged tail -f /dev/null"),
    (dict(namespaces=['pid', 'net', 'mount', 'uts'], hostname='web01', workdir='/srv'),
     "unshare --fork --pid --net --mount-proc=/overlay/merged/proc --uts "
     "sh -c 'hostname \"$1\" && shift && unset PWD && exec \"$@\"' sh web01 unshare --root=/overlay/merged --wd=/srv tail -f /dev/null"),
])
def test_shell_command_for_each_option(overrides, shown):
    assert container.shell_command(spec(**overrides)) == shown


def test_user_input_only_ever_reaches_the_launch_as_separate_arguments():
    hostile = spec(command=['sh', '-c', 'echo $HOME; reboot'], namespaces=['pid', 'mount', 'uts'], hostname='web01',
                   workdir='/a b;reboot')
    stages = container.launch_stages(hostile, HOST)
    script = stages[1][2]
    assert script == '/usr/bin/hostname "$1" && shift && unset PWD && exec "$@"'
    assert stages[1][4] == 'web01'
    assert stages[2] == ['/usr/bin/unshare', '--root=/overlay/merged', '--wd=/a b;reboot']
    assert stages[3] == ['sh', '-c', 'echo $HOME; reboot']


def test_pivot_root_runs_a_fixed_python_stage_with_data_as_arguments():
    pivot = spec(root_method='pivot_root', namespaces=['pid', 'net', 'mount', 'uts'], hostname='web01', workdir='/srv')
    stages = container.launch_stages(pivot, HOST)
    assert stages[0] == ['/usr/bin/unshare', '--fork', '--pid', '--net', '--mount-proc=/overlay/merged/proc', '--uts']
    assert stages[1] == ['/usr/bin/python3', '-I', '-c', container.PIVOT_ROOT_STAGE, '/usr/bin/mount', '/usr/sbin/pivot_root',
                         '/overlay/merged', '/srv', 'web01']
    assert stages[2] == ['tail', '-f', '/dev/null']
    compile(container.PIVOT_ROOT_STAGE, 'pivot_root stage', 'exec')
    for step in ("'--rbind', rootfs, rootfs", "[pivot_root, '.', '.']", "umount2(b'.', 2)", 'os.execvpe(command[0]'):
        assert step in container.PIVOT_ROOT_STAGE


def test_pivot_root_without_a_hostname_or_workdir_passes_empty_and_root():
    stages = container.launch_stages(spec(root_method='pivot_root'), HOST)
    assert stages[1][-3:] == ['/overlay/merged', '/', '']


def test_transitional_cmdlines_are_every_stage_before_the_command():
    stages = [['unshare', '--fork', '--pid'], ['chroot', '/r'], ['tail', '-f', '/dev/null']]
    assert container.transitional_cmdlines(stages) == [
        ['unshare', '--fork', '--pid', 'chroot', '/r', 'tail', '-f', '/dev/null'],
        ['chroot', '/r', 'tail', '-f', '/dev/null'],
    ]
    assert ['tail', '-f', '/dev/null'] not in container.transitional_cmdlines(stages)


def test_the_container_environment_is_clean():
    env = environ.clean_environment({'GREETING': 'hello', 'PATH': '/bin'})
    assert env == {'PATH': '/bin', 'HOME': '/root', 'GREETING': 'hello'}
    assert environ.clean_environment(None) == {'PATH': environ.DEFAULT_PATH, 'HOME': '/root'}


def test_state_file_round_trip_and_atomic_replace(tmp_path):
    state_dir = str(tmp_path)
    assert container.read_state(state_dir) is None
    container.write_state(state_dir, {'name': 'talk', 'spec': spec().to_dict(), 'process': {'pid': 12, 'start_time': 34}})
    state = container.read_state(state_dir)
    assert state['format'] == container.STATE_FORMAT
    assert container.recorded_spec(state) == spec()
    assert container.recorded_process(state) == process.ProcessIdentity(12, 34)
    assert os.listdir(state_dir) == ['state.json']
    assert oct(os.stat(container.state_file_path(state_dir)).st_mode & 0o777) == '0o600'


@pytest.mark.parametrize('content', ['{not json', '[]', '{"format": 99}'])
def test_a_state_file_that_cannot_be_trusted_raises(tmp_path, content):
    (tmp_path / 'state.json').write_text(content)
    with pytest.raises(container.StateFileError, match='state.json'):
        container.read_state(str(tmp_path))


def test_read_log_tail_reads_only_what_came_after_the_offset(tmp_path):
    log = tmp_path / 'container.log'
    log.write_text('old line\n')
    offset = log.stat().st_size
    with open(log, 'a', encoding='utf-8') as handle:
        handle.write(''.join(f'line {number}\n' for number in range(30)))
    tail = container.read_log_tail(str(log), offset, max_lines=3)
    assert tail == 'line 27\nline 28\nline 29'
    assert container.read_log_tail(str(tmp_path / 'missing.log')) == ''


@pytest.mark.parametrize('name, ok', [('talk', True), ('web-01.lab_2', True), ('1', True), ('', False), ('-x', False),
                                      ('a b', False), ('..', False), ('x' * 64, True), ('x' * 65, False),
                                      ('talk\n', False), ('\ntalk', False), ('ta\nlk', False), ('x' * 64 + '\n', False)])
def test_name_problem(name, ok):
    assert (container.name_problem(name) is None) is ok


def fake_proc_for_chroot_check(tmp_path, pid1_root, pid1_mount_ns=None):
    """A /proc-like tree with our own mount namespace link and PID 1's root and namespace links."""
    proc = tmp_path / 'proc'
    (proc / 'self' / 'ns').mkdir(parents=True)
    (proc / '1' / 'ns').mkdir(parents=True)
    own_mount_ns = os.readlink('/proc/self/ns/mnt')
    os.symlink(own_mount_ns, proc / 'self' / 'ns' / 'mnt')
    os.symlink(pid1_mount_ns or own_mount_ns, proc / '1' / 'ns' / 'mnt')
    os.symlink(pid1_root, proc / '1' / 'root')
    return str(proc)


def test_is_chrooted_compares_our_root_with_pid_1s(tmp_path):
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    assert container.is_chrooted(fake_proc_for_chroot_check(tmp_path / 'a', '/')) is False
    assert container.is_chrooted(fake_proc_for_chroot_check(tmp_path / 'b', str(elsewhere))) is True
    # PID 1 in another mount namespace (a container's init, say) says nothing about a chroot: cannot tell.
    assert container.is_chrooted(fake_proc_for_chroot_check(tmp_path / 'c', str(elsewhere), 'mnt:[1]')) is None


def test_is_chrooted_inside_a_real_chroot(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('chroot needs root')
    # A private mount namespace in which / is bound at ROOT; sh stays outside the chroot, its child runs inside.
    # The directory that holds ansible_collections/, wherever this run imported the collection from.
    package = os.path.abspath(container.__file__)
    while os.path.basename(package) != 'ansible_collections':
        package = os.path.dirname(package)
    code = ('import json, sys; sys.path.insert(0, sys.argv[1]); '
            'from ansible_collections.unboxed.lab.plugins.module_utils import container; '
            'print(json.dumps(container.is_chrooted()))')
    root = str(tmp_path / 'root')
    os.mkdir(root)
    result = subprocess.run(
        ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --rbind / "$1" && chroot "$@"',
         'sh', root, sys.executable, '-c', code, os.path.dirname(package)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is True
    assert container.is_chrooted() is not True


def test_a_detached_process_is_a_daemon_that_stays_our_child(tmp_path):
    log = tmp_path / 'out.log'
    leaked = os.open(os.devnull, os.O_RDONLY)  # inheritable, as an Ansible pipe would be: must not reach the daemon
    os.set_inheritable(leaked, True)
    try:
        with open(log, 'ab') as handle:
            spawned = container.DetachedProcess.spawn(['/bin/sh', '-c', 'read line; echo "stdin [$line]"; exec sleep 300'],
                                                      {'PATH': '/usr/bin:/bin'}, handle.fileno(), cwd=str(tmp_path))
    finally:
        os.close(leaked)
    try:
        identity = process.identity_of(spawned.pid)
        while process.read_cmdline(spawned.pid) != ['sleep', '300']:
            assert process.is_running(identity), log.read_text()
            time.sleep(0.01)
        assert os.getsid(spawned.pid) == spawned.pid != os.getsid(0)
        assert sorted(os.listdir(f'/proc/{spawned.pid}/fd')) == ['0', '1', '2']
        assert os.readlink(f'/proc/{spawned.pid}/fd/0') == '/dev/null'
        assert os.readlink(f'/proc/{spawned.pid}/fd/1') == str(log) == os.readlink(f'/proc/{spawned.pid}/fd/2')
        assert os.readlink(f'/proc/{spawned.pid}/cwd') == str(tmp_path)
        assert log.read_text() == 'stdin []\n'
        with open(f'/proc/{spawned.pid}/status', encoding='ascii') as status:
            ignored = int(next(line for line in status if line.startswith('SigIgn:')).split()[1], 16)
        assert not ignored & (1 << (signal.SIGPIPE - 1)), 'SIGPIPE stayed ignored, as Python has it'
    finally:
        os.kill(spawned.pid, signal.SIGKILL)
        spawned.wait(timeout=60)


def test_a_detached_process_reports_its_exit_code(tmp_path):
    with open(tmp_path / 'out.log', 'ab') as handle:
        spawned = container.DetachedProcess.spawn(['/bin/sh', '-c', 'exit 3'], {}, handle.fileno())
    assert spawned.wait(timeout=60) == 3


def test_a_detached_process_reports_the_signal_that_ended_it(tmp_path):
    with open(tmp_path / 'out.log', 'ab') as handle:
        spawned = container.DetachedProcess.spawn(['/bin/sleep', '300'], {}, handle.fileno())
    assert spawned.poll() is None
    os.kill(spawned.pid, signal.SIGKILL)
    assert spawned.wait(timeout=60) == -signal.SIGKILL


def test_a_detached_process_that_cannot_be_run_raises(tmp_path):
    with open(tmp_path / 'out.log', 'ab') as handle:
        with pytest.raises(OSError, match='cannot run /nonexistent/program'):
            container.DetachedProcess.spawn(['/nonexistent/program'], {}, handle.fileno())


# ---- a container found by what it is, a root that is no longer the live one ------------------------------------------

def test_find_launched_knows_a_launcher_by_its_command_line_and_log_file(tmp_path):
    """An interrupted run's container: no PID recorded, but its exact launch argv and its output on the log."""
    argv = ['/bin/sh', '-c', 'sleep 300; exit 0']  # the shell forks sleep: a launcher and its child, as unshare --fork
    log, other_log = tmp_path / 'container.log', tmp_path / 'other.log'
    other_log.write_text('')
    with open(log, 'ab') as handle:
        spawned = container.DetachedProcess.spawn(argv, {'PATH': '/usr/bin:/bin'}, handle.fileno())
    try:
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline:
            found = container.find_launched(argv, str(log))
            time.sleep(0.02)
        assert found is not None
        assert found.launcher == process.identity_of(spawned.pid)
        assert process.read_cmdline(found.pid1.pid) == ['sleep', '300']
        assert process.read_proc_stat(found.pid1.pid).ppid == spawned.pid
        # The same command line with its output elsewhere is another container; another command line too.
        assert container.find_launched(argv, str(other_log)) is None
        assert container.find_launched(argv[:-1] + ['sleep 300; exit 1'], str(log)) is None
        assert container.find_launched(argv, str(tmp_path / 'missing.log')) is None
    finally:
        os.killpg(spawned.pid, signal.SIGKILL)
        spawned.wait(timeout=60)


def fake_proc_root(tmp_path, pid, root):
    (tmp_path / 'proc' / str(pid)).mkdir(parents=True)
    os.symlink(root, tmp_path / 'proc' / str(pid) / 'root')
    return str(tmp_path / 'proc')


def test_root_remounted_compares_the_containers_root_with_the_live_rootfs(tmp_path):
    old_root, new_root = tmp_path / 'old', tmp_path / 'new'
    old_root.mkdir()
    new_root.mkdir()
    proc = fake_proc_root(tmp_path, 4242, str(old_root))
    assert container.root_remounted_problem(4242, str(old_root), proc) is None
    problem = container.root_remounted_problem(4242, str(new_root), proc)
    assert problem.startswith(f'its root file system was remounted: the container (PID 4242) still runs on the root that '
                              f'was at {new_root} when it started (device ')
    # What cannot be read is no claim: a process gone, a rootfs missing.
    assert container.root_remounted_problem(4243, str(new_root), proc) is None
    assert container.root_remounted_problem(4242, str(tmp_path / 'missing'), proc) is None


# ---- confinement in the launch -------------------------------------------------------------------------------------

def confined(**overrides):
    from ansible_collections.unboxed.lab.plugins.module_utils import confine
    base = dict(root_method='pivot_root', confinement=confine.Confinement.build(['docker'], False, 'docker'))
    base.update(overrides)
    return spec(**base)


def test_the_talks_launch_is_unchanged_by_confinement_support():
    assert container.launch_argv(container.launch_stages(spec(), HOST))[-3:] == ['tail', '-f', '/dev/null']
    assert container.shell_command(spec()) == TALK
    assert not spec().confinement.confined and not spec().wants_cgroup


def test_an_unconfined_pivot_root_launch_keeps_its_stage():
    stages = container.launch_stages(spec(root_method='pivot_root'), HOST)
    assert stages[1][3] == container.PIVOT_ROOT_STAGE and len(stages[1]) == 9


def test_a_confined_launch_passes_its_settings_as_one_json_argument():
    stages = container.launch_stages(confined(), HOST)
    assert stages[1][:4] == ['/usr/bin/python3', '-I', '-c', container.PIVOT_ROOT_CONFINED_STAGE]
    settings = json.loads(stages[1][-1])
    assert settings == {'capabilities': [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31], 'no_new_privs': False,
                        'seccomp': 'docker', 'seccomp_filter_fd': 3}
    assert stages[2] == ['tail', '-f', '/dev/null']
    # The same spec gives the same command line: a killed run's container is found again by it.
    assert container.launch_stages(confined(), HOST) == stages
    compile(container.PIVOT_ROOT_CONFINED_STAGE, 'confined stage', 'exec')
    text = container.PIVOT_ROOT_CONFINED_STAGE
    # Prepared on the host before pivot_root, applied after it, right before the command.
    assert text.index('unboxed_confine_prepare(json.loads(settings))') < text.index('[pivot_root, ')
    assert text.index('umount2(') < text.index('    unboxed_confine_apply(prepared)\n') < text.index('os.execvpe(')


def test_confinement_and_limits_survive_the_state_file_and_an_old_record_has_none():
    from ansible_collections.unboxed.lab.plugins.module_utils import cgroups
    limits = cgroups.Limits(memory=64 * 1024 * 1024, pids_limit=64, cpus='0.5', cpu_shares=512)
    full = confined(limits=limits, cgroup_parent='/unboxed')
    assert container.ContainerSpec.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    old_record = spec().to_dict()
    for key in ('capabilities', 'no_new_privs', 'seccomp', 'memory', 'pids_limit', 'cpus', 'cpu_shares', 'cgroup_parent'):
        del old_record[key]
    assert container.ContainerSpec.from_dict(old_record) == spec()
    assert container.spec_changes(spec(root_method='pivot_root'), confined()) == ['capabilities', 'seccomp']
    assert full.wants_cgroup and full.limits == limits


def test_a_passed_descriptor_arrives_as_descriptor_3_and_nothing_else_does(tmp_path):
    log = tmp_path / 'log'
    read_end, write_end = os.pipe()
    os.write(write_end, b'filter')
    os.close(write_end)
    opened = os.open(os.devnull, os.O_RDONLY)
    other = os.dup2(opened, 50)  # inheritable, so it would leak: it must not arrive
    os.close(opened)
    log_fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        spawned = container.DetachedProcess.spawn(
            ['/bin/sh', '-c', 'cat <&3; ls /proc/self/fd | tr "\\n" " "'], {'PATH': '/usr/bin:/bin'}, log_fd, pass_fd=read_end)
    finally:
        os.close(log_fd)
        os.close(read_end)
        os.close(other)
    assert spawned.wait(timeout=10) == 0
    text = log.read_text()
    listed = text[len('filter'):].split()
    # 0-2, the passed descriptor, and the one ls reads /proc/self/fd with.
    assert text.startswith('filter') and {'0', '1', '2', '3'} <= set(listed) and '50' not in listed and len(listed) == 5


def test_a_failing_in_child_step_fails_the_spawn_with_its_text(tmp_path):
    log_fd = os.open(str(tmp_path / 'log'), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def refuse():
        raise OSError('Could not move process 0 into /sys/fs/cgroup/pids/unboxed-x: No such file or directory.')
    try:
        with pytest.raises(OSError, match=r'^Could not move process 0 into'):
            container.DetachedProcess.spawn(['/bin/true'], {}, log_fd, in_child=refuse)
    finally:
        os.close(log_fd)
