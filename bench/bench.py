#!/usr/bin/env python
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long the talk takes to provision on N local lab hosts, beside Ansible's floor and a hand-written script.

Run through bench/run (it prepares the plotting venv). Two parts, each written to its own JSON under
bench/results/ and both rendered into bench/RESULTS.md and bench/time_vs_hosts.png:

  scaling   for each N: ansible all -m ping, site.yml first converge, rerun and --check, then
            bench/handwritten.sh first run and rerun; several runs, medians
  settings  at one N: site.yml rerun (and first converge) under speed settings: pipelining, SSH
            multiplexing cold and warm, forks, strategy, Mitogen, the lab_report callback; fact gathering

This is a measurement script, not a test: it asserts what each run must have done (changed on a first
converge, changed=0 on a rerun and a --check), never how long it may take.

Stopping: SIGTERM, SIGINT (Ctrl-C) or SIGHUP, to the bench or to its whole process group, ends the step that
is running with all its processes, takes the lab down (a further signal cannot interrupt that) and exits with
128 + the signal's number. Results reach RESULTS.md, the plot and results/*.json only when a run completes;
until then they are kept beside the logs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import ast
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / 'bench'
VENV_BIN = REPO / '.venv' / 'bin'
LABCTL = REPO / 'scripts' / 'labctl'
HANDWRITTEN = BENCH / 'handwritten.sh'
CONTROLLER_ARCHIVE_GLOB = 'debian-*.tar.gz'
CONTROLLER_ARCHIVE_DIR = Path('/var/cache/unboxed/base')
# Per host on the controller's disk: the lab host (~194 MB bookworm, ~156 MB trixie), the archive copy (~45 MB) and
# the unpacked base.
DISK_PER_HOST = 450 * 1024 * 1024
MEMORY_PER_HOST = 64 * 1024 * 1024
SETTLE_TIMEOUT = 90.0


class BenchError(RuntimeError):
    """A run did not do what it must (failed, or a rerun that changed something): its timing means nothing."""


def say(message: str) -> None:
    try:
        print(f'[{datetime.datetime.now():%H:%M:%S}] {message}', flush=True)
    except BrokenPipeError:
        # stdout was a pipe whose reader is gone, e.g. `bench/run | tee log` and the whole process group was sent
        # SIGTERM: tee died first. Carry on without stdout (as Python's documentation advises): the lab must still
        # go down, and an exception here would skip that.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def tell(message: str) -> None:
    """One line on stderr, written directly: safe inside a signal handler, and when stderr is gone."""
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f'{message}\n'.encode())


# --------------------------------------------------------------------------- stopping


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# After SIGTERM, how long a child's process group has to exit before the rest of it gets SIGKILL.
CHILD_STOP_GRACE = 10.0


class Stopped(BaseException):
    """The bench was told to stop by a signal. A BaseException, like KeyboardInterrupt, so that no handler of
    ordinary errors takes it for a failed run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """Turns the first SIGTERM, SIGINT or SIGHUP into Stopped, once.

    Where it is raised, the bench is usually waiting for a child: run_child then ends the child's process group,
    and run_bench() takes the lab down. Every later signal is only reported, so that nothing cuts that cleanup short
    (a `labctl down` killed halfway leaves the lab behind). Inside held(), the first signal is raised only when
    the section ends: a child must not be left running without a Popen object to stop it by.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.armed = True
        self.holding = 0

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            # A signal ignored by whoever started the bench stays ignored (nohup, `bench/run &` in a script).
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._handle)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ''

    def _handle(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signum
            if self.armed:
                if self.holding:
                    return  # raised when the held section ends
                self.armed = False
                raise Stopped(signum)
        tell(f'bench: {signal.Signals(signum).name} noted; the bench takes its lab down first, and nothing interrupts that')

    @contextlib.contextmanager
    def held(self):
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if self.received is not None and self.armed and not self.holding:
            self.armed = False
            raise Stopped(self.received)

    def disarm(self) -> None:
        """From here on (the cleanup), signals are noted and never raised."""
        self.armed = False


# Signal dispositions belong to the process; so does this.
STOP = StopSignals()


def run_child(argv: Sequence[str], **popen_kwargs) -> subprocess.CompletedProcess:
    """Run argv in a session (and process group) of its own and wait for it; stdin is /dev/null.

    Its own group, so that a signal to the bench's group cannot kill the child that takes the lab down, and so
    that a stopped child's own children (ansible's workers and ssh clients, the tar of `labctl up`) are ended
    with it rather than orphaned, racing the `labctl down` that follows.
    """
    process = None
    try:
        with STOP.held():
            process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, start_new_session=True, **popen_kwargs)
        stdout, stderr = process.communicate()
    except BaseException:
        if process is not None:
            end_process_group(process)
        raise
    finally:
        for pipe in (process.stdout, process.stderr) if process is not None else ():
            if pipe is not None:
                pipe.close()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def end_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the child's process group; SIGKILL to whatever is left of it once the child has exited or
    CHILD_STOP_GRACE has passed; then reap the child.

    The group's ID is the child's PID, and the child is reaped last: until then that PID cannot be given to
    another process, so these signals reach the bench's own processes only.
    """
    if process.returncode is not None:
        return  # reaped already: its PID may be somebody else's by now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_GRACE
    while not has_exited(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def has_exited(pid: int) -> bool:
    """Whether a child of ours has exited, without reaping it (WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped already


# --------------------------------------------------------------------------- the machine


def machine_facts() -> dict:
    cpu_model = ''
    for line in Path('/proc/cpuinfo').read_text(encoding='utf-8').splitlines():
        if line.startswith('model name'):
            cpu_model = line.split(':', 1)[1].strip()
            break
    meminfo = dict(line.split(':', 1) for line in Path('/proc/meminfo').read_text(encoding='utf-8').splitlines())
    mem_kib = int(meminfo['MemTotal'].split()[0])
    ansible_version = subprocess.run([str(VENV_BIN / 'ansible'), '--version'], capture_output=True, text=True, check=True).stdout
    first_line = ansible_version.splitlines()[0]  # "ansible [core 2.19.14]"
    os_release = dict(
        line.split('=', 1) for line in Path('/etc/os-release').read_text(encoding='utf-8').splitlines() if '=' in line
    )
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'cpu': cpu_model,
        'cores': os.cpu_count(),
        'memory_gib': round(mem_kib / 1024 / 1024, 1),
        'kernel': platform.release(),
        'os': os_release.get('PRETTY_NAME', '').strip('"'),
        'python': platform.python_version(),
        'ansible_core': first_line.split('core', 1)[1].strip(' ]') if 'core' in first_line else first_line,
        'openssh': subprocess.run(['ssh', '-V'], capture_output=True, text=True, check=False).stderr.strip(),
    }


