"""labctl's ansible-pull pieces: extra packages of a lab's seats (image.py, state.py) and what `labctl serve` starts (serve.py)."""

from __future__ import annotations

import ipaddress

import pytest

from local_lab import account, cli, image, serve, state
from local_lab.system import LabError

MIRRORS = ('deb http://deb.debian.org/debian trixie main',)


def test_parse_packages_sorts_and_drops_what_the_base_has():
    assert image.parse_packages('git, ansible-core,git,') == ('ansible-core', 'git')
    assert image.parse_packages('sudo,git') == ('git',)
    assert image.parse_packages('') == ()


@pytest.mark.parametrize('text', ['--force-yes', 'Git', 'git;rm', 'a', 'git ansible-core'])
def test_parse_packages_refuses_what_is_no_package_name(text):
    with pytest.raises(ValueError, match='is not a Debian package name'):
        image.parse_packages(text)


def test_cli_names_the_option_of_a_wrong_package():
    with pytest.raises(LabError, match='^--packages: '):
        cli.package_list('--yes')


def test_a_base_without_extra_packages_keeps_its_key():
    """Labs without --packages keep the base they have: its cached tarball stays valid."""
    plain = image.base_key('trixie', image.BASE_PACKAGES, MIRRORS, image.DPKG_OPTIONS, account.BASE_HOOKS)
    with_git = image.base_key('trixie', image.BASE_PACKAGES + ('git',), MIRRORS, image.DPKG_OPTIONS, account.BASE_HOOKS)
    assert plain != with_git
    base = image.BaseImage('trixie', plain, MIRRORS)
    assert base.packages == image.BASE_PACKAGES
    assert image.BaseImage('trixie', with_git, MIRRORS, ('git',)).packages == image.BASE_PACKAGES + ('git',)


def test_lab_record_keeps_its_packages_and_an_old_record_has_none():
    lab = state.Lab(name='pulltest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'), host_prefix='lab',
                    inventory='/tmp/hosts.yml', packages=('ansible-core', 'git'))
    assert state.Lab.from_dict(lab.to_dict()).packages == ('ansible-core', 'git')
    recorded = lab.to_dict()
    del recorded['packages']
    assert state.Lab.from_dict(recorded).packages == ()


def test_git_daemon_serves_one_repository_read_only_on_the_bridge_address():
    argv = serve.git_daemon_argv('/usr/bin/git', '10.213.3.1', '/srv/pull/unboxed/')
    assert argv[:2] == ['/usr/bin/git', 'daemon']
    assert '--listen=10.213.3.1' in argv and f'--port={serve.GIT_PORT}' in argv
    assert '--base-path=/srv/pull' in argv
    assert argv[-1] == '/srv/pull/unboxed'  # the only directory it serves
    assert not any(option.startswith('--enable') for option in argv)  # upload-pack only: nobody pushes


def test_file_server_binds_the_bridge_address_only():
    argv = serve.http_argv('10.213.3.1', '/srv/files')
    assert argv[1:] == ['-m', 'http.server', '--bind', '10.213.3.1', '--directory', '/srv/files', str(serve.HTTP_PORT)]


def test_urls_name_the_bridge_address():
    lab = state.Lab(name='pulltest', index=3, subnet=ipaddress.ip_network('10.213.3.0/24'), host_prefix='lab', inventory='/tmp/h.yml')
    assert serve.git_url(lab, '/srv/pull/unboxed/') == 'git://10.213.3.1/unboxed'
    assert serve.files_url(lab) == 'http://10.213.3.1:8080/'
