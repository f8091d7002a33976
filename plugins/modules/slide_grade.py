#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slide_grade
short_description: Grade a slide of the talk on a seat from the kernel's state, with a hint for each failed check
version_added: 0.3.0
description:
  - Class mode. The students type the talk's commands themselves (C(mkdir -p /overlay/...), C(mount -t overlay ...),
    C(unshare --fork --pid --net --mount-proc=... chroot ... tail -f /dev/null &)); this module looks at the result,
    whoever made it - a student's hand-typed commands or the collection's modules - and says per check whether it
    holds and, when it does not, what to do, in the words of the talk.
  - It reads only what the kernel shows - C(/proc/self/mountinfo), C(/proc) (a process whose root is the merged
    directory, its pid and net namespaces, what C(/proc/1) shows from inside its root), the layer directories and the
    image store - never a state file of the collection. It changes nothing, so C(changed) is always false and check
    mode runs the same grading.
  - "Each slide gets a state: C(done) (every check holds), C(stuck) (something is there but wrong: lowerdirs reversed,
    a container without C(--net)...), C(in_progress) (part of the slide is there, nothing wrong yet) or
    C(not_started)."
  - "The confinement slides (C(cgroups), C(capabilities), C(seccomp)) grade the second, confined container on the
    same root: its cgroup's memory, pids and CPU limits, no C(CAP_SYS_ADMIN) in its effective capabilities, a seccomp
    filter. The state files of M(unboxed.lab.ns_container) only tell which running container is the confined one."
  - The C(chroot) slide leaves nothing in the kernel; it is graded by what it needs (the overlay of the previous
    slide, C(ps) and C(ip) in the merged root).
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  slide:
    description:
      - The slide to grade, or V(all) for every slide in one round trip (the class board does that).
    type: str
    default: all
    choices: [all, layers, build, overlay, chroot, namespaces, cgroups, capabilities, seccomp]
  root:
    description: The lab's directory; the other paths default to the talk's layout below it.
    type: path
    default: /overlay
  lowerdirs:
    description: The image's layers, top first, as C(lowerdir=) takes them. Default C(ROOT/lower2-file), C(ROOT/lower1-base).
    type: list
    elements: path
  upperdir:
    description: The container's writable layer. Default C(ROOT/upper).
    type: path
  workdir:
    description: overlayfs' work directory. Default C(ROOT/work).
    type: path
  merged:
    description: Where the overlay is mounted, the container's root. Default C(ROOT/merged).
    type: path
  file_name:
    description: The file the Dockerfile's RUN step writes into the top layer.
    type: str
    default: file01.txt
  file_content:
    description: What that file holds.
    type: str
    default: "Texto\n"
  command:
    description: The container's PID 1, the Dockerfile's CMD.
    type: list
    elements: str
    default: [tail, -f, /dev/null]
  namespaces:
    description: The namespaces the container must have of its own.
    type: list
    elements: str
    choices: [pid, net, mount, uts, ipc, user, cgroup]
    default: [pid, net, mount]
  mount_proc:
    description: Whether the container must see a C(/proc) of its own (C(--mount-proc)).
    type: bool
    default: true
  store:
    description: The image store of the build slide.
    type: path
    default: /var/lib/unboxed
  image:
    description: The image the build slide makes.
    type: str
    default: talk:latest
  container_name:
    description: The name M(unboxed.lab.ns_container) gives the talk's container (role C(namespaces)).
    type: str
    default: talk
  confined_name:
    description: The name M(unboxed.lab.ns_container) gives the confined container of the last three slides (role C(cgroups)).
    type: str
    default: confined
notes:
  - Needs root to read other processes' C(/proc/PID/root) and namespaces (C(become)).
  - PIDs in the result are as the seat sees them.
seealso:
  - module: unboxed.lab.overlay_mount
  - module: unboxed.lab.ns_container
"""

EXAMPLES = r"""
- name: Grade every slide on every seat
  unboxed.lab.slide_grade:
  register: grade

- name: Grade the overlay slide of a lab in /srv/lab
  unboxed.lab.slide_grade:
    slide: overlay
    root: /srv/lab
"""

RETURN = r"""
slides:
  description: Per slide graded, its state, the first hint to read and every check.
  returned: always
  type: dict
  sample:
    overlay:
      state: stuck
      hint: "lowerdir order: file01.txt comes from the upper of the two image layers, so lower2-file must be listed first ..."
      checks:
        - slide: overlay
          check: an overlay is mounted at /overlay/merged
          ok: true
          seen: overlay
          hint: null
          mistake: false
          prerequisite: false
state:
  description: The state of O(slide) (with O(slide=all), the state of the first slide that is not done, or C(done)).
  returned: always
  type: str
  sample: stuck
hint:
  description: The hint of O(slide) (with O(slide=all), of the first slide that is not done), or null.
  returned: always
  type: str
  sample: "The container shares the seat's network namespace (ip addr inside shows the seat's interfaces): did you forget --net? ..."
done:
  description: The slides that are done, in the talk's order.
  returned: always
  type: list
  elements: str
  sample: [layers, overlay, chroot]