def load_average() -> float:
    return float(Path('/proc/loadavg').read_text(encoding='utf-8').split()[0])


def block_device_of(path: str) -> str:
    source = subprocess.run(['findmnt', '--noheadings', '--output', 'SOURCE', '--target', path],
                            capture_output=True, text=True, check=True).stdout.strip()
    return Path(source).name


def disk_activity(device: str) -> tuple[int, int]:
    """(I/Os in flight, sectors written so far) of a block device, from /proc/diskstats."""
    for line in Path('/proc/diskstats').read_text(encoding='utf-8').splitlines():
        fields = line.split()
        if fields[2] == device:
            return int(fields[11]), int(fields[9])
    raise BenchError(f'block device {device} is not in /proc/diskstats')


def settle(device: str) -> float:
    """Flush and wait until the disk is idle, so one run's deletions (discards) do not slow the next run's writes."""
    started = time.monotonic()
    subprocess.run(['sync'], check=True)
    quiet_samples = 0
    written = disk_activity(device)[1]
    while quiet_samples < 2 and time.monotonic() - started < SETTLE_TIMEOUT:
        time.sleep(0.5)
        in_flight, now_written = disk_activity(device)
        quiet_samples = quiet_samples + 1 if in_flight == 0 and now_written == written else 0
        written = now_written
    return round(time.monotonic() - started, 2)


# --------------------------------------------------------------------------- CPU accounting

CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, iowait): CPU seconds this machine's cores have been busy since boot, and idle with a disk I/O
    outstanding - /proc/stat's first line (user and nice include the guests'; the time a hypervisor stole is neither)."""
    first_line = Path('/proc/stat').read_text(encoding='utf-8').split('\n', 1)[0]
    user, nice, system, _idle, iowait, irq, softirq = (int(value) for value in first_line.split()[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, iowait / CLOCK_TICKS


def cgroup_cpu_seconds(cgroups: Mapping[str, str]) -> float:
    """CPU seconds of a cgroup and every cgroup below it, from the directories labctl reports for a seat
    (`labctl up --json`): cpuacct.usage (v1, nanoseconds) or cpu.stat's usage_usec (v2)."""
    if cgroups.get('cpuacct'):
        return int(Path(cgroups['cpuacct'], 'cpuacct.usage').read_text(encoding='utf-8')) / 1e9
    if cgroups.get('unified'):
        for line in Path(cgroups['unified'], 'cpu.stat').read_text(encoding='utf-8').splitlines():
            key, _space, value = line.partition(' ')
            if key == 'usage_usec':
                return int(value) / 1e6
    raise BenchError(f'no CPU accounting in the seat\'s cgroups {dict(cgroups)}')


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children and their waited-for descendants (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PAGE_SIZE = os.sysconf('SC_PAGE_SIZE')


def pages_dirtied() -> int:
    """Pages written into the page cache since boot (/proc/vmstat nr_dirtied): what a run writes, counted when it
    writes rather than when the kernel later writes it back to the disk."""
    for line in Path('/proc/vmstat').read_text(encoding='utf-8').splitlines():
        key, _space, value = line.partition(' ')
        if key == 'nr_dirtied':
            return int(value)
    return 0


def cpu_sample(lab: Lab) -> dict[str, float]:
    busy, iowait = machine_cpu_seconds()
    return {'machine': busy, 'seats': lab.seats_cpu_seconds(), 'command': children_cpu_seconds(), 'iowait': iowait,
            'written_mb': pages_dirtied() * PAGE_SIZE / 1e6}


def cpu_used(before: Mapping[str, float], after: Mapping[str, float], wall: float) -> dict[str, float]:
    """What one command cost in CPU seconds: the whole machine, the seats (sshd, the modules, the containers - all
    in the seats' cgroups) and the command's own processes (ansible, its workers and SSH clients; not the SSH
    multiplexing masters, which detach from it). `other` is the rest of the machine: the masters, and whatever else
    ran meanwhile (on a quiet machine, close to nothing). Beside them, `iowait` (cores idle waiting for the disk) and
    `written_mb` (megabytes written into the page cache, by anything on the machine)."""
    used = {key: round(after[key] - before[key], 3) for key in before}
    used['other'] = round(used['machine'] - used['seats'] - used['command'], 3)
    used['wall'] = wall
    return used


# --------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    name: str
    workdir: Path
    releases: str = ''  # labctl --releases: the Debian releases handed to the hosts in turn ('' = labctl's default)
    packages: str = ''  # labctl --packages: extra Debian packages for every seat (bench/pull: git, ansible-core)
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    # name -> {'release': 'trixie', 'debian_version': '13.8'}: what each seat runs, recorded with the results
    seats: dict[str, dict] = field(default_factory=dict)
    # name -> {'cpuacct': DIRECTORY, ...}: each seat's cgroups on this machine, where every process of the seat runs
    cgroups: dict[str, dict] = field(default_factory=dict)
    key: str = ''
    known_hosts: str = ''
    user: str = 'student'  # the account labctl's seats let in (it becomes root with sudo)
    touched: bool = False  # `labctl up` has been run

    @property
    def inventory(self) -> Path:
        return self.workdir / 'hosts.yml'

    @property
    def ssh_config(self) -> Path:
        return self.workdir / 'ssh_config'

    def up(self, count: int) -> float:
        started = time.monotonic()
        self.touched = True  # from now on there may be something to take down, even if this `up` is cut short
        argv = [str(LABCTL), 'up', '--lab', self.name, '--hosts', str(count), '--inventory', str(self.inventory), '--json']
        argv += ['--releases', self.releases] if self.releases else []
        argv += ['--packages', self.packages] if self.packages else []
        completed = run_child(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if completed.returncode != 0:
            raise BenchError(f'labctl up --lab {self.name} --hosts {count} failed:\n{completed.stdout}{completed.stderr}')
        state = json.loads(completed.stdout)
        self.hosts = {name: host['address'] for name, host in state['hosts'].items()}
        self.seats = {name: {'release': host.get('release'), 'debian_version': host.get('debian_version')}
                      for name, host in state['hosts'].items()}
        self.cgroups = {name: dict(host.get('cgroups') or {}) for name, host in state['hosts'].items()}
        self.key, self.known_hosts, self.user = state['key'], state['known_hosts'], state.get('user', self.user)
        self._write_ssh_config()
        return round(time.monotonic() - started, 2)

    def seats_cpu_seconds(self) -> float:
        return sum(cgroup_cpu_seconds(cgroups) for cgroups in self.cgroups.values())

    def _write_ssh_config(self) -> None:
        # What a user of the hand-written script has in ~/.ssh/config for the class's machines: the seats' own
        # account, as Ansible logs in (root cannot log in; the script uses sudo as the playbooks use become).
        lines = []
        for address in self.hosts.values():
            lines += [
                f'Host {address}',
                f'  User {self.user}',
                f'  IdentityFile {self.key}',
                '  IdentitiesOnly yes',
                '  IdentityAgent none',
                f'  UserKnownHostsFile {self.known_hosts}',
                '  StrictHostKeyChecking yes',
                '',
            ]
        self.ssh_config.write_text('\n'.join(lines), encoding='utf-8')

    def down(self) -> str | None:
        """Remove the lab; what went wrong, or None once it is gone."""
        completed = run_child([str(LABCTL), 'down', '--lab', self.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if completed.returncode != 0:
            last_line = (completed.stdout.strip().splitlines() or ['no output'])[-1]
            return f'`labctl down --lab {self.name}` failed (exit {completed.returncode}): {last_line}'
        return None


# --------------------------------------------------------------------------- running things


@dataclass
class Runner:
    workdir: Path
    lab: Lab
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    counter: int = 0
    last_log: Path | None = None  # the log of the last command run
    last_cpu: dict | None = None  # what the last command run cost in CPU seconds (cpu_used)

    def base_env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env['PATH'] = f'{VENV_BIN}:{env.get("PATH", "")}'
        env['ANSIBLE_CONFIG'] = str(REPO / 'ansible.cfg')
        env['ANSIBLE_CALLBACK_PLUGINS'] = str(BENCH / 'callback_plugins')
        env['ANSIBLE_CALLBACKS_ENABLED'] = 'unboxed.lab.lab_report,bench_timing'
        env['UNBOXED_LAB_REPORT_DIR'] = str(self.workdir / 'lab_report')
        env['ANSIBLE_NOCOLOR'] = '1'
        env.update(self.extra_env)
        env.update(overrides or {})
        return env

    def run(self, label: str, argv: Sequence[str], env: Mapping[str, str], timing_file: Path | None = None) -> float:
        """Run argv, return its wall time in seconds; raise with the log's path when it fails."""
        self.counter += 1
        log = self.log_dir / f'{self.counter:03d}-{label}.log'
        self.last_log = log
        before = cpu_sample(self.lab)
        started = time.monotonic()
        with log.open('w', encoding='utf-8') as handle:
            completed = run_child(argv, cwd=REPO, env=dict(env), stdout=handle, stderr=subprocess.STDOUT)
        elapsed = time.monotonic() - started
        self.last_cpu = cpu_used(before, cpu_sample(self.lab), round(elapsed, 3))
        if completed.returncode != 0:
            raise BenchError(f'{label}: {" ".join(argv)} exited {completed.returncode}; see {log}')
        return round(elapsed, 3)

    def ansible(self, label: str, argv: Sequence[str], overrides: Mapping[str, str] | None = None,
                control_dir: Path | None = None) -> tuple[float, dict | None]:
        """One ansible/ansible-playbook run. Cold SSH unless a control_dir is passed: every invocation gets a
        fresh ControlPath directory, and its masters are closed afterwards."""
        timing_file = self.log_dir / f'{self.counter + 1:03d}-{label}.timing.json'
        own_control_dir = control_dir is None
        control_dir = control_dir or Path(tempfile.mkdtemp(prefix='cp-', dir=self.workdir))
        env = self.base_env(overrides)
        env['ANSIBLE_SSH_CONTROL_PATH_DIR'] = str(control_dir)
        env['BENCH_TIMING_FILE'] = str(timing_file)
        try:
            seconds = self.run(label, argv, env)
        finally:
            if own_control_dir:
                close_ssh_masters(control_dir)
        timing = json.loads(timing_file.read_text(encoding='utf-8')) if timing_file.exists() else None
        return seconds, timing

    def playbook(self, label: str, playbook: str, *args: str, overrides: Mapping[str, str] | None = None,
                 control_dir: Path | None = None) -> tuple[float, dict]:
        seconds, timing = self.ansible(label, ['ansible-playbook', '-i', str(self.lab.inventory), playbook, *args],
                                       overrides, control_dir)
        if timing is None:
            raise BenchError(f'{label}: the bench_timing callback wrote nothing (is it enabled?)')
        return seconds, timing

    def ping(self, label: str = 'ping', overrides: Mapping[str, str] | None = None) -> float:
        return self.ansible(label, ['ansible', '-i', str(self.lab.inventory), 'all', '-m', 'ansible.builtin.ping'], overrides)[0]

    def handwritten(self, label: str, *args: str) -> float:
        argv = [str(HANDWRITTEN), '--ssh-config', str(self.lab.ssh_config), *args, *self.lab.hosts.values()]
        return self.run(label, argv, self.base_env())


def close_ssh_masters(control_dir: Path) -> None:
    for socket in control_dir.iterdir():
        run_child(['ssh', '-o', f'ControlPath={socket}', '-O', 'exit', 'bench-control-master'],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(control_dir, ignore_errors=True)


def recap_totals(timing: Mapping) -> dict[str, int]:
    totals: dict[str, int] = {}
    for host_recap in timing['recap'].values():
        for key, value in host_recap.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def require(label: str, timing: Mapping, hosts: int, *, changed: bool) -> None:
    """A first converge changes every host; a rerun and a --check change none; nothing fails anywhere."""
    recap = timing['recap']
    if len(recap) != hosts:
        raise BenchError(f'{label}: the recap lists {len(recap)} hosts, not {hosts}')
    for host, counts in recap.items():
        if counts['failures'] or counts['unreachable']:
            raise BenchError(f'{label}: {host} failed or was unreachable: {counts}')
        if changed and not counts['changed']:
            raise BenchError(f'{label}: {host} changed nothing on what should be a first converge (was it clean?)')
        if not changed and counts['changed']:
            raise BenchError(f'{label}: {host} reported changed={counts["changed"]} where nothing should change')


# --------------------------------------------------------------------------- clean hosts


CLEAN_PROBE = (
    'test ! -e /overlay && test ! -e /var/cache/unboxed/base && test ! -e /run/talk.pid'
    ' && ! grep -q " overlay " /proc/mounts && ! pgrep -x tail >/dev/null && echo clean'
)


def clean_hosts(runner: Runner, device: str) -> dict[str, float]:
    """Back to a fresh seat, whoever provisioned it: reset.yml (the container, the overlay, /overlay), the
    hand-written script's own reset (its container and pidfile), and the host's copy of the base archive,
    which reset.yml keeps on purpose. Then check that every host is clean, and let the disk settle."""
    started = time.monotonic()
    runner.playbook('reset', 'reset.yml')
    runner.handwritten('handwritten-reset', '--reset')
    runner.ansible('drop-archive-and-check-clean', ['ansible', '-i', str(runner.lab.inventory), 'all', '-m', 'ansible.builtin.shell',
                                                    '-a', f'rm -rf /var/cache/unboxed/base && {CLEAN_PROBE}'])
    reset_seconds = round(time.monotonic() - started, 2)
    return {'reset': reset_seconds, 'settle': settle(device)}


# --------------------------------------------------------------------------- the two parts


SCALING_MEASURES = ('ping', 'first', 'rerun', 'check', 'ping_warm', 'rerun_warm', 'hand_first', 'hand_rerun', 'first_script_slides')
# The slides the hand-written script does (the talk's first four); site.yml has more since (build, the confinement
# slides). A first converge of these tags alone is the like-for-like comparison with the script.
SCRIPT_SLIDES = 'layers,overlay,chroot,namespaces'


def site_slides() -> tuple[str, ...]:
    """The slides of site.yml, in order, as the lab report's columns name them (its DEFAULT_STAGES, read from the
    callback's source: the bench's Python has no Ansible to import it with), verify apart."""
    tree = ast.parse((REPO / 'plugins' / 'callback' / 'lab_report.py').read_text(encoding='utf-8'))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, 'id', None) == 'DEFAULT_STAGES' for target in node.targets):
            return tuple(stage for stage in ast.literal_eval(node.value) if stage != 'verify')
    raise BenchError('plugins/callback/lab_report.py has no DEFAULT_STAGES')


# The slide step is one `--tags SLIDE` rerun per slide, what the instructor waits for.
SLIDES = site_slides()


def measure_scaling_at(runner: Runner, device: str, count: int, runs: int, say: Callable[[str], None]) -> dict:
    """Every scaling measure on `count` hosts, `runs` times, interleaved so that a drift of the machine's load
    hits Ansible and the hand-written script alike."""
    say(f'lab: {count} host(s), up in {runner.lab.up(count)} s')
    runner.ping('warm-up-ping')  # the first connection to a new host, and Python's bytecode caches: not timed
    series: dict[str, list] = {name: [] for name in SCALING_MEASURES}
    series.update(load=[], reset=[], settle=[], first_tasks=[], rerun_tasks=[], check_tasks=[])
    # What each measure cost in CPU seconds (cpu_used), in the order of its series.
    series['cpu'] = {name: [] for name in SCALING_MEASURES}

    def keep(name: str, seconds: float) -> None:
        series[name].append(seconds)
        series['cpu'][name].append(runner.last_cpu)

    series['seats'] = dict(runner.lab.seats)
    for run in range(1, runs + 1):
        cleaned = clean_hosts(runner, device)
        series['reset'].append(cleaned['reset'])
        series['settle'].append(cleaned['settle'])
        series['load'].append(load_average())
        keep('ping', runner.ping())
        seconds, timing = runner.playbook('first', 'site.yml')
        require('first converge', timing, count, changed=True)
        keep('first', seconds)
        series['first_tasks'].append(timing)
        seconds, timing = runner.playbook('rerun', 'site.yml')
        require('rerun', timing, count, changed=False)
        keep('rerun', seconds)
        series['rerun_tasks'].append(timing)
        seconds, timing = runner.playbook('check', 'site.yml', '--check')
        require('--check', timing, count, changed=False)
        keep('check', seconds)
        series['check_tasks'].append(timing)
        # Warm SSH: the masters of an untimed ping stay open (ControlPersist) for a timed ping and rerun, in turn.
        control_dir = Path(tempfile.mkdtemp(prefix='cp-warm-', dir=runner.workdir))
        try:
            runner.ansible('warm-up-ping', ['ansible', '-i', str(runner.lab.inventory), 'all', '-m', 'ansible.builtin.ping'],
                           control_dir=control_dir)
            keep('ping_warm', runner.ansible('ping-warm', ['ansible', '-i', str(runner.lab.inventory), 'all', '-m',
                                                           'ansible.builtin.ping'], control_dir=control_dir)[0])
            seconds, timing = runner.playbook('rerun-warm', 'site.yml', control_dir=control_dir)
            require('rerun (warm SSH)', timing, count, changed=False)
            keep('rerun_warm', seconds)
        finally:
            close_ssh_masters(control_dir)
        clean_hosts(runner, device)
        archive = controller_archive()
        keep('hand_first', runner.handwritten('hand-first', '--archive', str(archive)))
        keep('hand_rerun', runner.handwritten('hand-rerun', '--archive', str(archive)))
        clean_hosts(runner, device)
        seconds, timing = runner.playbook('first-script-slides', 'site.yml', '--tags', SCRIPT_SLIDES)
        require(f'first converge (--tags {SCRIPT_SLIDES})', timing, count, changed=True)
        keep('first_script_slides', seconds)
        say(f'  N={count} run {run}/{runs}: ' + ', '.join(f'{name} {series[name][-1]:.1f}s' for name in SCALING_MEASURES)
            + f' (load {series["load"][-1]:.2f})')
    return series


def measure_slide_steps(runner: Runner, device: str, count: int, say: Callable[[str], None]) -> dict:
    """One `site.yml --tags SLIDE` rerun per slide on the converged hosts, cold SSH: what the instructor waits for
    between two slides. Each must change nothing."""
    clean_hosts(runner, device)  # the scaling runs end with the hand-written script's state
    runner.playbook('slide-steps-converge', 'site.yml')
    steps: dict[str, dict] = {}
    for slide in SLIDES:
        load = load_average()
        seconds, timing = runner.playbook(f'slide-{slide}', 'site.yml', '--tags', slide)
        require(f'--tags {slide}', timing, count, changed=False)
        steps[slide] = {'seconds': seconds, 'load': load}
    say(f'  N={count} slide steps: ' + ', '.join(f'{slide} {step["seconds"]:.1f}s' for slide, step in steps.items()))
    return steps


def measure_round_trips(runner: Runner, device: str, count: int, say: Callable[[str], None]) -> dict:
    """Round trips per seat, task and slide of a first converge, a rerun and a --check, counted from -vvv logs
    (bench/roundtrips.py). Not timed: -vvv costs time of its own."""
    from roundtrips import count as count_round_trips, per_slide  # noqa: E402  (bench/roundtrips.py, beside this file)

    clean_hosts(runner, device)
    document: dict[str, dict] = {'hosts': count}
    for key, args in (('first', ()), ('rerun', ()), ('check', ('--check',))):
        _seconds, timing = runner.playbook(f'round-trips-{key}', 'site.yml', '-vvv', *args)
        require(f'round trips ({key})', timing, count, changed=key == 'first')
        with runner.last_log.open(encoding='utf-8', errors='replace') as handle:
            tasks = count_round_trips(handle, runner.lab.hosts)
        document[key] = {'slides': per_slide(tasks, runner.lab.hosts), 'tasks': tasks}
    say('  round trips per seat on a rerun: ' + ', '.join(
        f'{slide} {counts["max"]["module"]}' for slide, counts in document['rerun']['slides'].items()))
    return document


def controller_archive() -> Path:
    archives = sorted(CONTROLLER_ARCHIVE_DIR.glob(CONTROLLER_ARCHIVE_GLOB), key=lambda path: path.stat().st_mtime)
    if not archives:
        raise BenchError(f'no base archive in {CONTROLLER_ARCHIVE_DIR}: site.yml builds it (bench/run does so first)')
    return archives[-1]


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    overrides: Mapping[str, str]
    warm: bool = False  # SSH masters of a previous run still alive (ControlPersist long enough)


DEFAULT_SETTINGS = 'baseline,warm_ssh,no_pipelining,no_multiplexing,forks_5,mitogen'


def settings_to_measure(mitogen_strategy_dir: str | None, keys: Sequence[str]) -> list[Setting]:
    settings = [
        Setting('baseline', 'ansible.cfg as committed: pipelining, ControlPersist=60s, forks=40, linear, cold SSH', {}),
        Setting('warm_ssh', 'same, SSH masters still open from the previous run (ControlPersist outlives the pause)', {}, warm=True),
        Setting('no_pipelining', 'pipelining off (ANSIBLE_PIPELINING=False)', {'ANSIBLE_PIPELINING': 'False'}),
        Setting('no_multiplexing', 'no SSH multiplexing (ssh_args = -o ControlMaster=no)', {'ANSIBLE_SSH_ARGS': '-o ControlMaster=no'}),
        Setting('forks_5', "forks=5 (Ansible's default)", {'ANSIBLE_FORKS': '5'}),
        Setting('free', 'strategy free', {'ANSIBLE_STRATEGY': 'free'}),
        Setting('no_lab_report', 'without the lab_report callback', {'ANSIBLE_CALLBACKS_ENABLED': 'bench_timing'}),
    ]
    if mitogen_strategy_dir:
        settings.append(Setting('mitogen', 'Mitogen (strategy mitogen_linear)',
                                {'ANSIBLE_STRATEGY_PLUGINS': mitogen_strategy_dir, 'ANSIBLE_STRATEGY': 'mitogen_linear'}))
    unknown = set(keys) - {setting.key for setting in settings} - {'mitogen'}
    if unknown:
        raise SystemExit(f'bench/run: unknown settings {", ".join(sorted(unknown))}; known: '
                         f'{", ".join(setting.key for setting in settings)}')
    # The baseline first: it is what every other setting is compared with.
    return [setting for setting in settings if setting.key in keys or setting.key == 'baseline']


FIRST_CONVERGE_SETTINGS = ('baseline', 'no_pipelining', 'no_multiplexing', 'mitogen')


def measure_settings(runner: Runner, device: str, count: int, runs: int, mitogen_strategy_dir: str | None,
                     keys: Sequence[str], first_runs: int, say: Callable[[str], None]) -> dict:
    say(f'settings: lab of {count} host(s), up in {runner.lab.up(count)} s')
    runner.ping('warm-up-ping')
    settings = settings_to_measure(mitogen_strategy_dir, keys)
    series: dict[str, dict[str, list]] = {setting.key: {'rerun': [], 'first': [], 'load': []} for setting in settings}
    facts: dict[str, list[float]] = {'ping': [], 'setup_min': [], 'setup_full': [], 'play_gather': [], 'play_cached': []}
    # Converge once with the committed settings; every rerun below starts from that state.
    clean_hosts(runner, device)
    runner.playbook('converge', 'site.yml')
    for run in range(1, runs + 1):
        for setting in settings:
            control_dir = None
            if setting.warm:
                control_dir = Path(tempfile.mkdtemp(prefix='cp-warm-', dir=runner.workdir))
                runner.playbook('warm-up-rerun', 'site.yml', overrides=setting.overrides, control_dir=control_dir)
            try:
                series[setting.key]['load'].append(load_average())
                seconds, timing = runner.playbook(f'rerun-{setting.key}', 'site.yml', overrides=setting.overrides, control_dir=control_dir)
            finally:
                if control_dir is not None:
                    close_ssh_masters(control_dir)
            require(f'rerun ({setting.label})', timing, count, changed=False)
            series[setting.key]['rerun'].append(seconds)
        facts['ping'].append(runner.ping())
        inventory = str(runner.lab.inventory)
        facts['setup_min'].append(runner.ansible('setup-min', ['ansible', '-i', inventory, 'all', '-m', 'ansible.builtin.setup',
                                                               '-a', 'gather_subset=min'])[0])
        facts['setup_full'].append(runner.ansible('setup-full', ['ansible', '-i', inventory, 'all', '-m', 'ansible.builtin.setup'])[0])
        cache_dir = Path(tempfile.mkdtemp(prefix='facts-', dir=runner.workdir))
        cache = {'ANSIBLE_GATHERING': 'smart', 'ANSIBLE_CACHE_PLUGIN': 'ansible.builtin.jsonfile',
                 'ANSIBLE_CACHE_PLUGIN_CONNECTION': str(cache_dir), 'ANSIBLE_CACHE_PLUGIN_TIMEOUT': '3600'}
        facts['play_gather'].append(runner.playbook('facts-gather', 'bench/playbooks/facts.yml', overrides=cache)[0])
        facts['play_cached'].append(runner.playbook('facts-cached', 'bench/playbooks/facts.yml', overrides=cache)[0])
        shutil.rmtree(cache_dir, ignore_errors=True)
        say(f'  settings run {run}/{runs}: ' + ', '.join(f'{key} {value["rerun"][-1]:.1f}s' for key, value in series.items()))
    if first_runs:
        for run in range(1, first_runs + 1):
            for setting in settings:
                if setting.key not in FIRST_CONVERGE_SETTINGS:
                    continue
                clean_hosts(runner, device)
                seconds, timing = runner.playbook(f'first-{setting.key}', 'site.yml', overrides=setting.overrides)
                require(f'first converge ({setting.label})', timing, count, changed=True)
                series[setting.key]['first'].append(seconds)
            say(f'  settings first converge run {run}/{first_runs}: '
                + ', '.join(f'{key} {value["first"][-1]:.1f}s' for key, value in series.items() if value['first']))
    return {
        'hosts': count,
        'runs': runs,
        'first_runs': first_runs,
        'settings': [{'key': setting.key, 'label': setting.label, **series[setting.key]} for setting in settings],
        'facts': facts,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='bench/run', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hosts', default='1,5,10,20',
                        help='host counts of the scaling part, N or N:RUNS each (default 1,5,10,20; 20:2 runs N=20 twice)')
    parser.add_argument('--runs', type=int, default=3, help='runs of each measurement (default 3; the tables show medians)')
    parser.add_argument('--part', choices=('all', 'scaling', 'settings', 'report'), default='all',
                        help='what to measure (report: only re-render RESULTS.md and the plot from bench/results/)')
    parser.add_argument('--settings-hosts', type=int, default=10, help='host count of the settings part (default 10)')
    parser.add_argument('--settings-runs', type=int, help='rounds of reruns in the settings part (default: --runs)')
    parser.add_argument('--settings', default=DEFAULT_SETTINGS,
                        help=f'settings to compare (default {DEFAULT_SETTINGS}; also: free, no_lab_report)')
    parser.add_argument('--settings-first-runs', type=int, default=0, metavar='RUNS',
                        help='also time this many first converges per setting that matters there (pipelining, '
                             'multiplexing, Mitogen); each needs a reset (default 0)')
    parser.add_argument('--mitogen-strategy-dir', default=os.environ.get('BENCH_MITOGEN_STRATEGY_DIR'),
                        help='ansible_mitogen/plugins/strategy of a Mitogen install (bench/run sets it up)')
    parser.add_argument('--releases', default='trixie,bookworm',
                        help='Debian releases of the lab\'s hosts, handed out in turn (labctl up --releases; default '
                             'trixie,bookworm: host 1 Debian 13, host 2 Debian 12...); recorded with the results')
    parser.add_argument('--lab', default='bench', help='name of the local lab the benchmark creates and removes (default bench)')
    parser.add_argument('--keep-lab', action='store_true', help='leave the lab up at the end')
    parser.add_argument('--no-round-trips', action='store_true',
                        help='skip counting the round trips per slide (a -vvv first converge, rerun and --check at the '
                             'smallest host count)')
    parser.add_argument('--output', type=Path, default=BENCH,
                        help='where RESULTS.md, time_vs_hosts.png and results/*.json go (default bench/; a trial run can use a temp dir)')
    return parser.parse_args(argv)


def parse_host_counts(text: str, default_runs: int) -> dict[int, int]:
    """'1,5,10,20:2' -> {1: runs, 5: runs, 10: runs, 20: 2}."""
    runs_by_count = {}
    for item in (item.strip() for item in text.split(',')):
        if not item:
            continue
        count, _separator, runs = item.partition(':')
        try:
            runs_by_count[int(count)] = int(runs) if runs else default_runs
        except ValueError:
            raise SystemExit(f'bench/run: --hosts item "{item}" is not N or N:RUNS') from None
    return runs_by_count


def preflight(host_counts: Sequence[int]) -> list[int]:
    if os.geteuid() != 0:
        raise SystemExit('bench/run needs root: the local lab uses namespaces, veths and mounts')
    free = shutil.disk_usage('/var/lib').free
    available_kib = next(int(line.split()[1]) for line in Path('/proc/meminfo').read_text(encoding='utf-8').splitlines()
                         if line.startswith('MemAvailable:'))
    fitting = []
    for count in host_counts:
        if count * DISK_PER_HOST > free * 0.8 or count * MEMORY_PER_HOST > available_kib * 1024 * 0.5:
            print(f'bench: skipping N={count}: {count} hosts need ~{count * DISK_PER_HOST / 1e9:.1f} GB of disk in /var/lib '
                  f'(free {free / 1e9:.1f} GB)', file=sys.stderr)
            continue
        fitting.append(count)
    return fitting


def ensure_controller_archive(runner: Runner, say: Callable[[str], None]) -> None:
    """Build the base once, before anything is timed: the benchmark times distribution, not mmdebstrap."""
    try:
        say(f'base archive: {controller_archive()}')
    except BenchError:
        say('base archive: building it on the controller (mmdebstrap, once; not timed)')
        runner.playbook('build-base-archive', 'site.yml', '--tags', 'base_archive')
        say(f'base archive: {controller_archive()}')


def measure(args: argparse.Namespace, runner: Runner, device: str, runs_by_count: Mapping[int, int], host_counts: Sequence[int],
            progress_dir: Path) -> dict[str, dict]:
    """Both parts as asked; each finished step's document is saved in progress_dir, so a failed or stopped run
    keeps what it measured (beside its logs, never over the committed results)."""
    measure_scaling = args.part in ('all', 'scaling')
    measure_settings_now = args.part in ('all', 'settings')
    documents: dict[str, dict] = {}
    runner.lab.up(min(host_counts) if measure_scaling and host_counts else args.settings_hosts)
    ensure_controller_archive(runner, say)
    scaling: dict = {'runs': args.runs, 'runs_by_hosts': {}, 'machine': machine_facts(), 'by_hosts': {},
                     'releases': runner.lab.releases}
    # Ascending, because `labctl up` adds hosts but removes those beyond the count asked for; the settings
    # part runs on its own host count when the scaling part reaches it.
    steps = sorted(set(host_counts if measure_scaling else []) | ({args.settings_hosts} if measure_settings_now else set()))
    for count in steps:
        if measure_scaling and count in host_counts:
            scaling['runs_by_hosts'][str(count)] = runs_by_count[count]
            scaling['by_hosts'][str(count)] = measure_scaling_at(runner, device, count, runs_by_count[count], say)
            if count == max(host_counts):
                scaling['slide_steps'] = {'hosts': count, 'steps': measure_slide_steps(runner, device, count, say)}
            if count == min(host_counts) and not args.no_round_trips:
                scaling['round_trips'] = measure_round_trips(runner, device, count, say)
            scaling['finished'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
            documents['scaling'] = scaling
            (progress_dir / 'scaling.json').write_text(json.dumps(scaling, indent=1), encoding='utf-8')
        if measure_settings_now and count == args.settings_hosts:
            settings = {'machine': machine_facts(), 'releases': runner.lab.releases, 'seats': dict(runner.lab.seats)}
            settings.update(measure_settings(runner, device, count, args.settings_runs or args.runs, args.mitogen_strategy_dir,
                                             args.settings.split(','), args.settings_first_runs, say))
            settings['mitogen'] = os.environ.get('BENCH_MITOGEN_VERSION', '')
            settings['finished'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
            documents['settings'] = settings
            (progress_dir / 'settings.json').write_text(json.dumps(settings, indent=1), encoding='utf-8')
    return documents


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    from report import write_report  # noqa: E402  (bench/report.py, beside this file)

    output = args.output.resolve()
    results_dir = output / 'results'
    if args.part == 'report':
        write_report(results_dir, output)
        return 0
    STOP.install()
    try:
        return run_bench(args, output, write_report)
    except Stopped as stopped:  # before the lab was touched: nothing to take down
        tell(f'bench: stopped by {signal.Signals(stopped.signum).name}')
        return 128 + stopped.signum


def run_bench(args: argparse.Namespace, output: Path, write_report: Callable[[Path, Path], None]) -> int:
    runs_by_count = parse_host_counts(args.hosts, args.runs)
    host_counts = preflight(sorted(runs_by_count))
    workdir = Path(tempfile.mkdtemp(prefix='unboxed-bench-'))
    log_dir = workdir / 'logs'
    log_dir.mkdir()
    progress_dir = workdir / 'results'
    progress_dir.mkdir()
    lab = Lab(args.lab, workdir, releases=args.releases)
    runner = Runner(workdir, lab, log_dir)
    device = block_device_of('/var/lib')
    say(f'logs: {log_dir}')
    failure = lab_problem = None
    try:
        documents = measure(args, runner, device, runs_by_count, host_counts, progress_dir)
        # Only a complete run replaces the results, and a signal now waits until they are all written.
        with STOP.held():
            results_dir = output / 'results'
            results_dir.mkdir(parents=True, exist_ok=True)
            for name, document in documents.items():
                (results_dir / f'{name}.json').write_text(json.dumps(document, indent=1), encoding='utf-8')
            write_report(results_dir, output)
    except BenchError as error:
        failure = f'FAILED: {error}'
    except Stopped:
        pass  # reported below, once the lab is down
    finally:
        # However the run ended, its lab goes down, and no further signal interrupts that.
        STOP.disarm()
        if lab.touched and not args.keep_lab:
            say(f'lab: taking "{lab.name}" down')
            lab_problem = lab.down()
    if not lab.touched:
        lab_state = 'no lab was brought up'
    else:
        lab_state = lab_problem or (f'lab "{lab.name}" kept (--keep-lab)' if args.keep_lab else f'lab "{lab.name}" removed')
    if STOP.received:
        tell(f'bench: stopped by {STOP.name}; {lab_state}; logs and what was measured so far in {workdir}')
        return 128 + STOP.received
    if failure:
        say(failure)
        tell(f'bench: failed; {lab_state}; logs and what was measured so far in {workdir}')
        return 1
    if lab_problem:
        tell(f'bench: {lab_problem}')
        return 1
    say(f'done: {output / "RESULTS.md"}, {output / "time_vs_hosts.png"} (logs kept in {log_dir})')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, str(BENCH))
    sys.exit(main(sys.argv[1:]))
