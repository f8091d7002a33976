#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ns_exec
short_description: Run a command inside a running ns_container container - what C(docker exec) does
version_added: 0.3.0
description:
  - Runs O(command) inside the container O(name) that M(unboxed.lab.ns_container) started, as C(docker exec) runs a
    command in a running Docker container, and returns its exit code and output.
  - The container is found through its state file (in O(state_dir)) and its process, the container's PID 1, by its PID
    B(and) its start time from C(/proc/PID/stat), as ns_container tracks it. A recorded PID that now belongs to another
    process is never joined.
  - The command joins everything the container's PID 1 has, in this order, before it runs - it never runs a moment
    outside the container. (1) Every namespace of PID 1 that differs from the host's (user first, then cgroup, ipc, uts,
    net, pid, mount, as C(nsenter --all) does), through C(setns) - in a user namespace of its own (ns_container's
    O(unboxed.lab.ns_container#module:userns_remap)) the command then becomes that namespace's root (uid and gid 0, no
    supplementary groups), as C(nsenter) and C(docker exec) do, so it is the mapped uid on the seat; (2) a child is forked, so that it is a process of the
    container's PID namespace (its PID 1 stays the container's); (3) the container's cgroups, when ns_container made
    some (for its C(memory), C(pids_limit), C(cpus) or C(cpu_shares)) - the command counts against the container's
    limits, and an OOM kill may take it; (4) its root directory (that of PID 1, C(/proc/PID/root)) and then O(workdir);
    (5) its confinement - the capabilities, C(no_new_privs) and the seccomp filter of the container, applied by the
    same code that confines the container's PID 1; then the command is executed.
  - The work is done by a small Python stage (the interpreter the module runs with) on the host, since the container's
    root holds no Python; RV(cmd) is the same with C(nsenter) from util-linux, as a student would type it. C(nsenter)
    cannot drop capabilities or load a seccomp filter, so for a confined container that part is the stage's only.
  - Like M(ansible.builtin.command), it always reports C(changed) (use C(changed_when) to say otherwise), fails when the
    command exits with a code other than 0, and in check mode does not run the command and reports the task as skipped.
  - Clear errors, before anything runs, for no such container, a container that is not running (ended, a zombie, its PID
    reused, being started), a container whose root was remounted, and a command or O(workdir) that does not exist
    inside the container.
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: partial
    details:
      - The container is looked up and checked (running, its root), but the command is not run; the task is skipped
        with a message, as M(ansible.builtin.command) does.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux only; needs root (C(setns)), and libseccomp for a container with a seccomp profile.
options:
  name:
    description:
      - The name of the container, as given to M(unboxed.lab.ns_container).
    type: str
    required: true
  command:
    description:
      - The program to run and its arguments, as a list (C([ps, -o, pid,comm])). The program is looked up in the
        C(PATH) of the command's environment, inside the container's root.
    type: list
    elements: str
    required: true
  env:
    description:
      - Variables added to the command's environment, which is otherwise the container's own (C(PATH), C(HOME) and
        the C(env) given to ns_container), as C(docker exec --env) does. Never the module's own environment.
    type: dict
    default: {}
  workdir:
    description:
      - The directory inside the container the command starts in, an absolute path inside it (C(docker exec
        --workdir)). Default the container's own working directory (the C(workdir) given to ns_container, or C(/)).
    type: str
  state_dir:
    description:
      - Where ns_container keeps the container's state, when it was given another than the default
        C(/run/unboxed/containers/NAME).
    type: path
  timeout:
    description:
      - Seconds to wait for the command. When they have passed, the command and the processes it started (its
        process group) are killed and the task fails. C(0), the default, waits as long as it takes.
    type: int
    default: 0
notes:
  - The command's standard input is C(/dev/null).
  - A command started in the background inside the container (C(sh -c 'sleep 100 &')) goes on running after the task,
    in the container, as after C(docker exec).
seealso:
  - module: unboxed.lab.ns_container
  - module: ansible.builtin.command
