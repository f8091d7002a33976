# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of unboxed.lab.image_build: read the Dockerfile and the files COPY needs on the controller.

The Dockerfile and its build context live with the playbook (a role's files/), the layers on the host. This
plugin parses the Dockerfile here, so that a Dockerfile that does not parse or a COPY source that leaves the
context fails before anything reaches the host, then runs the module once with the text and the files.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.unboxed.lab.plugins.module_utils import build_context
from ansible_collections.unboxed.lab.plugins.module_utils import dockerfile


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('src', 'context_dir', 'dockerfile', 'context', 'name', 'build_args', 'base_images',
                             'base_dir', 'store', 'state', 'lock_timeout'))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module_args = dict(self._task.args)
        src = module_args.pop('src', None)
        context_dir = module_args.pop('context_dir', None)
        if src is not None and module_args.get('dockerfile') is not None:
            return dict(result, failed=True, msg='src and dockerfile are mutually exclusive: give the Dockerfile as a '
                                                 'file (src) or as text (dockerfile).')
        if src is not None:
            try:
                found = self._find_needle('files', src)
            except AnsibleError as error:
                return dict(result, failed=True, msg=f'src: the Dockerfile {src} was not found on the controller: {error}')
            try:
                with open(found, 'rb') as handle:
                    module_args['dockerfile'] = to_text(handle.read(), errors='surrogate_or_strict')
            except (OSError, UnicodeError) as error:
                return dict(result, failed=True, msg=f'src: cannot read the Dockerfile {found}: {error}')
            context_dir = context_dir or os.path.dirname(found)
        if module_args.get('state', 'present') == 'present' and module_args.get('dockerfile'):
            try:
                parsed = dockerfile.parse(module_args['dockerfile'])
                build_args = {str(key): str(value) for key, value in (module_args.get('build_args') or {}).items()}
                planned = dockerfile.plan(parsed, build_args, None)
                copy_steps = [step for step in planned.steps if step.kind == 'copy']
                if copy_steps and not context_dir:
                    raise dockerfile.DockerfileError('COPY needs a build context: give src (its directory is the '
                                                     'context) or context_dir.', copy_steps[0].instruction.line)
                if copy_steps:
                    module_args['context'] = build_context.gather(context_dir, copy_steps)
            except dockerfile.DockerfileError as error:
                return dict(result, failed=True, changed=False, msg=str(error), line=error.line, column=error.column)
            except OSError as error:
                return dict(result, failed=True, changed=False,
                            msg=f'context_dir: cannot read the build context {context_dir}: {error}')
        result.update(self._execute_module(module_name='unboxed.lab.image_build', module_args=module_args,
                                           task_vars=task_vars))
        return result
