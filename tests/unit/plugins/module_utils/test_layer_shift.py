"""layer_shift: the request checks with a caller's option names (pure), the defaults a caller leaves out, ShiftError
without msg, and Shift.run() for real as root on a layer in a temporary directory, with a real AnsibleModule: check mode
predicts and writes nothing, the real run makes the shifted copy and the owned directory, the rerun changes nothing,
a missing user fails naming the caller's option with nothing made, a held lock makes the real run fail (check mode
takes none). The remap user's range comes from temporary files standing in for /etc/subuid and /etc/subgid, for the
user nobody, so that the seat's own files and users are never touched (test_userns makes real users)."""

from __future__ import annotations

import os
import pwd

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import layer_shift, locking

CALLER = {'src': 'overlay.lowerdirs', 'user': 'userns_remap', 'root': 'userns_remap_root'}


def params(**overrides):
    value = {'user': 'unboxed-remap', 'src': ['/overlay/lower2-file', '/overlay/lower1-base']}
    value.update(overrides)
    return value


def test_a_caller_may_leave_out_every_option_but_user_and_src():
    assert layer_shift.request_problems(params()) == []
    filled = layer_shift.with_defaults(params(directories=None))
    assert filled == dict(params(), root='/var/lib/unboxed/remap', directories=[], state='present', create_user=False,
                          lock_timeout=60)


@pytest.mark.parametrize('overrides, fragment', [
    ({'user': 'Not A User'}, 'containers[1].userns_remap must be a user name'),
    ({'user': 'root', 'create_user': True}, 'containers[1].userns_remap must not be root'),
    ({'src': []}, 'containers[1].overlay.lowerdirs is empty'),
    ({'src': ['/overlay/a', '/etc/ssl']}, 'containers[1].overlay.lowerdirs[1] is "/etc/ssl", inside /etc'),
    ({'src': ['/overlay/a/base', '/srv/b/base']},
     'containers[1].overlay.lowerdirs[1] /srv/b/base has the last path component "base" of containers[1].overlay.lowerdirs[0]'),
    ({'root': '/overlay'}, 'containers[1].overlay.lowerdirs[0] /overlay/lower2-file is inside containers[1].userns_remap_root'),
    ({'directories': ['/overlay/lower1-base/upper']}, 'containers[1].directories[0] /overlay/lower1-base/upper overlaps'),
    ({'lock_timeout': -1}, 'containers[1].lock_timeout must be 0 or more'),
])
def test_each_problem_names_the_callers_option(overrides, fragment):
    problems = layer_shift.request_problems(params(**overrides), prefix='containers[1].', names=CALLER)
    assert any(fragment in problem for problem in problems), problems


def test_without_prefix_the_options_are_layer_remaps():
    assert layer_shift.option_namer()('src[2]') == 'src[2]'
    assert layer_shift.option_namer('containers[0].', CALLER)('src[2]') == 'containers[0].overlay.lowerdirs[2]'
    assert any(problem.startswith('src[0] must be an absolute path')
               for problem in layer_shift.request_problems(params(src=['relative'])))


def test_shift_error_keeps_the_result_without_msg():
    error = layer_shift.ShiftError('bad', {'msg': 'old', 'changed': False, 'copies': []})
    assert error.msg == 'bad' and error.result == {'changed': False, 'copies': []}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (chown to the shifted owners)')


@pytest.fixture
def seat(tmp_path, monkeypatch):
    """A layer (root's files, a file of uid 1000, a setuid file, a symbolic link) and nobody's range 300000:65536 in
    stand-ins for /etc/subuid and /etc/subgid."""
    for name in ('subuid', 'subgid'):
        (tmp_path / name).write_text('nobody:300000:65536\n', encoding='utf-8')
    monkeypatch.setattr(layer_shift, 'SUBUID', str(tmp_path / 'subuid'))
    monkeypatch.setattr(layer_shift, 'SUBGID', str(tmp_path / 'subgid'))
    layer = tmp_path / 'layers' / 'lower1-base'
    (layer / 'etc').mkdir(parents=True)
    (layer / 'etc' / 'hostname').write_text('seat\n', encoding='utf-8')
    (layer / 'home').mkdir()
    (layer / 'home' / 'student').write_text('x', encoding='utf-8')
    os.chown(layer / 'home' / 'student', 1000, 1000)
    (layer / 'bin').mkdir()
    (layer / 'bin' / 'su').write_text('#!/bin/sh\n', encoding='utf-8')
    os.chmod(layer / 'bin' / 'su', 0o4755)
    os.symlink('hostname', layer / 'etc' / 'name')
    return tmp_path


