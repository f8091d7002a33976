"""Class mode on three local lab seats: students type the talk over SSH, the lab prepares, grades, solves, resets,
and the class board shows it in headless Chromium.

The tests share a lab of their own (LAB, never the default lab or another test's) and run in order: each builds on
the state the one before left (the class goes through the talk). "Students" are ad-hoc shell commands over SSH, as
the seat's account with sudo, typing the talk's commands exactly (mkdir -p /overlay/{...}, mount -t overlay ...,
unshare ... chroot ... tail -f /dev/null &) and the typical mistakes. Every process a student started is killed by
its PID at the end, and the lab goes down with its mounts. The controller's base archive comes from a cache of this
module (seeded with a hard link of the machine's cached archive when there is one, so nothing is built twice and the
machine's cache is never written).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import ansible_env, run_adhoc
from test_lab_report_html import DevToolsPipe, find_chromium
from test_talk import SNAPSHOT_SCRIPT

from ansible_collections.unboxed.lab.plugins.callback import class_board

pytestmark = [pytest.mark.lab, pytest.mark.root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LABCTL = os.path.join(REPO, 'scripts', 'labctl')
LAB = 'classtest'
HOSTS = ['lab1', 'lab2', 'lab3']
MACHINE_BASE_CACHE = '/var/cache/unboxed/base'
DOCS_IMAGE = os.path.join(REPO, 'docs', 'img', 'class-board-40-seats.png')

# The talk's commands, as a student types them (bash: the braces).
MKDIRS = 'mkdir -p /overlay/{lower2-file,upper,work,merged}'
MOUNT = ('mount -t overlay overlay -o lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,'
         'workdir=/overlay/work /overlay/merged')
MOUNT_REVERSED = ('mount -t overlay overlay -o lowerdir=/overlay/lower1-base:/overlay/lower2-file,upperdir=/overlay/upper,'
                  'workdir=/overlay/work /overlay/merged')
MOUNT_NO_WORKDIR = 'mount -t overlay overlay -o lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper /overlay/merged'
CONTAINER = 'unshare --fork --pid --net --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null'
NO_NET = 'unshare --fork --pid --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null'
NO_FORK = 'unshare --pid --net --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null'
NO_PROC = 'unshare --fork --pid --net chroot /overlay/merged tail -f /dev/null'
# In the background, as "&" at a terminal; the redirections let the SSH session end.
BACKGROUND = ' >/dev/null 2>&1 </dev/null & echo $!'

READ_BOARD = """JSON.stringify({
  updated: document.getElementById('updated').dataset.updated,
  text: document.body.innerText,
  rows: Array.from(document.querySelectorAll('tbody tr')).map(row => ({
    host: row.dataset.host, reach: row.className,
    cells: Object.fromEntries(Array.from(row.querySelectorAll('td.cell')).map(cell => [cell.dataset.slide, {
      state: cell.dataset.state, text: cell.innerText, background: getComputedStyle(cell).backgroundColor}])),
  })),
  tableWidth: document.querySelector('table').getBoundingClientRect().width,
  rowHeights: Array.from(document.querySelectorAll('tbody tr')).map(row => row.getBoundingClientRect().height),
})"""


class ClassLab:
    def __init__(self, tmp):
        self.tmp = tmp
        self.inventory = os.path.join(tmp, 'hosts.yml')
        self.cache_dir = os.path.join(tmp, 'base-cache')
        self.board_dir = os.path.join(tmp, 'board')
        self.report_dir = os.path.join(tmp, 'report')
        self.runs = 0
        self.started = {host: [] for host in HOSTS}  # PIDs of what the students started, per seat

    def env(self, record=None):
        env = ansible_env(self.tmp, record_to=record)
        env.update({'ANSIBLE_CALLBACKS_ENABLED': 'record_results,unboxed.lab.lab_report,unboxed.lab.class_board',
                    'UNBOXED_CLASS_BOARD_DIR': self.board_dir, 'UNBOXED_CLASS_BOARD_REFRESH': '2',
                    'UNBOXED_LAB_REPORT_DIR': self.report_dir, 'UNBOXED_LAB_REPORT_PRINT': 'false'})
        return env

    def labctl(self, *args):
        completed = subprocess.run([LABCTL, *args, '--json', '--lab', LAB], capture_output=True, text=True, check=False,
                                   timeout=600, stdin=subprocess.DEVNULL)
        assert completed.returncode == 0, f'labctl {" ".join(args)}:\n{completed.stdout}\n{completed.stderr}'
        return json.loads(completed.stdout)

    def playbook(self, playbook, *extra, inventory=None):
        self.runs += 1
        record = os.path.join(self.tmp, f'results-{self.runs}.jsonl')
        argv = [os.path.join(BIN, 'ansible-playbook'), '-i', inventory or self.inventory, playbook,
                '-e', f'base_rootfs_cache_dir={self.cache_dir}', *extra]
        completed = subprocess.run(argv, cwd=REPO, env=self.env(record), capture_output=True, text=True, check=False,
                                   timeout=900, stdin=subprocess.DEVNULL)
        results = []
        if os.path.exists(record):
            with open(record, encoding='utf-8') as handle:
                results = [json.loads(line) for line in handle]
        return Run(argv, completed, results)

    def student(self, host, command):
        """A student types ``command`` at the seat, as root (sudo), in bash."""
        _rc, results, completed = run_adhoc(self.tmp, self.inventory, host, 'ansible.builtin.shell',
                                            f'executable=/bin/bash {command}', env=ansible_env(self.tmp))
        assert host in results, f'{completed.stdout}\n{completed.stderr}'
        return results[host]

    def start(self, host, command):
        """A student starts a container in the background; its PID (unshare's, or tail's without --fork) is kept."""
        result = self.student(host, command + BACKGROUND)
        assert result.get('rc') == 0, result
        self.started[host].append(int(result['stdout'].strip()))
        time.sleep(0.5)
        return self.started[host][-1]

    def snapshot(self):
        _rc, results, completed = run_adhoc(self.tmp, self.inventory, 'all', 'ansible.builtin.shell', SNAPSHOT_SCRIPT,
                                            env=ansible_env(self.tmp))
        assert sorted(results) == HOSTS, completed.stdout + completed.stderr
        return {host: result['stdout'] for host, result in results.items()}

    def board(self):
        with open(os.path.join(self.board_dir, 'board.json'), encoding='utf-8') as handle:
            return json.load(handle)

    def kill_students(self):
        """Kill what the students started, by PID, and what it forked (tail under unshare)."""
        for host, pids in self.started.items():
            if pids:
                listed = ' '.join(str(pid) for pid in pids)
                self.student(host, f'for pid in {listed}; do pkill -KILL -P $pid; kill -KILL $pid; done; true')
                pids.clear()


class Run:
    def __init__(self, argv, completed, results):
        self.argv, self.rc, self.stdout, self.stderr = argv, completed.returncode, completed.stdout, completed.stderr
        self.results = results

    def explain(self):
        return f'$ {" ".join(self.argv)}\nrc={self.rc}\n{self.stdout[-6000:]}\n{self.stderr[-2000:]}'

    def task(self, name):
        return {entry['host']: entry for entry in self.results if entry['task'].rpartition(' : ')[2] == name}

    def changed_hosts(self):
        return {entry['host'] for entry in self.results if entry['status'] == 'ok' and entry['result'].get('changed')}

    def grades(self):
        return {host: entry['result'] for host, entry in self.task('Grade the slides from the seat\'s kernel').items()
                if entry['status'] == 'ok'}


def seed_base_cache(cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    if not os.path.isdir(MACHINE_BASE_CACHE):
        return
    for name in os.listdir(MACHINE_BASE_CACHE):
        source, target = os.path.join(MACHINE_BASE_CACHE, name), os.path.join(cache_dir, name)
        if name.endswith(('.tar.gz', '.tar.gz.sha256')) and '.partial.' not in name and not os.path.exists(target):
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('needs root: the local lab uses network namespaces, bridges and mounts')
    lab = ClassLab(str(tmp_path_factory.mktemp('class')))
    seed_base_cache(lab.cache_dir)
    lab.labctl('down')
    try:
        lab.labctl('up', '--hosts', str(len(HOSTS)), '--inventory', lab.inventory)
        yield lab
    finally:
        try:
            lab.kill_students()
        finally:
            lab.labctl('down')


def assert_ok(run):
    assert run.rc == 0, run.explain()


def test_preflight_finds_what_the_talk_needs_and_names_what_a_seat_lacks(lab):
    # One run (preflight reads a dozen things per seat): a program no seat has and more disk than any has, beside
    # the real checks, which must all hold on the lab's seats.
    run = lab.playbook('preflight.yml', '-e', '{"preflight_programs": ["unshare", "mount", "chroot", "nsenter", "docker"]}',
                       '-e', 'preflight_min_free_mb=100000000')

    assert run.rc == 2, run.explain()
    summaries = run.task('Summarize the seat')
    assert sorted(summaries) == HOSTS
    for host, entry in summaries.items():
        lines = entry['result']['msg']
        assert len(lines) == 7, lines
        failing = [line for line in lines if not line.startswith('ok ')]
        assert len(failing) == 2, lines
        assert failing[0].startswith('FAIL namespaces: unshare, mount, chroot, nsenter, docker run - missing: docker'), lines
        assert failing[1].startswith('FAIL layers: at least 100000000 MB free for the base (/overlay) - '), lines
        assert any("ok   seat: sudo makes the seat's account root (become) - uid 0" in line for line in lines), lines
        assert any('ok   overlay: the kernel has overlayfs' in line for line in lines), lines
    with open(os.path.join(lab.report_dir, 'preflight.json'), encoding='utf-8') as handle:
        report = json.load(handle)
    reasons = {host['host']: host['reason']['message'] for host in report['hosts']}
    assert sorted(reasons) == HOSTS
    for message in reasons.values():
        assert re.fullmatch(r'missing: docker; disk space \(\d+ MB free, 100000000 MB needed\)', message), message


def test_a_slide_that_does_not_exist_touches_no_seat(lab):
    before = lab.snapshot()
    for playbook in ('prepare.yml', 'reset_slide.yml', 'solve.yml', 'grade.yml'):
        run = lab.playbook(playbook, '-e', 'slide=overlays')
        assert run.rc == 2, run.explain()
        assert ('There is no slide "overlays". The slides, in the talk\'s order: layers, build, overlay, chroot, '
                'namespaces, cgroups, capabilities, seccomp.') in run.stdout, run.explain()
        assert len(run.results) == 1, run.explain()  # the check itself, nothing on a seat
    assert lab.snapshot() == before


def test_grade_marks_the_overlay_mistakes_with_their_hints(lab):
    assert_ok(lab.playbook('prepare.yml', '-e', 'slide=overlay'))
    for host in HOSTS:
        assert lab.student(host, MKDIRS)['rc'] == 0
    assert lab.student('lab1', MOUNT)['rc'] == 0
    assert lab.student('lab2', MOUNT_REVERSED)['rc'] == 0
    no_workdir = lab.student('lab3', MOUNT_NO_WORKDIR)
    assert no_workdir['rc'] == 32, no_workdir  # the kernel refuses an upperdir without workdir
    before = lab.snapshot()

    run = lab.playbook('grade.yml')

    assert_ok(run)
    assert lab.snapshot() == before, 'grading changed a seat'
    assert run.changed_hosts() == set()
    overlay = {host: grade['slides']['overlay'] for host, grade in run.grades().items()}
    assert {host: slide['state'] for host, slide in overlay.items()} == {'lab1': 'done', 'lab2': 'stuck', 'lab3': 'not_started'}
    assert overlay['lab2']['hint'].startswith('lowerdir order: file01.txt comes from the upper of the two image layers, '
                                              'so lower2-file must be listed first')
    assert overlay['lab3']['hint'].startswith(f'Nothing is mounted at /overlay/merged yet: {MOUNT} (with upperdir, workdir '
                                              f'too: without workdir the kernel refuses an upper layer)')
    layers = {host: grade['slides']['layers']['state'] for host, grade in run.grades().items()}
    assert layers == dict.fromkeys(HOSTS, 'done')
    board = lab.board()
    assert {host: seat['slides']['overlay']['state'] for host, seat in board['seats'].items()} == \
        {'lab1': 'done', 'lab2': 'stuck', 'lab3': 'not_started'}
    assert board['seats']['lab1']['slides']['overlay']['done_at'] == board['updated']


def test_solve_fixes_only_the_seats_behind_and_then_nothing(lab):
    mount_of_lab1 = lab.student('lab1', 'grep " /overlay/merged " /proc/self/mountinfo')['stdout']

    run = lab.playbook('solve.yml', '-e', 'slide=overlay')

    assert_ok(run)
    said = run.task('Say which seats solve will touch')
    assert said['lab1']['result']['msg'] == ['overlay: behind, solved now: lab2, lab3', 'overlay: done already, left alone: lab1']
    assert run.changed_hosts() == {'lab2', 'lab3'}, run.explain()
    # lab1's own mount is the same mount (same mount ID): solve did not touch it.
    assert lab.student('lab1', 'grep " /overlay/merged " /proc/self/mountinfo')['stdout'] == mount_of_lab1
    assert lab.board()['seats']['lab2']['slides']['overlay']['state'] == 'done'

    again = lab.playbook('solve.yml', '-e', 'slide=overlay')
    assert_ok(again)
    assert again.changed_hosts() == set(), again.explain()
    assert again.task('Say which seats solve will touch')['lab1']['result']['msg'][0] == 'overlay: behind, solved now: none'


def test_grade_marks_the_container_mistakes_with_their_hints(lab):
    # Every seat has the overlay now (solved): the class starts the namespaces slide.
    assert_ok(lab.playbook('reset_slide.yml', '-e', 'slide=namespaces'))
    right = lab.start('lab1', CONTAINER)
    lab.start('lab2', NO_NET)
    lab.start('lab3', NO_PROC)

    first = lab.playbook('grade.yml', '-e', 'slide=namespaces')

    assert_ok(first)
    namespaces = {host: grade['slides']['namespaces'] for host, grade in first.grades().items()}
    assert {host: slide['state'] for host, slide in namespaces.items()} == {'lab1': 'done', 'lab2': 'stuck', 'lab3': 'stuck'}
    assert namespaces['lab2']['hint'].startswith("Did you forget --net? The container shares the seat's network namespace")
    assert namespaces['lab3']['hint'].startswith('Did you forget --mount-proc=/overlay/merged/proc? ps inside the container '
                                                 'finds no /proc ("Error, do this: mount -t proc proc /proc")')
    containers = first.grades()['lab1']['containers']
    assert [(c['command'], c['pid_inside']) for c in containers] == [(['tail', '-f', '/dev/null'], 1)]
    assert containers[0]['isolated'] == ['mount', 'net', 'pid']

    # lab3 tries again, now forgetting --fork.
    lab.student('lab3', f'pkill -KILL -P {lab.started["lab3"][-1]}; true')
    lab.start('lab3', NO_FORK)
    second = lab.playbook('grade.yml', '-e', 'slide=namespaces')
    hint = second.grades()['lab3']['slides']['namespaces']['hint']
    assert "tail -f /dev/null runs in the seat's PID namespace" in hint and 'Did you forget --fork?' in hint, hint
    assert second.grades()['lab1']['containers'][0]['pid'] == containers[0]['pid']
    assert containers[0]['pid'] != right  # tail, unshare's child, is the container; unshare is not


def test_solve_adopts_the_right_container_and_replaces_the_wrong_ones(lab):
    found = {host: [c['pid'] for c in grade['containers']]
             for host, grade in lab.playbook('grade.yml', '-e', 'slide=namespaces').grades().items()}
    right_pid, wrong_pids = found['lab1'][0], found

    run = lab.playbook('solve.yml', '-e', 'slide=namespaces')

    assert_ok(run)
    assert run.task('Say which seats solve will touch')['lab1']['result']['msg'] == [
        'namespaces: behind, solved now: lab2, lab3', 'namespaces: done by hand, adopted now: lab1',
        'namespaces: done already, left alone: none']
    started = {host: entry['result'] for host, entry in run.task('Run the container in its own namespaces').items()}
    assert {host: result['action'] for host, result in started.items()} == \
        {'lab1': 'adopted', 'lab2': 'replaced', 'lab3': 'replaced'}, run.explain()
    assert started['lab1']['pid'] == right_pid and started['lab1']['replaced'] == []
    tail = ['tail', '-f', '/dev/null']
    assert started['lab2']['replaced'] == [{'pid': wrong_pids['lab2'][0], 'command': tail,
                                            'why': "shares the seat's network namespace (no --net)"}]
    assert started['lab3']['replaced'] == [{'pid': wrong_pids['lab3'][0], 'command': tail,
                                            'why': "runs in the seat's PID namespace (no --pid, or unshare without --fork)"}]
    assert run.changed_hosts() == set(HOSTS)
    # ns_container's record of the talk's container names the student's own process now.
    record = json.loads(lab.student('lab1', 'cat /run/unboxed/containers/talk/state.json')['stdout'])
    assert record['process']['pid'] == right_pid and record['adopted'] is True
    graded = lab.playbook('grade.yml', '-e', 'slide=namespaces').grades()
    assert {host: grade['slides']['namespaces']['state'] for host, grade in graded.items()} == dict.fromkeys(HOSTS, 'done')
    assert graded['lab1']['containers'][0]['pid'] == right_pid, 'the right hand-made container was not kept'
    # The wrong ones are gone and no second container was started: one process runs tail in merged per seat.
    assert {host: [(c['command'], c['recorded']) for c in grade['containers']] for host, grade in graded.items()} == \
        dict.fromkeys(HOSTS, [(tail, 'talk')]), graded
    again = lab.playbook('solve.yml', '-e', 'slide=namespaces')
    assert_ok(again)
    assert again.changed_hosts() == set(), again.explain()
    site = lab.playbook('site.yml', '--tags', 'namespaces')
    assert_ok(site)
    assert site.changed_hosts() == set(), site.explain()
    after = lab.playbook('grade.yml', '-e', 'slide=namespaces').grades()
    assert {host: [c['pid'] for c in grade['containers']] for host, grade in after.items()} == \
        {host: [c['pid'] for c in grade['containers']] for host, grade in graded.items()}


def test_the_confinement_slides_are_graded_on_the_confined_container(lab):
    right_pid = lab.playbook('grade.yml', '-e', 'slide=namespaces').grades()['lab1']['containers'][0]['pid']

    # The seccomp slide's container is the cgroups slide's: solving it on every seat makes both.
    run = lab.playbook('solve.yml', '-e', 'slide=seccomp')

    assert_ok(run)
    graded = lab.playbook('grade.yml').grades()
    for host, grade in graded.items():
        states = {slide: grade['slides'][slide]['state'] for slide in ('namespaces', 'cgroups', 'capabilities', 'seccomp')}
        assert states == dict.fromkeys(states, 'done'), (host, grade['lines'])
        # PID 1 of each container (the confined one's launcher, unshare, moved into its root with pivot_root).
        containers = [c for c in grade['containers'] if c['pid_inside'] == 1]
        assert sorted(c['recorded'] for c in containers) == ['confined', 'talk'], grade['containers']
        assert all(c['recorded'] for c in grade['containers'] if c['pid_inside'] != 1), grade['containers']
    # The talk's container of lab1 is still the one its student started (adopted by the namespaces solve).
    assert [c['pid'] for c in graded['lab1']['containers'] if c['recorded'] == 'talk'] == [right_pid]


def test_reset_of_a_slide_leaves_the_earlier_slides_intact(lab):
    lab.student('lab2', 'mount -t proc proc /overlay/merged/proc')  # ps in the chroot, by hand
    earlier = {host: text.split('--- mounts')[0] for host, text in lab.snapshot().items()}

    run = lab.playbook('reset_slide.yml', '-e', 'slide=overlay')

    assert_ok(run)
    after = lab.snapshot()
    for host, text in after.items():
        mounts, processes = text.split('--- mounts', 1)[1].split('--- processes', 1)
        assert ' overlay ' not in mounts and '/overlay/merged/proc' not in mounts, f'{host}:\n{mounts}'
        assert processes.strip() == '', f'{host}:\n{processes}'
        layers_and_build = [line for line in text.split('--- mounts')[0].splitlines()
                            if line.startswith(('/overlay/lower', '/var/cache/unboxed'))]
        assert layers_and_build == [line for line in earlier[host].splitlines()
                                    if line.startswith(('/overlay/lower', '/var/cache/unboxed'))], host
    graded = lab.playbook('grade.yml').grades()
    assert {host: [grade['slides'][slide]['state'] for slide in ('layers', 'build', 'overlay', 'namespaces', 'cgroups')]
            for host, grade in graded.items()} == dict.fromkeys(HOSTS, ['done', 'done', 'not_started', 'not_started', 'not_started'])
    assert all(grade['containers'] == [] for grade in graded.values()), graded
    again = lab.playbook('reset_slide.yml', '-e', 'slide=overlay')
    assert_ok(again)
    assert again.changed_hosts() == set(), again.explain()
    lab.started = {host: [] for host in HOSTS}  # the reset stopped them all


def test_an_unreachable_seat_is_marked_and_the_others_graded(lab):
    with open(lab.inventory, encoding='utf-8') as handle:
        text = handle.read()
    broken = os.path.join(lab.tmp, 'lab3-unreachable.yml')
    with open(broken, 'w', encoding='utf-8') as handle:
        handle.write(text.replace('        lab3:\n', '        lab3:\n          ansible_port: 2\n', 1))

    run = lab.playbook('grade.yml', inventory=broken)

    assert run.rc == 4, run.explain()
    assert sorted(run.grades()) == ['lab1', 'lab2']
    board = lab.board()
    assert board['seats']['lab3']['reach'] == 'unreachable'
    assert board['seats']['lab1']['reach'] == 'ok'
    # Its history stays: it finished the overlay slide before.
    assert board['seats']['lab3']['slides']['overlay']['done_at']


def render(page, width=1400, height=900, wait_reload=None, screenshot=None):
    """Open ``page`` in headless Chromium; what it shows, and (``wait_reload``: a function run after the first load)
    what it shows after it reloaded itself."""
    profile = tempfile.mkdtemp(prefix='class-board-chromium-')
    browser = DevToolsPipe(find_chromium(), profile)
    try:
        target = next(info['targetId'] for info in browser.call('Target.getTargets')['targetInfos'] if info['type'] == 'page')
        session = browser.call('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        browser.call('Page.enable', session)
        browser.call('Network.enable', session)
        browser.call('Emulation.setDeviceMetricsOverride', session, width=width, height=height, deviceScaleFactor=1, mobile=False)
        browser.call('Page.navigate', session, url=f'file://{page}')
        browser.wait_for('Page.loadEventFired', session)
        shown = [json.loads(browser.call('Runtime.evaluate', session, expression=READ_BOARD, returnByValue=True)['result']['value'])]
        if screenshot:
            image = browser.call('Page.captureScreenshot', session, format='png', captureBeyondViewport=True)['data']
            with open(screenshot, 'wb') as handle:
                handle.write(base64.b64decode(image))
        if wait_reload:
            before = shown[0]['updated']
            wait_reload()
            # The page reloaded itself every few seconds meanwhile: the first loads may still show the old board.
            for _attempt in range(30):
                browser.wait_for('Page.loadEventFired', session)
                now = json.loads(browser.call('Runtime.evaluate', session, expression=READ_BOARD, returnByValue=True)['result']['value'])
                if now['updated'] != before:
                    break
            shown.append(now)
        requested = [event['params']['request']['url'] for event in browser.events if event.get('method') == 'Network.requestWillBeSent']
        return shown, requested
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_board_shows_the_class_and_refreshes_itself(lab):
    page = os.path.join(lab.board_dir, 'board.html')
    graded_before = lab.board()['updated']

    def next_round():
        # A grading round while the page is open (make watch): the page must pick it up by itself.
        time.sleep(1.1)  # the board's clock has a resolution of one second
        assert_ok(lab.playbook('grade.yml', '-l', 'lab1,lab2'))

    shown, requested = render(page, wait_reload=next_round)

    first, reloaded = shown
    assert set(requested) == {f'file://{page}'}
    rows = {row['host']: row for row in first['rows']}
    assert list(rows) == HOSTS
    assert rows['lab3']['reach'] == 'unreachable'
    assert rows['lab3']['cells']['overlay']['text'].startswith('unreachable')
    assert rows['lab1']['cells']['layers']['state'] == 'done'
    assert re.fullmatch(r'done\s*\d\d:\d\d', rows['lab1']['cells']['layers']['text'])
    assert rows['lab1']['cells']['overlay']['state'] == 'not_started'
    assert rows['lab1']['cells']['layers']['background'] == 'rgb(230, 244, 234)'
    assert 'of the class\'s slides done' in first['text']
    assert first['updated'] == graded_before
    assert reloaded['updated'] != graded_before and reloaded['updated'] == lab.board()['updated']


def test_the_board_shows_stuck_seats_with_their_hints(lab, tmp_path):
    # The grading rounds of this module, replayed into a board of its own: stuck, with hints, in Chromium.
    board = class_board.empty_board(['layers', 'build', 'overlay', 'chroot', 'namespaces'])
    hint = 'lowerdir order: file01.txt comes from the upper of the two image layers, so lower2-file must be listed first'
    class_board.merge_round(board, {'lab1': {'overlay': {'state': 'done'}}, 'lab2': {'overlay': {'state': 'stuck', 'hint': hint}}},
                            {}, {}, {'lab2': {'student': 'Bob Okafor', 'room': 'B204'}}, '2026-11-29T19:40:00Z')
    class_board.write_board(board, str(tmp_path), 30)
    shown, _requested = render(str(tmp_path / 'board.html'))
    rows = {row['host']: row for row in shown[0]['rows']}
    stuck = rows['lab2']['cells']['overlay']
    assert stuck['state'] == 'stuck' and stuck['background'] == 'rgb(198, 40, 40)'
    assert stuck['text'].startswith('stuck') and 'lower2-file must be listed first' in stuck['text']
    assert 'Bob Okafor' in shown[0]['text']


def synthetic_class(seats=40):
    """A class of 40 in the middle of the talk (the namespaces slide), as the rounds of a make watch loop leave it."""
    slides = ['layers', 'build', 'overlay', 'chroot', 'namespaces', 'cgroups', 'capabilities', 'seccomp']
    hints = {
        'overlay': 'lowerdir order: file01.txt comes from the upper of the two image layers, so lower2-file must be '
                   'listed first (lowerdir=/overlay/lower2-file:/overlay/lower1-base)',
        'namespaces': "Did you forget --net? The container shares the seat's network namespace (ip addr inside shows "
                      "the seat's interfaces): kill 4242 and start it again",
    }
    names = ['Alice Martin', 'Bob Okafor', 'Carol Diaz', 'Dmitri Volkov', 'Eva Lindqvist', 'Farid Haddad', 'Grace Ho',
             'Hugo Moreau', 'Ines Sousa', 'Jonas Berg']
    board = class_board.empty_board(slides)
    roster = {f'seat{n:02d}': {'student': f'{names[n % 10]} {n}', 'room': 'B204' if n <= 20 else 'B206'} for n in range(1, seats + 1)}
    for minute, reached in enumerate((1, 2, 3, 3, 4, 4)):
        graded = {}
        for n in range(1, seats + 1):
            progress = max(0, reached - (n % 7 == 0) - (n % 11 == 0))
            states = {}
            for index, slide in enumerate(slides):
                if index < progress:
                    states[slide] = {'state': 'done'}
                elif index == progress:
                    mistake = (n % 5 == 0 and slide in hints)
                    states[slide] = {'state': 'stuck' if mistake else 'in_progress',
                                     'hint': hints.get(slide, f'next step of the {slide} slide')}
                else:
                    states[slide] = {'state': 'not_started', 'hint': None}
            graded[f'seat{n:02d}'] = states
        unreachable = {'seat13': 'ssh: connect to host seat13 port 22: No route to host'} if minute == 5 else {}
        class_board.merge_round(board, {h: s for h, s in graded.items() if h not in unreachable}, unreachable, {}, roster,
                                f'2026-11-29T19:{10 + 7 * minute:02d}:00Z')
    return board


def test_a_board_of_40_seats_stays_readable(tmp_path):
    board = synthetic_class()
    class_board.write_board(board, str(tmp_path), 10)
    screenshot = str(tmp_path / 'board-40.png')

    shown, _requested = render(str(tmp_path / 'board.html'), width=1600, height=1000, screenshot=screenshot)

    page = shown[0]
    assert len(page['rows']) == 40
    assert page['tableWidth'] <= 1600
    # Compact rows: 40 seats fit in about two screens, a stuck hint is at most three short lines.
    assert max(page['rowHeights']) < 75, page['rowHeights']
    states = [cell['state'] for row in page['rows'] for cell in row['cells'].values()]
    assert {'done', 'in_progress', 'stuck', 'not_started'} <= set(states)
    assert sum(1 for row in page['rows'] if row['reach'] == 'unreachable') == 1
    with open(screenshot, 'rb') as handle:
        assert handle.read(8) == b'\x89PNG\r\n\x1a\n'
    if os.environ.get('UNBOXED_UPDATE_DOCS_IMAGES'):
        os.makedirs(os.path.dirname(DOCS_IMAGE), exist_ok=True)
        shutil.copyfile(screenshot, DOCS_IMAGE)


def test_history_is_kept_across_rounds():
    board = synthetic_class(seats=3)
    first_done = board['seats']['seat01']['slides']['layers']['done_at']
    assert first_done == '2026-11-29T19:10:00Z'
    # seat01 resets its layers: the state follows, when it first finished stays.
    again = class_board.merge_round(copy.deepcopy(board), {'seat01': {'layers': {'state': 'not_started'}}}, {}, {}, {},
                                    '2026-11-29T20:00:00Z')
    assert again['seats']['seat01']['slides']['layers'] == {'state': 'not_started', 'hint': None,
                                                            'since': '2026-11-29T20:00:00Z', 'done_at': first_done}
    assert again['events'][-1] == {'at': '2026-11-29T20:00:00Z', 'host': 'seat01', 'slide': 'layers', 'state': 'not_started'}
