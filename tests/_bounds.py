"""A hang bound shared by every test directory (tests/ is on the path
through its conftest.py)."""

import time


def wait_until(cond, what="condition not reached within the bound", bound=30.0):
    """Poll ``cond`` until it holds; fail with ``what`` after ``bound``
    seconds. A hang bound, not a timing assertion: how long it took is
    never checked."""
    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)
