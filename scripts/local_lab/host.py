# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lab host as processes: started in its own namespaces and cgroups, known by PID and start time, stopped, removed.

A host runs as ``nsenter --net=/run/netns/NETNS unshare --mount --pid --uts --ipc --fork`` around
``labctl _boot`` (boot.py), which becomes PID 1 of the new PID namespace, enters a cgroup namespace of its own
and execs tini and sshd. The supervisor starts in the seat's cgroups (cgroups.py: below labctl's own, made
just before), so every process of the seat is counted there. labctl records the init (tini, PID 1 inside)
and its supervisor (``unshare``) with plugins/module_utils/process.py; stopping the init ends its PID
namespace, and every process of the host goes with it; then its cgroups are removed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from ansible_collections.unboxed.lab.plugins.module_utils import namespaces
from ansible_collections.unboxed.lab.plugins.module_utils import process
from ansible_collections.unboxed.lab.plugins.module_utils.command import shell_join

from . import cgroups, net
from .changes import Changes
from .rootfs import remove_tree
from .ssh import ssh_banner
from .state import HostRecord, Lab, save_lab
from .system import LabError, tail, wait_until

# The program the supervisor runs as the host's PID 1: labctl itself, with the internal command _boot.
LABCTL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'labctl.py')
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def boot_argv(host: HostRecord, cgroup_dirs=(), cgroup_mounts=()) -> list[str]:
    """``cgroup_dirs``: the seat's cgroups on the machine; ``cgroup_mounts``: cgroups.SeatMount, what the seat
    mounts at /sys/fs/cgroup."""
    argv = ['nsenter', f'--net={net.netns_path(host.netns)}', '--',
            'unshare', '--mount', '--pid', '--uts', '--ipc', '--fork', '--propagation', 'private', '--',
            sys.executable, LABCTL, '_boot', '--root', host.rootfs, '--hostname', host.name]
    for directory in cgroup_dirs:
        argv += ['--cgroup', directory]
    if cgroup_mounts:
        argv += ['--cgroup-mounts', json.dumps([mount.to_dict() for mount in cgroup_mounts], separators=(',', ':'))]
    return argv


def start_host(host: HostRecord) -> None:
    """Start the host's init in new mount, PID, UTS, IPC and cgroup namespaces, inside its network namespace
    and in cgroups of its own below labctl's."""
    stop_host(host)
    hierarchies = cgroups.current_hierarchies()
    host.cgroups = cgroups.create_seat_cgroups(hierarchies, host.lab, host.name)
    argv = boot_argv(host, list(host.cgroups.values()), cgroups.seat_mounts(hierarchies))
    scopes = cgroups.scope_procs_files(host.cgroups.values())
    with open(host.console_log, 'ab') as console:
        console.write(f'--- {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} {shell_join(argv)}\n'.encode())
        console.flush()
        # A session of its own: the host outlives labctl and no terminal's hangup reaches it. The supervisor and
        # all it starts are in the seat's init.scope from their first instruction, never in labctl's cgroup.
        supervisor = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                      cwd='/', start_new_session=True,
                                      preexec_fn=lambda: cgroups.join_cgroups(scopes))  # pylint: disable=subprocess-popen-preexec-fn
    host.supervisor = process.identity_of(supervisor.pid)
    init_found = wait_until(lambda: bool(process.children_of(supervisor.pid)) or supervisor.poll() is not None, START_TIMEOUT)
    children = process.children_of(supervisor.pid) if init_found else []
    if not children:
        stop_host(host)  # its supervisor, if still there, and its cgroups
        raise LabError(f'{host.name} did not start: {tail(host.console_log)}')
    host.init = process.ProcessIdentity(children[0].pid, children[0].start_time)
    address = str(host.address.ip)
    answered = wait_until(lambda: ssh_banner(address, 0.5) is not None or not process.is_running(host.init), START_TIMEOUT, 0.1)
    if not answered or not process.is_running(host.init):
        stop_host(host)  # a host that does not answer is not left half-started
        raise LabError(f'sshd on {host.name} ({address}) did not answer within {START_TIMEOUT:.0f} s: {tail(host.console_log)}')


