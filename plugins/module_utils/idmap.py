# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""User namespace ID mappings, as dockerd's ``--userns-remap`` uses them: the pure logic.

- ``/etc/subuid`` and ``/etc/subgid`` lines (``NAME:START:COUNT``): parsing, a user's first range (the one
  newuidmap and ns_container's ``userns_remap`` use), overlaps, and the first free range Docker would pick
  (the first 65536 IDs from 100000 that no line of either file uses).
- Shifting an owner into a range: container ID ``n`` is host ID ``start + n`` for ``0 <= n < count``.
- The ``security.capability`` and POSIX ACL extended attributes, whose bytes hold IDs that must move too.
- The cheap inventory of a layer directory (paths, types, sizes, times, modes, owners, hard link groups) and
  its difference with the record kept beside a shifted copy.
"""

from __future__ import annotations

import dataclasses
import re
import struct

# What Docker's dockerd picks for --userns-remap=default: 65536 IDs, looked for from 100000 on.
DEFAULT_FIRST = 100000
DEFAULT_COUNT = 65536
# The largest ID a uid_t holds ((uid_t)-1 means "no change" to chown(2)).
MAX_ID = 2 ** 32 - 2

NAME_PATTERN = re.compile(r'[a-z_][a-z0-9_-]*\$?|[0-9]+')


@dataclasses.dataclass(frozen=True)
class SubidLine:
    """One line of /etc/subuid or /etc/subgid: ``name`` may use ``start``..``start + count - 1``."""

    name: str
    start: int
    count: int
    number: int      # line number, from 1
    text: str        # the line as written, without its newline

    @property
    def end(self) -> int:
        return self.start + self.count


def parse_subid(text: str) -> tuple[list[SubidLine], list[str]]:
    """(lines, problems): every ``NAME:START:COUNT`` line; blank lines and ``#`` comments are skipped, and a line
    that shadow's tools would not read is a problem naming its number (newuidmap ignores it)."""
    lines, problems = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        fields = line.split(':')
        if len(fields) != 3 or not fields[0] or not fields[1].isdigit() or not fields[2].isdigit():
            problems.append(f'line {number} ({raw!r}) is not NAME:START:COUNT')
            continue
        lines.append(SubidLine(fields[0], int(fields[1]), int(fields[2]), number, raw))
    return lines, problems


def ranges_of(lines, name: str, uid: int | None = None) -> list[SubidLine]:
    """The lines of a user, by name or by number, in file order (newuidmap accepts both)."""
    return [line for line in lines if line.name == name or (uid is not None and line.name == str(uid))]


def first_range(lines, name: str, uid: int | None = None) -> SubidLine | None:
    """The range ``--userns-remap`` and ns_container's ``userns_remap`` map the container's root to: the first line."""
    found = ranges_of(lines, name, uid)
    return found[0] if found else None


def overlapping(lines, start: int, count: int, except_name: str | None = None) -> list[SubidLine]:
    """Lines (of other users than ``except_name``) whose range shares an ID with ``start``..``start + count - 1``."""
    return [line for line in lines if line.name != except_name and line.count > 0 and count > 0
            and line.start < start + count and start < line.end]


def first_free(line_sets, count: int = DEFAULT_COUNT, first: int = DEFAULT_FIRST) -> int:
    """The lowest start >= ``first`` whose ``count`` IDs no line of any of ``line_sets`` uses (both files at once,
    so that the user gets the same start for uids and gids - /var/lib/unboxed/remap/100000.100000, as Docker)."""
    taken = sorted((line.start, line.end) for lines in line_sets for line in lines if line.count > 0)
    start = first
    moved = True
    while moved:
        moved = False
        for begin, end in taken:
            if begin < start + count and start < end:
                start = end
                moved = True
    if start + count - 1 > MAX_ID:
        raise ValueError(f'no {count} free IDs from {first} on')
    return start


def planned_lines(name: str, uid, texts: dict, count: int, first: int) -> dict:
    """{'subuid': line to add or None, 'subgid': ...}: a user with a range keeps it; a missing one is placed at its
    other file's start when that is free there, else at the first start free in both files."""
    lines = {key: parse_subid(text)[0] for key, text in texts.items()}
    own = {key: first_range(found, name, uid) for key, found in lines.items()}
    wanted = {}
    for key, other in (('subuid', 'subgid'), ('subgid', 'subuid')):
        if own[key] is not None:
            wanted[key] = None
            continue
        partner = own[other]
        if partner is not None and not overlapping(lines[key], partner.start, partner.count):
            start, size = partner.start, partner.count
        elif partner is not None:
            start, size = first_free([lines[key]], partner.count, first), partner.count
        else:
            start, size = first_free(list(lines.values()), count, first), count
        wanted[key] = subid_line(name, start, size)
        lines[key] = lines[key] + parse_subid(wanted[key])[0]
        own[key] = first_range(lines[key], name, uid)
    return wanted


def subid_line(name: str, start: int, count: int) -> str:
    return f'{name}:{start}:{count}'


def name_problem(option: str, name: str) -> str | None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or len(name) > 32:
        return (f'{option} must be a user name as useradd takes it (lower case letters, digits, "_" and "-", starting '
                f'with a letter or "_", at most 32 characters), got {name!r}.')
    return None


class OutOfRange(ValueError):
    """An ID that the container's range cannot hold."""


