#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: chroot_exec
short_description: Run a command inside a root file system with chroot, like ansible.builtin.command
version_added: 0.1.0
description:
  - Runs a command with its root directory changed to O(root), as C(chroot /overlay/merged ps ax) does in the talk,
    and returns its output like M(ansible.builtin.command).
  - Give the command as an argument list (O(argv)), or as a string (O(cmd)) that C(/bin/sh -c) runs B(inside) the
    root - the shell form of a Dockerfile's C(RUN). The string is never interpreted on the host.
  - O(commands) runs several argument lists one after the other in the same root, with the same O(mounts), O(env)
    and O(chdir), in one task - one round trip to the host instead of one per command (the talk's chroot slide looks
    with C(ps ax) and C(ip addr) in one task). Each command's output is in RV(results).
  - O(mounts) mounts C(/proc), C(/sys) or C(/dev) inside the root for the duration of the command, and always
    unmounts them afterwards, also when the command fails - the talk's C(mount -t proc proc /proc) inside the chroot.
  - The command starts with a clean environment (C(PATH) and C(HOME=/root)) plus O(env), as a container
    process would, not with the environment of the Ansible module.
  - B(chroot is not isolation.) The command shares the host's processes, network interfaces, hostname, IPC, users
    and kernel; with C(/proc) mounted it sees and can signal every host process, and a root process can leave a
    chroot. That is the lesson of the talk. For isolation use M(unboxed.lab.ns_container).
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: partial
    details: As M(ansible.builtin.command) - in check mode the command is skipped unless O(creates) or O(removes) decide it.
      A root that does not exist yet is no error in check mode (an earlier task of the run may create it).
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  root:
    description:
      - The directory that becomes C(/) for the command, for example the merged directory of an overlay.
      - Must not be C(/) or a system directory, nor lead to one through a symbolic link (the message says where it leads).
    type: path
    required: true
  argv:
    description:
      - The command and its arguments as a list. The program is looked up in C(PATH) B(inside) the root.
      - Exactly one of O(argv), O(cmd) and O(commands) is required.
    type: list
    elements: str
  cmd:
    description:
      - A shell command line, run as C(/bin/sh -c CMD) inside the root (C(/bin/sh) of the root, not of the host).
      - Exactly one of O(argv), O(cmd) and O(commands) is required.
    type: str
  commands:
    description:
      - Several commands, each an argument list as O(argv), run in this order inside the root, in one task. The
        mounts of O(mounts) stay in place for all of them; O(stdin) goes to each.
      - The first command that exits non-zero fails the task; the commands after it do not run.
      - Exactly one of O(argv), O(cmd) and O(commands) is required.
    type: list
    elements: raw
    version_added: 0.2.0
  chdir:
    description:
      - Directory inside the root to run the command in. Needs C(/bin/sh) inside the root.
    type: str
  env:
    description:
      - Extra environment variables for the command. C(PATH) given here replaces the default.
    type: dict
    default: {}
  creates:
    description:
      - A path inside the root. When it already exists, the command (or O(commands)) is not run.
    type: str
  removes:
    description:
      - A path inside the root. When it does not exist, the command (or O(commands)) is not run.
    type: str
  stdin:
    description:
      - Text written to the command's standard input.
    type: str
  stdin_add_newline:
    description:
      - Whether to add a newline at the end of O(stdin).
    type: bool
    default: true
  mounts:
    description:
      - Pseudo file systems to mount inside the root for the duration of the command and unmount afterwards.
      - V(proc) mounts a C(proc) file system at C(ROOT/proc) (what C(ps) reads), V(sys) a C(sysfs) at C(ROOT/sys),
        V(dev) binds the host's C(/dev) at C(ROOT/dev).
      - A mount point that already has a mount of its own (one this module did not make) is left as it is, and not
        unmounted afterwards.
      - C(ROOT/proc), C(ROOT/sys), C(ROOT/dev) must be real directories of the root. A symbolic link there is refused,
        even one that stays inside - C(mount) follows links on the host, so a link C(ROOT/dev) to C(/dev) would
        mount over the host's own C(/dev).
      - Runs on the same root at once share these mounts - a run mounts what is missing and the last run still
        using a mount unmounts it, so one run never unmounts what another's command is using. Who uses them is
        recorded in C(/run/unboxed/chroot-mounts); mounts left by a run that was killed are unmounted by the next
        real run on that root.
    type: list
    elements: str
    choices: [proc, sys, dev]
    default: []
  lock_timeout:
    description:
      - How many seconds to wait for another run on the same root that is mounting or unmounting (the command
        itself runs without the lock). Not used in check mode.
    type: int
    default: 60
