"""Class mode's grading: mountinfo samples and process tables in, checks and hints out."""

from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.unboxed.lab.plugins.module_utils import grading
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
TALK = grading.Talk()

ROOT = '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard'
SEAT_TMP = '30 27 0:50 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw,size=65536k'
# As the kernel shows what the talk typed, and the typical mistakes.
RIGHT = ('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
         'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work,uuid=on')
REVERSED = ('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
            'rw,lowerdir=/overlay/lower1-base:/overlay/lower2-file,upperdir=/overlay/upper,workdir=/overlay/work,uuid=on')
READ_ONLY = ('45 27 0:39 / /overlay/merged ro,relatime - overlay overlay '
             'ro,lowerdir=/overlay/lower2-file:/overlay/lower1-base,uuid=on')
ONE_LAYER = ('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
             'rw,lowerdir=/overlay/lower2-file,upperdir=/overlay/upper,workdir=/overlay/work,uuid=on')
OTHER_UPPER = ('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
               'rw,lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/tmp/up,workdir=/tmp/wk,uuid=on')
LAYER_BY_LAYER = ('45 27 0:39 / /overlay/merged rw,relatime - overlay overlay '
                  'rw,lowerdir+=/overlay/lower2-file,lowerdir+=/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work')
TMPFS_AT_MERGED = '45 27 0:41 / /overlay/merged rw,relatime - tmpfs tmpfs rw'
PROC_IN_MERGED = '46 45 0:42 / /overlay/merged/proc rw,nosuid,nodev,noexec,relatime - proc proc rw'

DIRS = {path: grading.PathFacts(True, True, 2049) for path in
        ('/overlay', '/overlay/upper', '/overlay/work', '/overlay/merged', '/overlay/lower1-base', '/overlay/lower2-file')}

SEAT_NS = {'pid': 4026531836, 'net': 4026531840, 'mount': 4026531841, 'uts': 4026531838, 'ipc': 4026531839,
           'user': 4026531837, 'cgroup': 4026531835}


def mounts(*lines):
    return tuple(mountinfo.parse_mountinfo(('\n'.join((ROOT, SEAT_TMP) + lines))))


def view(**changes):
    base = dict(mounts=mounts(RIGHT), paths=dict(DIRS), base_release='13.1', top_layer_names=('file01.txt',),
                top_layer_file='Texto\n', merged_file='Texto\n', merged_tools=('ps', 'ip'), seat_namespaces=SEAT_NS,
                processes=(), image=None)
    base.update(changes)
    return grading.SeatView(**base)


def proc(seat_pid=4242, cmdline=('tail', '-f', '/dev/null'), nspids=(4242, 1), inner=('tail', '-f', '/dev/null'), start=900,
         **namespaces):
    """A process whose root is merged; by default the talk's container (own pid, net and mount namespaces).
    ``namespaces``: inodes that differ from that, e.g. net=SEAT_NS['net'] for one that shares the seat's."""
    own = dict(SEAT_NS, pid=4026532319, net=4026532320, mount=4026532318)
    own.update(namespaces)
    return grading.ProcFacts(pid=seat_pid, start_time=start, cmdline=tuple(cmdline), namespaces=own, nspids=tuple(nspids),
                             inner_pid1=None if inner is None else tuple(inner))


def failed(checks):
    return [check for check in checks if not check.ok]


# --- layers ---

def test_layers_done_with_the_talks_layer():
    checks = grading.grade_layers(view(), TALK)
    assert grading.slide_state(checks) == 'done'
    assert [check.check for check in checks] == [
        '/overlay/lower1-base holds a Debian root file system', '/overlay/lower2-file exists',
        'file01.txt in /overlay/lower2-file says Texto', '/overlay/lower2-file holds file01.txt and nothing else']


def test_layers_missing_directory_is_in_progress_with_mkdir():
    checks = grading.grade_layers(view(top_layer_names=None, top_layer_file=None), TALK)
    assert grading.slide_state(checks) == 'in_progress'  # the base is there
    assert grading.first_hint(checks) == 'Create the layer directory: mkdir -p /overlay/lower2-file'


