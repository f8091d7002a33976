# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image layers shifted into a remap user's ID range, as ``dockerd --userns-remap`` keeps them in
``/var/lib/docker/UID.GID/``: what layer_remap does, and what ns_container does for a remapped container in its own
run (``docker run`` on a remapped daemon pulls the image's layers shifted when they are missing), one code for both.

``Shift(module, params).run()`` validates, takes the account's lock (with ``create_user``) and the copies' locks (in a
real run only), reads the seat and the layers, plans everything (the account, then the copies and directories),
changes only the difference unless in check mode and returns the result dict; a failure raises ShiftError with the
message and the result so far, for the caller to report with its own context. ``request_problems()`` is pure.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import errno
import json
import os
import stat

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import remap_user


def argument_spec() -> dict:
    """layer_remap's options; ``params`` of Shift and request_problems have these keys (missing ones at these defaults)."""
    return dict(
        user=dict(type='str', required=True),
        src=dict(type='list', elements='path', required=True),
        root=dict(type='path', default='/var/lib/unboxed/remap'),
        directories=dict(type='list', elements='path', default=[]),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        create_user=dict(type='bool', default=False),
        lock_timeout=dict(type='int', default=60),
    )


def with_defaults(params: dict) -> dict:
    """``params`` with every option it lacks, or gives as None, at its argument_spec default (user and src have none)."""
    defaults = {option: copy_module.deepcopy(spec.get('default')) for option, spec in argument_spec().items()}
    return dict(defaults, **{option: value for option, value in params.items() if value is not None})


def option_namer(prefix: str = '', names: dict | None = None):
    """A function that names layer_remap's option as the caller calls it: ``prefix`` before it, and ``names`` mapping
    layer_remap's name to the caller's (``{'src': 'overlay.lowerdirs'}`` turns src[1] into
    PREFIXoverlay.lowerdirs[1])."""
    names = names or {}

    def name(option: str) -> str:
        base, bracket, rest = option.partition('[')
        return f'{prefix}{names.get(base, base)}{bracket}{rest}'
    return name


class ShiftError(Exception):
    """A request or a seat that cannot be shifted: ``msg`` for a student, ``result`` the result dict so far (with
    ``changed`` true when something was done before the failure, and ``problems`` where there are several), to report
    as ``fail_json(msg=error.msg, **error.result)``."""

    def __init__(self, msg: str, result: dict):
        super().__init__(msg)
        self.msg = msg
        self.result = {key: value for key, value in result.items() if key != 'msg'}


def request_problems(params, prefix: str = '', names: dict | None = None) -> list[str]:
    """Everything wrong with the request that is known before reading a layer, each naming its option
    (option_namer(prefix, names)). ``params`` as Shift's (missing ones at their defaults)."""
    params = with_defaults(params)
    name = option_namer(prefix, names)
    if params['create_user']:
        problems = remap_user.name_problems(name('user'), params['user'])
    else:
        problems = [problem for problem in [idmap.name_problem(name('user'), params['user'])] if problem]
    root = params['root']
    problems.extend(filter(None, [paths.usable_directory_problem(name('root'), root)]))
    if params['lock_timeout'] < 0:
        problems.append(f'{name("lock_timeout")} must be 0 or more seconds, got {params["lock_timeout"]}.')
    if not params['src']:
        problems.append(f'{name("src")} is empty: list the layer directories to copy, such as [/overlay/lower1-base].')
    seen = {}
    for index, source in enumerate(params['src'] or []):
        option = name(f'src[{index}]')
        problem = paths.usable_directory_problem(option, source)
        if problem:
            problems.append(problem)
            continue
        last = os.path.basename(paths.normalize(source))
        if last in seen:
            problems.append(f'{option} {source} has the last path component "{last}" of {seen[last]}: the copies are named '
                            f'by it, so two sources must differ in it.')
        seen.setdefault(last, option)
        if params['state'] == 'present' and not paths.usable_directory_problem(name('root'), root):
            real_source, real_root = paths.resolve(source), paths.resolve(root)
            if paths.is_inside(real_root, real_source):
                problems.append(f'{name("root")} {root} is inside {option} {source}: the copy would be written into the layer '
                                f'it copies (and copy itself). Put {name("root")} elsewhere, such as /var/lib/unboxed/remap.')
            elif paths.is_inside(real_source, real_root):
                problems.append(f'{option} {source} is inside {name("root")} {root}, where the copies go. Copy a layer from '
                                f'elsewhere.')
    for index, directory in enumerate(params['directories']):
        option = name(f'directories[{index}]')
        problem = paths.usable_directory_problem(option, directory)
        if problem:
            problems.append(problem)
            continue
        for source in params['src'] or []:
            if paths.is_inside(paths.resolve(directory), paths.resolve(source)) or \
                    paths.is_inside(paths.resolve(source), paths.resolve(directory)):
                problems.append(f'{option} {directory} overlaps the layer {source}: a container\'s own directory must be '
                                f'outside the image\'s layers.')
    return problems


SUBUID = remap_user.FILES['subuid']
SUBGID = remap_user.FILES['subgid']
RECORD_SUFFIX = '.unboxed-remap.json'
STAGING_SUFFIX = '.unboxed-staging'
RECORD_VERSION = 1
KINDS = {stat.S_IFREG: 'file', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'symlink', stat.S_IFCHR: 'char', stat.S_IFBLK: 'block',
         stat.S_IFIFO: 'fifo', stat.S_IFSOCK: 'socket'}
TYPE_BITS = {kind: bits for bits, kind in KINDS.items()}


def range_problem(name: str, uid_line, gid_line, option=option_namer()) -> str | None:
    """Why the user's first ranges cannot map a container (None when they can); ``option`` names the options."""
    missing = [path for path, line in ((SUBUID, uid_line), (SUBGID, gid_line)) if line is None]
    if missing:
        return (f'{option("user")}: {name} has no range in {" nor in ".join(missing)}, so no container ID can be mapped for '
                f'it. Set {option("create_user")}: true to add them here, or add a line {name}:START:COUNT (unboxed.lab.remap_account does).')
    if uid_line.count != gid_line.count:
        return (f'{option("user")}: {name} has {uid_line.count} uids ({SUBUID} line {uid_line.number}) but {gid_line.count} '
                f'gids ({SUBGID} line {gid_line.number}); give both ranges the same size.')
    if uid_line.count < 1:
        return f'{option("user")}: the range of {name} in {SUBUID} is empty.'
    return None


def user_range(name: str, option=option_namer()):
    """(uid line, gid line, problem) of the user's first range in each file, as the seat has them now."""
    uid = remap_user.user_uid(name)
    if uid is None:
        return None, None, (f'{option("user")}: there is no user {name} on this host. Set {option("create_user")}: true to create it and its '
                            f'ranges in {SUBUID} and {SUBGID} here, as dockerd --userns-remap=default creates dockremap, '
                            f'or create it first (unboxed.lab.remap_account).')
    lines = {path: idmap.first_range(idmap.parse_subid(remap_user.read_text(path))[0], name, uid) for path in (SUBUID, SUBGID)}
    problem = range_problem(name, lines[SUBUID], lines[SUBGID], option)
    return (None, None, problem) if problem else (lines[SUBUID], lines[SUBGID], None)


def predicted_range(name: str, option=option_namer()):
    """(uid line, gid line) that create_user (and remap_account, the same code) would make for a user that has no
    range yet (or does not exist yet), with Docker's defaults; None when nothing would be made."""
    try:
        account = remap_user.plan_present(name, option=option('user'))
    except remap_user.AccountError:
        return None
    if not account.changed:
        return None
    lines = account.first_lines()
    return lines['subuid'], lines['subgid']


def kind_of(info) -> str:
    return KINDS.get(stat.S_IFMT(info.st_mode), 'unknown')


def entry_of(info, target: str = '', link: str = '') -> idmap.Entry:
    return idmap.Entry(kind_of(info), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
                       info.st_size if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode) else 0,
                       info.st_mtime_ns, info.st_ctime_ns, info.st_rdev if kind_of(info) in ('char', 'block') else 0,
                       target, link)


