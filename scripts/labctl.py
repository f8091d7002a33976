# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""labctl: the unboxed local lab, Debian hosts in Linux namespaces on this one machine, reached over SSH.

    labctl up     [--lab NAME] [--hosts N] [--inventory PATH] [--subnet CIDR] [--check] [--json]
    labctl down   [--lab NAME] [--purge] [--check] [--json]
    labctl stop   [--lab NAME] HOST...        stop hosts; the next `up` starts them again
    labctl status [--lab NAME] [--json]
    labctl list   [--json]                     the labs on this machine
    labctl build-base [--check] [--json]

Each lab host is built by hand the way a container runtime would build it:

- a Debian root file system: a copy of one cached mmdebstrap tarball, /var/lib/unboxed/lab/LAB/hosts/HOST/rootfs;
- a network namespace (`ip netns add`) joined to the lab's bridge by a veth pair, with its own address
  and a MAC derived from that address;
- `unshare --mount --pid --uts --ipc --fork` around a boot step (`labctl _boot`, PID 1 of the new PID
  namespace) that mounts /proc, /sys, /dev and /run, pivots into the root file system, sets the hostname
  and execs tini, which runs sshd.

Every command reads the kernel's state first and acts only on a difference, so a second `up` changes
nothing; `--check` prints the plan and touches nothing. Processes are known by PID and start time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import fcntl
import glob
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SCRIPT = os.path.realpath(__file__)
REPO = os.path.dirname(os.path.dirname(SCRIPT))


def _collection_path() -> str:
    """Where ``ansible_collections`` lives: collections/ in a clone, three levels up when installed."""
    clone = os.path.join(REPO, 'collections')
    if os.path.isdir(os.path.join(clone, 'ansible_collections')):
        return clone
    return os.path.dirname(os.path.dirname(os.path.dirname(REPO)))


sys.path.insert(0, _collection_path())

# pylint: disable=wrong-import-position
from ansible_collections.unboxed.lab.plugins.module_utils import environ  # noqa: E402
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo  # noqa: E402
from ansible_collections.unboxed.lab.plugins.module_utils import namespaces  # noqa: E402
from ansible_collections.unboxed.lab.plugins.module_utils import paths  # noqa: E402
from ansible_collections.unboxed.lab.plugins.module_utils import process  # noqa: E402
from ansible_collections.unboxed.lab.plugins.module_utils.command import shell_join  # noqa: E402

STATE_ROOT = '/var/lib/unboxed/lab'
CACHE_DIR = '/var/cache/unboxed/lab-base'
NETNS_DIR = '/run/netns'
SYSTEM_KNOWN_HOSTS = '/etc/ssh/ssh_known_hosts'
APT_SOURCE_FILES = ('/etc/apt/sources.list', '/etc/apt/sources.list.d/*.list', '/etc/apt/sources.list.d/*.sources')

DEFAULT_LAB = 'default'
DEFAULT_HOST_COUNT = 3
DEFAULT_HOST_PREFIX = 'lab'
DEFAULT_INVENTORY = os.path.join(REPO, 'inventories', 'local', 'hosts.yml')
INVENTORY_GROUP = 'lab'

SUITE = 'bookworm'
# What Ansible and the talk need on a lab host. tini is PID 1 (it reaps orphans, as `docker run --init`).
BASE_PACKAGES = ('python3', 'python3-apt', 'iproute2', 'procps', 'util-linux', 'openssh-server', 'tini')
# Nobody reads man pages, documentation or translations on a lab host; every copy is smaller without them.
DPKG_OPTIONS = (
    'path-exclude=/usr/share/man/*',
    'path-exclude=/usr/share/locale/*',
    'path-exclude=/usr/share/doc/*',
    'path-include=/usr/share/doc/*/copyright',
)
# Bump when the way the base is built changes, so old cached tarballs are not reused.
BASE_FORMAT = 1

# Lab N gets 10.213.N.0/24 unless told otherwise; the bridge is .1 (the controller), host i is .(10 + i).
ADDRESS_POOL = ipaddress.ip_network('10.213.0.0/16')
FIRST_HOST_OFFSET = 10
MAX_LAB_INDEX = 254
MAX_HOSTS = 100
NAME_PATTERN = re.compile(r'^[a-z][a-z0-9-]{0,23}$')

SSH_PORT = 22
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COPY_WORKERS = max(1, min(4, os.cpu_count() or 1))
LAB_HOST_PATH = environ.DEFAULT_PATH
MNT_DETACH = 2


class LabError(Exception):
    """A failure with a message for the person at the keyboard."""


# --------------------------------------------------------------------------------------------------
# Pure functions: names, addresses, apt sources, rendered files. Unit-tested with real samples.
# --------------------------------------------------------------------------------------------------

def name_problem(what: str, name: str) -> str | None:
    if not NAME_PATTERN.match(name or ''):
        return (f'{what} "{name}" is not valid: use a lower-case letter, then up to 23 letters, digits or "-" '
                f'(it becomes part of namespace names and hostnames).')
    return None


