"""unboxed.lab as a built collection, the way Galaxy users get it.

`ansible-galaxy collection build` makes the artifact, which must hold the collection and nothing local
(virtualenvs, caches, reports, the collections/ link back to the root) nor the repository's development tools
(the local lab, scripts/labctl, and what runs it; the benchmark), and nothing it ships may need what was left
out; it is installed into a temporary collections path. From there, away from the clone and its ansible.cfg, ansible-doc documents every module,
plugin and role, and `ansible-playbook unboxed.lab.site` converges a lab host exactly as the clone's
site.yml converges its neighbour.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LABCTL = os.path.join(REPO, 'scripts', 'labctl')
LAB = 'buildtest'

PLUGIN_TYPES = {'modules': 'module', 'inventory': 'inventory', 'callback': 'callback'}
RECAP_LINE = re.compile(r'^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)'
                        r'\s+failed=(?P<failed>\d+)')


# Tools for developing this repository, never in the artifact (galaxy.yml's build_ignore says why).
DEVELOPMENT_TOOLS = ('scripts/', 'bench/', 'molecule/', '.config/', 'tests/system/', 'tests/unit/scripts/', 'inventories/local/')
DEVELOPMENT_FILES = ('Makefile', 'local_lab.yml')
IMPORT_PLAYBOOK = ('ansible.builtin.import_playbook', 'import_playbook')


def run(argv, timeout=1200, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                          timeout=timeout, **kwargs)


def plugins_on_disk() -> dict:
    """{'module': ['chroot_exec', ...], 'inventory': [...], 'callback': [...]} from plugins/."""
    found = {}
    for directory, plugin_type in PLUGIN_TYPES.items():
        names = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, 'plugins', directory))
                       if name.endswith('.py') and name != '__init__.py')
        found[plugin_type] = names
    return found


def roles_on_disk() -> list:
    return sorted(name for name in os.listdir(os.path.join(REPO, 'roles'))
                  if os.path.isfile(os.path.join(REPO, 'roles', name, 'meta', 'argument_specs.yml')))


def tracked_files() -> set:
    completed = run(['git', 'ls-files'], cwd=REPO)
    assert completed.returncode == 0, completed.stderr
    return set(completed.stdout.splitlines())


@pytest.fixture(scope='module')
def artifact(tmp_path_factory):
    with open(os.path.join(REPO, 'galaxy.yml'), encoding='utf-8') as handle:
        galaxy = yaml.safe_load(handle)
    output = tmp_path_factory.mktemp('build')
    completed = run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(output), REPO],
                    cwd=str(output))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    path = output / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert path.is_file(), completed.stdout
    return path


@pytest.fixture(scope='module')
def installed(artifact, tmp_path_factory):
    """A directory to run from, with the collection installed below it and an empty ansible.cfg."""
    home = tmp_path_factory.mktemp('installed')
    collections = home / 'collections'
    config = home / 'ansible.cfg'
    config.write_text('[defaults]\n')
    env = dict(os.environ)
    env.update({
        'ANSIBLE_CONFIG': str(config),
        'ANSIBLE_COLLECTIONS_PATH': str(collections),
        'ANSIBLE_HOME': str(home / 'ansible-home'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'PATH': BIN + os.pathsep + env.get('PATH', ''),
    })
    completed = run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--offline', '-p', str(collections),
                     str(artifact)], cwd=str(home), env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (collections / 'ansible_collections' / 'unboxed' / 'lab' / 'MANIFEST.json').is_file()
    return home, env


def test_artifact_holds_only_tracked_files_and_the_whole_collection(artifact):
    with tarfile.open(artifact) as archive:
        members = archive.getmembers()
    files = {member.name for member in members if member.isfile()} - {'MANIFEST.json', 'FILES.json'}
    untracked = sorted(files - tracked_files())
    # Whatever git does not track is local: virtualenvs, caches, lab reports, generated inventories.
    assert not untracked, f'{len(untracked)} untracked file(s) in the artifact, e.g. {untracked[:10]}'
    assert not [member.name for member in members if member.issym()], 'the artifact holds symlinks'
    assert not [name for name in files if name.startswith('collections/')]
    expected = {'meta/runtime.yml', 'playbooks/site.yml', 'playbooks/verify.yml', 'playbooks/reset.yml'}
    expected |= {f'plugins/{directory}/{name}.py' for directory, plugin_type in PLUGIN_TYPES.items()
                 for name in plugins_on_disk()[plugin_type]}
    expected |= {f'roles/{role}/meta/argument_specs.yml' for role in roles_on_disk()}
    assert expected - files == set()


def shipped_text(archive: tarfile.TarFile, name: str) -> str:
    return archive.extractfile(name).read().decode('utf-8')


def test_artifact_leaves_out_the_development_tools_and_ships_nothing_that_needs_them(artifact):
    with tarfile.open(artifact) as archive:
        files = {member.name for member in archive.getmembers() if member.isfile()}
        left_in = sorted(name for name in files if name.startswith(DEVELOPMENT_TOOLS) or name in DEVELOPMENT_FILES)
        assert not left_in, f'development tools in the artifact: {left_in[:10]}'
        # Both exist in the clone: the test would pass for nothing if they did not.
        assert os.path.isfile(os.path.join(REPO, 'scripts', 'labctl')) and os.path.isdir(os.path.join(REPO, 'bench'))
        content = sorted(name for name in files if name.startswith(('playbooks/', 'roles/', 'plugins/', 'meta/'))
                         or ('/' not in name and name.endswith('.yml')))
        assert 'playbooks/site.yml' in content and 'site.yml' in content
        for name in content:
            text = shipped_text(archive, name)
            assert 'scripts/' not in text and 'bench/' not in text, f'{name} refers to a development tool left out'
            if not name.endswith('.yml'):
                continue
            for play in yaml.safe_load(text) or []:
                imported = next((play[key] for key in IMPORT_PLAYBOOK if isinstance(play, dict) and key in play), None)
                if imported is None:
                    continue
                if imported.startswith('unboxed.lab.'):
                    target = f"playbooks/{imported[len('unboxed.lab.'):]}.yml"
                else:
                    target = os.path.normpath(os.path.join(os.path.dirname(name), imported))
                assert target in files, f'{name} imports {imported}, which the artifact does not hold'


def test_ansible_doc_documents_every_module_and_plugin_of_the_installed_collection(installed):
    home, env = installed
    for plugin_type, names in plugins_on_disk().items():
        assert names, f'no {plugin_type} plugin found'
        listed = run([os.path.join(BIN, 'ansible-doc'), '-t', plugin_type, '--list', '--json', 'unboxed.lab'],
                     cwd=str(home), env=env)
        assert listed.returncode == 0, listed.stderr
        assert sorted(json.loads(listed.stdout)) == [f'unboxed.lab.{name}' for name in names]
        fqcns = [f'unboxed.lab.{name}' for name in names]
        documented = run([os.path.join(BIN, 'ansible-doc'), '-t', plugin_type, '--json', *fqcns], cwd=str(home), env=env)
        assert documented.returncode == 0, documented.stderr
        docs = json.loads(documented.stdout)
        for fqcn in fqcns:
            doc = docs[fqcn]['doc']
            assert doc['short_description'] and doc['description'], fqcn
            assert doc['author'] == ['unboxed developers (@unboxed)'], fqcn
            if plugin_type == 'module':
                assert doc['options'] and docs[fqcn]['examples'] and docs[fqcn]['return'], fqcn
        # The text rendering, as a user reads it.
        for fqcn in fqcns:
            text = run([os.path.join(BIN, 'ansible-doc'), '-t', plugin_type, fqcn], cwd=str(home), env=env)
            assert text.returncode == 0 and fqcn in text.stdout, text.stderr


def test_ansible_doc_documents_every_role_from_its_argument_specs(installed):
    home, env = installed
    for role in roles_on_disk():
        with open(os.path.join(REPO, 'roles', role, 'meta', 'argument_specs.yml'), encoding='utf-8') as handle:
            specs = yaml.safe_load(handle)['argument_specs']
        fqcn = f'unboxed.lab.{role}'
        documented = run([os.path.join(BIN, 'ansible-doc'), '-t', 'role', '--json', fqcn], cwd=str(home), env=env)
        assert documented.returncode == 0, documented.stderr
        entry_points = json.loads(documented.stdout)[fqcn]['entry_points']
        assert sorted(entry_points) == sorted(specs), role
        for name, spec in specs.items():
            assert entry_points[name]['short_description'] == spec['short_description'], (role, name)
            assert sorted(entry_points[name].get('options') or {}) == sorted(spec.get('options') or {}), (role, name)
        text = run([os.path.join(BIN, 'ansible-doc'), '-t', 'role', fqcn], cwd=str(home), env=env)
        assert text.returncode == 0, text.stderr
        for name in specs:
            # Without colours ansible-doc marks names as *main*.
            assert re.search(rf'^ENTRY POINT: \*?{name}\*? - ', text.stdout, re.MULTILINE), (role, name, text.stdout)


def recap(stdout: str) -> dict:
    """{host: {'ok': n, 'changed': n, 'unreachable': n, 'failed': n}} from a PLAY RECAP."""
    counts = {}
    for line in stdout.splitlines():
        match = RECAP_LINE.match(line)
        if match:
            counts[match['host']] = {key: int(match[key]) for key in ('ok', 'changed', 'unreachable', 'failed')}
    return counts


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('needs root: the local lab uses network namespaces, bridges and mounts')
    inventory = str(tmp_path_factory.mktemp('buildlab') / 'hosts.yml')

    def labctl(*args):
        completed = run([LABCTL, *args, '--json', '--lab', LAB], timeout=600)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return json.loads(completed.stdout)

    labctl('down')  # what an interrupted earlier run may have left
    try:
        labctl('up', '--hosts', '2', '--inventory', inventory)
        yield inventory
    finally:
        labctl('down')


@pytest.mark.lab
@pytest.mark.root
def test_site_from_the_installed_collection_converges_as_the_clone_does(installed, lab):
    home, env = installed
    playbook = [os.path.join(BIN, 'ansible-playbook'), '-i', lab]
    clone_env = dict(env, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'))
    del clone_env['ANSIBLE_COLLECTIONS_PATH']

    # Two fresh hosts: lab1 converged by the installed collection, lab2 by the clone's site.yml.
    from_installed = run(playbook + ['--limit', 'lab1', 'unboxed.lab.site'], cwd=str(home), env=env)
    assert from_installed.returncode == 0, from_installed.stdout[-4000:] + from_installed.stderr
    from_clone = run(playbook + ['--limit', 'lab2', os.path.join(REPO, 'site.yml')], cwd=REPO, env=clone_env)
    assert from_clone.returncode == 0, from_clone.stdout[-4000:] + from_clone.stderr
    installed_counts, clone_counts = recap(from_installed.stdout)['lab1'], recap(from_clone.stdout)['lab2']
    assert installed_counts['changed'] > 0
    assert installed_counts == clone_counts

    # The installed collection sees both hosts as converged, and its verify holds on both.
    again = run(playbook + ['unboxed.lab.site'], cwd=str(home), env=env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr
    assert {host: counts['changed'] for host, counts in recap(again.stdout).items()} == {'lab1': 0, 'lab2': 0}
    verify = run(playbook + ['unboxed.lab.verify'], cwd=str(home), env=env)
    assert verify.returncode == 0, verify.stdout[-4000:] + verify.stderr
    assert {host: counts['failed'] for host, counts in recap(verify.stdout).items()} == {'lab1': 0, 'lab2': 0}
