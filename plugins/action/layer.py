# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of unboxed.lab.layer: a layer from an archive on the controller, sent only when the host needs it.

As ansible.builtin.copy's action does for a file: the module runs once on the host with the archive's checksum and
answers from the layer's record - one round trip when the layer is already there (every rerun). Only when the
record differs and the host keeps no copy with that checksum does this plugin send the archive, then run the module
again to unpack it. The checksum is read from ARCHIVE.sha256 beside the archive (written once, when the archive is
built) or computed here, never on every host.

With ``layers`` (an image: several layers in one task) the same holds for every layer at once: one module run answers
for all of them, and only the archives it names as missing are sent, before one more run.
"""

from __future__ import annotations

import hashlib
import os
import re

from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
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


def from_controller(spec, state) -> bool:
    """Whether a layer's archive is a file of the controller, for this plugin to find (and send when needed)."""
    if state != 'present' or not isinstance(spec, dict) or not spec.get('archive') or not isinstance(spec['archive'], str):
        return False
    try:
        return not boolean(spec.get('remote_src', False), strict=True)
    except TypeError:
        return False        # the module names the wrong value


def renumber(value, sent):
    """The module's layers[K] are the K-th layer it was sent; ``sent`` maps them back to the task's own numbers
    (a layer that check mode predicted here was not sent)."""
    if isinstance(value, str):
        return re.sub(r'\blayers\[(\d+)\]', lambda found: f'layers[{sent[int(found[1])]}]' if int(found[1]) < len(sent)
                      else found[0], value)
    if isinstance(value, list):
        return [renumber(item, sent) for item in value]
    return value


def renumber_messages(result, sent):
    """``result``'s msg and problems with the module's layers[K] renumbered as the task's (see renumber); returns it."""
    for key in ('msg', 'problems'):
        if key in result:
            result[key] = renumber(result[key], sent)
    return result


class ActionModule(ActionBase):

    # False, although it may send the archive: True would make every task of the module - a rerun's, a layer of files -
    # create and remove a temporary directory on the host first, three round trips more. run() makes one only for a
    # transfer.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module_args = dict(self._task.args)
        if module_args.get('layers') is not None:
            result.update(self._run_layers(module_args, task_vars))
            return result
        if not from_controller(module_args, module_args.get('state', 'present')):
            result.update(self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars))
            return result

        found = self._archive_on_controller(module_args, 'archive')
        if found == 'predicted':
            # A --check run on a controller that has not built the archive yet: whatever the build makes differs
            # from what the host holds, so the unpack is predicted without asking the host.
            result.update(self._predicted(module_args))
            return result
        if found is not None:
            result.update(failed=True, changed=False, msg=found)
            return result

        asked = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        if not asked.pop('needs_transfer', False) or asked.get('failed'):
            result.update(asked)
            return result
        result.update(self._send_and_run(module_args, [module_args], task_vars))
        result['transferred'] = True
        return result

    def _archive_on_controller(self, spec, option):
        """Completes ``spec`` with the archive's path and checksum on the controller; returns None when done,
        'predicted' when the archive is missing in check mode, else the message of the failure."""
        try:
            source = self._find_needle('files', spec['archive'])
        except AnsibleError:
            source = None
        if source is None or not os.path.isfile(source):
            if self._task.check_mode:
                return 'predicted'
            return (f'{option}: {spec["archive"]} was not found on the controller (with remote_src=false the archive is a '
                    f'file of the controller, sent to the host when needed).')
        if not spec.get('checksum'):
            try:
                spec['checksum'] = checksum_beside(source) or compute_checksum(source)
            except OSError as error:
                return f'{option}: cannot read {source}: {error}'
        spec['archive'] = source
        return None

    @staticmethod
    def _predicted(spec):
        return dict(changed=True, path=spec.get('path'), transferred=False,
                    msg=f'archive {spec["archive"]} is not on the controller yet; check mode assumes an earlier task of '
                        f'this run builds it, and the layer would be unpacked from it.')

    def _send_and_run(self, module_args, specs, task_vars):
        """Sends the archive of each of ``specs`` (each file once) into a temporary directory on the host, points the
        specs at the copies, and runs the module again."""
        tmpdir = self._make_tmp_path()
        try:
            sent = {}
            for spec in specs:
                source = spec['archive']
                if source not in sent:
                    sent[source] = self._connection._shell.join_path(tmpdir, f'{len(sent)}-{os.path.basename(source)}')
                    self._transfer_file(source, sent[source])
                spec.update(archive=sent[source], remote_src=True, archive_name=spec.get('archive_name') or os.path.basename(source))
            self._fixup_perms2([tmpdir] + list(sent.values()))
            return self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        finally:
            self._remove_tmp_path(tmpdir)

    def _run_layers(self, module_args, task_vars):
        """O(layers): the archives of the controller found and their checksums read here; one module run for every
        layer; only when it names layers whose archive the host lacks, those archives sent and one run more."""
        layers = module_args['layers']
        if not isinstance(layers, list):
            return self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        state = module_args.get('state', 'present')
        specs = [dict(spec) if isinstance(spec, dict) else spec for spec in layers]
        predicted = {}
        for index, spec in enumerate(specs):
            if not from_controller(spec, state):
                continue
            found = self._archive_on_controller(spec, f'layers[{index}].archive')
            if found == 'predicted':
                predicted[index] = dict(self._predicted(spec), actions=[f'unpack {os.path.basename(spec["archive"])} into '
                                                                        f'{spec.get("path")}'])
            elif found is not None:
                return dict(failed=True, changed=False, msg=found)
        sent = [index for index in range(len(specs)) if index not in predicted]
        if not sent:
            asked = dict(changed=False, layers=[], actions=[])
        else:
            module_args['layers'] = [specs[index] for index in sent]
            asked = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        if asked.get('failed'):
            return renumber_messages(asked, sent)
        transfers = [sent[index] for index in asked.pop('needs_transfer', [])]
        if transfers:
            asked = self._send_and_run(module_args, [specs[index] for index in transfers], task_vars)
            asked.pop('needs_transfer', None)
            for index in transfers:
                if sent.index(index) < len(asked.get('layers', [])):
                    asked['layers'][sent.index(index)]['transferred'] = True
            asked['transferred'] = True
        renumber_messages(asked, sent)
        if predicted and not asked.get('failed'):
            merged = dict(zip(sent, asked.get('layers', [])))
            merged.update(predicted)
            asked['layers'] = [merged[index] for index in sorted(merged)]
            asked['actions'] = [action for layer in asked['layers'] for action in layer.get('actions', [])]
            asked['changed'] = True
            asked['transferred'] = any(layer.get('transferred') for layer in asked['layers'])
            asked['msg'] = ' '.join(layer['msg'] for layer in predicted.values())
        return asked