def default_subnet(index: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(f'{ADDRESS_POOL.network_address + (index << 8)}/24')


def bridge_address(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    return ipaddress.ip_interface(f'{subnet.network_address + 1}/{subnet.prefixlen}')


def host_address(subnet: ipaddress.IPv4Network, position: int) -> ipaddress.IPv4Interface:
    """Host number ``position`` (1-based) of a lab; fails when the subnet has no room for it."""
    address = subnet.network_address + FIRST_HOST_OFFSET + position
    if address >= subnet.broadcast_address:
        raise LabError(f'{subnet} has no room for host {position}: use a larger --subnet or fewer hosts.')
    return ipaddress.ip_interface(f'{address}/{subnet.prefixlen}')


def mac_for(address: ipaddress.IPv4Address) -> str:
    """A locally administered MAC that is a function of the IPv4 address.

    A host recreated on the same address answers ARP with the same MAC, so neighbours that still
    cache the old entry keep working.
    """
    return '02:75:' + ':'.join(f'{octet:02x}' for octet in address.packed)


def bridge_name(index: int) -> str:
    return f'ulab{index}'


def veth_name(index: int, position: int) -> str:
    # IFNAMSIZ is 16: 'ulab254h100' fits, a name built from the lab's name would not.
    return f'ulab{index}h{position}'


def netns_name(lab: str, host: str) -> str:
    # Dots cannot occur in lab or host names, so the prefix 'unboxed.LAB.' belongs to one lab only.
    return f'unboxed.{lab}.{host}'


def client_key_comment(lab: str) -> str:
    return f'unboxed-lab-{lab}'


def link_alias(lab: str) -> str:
    """The alias set on every link of a lab, so `down` finds them in the kernel even without a state file."""
    return f'unboxed-lab:{lab}'


def host_names(prefix: str, count: int) -> list[str]:
    return [f'{prefix}{position}' for position in range(1, count + 1)]


@dataclasses.dataclass(frozen=True)
class AptSource:
    types: tuple
    uris: tuple
    suites: tuple
    components: tuple
    signed_by: str | None = None


def parse_one_line_sources(text: str) -> list[AptSource]:
    """``deb [signed-by=/k.gpg arch=amd64] http://deb.debian.org/debian bookworm main`` lines."""
    sources = []
    for raw in text.splitlines():
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        kind, rest = line.split(maxsplit=1) if ' ' in line else (line, '')
        options = {}
        rest = rest.strip()
        if rest.startswith('[') and ']' in rest:
            option_text, rest = rest[1:].split(']', 1)
            for option in option_text.split():
                key, value = option.split('=', 1) if '=' in option else (option, '')
                options[key.lower()] = value
        fields = rest.split()
        if len(fields) < 2:
            continue
        sources.append(AptSource((kind,), (fields[0],), (fields[1],), tuple(fields[2:]), options.get('signed-by')))
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    """The deb822 ``.sources`` format: stanzas of ``Field: value`` separated by blank lines."""
    sources = []
    for stanza in re.split(r'\n\s*\n', text):
        fields: dict[str, str] = {}
        current = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith('#'):
                continue
            if line[0] in ' \t' and current:
                fields[current] += '\n' + line.strip()
                continue
            key, value = line.split(':', 1) if ':' in line else (line, '')
            current = key.strip().lower()
            fields[current] = value.strip()
        if not fields.get('types') or not fields.get('uris') or fields.get('enabled', 'yes').lower() == 'no':
            continue
        signed_by = fields.get('signed-by', '').strip()
        # Signed-By may hold the key itself (an armored block); only a path can be passed on.
        if not signed_by or '\n' in signed_by or not signed_by.startswith('/'):
            signed_by = None
        sources.append(AptSource(tuple(fields['types'].split()), tuple(fields['uris'].split()),
                                 tuple(fields.get('suites', '').split()), tuple(fields.get('components', '').split()),
                                 signed_by))
    return sources


def mirror_lines(sources: list[AptSource], suite: str) -> list[str]:
    """One-line ``deb`` sources for ``suite`` and its -updates and -security suites, as mmdebstrap takes them."""
    wanted = (suite, f'{suite}-updates', f'{suite}-security')
    lines = []
    for source in sources:
        if 'deb' not in source.types:
            continue
        options = f'[signed-by={source.signed_by}] ' if source.signed_by else ''
        for uri in source.uris:
            for source_suite in source.suites:
                if source_suite in wanted and source.components:
                    line = f'deb {options}{uri} {source_suite} {" ".join(source.components)}'
                    if line not in lines:
                        lines.append(line)
    return lines


def base_key(suite: str, packages, mirrors, dpkg_options) -> str:
    """What the cached base depends on, hashed: a change in any of them builds a new base."""
    recipe = {'format': BASE_FORMAT, 'suite': suite, 'packages': sorted(packages),
              'mirrors': list(mirrors), 'dpkg_options': list(dpkg_options)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def parse_nspid(status_text: str) -> list[int]:
    """The ``NSpid:`` line of /proc/PID/status: the PID in each nested PID namespace, outermost first."""
    for line in status_text.splitlines():
        if line.startswith('NSpid:'):
            return [int(value) for value in line.split()[1:]]
    return []


def parse_vm_rss_kib(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    return 0


def yaml_scalar(value) -> str:
    """A YAML scalar that needs no library: JSON strings, numbers and booleans are valid YAML."""
    return json.dumps(value)


def render_inventory(lab: Lab) -> str:
    """The lab's inventory: self-contained, so a copy elsewhere (molecule) needs nothing beside it."""
    common_args = (f'-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes '
                   f'-o IdentitiesOnly=yes -o IdentityAgent=none')
    lines = [
        f'# Written by scripts/labctl for the local lab "{lab.name}" ({lab.subnet}). Do not edit:',
        '# `labctl up` rewrites this file and `labctl down` removes it.',
        'all:',
        '  children:',
        f'    {INVENTORY_GROUP}:',
        '      hosts:',
    ]
    for host in sorted(lab.hosts.values(), key=lambda record: record.position):
        lines += [f'        {host.name}:', f'          ansible_host: {yaml_scalar(str(host.address.ip))}']
    lines += [
        '      vars:',
        '        ansible_user: root',
        '        ansible_python_interpreter: /usr/bin/python3',
        f'        unboxed_lab_name: {yaml_scalar(lab.name)}',
        '        # Read by both transports, ssh and paramiko.',
        f'        ansible_private_key_file: {yaml_scalar(lab.key)}',
        '        # ssh: verify host keys against the known_hosts labctl wrote for this lab.',
        f'        ansible_ssh_common_args: {yaml_scalar(common_args)}',
        '        # paramiko reads host keys only from /etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts and',
        f'        # has no option to name another file: labctl keeps this lab\'s keys in a block of {SYSTEM_KNOWN_HOSTS}.',
        '        ansible_paramiko_host_key_checking: true',
        '',
    ]
    return '\n'.join(lines)


def inventory_marker(lab_name: str) -> str:
    return f'# Written by scripts/labctl for the local lab "{lab_name}" '


def render_known_hosts(entries) -> str:
    """``entries``: (address, 'ssh-ed25519 AAAA...') pairs."""
    return ''.join(f'{address} {public_key}\n' for address, public_key in entries)


def block_markers(lab_name: str) -> tuple[str, str]:
    return (f'# BEGIN unboxed lab "{lab_name}" (managed by labctl; removed by labctl down)',
            f'# END unboxed lab "{lab_name}"')


def replace_block(text: str, lab_name: str, body: str) -> str:
    """``text`` with this lab's marked block holding ``body``: replaced where it stands, appended when new,
    removed when ``body`` is empty. Other lines and other labs' blocks stay as they are, in their order."""
    begin, end = block_markers(lab_name)
    block = f'{begin}\n{body}{end}\n' if body else ''
    result = []
    placed = False
    inside = False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip('\n')
        if stripped == begin and not inside:
            inside = True
            continue
        if inside:
            if stripped == end:
                inside = False
                if not placed:
                    result.append(block)
                    placed = True
            continue
        result.append(line)
    if inside and not placed:
        # A BEGIN without END: whatever followed was this lab's block, cut short.
        result.append(block)
        placed = True
    if not placed and block:
        if result and not result[-1].endswith('\n'):
            result.append('\n')
        result.append(block)
    return ''.join(result)


# --------------------------------------------------------------------------------------------------
# The lab's record. The kernel is the truth for links, namespaces and processes; the record keeps what
# the kernel cannot tell us: which processes we started (PID + start time) and which subnet we chose.
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class HostRecord:
    name: str
    position: int
    lab: str
    index: int
    subnet: ipaddress.IPv4Network
    init: process.ProcessIdentity | None = None
    supervisor: process.ProcessIdentity | None = None

    @property
    def address(self) -> ipaddress.IPv4Interface:
        return host_address(self.subnet, self.position)

    @property
    def mac(self) -> str:
        return mac_for(self.address.ip)

    @property
    def netns(self) -> str:
        return netns_name(self.lab, self.name)

    @property
    def veth(self) -> str:
        return veth_name(self.index, self.position)

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
                'supervisor': self.supervisor.to_dict() if self.supervisor else None}


@dataclasses.dataclass
class Lab:
    name: str
    index: int
    subnet: ipaddress.IPv4Network
    host_prefix: str
    inventory: str
    hosts: dict = dataclasses.field(default_factory=dict)

    @property
    def dir(self) -> str:
        return os.path.join(STATE_ROOT, self.name)

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
        return bridge_name(self.index)

    @property
    def bridge_address(self) -> ipaddress.IPv4Interface:
        return bridge_address(self.subnet)

    def new_host(self, name: str, position: int) -> HostRecord:
        return HostRecord(name=name, position=position, lab=self.name, index=self.index, subnet=self.subnet)

    def to_dict(self) -> dict:
        return {'name': self.name, 'index': self.index, 'subnet': str(self.subnet), 'host_prefix': self.host_prefix,
                'inventory': self.inventory, 'hosts': {name: host.to_dict() for name, host in self.hosts.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Lab:
        lab = cls(name=data['name'], index=int(data['index']), subnet=ipaddress.ip_network(data['subnet']),
                  host_prefix=data['host_prefix'], inventory=data['inventory'])
        for name, host in data.get('hosts', {}).items():
            record = lab.new_host(name, int(host['position']))
            record.init = process.ProcessIdentity.from_dict(host.get('init'))
            record.supervisor = process.ProcessIdentity.from_dict(host.get('supervisor'))
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


def all_labs() -> list[Lab]:
    labs = []
    for state_file in sorted(glob.glob(os.path.join(STATE_ROOT, '*', 'lab.json'))):
        lab = load_lab(os.path.basename(os.path.dirname(state_file)))
        if lab:
            labs.append(lab)
    return labs


# --------------------------------------------------------------------------------------------------
# Small system helpers
# --------------------------------------------------------------------------------------------------

def run(argv, what: str, **kwargs) -> str:
    """Run an argv list with the C locale; on failure raise LabError with the command and its words."""
    completed = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, check=False,
                               env=dict(os.environ, LC_ALL='C', LANG='C'), stdin=subprocess.DEVNULL, **kwargs)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip() or f'exit code {completed.returncode}'
        raise LabError(f'Could not {what}: {detail}\n  command: {shell_join(argv)}')
    return completed.stdout


def write_file_atomically(path: str, content: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.labctl-')
    try:
        with os.fdopen(handle, 'w', encoding='utf-8') as stream:
            stream.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def read_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_inside(root: str, inner: str, content: str, mode: int = 0o644) -> None:
    """Write ``inner`` (a path inside ``root``) the way a process chrooted into ``root`` would see it.

    The parent directory is resolved inside the root, and a symlink in place of the file is replaced
    rather than followed: a root file system's links must never send a write onto the controller.
    """
    parent = paths.resolve_inside(root, os.path.dirname(inner))
    if parent is None:
        os.makedirs(paths.join_inside(root, os.path.dirname(inner)), mode=0o755, exist_ok=True)
        parent = paths.resolve_inside(root, os.path.dirname(inner))
    if parent is None or not paths.is_inside(os.path.realpath(parent), os.path.realpath(root)):
        raise LabError(f'{inner} cannot be written inside {root}: its directory leads outside the root file system.')
    target = os.path.join(parent, os.path.basename(inner))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(descriptor, 'w', encoding='utf-8') as stream:
        stream.write(content)
    os.chmod(target, mode)


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


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError('labctl needs root: it creates network namespaces, bridges and mounts (run it with sudo).')


def proc_status(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/status', encoding='utf-8', errors='replace') as handle:
            return handle.read()
    except OSError:
        return ''


# --------------------------------------------------------------------------------------------------
# What the kernel has: links, addresses, network namespaces, processes
# --------------------------------------------------------------------------------------------------

def ip_json(*args, netns: str | None = None) -> list:
    argv = ['ip'] + (['-n', netns] if netns else []) + ['-j', *args]
    output = run(argv, f'read the network state ({shell_join(argv)})')
    return json.loads(output) if output.strip() else []


def links_by_name(netns: str | None = None) -> dict[str, dict]:
    return {link['ifname']: link for link in ip_json('-d', 'address', 'show', netns=netns)}


def link_addresses(link: dict) -> set[str]:
    return {f"{info['local']}/{info['prefixlen']}" for info in link.get('addr_info', []) if info.get('family') == 'inet'}


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except OSError:
        return None


def pids_in_netns(name: str) -> list[int]:
    inode = netns_inode(name)
    if inode is None:
        return []
    return [pid for pid in process.all_pids() if namespaces.namespace_inode(pid, 'net') == inode]


def namespace_inits_in_netns(name: str) -> list[process.ProcessIdentity]:
    """PID 1 of every PID namespace that lives in this network namespace: a lab host's init, by construction."""
    inits = []
    for pid in pids_in_netns(name):
        nspid = parse_nspid(proc_status(pid))
        if len(nspid) > 1 and nspid[-1] == 1:
            identity = process.identity_of(pid)
            if identity:
                inits.append(identity)
    return inits


def used_subnets() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine already reaches directly: a lab must not shadow one of them."""
    networks = []
    for route in ip_json('-4', 'route', 'show', 'table', 'all'):
        destination = route.get('dst', '')
        if destination in ('', 'default') or route.get('type') in ('local', 'broadcast'):
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(destination if '/' in destination else f'{destination}/32', strict=False))
    return networks


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def ssh_banner(address: str, timeout: float = 1.0) -> str | None:
    """The first line sshd sends, or None when nothing answers."""
    try:
        with socket.create_connection((address, SSH_PORT), timeout=timeout) as connection:
            connection.settimeout(timeout)
            return connection.recv(256).decode('ascii', 'replace').strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# Changes: every action is described, then done unless in check mode
# --------------------------------------------------------------------------------------------------

class Changes:
    def __init__(self, check: bool):
        self.check = check
        self.made: list[str] = []
        self.timings: dict[str, float] = {}

    def make(self, description: str, action, *args):
        self.made.append(description)
        if self.check:
            return None
        started = time.monotonic()
        result = action(*args)
        self.timings[description] = round(time.monotonic() - started, 2)
        return result

    def make_together(self, actions) -> None:
        """Like make for each ``(description, action, *args)``, run side by side: copying root file systems
        is bound by the kernel's file creation, and two copies at once take little longer than one."""
        actions = list(actions)
        self.made.extend(action[0] for action in actions)
        if self.check or not actions:
            return

        def timed(action, args):
            started = time.monotonic()
            action(*args)
            return round(time.monotonic() - started, 2)

        with concurrent.futures.ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
            futures = {description: pool.submit(timed, action, args) for description, action, *args in actions}
        for description, future in futures.items():
            self.timings[description] = future.result()  # re-raises the first failure

    @property
    def changed(self) -> bool:
        return bool(self.made)


# --------------------------------------------------------------------------------------------------
# The base root file system: built once with mmdebstrap, cached as a tarball
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BaseImage:
    key: str
    mirrors: tuple

    @property
    def tarball(self) -> str:
        return os.path.join(CACHE_DIR, f'{SUITE}-{self.key}.tar')

    @property
    def manifest(self) -> str:
        return os.path.join(CACHE_DIR, f'{SUITE}-{self.key}.json')


def host_apt_sources() -> list[AptSource]:
    sources = []
    for pattern in APT_SOURCE_FILES:
        for path in sorted(glob.glob(pattern)):
            text = read_file(path) or ''
            sources += parse_deb822_sources(text) if path.endswith('.sources') else parse_one_line_sources(text)
    return sources


def base_image() -> BaseImage:
    mirrors = mirror_lines(host_apt_sources(), SUITE)
    if not mirrors:
        raise LabError(f'No Debian mirror for {SUITE} in {", ".join(APT_SOURCE_FILES)}: labctl builds the lab hosts '
                       f'from the mirror apt already uses. Add one, e.g. "deb http://deb.debian.org/debian {SUITE} main".')
    return BaseImage(key=base_key(SUITE, BASE_PACKAGES, mirrors, DPKG_OPTIONS), mirrors=tuple(mirrors))


def build_base(base: BaseImage) -> None:
    mmdebstrap = shutil.which('mmdebstrap')
    if not mmdebstrap:
        raise LabError('mmdebstrap is not installed: run `make setup` (or `apt-get install mmdebstrap`).')
    os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
    partial = base.tarball + '.partial'
    argv = [mmdebstrap, '--variant=minbase', '--mode=root', '--format=tar', f'--include={",".join(BASE_PACKAGES)}']
    argv += [f'--dpkgopt={option}' for option in DPKG_OPTIONS]
    argv += [SUITE, partial, *base.mirrors]
    try:
        run(argv, f'build the {SUITE} base root file system with mmdebstrap')
    except LabError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    os.replace(partial, base.tarball)
    manifest = {'suite': SUITE, 'packages': list(BASE_PACKAGES), 'mirrors': list(base.mirrors),
                'dpkg_options': list(DPKG_OPTIONS), 'built_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                'bytes': os.path.getsize(base.tarball), 'command': shell_join(argv)}
    write_file_atomically(base.manifest, json.dumps(manifest, indent=2) + '\n')


def ensure_base(changes: Changes) -> BaseImage:
    base = base_image()
    if not os.path.isfile(base.tarball):
        changes.make(f'build the {SUITE} base with mmdebstrap into {base.tarball}', build_base, base)
    return base


# --------------------------------------------------------------------------------------------------
# Lab-wide pieces: directory, client key, bridge, known hosts, inventory
# --------------------------------------------------------------------------------------------------

def create_lab_dir(lab: Lab) -> None:
    os.makedirs(lab.ssh_dir, mode=0o700, exist_ok=True)
    os.chmod(lab.dir, 0o700)
    save_lab(lab)


def create_client_key(lab: Lab) -> None:
    for path in (lab.key, lab.key + '.pub'):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', client_key_comment(lab.name), '-f', lab.key],
        f'generate the SSH key of lab {lab.name}')


def create_bridge(lab: Lab, links: dict) -> None:
    if lab.bridge not in links:
        run(['ip', 'link', 'add', lab.bridge, 'type', 'bridge'], f'create the bridge {lab.bridge}')
    # A bridge without a MAC of its own takes the lowest of its ports' and changes it as hosts come and go,
    # which leaves the hosts' ARP entries for the controller stale. Give it a fixed one.
    run(['ip', 'link', 'set', lab.bridge, 'address', mac_for(lab.bridge_address.ip)], f'set the MAC of {lab.bridge}')
    run(['ip', 'link', 'set', lab.bridge, 'alias', link_alias(lab.name)], f'label the bridge {lab.bridge}')
    disable_ipv6(lab.bridge)
    run(['ip', 'address', 'replace', str(lab.bridge_address), 'dev', lab.bridge], f'address the bridge {lab.bridge}')
    run(['ip', 'link', 'set', lab.bridge, 'up'], f'bring the bridge {lab.bridge} up')


def disable_ipv6(interface: str) -> None:
    """No IPv6 on lab links: no router solicitations or multicast listener reports leave a lab host."""
    with contextlib.suppress(FileNotFoundError):
        with open(f'/proc/sys/net/ipv6/conf/{interface}/disable_ipv6', 'w', encoding='ascii') as handle:
            handle.write('1')


def ensure_lab_dir(changes: Changes, lab: Lab) -> bool:
    """The lab's directory and client key; True when the key is (or, in check mode, would be) made now."""
    if not os.path.isfile(lab.state_file):
        changes.make(f'create {lab.dir}', create_lab_dir, lab)
    if not (os.path.isfile(lab.key) and os.path.isfile(lab.key + '.pub')):
        changes.make(f'generate the lab SSH key {lab.key}', create_client_key, lab)
        return True
    return False


def ensure_bridge(changes: Changes, lab: Lab) -> None:
    links = links_by_name()
    bridge = links.get(lab.bridge)
    ready = (bridge is not None and bridge.get('linkinfo', {}).get('info_kind') == 'bridge'
             and str(lab.bridge_address) in link_addresses(bridge) and 'UP' in bridge.get('flags', [])
             and bridge.get('address') == mac_for(lab.bridge_address.ip)
             and bridge.get('ifalias') == link_alias(lab.name))
    if not ready:
        changes.make(f'create the bridge {lab.bridge} with {lab.bridge_address}', create_bridge, lab, links)


def known_host_entries(lab: Lab) -> list[tuple[str, str]]:
    entries = []
    for host in sorted(lab.hosts.values(), key=lambda record: record.position):
        public_key = read_file(host.host_public_key)
        if public_key:
            key_type, key_data = public_key.split()[:2]
            entries.append((str(host.address.ip), f'{key_type} {key_data}'))
    return entries


def ensure_known_hosts(changes: Changes, lab: Lab, controller: dict) -> None:
    body = render_known_hosts(known_host_entries(lab))
    # In check mode a host still to be copied has no host key yet; its new key will change both files.
    keys_pending = changes.check and any(not os.path.isfile(host.marker) for host in lab.hosts.values())
    if keys_pending or read_file(lab.known_hosts) != body:
        changes.make(f'write {lab.known_hosts}', write_file_atomically, lab.known_hosts, body, 0o644)
    current = read_file(SYSTEM_KNOWN_HOSTS)
    wanted = replace_block(current or '', lab.name, body)
    if keys_pending or current != wanted:
        changes.make(f'write the host keys of lab {lab.name} into {SYSTEM_KNOWN_HOSTS} (for paramiko)',
                     write_system_known_hosts, wanted, current is None, controller)


def write_system_known_hosts(content: str, creating: bool, controller: dict) -> None:
    if creating:
        controller['created_system_known_hosts'] = True
        save_controller(controller)
    write_file_atomically(SYSTEM_KNOWN_HOSTS, content, 0o644)


def ensure_inventory(changes: Changes, lab: Lab) -> None:
    current = read_file(lab.inventory)
    wanted = render_inventory(lab)
    if current is not None and not current.startswith(inventory_marker(lab.name)):
        raise LabError(f'{lab.inventory} exists and was not written by labctl for lab "{lab.name}": '
                       f'move it away or pass another --inventory.')
    if current != wanted:
        changes.make(f'write the inventory {lab.inventory}', write_file_atomically, lab.inventory, wanted, 0o644)


# Things on the controller that several labs share; labctl undoes them when the last lab goes.
CONTROLLER_FILE = os.path.join(STATE_ROOT, 'controller.json')


def load_controller() -> dict:
    try:
        with open(CONTROLLER_FILE, encoding='utf-8') as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def save_controller(controller: dict) -> None:
    write_file_atomically(CONTROLLER_FILE, json.dumps(controller, indent=2, sort_keys=True) + '\n', 0o600)


# --------------------------------------------------------------------------------------------------
# One host: root file system, network namespace, veth, and the namespaced sshd
# --------------------------------------------------------------------------------------------------

SSHD_CONFIG = """\
# Written by labctl: root logs in with the lab's key only, as on a lab machine an instructor prepared.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
# Ansible opens many sessions at once (forks, pipelining); refuse none of them.
MaxStartups 100
MaxSessions 100
"""


def provision_rootfs(lab: Lab, host: HostRecord, base: BaseImage) -> None:
    """Copy the base into the host's root and make it this host: name, machine id, keys, sshd."""
    if os.path.lexists(host.dir):
        remove_tree(host.dir)
    os.makedirs(host.rootfs, mode=0o755)
    run(['tar', '--extract', '--preserve-permissions', '--numeric-owner', '--file', base.tarball,
         '--directory', host.rootfs], f'copy the base root file system into {host.rootfs}')
    root = host.rootfs
    for old_key in glob.glob(os.path.join(root, 'etc', 'ssh', 'ssh_host_*')):
        os.unlink(old_key)
    run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'root@{host.name}',
         '-f', os.path.join(root, 'etc', 'ssh', 'ssh_host_ed25519_key')], f'generate the host key of {host.name}')
    write_inside(root, '/etc/hostname', host.name + '\n')
    write_inside(root, '/etc/hosts', f'127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n')
    write_inside(root, '/etc/resolv.conf', '# The unboxed lab has no DNS: its hosts reach only each other by address.\n')
    write_inside(root, '/etc/machine-id', os.urandom(16).hex() + '\n', 0o444)
    write_inside(root, '/etc/ssh/sshd_config.d/unboxed-lab.conf', SSHD_CONFIG)
    authorize_lab_key(lab, host)
    write_file_atomically(host.marker, json.dumps({'base': base.key, 'tarball': base.tarball}) + '\n')


def remove_tree(path: str) -> None:
    """Remove a host's directory, but never through a mount that is still there."""
    still_mounted = mountinfo.mounts_below(path) + [entry for entry in mountinfo.read_mountinfo() if entry.mount_point == path]
    if still_mounted:
        raise LabError(f'{path} cannot be removed: {", ".join(entry.mount_point for entry in still_mounted)} '
                       f'is still mounted there (labctl did not mount it; unmount it first).')
    shutil.rmtree(path)


def create_netns(host: HostRecord, controller: dict) -> None:
    run_netns_was_mounted = mountinfo.find_mount(NETNS_DIR) is not None
    run(['ip', 'netns', 'add', host.netns], f'create the network namespace {host.netns}')
    # The first `ip netns add` on a machine bind-mounts /run/netns onto itself; remember that it was us.
    if not run_netns_was_mounted and mountinfo.find_mount(NETNS_DIR) is not None:
        controller['mounted_run_netns'] = True
        save_controller(controller)
    run(['nsenter', f'--net={os.path.join(NETNS_DIR, host.netns)}', '--', 'sysctl', '-q', '-w',
         'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'],
        f'turn IPv6 off in {host.netns}')
    run(['ip', '-n', host.netns, 'link', 'set', 'lo', 'up'], f'bring lo up in {host.netns}')


def create_veth(lab: Lab, host: HostRecord, links: dict) -> None:
    if host.veth in links:
        run(['ip', 'link', 'delete', host.veth], f'remove the incomplete veth {host.veth}')
    with contextlib.suppress(LabError):
        run(['ip', '-n', host.netns, 'link', 'delete', 'eth0'], 'remove a stale eth0')
    run(['ip', 'link', 'add', host.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.netns],
        f'create the veth pair {host.veth} <-> {host.netns}:eth0')
    disable_ipv6(host.veth)
    run(['ip', 'link', 'set', host.veth, 'alias', link_alias(lab.name)], f'label {host.veth}')
    run(['ip', 'link', 'set', host.veth, 'master', lab.bridge], f'attach {host.veth} to {lab.bridge}')
    run(['ip', 'link', 'set', host.veth, 'up'], f'bring {host.veth} up')
    run(['ip', '-n', host.netns, 'link', 'set', 'eth0', 'address', host.mac], f'set the MAC of {host.name}')
    run(['ip', '-n', host.netns, 'address', 'add', str(host.address), 'dev', 'eth0'], f'address {host.name}')
    run(['ip', '-n', host.netns, 'link', 'set', 'eth0', 'up'], f'bring eth0 of {host.name} up')
    # A host recreated on an address the controller has cached in ARP: forget the old entry.
    run(['ip', 'neighbour', 'flush', 'to', str(host.address.ip), 'dev', lab.bridge], f'flush ARP for {host.address.ip}')


def veth_ready(lab: Lab, host: HostRecord, links: dict) -> bool:
    outside = links.get(host.veth)
    if outside is None or outside.get('master') != lab.bridge or 'UP' not in outside.get('flags', []):
        return False
    inside = links_by_name(host.netns).get('eth0')
    return (inside is not None and inside.get('address') == host.mac and str(host.address) in link_addresses(inside)
            and 'UP' in inside.get('flags', []))


def start_host(host: HostRecord) -> None:
    """Start the host's init in new mount, PID, UTS and IPC namespaces, inside its network namespace."""
    stop_host(host)
    argv = ['nsenter', f'--net={os.path.join(NETNS_DIR, host.netns)}', '--',
            'unshare', '--mount', '--pid', '--uts', '--ipc', '--fork', '--propagation', 'private', '--',
            sys.executable, SCRIPT, '_boot', '--root', host.rootfs, '--hostname', host.name]
    with open(host.console_log, 'ab') as console:
        console.write(f'--- {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} {shell_join(argv)}\n'.encode())
        console.flush()
        # A session of its own: the host outlives labctl and no terminal's hangup reaches it.
        supervisor = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                      cwd='/', start_new_session=True)
    host.supervisor = process.identity_of(supervisor.pid)
    init_found = wait_until(lambda: bool(process.children_of(supervisor.pid)) or supervisor.poll() is not None, START_TIMEOUT)
    children = process.children_of(supervisor.pid) if init_found else []
    if not children:
        raise LabError(f'{host.name} did not start: {tail(host.console_log)}')
    host.init = process.ProcessIdentity(children[0].pid, children[0].start_time)
    address = str(host.address.ip)
    answered = wait_until(lambda: ssh_banner(address, 0.5) is not None or not process.is_running(host.init), START_TIMEOUT, 0.1)
    if not answered or not process.is_running(host.init):
        stop_host(host)  # a host that does not answer is not left half-started
        raise LabError(f'sshd on {host.name} ({address}) did not answer within {START_TIMEOUT:.0f} s: {tail(host.console_log)}')


def tail(path: str, lines: int = 8) -> str:
    text = read_file(path) or ''
    return 'console log: ' + ' | '.join(text.strip().splitlines()[-lines:]) if text.strip() else 'no console output'


def stop_host(host: HostRecord) -> None:
    """Stop the host's init; its PID namespace dies with it, so every process of the host goes too."""
    inits = [identity for identity in (host.init,) if identity and process.is_same_process(identity)]
    # Without a record (a labctl interrupted between start and save), the init is found through its netns.
    inits += [identity for identity in namespace_inits_in_netns(host.netns) if identity not in inits]
    for init in inits:
        process.send_signal(init, signal.SIGTERM)
    for init in inits:
        if not wait_until(lambda init=init: not process.is_running(init), STOP_TIMEOUT):
            process.send_signal(init, signal.SIGKILL)
            wait_until(lambda init=init: not process.is_running(init), STOP_TIMEOUT)
    supervisor = host.supervisor
    if supervisor and process.is_same_process(supervisor):
        # unshare exits once its child is gone; a supervisor still there had no child to wait for.
        if not wait_until(lambda: not process.is_running(supervisor), STOP_TIMEOUT):
            process.send_signal(supervisor, signal.SIGKILL)
    host.init = None
    host.supervisor = None


def host_running(host: HostRecord) -> bool:
    """The recorded init is alive and lives in the host's named network namespace.

    An init left in a namespace whose name was deleted and made again would answer nobody.
    """
    if not process.is_running(host.init):
        return False
    inode = netns_inode(host.netns)
    return inode is not None and namespaces.namespace_inode(host.init.pid, 'net') == inode


def authorized_keys_path(host: HostRecord) -> str | None:
    return paths.resolve_inside(host.rootfs, '/root/.ssh/authorized_keys')


def authorize_lab_key(lab: Lab, host: HostRecord) -> None:
    """Put the lab's public key in root's authorized_keys on the host in place of an earlier lab key,
    keeping any other key there."""
    public_key = read_file(lab.key + '.pub')
    path = authorized_keys_path(host)
    kept = [line for line in (read_file(path) or '').splitlines() if not line.endswith(' ' + client_key_comment(lab.name))]
    os.makedirs(os.path.join(host.rootfs, 'root', '.ssh'), mode=0o700, exist_ok=True)
    write_inside(host.rootfs, '/root/.ssh/authorized_keys', ''.join(line + '\n' for line in kept) + public_key, 0o600)


def lab_key_authorized(lab: Lab, host: HostRecord) -> bool:
    public_key = read_file(lab.key + '.pub')
    path = authorized_keys_path(host)
    return bool(public_key and path and public_key.strip() in (read_file(path) or '').splitlines())


def ensure_authorized_key(changes: Changes, lab: Lab, host: HostRecord, key_made_now: bool) -> None:
    """A lab key made again (its file was lost) must reach the hosts that were already there."""
    if not os.path.isfile(host.marker):
        return  # copied just now (or about to be, in check mode) with the current key
    if key_made_now or not lab_key_authorized(lab, host):
        changes.make(f'authorize the lab key on {host.name}', authorize_lab_key, lab, host)


def ensure_rootfs(changes: Changes, lab: Lab, hosts: list[HostRecord], base: BaseImage | None) -> None:
    changes.make_together((f'copy the base into {host.rootfs} and make it {host.name}', provision_rootfs, lab, host, base)
                          for host in hosts)


def ensure_host(changes: Changes, lab: Lab, host: HostRecord, controller: dict) -> None:
    if not netns_exists(host.netns):
        changes.make(f'create the network namespace {host.netns}', create_netns, host, controller)
    links = links_by_name()
    if changes.check and not netns_exists(host.netns):
        ready = False
    else:
        ready = veth_ready(lab, host, links)
    if not ready:
        changes.make(f'connect {host.name} to {lab.bridge} as {host.address} ({host.mac})', create_veth, lab, host, links)
    if not host_running(host):
        changes.make(f'start {host.name}: tini and sshd in new mount, PID, UTS and IPC namespaces', start_host, host)
        if not changes.check:
            save_lab(lab)


def remove_host(lab: Lab, host: HostRecord) -> None:
    stop_host(host)
    # The veth first: it takes its peer along at once, while a deleted namespace frees its links later.
    delete_link(host.veth)
    if netns_exists(host.netns):
        run(['ip', 'netns', 'delete', host.netns], f'remove the network namespace {host.netns}')
    if os.path.lexists(host.dir):
        remove_tree(host.dir)
    lab.hosts.pop(host.name, None)
    save_lab(lab)


def host_present(host: HostRecord, links: dict) -> bool:
    return (os.path.lexists(host.dir) or netns_exists(host.netns) or host.veth in links
            or bool(host.init and process.is_same_process(host.init)))


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------

def allocate_index(name: str) -> int:
    taken = {lab.index for lab in all_labs() if lab.name != name}
    existing_links = links_by_name()
    for index in range(1, MAX_LAB_INDEX + 1):
        if index not in taken and bridge_name(index) not in existing_links:
            return index
    raise LabError(f'All {MAX_LAB_INDEX} lab slots are in use: bring a lab down first (`labctl list` shows them).')


def subnet_problem(subnet: ipaddress.IPv4Network, name: str) -> str | None:
    if not subnet.is_private:
        return f'{subnet} is not a private network: a lab uses addresses nobody else does.'
    for lab in all_labs():
        if lab.name != name and lab.subnet.overlaps(subnet):
            return f'{subnet} overlaps lab "{lab.name}" ({lab.subnet}).'
    for network in used_subnets():
        if network.overlaps(subnet) and network.prefixlen < 32:
            return f'{subnet} overlaps {network}, which this machine already routes.'
    return None


def choose_subnet(index: int, name: str, requested: str | None) -> ipaddress.IPv4Network:
    if requested:
        try:
            subnet = ipaddress.ip_network(requested)
        except ValueError as error:
            raise LabError(f'--subnet {requested} is not a network: {error} (write it like 10.213.7.0/24).') from error
        problem = subnet_problem(subnet, name)
        if problem:
            raise LabError(problem)
        return subnet
    problem = subnet_problem(default_subnet(index), name)
    if not problem:
        return default_subnet(index)
    for candidate in ADDRESS_POOL.subnets(new_prefix=24):
        if candidate.network_address != ADDRESS_POOL.network_address and not subnet_problem(candidate, name):
            return candidate
    raise LabError(f'No free /24 in {ADDRESS_POOL} for lab "{name}": pass --subnet.')


def command_up(args) -> dict:
    require_root()
    with global_lock(create=not args.check):
        controller = load_controller()
        lab = load_lab(args.lab)
        inventory = os.path.abspath(args.inventory) if args.inventory else None
        if lab is None:
            index = allocate_index(args.lab)
            lab = Lab(name=args.lab, index=index, subnet=choose_subnet(index, args.lab, args.subnet),
                      host_prefix=args.host_prefix, inventory=inventory or DEFAULT_INVENTORY)
        else:
            if args.subnet and ipaddress.ip_network(args.subnet) != lab.subnet:
                raise LabError(f'Lab "{lab.name}" already uses {lab.subnet}: run `labctl down --lab {lab.name}` to change its subnet.')
            if args.host_prefix != lab.host_prefix:
                raise LabError(f'Lab "{lab.name}" names its hosts {lab.host_prefix}N: run `labctl down --lab {lab.name}` to rename them.')
            if inventory and inventory != lab.inventory:
                raise LabError(f'Lab "{lab.name}" writes its inventory to {lab.inventory}: run `labctl down --lab {lab.name}` first '
                               f'to move it.')
        wanted = host_names(lab.host_prefix, args.hosts)
        for position, name in enumerate(wanted, 1):
            host_address(lab.subnet, position)  # fails early when the subnet is too small
            lab.hosts.setdefault(name, lab.new_host(name, position))
        changes = Changes(args.check)
        # The base matters only to hosts still to be copied: hosts already there never wait for a rebuild.
        to_copy = [lab.hosts[name] for name in wanted if not os.path.isfile(lab.hosts[name].marker)]
        base = ensure_base(changes) if to_copy else None
        key_made_now = ensure_lab_dir(changes, lab)
        ensure_bridge(changes, lab)
        for name in sorted(set(lab.hosts) - set(wanted)):
            changes.make(f'remove {name}', remove_host, lab, lab.hosts[name])
        for name in wanted:
            ensure_authorized_key(changes, lab, lab.hosts[name], key_made_now)
        ensure_rootfs(changes, lab, to_copy, base)
        for name in wanted:
            ensure_host(changes, lab, lab.hosts[name], controller)
        ensure_known_hosts(changes, lab, controller)
        ensure_inventory(changes, lab)
        if not changes.check and changes.changed:
            save_lab(lab)
        return lab_result(lab, changes)


def command_stop(args) -> dict:
    require_root()
    with global_lock(create=False):
        lab = load_lab(args.lab)
        if lab is None:
            raise LabError(f'There is no lab "{args.lab}" (labctl up --lab {args.lab} creates it).')
        unknown = [name for name in args.host if name not in lab.hosts]
        if unknown:
            raise LabError(f'Lab "{lab.name}" has no host {", ".join(unknown)}; it has {", ".join(lab.hosts)}.')
        changes = Changes(args.check)
        for name in args.host:
            host = lab.hosts[name]
            if host_running(host) or namespace_inits_in_netns(host.netns):
                changes.make(f'stop {name}', stop_host, host)
        if not changes.check and changes.changed:
            save_lab(lab)
        return lab_result(lab, changes)


def command_down(args) -> dict:
    require_root()
    with global_lock(create=False):
        controller = load_controller()
        changes = Changes(args.check)
        lab = load_lab(args.lab)
        links = links_by_name()
        recorded = sorted(lab.hosts.values(), key=lambda record: record.position) if lab else []
        for host in recorded:
            if host_present(host, links):
                changes.make(f'remove {host.name} (processes, {host.netns}, {host.veth}, {host.dir})', remove_host, lab, host)
        # What the kernel still has of this lab beyond its record: namespaces by name, links by alias.
        handled_netns = {host.netns for host in recorded}
        handled_links = {host.veth for host in recorded}
        prefix = netns_name(args.lab, '')
        for name in sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []:
            if name.startswith(prefix) and name not in handled_netns:
                changes.make(f'remove the network namespace {name}', remove_stray_netns, name)
        for name, link in sorted(links.items()):
            if link.get('ifalias') == link_alias(args.lab) and name not in handled_links:
                changes.make(f'remove the link {name}', delete_link, name)
        # Without a record, the default inventory is the one place this lab's inventory can be found.
        inventory_path = lab.inventory if lab else DEFAULT_INVENTORY
        inventory = read_file(inventory_path)
        if inventory is not None and inventory.startswith(inventory_marker(args.lab)):
            changes.make(f'remove the inventory {inventory_path}', os.unlink, inventory_path)
        current_known_hosts = read_file(SYSTEM_KNOWN_HOSTS)
        known_hosts = current_known_hosts
        if current_known_hosts is not None:
            known_hosts = replace_block(current_known_hosts, args.lab, '')
            if known_hosts != current_known_hosts:
                changes.make(f'remove the host keys of lab {args.lab} from {SYSTEM_KNOWN_HOSTS}', write_file_atomically,
                             SYSTEM_KNOWN_HOSTS, known_hosts, 0o644)
        if os.path.lexists(lab_dir(args.lab)):
            changes.make(f'remove {lab_dir(args.lab)}', remove_tree, lab_dir(args.lab))
        if not any(other.name != args.lab for other in all_labs()):
            release_controller(changes, controller, args.lab, known_hosts)
        if args.purge and os.path.isdir(CACHE_DIR):
            changes.make(f'remove the cached base root file systems in {CACHE_DIR}', shutil.rmtree, CACHE_DIR)
        return {'changed': changes.changed, 'check': changes.check, 'lab': args.lab,
                'changes': changes.made, 'timings': changes.timings}


def delete_link(name: str) -> None:
    """Delete a link unless it is gone already: the kernel frees a deleted namespace's veth pairs on its own time."""
    if name not in links_by_name():
        return
    try:
        run(['ip', 'link', 'delete', name], f'remove the link {name}')
    except LabError:
        if name in links_by_name():
            raise


def remove_stray_netns(name: str) -> None:
    for init in namespace_inits_in_netns(name):
        process.send_signal(init, signal.SIGKILL)
        wait_until(lambda init=init: not process.is_running(init), STOP_TIMEOUT)
    run(['ip', 'netns', 'delete', name], f'remove the network namespace {name}')


def release_controller(changes: Changes, controller: dict, leaving: str, known_hosts: str | None) -> None:
    """With the last lab gone, undo what labctl did to the controller for all labs.

    ``known_hosts`` is the content /etc/ssh/ssh_known_hosts has once this lab's block is gone.
    """
    if controller.get('created_system_known_hosts') and known_hosts is not None and not known_hosts.strip():
        changes.make(f'remove {SYSTEM_KNOWN_HOSTS} (labctl created it)', os.unlink, SYSTEM_KNOWN_HOSTS)
    if controller.get('mounted_run_netns') and mountinfo.find_mount(NETNS_DIR) is not None:
        # By now this lab's namespaces are gone (or, in check mode, about to be); anybody else's keep it mounted.
        others = [name for name in os.listdir(NETNS_DIR) if not name.startswith(netns_name(leaving, ''))]
        if not others:
            changes.make(f'unmount {NETNS_DIR} (the first `ip netns add` mounted it)', run,
                         ['umount', NETNS_DIR], f'unmount {NETNS_DIR}')
    if os.path.exists(CONTROLLER_FILE):
        changes.make(f'remove {CONTROLLER_FILE}', os.unlink, CONTROLLER_FILE)


def command_status(args) -> dict:
    require_root()  # a host's namespaces and memory are readable by root only
    lab = load_lab(args.lab)
    if lab is None:
        return {'changed': False, 'lab': args.lab, 'exists': False, 'hosts': {}}
    return lab_result(lab, Changes(check=True), with_memory=True)


def command_list(args) -> dict:
    del args  # nothing to choose: every lab is listed
    labs = {lab.name: {'subnet': str(lab.subnet), 'bridge': lab.bridge, 'inventory': lab.inventory,
                       'hosts': sorted(lab.hosts, key=lambda name: lab.hosts[name].position)} for lab in all_labs()}
    return {'changed': False, 'labs': labs}


def command_build_base(args) -> dict:
    require_root()
    with global_lock(create=not args.check):
        changes = Changes(args.check)
        base = ensure_base(changes)
        return {'changed': changes.changed, 'tarball': base.tarball, 'key': base.key, 'mirrors': list(base.mirrors),
                'packages': list(BASE_PACKAGES), 'changes': changes.made, 'timings': changes.timings}


def host_memory_kib(host: HostRecord) -> int:
    """Resident memory of every process in the host's network namespace, plus its supervisor."""
    pids = set(pids_in_netns(host.netns))
    if host.supervisor and process.is_running(host.supervisor):
        pids.add(host.supervisor.pid)
    return sum(parse_vm_rss_kib(proc_status(pid)) for pid in pids)


def lab_result(lab: Lab, changes: Changes, with_memory: bool = False) -> dict:
    hosts = {}
    for host in sorted(lab.hosts.values(), key=lambda record: record.position):
        entry = {'address': str(host.address.ip), 'mac': host.mac, 'netns': host.netns, 'veth': host.veth,
                 'rootfs': host.rootfs, 'running': host_running(host),
                 'init': host.init.to_dict() if host.init else None}
        if with_memory:
            entry['memory_kib'] = host_memory_kib(host) if entry['running'] else 0
        hosts[host.name] = entry
    return {'changed': changes.changed, 'check': changes.check, 'lab': lab.name, 'subnet': str(lab.subnet),
            'bridge': lab.bridge, 'inventory': lab.inventory, 'key': lab.key, 'known_hosts': lab.known_hosts,
            'hosts': hosts, 'changes': changes.made, 'timings': changes.timings}


# --------------------------------------------------------------------------------------------------
# _boot: PID 1 of a new lab host. Runs inside the new namespaces, still seeing the controller's files.
# --------------------------------------------------------------------------------------------------

# (type, source, target inside the root, options). /sys read-only: a lab host must not reconfigure the machine.
KERNEL_MOUNTS = (
    ('proc', 'proc', '/proc', 'nosuid,nodev,noexec'),
    ('sysfs', 'sysfs', '/sys', 'ro,nosuid,nodev,noexec'),
    ('tmpfs', 'tmpfs', '/dev', 'nosuid,mode=0755,size=65536k'),
    ('devpts', 'devpts', '/dev/pts', 'nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5'),
    ('tmpfs', 'shm', '/dev/shm', 'nosuid,nodev,mode=1777'),
    ('tmpfs', 'tmpfs', '/run', 'nosuid,nodev,mode=0755'),
)
# (name, major, minor): the character devices a Debian userland expects, as a container runtime creates them.
DEVICE_NODES = (('null', 1, 3), ('zero', 1, 5), ('full', 1, 7), ('random', 1, 8), ('urandom', 1, 9), ('tty', 5, 0))
DEVICE_LINKS = (('fd', '/proc/self/fd'), ('stdin', '/proc/self/fd/0'), ('stdout', '/proc/self/fd/1'),
                ('stderr', '/proc/self/fd/2'), ('ptmx', 'pts/ptmx'))
OLD_ROOT = '.unboxed-old-root'
INIT_ARGV = ('/usr/bin/tini', '--', '/usr/sbin/sshd', '-D', '-e')


def boot(root: str, hostname: str) -> None:
    if os.getpid() != 1:
        raise LabError('_boot runs only as PID 1 of a new PID namespace; `labctl up` starts it.')
    root = os.path.realpath(root)
    # pivot_root needs the new root to be a mount point of its own.
    run(['mount', '--bind', root, root], f'bind-mount {root} onto itself')
    for fstype, source, target, options in KERNEL_MOUNTS:
        mount_point = paths.join_inside(root, target)
        os.makedirs(mount_point, exist_ok=True)
        run(['mount', '-t', fstype, '-o', options, source, mount_point], f'mount {fstype} on {target}')
        if target == '/dev':
            populate_dev(mount_point)
        if target == '/run':
            for directory in ('sshd', 'lock'):
                os.makedirs(os.path.join(mount_point, directory), mode=0o755)
    os.chdir(root)
    os.makedirs(OLD_ROOT, exist_ok=True)
    run(['pivot_root', '.', OLD_ROOT], f'pivot into {root}')
    os.chdir('/')
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(f'/{OLD_ROOT}'.encode(), MNT_DETACH) != 0:
        raise LabError(f'Could not detach the old root: {os.strerror(ctypes.get_errno())}')
    os.rmdir(f'/{OLD_ROOT}')
    socket.sethostname(hostname)
    os.execve(INIT_ARGV[0], list(INIT_ARGV), {'PATH': LAB_HOST_PATH, 'LANG': 'C.UTF-8'})


def populate_dev(dev: str) -> None:
    os.makedirs(os.path.join(dev, 'pts'), exist_ok=True)
    os.makedirs(os.path.join(dev, 'shm'), exist_ok=True)
    previous_umask = os.umask(0)
    try:
        for name, major, minor in DEVICE_NODES:
            os.mknod(os.path.join(dev, name), 0o666 | 0o020000, os.makedev(major, minor))
    finally:
        os.umask(previous_umask)
    for name, target in DEVICE_LINKS:
        os.symlink(target, os.path.join(dev, name))


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def lab_name(value: str) -> str:
    problem = name_problem('The lab name', value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def host_prefix(value: str) -> str:
    problem = name_problem('The host prefix', value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def host_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'the host count must be a whole number, got "{value}"') from None
    if not 1 <= count <= MAX_HOSTS:
        raise argparse.ArgumentTypeError(f'the host count must be between 1 and {MAX_HOSTS}, got {count}')
    return count


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog='labctl', description=__doc__.split('\n\n', maxsplit=1)[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest='command', required=True, metavar='COMMAND')

    def add(name, help_text, check=True):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument('--lab', type=lab_name, default=DEFAULT_LAB, help=f'lab name (default: {DEFAULT_LAB})')
        sub.add_argument('--json', action='store_true', help='print the result as one JSON object')
        if check:
            sub.add_argument('--check', action='store_true', help='print what would change and change nothing')
        return sub

    up = add('up', 'create or complete the lab and start its hosts')
    up.add_argument('--hosts', type=host_count, default=DEFAULT_HOST_COUNT, help=f'number of hosts (default: {DEFAULT_HOST_COUNT})')
    up.add_argument('--inventory', help=f'inventory file to write (default: {os.path.relpath(DEFAULT_INVENTORY, REPO)})')
    up.add_argument('--subnet', help=f'private IPv4 network for the lab (default: a free /24 of {ADDRESS_POOL})')
    up.add_argument('--host-prefix', type=host_prefix, default=DEFAULT_HOST_PREFIX,
                    help=f'hosts are named PREFIX1, PREFIX2... (default: {DEFAULT_HOST_PREFIX})')
    up.set_defaults(handler=command_up)

    down = add('down', 'stop the hosts and remove the lab; the cached base stays unless --purge')
    down.add_argument('--purge', action='store_true', help=f'also remove the cached base root file systems ({CACHE_DIR})')
    down.set_defaults(handler=command_down)

    stop = add('stop', 'stop hosts (their files and network stay; the next up starts them)')
    stop.add_argument('host', nargs='+', help='host names, e.g. lab2')
    stop.set_defaults(handler=command_stop)

    status = add('status', 'show the lab, its hosts and their memory', check=False)
    status.set_defaults(handler=command_status)

    listing = commands.add_parser('list', help='list the labs on this machine')
    listing.add_argument('--json', action='store_true', help='print the result as one JSON object')
    listing.set_defaults(handler=command_list)

    build = commands.add_parser('build-base', help='build the cached base root file system now')
    build.add_argument('--json', action='store_true')
    build.add_argument('--check', action='store_true')
    build.set_defaults(handler=command_build_base)

    boot_parser = commands.add_parser('_boot')  # internal: PID 1 of a new host
    boot_parser.add_argument('--root', required=True)
    boot_parser.add_argument('--hostname', required=True)
    boot_parser.set_defaults(handler=None)
    return top


def print_human(command: str, result: dict) -> None:
    prefix = 'would ' if result.get('check') else ''
    if command in ('up', 'down', 'stop', 'build-base'):
        for change in result.get('changes', []):
            print(f'  {prefix}{change}')
        if not result.get('changes'):
            print('  nothing to change')
    for name, lab in result.get('labs', {}).items():
        print(f"  {name:<24} {lab['subnet']:<18} {len(lab['hosts'])} hosts   {lab['inventory']}")
    for name, host in result.get('hosts', {}).items():
        state = 'running' if host['running'] else 'stopped'
        memory = f", {host['memory_kib'] / 1024:.1f} MiB" if host.get('memory_kib') else ''
        print(f"  {name:<8} {host['address']:<15} {state}{memory}")
    if result.get('inventory') and result.get('hosts'):
        print(f"  inventory: {result['inventory']}")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == '_boot':
        try:
            boot(args.root, args.hostname)
        except (LabError, OSError) as error:
            print(f'labctl _boot: {error}', file=sys.stderr)
        return 1
    try:
        result = args.handler(args)
    except LabError as error:
        if args.json:
            print(json.dumps({'failed': True, 'changed': False, 'msg': str(error)}))
        print(f'labctl: {error}', file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_human(args.command, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
