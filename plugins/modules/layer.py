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
    owner - all of them in one task, as one build step writes them, all or nothing. Each new content is first written
    completely (content, owner, mode) to a temporary file in a hidden directory beside the layer,
    C(.LAYERNAME.unboxed-staging) on the same file system, and then renamed into place, so a reader never sees a
    file half written and the container never sees a temporary file. If a step fails, what the run had done is
    undone (replaced files come back, new files and directories go) before the task fails.
  - A run killed half way leaves at most its temporary files in that hidden directory (never in the layer); the next
    run removes them, reporting it in RV(actions), and completes the layer. Where a directory of the layer is on
    another file system than the hidden directory, the temporary file is written beside its file instead, named
    C(.unboxed-tmp.*), and removed the same way.
  - Everything is checked before the first change - the shape of O(files), names, modes, owners and groups (a
    number must fit a user ID), path lengths, the free space - so a bad request changes nothing.
  - Two runs on the same layer at once take turns (a lock per layer, in C(/run/unboxed/locks)) - the second waits
    up to O(lock_timeout) seconds and then finds the work done.
  - Files already in the layer that O(files) does not list are left alone and returned in RV(unlisted). With
    O(state=present) the module never deletes anything.
  - A layer can instead be the files of an archive (O(archive)) - C(FROM debian), a Debian root file system built
    once on the controller. The module keeps a record beside the layer, C(.LAYERNAME.sha256), holding the archive's
    SHA-256 and name as C(sha256sum) prints them, and compares it with O(checksum) - one short run on the host when
    the layer is already there. Only when the record differs does the collection's action plugin send the archive
    (once, into O(keep_archive_in) when given, so that a layer removed later comes back without a transfer), and a
    second run unpacks it into a hidden directory beside the layer and renames it into place, replacing a layer that
    held another archive (unless a mounted overlay uses it). The record is written last - a run killed half way
    leaves no record, and the next run unpacks again.
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
      - O(state=present) - one diff per file that is created or whose content changes; with O(archive), the record
        before and after.
      - O(state=absent) - the layer directory before (with its number of files and directories) and after.
  platform:
    platforms: posix
