# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the controller serves to a lab's seats for ansible-pull (docs/pull.md), on the lab's own network only.

``labctl serve`` starts, bound to the lab's bridge address and nothing else:

- ``git daemon`` (read-only, port 9418) for one repository: the seats clone ``git://BRIDGE/NAME``;
- Python's ``http.server`` (port 8080) for one directory of files, the controller's base archives: a seat
  fetches ``http://BRIDGE:8080/ARCHIVE`` as a classroom's seats would fetch it from the instructor's web server.

Both are known by PID and start time (process.py), recorded in the lab's directory, stopped by ``labctl serve
--stop`` and by ``labctl down``. A second ``serve`` with the same paths changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

from ansible_collections.unboxed.lab.plugins.module_utils import process

from .changes import Changes
from .state import Lab
from .system import LabError, read_file, wait_until, write_file_atomically

GIT_PORT = 9418
HTTP_PORT = 8080
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def record_path(lab: Lab) -> str:
    return os.path.join(lab.dir, 'serve.json')


def log_path(lab: Lab, what: str) -> str:
    return os.path.join(lab.dir, f'serve-{what}.log')


def git_url(lab: Lab, repository: str) -> str:
    return f'git://{lab.bridge_address.ip}/{os.path.basename(os.path.normpath(repository))}'


def files_url(lab: Lab) -> str:
    return f'http://{lab.bridge_address.ip}:{HTTP_PORT}/'


def git_daemon_argv(git: str, address: str, repository: str) -> list[str]:
    """git daemon for exactly one repository: its parent is the base path, the repository the one allowed path
    (its whitelist), read-only (upload-pack is git daemon's only default service)."""
    repository = os.path.normpath(repository)
    return [git, 'daemon', f'--listen={address}', f'--port={GIT_PORT}', '--reuseaddr', '--export-all',
            f'--base-path={os.path.dirname(repository)}', '--informative-errors', repository]


def http_argv(address: str, directory: str) -> list[str]:
    return [sys.executable, '-m', 'http.server', '--bind', address, '--directory', directory, str(HTTP_PORT)]


def wanted_servers(lab: Lab, repository: str, files: str | None) -> dict[str, list[str]]:
    git = shutil.which('git')
    if not git:
        raise LabError('git is not installed on this machine: `apt-get install git` (git daemon serves the repository).')
    address = str(lab.bridge_address.ip)
    servers = {'git': git_daemon_argv(git, address, repository)}
    if files:
        servers['files'] = http_argv(address, os.path.abspath(files))
    return servers


def read_record(lab: Lab) -> dict:
    try:
        return json.loads(read_file(record_path(lab)) or '{}')
    except ValueError:
        return {}


def running_servers(lab: Lab) -> dict[str, dict]:
    """The recorded servers whose process (same PID, same start time) still runs."""
    running = {}
    for name, entry in read_record(lab).items():
        identity = process.ProcessIdentity.from_dict(entry.get('process'))
        if identity and process.is_running(identity):
            running[name] = entry
    return running


def port_answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_servers(lab: Lab, servers: dict[str, list[str]]) -> None:
    record = {}
    ports = {'git': GIT_PORT, 'files': HTTP_PORT}
    address = str(lab.bridge_address.ip)
    for name, argv in servers.items():
        with open(log_path(lab, name), 'ab') as log:
            # A session of its own: a signal to the labctl that started it (Ctrl-C) does not reach it.
            started = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd='/')
        identity = process.identity_of(started.pid)
        record[name] = {'argv': argv, 'process': identity.to_dict() if identity else None}
        write_file_atomically(record_path(lab), json.dumps(record, indent=2) + '\n', 0o600)
        if not wait_until(lambda: port_answers(address, ports[name]) or started.poll() is not None, START_TIMEOUT, 0.1) \
                or started.poll() is not None:
            stop_servers(lab)
            raise LabError(f'{argv[0]} did not start listening on {address}:{ports[name]}; see {log_path(lab, name)}.')