def test_layers_missing_file_says_the_echo():
    checks = grading.grade_layers(view(top_layer_names=(), top_layer_file=None), TALK)
    assert grading.slide_state(checks) == 'in_progress'
    assert 'echo "Texto" > /overlay/lower2-file/file01.txt' in grading.first_hint(checks)


def test_layers_wrong_content_and_extra_files_are_mistakes():
    checks = grading.grade_layers(view(top_layer_names=('file01.txt', 'notes.txt'), top_layer_file='texto'), TALK)
    assert grading.slide_state(checks) == 'stuck'
    hints = [check.hint for check in failed(checks)]
    assert "file01.txt holds 'texto', the RUN step writes 'Texto\\n'" in hints[0]
    assert hints[1].startswith('/overlay/lower2-file also holds notes.txt: a layer holds only what its step adds')


def test_layers_without_base_says_so():
    checks = grading.grade_layers(view(base_release=None), TALK)
    assert grading.first_hint(checks).startswith('/overlay/lower1-base has no Debian root file system (FROM debian)')


# --- overlay ---

def test_overlay_done_as_the_talk_mounts_it():
    checks = grading.grade_overlay(view(), TALK)
    assert grading.slide_state(checks) == 'done', checks


def test_overlay_layer_by_layer_options_are_the_same_overlay():
    assert grading.slide_state(grading.grade_overlay(view(mounts=mounts(LAYER_BY_LAYER)), TALK)) == 'done'


def test_overlay_reversed_lowerdirs_hint_names_the_top_layer():
    checks = grading.grade_overlay(view(mounts=mounts(REVERSED)), TALK)
    assert grading.slide_state(checks) == 'stuck'
    assert grading.first_hint(checks).startswith(
        'lowerdir order: file01.txt comes from the upper of the two image layers, so lower2-file must be listed first '
        '(lowerdir=/overlay/lower2-file:/overlay/lower1-base)')


def test_overlay_without_upper_and_work_is_read_only():
    checks = grading.grade_overlay(view(mounts=mounts(READ_ONLY)), TALK)
    assert grading.slide_state(checks) == 'stuck'
    assert 'mounted without upperdir and workdir: it is read-only' in grading.first_hint(checks)


def test_overlay_missing_layer_and_other_upper():
    checks = grading.grade_overlay(view(mounts=mounts(ONE_LAYER)), TALK)
    assert '/overlay/lower1-base is missing' in grading.first_hint(checks)
    checks = grading.grade_overlay(view(mounts=mounts(OTHER_UPPER)), TALK)
    assert grading.first_hint(checks).startswith('Use upperdir=/overlay/upper,workdir=/overlay/work as the talk does')


def test_overlay_layers_compared_as_directories_when_typed_otherwise():
    typed = RIGHT.replace('/overlay/lower2-file:', '/overlay/./lower2-file/:').replace('upperdir=/overlay/upper', 'upperdir=/ov/upper')
    checks = grading.grade_overlay(view(mounts=mounts(typed)), TALK,
                                   identical=lambda a, b: (a, b) == ('/ov/upper', '/overlay/upper'))
    assert grading.slide_state(checks) == 'done', checks


def test_overlay_not_mounted_yet():
    checks = grading.grade_overlay(view(mounts=mounts()), TALK)
    assert grading.slide_state(checks) == 'not_started'
    assert grading.first_hint(checks).startswith('Nothing is mounted at /overlay/merged yet: mount -t overlay overlay -o '
                                                 'lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,'
                                                 'workdir=/overlay/work /overlay/merged')


def test_overlay_missing_directories_come_first():
    paths = dict(DIRS)
    del paths['/overlay/work']
    del paths['/overlay/merged']
    checks = grading.grade_overlay(view(mounts=mounts(), paths=paths), TALK)
    assert grading.first_hint(checks).startswith("Create the overlay's directories first: mkdir -p /overlay/work /overlay/merged")


def test_overlay_workdir_on_another_file_system_is_a_mistake():
    paths = dict(DIRS)
    paths['/overlay/work'] = grading.PathFacts(True, True, 43)
    checks = grading.grade_overlay(view(mounts=mounts(), paths=paths), TALK)
    assert grading.slide_state(checks) == 'stuck'
    assert grading.first_hint(checks).startswith('workdir /overlay/work is on another file system than upperdir /overlay/upper')


