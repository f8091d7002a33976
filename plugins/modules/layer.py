#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: layer
short_description: Write the files that one build step adds into an image layer's directory, or remove a layer
version_added: 0.1.0
description:
  - An image layer is a directory holding the files that one step of a Dockerfile added or changed.
    C(RUN echo "Texto" > /file01.txt) gives a layer that holds C(file01.txt) and nothing else; overlayfs then
    stacks the layers (see M(unboxed.lab.overlay_mount)).
  - This module creates the layer directory O(path) and makes every file of O(files) hold the given content, mode and
    owner - all of them in one task, as one build step writes them. Each file is replaced atomically (written to a
    temporary file beside it, then renamed), so a reader never sees it half written.
  - Files already in the layer that O(files) does not list are left alone and returned in RV(unlisted). With
    O(state=present) the module never deletes anything.
  - O(state=absent) removes the layer directory O(path) and everything in it, as C(rm -rf --one-file-system) does.
    A symbolic link inside the layer is removed, never followed, so nothing outside the layer is touched.
    It refuses, naming the mount, while the layer is in use - O(path) is a mount point, something is mounted at or
    below it, or a mounted overlay uses O(path), a directory above it or a directory below it as a lower, upper or
    work directory. Unmount first; then run it again. A missing O(path) is no change.
  - It refuses to change a layer that a mounted overlay uses (as a lower, upper or work directory), since the kernel
    documents changes to a layer under a mounted overlay as undefined behaviour. Unmount the overlay first. A layer
    that already holds what is asked needs no change, so a mounted overlay does not stop a rerun.
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - With O(state=absent), a layer that a mount keeps in use is a warning in check mode, not an error, and the
        removal is predicted - in a C(--check) run of a whole playbook the task that unmounts it has not run either.
        A real run refuses while the layer is in use.
  diff_mode:
    support: full
    details:
      - O(state=present) - one diff per file that is created or whose content changes.
      - O(state=absent) - the layer directory before (with its number of files and directories) and after.
  platform:
    platforms: posix
options:
  path:
    description:
      - The layer directory, for example C(/overlay/lower2-file). Created with its missing parents (mode O(directory_mode)).
      - Must not be C(/) or a system directory such as C(/etc), and with O(state=absent) must not be a symbolic link.
    type: path
    required: true
  state:
    description:
      - V(present) makes the layer hold O(files).
      - V(absent) removes the layer directory O(path) with everything in it, unless a mount keeps it in use (see above).
    type: str
    choices: [present, absent]
    default: present
  files:
    description:
      - The files of the layer.
      - Required with O(state=present); not allowed with O(state=absent).
    type: list
    elements: dict
    suboptions:
      path:
        description:
          - Where the file is B(inside the layer), as the container will see it, for example C(/file01.txt) or
            C(etc/motd). Missing directories on the way are created (mode O(directory_mode)).
          - C(..) is refused, and so is a symbolic link on the way (writing through it would write outside the layer).
        type: str
        required: true
      content:
        description:
          - The file's whole content, as text (UTF-8). Write a trailing newline explicitly, as C(echo) would add it.
        type: str
        required: true
      mode:
        description:
          - Permissions, in octal. Quote it (V('0644')) so that YAML does not read it as a decimal number.
        type: raw
        default: '0644'
      owner:
        description:
          - User that owns the file, by name or number, as known on the managed host. Default - the user running the
            module for a new file, unchanged for an existing one.
          - Inside a container the file shows its numeric owner; the name may differ in the container's C(/etc/passwd).
        type: str
      group:
        description:
          - Group of the file, by name or number. Default as for O(files[].owner).
        type: str
  directory_mode:
    description:
      - Permissions, in octal, of the directories this module creates (the layer directory and any directory on the
        way to a file). Existing directories are left as they are. Not used with O(state=absent).
    type: raw
    default: '0755'
notes:
  - The returned RV(command) is the equivalent shell commands, for reading and copying by hand.
seealso:
  - module: unboxed.lab.overlay_mount
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: RUN echo "Texto" > /file01.txt - the talk's second layer
  unboxed.lab.layer:
    path: /overlay/lower2-file
    files:
      - path: /file01.txt
        content: "Texto\n"

