# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base every lab host is copied from: a Debian root file system of one release built once with mmdebstrap,
cached as a tarball named after what it was built from (suite, packages, mirrors, dpkg options). One base per
release, built the same way: the same packages, so sshd, tini and python3 are set up alike on every host."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import time

from ansible_collections.unboxed.lab.plugins.module_utils.command import shell_join

from . import account, apt, releases
from .changes import Changes
from .system import LabError, run, write_file_atomically

CACHE_DIR = '/var/cache/unboxed/lab-base'
# What Ansible and the talk need on a lab host. tini is PID 1 (it reaps orphans, as `docker run --init`); sudo is
# how the student account becomes root, as on a classroom's seat (account.py). nftables and uidmap are what a
# classroom's Debian seat has for Docker's networking and a remapped user namespace (the network and userns slides;
# their roles install them on a seat that lacks them).
BASE_PACKAGES = ('python3', 'python3-apt', 'iproute2', 'procps', 'util-linux', 'openssh-server', 'tini', 'sudo',
                 'nftables', 'uidmap')
# Nobody reads man pages, documentation or translations on a lab host; every copy is smaller without them.
DPKG_OPTIONS = (
    'path-exclude=/usr/share/man/*',
    'path-exclude=/usr/share/locale/*',
    'path-exclude=/usr/share/doc/*',
    'path-include=/usr/share/doc/*/copyright',
)
# Bump when the way the base is built changes, so old cached tarballs are not reused.
BASE_FORMAT = 1


def base_key(suite: str, packages, mirrors, dpkg_options, hooks=()) -> str:
    """What the cached base depends on, hashed: a change in any of them builds a new base. ``hooks``: the
    customize hooks (a base without any hashes as it did before there were hooks)."""
    recipe = {'format': BASE_FORMAT, 'suite': suite, 'packages': sorted(packages),
              'mirrors': list(mirrors), 'dpkg_options': list(dpkg_options)}
    if hooks:
        recipe['customize_hooks'] = list(hooks)
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


# A Debian package name (Debian Policy 5.6.1): what `labctl up --packages` accepts, nothing that could be an option.
PACKAGE_NAME = re.compile(r'[a-z0-9][a-z0-9+.-]+')


def parse_packages(text: str) -> tuple:
    """``git,ansible-core`` -> ('ansible-core', 'git'): the extra packages of a lab's seats, sorted, each once."""
    names = sorted({name.strip() for name in text.split(',') if name.strip()})
    wrong = [name for name in names if not PACKAGE_NAME.fullmatch(name)]
    if wrong:
        raise ValueError(f'{", ".join(wrong)} is not a Debian package name (lower-case letters, digits, "+", "-", ".")')
    return tuple(name for name in names if name not in BASE_PACKAGES)


@dataclasses.dataclass(frozen=True)
class BaseImage:
    release: str
    key: str
    mirrors: tuple
    # Packages beyond BASE_PACKAGES (a lab's --packages, e.g. git and ansible-core for ansible-pull).
    extra_packages: tuple = ()

    @property
    def packages(self) -> tuple:
        return BASE_PACKAGES + tuple(self.extra_packages)

    @property
    def tarball(self) -> str:
        return os.path.join(CACHE_DIR, f'{self.release}-{self.key}.tar')

    @property
    def manifest(self) -> str:
        return os.path.join(CACHE_DIR, f'{self.release}-{self.key}.json')


def base_image(release: str, extra_packages=()) -> BaseImage:
    """The base of ``release``; with ``extra_packages``, a base of its own (its own key), so that the bases of
    labs without them stay as they are."""
    machine_release = apt.machine_release()
    mirrors = apt.release_mirror_lines(apt.host_apt_sources(), release, machine_release)
    if not mirrors:
        raise LabError(f'No Debian mirror for {release} in {", ".join(apt.APT_SOURCE_FILES)} (nor for this machine\'s own '
                       f'release, {machine_release or "unknown"}, to take it from): labctl builds the lab hosts from the mirror '
                       f'apt already uses. Add one, e.g. "deb http://deb.debian.org/debian {release} main".')
    extra = tuple(extra_packages)
    return BaseImage(release=release, key=base_key(release, BASE_PACKAGES + extra, mirrors, DPKG_OPTIONS, account.BASE_HOOKS),
                     mirrors=tuple(mirrors), extra_packages=extra)


def build_base(base: BaseImage) -> None:
    mmdebstrap = shutil.which('mmdebstrap')
    if not mmdebstrap:
        raise LabError('mmdebstrap is not installed: run `make setup` (or `apt-get install mmdebstrap`).')
    os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
    partial = base.tarball + '.partial'
    argv = [mmdebstrap, '--variant=minbase', '--mode=root', '--format=tar', f'--include={",".join(base.packages)}']
    argv += [f'--dpkgopt={option}' for option in DPKG_OPTIONS]
    argv += [f'--customize-hook={hook}' for hook in account.BASE_HOOKS]
    argv += [base.release, partial, *base.mirrors]
    try:
        run(argv, f'build the {base.release} base root file system with mmdebstrap')
    except LabError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    os.replace(partial, base.tarball)
    manifest = {'suite': base.release, 'packages': list(base.packages), 'mirrors': list(base.mirrors),
                'dpkg_options': list(DPKG_OPTIONS), 'customize_hooks': list(account.BASE_HOOKS),
                'built_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                'bytes': os.path.getsize(base.tarball), 'command': shell_join(argv)}
    write_file_atomically(base.manifest, json.dumps(manifest, indent=2) + '\n')


def ensure_base(changes: Changes, release: str, extra_packages=()) -> BaseImage:
    base = base_image(release, extra_packages)
    if not os.path.isfile(base.tarball):
        with_extra = f' (with {", ".join(base.extra_packages)})' if base.extra_packages else ''
        changes.make(f'build the {releases.describe(release)} base{with_extra} with mmdebstrap into {base.tarball}', build_base, base)
    return base