notes:
  - Requires root (chroot and mount are privileged).
  - The returned RV(command) is the equivalent shell command sequence for reading and copying by hand.
seealso:
  - module: ansible.builtin.command
  - module: unboxed.lab.overlay_mount
  - module: unboxed.lab.ns_container
"""

EXAMPLES = r"""
- name: Look around inside the container's root with chroot (host processes are visible)
  unboxed.lab.chroot_exec:
    root: /overlay/merged
    argv: [ps, ax]
    mounts: [proc]
  register: chroot_ps
  changed_when: false

- name: Look at the processes and the interfaces in one task (one round trip to the host)
  unboxed.lab.chroot_exec:
    root: /overlay/merged
    commands:
      - [ps, ax]
      - [ip, -json, addr]
    mounts: [proc]
  register: chroot_seen
  changed_when: false
# chroot_seen.results[0].stdout is the output of ps ax, chroot_seen.results[1].stdout that of ip -json addr

- name: Shell form, like a Dockerfile RUN line; the shell is the root's /bin/sh
  unboxed.lab.chroot_exec:
    root: /overlay/merged
    cmd: echo "Texto" > /file01.txt
    creates: /file01.txt

- name: Run with a working directory and extra environment inside the root
  unboxed.lab.chroot_exec:
    root: /overlay/merged
    argv: [ls, -la]
    chdir: /etc
    env:
      LANG: C.UTF-8
"""

RETURN = r"""
cmd:
  description: The command as run inside the root (argument list); with O(commands), the last one that ran.
  returned: always
  type: list
  elements: str
  sample: [ps, ax]
results:
  description:
    - One entry per command that ran, in order, each with the keys C(cmd), C(rc), C(stdout), C(stderr),
      C(stdout_lines), C(stderr_lines), C(start), C(end), C(delta) as for a single command.
    - With O(argv) or O(cmd), the one command; empty when nothing ran.
  returned: always
  type: list
  elements: dict
  sample:
    - {cmd: [ps, ax], rc: 0, stdout: "    PID TTY      STAT   TIME COMMAND", stderr: '', stdout_lines: ["    PID TTY      STAT   TIME COMMAND"],
       stderr_lines: [], start: '2026-11-28 23:40:01.123456', end: '2026-11-28 23:40:01.223456', delta: '0:00:00.100000'}
command:
  description:
    - The equivalent shell commands, as a student would type them on the host - the argument lists the module runs,
      with program names instead of absolute paths. C(env -i) gives the command its clean environment.
  returned: always
  type: str
  sample: >-
    mount -t proc proc /overlay/merged/proc;
    env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot /overlay/merged ps ax;
    umount /overlay/merged/proc
rc:
  description: The command's exit status (0 when it was not run); with O(commands), that of the last one that ran.
  returned: always
  type: int
  sample: 0
stdout:
  description: Standard output of the command (with O(commands), of the last one that ran).
  returned: always
  type: str
  sample: "    PID TTY      STAT   TIME COMMAND\n      1 ?        Ss     0:01 /sbin/init"
stderr:
  description: Standard error of the command (with O(commands), of the last one that ran).
  returned: always
  type: str
  sample: ''
stdout_lines:
  description: RV(stdout) split into lines.
  returned: always
  type: list
  elements: str
  sample: ["    PID TTY      STAT   TIME COMMAND"]
stderr_lines:
  description: RV(stderr) split into lines.
  returned: always
  type: list
  elements: str
  sample: []
start:
  description: When the command started.
  returned: when the command ran
  type: str
  sample: '2026-11-28 23:40:01.123456'
end:
  description: When the command ended.
  returned: when the command ran
  type: str
  sample: '2026-11-28 23:40:01.223456'