def shift(identifier: int, start: int, count: int) -> int:
    """Host ID of container ID ``identifier``: ``start + identifier``. Like Docker ("Container ID 65536 cannot be
    mapped to a host ID"), an ID the range does not hold is an error, never silently squashed to the overflow ID."""
    if not 0 <= identifier < count:
        raise OutOfRange(f'ID {identifier} is outside the range of {count} IDs (0-{count - 1})')
    return start + identifier


# security.capability: struct vfs_cap_data (linux/capability.h). Revision 2 has no root ID; the kernel honours it in
# every user namespace. Revision 3 carries the host uid of the namespace root it is meant for: it is honoured only
# in a user namespace whose root is that uid (or one below it).
VFS_CAP_REVISION_MASK = 0xFF000000
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_FLAGS_MASK = 0x00FFFFFF
CAPABILITY_XATTR = 'security.capability'


def shift_capability(value: bytes, start: int, count: int) -> bytes:
    """The ``security.capability`` value for the shifted copy: always revision 3, its root ID shifted (0 for a
    revision 2 value), so that the capability works for the container's root and for no one on the seat."""
    if len(value) < 20:
        raise ValueError(f'a security.capability value of {len(value)} bytes is no vfs_cap_data')
    magic = struct.unpack_from('<I', value, 0)[0]
    revision = magic & VFS_CAP_REVISION_MASK
    if revision == VFS_CAP_REVISION_2 and len(value) == 20:
        rootid = 0
    elif revision == VFS_CAP_REVISION_3 and len(value) == 24:
        rootid = struct.unpack_from('<I', value, 20)[0]
    else:
        raise ValueError(f'unknown security.capability revision 0x{revision >> 24:x} ({len(value)} bytes)')
    flags = magic & VFS_CAP_FLAGS_MASK
    return struct.pack('<I', VFS_CAP_REVISION_3 | flags) + value[4:20] + struct.pack('<I', shift(rootid, start, count))


# POSIX ACLs in their xattr form (linux/posix_acl_xattr.h): a version, then (tag, perm, id) entries; only named
# user and named group entries carry an ID.
ACL_XATTRS = ('system.posix_acl_access', 'system.posix_acl_default')
ACL_VERSION = 2
ACL_USER = 0x02
ACL_GROUP = 0x08


def shift_acl(value: bytes, uid_start: int, gid_start: int, count: int) -> bytes:
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from('<I', value, 0)[0] != ACL_VERSION:
        raise ValueError('not a version 2 POSIX ACL')
    out = bytearray(value)
    for offset in range(4, len(value), 8):
        tag, _perm, identifier = struct.unpack_from('<HHI', value, offset)
        if tag == ACL_USER:
            struct.pack_into('<I', out, offset + 4, shift(identifier, uid_start, count))
        elif tag == ACL_GROUP:
            struct.pack_into('<I', out, offset + 4, shift(identifier, gid_start, count))
    return bytes(out)


def shift_xattr(name: str, value: bytes, uid_start: int, gid_start: int, count: int) -> bytes:
    """Every extended attribute is copied; those that hold IDs are shifted with the owners."""
    if name == CAPABILITY_XATTR:
        return shift_capability(value, uid_start, count)
    if name in ACL_XATTRS:
        return shift_acl(value, uid_start, gid_start, count)
    return value


# The inventory: one Entry per path of a layer (relative, '.' for the layer's own directory). Two inventories are
# equal for a path when nothing a copy carries changed: type, mode, owner, size, mtime, ctime (which moves with every
# chown, chmod, xattr or content change, so xattrs need not be read to notice one), device number, link target and
# hard link group (the first path of the inode).
@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str           # file, dir, symlink, char, block, fifo, socket
    mode: int           # st_mode & 0o7777
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    rdev: int = 0
    target: str = ''    # a symbolic link's target
    link: str = ''      # for a hard link, the first path of its inode in the inventory ('' for that first path)

    def as_list(self) -> list:
        return [self.kind, self.mode, self.uid, self.gid, self.size, self.mtime_ns, self.ctime_ns, self.rdev,
                self.target, self.link]

    @classmethod
    def from_list(cls, values) -> Entry:
        return cls(*values)


@dataclasses.dataclass
class Plan:
    """What brings a shifted copy from its record to the source: paths to add, to update, to remove (children
    before their directory), and directories whose metadata alone changed."""

    add: list
    update: list
    remove: list
    touch: list

    @property
    def changed(self) -> bool:
        return bool(self.add or self.update or self.remove or self.touch)

    def counts(self) -> dict:
        return {'add': len(self.add), 'update': len(self.update), 'remove': len(self.remove), 'metadata': len(self.touch)}


def plan(source: dict, record: dict, damaged=()) -> Plan:
    """Compare the source's inventory with the record of the last copy (both {path: Entry}). ``damaged``: paths of
    the record whose copy is missing or no longer what the record says (found by the caller), copied again."""
    damaged = set(damaged)
    add = sorted(path for path in source if path not in record)
    update, touch = [], []
    for path in sorted(path for path in source if path in record):
        new, old = source[path], record[path]
        if new == old and path not in damaged:
            continue
        if new.kind == 'dir' and old.kind == 'dir' and path not in damaged:
            touch.append(path)
        else:
            update.append(path)
    remove = sorted((path for path in record if path not in source), key=lambda path: (-path.count('/'), path))
    return Plan(add, update, remove, touch)


def sample(paths, limit: int = 5) -> list:
    """A few names for a diff or a message: the first ``limit``, then how many more."""
    paths = list(paths)
    return paths[:limit] + ([f'... and {len(paths) - limit} more'] if len(paths) > limit else [])
