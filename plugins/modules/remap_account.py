#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: remap_account
short_description: The remap user and its subordinate ID ranges, as dockerd --userns-remap=default makes dockremap
version_added: 0.3.0
description:
  - C(dockerd --userns-remap=default) creates a system user C(dockremap) and gives it the first free range of 65536
    IDs from 100000 in C(/etc/subuid) and C(/etc/subgid) (lines C(dockremap:100000:65536)). A container's root is then
    mapped to the first ID of that range - uid 0 inside is uid 100000 on the host - through C(newuidmap) and
    C(newgidmap) of the C(uidmap) package.
  - This module does the same for O(name). It creates the user (C(useradd --system --user-group)) when missing, and
    adds a line for it to each file when it has none - at the lowest start from O(first) on whose O(count) IDs no line
    of either file uses, so that uids and gids start at the same number. A user that already has a range keeps it;
    lines of other users are never changed.
  - It keeps a record of what it created (C(/var/lib/unboxed/remap/NAME.account.json)). O(state=absent) removes exactly
    that - its lines, and the user if it created it - and nothing that was there before.
  - Each file is rewritten whole through a temporary file and a rename, keeping its mode and owner, so a reader never
    sees half a file.
  - RV(newuidmap) says whether C(newuidmap) and C(newgidmap) are installed; the C(userns) role installs C(uidmap) with
    M(ansible.builtin.apt) when they are not.
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  name:
    description: The remap user (Docker's C(dockremap)).
    type: str
    default: unboxed-remap
  count:
    description: How many IDs a new range holds (the container's IDs 0 to count - 1). Docker's is 65536.
    type: int
    default: 65536
  first:
    description: Where the search for a free range starts. Docker's is 100000.
    type: int
    default: 100000
  state:
    description:
      - V(present) makes the user and its ranges exist.
      - V(absent) removes the lines this module added and the user if this module created it (the record says which).
        A user or a line that was there before stays. A user still running processes cannot be removed (stop the
        containers first).
    type: str
    choices: [present, absent]
    default: present
  lock_timeout:
    description: Seconds to wait for another run changing the ranges. Not used in check mode.
    type: int
    default: 60
seealso:
  - module: unboxed.lab.layer_remap
  - module: unboxed.lab.ns_container
  - name: subuid(5)
    description: The format of /etc/subuid.
    link: https://manpages.debian.org/bookworm/passwd/subuid.5.en.html
"""

EXAMPLES = r"""
- name: The remap user, as dockerd --userns-remap=default makes dockremap
  unboxed.lab.remap_account:
    name: unboxed-remap
  register: remap

- name: Install newuidmap and newgidmap when missing
  ansible.builtin.apt:
    name: uidmap
  when: not remap.newuidmap

- name: Remove what it made
  unboxed.lab.remap_account:
    name: unboxed-remap
    state: absent
"""

RETURN = r"""
name:
  description: The remap user.
  returned: always
  type: str
  sample: unboxed-remap
uid_start:
  description: The first host uid of the user's first range in /etc/subuid - the container's root. Null when absent.
  returned: always
  type: int
  sample: 100000
gid_start:
  description: The first host gid of its first range in /etc/subgid.
  returned: always
  type: int
  sample: 100000
count:
  description: How many IDs the uid range holds.
  returned: always
  type: int
  sample: 65536
created:
  description: What this module created and keeps in its record - C(user) (bool), C(subuid) and C(subgid) (the lines, or null).
  returned: always
  type: dict
  sample: {user: true, subuid: "unboxed-remap:100000:65536", subgid: "unboxed-remap:100000:65536"}
newuidmap:
  description: Whether newuidmap and newgidmap (package uidmap) are installed.
  returned: always
  type: bool
commands:
  description: The equivalent shell commands.
  returned: always
  type: list
  elements: str
  sample: [useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin unboxed-remap,
           "echo unboxed-remap:100000:65536 >> /etc/subuid", "echo unboxed-remap:100000:65536 >> /etc/subgid"]
"""

import contextlib
import json
import os
import pwd

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import locking

FILES = {'subuid': '/etc/subuid', 'subgid': '/etc/subgid'}
RECORD_DIR = '/var/lib/unboxed/remap'


def argument_spec():
    return dict(
        name=dict(type='str', default='unboxed-remap'),
        count=dict(type='int', default=idmap.DEFAULT_COUNT),
        first=dict(type='int', default=idmap.DEFAULT_FIRST),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        lock_timeout=dict(type='int', default=60),
    )


def request_problems(params) -> list[str]:
    problems = [problem for problem in [idmap.name_problem('name', params['name'])] if problem]
    if params['name'] == 'root' or params['name'] == '0':
        problems.append('name must not be root: the point of the remap is a root inside that is nobody outside.')
    if not 1 <= params['count'] <= 2 ** 32 - 2:
        problems.append(f'count must be between 1 and {2 ** 32 - 2}, got {params["count"]}.')
    if not 1 <= params['first'] <= 2 ** 32 - 2:
        problems.append(f'first must be an ID of 1 or more, got {params["first"]} (0 is the host\'s root).')
    if params['lock_timeout'] < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    return problems


def read_text(path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='surrogateescape') as handle:
            return handle.read()
    except FileNotFoundError:
        return ''


def write_text(path: str, text: str) -> None:
    """The whole file anew through a temporary file and a rename; mode and owner as they were (0644 root for a new one)."""
    try:
        info = os.stat(path)
        mode, uid, gid = info.st_mode & 0o7777, info.st_uid, info.st_gid
    except FileNotFoundError:
        mode, uid, gid = 0o644, 0, 0
    temporary = f'{path}.unboxed-tmp'
    with open(temporary, 'w', encoding='utf-8', errors='surrogateescape') as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chown(temporary, uid, gid)
    os.chmod(temporary, mode)
    os.rename(temporary, path)


def record_path(name: str) -> str:
    return os.path.join(RECORD_DIR, f'{name}.account.json')


def read_record(name: str) -> dict:
    try:
        with open(record_path(name), encoding='utf-8') as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def write_record(name: str, record: dict) -> None:
    os.makedirs(RECORD_DIR, mode=0o755, exist_ok=True)
    temporary = record_path(name) + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as handle:
        json.dump(record, handle)
    os.rename(temporary, record_path(name))


def user_uid(name: str):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def present(module):
    name = module.params['name']
    record = read_record(name)
    created = dict(user=bool(record.get('user')), subuid=record.get('subuid'), subgid=record.get('subgid'))
    commands = []
    uid = user_uid(name)
    create_user = uid is None
    useradd = [module.get_bin_path('useradd', required=True, opt_dirs=['/usr/sbin', '/sbin']), '--system', '--user-group',
               '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name]
    if create_user:
        commands.append(cmd.shell_join(['useradd'] + useradd[1:]))
        if not module.check_mode:
            cmd.run_checked(module, useradd, f'create the user {name}')
            uid = user_uid(name)
            created['user'] = True
    texts = {key: read_text(path) for key, path in FILES.items()}
    try:
        wanted = idmap.planned_lines(name, uid, texts, module.params['count'], module.params['first'])
    except ValueError as error:
        module.fail_json(msg=f'count: {error} in {FILES["subuid"]} and {FILES["subgid"]}; choose a smaller count or first.')
    before = {key: [line.text for line in idmap.ranges_of(idmap.parse_subid(text)[0], name, uid)] for key, text in texts.items()}
    after = {key: before[key] + ([wanted[key]] if wanted[key] else []) for key in FILES}
    for key, line in wanted.items():
        if line:
            commands.append(f'echo {line} >> {FILES[key]}')
            if not module.check_mode:
                text = texts[key]
                write_text(FILES[key], text + ('' if not text or text.endswith('\n') else '\n') + line + '\n')
                created[key] = line
    changed = create_user or any(wanted.values())
    if changed and not module.check_mode:
        write_record(name, created)
    first_lines = {key: idmap.parse_subid('\n'.join(after[key]))[0][0] for key in FILES}
    module.exit_json(
        changed=changed, name=name, uid_start=first_lines['subuid'].start, gid_start=first_lines['subgid'].start,
        count=first_lines['subuid'].count, created=created, commands=commands, newuidmap=newuidmap_installed(module),
        diff={'before': {'user': 'absent' if create_user else 'present', **before},
              'after': {'user': 'present', **after}})


def newuidmap_installed(module) -> bool:
    return all(module.get_bin_path(program, opt_dirs=['/usr/bin', '/usr/sbin']) for program in ('newuidmap', 'newgidmap'))


def absent(module):
    name = module.params['name']
    record = read_record(name)
    uid = user_uid(name)
    commands, before, after = [], {}, {}
    texts = {key: read_text(path) for key, path in FILES.items()}
    new_texts = {}
    for key, path in FILES.items():
        line = record.get(key)
        kept = [raw for raw in texts[key].splitlines() if raw.strip() != line] if line else texts[key].splitlines()
        if line and len(kept) != len(texts[key].splitlines()):
            new_texts[key] = '\n'.join(kept) + ('\n' if kept else '')
            commands.append(cmd.shell_join(['sed', '-i', f'/^{line}$/d', path]))
            before[key], after[key] = [line], []
    remove_user = bool(record.get('user')) and uid is not None
    if remove_user:
        commands.append(cmd.shell_join(['userdel', name]))
        before['user'], after['user'] = 'present', 'absent'
    changed = bool(new_texts) or remove_user or bool(record)
    result = dict(changed=changed, name=name, uid_start=None, gid_start=None, count=None,
                  created=dict(user=False, subuid=None, subgid=None), commands=commands,
                  newuidmap=newuidmap_installed(module), diff={'before': before, 'after': after})
    if module.check_mode or not changed:
        module.exit_json(**result)
    if remove_user:
        userdel = module.get_bin_path('userdel', required=True, opt_dirs=['/usr/sbin', '/sbin'])
        cmd.run_checked(module, [userdel, name], f'remove the user {name} (stop the containers that run as it first)')
    for key, text in new_texts.items():
        write_text(FILES[key], text)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(name))
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    problems = request_problems(module.params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    if module.check_mode:
        (absent if module.params['state'] == 'absent' else present)(module)
    try:
        with locking.exclusive('account', FILES['subuid'], timeout=module.params['lock_timeout'],
                               note=f'unboxed.lab.remap_account state={module.params["state"]}'):
            (absent if module.params['state'] == 'absent' else present)(module)
    except locking.LockTimeout as error:
        module.fail_json(msg=locking.timeout_message(f'the ranges of {FILES["subuid"]}', error), changed=False)


if __name__ == '__main__':
    main()
