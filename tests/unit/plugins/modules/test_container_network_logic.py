"""container_network's pure logic (bridge_network's, which the module wraps): every problem of a request at once,
each naming its option, and the argument spec's defaults (the role's defaults and the docs name the same). The kernel-touching part runs for real in
tests/system/test_network.py."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import bridge_network, container, netdev, process
from ansible_collections.unboxed.lab.plugins.modules import container_network


def params(**overrides):
    validated = ArgumentSpecValidator(bridge_network.argument_spec()).validate(dict(name='web'))
    assert not validated.error_messages
    return dict(validated.validated_parameters, **overrides)


@pytest.mark.parametrize('overrides, expected', [
    (dict(), []),
    (dict(published_ports=['8080:80', '127.0.0.1:5353:53/udp'], address='10.47.0.9'), []),
    (dict(name=None, state='absent'), []),
    (dict(name=None), ['name is required with state=present']),
    (dict(name='../etc'), ['name']),
    (dict(bridge='Docker-0'), ['bridge must be']),
    (dict(subnet='10.47.0.0/30'), ['subnet']),
    (dict(address='10.48.0.2'), ['address 10.48.0.2 is outside the subnet']),
    (dict(address='10.47.0.1'), ['address 10.47.0.1 is the bridge']),
    (dict(published_ports=['80']), ['published_ports']),
    (dict(network_dir='relative/dir'), ['network_dir']),
    (dict(network_dir='/proc/sys/net'), ['network_dir']),
    (dict(lock_timeout=-1), ['lock_timeout']),
    (dict(bridge='X', subnet='nonsense', published_ports=['1:2:3:4']), ['bridge', 'subnet', 'published_ports']),
])
def test_request_problems(overrides, expected):
    problems = bridge_network.request_problems(params(**overrides))
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert start in problem, problems


def test_defaults_are_netdev_s():
    spec = bridge_network.argument_spec()
    assert spec['bridge']['default'] == netdev.DEFAULT_BRIDGE
    assert spec['subnet']['default'] == netdev.DEFAULT_SUBNET
    assert spec['network_dir']['default'] == netdev.NETWORK_DIR
    assert f'default: {netdev.DEFAULT_SUBNET}' in container_network.DOCUMENTATION


def test_running_process_reasons():
    assert container.running_process(None) == (None, 'no such container')
    assert 'stopped' in container.running_process({'format': 1})[1]
    gone = {'process': {'pid': 2 ** 22 + 1, 'start_time': 1}}
    assert 'has ended' in container.running_process(gone)[1]
    me = process.identity_of(1)
    reused = {'process': {'pid': 1, 'start_time': me.start_time + 1}}
    assert 'now belongs to another process' in container.running_process(reused)[1]
    assert container.running_process({'process': me.to_dict()}) == (me, None)