options:
  path:
    description:
      - The layer directory, for example C(/overlay/lower2-file). Created with its missing parents (mode O(directory_mode)).
      - Must not be C(/) or a system directory such as C(/srv) or C(/var/lib), nor lie in or below a system tree such
        as C(/etc), C(/usr), C(/proc) - also not through a symbolic link (the path is resolved as the kernel
        resolves it, and the message says where it leads). With O(state=absent) it must not be a symbolic link.
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
      - The files of the layer, a list of dictionaries with the keys below.
      - Required with O(state=present), unless O(archive) gives the layer's files; not allowed with O(state=absent).
      - Checked by the module itself rather than converted - a string, a list of strings, an unknown key, a missing
        O(files[].path) fails naming C(files[N]) and what was expected.
    type: raw
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
  archive:
    description:
      - A tar archive (compressed or not, as GNU tar recognises it) whose files are the layer - for example the
        Debian base that C(FROM debian) stands for. Mutually exclusive with O(files).
      - A file on the controller (a role's C(files/) is searched as for M(ansible.builtin.copy)), sent to the host only
        when the layer's record differs from O(checksum) and O(keep_archive_in) holds no copy of it. With
        O(remote_src=true), a file on the host.
      - Unpacked as root with the owners' numbers kept (C(tar --numeric-owner)), as C(docker load) does.
    type: path
    version_added: 0.2.0
  checksum:
    description:
      - The SHA-256 of O(archive), 64 hexadecimal digits - what the record beside the layer must say.
      - When left out, the action plugin reads it from C(ARCHIVE.sha256) beside the archive on the controller (the
        first word, as C(sha256sum) writes it), or computes it. With O(remote_src=true) it is required.
      - A copy or a transferred archive whose content has another checksum is refused, before anything changes.
    type: str
    version_added: 0.2.0
  keep_archive_in:
    description:
      - A directory on the host where the archive is kept under its own name after a transfer (created when missing),
        so that the layer can be unpacked again - after a reset - without sending the archive again. Unset, nothing
        is kept.
    type: path
    version_added: 0.2.0
  remote_src:
    description:
      - Whether O(archive) is already on the host. Only with O(archive).
    type: bool
    default: false
    version_added: 0.2.0
  archive_name:
    description:
      - The name the record and the kept copy give the archive. Default - the file name of O(archive).
      - The action plugin sets it when it sends the archive into a temporary file on the host.
    type: str
    version_added: 0.2.0
  directory_mode:
    description:
      - Permissions, in octal, of the directories this module creates (the layer directory and any directory on the
        way to a file). Existing directories are left as they are. Not used with O(state=absent).
    type: raw
    default: '0755'
  lock_timeout:
    description:
      - How many seconds to wait for another run working on the same layer before failing, naming it.
      - Not used in check mode, which takes no lock.
    type: int
    default: 60
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

- name: FROM debian - the talk's base layer, unpacked from the controller's archive (sent only when needed)
  unboxed.lab.layer:
    path: /overlay/lower1-base
    archive: /var/cache/unboxed/base/debian-trixie-minbase-amd64.tar.gz
    keep_archive_in: /var/cache/unboxed/base

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
  returned: when O(state=present) with O(files)
  type: list
  elements: str
  sample: [/overlay/lower2-file/file01.txt]
actions:
  description:
    - What was done, or in check mode what would be done, in order. Empty when nothing changed.
    - C(remove N temporary files of an interrupted run (DIR)) comes first when a killed run left them.
  returned: always
  type: list
  elements: str
  sample: [create directory /overlay/lower2-file, create /overlay/lower2-file/file01.txt]
unlisted:
  description: Entries at the top of the layer that no file of O(files) accounts for (left alone).
  returned: when O(state=present) with O(files)
  type: list
  elements: str
  sample: [notes.txt]
record:
  description: The record the layer should have beside it (C(SHA256  NAME)); RV(actions) says whether it had it.
  returned: when O(archive) is given
  type: str
  sample: "0f3c...e1  debian-trixie-minbase-amd64-4ab1c2d3e4f5.tar.gz"
transferred:
  description: Whether the archive was sent from the controller in this run.
  returned: when O(archive) is given
  type: bool
  sample: false
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

import contextlib
import dataclasses
import grp
import hashlib
import os
import pwd
import re
import secrets
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths

OCTAL_MODE = re.compile(r'0?[0-7]{3}|[0-7]{4}')

FILE_KEYS = ('path', 'content', 'mode', 'owner', 'group')
FILE_DEFAULTS = {'mode': '0644', 'owner': None, 'group': None}
FILES_EXAMPLE = '[{path: /file01.txt, content: "Texto\\n"}]'

# The largest user or group ID (uid_t is 32 bits; (uid_t)-1 means "unchanged" to chown(2)).
MAX_ID = 2 ** 32 - 2
NAME_MAX = 255      # bytes in one path component
PATH_MAX = 4095     # bytes in a whole path, the terminating NUL excluded

# Files are written in a hidden directory beside the layer, on the same file system, then renamed into the layer:
# a run killed half way leaves its temporary files there, outside what the container sees; the next run removes them.
STAGING_SUFFIX = '.unboxed-staging'
# Where that is impossible (a directory of the layer on another file system), beside the file, by this name.
TEMPORARY_PREFIX = '.unboxed-tmp.'

# A layer from an archive: its record beside it, and where the archive is unpacked before it is renamed into place.
RECORD_SUFFIX = '.sha256'
UNPACK_SUFFIX = '.unboxed-unpack'
REPLACED_SUFFIX = '.unboxed-replaced'
SHA256 = re.compile(r'[0-9a-f]{64}')


def argument_spec():
    return dict(
        path=dict(type='path', required=True),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        # Checked by files_problems, not by AnsibleModule: its conversions turn a string into a list, "a=b" into a
        # dictionary and a list into its repr, and its messages do not say which file is wrong.
        files=dict(type='raw'),
        archive=dict(type='path'),
        checksum=dict(type='str'),
        keep_archive_in=dict(type='path'),
        remote_src=dict(type='bool', default=False),
        directory_mode=dict(type='raw', default='0755'),
        lock_timeout=dict(type='int', default=60),
        archive_name=dict(type='str'),
    )


def _kind(value) -> str:
    """A value's type in YAML's words, for a message."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return f'the boolean {value}'
    if isinstance(value, (int, float)):
        return f'the number {value}'
    if isinstance(value, str):
        return f'the string {value!r}'
    if isinstance(value, dict):
        return 'a dictionary'
    if isinstance(value, (list, tuple)):
        return 'a list'
    return type(value).__name__


def files_problems(value):
    """(problems, items): ``files`` must be a list of dictionaries with the keys of FILE_KEYS; every wrong type or
    shape is named files[N] with what was expected. Items come back as (option, item) with defaults filled in."""
    if value is None:
        return [], None
    if not isinstance(value, (list, tuple)):
        return [f'files must be a list of files, each a dictionary with path and content, such as {FILES_EXAMPLE}; '
                f'got {_kind(value)}.'], []
    problems, items = [], []
    for index, item in enumerate(value):
        option = f'files[{index}]'
        if not isinstance(item, dict):
            problems.append(f'{option} must be a dictionary with path and content, such as '
                            f'{{path: /file01.txt, content: "Texto\\n"}}; got {_kind(item)}.')
            continue
        unknown = sorted(str(key) for key in item if key not in FILE_KEYS)
        if unknown:
            problems.append(f'{option} has unknown key{"s" if len(unknown) > 1 else ""} {", ".join(unknown)}; '
                            f'a file takes {", ".join(FILE_KEYS)}.')
        parsed = dict(FILE_DEFAULTS)
        for key in FILE_KEYS:
            if key not in item or (item[key] is None and key in FILE_DEFAULTS):
                if key not in FILE_DEFAULTS:
                    problems.append(f'{option}.{key} is missing: each file needs a path and a content.')
                continue
            field = item[key]
            if key == 'mode':
                parsed[key] = field          # parse_mode says what is wrong with it
            elif key in ('owner', 'group') and isinstance(field, int) and not isinstance(field, bool):
                parsed[key] = str(field)     # YAML reads owner: 1000 as a number
            elif key == 'content' and isinstance(field, (int, float)) and not isinstance(field, bool):
                parsed[key] = str(field)     # content: 42 is the text 42
            elif isinstance(field, str):
                parsed[key] = field
            else:
                expected = {'path': 'a path inside the layer, as a string', 'content': 'text',
                            'owner': 'a user name or number', 'group': 'a group name or number'}[key]
                problems.append(f'{option}.{key} must be {expected}; got {_kind(field)}.')
        items.append((option, parsed))
    return problems, items


def parse_mode(option: str, value):
    """(mode as int, problem). YAML reads an unquoted 0644 as the integer 420: that is taken as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 0o7777:
            return value, None
        return None, f'{option} {value} is out of range for a file mode.'
    text = str(value)
    if OCTAL_MODE.fullmatch(text):
        return int(text, 8), None
    return None, f"{option} must be an octal mode such as '0644' (quoted), got {value!r}."


def inner_path_problem(option: str, inner: str) -> str | None:
    if not inner or not inner.strip('/'):
        return f'{option} must name a file inside the layer, such as /file01.txt (got {inner!r}).'
    if '\0' in inner or '\n' in inner:
        return f'{option} must not contain a newline or NUL byte: {inner!r}.'
    if '..' in inner.split('/'):
        return f'{option} "{inner}" contains "..": a layer file must stay inside the layer directory.'
    for part in inner.split('/'):
        if len(part.encode('utf-8', 'surrogateescape')) > NAME_MAX:
            return f'{option} has a name longer than {NAME_MAX} bytes ({part[:40]}...), more than Linux allows in one name.'
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
    if value.isdigit() and value.isascii():
        number = int(value)
        if number > MAX_ID:
            return None, f'{option} {value} is too large for a user or group ID (at most {MAX_ID}).'
        return number, None
    return None, f'{option} "{value}" does not exist on this host.'


def request_problems(params):
    """Everything wrong with the request that can be told without touching the file system, and the files parsed.
    Everything that could fail later - types, modes, owners, names, lengths - is checked here, before any change."""
    problems = []
    layer = params['path']
    # "/" is one of the system directories; a path whose symbolic links lead into one is refused too.
    problem = paths.usable_directory_problem('path', layer)
    if not problem and len(layer.encode('utf-8', 'surrogateescape')) > PATH_MAX - NAME_MAX:
        problem = f'path is {len(layer)} characters long: too long for a layer directory and its files.'
    directory_mode, mode_problem = parse_mode('directory_mode', params['directory_mode'])
    problems.extend(filter(None, [problem, mode_problem]))
    if params.get('lock_timeout', 0) < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    if params['state'] == 'absent':
        if params['files'] is not None:
            problems.append('files lists what to write into the layer; state=absent removes the whole layer directory, '
                            'so leave files out.')
        if params.get('archive') is not None:
            problems.append('archive gives the files of a layer to write; state=absent removes the whole layer directory, '
                            'so leave archive out.')
        return problems, [], directory_mode
    if params.get('archive') is not None:
        problems.extend(archive_problems(params))
        return problems, [], directory_mode
    shape_problems, items = files_problems(params['files'])
    problems.extend(shape_problems)
    if items is None:
        problems.append(f'files is required with state=present: list the files of the layer, such as {FILES_EXAMPLE}.')
    elif not items and not shape_problems:
        problems.append('files is empty: list at least one file for the layer (path and content).')
    wanted = []
    for option, item in items or []:
        if not isinstance(item.get('path'), str) or not isinstance(item.get('content'), str):
            continue                    # files_problems said what is missing
        problem = inner_path_problem(f'{option}.path', item['path'])
        if problem:
            problems.append(problem)
            continue
        mode, problem = parse_mode(f'{option}.mode', item['mode'])
        uid, owner_problem = _resolve_id(f'{option}.owner', item['owner'], lambda name: pwd.getpwnam(name).pw_uid)
        gid, group_problem = _resolve_id(f'{option}.group', item['group'], lambda name: grp.getgrnam(name).gr_gid)
        problems.extend(filter(None, [problem, owner_problem, group_problem]))
        host_path = paths.join_inside(layer, normalize_inner(item['path']))
        if len(host_path.encode('utf-8', 'surrogateescape')) > PATH_MAX:
            problems.append(f'{option}.path makes the host path {len(host_path)} characters long, more than Linux '
                            f'allows ({PATH_MAX}).')
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


def archive_problems(params) -> list[str]:
    """What is wrong with a request for a layer from an archive, told before anything is read or changed."""
    problems = []
    if params['files'] is not None:
        problems.append('files and archive are mutually exclusive: a layer is either the files listed or the files of '
                        'an archive.')
    checksum = params.get('checksum')
    if not checksum:
        problems.append('checksum is required with archive (the SHA-256 of the archive, 64 hexadecimal digits); through '
                        'the action plugin it is read from ARCHIVE.sha256 on the controller or computed.')
    elif not SHA256.fullmatch(checksum):
        problems.append(f'checksum must be the archive\'s SHA-256, 64 hexadecimal digits in lower case; got {checksum!r}.')
    name = params.get('archive_name') or os.path.basename(params['archive'] or '')
    if not name or '\n' in name or '\0' in name or '/' in name:
        problems.append(f'archive must name an archive file (archive_name a file name), got {name!r}.')
    for option in ('keep_archive_in',):
        if params.get(option) is not None:
            problem = paths.absolute_path_problem(option, params[option]) or paths.system_directory_problem(option, params[option])
            if problem:
                problems.append(problem)
    return problems


def path_problems(layer: str, wanted) -> list[str]:
    """What on the host stops the files from being written where they belong: symlinks, non-directories."""
    problems = []
    if os.path.lexists(layer) and not os.path.isdir(layer):
        return [f'path "{layer}" exists and is not a directory.']
    staging = staging_directory(layer)
    if os.path.lexists(staging) and (os.path.islink(staging) or not os.path.isdir(staging)):
        problems.append(f'{staging} is where this module writes its temporary files before it renames them into the '
                        f'layer, and it is {"a symbolic link" if os.path.islink(staging) else "not a directory"}. '
                        f'Remove it (it is no part of the layer), then run this again.')
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
    # mountinfo holds the directories as the kernel resolved them.
    users = mountinfo.overlays_using(paths.resolve(layer))
    if not users:
        return None
    where = '; '.join(f'{entry.mount_point} (as {option})' for entry, option in users)
    return (f'{layer} is a layer of a mounted overlay: {where}. It would have to change ({", ".join(changed_paths)}), and '
            f'changing a layer under a mounted overlay is undefined behaviour. Unmount the overlay first '
            f'(reset.yml, or unboxed.lab.overlay_mount state=unmounted), then run this again.')


def staging_directory(layer: str) -> str:
    """The hidden directory beside the layer where its files are written before they are renamed into it."""
    parent, name = os.path.split(layer)
    hidden = f'.{name}{STAGING_SUFFIX}'
    if len(hidden.encode('utf-8', 'surrogateescape')) > NAME_MAX:
        hidden = f'.{hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:24]}{STAGING_SUFFIX}'
    return os.path.join(parent, hidden)


def leftovers(layer: str, wanted) -> list[str]:
    """What an interrupted run left: the staging directory's files, and temporary files by TEMPORARY_PREFIX in the
    directories of the files (where they are written when the staging directory is on another file system)."""
    found = []
    staging = staging_directory(layer)
    if os.path.isdir(staging) and not os.path.islink(staging):
        found.extend(os.path.join(staging, name) for name in sorted(os.listdir(staging)))
    directories = sorted({os.path.dirname(paths.join_inside(layer, item['inner'])) for item in wanted})
    for directory in directories:
        if os.path.isdir(directory) and not os.path.islink(directory):
            found.extend(os.path.join(directory, name) for name in sorted(os.listdir(directory))
                         if name.startswith(TEMPORARY_PREFIX))
    return found


class Transaction:
    """One run's writes, all or nothing: every new content is written completely (owner, mode, fsync) as a temporary
    file first - in the staging directory beside the layer, which the container cannot see - and only then renamed
    into place; a failure undoes what was done (renames from hard-linked backups, owners and modes, directories)."""

    def __init__(self, layer: str):
        self.layer = layer
        self.staging = staging_directory(layer)
        self.made_staging = False
        self.created = []       # directories created, parents first
        self.staged = {}        # host path -> temporary file holding its new content
        self.metadata = []      # (host path, stat before) of files changed in place
        self.renamed = []       # (host path, backup of the replaced file or None)

    def remove_leftovers(self, found) -> None:
        for path in found:
            os.unlink(path)
        if os.path.isdir(self.staging) and not os.path.islink(self.staging):
            os.rmdir(self.staging)

    def make_directory(self, directory: str, mode: int) -> None:
        os.mkdir(directory, mode)
        self.created.append(directory)
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask

    def _temporary_name(self, host_path: str, what: str) -> str:
        """A new name on the file system of ``host_path``: in the staging directory, or beside the file."""
        directory = os.path.dirname(host_path)
        if not self.made_staging and not os.path.isdir(self.staging):
            os.mkdir(self.staging, 0o700)
            self.made_staging = True
        if os.stat(self.staging).st_dev != os.stat(directory).st_dev:
            return os.path.join(directory, f'{TEMPORARY_PREFIX}{what}.{secrets.token_hex(6)}')
        return os.path.join(self.staging, f'{what}.{secrets.token_hex(6)}')

    def stage(self, host_path: str, item) -> None:
        temporary = self._temporary_name(host_path, 'new')
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.staged[host_path] = temporary
        with os.fdopen(descriptor, 'wb') as handle:
            handle.write(item['content'])
            handle.flush()
            # Owner first, then mode: chown clears the setuid and setgid bits, so a mode set before it would not hold.
            if item['uid'] is not None or item['gid'] is not None:
                os.fchown(handle.fileno(), -1 if item['uid'] is None else item['uid'], -1 if item['gid'] is None else item['gid'])
            os.fchmod(handle.fileno(), item['mode'])
            os.fsync(handle.fileno())

    def commit(self, writes) -> None:
        """Every change into place: owners and modes in place, new contents by rename over a backed-up old file."""
        for host_path, item, changes in writes:
            if host_path not in self.staged:
                self.metadata.append((host_path, os.lstat(host_path)))
                set_owner_and_mode(host_path, item)
                continue
            backup = None
            if os.path.lexists(host_path):
                backup = self._temporary_name(host_path, 'old')
                os.link(host_path, backup)
            self.renamed.append((host_path, backup))
            os.rename(self.staged.pop(host_path), host_path)

    def rollback(self) -> list[str]:
        """Undo everything, newest first; returns what could not be undone (normally nothing)."""
        failures = []

        def attempt(what, action, *args):
            try:
                action(*args)
            except OSError as error:
                failures.append(f'{what}: {error.strerror or error}')

        for host_path, backup in reversed(self.renamed):
            if backup:
                attempt(f'restore {host_path}', os.rename, backup, host_path)
            else:
                attempt(f'remove {host_path}', os.unlink, host_path)
        for host_path, before in reversed(self.metadata):
            attempt(f'restore owner of {host_path}', os.chown, host_path, before.st_uid, before.st_gid)
            attempt(f'restore mode of {host_path}', os.chmod, host_path, stat.S_IMODE(before.st_mode))
        for temporary in self.staged.values():
            attempt(f'remove {temporary}', os.unlink, temporary)
        for directory in reversed(self.created):
            attempt(f'remove directory {directory}', os.rmdir, directory)
        self.renamed, self.metadata, self.staged, self.created = [], [], {}, []
        self.finish()
        return failures

    def finish(self) -> None:
        """Drop the backups and the staging directory: after a run, nothing of it is left."""
        for _host_path, backup in self.renamed:
            if backup and os.path.lexists(backup):
                os.unlink(backup)
        self.renamed = []
        if os.path.isdir(self.staging) and not os.path.islink(self.staging) and not os.listdir(self.staging):
            os.rmdir(self.staging)


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
    record = record_path(layer)
    if not os.path.lexists(layer):
        if os.path.isfile(record) and not os.path.islink(record):
            # The record of a layer from an archive, without its layer: it goes too.
            result['actions'] = [f'remove the record {record}']
            if not module.check_mode:
                os.unlink(record)
            module.exit_json(changed=True, diff={'before': {'path': layer, 'record': record}, 'after': gone}, **result)
        module.exit_json(changed=False, diff={'before': gone, 'after': gone}, **result)
    problems = absent_path_problems(layer)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems, changed=False, **result)

    uses = mountinfo.uses_of_tree(paths.resolve(layer))
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
        # A layer from an archive: its record first, so that a removal cut short is never taken for the layer.
        if os.path.isfile(record) and not os.path.islink(record):
            os.unlink(record)
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
    leftovers: list     # temporary files of an interrupted run, to remove


