"""scripts/local_lab is labctl's package: importable as ``local_lab`` once scripts/ is on the path, as
scripts/labctl.py puts it there."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
