"""plait.sync behaviour beyond CPython's lock_tests: argument checking
(same exception classes and messages as CPython), interoperability with
the standard library's Condition, ownership and waiter visibility."""

import sys
import threading
import time

import pytest

import plait.sync as ps


@pytest.mark.parametrize("locktype", [ps.Lock, ps.RLock])
class TestLockArguments:
    def test_nonblocking_with_timeout_is_value_error(self, locktype):
        with pytest.raises(ValueError, match="can't specify a timeout for a non-blocking call"):
            locktype().acquire(False, 1)

    def test_negative_timeout_is_value_error(self, locktype):
        with pytest.raises(ValueError, match="timeout value must be a non-negative number"):
            locktype().acquire(timeout=-2)

    def test_minus_one_means_forever(self, locktype):
        lock = locktype()
        assert lock.acquire(timeout=-1)
        lock.release()

    def test_huge_timeout_is_overflow_error(self, locktype):
        with pytest.raises(OverflowError):
            locktype().acquire(timeout=threading.TIMEOUT_MAX * 2)

    def test_bad_timeout_type(self, locktype):
        with pytest.raises(TypeError):
            locktype().acquire(timeout="1")

    def test_nan_timeout(self, locktype):
        with pytest.raises(ValueError):
            locktype().acquire(timeout=float("nan"))

    def test_blocking_is_read_as_the_running_python_does(self, locktype):
        """`blocking` is an int before 3.12 (a C int: TypeError for other
        types) and any object, by its truth, from 3.12."""
        lock = locktype()
        assert lock.acquire(1)
        lock.release()
        if sys.version_info >= (3, 12):
            assert lock.acquire(blocking=[1])
            lock.release()
        else:
            with pytest.raises(TypeError):
                lock.acquire(blocking=[1])
            with pytest.raises(OverflowError):
                lock.acquire(2**31)


def test_lock_released_by_another_thread():
    lock = ps.Lock()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join()
    assert not lock.locked()


def test_release_unlocked_lock():
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        ps.Lock().release()


def test_owner_and_waiters_are_visible():
    lock = ps.Lock()
    assert lock._owner is None
    lock.acquire()
    assert lock._owner == threading.get_ident()
    started = threading.Event()

    def waiter():
        started.set()
        lock.acquire()
        lock.release()

    t = threading.Thread(target=waiter)
    t.start()
    started.wait()
    for _ in range(500):
        if lock._waiters:
            break
        time.sleep(0.01)
    assert lock._waiters == [t.ident]
    lock.release()
    t.join(10)
    assert lock._waiters == []


def test_semaphore_arguments():
    with pytest.raises(ValueError, match="semaphore initial value must be >= 0"):
        ps.Semaphore(-1)
    s = ps.Semaphore(0)
    with pytest.raises(ValueError, match="can't specify timeout for non-blocking acquire"):
        s.acquire(False, 1)
    with pytest.raises(ValueError, match="n must be one or more"):
        s.release(0)
    s.release(3)
    assert s._value == 3
    assert s.acquire(timeout=-1)  # a negative timeout just does not wait
    assert not ps.Semaphore(0).acquire(timeout=-1)
    b = ps.BoundedSemaphore(2)
    assert isinstance(b, ps.Semaphore)
    with pytest.raises(ValueError, match="Semaphore released too many times"):
        b.release()


def test_event_wait_returns_flag():
    e = ps.Event()
    assert e.wait(0) is False
    assert e.wait(-1) is False
    e.set()
    assert e.wait() is True
    with pytest.warns(DeprecationWarning):
        assert e.isSet()


def test_barrier_arguments_and_broken_error_class():
    if sys.version_info >= (3, 13):
        with pytest.raises(ValueError):
            ps.Barrier(0)
    else:
        # Accepted before 3.13, as there: a barrier that never trips.
        with pytest.raises(threading.BrokenBarrierError):
            ps.Barrier(0).wait(0.01)
    b = ps.Barrier(2, timeout=0.05)
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()
    assert b.broken
    b.reset()
    assert not b.broken
    assert ps.BrokenBarrierError is threading.BrokenBarrierError


def test_barrier_action_error_propagates_in_last_thread():
    calls = []

    def action():
        calls.append(1)
        raise KeyError("boom")

    b = ps.Barrier(2, action=action)
    other = []
    t = threading.Thread(target=lambda: other.append(_catch(b.wait)))
    t.start()
    while b.n_waiting < 1:
        time.sleep(0.005)
    with pytest.raises(KeyError):
        b.wait()
    t.join(10)
    assert calls == [1]
    assert isinstance(other[0], threading.BrokenBarrierError)


def _catch(fn):
    try:
        return fn()
    except BaseException as e:  # noqa: BLE001 - the test inspects it
        return e


@pytest.mark.parametrize("locktype", [ps.Lock, ps.RLock])
def test_stdlib_condition_over_plait_locks(locktype):
    """threading.Condition drives plait locks through their public and
    private (_release_save/_acquire_restore/_is_owned) protocol."""
    cond = threading.Condition(locktype())
    box = []

    def consumer():
        with cond:
            cond.wait_for(lambda: box, timeout=10)

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.05)
    with cond:
        box.append(1)
        cond.notify()
    t.join(10)
    assert not t.is_alive()


def test_plait_condition_over_arbitrary_lock_object():
    class MyLock:
        def __init__(self):
            self._l = threading.Lock()
            self.calls = 0

        def acquire(self, *a, **k):
            self.calls += 1
            return self._l.acquire(*a, **k)

        def release(self):
            self._l.release()

        def __enter__(self):
            return self.acquire()

        def __exit__(self, *a):
            self.release()

    lock = MyLock()
    cond = ps.Condition(lock)
    with cond:
        assert cond.wait(0.01) is False
        cond.notify()
    assert lock.calls >= 2
    with pytest.raises(RuntimeError, match="cannot notify on un-acquired lock"):
        cond.notify()
    with pytest.raises(RuntimeError, match="cannot wait on un-acquired lock"):
        cond.wait(0.01)


def test_rlock_release_save_restore_roundtrip():
    r = ps.RLock()
    r.acquire()
    r.acquire()
    state = r._release_save()
    assert state == (2, threading.get_ident())
    assert not r._is_owned()
    r._acquire_restore(state)
    assert r._recursion_count() == 2
    r.release()
    r.release()
