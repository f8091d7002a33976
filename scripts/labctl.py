# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""labctl's entry point: `python3 scripts/labctl.py ARGS` is `scripts/labctl ARGS`. The lab is in local_lab/.

It also runs as each lab host's PID 1 (`labctl.py _boot`, started by local_lab/host.py).
"""

import os
import sys

# labctl runs as root from a clone: it writes nothing into the tree but the inventory it is asked for.
sys.dont_write_bytecode = True
SCRIPTS = os.path.dirname(os.path.realpath(__file__))
# The package beside this file, and the collection through the clone's link collections/ansible_collections/unboxed/lab.
sys.path[:0] = [SCRIPTS, os.path.join(os.path.dirname(SCRIPTS), 'collections')]

from local_lab.cli import main  # noqa: E402  pylint: disable=wrong-import-position

if __name__ == '__main__':
    sys.exit(main())