"""

EXAMPLES = r"""
- name: List the processes the container sees (its own PID namespace)
  unboxed.lab.ns_exec:
    name: talk
    command: [ps, -o, 'pid,comm']
  register: inside
  changed_when: false

- name: Show that the container's memory limit holds for a command run in it
  unboxed.lab.ns_exec:
    name: confined
    command: [sh, -c, 'cat /proc/self/cgroup']
  changed_when: false

- name: Run with a variable, in a directory of the container
  unboxed.lab.ns_exec:
    name: talk
    command: [sh, -c, 'echo "$GREETING from $(pwd)"']
    env:
      GREETING: hello
    workdir: /tmp
    timeout: 30
  changed_when: false
"""

RETURN = r"""
rc:
  description: The command's exit code; 128 + N when signal N killed it (137 for SIGKILL, e.g. an OOM kill), as a shell reports it.
  returned: when the command ran
  type: int
  sample: 0
stdout:
  description: What the command wrote to its standard output.
  returned: when the command ran
  type: str
  sample: "PID   COMMAND\n    1 tail\n    7 ps"
stderr:
  description: What the command wrote to its standard error.
  returned: when the command ran
  type: str
  sample: ""
stdout_lines:
  description: RV(stdout) split into lines.
  returned: when the command ran
  type: list
  elements: str
  sample: ["PID   COMMAND", "    1 tail", "    7 ps"]
stderr_lines:
  description: RV(stderr) split into lines.
  returned: when the command ran
  type: list
  elements: str
  sample: []
cmd:
  description:
    - The same with C(nsenter) from util-linux, as a student would type it on the host; with the container's cgroups, a
      C(sh) that moves itself into them (C(echo $$ > .../cgroup.procs)) first. It does not drop capabilities or load a
      seccomp filter - no util-linux command can, once it is inside a root without them.
  returned: always
  type: str
  sample: "nsenter --target 4242 --all --root --wd=/overlay/merged ps -o pid,comm"
pid:
  description: The container's PID 1, as the host numbers it.
  returned: always
  type: int
  sample: 4242
namespaces:
  description: The namespaces joined (those in which the container differs from the host), in the order they were joined.
  returned: always
  type: list
  elements: str
  sample: [net, pid, mount]
cgroups:
  description: The container's cgroups the command was placed in (directories); empty for a container that has none.
  returned: always
  type: list
  elements: str
  sample: [/sys/fs/cgroup/unboxed-confined]
confinement:
  description: The container's capabilities, C(no_new_privs) and seccomp profile that the command gets too.
  returned: always
  type: dict
  sample: {capabilities: all, no_new_privs: false, seccomp: unconfined}
workdir:
  description: The directory inside the container the command started in.
  returned: always
  type: str
  sample: /
start:
  description: When the command started (local time).
  returned: when the command ran
  type: str
  sample: "2026-11-29 19:05:01.123456"
end:
  description: When the command ended (local time).
  returned: when the command ran
  type: str
  sample: "2026-11-29 19:05:01.234567"
