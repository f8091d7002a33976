"""ns_container's pure logic: request validation, the spec and its comparison, error explanations."""

from __future__ import annotations

import signal

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.modules import ns_container


def params(**overrides):
    base = dict(name='talk', rootfs='/overlay/merged', command=['tail', '-f', '/dev/null'],
                namespaces=['pid', 'net', 'mount'], hostname=None, mount_proc=None, root_method='chroot', env={},
                workdir=None, state='started', stop_timeout=10, state_dir=None, lock_timeout=60, preset='none',
                capabilities=None, no_new_privs=None, seccomp=None, memory=None, pids_limit=None, cpus=None,
                cpu_shares=None, cgroup_parent=None, adopt=True, userns_remap=None, volumes=[])
    base.update(overrides)
    return base


def test_the_talks_request_has_no_problem():
    assert ns_container.request_problems(params()) == []


@pytest.mark.parametrize('overrides, fragment', [
    (dict(name='../etc'), 'name "../etc" is not a safe container name'),
    (dict(name='a/b'), 'not a safe container name'),
    (dict(name='.hidden'), 'not a safe container name'),
    (dict(name='x' * 65), 'not a safe container name'),
    # A trailing newline: `$` accepted it, and a state directory with a newline in its name was created.
    (dict(name='talk\n'), 'name "talk\\n" is not a safe container name'),
    (dict(name='talk\n\n'), 'not a safe container name'),
    (dict(rootfs='overlay/merged'), 'rootfs must be an absolute path'),
    (dict(rootfs='/'), 'rootfs is "/", the host\'s own root'),
    (dict(rootfs='/usr/'), 'rootfs is "/usr", a system directory'),
    (dict(command=[]), 'command must name the program'),
    (dict(command=['']), 'command must name the program'),
    (dict(command=['tail -f /dev/null']), "write it as a list, e.g. ['tail', '-f', '/dev/null']"),
    (dict(command=['sh', '-c', 'a\0b']), 'NUL byte'),
    (dict(hostname='web01'), 'hostname "web01" needs "uts" in namespaces'),
    (dict(hostname='web_01', namespaces=['uts']), 'hostname "web_01" is not a valid host name'),
    (dict(hostname='-web', namespaces=['uts']), 'is not a valid host name'),
    (dict(hostname='a' * 65, namespaces=['uts']), 'is not a valid host name'),
    (dict(hostname='web01\n', namespaces=['uts']), 'hostname "web01\\n" is not a valid host name'),
    (dict(hostname='a' * 64 + '\n', namespaces=['uts']), 'is not a valid host name'),
    (dict(hostname='web01\nevil', namespaces=['uts']), 'is not a valid host name'),
    (dict(mount_proc=True, namespaces=['net', 'mount']), 'mount_proc needs "pid" in namespaces'),
    (dict(mount_proc=True, namespaces=['pid']), 'mount_proc needs "mount" in namespaces'),
    (dict(mount_proc=True, namespaces=['uts']), 'mount_proc needs "pid" and "mount" in namespaces'),
    (dict(root_method='pivot_root', namespaces=['pid', 'net']), 'root_method pivot_root (the default) needs "mount" in namespaces'),
    (dict(workdir='app'), 'workdir is a path inside the container and must be absolute'),
    (dict(env={'BAD-NAME': 'x'}), 'env has the variable name "BAD-NAME"'),
    (dict(env={'GREETING\n': 'x'}), 'env has the variable name "GREETING\\n"'),
    (dict(env={'\nA': 'x'}), 'env has the variable name "\\nA"'),
    (dict(stop_timeout=-1), 'stop_timeout must be 0 or more seconds'),
    (dict(lock_timeout=-1), 'lock_timeout must be 0 or more seconds'),
    (dict(state_dir='run/x'), 'state_dir must be an absolute path'),
    (dict(state_dir='/etc'), 'state_dir is "/etc"'),
    (dict(state_dir='/media'), 'state_dir is "/media"'),
])
def test_bad_requests_name_the_option_and_the_reason(overrides, fragment):
    problems = ns_container.request_problems(params(**overrides))
    assert any(fragment in problem for problem in problems), problems


def test_all_problems_are_reported_at_once():
    problems = ns_container.request_problems(params(rootfs='rel', hostname='h', mount_proc=True, namespaces=['net']))
    assert len(problems) == 3, problems


