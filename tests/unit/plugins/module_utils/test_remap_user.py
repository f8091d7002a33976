"""remap_user: the remap account's plan (pure, from the texts of /etc/subuid and /etc/subgid), and plan_present on
real files in a temporary directory standing in for /etc (no user is created: the module's system test does that)."""

from __future__ import annotations

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import idmap, remap_user


def plan(uid=None, subuid='', subgid='', record=None, name='unboxed-remap'):
    texts = {'subuid': subuid, 'subgid': subgid}
    wanted = idmap.planned_lines(name, uid, texts, 65536, 100000)
    return remap_user.AccountPlan(name, uid, texts, wanted, record or {})


def test_a_missing_user_is_created_with_the_first_range_free_in_both_files():
    account = plan(subuid='student:100000:65536\n', subgid='student:100000:65536\nlp:165536:10\n')
    assert account.create_user and account.changed
    assert account.commands() == [
        'useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin unboxed-remap',
        'echo unboxed-remap:165546:65536 >> /etc/subuid', 'echo unboxed-remap:165546:65536 >> /etc/subgid']
    lines = account.first_lines()
    assert (lines['subuid'].start, lines['subgid'].start, lines['subuid'].count) == (165546, 165546, 65536)
    assert account.created() == {'user': True, 'subuid': 'unboxed-remap:165546:65536', 'subgid': 'unboxed-remap:165546:65536'}
    assert account.diff() == {'before': {'user': 'absent', 'subuid': [], 'subgid': []},
                              'after': {'user': 'present', 'subuid': ['unboxed-remap:165546:65536'],
                                        'subgid': ['unboxed-remap:165546:65536']}}


def test_an_account_that_is_there_changes_nothing_and_keeps_its_record():
    record = {'user': True, 'subuid': 'unboxed-remap:100000:65536', 'subgid': 'unboxed-remap:100000:65536'}
    account = plan(uid=998, subuid='# x\nunboxed-remap:100000:65536\n', subgid='unboxed-remap:100000:65536\n', record=record)
    assert not account.changed and account.commands() == []
    lines = account.first_lines()
    assert (lines['subuid'].start, lines['subuid'].number, lines['subgid'].number) == (100000, 2, 1)
    assert account.created() == record


def test_a_user_made_before_gets_only_its_lines():
    account = plan(uid=1001, subuid='unboxed-remap:300000:65536\n')
    assert not account.create_user and account.changed
    assert account.commands() == ['echo unboxed-remap:300000:65536 >> /etc/subgid']
    assert account.created() == {'user': False, 'subuid': None, 'subgid': 'unboxed-remap:300000:65536'}


@pytest.mark.parametrize('name, fragment', [
    ('root', 'user must not be root'), ('0', 'user must not be root'), ('Bad Name', 'user must be a user name'),
    ('a' * 33, 'at most 32 characters'),
])
def test_names_refused(name, fragment):
    assert any(fragment in problem for problem in remap_user.name_problems('user', name))


def test_ranges_refused():
    assert remap_user.range_problems(65536, 100000) == []
    assert [problem.split(' ', 1)[0] for problem in remap_user.range_problems(0, 0)] == ['count', 'first']


@pytest.fixture
def seat(tmp_path, monkeypatch):
    files = {'subuid': tmp_path / 'subuid', 'subgid': tmp_path / 'subgid'}
    monkeypatch.setattr(remap_user, 'FILES', {key: str(path) for key, path in files.items()})
    monkeypatch.setattr(remap_user, 'RECORD_DIR', str(tmp_path / 'records'))
    return files


def test_plan_present_reads_the_files_and_writes_nothing(seat):
    seat['subuid'].write_text('other:100000:65536\n', encoding='utf-8')
    account = remap_user.plan_present('unboxed-t-nobody-here', option='user')
    assert account.wanted == {'subuid': 'unboxed-t-nobody-here:165536:65536', 'subgid': 'unboxed-t-nobody-here:165536:65536'}
    assert seat['subuid'].read_text(encoding='utf-8') == 'other:100000:65536\n' and not seat['subgid'].exists()


def test_an_exhausted_id_space_names_the_option(seat):
    seat['subuid'].write_text(f'other:100000:{2 ** 32 - 100002}\n', encoding='utf-8')
    with pytest.raises(remap_user.AccountError) as raised:
        remap_user.plan_present('unboxed-t-nobody-here', option='user')
    assert raised.value.msg.startswith('user: no 65536 free IDs from 100000 on') and raised.value.result == {'changed': False}