def module(check_mode, **module_params):
    from ansible.module_utils import basic
    from ansible.module_utils.testing import patch_module_args
    with patch_module_args(dict(module_params, _ansible_check_mode=check_mode, _ansible_diff=True)):
        return basic.AnsibleModule(argument_spec=layer_shift.argument_spec(), supports_check_mode=True)


def tree(top):
    found = {}
    for directory, subdirectories, files in os.walk(top):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            found[os.path.relpath(path, top)] = (info.st_uid, info.st_gid, info.st_mode, info.st_mtime_ns)
    return found


@needs_root
def test_run_predicts_makes_and_then_changes_nothing(seat):
    request = {'user': 'nobody', 'src': [str(seat / 'layers' / 'lower1-base')], 'root': str(seat / 'remap'),
               'directories': [str(seat / 'userns' / 'upper')]}
    source_before = tree(seat / 'layers')
    predicted = layer_shift.Shift(module(True, **request), request, prefix='containers[0].', names=CALLER).run()
    assert predicted['changed'] is True and not (seat / 'remap').exists() and not (seat / 'userns').exists()
    dest = str(seat / 'remap' / '300000.300000' / 'lower1-base')
    assert (predicted['uid_start'], predicted['gid_start'], predicted['count']) == (300000, 300000, 65536)
    assert [copy_['dest'] for copy_ in predicted['copies']] == [dest] and predicted['copies'][0]['add'] == 8
    assert predicted['directories'] == [{'path': str(seat / 'userns' / 'upper'), 'action': 'create'}]
    assert predicted['account'] is None

    made = layer_shift.Shift(module(False, **request), request).run()
    assert {key: made[key] for key in ('changed', 'copies', 'directories', 'commands')} == \
        {key: predicted[key] for key in ('changed', 'copies', 'directories', 'commands')}
    assert tree(seat / 'layers') == source_before
    info = os.lstat(os.path.join(dest, 'home', 'student'))
    assert (info.st_uid, info.st_gid) == (301000, 301000)
    su = os.lstat(os.path.join(dest, 'bin', 'su'))
    assert (su.st_uid, su.st_mode & 0o7777) == (300000, 0o4755)
    assert os.readlink(os.path.join(dest, 'etc', 'name')) == 'hostname'
    assert os.lstat(os.path.join(dest, 'etc', 'name')).st_uid == 300000
    upper = os.lstat(seat / 'userns' / 'upper')
    assert (upper.st_uid, upper.st_gid, upper.st_mode & 0o7777) == (300000, 300000, 0o755)

    for check_mode in (True, False):
        again = layer_shift.Shift(module(check_mode, **request), request).run()
        assert again['changed'] is False and again['commands'] == [] and again['copies'][0]['add'] == 0

    gone = layer_shift.Shift(module(False, **request), dict(request, state='absent')).run()
    assert gone['changed'] is True and not os.path.exists(dest) and not (seat / 'userns' / 'upper').exists()
    assert tree(seat / 'layers') == source_before


@needs_root
def test_a_missing_user_names_the_callers_option_and_makes_nothing(seat):
    missing = 'unboxed-t-nobody'
    assert not any(entry.pw_name == missing for entry in pwd.getpwall())
    request = {'user': missing, 'src': [str(seat / 'layers' / 'lower1-base')], 'root': str(seat / 'remap')}
    with pytest.raises(layer_shift.ShiftError) as raised:
        layer_shift.Shift(module(False, **request), request, prefix='containers[0].', names=CALLER).run()
    assert raised.value.msg.startswith(f'containers[0].userns_remap: there is no user {missing}')
    assert 'containers[0].create_user: true' in raised.value.msg
    assert raised.value.result['changed'] is False and 'msg' not in raised.value.result
    assert not (seat / 'remap').exists()


@needs_root
def test_the_real_run_waits_for_the_copys_lock_and_check_mode_takes_none(seat):
    request = {'user': 'nobody', 'src': [str(seat / 'layers' / 'lower1-base')], 'root': str(seat / 'remap'), 'lock_timeout': 0}
    dest = os.path.realpath(seat / 'remap') + '/300000.300000/lower1-base'
    with locking.exclusive('layer', dest, timeout=5, note='test_layer_shift'):
        assert layer_shift.Shift(module(True, **request), request).run()['changed'] is True
        with pytest.raises(layer_shift.ShiftError) as raised:
            layer_shift.Shift(module(False, **request), request).run()
    assert 'a shifted copy' in raised.value.msg and raised.value.result['changed'] is False
    assert not (seat / 'remap').exists()
