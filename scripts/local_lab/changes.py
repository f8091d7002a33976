# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check mode: every action is described first, then done unless labctl only plans (--check)."""

from __future__ import annotations

import concurrent.futures
import os
import time

COPY_WORKERS = max(1, min(4, os.cpu_count() or 1))


class Changes:
    def __init__(self, check: bool):
        self.check = check
        self.made: list[str] = []
        self.timings: dict[str, float] = {}

    def make(self, description: str, action, *args):
        self.made.append(description)
        if self.check:
            return None
        started = time.monotonic()
        result = action(*args)
        self.timings[description] = round(time.monotonic() - started, 2)
        return result

    def make_together(self, actions) -> None:
        """Like make for each ``(description, action, *args)``, run side by side: copying root file systems
        is bound by the kernel's file creation, and two copies at once take little longer than one."""
        actions = list(actions)
        self.made.extend(action[0] for action in actions)
        if self.check or not actions:
            return

        def timed(action, args):
            started = time.monotonic()
            action(*args)
            return round(time.monotonic() - started, 2)

        with concurrent.futures.ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
            futures = {description: pool.submit(timed, action, args) for description, action, *args in actions}
        for description, future in futures.items():
            self.timings[description] = future.result()  # re-raises the first failure

    @property
    def changed(self) -> bool:
        return bool(self.made)
