# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The remap user and its subordinate ID ranges, as ``dockerd --userns-remap=default`` makes ``dockremap``.

One implementation for the two modules that make the account: ``remap_account`` (the account alone) and
``layer_remap`` with ``create_user`` (the account in the same run as the shifted copies, as dockerd makes dockremap
when it starts). The shape: ``plan_present()`` reads the seat and decides (nothing written: check mode predicts from
the same plan), ``apply_present()`` does it, ``present_result()`` says it; ``absent()`` removes what the record says
this collection made. Errors raise ``AccountError`` (never ``fail_json``), so that each module reports them with its
own context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import locking

FILES = {'subuid': '/etc/subuid', 'subgid': '/etc/subgid'}
RECORD_DIR = '/var/lib/unboxed/remap'
# As dockerd's user creation for dockremap: a system user with its own group, no home, no login.
USERADD_OPTIONS = ('--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin')
SBIN = ['/usr/sbin', '/sbin']


class AccountError(Exception):
    """A failure to report with ``msg``; ``result`` holds what is known (and ``changed`` when something was done)."""

    def __init__(self, msg: str, **result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


def name_problems(option: str, name) -> list[str]:
    """A user name useradd takes, and not root: the point of the remap is a root inside that is nobody outside."""
    problem = idmap.name_problem(option, name)
    if problem:
        return [problem]
    if name in ('root', '0'):
        return [f'{option} must not be root: the point of the remap is a root inside that is nobody outside.']
    return []


def range_problems(count: int, first: int) -> list[str]:
    problems = []
    if not 1 <= count <= idmap.MAX_ID:
        problems.append(f'count must be between 1 and {idmap.MAX_ID}, got {count}.')
    if not 1 <= first <= idmap.MAX_ID:
        problems.append(f'first must be an ID of 1 or more, got {first} (0 is the host\'s root).')
    return problems


def read_text(path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='surrogateescape') as handle:
            return handle.read()
    except FileNotFoundError:
        return ''


def write_text(path: str, text: str) -> None:
    """The whole file anew through a temporary file and a rename; mode and owner as they were (0644 root for a new one)."""
    try:
        info = os.stat(path)
        mode, uid, gid = info.st_mode & 0o7777, info.st_uid, info.st_gid
    except FileNotFoundError:
        mode, uid, gid = 0o644, 0, 0
    temporary = f'{path}.unboxed-tmp'
    with open(temporary, 'w', encoding='utf-8', errors='surrogateescape') as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chown(temporary, uid, gid)
    os.chmod(temporary, mode)
    os.rename(temporary, path)


def record_path(name: str) -> str:
    return os.path.join(RECORD_DIR, f'{name}.account.json')


def read_record(name: str) -> dict:
    try:
        with open(record_path(name), encoding='utf-8') as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def write_record(name: str, record: dict) -> None:
    os.makedirs(RECORD_DIR, mode=0o755, exist_ok=True)
    temporary = record_path(name) + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as handle:
        json.dump(record, handle)
    os.rename(temporary, record_path(name))


def user_uid(name: str):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def newuidmap_installed(module) -> bool:
    return all(module.get_bin_path(program, opt_dirs=['/usr/bin', '/usr/sbin']) for program in ('newuidmap', 'newgidmap'))


@contextlib.contextmanager
def locked(module, timeout: int, note: str):
    """The ranges are read, compared and changed under one lock in a real run; check mode takes none."""
    if module.check_mode:
        yield
        return
    try:
        with locking.exclusive('account', FILES['subuid'], timeout=timeout, note=note):
            yield
    except locking.LockTimeout as error:
        raise AccountError(locking.timeout_message(f'the ranges of {FILES["subuid"]}', error), changed=False) from error


@dataclasses.dataclass
class AccountPlan:
    """What the seat has of the account and what ``present`` adds: the user when ``uid`` is None, and a line for each
    file whose ``wanted`` is not None."""

    name: str
    uid: int | None
    texts: dict
    wanted: dict
    record: dict

    @property
    def create_user(self) -> bool:
        return self.uid is None

    @property
    def changed(self) -> bool:
        return self.create_user or any(self.wanted.values())

    def before(self) -> dict:
        return {key: [line.text for line in idmap.ranges_of(idmap.parse_subid(text)[0], self.name, self.uid)]
                for key, text in self.texts.items()}

    def after(self) -> dict:
        before = self.before()
        return {key: before[key] + ([self.wanted[key]] if self.wanted[key] else []) for key in FILES}

    def first_lines(self) -> dict:
        """{'subuid': SubidLine, 'subgid': SubidLine}: the user's first range in each file once the plan is done (the
        line the file has, with its number, or the line the plan adds)."""
        found = {key: idmap.first_range(idmap.parse_subid(text)[0], self.name, self.uid) for key, text in self.texts.items()}
        return {key: found[key] or idmap.parse_subid(self.wanted[key])[0][0] for key in FILES}

    def commands(self) -> list[str]:
        commands = [cmd.shell_join(['useradd', *USERADD_OPTIONS, self.name])] if self.create_user else []
        return commands + [f'echo {line} >> {FILES[key]}' for key, line in self.wanted.items() if line]

    def diff(self) -> dict:
        return {'before': {'user': 'absent' if self.create_user else 'present', **self.before()},
                'after': {'user': 'present', **self.after()}}

    def created(self) -> dict:
        """What the record says this collection made, with what this plan adds."""
        created = dict(user=bool(self.record.get('user')), subuid=self.record.get('subuid'), subgid=self.record.get('subgid'))
        if self.create_user:
            created['user'] = True
        created.update({key: line for key, line in self.wanted.items() if line})
        return created


def plan_present(name: str, count: int = idmap.DEFAULT_COUNT, first: int = idmap.DEFAULT_FIRST,
                 option: str = 'count') -> AccountPlan:
    """Read the user and both files and decide; writes nothing. A user with a range keeps it; a missing line goes at
    the lowest start from ``first`` free in both files (idmap.planned_lines). ``option`` names the option an
    exhausted ID space is blamed on."""
    uid = user_uid(name)
    texts = {key: read_text(path) for key, path in FILES.items()}
    try:
        wanted = idmap.planned_lines(name, uid, texts, count, first)
    except ValueError as error:
        raise AccountError(f'{option}: {error} in {FILES["subuid"]} and {FILES["subgid"]} for {name}; choose a smaller '
                           f'count or first.', changed=False) from error
    return AccountPlan(name, uid, texts, wanted, read_record(name))


def apply_present(module, plan: AccountPlan) -> None:
    """The user first (its record at once, so that absent can take it back even if a line fails), then the lines."""
    created = dict(user=bool(plan.record.get('user')), subuid=plan.record.get('subuid'), subgid=plan.record.get('subgid'))

    def fail(msg, **result):
        raise AccountError(msg, changed=False, **result)

    if plan.create_user:
        useradd = module.get_bin_path('useradd', required=True, opt_dirs=SBIN)
        cmd.run_checked(module, [useradd, *USERADD_OPTIONS, plan.name], f'create the user {plan.name}', fail=fail)
        created['user'] = True
        write_record(plan.name, created)
    try:
        for key, line in plan.wanted.items():
            if line:
                text = read_text(FILES[key])
                write_text(FILES[key], text + ('' if not text or text.endswith('\n') else '\n') + line + '\n')
                created[key] = line
    except OSError as error:
        raise AccountError(f'Could not add the range of {plan.name} to {error.filename}: {error.strerror or error}.',
                           changed=plan.create_user) from error
    finally:
        if plan.changed:
            write_record(plan.name, created)


def present_result(module, plan: AccountPlan) -> dict:
    first_lines = plan.first_lines()
    return dict(changed=plan.changed, name=plan.name, uid_start=first_lines['subuid'].start,
                gid_start=first_lines['subgid'].start, count=first_lines['subuid'].count, created=plan.created(),
                commands=plan.commands(), newuidmap=newuidmap_installed(module), diff=plan.diff())


def present(module, name: str, count: int = idmap.DEFAULT_COUNT, first: int = idmap.DEFAULT_FIRST,
            option: str = 'count') -> dict:
    """The account as remap_account's state=present makes it: planned, applied unless check mode, and its result."""
    plan = plan_present(name, count, first, option)
    if plan.changed and not module.check_mode:
        apply_present(module, plan)
    return present_result(module, plan)


def absent(module, name: str) -> dict:
    """Remove the lines and the user this collection made (the record says which); nothing that was there before.
    Applied unless check mode; a user still running processes cannot be removed (AccountError)."""
    record = read_record(name)
    uid = user_uid(name)
    commands, before, after = [], {}, {}
    texts = {key: read_text(path) for key, path in FILES.items()}
    new_texts = {}
    for key, path in FILES.items():
        line = record.get(key)
        kept = [raw for raw in texts[key].splitlines() if raw.strip() != line] if line else texts[key].splitlines()
        if line and len(kept) != len(texts[key].splitlines()):
            new_texts[key] = '\n'.join(kept) + ('\n' if kept else '')
            commands.append(cmd.shell_join(['sed', '-i', f'/^{line}$/d', path]))
            before[key], after[key] = [line], []
    remove_user = bool(record.get('user')) and uid is not None
    if remove_user:
        commands.append(cmd.shell_join(['userdel', name]))
        before['user'], after['user'] = 'present', 'absent'
    changed = bool(new_texts) or remove_user or bool(record)
    result = dict(changed=changed, name=name, uid_start=None, gid_start=None, count=None,
                  created=dict(user=False, subuid=None, subgid=None), commands=commands,
                  newuidmap=newuidmap_installed(module), diff={'before': before, 'after': after})
    if module.check_mode or not changed:
        return result

    def fail(msg, **details):
        raise AccountError(msg, **{**result, 'changed': False, **details})

    if remove_user:
        userdel = module.get_bin_path('userdel', required=True, opt_dirs=SBIN)
        cmd.run_checked(module, [userdel, name], f'remove the user {name} (stop the containers that run as it first)', fail=fail)
    try:
        for key, text in new_texts.items():
            write_text(FILES[key], text)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path(name))
    except OSError as error:
        raise AccountError(f'Could not remove the range of {name} from {error.filename}: {error.strerror or error}.',
                           **{**result, 'changed': remove_user}) from error
    return result
