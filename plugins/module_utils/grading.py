# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Class mode: grade a slide of the talk from what the kernel shows, whoever made it.

A student types ``mount -t overlay ...`` and ``unshare ...`` by hand; the collection's modules do the same for
the instructor. Grading looks only at the result - mountinfo, /proc, the layer directories - never at a state
file of the collection, and changes nothing. ``observe()`` reads the seat once into a ``SeatView``; the
``grade_*`` functions are pure: a view in, a list of ``Check`` out, each failed one with a hint in the words of
the talk. The unit tests feed them mountinfo samples and process tables.
"""

from __future__ import annotations

import dataclasses
import os

from ansible_collections.unboxed.lab.plugins.module_utils import cgroups
from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import image_store
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import process

# The talk's slides, in the order a class goes through them (playbooks/vars/slides.yml lists the same names with
# their roles).
SLIDES = ('layers', 'build', 'overlay', 'chroot', 'namespaces', 'cgroups', 'capabilities', 'seccomp')
NOT_GRADED = ()
CONFINEMENT_SLIDES = ('cgroups', 'capabilities', 'seccomp')
# The limits the cgroups slide sets, as the cgroup files of each version name them.
LIMIT_FILES = {'memory': {2: 'memory.max', 1: 'memory.limit_in_bytes'}, 'pids': {2: 'pids.max', 1: 'pids.max'},
               'cpu': {2: 'cpu.max', 1: 'cpu.cfs_quota_us'}}
# What a v1 memory.limit_in_bytes holds when nothing was set (PAGE_COUNTER_MAX pages).
V1_UNLIMITED_MEMORY = 9223372036854771712

# What a slide's state means on the class board.
DONE, IN_PROGRESS, STUCK, NOT_STARTED, NOT_GRADED_STATE = 'done', 'in_progress', 'stuck', 'not_started', 'not_graded'
STATES = (DONE, IN_PROGRESS, STUCK, NOT_STARTED, NOT_GRADED_STATE)

# Where ps and ip may live in a Debian root (usrmerge or not).
TOOL_DIRS = ('usr/bin', 'bin', 'usr/sbin', 'sbin')


@dataclasses.dataclass(frozen=True)
class Talk:
    """The talk's paths and command, as the roles' defaults have them."""

    root: str = '/overlay'
    lowerdirs: tuple = ('/overlay/lower2-file', '/overlay/lower1-base')
    upperdir: str = '/overlay/upper'
    workdir: str = '/overlay/work'
    merged: str = '/overlay/merged'
    file_name: str = 'file01.txt'
    file_content: str = 'Texto\n'
    command: tuple = ('tail', '-f', '/dev/null')
    namespaces: tuple = ('pid', 'net', 'mount')
    mount_proc: bool = True
    store: str = '/var/lib/unboxed'
    image: str = 'talk:latest'
    container_name: str = 'talk'       # ns_container's name of the talk's container (namespaces slide)
    confined_name: str = 'confined'    # and of the confined one (cgroups, capabilities, seccomp slides)

    @property
    def mount_command(self) -> str:
        return (f'mount -t overlay overlay -o lowerdir={":".join(self.lowerdirs)},upperdir={self.upperdir},'
                f'workdir={self.workdir} {self.merged}')

    @property
    def container_command(self) -> str:
        spec = container.ContainerSpec.build(rootfs=self.merged, command=self.command, namespaces=self.namespaces,
                                             mount_proc=self.mount_proc, root_method='chroot')
        return container.shell_command(spec)


@dataclasses.dataclass(frozen=True)
class PathFacts:
    exists: bool
    is_dir: bool = False
    device: int | None = None


@dataclasses.dataclass(frozen=True)
class ProcFacts:
    """A process whose root directory is the merged directory: a container candidate."""

    pid: int
    start_time: int
    cmdline: tuple
    namespaces: dict        # {'pid': inode, 'net': inode, 'mount': inode, ...}
    nspids: tuple           # NSpid: the PID in each nested pid namespace, the seat's first
    inner_pid1: tuple | None  # what /proc/1/cmdline shows from inside its root; None: no /proc there
    remounted: str | None = None  # container.root_remounted_problem
    recorded: str | None = None   # the name ns_container records it under, if it started it
    status: dict = dataclasses.field(default_factory=dict)  # CapEff, NoNewPrivs, Seccomp of /proc/PID/status
    limits: dict = dataclasses.field(default_factory=dict)  # memory, pids, cpu: its cgroup's limit, None if none


@dataclasses.dataclass(frozen=True)
class ImageFacts:
    found: bool
    image_id: str = ''
    top_layer_names: tuple = ()
    top_layer_file: str | None = None
    cmd: tuple | None = None


@dataclasses.dataclass(frozen=True)
class SeatView:
    """What grading reads of a seat, read once."""

    mounts: tuple = ()
    paths: dict = dataclasses.field(default_factory=dict)   # path -> PathFacts
    base_release: str | None = None                         # lower1-base/etc/debian_version
    top_layer_names: tuple | None = None                    # entries of lowerdirs[0]; None: no directory
    top_layer_file: str | None = None                       # lowerdirs[0]/file_name
    merged_file: str | None = None                          # merged/file_name
    merged_tools: tuple = ()                                 # which of ps, ip the merged root holds
    seat_namespaces: dict = dataclasses.field(default_factory=dict)
    processes: tuple = ()                                    # ProcFacts
    image: ImageFacts | None = None


@dataclasses.dataclass(frozen=True)
class Check:
    slide: str
    check: str            # what the talk shows
    ok: bool
    seen: str             # what was found
    hint: str | None = None
    mistake: bool = False  # something is there but wrong (stuck), not merely missing yet (in progress)
    prerequisite: bool = False  # belongs to an earlier slide; does not count as starting this one

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _ok(slide, check, seen, prerequisite=False):
    return Check(slide, check, True, seen, prerequisite=prerequisite)


def _fail(slide, check, seen, hint, mistake=False, prerequisite=False):
    return Check(slide, check, False, seen, hint, mistake, prerequisite)


def slide_state(checks: list[Check]) -> str:
    """done when every check holds; stuck on a mistake; in progress once a check of the slide's own work holds."""
    if all(check.ok for check in checks):
        return DONE
    if any(check.mistake and not check.ok for check in checks):
        return STUCK
    if any(check.ok and not check.prerequisite for check in checks):
        return IN_PROGRESS
    return NOT_STARTED


