"""container_network on a real kernel: a network namespace of the test's own is the seat, busybox containers from
ns_container run in it, and the module plumbs a bridge, veth pairs, addresses, routes and the nftables table there.

All traffic stays inside the namespaces the test makes; each test removes its containers (ns_container absent) and
its seat namespace by name, which takes every link and the table with it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import BIN, REPO, ansible_env, kill_module_after, make_busybox_rootfs, require_root

pytestmark = pytest.mark.root

_seats = itertools.count()
SUBNET = '10.47.0.0/24'
WEB_COMMAND = ('httpd', '-f', '-p', '80', '-h', '/www')
CLIENT_COMMAND = ('tail', '-f', '/dev/null')


def netns_run(seat, argv, check=True):
    return subprocess.run(['ip', 'netns', 'exec', seat] + argv, capture_output=True, text=True, check=check,
                          timeout=60)


class Seat:
    """A seat: a named network namespace where ansible, ns_container and container_network run."""

    def __init__(self, run_module, workdir, name):
        self.run_module = run_module
        self.name = name
        subprocess.run(['ip', 'netns', 'add', self.name], check=True)
        netns_run(self.name, ['ip', 'link', 'set', 'lo', 'up'])
        # The seat's own uplink stand-in: a veth pair (both ends in the seat) with an address and a route, as a
        # seat's eth0 has.
        netns_run(self.name, ['ip', 'link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'uplink0p'])
        netns_run(self.name, ['ip', 'address', 'add', '192.0.2.10/24', 'dev', 'uplink0'])
        netns_run(self.name, ['ip', 'link', 'set', 'uplink0p', 'up'])
        netns_run(self.name, ['ip', 'link', 'set', 'uplink0', 'up'])
        self.workdir = str(workdir)
        self.rootfs = make_busybox_rootfs(os.path.join(self.workdir, 'rootfs'))
        os.makedirs(os.path.join(self.rootfs, 'www'), exist_ok=True)
        with open(os.path.join(self.rootfs, 'www', 'index.html'), 'w', encoding='utf-8') as handle:
            handle.write('hello from web\n')
        self.network_dir = os.path.join(self.workdir, 'networks')
        self.containers = []

    def run(self, module, args, **kwargs):
        return self.run_module(module, args, prefix=['ip', 'netns', 'exec', self.name], **kwargs)

    def state_dir(self, name):
        return os.path.join(self.workdir, 'containers', name)

    def start(self, name, command=CLIENT_COMMAND, namespaces=('pid', 'net', 'mount')):
        result = self.run('ns_container', {'name': name, 'rootfs': self.rootfs, 'command': list(command),
                                           'namespaces': list(namespaces), 'state_dir': self.state_dir(name),
                                           'stop_timeout': 1})
        assert not result['failed'], result
        if name not in self.containers:
            self.containers.append(name)
        return result

    def stop(self, name, state='absent'):
        result = self.run('ns_container', {'name': name, 'state': state, 'state_dir': self.state_dir(name),
                                           'stop_timeout': 1})
        assert not result['failed'], result

    def network(self, name=None, check=False, diff=False, **args):
        args = dict(args, network_dir=self.network_dir)
        if name is not None:
            args.update(name=name, state_dir=self.state_dir(name))
        return self.run('container_network', args, check=check, diff=diff)

    def ip_json(self, *argv):
        return json.loads(netns_run(self.name, ['ip', '-j'] + list(argv)).stdout or '[]')

    def links(self):
        return {link['ifname']: link for link in self.ip_json('-d', 'link', 'show')}

    def ruleset(self):
        return netns_run(self.name, ['nft', 'list', 'ruleset']).stdout

    def snapshot(self):
        """What a refused request must leave as it was: links, addresses, routes, the ruleset, the records."""
        records = {}
        if os.path.isdir(self.network_dir):
            for entry in sorted(os.listdir(self.network_dir)):
                with open(os.path.join(self.network_dir, entry), 'rb') as handle:
                    records[entry] = hashlib.sha256(handle.read()).hexdigest()
        links = [{key: link.get(key) for key in ('ifname', 'flags', 'master', 'ifalias')}
                 for link in self.ip_json('-d', 'link', 'show')]
        # Addresses without their lifetimes and IPv6 link-local states, which the kernel changes on its own.
        addresses = [(entry['ifname'], sorted(f'{info["local"]}/{info["prefixlen"]}' for info in entry['addr_info']
                                              if info.get('family') == 'inet'))
                     for entry in self.ip_json('address', 'show')]
        return (links, addresses, self.ip_json('-4', 'route', 'show', 'table', 'all'),
                self.ruleset(), records, read_forwarding(self.name))

    def exec(self, name, command):
        return self.run('ns_exec', {'name': name, 'command': command, 'state_dir': self.state_dir(name),
                                    'timeout': 20})

    def remove(self):
        for name in self.containers:
            self.run('ns_container', {'name': name, 'state': 'absent', 'state_dir': self.state_dir(name),
                                      'stop_timeout': 1})
        subprocess.run(['ip', 'netns', 'delete', self.name], check=False)


def read_forwarding(seat):
    return netns_run(seat, ['cat', '/proc/sys/net/ipv4/ip_forward']).stdout.strip()


def http_get(seat, address, port):
    """A GET from the seat itself (Python's urllib in the seat's namespace), '' when nothing answered."""
    script = ('import sys, urllib.request\ntry:\n    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5)'
              '.read().decode())\nexcept OSError as error:\n    sys.stderr.write(str(error))')
    return netns_run(seat, [sys.executable, '-c', script, f'http://{address}:{port}/'], check=False).stdout


def nc_get(address, port):
    """A GET from inside a container (busybox's wget crashes when static; its nc does not)."""
    return ['sh', '-c', f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {address} {port}']


@pytest.fixture
def seat(run_module, workdir):
    require_root()
    if subprocess.run(['which', 'nft'], capture_output=True, check=False).returncode != 0:
        pytest.skip('nftables is not installed (apt-get install nftables)')
    name = f'nettest-{os.getpid()}-{next(_seats)}'
    made = None
    try:
        made = Seat(run_module, workdir, name)
        yield made
    finally:
        if made is not None:
            made.remove()
        subprocess.run(['ip', 'netns', 'delete', name], check=False, capture_output=True)


def test_attach_publish_idempotent_check_and_teardown(seat):
    seat.start('web', WEB_COMMAND)
    seat.start('client')
    forwarding_before = read_forwarding(seat.name)
    predicted = seat.network('web', check=True, diff=True, published_ports=['8080:80'])
    assert predicted['changed'] and not predicted['failed'], predicted
    assert 'unboxed0' not in seat.links(), 'check mode made the bridge'
    assert not os.path.exists(seat.network_dir)
    assert 'diff' in predicted and 'vweb-' in predicted['diff']['after']

    web = seat.network('web', published_ports=['8080:80'])
    assert web['changed'] and not web['failed'], web
    assert web['commands'] == predicted['commands']
    assert web['address'] == '10.47.0.2/24' and web['gateway'] == '10.47.0.1' and web['ports'] == ['8080:80/tcp']
    assert any(line.startswith('ip link add name vweb-') and 'peer name eth0 netns' in line for line in web['commands'])
    assert 'sysctl -w net.ipv4.ip_forward=1' in web['commands']
    client = seat.network('client')
    assert client['changed'] and client['address'] == '10.47.0.3/24', client

    links = seat.links()
    assert links['unboxed0']['ifalias'] == 'unboxed.lab container_network'
    assert links[web['host_veth']]['master'] == 'unboxed0'
    assert read_forwarding(seat.name) == '1'

    # Containers reach each other, and the seat's bridge address; the published port answers from the seat.
    fetched = seat.exec('client', nc_get('10.47.0.2', 80))
    assert fetched['stdout'].endswith('hello from web'), fetched
    pinged = seat.exec('client', ['ping', '-c', '1', '-W', '5', '10.47.0.1'])
    assert pinged['rc'] == 0, pinged
    assert http_get(seat.name, '127.0.0.1', 8080) == 'hello from web\n'
    assert http_get(seat.name, '192.0.2.10', 8080) == 'hello from web\n'
    inside = seat.exec('client', ['cat', '/proc/net/dev'])
    assert 'eth0' in inside['stdout'] and 'lo' in inside['stdout']

    # Rerun: nothing to change, and check mode agrees; the commands still show the whole plumbing.
    for check in (True, False):
        again = seat.network('web', published_ports=['8080:80'], check=check)
        assert not again['changed'] and not again['failed'], again
        assert any('dnat to 10.47.0.2:80' in line for line in again['commands'])
    assert not seat.network('client')['changed']

    # A rule added by hand to our table is seen and undone; the table is written whole again.
    netns_run(seat.name, ['nft', 'add', 'rule', 'ip', 'unboxed', 'output', 'tcp', 'dport', '9', 'accept'])
    healed = seat.network('client')
    assert healed['changed'] and 'dport 9' not in seat.ruleset(), healed

    # Detaching a container keeps the bridge; removing the bridge restores the seat.
    detached = seat.network('client', state='absent')
    assert detached['changed'] and 'unboxed0' in seat.links()
    assert client['host_veth'] not in seat.links()
    assert not seat.network('client', state='absent')['changed']
    # The last container gone, the bridge stays unless asked.
    last = seat.network('web', state='absent')
    assert last['changed'] and 'unboxed0' in seat.links() and web['host_veth'] not in seat.links(), last
    assert 'masquerade' in seat.ruleset() and 'dnat' not in seat.ruleset()
    predicted = seat.network(state='absent', check=True)
    assert predicted['changed'] and 'unboxed0' in seat.links()
    removed = seat.network('web', state='absent', remove_bridge=True)
    assert removed['changed'] and not removed['failed'], removed
    assert 'ip link delete dev unboxed0' in removed['commands']
    links = seat.links()
    assert not [name for name in links if name.startswith('v') or name == 'unboxed0'], links
    assert 'unboxed' not in seat.ruleset()
    assert read_forwarding(seat.name) == forwarding_before
    assert os.listdir(seat.network_dir) == []
    assert not seat.network(state='absent')['changed']


def test_restart_replumbs_with_the_same_address_and_stopped_container(seat):
    seat.start('web', WEB_COMMAND)
    seat.start('other')
    first = seat.network('other')
    web = seat.network('web', published_ports=['127.0.0.1:8081:80/tcp'])
    assert web['address'] == '10.47.0.3/24', web
    seat.run('ns_container', {'name': 'web', 'rootfs': seat.rootfs, 'command': list(WEB_COMMAND),
                              'namespaces': ['pid', 'net', 'mount'], 'state_dir': seat.state_dir('web'),
                              'state': 'restarted', 'stop_timeout': 1})
    # The old network namespace is gone, and its veth pair with it.
    for _attempt in range(50):
        if web['host_veth'] not in seat.links():
            break
        time.sleep(0.1)
    assert web['host_veth'] not in seat.links()
    again = seat.network('web', published_ports=['127.0.0.1:8081:80/tcp'])
    assert again['changed'] and again['address'] == web['address'] and again['pid'] != web['pid'], again
    assert http_get(seat.name, '127.0.0.1', 8081) == 'hello from web\n'
    assert not seat.network('web', published_ports=['127.0.0.1:8081:80/tcp'])['changed']

    # A stopped container cannot be attached; absent frees its address for the next one.
    seat.stop('other', state='stopped')
    before = seat.snapshot()
    refused = seat.network('other')
    assert refused['failed'] and 'not running' in refused['msg'] and 'other' in refused['msg'], refused
    assert seat.snapshot() == before
    freed = seat.network('other', state='absent')
    assert freed['changed'], freed
    seat.start('third')
    assert seat.network('third')['address'] == first['address']


def test_concurrent_attaches_get_different_addresses(seat):
    names = ['one', 'two', 'three']
    for name in names:
        seat.start(name)
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(seat.network, names))
    assert all(result['changed'] and not result['failed'] for result in results), results
    addresses = sorted(result['address'] for result in results)
    assert addresses == ['10.47.0.2/24', '10.47.0.3/24', '10.47.0.4/24'], addresses
    assert not any(seat.network(name)['changed'] for name in names)


KILL_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.9)


