"""Fixtures shared by the unit tests."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture
def sleeper():
    """A real process of our own, killed at the end whatever the test did."""
    child = subprocess.Popen(['sleep', '300'])
    yield child
    if child.poll() is None:
        child.kill()
    child.wait()
