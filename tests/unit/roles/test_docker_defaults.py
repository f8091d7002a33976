# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The closing comparison's "Docker" column (roles/cgroups/vars/main.yml) is data written by hand beside the
modules' own knowledge of Docker's defaults (confine.py): both must say the same."""

from __future__ import annotations

import os

import yaml

from ansible_collections.unboxed.lab.plugins.module_utils import confine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def docker_defaults() -> dict:
    with open(os.path.join(REPO, 'roles', 'cgroups', 'vars', 'main.yml'), encoding='utf-8') as handle:
        return yaml.safe_load(handle)['__cgroups_docker_defaults']


def test_the_comparison_shows_the_mask_of_dockers_capabilities():
    shown = str(docker_defaults()['cap_eff'])
    assert shown == confine.DOCKER_CAP_EFF
    assert shown == confine.mask_text(confine.capability_mask(confine.DOCKER_CAPABILITIES))


def test_the_comparison_names_the_preset_docker_applies():
    defaults = docker_defaults()
    assert defaults['seccomp'] == confine.DOCKER
    assert defaults['no_new_privs'] is False
    assert defaults['root_method'] == 'pivot_root'
