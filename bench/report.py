# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RESULTS.md and time_vs_hosts.png from the JSON that bench/bench.py writes into results/."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

MEASURE_LABELS = {
    'ping': 'ansible -m ping',
    'first': 'site.yml first converge',
    'rerun': 'site.yml rerun',
    'check': 'site.yml --check',
    'ping_warm': 'ping, warm SSH',
    'rerun_warm': 'rerun, warm SSH',
    'hand_first': 'hand-written first run',
    'hand_rerun': 'hand-written rerun',
    'first_script_slides': "first converge of the script's slides (--tags layers,overlay,chroot,namespaces)",
}
TOP_TASKS = 8


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def seconds(values: Sequence[float]) -> str:
    """'12.3 s (11.9-13.0)': the median and the range of the runs."""
    if not values:
        return '-'
    if len(values) == 1:
        return f'{values[0]:.1f} s'
    return f'{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})'


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def verdict(met: bool | None) -> str:
    return '-' if met is None else ('**met**' if met else '**not met**')


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding='utf-8')) if path.exists() else None


def median_run(timings: Sequence[Mapping]) -> Mapping | None:
    """The bench_timing document of the run whose wall time is the median one (the lower middle for an even count)."""
    if not timings:
        return None
    ordered = sorted(timings, key=lambda timing: timing['wall'])
    return ordered[(len(ordered) - 1) // 2]


def task_profile(timing: Mapping) -> dict:
    """Wall time split into task time and the time between tasks, plus the slowest tasks, as a run saw them."""
    tasks = timing['tasks']
    worked = [task for task in tasks if any(host['status'] != 'skipped' for host in task['hosts'].values())]
    in_tasks = sum(task['wall'] for task in tasks)
    by_name: dict[str, float] = {}
    for task in tasks:
        name = task['name']  # Task.get_name() already starts with the role's name
        by_name[name] = by_name.get(name, 0.0) + task['wall']
    slowest = sorted(by_name.items(), key=lambda item: item[1], reverse=True)[:TOP_TASKS]
    return {
        'wall': timing['wall'],
        'tasks': len(tasks),
        'worked': len(worked),
        'in_tasks': in_tasks,
        'first_task_at': tasks[0]['start'] if tasks else 0.0,
        'slowest': slowest,
    }


# Results written before the local lab had releases carry no seats: labctl built bookworm seats only then.
SEATS_BEFORE_RELEASES = 'Debian 12 (bookworm) on every seat (recorded before the lab had releases: labctl built bookworm only)'
DEBIAN_VERSIONS = {'trixie': 13, 'bookworm': 12}


def seats_text(seats_by_hosts: Mapping[int, Mapping], releases: str = '') -> str:
    """What the seats ran, at the largest host count measured: 'Debian 13 (trixie, 13.8) x 10, Debian 12 ... x 10'.

    ``seats_by_hosts``: host count -> {host: {'release': ..., 'debian_version': ...}}."""
    recorded = {count: seats for count, seats in seats_by_hosts.items() if seats}
    if not recorded:
        return SEATS_BEFORE_RELEASES
    count = max(recorded)
    by_release: dict[str, list] = {}
    for seat in recorded[count].values():
        by_release.setdefault(seat.get('release') or '?', []).append(seat.get('debian_version') or '?')
    parts = []
    for release, versions in by_release.items():
        name = f'Debian {DEBIAN_VERSIONS[release]} ({release}' if release in DEBIAN_VERSIONS else f'{release} ('
        parts.append(f"{name}, {', '.join(sorted(set(versions)))}) x {len(versions)}")
    turn = f', handed out in turn from {releases}' if releases else ''
    return f"{', '.join(parts)} at N={count}{turn}"


def machine_table(machine: Mapping, loads: Sequence[float], seats: str = SEATS_BEFORE_RELEASES) -> list[str]:
    rows = [
        ('Date', machine.get('date', '?')),
        ('CPU', f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"),
        ('Memory', f"{machine.get('memory_gib', '?')} GiB"),
        ('Kernel / OS', f"{machine.get('kernel', '?')} / {machine.get('os', '?')}"),
        ('ansible-core / Python', f"{machine.get('ansible_core', '?')} / {machine.get('python', '?')}"),
        ('OpenSSH', machine.get('openssh', '?')),
        ('Lab seats (Debian release)', seats),
    ]
    if loads:
        rows.append(('Load average (1 min) before each timed run', f'median {statistics.median(loads):.2f}, max {max(loads):.2f}'))
    return ['| | |', '| --- | --- |'] + [f'| {key} | {value} |' for key, value in rows]


def runs_text(scaling: Mapping) -> str:
    runs = sorted(set(scaling.get('runs_by_hosts', {}).values()) or {scaling['runs']})
    return f"{'-'.join(str(value) for value in runs)} runs"


def scaling_section(scaling: Mapping) -> tuple[list[str], dict]:
    by_hosts = {int(count): series for count, series in scaling['by_hosts'].items()}
    counts = sorted(by_hosts)
    lines = [
        '## Time against the number of hosts',
        '',
        f"Median of {runs_text(scaling)} per cell, the range of the runs in brackets. Every Ansible command opens its SSH "
        'connections cold (see How). The hand-written script is `bench/handwritten.sh`.',
        '',
        '| Hosts | ' + ' | '.join(MEASURE_LABELS.values()) + ' | load before the runs |',
        '| ---: | ' + ' | '.join('---:' for _label in MEASURE_LABELS) + ' | ---: |',
    ]
    for count in counts:
        loads = by_hosts[count].get('load', [])
        lines.append(f'| {count} | ' + ' | '.join(seconds(by_hosts[count].get(key, [])) for key in MEASURE_LABELS)
                     + f" | {', '.join(f'{load:.1f}' for load in loads) or '-'} |")
    lines += [''] + [f'Note: {note}' for note in scaling.get('notes', [])]
    lines += ['', '![time against hosts](time_vs_hosts.png)', '']

    def med(count: int, key: str) -> float | None:
        return median(by_hosts[count].get(key, [])) if count in by_hosts else None

    targets = ['## Targets (issue 15; ratios measured side by side, in the same run)', '',
               '| Target | Measured | Verdict |', '| --- | --- | --- |']

    def target(text: str, measured: str | None, met: bool | None) -> None:
        targets.append(f'| {text} | {measured or "not measured"} | {verdict(met)} |')

    rerun_vs_ping = ratio(med(10, 'rerun'), med(10, 'ping'))
    target('rerun on 10 hosts <= 3x `ansible -m ping` on those 10, cold SSH',
           rerun_vs_ping and f"{med(10, 'rerun'):.1f} s / {med(10, 'ping'):.1f} s = {rerun_vs_ping:.1f}x",
           None if rerun_vs_ping is None else rerun_vs_ping <= 3)
    warm_vs_ping = ratio(med(10, 'rerun_warm'), med(10, 'ping_warm'))
    target('rerun on 10 hosts <= 4x `ansible -m ping`, warm SSH',
           warm_vs_ping and f"{med(10, 'rerun_warm'):.1f} s / {med(10, 'ping_warm'):.1f} s = {warm_vs_ping:.1f}x",
           None if warm_vs_ping is None else warm_vs_ping <= 4)
    check_vs_rerun = ratio(med(10, 'check'), med(10, 'rerun'))
    target('`--check` on 10 hosts no slower than the rerun',
           check_vs_rerun and f"{med(10, 'check'):.1f} s / {med(10, 'rerun'):.1f} s = {check_vs_rerun:.2f}x",
           None if check_vs_rerun is None else check_vs_rerun <= 1)
    first_vs_hand = {count: ratio(med(count, 'first'), med(count, 'hand_first')) for count in counts}
    target(f'first converge no slower than the hand-written script (all of site.yml: {slide_count(scaling)} slides against the script\'s 4)',
           ', '.join(f'N={count}: {value:.2f}x the script' for count, value in first_vs_hand.items() if value),
           all(value <= 1 for value in first_vs_hand.values() if value) if first_vs_hand else None)
    like_vs_hand = {count: ratio(med(count, 'first_script_slides'), med(count, 'hand_first')) for count in counts}
    target('first converge no slower than the hand-written script, like for like (`--tags layers,overlay,chroot,namespaces`)',
           ', '.join(f'N={count}: {value:.2f}x the script' for count, value in like_vs_hand.items() if value),
           all(value <= 1 for value in like_vs_hand.values() if value) if any(like_vs_hand.values()) else None)
    first_growth = ratio(med(20, 'first'), med(1, 'first'))
    target('first converge T(20)/T(1) <= 4',
           first_growth and f"{med(20, 'first'):.1f} s / {med(1, 'first'):.1f} s = {first_growth:.2f}",
           None if first_growth is None else first_growth <= 4)
    rerun_trips = (scaling.get('round_trips') or {}).get('rerun', {}).get('slides', {})
    if rerun_trips:
        most = {slide: counts['max']['module'] + counts['max']['transfer'] + counts['max']['shell']
                for slide, counts in rerun_trips.items() if slide != 'play'}
        target('a rerun: at most one round trip per slide per seat',
               ', '.join(f'{slide} {value}' for slide, value in most.items()),
               all(value <= 1 for value in most.values()))
    hand_vs_rerun = {count: ratio(med(count, 'hand_first'), med(count, 'rerun')) for count in counts}
    lines += targets + ['']
    lines += closing_note(scaling, by_hosts, counts)
    lines += cpu_section(scaling)
    lines += round_trip_section(scaling.get('round_trips'))
    lines += slide_step_section(scaling.get('slide_steps'))

    profile_count = max((count for count in counts if count <= 10), default=counts[-1] if counts else None)
    if profile_count is not None:
        lines += [f'## Where the time goes ({profile_count} hosts, the median run of each kind)', '',
                  'From `bench/callback_plugins/bench_timing.py`: a task\'s wall time runs from its start until its last host '
                  'answered. "Start-up" is the time before the first task (Python, configuration, inventory, plugins); '
                  '"between tasks" is the rest that no task accounts for (strategy, callbacks, templating of the next task).',
                  '',
                  '| Run | Wall (measured) | Start-up | In tasks | Between tasks | Tasks (doing work on some host) | Slowest tasks |',
                  '| --- | ---: | ---: | ---: | ---: | ---: | --- |']
        series = by_hosts[profile_count]
        for key, label in (('first', 'first converge'), ('rerun', 'rerun'), ('check', '--check')):
            timing = median_run(series.get(f'{key}_tasks', []))
            if timing is None:
                continue
            measured = series[key][series[f'{key}_tasks'].index(timing)]
            profile = task_profile(timing)
            startup = measured - profile['wall'] + profile['first_task_at']
            between = profile['wall'] - profile['first_task_at'] - profile['in_tasks']
            slowest = '<br>'.join(f'{wall:.2f} s {name}' for name, wall in profile['slowest'][:5])
            lines.append(f"| {label} | {measured:.1f} s | {startup:.1f} s | {profile['in_tasks']:.1f} s | {between:.1f} s | "
                         f"{profile['tasks']} ({profile['worked']}) | {slowest} |")
        lines.append('')
        lines += ['How the cost of one task grows with the number of hosts (median runs; time in tasks divided by the tasks '
                  'that some host did not skip, argument validation and debug included):', '',
                  '| Hosts | Rerun: start-up | Rerun: tasks not skipped | Rerun: seconds per task | '
                  'First converge: seconds per task | ping |',
                  '| ---: | ---: | ---: | ---: | ---: | ---: |']
        for count in counts:
            series = by_hosts[count]
            cells = []
            for key in ('rerun', 'first'):
                timing = median_run(series.get(f'{key}_tasks', []))
                if timing is None:
                    cells.append(None)
                    continue
                measured = series[key][series[f'{key}_tasks'].index(timing)]
                cells.append((measured, task_profile(timing)))
            if cells[0] is None:
                continue
            rerun_measured, rerun_profile = cells[0]
            startup = rerun_measured - rerun_profile['wall'] + rerun_profile['first_task_at']
            per_task = rerun_profile['in_tasks'] / max(rerun_profile['worked'], 1)
            first_per_task = (f"{cells[1][1]['in_tasks'] / max(cells[1][1]['worked'], 1):.2f} s" if cells[1] else '-')
            lines.append(f"| {count} | {startup:.1f} s | {rerun_profile['worked']} | {per_task:.2f} s | {first_per_task} | "
                         f"{seconds(series['ping'])} |")
        lines.append('')
    facts = {
        'rerun_vs_ping': rerun_vs_ping,
        'first_growth': first_growth,
        'first_vs_hand': first_vs_hand,
        'hand_vs_rerun': hand_vs_rerun,
    }
    return lines, facts


def module_task_walls(timing: Mapping | None) -> list[tuple[str, float]]:
    """(name, wall) of the tasks of a run that did work on some host and took long enough to be a module run: a task
    that runs only on the controller (argument validation, debug, set_fact, a skipped include) takes well under a
    second here."""
    if not timing:
        return []
    return [(task['name'], task['wall']) for task in timing['tasks']
            if any(host['status'] not in ('skipped',) for host in task['hosts'].values()) and task['wall'] >= 0.5]


def slide_count(scaling: Mapping) -> int | str:
    """How many slides site.yml ran: those of the slide step, else those of the round-trip count."""
    slides = (scaling.get('slide_steps') or {}).get('steps') or ((scaling.get('round_trips') or {}).get('rerun') or {}).get('slides', {})
    return len([slide for slide in slides if slide != 'play']) or '?'


def closing_note(scaling: Mapping, by_hosts: Mapping[int, Mapping], counts: Sequence[int]) -> list[str]:
    """What each missed target costs, from this run's own figures: module runs, seconds per module run, load."""
    slides = slide_count(scaling)
    lines = ['### What stops the targets that are not met (from this run\'s figures)', '']
    loads = {count: by_hosts[count].get('load', []) for count in counts}
    for count in counts:
        rerun = median_run(by_hosts[count].get('rerun_tasks', []))
        walls = module_task_walls(rerun)
        if not walls:
            continue
        first = median_run(by_hosts[count].get('first_tasks', []))
        first_walls = sorted(module_task_walls(first), key=lambda item: item[1], reverse=True)[:3]
        lines.append(
            f"- N={count} (load {', '.join(f'{load:.1f}' for load in loads[count]) or '?'}): the rerun's {len(walls)} tasks of 0.5 s or more (module runs) "
            f"took {sum(wall for _name, wall in walls):.1f} s, {statistics.median([wall for _name, wall in walls]):.2f} s "
            f"each (median) against {median(by_hosts[count].get('ping', [])) or 0:.1f} s for a whole cold ping; "
            f"the first converge's slowest: " + ', '.join(f'{name.split(" : ", 1)[-1]} {wall:.1f} s' for name, wall in first_walls) + '.')
    lines += [
        '',
        '- Rerun against ping: a ping is Ansible\'s start-up plus one module run per seat; the rerun is one module run per '
        'slide and seat (the round-trip table below), ' + f'{slides} slides and the base. With every seat\'s module run costing '
        'what a ping\'s does, the ratio cannot fall below about the number of module runs divided by what the ping\'s '
        'start-up adds to its one run - ' + f'more than 3 for {slides} slides on this machine (the CPU figures below). A module run costs CPU on the seat '
        '(Python start, the payload\'s imports) and on the controller (a worker, the SSH session); here both are the same two '
        'cores, shared with the other seats and whatever else runs (the load column). Mitogen shortens each run (settings '
        'below); seats with CPUs of their own (a classroom) shorten it more.',
        '- First converge against the script: the script does four slides, ' + f'site.yml {slides} (the build runs the Dockerfile\'s '
        'RUN steps, the cgroups slide its demonstrations); the like-for-like row compares the same four. What remains is '
        'the base (45 MB sent to each seat and unpacked: gzip and tar on the shared cores, N unpacks on one disk) plus one '
        'module run per slide, against the script\'s one ssh per seat.',
        '- T(20)/T(1): twenty seats\' unpacks and module runs share the two cores with the controller, so a task costs '
        'several times more at N=20 than at N=1; on a classroom only the controller\'s share grows with N.',
        '',
    ]
    return lines


CPU_RUNS = {
    'ping': 'ansible -m ping',
    'rerun': 'site.yml rerun',
    'check': 'site.yml --check',
    'ping_warm': 'ping, warm SSH',
    'rerun_warm': 'rerun, warm SSH',
    'first': 'site.yml first converge',
    'first_script_slides': "first converge, the script's slides",
    'hand_first': 'hand-written first run',
}


def median_cpu(series: Mapping, key: str) -> Mapping | None:
    """The CPU figures (bench.py's cpu_used) of the run of `key` whose wall time is the median one."""
    cpus = (series.get('cpu') or {}).get(key) or []
    walls = series.get(key) or []
    if not cpus or len(cpus) != len(walls):
        return None
    order = sorted(range(len(walls)), key=walls.__getitem__)
    return cpus[order[(len(order) - 1) // 2]]


def module_runs_per_seat(round_trips: Mapping | None, key: str = 'rerun') -> int | None:
    """Module runs per seat of a run (the most any seat needed, summed over the slides), from the round-trip count."""
    slides = ((round_trips or {}).get(key) or {}).get('slides') or {}
    return sum(counts['max']['module'] for counts in slides.values()) if slides else None


def cpu_section(scaling: Mapping) -> list[str]:
    """Where the CPU goes, per host count, and the floor it puts under each run on this machine's cores."""
    by_hosts = {int(count): series for count, series in scaling['by_hosts'].items()}
    counts = [count for count in sorted(by_hosts) if median_cpu(by_hosts[count], 'rerun')]
    if not counts:
        return []
    cores = scaling.get('machine', {}).get('cores') or 1
    lines = ['## Where the CPU goes', '',
             'Counted around every timed command: the CPU seconds of the seats (their cgroups hold every process of a seat: '
             'sshd, the modules, the containers), of the Ansible command itself (ansible, its workers, the SSH clients) and '
             'of the rest of the machine (the SSH multiplexing masters, and anything else that ran), from the seats\' '
             f'`cpuacct`, `getrusage` and `/proc/stat`. The machine has {cores} cores: no run can take less wall time than '
             'its CPU seconds divided by them (the floor column). "Waiting for the disk" is the cores\' iowait time; '
             '"written" what the machine wrote into its page cache meanwhile (`nr_dirtied`), which the disk receives then or '
             'later. Median run of each kind.', '',
             '| Hosts | Run | Wall | CPU: seats | CPU: the Ansible command | CPU: rest | CPU: whole machine | cores busy | '
             'floor (CPU / cores) | waiting for the disk | written |',
             '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for count in counts:
        for key, label in CPU_RUNS.items():
            cpu = median_cpu(by_hosts[count], key)
            if cpu is None:
                continue
            lines.append(f"| {count} | {label} | {cpu['wall']:.1f} s | {cpu['seats']:.1f} s | {cpu['command']:.1f} s | "
                         f"{round(cpu['other'], 1) + 0.0:.1f} s | {cpu['machine']:.1f} s | {cpu['machine'] / max(cpu['wall'], 0.001):.2f} of {cores} | "
                         f"{cpu['machine'] / cores:.1f} s | {cpu.get('iowait', 0):.1f} s | {cpu.get('written_mb', 0):.0f} MB |")
    lines.append('')
    modules = module_runs_per_seat(scaling.get('round_trips'))
    for count in (10,) if 10 in counts else counts[-1:]:
        ping, rerun = median_cpu(by_hosts[count], 'ping'), median_cpu(by_hosts[count], 'rerun')
        if not ping or not rerun or not ping['machine']:
            continue
        lines.append(f"- Rerun against ping on {count} hosts: the rerun used {rerun['machine']:.1f} CPU seconds, the ping "
                     f"{ping['machine']:.1f} ({rerun['machine'] / ping['machine']:.1f}x); their wall times were "
                     f"{rerun['wall']:.1f} s and {ping['wall']:.1f} s ({rerun['wall'] / ping['wall']:.1f}x).")
        if modules:
            per_run_seat = rerun['seats'] / (count * modules)
            per_run_command = rerun['command'] / (count * modules)
            ping_seat, ping_command = ping['seats'] / count, ping['command'] / count
            budget = 3 * ping['machine'] / (count * modules)
            lines.append(f"  A rerun is {modules} module runs per seat (the round-trip count below); each cost the seat "
                         f"{per_run_seat * 1000:.0f} ms of CPU and the controller {per_run_command * 1000:.0f} ms "
                         f"(the ping's one: {ping_seat * 1000:.0f} ms and {ping_command * 1000:.0f} ms, Ansible's start-up "
                         f"included). Within 3x the ping's CPU, {modules} module runs on {count} seats could cost "
                         f"{budget * 1000:.0f} ms each, seat and controller together: "
                         f"{(per_run_seat + per_run_command) / budget:.1f}x less than they cost here. On {cores} cores "
                         f"the rerun cannot take less than {rerun['machine'] / cores:.1f} s "
                         f"({rerun['machine'] / cores / ping['wall']:.1f}x the ping's wall time).")
    first_counts = [count for count in counts if median_cpu(by_hosts[count], 'first')]
    if len(first_counts) > 1:
        low, high = first_counts[0], first_counts[-1]
        first_low, first_high = median_cpu(by_hosts[low], 'first'), median_cpu(by_hosts[high], 'first')
        lines.append(f"- First converge from {low} to {high} hosts: {first_low['machine']:.1f} to {first_high['machine']:.1f} "
                     f"CPU seconds ({first_high['machine'] / max(first_low['machine'], 0.001):.1f}x), "
                     f"{first_low.get('written_mb', 0):.0f} to {first_high.get('written_mb', 0):.0f} MB written. The floor on "
                     f"{high} hosts, {first_high['machine'] / cores:.1f} s, is "
                     f"{first_high['machine'] / cores / first_low['wall']:.1f}x the {first_low['wall']:.1f} s of {low}: "
                     f"T({high})/T({low}) cannot be less on {cores} cores.")
    for count in counts:
        mine, script = median_cpu(by_hosts[count], 'first_script_slides'), median_cpu(by_hosts[count], 'hand_first')
        if mine and script and script['machine']:
            lines.append(f"- Like for like on {count} host(s): the four slides by site.yml used {mine['machine']:.1f} CPU "
                         f"seconds ({mine['seats']:.1f} on the seats, {mine['command']:.1f} in Ansible), the script "
                         f"{script['machine']:.1f} ({script['seats']:.1f} on the seats).")
    lines.append('')
    return lines


RUN_LABELS = {'rerun': 'rerun', 'check': '--check', 'first': 'first converge'}
HEADER_CELLS = ' | '.join(f'{label}: tasks | {label}: module / transfer / shell per seat' for label in RUN_LABELS.values())


def round_trip_section(round_trips: Mapping | None) -> list[str]:
    """Per slide: tasks and the round trips to each seat, from bench/roundtrips.py's count of -vvv logs."""
    if not round_trips:
        return []
    lines = [f"## Round trips per slide ({round_trips.get('hosts', '?')} host(s), counted, not timed)", '',
             'From `-vvv` logs (`bench/roundtrips.py`): every `ssh` or `sftp` the connection plugin started for a seat, '
             'per slide (the role `base_rootfs` is the layers slide\'s base). "Module" is a module run, "transfer" a file '
             'sent, "shell" a command such as the temporary directory\'s `mkdir` (and the interpreter discovery of the '
             'first task). The most any seat needed; the controller\'s own tasks (delegated, once per run) apart. '
             'A task that starts nothing on a seat (debug, set_fact, argument validation, a skipped task) costs '
             'controller time only.', '',
             '| Slide | ' + HEADER_CELLS + ' |',
             '| --- | ' + ' | '.join('---: | ---:' for _label in RUN_LABELS) + ' |']
    slides = list(dict.fromkeys(slide for key in RUN_LABELS for slide in round_trips.get(key, {}).get('slides', {})))
    for slide in slides:
        cells = []
        for key in RUN_LABELS:
            counts = round_trips.get(key, {}).get('slides', {}).get(slide)
            if counts is None:
                cells += ['-', '-']
                continue
            most = counts['max']
            controller = sum(counts['controller'].values())
            cells += [str(counts['tasks']), f"{most['module']} / {most['transfer']} / {most['shell']}"
                      + (f' (+{controller} on the controller)' if controller else '')]
        lines.append(f'| {slide} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    return lines


def slide_step_section(slide_steps: Mapping | None) -> list[str]:
    if not slide_steps:
        return []
    lines = [f"## The slide step: one `--tags SLIDE` rerun on {slide_steps['hosts']} hosts", '',
             'What the instructor waits for between two slides (cold SSH, one run each, changed=0 required).', '',
             '| Slide | Time | load before |', '| --- | ---: | ---: |']
    for slide, step in slide_steps['steps'].items():
        lines.append(f"| `--tags {slide}` | {step['seconds']:.1f} s | {step['load']:.1f} |")
    lines.append('')
    return lines


def settings_section(settings: Mapping) -> list[str]:
    entries = settings['settings']
    baseline = next((median(entry['rerun']) for entry in entries if entry['key'] == 'baseline'), None)
    with_first = any(entry['first'] for entry in entries)
    lines = [f"## Speed settings ({settings['hosts']} hosts, {settings['runs']} runs, medians)", '',
             'The hosts are converged once; then each setting times a `site.yml` rerun, the settings taking turns in every round'
             + (f" (first converges: {settings.get('first_runs', '?')} run(s) of each, hosts reset to clean before each)"
                if with_first else '') + '.'
             + (f" Mitogen {settings['mitogen']}." if settings.get('mitogen') else ''), '',
             '| Setting | Rerun | vs baseline |' + (' First converge |' if with_first else ''),
             '| --- | ---: | ---: |' + (' ---: |' if with_first else '')]
    for entry in entries:
        rerun = median(entry['rerun'])
        relative = f'{rerun / baseline:.2f}x' if rerun and baseline else '-'
        lines.append(f"| {entry['label']} | {seconds(entry['rerun'])} | {relative} |"
                     + (f" {seconds(entry['first'])} |" if with_first else ''))
    facts = settings.get('facts', {})
    if facts:
        lines += ['', 'Fact gathering (the talk gathers none; this is what it would cost on the same hosts):', '',
                  '| Command | Time |', '| --- | ---: |',
                  f"| `ansible all -m ping` | {seconds(facts.get('ping', []))} |",
                  f"| `ansible all -m setup -a gather_subset=min` | {seconds(facts.get('setup_min', []))} |",
                  f"| `ansible all -m setup` (all facts) | {seconds(facts.get('setup_full', []))} |",
                  f"| play with `gather_facts: true`, empty jsonfile cache (`gathering = smart`) | {seconds(facts.get('play_gather', []))} |",
                  f"| the same play again, facts from the cache | {seconds(facts.get('play_cached', []))} |"]
    lines.append('')
    return lines


def write_plot(scaling: Mapping, path: Path) -> str | None:
    """Time against N, one line per measure, the range of the runs as error bars. None when it worked."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return 'matplotlib is not installed (bench/run installs it from bench/requirements.txt): no plot written'
    by_hosts = {int(count): series for count, series in scaling['by_hosts'].items()}
    counts = sorted(by_hosts)
    styles = {
        'first': ('tab:blue', '-', 'o'), 'rerun': ('tab:green', '-', 's'), 'check': ('tab:olive', '-', '^'),
        'ping': ('tab:gray', ':', 'x'), 'ping_warm': ('tab:gray', '-.', '+'), 'rerun_warm': ('tab:green', '-.', 'D'),
        'first_script_slides': ('tab:purple', '-', 'v'), 'hand_first': ('tab:red', '--', 'o'), 'hand_rerun': ('tab:orange', '--', 's'),
    }
    figure, axes = plt.subplots(figsize=(10, 5.2), dpi=110)
    for key, label in MEASURE_LABELS.items():
        if not all(by_hosts[count].get(key) for count in counts):
            continue
        medians = [statistics.median(by_hosts[count][key]) for count in counts]
        below = [m - min(by_hosts[count][key]) for m, count in zip(medians, counts)]
        above = [max(by_hosts[count][key]) - m for m, count in zip(medians, counts)]
        color, linestyle, marker = styles[key]
        axes.errorbar(counts, medians, yerr=[below, above], label=label, color=color, linestyle=linestyle, marker=marker,
                      capsize=3)
    machine = scaling.get('machine', {})
    axes.set_title(f"unboxed: the talk on N local lab hosts (median of {runs_text(scaling)})\n"
                   f"{machine.get('cores', '?')} cores, ansible-core {machine.get('ansible_core', '?')}, {machine.get('date', '')}",
                   fontsize=10)
    axes.set_xlabel('hosts (N)')
    axes.set_ylabel('wall time (s)')
    axes.set_xticks(counts)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return None


HOW = """## How it was measured

- `bench/run` (this file is generated by it: rerun it rather than editing this file). Hosts are the local lab
  (`scripts/labctl`, lab `bench`): Debian hosts in namespaces on this machine, reached over SSH with key login,
  as a classroom seat is; their releases are handed out in turn (`bench/run --releases`, default
  trixie,bookworm: host 1 Debian 13, host 2 Debian 12...) and shown under Machine. The controller and every
  host share the machine's cores, so N hosts also means N sshd and N module processes competing with the
  controller for them.
- Every Ansible command is timed cold: it gets its own SSH ControlPath directory and its multiplexing masters are
  closed afterwards, so no command profits from the previous one's connections. (Warm connections are a separate
  setting below.) `ansible.cfg` is used as committed (pipelining, ControlPersist=60s, forks=40,
  gathering=explicit, the `lab_report` callback), plus the benchmark's timing callback.
- Before every first converge, Ansible's and the script's alike, the hosts are reset to a fresh seat by
  `reset.yml`, then `handwritten.sh --reset`, then removing the host's copy of the base archive (reset.yml keeps
  it on purpose, so that a reset seat gets its base back without a transfer; a fresh seat has none). A probe then
  checks every host: no /overlay, no archive copy, no overlay mount, no `tail` process. Resetting instead of
  recreating the lab: it returns exactly the state the talk starts from, while recreating would also copy and
  delete the hosts' own root file systems (194 MB bookworm, 156 MB trixie), and deletions on this disk (ext4
  with `discard`) slow the writes that follow for many seconds. For the same reason the benchmark then flushes and waits until the disk is idle
  before it times anything.
- The base archive is built on the controller before anything is timed (mmdebstrap, once per machine and
  recipe, bound by the mirror): a first converge here is "push and unpack the cached base on fresh seats".
- In each run the measures follow each other: ping, first converge, rerun, `--check` (of the converged hosts),
  warm SSH, reset, the script's first run and rerun, reset, the like-for-like first converge. Runs are repeated
  (`--runs`); tables give medians and say how many runs there were.
- Then, in the same run: a warm-SSH pair (an untimed ping opens the multiplexing masters, a timed ping and a timed
  rerun reuse them) and a like-for-like first converge, `site.yml --tags layers,overlay,chroot,namespaces`, the
  four slides the script does. At the largest N, one `--tags SLIDE` rerun per slide (the slide step); at the
  smallest, a first converge, a rerun and a `--check` with `-vvv`, whose logs `bench/roundtrips.py` counts.
- Every run is checked, not only timed: a first converge must change every host, a rerun and a `--check`
  must report changed=0, nothing may fail or be unreachable, and the script must exit 0 on every host.
- The machine may be shared: read the load column. The ratios compare measures taken within a minute or two of
  each other, so a drifting load hits both sides alike; the absolute times do not transfer to another machine.
"""


def write_report(results_dir: Path, output_dir: Path) -> None:
    scaling = load_json(results_dir / 'scaling.json')
    settings = load_json(results_dir / 'settings.json')
    lines = ['# Benchmark results', '']
    notes = []
    if scaling and scaling.get('by_hosts'):
        loads = [load for series in scaling['by_hosts'].values() for load in series.get('load', [])]
        seats = seats_text({int(count): series.get('seats') for count, series in scaling['by_hosts'].items()},
                           scaling.get('releases', ''))
        lines += ['## Machine', ''] + machine_table(scaling.get('machine', {}), loads, seats) + ['']
        section = scaling_section(scaling)[0]
        lines += section
        problem = write_plot(scaling, output_dir / 'time_vs_hosts.png')
        if problem:
            notes.append(problem)
    if settings:
        if not scaling:
            seats = seats_text({len(settings.get('seats') or {}): settings.get('seats')}, settings.get('releases', ''))
            lines += ['## Machine', ''] + machine_table(settings.get('machine', {}), [
                load for entry in settings['settings'] for load in entry.get('load', [])], seats) + ['']
        elif settings.get('machine', {}).get('date') != scaling.get('machine', {}).get('date'):
            lines += [f"(The settings below were measured on {settings['machine'].get('date', '?')}.)", '']
        lines += settings_section(settings)
    lines += [HOW]
    lines += [f'Note: {note}' for note in notes]
    (output_dir / 'RESULTS.md').write_text('\n'.join(lines).rstrip() + '\n', encoding='utf-8')