delta:
  description: How long the command ran.
  returned: when the command ran
  type: str
  sample: '0:00:00.100000'
msg:
  description: Why the command was not run, or that it failed.
  returned: when the command was skipped or failed
  type: str
  sample: Did not run command since '/file01.txt' exists
"""

import contextlib
import datetime
import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import process

# How each pseudo file system is mounted inside the root: argv after `mount`, with the target last.
PSEUDO_MOUNTS = {
    'proc': ['-t', 'proc', 'proc'],
    'sys': ['-t', 'sysfs', 'sysfs'],
    'dev': ['--bind', '/dev'],
}

# Who uses the pseudo file systems this module mounted inside a root: one JSON file per root.
MOUNT_USERS_DIR = '/run/unboxed/chroot-mounts'

# Runs "$@" in the directory "$1": a fixed script that only ever sees its arguments as data.
CHDIR_SCRIPT = 'cd -- "$1" || exit 127; shift; exec "$@"'

# The host programs the module runs, by the names a student types; a real run uses their absolute paths.
DISPLAY_PROGRAMS = {'env': 'env', 'chroot': 'chroot', 'mount': 'mount', 'umount': 'umount'}


def argument_spec():
    return dict(
        root=dict(type='path', required=True),
        argv=dict(type='list', elements='str'),
        cmd=dict(type='str'),
        # Checked by request_problems: AnsibleModule would turn a string item into a list of one string.
        commands=dict(type='list', elements='raw'),
        chdir=dict(type='str'),
        env=dict(type='dict', default={}),
        creates=dict(type='str'),
        removes=dict(type='str'),
        stdin=dict(type='str'),
        stdin_add_newline=dict(type='bool', default=True),
        mounts=dict(type='list', elements='str', choices=list(PSEUDO_MOUNTS), default=[]),
        lock_timeout=dict(type='int', default=60),
    )


def constraints():
    """What AnsibleModule checks for us: exactly one of argv, cmd and commands."""
    return dict(mutually_exclusive=[('argv', 'cmd', 'commands')], required_one_of=[('argv', 'cmd', 'commands')])


def inner_argv(params):
    """The command as run inside the root: argv as given, or the root's /bin/sh -c for cmd."""
    return list(params['argv']) if params['argv'] else ['/bin/sh', '-c', params['cmd']]


def inner_argvs(params):
    """Every command of the run, in order, as run inside the root."""
    if params.get('commands') is not None:
        return [list(argv) for argv in params['commands']]
    return [inner_argv(params)]


def commands_problems(value):
    """commands must be a non-empty list of non-empty argument lists of strings; each problem names commands[N]."""
    if value is None:
        return []
    if not value:
        return ['commands is empty: give at least one command, each an argument list, e.g. [[ps, ax], [ip, addr]].']
    problems = []
    for index, argv in enumerate(value):
        if not isinstance(argv, (list, tuple)) or not all(isinstance(arg, str) for arg in argv):
            problems.append(f'commands[{index}] must be an argument list of strings, such as [ps, ax]; got {argv!r}.')
        elif not argv or not argv[0]:
            problems.append(f'commands[{index}] must name a program to run: got {list(argv)!r}.')
    return problems


def environment(params):
    return environ.clean_environment(params['env'])


def chroot_argv(programs, root, argv, env, chdir=None):
    """env -i K=V... chroot ROOT [sh -c CHDIR_SCRIPT unboxed-chdir DIR] ARGV: clean environment, no host shell."""
    prefix = [programs['env'], '-i'] + [f'{key}={value}' for key, value in sorted(env.items())] + [programs['chroot'], root]
    if chdir:
        prefix += ['/bin/sh', '-c', CHDIR_SCRIPT, 'unboxed-chdir', chdir]
    return prefix + argv


def pseudo_mount_argv(programs, name, target):
    return [programs['mount']] + PSEUDO_MOUNTS[name] + [target]


def umount_argv(programs, target):
    return [programs['umount'], target]


