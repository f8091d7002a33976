# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of unboxed.lab.layer: a layer from an archive on the controller, sent only when the host needs it.

As ansible.builtin.copy's action does for a file: the module runs once on the host with the archive's checksum and
answers from the layer's record - one round trip when the layer is already there (every rerun). Only when the
record differs and the host keeps no copy with that checksum does this plugin send the archive, then run the module
again to unpack it. The checksum is read from ARCHIVE.sha256 beside the archive (written once, when the archive is
built) or computed here, never on every host.
"""

from __future__ import annotations

import hashlib
import os

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

MODULE = 'unboxed.lab.layer'


def checksum_beside(archive: str) -> str:
    """The first word of ARCHIVE.sha256 (as sha256sum writes it), or '' when there is no such file."""
    try:
        with open(f'{archive}.sha256', encoding='utf-8') as handle:
            words = handle.read().split()
    except FileNotFoundError:
        return ''
    return words[0].lower() if words else ''


def compute_checksum(archive: str) -> str:
    digest = hashlib.sha256()
    with open(archive, 'rb') as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b''):
            digest.update(block)
    return digest.hexdigest()


class ActionModule(ActionBase):

    # False, although it may send the archive: True would make every task of the module - a rerun's, a layer of files -
    # create and remove a temporary directory on the host first, three round trips more. run() makes one only for a
    # transfer.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module_args = dict(self._task.args)
        if not module_args.get('archive') or module_args.get('remote_src') or module_args.get('state', 'present') != 'present':
            result.update(self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars))
            return result

        try:
            source = self._find_needle('files', module_args['archive'])
        except AnsibleError:
            source = None
        if source is None or not os.path.isfile(source):
            if self._task.check_mode:
                # A --check run on a controller that has not built the archive yet: whatever the build makes differs
                # from what the host holds, so the unpack is predicted without asking the host.
                result.update(changed=True, path=module_args.get('path'), transferred=False,
                              msg=f'archive {module_args["archive"]} is not on the controller yet; check mode assumes an '
                                  f'earlier task of this run builds it, and the layer would be unpacked from it.')
                return result
            result.update(failed=True, changed=False,
                          msg=f'archive: {module_args["archive"]} was not found on the controller (with remote_src=false '
                              f'the archive is a file of the controller, sent to the host when needed).')
            return result
        if not module_args.get('checksum'):
            try:
                module_args['checksum'] = checksum_beside(source) or compute_checksum(source)
            except OSError as error:
                result.update(failed=True, changed=False, msg=f'archive: cannot read {source}: {error}')
                return result
        module_args['archive'] = source

        asked = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        if not asked.pop('needs_transfer', False) or asked.get('failed'):
            result.update(asked)
            return result

        tmpdir = self._make_tmp_path()
        try:
            remote = self._connection._shell.join_path(tmpdir, os.path.basename(source))
            self._transfer_file(source, remote)
            self._fixup_perms2((tmpdir, remote))
            module_args.update(archive=remote, remote_src=True, archive_name=module_args.get('archive_name') or os.path.basename(source))
            result.update(self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars))
            result['transferred'] = True
        finally:
            self._remove_tmp_path(tmpdir)
        return result
