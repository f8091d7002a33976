# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wall time of every task of a run, written as JSON for bench/bench.py.

ansible.posix.profile_tasks would do this, but the project installs no external collection; this callback
belongs to the benchmark only (bench/run enables it through ANSIBLE_CALLBACK_PLUGINS), not to the collection.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_timing
type: aggregate
short_description: Wall time of each task and the run's totals, as JSON (benchmark only)
description:
  - Records for every task when it started and when its last host finished, and at the end of the run writes
    the tasks, the per-host totals of the play recap and the run's wall time to the file named by
    E(BENCH_TIMING_FILE). Does nothing when that variable is unset.
requirements:
  - Enabled in configuration (C(callbacks_enabled)) and E(BENCH_TIMING_FILE) set.
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_timing'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._output_path = os.environ.get('BENCH_TIMING_FILE')
        self._run_started = time.monotonic()
        self._tasks: list[dict] = []
        self._current: dict | None = None

    def _start_task(self, task, kind: str) -> None:
        now = time.monotonic()
        role = task._role.get_name() if task._role else None
        self._current = {
            'name': task.get_name(),
            'role': role,
            'action': task.action,
            'kind': kind,
            'start': round(now - self._run_started, 4),
            'end': round(now - self._run_started, 4),
            'hosts': {},
        }
        self._tasks.append(self._current)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start_task(task, 'task')

    def v2_playbook_on_handler_task_start(self, task):
        self._start_task(task, 'handler')

    def _host_done(self, result, status: str) -> None:
        if self._current is None:
            return
        now = round(time.monotonic() - self._run_started, 4)
        self._current['end'] = max(self._current['end'], now)
        # Seconds from the task's start until this host's result came back (the slowest host decides the
        # task's wall time under the linear strategy).
        self._current['hosts'][result._host.get_name()] = {'status': status, 'done': round(now - self._current['start'], 4)}

    def v2_runner_on_ok(self, result):
        self._host_done(result, 'changed' if result._result.get('changed') else 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._host_done(result, 'ignored' if ignore_errors else 'failed')

    def v2_runner_on_skipped(self, result):
        self._host_done(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._host_done(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        if not self._output_path:
            return
        recap = {host: stats.summarize(host) for host in sorted(stats.processed)}
        for task in self._tasks:
            task['wall'] = round(task['end'] - task['start'], 4)
        document = {
            'format': 'unboxed.bench_timing/1',
            'wall': round(time.monotonic() - self._run_started, 4),
            'recap': recap,
            'tasks': self._tasks,
        }
        with open(self._output_path, 'w', encoding='utf-8') as handle:
            json.dump(document, handle, indent=1)