def stop_servers(lab: Lab) -> None:
    for entry in read_record(lab).values():
        identity = process.ProcessIdentity.from_dict(entry.get('process'))
        if identity and process.is_same_process(identity):
            process.send_signal(identity, signal.SIGTERM)
            if not process.wait_until_not_running(identity, STOP_TIMEOUT):
                process.send_signal(identity, signal.SIGKILL)
                process.wait_until_not_running(identity, STOP_TIMEOUT)
    if os.path.exists(record_path(lab)):
        os.unlink(record_path(lab))


def ensure_served(changes: Changes, lab: Lab, repository: str, files: str | None) -> None:
    if not os.path.isdir(os.path.join(repository, '.git')) and not os.path.isfile(os.path.join(repository, 'HEAD')):
        raise LabError(f'{repository} is not a git repository (git daemon serves the repository the seats pull from).')
    if files and not os.path.isdir(files):
        raise LabError(f'{files} is not a directory (--files: what the seats fetch over HTTP, e.g. the base archives).')
    servers = wanted_servers(lab, repository, files)
    running = running_servers(lab)
    if {name: entry['argv'] for name, entry in running.items()} == servers:
        return
    if read_record(lab):
        changes.make('stop what labctl served to the lab before', stop_servers, lab)
    changes.make(f'serve {git_url(lab, repository)}' + (f' and {files_url(lab)} ({files})' if files else ''), start_servers, lab, servers)


def ensure_not_served(changes: Changes, lab: Lab) -> None:
    if read_record(lab):
        changes.make(f'stop the git daemon and file server of lab {lab.name}', stop_servers, lab)


# --- what the tests and the benchmark serve -----------------------------------------------------------

def copy_work_tree(source: str, destination: str) -> None:
    """``source``'s work tree as it is now into ``destination``: the files git tracks and the new ones it does not
    ignore (uncommitted edits included), links kept as links (collections/ansible_collections/unboxed/lab leads
    back to the project's root) - what a push from that tree, or AWX's checkout of what would be committed, runs."""
    listed = subprocess.run(['git', '-C', source, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                            capture_output=True, check=True).stdout
    for relative in (name for name in listed.decode().split('\0') if name):
        origin = os.path.join(source, relative)
        target = os.path.join(destination, relative)
        if not os.path.lexists(origin):
            continue  # deleted in the work tree, not yet in git
        if os.path.lexists(target):
            continue  # listed twice: a tracked file with changes
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(origin):
            os.symlink(os.readlink(origin), target)
        else:
            shutil.copy2(origin, target)


def snapshot_repository(source: str, destination: str) -> str:
    """A repository at ``destination`` with one commit: ``source``'s work tree as it is now (copy_work_tree), so
    that seats pull the tree under test. Returns the commit."""
    os.makedirs(destination)
    copy_work_tree(source, destination)
    git = ['git', '-C', destination, '-c', 'user.name=labctl', '-c', 'user.email=labctl@localhost']
    for argv in (['init', '--quiet', '--initial-branch=main'], ['add', '--all'], ['commit', '--quiet', '--no-verify', '-m', 'snapshot']):
        subprocess.run(git + argv, capture_output=True, check=True)
    return subprocess.run(git + ['rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()


def publish_archives(archives, destination: str) -> list[str]:
    """Copy base archives into ``destination``, each with the SHA-256 file the base_rootfs role reads beside it,
    computed from the copy itself."""
    os.makedirs(destination, exist_ok=True)
    published = []
    for archive in archives:
        target = os.path.join(destination, os.path.basename(archive))
        shutil.copy2(archive, target)
        digest = hashlib.sha256()
        with open(target, 'rb') as handle:
            for block in iter(lambda: handle.read(1 << 20), b''):
                digest.update(block)
        write_file_atomically(target + '.sha256', digest.hexdigest() + '\n')
        published.append(target)
    return published