delta:
  description: How long the command ran.
  returned: when the command ran
  type: str
  sample: "0:00:00.111111"
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: Ran ps in container talk (PID 4242).
"""

import datetime
import json
import os
import signal
import sys
import threading

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import cgroups
from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import namespaces as ns_utils
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import process
from ansible_collections.unboxed.lab.plugins.module_utils.command import shell_join

# nsenter's order: the user namespace first (it may grant what the others need), the mount namespace last but time.
JOIN_ORDER = ('user', 'cgroup', 'ipc', 'uts', 'net', 'pid', 'mount')
# clone(2) flags, for setns(2).
CLONE_FLAGS = {'mount': 0x00020000, 'cgroup': 0x02000000, 'uts': 0x04000000, 'ipc': 0x08000000,
               'user': 0x10000000, 'pid': 0x20000000, 'net': 0x40000000}

# Exit codes of the stage itself, as docker exec uses them: 125 it could not join, 126 cannot execute, 127 not found.
JOIN_FAILED = 125
CANNOT_EXECUTE = 126
NOT_FOUND = 127

# The stage: started on the host, it joins the container and execs the command in a child. Fixed text: everything
# about this exec reaches it as JSON in argv[1] (no shell ever reads it) and the command as the rest of argv; the
# command's environment as JSON on a descriptor (env_fd). Errors go to the status descriptor as JSON
# (close-on-exec: a command that started leaves it empty).
STAGE_BODY = r'''
import signal, sys
config = json.loads(sys.argv[1])
command = sys.argv[2:]
status_fd = config['status_fd']
os.set_inheritable(status_fd, False)
# A process group of its own, so that a timeout kills the stage, the command and what it started together.
try:
    os.setsid()
except OSError:
    pass


def fail(code, text):
    os.write(status_fd, json.dumps({'code': code, 'error': text}).encode())
    os._exit(code)


with os.fdopen(config['env_fd'], 'rb') as handle:
    environment = {key.encode(): value.encode() for key, value in json.loads(handle.read()).items()}
libc = ctypes.CDLL(None, use_errno=True)
pid = config['pid']
try:
    prepared = unboxed_confine_prepare(config['confine']) if config['confine'] else None
    joins = [(name, flag, os.open('/proc/%d/ns/%s' % (pid, file), os.O_RDONLY | os.O_CLOEXEC))
             for name, file, flag in config['namespaces']]
    root_fd = os.open('/proc/%d/root' % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    null_fd = os.open('/dev/null', os.O_RDONLY | os.O_CLOEXEC)
    procs_fds = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in config['procs']]
    with open('/proc/%d/stat' % pid) as handle:
        stat = handle.read()
except Exception as error:  # the seccomp filter or /proc: whatever went wrong, said as the stage's own error
    fail(125, 'could not open what the container (PID %d) is made of: %s' % (pid, error))
# Opened first, checked after: what was opened belongs to the process that still has the recorded start time.
if int(stat[stat.rfind(')') + 2:].split()[19]) != config['start_time']:
    fail(125, 'the container (PID %d) ended while it was being joined' % pid)
for name, flag, descriptor in joins:
    if libc.setns(descriptor, flag) != 0:
        fail(125, 'could not join the %s namespace of PID %d: %s' % (name, pid, os.strerror(ctypes.get_errno())))
    os.close(descriptor)
child = os.fork()
if child == 0:
    os.dup2(null_fd, 0)
    try:
        for descriptor in procs_fds:
            os.write(descriptor, b'0')
    except OSError as error:
        fail(125, 'could not join the container\'s cgroups: %s' % error)
    if any(name == 'user' for name, _flag, _descriptor in joins):
        # setns keeps the caller's credentials: the seat's root, which a remapped namespace does not map (id -u
        # would say 65534, and the file system would see the seat's root). Become the namespace's root, as nsenter
        # and docker exec do: no supplementary groups (refused where the namespace denies setgroups), then gid, uid.
        try:
            os.setgroups([])
        except OSError:
            pass
        try:
            os.setgid(0)
            os.setuid(0)
        except OSError as error:
            fail(125, 'could not become root inside the user namespace of PID %d: %s' % (pid, error.strerror))
    try:
        os.fchdir(root_fd)
        os.chroot('.')
    except OSError as error:
        fail(125, 'could not enter the root directory of the container (PID %d): %s' % (pid, error))
    try:
        os.chdir(config['workdir'])
    except OSError as error:
        fail(126, 'workdir %s: %s inside the container' % (config['workdir'], error.strerror))
    try:
        if prepared is not None:
            unboxed_confine_apply(prepared)
    except OSError as error:
        fail(125, str(error))
    # execvp's search, spelled out: os.execvpe imports a module on the way, and the host's Python library is not
    # reachable in the container's root.
    search = [command[0]] if '/' in command[0] else [
        os.path.join(directory or '.', command[0])
        for directory in environment.get(b'PATH', b'').decode('utf-8', 'surrogateescape').split(':')]
    refused = None
    for candidate in search:
        try:
            os.execve(candidate, command, environment)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            refused = refused or error
    if refused is None:
        fail(127, '%s: command not found inside the container (PATH=%s)' % (
            command[0], environment.get(b'PATH', b'').decode('utf-8', 'replace')))
    fail(126, '%s: cannot run it inside the container: %s' % (command[0], refused.strerror))
os.close(status_fd)
for descriptor in procs_fds + [root_fd, null_fd]:
    os.close(descriptor)


def relay(signum, _frame):
    os.kill(child, signum)


for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(signum, relay)
_pid, status = os.waitpid(child, 0)
os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
'''


def argument_spec():
    return dict(
        name=dict(type='str', required=True),
        command=dict(type='list', elements='str', required=True),
        env=dict(type='dict', default={}),
        workdir=dict(type='str'),
        state_dir=dict(type='path'),
        timeout=dict(type='int', default=0),
    )


def request_problems(params) -> list[str]:
    """Every problem of the request at once, each naming its option."""
    problems = []
    problem = container.name_problem(params['name'])
    if problem:
        problems.append(problem)
    if not params['command'] or not params['command'][0]:
        problems.append('command must name a program to run inside the container, e.g. [ps, -ef].')
    problems += environ.env_name_problems('env', params['env'])
    if params['workdir'] is not None:
        problem = paths.absolute_path_problem('workdir', params['workdir'])
        if problem:
            problems.append(problem + ' (workdir is a path inside the container)')
    if params['state_dir']:
        problem = paths.absolute_path_problem('state_dir', params['state_dir'])
        if problem:
            problems.append(problem)
    if params['timeout'] < 0:
        problems.append(f'timeout must be 0 (no limit) or more seconds, got {params["timeout"]}.')
    return problems


def state_dir_of(params) -> str:
    return paths.normalize(params['state_dir']) if params['state_dir'] else container.default_state_dir(params['name'])


def joined_namespaces(pid: int, proc: str = process.PROC) -> list[str]:
    """The namespaces of ``pid`` that differ from this process's, in the order they are joined."""
    isolated = set(ns_utils.isolated_types(ns_utils.namespace_report(pid, 'self', proc)))
    return [namespace for namespace in JOIN_ORDER if namespace in isolated]


