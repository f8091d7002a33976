# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What labctl remembers about a lab, and where each lab's files are.

The kernel is the truth for links, namespaces and processes; the record (/var/lib/unboxed/lab/LAB/lab.json)
keeps what the kernel cannot tell: which processes labctl started (PID and start time, as runc does) and
which subnet it chose. Everything else about a host (address, MAC, names, paths) is computed from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import ipaddress
import json
import os
import re

from ansible_collections.unboxed.lab.plugins.module_utils import process

from . import addresses, releases
from .system import LabError, write_file_atomically

STATE_ROOT = '/var/lib/unboxed/lab'
# Things on the controller that several labs share; labctl undoes them when the last lab goes.
CONTROLLER_FILE = os.path.join(STATE_ROOT, 'controller.json')
NAME_PATTERN = re.compile(r'^[a-z][a-z0-9-]{0,23}$')


def name_problem(what: str, name: str) -> str | None:
    if not NAME_PATTERN.match(name or ''):
        return (f'{what} "{name}" is not valid: use a lower-case letter, then up to 23 letters, digits or "-" '
                f'(it becomes part of namespace names and hostnames).')
    return None


def host_names(prefix: str, count: int) -> list[str]:
    return [f'{prefix}{position}' for position in range(1, count + 1)]


@dataclasses.dataclass
class HostRecord:
    name: str
    position: int
    lab: str
    index: int
    subnet: ipaddress.IPv4Network
    # The Debian release this host is to run (releases.release_for: the lab's releases in turn).
    release: str = releases.DEFAULT_RELEASES[0]
    init: process.ProcessIdentity | None = None
    supervisor: process.ProcessIdentity | None = None
    # The seat's cgroup in each hierarchy, on the machine ({'memory': '/sys/fs/cgroup/memory/.../unboxed-lab/LAB/HOST'}):
    # made below the cgroup of the labctl that started it, which a later labctl (in another cgroup) cannot compute.
    cgroups: dict = dataclasses.field(default_factory=dict)

    @property
    def address(self) -> ipaddress.IPv4Interface:
        return addresses.host_address(self.subnet, self.position)

    @property
    def mac(self) -> str:
        return addresses.mac_for(self.address.ip)

    @property
    def netns(self) -> str:
        return addresses.netns_name(self.lab, self.name)

    @property
    def veth(self) -> str:
        return addresses.veth_name(self.index, self.position)

    @property
    def dir(self) -> str:
        return os.path.join(STATE_ROOT, self.lab, 'hosts', self.name)

    @property
    def rootfs(self) -> str:
        return os.path.join(self.dir, 'rootfs')

    @property
    def marker(self) -> str:
        """Written last when the root file system is complete: a copy cut short is made again."""
        return os.path.join(self.dir, 'provisioned.json')

    @property
    def console_log(self) -> str:
        return os.path.join(self.dir, 'console.log')

    @property
    def host_public_key(self) -> str:
        return os.path.join(self.rootfs, 'etc', 'ssh', 'ssh_host_ed25519_key.pub')

    def to_dict(self) -> dict:
        return {'position': self.position,
                'init': self.init.to_dict() if self.init else None,
                'supervisor': self.supervisor.to_dict() if self.supervisor else None,
                'cgroups': dict(self.cgroups)}