@pytest.mark.parametrize('state', ['stopped', 'absent'])
def test_stopping_and_removing_need_only_a_name(state):
    assert ns_container.request_problems(params(state=state, rootfs=None, command=None, hostname='no uts')) == []


@pytest.mark.parametrize('name', ['talk', 'web-01.lab_2', 'x' * 64])
def test_good_names_pass(name):
    assert ns_container.request_problems(params(name=name)) == []


@pytest.mark.parametrize('hostname', ['web01', 'a.b-c.d', 'a' * 64])
def test_good_hostnames_pass(hostname):
    assert ns_container.request_problems(params(hostname=hostname, namespaces=['pid', 'net', 'mount', 'uts'])) == []


def test_pivot_root_is_the_default_and_chroot_must_be_asked_for():
    spec = ns_container.argument_spec()
    assert spec['root_method']['default'] == 'pivot_root' == container.DEFAULT_ROOT_METHOD
    assert container.ContainerSpec.build(rootfs='/r', command=['x']).root_method == 'pivot_root'
    without_mount = ns_container.request_problems(params(root_method='pivot_root', namespaces=['pid', 'net']))
    assert 'or set root_method: chroot' in without_mount[0]
    assert ns_container.request_problems(params(root_method='chroot', namespaces=['pid', 'net'], mount_proc=False)) == []


@pytest.mark.parametrize('namespaces, mount_proc, expected', [
    (['pid', 'net', 'mount'], None, True),
    (['pid', 'mount'], None, True),
    (['net', 'mount'], None, False),
    (['pid'], None, False),
    (['pid', 'mount'], False, False),
])
def test_mount_proc_defaults_to_what_the_namespaces_allow(namespaces, mount_proc, expected):
    assert ns_container.effective_mount_proc(params(namespaces=namespaces, mount_proc=mount_proc)) is expected


def test_desired_spec_is_canonical():
    one = ns_container.desired_spec(params(namespaces=['net', 'mount', 'pid', 'net'], rootfs='/overlay//merged/',
                                           env={'B': 2, 'A': '1'}))
    other = ns_container.desired_spec(params(env={'A': '1', 'B': '2'}))
    assert one == other
    assert one.namespaces == ('pid', 'net', 'mount')
    assert one.rootfs == '/overlay/merged'
    assert container.spec_changes(one, other) == []


@pytest.mark.parametrize('overrides, changed', [
    (dict(command=['sleep', 'infinity']), ['command']),
    (dict(namespaces=['pid', 'net', 'mount', 'uts'], hostname='web01'), ['namespaces', 'hostname']),
    (dict(mount_proc=False), ['mount_proc']),
    (dict(root_method='pivot_root'), ['root_method']),  # params() asks for chroot, as the talk does
    (dict(env={'GREETING': 'hello'}), ['env']),
    (dict(workdir='/tmp'), ['workdir']),
    (dict(rootfs='/srv/other'), ['rootfs']),
])
def test_spec_changes_name_each_field_that_differs(overrides, changed):
    before = ns_container.desired_spec(params())
    after = ns_container.desired_spec(params(**overrides))
    assert container.spec_changes(before, after) == changed


def test_a_spec_survives_the_state_file():
    spec = ns_container.desired_spec(params(namespaces=['pid', 'mount', 'uts', 'user'], hostname='web01',
                                            env={'A': '1'}, workdir='/srv', root_method='pivot_root'))
    assert container.ContainerSpec.from_dict(spec.to_dict()) == spec
    assert container.spec_changes(None, spec) == list(container.SPEC_FIELDS)


@pytest.mark.parametrize('data', [
    None,
    {},
    {'rootfs': '/r'},
    {'rootfs': '/r', 'command': ['x'], 'namespaces': ['bogus'], 'mount_proc': True, 'root_method': 'chroot'},
])
def test_a_spec_this_code_did_not_write_is_none(data):
    assert container.ContainerSpec.from_dict(data) is None


def test_diff_view_shows_state_pid_and_spec():
    spec = ns_container.desired_spec(params())
    assert ns_container.diff_view('absent', None, spec) == {'state': 'absent'}
    view = ns_container.diff_view('started', 4242, spec)
    assert view['state'] == 'started' and view['pid'] == 4242
    assert view['command'] == ['tail', '-f', '/dev/null'] and view['namespaces'] == ['pid', 'net', 'mount']


def test_state_dir_defaults_under_run():
    assert ns_container.state_dir_of(params()) == '/run/unboxed/containers/talk'
    assert ns_container.state_dir_of(params(state_dir='/srv/state/talk/')) == '/srv/state/talk'