def first_hint(checks: list[Check]) -> str | None:
    """The hint a student should read first: a mistake before something missing, in check order."""
    failed = [check for check in checks if not check.ok]
    failed.sort(key=lambda check: not check.mistake)
    return failed[0].hint if failed else None


def _text(value: str | None) -> str:
    return 'nothing' if value is None else repr(value)


# --- layers -------------------------------------------------------------------------------------------------

def grade_layers(view: SeatView, talk: Talk) -> list[Check]:
    slide = 'layers'
    top, base = talk.lowerdirs[0], talk.lowerdirs[-1]
    checks = []
    if view.base_release:
        checks.append(_ok(slide, f'{base} holds a Debian root file system', f'Debian {view.base_release}'))
    else:
        checks.append(_fail(slide, f'{base} holds a Debian root file system', 'no etc/debian_version',
                            f'{base} has no Debian root file system (FROM debian): ask for it to be put in place '
                            f'(prepare.yml -e slide=layers does it).'))
    wanted = talk.file_content
    if view.top_layer_names is None:
        checks.append(_fail(slide, f'{top} exists', 'no such directory', f'Create the layer directory: mkdir -p {top}'))
        return checks
    checks.append(_ok(slide, f'{top} exists', 'a directory'))
    echo = f'echo "{wanted.rstrip(chr(10))}" > {top}/{talk.file_name}'
    if view.top_layer_file is None:
        checks.append(_fail(slide, f'{talk.file_name} in {top} says {wanted.strip()}', f'no {talk.file_name}',
                            f'Write the layer\'s file, as the Dockerfile\'s RUN does: {echo}'))
    elif view.top_layer_file != wanted:
        checks.append(_fail(slide, f'{talk.file_name} in {top} says {wanted.strip()}', _text(view.top_layer_file),
                            f'{talk.file_name} holds {_text(view.top_layer_file)}, the RUN step writes {wanted!r} '
                            f'(echo adds the newline): {echo}', mistake=True))
    else:
        checks.append(_ok(slide, f'{talk.file_name} in {top} says {wanted.strip()}', repr(wanted)))
    extra = sorted(set(view.top_layer_names) - {talk.file_name})
    if extra:
        checks.append(_fail(slide, f'{top} holds {talk.file_name} and nothing else', ', '.join(sorted(view.top_layer_names)),
                            f'{top} also holds {", ".join(extra)}: a layer holds only what its step adds (RUN echo '
                            f'writes {talk.file_name} alone). Remove the rest.', mistake=True))
    elif view.top_layer_names:
        checks.append(_ok(slide, f'{top} holds {talk.file_name} and nothing else', talk.file_name))
    return checks


