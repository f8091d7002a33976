# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Round trips to each seat per task and per slide, counted from the log of an `ansible-playbook -vvv` run.

A round trip is one process the connection plugin starts to reach a host: with SSH, every `ssh` (a module run, a
shell command such as the temporary directory's mkdir) and every `sftp`/`scp` (a file transfer) - the ssh connection
plugin logs each as `<ADDRESS> SSH: EXEC ...` at -vvv; the local connection (tasks delegated to the controller) as
`<localhost> EXEC ...`. Under the linear strategy a task's lines come between its `TASK [...]` header and the
next one. Counting what the connection really ran is what makes the count reliable: an action plugin may run no
module (debug, set_fact), one, or several (copy: stat, transfer, copy).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

TASK_HEADER = re.compile(r'^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\] \**\s*\Z')
EXEC_LINE = re.compile(r'^<(?P<address>[^>]+)> (?:SSH: )?EXEC (?P<command>.*)\Z')
CONTROLLER_ADDRESSES = frozenset(('localhost', '127.0.0.1', '::1'))
# A role whose tasks belong to another slide: the base is the layers slide's first layer (FROM debian).
SLIDE_OF_ROLE = {'base_rootfs': 'layers'}
KINDS = ('module', 'transfer', 'shell')


def kind_of(command: str) -> str:
    """module (a Python interpreter started to run a module), transfer (sftp/scp) or shell (anything else)."""
    program = command.split(None, 1)[0] if command else ''
    if program.endswith(('sftp', 'scp')):
        return 'transfer'
    if 'python' in command:
        return 'module'
    return 'shell'


def slide_of(task_name: str) -> str:
    """'unboxed.lab.chroot : Run ps ax ...' -> 'chroot'; a task outside a role -> 'play'."""
    role, separator, _rest = task_name.partition(' : ')
    if not separator:
        return 'play'
    role = role.rsplit('.', 1)[-1]
    return SLIDE_OF_ROLE.get(role, role)


def count(lines: Iterable[str], hosts: Mapping[str, str]) -> list[dict]:
    """Per task, in order: {'name', 'slide', 'seats': {host: {kind: n}}, 'controller': {kind: n}}.

    ``hosts``: inventory name -> address (what the ssh plugin prints between < and >)."""
    by_address = {address: name for name, address in hosts.items()}
    by_address.update({name: name for name in hosts})
    tasks: list[dict] = []
    for line in lines:
        line = line.rstrip('\n')
        header = TASK_HEADER.match(line)
        if header:
            tasks.append({'name': header['name'], 'slide': slide_of(header['name']), 'seats': {},
                          'controller': dict.fromkeys(KINDS, 0)})
            continue
        executed = EXEC_LINE.match(line)
        if not executed or not tasks:
            continue
        kind = kind_of(executed['command'])
        address = executed['address']
        if address in by_address:
            seat = tasks[-1]['seats'].setdefault(by_address[address], dict.fromkeys(KINDS, 0))
            seat[kind] += 1
        elif address in CONTROLLER_ADDRESSES:
            tasks[-1]['controller'][kind] += 1
    return tasks


def per_slide(tasks: list[dict], hosts: Iterable[str]) -> dict[str, dict]:
    """Per slide, in play order: tasks, and per seat the round trips of each kind - the most any seat needed
    ('max') and the fewest ('min') - plus the controller's own (delegated tasks, once per run)."""
    hosts = list(hosts)
    slides: dict[str, dict] = {}
    for task in tasks:
        slide = slides.setdefault(task['slide'], {'tasks': 0, 'seats': {host: dict.fromkeys(KINDS, 0) for host in hosts},
                                                  'controller': dict.fromkeys(KINDS, 0)})
        slide['tasks'] += 1
        for host, counts in task['seats'].items():
            for kind, value in counts.items():
                slide['seats'].setdefault(host, dict.fromkeys(KINDS, 0))[kind] += value
        for kind, value in task['controller'].items():
            slide['controller'][kind] += value
    summary = {}
    for name, slide in slides.items():
        seats = list(slide['seats'].values()) or [dict.fromkeys(KINDS, 0)]
        summary[name] = {
            'tasks': slide['tasks'],
            'max': {kind: max(seat[kind] for seat in seats) for kind in KINDS},
            'min': {kind: min(seat[kind] for seat in seats) for kind in KINDS},
            'controller': slide['controller'],
        }
    return summary
