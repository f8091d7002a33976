"""Fixtures for system tests: real mounts and namespaces on this machine, as root, through Ansible.

Modules are run with the ``ansible`` CLI against localhost (the same TaskExecutor, AnsiballZ
wrapping and module transfer as a playbook task); the tree callback hands back each result.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo, process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'callback_plugins')


def ansible_env(tmp_dir, record_to=None):
    """The environment every test runs Ansible with: the repository's ansible.cfg, Ansible's home and temp
    files in the test's own directory, plain output, and the recording callback instead of the lab report
    (which would write lab_report/ into the clone); with ``record_to`` whole results are recorded there."""
    env = dict(os.environ)
    env.update({
        'ANSIBLE_CONFIG': os.path.join(REPO, 'ansible.cfg'),
        'ANSIBLE_HOME': os.path.join(tmp_dir, 'ansible-home'),
        'ANSIBLE_LOCAL_TEMP': os.path.join(tmp_dir, 'ansible-tmp'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_DEPRECATION_WARNINGS': '0',
        'ANSIBLE_LOAD_CALLBACK_PLUGINS': '1',
        'ANSIBLE_STDOUT_CALLBACK': 'default',
        'ANSIBLE_CALLBACK_PLUGINS': CALLBACK_DIR,
        'ANSIBLE_CALLBACKS_ENABLED': 'record_results',
        'PATH': BIN + os.pathsep + env.get('PATH', ''),
    })
    if record_to:
        env['UNBOXED_RECORD_RESULTS'] = record_to
    return env


def run_adhoc(tmp_dir, inventory, pattern, module, args=None, extra=(), env=None):
    """``ansible PATTERN -m MODULE`` against a lab inventory; returns (exit code, {host: result}, completed process).
    Each host's whole result comes from the tree callback (-t), in a directory of its own below ``tmp_dir``."""
    tree = tempfile.mkdtemp(prefix='tree-', dir=tmp_dir)
    argv = [os.path.join(BIN, 'ansible'), pattern, '-i', inventory, '-m', module, '-t', tree, *extra]
    if args is not None:
        argv += ['-a', args]
    completed = subprocess.run(argv, cwd=REPO, env=env or ansible_env(tmp_dir), capture_output=True, text=True,
                               check=False, timeout=300, stdin=subprocess.DEVNULL)
    results = {}
    for host in os.listdir(tree):
        with open(os.path.join(tree, host), encoding='utf-8') as handle:
            results[host] = json.load(handle)
    return completed.returncode, results, completed


