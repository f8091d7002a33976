# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""labctl: the unboxed local lab, Debian hosts in Linux namespaces on this one machine, reached over SSH.

    labctl up     [--lab NAME] [--hosts N] [--releases trixie,bookworm] [--packages git,...] [--inventory PATH] [--subnet CIDR]
                  [--check] [--json]
    labctl down   [--lab NAME] [--purge] [--check] [--json]
    labctl stop   [--lab NAME] HOST...        stop hosts; the next `up` starts them again
    labctl status [--lab NAME] [--json]
    labctl list   [--json]                     the labs on this machine
    labctl serve  [--lab NAME] --repository DIR [--files DIR] | --stop   git daemon (and files over HTTP) for ansible-pull
    labctl build-base [--releases trixie,bookworm] [--check] [--json]

The command line: options, and how a result is printed (one JSON object with --json, lines for a person
otherwise). commands.py does the work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import addresses, boot, commands, image, inventory, releases, state
from .system import LabError

DEFAULT_LAB = 'default'
DEFAULT_HOST_COUNT = 3
DEFAULT_HOST_PREFIX = 'lab'


def lab_name(value: str) -> str:
    problem = state.name_problem('The lab name', value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def host_prefix(value: str) -> str:
    problem = state.name_problem('The host prefix', value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    if value == 'debian':
        raise argparse.ArgumentTypeError('The host prefix "debian" would name hosts debian12, debian13..., the names of the '
                                         'inventory\'s release groups: choose another prefix.')
    return value


def host_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'the host count must be a whole number, got "{value}"') from None
    if not 1 <= count <= addresses.MAX_HOSTS:
        raise argparse.ArgumentTypeError(f'the host count must be between 1 and {addresses.MAX_HOSTS}, got {count}')
    return count


def release_list(value: str | tuple | None) -> tuple | None:
    """--releases, checked in main() rather than by argparse, so that a wrong release reaches local_lab.yml as
    labctl's JSON message (argparse would only print its usage)."""
    if not isinstance(value, str):
        return value
    try:
        return releases.parse_releases(value)
    except ValueError as error:
        raise LabError(f'--releases: {error}.') from None


def package_list(value: str | tuple | None) -> tuple | None:
    """--packages, checked in main() as --releases is."""
    if not isinstance(value, str):
        return value
    try:
        return image.parse_packages(value)
    except ValueError as error:
        raise LabError(f'--packages: {error}.') from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog='labctl', description=__doc__.split('\n\n', maxsplit=1)[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    subcommands = top.add_subparsers(dest='command', required=True, metavar='COMMAND')

    def add(name, help_text, check=True):
        sub = subcommands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument('--lab', type=lab_name, default=DEFAULT_LAB, help=f'lab name (default: {DEFAULT_LAB})')
        sub.add_argument('--json', action='store_true', help='print the result as one JSON object')
        if check:
            sub.add_argument('--check', action='store_true', help='print what would change and change nothing')
        return sub

    up = add('up', 'create or complete the lab and start its hosts')
    up.add_argument('--hosts', type=host_count, default=DEFAULT_HOST_COUNT, help=f'number of hosts (default: {DEFAULT_HOST_COUNT})')
    up.add_argument('--releases', default=None,
                    help='Debian releases, given to the hosts in turn: "trixie,bookworm" makes host 1 trixie, host 2 bookworm, '
                         f'host 3 trixie... Codenames or versions ({releases.accepted_names()}). Default: the releases the lab '
                         f'has, and {",".join(releases.DEFAULT_RELEASES)} for a new lab. A host whose release changes is made again.')
    up.add_argument('--packages', default=None,
                    help='Debian packages the seats get beyond the base, e.g. "git,ansible-core" for ansible-pull (docs/pull.md); '
                         'they make a base of their own, so other labs\' bases stay as they are. Set when the lab is made.')
    up.add_argument('--inventory', help='inventory file to write (default: '
                                        f'{os.path.relpath(inventory.DEFAULT_INVENTORY, inventory.REPO)})')
    up.add_argument('--subnet', help=f'private IPv4 network for the lab (default: a free /24 of {addresses.ADDRESS_POOL})')
    up.add_argument('--host-prefix', type=host_prefix, default=DEFAULT_HOST_PREFIX,
                    help=f'hosts are named PREFIX1, PREFIX2... (default: {DEFAULT_HOST_PREFIX})')
    up.set_defaults(handler=commands.command_up)

    down = add('down', 'stop the hosts and remove the lab; the cached base stays unless --purge')
    down.add_argument('--purge', action='store_true', help=f'also remove the cached base root file systems ({image.CACHE_DIR})')
    down.set_defaults(handler=commands.command_down)

    stop = add('stop', 'stop hosts (their files and network stay; the next up starts them)')
    stop.add_argument('host', nargs='+', help='host names, e.g. lab2')
    stop.set_defaults(handler=commands.command_stop)

    serving = add('serve', 'serve a git repository (git daemon) and a directory (HTTP) to the lab\'s seats, on its bridge address only')
    serving.add_argument('--repository', help='the git repository the seats pull (served as git://BRIDGE/BASENAME)')
    serving.add_argument('--files', help='a directory the seats may fetch files from (http://BRIDGE:8080/), e.g. the base archives')
    serving.add_argument('--stop', action='store_true', help='stop serving (`labctl down` stops it too)')
    serving.set_defaults(handler=commands.command_serve)

    status = add('status', 'show the lab, its hosts and their memory', check=False)
    status.set_defaults(handler=commands.command_status)

    listing = subcommands.add_parser('list', help='list the labs on this machine')
    listing.add_argument('--json', action='store_true', help='print the result as one JSON object')
    listing.set_defaults(handler=commands.command_list)

    build = subcommands.add_parser('build-base', help='build the cached base root file systems now')
    build.add_argument('--json', action='store_true', help='print the result as one JSON object')
    build.add_argument('--check', action='store_true', help='print what would change and change nothing')
    build.add_argument('--releases', default=releases.DEFAULT_RELEASES,
                       help=f'the releases to build (default: {",".join(releases.DEFAULT_RELEASES)})')
    build.set_defaults(handler=commands.command_build_base)

    boot_parser = subcommands.add_parser('_boot')  # internal: PID 1 of a new host
    boot_parser.add_argument('--root', required=True)
    boot_parser.add_argument('--hostname', required=True)
    boot_parser.add_argument('--cgroup', action='append', default=[], help='a seat cgroup on the machine (repeated)')
    boot_parser.add_argument('--cgroup-mounts', default='[]', help='what to mount at /sys/fs/cgroup, as JSON')
    boot_parser.set_defaults(handler=None)
    return top


def print_human(command: str, result: dict) -> None:
    prefix = 'would ' if result.get('check') else ''
    if command in ('up', 'down', 'stop', 'build-base', 'serve'):
        for change in result.get('changes', []):
            print(f'  {prefix}{change}')
        if not result.get('changes'):
            print('  nothing to change')
    for name, lab in result.get('labs', {}).items():
        print(f"  {name:<24} {lab['subnet']:<18} {len(lab['hosts'])} hosts   {','.join(lab['releases']):<16} {lab['inventory']}")
    for name, host in result.get('hosts', {}).items():
        running = 'running' if host['running'] else 'stopped'
        memory = f", {host['memory_kib'] / 1024:.1f} MiB" if host.get('memory_kib') else ''
        installed = host.get('installed_release')
        if installed:
            release = f"{releases.describe(installed)} {host.get('debian_version') or ''}".rstrip()
            release += f", to be {host['release']}" if installed != host['release'] else ''
        else:
            release = f"{releases.describe(host['release'])}, not copied yet"
        print(f"  {name:<8} {host['address']:<15} {release:<28} {running}{memory}")
    if result.get('inventory') and result.get('hosts'):
        print(f"  inventory: {result['inventory']}")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == '_boot':
        try:
            boot.boot(args.root, args.hostname, args.cgroup, args.cgroup_mounts)
        except (LabError, OSError) as error:
            print(f'labctl _boot: {error}', file=sys.stderr)
        return 1
    try:
        if hasattr(args, 'releases'):
            args.releases = release_list(args.releases)
        if hasattr(args, 'packages'):
            args.packages = package_list(args.packages)
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