def root_problem(pid: int, rootfs: str, proc: str = process.PROC) -> str | None:
    """Why the root directory of the container's PID 1 is not one to join, or None."""
    running_on = container.file_identity(f'{proc}/{pid}/root')
    if running_on is None:
        return f'the root directory of its process (PID {pid}) cannot be read'
    if running_on == container.file_identity('/'):
        # Before its launch stages reach chroot or pivot_root, PID 1 still has the host's root.
        return f'its PID 1 ({pid}) has not entered its root file system yet: it is still being started'
    return container.root_remounted_problem(pid, rootfs, proc)


def container_workdir(spec, workdir: str | None) -> str:
    if workdir:
        return paths.normalize(workdir)
    return (spec.workdir if spec is not None and spec.workdir else '/')


def stage_config(pid: int, start_time: int, namespaces, procs_files, workdir: str, settings: str | None,
                 status_fd: int, env_fd: int) -> str:
    """argv[1] of the stage."""
    return json.dumps({
        'env_fd': env_fd,
        'pid': pid, 'start_time': start_time,
        'namespaces': [[name, ns_utils.NAMESPACE_FILES[name], CLONE_FLAGS[name]] for name in namespaces],
        'procs': list(procs_files), 'workdir': workdir,
        'confine': json.loads(settings) if settings else None, 'status_fd': status_fd,
    }, sort_keys=True, separators=(',', ':'))


def stage_argv(python: str, config: str, command) -> list[str]:
    return [python, '-I', '-c', confine.stage_script(STAGE_BODY), config] + list(command)


