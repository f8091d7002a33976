# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attaching a container to a bridge, Docker's default bridge network by hand: what container_network does (``docker
network connect``) and what ns_container's ``network`` option does in the container's own run (``docker run
--network bridge -p``), one code for both.

``Network(module, params).run()`` reads the seat, plans, applies unless in check mode (under the ``network`` lock,
taken only in a real run) and returns the result dict; a failure raises NetworkError with the message and the result
so far, for the caller to report with its own context. The pure parts (validation, names, argv lists, records) are
netdev's and nft's.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os

from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import netdev
from ansible_collections.unboxed.lab.plugins.module_utils import nft
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils.command import failure_detail, run, shell_join

FORWARDING_SYSCTL = '/proc/sys/net/ipv4/ip_forward'

# The attach options: container_network's, and the suboptions of ns_container's ``network``.
OPTION_SPEC = dict(
    bridge=dict(type='str', default=netdev.DEFAULT_BRIDGE),
    subnet=dict(type='str', default=netdev.DEFAULT_SUBNET),
    address=dict(type='str'),
    published_ports=dict(type='list', elements='str', default=[]),
)


def argument_spec() -> dict:
    """container_network's options: which container, the attach options, and where the records and the lock are."""
    return dict(
        name=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        state_dir=dict(type='path'),
        **copy.deepcopy(OPTION_SPEC),
        remove_bridge=dict(type='bool', default=False),
        network_dir=dict(type='path', default=netdev.NETWORK_DIR),
        lock_timeout=dict(type='int', default=60),
    )


def with_defaults(params: dict) -> dict:
    """``params`` with every option it lacks, or gives as None, at its argument_spec default (a caller may pass the
    attach options and the container's name only)."""
    defaults = {option: copy.deepcopy(spec.get('default')) for option, spec in argument_spec().items()}
    return dict(defaults, **{option: value for option, value in params.items() if value is not None})


class NetworkError(Exception):
    """An attachment that cannot be made or read: ``msg`` for a student, ``result`` the result dict so far (what
    changed, the commands), to report as ``fail_json(msg=error.msg, **error.result)``."""

    def __init__(self, msg: str, result: dict):
        super().__init__(msg)
        self.msg = msg
        self.result = {key: value for key, value in result.items() if key != 'msg'}


def request_problems(params: dict, prefix: str = '') -> list[str]:
    """Every problem of the request that needs no look at the seat, each naming its option.

    The attach options (OPTION_SPEC's; one missing from ``params`` counts at its default) are named ``prefix`` +
    option, e.g. ``network.published_ports``. The others (name, state, state_dir, network_dir, lock_timeout) are
    checked only when ``params`` has them, and named as they are: they are the calling module's own options.
    """
    problems = []
    attach = {option: params.get(option, spec.get('default')) for option, spec in OPTION_SPEC.items()}
    if params.get('name') is not None:
        problem = container.name_problem(params['name'])
        if problem:
            problems.append(problem)
    elif 'name' in params and params.get('state', 'present') == 'present':
        problems.append('name is required with state=present (the container to attach).')
    problem = netdev.bridge_problem(attach['bridge'], prefix + 'bridge')
    if problem:
        problems.append(problem)
    subnet = None
    try:
        subnet = netdev.parse_subnet(attach['subnet'], prefix + 'subnet')
    except ValueError as error:
        problems.append(f'{error}.')
    if attach['address'] is not None and subnet is not None:
        problem = netdev.address_problem(prefix + 'address', attach['address'], subnet)
        if problem:
            problems.append(problem)
    if not isinstance(attach['published_ports'], list):
        problems.append(f'{prefix}published_ports must be a list of HOST_PORT:CONTAINER_PORT, got '
                        f'{attach["published_ports"]!r}.')
    else:
        problems += netdev.port_problems(prefix + 'published_ports', attach['published_ports'])[1]
    for option in ('state_dir', 'network_dir'):
        if params.get(option):
            problem = paths.absolute_path_problem(option, params[option]) or paths.system_directory_problem(
                option, params[option])
            if problem:
                problems.append(problem)
    if params.get('lock_timeout') is not None and params['lock_timeout'] < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    return problems


def same_namespace(pid: int, kind: str = 'net') -> bool:
    try:
        return os.stat(f'/proc/{pid}/ns/{kind}').st_ino == os.stat(f'/proc/self/ns/{kind}').st_ino
    except OSError:
        return False


