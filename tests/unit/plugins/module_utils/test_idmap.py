"""idmap: /etc/subuid lines, ranges, shifting owners and the IDs inside xattrs, the inventory plan - real samples."""

from __future__ import annotations

import struct

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import idmap

# As a Debian seat has it after adduser student and dockerd --userns-remap=default.
SUBUID = """student:100000:65536
dockremap:165536:65536
# a comment
broken line
1001:231072:65536
"""


def test_parse_subid_reads_lines_and_names_the_unreadable_one():
    lines, problems = idmap.parse_subid(SUBUID)
    assert [(line.name, line.start, line.count, line.number) for line in lines] == [
        ('student', 100000, 65536, 1), ('dockremap', 165536, 65536, 2), ('1001', 231072, 65536, 5)]
    assert problems == ["line 4 ('broken line') is not NAME:START:COUNT"]


def test_first_range_by_name_or_number_in_file_order():
    lines = idmap.parse_subid(SUBUID + 'student:300000:10\n')[0]
    assert idmap.first_range(lines, 'student').start == 100000
    assert idmap.first_range(lines, 'alice', uid=1001).start == 231072
    assert idmap.first_range(lines, 'nobody-here') is None


@pytest.mark.parametrize('start, count, overlapping', [
    (100000, 65536, ['student']),
    (165535, 2, ['student', 'dockremap']),
    (296608, 10, []),            # right after the last range
    (99990, 10, []),             # right before the first
    (99990, 11, ['student']),
])
def test_overlapping(start, count, overlapping):
    lines = idmap.parse_subid(SUBUID)[0]
    assert [line.name for line in idmap.overlapping(lines, start, count)] == overlapping


def test_overlapping_ignores_the_user_itself():
    lines = idmap.parse_subid(SUBUID)[0]
    assert [line.name for line in idmap.overlapping(lines, 100000, 70000, except_name='student')] == ['dockremap']


def test_first_free_is_dockers_100000_on_an_empty_seat():
    assert idmap.first_free([[], []]) == 100000


def test_first_free_skips_every_line_of_both_files():
    uids = idmap.parse_subid('student:100000:65536\n')[0]
    gids = idmap.parse_subid('student:100000:65536\nother:165536:1000\n')[0]
    assert idmap.first_free([uids, gids]) == 166536
    # A gap too small for the range is skipped, one large enough is taken.
    lines = idmap.parse_subid('a:100000:10\nb:100020:65536\n')[0]
    assert idmap.first_free([lines], count=10) == 100010
    assert idmap.first_free([lines], count=11) == 165556


def test_first_free_fails_beyond_the_last_id():
    lines = idmap.parse_subid(f'a:100000:{2 ** 32 - 100001}\n')[0]
    with pytest.raises(ValueError):
        idmap.first_free([lines])


@pytest.mark.parametrize('name, ok', [('unboxed-remap', True), ('dockremap', True), ('_x', True), ('1000', True),
                                      ('Root', False), ('a b', False), ('-x', False), ('x\n', False), ('', False)])
def test_name_problem(name, ok):
    assert (idmap.name_problem('user', name) is None) is ok


def test_shift_in_and_out_of_the_range():
    assert idmap.shift(0, 100000, 65536) == 100000
    assert idmap.shift(65534, 100000, 65536) == 165534
    with pytest.raises(idmap.OutOfRange):
        idmap.shift(65536, 100000, 65536)
    with pytest.raises(idmap.OutOfRange):
        idmap.shift(-1, 100000, 65536)


# ping's capability as getfattr -e hex shows it on Debian: revision 2, effective, cap_net_raw (bit 13).
CAP_V2 = bytes.fromhex('0100000200200000000000000000000000000000')