def differences(layer: str, wanted) -> Differences:
    found_leftovers = leftovers(layer, wanted)
    staging = staging_directory(layer)
    actions = []
    if found_leftovers or os.path.isdir(staging):
        places = ', '.join(dict.fromkeys([staging] * os.path.isdir(staging) + [os.path.dirname(path) for path in found_leftovers]))
        actions.append(f'remove {plural(len(found_leftovers), "temporary file")} of an interrupted run (in {places})')
    directories = missing_directories(layer, wanted)
    actions.extend(f'create directory {directory}' for directory in directories)
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
    return Differences(directories, writes, diffs, actions, found_leftovers)


def set_owner_and_mode(host_path: str, item) -> None:
    # Owner first, then mode: chown clears the setuid and setgid bits.
    os.chown(host_path, -1 if item['uid'] is None else item['uid'], -1 if item['gid'] is None else item['gid'])
    os.chmod(host_path, item['mode'])


def space_problem(layer: str, writes) -> str | None:
    """The new contents must fit on the layer's file system: known before anything is written."""
    needed = sum(len(item['content']) for _path, item, changes in writes if {'create', 'content'} & set(changes))
    existing = layer
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    info = os.statvfs(existing)
    free = info.f_bavail * info.f_frsize
    if needed > free:
        return f'the files need {needed} bytes and the file system of {existing} has {free} bytes free.'
    return None


