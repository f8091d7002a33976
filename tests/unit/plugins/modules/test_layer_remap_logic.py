"""layer_remap's and remap_account's request checks (pure: no file is read or written), and the first free range."""

from __future__ import annotations

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import layer_shift
from ansible_collections.unboxed.lab.plugins.modules import remap_account


def params(**overrides):
    value = {'user': 'unboxed-remap', 'src': ['/overlay/lower2-file', '/overlay/lower1-base'], 'root': '/var/lib/unboxed/remap',
             'directories': ['/overlay-userns/upper'], 'state': 'present', 'create_user': False, 'lock_timeout': 60}
    value.update(overrides)
    return value


def test_the_slides_request_has_no_problem():
    assert layer_shift.request_problems(params()) == []


@pytest.mark.parametrize('overrides, fragment', [
    ({'user': 'Not A User'}, 'user must be a user name'),
    ({'src': []}, 'src is empty'),
    ({'src': ['/etc/ssl']}, 'src[0] is "/etc/ssl", inside /etc'),
    ({'src': ['relative/layer']}, 'src[0] must be an absolute path'),
    ({'src': ['/overlay/a/base', '/srv/b/base']}, 'src[1] /srv/b/base has the last path component "base" of src[0]'),
    ({'root': '/var/lib'}, 'root is "/var/lib", a system directory'),
    ({'root': '/overlay/lower1-base/remap'}, 'root /overlay/lower1-base/remap is inside src[1]'),
    ({'root': '/overlay'}, 'src[0] /overlay/lower2-file is inside root /overlay'),
    ({'directories': ['/overlay/lower1-base/upper']}, 'directories[0] /overlay/lower1-base/upper overlaps the layer'),
    ({'directories': ['/usr/upper']}, 'directories[0] is "/usr/upper", inside /usr'),
    ({'lock_timeout': -1}, 'lock_timeout must be 0 or more'),
])
def test_each_bad_request_names_its_option(overrides, fragment):
    problems = layer_shift.request_problems(params(**overrides))
    assert any(fragment in problem for problem in problems), problems


def test_absent_takes_the_layers_only_for_their_names():
    assert layer_shift.request_problems(params(state='absent', root='/overlay')) == []


def account(**overrides):
    value = {'name': 'unboxed-remap', 'count': 65536, 'first': 100000, 'state': 'present', 'lock_timeout': 60}
    value.update(overrides)
    return value


@pytest.mark.parametrize('overrides, fragment', [
    ({'name': 'root'}, 'name must not be root'),
    ({'name': 'a:b'}, 'name must be a user name'),
    ({'count': 0}, 'count must be between 1'),
    ({'first': 0}, 'first must be an ID of 1 or more'),
])
def test_bad_accounts(overrides, fragment):
    assert any(fragment in problem for problem in remap_account.request_problems(account(**overrides)))


def test_a_new_user_gets_the_first_range_free_in_both_files():
    texts = {'subuid': 'student:100000:65536\n', 'subgid': 'student:100000:65536\nlp:165536:10\n'}
    assert idmap.planned_lines('unboxed-remap', 999, texts, 65536, 100000) == {
        'subuid': 'unboxed-remap:165546:65536', 'subgid': 'unboxed-remap:165546:65536'}


def test_a_user_with_a_range_keeps_it_and_a_missing_half_follows_it_where_free():
    texts = {'subuid': 'unboxed-remap:200000:65536\n', 'subgid': ''}
    assert idmap.planned_lines('unboxed-remap', 999, texts, 65536, 100000) == {
        'subuid': None, 'subgid': 'unboxed-remap:200000:65536'}
    texts = {'subuid': 'unboxed-remap:200000:65536\n', 'subgid': 'other:200000:10\n'}
    assert idmap.planned_lines('unboxed-remap', 999, texts, 65536, 100000) == {
        'subuid': None, 'subgid': 'unboxed-remap:100000:65536'}