def shell_command(pid: int, rootfs: str, workdir: str, procs_files, command) -> str:
    """The exec as a student would type it on the host. nsenter opens --wd's directory before it enters: the host's
    path of the container's directory (its rootfs, as mounted on the host, and workdir inside it)."""
    host_workdir = paths.normalize(rootfs + '/' + workdir.lstrip('/')) if rootfs else workdir
    nsenter = ['nsenter', '--target', str(pid), '--all', '--root', f'--wd={host_workdir}'] + list(command)
    if not procs_files:
        return shell_join(nsenter)
    # $$ of a shell started for it: the student's own shell stays where it is.
    script = ' && '.join(f'echo $$ > {shell_join([procs])}' for procs in procs_files) + ' && exec "$@"'
    return shell_join(['sh', '-c', script, 'sh'] + nsenter)


def exit_code(returncode: int) -> int:
    """The stage's exit status as a shell shows it (a stage killed by a signal, e.g. on timeout: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def stage_failure(status_text: bytes) -> dict | None:
    """The stage's own error report ({code, error}), or None when the command ran."""
    if not status_text:
        return None
    try:
        report = json.loads(status_text.decode('utf-8', 'replace'))
    except ValueError:
        return {'code': JOIN_FAILED, 'error': status_text.decode('utf-8', 'replace')}
    return report if isinstance(report, dict) and 'error' in report else None


def failure_message(name: str, report: dict) -> str:
    code = report.get('code')
    if code == NOT_FOUND:
        return f'Command not found inside container {name}: {report["error"]}.'
    if code == CANNOT_EXECUTE:
        return f'Could not start the command inside container {name}: {report["error"]}.'
    return f'Could not join container {name}: {report["error"]}.'


def split_lines(text: str) -> list[str]:
    return text.splitlines()


class Deadline:
    """``timeout`` for run_command, which has none: once it has passed, the stage's process group - the stage (a
    session leader, it calls setsid first), the command and what the command started - is killed."""

    def __init__(self, timeout: int):
        self.timeout = timeout
        self.timer = None
        self.fired = False

    def start(self, stage) -> None:
        """run_command's before_communicate_callback: the stage has been started."""
        if self.timeout:
            self.timer = threading.Timer(self.timeout, self.kill, (stage.pid,))
            self.timer.daemon = True
            self.timer.start()

    def kill(self, pid: int) -> None:
        self.fired = True
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            # Not yet a group of its own: it has not forked the command either.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def environment_fd(environment: dict) -> int:
    """The command's environment, as JSON in a memfd for the stage: never on a command line (ps shows those to
    everyone), never the module's own environment (run_command gives the stage that)."""
    descriptor = os.memfd_create('unboxed-exec-environment', os.MFD_CLOEXEC)
    os.write(descriptor, json.dumps(environment).encode('utf-8'))
    os.lseek(descriptor, 0, os.SEEK_SET)
    return descriptor