def test_overlay_other_file_system_at_merged():
    checks = grading.grade_overlay(view(mounts=mounts(TMPFS_AT_MERGED)), TALK)
    assert grading.first_hint(checks).startswith('A tmpfs file system is mounted at /overlay/merged, not an overlay')


def test_overlay_the_last_mount_stacked_counts():
    checks = grading.grade_overlay(view(mounts=mounts(RIGHT, TMPFS_AT_MERGED.replace('45 27', '47 45'))), TALK)
    assert grading.slide_state(checks) == 'stuck'


def test_overlay_merged_not_showing_the_file():
    checks = grading.grade_overlay(view(merged_file=None), TALK)
    assert grading.slide_state(checks) == 'in_progress'
    checks = grading.grade_overlay(view(merged_file='other\n'), TALK)
    assert grading.slide_state(checks) == 'stuck'


# --- chroot ---

def test_chroot_graded_by_what_it_needs():
    assert grading.slide_state(grading.grade_chroot(view(), TALK)) == 'done'
    assert grading.slide_state(grading.grade_chroot(view(mounts=mounts(PROC_IN_MERGED.replace('45', '27', 1), RIGHT)), TALK)) == 'done'
    nothing = grading.grade_chroot(view(mounts=mounts()), TALK)
    assert grading.slide_state(nothing) == 'not_started'
    assert nothing[0].prerequisite
    no_tools = grading.grade_chroot(view(merged_tools=('ip',)), TALK)
    assert grading.slide_state(no_tools) == 'stuck'
    assert grading.first_hint(no_tools).startswith('/overlay/merged has no ps: the Debian base (/overlay/lower1-base) must be one of the lowerdirs')


# --- namespaces: process tables ---

def test_namespaces_the_talks_container_is_done():
    checks = grading.grade_namespaces(view(processes=(proc(),)), TALK)
    assert grading.slide_state(checks) == 'done', [c for c in checks if not c.ok]
    assert checks[2].seen == 'PID 1 inside, PID 4242 on the seat'


def test_namespaces_nothing_running():
    checks = grading.grade_namespaces(view(), TALK)
    assert grading.slide_state(checks) == 'not_started'
    assert grading.first_hint(checks) == ('No container runs on /overlay/merged yet: unshare --fork --pid --net '
                                          '--mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null &')


def test_namespaces_without_net_shares_the_seats_network():
    checks = grading.grade_namespaces(view(processes=(proc(net=SEAT_NS['net']),)), TALK)
    assert grading.slide_state(checks) == 'stuck'
    assert grading.first_hint(checks).startswith("Did you forget --net? The container shares the seat's network namespace "
                                                 "(ip addr inside shows the seat's interfaces): kill 4242")


def test_namespaces_without_fork_stays_in_the_seats_pid_namespace():
    # unshare --pid --net --mount-proc=... chroot ... tail: tail is unshare itself, in the seat's PID namespace, and the
    # /proc it mounted is the seat's.
    no_fork = proc(seat_pid=5495, nspids=(5495,), pid=SEAT_NS['pid'], inner=('/sbin/init',))
    checks = grading.grade_namespaces(view(processes=(no_fork,)), TALK)
    assert grading.slide_state(checks) == 'stuck'
    hint = grading.first_hint(checks)
    assert hint.startswith('Did you forget --fork? tail -f /dev/null runs in the seat\'s PID namespace') and 'kill 5495' in hint


def test_namespaces_without_mount_proc_ps_finds_no_proc():
    checks = grading.grade_namespaces(view(processes=(proc(inner=None),)), TALK)
    assert grading.slide_state(checks) == 'stuck'
    assert grading.first_hint(checks).startswith('Did you forget --mount-proc=/overlay/merged/proc? ps inside the container '
                                                 'finds no /proc ("Error, do this: mount -t proc proc /proc")')


def test_namespaces_proc_of_the_seat_inside():
    checks = grading.grade_namespaces(view(processes=(proc(inner=('/sbin/init', 'splash')),)), TALK)
    assert 'The /proc inside the container is not its own' in grading.first_hint(checks)