- name: A layer with several files, as one RUN step that writes them all
  unboxed.lab.layer:
    path: /srv/layers/config
    files:
      - path: /etc/motd
        content: "Welcome to the container\n"
      - path: /usr/local/bin/hello
        content: |
          #!/bin/sh
          echo "hello from $(hostname)"
        mode: '0755'

- name: Remove the talk's layers again (after the overlay is unmounted)
  unboxed.lab.layer:
    path: "{{ item }}"
    state: absent
  loop: [/overlay/lower2-file, /overlay/lower1-base, /overlay/upper, /overlay/work, /overlay/merged]
"""

RETURN = r"""
path:
  description: The layer directory.
  returned: always
  type: str
  sample: /overlay/lower2-file
files:
  description: The files of the layer, as host paths, in the order of O(files).
  returned: when O(state=present)
  type: list
  elements: str
  sample: [/overlay/lower2-file/file01.txt]
actions:
  description: What was done, or in check mode what would be done, in order. Empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: [create directory /overlay/lower2-file, create /overlay/lower2-file/file01.txt]
unlisted:
  description: Entries at the top of the layer that no file of O(files) accounts for (left alone).
  returned: when O(state=present)
  type: list
  elements: str
  sample: [notes.txt]
removed:
  description:
    - What the removal took away (in check mode, would take away) - C(files) counts every entry that is not a
      directory (regular files, symbolic links, device nodes...), C(directories) the directories, the layer itself
      included. Both 0 when O(path) did not exist.
  returned: when O(state=absent)
  type: dict
  sample: {files: 1, directories: 1}
in_use:
  description:
    - The mounts that keep the layer in use - C(use) is V(mount point) (mounted at O(path)), V(mounted inside)
      (mounted below it), or V(lowerdir), V(upperdir), V(workdir) (a mounted overlay's layer C(directory) at, above or
      below O(path)). Not empty means a real run refuses.
  returned: when O(state=absent)
  type: list
  elements: dict
  sample:
    - {mount_point: /overlay/merged, fstype: overlay, use: lowerdir, directory: /overlay/lower1-base}
command:
  description: The equivalent shell commands.
  returned: always
  type: str
  sample: mkdir -p /overlay/lower2-file; echo Texto > /overlay/lower2-file/file01.txt
"""

import dataclasses
import grp
import os
import pwd
import re
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths

OCTAL_MODE = re.compile(r'^0?[0-7]{3}$|^[0-7]{4}$')


def argument_spec():
    return dict(
        path=dict(type='path', required=True),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        files=dict(type='list', elements='dict', options=dict(
            path=dict(type='str', required=True),
            content=dict(type='str', required=True),
            mode=dict(type='raw', default='0644'),
            owner=dict(type='str'),
            group=dict(type='str'),
        )),
        directory_mode=dict(type='raw', default='0755'),
    )


def parse_mode(option: str, value):
    """(mode as int, problem). YAML reads an unquoted 0644 as the integer 420: that is taken as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 0o7777:
            return value, None
        return None, f'{option} {value} is out of range for a file mode.'
    text = str(value)
    if OCTAL_MODE.match(text):
        return int(text, 8), None
    return None, f"{option} must be an octal mode such as '0644' (quoted), got {value!r}."


def inner_path_problem(option: str, inner: str) -> str | None:
    if not inner or not inner.strip('/'):
        return f'{option} must name a file inside the layer, such as /file01.txt (got {inner!r}).'
    if '\0' in inner or '\n' in inner:
        return f'{option} must not contain a newline or NUL byte: {inner!r}.'
    if '..' in inner.split('/'):
        return f'{option} "{inner}" contains "..": a layer file must stay inside the layer directory.'
    return None


def normalize_inner(inner: str) -> str:
    """A file's path inside the layer, as the container sees it: "/file01.txt"."""
    return paths.normalize('/' + inner.lstrip('/'))


def _resolve_id(option, value, lookup):
    """A user or group name (or number) as the number the host knows it by."""
    if value is None:
        return None, None
    try:
        return lookup(value), None
    except KeyError:
        pass
    if value.isdigit():
        return int(value), None
    return None, f'{option} "{value}" does not exist on this host.'