def layer_present(module, layer: str, wanted, directory_mode: int):
    """state=present: read the layer -> compare with the files asked for -> write only what differs (not in check mode),
    all or nothing."""
    problems = path_problems(layer, wanted)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    found = differences(layer, wanted)
    result = dict(path=layer, files=[paths.join_inside(layer, item['inner']) for item in wanted], actions=found.actions,
                  unlisted=top_level_unlisted(layer, wanted), command=equivalent_command(layer, wanted))
    if found.diffs:
        result['diff'] = found.diffs
    if found.writes or found.directories:
        problem = mounted_overlay_problem(layer, [path for path, _item, _changes in found.writes] or found.directories) or \
            space_problem(layer, found.writes)
        if problem:
            module.fail_json(msg=problem, changed=False, **result)
    if module.check_mode or not found.actions:
        module.exit_json(changed=bool(found.actions), **result)

    transaction = Transaction(layer)
    try:
        transaction.remove_leftovers(found.leftovers)
    except OSError as error:
        module.fail_json(msg=f'Could not remove the temporary files of an interrupted run ({error.filename}): '
                             f'{error.strerror}.', changed=False, **result)
    step = 'create the directories'
    try:
        for directory in found.directories:
            step = f'create directory {directory}'
            transaction.make_directory(directory, directory_mode)
        for host_path, item, changes in found.writes:
            if {'create', 'content'} & set(changes):
                step = f'write {host_path}'
                transaction.stage(host_path, item)
        step = 'put the files in place'
        transaction.commit(found.writes)
    except OSError as error:
        failures = transaction.rollback()
        undone = ('Everything this run had done was undone.' if not failures else
                  f'Undoing what this run had done failed in part: {"; ".join(failures)}.')
        where = f' ({error.filename})' if error.filename and error.filename not in step else ''
        module.fail_json(msg=f'Could not {step}: {error.strerror or error}{where}. {undone}',
                         changed=bool(found.leftovers) or bool(failures), **result)
    transaction.finish()
    module.exit_json(changed=True, **result)


