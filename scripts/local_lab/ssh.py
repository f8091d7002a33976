# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH between the controller and a lab: the lab's client key, each host's own host key, sshd's settings,
and the known_hosts files both of Ansible's transports verify the hosts against.

``ssh`` reads the lab's own known_hosts (-o UserKnownHostsFile). paramiko reads only /etc/ssh/ssh_known_hosts
and ~/.ssh/known_hosts, so each lab also keeps its keys in a marked block of /etc/ssh/ssh_known_hosts.
"""

from __future__ import annotations

import contextlib
import glob
import os
import socket

from . import account
from .changes import Changes
from .state import HostRecord, Lab, save_controller
from .system import read_file, run, write_file_atomically, write_inside

SSH_PORT = 22
SYSTEM_KNOWN_HOSTS = '/etc/ssh/ssh_known_hosts'
SSHD_CONFIG = f"""\
# Written by labctl: as on a classroom's seat, root does not log in over SSH; {account.LAB_USER} logs in with the
# lab's key only and becomes root with sudo.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
# Ansible opens many sessions at once (forks, pipelining); refuse none of them.
MaxStartups 100
MaxSessions 100
"""


# --- the lab's client key ------------------------------------------------------------------------

def create_client_key(lab: Lab) -> None:
    for path in (lab.key, lab.key + '.pub'):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', account.client_key_comment(lab.name), '-f', lab.key],
        f'generate the SSH key of lab {lab.name}')


# --- a host's side: host key, sshd settings, the account's key ---------------------------------

def set_up_sshd(lab: Lab, host: HostRecord) -> None:
    """A new host key (never one copied from the base), sshd's settings, and the lab's key and sudo for the account."""
    root = host.rootfs
    for old_key in glob.glob(os.path.join(root, 'etc', 'ssh', 'ssh_host_*')):
        os.unlink(old_key)
    run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'root@{host.name}',
         '-f', os.path.join(root, 'etc', 'ssh', 'ssh_host_ed25519_key')], f'generate the host key of {host.name}')
    write_inside(root, '/etc/ssh/sshd_config.d/unboxed-lab.conf', SSHD_CONFIG)
    account.set_up_account(lab, host)


def ensure_authorized_key(changes: Changes, lab: Lab, host: HostRecord, key_made_now: bool) -> None:
    """A lab key made again (its file was lost) must reach the hosts that were already there."""
    if not os.path.isfile(host.marker):
        return  # copied just now (or about to be, in check mode) with the current key
    if key_made_now or not account.lab_key_authorized(lab, host):
        changes.make(f'authorize the lab key for {account.LAB_USER} on {host.name}', account.authorize_lab_key, lab, host)


def ssh_banner(address: str, timeout: float = 1.0) -> str | None:
    """The first line sshd sends, or None when nothing answers."""
    try:
        with socket.create_connection((address, SSH_PORT), timeout=timeout) as connection:
            connection.settimeout(timeout)
            return connection.recv(256).decode('ascii', 'replace').strip() or None
    except OSError:
        return None


# --- known_hosts on the controller ----------------------------------------------------------------

def render_known_hosts(entries) -> str:
    """``entries``: (address, 'ssh-ed25519 AAAA...') pairs."""
    return ''.join(f'{address} {public_key}\n' for address, public_key in entries)


def block_markers(lab_name: str) -> tuple[str, str]:
    return (f'# BEGIN unboxed lab "{lab_name}" (managed by labctl; removed by labctl down)',
            f'# END unboxed lab "{lab_name}"')


def replace_block(text: str, lab_name: str, body: str) -> str:
    """``text`` with this lab's marked block holding ``body``: replaced where it stands, appended when new,
    removed when ``body`` is empty. Other lines and other labs' blocks stay as they are, in their order."""
    begin, end = block_markers(lab_name)
    block = f'{begin}\n{body}{end}\n' if body else ''
    result = []
    placed = False
    inside = False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip('\n')
        if stripped == begin and not inside:
            inside = True
            continue
        if inside:
            if stripped == end:
                inside = False
                if not placed:
                    result.append(block)
                    placed = True
            continue
        result.append(line)
    if inside and not placed:
        # A BEGIN without END: whatever followed was this lab's block, cut short.
        result.append(block)
        placed = True
    if not placed and block:
        if result and not result[-1].endswith('\n'):
            result.append('\n')
        result.append(block)
    return ''.join(result)


def known_host_entries(lab: Lab) -> list[tuple[str, str]]:
    entries = []
    for host in lab.hosts_in_order():
        public_key = read_file(host.host_public_key)
        if public_key:
            key_type, key_data = public_key.split()[:2]
            entries.append((str(host.address.ip), f'{key_type} {key_data}'))
    return entries


def ensure_known_hosts(changes: Changes, lab: Lab, controller: dict, keys_pending: bool = False) -> None:
    """``keys_pending``: hosts are (or would be) copied in this run. In check mode such a host has no new host key
    yet, or still the old one; its new key will change both files."""
    body = render_known_hosts(known_host_entries(lab))
    keys_pending = changes.check and (keys_pending or any(not os.path.isfile(host.marker) for host in lab.hosts.values()))
    if keys_pending or read_file(lab.known_hosts) != body:
        changes.make(f'write {lab.known_hosts}', write_file_atomically, lab.known_hosts, body, 0o644)
    current = read_file(SYSTEM_KNOWN_HOSTS)
    wanted = replace_block(current or '', lab.name, body)
    if keys_pending or current != wanted:
        changes.make(f'write the host keys of lab {lab.name} into {SYSTEM_KNOWN_HOSTS} (for paramiko)',
                     write_system_known_hosts, wanted, current is None, controller)


def write_system_known_hosts(content: str, creating: bool, controller: dict) -> None:
    if creating:
        controller['created_system_known_hosts'] = True
        save_controller(controller)
    write_file_atomically(SYSTEM_KNOWN_HOSTS, content, 0o644)
