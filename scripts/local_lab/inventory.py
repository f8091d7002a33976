# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's Ansible inventory: group ``lab``, each host's address and Debian release, a group per release
(``debian12``, ``debian13``: ``ansible-playbook -l debian13``), and everything both transports need.

The file is self-contained (a copy elsewhere, as molecule makes, needs nothing beside it) and clean for
the repository's linters: the default one, inventories/local/hosts.yml, lies in the tree that
`make lint` reads (yamllint --strict with .yamllint, ansible-lint), so it starts a YAML document and keeps
its lines short. labctl writes it with the standard library only: JSON strings are valid YAML scalars.
"""

from __future__ import annotations

import json
import os

from . import account, releases
from .changes import Changes
from .ssh import SYSTEM_KNOWN_HOSTS
from .state import Lab
from .system import LabError, read_file, write_file_atomically

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_INVENTORY = os.path.join(REPO, 'inventories', 'local', 'hosts.yml')
INVENTORY_GROUP = 'lab'
# The release a host runs, as the lab made it (the facts say what it runs now: ansible_distribution_release).
RELEASE_VARIABLE = 'unboxed_lab_debian_release'
INDENT = '  '


def yaml_scalar(value) -> str:
    """A YAML scalar that needs no library: JSON strings, numbers and booleans are valid YAML."""
    return json.dumps(value)


def folded(key: str, parts, depth: int) -> list[str]:
    """``key: >-`` and one line per part: YAML folds the lines back into one string, ``' '.join(parts)``.

    Each part must be one line without leading or trailing blanks (folding keeps neither).
    """
    return [f'{INDENT * depth}{key}: >-'] + [f'{INDENT * (depth + 1)}{part}' for part in parts]


def ssh_common_args(lab: Lab) -> list[str]:
    return [f'-o UserKnownHostsFile={lab.known_hosts}', '-o StrictHostKeyChecking=yes',
            '-o IdentitiesOnly=yes', '-o IdentityAgent=none']


def inventory_marker(lab_name: str) -> str:
    """How the file starts: `up` rewrites and `down` removes only a file that starts so."""
    return f'# Written by scripts/labctl for the local lab "{lab_name}" '


def render_inventory(lab: Lab) -> str:
    lines = [
        f'{inventory_marker(lab.name)}({lab.subnet}). Do not edit:',
        '# `labctl up` rewrites this file and `labctl down` removes it.',
        '---',
        'all:',
        '  children:',
        f'    {INVENTORY_GROUP}:',
        '      hosts:',
    ]
    for host in lab.hosts_in_order():
        lines += [f'        {host.name}:', f'          ansible_host: {yaml_scalar(str(host.address.ip))}',
                  f'          {RELEASE_VARIABLE}: {yaml_scalar(host.release)}']
    groups = {releases.group_name(release): [host.name for host in lab.hosts_in_order() if host.release == release]
              for release in releases.SUPPORTED}
    lines += ['      children:'] if any(groups.values()) else []
    for group, members in groups.items():
        if members:
            lines += [f'        {group}:', '          hosts:'] + [f'            {name}: {{}}' for name in members]
    lines += [
        '      vars:',
        '        # As on a classroom\'s seat (inventories/classroom/): an unprivileged account with the lab\'s key,',
        '        # and sudo for root, so every task runs through become. The lab\'s sudo rule needs no password',
        '        # (docs/local-lab.md); a classroom\'s asks for one (--ask-become-pass).',
        f'        ansible_user: {yaml_scalar(account.LAB_USER)}',
        '        ansible_become: true',
        '        ansible_become_method: ansible.builtin.sudo',
        '        ansible_python_interpreter: /usr/bin/python3',
        f'        unboxed_lab_name: {yaml_scalar(lab.name)}',
        '        # Read by both transports, ssh and paramiko.',
        f'        ansible_private_key_file: {yaml_scalar(lab.key)}',
        '        # ssh: verify host keys against the known_hosts labctl wrote for this lab.',
        *folded('ansible_ssh_common_args', ssh_common_args(lab), 4),
        '        # paramiko reads host keys only from /etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts and has',
        '        # no option to name another file: labctl keeps this lab\'s keys in a block of',
        f'        # {SYSTEM_KNOWN_HOSTS}.',
        '        ansible_paramiko_host_key_checking: true',
        '',
    ]
    return '\n'.join(lines)


def ensure_inventory(changes: Changes, lab: Lab) -> None:
    current = read_file(lab.inventory)
    wanted = render_inventory(lab)
    if current is not None and not current.startswith(inventory_marker(lab.name)):
        raise LabError(f'{lab.inventory} exists and was not written by labctl for lab "{lab.name}": '
                       f'move it away or pass another --inventory.')
    if current != wanted:
        changes.make(f'write the inventory {lab.inventory}', write_file_atomically, lab.inventory, wanted, 0o644)


def remove_inventory(changes: Changes, path: str, lab_name: str) -> None:
    """Remove the lab's inventory, and only if labctl wrote it for this lab."""
    current = read_file(path)
    if current is not None and current.startswith(inventory_marker(lab_name)):
        changes.make(f'remove the inventory {path}', os.unlink, path)