def inventory(source: str) -> dict:
    """{relative path: Entry} of every entry of ``source`` (itself as '.'), never following a symbolic link and not
    descending into another file system; hard links point to the first path (sorted) of their inode."""
    found = {}
    inodes = {}
    top = os.lstat(source)
    device = top.st_dev
    found['.'] = entry_of(top)

    def walk(directory: str, relative: str):
        names = sorted(list_directory(directory))
        for name in names:
            path = os.path.join(directory, name)
            inner = name if relative == '.' else f'{relative}/{name}'
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                found[inner] = entry_of(info, target=os.readlink(path))
                continue
            link = ''
            if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
                link = inodes.setdefault((info.st_dev, info.st_ino), inner)
                link = '' if link == inner else link
            found[inner] = entry_of(info, link=link)
            if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
                walk(path, inner)

    walk(source, '.')
    return found


def list_directory(directory: str) -> list[str]:
    """The names in a directory of the source, read without changing its access time (O_NOATIME)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(directory, flags | getattr(os, 'O_NOATIME', 0))
    except PermissionError:
        descriptor = os.open(directory, flags)
    try:
        return os.listdir(descriptor)
    finally:
        os.close(descriptor)


def host_path(base: str, inner: str) -> str:
    return base if inner == '.' else os.path.join(base, inner)


def read_record(record_path: str):
    """(entries, complete) from the record, or (None, False) when there is none."""
    try:
        with open(record_path, encoding='utf-8') as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None, False
    except (OSError, ValueError):
        return {}, False
    entries = {path: idmap.Entry.from_list(values) for path, values in data.get('entries', {}).items()}
    return entries, bool(data.get('complete'))


def write_record(record_path: str, data: dict) -> None:
    temporary = record_path + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as handle:
        json.dump(data, handle, ensure_ascii=True, separators=(',', ':'))
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, record_path)


def damaged_paths(dest: str, record: dict, shifted) -> list[str]:
    """Paths of the record whose copy is missing or not what the copy made (owner, mode, type, size)."""
    damaged = []
    for inner, entry in record.items():
        try:
            info = os.lstat(host_path(dest, inner))
        except FileNotFoundError:
            damaged.append(inner)
            continue
        uid, gid = shifted(entry)
        if kind_of(info) != entry.kind or (info.st_uid, info.st_gid) != (uid, gid) or \
                (entry.kind != 'symlink' and stat.S_IMODE(info.st_mode) != entry.mode) or \
                (entry.kind == 'file' and info.st_size != entry.size):
            damaged.append(inner)
    return damaged


def out_of_range(source_entries: dict, count: int) -> list[str]:
    return [f'{inner} (owner {entry.uid}:{entry.gid})' for inner, entry in source_entries.items()
            if not (0 <= entry.uid < count and 0 <= entry.gid < count)]


class Copy:
    """One source and its shifted copy: what is there, what the run plans, and the work."""

    def __init__(self, source: str, base: str, uid_line, gid_line, predict_missing: bool = False):
        self.source = source
        # Check mode: a source an earlier task of the same --check run would make (the talk's layers) is predicted
        # as copied whole.
        self.predict_missing = predict_missing
        self.name = os.path.basename(paths.normalize(source))
        self.base = base
        self.dest = os.path.join(base, self.name)
        self.record_path = os.path.join(base, f'.{self.name}{RECORD_SUFFIX}')
        self.staging = os.path.join(base, f'.{self.name}{STAGING_SUFFIX}')
        self.uid_start, self.gid_start, self.count = uid_line.start, gid_line.start, uid_line.count
        self.entries = {}
        self.record = None
        self.complete = False
        self.plan = None
        self.leftovers = False
        self.bytes = 0

    def shifted(self, entry) -> tuple[int, int]:
        return idmap.shift(entry.uid, self.uid_start, self.count), idmap.shift(entry.gid, self.gid_start, self.count)

    def problems(self) -> list[str]:
        if not os.path.lexists(self.source) and self.predict_missing:
            self.record, self.complete = {}, False
            self.plan = idmap.plan({}, {}, [])
            return []
        if not os.path.isdir(self.source):
            what = 'does not exist' if not os.path.lexists(self.source) else 'is not a directory'
            return [f'src {self.source} {what}: give the directory of an image layer.']
        record, self.complete = read_record(self.record_path)
        if record is None and os.path.lexists(self.dest) and \
                (not os.path.isdir(self.dest) or os.path.islink(self.dest) or os.listdir(self.dest)):
            return [f'{self.dest} exists and this module did not make it (no record {self.record_path}): it is left alone. '
                    f'Move it away, or choose another root.']
        self.record = record or {}
        self.entries = inventory(self.source)
        wrong = out_of_range(self.entries, self.count)
        if wrong:
            return [f'src {self.source} holds {len(wrong)} entries whose owner the range of {self.count} IDs cannot hold '
                    f'(container IDs 0-{self.count - 1}), as Docker fails with "Container ID ... cannot be mapped to a host '
                    f'ID": {", ".join(idmap.sample(wrong))}. Give the remap user a larger range, or change those owners.']
        damaged = damaged_paths(self.dest, self.record, self.shifted) if self.record else []
        if not self.complete and self.record:
            damaged = list(self.record)      # an interrupted copy: check every entry again
        self.plan = idmap.plan(self.entries, self.record, damaged)
        if not os.path.isdir(self.dest):
            self.plan = idmap.plan(self.entries, {}, [])
        self.leftovers = os.path.lexists(self.staging) or os.path.lexists(self.record_path + '.tmp')
        self.bytes = sum(self.entries[inner].size for inner in self.plan.add + self.plan.update
                         if self.entries[inner].kind == 'file' and not self.entries[inner].link)
        return []

    @property
    def changed(self) -> bool:
        return self.plan.changed or self.leftovers or not self.complete

    def summary(self) -> dict:
        return dict(src=self.source, dest=self.dest, entries=len(self.entries), bytes=self.bytes, **self.plan.counts())

    def diff(self) -> dict:
        lines = [f'{self.dest}: {len(self.record)} entries recorded, the source has {len(self.entries)}']
        for what, found in (('add', self.plan.add), ('update', self.plan.update), ('remove', self.plan.remove),
                            ('metadata of', self.plan.touch)):
            if found:
                lines.append(f'  {what} {len(found)}: {", ".join(idmap.sample(found))}')
        return {'prepared': '\n'.join(lines) + '\n'}

    def commands(self) -> list[str]:
        """What a student would type: the copy, then each owner shifted and the mode chown cleared put back."""
        start, gid = self.uid_start, self.gid_start
        shift = (f'u=$(stat -c %u "$f"); g=$(stat -c %g "$f"); m=$(stat -c %a "$f"); '
                 f'chown -h "$((u + {start})):$((g + {gid}))" "$f"; [ -L "$f" ] || chmod "$m" "$f"')
        if self.record:
            changed = self.plan.add + self.plan.update
            lines = [cmd.shell_join(['cp', '-a', '--no-target-directory', host_path(self.source, inner), host_path(self.dest, inner)])
                     for inner in changed[:5]]
            lines += [cmd.shell_join(['rm', '-rf', host_path(self.dest, inner)]) for inner in self.plan.remove[:5]]
            if len(changed) > 5 or len(self.plan.remove) > 5:
                lines.append(f'# ... {len(changed)} entries to copy and {len(self.plan.remove)} to remove in all')
            return lines
        return [cmd.shell_join(['mkdir', '-p', self.base]),
                cmd.shell_join(['cp', '-a', self.source, self.dest]),
                cmd.shell_join(['find', self.dest, '-depth', '-exec', 'sh', '-c', f'for f; do {shift}; done', 'sh', '{}', '+']),
                f'# chown drops file capabilities: set them again with setcap -n {start} (a revision 3 capability for '
                f'the container\'s root); the module shifts them itself']

    # The work.
    def apply(self) -> None:
        os.makedirs(self.base, mode=0o755, exist_ok=True)
        if os.path.lexists(self.staging):
            remove_tree(self.staging)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.record_path + '.tmp')
        entries = dict(self.entries)
        if not os.path.isdir(self.dest) or not self.complete or self.plan.changed:
            # Marked incomplete until the end: a killed run is completed by the next.
            write_record(self.record_path, dict(version=RECORD_VERSION, complete=False, source=self.source,
                                                entries={k: v.as_list() for k, v in self.record.items()}))
        os.mkdir(self.staging, 0o700)
        try:
            for inner in self.plan.remove:
                target = host_path(self.dest, inner)
                if os.path.isdir(target) and not os.path.islink(target):
                    remove_tree(target)
                elif os.path.lexists(target):
                    os.unlink(target)
            directories = []
            # In the inventory's order (a directory before its entries, the first path of an inode before its links).
            wanted = set(self.plan.add + self.plan.update)
            for inner in [path for path in entries if path in wanted]:
                self.put(inner, entries[inner])
                if entries[inner].kind == 'dir':
                    directories.append(inner)
            # Directories last, deepest first: their times after every rename into them.
            touched = set(directories) | set(self.plan.touch)
            for inner in self.plan.add + self.plan.update + self.plan.remove:
                parent = os.path.dirname(inner) or '.'
                if inner != '.' and parent in entries:
                    touched.add(parent)
            for inner in sorted(touched, key=lambda path: (-path.count('/') - (path != '.'), path)):
                self.set_metadata(host_path(self.dest, inner), host_path(self.source, inner), entries[inner])
        finally:
            if os.path.isdir(self.staging):
                remove_tree(self.staging)
        write_record(self.record_path, dict(version=RECORD_VERSION, complete=True, source=self.source,
                                            entries={k: v.as_list() for k, v in entries.items()}))

    def put(self, inner: str, entry) -> None:
        source_path, target = host_path(self.source, inner), host_path(self.dest, inner)
        if entry.kind == 'dir':
            if os.path.lexists(target) and (os.path.islink(target) or not os.path.isdir(target)):
                os.unlink(target)
            if not os.path.lexists(target):
                os.mkdir(target, 0o700)
            return
        temporary = os.path.join(self.staging, 'entry')
        if entry.link:
            os.link(host_path(self.dest, entry.link), temporary)
        else:
            if entry.kind == 'file':
                copy_content(source_path, temporary)
            elif entry.kind == 'symlink':
                os.symlink(os.readlink(source_path), temporary)
            else:
                os.mknod(temporary, 0o600 | TYPE_BITS[entry.kind], os.lstat(source_path).st_rdev)
            self.set_metadata(temporary, source_path, entry)
        if os.path.isdir(target) and not os.path.islink(target):
            remove_tree(target)
        os.rename(temporary, target)

    def set_metadata(self, target: str, source_path: str, entry) -> None:
        """Owner (shifted), then mode (chown cleared setuid/setgid), then xattrs (chown dropped capabilities), then times."""
        uid, gid = self.shifted(entry)
        os.chown(target, uid, gid, follow_symlinks=False)
        symlink = entry.kind == 'symlink'
        if not symlink:
            os.chmod(target, entry.mode)
        for name in _listxattr(source_path):
            try:
                value = os.getxattr(source_path, name, follow_symlinks=False)
                os.setxattr(target, name, idmap.shift_xattr(name, value, self.uid_start, self.gid_start, self.count),
                            follow_symlinks=False)
            except OSError as error:
                # A symbolic link takes no user.* attribute; a file system may lack one kind: the rest is copied.
                if error.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
                    raise
        info = os.lstat(source_path)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def _listxattr(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.ENODATA):
            return []
        raise


def copy_content(source_path: str, temporary: str) -> None:
    """The bytes of a file, read without changing its access time (O_NOATIME) and never through a link."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        source_fd = os.open(source_path, flags | getattr(os, 'O_NOATIME', 0))
    except PermissionError:
        source_fd = os.open(source_path, flags)
    try:
        target_fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(source_fd).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(target_fd, source_fd, offset, min(size - offset, 1 << 30))
                if sent == 0:
                    break
                offset += sent
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)