def read_forwarding() -> str:
    with open(FORWARDING_SYSCTL, encoding='ascii') as handle:
        return handle.read().strip()


class Network:
    """One attachment (or detachment): read the seat, plan, apply unless in check mode, return the result.

    ``params`` has container_network's options (argument_spec(); a missing one counts at its default). ``prefix``
    is put before the attach options' names in messages (ns_container's ``network.``), as request_problems does.
    """

    def __init__(self, module, params: dict, prefix: str = ''):
        self.module = module
        self.params = with_defaults(params)
        self.prefix = prefix
        self.expect_started = False
        self.bridge = self.params['bridge']
        self.network_dir = paths.normalize(self.params['network_dir'])
        self.commands: list[str] = []
        self.steps: list[tuple[str, object]] = []
        self.result = {'changed': False, 'commands': [], 'address': None, 'bridge': self.bridge, 'gateway': None,
                       'subnet': None, 'ports': [], 'pid': None}
        if self.params['name'] is not None:
            self.result['host_veth'] = netdev.host_veth_name(self.bridge, self.params['name'])

    def fail(self, msg: str, **extra):
        raise NetworkError(msg, dict(self.result, **extra))

    def who(self) -> str:
        return f'The {self.prefix.rstrip(".")} option' if self.prefix else 'container_network'

    # Reading the seat, as JSON.

    def json_of(self, argv: list[str], what: str):
        rc, out, err = run(self.module, self.resolved(argv))
        if rc != 0:
            self.fail(f'Could not read {what}: {failure_detail(rc, out, err)}', cmd=shell_join(argv))
        try:
            return json.loads(out) if out.strip() else []
        except ValueError as error:
            self.fail(f'Could not read {what}: {shell_join(argv)} did not print JSON ({error}).')

    def read_table(self):
        rc, out, err = run(self.module, [self.nft, '-j', 'list', 'table', nft.FAMILY, nft.TABLE])
        if rc != 0:
            if 'No such file or directory' in err or 'does not exist' in err:
                return None
            self.fail(f'Could not read the nftables table {nft.table_words()}: {failure_detail(rc, out, err)}')
        try:
            return nft.listing(json.loads(out))
        except ValueError as error:
            self.fail(f'Could not read the nftables table {nft.table_words()}: not JSON ({error}).')

    def read_seat(self):
        self.links = self.json_of(['ip', '-j', '-d', 'address', 'show'], 'the seat\'s interfaces (ip -j -d address show)')
        self.routes = self.json_of(['ip', '-j', '-4', 'route', 'show', 'table', 'main'],
                                   'the seat\'s routes (ip -j -4 route show table main)')
        self.table = self.read_table()
        try:
            self.records = netdev.read_records(self.network_dir)
            self.forwarding_record = netdev.read_json(os.path.join(self.network_dir, netdev.FORWARDING_FILE))
            self.table_record = netdev.read_json(os.path.join(self.network_dir, nft.LISTING_FILE))
        except netdev.RecordError as error:
            self.fail(f'Cannot trust the network records (network_dir): {error}.')
        self.forwarding = read_forwarding()

    def read_container_side(self, pid: int) -> dict:
        links = self.json_of(netdev.in_container(pid, ['ip', '-j', '-d', 'address', 'show']),
                             f'the interfaces of the container\'s network namespace (PID {pid})')
        routes = self.json_of(netdev.in_container(pid, ['ip', '-j', '-4', 'route', 'show', 'table', 'main']),
                              f'the routes of the container\'s network namespace (PID {pid})')
        eth0 = netdev.link_by_name(links, netdev.CONTAINER_INTERFACE)
        return {
            'lo_up': netdev.is_up(netdev.link_by_name(links, 'lo')),
            'eth0': eth0, 'eth0_up': netdev.is_up(eth0),
            'addresses': netdev.ipv4_addresses(eth0), 'gateway': netdev.default_gateway(routes),
        }

    # Planning: each step is (command for the slide, argv or a callable that applies it).

    def step(self, argv, script: str | None = None):
        self.steps.append((argv, script))

    def is_ours(self, link: dict) -> bool:
        """Our alias - or, for a bridge that a run killed between ``ip link add`` and ``ip link set ... alias`` left,
        no alias at all on a bridge that our record names (the record is written before the commands run)."""
        if link.get('linkinfo', {}).get('info_kind') != 'bridge':
            return False
        alias = link.get('ifalias')
        return alias == netdev.BRIDGE_ALIAS or (not alias and self.bridge in self.records)

    def own_bridge(self) -> dict | None:
        """The bridge's link when it exists; fails when it exists and is not ours."""
        link = netdev.link_by_name(self.links, self.bridge)
        if link is None:
            return None
        if not self.is_ours(link):
            kind = link.get('linkinfo', {}).get('info_kind')
            self.fail(f'{self.prefix}bridge {self.bridge}: a {kind or "network"} interface of that name exists and was not made by '
                      f'this module (its alias is {link.get("ifalias")!r}, not {netdev.BRIDGE_ALIAS!r}); it is left '
                      f'alone - choose another bridge name.')
        return link

    def check_table_is_ours(self):
        if self.table is not None and self.table_record is None:
            self.fail(f'The nftables table {nft.table_words()} exists but was not made by this module (no listing in '
                      f'{self.network_dir}/{nft.LISTING_FILE}); it is left alone. Remove it by hand (nft delete table '
                      f'{nft.table_words()}) if it is a leftover of ours.')

    def plan_table(self, records: dict):
        statements = nft.desired_statements(records)
        ours = self.table_record or {}
        unchanged = (self.table is not None and self.table == ours.get('listing')
                     and ours.get('digest') == nft.digest(statements) if statements else self.table is None)
        self.all_table_lines = nft.shell_lines(statements, False)
        if unchanged:
            return
        self.commands += nft.shell_lines(statements, self.table is not None)
        self.step(None, nft.replace_script(statements) if statements else nft.delete_script())
        self.new_table_digest = nft.digest(statements) if statements else None

    def plan_forwarding(self, records: dict):
        if records and self.forwarding != '1':
            self.commands.append(shell_join(netdev.forwarding_argv('1')))
            self.step(netdev.forwarding_argv('1'))
        elif not records and self.forwarding_record is not None:
            before = self.forwarding_record.get('ip_forward_before')
            if before in ('0', '1') and before != self.forwarding:
                self.commands.append(shell_join(netdev.forwarding_argv(before)))
                self.step(netdev.forwarding_argv(before))

    # The states.

    def present(self):
        name = self.params['name']
        subnet = netdev.parse_subnet(self.params['subnet'], self.prefix + 'subnet')
        gateway = netdev.gateway_of(subnet)
        ports = netdev.port_problems(self.prefix + 'published_ports', self.params['published_ports'])[0]
        self.result.update(subnet=str(subnet), gateway=str(gateway), ports=[str(port) for port in ports])
        identity = self.find_running()
        # None only in check mode: the container's start was only predicted (site.yml --check on a fresh seat).
        pid = identity.pid if identity is not None else 'PID'
        if identity is not None and same_namespace(pid):
            self.fail(f'Container {name} has no network namespace of its own (network mode host: ns_container without '
                      f'net in its namespaces); there is nothing to attach.')
        bridge_link = self.own_bridge()
        self.check_table_is_ours()
        record = self.records.get(self.bridge)
        if record is not None and record.get('subnet') != str(subnet):
            self.fail(f'{self.prefix}subnet {subnet}: bridge {self.bridge} was made with subnet {record.get("subnet")}; use that, or '
                      f'remove the bridge first (state=absent without name).')
        overlaps = netdev.route_overlaps(subnet, self.routes, own_devices=(self.bridge,) if bridge_link else ())
        if overlaps:
            self.fail(f'{self.prefix}subnet {subnet} overlaps the seat\'s own routes ({", ".join(overlaps)}; main table); choose '
                      f'another subnet.')
        record = record or netdev.empty_record(self.bridge, str(subnet))
        others = {other: entry for other, entry in record['containers'].items() if other != name}
        address = self.choose_address(record, others, subnet)
        self.check_ports(ports, name)
        cidr = f'{address}/{subnet.prefixlen}'
        self.result['address'] = cidr
        host_veth = self.result['host_veth']

        # The bridge.
        bridge_argvs = netdev.bridge_argvs(self.bridge, f'{gateway}/{subnet.prefixlen}')
        all_commands = [shell_join(argv) for argv in bridge_argvs]
        if bridge_link is None:
            for argv in bridge_argvs:
                self.commands.append(shell_join(argv))
                self.step(argv)
        else:
            if bridge_link.get('ifalias') != netdev.BRIDGE_ALIAS:
                self.commands.append(shell_join(bridge_argvs[1]))
                self.step(bridge_argvs[1])
            if f'{gateway}/{subnet.prefixlen}' not in netdev.ipv4_addresses(bridge_link):
                self.commands.append(shell_join(bridge_argvs[2]))
                self.step(bridge_argvs[2])
            if not netdev.is_up(bridge_link):
                self.commands.append(shell_join(bridge_argvs[3]))
                self.step(bridge_argvs[3])
        localnet = f'/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet'
        all_commands.append(shell_join(netdev.route_localnet_argv(self.bridge)))
        if bridge_link is None or self.read_sysctl(localnet) != '1':
            self.commands.append(all_commands[-1])
            self.step(netdev.route_localnet_argv(self.bridge))

        # The veth pair, and the container's side.
        container_side = self.read_container_side(pid) if identity is not None else {'eth0': None}
        veth = netdev.link_by_name(self.links, host_veth)
        eth0 = container_side['eth0']
        # Our pair: the host end is a veth whose peer is the container's eth0 (each names the other's index).
        paired = (veth is not None and eth0 is not None and veth.get('linkinfo', {}).get('info_kind') == 'veth'
                  and veth.get('link_index') == eth0.get('ifindex') and eth0.get('link_index') == veth.get('ifindex'))
        veth_argvs = netdev.veth_argvs(host_veth, self.bridge, pid)
        all_commands += [shell_join(argv) for argv in veth_argvs]
        if eth0 is not None and not paired:
            self.fail(f'Container {name} already has an {netdev.CONTAINER_INTERFACE} that is not its veth on '
                      f'{self.bridge}; it is left alone.')
        if not paired:
            if veth is not None:
                self.commands.append(shell_join(netdev.delete_link_argv(host_veth)))
                self.step(netdev.delete_link_argv(host_veth))
            for argv in veth_argvs:
                self.commands.append(shell_join(argv))
                self.step(argv)
            container_side = {}
        else:
            if veth.get('master') != self.bridge:
                self.commands.append(shell_join(veth_argvs[1]))
                self.step(veth_argvs[1])
            if not netdev.is_up(veth):
                self.commands.append(shell_join(veth_argvs[2]))
                self.step(veth_argvs[2])
        all_commands += [shell_join(argv) for argv in netdev.container_argvs(pid, cidr, str(gateway), {})]
        container_side_steps = netdev.container_argvs(pid, cidr, str(gateway), container_side)
        for argv in container_side_steps:
            self.commands.append(shell_join(argv))
            self.step(argv)

        # Forwarding, the record, the table.
        entry = {'address': str(address), 'ports': [str(port) for port in ports]}
        records = dict(self.records)
        records[self.bridge] = dict(record, containers=dict(others, **{name: entry}))
        all_commands.append(shell_join(netdev.forwarding_argv('1')))
        self.plan_forwarding(records)
        self.plan_table(records)
        self.result['pid'] = identity.pid if identity is not None else None
        before = {'container': self.records.get(self.bridge, {}).get('containers', {}).get(name),
                  'plumbed': paired and not container_side_steps,
                  'ip_forward': self.forwarding, 'bridge': bridge_link is not None}
        after = {'container': entry, 'plumbed': True, 'ip_forward': '1', 'bridge': True}
        self.finish(records, before, after, all_commands + self.all_table_lines,
                    f'Attached {name} to {self.bridge} as {cidr}' + (
                        f', publishing {", ".join(self.result["ports"])}' if ports else '') + '.')

    def absent(self):
        name = self.params['name']
        self.check_table_is_ours()
        record = self.records.get(self.bridge)
        bridge_link = netdev.link_by_name(self.links, self.bridge)
        if bridge_link is not None and not self.is_ours(bridge_link):
            bridge_link = None
        records = dict(self.records)
        if record is not None:
            self.result.update(subnet=record.get('subnet'),
                               gateway=str(netdev.gateway_of(ipaddress.IPv4Network(record['subnet']))))
        containers = dict(record.get('containers', {})) if record else {}
        if name is not None:
            host_veths = [self.result['host_veth']]
            before_entry = containers.pop(name, None)
            remove_bridge = self.params['remove_bridge'] and not containers
        else:
            host_veths = [netdev.host_veth_name(self.bridge, other) for other in sorted(containers)]
            before_entry = None
            remove_bridge = True
        for host_veth in host_veths:
            if netdev.link_by_name(self.links, host_veth) is not None:
                self.commands.append(shell_join(netdev.delete_link_argv(host_veth)))
                self.step(netdev.delete_link_argv(host_veth))
        if remove_bridge:
            records.pop(self.bridge, None)
            if bridge_link is not None:
                self.commands.append(shell_join(netdev.delete_link_argv(self.bridge)))
                self.step(netdev.delete_link_argv(self.bridge))
        elif record is not None:
            records[self.bridge] = dict(record, containers=containers)
        self.plan_table(records)
        self.plan_forwarding(records)
        before = {'container': before_entry, 'bridge': bridge_link is not None, 'records': sorted(self.records)}
        after = {'container': None, 'bridge': bridge_link is not None and not remove_bridge, 'records': sorted(records)}
        what = f'Detached {name} from {self.bridge}' if name else f'Removed bridge {self.bridge}'
        self.finish(records, before, after, [], what + '.')

    def find_running(self):
        name = self.params['name']
        if self.expect_started and self.module.check_mode:
            # The caller starts the container in this very run (ns_container's network option): whatever runs now is
            # replaced, so the attachment is predicted for a new network namespace, as a first one.
            return None
        state_dir = paths.normalize(self.params['state_dir']) if self.params['state_dir'] else \
            container.default_state_dir(name)
        try:
            state = container.read_state(state_dir)
        except container.StateFileError as error:
            self.fail(f'Cannot tell whether container {name} runs: {error}.')
        identity, reason = container.running_process(state)
        if reason and self.module.check_mode:
            # In check mode a start is only predicted, so the container an earlier task would start does not run
            # yet: predict its attachment as a first one (the real run fails here if it is still not running).
            self.module.warn(f'Container {name} does not run ({reason}); check mode predicts attaching it as if an '
                             f'earlier task had started it.')
            return None
        if reason == 'no such container':
            self.fail(f'No such container: {name} (nothing is recorded in {state_dir}; ns_container records a '
                      f'container there when it starts it).')
        if reason:
            self.fail(f'Container {name} cannot be attached to {self.bridge}: {reason}. Start it with ns_container '
                      f'first; state=absent removes its address.')
        return identity

    def read_sysctl(self, path: str) -> str | None:
        try:
            with open(path, encoding='ascii') as handle:
                return handle.read().strip()
        except OSError:
            return None

    def choose_address(self, record: dict, others: dict, subnet) -> ipaddress.IPv4Address:
        taken = {ipaddress.IPv4Address(entry['address']): other for other, entry in others.items()}
        requested = self.params['address']
        if requested is not None:
            address = ipaddress.IPv4Address(requested)
            if address in taken:
                self.fail(f'{self.prefix}address {address} is taken by container {taken[address]} on {self.bridge}.')
            return address
        kept = record['containers'].get(self.params['name'], {}).get('address')
        if kept and ipaddress.IPv4Address(kept) not in taken:
            return ipaddress.IPv4Address(kept)
        address = netdev.allocate(subnet, taken)
        if address is None:
            self.fail(f'{self.prefix}subnet {subnet} has no free address left on {self.bridge}; choose a larger subnet.')
        return address

    def check_ports(self, ports, name: str):
        for bridge, record in self.records.items():
            for other, entry in record.get('containers', {}).items():
                if bridge == self.bridge and other == name:
                    continue
                for text in entry.get('ports', []):
                    theirs = netdev.parse_port(text)
                    clash = next((port for port in ports if port.clashes_with(theirs)), None)
                    if clash:
                        self.fail(f'{self.prefix}published_ports: host port {clash.host_port}/{clash.protocol} is already published '
                                  f'by container {other} on {bridge} ({theirs}).')

    # Applying.

    def finish(self, records: dict, before: dict, after: dict, all_commands: list[str], msg: str):
        # Once no bridge is left, the forwarding record and the table's listing go too.
        leftovers = not records and (self.forwarding_record is not None or self.table_record is not None)
        changed = bool(self.steps) or records != self.records or leftovers
        self.result.update(changed=changed, msg=msg if changed else f'{msg[:-1]}: nothing to change.',
                           commands=self.commands if changed else all_commands)
        if self.module._diff:
            self.result['diff'] = {'before': json.dumps(before, indent=2, sort_keys=True) + '\n',
                                   'after': json.dumps(dict(after, commands=self.commands), indent=2,
                                                       sort_keys=True) + '\n'}
        if changed and not self.module.check_mode:
            self.apply(records)

    def apply(self, records: dict):
        if records and self.forwarding_record is None:
            netdev.write_json(os.path.join(self.network_dir, netdev.FORWARDING_FILE),
                              {'ip_forward_before': self.forwarding})
        # The record first: a run killed half-way leaves an address that the next run plumbs, never one in use
        # that no record holds.
        for bridge in set(self.records) | set(records):
            path = netdev.record_path(self.network_dir, bridge)
            if bridge in records:
                if records[bridge] != self.records.get(bridge):
                    netdev.write_json(path, records[bridge])
            else:
                netdev.remove_file(path)
        for argv, script in self.steps:
            if script is not None:
                self.apply_table(script)
                continue
            if argv[0] == 'sysctl':
                self.write_sysctl(argv[2])
                continue
            argv = self.resolved(argv)
            rc, out, err = run(self.module, argv)
            if rc != 0:
                self.fail(f'Could not run {shell_join(argv)}: {failure_detail(rc, out, err)}. What ran before it stays; '
                          f'run the task again to finish.', cmd=shell_join(argv))
        if not records:
            netdev.remove_file(os.path.join(self.network_dir, netdev.FORWARDING_FILE))
            netdev.remove_file(os.path.join(self.network_dir, nft.LISTING_FILE))

    def resolved(self, argv: list[str]) -> list[str]:
        """The slide's argv with the binaries found on this seat (ip and nsenter may live in /sbin, off PATH)."""
        binaries = {'ip': self.ip, 'nsenter': self.nsenter}
        return [binaries.get(word, word) if index == 0 or (index == 3 and argv[0] == 'nsenter') else word
                for index, word in enumerate(argv)]

    def write_sysctl(self, assignment: str):
        """``sysctl -w KEY=VALUE`` without depending on procps: the same write to /proc/sys."""
        key, value = assignment.split('=', 1)
        try:
            with open('/proc/sys/' + key.replace('.', '/'), 'w', encoding='ascii') as handle:
                handle.write(value + '\n')
        except OSError as error:
            self.fail(f'Could not run sysctl -w {assignment}: {error}.')

    def apply_table(self, script: str):
        listing_path = os.path.join(self.network_dir, nft.LISTING_FILE)
        if self.new_table_digest is not None:
            # Ours before it exists: a run killed between the transaction and the listing below leaves a table that
            # the next run knows as its own (and writes again, as no listing matches).
            netdev.write_json(listing_path, {'digest': self.new_table_digest, 'listing': None})
        rc, out, err = run(self.module, [self.nft, '-f', '-'], data=script, binary_data=False)
        if rc != 0:
            self.fail(f'Could not write the nftables table {nft.table_words()}: {failure_detail(rc, out, err)}',
                      script=script)
        if self.new_table_digest is None:
            netdev.remove_file(listing_path)
            return
        netdev.write_json(listing_path, {'digest': self.new_table_digest, 'listing': self.read_table()})

    def run(self, expect_started: bool = False) -> dict:
        """The result dict (changed, msg, commands, address, bridge, gateway, subnet, ports, pid, host_veth with a
        name, diff with --diff); raises NetworkError. ``expect_started`` (check mode only): the caller predicts that
        it starts the container in this run, so it is predicted attached as a new one, without a warning."""
        self.expect_started = expect_started
        problems = request_problems(self.params, self.prefix)
        if problems:
            self.fail(' '.join(problems))
        if os.geteuid() != 0:
            self.fail(f'{self.who()} needs root (become: true): it makes links, moves one into a container\'s '
                      'network namespace and writes nftables rules (CAP_NET_ADMIN).')
        self.ip = self.module.get_bin_path('ip')
        self.nsenter = self.module.get_bin_path('nsenter')
        self.nft = self.module.get_bin_path('nft')
        missing = [package for binary, package in ((self.ip, 'iproute2'), (self.nsenter, 'util-linux'),
                                                   (self.nft, 'nftables')) if binary is None]
        if missing:
            self.fail(f'{self.who()} needs {" and ".join(missing)}: install {" ".join(missing)} '
                      f'(apt-get install {" ".join(missing)}); the role network does.')
        self.new_table_digest = None
        self.all_table_lines = []
        if self.module.check_mode:
            self.converge()
            return self.result
        try:
            with locking.exclusive('network', self.network_dir, timeout=self.params['lock_timeout'],
                                   note=f'container_network {self.bridge}'):
                self.converge()
        except locking.LockTimeout as error:
            self.fail(locking.timeout_message(f'the networks of {self.network_dir}', error))
        return self.result

    def converge(self):
        self.read_seat()
        if self.params['state'] == 'present':
            self.present()
        else:
            self.absent()
