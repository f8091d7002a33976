"""Make ``ansible_collections.unboxed.lab`` importable from a plain clone, as Ansible sees it."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'collections'))
