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
  - O(layers) makes several layers in one task - an image as docker holds it, C(FROM debian) and each C(RUN) step a
    layer - checked in one run on the host, so that a rerun costs one round trip for the whole image. Every layer is
    checked first (its options, then what the host holds), and a problem with any of them changes nothing; then each
    is written in order, as it would be alone. A layer that fails while it is written is undone as above; the layers
    before it stay written.
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
      - O(layers) - the diffs of every layer, one after the other; each names its files or its record.
  platform:
    platforms: posix
options:
  path:
    description:
      - The layer directory, for example C(/overlay/lower2-file). Created with its missing parents (mode O(directory_mode)).
      - Must not be C(/) or a system directory such as C(/srv) or C(/var/lib), nor lie in or below a system tree such
        as C(/etc), C(/usr), C(/proc) - also not through a symbolic link (the path is resolved as the kernel
        resolves it, and the message says where it leads). With O(state=absent) it must not be a symbolic link.
      - Exactly one of O(path) and O(layers) is required.
    type: path
  layers:
    description:
      - Several layers in one task, written in this order, each a dictionary with the options of one layer below -
        O(layers[].path) and either O(layers[].files) or O(layers[].archive).
      - Mutually exclusive with O(path), and with O(files), O(archive), O(checksum), O(keep_archive_in), O(remote_src)
        and O(archive_name), which go into each layer instead.
      - Each layer is a directory of its own - none may be another's or lie inside another.
      - Checked by the module itself - a wrong key or value fails naming C(layers[N]) and the option, such as
        C(layers[1].files[0].mode).
      - With O(state=absent), each layer takes only O(layers[].path), and every one is removed (the same refusals).
    type: raw
    version_added: 0.3.0
    suboptions:
      path:
        description: The layer directory, as O(path).
        type: path
        required: true
      files:
        description: The files of the layer, as O(files).
        type: raw
      archive:
        description: A tar archive whose files are the layer, as O(archive).
        type: path
      checksum:
        description: The SHA-256 of O(layers[].archive), as O(checksum).
        type: str
      keep_archive_in:
        description: Where the host keeps the archive after a transfer, as O(keep_archive_in).
        type: path
      remote_src:
        description: Whether O(layers[].archive) is already on the host, as O(remote_src).
        type: bool
        default: false
      archive_name:
        description: The name the record and the kept copy give the archive, as O(archive_name).
        type: str
      directory_mode:
        description: Permissions of the directories this layer creates, as O(directory_mode). Default - O(directory_mode).
        type: raw
  state:
    description:
      - V(present) makes the layer hold O(files).
      - V(absent) removes the layer directory O(path) (each of O(layers)) with everything in it, unless a mount keeps it
        in use (see above).
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
      - With O(layers), the default of each layer's O(layers[].directory_mode).
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

- name: FROM debian, then RUN echo "Texto" > /file01.txt - the talk's image, one round trip on a rerun
  unboxed.lab.layer:
    layers:
      - path: /overlay/lower1-base
        archive: /var/cache/unboxed/base/debian-trixie-minbase-amd64.tar.gz
        keep_archive_in: /var/cache/unboxed/base
      - path: /overlay/lower2-file
        files:
          - path: /file01.txt
            content: "Texto\n"
  register: image

- name: Show which layers changed
  ansible.builtin.debug:
    msg: "{{ image.layers | selectattr('changed') | map(attribute='path') | list }}"

- name: Remove the talk's layers again (after the overlay is unmounted)
  unboxed.lab.layer:
    path: "{{ item }}"
    state: absent
  loop: [/overlay/lower2-file, /overlay/lower1-base, /overlay/upper, /overlay/work, /overlay/merged]
"""

RETURN = r"""
path:
  description: The layer directory.
  returned: when O(path) is given
  type: str
  sample: /overlay/lower2-file
