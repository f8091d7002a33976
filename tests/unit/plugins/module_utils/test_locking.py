"""locking: a real flock between real processes; released when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import locking

HOLD = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.unboxed.lab.plugins.module_utils import locking
with locking.exclusive('container', 'talk', lock_root=sys.argv[2], note='starting talk'):
    print('held', flush=True)
    time.sleep(float(sys.argv[3]))
'''
# The directory that holds ansible_collections/, wherever this run imported the collection from (a clone's
# collections/ link, or ansible-test's copy).
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(locking.__file__)))))))


def holder(tmp_path, seconds):
    child = subprocess.Popen([sys.executable, '-c', HOLD, os.path.abspath(COLLECTIONS), str(tmp_path), str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == 'held'
    return child


def test_one_file_per_object_whatever_its_name():
    first = locking.lock_file_path('layer', '/overlay/lower2-file')
    assert first.startswith('/run/unboxed/locks/layer-') and first.endswith('.lock')
    assert first != locking.lock_file_path('layer', '/overlay/lower1-base')
    assert first != locking.lock_file_path('overlay', '/overlay/lower2-file')
    assert '\n' not in locking.lock_file_path('container', 'bad\nname')


def test_a_second_taker_waits_and_times_out_naming_the_holder(tmp_path):
    child = holder(tmp_path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(locking.LockTimeout) as caught:
            with locking.exclusive('container', 'talk', timeout=0.3, lock_root=str(tmp_path)):
                pytest.fail('took a lock that another process holds')
        assert time.monotonic() - started >= 0.3
        assert caught.value.holder == f'PID {child.pid} talk starting talk'
        message = locking.timeout_message('the container talk', caught.value)
        assert message.startswith(f'Another run is working on the container talk (PID {child.pid} talk starting talk)')
        # Another object is not blocked by it.
        with locking.exclusive('container', 'other', timeout=0.3, lock_root=str(tmp_path)):
            pass
    finally:
        child.kill()
        child.wait()


def test_the_lock_goes_with_its_holder_even_when_killed(tmp_path):
    child = holder(tmp_path, 30)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with locking.exclusive('container', 'talk', timeout=2, lock_root=str(tmp_path)) as path:
        assert os.path.exists(path)


def test_a_waiter_gets_the_lock_when_the_holder_ends(tmp_path):
    child = holder(tmp_path, 0.5)
    try:
        with locking.exclusive('container', 'talk', timeout=10, lock_root=str(tmp_path)):
            assert child.wait(timeout=5) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