def request_problems(params):
    """Everything wrong with the request that can be told without touching the file system, and the files parsed."""
    problems = []
    layer = params['path']
    # "/" is one of the system directories.
    problem = paths.absolute_path_problem('path', layer) or paths.system_directory_problem('path', layer)
    directory_mode, mode_problem = parse_mode('directory_mode', params['directory_mode'])
    problems.extend(filter(None, [problem, mode_problem]))
    if params['state'] == 'absent':
        if params['files'] is not None:
            problems.append('files lists what to write into the layer; state=absent removes the whole layer directory, '
                            'so leave files out.')
        return problems, [], directory_mode
    if not params['files']:
        problems.append('files is empty: list at least one file for the layer (path and content).')
    wanted = []
    for index, item in enumerate(params['files'] or []):
        option = f'files[{index}]'
        problem = inner_path_problem(f'{option}.path', item['path'])
        if problem:
            problems.append(problem)
            continue
        mode, problem = parse_mode(f'{option}.mode', item['mode'])
        uid, owner_problem = _resolve_id(f'{option}.owner', item['owner'], lambda name: pwd.getpwnam(name).pw_uid)
        gid, group_problem = _resolve_id(f'{option}.group', item['group'], lambda name: grp.getgrnam(name).gr_gid)
        problems.extend(filter(None, [problem, owner_problem, group_problem]))
        wanted.append({'inner': normalize_inner(item['path']), 'content': to_bytes(item['content'], errors='surrogate_or_strict'),
                       'mode': mode, 'uid': uid, 'gid': gid, 'option': option})
    seen = {}
    for item in wanted:
        inner = item['inner']
        if inner in seen:
            problems.append(f'{item["option"]}.path names {inner} again ({seen[inner]} did already): list each file once.')
        seen.setdefault(inner, item['option'])
    for item in wanted:
        for other in seen:
            if other != item['inner'] and other.startswith(item['inner'] + '/'):
                problems.append(f'{item["option"]}.path {item["inner"]} is a file, yet {seen[other]}.path {other} lies below it.')
    return problems, wanted, directory_mode


def path_problems(layer: str, wanted) -> list[str]:
    """What on the host stops the files from being written where they belong: symlinks, non-directories."""
    problems = []
    if os.path.lexists(layer) and not os.path.isdir(layer):
        return [f'path "{layer}" exists and is not a directory.']
    for item in wanted:
        parts = item['inner'].strip('/').split('/')
        current = layer
        for depth, part in enumerate(parts):
            current = os.path.join(current, part)
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                break
            last = depth == len(parts) - 1
            if stat.S_ISLNK(info.st_mode):
                problems.append(f'{current} is a symbolic link: {item["inner"]} would be written wherever it points '
                                f'(on the host, outside the layer). Replace the link by a directory or a file first.')
                break
            if not last and not stat.S_ISDIR(info.st_mode):
                problems.append(f'{current} is not a directory, so {item["inner"]} cannot be created below it.')
                break
            if last and not stat.S_ISREG(info.st_mode):
                problems.append(f'{current} exists and is not a regular file; the module replaces files only.')
    return problems


def missing_directories(layer: str, wanted) -> list[str]:
    """Directories to create, parents first: the layer's missing ancestors, the layer, directories on the way."""
    missing = paths.missing_directories(layer)
    for item in wanted:
        parent = os.path.dirname(paths.join_inside(layer, item['inner']))
        missing.extend(directory for directory in paths.missing_directories(parent) if directory not in missing)
    return missing


def read_current(host_path: str):
    """(content bytes, stat result) of an existing regular file, or (None, None)."""
    try:
        with open(host_path, 'rb') as handle:
            return handle.read(), os.fstat(handle.fileno())
    except FileNotFoundError:
        return None, None


def file_changes(item, content, info) -> list[str]:
    """What must change for one file: "create", "content", "mode", "owner", "group"."""
    if info is None:
        return ['create']
    changes = []
    if content != item['content']:
        changes.append('content')
    if stat.S_IMODE(info.st_mode) != item['mode']:
        changes.append('mode')
    if item['uid'] is not None and info.st_uid != item['uid']:
        changes.append('owner')
    if item['gid'] is not None and info.st_gid != item['gid']:
        changes.append('group')
    return changes


