from __future__ import annotations

import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import paths


@pytest.mark.parametrize('value, fragment', [
    ('overlay/merged', 'must be an absolute path'),
    ('', 'must not be empty'),
    ('/overlay/a:b', 'contains a colon'),
    ('/overlay/a,b', 'contains a comma'),
    ('/overlay/a\nb', 'newline'),
])
def test_overlay_path_problems(value, fragment):
    assert fragment in paths.overlay_path_problem('path', value)


def test_good_overlay_path_has_no_problem():
    assert paths.overlay_path_problem('path', '/overlay/merged') is None


@pytest.mark.parametrize('value', ['/', '/usr', '/etc/', '/var/lib'])
def test_system_directories_are_refused(value):
    assert 'system directory' in paths.system_directory_problem('path', value)


def test_is_inside():
    assert paths.is_inside('/overlay/upper/x', '/overlay/upper')
    assert paths.is_inside('/overlay/upper', '/overlay/upper/')
    assert not paths.is_inside('/overlay/upper2', '/overlay/upper')


@pytest.fixture
def root(tmp_path):
    (tmp_path / 'usr' / 'bin').mkdir(parents=True)
    (tmp_path / 'bin').symlink_to('usr/bin')                       # Debian's merged /usr
    program = tmp_path / 'usr' / 'bin' / 'busybox'
    program.write_text('#!/bin/true\n')
    program.chmod(0o755)
    (tmp_path / 'usr' / 'bin' / 'sh').symlink_to('busybox')        # relative link
    (tmp_path / 'usr' / 'bin' / 'abs').symlink_to('/usr/bin/busybox')  # absolute link: must stay inside root
    (tmp_path / 'usr' / 'bin' / 'loop').symlink_to('loop')
    (tmp_path / 'usr' / 'bin' / 'data').write_text('not executable')
    return tmp_path


def test_resolve_inside_follows_links_within_the_root(root):
    assert paths.resolve_inside(str(root), '/bin/sh') == str(root / 'usr' / 'bin' / 'busybox')
    assert paths.resolve_inside(str(root), '/bin/abs') == str(root / 'usr' / 'bin' / 'busybox')
    assert paths.resolve_inside(str(root), '/../../bin/sh') == str(root / 'usr' / 'bin' / 'busybox')
    assert paths.resolve_inside(str(root), '/bin/missing') is None
    assert paths.resolve_inside(str(root), '/bin/loop') is None


def test_find_program_inside(root):
    assert paths.find_program_inside(str(root), 'sh') == '/usr/bin/sh'
    assert paths.find_program_inside(str(root), '/bin/abs') == '/bin/abs'
    assert paths.find_program_inside(str(root), 'data') is None
    assert paths.find_program_inside(str(root), 'bash') is None


def test_an_absolute_link_never_resolves_to_the_hosts_file(root):
    # /usr/bin/abs -> /usr/bin/busybox exists on many hosts; inside root it must be root's own copy.
    resolved = paths.resolve_inside(str(root), '/usr/bin/abs')
    assert resolved.startswith(str(root) + os.sep)


@pytest.mark.parametrize('value, fragment', [
    ('merged', 'must be an absolute path'),
    ('/', 'the host\'s own root'),
    ('//', 'the host\'s own root'),
    ('/usr', 'system directory'),
])
def test_root_directory_problems(value, fragment):
    assert fragment in paths.root_directory_problem('rootfs', value)
    assert paths.root_directory_problem('rootfs', '/overlay/merged') is None


def test_missing_directories_outermost_first(tmp_path):
    assert paths.missing_directories(str(tmp_path)) == []
    assert paths.missing_directories(str(tmp_path / 'a' / 'b')) == [str(tmp_path / 'a'), str(tmp_path / 'a' / 'b')]
