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
  - RV(newuidmap) says whether C(newuidmap) and C(newgidmap) are installed (install C(uidmap) with
    M(ansible.builtin.apt) when they are not).
  - M(unboxed.lab.layer_remap) with O(unboxed.lab.layer_remap#module:create_user=true) makes the same account with the
    same code (Docker's 65536 IDs from 100000) in the run that copies the layers, as dockerd makes C(dockremap) when it
    starts; the C(userns) role uses that. This module stays for the account alone - another O(count) or O(first), or
    reading the range in check mode.
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import remap_user


def argument_spec():
    return dict(
        name=dict(type='str', default='unboxed-remap'),
        count=dict(type='int', default=idmap.DEFAULT_COUNT),
        first=dict(type='int', default=idmap.DEFAULT_FIRST),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        lock_timeout=dict(type='int', default=60),
    )


def request_problems(params) -> list[str]:
    problems = remap_user.name_problems('name', params['name']) + remap_user.range_problems(params['count'], params['first'])
    if params['lock_timeout'] < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    return problems


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    problems = request_problems(params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    try:
        with remap_user.locked(module, params['lock_timeout'], f'unboxed.lab.remap_account state={params["state"]}'):
            if params['state'] == 'absent':
                result = remap_user.absent(module, params['name'])
            else:
                result = remap_user.present(module, params['name'], params['count'], params['first'])
    except remap_user.AccountError as error:
        module.fail_json(msg=error.msg, **error.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