@dataclasses.dataclass
class Lab:
    name: str
    index: int
    subnet: ipaddress.IPv4Network
    host_prefix: str
    inventory: str
    # Handed out in turn: host 1 runs releases[0], host 2 releases[1]...
    releases: tuple = releases.DEFAULT_RELEASES
    hosts: dict = dataclasses.field(default_factory=dict)
    # Debian packages the lab's seats have beyond the base's (labctl up --packages), e.g. git and ansible-core.
    packages: tuple = ()

    @property
    def dir(self) -> str:
        return lab_dir(self.name)

    @property
    def state_file(self) -> str:
        return os.path.join(self.dir, 'lab.json')

    @property
    def ssh_dir(self) -> str:
        return os.path.join(self.dir, 'ssh')

    @property
    def key(self) -> str:
        return os.path.join(self.ssh_dir, 'id_ed25519')

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.ssh_dir, 'known_hosts')

    @property
    def bridge(self) -> str:
        return addresses.bridge_name(self.index)

    @property
    def bridge_address(self) -> ipaddress.IPv4Interface:
        return addresses.bridge_address(self.subnet)

    def new_host(self, name: str, position: int) -> HostRecord:
        return HostRecord(name=name, position=position, lab=self.name, index=self.index, subnet=self.subnet,
                          release=releases.release_for(self.releases, position))

    def set_releases(self, wanted) -> None:
        """New releases for the lab: each host's release follows from its position again."""
        self.releases = tuple(wanted)
        for host in self.hosts.values():
            host.release = releases.release_for(self.releases, host.position)

    def hosts_in_order(self) -> list[HostRecord]:
        return sorted(self.hosts.values(), key=lambda record: record.position)

    def to_dict(self) -> dict:
        return {'name': self.name, 'index': self.index, 'subnet': str(self.subnet), 'host_prefix': self.host_prefix,
                'inventory': self.inventory, 'releases': list(self.releases), 'packages': list(self.packages),
                'hosts': {name: host.to_dict() for name, host in self.hosts.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Lab:
        # A lab recorded before labctl knew releases is what every lab was then: bookworm only.
        lab = cls(name=data['name'], index=int(data['index']), subnet=ipaddress.ip_network(data['subnet']),
                  host_prefix=data['host_prefix'], inventory=data['inventory'],
                  releases=releases.parse_releases(','.join(data.get('releases') or releases.RECORDED_BEFORE_RELEASES)),
                  packages=tuple(data.get('packages') or ()))
        for name, host in data.get('hosts', {}).items():
            record = lab.new_host(name, int(host['position']))
            record.init = process.ProcessIdentity.from_dict(host.get('init'))
            record.supervisor = process.ProcessIdentity.from_dict(host.get('supervisor'))
            record.cgroups = dict(host.get('cgroups') or {})
            lab.hosts[name] = record
        return lab


def lab_dir(name: str) -> str:
    return os.path.join(STATE_ROOT, name)


def load_lab(name: str) -> Lab | None:
    try:
        with open(os.path.join(lab_dir(name), 'lab.json'), encoding='utf-8') as handle:
            return Lab.from_dict(json.load(handle))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as error:
        raise LabError(f'The record of lab "{name}" in {lab_dir(name)}/lab.json is unreadable ({error}). '
                       f'Run `labctl down --lab {name}` to remove what the kernel still has of it.') from error


def save_lab(lab: Lab) -> None:
    write_file_atomically(lab.state_file, json.dumps(lab.to_dict(), indent=2, sort_keys=True) + '\n', 0o600)


def create_lab_dir(lab: Lab) -> None:
    os.makedirs(lab.ssh_dir, mode=0o700, exist_ok=True)
    os.chmod(lab.dir, 0o700)
    save_lab(lab)


def all_labs() -> list[Lab]:
    labs = []
    for state_file in sorted(glob.glob(os.path.join(STATE_ROOT, '*', 'lab.json'))):
        lab = load_lab(os.path.basename(os.path.dirname(state_file)))
        if lab:
            labs.append(lab)
    return labs


@contextlib.contextmanager
def global_lock(create: bool):
    """One labctl at a time changes labs: they share the address pool, the bridge names and the base cache."""
    if not create and not os.path.isdir(STATE_ROOT):
        yield
        return
    os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
    with open(os.path.join(STATE_ROOT, '.lock'), 'w', encoding='utf-8') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def load_controller() -> dict:
    try:
        with open(CONTROLLER_FILE, encoding='utf-8') as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def save_controller(controller: dict) -> None:
    write_file_atomically(CONTROLLER_FILE, json.dumps(controller, indent=2, sort_keys=True) + '\n', 0o600)
