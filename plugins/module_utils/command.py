# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running argv lists and rendering the equivalent shell command a student would type.

Commands always run as argv lists (never a shell string built from input), with the C locale, so that
the messages of mount, umount, unshare... reach the student in the words the manuals and the kernel use.
Every module runs its commands through this file: ``run_checked`` where a failure ends the task,
``run`` where the caller handles a failure itself. The rendered ``command`` string that modules
return is for reading and copying only.
"""

from __future__ import annotations

import shlex

C_LOCALE = {'LC_ALL': 'C', 'LANG': 'C'}


def shell_join(argv) -> str:
    """The argv as a student would type it in a shell, quoted where needed."""
    return shlex.join(str(arg) for arg in argv)


def run(module, argv, **kwargs):
    """Run argv with the C locale and return (rc, stdout, stderr); the caller decides what a failure means."""
    return module.run_command([str(arg) for arg in argv], environ_update=dict(C_LOCALE), **kwargs)


def failure_detail(rc: int, stdout: str, stderr: str) -> str:
    """What a failed command said, or its exit code when it said nothing."""
    return (stderr or stdout).strip() or f'exit code {rc}'


def run_checked(module, argv, what: str, explain=None, fail=None, **kwargs):
    """Run argv with the C locale; on failure fail with what was attempted and the command's own words.

    ``what`` completes the sentence "Could not ...", e.g. "mount the overlay at /overlay/merged".
    ``explain()``, called only on failure, returns a further sentence (who holds a mount, what the kernel logged).
    ``fail(msg=..., **result)`` replaces ``module.fail_json`` for a caller that must undo something first.
    """
    rc, stdout, stderr = run(module, argv, **kwargs)
    if rc != 0:
        msg = f'Could not {what}: {failure_detail(rc, stdout, stderr)}'
        extra = explain() if explain else None
        if extra:
            msg = f'{msg.rstrip(".")}. {extra}'
        (fail or module.fail_json)(msg=msg, cmd=shell_join(argv), rc=rc, stdout=stdout, stderr=stderr)
    return stdout