def describe_write(host_path: str, content: bytes) -> str:
    """The shell line that writes ``content``: the Dockerfile's echo where it fits, printf otherwise."""
    text = to_text(content, errors='surrogate_or_strict')
    line = text[:-1]
    target = cmd.shell_join([host_path])
    if text.endswith('\n') and '\n' not in line and '\\' not in line and not line.startswith('-'):
        return f'echo {cmd.shell_join([line])} > {target}' if line else f'echo > {target}'
    return f'printf %s {cmd.shell_join([text])} > {target}'


def equivalent_command(layer: str, wanted) -> str:
    lines = [cmd.shell_join(['mkdir', '-p', layer])]
    for item in wanted:
        host_path = paths.join_inside(layer, item['inner'])
        parent = os.path.dirname(host_path)
        if parent != layer:
            lines.append(cmd.shell_join(['mkdir', '-p', parent]))
        lines.append(describe_write(host_path, item['content']))
        if item['uid'] is not None or item['gid'] is not None:
            owner = '' if item['uid'] is None else str(item['uid'])
            lines.append(cmd.shell_join(['chown', owner if item['gid'] is None else f'{owner}:{item["gid"]}', host_path]))
        if item['mode'] != 0o644:
            lines.append(cmd.shell_join(['chmod', format(item['mode'], '04o'), host_path]))
    return '; '.join(lines)


def mounted_overlay_problem(layer: str, changed_paths) -> str | None:
    users = mountinfo.overlays_using(layer)
    if not users:
        return None
    where = '; '.join(f'{entry.mount_point} (as {option})' for entry, option in users)
    return (f'{layer} is a layer of a mounted overlay: {where}. It would have to change ({", ".join(changed_paths)}), and '
            f'changing a layer under a mounted overlay is undefined behaviour. Unmount the overlay first '
            f'(reset.yml, or unboxed.lab.overlay_mount state=unmounted), then run this again.')


def write_file(host_path: str, item) -> None:
    """Replace the file atomically: a temporary file in the same directory, then rename over the old one."""
    directory = os.path.dirname(host_path)
    descriptor, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(host_path)}.', dir=directory)
    try:
        with os.fdopen(descriptor, 'wb') as handle:
            handle.write(item['content'])
            handle.flush()
            os.fsync(handle.fileno())
            # Owner first, then mode: chown clears the setuid and setgid bits, so a mode set before it would not hold.
            if item['uid'] is not None or item['gid'] is not None:
                os.fchown(handle.fileno(), -1 if item['uid'] is None else item['uid'], -1 if item['gid'] is None else item['gid'])
            os.fchmod(handle.fileno(), item['mode'])
        os.rename(temporary, host_path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def top_level_unlisted(layer: str, wanted) -> list[str]:
    if not os.path.isdir(layer):
        return []
    accounted = {item['inner'].strip('/').split('/')[0] for item in wanted}
    return sorted(name for name in os.listdir(layer) if name not in accounted)


def absent_path_problems(layer: str) -> list[str]:
    """What makes an existing path no layer directory to remove: a symbolic link, or no directory at all."""
    if os.path.islink(layer):
        return [f'path {layer} is a symbolic link (to {os.readlink(layer)}), not a layer directory: state=absent never '
                f'follows links. Give the directory itself, or remove the link with ansible.builtin.file.']
    if not os.path.isdir(layer):
        return [f'path {layer} exists and is not a directory: state=absent removes layer directories only.']
    # Where links on the way lead (a system directory) was refused by request_problems, through paths.
    return []


def in_use_problems(layer: str, uses) -> list[str]:
    """One sentence per mount that keeps the layer in use, naming the mount and what to do about it."""
    problems = []
    overlays = {}
    for use in uses:
        if use.use == 'mount point':
            problems.append(f'{layer} is a mount point ({use.entry.fstype} from {use.entry.source}): removing it would '
                            f'delete the files of the mounted file system. Unmount it first (umount {use.directory}).')
        elif use.use == 'mounted inside':
            problems.append(f'{use.directory} ({use.entry.fstype}) is mounted inside {layer}: removing {layer} would '
                            f'delete through the mount. Unmount it first (umount {use.directory}).')
        else:
            overlays.setdefault(use.entry.mount_point, []).append(f'{use.directory} as {use.use}')
    for mount_point, layers in overlays.items():
        problems.append(f'the overlay mounted at {mount_point} uses {", ".join(layers)}: removing a layer under a mounted '
                        f'overlay is undefined behaviour. Unmount the overlay first (reset.yml, or unboxed.lab.overlay_mount '
                        f'path={mount_point} state=unmounted).')
    return problems


def _entries_below(directory_fd: int) -> list[tuple[str, bool]]:
    """(name, is a directory) of each entry; a symbolic link is never a directory here, so nothing is followed."""
    with os.scandir(directory_fd) as entries:
        return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]


