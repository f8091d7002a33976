"""bridge_network, the attach code that container_network and ns_container's network option share.

The pure parts as tables: request_problems naming each attach option with the caller's prefix, OPTION_SPEC as
suboptions, the defaults a caller may leave out, NetworkError. Then Network.run() itself on a real kernel, in a
network namespace of the test's own (unshare --net) with a real AnsibleModule: what check mode predicts with and
without expect_started, a container that runs (a real process in a namespace of its own) or that does not, the
real run's refusal and its lock - nothing is ever changed by these runs, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import bridge_network, container, locking, netdev, process

# The directory that holds ansible_collections/, wherever this run imported the collection from (a clone's
# collections/ link, or ansible-test's copy).
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(bridge_network.__file__)))))))


def full_params(**overrides):
    validated = ArgumentSpecValidator(bridge_network.argument_spec()).validate(dict(name='web'))
    assert not validated.error_messages
    return dict(validated.validated_parameters, **overrides)


def suboptions(**given):
    """The network option's value as ns_container's argument spec hands it over (defaults filled in)."""
    spec = {'network': dict(type='dict', options=bridge_network.OPTION_SPEC)}
    validated = ArgumentSpecValidator(spec).validate({'network': given})
    assert not validated.error_messages, validated.error_messages
    return validated.validated_parameters['network']


def test_option_spec_is_container_network_s_attach_options():
    spec = bridge_network.argument_spec()
    assert sorted(bridge_network.OPTION_SPEC) == ['address', 'bridge', 'published_ports', 'subnet']
    for option, entry in bridge_network.OPTION_SPEC.items():
        assert spec[option] == entry
    assert suboptions() == {'bridge': netdev.DEFAULT_BRIDGE, 'subnet': netdev.DEFAULT_SUBNET, 'address': None,
                            'published_ports': []}
    # argument_spec() hands out copies: a caller that changes its spec does not change the next one's.
    spec['published_ports']['default'].append('1:1')
    assert bridge_network.OPTION_SPEC['published_ports']['default'] == []


@pytest.mark.parametrize('prefix', ['network.', 'containers[1].network.'])
@pytest.mark.parametrize('given, expected', [
    (dict(), []),
    (dict(published_ports=['8080:80', '127.0.0.1:5353:53/udp'], address='10.47.0.9'), []),
    (dict(bridge='Docker-0'), ['bridge must be']),
    (dict(subnet='10.47.0.0/30'), ['subnet \'10.47.0.0/30\': the prefix']),
    (dict(subnet='nonsense'), ['subnet \'nonsense\' is not an IPv4 network']),
    (dict(address='10.48.0.2'), ['address 10.48.0.2 is outside the subnet']),
    (dict(address='10.47.0.1'), ['address 10.47.0.1 is the bridge']),
    (dict(published_ports=['80']), ['published_ports: \'80\' is not']),
    (dict(published_ports=['8080:80', '8080:81']), ['published_ports: 8080:81/tcp and 8080:80/tcp']),
    (dict(bridge='X', subnet='nonsense', published_ports=['1:2:3:4']), ['bridge', 'subnet', 'published_ports']),
])
def test_request_problems_name_the_option_with_the_prefix(prefix, given, expected):
    problems = bridge_network.request_problems(suboptions(**given), prefix=prefix)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(prefix + start), problems


def test_request_problems_of_the_attach_options_only():
    # No name, state, state_dir, network_dir or lock_timeout: those are the caller's own options, not checked here;
    # a missing attach option counts at its default.
    assert bridge_network.request_problems({}, prefix='network.') == []
    assert bridge_network.request_problems({'published_ports': '8080:80'}, prefix='network.') == [
        "network.published_ports must be a list of HOST_PORT:CONTAINER_PORT, got '8080:80'."]
    # Without a prefix and with container_network's whole request, every option is checked as before.
    assert bridge_network.request_problems(full_params(name=None)) == [
        'name is required with state=present (the container to attach).']
    assert bridge_network.request_problems(full_params(name=None, state='absent')) == []
    problems = bridge_network.request_problems(full_params(lock_timeout=-1, network_dir='relative'), prefix='network.')
    assert [problem.split()[0] for problem in problems] == ['network_dir', 'lock_timeout'], problems


def test_with_defaults_fills_what_the_caller_left_out():
    params = bridge_network.with_defaults({'name': 'web', 'published_ports': ['8080:80']})
    assert params == dict(full_params(), published_ports=['8080:80'])
    assert bridge_network.with_defaults({'name': 'web', 'network_dir': None, 'bridge': None}) == full_params()
    assert bridge_network.with_defaults({})['published_ports'] is not bridge_network.OPTION_SPEC['published_ports'][
        'default']


def test_network_error_keeps_the_result_without_msg():
    error = bridge_network.NetworkError('Could not run ip link add: busy.', {'changed': True, 'msg': 'Attached web.',
                                                                             'commands': ['ip link add']})
    assert str(error) == error.msg == 'Could not run ip link add: busy.'
    # So that fail_json(msg=error.msg, **error.result) cannot get msg twice (a failure after the plan set msg).
    assert error.result == {'changed': True, 'commands': ['ip link add']}


class UntouchableModule:
    """A module whose every look at the seat fails the test: a bad request must be refused before any."""

    check_mode = False
    _diff = False

    def warn(self, text):
        raise AssertionError(f'warned {text}')

    def get_bin_path(self, *args, **kwargs):
        raise AssertionError('looked for a binary')

    def run_command(self, *args, **kwargs):
        raise AssertionError('ran a command')


def test_a_bad_request_raises_network_error_before_any_look_at_the_seat(tmp_path):
    params = dict(suboptions(subnet='10.47.0.0/30', published_ports=['x']), name='web',
                  network_dir=str(tmp_path / 'networks'))
    network = bridge_network.Network(UntouchableModule(), params, prefix='network.')
    with pytest.raises(bridge_network.NetworkError) as caught:
        network.run()
    assert caught.value.msg.startswith("network.subnet '10.47.0.0/30': the prefix"), caught.value.msg
    assert 'network.published_ports: \'x\' is not' in caught.value.msg
    assert caught.value.result == {'changed': False, 'commands': [], 'address': None, 'bridge': netdev.DEFAULT_BRIDGE,
                                   'gateway': None, 'subnet': None, 'ports': [], 'pid': None,
                                   'host_veth': netdev.host_veth_name(netdev.DEFAULT_BRIDGE, 'web')}
    assert not os.path.exists(tmp_path / 'networks')


# Network.run() for real: a real AnsibleModule in a network namespace of its own, so that the seat it reads is empty
# (no bridge, no table) whatever the machine runs.
RUN = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible.module_utils import basic
from ansible.module_utils.common import warnings
from ansible.module_utils.testing import patch_module_args
from ansible_collections.unboxed.lab.plugins.module_utils import bridge_network
request = json.loads(sys.argv[2])
with patch_module_args(dict(request['params'], _ansible_check_mode=request['check_mode'], _ansible_diff=True)):
    module = basic.AnsibleModule(argument_spec=bridge_network.argument_spec(), supports_check_mode=True)
try:
    outcome = {'result': bridge_network.Network(module, module.params).run(expect_started=request['expect_started'])}
except bridge_network.NetworkError as error:
    outcome = {'error': error.msg, 'result': error.result}
outcome['warnings'] = warnings.get_warning_messages()
print(json.dumps(outcome))
'''

needs_kernel = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(binary) for binary in ('unshare', 'ip', 'nsenter', 'nft')),
    reason='needs root, unshare, iproute2, nsenter and nftables')


def run_network(params, check_mode, expect_started=False):
    request = {'params': params, 'check_mode': check_mode, 'expect_started': expect_started}
    completed = subprocess.run(['unshare', '--net', sys.executable, '-c', RUN, os.path.abspath(COLLECTIONS),
                                json.dumps(request)], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture
def seat_dirs(tmp_path):
    """The request's directories; after the test, the records must still not exist."""
    dirs = {'network_dir': str(tmp_path / 'networks'), 'state_dir': str(tmp_path / 'containers' / 'web')}
    yield dirs
    assert not os.path.exists(dirs['network_dir'])