# --- build --------------------------------------------------------------------------------------------------

def grade_build(view: SeatView, talk: Talk) -> list[Check]:
    slide = 'build'
    image = view.image or ImageFacts(found=False)
    build = 'ansible-playbook site.yml --tags build (docker build by hand)'
    if not image.found:
        return [_fail(slide, f'the image {talk.image} is in {talk.store}', 'no such image',
                      f'No image {talk.image} in {talk.store} yet: build it with {build}.')]
    checks = [_ok(slide, f'the image {talk.image} is in {talk.store}', image.image_id[:12])]
    if image.top_layer_file == talk.file_content and set(image.top_layer_names) == {talk.file_name}:
        checks.append(_ok(slide, f'the RUN layer holds {talk.file_name} and nothing else', talk.file_name))
    else:
        checks.append(_fail(slide, f'the RUN layer holds {talk.file_name} and nothing else',
                            ', '.join(image.top_layer_names) or 'nothing',
                            f'The image\'s top layer should hold {talk.file_name} saying {talk.file_content.strip()}: '
                            f'was the Dockerfile changed? Build it again with {build}.', mistake=True))
    if image.cmd == talk.command:
        checks.append(_ok(slide, f'the image\'s CMD is {" ".join(talk.command)}', ' '.join(image.cmd)))
    else:
        checks.append(_fail(slide, f'the image\'s CMD is {" ".join(talk.command)}',
                            'no CMD' if image.cmd is None else ' '.join(image.cmd),
                            f'The image\'s CMD is not the talk\'s: the Dockerfile ends with CMD {" ".join(talk.command)}.',
                            mistake=True))
    return checks


# --- overlay ------------------------------------------------------------------------------------------------

def _same(shown: str, wanted: str, identical) -> bool:
    return os.path.normpath(shown) == os.path.normpath(wanted) or identical(shown, wanted)


def _not_mounted_hint(view: SeatView, talk: Talk) -> tuple[str, bool]:
    """Why nothing is mounted yet, as far as the directories tell: (hint, whether it is a mistake)."""
    missing = [path for path in (talk.upperdir, talk.workdir, talk.merged)
               if not view.paths.get(path, PathFacts(False)).exists]
    if missing:
        return (f'Create the overlay\'s directories first: mkdir -p {" ".join(missing)}; then {talk.mount_command}', False)
    upper, work = view.paths[talk.upperdir], view.paths[talk.workdir]
    if upper.device is not None and work.device is not None and upper.device != work.device:
        return (f'workdir {talk.workdir} is on another file system than upperdir {talk.upperdir}: overlayfs needs '
                f'both on the same one (the kernel refuses the mount). Use a workdir beside the upper layer.', True)
    return (f'Nothing is mounted at {talk.merged} yet: {talk.mount_command} (with upperdir, workdir too: without '
            f'workdir the kernel refuses an upper layer)', False)


def overlay_entry(view: SeatView, talk: Talk):
    return mountinfo.find_mount(talk.merged, list(view.mounts))


