#!/usr/bin/env python
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""First converge by ansible-pull against push, on N local lab seats (docs/pull.md). Run through bench/pull.

For each N (default 1 and 10) and run: fresh seats (reset.yml, no base archive copy, no checkout), then
  push        ansible-playbook site.yml from the controller over SSH (the base archive copied from it)
  push rerun  the same again (changed=0)
then fresh seats again, then
  pull        every seat at once runs /usr/local/sbin/unboxed-pull (what its timer starts): clone from the
              controller's git daemon, fetch the base archive from its file server, converge itself
  pull rerun  the same again (each seat's report must say changed=0)
The pull's wall time runs from the controller's trigger (one `ansible -m command` to all seats) to the last seat's
end; the seats' own times come from their reports. Writes bench/results/pull.json and the "Pull against push"
section of bench/RESULTS.md (between its markers; the rest of the file is bench/run's).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path[:0] = [str(BENCH.parent / 'scripts'), str(BENCH.parent / 'collections')]  # as scripts/labctl.py does

# pylint: disable=wrong-import-position
from bench import (LABCTL, REPO, BenchError, Lab, Runner, block_device_of, clean_hosts, load_average,  # noqa: E402
                   machine_facts, require, run_child, say)
from local_lab import serve  # noqa: E402

PACKAGES = 'git,ansible-core'
SEAT_REPORT = '/var/lib/unboxed/pull/lab_report/pull.json'
SEAT_PULL_STATE = '/var/lib/unboxed/pull/checkout /var/lib/unboxed/pull/lab_report'
MARK_BEGIN = '<!-- bench/pull: begin -->'
MARK_END = '<!-- bench/pull: end -->'


def labctl_json(*args: str) -> dict:
    completed = run_child([str(LABCTL), *args, '--json'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        raise BenchError(f'labctl {" ".join(args)} failed:\n{completed.stdout}{completed.stderr}')
    return json.loads(completed.stdout)


def seat_reports(runner: Runner) -> dict[str, dict]:
    tree = Path(tempfile.mkdtemp(prefix='reports-', dir=runner.workdir))
    runner.ansible('read-seat-reports', ['ansible', '-i', str(runner.lab.inventory), 'all', '-m', 'ansible.builtin.slurp',
                                         '-a', f'src={SEAT_REPORT}', '-t', str(tree)])
    return {path.name: json.loads(base64.b64decode(json.loads(path.read_text(encoding='utf-8'))['content'])) for path in tree.iterdir()}


def seconds_between(started: str, finished: str) -> float:
    return (datetime.datetime.fromisoformat(finished) - datetime.datetime.fromisoformat(started)).total_seconds()


def check_pull(label: str, reports: dict[str, dict], hosts: int, *, changed: bool) -> list[float]:
    """Every seat reported, none behind; a first pull changed every seat, a rerun none. Returns the seats' own times."""
    if len(reports) != hosts:
        raise BenchError(f'{label}: {len(reports)} seat reports, not {hosts}')
    durations = []
    for host, report in reports.items():
        (seat,) = report['hosts']
        if seat['behind']:
            raise BenchError(f'{label}: {host} is behind: {seat["reason"]}')
        seat_changed = sum(cell['changed'] for cell in seat['stages'].values())
        if changed != bool(seat_changed):
            raise BenchError(f'{label}: {host} reported changed={seat_changed}')
        durations.append(seconds_between(report['started'], report['finished']))
    return durations


def clean_for_pull(runner: Runner, device: str) -> None:
    clean_hosts(runner, device)
    runner.ansible('drop-pull-state', ['ansible', '-i', str(runner.lab.inventory), 'all', '-m', 'ansible.builtin.shell',
                                       '-a', f'rm -rf {SEAT_PULL_STATE}'])


def measure_at(runner: Runner, device: str, count: int, runs: int, workdir: Path) -> dict:
    say(f'lab: {count} seat(s), up in {runner.lab.up(count)} s')
    runner.ping('warm-up-ping')
    runner.playbook('base-archive', 'site.yml', '--tags', 'base_archive')
    archives = sorted(Path('/var/cache/unboxed/base').glob('debian-*.tar.gz'))
    files = workdir / f'files-{count}'
    if not files.exists():
        serve.publish_archives([str(path) for path in archives], str(files))
    repository = workdir / 'srv' / 'unboxed'
    if not repository.exists():
        serve.snapshot_repository(str(REPO), str(repository))
    served = labctl_json('serve', '--lab', runner.lab.name, '--repository', str(repository), '--files', str(files))
    runner.playbook('pull-setup', 'playbooks/pull_setup.yml', '-e', f'pull_repository_url={served["git_url"]}',
                    '-e', f'pull_base_url={served["files_url"]}')
    series: dict[str, list] = {'push': [], 'push_rerun': [], 'pull': [], 'pull_rerun': [], 'pull_seat_median': [],
                               'pull_seat_max': [], 'pull_rerun_seat_median': [], 'load': []}
    trigger = ['ansible', '-i', str(runner.lab.inventory), 'all', '-m', 'ansible.builtin.command', '-a', '/usr/local/sbin/unboxed-pull']
    for run in range(1, runs + 1):
        clean_for_pull(runner, device)
        series['load'].append(load_average())
        seconds, timing = runner.playbook('push', 'site.yml')
        require('push', timing, count, changed=True)
        series['push'].append(seconds)
        seconds, timing = runner.playbook('push-rerun', 'site.yml')
        require('push rerun', timing, count, changed=False)
        series['push_rerun'].append(seconds)
        clean_for_pull(runner, device)
        series['load'].append(load_average())
        series['pull'].append(runner.ansible('pull', trigger)[0])
        durations = check_pull('pull', seat_reports(runner), count, changed=True)
        series['pull_seat_median'].append(round(statistics.median(durations), 1))
        series['pull_seat_max'].append(round(max(durations), 1))
        series['pull_rerun'].append(runner.ansible('pull-rerun', trigger)[0])
        durations = check_pull('pull rerun', seat_reports(runner), count, changed=False)
        series['pull_rerun_seat_median'].append(round(statistics.median(durations), 1))
        say(f'  N={count} run {run}/{runs}: ' + ', '.join(f'{key} {values[-1]}' for key, values in series.items()))
    return series


def cell(values: list[float]) -> str:
    if not values:
        return '-'
    middle = statistics.median(values)
    return f'{middle:.1f} s' + (f' ({min(values):.1f}-{max(values):.1f})' if len(values) > 1 else '')


def render(document: dict) -> str:
    machine = document['machine']
    lines = [
        MARK_BEGIN,
        '## Pull against push (first converge)',
        '',
        f"Measured by `bench/pull` on {document['finished']} ({machine['cores']} cores, ansible-core {machine['ansible_core']} "
        f"on the controller, Debian 13's ansible-core on the seats; lab `{document['lab']}`, seats {document['releases']}; "
        f"load average before the timed runs: {', '.join(f'{value:.2f}' for value in document['load'])}). "
        f"Median of {document['runs']} run(s) per cell, range in brackets. Push: `ansible-playbook site.yml` from the controller "
        '(the base archive copied from it). Pull: every seat at once runs `unboxed-pull` (its timer\'s command: clone from '
        "the controller's git daemon, fetch the base archive from its file server, converge itself); wall time from the "
        'trigger until the last seat finished; "seat" columns: the seats\' own times from their reports.',
        '',
        '| Seats | push first converge | pull first converge | pull: one seat (median / slowest) | push rerun | pull rerun | pull rerun: one seat |',
        '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ]
    for count, series in document['by_hosts'].items():
        lines.append(f"| {count} | {cell(series['push'])} | {cell(series['pull'])} | {cell(series['pull_seat_median'])} / "
                     f"{cell(series['pull_seat_max'])} | {cell(series['push_rerun'])} | {cell(series['pull_rerun'])} | "
                     f"{cell(series['pull_rerun_seat_median'])} |")
    lines += ['', 'What it means for a classroom: [docs/pull.md](../docs/pull.md#when-pull-wins).', MARK_END, '']
    return '\n'.join(lines)


def write_results(document: dict, output: Path) -> None:
    results = output / 'results'
    results.mkdir(parents=True, exist_ok=True)
    (results / 'pull.json').write_text(json.dumps(document, indent=1) + '\n', encoding='utf-8')
    path = output / 'RESULTS.md'
    text = path.read_text(encoding='utf-8') if path.exists() else '# Benchmark results\n'
    section = render(document)
    if MARK_BEGIN in text and MARK_END in text:
        before, rest = text.split(MARK_BEGIN, 1)
        after = rest.split(MARK_END, 1)[1].lstrip('\n')
        text = before + section + after
    else:
        text = text.rstrip('\n') + '\n\n' + section
    path.write_text(text, encoding='utf-8')


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='bench/pull', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hosts', default='1,10', help='seat counts (default 1,10)')
    parser.add_argument('--runs', type=int, default=1, help='runs per seat count (default 1)')
    parser.add_argument('--lab', default='pullbench', help='the lab it makes and removes (default pullbench)')
    parser.add_argument('--output', type=Path, default=BENCH, help='where RESULTS.md and results/pull.json go (default bench/)')
    parser.add_argument('--report', action='store_true', help='only render RESULTS.md from results/pull.json')
    args = parser.parse_args(argv)
    if args.report:
        write_results(json.loads((args.output / 'results' / 'pull.json').read_text(encoding='utf-8')), args.output)
        return 0
    if os.geteuid() != 0:
        raise SystemExit('bench/pull needs root: the local lab uses namespaces, veths and mounts')
    workdir = Path(tempfile.mkdtemp(prefix='unboxed-bench-pull-'))
    (workdir / 'logs').mkdir()
    # The packages a pulling seat needs: git, and ansible-core of Debian 13.
    lab = Lab(args.lab, workdir, releases='trixie', packages=PACKAGES)
    runner = Runner(workdir, lab, workdir / 'logs')
    device = block_device_of('/var/lib')
    say(f'logs: {workdir / "logs"}')
    document = {'lab': args.lab, 'releases': 'trixie', 'runs': args.runs, 'machine': machine_facts(), 'by_hosts': {}, 'load': []}
    try:
        for count in sorted(int(item) for item in args.hosts.split(',') if item.strip()):
            document['by_hosts'][str(count)] = measure_at(runner, device, count, args.runs, workdir)
            document['load'] += document['by_hosts'][str(count)]['load']
        document['finished'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
        write_results(document, args.output)
    except BenchError as error:
        say(f'FAILED: {error}')
        return 1
    finally:
        if lab.touched:
            say(f'lab: taking "{lab.name}" down')
            problem = lab.down()
            if problem:
                say(problem)
    say(f'done: {args.output / "RESULTS.md"} (logs kept in {workdir / "logs"})')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