@pytest.fixture
def running_container(seat_dirs):
    """A real process in a network namespace of its own, recorded as container web's PID 1, as ns_container does."""
    child = subprocess.Popen(['unshare', '--net', 'sleep', '300'])
    try:
        own = os.stat('/proc/self/ns/net').st_ino
        deadline = time.monotonic() + 10
        while os.stat(f'/proc/{child.pid}/ns/net').st_ino == own:
            assert time.monotonic() < deadline, 'unshare did not make its network namespace'
            time.sleep(0.01)
        os.makedirs(seat_dirs['state_dir'])
        container.write_state(seat_dirs['state_dir'], {'process': process.identity_of(child.pid).to_dict()})
        yield child.pid
    finally:
        child.kill()
        child.wait()


def first_attach_commands(pid):
    veth = netdev.host_veth_name(netdev.DEFAULT_BRIDGE, 'web')
    return [f'ip link add name {netdev.DEFAULT_BRIDGE} type bridge',
            f'ip link add name {veth} type veth peer name eth0 netns {pid}']


def assert_predicts_first_attach(outcome, pid):
    assert 'error' not in outcome, outcome
    result = outcome['result']
    assert result['changed'] is True
    assert result['pid'] == (pid if isinstance(pid, int) else None)
    assert result['address'] == '10.47.0.2/24' and result['gateway'] == '10.47.0.1'
    assert result['msg'] == f'Attached web to {netdev.DEFAULT_BRIDGE} as 10.47.0.2/24, publishing 8080:80/tcp.'
    for command in first_attach_commands(pid):
        assert command in result['commands'], result['commands']
    assert json.loads(result['diff']['before'])['container'] is None
    assert json.loads(result['diff']['after'])['container'] == {'address': '10.47.0.2', 'ports': ['8080:80/tcp']}