def remove_tree(top: str) -> None:
    """rm -rf --one-file-system: symbolic links removed, never followed; another file system mounted inside is refused."""
    device = os.lstat(top).st_dev
    for directory, subdirectories, files, directory_fd in os.fwalk(top, topdown=False, follow_symlinks=False):
        if os.fstat(directory_fd).st_dev != device:
            raise OSError(errno.EXDEV, f'{directory} is another file system mounted inside; left alone')
        for name in files:
            os.unlink(name, dir_fd=directory_fd)
        for name in subdirectories:
            if os.path.islink(os.path.join(directory, name)):
                os.unlink(name, dir_fd=directory_fd)
            else:
                os.rmdir(name, dir_fd=directory_fd)
    os.rmdir(top)


def mounted_problem(option: str, path: str) -> str | None:
    uses = mountinfo.uses_of_tree(paths.resolve(path))
    if not uses:
        return None
    where = ', '.join(f'{use.entry.mount_point} ({use.use} {use.directory})' for use in uses)
    return (f'{option} {path} is in use by a mount - {where}: changing it under a mounted overlay is undefined behaviour. '
            f'Unmount first (unboxed.lab.overlay_mount state=unmounted), then run again.')


def directory_actions(directories, uid: int, gid: int) -> list[dict]:
    actions = []
    for directory in directories:
        directory = paths.normalize(directory)
        if not os.path.lexists(directory):
            actions.append({'path': directory, 'action': 'create'})
        elif os.path.islink(directory) or not os.path.isdir(directory):
            actions.append({'path': directory, 'action': 'refuse'})
        else:
            info = os.lstat(directory)
            actions.append({'path': directory, 'action': 'none' if (info.st_uid, info.st_gid) == (uid, gid) else 'chown'})
    return actions


