# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The environment a process started inside a root file system gets: a clean one, as Docker gives,
never the Ansible module's own. Shared by chroot_exec and ns_container."""

from __future__ import annotations

import json
import re

# The PATH a freshly started container or chroot gets, as Docker sets it for Debian images.
DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# Matched with fullmatch: `$` would also accept a name followed by a newline.
ENV_NAME_PATTERN = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


def env_name_problems(option: str, env) -> list[str]:
    """One message per variable name a shell could not export."""
    # json.dumps: the name in double quotes, a newline in it shown as \n.
    return [f'{option} has the variable name {json.dumps(str(key), ensure_ascii=False)}, which is not a valid name '
            f'(letters, digits and _, not starting with a digit).'
            for key in (env or {}) if not ENV_NAME_PATTERN.fullmatch(str(key))]


def clean_environment(extra) -> dict:
    """PATH and HOME as in a Debian container image, then the user's variables (PATH may be replaced)."""
    environment = {'PATH': DEFAULT_PATH, 'HOME': '/root'}
    environment.update({str(key): str(value) for key, value in (extra or {}).items()})
    return environment
