# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who logs in to a seat: the unprivileged account ``student`` with the lab's key, and sudo for root.

A classroom's seat is reached as an ordinary user who becomes root with sudo (inventories/classroom/), never
as root over SSH. A lab seat is the same, so every test exercises Ansible's ``become``: the base has the
account (made by the seat's own useradd when the base is built, uid 1000 as the first user of a Debian
install) and the sudo package; each seat gets the lab's public key in the account's authorized_keys and a
sudoers rule.

NOPASSWD, in the lab only: the account has no password at all (key login), the seats are reached only from
this machine with a key only root can read, and the tests run unattended, so there is nobody to type a
password and no password to keep out of the generated inventory. A classroom gives the account a password and
leaves NOPASSWD out (``student ALL=(ALL) ALL``); Ansible then asks once per run (``--ask-become-pass``) or
reads ``ansible_become_password`` from a vault. Either way sudo runs every privileged task.
"""

from __future__ import annotations

import os

from ansible_collections.unboxed.lab.plugins.module_utils import paths

from .state import HostRecord, Lab
from .system import LabError, read_file, write_inside

LAB_USER = 'student'
LAB_UID = 1000
LAB_HOME = f'/home/{LAB_USER}'
AUTHORIZED_KEYS = f'{LAB_HOME}/.ssh/authorized_keys'
SUDOERS_FILE = f'/etc/sudoers.d/{LAB_USER}'
SUDOERS = f"""\
# Written by labctl. The lab's account becomes root without a password: it has none (key login only), and the
# lab's tests run unattended. A classroom seat has `{LAB_USER} ALL=(ALL) ALL` and a password (see docs/local-lab.md).
{LAB_USER} ALL=(ALL) NOPASSWD: ALL
"""
# mmdebstrap --customize-hook: the account, made in the base by the seat's own useradd (its /etc/skel, its
# login.defs), as the Debian installer makes the first user. A constant: nothing from outside goes into it.
BASE_HOOKS = (
    f'chroot "$1" useradd --uid {LAB_UID} --user-group --create-home --shell /bin/bash --comment "Lab student" {LAB_USER}',
)


def client_key_comment(lab: str) -> str:
    return f'unboxed-lab-{lab}'


def parse_passwd_ids(passwd_text: str, user: str) -> tuple[int, int] | None:
    """(uid, gid) of ``user`` in an /etc/passwd text, or None."""
    for line in passwd_text.splitlines():
        fields = line.split(':')
        if len(fields) >= 4 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    return None


def account_ids(host: HostRecord) -> tuple[int, int]:
    passwd = paths.resolve_inside(host.rootfs, '/etc/passwd')
    ids = parse_passwd_ids(read_file(passwd) or '', LAB_USER) if passwd else None
    if ids is None:
        raise LabError(f'{host.name} has no {LAB_USER} account in its /etc/passwd: its base was built by an earlier '
                       f'labctl. `labctl up` builds the current base and makes such a host again.')
    return ids[0], ids[1]


def authorized_keys_path(host: HostRecord) -> str | None:
    return paths.resolve_inside(host.rootfs, AUTHORIZED_KEYS)


def authorize_lab_key(lab: Lab, host: HostRecord) -> None:
    """Put the lab's public key in the account's authorized_keys on the host in place of an earlier lab key,
    keeping any other key there; owned by the account, as sshd's StrictModes wants."""
    uid, gid = account_ids(host)
    public_key = read_file(lab.key + '.pub')
    path = authorized_keys_path(host)
    kept = [line for line in (read_file(path) or '').splitlines() if not line.endswith(' ' + client_key_comment(lab.name))]
    ssh_dir = paths.join_inside(host.rootfs, f'{LAB_HOME}/.ssh')
    if not os.path.isdir(ssh_dir) or os.path.islink(ssh_dir):
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    write_inside(host.rootfs, AUTHORIZED_KEYS, ''.join(line + '\n' for line in kept) + public_key, 0o600)
    for path_inside in (f'{LAB_HOME}/.ssh', AUTHORIZED_KEYS):
        os.chown(paths.join_inside(host.rootfs, path_inside), uid, gid, follow_symlinks=False)
    os.chmod(ssh_dir, 0o700)


def lab_key_authorized(lab: Lab, host: HostRecord) -> bool:
    public_key = read_file(lab.key + '.pub')
    path = authorized_keys_path(host)
    return bool(public_key and path and public_key.strip() in (read_file(path) or '').splitlines())


def set_up_account(lab: Lab, host: HostRecord) -> None:
    """The lab's key for the account, and its sudo rule."""
    authorize_lab_key(lab, host)
    write_inside(host.rootfs, SUDOERS_FILE, SUDOERS, 0o440)
