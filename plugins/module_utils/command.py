# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running argv lists and rendering the equivalent shell command a student would type.

Commands always run as argv lists (never a shell string built from input). The rendered
``command`` string that modules return is for reading and copying only.
"""

from __future__ import annotations

import shlex


def shell_join(argv) -> str:
    """The argv as a student would type it in a shell, quoted where needed."""
    return shlex.join(str(arg) for arg in argv)


def run_checked(module, argv, what: str, **kwargs):
    """Run argv with the C locale; on failure fail_json with what was attempted and the kernel's words.

    ``what`` completes the sentence "Could not ...", e.g. "mount the overlay at /overlay/merged".
    """
    rc, stdout, stderr = module.run_command(
        [str(arg) for arg in argv],
        environ_update={'LC_ALL': 'C', 'LANG': 'C'},
        **kwargs,
    )
    if rc != 0:
        detail = (stderr or stdout).strip() or f'exit code {rc}'
        module.fail_json(
            msg=f'Could not {what}: {detail}',
            cmd=shell_join(argv), rc=rc, stdout=stdout, stderr=stderr,
        )
    return stdout


def as_opt_val(option: str, value) -> list:
    """``('--hostname', 'web')`` -> ``['--hostname=web']``; None gives nothing."""
    return [] if value is None else [f'{option}={value}']


def as_flags(flags, prefix: str = '--') -> list:
    """``['pid', 'net']`` -> ``['--pid', '--net']``."""
    return [f'{prefix}{flag}' for flag in flags]