@pytest.mark.parametrize('code, text', [
    (None, ''),
    (0, ' (exit code 0)'),
    (1, ' (exit code 1)'),
    (127, ' (exit code 127: a program was not found)'),
    (-signal.SIGKILL, ' (killed by SIGKILL)'),
])
def test_exit_explanation(code, text):
    assert ns_container.exit_explanation(code) == text


def test_user_namespace_refused_inside_a_chroot_is_explained():
    text = container.unshare_refusal_problem('unshare: unshare failed: Operation not permitted', ['pid', 'user'], True)
    assert text.startswith('namespaces: the kernel refused')
    assert 'This module runs inside a chroot' in text and 'EPERM' in text and 'remove "user"' in text


def test_user_namespace_refused_elsewhere_names_the_usual_causes():
    text = container.unshare_refusal_problem('unshare: unshare failed: Operation not permitted', ['user'], False)
    assert "runs inside a chroot" not in text and "AppArmor" in text
    assert "could not be determined" not in text


@pytest.mark.parametrize('detail, fragment', [
    ('unshare: unshare failed: No space left on device', 'max_*_namespaces'),
    ('unshare: unshare failed: Invalid argument', 'built without'),
    ('unshare: unshare failed: Operation not permitted', 'needs root'),
])
def test_other_refusals_are_explained(detail, fragment):
    assert fragment in container.unshare_refusal_problem(detail, ['pid', 'net'], False)


def test_user_namespace_refused_where_a_chroot_cannot_be_ruled_out_says_so():
    text = container.unshare_refusal_problem('unshare: unshare failed: Operation not permitted', ['user'], None)
    assert 'could not be determined whether this module runs inside a chroot' in text
    assert 'never lets a chrooted process create a user namespace' in text


@pytest.mark.parametrize('action, reason, check_mode, text', [
    (None, 'it runs with this spec (PID 42)', False, 'Nothing to do: it runs with this spec (PID 42).'),
    ('start', 'no container was recorded', True, 'Would be started: no container was recorded.'),
    ('restart', 'command changed', False, 'Restarted: command changed.'),
    ('remove', '/run/unboxed/containers/talk (no process was running)', False,
     'Removed: /run/unboxed/containers/talk (no process was running).'),
])
def test_describe_says_what_was_done_and_why(action, reason, check_mode, text):
    assert ns_container.describe(action, reason, check_mode) == text


def test_describe_a_container_found_again():
    assert ns_container.describe('track', 'PID 7 was started by an interrupted run', True) == \
        'Would be tracked again: PID 7 was started by an interrupted run.'
    assert ns_container.PREDICTED_STATUS['track'] == 'started'


# ---- issue 17: an unshare too old for an option --------------------------------------------------------------------

@pytest.mark.parametrize('version_text, version', [
    ('unshare from util-linux 2.38.1\n', '2.38.1'),
    ('unshare from util-linux 2.33.1', '2.33.1'),
    ('unshare from util-linux-ng 2.17.2', '2.17.2'),
    ('unshare (util-linux) 2.40-rc1', None),
    ('', None),
])
def test_util_linux_version_from_unshare_version(version_text, version):
    assert container.util_linux_version(version_text) == version


@pytest.mark.parametrize('detail, option, cause', [
    ("unshare: unrecognized option '--wd=/srv'\nTry 'unshare --help' for more information.", '--wd', 'workdir'),
    ("unshare: unrecognized option '--root=/overlay/merged'", '--root', 'workdir'),
    ("unshare: unrecognized option '--map-root-user'", '--map-root-user', 'namespaces: user'),
    ("unshare: unrecognized option '--cgroup'", '--cgroup', 'namespaces: cgroup'),
    ("unshare: unrecognized option '--mount-proc=/overlay/merged/proc'", '--mount-proc', 'mount_proc'),
])
def test_an_unknown_unshare_option_is_named_with_the_version_found(detail, option, cause):
    text = container.unsupported_option_problem('unshare', detail, 'unshare from util-linux 2.29.2')
    assert text.startswith(f'unshare on this host does not know the option {option}, which {cause} needs: '
                           f'it is util-linux 2.29.2, too old for this launch.'), text
    assert 'Install a newer util-linux' in text and detail.strip() in text