def _open_directory(name: str, dir_fd=None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def count_tree(layer: str) -> dict:
    """What rm -rf --one-file-system would remove: {'files': entries that are not directories, 'directories':
    directories, the layer itself included}. A file system mounted inside counts as its mount point only."""
    counts = {'files': 0, 'directories': 0}
    top = _open_directory(layer)
    device = os.fstat(top).st_dev

    def walk(directory_fd):
        counts['directories'] += 1
        for name, is_directory in _entries_below(directory_fd):
            if not is_directory:
                counts['files'] += 1
                continue
            child = _open_directory(name, directory_fd)
            try:
                if os.fstat(child).st_dev == device:
                    walk(child)
                else:
                    counts['directories'] += 1
            finally:
                os.close(child)

    try:
        walk(top)
    finally:
        os.close(top)
    return counts


class MountCrossed(OSError):
    """A directory of another file system turned up inside the tree while it was being removed."""


def remove_tree(layer: str) -> None:
    """rm -rf --one-file-system: every entry through directory descriptors opened without following links, so a
    symbolic link is removed and never followed, and a file system mounted meanwhile is left alone."""
    top = _open_directory(layer)
    device = os.fstat(top).st_dev

    def empty(directory_fd, shown):
        for name, is_directory in _entries_below(directory_fd):
            if not is_directory:
                os.unlink(name, dir_fd=directory_fd)
                continue
            child = _open_directory(name, directory_fd)
            try:
                if os.fstat(child).st_dev != device:
                    raise MountCrossed(f'{shown}/{name} is on another file system (mounted there meanwhile); it was left alone')
                empty(child, f'{shown}/{name}')
            finally:
                os.close(child)
            os.rmdir(name, dir_fd=directory_fd)

    try:
        empty(top, layer)
    finally:
        os.close(top)
    os.rmdir(layer)


def plural(count: int, one: str, many: str | None = None) -> str:
    return f'{count} {one if count == 1 else many or one + "s"}'


def layer_absent(module, layer: str):
    """state=absent: remove the layer directory tree, unless a mount keeps it in use."""
    result = dict(path=layer, actions=[], removed={'files': 0, 'directories': 0}, in_use=[],
                  command=cmd.shell_join(['rm', '-rf', '--one-file-system', layer]))
    gone = {'path': layer, 'state': 'absent'}
    if not os.path.lexists(layer):
        module.exit_json(changed=False, diff={'before': gone, 'after': gone}, **result)
    problems = absent_path_problems(layer)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems, changed=False, **result)

    uses = mountinfo.uses_of_tree(layer)
    counts = count_tree(layer)
    result.update(removed=counts, actions=[f'remove directory {layer} ({plural(counts["files"], "file")}, '
                                           f'{plural(counts["directories"], "directory", "directories")})'])
    result['in_use'] = [{'mount_point': use.entry.mount_point, 'fstype': use.entry.fstype, 'use': use.use,
                         'directory': use.directory} for use in uses]
    result['diff'] = {'before': dict(path=layer, state='directory', **counts), 'after': gone}
    problems = in_use_problems(layer, uses)
    if problems and module.check_mode:
        # In a --check run of reset.yml the overlay is unmounted by an earlier task, which only predicted it.
        module.warn(f'{" ".join(problems)} Check mode assumes an earlier task of this run unmounts it; a real run '
                    f'refuses to remove {layer} while it is in use.')
    elif problems:
        module.fail_json(msg=' '.join(problems), problems=problems, changed=False, **result)
    if module.check_mode:
        module.exit_json(changed=True, **result)
    try:
        remove_tree(layer)
    except OSError as error:
        where = f' ({error.filename})' if error.filename else ''
        module.fail_json(msg=f'Could not remove {layer}: {error.strerror or error}{where}. What could be removed is gone.',
                         changed=True, **result)
    module.exit_json(changed=True, **result)