def request_problems(params):
    """Problems visible from the request alone, all at once. Pure, unit-tested."""
    problems = []
    problem = paths.root_directory_problem('root', params['root'])
    if problem:
        problems.append(problem)
    if params['argv'] is None and params['cmd'] is None and params.get('commands') is None:
        # Reached with argv: null and no cmd - AnsibleModule's required_one_of counts a null option as given.
        problems.append('give the command to run inside the root, as argv (a list, e.g. [ps, ax]) or as cmd (a shell string).')
    elif params['argv'] is not None and not params['argv']:
        problems.append('argv is empty: give the program and its arguments as a list, e.g. [ps, ax].')
    elif params['argv'] and not params['argv'][0]:
        problems.append('argv[0], the program to run, is empty.')
    if params['cmd'] is not None and not params['cmd'].strip():
        problems.append('cmd is empty: give the shell command line to run inside the root, e.g. "ps ax".')
    problems.extend(commands_problems(params.get('commands')))
    for option in ('chdir', 'creates', 'removes'):
        if params[option] is not None and not params[option].startswith('/'):
            problems.append(f'{option} is a path inside the root and must be absolute, got "{params[option]}".')
    problems.extend(environ.env_name_problems('env', params['env']))
    if params.get('lock_timeout', 0) < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    return problems


def as_argvs(argvs):
    """One argument list, or a list of them, as a list of them."""
    return [argvs] if argvs and isinstance(argvs[0], str) else argvs


def root_problems(params, argvs, env):
    argvs = as_argvs(argvs)
    root = params['root']
    if not os.path.exists(root):
        return [f'root {root} does not exist: build or mount the root file system first (for example with unboxed.lab.overlay_mount).']
    if not os.path.isdir(root):
        return [f'root {root} is not a directory.']
    problems = []
    for program in dict.fromkeys(argv[0] for argv in argvs):
        if not paths.find_program_inside(root, program, env['PATH']):
            where = program if '/' in program else f'{program} (searched in PATH={env["PATH"]})'
            problems.append(f'{where} not found inside {root}: the command runs with {root} as its "/", so the program '
                            f'must exist in that root file system, not only on the host.')
    if params['chdir'] and any(argv[0] != '/bin/sh' for argv in argvs) and not paths.find_program_inside(root, '/bin/sh'):
        problems.append(f'chdir needs /bin/sh inside {root}, and /bin/sh was not found inside {root}.')
    if params['chdir']:
        target = paths.resolve_inside(root, params['chdir'])
        if not target or not os.path.isdir(target):
            problems.append(f'chdir {params["chdir"]} is not a directory inside {root}.')
    for name in params['mounts']:
        _target, problem = paths.mount_target_inside(root, f'/{name}', f'mounts includes {name}, but')
        if problem:
            problems.append(problem.replace(', but: ', ', but '))
    return problems


def differences(params, root):
    """Whether the command still has work to do, as creates and removes tell: (True, why) to run it,
    (False, why not) when its work is done. Both the change test and the message."""
    creates, removes = params['creates'], params['removes']
    if creates and paths.resolve_inside(root, creates):
        return False, f"'{creates}' exists inside {root}"
    if removes and not paths.resolve_inside(root, removes):
        return False, f"'{removes}' does not exist inside {root}"
    reasons = ([f"'{creates}' does not exist inside {root}"] if creates else []) + \
        ([f"'{removes}' exists inside {root}"] if removes else [])
    return True, ' and '.join(reasons) or 'no creates or removes to say its work is done'


def command_steps(programs, params, root, argvs, env):
    """Every command of a run, in order: mount each pseudo file system, chroot (once per command), unmount them again."""
    argvs = as_argvs(argvs)
    targets = [os.path.join(root, name) for name in params['mounts']]
    return ([pseudo_mount_argv(programs, name, target) for name, target in zip(params['mounts'], targets)]
            + [chroot_argv(programs, root, argv, env, params['chdir']) for argv in argvs]
            + [umount_argv(programs, target) for target in reversed(targets)])


def equivalent_command(params, root, argvs, env):
    """The run's commands as a student types them: the argv lists the module runs, with program names."""
    return '; '.join(cmd.shell_join(step) for step in command_steps(DISPLAY_PROGRAMS, params, root, argvs, env))


def mount_targets(root, names):
    """{name: host directory} of each pseudo file system, inside the root as the kernel resolves it."""
    real_root = paths.resolve(root)
    return {name: os.path.join(real_root, name) for name in names}


