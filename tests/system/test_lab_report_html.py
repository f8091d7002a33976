"""The lab_report callback in a real run, its HTML page rendered by headless Chromium.

A small playbook runs on a roster of three seats: two on this machine (connection local), one whose SSH port
on a loopback address is closed (unreachable at once). One seat fails at the overlay stage. The page is then
opened in Chromium through the DevTools protocol on a pipe: the test reads what the page shows (rendered
text, cell colours), checks that it loaded nothing but itself, and keeps a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync')

ROSTER = """\
student,seat,port,room,ansible_connection
Alice Martin,127.0.0.1,,B204,local
Bob Okafor,127.0.0.3,,B204,local
Carol Diaz,127.0.0.2,1,B206,ssh
"""

PLAYBOOK = """\
- name: Build the lab on every seat
  hosts: all
  gather_facts: false
  tasks:
    - name: Unpack the base layer
      ansible.builtin.command: /bin/true
      tags: [layers]
    - name: Build the image
      ansible.builtin.debug:
        msg: build
      tags: [build]
    - name: Mount the overlay
      ansible.builtin.command:
        argv:
          - /bin/sh
          - -c
          - >-
            test {{ inventory_hostname }} != bob-okafor ||
            { echo "mount: /overlay/merged: special device overlay does not exist." >&2; exit 32; }
      changed_when: false
      tags: [overlay]
    - name: Run a shell in the chroot
      ansible.builtin.debug:
        msg: chroot
      tags: [chroot]
    - name: Probe for an optional feature (its failure is ignored)
      ansible.builtin.command: /bin/false
      changed_when: false
      ignore_errors: true
      tags: [chroot]
    - name: Start the container
      ansible.builtin.include_role:
        name: lab_namespaces
    - name: Check the container
      ansible.builtin.assert:
        that: true
      tags: [verify]
"""

ROLE_TASKS = """\
- name: Enter the namespaces
  ansible.builtin.debug:
    msg: namespaces