def test_an_unknown_option_without_a_version_says_so():
    text = container.unsupported_option_problem('unshare', "unshare: unrecognized option '--bogus'", None)
    assert 'does not know the option --bogus: it is a util-linux whose version it did not tell' in text


@pytest.mark.parametrize('detail', ['unshare: unshare failed: Operation not permitted', '', 'exit code 1',
                                    'tail: option used in invalid context -- 2'])
def test_other_failures_are_not_blamed_on_an_old_unshare(detail):
    assert container.unsupported_option_problem('unshare', detail, 'unshare from util-linux 2.38.1') is None
    assert container.unknown_option(detail) is None


@pytest.mark.parametrize('overrides, flags', [
    (dict(), ['--fork', '--pid', '--net', '--mount']),
    (dict(root_method='chroot', workdir='/srv'), ['--fork', '--pid', '--net', '--mount', '--root=/', '--wd=/']),
    (dict(root_method='pivot_root', workdir='/srv'), ['--fork', '--pid', '--net', '--mount']),
    (dict(namespaces=['pid', 'mount', 'user']), ['--fork', '--pid', '--mount', '--user', '--map-root-user']),
])
def test_the_probe_tries_every_unshare_option_of_the_launch_but_mounts_nothing(overrides, flags):
    spec = ns_container.desired_spec(params(**overrides))
    assert container.probe_flags(spec) == flags


@pytest.mark.parametrize('args, error', [
    ({'name': 'talk'}, None),
    ({'name': 'talk', 'state': 'absent'}, None),
    ({'containers': [{'name': 'web'}, {'name': 'client', 'state': 'absent'}]}, None),
    ({}, 'one of the following is required: name, containers'),
    ({'name': 'talk', 'containers': [{'name': 'web'}]}, 'parameters are mutually exclusive: containers|name'),
    ({'rootfs': '/r', 'containers': [{'name': 'web'}]}, 'parameters are mutually exclusive: containers|rootfs'),
    ({'containers': [{'rootfs': '/r'}]}, 'missing required arguments: name found in containers'),
    ({'containers': [{'name': 'web', 'lock_timeout': 5}]}, 'containers.lock_timeout'),
])
def test_argument_spec_one_container_or_several(args, error):
    result = ArgumentSpecValidator(ns_container.argument_spec(), **ns_container.constraints()).validate(args)
    if error is None:
        assert result.error_messages == []
    else:
        assert any(error in message for message in result.error_messages), result.error_messages


@pytest.mark.parametrize('overrides, expected', [
    (dict(rootfs=None, command=None), ['rootfs is missing: state=started', 'command is missing: state=started']),
    (dict(state='restarted', command=None), ['command is missing: state=restarted']),
    (dict(state='absent', rootfs=None, command=None), []),
    (dict(state='stopped', command=None), []),
])
def test_what_a_start_needs_is_named(overrides, expected):
    problems = ns_container.request_problems(params(**overrides))
    assert [problem[:len(fragment)] for problem, fragment in zip(problems, expected)] == expected
    assert len(problems) == len(expected), problems


def validated_containers(items, **top):
    """module.params of a task with containers, as AnsibleModule validates them (defaults of each item filled)."""
    result = ArgumentSpecValidator(ns_container.argument_spec(), **ns_container.constraints()).validate(
        dict(top, containers=items))
    assert result.error_messages == []
    return result.validated_parameters


WEB = dict(name='web', rootfs='/overlay/merged', command=['tail', '-f', '/dev/null'])


def test_good_containers_have_no_problem_and_each_item_has_every_default():
    validated = validated_containers([WEB, dict(WEB, name='client', namespaces=['pid', 'net', 'mount', 'uts'],
                                                hostname='client')])
    assert ns_container.containers_problems(validated) == []
    web = validated['containers'][0]
    assert web['state'] == 'started' and web['namespaces'] == ['pid', 'net', 'mount'] and web['stop_timeout'] == 10
    assert 'lock_timeout' not in web and validated['lock_timeout'] == 60


