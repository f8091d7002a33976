"""The inventory labctl writes (local_lab/inventory.py): what Ansible reads from it (each host's release, a group
per release), and that the repository's linters accept it, since the default one lands in the tree `make lint` reads."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import pytest
import yaml

from local_lab import inventory, state
from local_lab.changes import Changes
from local_lab.system import LabError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SSH_ARGS = ('-o UserKnownHostsFile=/var/lib/unboxed/lab/{lab}/ssh/known_hosts -o StrictHostKeyChecking=yes '
            '-o IdentitiesOnly=yes -o IdentityAgent=none')

# What labctl wrote before the inventory was made lint-clean: no `---`, one 140 to 174-character line.
OLD_STYLE = """\
# Written by scripts/labctl for the local lab "pytest" (10.213.7.0/24). Do not edit:
# `labctl up` rewrites this file and `labctl down` removes it.
all:
  children:
    lab:
      hosts:
        lab1:
          ansible_host: "10.213.7.11"
"""


def make_lab(name='pytest', index=7, subnet='10.213.7.0/24', prefix='lab', count=2, path='/tmp/x/hosts.yml',
             releases=('trixie', 'bookworm')) -> state.Lab:
    lab = state.Lab(name=name, index=index, subnet=ipaddress.ip_network(subnet), host_prefix=prefix, inventory=path,
                    releases=releases)
    for position, host_name in enumerate(state.host_names(prefix, count), 1):
        lab.hosts[host_name] = lab.new_host(host_name, position)
    return lab


def test_inventory_is_valid_yaml_with_both_transports_configured():
    lab = make_lab()
    text = inventory.render_inventory(lab)
    assert text.startswith(inventory.inventory_marker('pytest'))
    group = yaml.safe_load(text)['all']['children'][inventory.INVENTORY_GROUP]
    assert group['hosts'] == {'lab1': {'ansible_host': '10.213.7.11', 'unboxed_lab_debian_release': 'trixie'},
                              'lab2': {'ansible_host': '10.213.7.12', 'unboxed_lab_debian_release': 'bookworm'}}
    variables = group['vars']
    # As on a classroom's seat: the unprivileged account logs in, sudo makes every task root.
    assert variables['ansible_user'] == 'student'
    assert variables['ansible_become'] is True
    assert variables['ansible_become_method'] == 'ansible.builtin.sudo'
    assert variables['ansible_python_interpreter'] == '/usr/bin/python3'
    assert variables['ansible_private_key_file'] == '/var/lib/unboxed/lab/pytest/ssh/id_ed25519'
    assert '-o UserKnownHostsFile=/var/lib/unboxed/lab/pytest/ssh/known_hosts' in variables['ansible_ssh_common_args']
    assert '-o StrictHostKeyChecking=yes' in variables['ansible_ssh_common_args']
    assert variables['ansible_paramiko_host_key_checking'] is True
    # Folded over several lines in the file, one line of options for ssh.
    assert variables['ansible_ssh_common_args'] == SSH_ARGS.format(lab='pytest')
    assert variables['unboxed_lab_name'] == 'pytest'


def test_inventory_of_a_large_lab_with_the_longest_names_is_clean_for_the_repository_yamllint(tmp_path):
    """yamllint --strict with the repository's .yamllint, as `make lint` runs it (and ansible-lint's yaml rule)."""
    yamllint_linter = pytest.importorskip('yamllint.linter', reason='yamllint is in requirements.txt (make setup)')
    yamllint_config = pytest.importorskip('yamllint.config')
    name = 'classroom-evening-grp-12'
    prefix = 'evening-workstation-row'
    assert state.name_problem('The lab name', name) is None and state.name_problem('The host prefix', prefix) is None
    assert len(name) == 24 and len(prefix) == 23
    path = tmp_path.joinpath('molecule', 'ephemeral', 'a' * 40, 'inventory', 'hosts.yml')
    lab = make_lab(name=name, index=254, subnet='10.213.254.0/24', prefix=prefix, count=40, path=str(path))
    changes = Changes(check=False)
    inventory.ensure_inventory(changes, lab)
    text = path.read_text(encoding='utf-8')

    config = yamllint_config.YamlLintConfig(file=os.path.join(REPO, '.yamllint'))
    # The path the default lab's inventory has in the repository, so .yamllint's ignore list applies as it does there.
    problems = list(yamllint_linter.run(text, config, 'inventories/local/hosts.yml'))
    assert [f'{problem.line}:{problem.column} {problem.level} {problem.desc} ({problem.rule})' for problem in problems] == []

    loaded = yaml.safe_load(text)['all']['children']['lab']
    assert len(loaded['hosts']) == 40
    assert loaded['hosts'][f'{prefix}40'] == {'ansible_host': '10.213.254.50', 'unboxed_lab_debian_release': 'bookworm'}
    assert len(loaded['children']['debian13']['hosts']) == len(loaded['children']['debian12']['hosts']) == 20
    assert loaded['vars']['ansible_ssh_common_args'] == SSH_ARGS.format(lab=name)
    assert changes.made == [f'write the inventory {path}']


def test_an_inventory_labctl_wrote_earlier_is_rewritten_and_one_it_did_not_write_is_refused(tmp_path):
    path = tmp_path / 'hosts.yml'
    path.write_text(OLD_STYLE, encoding='utf-8')
    lab = make_lab(path=str(path))
    changes = Changes(check=True)
    inventory.ensure_inventory(changes, lab)
    assert changes.made == [f'write the inventory {path}']

    path.write_text(inventory.render_inventory(lab), encoding='utf-8')
    unchanged = Changes(check=True)
    inventory.ensure_inventory(unchanged, lab)
    assert unchanged.made == []

    # `down` removes the old style as well as the new, and only for the lab that wrote it.
    other = Changes(check=True)
    inventory.remove_inventory(other, str(path), 'pytest-second')
    assert other.made == []
    for text in (OLD_STYLE, inventory.render_inventory(lab)):
        path.write_text(text, encoding='utf-8')
        removing = Changes(check=True)
        inventory.remove_inventory(removing, str(path), 'pytest')
        assert removing.made == [f'remove the inventory {path}']

    path.write_text('---\nall:\n  hosts:\n    mine:\n', encoding='utf-8')
    with pytest.raises(LabError, match='was not written by labctl for lab "pytest"'):
        inventory.ensure_inventory(Changes(check=True), lab)


def ansible_groups(text: str, tmp_path) -> dict:
    """The groups Ansible itself reads from the file: ``ansible-inventory --list``, as `-l debian13` would."""
    ansible_inventory = pytest.importorskip('ansible.cli.inventory', reason='ansible-core is in requirements.txt (make setup)')
    del ansible_inventory
    path = tmp_path / 'hosts.yml'
    path.write_text(text, encoding='utf-8')
    config = tmp_path / 'ansible.cfg'  # Ansible's defaults, whatever the machine's configuration
    config.write_text('[defaults]\n', encoding='utf-8')
    completed = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-inventory'), '-i', str(path), '--list'],
                               capture_output=True, text=True, check=True, env=dict(os.environ, ANSIBLE_CONFIG=str(config)))
    listed = json.loads(completed.stdout)
    return {name: sorted(group.get('hosts', [])) for name, group in listed.items() if name not in ('_meta', 'all')}


def test_a_mixed_lab_has_a_group_per_release_and_each_host_its_release(tmp_path):
    lab = make_lab(count=3)
    groups = ansible_groups(inventory.render_inventory(lab), tmp_path)
    assert groups['debian13'] == ['lab1', 'lab3'] and groups['debian12'] == ['lab2']
    assert groups['lab'] == ['lab1', 'lab2', 'lab3']
    hosts = yaml.safe_load(inventory.render_inventory(lab))['all']['children']['lab']['hosts']
    assert {name: host[inventory.RELEASE_VARIABLE] for name, host in hosts.items()} == {
        'lab1': 'trixie', 'lab2': 'bookworm', 'lab3': 'trixie'}


def test_a_lab_of_one_release_has_only_that_group(tmp_path):
    groups = ansible_groups(inventory.render_inventory(make_lab(count=2, releases=('bookworm',))), tmp_path)
    assert groups.get('debian12') == ['lab1', 'lab2'] and 'debian13' not in groups


def test_changing_the_releases_rewrites_the_inventory(tmp_path):
    path = tmp_path / 'hosts.yml'
    lab = make_lab(count=2, path=str(path))
    path.write_text(inventory.render_inventory(lab), encoding='utf-8')
    lab.set_releases(('bookworm',))
    changes = Changes(check=True)
    inventory.ensure_inventory(changes, lab)
    assert changes.made == [f'write the inventory {path}']
    assert 'debian13' not in inventory.render_inventory(lab)