def test_a_run_killed_at_any_instant_is_healed_by_the_next(seat):
    """The module's own python is SIGKILLed at instants spread across a first attach (bridge, veth, container side,
    forwarding, table, records); the next run must finish the job - the same address, one veth, the table ours, the
    published port answering - and the run after it change nothing."""
    seat.start('web', WEB_COMMAND)
    args = {'name': 'web', 'state_dir': seat.state_dir('web'), 'network_dir': seat.network_dir,
            'published_ports': ['8080:80']}
    lives, finished = [], []
    for delay in KILL_DELAYS:
        assert not seat.network(state='absent')['failed']
        argv = ['ip', 'netns', 'exec', seat.name, os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,',
                '-c', 'local', '-e', f'ansible_python_interpreter={sys.executable}', '-m',
                'unboxed.lab.container_network', '-a', json.dumps(args)]
        run = subprocess.Popen(argv, cwd=REPO, env=ansible_env(seat.workdir), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        lives.append(kill_module_after(run, 'container_network', delay))
        healed = seat.network('web', published_ports=['8080:80'])
        finished.append(not healed['changed'])
        assert not healed['failed'] and healed['address'] == '10.47.0.2/24', (delay, healed['msg'])
        assert [name for name in seat.links() if name.startswith('vweb-')] == [healed['host_veth']]
        assert http_get(seat.name, '127.0.0.1', 8080) == 'hello from web\n', delay
        assert not seat.network('web', published_ports=['8080:80'])['changed'], delay
    assert all(lived is not None for lived in lives), lives
    # The early kills interrupted the run (the next one had work left); the last ones may have come too late.
    assert not any(finished[:3]), (finished, lives)
    print('kill delays', KILL_DELAYS, 'module lived', lives, 'finished before the kill', finished)


BAD_INPUTS = [
    ({'bridge': 'other0', 'subnet': '192.0.2.0/25'}, 'subnet 192.0.2.0/25 overlaps the seat\'s own routes (192.0.2.0/24 dev uplink0'),
    ({'bridge': 'other0', 'subnet': '10.47.0.0/16'}, 'subnet 10.47.0.0/16 overlaps the seat\'s own routes (10.47.0.0/24 dev unboxed0'),
    ({'subnet': '10.47.0.0/33'}, 'subnet'),
    ({'address': '10.48.0.5'}, 'address 10.48.0.5 is outside the subnet'),
    ({'address': '10.47.0.0'}, 'address 10.47.0.0 is the network address'),
    ({'address': '10.47.0.255'}, 'address 10.47.0.255 is the broadcast address'),
    ({'address': '10.47.0.1'}, 'address 10.47.0.1 is the bridge'),
    ({'address': '10.47.0.2'}, 'address 10.47.0.2 is taken by container web'),
    ({'published_ports': ['8080:80']}, 'published_ports: host port 8080/tcp is already published by container web'),
    ({'published_ports': ['127.0.0.1:8080:81']}, 'published_ports: host port 8080/tcp'),
    ({'published_ports': ['8080']}, 'published_ports'),
    ({'published_ports': ['70000:80']}, 'published_ports'),
    ({'published_ports': ['9000:80', '9000:81']}, 'take the same host port'),
    ({'bridge': 'uplink0'}, 'bridge uplink0: a veth interface of that name exists and was not made by this module'),
    ({'bridge': 'Bad-Name'}, 'bridge must be'),
    ({'bridge': 'unboxed0', 'subnet': '10.48.0.0/24'}, 'subnet 10.48.0.0/24: bridge unboxed0 was made with subnet'),
]


def test_bad_inputs_change_nothing(seat):
    seat.start('web', WEB_COMMAND)
    seat.start('client')
    assert not seat.network('web', published_ports=['8080:80'])['failed']
    for args, expected in BAD_INPUTS:
        before = seat.snapshot()
        refused = seat.network('client', **args)
        assert refused['failed'] and expected in refused['msg'], (args, refused['msg'])
        assert seat.snapshot() == before, args
    # A host-network container (no namespace of its own) has nothing to attach.
    seat.start('hostnet', CLIENT_COMMAND, namespaces=('pid', 'mount'))
    before = seat.snapshot()
    refused = seat.network('hostnet')
    assert refused['failed'] and 'network mode host' in refused['msg'], refused
    assert seat.snapshot() == before
    # A table of that name the module did not make is refused, and left as it was.
    seat.network(state='absent')
    netns_run(seat.name, ['nft', 'add', 'table', 'ip', 'unboxed'])
    before = seat.snapshot()
    refused = seat.network('client')
    assert refused['failed'] and 'was not made by this module' in refused['msg'], refused
    assert seat.snapshot() == before
    netns_run(seat.name, ['nft', 'delete', 'table', 'ip', 'unboxed'])


def test_no_nft_says_install_nftables(seat):
    seat.start('client')
    # nft hidden in a mount namespace of the run's own: /dev/null (not executable) bound over it.
    nft_path = os.path.realpath(subprocess.run(['which', 'nft'], capture_output=True, text=True, check=True).stdout.strip())
    hide = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind /dev/null "$0" && exec "$@"',
            nft_path]
    before = seat.snapshot()
    result = seat.run_module('container_network', {'name': 'client', 'state_dir': seat.state_dir('client'),
                                                   'network_dir': seat.network_dir},
                             prefix=['ip', 'netns', 'exec', seat.name] + hide)
    assert result['failed'] and 'install nftables' in result['msg'], result
    assert seat.snapshot() == before