def record_path(layer: str) -> str:
    """The record of a layer made from an archive, beside it: .LAYERNAME.sha256 (as the base_rootfs role always kept it)."""
    parent, name = os.path.split(layer)
    return os.path.join(parent, f'.{name}{RECORD_SUFFIX}')


def record_line(checksum: str, archive_name: str) -> str:
    """What sha256sum prints for the archive: the record of a layer that holds its files."""
    return f'{checksum}  {archive_name}\n'


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding='utf-8', errors='surrogateescape') as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b''):
            digest.update(block)
    return digest.hexdigest()


def archive_on_host(params, archive_name: str, checksum: str):
    """(path of a copy of the archive on the host with the right checksum, or None; problems with what was found)."""
    candidates = []
    if params.get('remote_src'):
        candidates.append(('archive', params['archive']))
    if params.get('keep_archive_in'):
        candidates.append((f'the copy kept in {params["keep_archive_in"]}', os.path.join(params['keep_archive_in'], archive_name)))
    problems = []
    for what, path in candidates:
        if not os.path.isfile(path):
            continue
        found = file_sha256(path)
        if found == checksum:
            return path, []
        problems.append(f'{what} ({path}) has the SHA-256 {found}, not the checksum {checksum}')
    return None, problems


def keep_archive(source: str, directory: str, archive_name: str, directory_mode: int) -> str:
    """A copy of the archive under its own name in the directory that keeps it, complete before it has that name."""
    for missing in paths.missing_directories(directory):
        os.mkdir(missing, directory_mode)
    kept = os.path.join(directory, archive_name)
    temporary = os.path.join(directory, f'.{archive_name}.{secrets.token_hex(6)}.partial')
    try:
        shutil.copyfile(source, temporary)
        os.chmod(temporary, 0o644)
        os.rename(temporary, kept)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    return kept


