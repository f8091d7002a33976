from __future__ import annotations

import base64
import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import build_context
from ansible_collections.unboxed.lab.plugins.module_utils import dockerfile


def copy_steps(text):
    return [step for step in dockerfile.plan(dockerfile.parse(text)).steps if step.kind == 'copy']


@pytest.fixture
def context(tmp_path):
    (tmp_path / 'site' / 'sub').mkdir(parents=True)
    (tmp_path / 'site' / 'index.html').write_text('hi\n')
    (tmp_path / 'site' / 'sub' / 'a.txt').write_text('a\n')
    (tmp_path / 'one.txt').write_text('1\n')
    (tmp_path / 'two.txt').write_text('2\n')
    os.symlink('one.txt', tmp_path / 'inside-link')
    os.symlink('/etc/passwd', tmp_path / 'outside-link')
    os.symlink('/etc', tmp_path / 'site' / 'etc-link')
    return tmp_path


@pytest.mark.parametrize('source, fragment', [
    ('/etc/passwd', 'is an absolute path'),
    ('../x', 'climbs out'),
    ('site/../../x', 'climbs out'),
    ('', 'empty source'),
])
def test_source_problems(source, fragment):
    assert fragment in build_context.source_problem(source)


@pytest.mark.parametrize('line, fragment', [
    ('COPY outside-link /x', 'leads out of the build context'),
    ('COPY site /x', 'leads out of the build context'),   # a link below the directory
    ('COPY missing /x', 'no such file or directory'),
    ('ADD ../x /x', 'climbs out'),
])
def test_gather_refuses_with_the_line(context, line, fragment):
    with pytest.raises(dockerfile.DockerfileError) as raised:
        build_context.gather(str(context), copy_steps(f'FROM scratch\nENV A=1\n{line}\n'))
    assert fragment in str(raised.value)
    assert raised.value.line == 3


def test_gather_and_copy_targets(context):
    os.unlink(context / 'site' / 'etc-link')
    steps = copy_steps('FROM scratch\nCOPY site /www\nCOPY *.txt inside-link /files/\nCOPY one.txt /renamed\n')
    entries = build_context.gather(str(context), steps)
    paths = [entry['path'] for entry in entries]
    assert paths == sorted(paths) and 'site/sub/a.txt' in paths and 'two.txt' in paths
    assert [entry for entry in entries if entry['path'] == 'inside-link'][0] == \
        {'path': 'inside-link', 'type': 'link', 'target': 'one.txt', 'mode': 0o777}
    assert base64.b64decode([e for e in entries if e['path'] == 'one.txt'][0]['content']) == b'1\n'
    found = build_context.copy_targets(entries, steps[0].sources, steps[0].destination)
    targets = [(inner, entry['path']) for inner, entry in found]
    assert targets == [('/www/index.html', 'site/index.html'), ('/www/sub', 'site/sub'), ('/www/sub/a.txt', 'site/sub/a.txt')]
    targets = [inner for inner, _entry in build_context.copy_targets(entries, steps[1].sources, steps[1].destination)]
    assert targets == ['/files/one.txt', '/files/two.txt', '/files/inside-link']
    assert build_context.copy_targets(entries, steps[2].sources, steps[2].destination)[0][0] == '/renamed'


def test_checksum_changes_with_content_and_mode(context):
    steps = copy_steps('FROM scratch\nCOPY one.txt /x\n')
    first = build_context.checksum(build_context.gather(str(context), steps))
    assert first == build_context.checksum(build_context.gather(str(context), steps))
    (context / 'one.txt').write_text('changed\n')
    second = build_context.checksum(build_context.gather(str(context), steps))
    os.chmod(context / 'one.txt', 0o600)
    third = build_context.checksum(build_context.gather(str(context), steps))
    assert len({first, second, third}) == 3