def grade_overlay(view: SeatView, talk: Talk, identical=lambda a, b: False) -> list[Check]:
    """``identical(shown, wanted)``: whether two layer paths name the same directory (a student may type relative
    or symlinked paths; the kernel shows them as typed)."""
    slide = 'overlay'
    entry = overlay_entry(view, talk)
    what = f'an overlay is mounted at {talk.merged}'
    if entry is None:
        hint, mistake = _not_mounted_hint(view, talk)
        return [_fail(slide, what, 'nothing mounted', hint, mistake)]
    if entry.fstype != 'overlay':
        return [_fail(slide, what, f'a {entry.fstype} file system', f'A {entry.fstype} file system is mounted at '
                      f'{talk.merged}, not an overlay: umount {talk.merged}, then {talk.mount_command}', True)]
    checks = [_ok(slide, what, 'overlay')]
    layers = mountinfo.overlay_layers(entry)
    shown = layers['lowerdirs']
    wanted = list(talk.lowerdirs)
    order = f'lowerdir={":".join(wanted)}'
    check = f'the lower layers are {", ".join(os.path.basename(d) for d in wanted)}, top first'
    seen = 'lowerdir=' + ':'.join(shown)
    same_order = len(shown) == len(wanted) and all(_same(a, b, identical) for a, b in zip(shown, wanted))
    if same_order:
        checks.append(_ok(slide, check, seen))
    elif len(shown) == len(wanted) and all(_same(a, b, identical) for a, b in zip(shown, reversed(wanted))):
        checks.append(_fail(slide, check, seen, (
            f'lowerdir order: {talk.file_name} comes from the upper of the two image layers, so '
            f'{os.path.basename(wanted[0])} must be listed first ({order}); the first lowerdir is the top layer. '
            f'umount {talk.merged} and mount again.'), True))
    else:
        absent = [d for d in wanted if not any(_same(s, d, identical) for s in shown)]
        unknown = [s for s in shown if not any(_same(s, d, identical) for d in wanted)]
        detail = []
        if absent:
            detail.append(f'{", ".join(absent)} {"is" if len(absent) == 1 else "are"} missing')
        if unknown:
            detail.append(f'{", ".join(unknown)} {"is" if len(unknown) == 1 else "are"} not a layer of the talk')
        checks.append(_fail(slide, check, seen, f'The lower layers differ from the talk\'s ({"; ".join(detail) or "order"}): '
                            f'umount {talk.merged} and mount with {order}.', True))
    check = f'upperdir is {talk.upperdir} and workdir {talk.workdir}'
    upper, work = layers['upperdir'], layers['workdir']
    seen = f'upperdir={upper or "none"}, workdir={work or "none"}'
    if upper is None:
        checks.append(_fail(slide, check, seen, (
            f'The overlay was mounted without upperdir and workdir: it is read-only, every write in {talk.merged} '
            f'fails. umount {talk.merged} and add upperdir={talk.upperdir},workdir={talk.workdir}.'), True))
    elif _same(upper, talk.upperdir, identical) and work and _same(work, talk.workdir, identical):
        checks.append(_ok(slide, check, seen))
    else:
        checks.append(_fail(slide, check, seen, f'Use upperdir={talk.upperdir},workdir={talk.workdir} as the talk '
                            f'does: umount {talk.merged} and mount again.', True))
    check = f'{talk.merged}/{talk.file_name} says {talk.file_content.strip()}'
    if view.merged_file == talk.file_content:
        checks.append(_ok(slide, check, repr(view.merged_file)))
    else:
        checks.append(_fail(slide, check, _text(view.merged_file), (
            f'{talk.merged} does not show {talk.file_name} from {wanted[0]}: is that layer in lowerdir, and does it '
            f'hold the file? A layer changed under a mounted overlay shows undefined results: umount and mount again.'),
            view.merged_file is not None))
    return checks


# --- chroot -------------------------------------------------------------------------------------------------

def grade_chroot(view: SeatView, talk: Talk) -> list[Check]:
    """chroot leaves nothing behind in the kernel: the slide is graded by what it needs, the merged root with the
    talk's tools, on the overlay of the slide before."""
    slide = 'chroot'
    entry = overlay_entry(view, talk)
    if entry is None or entry.fstype != 'overlay':
        return [_fail(slide, f'the overlay is mounted at {talk.merged} (previous slide)', 'nothing mounted',
                      f'The chroot needs the overlay of the previous slide at {talk.merged}: {talk.mount_command}',
                      prerequisite=True)]
    checks = [_ok(slide, f'the overlay is mounted at {talk.merged} (previous slide)', 'overlay', prerequisite=True)]
    missing = [tool for tool in ('ps', 'ip') if tool not in view.merged_tools]
    check = f'{talk.merged} holds ps and ip for chroot {talk.merged} ps ax / ip addr'
    if missing:
        checks.append(_fail(slide, check, f'missing: {", ".join(missing)}', (
            f'{talk.merged} has no {" or ".join(missing)}: the Debian base ({talk.lowerdirs[-1]}) must be one of the '
            f'lowerdirs (then: mount -t proc proc {talk.merged}/proc; chroot {talk.merged} ps ax)'), True))
    else:
        checks.append(_ok(slide, check, 'ps, ip'))
    return checks