def stop_host(host: HostRecord) -> None:
    """Stop the host's init; its PID namespace dies with it, so every process of the host goes too."""
    inits = [identity for identity in (host.init,) if identity and process.is_same_process(identity)]
    # Without a record (a labctl interrupted between start and save), the init is found through its netns.
    inits += [identity for identity in namespace_inits_in_netns(host.netns) if identity not in inits]
    for init in inits:
        process.send_signal(init, signal.SIGTERM)
    for init in inits:
        if not process.wait_until_not_running(init, STOP_TIMEOUT):
            process.send_signal(init, signal.SIGKILL)
            process.wait_until_not_running(init, STOP_TIMEOUT)
    supervisor = host.supervisor
    if supervisor and process.is_same_process(supervisor):
        # unshare exits once its child is gone; a supervisor still there had no child to wait for.
        if not process.wait_until_not_running(supervisor, STOP_TIMEOUT):
            process.send_signal(supervisor, signal.SIGKILL)
            process.wait_until_not_running(supervisor, STOP_TIMEOUT)
    host.init = None
    host.supervisor = None
    remove_cgroups(host)


def remove_cgroups(host: HostRecord) -> None:
    """The seat's cgroups, once its processes are gone: those recorded (made below the cgroup of the labctl that
    started it), and those this labctl would make (a record lost between start and save)."""
    computed = [cgroups.seat_dir(hierarchy, host.lab, host.name) for hierarchy in cgroups.current_hierarchies()]
    cgroups.remove_seat_cgroups(list(host.cgroups.values()) + computed, host.lab, host.name)
    host.cgroups = {}


def host_running(host: HostRecord) -> bool:
    """The recorded init is alive and lives in the host's named network namespace.

    An init left in a namespace whose name was deleted and made again would answer nobody.
    """
    if not process.is_running(host.init):
        return False
    inode = net.netns_inode(host.netns)
    return inode is not None and namespaces.namespace_inode(host.init.pid, 'net') == inode


def pids_in_netns(name: str) -> list[int]:
    inode = net.netns_inode(name)
    if inode is None:
        return []
    return [pid for pid in process.all_pids() if namespaces.namespace_inode(pid, 'net') == inode]


def namespace_inits_in_netns(name: str) -> list[process.ProcessIdentity]:
    """PID 1 of every PID namespace that lives in this network namespace: a lab host's init, by construction."""
    inits = []
    for pid in pids_in_netns(name):
        nspids = process.read_nspids(pid)
        if len(nspids) > 1 and nspids[-1] == 1:
            identity = process.identity_of(pid)
            if identity:
                inits.append(identity)
    return inits


def parse_vm_rss_kib(status_text: str) -> int:
    """The ``VmRSS:`` line of /proc/PID/status, in KiB (0 for a kernel thread or a zombie, which have none)."""
    for line in status_text.splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    return 0


def vm_rss_kib(pid: int) -> int:
    try:
        with open(f'/proc/{pid}/status', encoding='utf-8', errors='replace') as handle:
            return parse_vm_rss_kib(handle.read())
    except OSError:
        return 0


def host_memory_kib(host: HostRecord) -> int:
    """Resident memory of every process in the host's network namespace, plus its supervisor."""
    pids = set(pids_in_netns(host.netns))
    if host.supervisor and process.is_running(host.supervisor):
        pids.add(host.supervisor.pid)
    return sum(vm_rss_kib(pid) for pid in pids)


def ensure_host(changes: Changes, lab: Lab, host: HostRecord, controller: dict, copied_now: bool = False) -> None:
    """The host's network namespace and veth pair, then the host itself, running.

    ``copied_now``: its root file system is (or, in check mode, would be) copied in this run, so whatever runs
    now is (would be) stopped first.
    """
    net.ensure_host_network(changes, lab, host, controller)
    if copied_now or not host_running(host):
        changes.make(f'start {host.name}: tini and sshd in new mount, PID, UTS, IPC and cgroup namespaces, in cgroups of '
                     f'its own below labctl\'s', start_host, host)
        if not changes.check:
            save_lab(lab)


def host_present(host: HostRecord, links: dict) -> bool:
    return (os.path.lexists(host.dir) or net.netns_exists(host.netns) or host.veth in links
            or bool(host.init and process.is_same_process(host.init)))


def remove_host(lab: Lab, host: HostRecord) -> None:
    stop_host(host)
    net.remove_host_network(host)
    if os.path.lexists(host.dir):
        remove_tree(host.dir)
    lab.hosts.pop(host.name, None)
    save_lab(lab)


def remove_host_files(host: HostRecord) -> None:
    """Stop the host and remove its directory (root file system, console log, marker). Its network stays:
    the host made again in its place (another release) keeps its address, MAC and namespace."""
    stop_host(host)
    if os.path.lexists(host.dir):
        remove_tree(host.dir)


def remove_stray_netns(name: str) -> None:
    """A lab's network namespace that no record names: its hosts' inits are killed, then it goes."""
    for init in namespace_inits_in_netns(name):
        process.send_signal(init, signal.SIGKILL)
        process.wait_until_not_running(init, STOP_TIMEOUT)
    net.delete_netns(name)