"""

# Rendered text, row order, cell text and background colour of what the browser shows.
READ_PAGE = """JSON.stringify({
  text: document.body.innerText,
  rows: Array.from(document.querySelectorAll('tbody tr')).map(row => ({
    host: row.querySelector('.host').innerText,
    cells: Object.fromEntries(Array.from(row.querySelectorAll('td.cell')).map(cell => [cell.dataset.stage, {
      text: cell.querySelector('.status').innerText, background: getComputedStyle(cell).backgroundColor}])),
    why: row.querySelector('td.why').innerText,
  })),
})"""


def find_chromium() -> str:
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip('headless Chromium is not installed (Debian package: chromium)')


class DevToolsPipe:
    """Chromium driven over --remote-debugging-pipe: JSON messages ending in NUL on fds 3 (in) and 4 (out)."""

    def __init__(self, chromium: str, profile: str):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Chromium wants the pipe on fds 3 and 4 exactly: move our ends above them first, so that placing
        # one cannot overwrite the other in the child.
        child_ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_read, from_browser_write)]
        os.close(to_browser_read)
        os.close(from_browser_write)

        def wire_pipes():
            os.dup2(child_ends[0], 3)
            os.dup2(child_ends[1], 4)

        self.stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f'--user-data-dir={profile}', '--remote-debugging-pipe',
                                             'about:blank'], preexec_fn=wire_pipes, pass_fds=(3, 4),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        finally:
            for fd in child_ends:
                os.close(fd)
        self._buffer = b''
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self) -> dict:
        while b'\0' not in self._buffer:
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                self.stderr.seek(0)
                raise AssertionError(f'Chromium closed the DevTools pipe:\n{self.stderr.read().decode(errors="replace")[-2000:]}')
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b'\0', 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        request = {'id': self._next_id, 'method': method, 'params': params}
        if session:
            request['sessionId'] = session
        os.write(self._to_browser, json.dumps(request).encode() + b'\0')
        while True:
            message = self._read_message()
            if message.get('id') == self._next_id:
                if 'error' in message:
                    raise AssertionError(f'{method} failed: {message["error"]}')
                return message['result']
            self.events.append(message)

    def wait_for(self, method: str, session: str) -> dict:
        for index, event in enumerate(self.events):
            if event.get('method') == method and event.get('sessionId') == session:
                return self.events.pop(index)
        while True:
            event = self._read_message()
            if event.get('method') == method and event.get('sessionId') == session:
                return event
            self.events.append(event)

    def close(self):
        try:
            self.call('Browser.close')
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self.stderr.close()


def render_in_chromium(page: str, screenshot: str) -> tuple[dict, list[str]]:
    """Open ``page`` in headless Chromium; return what it shows and every URL it requested."""
    profile = tempfile.mkdtemp(prefix='lab-report-chromium-')
    browser = DevToolsPipe(find_chromium(), profile)
    try:
        targets = browser.call('Target.getTargets')['targetInfos']
        target = next(info['targetId'] for info in targets if info['type'] == 'page')
        session = browser.call('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        browser.call('Page.enable', session)
        browser.call('Network.enable', session)
        browser.call('Emulation.setDeviceMetricsOverride', session, width=1400, height=900, deviceScaleFactor=1, mobile=False)
        browser.call('Page.navigate', session, url=f'file://{page}')
        browser.wait_for('Page.loadEventFired', session)
        shown = json.loads(browser.call('Runtime.evaluate', session, expression=READ_PAGE, returnByValue=True)['result']['value'])
        image = browser.call('Page.captureScreenshot', session, format='png', captureBeyondViewport=True)['data']
        with open(screenshot, 'wb') as handle:
            handle.write(base64.b64decode(image))
        requested = [event['params']['request']['url'] for event in browser.events if event.get('method') == 'Network.requestWillBeSent']
        return shown, requested
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope='module')
def lab_run(tmp_path_factory):
    """Runs the playbook once with the callback enabled; returns (process, report directory)."""
    work = tmp_path_factory.mktemp('lab-report')
    (work / 'class.roster.csv').write_text(ROSTER, encoding='utf-8')
    (work / 'site.yml').write_text(PLAYBOOK, encoding='utf-8')
    role = work / 'roles' / 'lab_namespaces' / 'tasks'
    role.mkdir(parents=True)
    (role / 'main.yml').write_text(ROLE_TASKS, encoding='utf-8')
    env = dict(os.environ)
    env.update({
        'ANSIBLE_CONFIG': os.path.join(REPO, 'ansible.cfg'),
        'ANSIBLE_HOME': str(work / 'ansible-home'),
        'ANSIBLE_LOCAL_TEMP': str(work / 'ansible-tmp'),
        'ANSIBLE_ROLES_PATH': str(work / 'roles'),
        'ANSIBLE_INVENTORY_ENABLED': 'unboxed.lab.roster,host_list,script,auto,yaml,toml',
        'ANSIBLE_CALLBACKS_ENABLED': 'unboxed.lab.lab_report',
        'ANSIBLE_HOST_KEY_CHECKING': 'false',
        'ANSIBLE_TIMEOUT': '10',
        'ANSIBLE_NOCOLOR': '1',
        'UNBOXED_LAB_REPORT_DIR': str(work / 'report'),
        'UNBOXED_LAB_REPORT_STAGE_MAP': 'lab_namespaces=namespaces',
        'PATH': BIN + os.pathsep + env.get('PATH', ''),
    })
    proc = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', str(work / 'class.roster.csv'), str(work / 'site.yml'),
                           '-e', f'ansible_python_interpreter={sys.executable}'],
                          cwd=REPO, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
    return proc, work / 'report'


def test_run_prints_the_table_and_writes_both_files(lab_run):
    proc, report = lab_run
    assert proc.returncode == 4, proc.stdout + proc.stderr  # 4: some host unreachable (and one failed)
    assert sorted(os.listdir(report)) == ['site.html', 'site.json']
    assert f'Lab report: {report / "site.html"} (JSON: {report / "site.json"})' in proc.stdout
    table = proc.stdout[proc.stdout.index('LAB REPORT site.yml'):].splitlines()
    assert table[0] == 'LAB REPORT site.yml - 3 seats: 1 on track, 2 behind (1 failed, 1 unreachable)'
    assert table[1].split() == ['HOST', 'STUDENT', 'LAYERS', 'BUILD', 'OVERLAY', 'CHROOT', 'NAMESPACES',
                                'CGROUPS', 'CAPABILITIES', 'SECCOMP', 'NETWORK', 'USERNS', 'VERIFY', 'WHY']
    assert table[2].split()[:8] == ['carol-diaz', 'Carol', 'Diaz', 'UNREACHABLE', '-', '-', '-', '-']
    assert table[3].split()[:9] == ['bob-okafor', 'Bob', 'Okafor', 'changed', 'ok', 'FAILED', '-', '-', '-']
    assert table[3].endswith('overlay: Mount the overlay: mount: /overlay/merged: special device overlay does not exist. (exit code 32)')
    # No task of this playbook is a confinement, network or userns slide's: those columns show '-'.
    assert table[4].split()[:14] == ['alice-martin', 'Alice', 'Martin', 'changed', 'ok', 'ok', 'ok', 'ok', '-', '-', '-', '-', '-',
                                     'ok']


def test_json_report_has_every_seat_and_stage(lab_run):
    _proc, report = lab_run
    document = json.loads((report / 'site.json').read_text(encoding='utf-8'))
    assert document['stages'] == ['layers', 'build', 'overlay', 'chroot', 'namespaces', 'cgroups', 'capabilities', 'seccomp',
                                  'network', 'userns', 'verify']
    hosts = {host['host']: host for host in document['hosts']}
    assert {name: host['status'] for name, host in hosts.items()} == \
        {'carol-diaz': 'unreachable', 'bob-okafor': 'failed', 'alice-martin': 'changed'}
    assert {stage: cell['status'] for stage, cell in hosts['alice-martin']['stages'].items()} == \
        {'layers': 'changed', 'build': 'ok', 'overlay': 'ok', 'chroot': 'ok', 'namespaces': 'ok',
         'cgroups': 'not_run', 'capabilities': 'not_run', 'seccomp': 'not_run', 'network': 'not_run', 'userns': 'not_run',
         'verify': 'ok'}
    assert hosts['carol-diaz']['reason']['stage'] == 'layers'
    assert 'ssh: connect to host 127.0.0.2 port 1: Connection refused' in hosts['carol-diaz']['reason']['message']
    assert (hosts['bob-okafor']['student'], hosts['bob-okafor']['seat'], hosts['bob-okafor']['room']) == ('Bob Okafor', '127.0.0.3', 'B204')
    assert document['summary']['stage_done'] == {'layers': 2, 'build': 2, 'overlay': 1, 'chroot': 1, 'namespaces': 1,
                                                 'cgroups': 0, 'capabilities': 0, 'seccomp': 0, 'network': 0, 'userns': 0,
                                                 'verify': 1}


def test_chromium_shows_which_seats_are_behind_and_why(lab_run):
    _proc, report = lab_run
    page = report / 'site.html'
    screenshot = report / 'site.png'
    shown, requested = render_in_chromium(str(page), str(screenshot))

    # Self-contained: the page itself is the only thing the browser fetched.
    assert requested == [f'file://{page}']

    text = shown['text']
    assert 'Lab report: site.yml' in text
    assert '1 on track' in text and '1 failed' in text and '1 unreachable' in text
    assert 'Behind (2)' in text
    assert 'carol-diaz (Carol Diaz · seat 127.0.0.2 · room B206): unreachable at layers' in text
    assert 'bob-okafor (Bob Okafor · seat 127.0.0.3 · room B204): failed at overlay' in text

    rows = shown['rows']
    assert [row['host'] for row in rows] == ['carol-diaz', 'bob-okafor', 'alice-martin']
    carol, bob, alice = rows
    red, purple, green, blue, grey = 'rgb(198, 40, 40)', 'rgb(94, 53, 177)', 'rgb(230, 244, 234)', 'rgb(227, 240, 251)', 'rgb(250, 250, 250)'
    assert carol['cells']['layers'] == {'text': 'UNREACHABLE', 'background': purple}
    assert carol['cells']['verify'] == {'text': '-', 'background': grey}
    assert 'Connection refused' in carol['why']
    assert bob['cells']['layers'] == {'text': 'changed', 'background': blue}
    assert bob['cells']['overlay'] == {'text': 'FAILED', 'background': red}
    assert 'special device overlay does not exist' in bob['why'] and 'Mount the overlay' in bob['why']
    assert {stage: cell['text'] for stage, cell in alice['cells'].items()} == \
        {'layers': 'changed', 'build': 'ok', 'overlay': 'ok', 'chroot': 'ok', 'namespaces': 'ok',
         'cgroups': '-', 'capabilities': '-', 'seccomp': '-', 'network': '-', 'userns': '-', 'verify': 'ok'}
    assert alice['cells']['verify']['background'] == green
    assert alice['why'] == 'on track'

    with open(screenshot, 'rb') as handle:
        assert handle.read(8) == b'\x89PNG\r\n\x1a\n'