containers:
  description:
    - Every process whose root is the merged directory (PIDs as the seat sees them), the containers' candidates.
    - C(recorded) is the name M(unboxed.lab.ns_container) keeps it under when it started it, else null (started by hand).
  returned: always
  type: list
  elements: dict
  sample: [{pid: 4242, recorded: null, start_time: 1234567, command: [tail, -f, /dev/null], pid_inside: 1, isolated: [mount, net, pid]}]
mounts_inside:
  description: What is mounted below the merged directory on the seat (a student's C(/proc) for C(ps) in the chroot), in mountinfo order.
  returned: always
  type: list
  elements: str
  sample: [/overlay/merged/proc]
lines:
  description: One line per slide with its state, and the hint when it is not done, for a person to read.
  returned: always
  type: list
  elements: str
  sample: ['layers: done', "namespaces: stuck - The container shares the seat's network namespace ..."]
graded_at:
  description: When the seat was graded (UTC, ISO 8601), by the seat's clock.
  returned: always
  type: str
  sample: "2026-11-29T19:40:00Z"
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import grading
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths

PATH_OPTIONS = ('root', 'upperdir', 'workdir', 'merged', 'store')


def argument_spec() -> dict:
    return {
        'slide': {'type': 'str', 'default': 'all', 'choices': ['all', *grading.SLIDES]},
        'root': {'type': 'path', 'default': '/overlay'},
        'lowerdirs': {'type': 'list', 'elements': 'path'},
        'upperdir': {'type': 'path'},
        'workdir': {'type': 'path'},
        'merged': {'type': 'path'},
        'file_name': {'type': 'str', 'default': 'file01.txt'},
        'file_content': {'type': 'str', 'default': 'Texto\n'},
        'command': {'type': 'list', 'elements': 'str', 'default': ['tail', '-f', '/dev/null']},
        'namespaces': {'type': 'list', 'elements': 'str', 'default': ['pid', 'net', 'mount'],
                       'choices': ['pid', 'net', 'mount', 'uts', 'ipc', 'user', 'cgroup']},
        'mount_proc': {'type': 'bool', 'default': True},
        'store': {'type': 'path', 'default': '/var/lib/unboxed'},
        'image': {'type': 'str', 'default': 'talk:latest'},
        'container_name': {'type': 'str', 'default': 'talk'},
        'confined_name': {'type': 'str', 'default': 'confined'},
    }


def talk_from(params: dict) -> grading.Talk:
    root = paths.normalize(params['root'])
    lowerdirs = params['lowerdirs'] or [os.path.join(root, 'lower2-file'), os.path.join(root, 'lower1-base')]
    return grading.Talk(
        root=root,
        lowerdirs=tuple(paths.normalize(path) for path in lowerdirs),
        upperdir=paths.normalize(params['upperdir'] or os.path.join(root, 'upper')),
        workdir=paths.normalize(params['workdir'] or os.path.join(root, 'work')),
        merged=paths.normalize(params['merged'] or os.path.join(root, 'merged')),
        file_name=params['file_name'],
        file_content=params['file_content'],
        command=tuple(params['command']),
        namespaces=tuple(params['namespaces']),
        mount_proc=params['mount_proc'],
        store=paths.normalize(params['store']),
        image=params['image'],
        container_name=params['container_name'],
        confined_name=params['confined_name'],
    )


def request_problems(params: dict) -> list[str]:
    """Every problem with the request, at once."""
    problems = []
    for option in PATH_OPTIONS:
        if params.get(option):
            problem = paths.absolute_path_problem(option, params[option])
            if problem:
                problems.append(problem)
    if params.get('lowerdirs') is not None:
        if not params['lowerdirs']:
            problems.append('lowerdirs is empty: give the image\'s layers, top first, or leave it out for the talk\'s.')
        for index, path in enumerate(params['lowerdirs']):
            problem = paths.absolute_path_problem(f'lowerdirs[{index}]', path)
            if problem:
                problems.append(problem)
    name = params.get('file_name') or ''
    if not name or '/' in name or name in ('.', '..'):
        problems.append(f'file_name "{name}" must be a plain file name such as file01.txt (no "/").')
    if not params.get('command'):
        problems.append('command is empty: give the container\'s PID 1 and its arguments, e.g. [tail, -f, /dev/null].')
    return problems


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    problems = request_problems(module.params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    talk = talk_from(module.params)
    slides = [slide for slide in grading.SLIDES if module.params['slide'] in ('all', slide)]
    view = grading.observe(talk, slides)
    graded = grading.grade(view, talk, slides, identical=grading.same_directory)
    pending = [slide for slide in slides if graded[slide]['state'] not in (grading.DONE, grading.NOT_GRADED_STATE)]
    focus = graded[pending[0]] if pending else None
    module.exit_json(
        changed=False,
        slides=graded,
        state=focus['state'] if focus else grading.DONE,
        hint=focus['hint'] if focus else None,
        done=[slide for slide in slides if graded[slide]['state'] == grading.DONE],
        containers=[grading.container_summary(facts, view.seat_namespaces) for facts in view.processes],
        mounts_inside=[entry.mount_point for entry in mountinfo.mounts_below(talk.merged, list(view.mounts))],
        lines=[grading.summary_line(slide, graded[slide]) for slide in slides],
        graded_at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    )


if __name__ == '__main__':
    main()