def users_file(root: str, directory: str = MOUNT_USERS_DIR) -> str:
    digest = hashlib.sha256(paths.resolve(root).encode('utf-8', 'surrogateescape')).hexdigest()[:24]
    return os.path.join(directory, f'{digest}.json')


def read_users(path: str) -> dict:
    """{mount target: [process identity dicts]} of the mounts this module made inside a root; {} when none."""
    try:
        with open(path, encoding='utf-8') as handle:
            recorded = json.load(handle).get('mounts', {})
    except (FileNotFoundError, ValueError, AttributeError):
        return {}
    return {target: list(users) for target, users in recorded.items() if isinstance(users, list)}


def write_users(path: str, root: str, users: dict) -> None:
    if not users:
        if os.path.exists(path):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f'{path}.{os.getpid()}.tmp'
    with open(temporary, 'w', encoding='utf-8') as handle:
        json.dump({'root': paths.resolve(root), 'mounts': users}, handle)
    os.rename(temporary, path)


def living(users) -> list:
    """The recorded users still running (same PID and start time): a killed run is no user any more."""
    return [user for user in users if process.is_running(process.ProcessIdentity.from_dict(user))]


class PseudoMounts:
    """Mounts /proc, /sys, /dev inside the root for one command and takes them down again - shared with other runs
    on the same root: each run records itself as a user of the mounts it needs (under a lock, for the mount and
    unmount steps only), and a mount this module made is unmounted when its last living user is done."""

    def __init__(self, module, programs, root, names):
        self.module = module
        self.programs = programs
        self.root = root
        self.targets = mount_targets(root, names)
        self.record = users_file(root)
        self.me = process.identity_of(os.getpid()).to_dict()

    @contextlib.contextmanager
    def locked(self):
        try:
            with locking.exclusive('chroot', paths.resolve(self.root), timeout=self.module.params['lock_timeout'],
                                   note='unboxed.lab.chroot_exec mounts'):
                yield
        except locking.LockTimeout as error:
            self.module.fail_json(msg=locking.timeout_message(f'the mounts inside {self.root}', error), changed=False)

    def __enter__(self):
        with self.locked():
            users = {target: living(who) for target, who in read_users(self.record).items()}
            entries = mountinfo.read_mountinfo()
            try:
                for name, target in self.targets.items():
                    if target not in users and mountinfo.find_mount(target, entries) is not None:
                        continue            # the user's own mount: used, never unmounted
                    if mountinfo.find_mount(target, entries) is None:
                        self.mount(name, target)
                    users.setdefault(target, []).append(self.me)
            except BaseException:
                # fail_json part way: this run will use nothing, so what only it used comes down again.
                self.release({target: [user for user in who if user != self.me] for target, who in users.items()})
                raise
            self.release(users)
        return self

    def mount(self, name, target):
        # The target was checked to be a real directory; it must still be one when mount(8) resolves it.
        _checked, problem = paths.mount_target_inside(self.root, f'/{name}', f'mounts includes {name}, but')
        if problem:
            self.module.fail_json(msg=problem.replace(', but: ', ', but '), changed=False)
        before = {entry.mount_id for entry in mountinfo.read_mountinfo()}
        rc, stdout, stderr = cmd.run(self.module, pseudo_mount_argv(self.programs, name, target))
        if rc != 0:
            self.module.fail_json(msg=f'Could not mount {name} at {target}: {cmd.failure_detail(rc, stdout, stderr)}',
                                  rc=rc, stdout=stdout, stderr=stderr, changed=False)
        if os.path.islink(target) or mountinfo.find_mount(target) is None:
            # Replaced by a link between the check and mount(8): the mount landed where the link leads. Take it down
            # there - only if the mount on top there is the one just made, never the host's own.
            landed = paths.resolve(target)
            on_top = mountinfo.find_mount(landed)
            if on_top is not None and on_top.mount_id not in before:
                cmd.run(self.module, [self.programs['umount'], '-l', landed])
            self.module.fail_json(msg=f'mounts includes {name}, but {target} was replaced by a symbolic link (to {landed}) '
                                      f'while it was being mounted; that mount was taken down again.', changed=False)

    def release(self, users):
        """Unmount every mount of ours that no living run uses (this run's, or a killed run's), and record the rest."""
        for target in sorted(users, key=len, reverse=True):
            if users[target]:
                continue
            del users[target]
            if mountinfo.find_mount(target) is not None:
                self.unmount(target)
        write_users(self.record, self.root, users)

    def unmount(self, target):
        rc, stdout, stderr = cmd.run(self.module, umount_argv(self.programs, target))
        if rc == 0:
            return
        # A process the command left behind may still use it: detach it rather than leave it in place.
        busy = cmd.failure_detail(rc, stdout, stderr)
        rc, stdout, stderr = cmd.run(self.module, [self.programs['umount'], '-l', target])
        if rc == 0:
            self.module.warn(f'{target} was busy after the command ({busy}); it was detached with umount -l.')
        else:
            self.module.warn(f'{target} was busy after the command ({busy}) and could not be detached either '
                             f'({cmd.failure_detail(rc, stdout, stderr)}): it is still mounted.')

    def __exit__(self, *exc_info):
        with self.locked():
            users = {target: [user for user in living(who) if user != self.me]
                     for target, who in read_users(self.record).items()}
            self.release(users)
        return False


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **constraints())
    params = module.params
    problems = request_problems(params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    root = paths.normalize(params['root'])
    argvs = inner_argvs(params)
    env = environment(params)
    result = {'changed': False, 'stdout': '', 'stderr': '', 'rc': None, 'cmd': argvs[-1], 'start': None, 'end': None,
              'delta': None, 'msg': '', 'results': [], 'command': equivalent_command(params, root, argvs, env)}

    if module.check_mode and not os.path.lexists(root):
        # As ansible.builtin.command in check mode: in a --check run of a whole playbook, the task that builds
        # the root has not run either, so its absence is no error yet.
        module.warn(f'root {root} does not exist yet: check mode assumes an earlier task of this run creates it.')
        problems = []
    else:
        problems = root_problems(params, argvs, env)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems, **{k: v for k, v in result.items() if k != 'msg'})

    must_run, reason = differences(params, root)
    if not must_run:
        result.update(rc=0, msg=f"{'Would' if module.check_mode else 'Did'} not run command since {reason}")
        module.exit_json(**result)

    result['changed'] = True
    if module.check_mode:
        result.update(rc=0, msg=f'Command would have run if not in check mode ({reason})')
        if params['creates'] is None and params['removes'] is None:
            result.update(skipped=True, changed=False)
        module.exit_json(**result)

    programs = {name: module.get_bin_path(name, required=True) for name in DISPLAY_PROGRAMS}
    if not params['mounts'] and os.path.exists(users_file(root)):
        # Mounts a killed run left inside this root: taken down now that nobody uses them.
        with PseudoMounts(module, programs, root, []):
            pass
    with PseudoMounts(module, programs, root, params['mounts']):
        for argv in argvs:
            start = datetime.datetime.now()
            rc, stdout, stderr = cmd.run(module, chroot_argv(programs, root, argv, env, params['chdir']),
                                         data=params['stdin'], binary_data=not params['stdin_add_newline'])
            end = datetime.datetime.now()
            ran = command_result(argv, rc, stdout, stderr, start, end)
            result['results'].append(ran)
            result.update({key: ran[key] for key in ('cmd', 'rc', 'stdout', 'stderr', 'start', 'end', 'delta')})
            if rc != 0:
                break
    if result['rc'] != 0:
        result['msg'] = 'non-zero return code' if len(argvs) == 1 else \
            f'non-zero return code from commands[{len(result["results"]) - 1}] ({cmd.shell_join(result["cmd"])})'
        module.fail_json(**result)
    module.exit_json(**result)


def command_result(argv, rc, stdout, stderr, start, end):
    """One command's part of the result, with the keys ansible.builtin.command returns."""
    stdout, stderr = stdout.rstrip('\n'), stderr.rstrip('\n')
    return {'cmd': argv, 'rc': rc, 'stdout': stdout, 'stderr': stderr, 'stdout_lines': stdout.splitlines(),
            'stderr_lines': stderr.splitlines(), 'start': str(start), 'end': str(end), 'delta': str(end - start)}


if __name__ == '__main__':
    main()
