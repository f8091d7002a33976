#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: layer_remap
short_description: Keep an ID-shifted copy of image layers for a user-namespace-remapped root, as dockerd --userns-remap does
version_added: 0.3.0
description:
  - With C(dockerd --userns-remap=default), root in a container is the unprivileged host uid 100000 (the first
    line of the remap user's range in C(/etc/subuid) and C(/etc/subgid)). Files of the image owned by root must then
    be owned by 100000 on the host, or root inside sees them as C(nobody). Docker keeps a copy of every image layer
    per remapped root, each file's owner shifted by the range's start, in C(/var/lib/docker/100000.100000/).
  - This module does the same for the talk's layers. For each directory of O(src) it makes and keeps up to date
    C(ROOT/UID.GID/NAME) (O(root), the start of the uid and gid range of O(user), the source's last path
    component), for example C(/overlay/lower1-base) -> C(/var/lib/unboxed/remap/100000.100000/lower1-base).
  - The copy holds every entry of the source - regular files (content, sparse parts written out), directories,
    symbolic links (owner set with lchown, never followed), hard links (kept as hard links), character and block
    devices, FIFOs and sockets - with the same mode (setuid, setgid and sticky bits included, set after the owner,
    since chown clears them), access and modification times, and extended attributes. Owner C(n) becomes
    C(START + n). An owner the range cannot hold (C(n >= COUNT)) is an error naming the files, as Docker fails with
    C(Container ID 65536 cannot be mapped to a host ID) - it is never squashed to the overflow ID silently.
  - Extended attributes that hold IDs are shifted too. C(security.capability) (file capabilities, e.g. C(ping)'s
    C(cap_net_raw)) is rewritten as revision 3 with its root ID shifted (0 for revision 2), so that the capability
    works for the container's root and for nobody on the seat; a revision 2 copy would be honoured in every user
    namespace, the seat's included. Named users and groups in POSIX ACLs are shifted.
  - The source is only read, never changed, not even its access times (files are opened with C(O_NOATIME)) - the
    image's layers stay shared by the other containers. A mount inside a source is not descended into.
  - The module keeps a record beside each copy (C(ROOT/UID.GID/.NAME.unboxed-remap.json)) - the cheap inventory of
    the source at the last copy (paths, types, sizes, modification and change times, modes, owners, hard link
    groups). A rerun reads the source's inventory again, compares it with the record and with what is in the copy,
    and copies again only what changed, removes only what vanished from the source, and only inside the copy it made.
    Nothing changed - nothing copied, C(changed=false). A copy it did not make (a directory with no record that is not
    empty) is never touched.
  - Files are written in a hidden staging directory beside the copy (C(ROOT/UID.GID/.NAME.unboxed-staging)) and
    renamed into place; a killed run leaves at most that directory and a record marked incomplete, and the next run
    completes the copy.
  - O(directories) are directories owned by the remapped root - a container's upper and work directory.
  - Why a copy, and not an idmapped mount. Linux 5.12 and later can mount a directory with its owners shifted, without
    copying (C(mount --bind -o X-mount.idmap=...)); but C(mount) can only ask for it from util-linux 2.39 on, and
    Debian 12's is 2.38, and an overlay whose lower layers are idmapped mounts needs Linux 5.19 or later. The copy
    works on every seat, and is what Docker's userns-remap does with its overlay2 driver. It costs the disk space and
    time of one copy of the image per remapped root (C(docs/userns.md) gives the figures measured).
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Predicts exactly which entries would be added, updated and removed; writes nothing and takes no lock.
      - With O(create_user=true) the account is predicted from the same plan the real run follows - the user, its lines
        and so the range and the copies' directory - with no warning.
      - Without it, in a C(--check) run of a whole playbook the task that makes the remap user's ranges has not run
        either - a missing O(user) or range is a warning and the range M(unboxed.lab.remap_account) would choose is
        assumed. A missing O(src) (the layers, made earlier in the play) is a warning and a whole copy is predicted. A
        real run fails while they are missing.
  diff_mode:
    support: full
    details:
      - One summary per copy - how many entries would be added, updated, removed, with a few names of each - and, when
        O(create_user=true) changes the account, the user and its lines before and after.
  platform:
    platforms: posix
options:
  user:
    description:
      - The remap user, as dockerd's C(--userns-remap=USER) (C(dockremap) for V(default)). Its B(first) line in
        C(/etc/subuid) and C(/etc/subgid) gives the range; its start names the copies' directory.
      - It must exist with its ranges, as dockerd expects of a named remap user (C(--userns-remap=NAME)) - unless
        O(create_user=true).
      - With O(state=absent) a user that is gone is no error - the copies are found by their records instead.
    type: str
    required: true
  create_user:
    description:
      - Make O(user) and its ranges when they are missing, as C(dockerd --userns-remap=default) creates C(dockremap) when
        it starts - in the same run as the copies. The same code as M(unboxed.lab.remap_account) with its defaults - a
        system user (C(useradd --system --user-group)), and 65536 IDs from the lowest start from 100000 that no line of
        C(/etc/subuid) or C(/etc/subgid) uses, the same start in both files. A user or a line that exists is kept as it
        is; RV(account) says what was made. O(user) must not be root.
      - Everything is planned first - the account, then the copies - so a request that fails on the seat (a missing
        O(src), a copy this module did not make) fails before the account is made.
      - With O(state=absent), after the copies, the lines and the user this collection made are removed (the record
        C(/var/lib/unboxed/remap/USER.account.json) says which, as M(unboxed.lab.remap_account) O(state=absent)) -
        nothing that was there before. A user still running processes cannot be removed - stop the containers first.
      - V(false) (the default), as dockerd with a named user (C(--userns-remap=USER)) never creates one. A missing user
        or range is then an error saying so.
    type: bool
    default: false
  src:
    description:
      - The layer directories to copy, each by absolute path (C(/overlay/lower1-base)). Their last path components
        must differ (they name the copies).
      - Must not be, or lead through a symbolic link to, a system directory; must not be inside O(root) nor contain it.
      - With O(state=absent), only their last path components are used, to name the copies to remove.
    type: list
    elements: path
    required: true
  root:
    description:
      - Where the copies go, below C(UID.GID) (Docker's C(/var/lib/docker)).
    type: path
    default: /var/lib/unboxed/remap
  directories:
    description:
      - Directories to own by the remapped root (C(START:START), mode 0755), created with their missing parents
        (those owned by root, 0755) - a container's upper and work directories, for M(unboxed.lab.overlay_mount).
        Their content is never changed by O(state=present).
      - With O(state=absent) they are removed with everything in them, unless a mount uses them.
    type: list
    elements: path
    default: []
  state:
    description:
      - V(present) makes and updates the copies and O(directories).
      - V(absent) removes the copies this module made (those with a record) and O(directories), refusing while a
        mount uses one, then with O(create_user=true) what it made of the account. Nothing of the sources is touched.
    type: str
    choices: [present, absent]
    default: present
  lock_timeout:
    description:
      - Seconds to wait for another run working on the same copy before failing, naming it. Not used in check mode.
    type: int
    default: 60
notes:
  - RV(commands) are the shell commands a student would type for the same result - C(cp -a), then a C(find) that shifts
    each owner with C(chown -h) and restores the mode that chown cleared. They are for reading; the module does the
    same in Python, file by file, and also shifts the file capabilities, which that C(chown) drops.
seealso:
  - module: unboxed.lab.remap_account
  - module: unboxed.lab.overlay_mount
  - module: unboxed.lab.ns_container
  - name: Docker - isolate containers with a user namespace
    description: dockerd's --userns-remap, the remap user and the subordinate ID ranges.
    link: https://docs.docker.com/engine/security/userns-remap/
"""

EXAMPLES = r"""
- name: Make unboxed-remap and its ranges and shift the talk's layers into them, as dockerd --userns-remap=default does
  unboxed.lab.layer_remap:
    user: unboxed-remap
    create_user: true
    src: [/overlay/lower2-file, /overlay/lower1-base]
    directories: [/overlay-userns/upper, /overlay-userns/work]
  register: remapped

- name: Install newuidmap and newgidmap when missing
  ansible.builtin.apt:
    name: uidmap
  when: not remapped.newuidmap

- name: Mount them for the remapped container
  unboxed.lab.overlay_mount:
    path: /overlay-userns/merged
    lowerdirs: "{{ remapped.copies | map(attribute='dest') | list }}"
    upperdir: /overlay-userns/upper
    workdir: /overlay-userns/work

- name: Remove the copies, then the user and its lines (after the container stopped and the overlay is unmounted)
  unboxed.lab.layer_remap:
    user: unboxed-remap
    create_user: true
    src: [/overlay/lower2-file, /overlay/lower1-base]
    directories: [/overlay-userns/upper, /overlay-userns/work]
    state: absent
"""

RETURN = r"""
uid_start:
  description: The host uid of the container's root (the first uid of the range); null when the user is gone (absent).
  returned: always
  type: int
  sample: 100000
gid_start:
  description: The host gid of the container's root group.
  returned: always
  type: int
  sample: 100000
count:
  description: How many IDs the range holds (the container's IDs 0 to count - 1).
  returned: always
  type: int
  sample: 65536
copies:
  description:
    - One entry per O(src) - C(src), C(dest), C(entries) (how many the source holds), C(add), C(update), C(remove),
      C(metadata) (directories whose mode, owner or times alone change), C(bytes) (of regular files copied). In check
      mode, what a real run would do.
  returned: always
  type: list
  elements: dict
  sample:
    - {src: /overlay/lower1-base, dest: /var/lib/unboxed/remap/100000.100000/lower1-base, entries: 8231, add: 8231,
       update: 0, remove: 0, metadata: 0, bytes: 46137344}
directories:
  description: O(directories), each with C(path) and C(action) (V(create), V(chown), V(remove) or V(none)).
  returned: always
  type: list
  elements: dict
account:
  description:
    - With O(create_user=true), the account - C(name), C(changed) (this run made the user or a line, or removed them),
      C(created) (what this collection made and keeps in its record - C(user), C(subuid), C(subgid)) and C(commands)
      (those of the account, also first in RV(commands)). Null without O(create_user).
  returned: always
  type: dict
  sample: {name: unboxed-remap, changed: false, created: {user: true, subuid: "unboxed-remap:100000:65536",
           subgid: "unboxed-remap:100000:65536"}, commands: []}
newuidmap:
  description: Whether newuidmap and newgidmap (package uidmap), which a remapped container needs, are installed.
  returned: always
  type: bool
commands:
  description: The equivalent shell commands, for reading (see the notes).
  returned: always
  type: list
  elements: str
  sample:
    - mkdir -p /var/lib/unboxed/remap/100000.100000
    - cp -a /overlay/lower1-base /var/lib/unboxed/remap/100000.100000/lower1-base
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import layer_shift


def main():
    module = AnsibleModule(argument_spec=layer_shift.argument_spec(), supports_check_mode=True)
    try:
        result = layer_shift.Shift(module, module.params).run()
    except layer_shift.ShiftError as error:
        module.fail_json(msg=error.msg, **error.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