class Exec:
    """One ns_exec task: find the container, check it, run the stage."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.name = self.params['name']
        self.result = {'changed': False, 'cmd': '', 'pid': None, 'namespaces': [], 'cgroups': [],
                       'confinement': confine.Confinement().to_dict(), 'workdir': None}

    def fail(self, msg: str, **extra):
        self.module.fail_json(msg=msg, **dict(self.result, **extra))

    def find(self):
        state_dir = state_dir_of(self.params)
        try:
            state = container.read_state(state_dir)
        except container.StateFileError as error:
            self.fail(f'Cannot tell whether container {self.name} runs: {error}.')
        _identity, reason = container.running_process(state)
        if reason == 'no such container':
            self.fail(f'No such container: {self.name} (nothing is recorded in {state_dir}; ns_container records a '
                      f'container there when it starts it).')
        if reason:
            self.fail(f'Container {self.name} cannot run a command: {reason}.')
        spec = container.recorded_spec(state)
        if spec is None:
            self.fail(f'Container {self.name} cannot run a command: its state file in {state_dir} records no spec '
                      f'this version understands; restart it with ns_container.')
        identity = container.recorded_process(state)
        self.result['pid'] = identity.pid
        problem = root_problem(identity.pid, spec.rootfs)
        if problem:
            self.fail(f'Container {self.name} cannot run a command: {problem}.')
        cgroup_data = state.get('cgroup')
        plan = cgroups.Plan.from_dict(cgroup_data) if cgroup_data else None
        if cgroup_data and plan is None:
            self.fail(f'Container {self.name} cannot run a command: its state records cgroups in a form this version '
                      f'does not trust; restart it with ns_container.')
        return state, spec, identity, plan

    def run(self):
        problems = request_problems(self.params)
        if problems:
            self.fail(' '.join(problems))
        _state, spec, identity, plan = self.find()
        namespaces = joined_namespaces(identity.pid)
        workdir = container_workdir(spec, self.params['workdir'])
        procs_files = plan.procs_files() if plan else []
        missing = [os.path.dirname(procs) for procs in procs_files if not os.path.exists(procs)]
        if missing:
            self.fail(f'Container {self.name} cannot run a command: its cgroups {", ".join(missing)} are gone.')
        confinement = spec.confinement
        self.result.update(
            namespaces=namespaces, cgroups=[os.path.dirname(procs) for procs in procs_files],
            confinement=confinement.to_dict(), workdir=workdir,
            cmd=shell_command(identity.pid, spec.rootfs, workdir, procs_files, self.params['command']))
        launch = None
        if confinement.confined:
            problems = confine.seccomp_problems('seccomp', confinement)
            if problems:
                self.fail(f'Container {self.name} cannot run a command with its confinement: {" ".join(problems)}')
            try:
                launch = confine.prepare_launch(confinement)
            except confine.SeccompError as error:
                self.fail(f'Container {self.name} cannot run a command: its seccomp profile: {error}')
        if self.module.check_mode:
            self.result.update(skipped=True, msg=f'Command would have run in container {self.name} if not in check mode')
            self.module.exit_json(**self.result)
        self.execute(spec, identity, namespaces, procs_files, workdir, launch)

    def execute(self, spec, identity, namespaces, procs_files, workdir, launch):
        environment = environ.clean_environment(dict(dict(spec.env), **self.params['env']))
        status_read, status_write = os.pipe()
        env_fd = environment_fd(environment)
        filter_fd = launch.filter_fd() if launch is not None else None
        passed = [status_write, env_fd] + ([filter_fd] if filter_fd is not None else [])
        settings = confine.stage_settings(launch.confinement, filter_fd) if launch is not None else None
        config = stage_config(identity.pid, identity.start_time, namespaces, procs_files, workdir, settings, status_write,
                              env_fd)
        deadline = Deadline(self.params['timeout'])
        started = datetime.datetime.now()
        try:
            returncode, stdout, stderr = self.module.run_command(
                stage_argv(sys.executable, config, self.params['command']), cwd='/', encoding=None, pass_fds=passed,
                before_communicate_callback=deadline.start, expand_user_and_vars=False)
        finally:
            deadline.cancel()
            for descriptor in passed:
                os.close(descriptor)
        ended = datetime.datetime.now()
        with os.fdopen(status_read, 'rb') as handle:
            report = stage_failure(handle.read())
        # As ansible.builtin.command returns them: without the final newline.
        out = stdout.decode('utf-8', 'replace').rstrip('\r\n')
        err = stderr.decode('utf-8', 'replace').rstrip('\r\n')
        self.result.update(
            rc=exit_code(returncode), stdout=out, stderr=err, stdout_lines=split_lines(out),
            stderr_lines=split_lines(err), start=str(started), end=str(ended), delta=str(ended - started))
        if report is not None:
            self.fail(failure_message(self.name, report))
        self.result['changed'] = True
        if deadline.fired:
            self.fail(f'The command did not end within {self.params["timeout"]} s (timeout) in container {self.name}: it '
                      f'was killed, with the processes it started.')
        if self.result['rc'] != 0:
            self.fail('non-zero return code')
        self.result['msg'] = f'Ran {self.params["command"][0]} in container {self.name} (PID {identity.pid}).'
        self.module.exit_json(**self.result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    Exec(module).run()


if __name__ == '__main__':
    main()