# --- namespaces ---------------------------------------------------------------------------------------------

def _candidate_rank(facts: ProcFacts, talk: Talk, seat: dict) -> tuple:
    return (tuple(facts.cmdline) == tuple(talk.command), facts.nspids[-1:] == (1,),
            facts.namespaces.get('pid') != seat.get('pid'), -facts.start_time)


def find_container(view: SeatView, talk: Talk) -> ProcFacts | None:
    """The process that best looks like the talk's container among those whose root is the merged directory:
    running the talk's command, PID 1 of a PID namespace of its own, the newest first."""
    # The collection's confined container (the cgroups slide) runs on the same root: it is not this slide's.
    candidates = [facts for facts in view.processes if facts.recorded in (None, talk.container_name)]
    if not candidates:
        return None
    # The namespace's PID 1, not a process it started (ps, a shell of nsenter).
    outermost = [facts for facts in candidates if facts.nspids[-1:] == (1,)] or candidates
    return max(outermost, key=lambda facts: _candidate_rank(facts, talk, view.seat_namespaces))


def grade_namespaces(view: SeatView, talk: Talk) -> list[Check]:
    slide = 'namespaces'
    command = ' '.join(talk.command)
    found = find_container(view, talk)
    check = f'a process runs with {talk.merged} as its root'
    if found is None:
        return [_fail(slide, check, 'none', f'No container runs on {talk.merged} yet: {talk.container_command} &')]
    seat_pid = f'PID {found.pid}'
    checks = [_ok(slide, check, f'{seat_pid}: {" ".join(found.cmdline)}')]
    check = f'it runs {command}'
    if tuple(found.cmdline) == tuple(talk.command):
        checks.append(_ok(slide, check, command))
    else:
        checks.append(_fail(slide, check, ' '.join(found.cmdline), (
            f'{seat_pid} in {talk.merged} runs "{" ".join(found.cmdline)}"; the talk\'s container runs {command} '
            f'(the Dockerfile\'s CMD): {talk.container_command} &'), True))
    seat = view.seat_namespaces
    if 'pid' in talk.namespaces:
        check = 'it is PID 1 of a PID namespace of its own'
        inner = found.nspids[-1] if found.nspids else None
        if found.namespaces.get('pid') == seat.get('pid'):
            checks.append(_fail(slide, check, f'the seat\'s PID namespace ({seat_pid} there)', (
                f'Did you forget --fork? {command} runs in the seat\'s PID namespace: unshare --pid moves only the '
                f'processes it starts into the new namespace, not itself. Stop it (kill {found.pid}) and start it '
                f'again: {talk.container_command} &'), True))
        elif inner != 1:
            checks.append(_fail(slide, check, f'PID {inner} inside', (
                f'{command} is PID {inner} in its namespace, not PID 1: start it as unshare\'s own child, '
                f'{talk.container_command} &'), True))
        else:
            checks.append(_ok(slide, check, f'PID 1 inside, {seat_pid} on the seat'))
    if 'net' in talk.namespaces:
        check = 'it has a network namespace of its own (only lo)'
        if found.namespaces.get('net') == seat.get('net'):
            checks.append(_fail(slide, check, 'the seat\'s network namespace', (
                f'Did you forget --net? The container shares the seat\'s network namespace (ip addr inside shows the '
                f'seat\'s interfaces): kill {found.pid} and start it again: {talk.container_command} &'), True))
        else:
            checks.append(_ok(slide, check, 'its own'))
    for other in ('uts', 'ipc', 'user', 'cgroup'):
        if other in talk.namespaces:
            check = f'it has a {other} namespace of its own'
            if found.namespaces.get(other) == seat.get(other):
                checks.append(_fail(slide, check, f'the seat\'s {other} namespace',
                                    f'The container shares the seat\'s {other} namespace: add --{other} to unshare.', True))
            else:
                checks.append(_ok(slide, check, 'its own'))
    if talk.mount_proc:
        check = f'ps inside sees its own processes ({command} is PID 1 of its /proc)'
        mount_proc = f'--mount-proc={talk.merged}/proc'
        if found.inner_pid1 is None:
            checks.append(_fail(slide, check, 'no /proc inside', (
                f'Did you forget {mount_proc}? ps inside the container finds no /proc ("Error, do this: mount -t proc '
                f'proc /proc"): kill {found.pid} and start it again: {talk.container_command} &'), True))
        elif tuple(found.inner_pid1) != tuple(found.cmdline):
            checks.append(_fail(slide, check, f'PID 1 of its /proc is "{" ".join(found.inner_pid1)}"', (
                f'The /proc inside the container is not its own: ps shows the seat\'s processes (PID 1 is '
                f'"{" ".join(found.inner_pid1)}"). {mount_proc} mounts a /proc of the new PID namespace - with --fork '
                f'and --pid: {talk.container_command} &'), True))
        else:
            checks.append(_ok(slide, check, f'PID 1 is {command}'))
    if found.remounted:
        checks.append(_fail(slide, f'it runs on the overlay mounted at {talk.merged} now', 'an older mount',
                            f'The container runs on an overlay that is no longer mounted at {talk.merged} ({found.remounted}). '
                            f'kill {found.pid} and start it again.', True))
    return checks


