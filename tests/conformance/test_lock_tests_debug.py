"""CPython's lock tests again, under plait.debug's strictest settings:
``deadlock="raise"``, ``lock_order=True`` and LockOrderWarning turned into
an error. The suite releases plain Locks from other threads and has a thread
wait on a Lock it holds itself until another releases it; none of that is a
deadlock, so nothing may be raised, warned or reported (no false alarm).
The suite's classes are those of test_lock_tests.py, subclassed."""

import warnings

import pytest

import plait.debug as debug
import test_lock_tests as base


@pytest.fixture(autouse=True)
def strict(capfd):
    before = debug.settings()
    debug.enable(deadlock="raise", lock_order=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", debug.LockOrderWarning)
            yield
    finally:
        debug.enable(deadlock=before["deadlock"], lock_order=before["lock_order"])
    err = capfd.readouterr().err
    assert "deadlock" not in err.lower(), err
    assert "LockOrderWarning" not in err, err


class TestLockStrict(base.TestLock):
    pass


class TestRLockStrict(base.TestRLock):
    pass


class TestEventStrict(base.TestEvent):
    pass


class TestConditionStrict(base.TestCondition):
    pass


class TestConditionOverPlaitLockStrict(base.TestConditionOverPlaitLock):
    pass


class TestSemaphoreStrict(base.TestSemaphore):
    pass


class TestBoundedSemaphoreStrict(base.TestBoundedSemaphore):
    pass


class TestBarrierStrict(base.TestBarrier):
    pass
