"""unboxed.lab in an execution environment (ansible-builder), checked offline.

Building the image needs a container registry for its base image, which this machine cannot reach
(docs/execution-environment.md). What can be checked without one is checked here, with ansible-builder itself:
the collection's own declaration of its requirements (meta/execution-environment.yml, read by ansible-builder's
introspection from every collection it installs into an image), and the build context that
`scripts/ee-context` writes with `ansible-builder create` from meta/ee/execution-environment.yml.
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
from ansible_builder.ee_schema import validate_schema
from ansible_builder.exceptions import DefinitionError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)

PIN = re.compile(r'^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+)$')


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=300,
                          **kwargs)


def load_yaml(*parts):
    with open(os.path.join(*parts), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def project_pins() -> dict:
    """{'ansible-core': '2.19.14', ...} from requirements.txt."""
    pins = {}
    with open(os.path.join(REPO, 'requirements.txt'), encoding='utf-8') as handle:
        for line in handle:
            match = PIN.match(line.strip())
            if match:
                pins[match['name'].lower()] = match['version']
    return pins


def bindep_selection(path: str) -> list:
    """The packages bindep selects from a bindep file on this machine's platform (Debian, as the image)."""
    completed = run([os.path.join(BIN, 'bindep'), '--file', path, '--list_all', 'newline'])
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    return completed.stdout.split()


@pytest.fixture(scope='module')
def context(tmp_path_factory):
    """scripts/ee-context's output directory: source/ (the definition's copy and the artifact), context/."""
    out = tmp_path_factory.mktemp('ee')
    completed = run([os.path.join(REPO, 'scripts', 'ee-context'), str(out)],
                    env=dict(os.environ, PATH=BIN + os.pathsep + os.environ.get('PATH', '')))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.strip() == str(out / 'context')
    return out


@pytest.fixture(scope='module')
def installed(context, tmp_path_factory):
    """The artifact the context holds, installed into a collections path of its own."""
    home = tmp_path_factory.mktemp('installed')
    collections = home / 'collections'
    # Away from the clone's ansible.cfg, whose collections path already resolves unboxed.lab (to the clone).
    (home / 'ansible.cfg').write_text('[defaults]\n', encoding='utf-8')
    env = dict(os.environ, ANSIBLE_CONFIG=str(home / 'ansible.cfg'), ANSIBLE_HOME=str(home / 'ansible-home'))
    completed = run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--offline', '-p', str(collections),
                     str(context / 'context' / '_build' / 'collections' / 'unboxed-lab.tar.gz')], cwd=str(home), env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (collections / 'ansible_collections' / 'unboxed' / 'lab' / 'meta' / 'execution-environment.yml').is_file()
    return collections


def test_the_collections_declaration_is_a_version_3_definition_with_paths_from_its_root():
    declaration = load_yaml(REPO, 'meta', 'execution-environment.yml')
    validate_schema(declaration)
    assert declaration['version'] == 3
    # ansible-builder's introspection takes these from the collection's root, not from meta/.
    assert declaration['dependencies'] == {'python': 'meta/ee-requirements.txt', 'system': 'meta/ee-bindep.txt'}
    for path in declaration['dependencies'].values():
        assert os.path.isfile(os.path.join(REPO, path)), path


def test_the_schema_check_is_real():
    # The check above would pass for nothing if ansible-builder accepted anything.
    with pytest.raises(DefinitionError, match='dependecies'):
        validate_schema({'version': 3, 'dependecies': {'python': 'meta/ee-requirements.txt'}})


def test_ansible_builder_finds_the_requirements_in_the_installed_collection(installed):
    """What the image's builder stage runs on every installed collection (`introspect`), run here."""
    completed = run([os.path.join(BIN, 'ansible-builder'), 'introspect', '--sanitize', str(installed)])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    found = yaml.safe_load(completed.stdout.split('---', 1)[1])
    python = [line.split('#')[0].strip() for line in found['python']]
    system = [line.split('#')[0].strip() for line in found['system']]
    assert python == ['paramiko>=3.4'], found
    assert 'openssh-client [platform:dpkg]' in system and 'util-linux' in system, found
    assert all('from collection unboxed.lab' in line for line in found['python'] + found['system']), found


def test_the_build_context_lists_the_collection_its_python_requirements_and_openssh_client(context):
    build = context / 'context' / '_build'
    dockerfile = (context / 'context' / 'Dockerfile').read_text(encoding='utf-8')

    # The collection: its artifact, named by the galaxy requirements the galaxy stage installs.
    requirements = load_yaml(build, 'requirements.yml')
    assert requirements['collections'] == [{'name': '/build/collections/unboxed-lab.tar.gz', 'type': 'file'}]
    galaxy = load_yaml(REPO, 'galaxy.yml')
    with tarfile.open(build / 'collections' / 'unboxed-lab.tar.gz') as archive:
        manifest = json.load(archive.extractfile('MANIFEST.json'))['collection_info']
        shipped = set(archive.getnames())
    assert (manifest['namespace'], manifest['name'], manifest['version']) == ('unboxed', 'lab', galaxy['version'])
    assert {'meta/execution-environment.yml', 'meta/ee-requirements.txt', 'meta/ee-bindep.txt'} <= shipped
    assert not [name for name in shipped if name.startswith('meta/ee/')], 'the image definition is a clone tool'
    assert 'ansible-galaxy collection install' in dockerfile and 'COPY _build /build' in dockerfile

    # Its Python requirements, and ansible-core and ansible-runner pinned as the project pins them.
    assert (build / 'requirements.txt').read_text(encoding='utf-8') == \
        (context / 'source' / 'meta' / 'ee-requirements.txt').read_text(encoding='utf-8')
    assert 'paramiko>=3.4' in (build / 'requirements.txt').read_text(encoding='utf-8').splitlines()
    pins = project_pins()
    assert f'ARG ANSIBLE_INSTALL_REFS="ansible-core=={pins["ansible-core"]} ansible-runner=={pins["ansible-runner"]}"' \
        in dockerfile

    # Its system requirements, as bindep selects them on a Debian image, installed with apt-get.
    selected = bindep_selection(str(build / 'bindep.txt'))
    assert {'openssh-client', 'util-linux', 'mmdebstrap', 'tar', 'gzip'} <= set(selected), selected
    assert 'openssh-clients' not in selected
    assert 'ARG PKGMGR="/usr/bin/apt-get"' in dockerfile and 'RUN apt-get update' in dockerfile
    assert 'ARG EE_BASE_IMAGE="docker.io/library/python:3.11-slim-bookworm"' in dockerfile
    assert 'ARG PYCMD="/usr/local/bin/python3"' in dockerfile


def test_create_refuses_a_definition_whose_requirement_file_is_missing(context, tmp_path):
    definition = load_yaml(context / 'source' / 'meta' / 'ee' / 'execution-environment.yml')
    definition['dependencies']['python'] = '../no-such-requirements.txt'
    broken = context / 'source' / 'meta' / 'ee' / 'broken.yml'
    broken.write_text(yaml.safe_dump(definition), encoding='utf-8')

    completed = run([os.path.join(BIN, 'ansible-builder'), 'create', '--file', str(broken),
                     '--context', str(tmp_path / 'context')])

    assert completed.returncode != 0
    assert 'no-such-requirements.txt' in completed.stdout + completed.stderr
    assert not (tmp_path / 'context' / 'Dockerfile').exists()