# --- cgroups, capabilities, seccomp: the second, confined container ----------------------------------------

def find_confined(view: SeatView, talk: Talk) -> ProcFacts | None:
    """The confined container: the one ns_container records as such, else another PID 1 on the merged root than the
    talk's container, one with a cgroup namespace of its own first (a hand-made one)."""
    # Its PID 1, not its launcher: unshare, recorded beside it, whose root pivot_root moved along.
    recorded = [facts for facts in view.processes if facts.recorded == talk.confined_name and facts.nspids[-1:] == (1,)]
    if recorded:
        return recorded[0]
    talks = find_container(view, talk)
    others = [facts for facts in view.processes if facts.nspids[-1:] == (1,) and facts is not talks
              and facts.recorded in (None, talk.confined_name)]
    if not others:
        return None
    seat = view.seat_namespaces
    return max(others, key=lambda facts: (facts.namespaces.get('cgroup') != seat.get('cgroup'), -facts.start_time))


def _confined_or_missing(view: SeatView, talk: Talk, slide: str):
    found = find_confined(view, talk)
    if found is None:
        return None, [_fail(slide, f'a second, confined container runs on {talk.merged}', 'none', (
            f'No confined container runs on {talk.merged} yet: the cgroups slide starts it (ansible-playbook site.yml '
            f'--tags cgroups, or by hand with its setup commands and unshare).'), prerequisite=slide != 'cgroups')]
    return found, [_ok(slide, f'a second, confined container runs on {talk.merged}', f'PID {found.pid}',
                       prerequisite=slide != 'cgroups')]


def grade_cgroups(view: SeatView, talk: Talk) -> list[Check]:
    slide = 'cgroups'
    found, checks = _confined_or_missing(view, talk, slide)
    if found is None:
        return checks
    words = {'memory': 'a memory limit (memory.max)', 'pids': 'a limit on its processes (pids.max)',
             'cpu': 'a CPU quota (cpu.max)'}
    for limit, what in words.items():
        value = found.limits.get(limit)
        if value:
            checks.append(_ok(slide, f'its cgroup has {what}', value))
        else:
            checks.append(_fail(slide, f'its cgroup has {what}', 'none', (
                f'The confined container (PID {found.pid}) has no {limit} limit: write it into its cgroup before '
                f'starting it (e.g. echo 64M > /sys/fs/cgroup/unboxed-{talk.confined_name}/memory.max, '
                f'echo 64 > .../pids.max, echo "50000 100000" > .../cpu.max), then echo $$ > .../cgroup.procs.'), True))
    return checks