@dataclasses.dataclass
class Differences:
    """What separates the layer on disk from the one asked for. ``actions`` is both the change test (empty: nothing
    to do) and the reason shown to the student."""

    directories: list   # to create, parents first
    writes: list        # (host path, wanted item, changes) of each file that differs
    diffs: list         # before/after of each file whose content changes
    actions: list


def differences(layer: str, wanted) -> Differences:
    directories = missing_directories(layer, wanted)
    actions = [f'create directory {directory}' for directory in directories]
    diffs = []
    writes = []
    for item in wanted:
        host_path = paths.join_inside(layer, item['inner'])
        content, info = read_current(host_path)
        changes = file_changes(item, content, info)
        if not changes:
            continue
        actions.append(f'create {host_path}' if changes == ['create'] else f'change {", ".join(changes)} of {host_path}')
        if 'create' in changes or 'content' in changes:
            diffs.append({
                'before_header': host_path if content is not None else f'{host_path} (absent)',
                'after_header': host_path,
                'before': to_text(content or b'', errors='surrogate_then_replace'),
                'after': to_text(item['content'], errors='surrogate_then_replace'),
            })
        writes.append((host_path, item, changes))
    return Differences(directories, writes, diffs, actions)


def set_owner_and_mode(host_path: str, item) -> None:
    # Owner first, then mode: chown clears the setuid and setgid bits.
    os.chown(host_path, -1 if item['uid'] is None else item['uid'], -1 if item['gid'] is None else item['gid'])
    os.chmod(host_path, item['mode'])


def layer_present(module, layer: str, wanted, directory_mode: int):
    """state=present: read the layer -> compare with the files asked for -> write only what differs (not in check mode)."""
    problems = path_problems(layer, wanted)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    found = differences(layer, wanted)
    result = dict(path=layer, files=[paths.join_inside(layer, item['inner']) for item in wanted], actions=found.actions,
                  unlisted=top_level_unlisted(layer, wanted), command=equivalent_command(layer, wanted))
    if found.diffs:
        result['diff'] = found.diffs
    if found.actions:
        problem = mounted_overlay_problem(layer, [path for path, _item, _changes in found.writes] or found.directories)
        if problem:
            module.fail_json(msg=problem, changed=False, **result)
    if module.check_mode or not found.actions:
        module.exit_json(changed=bool(found.actions), **result)

    done = []  # a failure part way reports changed only for what was really done
    for directory in found.directories:
        try:
            os.mkdir(directory, directory_mode)
            os.chmod(directory, directory_mode)  # mkdir's mode is filtered by the umask
        except OSError as error:
            module.fail_json(msg=f'Could not create directory {directory}: {error.strerror}.', changed=bool(done), **result)
        done.append(directory)
    for host_path, item, changes in found.writes:
        try:
            if set(changes) <= {'mode', 'owner', 'group'}:
                set_owner_and_mode(host_path, item)
            else:
                write_file(host_path, item)
        except OSError as error:
            module.fail_json(msg=f'Could not write {host_path}: {error.strerror}.', changed=bool(done), **result)
        done.append(host_path)
    module.exit_json(changed=True, **result)


def constraints():
    """What AnsibleModule checks for us: a layer to write needs its files."""
    return dict(required_if=[('state', 'present', ('files',))])


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **constraints())
    problems, wanted, directory_mode = request_problems(module.params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    layer = paths.normalize(module.params['path'])
    if module.params['state'] == 'absent':
        layer_absent(module, layer)
    layer_present(module, layer, wanted, directory_mode)


if __name__ == '__main__':
    main()