@needs_kernel
@pytest.mark.parametrize('expect_started', [False, True])
def test_check_mode_predicts_a_container_that_does_not_run_yet(seat_dirs, expect_started):
    params = dict(seat_dirs, name='web', published_ports=['8080:80'])
    outcome = run_network(params, check_mode=True, expect_started=expect_started)
    assert_predicts_first_attach(outcome, 'PID')
    if expect_started:
        # The caller starts it in the same run: nothing to warn about.
        assert outcome['warnings'] == []
    else:
        # container_network's own prediction: an earlier task in check mode only predicted the start.
        assert len(outcome['warnings']) == 1
        assert outcome['warnings'][0].startswith('Container web does not run (no such container); check mode predicts')


@needs_kernel
def test_check_mode_reads_a_running_container_unless_it_is_started_again(seat_dirs, running_container):
    params = dict(seat_dirs, name='web', published_ports=['8080:80'])
    outcome = run_network(params, check_mode=True)
    assert_predicts_first_attach(outcome, running_container)
    assert outcome['warnings'] == []
    # expect_started: the caller replaces the process in this run, so the new one is plumbed, not this one.
    outcome = run_network(params, check_mode=True, expect_started=True)
    assert_predicts_first_attach(outcome, 'PID')
    assert outcome['warnings'] == []


@needs_kernel
@pytest.mark.parametrize('expect_started', [False, True])
def test_a_real_run_refuses_a_container_that_does_not_run(seat_dirs, expect_started):
    outcome = run_network(dict(seat_dirs, name='web'), check_mode=False, expect_started=expect_started)
    assert outcome['error'] == (f'No such container: web (nothing is recorded in {seat_dirs["state_dir"]}; '
                                f'ns_container records a container there when it starts it).')
    assert outcome['result']['changed'] is False and 'msg' not in outcome['result']
    assert outcome['result']['host_veth'] == netdev.host_veth_name(netdev.DEFAULT_BRIDGE, 'web')
    assert outcome['warnings'] == []


@needs_kernel
def test_a_real_run_takes_the_lock_check_mode_does_not(seat_dirs, running_container):
    params = dict(seat_dirs, name='web', lock_timeout=0)
    with locking.exclusive('network', seat_dirs['network_dir'], timeout=5, note='test_bridge_network'):
        outcome = run_network(params, check_mode=False)
        lock_path = locking.lock_file_path('network', seat_dirs['network_dir'])
        assert outcome['error'] == (
            f'Another run is working on the networks of {seat_dirs["network_dir"]} (PID {os.getpid()} '
            f'{seat_dirs["network_dir"]} test_bridge_network) and did not finish within 0 s. Wait for it to end (or stop '
            f'it), then run again; the lock is {lock_path}.')
        assert outcome['result']['changed'] is False
        outcome = run_network(params, check_mode=True)
        assert_predicts_first_attach_without_ports(outcome, running_container)


def assert_predicts_first_attach_without_ports(outcome, pid):
    assert 'error' not in outcome, outcome
    assert outcome['result']['changed'] is True and outcome['result']['pid'] == pid
    for command in first_attach_commands(pid):
        assert command in outcome['result']['commands']