def archive_command(layer: str, archive: str, record: str, line: str) -> str:
    return '; '.join([cmd.shell_join(['mkdir', '-p', layer]),
                      cmd.shell_join(['tar', '--extract', '--numeric-owner', f'--file={archive}', f'--directory={layer}']),
                      f'echo {cmd.shell_join([line.rstrip()])} > {cmd.shell_join([record])}'])


def layer_from_archive(module, layer: str, directory_mode: int):
    """state=present with archive: read the record -> compare with the checksum -> unpack only if different (not in
    check mode), replacing what the layer held; the record is written last."""
    params = module.params
    archive_name = params['archive_name'] or os.path.basename(params['archive'])
    checksum = params['checksum']
    record = record_path(layer)
    wanted = record_line(checksum, archive_name)
    current = read_text(record) if os.path.isdir(layer) and not os.path.islink(layer) else None
    result = dict(path=layer, record=wanted.rstrip('\n'), transferred=False, actions=[],
                  command=archive_command(layer, params['archive'], record, wanted))
    if current == wanted:
        module.exit_json(changed=False, **result)
    replaced = os.path.lexists(layer)
    if replaced and (os.path.islink(layer) or not os.path.isdir(layer)):
        module.fail_json(msg=f'path {layer} exists and is not a directory (a symbolic link or a file): a layer from an '
                             f'archive replaces layer directories only.', **result)
    if replaced:
        result['actions'].append(f'remove what {layer} held ({(current or "no record").strip()})')
    result['actions'].append(f'unpack {archive_name} into {layer}')
    result['actions'].append(f'record {wanted.rstrip()} in {record}')
    result['diff'] = {'before_header': record, 'after_header': record,
                      'before': current if current is not None else '', 'after': wanted}
    if replaced:
        problems = in_use_problems(layer, mountinfo.uses_of_tree(paths.resolve(layer)))
        if problems and not module.check_mode:
            module.fail_json(msg=f'{layer} must be replaced by the files of {archive_name}, but ' + ' '.join(problems),
                             problems=problems, changed=False, **result)
        if problems:
            module.warn(f'{" ".join(problems)} Check mode assumes an earlier task of this run unmounts it.')
    if module.check_mode:
        module.exit_json(changed=True, **result)

    with locked(module, layer):
        source, problems = archive_on_host(params, archive_name, checksum)
        if source is None and not problems and not params['remote_src']:
            # The action plugin sends the archive, then runs the module again with remote_src.
            module.exit_json(changed=False, needs_transfer=True, **result)
        if source is None:
            module.fail_json(msg=f'archive: no usable copy of {params["archive"] if params["remote_src"] else archive_name} on '
                                 f'the host: {"; ".join(problems) or "the file does not exist"}. Nothing was changed.', **result)
        if params.get('keep_archive_in') and source != os.path.join(params['keep_archive_in'], archive_name):
            try:
                source = keep_archive(source, params['keep_archive_in'], archive_name, directory_mode)
            except OSError as error:
                module.fail_json(msg=f'keep_archive_in: could not keep the archive in {params["keep_archive_in"]}: '
                                     f'{error.strerror or error} ({error.filename}). Nothing was changed.', **result)
        unpack_into_place(module, layer, source, record, wanted, directory_mode, result)
    module.exit_json(changed=True, **result)


