"""Adoption's pure logic: which processes are containers, how one differs from a spec, what is adopted and replaced."""

from __future__ import annotations

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import container

SEAT = {'pid': 1, 'net': 2, 'mount': 3, 'uts': 4, 'ipc': 5, 'user': 6, 'cgroup': 7}
TAIL = ('tail', '-f', '/dev/null')
ALL_CAPS = (1 << 41) - 1
TALK = container.ContainerSpec.build(rootfs='/overlay/merged', command=list(TAIL), root_method='chroot')


def rooted(pid=4242, start=100, cmdline=TAIL, own=('pid', 'net', 'mount'), nspids=(4242, 1), inner_pid1=TAIL):
    namespaces = {name: inode + (100 if name in own else 0) for name, inode in SEAT.items()}
    return container.RootedProcess(pid=pid, start_time=start, ppid=4241, comm=cmdline[0], cmdline=tuple(cmdline),
                                   namespaces=namespaces, nspids=tuple(nspids), inner_pid1=inner_pid1)


def observed(**changes):
    values = dict(hostname='seat1', keeps_host_root=True, environment={'PATH': '/bin', 'SUDO_USER': 'student'},
                  in_workdir=True, status={'CapBnd': f'{ALL_CAPS:016x}', 'NoNewPrivs': '0', 'Seccomp': '0'},
                  uid_map='0 0 4294967295')
    values.update(changes)
    return container.Observed(**values)


@pytest.mark.parametrize('entry, expected', [
    (rooted(), True),                                                          # the talk's container
    (rooted(own=('pid', 'mount'), inner_pid1=None), True),                     # no --net: still a container
    (rooted(own=('net', 'mount'), nspids=(4242,)), True),                      # unshare without --fork
    (rooted(own=(), nspids=(4242,)), False),                                   # a shell chrooted into merged
    (rooted(own=('pid', 'net', 'mount'), nspids=(4250, 7)), False),            # a process inside a container
], ids=['talk', 'no-net', 'no-fork', 'chroot-shell', 'inside-a-container'])
def test_which_processes_are_containers(entry, expected):
    assert container.is_container(entry, SEAT) is expected


@pytest.mark.parametrize('spec_changes, entry, seen, why', [
    ({}, rooted(), observed(), None),
    ({}, rooted(cmdline=('sleep', '1000'), inner_pid1=('sleep', '1000')), observed(),
     'runs "sleep 1000", not "tail -f /dev/null"'),
    ({}, rooted(own=('pid', 'mount')), observed(), "shares the seat's network namespace (no --net)"),
    ({}, rooted(own=('net', 'mount'), nspids=(4242,)), observed(),
     "runs in the seat's PID namespace (no --pid, or unshare without --fork)"),
    ({}, rooted(own=('pid', 'net', 'mount', 'uts')), observed(),
     'has a UTS (hostname) namespace of its own (--uts), which is not asked for'),
    ({}, rooted(inner_pid1=None), observed(), 'has no /proc of its own mounted (no --mount-proc)'),
    ({}, rooted(inner_pid1=('/sbin/init',)), observed(), 'its /proc is not its PID namespace\'s (PID 1 there is "/sbin/init")'),
    ({}, rooted(), observed(keeps_host_root=False), 'entered its root with pivot_root, not chroot'),
    ({'root_method': 'pivot_root'}, rooted(), observed(),
     "entered its root with chroot: the seat's files stay in its mount namespace (pivot_root is asked for)"),
    ({}, rooted(), observed(keeps_host_root=None), 'how it entered its root (chroot or pivot_root) could not be read'),
    ({'namespaces': ['pid', 'net', 'mount', 'uts'], 'hostname': 'web01'}, rooted(own=('pid', 'net', 'mount', 'uts')),
     observed(), 'its hostname is "seat1", not "web01"'),
    ({'workdir': '/app'}, rooted(), observed(in_workdir=False), 'its working directory is not /app'),
    ({'env': {'GREETING': 'hello'}}, rooted(), observed(), 'its environment has no GREETING=hello'),
    ({'env': {'SUDO_USER': 'student'}}, rooted(), observed(), None),  # only the variables asked for are compared
    ({}, rooted(), observed(status={'CapBnd': '00000000a80425fb', 'NoNewPrivs': '0', 'Seccomp': '0'}),
     f'its capability bounding set is 00000000a80425fb, not {ALL_CAPS:016x}'),
    ({}, rooted(), observed(status={'CapBnd': f'{ALL_CAPS:016x}', 'NoNewPrivs': '1', 'Seccomp': '0'}),
     'no_new_privs is set (NoNewPrivs in /proc/PID/status)'),
    ({}, rooted(), observed(status={'CapBnd': f'{ALL_CAPS:016x}', 'NoNewPrivs': '0', 'Seccomp': '2'}),
     'it runs under a seccomp filter, and none is asked for'),
    ({'namespaces': ['pid', 'net', 'mount', 'user']}, rooted(own=('pid', 'net', 'mount', 'user')), observed(),
     'its user namespace maps "0 0 4294967295", not "0 0 1"'),
], ids=['match', 'command', 'no-net', 'no-fork', 'extra-uts', 'no-proc', 'seats-proc', 'pivoted', 'chrooted',
        'root-unknown', 'hostname', 'workdir', 'env', 'env-extra-ignored', 'capabilities', 'no-new-privs', 'seccomp',
        'uid-map'])