def test_namespaces_other_command_and_not_pid_1():
    shell = proc(cmdline=('sh',), inner=('sh',))
    checks = grading.grade_namespaces(view(processes=(shell,)), TALK)
    assert grading.first_hint(checks).startswith('PID 4242 in /overlay/merged runs "sh"; the talk\'s container runs tail -f /dev/null')
    nested = proc(nspids=(4300, 7), inner=('sh',))
    checks = grading.grade_namespaces(view(processes=(nested,)), TALK)
    assert any(check.hint and 'is PID 7 in its namespace, not PID 1' in check.hint for check in checks)


def test_namespaces_the_container_is_found_among_its_own_processes():
    # ps run with nsenter inside the container, and an interactive chroot shell of the seat, beside the container.
    container = proc(seat_pid=4242, start=900)
    ps_inside = proc(seat_pid=4250, cmdline=('ps', 'ax'), nspids=(4250, 3), start=950)
    chroot_shell = proc(seat_pid=4100, cmdline=('bash',), nspids=(4100,), pid=SEAT_NS['pid'], net=SEAT_NS['net'],
                        mount=SEAT_NS['mount'], inner=None, start=800)
    found = grading.find_container(view(processes=(chroot_shell, ps_inside, container)), TALK)
    assert found.pid == 4242
    checks = grading.grade_namespaces(view(processes=(chroot_shell, ps_inside, container)), TALK)
    assert grading.slide_state(checks) == 'done'


def test_namespaces_remounted_root():
    moved = dataclasses_replace(proc(), remounted='its root file system was remounted')
    checks = grading.grade_namespaces(view(processes=(moved,)), TALK)
    assert grading.slide_state(checks) == 'stuck'
    assert 'no longer mounted at /overlay/merged' in grading.first_hint(checks)


def dataclasses_replace(facts, **changes):
    import dataclasses
    return dataclasses.replace(facts, **changes)


def test_namespaces_extra_namespace_types_are_checked():
    talk = grading.Talk(namespaces=('pid', 'net', 'mount', 'uts'))
    checks = grading.grade_namespaces(view(processes=(proc(),)), talk)
    assert grading.first_hint(checks) == "The container shares the seat's uts namespace: add --uts to unshare."
    assert grading.slide_state(grading.grade_namespaces(view(processes=(proc(uts=1),)), talk)) == 'done'


# --- the whole grade and states ---

def test_grade_all_slides():
    graded = grading.grade(view(processes=(proc(),)), TALK, grading.SLIDES)
    assert {slide: result['state'] for slide, result in graded.items()} == {
        'layers': 'done', 'build': 'not_started', 'overlay': 'done', 'chroot': 'done', 'namespaces': 'done',
        'cgroups': 'not_started', 'capabilities': 'not_started', 'seccomp': 'not_started'}
    assert grading.summary_line('overlay', graded['overlay']) == 'overlay: done'
    assert grading.summary_line('build', graded['build']).startswith('build: not started - No image talk:latest')
    assert graded['capabilities']['hint'].startswith('No confined container runs on /overlay/merged yet')


# --- the confined container: cgroups, capabilities, seccomp ---

DOCKER_CAP_EFF = '00000000a80425fb'
ALL_CAPS = '000001ffffffffff'
LIMITS = {'memory': '67108864', 'pids': '64', 'cpu': '50000 100000'}


def confined(seat_pid=5000, recorded='confined', caps=DOCKER_CAP_EFF, seccomp='2', limits=None, start=950, **namespaces):
    facts = proc(seat_pid=seat_pid, nspids=(seat_pid, 1), start=start, uts=11, ipc=12, cgroup=13, **namespaces)
    return dataclasses_replace(facts, recorded=recorded, status={'CapEff': caps, 'Seccomp': seccomp, 'NoNewPrivs': '1'},
                               limits=dict(LIMITS) if limits is None else limits)


def test_confinement_done_on_the_collections_confined_container():
    # Its launcher, unshare, shares its root (pivot_root moved it) and is recorded too; no filter, all capabilities.
    launcher = confined(seat_pid=4999, caps=ALL_CAPS, seccomp='0', limits={}, start=940)
    launcher = dataclasses_replace(launcher, nspids=(4999,), cmdline=('/usr/bin/unshare', '--fork', '--pid'))
    seat = view(processes=(dataclasses_replace(proc(), recorded='talk'), launcher, confined()))
    for grader in (grading.grade_cgroups, grading.grade_capabilities, grading.grade_seccomp):
        checks = grader(seat, TALK)
        assert grading.slide_state(checks) == 'done', checks
    # The confined container is not the talk's: the namespaces slide grades the talk's one.
    assert grading.find_container(seat, TALK).pid == 4242


