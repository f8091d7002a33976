# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: write every task result, whole (diff included), to a JSON lines file."""

from __future__ import annotations

DOCUMENTATION = r"""
name: record_results
type: aggregate
short_description: Record whole task results for the system tests
description:
  - Appends one JSON object per task result to the file named by E(UNBOXED_RECORD_RESULTS).
  - Unlike the tree callback it keeps the C(diff) key, which the tests assert on.
requirements:
  - the environment variable E(UNBOXED_RECORD_RESULTS)
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'record_results'
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, result, status):
        path = os.environ.get('UNBOXED_RECORD_RESULTS')
        if not path:
            return
        entry = {'host': result._host.get_name(), 'task': result._task.get_name(), 'status': status,
                 'result': result._result}
        with open(path, 'a', encoding='utf-8') as handle:
            handle.write(json.dumps(entry, default=str) + '\n')

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._record(result, 'unreachable')