def test_the_first_difference_in_words_a_student_understands(spec_changes, entry, seen, why):
    values = dict(rootfs='/overlay/merged', command=list(TAIL), root_method='chroot')
    values.update(spec_changes)
    spec = container.ContainerSpec.build(**values)
    assert container.adoption_mismatch(spec, entry, seen, SEAT, ALL_CAPS) == why


def test_confinement_and_limits_never_match():
    docker = container.ContainerSpec.build(rootfs='/m', command=list(TAIL), confinement=confine.Confinement.build(
        capabilities=['all'], seccomp='docker'))
    assert container.adoption_mismatch(docker, rooted(), observed(keeps_host_root=False), SEAT, ALL_CAPS) == \
        'a seccomp profile cannot be compared with a running filter'


def candidate(pid, start, mismatch=None, attempt=True):
    return container.Candidate(rooted(pid=pid, start=start), None, mismatch, attempt)


def test_the_oldest_match_is_adopted_and_the_others_replaced():
    old, new, wrong = candidate(10, 1), candidate(11, 2), candidate(12, 3, "shares the seat's network namespace (no --net)")
    adopted, replaced, left = container.adoption_plan([old, new, wrong])
    assert adopted is old
    assert replaced == [(new, 'a second container of the same spec (PID 10 is adopted)')]
    # With a match there, a wrong one is another container sharing the root: left alone.
    assert left == [wrong]


def test_without_a_match_the_wrong_tries_are_replaced_and_other_containers_left():
    wrong = candidate(12, 3, "shares the seat's network namespace (no --net)")
    other = candidate(13, 4, 'runs "sleep 1000", not "tail -f /dev/null"', attempt=False)
    assert container.adoption_plan([wrong, other]) == (None, [(wrong, wrong.mismatch)], [other])
    assert wrong.summary(wrong.mismatch) == {'pid': 12, 'command': list(TAIL),
                                             'why': "shares the seat's network namespace (no --net)"}


def test_an_attempt_runs_the_command_and_is_confined_no_more_than_asked():
    assert container.is_attempt(TALK, rooted(), observed(), ALL_CAPS)
    assert not container.is_attempt(TALK, rooted(cmdline=('sleep', '9')), observed(), ALL_CAPS)
    assert not container.is_attempt(TALK, rooted(), observed(status={'CapBnd': '00000000a80425fb'}), ALL_CAPS)
    assert not container.is_attempt(TALK, rooted(), observed(status={'CapBnd': f'{ALL_CAPS:x}', 'Seccomp': '2'}), ALL_CAPS)


def test_id_maps_lose_their_padding():
    assert container.normalize_id_map('         0     100000      65536\n') == '0 100000 65536'
    assert container.normalize_id_map(None) is None