class ModuleRunner:
    """Runs one unboxed.lab module on localhost through Ansible and returns its whole result dict."""

    def __init__(self, tmp_dir):
        self.tmp_dir = tmp_dir
        self.calls = 0

    def __call__(self, module, args, check=False, diff=False, extra=(), prefix=()):
        """``prefix`` runs the ansible CLI under another command (e.g. inside a chroot)."""
        self.calls += 1
        record = os.path.join(self.tmp_dir, f'result-{self.calls}.jsonl')
        argv = list(prefix) + [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
                               '-e', f'ansible_python_interpreter={sys.executable}',
                               '-m', f'unboxed.lab.{module}', '-a', json.dumps(args)]
        if check:
            argv.append('--check')
        if diff:
            argv.append('--diff')
        argv.extend(extra)
        env = ansible_env(self.tmp_dir, record_to=record)
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
        if not os.path.exists(record):
            raise AssertionError(f'ansible produced no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
        with open(record, encoding='utf-8') as handle:
            entries = [json.loads(line) for line in handle]
        assert len(entries) == 1, entries
        result = entries[0]['result']
        result['_status'] = entries[0]['status']
        # ansible-core 2.19 keeps the failed flag beside the result; the callback saw the status.
        result.setdefault('failed', entries[0]['status'] == 'failed')
        result['_rc'] = proc.returncode
        result['_stdout'] = proc.stdout
        return result


@pytest.fixture
def run_module(tmp_path):
    return ModuleRunner(str(tmp_path))


def require_root():
    if os.geteuid() != 0:
        pytest.skip('needs root: real mounts and namespaces')


@pytest.fixture
def workdir(tmp_path):
    """A scratch directory on a real (non-overlay) file system; unmounts anything left below it."""
    require_root()
    base = tmp_path / 'lab'
    base.mkdir()
    yield base
    unmount_below(str(base))


def unmount_below(path):
    for entry in reversed(mountinfo.mounts_below(path)):
        subprocess.run(['umount', '-l', entry.mount_point], check=False, capture_output=True)


def make_busybox_rootfs(root):
    """A tiny root file system: a static busybox and its applets, enough for sh, ps, ip and tail."""
    busybox = shutil.which('busybox')
    if not busybox:
        pytest.skip('busybox-static is not installed (make setup installs it)')
    os.makedirs(os.path.join(root, 'bin'), exist_ok=True)
    for name in ('proc', 'sys', 'dev', 'tmp', 'etc', 'root'):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    # The talk's container runs `tail -f /dev/null`: the root needs its own /dev/null device node.
    if not os.path.exists(os.path.join(root, 'dev', 'null')):
        os.mknod(os.path.join(root, 'dev', 'null'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(os.path.join(root, 'dev', 'null'), 0o666)
    shutil.copy2(busybox, os.path.join(root, 'bin', 'busybox'))
    applets = subprocess.run([busybox, '--list'], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = os.path.join(root, 'bin', applet)
        if not os.path.lexists(link):
            os.symlink('busybox', link)
    return root


@pytest.fixture
def busybox_rootfs(workdir):
    return make_busybox_rootfs(str(workdir / 'rootfs'))


def snapshot_tree(root):
    """Every path below root with its type, mode, size and content digest: to prove nothing changed."""
    import hashlib
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            digest = None
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, 'rb') as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            state[os.path.relpath(full, root)] = (st.st_mode, st.st_size, digest)
    return state


def read_text(path):
    with open(path, encoding='utf-8', errors='replace') as handle:
        return handle.read()


def snapshot_mounts(under=None):
    """mountinfo lines, or only those that mount at or below ``under``: other work on the machine
    (a lab being built, another test) mounts and unmounts concurrently, and is not ours to compare."""
    lines = read_text('/proc/self/mountinfo').splitlines()
    if under is not None:
        lines = [line for line in lines if mountinfo.parse_mountinfo_line(line).mount_point.startswith(str(under))]
    return lines


def user_exists(name):
    """Whether the account NAME is in this machine's passwd database."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def snapshot_processes():
    return sorted(name for name in os.listdir('/proc') if name.isdigit())


def descendants(ancestor):
    """Every live process below ``ancestor`` (children, grandchildren...): a test's own processes only."""
    parents = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            stat = process.read_proc_stat(int(name))
            if stat is not None:
                parents[stat.pid] = stat.ppid
    found = []
    for pid in parents:
        parent = pid
        while parent > 1:
            parent = parents.get(parent, 0)
            if parent == ancestor:
                found.append(pid)
                break
    return found


def module_pids(ancestor, module):
    """The AnsiballZ python running unboxed.lab.``module`` below ``ancestor`` (an ``ansible`` run the test
    started), to kill the module itself at a chosen instant."""
    script = f'AnsiballZ_{module}.py'
    found = []
    for pid in descendants(ancestor):
        argv = process.read_cmdline(pid) or []
        if len(argv) > 1 and argv[1].endswith(script):
            found.append(pid)
    return found


def kill_module_after(run, module, delay):
    """Wait for the AnsiballZ python of unboxed.lab.``module`` below ``run`` (a Popen of the ``ansible`` CLI),
    SIGKILL it ``delay`` seconds later (None: let it finish), wait for the CLI. Returns how long the module lived
    after it was seen (None when it never appeared)."""
    deadline = time.monotonic() + 60
    pids = []
    while not pids and run.poll() is None and time.monotonic() < deadline:
        pids = module_pids(run.pid, module)
        time.sleep(0.002)
    if not pids:
        run.communicate(timeout=120)
        return None
    started = time.monotonic()
    if delay is not None:
        time.sleep(delay)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    else:
        while any(os.path.exists(f'/proc/{pid}') for pid in pids):
            time.sleep(0.002)
    lived = time.monotonic() - started
    run.communicate(timeout=120)
    return lived