def unpack_into_place(module, layer, archive, record, wanted, directory_mode, result):
    parent, name = os.path.split(layer)
    unpacking = os.path.join(parent, f'.{name}{UNPACK_SUFFIX}')
    replaced = os.path.join(parent, f'.{name}{REPLACED_SUFFIX}')
    tar = module.get_bin_path('tar', required=True)
    step = f'create {parent}'
    try:
        for missing in paths.missing_directories(parent):
            os.mkdir(missing, directory_mode)
        # The record goes first: from here until it is written again, the layer counts as not there.
        step = f'remove the record {record}'
        if os.path.lexists(record):
            os.unlink(record)
        for leftover in (unpacking, replaced):
            if os.path.lexists(leftover):
                step = f'remove {leftover}, left by an interrupted run'
                remove_tree(leftover)
        step = f'create {unpacking}'
        os.mkdir(unpacking, directory_mode)
        rc, stdout, stderr = cmd.run(module, [tar, '--extract', '--numeric-owner', f'--file={archive}', f'--directory={unpacking}'])
        if rc != 0:
            remove_tree(unpacking)
            module.fail_json(msg=f'Could not unpack {archive}: {cmd.failure_detail(rc, stdout, stderr)}. The layer {layer} '
                                 f'was left as it was, without its record.', changed=True, **result)
        if os.path.lexists(layer):
            problems = in_use_problems(layer, mountinfo.uses_of_tree(paths.resolve(layer)))
            if problems:
                remove_tree(unpacking)
                module.fail_json(msg=f'{layer} must be replaced by the files of {os.path.basename(archive)}, but '
                                     + ' '.join(problems), problems=problems, changed=True, **result)
            step = f'move the layer {layer} aside'
            os.rename(layer, replaced)
        step = f'rename {unpacking} to {layer}'
        os.rename(unpacking, layer)
        if os.path.lexists(replaced):
            step = f'remove what {layer} held before'
            remove_tree(replaced)
        step = f'write the record {record}'
        temporary = f'{record}.{secrets.token_hex(6)}.tmp'
        with open(temporary, 'w', encoding='utf-8', errors='surrogateescape') as handle:
            handle.write(wanted)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.rename(temporary, record)
    except OSError as error:
        module.fail_json(msg=f'Could not {step}: {error.strerror or error} ({error.filename}). The layer has no record now: '
                             f'the next run unpacks it again.', changed=True, **result)


def constraints():
    """What AnsibleModule checks for us: a layer to write needs its files (their shape is request_problems' part)."""
    return dict(required_if=[('state', 'present', ('files', 'archive'), True)])


@contextlib.contextmanager
def locked(module, layer: str):
    """One real run at a time per layer (two would rename into the same directories); check mode takes no lock."""
    if module.check_mode:
        yield
        return
    try:
        with locking.exclusive('layer', paths.resolve(layer), timeout=module.params['lock_timeout'],
                               note=f'unboxed.lab.layer state={module.params["state"]}'):
            yield
    except locking.LockTimeout as error:
        module.fail_json(msg=locking.timeout_message(f'the layer {layer}', error), changed=False)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **constraints())
    problems, wanted, directory_mode = request_problems(module.params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    layer = paths.normalize(module.params['path'])
    if module.params['state'] == 'present' and module.params['archive'] is not None:
        layer_from_archive(module, layer, directory_mode)
    with locked(module, layer):
        if module.params['state'] == 'absent':
            layer_absent(module, layer)
        layer_present(module, layer, wanted, directory_mode)


if __name__ == '__main__':
    main()