def grade_capabilities(view: SeatView, talk: Talk) -> list[Check]:
    slide = 'capabilities'
    found, checks = _confined_or_missing(view, talk, slide)
    if found is None:
        return checks
    mask_text = found.status.get('CapEff')
    check = 'its root has no CAP_SYS_ADMIN (cannot mount), as in docker run'
    try:
        mask = int(mask_text, 16)
    except (TypeError, ValueError):
        return checks + [_fail(slide, check, 'unreadable', f'Could not read the capabilities of PID {found.pid}.')]
    names = confine.names_of_mask(mask)
    if 'CAP_SYS_ADMIN' in names:
        checks.append(_fail(slide, check, f'CapEff {mask_text}: {len(names)} capabilities, CAP_SYS_ADMIN among them', (
            f'The confined container (PID {found.pid}) keeps CAP_SYS_ADMIN: root inside can mount, as in the talk\'s '
            f'container. Start it with Docker\'s 14 capabilities (ns_container capabilities: docker).'), True))
    else:
        checks.append(_ok(slide, check, f'CapEff {mask_text}: {len(names)} capabilities'))
    return checks


def grade_seccomp(view: SeatView, talk: Talk) -> list[Check]:
    slide = 'seccomp'
    found, checks = _confined_or_missing(view, talk, slide)
    if found is None:
        return checks
    mode = found.status.get('Seccomp')
    check = 'a seccomp filter confines it (Seccomp: 2)'
    if mode == '2':
        checks.append(_ok(slide, check, 'filter mode'))
    else:
        checks.append(_fail(slide, check, f'Seccomp: {mode or "unreadable"}', (
            f'The confined container (PID {found.pid}) runs without a seccomp filter: start it with Docker\'s '
            f'profile (ns_container seccomp: docker).'), True))
    return checks


GRADERS = {
    'layers': grade_layers,
    'build': grade_build,
    'overlay': grade_overlay,
    'chroot': grade_chroot,
    'namespaces': grade_namespaces,
    'cgroups': grade_cgroups,
    'capabilities': grade_capabilities,
    'seccomp': grade_seccomp,
}


def grade(view: SeatView, talk: Talk, slides, identical=lambda a, b: False) -> dict:
    """{slide: {state, hint, checks}} for each slide asked."""
    graded = {}
    for slide in slides:
        if slide in NOT_GRADED:
            graded[slide] = {'state': NOT_GRADED_STATE, 'hint': None, 'checks': [],
                             'msg': f'the {slide} slide is not graded yet'}
            continue
        if slide == 'overlay':
            checks = grade_overlay(view, talk, identical)
        else:
            checks = GRADERS[slide](view, talk)
        graded[slide] = {'state': slide_state(checks), 'hint': first_hint(checks),
                         'checks': [check.to_dict() for check in checks]}
    return graded


def summary_line(slide: str, graded: dict) -> str:
    state = graded['state'].replace('_', ' ')
    return f'{slide}: {state} - {graded["hint"]}' if graded.get('hint') and graded['state'] != DONE else f'{slide}: {state}'


def container_summary(facts: ProcFacts, seat: dict) -> dict:
    """A container candidate as the module returns it (PIDs as the seat sees them)."""
    return {
        'pid': facts.pid,
        'recorded': facts.recorded,
        'start_time': facts.start_time,
        'command': list(facts.cmdline),
        'pid_inside': facts.nspids[-1] if facts.nspids else None,
        'isolated': [name for name, inode in sorted(facts.namespaces.items()) if inode != seat.get(name)],
    }


# --- reading the seat (the only part that touches the system, read-only) ------------------------------------

def _path_facts(path: str) -> PathFacts:
    try:
        status = os.stat(path)
    except OSError:
        return PathFacts(False)
    return PathFacts(True, os.path.isdir(path), status.st_dev)


def _read_text(path: str, limit: int = 4096) -> str | None:
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            return handle.read(limit)
    except OSError:
        return None


def _list_dir(path: str) -> tuple | None:
    try:
        return tuple(sorted(os.listdir(path)))
    except OSError:
        return None


