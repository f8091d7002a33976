"""bench/ holds the benchmark's own modules (not the collection's): importable once bench/ is on the path."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, 'bench'))