def account_summary(said: dict | None) -> dict | None:
    return None if said is None else {key: said[key] for key in ('name', 'changed', 'created', 'commands')}


class Shift:
    """The shifted copies of one remap user's layers (and the account with ``create_user``): read the seat -> plan
    everything -> apply only the difference (not in check mode) -> return the result.

    ``params`` has layer_remap's keys (argument_spec(); a missing one, or one given as None, counts at its default;
    ``user`` and ``src`` must be given). ``prefix`` and ``names`` say how the caller names layer_remap's options in
    messages (option_namer). ``run()`` returns layer_remap's result dict: changed, uid_start, gid_start, count (the
    mapped root and its range), copies (one per src, in src's order: ``dest`` is the shifted layer), directories,
    account, newuidmap, commands, diff. It raises ShiftError, never fail_json.
    """

    def __init__(self, module, params, prefix: str = '', names: dict | None = None):
        self.module = module
        self.params = with_defaults(params)
        self.prefix = prefix
        self.names = names
        self.option = option_namer(prefix, names)
        self.note = f'{prefix.rstrip(".") or "unboxed.lab.layer_remap"} state={self.params["state"]}'

    def fail(self, msg: str, **result):
        raise ShiftError(msg, result)

    def run(self) -> dict:
        problems = request_problems(self.params, self.prefix, self.names)
        if problems:
            self.fail(' '.join(problems), problems=problems, changed=False)
        params = self.params
        # The account's lock first, then the copies' (remap_account takes the first only): no two runs wait on each other.
        account_lock = remap_user.locked(self.module, params['lock_timeout'], self.note) \
            if params['create_user'] else contextlib.nullcontext()
        try:
            with account_lock:
                return self.absent() if params['state'] == 'absent' else self.present()
        except remap_user.AccountError as error:
            raise ShiftError(error.msg, error.result) from error

    @contextlib.contextmanager
    def locked(self, copies):
        if self.module.check_mode:
            yield
            return
        try:
            with contextlib.ExitStack() as stack:
                for copy_ in copies:
                    stack.enter_context(locking.exclusive('layer', paths.resolve(copy_.dest), timeout=self.params['lock_timeout'],
                                                          note=self.note))
                yield
        except locking.LockTimeout as error:
            self.fail(locking.timeout_message('a shifted copy', error), changed=False)

    def account_and_range(self):
        """(account plan or None, uid line, gid line): with create_user the account as this run makes it (check mode
        predicts from the same plan); without, the user's ranges as the seat has them."""
        params = self.params
        name = params['user']
        if params['create_user']:
            account = remap_user.plan_present(name, option=self.option('user'))
            lines = account.first_lines()
            problem = range_problem(name, lines['subuid'], lines['subgid'], self.option)
            if problem:
                self.fail(problem, changed=False)
            return account, lines['subuid'], lines['subgid']
        uid_line, gid_line, problem = user_range(name, self.option)
        if problem and self.module.check_mode:
            predicted = predicted_range(name, self.option)
            if predicted is not None:
                uid_line, gid_line = predicted
                problem = None
                self.module.warn(f'{self.option("user")}: {name} or its ranges do not exist yet: check mode assumes an earlier '
                                 f'task of this run (unboxed.lab.remap_account) makes them, with the range '
                                 f'{uid_line.start}-{uid_line.end - 1} it would choose.')
        if problem:
            self.fail(problem, changed=False)
        return None, uid_line, gid_line

    def present(self) -> dict:
        module, params = self.module, self.params
        account, uid_line, gid_line = self.account_and_range()
        base = os.path.join(paths.normalize(params['root']), f'{uid_line.start}.{gid_line.start}')
        copies = [Copy(paths.normalize(source), base, uid_line, gid_line, predict_missing=module.check_mode)
                  for source in params['src']]
        missing = [copy_.source for copy_ in copies if module.check_mode and not os.path.lexists(copy_.source)]
        if missing:
            module.warn(f'{self.option("src")} {", ".join(missing)} does not exist: check mode assumes an earlier task of '
                        f'this run makes it and predicts a whole copy; a real run fails if it is still missing.')
        account_commands = account.commands() if account is not None else []
        result = dict(uid_start=uid_line.start, gid_start=gid_line.start, count=uid_line.count, copies=[], directories=[],
                      commands=[], account=account_summary(remap_user.present_result(module, account) if account else None),
                      newuidmap=remap_user.newuidmap_installed(module))
        with self.locked(copies):
            problems = [problem for copy_ in copies for problem in copy_.problems()]
            actions = directory_actions(params['directories'], uid_line.start, gid_line.start)
            problems += [f'{self.option("directories")}: {action["path"]} exists and is not a directory.' for action in actions
                         if action['action'] == 'refuse']
            if problems:
                self.fail(' '.join(problems), problems=problems, changed=False, **result)
            for copy_ in copies:
                if copy_.changed and os.path.isdir(copy_.dest):
                    problem = mounted_problem(f'{self.option("src")} copy', copy_.dest)
                    if problem:
                        # As Docker keeps a running container's layers as they were: a copy a mounted overlay uses is
                        # left as it is (changing it there is undefined behaviour) and copied again once unmounted.
                        module.warn(f'{copy_.source} changed since it was copied, but {problem} It is left as it is; '
                                    f'the next run after the overlay is unmounted (reset.yml --tags userns) copies it again.')
                        copy_.plan = idmap.plan({}, {}, [])
                        copy_.leftovers, copy_.complete = False, True
            result['copies'] = [copy_.summary() for copy_ in copies]
            result['directories'] = actions
            result['commands'] = account_commands + [line for copy_ in copies for line in copy_.commands() if copy_.changed]
            result['commands'] += [cmd.shell_join(['install', '-d', '-o', str(uid_line.start), '-g', str(gid_line.start), '-m', '0755',
                                                   action['path']]) for action in actions if action['action'] != 'none']
            result['diff'] = ([account.diff()] if account is not None and account.changed else []) + \
                [copy_.diff() for copy_ in copies if copy_.changed]
            changed = any(copy_.changed for copy_ in copies) or any(action['action'] != 'none' for action in actions) or \
                (account is not None and account.changed)
            if module.check_mode or not changed:
                return dict(changed=changed, **result)
            if account is not None and account.changed:
                # Everything planned before the first change: a bad source or a copy not ours left the seat as it was.
                remap_user.apply_present(module, account)
            for copy_ in copies:
                if not copy_.changed:
                    continue
                try:
                    copy_.apply()
                except OSError as error:
                    where = f' ({error.filename})' if error.filename else ''
                    self.fail(f'Could not copy {copy_.source} to {copy_.dest}: {error.strerror or error}{where}. '
                              f'The record stays marked incomplete; run again to complete the copy.', **dict(result, changed=True))
            for action in actions:
                try:
                    if action['action'] == 'create':
                        for directory in paths.missing_directories(action['path']):
                            os.mkdir(directory, 0o755)
                    if action['action'] != 'none':
                        os.chown(action['path'], uid_line.start, gid_line.start)
                        os.chmod(action['path'], 0o755)
                except OSError as error:
                    self.fail(f'Could not make {self.option("directories")} {action["path"]}: {error.strerror or error}.',
                              **dict(result, changed=True))
        return dict(result, changed=True)

    def absent(self) -> dict:
        """The copies this module made and the directories; with create_user then the account, as far as this
        collection made it (remap_account state=absent, the same code)."""
        result = self.absent_copies()
        if not self.params['create_user']:
            return result
        try:
            account = remap_user.absent(self.module, self.params['user'])
        except remap_user.AccountError as error:
            # The copies are gone already: say so beside the account's failure.
            raise ShiftError(error.msg, {**error.result, 'copies': result['copies'], 'directories': result['directories'],
                                         'changed': result['changed'] or error.result.get('changed', False)}) from error
        result['account'] = account_summary(account)
        result['commands'] = result['commands'] + account['commands']
        if account['changed']:
            result['diff'] = [result['diff'], account['diff']]
        result['changed'] = result['changed'] or account['changed']
        return result

    def absent_copies(self) -> dict:
        module, params = self.module, self.params
        uid_line, gid_line, _problem = user_range(params['user'], self.option)
        root = paths.normalize(params['root'])
        names = [os.path.basename(paths.normalize(source)) for source in params['src']]
        if uid_line is not None:
            bases = [os.path.join(root, f'{uid_line.start}.{gid_line.start}')]
        else:
            bases = sorted(os.path.join(root, name) for name in (os.listdir(root) if os.path.isdir(root) else [])
                           if all(part.isdigit() for part in name.split('.')) and name.count('.') == 1)
        targets = []
        for base in bases:
            for name in names:
                record = os.path.join(base, f'.{name}{RECORD_SUFFIX}')
                if os.path.exists(record):
                    targets.append((os.path.join(base, name), record, os.path.join(base, f'.{name}{STAGING_SUFFIX}')))
        directories = [paths.normalize(directory) for directory in params['directories'] if os.path.lexists(directory)]
        result = dict(uid_start=uid_line.start if uid_line else None, gid_start=gid_line.start if gid_line else None,
                      count=uid_line.count if uid_line else None,
                      copies=[{'dest': dest, 'action': 'remove'} for dest, _record, _staging in targets],
                      directories=[{'path': directory, 'action': 'remove'} for directory in directories],
                      commands=[cmd.shell_join(['rm', '-rf', '--one-file-system', path]) for path in
                                [dest for dest, _record, _staging in targets] + directories],
                      account=None, newuidmap=remap_user.newuidmap_installed(module))
        problems = [problem for problem in
                    [mounted_problem('copy', dest) for dest, _record, _staging in targets if os.path.lexists(dest)] +
                    [mounted_problem(self.option('directories'), directory) for directory in directories] +
                    [paths.symbolic_link_problem(self.option('directories'), directory) for directory in directories] if problem]
        if problems and not module.check_mode:
            self.fail(' '.join(problems), problems=problems, changed=False, **result)
        changed = bool(targets or directories)
        result['diff'] = {'before': {'paths': [dest for dest, _r, _s in targets] + directories}, 'after': {'paths': []}}
        if module.check_mode or not changed:
            return dict(changed=changed, **result)
        try:
            for dest, record, staging in targets:
                for path in (dest, staging):
                    if os.path.isdir(path) and not os.path.islink(path):
                        remove_tree(path)
                    elif os.path.lexists(path):
                        os.unlink(path)
                os.unlink(record)
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(dest))     # the UID.GID directory, once empty
            for directory in directories:
                if os.path.isdir(directory) and not os.path.islink(directory):
                    remove_tree(directory)
                elif os.path.lexists(directory):       # gone already when a directory above it was listed first
                    os.unlink(directory)
        except OSError as error:
            self.fail(f'Could not remove {error.filename}: {error.strerror or error}.', **dict(result, changed=True))
        return dict(result, changed=True)