def test_a_revision_2_capability_becomes_revision_3_for_the_containers_root():
    shifted = idmap.shift_capability(CAP_V2, 100000, 65536)
    assert len(shifted) == 24
    magic, permitted, _inheritable = struct.unpack_from('<III', shifted)
    assert magic == idmap.VFS_CAP_REVISION_3 | 1          # effective flag kept
    assert permitted == 1 << 13
    assert struct.unpack_from('<I', shifted, 20)[0] == 100000


def test_a_revision_3_capability_has_its_root_shifted():
    value = struct.pack('<I', idmap.VFS_CAP_REVISION_3) + CAP_V2[4:] + struct.pack('<I', 5)
    assert struct.unpack_from('<I', idmap.shift_capability(value, 100000, 65536), 20)[0] == 100005


@pytest.mark.parametrize('value', [b'', b'\x00' * 19, struct.pack('<I', 0x04000000) + b'\x00' * 16, CAP_V2 + b'xx'])
def test_a_capability_that_is_no_vfs_cap_data_is_refused(value):
    with pytest.raises(ValueError):
        idmap.shift_capability(value, 100000, 65536)


def test_acl_named_users_and_groups_are_shifted_the_rest_kept():
    # user::rwx, user:1000:r--, group::r-x, group:50:r--, mask::r-x, other::r--
    entries = [(0x01, 7, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 5, 0xFFFFFFFF), (0x08, 4, 50), (0x10, 5, 0xFFFFFFFF),
               (0x20, 4, 0xFFFFFFFF)]
    value = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', *entry) for entry in entries)
    shifted = idmap.shift_acl(value, 100000, 200000, 65536)
    ids = [struct.unpack_from('<HHI', shifted, 4 + 8 * index)[2] for index in range(len(entries))]
    assert ids == [0xFFFFFFFF, 101000, 0xFFFFFFFF, 200050, 0xFFFFFFFF, 0xFFFFFFFF]
    assert idmap.shift_xattr('user.note', b'kept', 100000, 100000, 65536) == b'kept'


def entry(kind='file', mode=0o644, uid=0, size=1, mtime=1, ctime=1, **more):
    return idmap.Entry(kind, mode, uid, uid, size, mtime, ctime, **more)


def test_plan_of_an_unchanged_source_is_empty():
    source = {'.': entry('dir', 0o755), 'a': entry()}
    assert not idmap.plan(source, dict(source)).changed


def test_plan_adds_updates_removes_children_first_and_touches_directories():
    record = {'.': entry('dir'), 'a': entry(), 'gone': entry('dir'), 'gone/x': entry(), 'gone/x/y': entry(), 'd': entry('dir')}
    source = {'.': entry('dir', ctime=2), 'a': entry(size=2, ctime=2), 'new': entry(), 'd': entry('file')}
    found = idmap.plan(source, record)
    assert found.add == ['new']
    assert found.update == ['a', 'd']              # a changed, d is a file now
    assert found.remove == ['gone/x/y', 'gone/x', 'gone']
    assert found.touch == ['.']
    assert found.counts() == {'add': 1, 'update': 2, 'remove': 3, 'metadata': 1}


def test_plan_copies_again_what_is_damaged_in_the_copy():
    source = {'.': entry('dir'), 'a': entry(), 'b': entry('dir')}
    found = idmap.plan(source, dict(source), damaged=['a', 'b'])
    assert found.update == ['a', 'b'] and found.touch == []


def test_hard_link_group_and_link_target_count_as_changes():
    record = {'a': entry(), 'b': entry(link='a'), 'l': entry('symlink', target='a')}
    source = {'a': entry(), 'b': entry(), 'l': entry('symlink', target='b')}
    assert idmap.plan(source, record).update == ['b', 'l']


def test_entry_round_trips_through_the_record():
    value = entry('char', 0o4755, 7, rdev=259, target='', link='x')
    assert idmap.Entry.from_list(value.as_list()) == value


def test_sample():
    assert idmap.sample(['a', 'b'], 5) == ['a', 'b']
    assert idmap.sample([str(n) for n in range(8)], 3) == ['0', '1', '2', '... and 5 more']
