"""known_hosts blocks (local_lab/ssh.py), the readings of /proc/PID/status a host's processes need
(host.py and the collection's process.py), and the lab's record (state.py)."""

from __future__ import annotations

import ipaddress
import os

from ansible_collections.unboxed.lab.plugins.module_utils import process

from local_lab import host, ssh, state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_nspid_of_a_namespace_init_and_of_a_host_process():
    assert process.parse_nspids('Name:\ttini\nNSpid:\t32422\t1\nNSpgid:\t32420\t0\n') == [32422, 1]
    assert process.parse_nspids('Name:\tbash\nNSpid:\t815\n') == [815]
    assert host.parse_vm_rss_kib('VmHWM:\t    1400 kB\nVmRSS:\t    1024 kB\n') == 1024
    assert host.parse_vm_rss_kib('Name:\tkthreadd\nState:\tS (sleeping)\n') == 0


def test_known_hosts_block_is_replaced_in_place_and_other_lines_stay():
    begin, end = ssh.block_markers('try')
    other_begin, other_end = ssh.block_markers('other')
    text = (f'192.0.2.9 ssh-ed25519 AAAAuser\n{begin}\n10.213.1.11 ssh-ed25519 OLD\n{end}\n'
            f'{other_begin}\n10.213.2.11 ssh-ed25519 KEEP\n{other_end}\n')
    updated = ssh.replace_block(text, 'try', '10.213.1.11 ssh-ed25519 NEW\n')
    assert updated == (f'192.0.2.9 ssh-ed25519 AAAAuser\n{begin}\n10.213.1.11 ssh-ed25519 NEW\n{end}\n'
                       f'{other_begin}\n10.213.2.11 ssh-ed25519 KEEP\n{other_end}\n')
    assert ssh.replace_block(updated, 'try', '10.213.1.11 ssh-ed25519 NEW\n') == updated
    removed = ssh.replace_block(updated, 'try', '')
    assert removed == f'192.0.2.9 ssh-ed25519 AAAAuser\n{other_begin}\n10.213.2.11 ssh-ed25519 KEEP\n{other_end}\n'


def test_known_hosts_block_is_appended_to_a_file_without_final_newline():
    begin, end = ssh.block_markers('try')
    assert ssh.replace_block('user-line', 'try', 'k\n') == f'user-line\n{begin}\nk\n{end}\n'
    assert ssh.replace_block('', 'try', '') == ''


def test_state_record_round_trips():
    lab = state.Lab(name='pytest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'),
                    host_prefix='lab', inventory='/tmp/hosts.yml')
    record = lab.new_host('lab1', 1)
    record.init = process.ProcessIdentity(4242, 987654)
    lab.hosts['lab1'] = record
    again = state.Lab.from_dict(lab.to_dict())
    assert again.to_dict() == lab.to_dict()
    assert again.hosts['lab1'].init == record.init
    assert again.hosts['lab1'].netns == 'unboxed.pytest.lab1'
    assert again.hosts['lab1'].veth == 'ulab3h1'


def test_a_host_runs_labctl_itself_as_pid_1_inside_its_network_namespace():
    lab = state.Lab(name='pytest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'),
                    host_prefix='lab', inventory='/tmp/hosts.yml')
    argv = host.boot_argv(lab.new_host('lab2', 2))
    assert argv[:3] == ['nsenter', '--net=/run/netns/unboxed.pytest.lab2', '--']
    unshare = argv.index('unshare')
    assert argv[unshare:unshare + 6] == ['unshare', '--mount', '--pid', '--uts', '--ipc', '--fork']
    boot = argv.index('_boot')
    assert argv[boot:] == ['_boot', '--root', '/var/lib/unboxed/lab/pytest/hosts/lab2/rootfs', '--hostname', 'lab2']
    # The program before _boot is labctl's entry point, which hands _boot to local_lab.cli.
    assert argv[boot - 1] == os.path.join(REPO, 'scripts', 'labctl.py')
    with open(argv[boot - 1], encoding='utf-8') as handle:
        assert 'from local_lab.cli import main' in handle.read()
