"""The ansible-core compatibility matrix of unboxed.lab (`make matrix`; docs/compatibility.md).

    scripts/matrix/run [--versions 2.15.13,2.19.14] [--no-docs]

For each ansible-core version (default: the oldest that meta/runtime.yml's requires_ansible allows, pinned below,
and the newest, requirements.txt's pin) in a virtualenv of its own (.cache/matrix/ansible-core-VERSION, kept
for the next run), on this machine's Python:

  install   ansible-galaxy of that version builds the collection and installs the artifact, offline
  doc       ansible-doc documents every module of the installed collection, and its callback and inventory plugins
  units     pytest: every unit test that imports ansible (or the collection, which imports ansible)
  syntax    ansible-playbook --syntax-check of site.yml, verify.yml, reset.yml and every_module.yml
  run       every_module.yml (every module, as root on this machine): a run that changes, a second run that
            changes nothing, and the run that takes it all away again, from the installed collection

Prints a table, writes it between the matrix markers of docs/compatibility.md (unless --no-docs) and fails when
any cell failed. Each step's output is in tests/output/matrix/VERSION/STEP.log.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
VENVS = os.path.join(REPO, '.cache', 'matrix')
LOGS = os.path.join(REPO, 'tests', 'output', 'matrix')
DOC = os.path.join(REPO, 'docs', 'compatibility.md')
# The modules run with the machine's own Python, as on a seat, not with a venv that holds another ansible-core.
SEAT_PYTHON = shutil.which('python3', path='/usr/bin:/bin') or sys.executable
START_MARK, END_MARK = '<!-- matrix:start -->', '<!-- matrix:end -->'

# The oldest ansible-core this machine's Python runs the collection with (docs/compatibility.md says how it was
# found); meta/runtime.yml's requires_ansible must name its minor release.
OLDEST = '2.15.13'
STEPS = ('install', 'doc', 'units', 'syntax', 'run')
# Unit tests that assert the output layout of ansible-core 2.19 rather than what the collection does, left out on
# older cores (the behaviour under them was checked by hand: docs/compatibility.md).
LAYOUT_OF_2_19 = {
    'tests/unit/plugins/inventory/test_roster.py::test_broken_csv_roster_stops_with_line_and_column':
        'older cores wrap warnings at 80 columns: the message is there, split across lines',
    'tests/unit/plugins/inventory/test_roster.py::test_broken_yaml_roster_shows_the_offending_line_and_column':
        "'Origin: FILE:LINE:COLUMN' is 2.19's error layout; older cores say 'line 7, column 11'",
    'tests/unit/plugins/inventory/test_roster.py::test_roster_text_is_never_templated':
        "older cores' ansible-inventory --list prints unsafe text as {'__ansible_unsafe': ...}",
}
RECAP = re.compile(r'^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)'
                   r'\s+failed=(?P<failed>\d+)', re.MULTILINE)
ANSIBLE_IMPORT = re.compile(r'^\s*(from|import) ansible(_collections)?[ .]', re.MULTILINE)


class StepFailed(Exception):
    pass


def pinned(name: str) -> str:
    with open(os.path.join(REPO, 'requirements.txt'), encoding='utf-8') as handle:
        for line in handle:
            match = re.fullmatch(rf'{re.escape(name)}==(\S+)', line.strip())
            if match:
                return match[1]
    raise SystemExit(f'requirements.txt pins no {name}')


def requires_ansible() -> str:
    with open(os.path.join(REPO, 'meta', 'runtime.yml'), encoding='utf-8') as handle:
        match = re.search(r'^requires_ansible:\s*["\']?([^"\'\n]+)', handle.read(), re.MULTILINE)
    return match[1].strip() if match else ''


class Matrix:
    def __init__(self, version: str):
        self.version = version
        self.venv = os.path.join(VENVS, f'ansible-core-{version}')
        self.bin = os.path.join(self.venv, 'bin')
        self.logs = os.path.join(LOGS, version)
        self.work = tempfile.mkdtemp(prefix=f'matrix-{version}-')
        self.collections = os.path.join(self.work, 'collections')
        # Away from the clone: an empty ansible.cfg, the installed collection only.
        self.config = os.path.join(self.work, 'ansible.cfg')
        with open(self.config, 'w', encoding='utf-8') as handle:
            handle.write('[defaults]\n')
        os.makedirs(self.logs, exist_ok=True)

    def env(self, clone: bool = False) -> dict:
        env = {key: value for key, value in os.environ.items() if not key.startswith(('ANSIBLE_', 'VIRTUAL_ENV'))}
        env.update({'PATH': self.bin + os.pathsep + env.get('PATH', ''), 'ANSIBLE_NOCOLOR': '1',
                    'ANSIBLE_LOCAL_TEMP': os.path.join(self.work, 'tmp'),
                    'ANSIBLE_DEPRECATION_WARNINGS': '0',
                    'UNBOXED_LAB_REPORT_DIR': os.path.join(self.work, 'lab_report')})
        if clone:
            env['ANSIBLE_CONFIG'] = os.path.join(REPO, 'ansible.cfg')
        else:
            env.update({'ANSIBLE_CONFIG': self.config, 'ANSIBLE_COLLECTIONS_PATH': self.collections,
                        'ANSIBLE_HOME': os.path.join(self.work, 'ansible-home'),
                        'ANSIBLE_CALLBACKS_ENABLED': 'unboxed.lab.lab_report'})
        return env

    def run(self, step: str, argv: list, clone: bool = False, cwd: str | None = None, timeout: int = 600,
            failure=None) -> str:
        """Runs argv, logs it, and returns its standard output; on a non-zero exit raises StepFailed with
        ``failure(output)`` (or the exit code) as the reason."""
        completed = subprocess.run(argv, cwd=cwd or (REPO if clone else self.work), env=self.env(clone),
                                   capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                                   timeout=timeout)
        with open(os.path.join(self.logs, f'{step}.log'), 'a', encoding='utf-8') as handle:
            handle.write(f'$ {" ".join(argv)}\n{completed.stdout}{completed.stderr}rc={completed.returncode}\n\n')
        if completed.returncode != 0:
            reason = failure(completed.stdout) if failure else f'{os.path.basename(argv[0])} exited {completed.returncode}'
            raise StepFailed(f'{reason} (tests/output/matrix/{self.version}/{step}.log)')
        return completed.stdout

    def ensure_venv(self):
        marker = os.path.join(self.venv, '.matrix-installed')
        wanted = f'ansible-core=={self.version} pytest=={pinned("pytest")}\n'
        if os.path.exists(marker) and open(marker, encoding='utf-8').read() == wanted:
            return
        shutil.rmtree(self.venv, ignore_errors=True)
        subprocess.run([sys.executable, '-m', 'venv', self.venv], check=True)
        with open(os.path.join(self.logs, 'venv.log'), 'w', encoding='utf-8') as log:
            subprocess.run([os.path.join(self.bin, 'pip'), 'install', '-q', '--disable-pip-version-check',
                            *wanted.split()], check=True, stdout=log, stderr=subprocess.STDOUT)
        with open(marker, 'w', encoding='utf-8') as handle:
            handle.write(wanted)

    def step_install(self):
        artifacts = os.path.join(self.work, 'artifact')
        self.run('install', [os.path.join(self.bin, 'ansible-galaxy'), 'collection', 'build', '--output-path',
                             artifacts, REPO])
        built = [name for name in os.listdir(artifacts) if name.endswith('.tar.gz')]
        self.run('install', [os.path.join(self.bin, 'ansible-galaxy'), 'collection', 'install', '--no-deps', '-p',
                             self.collections, os.path.join(artifacts, built[0])])
        if not os.path.isfile(os.path.join(self.collections, 'ansible_collections', 'unboxed', 'lab', 'MANIFEST.json')):
            raise StepFailed('the collection is not where ansible-galaxy said it installed it')

    def step_doc(self):
        plugins = {'module': 'modules', 'callback': 'callback', 'inventory': 'inventory'}
        for plugin_type, directory in plugins.items():
            names = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, 'plugins', directory))
                           if name.endswith('.py') and name != '__init__.py')
            for name in names:
                text = self.run('doc', [os.path.join(self.bin, 'ansible-doc'), '-t', plugin_type, f'unboxed.lab.{name}'])
                if f'unboxed.lab.{name}' not in text:
                    raise StepFailed(f'ansible-doc did not document unboxed.lab.{name}')

    def step_units(self):
        tests = []
        for directory, _dirs, files in os.walk(os.path.join(REPO, 'tests', 'unit')):
            for name in files:
                path = os.path.join(directory, name)
                if name.startswith('test_') and name.endswith('.py'):
                    with open(path, encoding='utf-8') as handle:
                        if ANSIBLE_IMPORT.search(handle.read()):
                            tests.append(os.path.relpath(path, REPO))
        deselect = []
        if tuple(int(part) for part in self.version.split('.')[:2]) < (2, 19):
            for test in LAYOUT_OF_2_19:
                deselect += ['--deselect', test]

        def summary(output: str) -> str:
            lines = output.strip().splitlines() or ['no output']
            failed = [line.split(' ', 1)[1].split(' - ')[0].rsplit('/', 1)[-1] for line in lines
                      if line.startswith(('FAILED ', 'ERROR '))]
            return lines[-1].split(' in ')[0] + (f': {", ".join(failed)}' if failed else '')

        output = self.run('units', [os.path.join(self.bin, 'python'), '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                                    *deselect, *sorted(tests)], clone=True, failure=summary)
        return f'{summary(output)} ({len(tests)} files)'

    def step_syntax(self):
        for playbook in ('site.yml', 'verify.yml', 'reset.yml', os.path.join('scripts', 'matrix', 'every_module.yml')):
            self.run('syntax', [os.path.join(self.bin, 'ansible-playbook'), '--syntax-check', '-i', 'localhost,',
                                playbook], clone=True)

    def step_run(self):
        playbook = os.path.join(HERE, 'every_module.yml')
        with open(playbook, encoding='utf-8') as handle:
            text = handle.read()
        unused = [name[:-3] for name in os.listdir(os.path.join(REPO, 'plugins', 'modules'))
                  if name.endswith('.py') and f'unboxed.lab.{name[:-3]}:' not in text]
        if unused:
            raise StepFailed(f'every_module.yml does not use {", ".join(sorted(unused))}')
        matrix_dir = f'/var/tmp/unboxed-matrix-{self.version}'
        argv = [os.path.join(self.bin, 'ansible-playbook'), '-i', 'localhost,', playbook, '-e', f'matrix_dir={matrix_dir}',
                '-e', f'ansible_python_interpreter={SEAT_PYTHON}']
        changes = []
        try:
            for state in ('present', 'present'):
                counts = RECAP.search(self.run('run', argv + ['-e', f'matrix_state={state}']))
                changes.append(int(counts['changed']))
        finally:
            self.run('run', argv + ['-e', 'matrix_state=absent'])
        if changes[0] == 0 or changes[1] != 0:
            raise StepFailed(f'changed={changes[0]} then changed={changes[1]}: the second run must change nothing')
        if os.path.exists(matrix_dir):
            raise StepFailed(f'{matrix_dir} is still there after matrix_state=absent')
        return f'changed={changes[0]}, then 0'

    def cleanup(self):
        shutil.rmtree(self.work, ignore_errors=True)


def run_version(version: str) -> dict:
    matrix = Matrix(version)
    shutil.rmtree(matrix.logs, ignore_errors=True)
    os.makedirs(matrix.logs)
    cells = {}
    try:
        matrix.ensure_venv()
        for step in STEPS:
            started = time.monotonic()
            try:
                detail = getattr(matrix, f'step_{step}')()
                verdict = 'ok'
            except (StepFailed, subprocess.TimeoutExpired) as error:
                detail, verdict = str(error), 'FAIL'
            cells[step] = (verdict, time.monotonic() - started, detail)
            print(f'  {version} {step}: {verdict} ({cells[step][1]:.1f} s){" - " + detail if detail else ""}', flush=True)
    finally:
        matrix.cleanup()
    return cells


def table(results: dict) -> str:
    lines = ['| ansible-core | ' + ' | '.join(STEPS) + ' | notes |', '| --- ' * (len(STEPS) + 2) + '|']
    for version, cells in results.items():
        notes = '; '.join(f'{step}: {cells[step][2]}' for step in STEPS if cells[step][2])
        lines.append(f'| {version} | ' + ' | '.join(f'{cells[step][0]} ({cells[step][1]:.0f} s)' for step in STEPS)
                     + f' | {notes} |')
    return '\n'.join(lines)


def write_doc(results: dict, elapsed: float):
    with open(DOC, encoding='utf-8') as handle:
        text = handle.read()
    if START_MARK not in text or END_MARK not in text:
        raise SystemExit(f'{DOC} has no {START_MARK} ... {END_MARK} section')
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip() or 'unknown'
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO, capture_output=True,
                           text=True, check=False).stdout.strip()
    body = (f'Last run: {now}, commit {commit}{" with changes not committed" if dirty else ""}, '
            f'Python {platform.python_version()} on {platform.freedesktop_os_release().get("PRETTY_NAME")} '
            f'(the modules with {SEAT_PYTHON}, as on a seat), '
            f'{elapsed:.0f} s in all (`make matrix`).\n\n{table(results)}\n')
    head, rest = text.split(START_MARK, 1)
    tail = rest.split(END_MARK, 1)[1]
    with open(DOC, 'w', encoding='utf-8') as handle:
        handle.write(f'{head}{START_MARK}\n{body}{END_MARK}{tail}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--versions', help='comma-separated ansible-core versions (default: oldest and newest)')
    parser.add_argument('--no-docs', action='store_true', help='do not write the table into docs/compatibility.md')
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit('the run step mounts overlays and starts a container: run as root')
    newest = pinned('ansible-core')
    oldest_minor = '.'.join(OLDEST.split('.')[:2])
    if requires_ansible() != f'>={oldest_minor}.0':
        raise SystemExit(f'meta/runtime.yml requires_ansible is {requires_ansible()!r}; the matrix proves >={oldest_minor}.0')
    versions = args.versions.split(',') if args.versions else [OLDEST, newest]
    started = time.monotonic()
    results = {}
    for version in versions:
        print(f'== ansible-core {version}', flush=True)
        results[version] = run_version(version)
    elapsed = time.monotonic() - started
    print()
    print(table(results))
    if not args.no_docs:
        write_doc(results, elapsed)
    return 0 if all(cell[0] == 'ok' for cells in results.values() for cell in cells.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