@pytest.mark.parametrize('items, top, expected', [
    ([WEB, dict(WEB, name='client', rootfs='relative')], {}, ['containers[1].rootfs must be an absolute path']),
    ([dict(WEB, hostname='web'), dict(WEB, name='../x')], {},
     ['containers[0].hostname "web" needs "uts" in namespaces', 'containers[1].name "../x" is not a safe container name']),
    ([dict(WEB, command=None), WEB], {}, ['containers[0].command is missing: state=started',
                                          'containers[1].name "web" is the name of containers[0] again']),
    ([WEB, dict(WEB, name='client', state_dir='/run/unboxed/containers/web')], {},
     ['containers[1].state_dir /run/unboxed/containers/web is the state directory of containers[0] too']),
    ([], {}, ['containers is empty']),
    ([WEB], {'lock_timeout': -1}, ['lock_timeout must be 0 or more seconds']),
    ([dict(WEB, state='absent', rootfs=None, command=None, stop_timeout=-2)], {},
     ['containers[0].stop_timeout must be 0 or more seconds']),
])
def test_bad_containers_name_the_item_and_the_option(items, top, expected):
    problems = ns_container.containers_problems(validated_containers(items, **top))
    assert [problem[:len(fragment)] for problem, fragment in zip(problems, expected)] == expected
    assert len(problems) == len(expected), problems


def test_a_failure_says_which_item_failed_and_what_the_earlier_did():
    done = [{'name': 'web', 'changed': True, 'msg': 'Started: no container was recorded.'}]
    failure = ns_container.ContainerFailure('rootfs /x does not exist.', problems=['rootfs /x does not exist.'])
    result = ns_container.containers_failure(1, 'client', failure, done)
    assert result['msg'] == ('containers[1] (client): rootfs /x does not exist. Before it: containers[0] (web): '
                             'Started: no container was recorded.')
    assert result['changed'] is True and result['failed_index'] == 1
    assert result['containers'][1] == {'name': 'client', 'failed': True, 'msg': 'rootfs /x does not exist.',
                                       'problems': ['rootfs /x does not exist.']}
    assert result['problems'] == ['containers[1] (client): rootfs /x does not exist.']
    first = ns_container.containers_failure(0, 'web', failure, [])
    assert first['changed'] is False and first['msg'].endswith('No container was changed before it.')


# ---- confinement and limits in the request -------------------------------------------------------------------------

PIVOT = dict(root_method='pivot_root')


@pytest.mark.parametrize('overrides, fragment', [
    (dict(capabilities=['docker', 'cap_bogus'], **PIVOT), 'capabilities: unknown capability "cap_bogus"'),
    (dict(capabilities=['all', 'chown'], **PIVOT), 'capabilities: "all" stands alone'),
    (dict(preset='docker'), 'preset docker needs root_method pivot_root'),  # params() asks for chroot
    (dict(capabilities=['docker']), 'capabilities need root_method pivot_root'),
    (dict(no_new_privs=True, seccomp='docker'), 'no_new_privs, seccomp need root_method pivot_root'),
    (dict(seccomp='profiles/strict.json', **PIVOT), 'seccomp must be "unconfined", "docker"'),
    (dict(memory='64X', **PIVOT), 'memory:'),
    (dict(memory='-1', **PIVOT), 'memory:'),
    (dict(memory='0', **PIVOT), 'memory: 0 is no limit'),
    (dict(pids_limit=0, **PIVOT), 'pids_limit: must be at least 1'),
    (dict(cpus=10 ** 6, **PIVOT), 'cpus:'),
    (dict(cpu_shares=1, **PIVOT), 'cpu_shares: must be from 2 to 262144'),
    (dict(cgroup_parent='unboxed', **PIVOT), 'cgroup_parent: "unboxed" is not a cgroup path'),
])
def test_bad_confinement_and_limits_name_the_option(overrides, fragment):
    problems = ns_container.request_problems(params(**overrides))
    assert any(fragment in problem for problem in problems), problems


@pytest.mark.parametrize('overrides', [
    dict(preset='docker', root_method='pivot_root'),
    dict(capabilities=['all']),  # nothing dropped: the talk's chroot stays possible
    dict(seccomp='unconfined', no_new_privs=False),
    dict(capabilities=['docker', 'NET_ADMIN'], no_new_privs=True, seccomp='/srv/profile.json', root_method='pivot_root'),
    dict(memory='64m', pids_limit=64, cpus='0.5', cpu_shares=512, cgroup_parent='/unboxed'),
])
def test_good_confinement_and_limits_pass(overrides):
    assert ns_container.request_problems(params(**overrides)) == []