def _cgroup_limits(pid: int, host, proc: str) -> dict:
    """The memory, pids and cpu limits of the cgroup ``pid`` is in, as its files hold them; None where unlimited."""
    try:
        with open(f'{proc}/{pid}/cgroup', encoding='utf-8', errors='replace') as handle:
            lines = cgroups.parse_proc_cgroup(handle.read())
    except OSError:
        return {}
    limits = {}
    for limit, files in LIMIT_FILES.items():
        hierarchy = host.hierarchy_for(limit) if host else None
        if hierarchy is None:
            continue
        path = next((path for hierarchy_id, controllers, path in lines
                     if (hierarchy.version == 2 and hierarchy_id == 0) or (hierarchy.version == 1 and limit in controllers)),
                    None)
        directory = hierarchy.directory_of(path) if path else None
        words = cgroups.read_words(os.path.join(directory, files[hierarchy.version])) if directory else None
        value = ' '.join(words) if words else None
        if value is None or value.startswith('max') or value == '-1' or value == str(V1_UNLIMITED_MEMORY):
            value = None
        limits[limit] = value
    return limits


def processes_rooted_at(directory: str, proc: str = process.PROC) -> list[ProcFacts]:
    """Every live process whose root directory is ``directory`` (container.processes_rooted_at, the one /proc scan),
    with what grading needs to know of it: which record of ns_container names it, its confinement and limits."""
    found = []
    rooted = container.processes_rooted_at(directory, proc)
    if not rooted:
        return found
    recorded = container.recorded_containers(proc=proc)
    try:
        host = cgroups.detect_host()
    except (OSError, ValueError):
        host = None
    for entry in rooted:
        found.append(ProcFacts(
            pid=entry.pid, start_time=entry.start_time, cmdline=entry.cmdline, namespaces=entry.namespaces,
            nspids=entry.nspids, inner_pid1=entry.inner_pid1, remounted=entry.remounted,
            recorded=recorded.get((entry.pid, entry.start_time)),
            status=confine.read_status_fields(entry.pid, proc),
            limits=_cgroup_limits(entry.pid, host, proc),
        ))
    return found


def _image_facts(talk: Talk) -> ImageFacts:
    store = image_store.Store(talk.store)
    image_id = store.tags().get(talk.image)
    document = store.image(image_id) if isinstance(image_id, str) else None
    if not document:
        return ImageFacts(found=False)
    summary = image_store.image_summary(store, image_id)
    top = summary['lowerdirs'][0] if summary['lowerdirs'] else None
    names = _list_dir(top) if top else None
    cmd = summary['config'].get('Cmd')
    return ImageFacts(found=True, image_id=image_id, top_layer_names=names or (),
                      top_layer_file=_read_text(os.path.join(top, talk.file_name)) if top else None,
                      cmd=tuple(cmd) if isinstance(cmd, list) else None)


def observe(talk: Talk, slides, proc: str = process.PROC) -> SeatView:
    """Read what grading ``slides`` needs from this seat. Reads only."""
    slides = set(slides)
    top = talk.lowerdirs[0]
    tools = ()
    if 'chroot' in slides:
        tools = tuple(tool for tool in ('ps', 'ip')
                      if any(os.path.exists(os.path.join(talk.merged, directory, tool)) for directory in TOOL_DIRS))
    release = _read_text(os.path.join(talk.lowerdirs[-1], 'etc', 'debian_version'))
    return SeatView(
        mounts=tuple(mountinfo.read_mountinfo()),
        paths={path: _path_facts(path) for path in (talk.root, talk.upperdir, talk.workdir, talk.merged) + tuple(talk.lowerdirs)},
        base_release=release.strip() if release else None,
        top_layer_names=_list_dir(top),
        top_layer_file=_read_text(os.path.join(top, talk.file_name)),
        merged_file=_read_text(os.path.join(talk.merged, talk.file_name)),
        merged_tools=tools,
        seat_namespaces=container.namespaces_of('self', proc),
        processes=tuple(processes_rooted_at(talk.merged, proc)) if slides & {'namespaces', *CONFINEMENT_SLIDES} else (),
        image=_image_facts(talk) if 'build' in slides else None,
    )


def same_directory(first: str, second: str) -> bool:
    """Whether two paths name the same directory on this seat (device and inode)."""
    try:
        one, two = os.stat(first), os.stat(second)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)