def test_confined_container_found_without_a_record_beside_the_talks():
    seat = view(processes=(proc(start=900), confined(recorded=None, start=990)))
    assert grading.find_confined(seat, TALK).pid == 5000
    assert grading.find_container(seat, TALK).pid == 4242


def test_confinement_mistakes_and_hints():
    seat = view(processes=(proc(), confined(caps=ALL_CAPS, seccomp='0', limits={'memory': None, 'pids': '64', 'cpu': None})))
    cgroups_checks = grading.grade_cgroups(seat, TALK)
    assert grading.slide_state(cgroups_checks) == 'stuck'
    assert [check.check for check in failed(cgroups_checks)] == ['its cgroup has a memory limit (memory.max)',
                                                                 'its cgroup has a CPU quota (cpu.max)']
    assert grading.first_hint(cgroups_checks).startswith('The confined container (PID 5000) has no memory limit')
    capabilities = grading.grade_capabilities(seat, TALK)
    assert grading.first_hint(capabilities).startswith('The confined container (PID 5000) keeps CAP_SYS_ADMIN')
    assert grading.first_hint(grading.grade_seccomp(seat, TALK)).startswith(
        'The confined container (PID 5000) runs without a seccomp filter')


def test_confinement_slides_wait_for_the_confined_container():
    checks = grading.grade_seccomp(view(processes=(proc(),)), TALK)
    assert grading.slide_state(checks) == 'not_started'
    assert checks[0].prerequisite
    assert grading.slide_state(grading.grade_cgroups(view(processes=(proc(),)), TALK)) == 'not_started'


@pytest.mark.parametrize('oks, mistakes, prerequisites, state', [
    ((True, True), (False, False), (False, False), 'done'),
    ((True, False), (False, True), (False, False), 'stuck'),
    ((True, False), (False, False), (False, False), 'in_progress'),
    ((True, False), (False, False), (True, False), 'not_started'),
    ((False, False), (False, False), (False, False), 'not_started'),
])
def test_slide_state_table(oks, mistakes, prerequisites, state):
    checks = [grading.Check('x', f'c{i}', ok, 'seen', None if ok else 'hint', mistake, prerequisite)
              for i, (ok, mistake, prerequisite) in enumerate(zip(oks, mistakes, prerequisites))]
    assert grading.slide_state(checks) == state


def test_first_hint_puts_a_mistake_before_what_is_missing():
    checks = [grading.Check('x', 'a', False, '', 'missing', False), grading.Check('x', 'b', False, '', 'wrong', True)]
    assert grading.first_hint(checks) == 'wrong'


def test_container_command_is_the_talks():
    assert TALK.container_command == ('unshare --fork --pid --net --mount-proc=/overlay/merged/proc '
                                      'chroot /overlay/merged tail -f /dev/null')


def test_build_graded_from_the_image_store_facts():
    image = grading.ImageFacts(True, 'ab' * 32, ('file01.txt',), 'Texto\n', ('tail', '-f', '/dev/null'))
    assert grading.slide_state(grading.grade_build(view(image=image), TALK)) == 'done'
    changed = grading.ImageFacts(True, 'ab' * 32, ('file01.txt', 'x'), 'Texto\n', ('sh',))
    checks = grading.grade_build(view(image=changed), TALK)
    assert grading.slide_state(checks) == 'stuck'
    assert len(failed(checks)) == 2


def test_the_playbooks_slides_are_the_modules():
    with open(os.path.join(REPO, 'playbooks', 'vars', 'slides.yml'), encoding='utf-8') as handle:
        slides = yaml.safe_load(handle)
    assert all(slide in grading.SLIDES for slide in slides['unboxed_class_slides'])
    assert slides['unboxed_class_slides'] == list(grading.SLIDES)
    assert set(slides['unboxed_class_teardowns']) < set(slides['unboxed_class_slides'])
