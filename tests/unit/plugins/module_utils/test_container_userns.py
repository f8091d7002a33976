"""userns_remap and volumes: /etc/subuid lines, Docker's -v strings, and the launch argv they make."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import container

ACCOUNT = pwd.struct_passwd(('dockremap', 'x', 996, 993, '', '/nonexistent', '/usr/sbin/nologin'))
SUBUID = 'student:100000:65536\n# dockremap gets two ranges; the first one is used\ndockremap:165536:65536\ndockremap:400000:10\n'
SUBGID = 'student:100000:65536\ndockremap:231072:65536\n'
REMAP = container.Remap('dockremap', 996, 993, 165536, 65536, 231072, 65536)
HOST = container.Binaries(unshare='/usr/bin/unshare', chroot='/usr/sbin/chroot', sh='/bin/sh', hostname='/usr/bin/hostname',
                          mount='/usr/bin/mount', pivot_root='/usr/sbin/pivot_root', python='/usr/bin/python3',
                          setpriv='/usr/bin/setpriv')
TALK = 'unshare --fork --pid --net --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null'


def spec(**changes):
    values = dict(rootfs='/overlay/merged', command=['tail', '-f', '/dev/null'], root_method='chroot')
    values.update(changes)
    return container.ContainerSpec.build(**values)


def test_the_first_range_of_each_file_is_the_users():
    assert container.resolve_remap('dockremap', ACCOUNT, SUBUID, SUBGID) == (REMAP, [])
    assert REMAP.uid_map == '0 165536 65536' and REMAP.gid_map == '0 231072 65536'


@pytest.mark.parametrize('account, subuid, subgid, fragments', [
    (None, SUBUID, SUBGID, ['userns_remap: there is no user "dockremap" on this host']),
    (ACCOUNT, None, SUBGID, ['userns_remap: /etc/subuid does not exist']),
    (ACCOUNT, SUBUID, 'student:100000:65536\n', ['userns_remap: /etc/subgid has no range for dockremap']),
    (ACCOUNT, 'dockremap:x:y\n', None, ['userns_remap: /etc/subuid has no range for dockremap',
                                        'userns_remap: /etc/subgid does not exist']),
], ids=['no-account', 'no-subuid', 'no-range', 'both'])
def test_a_missing_piece_is_named(account, subuid, subgid, fragments):
    remap, problems = container.resolve_remap('dockremap', account, subuid, subgid)
    assert remap is None and len(problems) == len(fragments)
    for problem, fragment in zip(problems, fragments):
        assert problem.startswith(fragment), problem


def test_a_numeric_subuid_line_counts_for_the_account():
    assert container.resolve_remap('dockremap', ACCOUNT, '996:300000:1000\n', '996:300000:1000\n')[0].uid_start == 300000


@pytest.mark.parametrize('text, expected', [
    ('/srv/data:/data', container.Volume('/srv/data', '/data', False)),
    ('/srv/data:/data:ro', container.Volume('/srv/data', '/data', True)),
    ('/srv/data/:/data/:rw', container.Volume('/srv/data', '/data', False)),
    ('/srv//data:/var//lib', container.Volume('/srv/data', '/var/lib', False)),
])
def test_docker_volume_strings(text, expected):
    assert container.parse_volume(text) == (expected, None)
    assert container.parse_volume(expected.text())[0] == expected


@pytest.mark.parametrize('text, fragment', [
    ('data:/data', 'the host path "data" must be absolute'),
    ('/srv:data', 'the container path "data" must be absolute'),
    ('/srv:/data:rx', 'is not HOST:CONTAINER or HOST:CONTAINER:ro'),
    ('/srv', 'is not HOST:CONTAINER or HOST:CONTAINER:ro'),
    ('/a:/b:/c:ro', 'is not HOST:CONTAINER or HOST:CONTAINER:ro'),
    ('/srv:/', 'the container path is the root itself'),
    ('/srv/../etc:/x', 'the host path must not contain ".."'),
    ('/srv:/x\n', 'volumes: "/srv:/x\\n" is not a HOST:CONTAINER[:ro] string.'),
    (42, 'volumes: 42 is not a HOST:CONTAINER[:ro] string.'),
])
def test_bad_volume_strings_name_the_option(text, fragment):
    volume, problem = container.parse_volume(text)
    assert volume is None and problem.startswith('volumes: ') and fragment in problem, problem


def test_a_container_path_given_twice_is_refused():
    volumes, problems = container.parse_volumes(['/a:/data', '/b:/data/'])
    assert volumes == (container.Volume('/a', '/data'),)
    assert problems == ['volumes: the container path /data is given twice.']


def test_the_talks_launch_is_unchanged():
    assert container.shell_command(spec()) == TALK
    assert container.launcher_cmdline(container.launch_stages(spec(), HOST)) == \
        container.launch_argv(container.launch_stages(spec(), HOST))


def test_a_remapped_launch_runs_unshare_as_the_remap_user_with_its_range():
    remapped = spec(userns_remap=REMAP)
    assert remapped.namespaces == ('pid', 'net', 'mount', 'user')
    assert container.shell_command(remapped) == (
        'setpriv --reuid=996 --regid=993 --clear-groups unshare --fork --pid --net --mount-proc=/overlay/merged/proc '
        '--user --map-users=165536,0,65536 --map-groups=231072,0,65536 --setuid=0 --setgid=0 '
        'chroot /overlay/merged tail -f /dev/null')
    stages = container.launch_stages(remapped, HOST)
    assert stages[0] == ['/usr/bin/setpriv', '--reuid=996', '--regid=993', '--clear-groups']
    # The launcher that stays (unshare) shows the argv without setpriv, which executed it.
    assert container.launcher_cmdline(stages) == container.launch_argv(stages[1:])
    assert container.probe_argv(remapped, HOST, '/usr/bin/true')[:5] == \
        ['/usr/bin/setpriv', '--reuid=996', '--regid=993', '--clear-groups', '/usr/bin/unshare']
    assert container.expected_uid_map(remapped) == '0 165536 65536'
    assert container.spec_changes(spec(), remapped) == ['namespaces', 'userns_remap']


def test_volumes_get_a_stage_before_the_root_changes():
    with_volumes = spec(volumes=container.parse_volumes(['/srv/data:/data:ro'])[0])
    stages = container.launch_stages(with_volumes, HOST)
    assert [stage[0] for stage in stages] == ['/usr/bin/unshare', '/usr/bin/python3', '/usr/sbin/chroot', 'tail']
    assert stages[1][:3] == ['/usr/bin/python3', '-I', '-c']
    assert stages[1][4:] == ['/usr/bin/mount', '/overlay/merged', json.dumps([['/srv/data', '/data', True]])]
    pivoted = container.launch_stages(spec(root_method='pivot_root', volumes=with_volumes.volumes), HOST)
    assert [stage[0] for stage in pivoted] == ['/usr/bin/unshare', '/usr/bin/python3', '/usr/bin/python3', 'tail']
    assert pivoted[1][3] == container.VOLUME_STAGE and pivoted[2][3] == container.PIVOT_ROOT_STAGE
    workdir = container.launch_stages(spec(workdir='/app', volumes=with_volumes.volumes), HOST)
    assert workdir[2] == ['/usr/bin/unshare', '--root=/overlay/merged', '--wd=/app']


def test_the_volume_stage_is_valid_python_that_takes_no_input_as_code():
    compile(container.VOLUME_STAGE, 'volume-stage', 'exec')
    outcome = subprocess.run([sys.executable, '-I', '-c', container.VOLUME_STAGE, '/bin/false', '/nonexistent-root',
                              json.dumps([['/srv', '/../../etc', False]]), '/bin/true'],
                             capture_output=True, text=True, check=False)
    assert outcome.returncode == 1
    assert outcome.stderr.strip() == 'unboxed: volume /../../etc leads out of the root file system, to /etc'


def test_specs_round_trip_through_the_record():
    full = spec(userns_remap=REMAP, volumes=container.parse_volumes(['/srv:/data:ro', '/tmp/x:/x'])[0])
    assert full.to_dict()['volumes'] == ['/srv:/data:ro', '/tmp/x:/x']
    assert container.ContainerSpec.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    # A record written before these options existed reads as neither.
    old = spec().to_dict()
    del old['userns_remap'], old['volumes']
    assert container.ContainerSpec.from_dict(old) == spec()


def test_unreachable_for_names_the_directory_and_its_mode(tmp_path):
    """Decided by owner, group and mode bits alone, as for a process without capabilities on the host (the owner of
    the test's directories stands for it, so that every ancestor lets it pass)."""
    closed = tmp_path / 'closed'
    (closed / 'inner').mkdir(parents=True)
    owner, group = closed.stat().st_uid, closed.stat().st_gid
    assert container.unreachable_for(owner, group, str(closed / 'inner')) is None
    closed.chmod(0o077)  # everyone but its owner may pass
    try:
        assert container.unreachable_for(owner, group, str(closed / 'inner')) == \
            f'{closed} (owner {owner}:{group}, mode 0077)'
        assert container.runnable_by(owner, group, sys.executable) is True
    finally:
        closed.chmod(0o755)