layers:
  description:
    - The result of each layer of O(layers), in order - what the module returns for one layer (RV(path), RV(actions),
      RV(command), and RV(files) and RV(unlisted), RV(record) and RV(transferred), or RV(removed) and RV(in_use), as
      that layer has them), and whether it changed. Their diffs are the task's.
    - When a layer fails, the results of the layers before it and of the failing one, whose C(msg) names it.
  returned: when O(layers) is given
  type: list
  elements: dict
  sample:
    - {path: /overlay/lower1-base, changed: false, actions: [], transferred: false,
       record: "0f3c...e1  debian-trixie-minbase-amd64-4ab1c2d3e4f5.tar.gz", command: "mkdir -p /overlay/lower1-base; ..."}
    - {path: /overlay/lower2-file, changed: false, actions: [], files: [/overlay/lower2-file/file01.txt], unlisted: [],
       command: "mkdir -p /overlay/lower2-file; echo Texto > /overlay/lower2-file/file01.txt"}
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
    - With O(layers), the actions of every layer, in order.
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
  description: Whether the archive was sent from the controller in this run (with O(layers), any layer's).
  returned: when O(archive) is given, or a layer of O(layers) has one
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
  description: The equivalent shell commands (with O(layers), of every layer in order).
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
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths

OCTAL_MODE = re.compile(r'0?[0-7]{3}|[0-7]{4}')

FILE_KEYS = ('path', 'content', 'mode', 'owner', 'group')
FILE_DEFAULTS = {'mode': '0644', 'owner': None, 'group': None}
FILES_EXAMPLE = '[{path: /file01.txt, content: "Texto\\n"}]'
LAYER_KEYS = ('path', 'files', 'archive', 'checksum', 'keep_archive_in', 'remote_src', 'archive_name', 'directory_mode')
LAYERS_EXAMPLE = ('[{path: /overlay/lower1-base, archive: debian.tar.gz}, '
                  '{path: /overlay/lower2-file, files: [{path: /file01.txt, content: "Texto\\n"}]}]')

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
        path=dict(type='path'),
        # Checked by layers_requests, for the reasons of files below: each layer's options as the module's own are.
        layers=dict(type='raw'),
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


def unknown_keys(option: str, item: dict, keys, what: str) -> list[str]:
    """The problem of a dictionary ``option`` with keys outside ``keys`` (what ``what`` takes), or none."""
    unknown = sorted(str(key) for key in item if key not in keys)
    if not unknown:
        return []
    return [f'{option} has unknown key{"s" if len(unknown) > 1 else ""} {", ".join(unknown)}; {what} takes {", ".join(keys)}.']


def files_problems(value, name='files'):
    """(problems, items): ``files`` must be a list of dictionaries with the keys of FILE_KEYS; every wrong type or
    shape is named files[N] (``name``[N]) with what was expected. Items come back as (option, item) with defaults filled in."""
    if value is None:
        return [], None
    if not isinstance(value, (list, tuple)):
        return [f'{name} must be a list of files, each a dictionary with path and content, such as {FILES_EXAMPLE}; '
                f'got {_kind(value)}.'], []
    problems, items = [], []
    for index, item in enumerate(value):
        option = f'{name}[{index}]'
        if not isinstance(item, dict):
            problems.append(f'{option} must be a dictionary with path and content, such as '
                            f'{{path: /file01.txt, content: "Texto\\n"}}; got {_kind(item)}.')
            continue
        problems.extend(unknown_keys(option, item, FILE_KEYS, 'a file'))
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


def request_problems(params, prefix=''):
    """Everything wrong with the request for one layer that can be told without touching the file system, and the
    files parsed. Everything that could fail later - types, modes, owners, names, lengths - is checked here, before any
    change. ``prefix`` names where the layer's options are: '' for the module's own, 'layers[N].' for a layer of O(layers)."""
    problems = []
    layer = params['path']
    # "/" is one of the system directories; a path whose symbolic links lead into one is refused too.
    problem = paths.usable_directory_problem(f'{prefix}path', layer)
    if not problem and len(layer.encode('utf-8', 'surrogateescape')) > PATH_MAX - NAME_MAX:
        problem = f'{prefix}path is {len(layer)} characters long: too long for a layer directory and its files.'
    directory_mode, mode_problem = parse_mode(f'{prefix}directory_mode', params['directory_mode'])
    problems.extend(filter(None, [problem, mode_problem]))
    if params.get('lock_timeout', 0) < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    if params['state'] == 'absent':
        if params['files'] is not None:
            problems.append(f'{prefix}files lists what to write into the layer; state=absent removes the whole layer '
                            f'directory, so leave files out.')
        if params.get('archive') is not None:
            problems.append(f'{prefix}archive gives the files of a layer to write; state=absent removes the whole layer '
                            f'directory, so leave archive out.')
        return problems, [], directory_mode
    if params.get('archive') is not None:
        problems.extend(archive_problems(params, prefix))
        return problems, [], directory_mode
    shape_problems, items = files_problems(params['files'], f'{prefix}files')
    problems.extend(shape_problems)
    if items is None and prefix:
        problems.append(f'{prefix[:-1]} needs files or archive with state=present: the files of the layer, such as '
                        f'files: {FILES_EXAMPLE}, or the archive that holds them.')
    elif items is None:
        problems.append(f'files is required with state=present: list the files of the layer, such as {FILES_EXAMPLE}.')
    elif not items and not shape_problems:
        problems.append(f'{prefix}files is empty: list at least one file for the layer (path and content).')
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


def archive_problems(params, prefix='') -> list[str]:
    """What is wrong with a request for a layer from an archive, told before anything is read or changed."""
    problems = []
    if params['files'] is not None:
        problems.append(f'{prefix}files and {prefix}archive are mutually exclusive: a layer is either the files listed or '
                        f'the files of an archive.')
    checksum = params.get('checksum')
    if not checksum:
        problems.append(f'{prefix}checksum is required with {prefix}archive (the SHA-256 of the archive, 64 hexadecimal '
                        f'digits); through the action plugin it is read from ARCHIVE.sha256 on the controller or computed.')
    elif not SHA256.fullmatch(checksum):
        problems.append(f'{prefix}checksum must be the archive\'s SHA-256, 64 hexadecimal digits in lower case; got {checksum!r}.')
    name = params.get('archive_name') or os.path.basename(params['archive'] or '')
    if not name or '\n' in name or '\0' in name or '/' in name:
        problems.append(f'{prefix}archive must name an archive file ({prefix}archive_name a file name), got {name!r}.')
    for option in ('keep_archive_in',):
        if params.get(option) is not None:
            named = f'{prefix}{option}'
            problem = paths.absolute_path_problem(named, params[option]) or paths.system_directory_problem(named, params[option])
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


class LayerFailure(Exception):
    """A layer that cannot be made as asked: the message a student reads and what the result says besides (changed,
    path, actions...). The functions of one layer raise it; main() fails the task with it, naming the layer of
    O(layers) it belongs to (``index``)."""

    def __init__(self, msg: str, **result):
        super().__init__(msg)
        self.msg = msg
        self.result = result
        self.index = None


@dataclasses.dataclass
class Plan:
    """One layer read and compared with what was asked: its result as the run returns it (``changed`` apart), and
    what a real run does about it (``apply``, None when nothing; it raises LayerFailure). ``needs_transfer``: the
    archive must first be sent from the controller (the action plugin does, then runs the module again)."""

    result: dict
    changed: bool
    apply: object = None
    needs_transfer: bool = False

    def outcome(self) -> dict:
        outcome = dict(self.result, changed=self.changed)
        if self.needs_transfer:
            outcome['needs_transfer'] = True
        return outcome


def plan_absent(module, layer: str) -> Plan:
    """state=absent: the layer directory tree goes, unless a mount keeps it in use."""
    result = dict(path=layer, actions=[], removed={'files': 0, 'directories': 0}, in_use=[],
                  command=cmd.shell_join(['rm', '-rf', '--one-file-system', layer]))
    gone = {'path': layer, 'state': 'absent'}
    record = record_path(layer)
    if not os.path.lexists(layer):
        if os.path.isfile(record) and not os.path.islink(record):
            # The record of a layer from an archive, without its layer: it goes too.
            result['actions'] = [f'remove the record {record}']
            result['diff'] = {'before': {'path': layer, 'record': record}, 'after': gone}
            return Plan(result, True, lambda: os.unlink(record))
        result['diff'] = {'before': gone, 'after': gone}
        return Plan(result, False)
    problems = absent_path_problems(layer)
    if problems:
        raise LayerFailure(' '.join(problems), problems=problems, changed=False, **result)

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
        raise LayerFailure(' '.join(problems), problems=problems, changed=False, **result)

    def remove():
        try:
            # A layer from an archive: its record first, so that a removal cut short is never taken for the layer.
            if os.path.isfile(record) and not os.path.islink(record):
                os.unlink(record)
            remove_tree(layer)
        except OSError as error:
            where = f' ({error.filename})' if error.filename else ''
            raise LayerFailure(f'Could not remove {layer}: {error.strerror or error}{where}. What could be removed is gone.',
                               changed=True, **result) from error

    return Plan(result, True, remove)


@dataclasses.dataclass
class Differences:
    """What separates the layer on disk from the one asked for. ``actions`` is both the change test (empty: nothing
    to do) and the reason shown to the student."""

    directories: list   # to create, parents first
    writes: list        # (host path, wanted item, changes) of each file that differs
    diffs: list         # before/after of each file whose content changes
    actions: list
    leftovers: list     # temporary files of an interrupted run, to remove


def differences(layer: str, wanted, planned_directories=frozenset()) -> Differences:
    """``planned_directories``: directories that an earlier layer of the same run creates (their common parent)."""
    found_leftovers = leftovers(layer, wanted)
    staging = staging_directory(layer)
    actions = []
    if found_leftovers or os.path.isdir(staging):
        places = ', '.join(dict.fromkeys([staging] * os.path.isdir(staging) + [os.path.dirname(path) for path in found_leftovers]))
        actions.append(f'remove {plural(len(found_leftovers), "temporary file")} of an interrupted run (in {places})')
    directories = [directory for directory in missing_directories(layer, wanted) if directory not in planned_directories]
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


def plan_files(layer: str, wanted, directory_mode: int, planned_directories: set) -> Plan:
    """state=present with files: read the layer -> compare with the files asked for; a real run writes only what
    differs, all or nothing."""
    problems = path_problems(layer, wanted)
    if problems:
        raise LayerFailure(' '.join(problems), problems=problems)
    found = differences(layer, wanted, planned_directories)
    result = dict(path=layer, files=[paths.join_inside(layer, item['inner']) for item in wanted], actions=found.actions,
                  unlisted=top_level_unlisted(layer, wanted), command=equivalent_command(layer, wanted))
    if found.diffs:
        result['diff'] = found.diffs
    if found.writes or found.directories:
        problem = mounted_overlay_problem(layer, [path for path, _item, _changes in found.writes] or found.directories) or \
            space_problem(layer, found.writes)
        if problem:
            raise LayerFailure(problem, changed=False, **result)
    planned_directories.update(found.directories)
    if not found.actions:
        return Plan(result, False)
    return Plan(result, True, lambda: write_files(layer, found, directory_mode, result))


def write_files(layer: str, found: Differences, directory_mode: int, result: dict) -> None:
    transaction = Transaction(layer)
    try:
        transaction.remove_leftovers(found.leftovers)
    except OSError as error:
        raise LayerFailure(f'Could not remove the temporary files of an interrupted run ({error.filename}): '
                           f'{error.strerror}.', changed=False, **result) from error
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
        raise LayerFailure(f'Could not {step}: {error.strerror or error}{where}. {undone}',
                           changed=bool(found.leftovers) or bool(failures), **result) from error
    transaction.finish()


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


def plan_archive(module, spec, layer: str, directory_mode: int, planned_directories: set) -> Plan:
    """state=present with archive: read the record -> compare with the checksum; a real run unpacks only if different,
    replacing what the layer held, and writes the record last. ``spec``: the layer's options (archive, checksum...)."""
    archive_name = spec['archive_name'] or os.path.basename(spec['archive'])
    checksum = spec['checksum']
    record = record_path(layer)
    wanted = record_line(checksum, archive_name)
    current = read_text(record) if os.path.isdir(layer) and not os.path.islink(layer) else None
    result = dict(path=layer, record=wanted.rstrip('\n'), transferred=False, actions=[],
                  command=archive_command(layer, spec['archive'], record, wanted))
    if current == wanted:
        return Plan(result, False)
    replaced = os.path.lexists(layer)
    if replaced and (os.path.islink(layer) or not os.path.isdir(layer)):
        raise LayerFailure(f'path {layer} exists and is not a directory (a symbolic link or a file): a layer from an '
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
            raise LayerFailure(f'{layer} must be replaced by the files of {archive_name}, but ' + ' '.join(problems),
                               problems=problems, changed=False, **result)
        if problems:
            module.warn(f'{" ".join(problems)} Check mode assumes an earlier task of this run unmounts it.')
    planned_directories.update(paths.missing_directories(os.path.dirname(layer)))
    if module.check_mode:
        return Plan(result, True)

    source, problems = archive_on_host(spec, archive_name, checksum)
    if source is None and not problems and not spec['remote_src']:
        # The action plugin sends the archive, then runs the module again with remote_src.
        return Plan(result, False, needs_transfer=True)
    if source is None:
        raise LayerFailure(f'archive: no usable copy of {spec["archive"] if spec["remote_src"] else archive_name} on '
                           f'the host: {"; ".join(problems) or "the file does not exist"}. Nothing was changed.', **result)

    def unpack():
        kept_in = spec.get('keep_archive_in')
        archive = source
        if kept_in and archive != os.path.join(kept_in, archive_name):
            try:
                archive = keep_archive(archive, kept_in, archive_name, directory_mode)
            except OSError as error:
                raise LayerFailure(f'keep_archive_in: could not keep the archive in {kept_in}: {error.strerror or error} '
                                   f'({error.filename}). Nothing was changed.', **result) from error
        unpack_into_place(module, layer, archive, record, wanted, directory_mode, result)

    return Plan(result, True, unpack)


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
            raise LayerFailure(f'Could not unpack {archive}: {cmd.failure_detail(rc, stdout, stderr)}. The layer {layer} '
                               f'was left as it was, without its record.', changed=True, **result)
        if os.path.lexists(layer):
            problems = in_use_problems(layer, mountinfo.uses_of_tree(paths.resolve(layer)))
            if problems:
                remove_tree(unpacking)
                raise LayerFailure(f'{layer} must be replaced by the files of {os.path.basename(archive)}, but '
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
        raise LayerFailure(f'Could not {step}: {error.strerror or error} ({error.filename}). The layer has no record now: '
                           f'the next run unpacks it again.', changed=True, **result) from error


def constraints():
    """What AnsibleModule checks for us: one layer (path) or several (layers); a layer to write needs its files or its
    archive (their shape, and that of each layer of O(layers), is request_problems' part). The options of one layer
    belong inside each layer of O(layers)."""
    return dict(required_one_of=[('path', 'layers')],
                mutually_exclusive=[('layers', option) for option in ('path', 'files', 'archive', 'checksum',
                                                                      'keep_archive_in', 'remote_src', 'archive_name')],
                required_if=[('state', 'present', ('files', 'archive', 'layers'), True)])


@dataclasses.dataclass
class Request:
    """One layer asked for, checked: ``option`` is where its options were ('' or 'layers[N]'), ``params`` them."""

    option: str
    layer: str
    params: dict
    wanted: list
    directory_mode: int


def layer_params(option: str, spec: dict, params) -> tuple[dict | None, list[str]]:
    """The options of one layer of O(layers), typed as AnsibleModule types the module's own (bool), with a
    message naming layers[N].key for a value of the wrong type; None when the layer has no usable path."""
    options = dict(state=params['state'], path=None, files=spec.get('files'), archive=None, checksum=None,
                   keep_archive_in=None, remote_src=False, archive_name=None,
                   directory_mode=params['directory_mode'] if spec.get('directory_mode') is None else spec['directory_mode'])
    problems = []
    if spec.get('path') is None:
        problems.append(f'{option}.path is missing: each layer needs its directory, such as /overlay/lower2-file.')
    for key in ('path', 'archive', 'keep_archive_in'):
        if spec.get(key) is None:
            continue
        if not isinstance(spec[key], str):
            problems.append(f'{option}.{key} must be a path, as a string; got {_kind(spec[key])}.')
            continue
        options[key] = spec[key]      # as written: an absolute path (request_problems says so), no ~ or $VAR
    for key in ('checksum', 'archive_name'):
        if spec.get(key) is None:
            continue
        if isinstance(spec[key], str):
            options[key] = spec[key]
        else:
            problems.append(f'{option}.{key} must be a string; got {_kind(spec[key])}.')
    if spec.get('remote_src') is not None:
        try:
            options['remote_src'] = boolean(spec['remote_src'], strict=True)
        except TypeError:
            problems.append(f'{option}.remote_src must be true or false; got {_kind(spec["remote_src"])}.')
    return (options if isinstance(options['path'], str) else None), problems


def layers_requests(params) -> tuple[list[str], list[Request]]:
    """(problems, requests) of O(layers): each layer checked as a layer of its own is, every problem named
    layers[N].option, then what the layers ask together - each directory once, none inside another."""
    value = params['layers']
    problems, requests = [], []
    if params.get('lock_timeout', 0) < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    if not isinstance(value, (list, tuple)):
        return problems + [f'layers must be a list of layers, each a dictionary with path and files or archive, such as '
                           f'{LAYERS_EXAMPLE}; got {_kind(value)}.'], []
    if not value:
        problems.append('layers is empty: list at least one layer (path, and files or archive).')
    for index, spec in enumerate(value):
        option = f'layers[{index}]'
        if not isinstance(spec, dict):
            problems.append(f'{option} must be a dictionary with path and files or archive, such as '
                            f'{{path: /overlay/lower2-file, files: {FILES_EXAMPLE}}}; got {_kind(spec)}.')
            continue
        problems.extend(unknown_keys(option, spec, LAYER_KEYS, 'a layer'))
        spec_params, type_problems = layer_params(option, spec, params)
        problems.extend(type_problems)
        if spec_params is None:
            continue
        more, wanted, directory_mode = request_problems(spec_params, prefix=f'{option}.')
        problems.extend(more)
        requests.append(Request(option, paths.normalize(spec_params['path']), spec_params, wanted, directory_mode))
    problems.extend(overlapping_problems(requests))
    return problems, requests


def overlapping_problems(requests) -> list[str]:
    """Each layer is a directory of its own: listed twice, or one inside another, the layers would write into each
    other and a prediction of the first would not hold once the second is written."""
    problems = []
    for index, later in enumerate(requests):
        for earlier in requests[:index]:
            first, second = paths.resolve(earlier.layer), paths.resolve(later.layer)
            if first == second:
                problems.append(f'{later.option}.path {later.layer} is the directory of {earlier.option}.path '
                                f'{earlier.layer} again: list each layer once.')
            elif paths.is_inside(second, first) or paths.is_inside(first, second):
                inner, outer = (later, earlier) if paths.is_inside(second, first) else (earlier, later)
                problems.append(f'{inner.option}.path {inner.layer} lies inside {outer.option}.path {outer.layer}: each '
                                f'layer is a directory of its own, beside the others.')
    return problems


def plan_layer(module, request: Request, planned_directories: set) -> Plan:
    if request.params['state'] == 'absent':
        return plan_absent(module, request.layer)
    if request.params.get('archive') is not None:
        return plan_archive(module, request.params, request.layer, request.directory_mode, planned_directories)
    return plan_files(request.layer, request.wanted, request.directory_mode, planned_directories)


@contextlib.contextmanager
def locked(module, layers):
    """One real run at a time per layer (two would rename into the same directories); check mode takes no lock.
    Several layers are locked in one order (by path), so that two runs never wait for each other's."""
    if module.check_mode:
        yield
        return
    with contextlib.ExitStack() as stack:
        for resolved, layer in sorted({paths.resolve(layer): layer for layer in layers}.items()):
            try:
                stack.enter_context(locking.exclusive('layer', resolved, timeout=module.params['lock_timeout'],
                                                      note=f'unboxed.lab.layer state={module.params["state"]}'))
            except locking.LockTimeout as error:
                raise LayerFailure(locking.timeout_message(f'the layer {layer}', error), changed=False) from error
        yield


def converge(module, requests) -> tuple[list[dict], LayerFailure | None]:
    """Every layer read and compared first - a problem with any of them stops the run before the first change - then,
    in a real run, each changed in order. Returns the result of each layer as far as the run went, and the failure
    (its ``index`` the failing layer's) or None. When a layer's archive must first be sent, nothing is changed: the
    results say which (needs_transfer)."""
    results = []
    try:
        with locked(module, [request.layer for request in requests]):
            planned_directories = set()
            plans = []
            for request in requests:
                try:
                    plans.append(plan_layer(module, request, planned_directories))
                except LayerFailure as failure:
                    failure.index = len(plans)
                    raise
            if any(plan.needs_transfer for plan in plans):
                return [dict(plan.outcome(), changed=False) for plan in plans], None
            for plan in plans:
                if plan.apply is not None and not module.check_mode:
                    try:
                        plan.apply()
                    except LayerFailure as failure:
                        failure.index = len(results)
                        raise
                results.append(plan.outcome())
    except LayerFailure as failure:
        return results, failure
    return results, None


def layers_result(requests, results, failure) -> dict:
    """The task's result for O(layers): each layer's own result in RV(layers), their actions, commands and diffs
    together, and the failure naming its layer."""
    layers = [dict(result) for result in results]
    if failure is not None and failure.index is not None:
        layers.append(dict(failure.result, changed=failure.result.get('changed', False)))
    combined = dict(changed=any(layer['changed'] for layer in layers), layers=layers,
                    actions=[action for layer in layers for action in layer.get('actions', [])],
                    command='; '.join(layer['command'] for layer in layers if layer.get('command')))
    diffs = []
    for layer in layers:
        diff = layer.pop('diff', None)
        diffs.extend(diff if isinstance(diff, list) else [diff] if diff else [])
    if diffs:
        combined['diff'] = diffs
    if any('transferred' in layer for layer in layers):
        combined['transferred'] = any(layer.get('transferred') for layer in layers)
    transfers = [index for index, layer in enumerate(layers) if layer.pop('needs_transfer', False)]
    if transfers:
        combined['needs_transfer'] = transfers
    if failure is not None:
        where = '' if failure.index is None else f'{requests[failure.index].option} ({requests[failure.index].layer}): '
        combined['msg'] = f'{where}{failure.msg}'
        if 'problems' in failure.result:
            combined['problems'] = failure.result['problems']
        if failure.index is not None:
            layers[-1].pop('problems', None)
    return combined


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **constraints())
    if module.params['layers'] is None:
        problems, wanted, directory_mode = request_problems(module.params)
        requests = [Request('', paths.normalize(module.params['path']), module.params, wanted, directory_mode)]
    else:
        problems, requests = layers_requests(module.params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    results, failure = converge(module, requests)
    if module.params['layers'] is None:
        if failure is not None:
            module.fail_json(msg=failure.msg, **failure.result)
        module.exit_json(**results[0])
    combined = layers_result(requests, results, failure)
    if failure is not None:
        module.fail_json(**combined)
    module.exit_json(**combined)


if __name__ == '__main__':
    main()