def test_preset_docker_is_docker_run_without_flags_and_explicit_options_win():
    docker = ns_container.desired_spec(params(preset='docker', root_method='pivot_root'))
    assert docker.capabilities == confine.resolve_capabilities(['docker'])
    assert docker.seccomp == 'docker' and docker.no_new_privs is False
    explicit = ns_container.desired_spec(params(preset='docker', root_method='pivot_root', capabilities=['none'],
                                                seccomp='unconfined', no_new_privs=True))
    assert explicit.capabilities == () and explicit.seccomp == 'unconfined' and explicit.no_new_privs
    # [docker] and its 14 names are the same spec: no restart for writing it out.
    spelled = ns_container.desired_spec(params(root_method='pivot_root', seccomp='docker',
                                               capabilities=[name.lower() for name in confine.DOCKER_CAPABILITIES]))
    assert container.spec_changes(docker, spelled) == []


def test_the_talks_request_has_no_confinement_and_no_cgroup():
    talk = ns_container.desired_spec(params())
    assert not talk.confinement.confined and not talk.wants_cgroup
    assert talk.memory is None and talk.cgroup_parent is None


def test_limits_are_normalized_into_the_spec():
    spec = ns_container.desired_spec(params(memory='64M', pids_limit='64', cpus=0.50, cpu_shares=1024))
    assert (spec.memory, spec.pids_limit, spec.cpus, spec.cpu_shares) == (64 * 1024 * 1024, 64, '0.5', 1024)
    assert container.spec_changes(spec, ns_container.desired_spec(params(memory='65536k', pids_limit=64, cpus='0.5',
                                                                         cpu_shares=1024))) == []


# ---- network: the attach options, validated as container_network validates them ------------------------------------

NETWORK = dict(bridge='unboxed0', subnet='10.47.0.0/24', address=None, published_ports=[],
               network_dir='/var/lib/unboxed/networks')


@pytest.mark.parametrize('overrides, network, fragment', [
    (dict(namespaces=['pid', 'mount']), {}, 'network needs "net" in namespaces'),
    (dict(), dict(bridge='Bad-Name'), 'network.bridge'),
    (dict(), dict(subnet='10.47.0.0/33'), 'network.subnet'),
    (dict(), dict(address='10.48.0.5'), 'network.address 10.48.0.5 is outside the subnet'),
    (dict(), dict(published_ports=['8080']), 'network.published_ports'),
    (dict(), dict(published_ports=['9000:80', '9000:81']), 'take the same host port'),
    (dict(), dict(network_dir='networks'), 'network.network_dir must be an absolute path'),
    (dict(), dict(network_dir='/etc/networks'), 'network.network_dir'),
])
def test_bad_network_names_the_suboption(overrides, network, fragment):
    problems = ns_container.request_problems(params(network=dict(NETWORK, **network), **overrides))
    assert any(fragment in problem for problem in problems), problems


def test_network_is_validated_with_the_item_prefix_and_not_needed_to_stop():
    assert ns_container.request_problems(params(network=dict(NETWORK))) == []
    # Stopping or removing detaches: no net namespace asked for then.
    assert ns_container.request_problems(params(state='absent', namespaces=['pid', 'mount'], network=dict(NETWORK))) == []
    problems = ns_container.request_problems(params(network=dict(NETWORK, address='10.47.0.1')), prefix='containers[2].')
    assert problems and problems[0].startswith('containers[2].network.address 10.47.0.1'), problems


def test_the_network_suboptions_are_bridge_networks_and_where_the_records_go():
    from ansible_collections.unboxed.lab.plugins.module_utils import bridge_network
    options = ns_container.argument_spec()['network']['options']
    assert set(options) == set(bridge_network.OPTION_SPEC) | {'network_dir'}
    assert ns_container.argument_spec()['containers']['options']['network']['options'] == options


@pytest.mark.parametrize('ports, expected', [
    ([['8080:80'], ['8081:80']], []),
    ([['8080:80'], ['8080:80/udp']], []),
    ([['8080:80'], ['127.0.0.1:8080:81']],
     ['containers[1].network.published_ports: 127.0.0.1:8080:81/tcp takes the host port of 8080:80/tcp, published by containers[0]']),
    ([['8080:80'], None, ['8080:80']], ['containers[2].network.published_ports: 8080:80/tcp takes']),
])
def test_two_items_publishing_one_host_port_are_refused_before_anything_starts(ports, expected):
    items = [dict(WEB, name=f'c{index}', network=None if item_ports is None else dict(NETWORK, published_ports=item_ports))
             for index, item_ports in enumerate(ports)]
    problems = ns_container.containers_problems(validated_containers(items))
    assert [problem[:len(fragment)] for problem, fragment in zip(problems, expected)] == expected
    assert len(problems) == len(expected), problems
