"""Lock order (lockdep-style, issue 14): with lock_order on, the first time two
lock classes are taken in both orders a ``LockOrderWarning`` names both locks
and carries both stacks — on a run that did not deadlock.

Lock classes are names (or creation sites) and the order graph lives for the
whole process, so every test uses names of its own.
"""

from __future__ import annotations

import os
import threading
import warnings

import pytest

import plait.sync as ps
from plait import _plait

pytestmark = pytest.mark.timeout(60)


def _category():
    """``plait.debug.LockOrderWarning`` (a RuntimeWarning) once it exists."""
    try:
        from plait.debug import LockOrderWarning
    except ImportError:
        return RuntimeWarning
    return LockOrderWarning


@pytest.fixture
def lock_order():
    _plait._debug_configure(lock_order=True)
    try:
        yield
    finally:
        _plait._debug_configure(lock_order=False)


def _order_warnings(record):
    return [w for w in record if issubclass(w.category, _category())]


def _in_thread(fn):
    t = threading.Thread(target=fn)
    t.start()
    t.join()


def take_a_then_b(a, b):
    with a:
        with b:
            pass


def take_b_then_a(a, b):
    with b:
        with a:
            pass


@pytest.mark.parametrize("cls", [ps.Lock, ps.RLock])
def test_inversion_warned_once_without_deadlock(lock_order, cls):
    tag = cls.__name__
    a, b = cls(name=f"inv-a-{tag}"), cls(name=f"inv-b-{tag}")
    _in_thread(lambda: take_a_then_b(a, b))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        take_b_then_a(a, b)
        take_b_then_a(a, b)
        take_a_then_b(a, b)
    found = _order_warnings(record)
    assert len(found) == 1
    text = str(found[0].message)
    assert f"inv-a-{tag}" in text and f"inv-b-{tag}" in text
    # Both stacks: the one recorded in the other thread, and this one.
    assert "take_a_then_b" in text
    assert "take_b_then_a" in text
    assert "test_inversion_warned_once_without_deadlock" in text
    assert not a.locked() and not b.locked()


def test_message_names_sites_of_unnamed_locks(lock_order):
    a = ps.Lock()
    b = ps.Lock()
    _in_thread(lambda: take_a_then_b(a, b))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        take_b_then_a(a, b)
    (w,) = _order_warnings(record)
    text = str(w.message)
    assert f"{__file__}:" in text
    assert text.count(os.path.basename(__file__)) >= 2


def test_consistent_order_is_silent(lock_order):
    a, b, c = ps.Lock(name="ok-a"), ps.RLock(name="ok-b"), ps.Lock(name="ok-c")

    def nest():
        with a, b, c:
            pass
        with a, c:
            pass
        with b, c:
            pass

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            _in_thread(nest)
            nest()
    assert _order_warnings(record) == []


def test_same_class_nested_is_not_an_inversion(lock_order):
    # Two locks from one creation line are one class.
    first, second = [ps.Lock() for _ in range(2)]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        take_a_then_b(first, second)
        take_b_then_a(first, second)
    assert _order_warnings(record) == []


def test_warning_as_error_raises_without_acquiring(lock_order):
    a, b = ps.Lock(name="err-a"), ps.Lock(name="err-b")
    _in_thread(lambda: take_a_then_b(a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with b:
            with pytest.raises(_category()):
                a.acquire()
            assert not a.locked()
        # Reported once: the next attempt acquires.
        with b:
            with a:
                assert a.locked()
    assert not a.locked() and not b.locked()


def test_warning_as_error_with_statement_and_condition(lock_order):
    a = ps.RLock(name="errc-a")
    cond = ps.Condition(ps.Lock(name="errc-cond"))
    _in_thread(lambda: take_a_then_b(a, cond))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with cond:
            with pytest.raises(_category()):
                with a:
                    pass
            assert not a.locked()
            assert cond.wait(0.01) is False
    assert not a.locked()


def test_nonblocking_acquire_records_no_order(lock_order):
    a, b = ps.Lock(name="try-a"), ps.Lock(name="try-b")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with a:
            assert b.acquire(False)
            b.release()
        with b:
            assert a.acquire(blocking=False)
            a.release()
    assert _order_warnings(record) == []


def test_lock_released_by_another_thread_leaves_no_stale_order(lock_order):
    signal, other = ps.Lock(name="stale-signal"), ps.Lock(name="stale-other")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        signal.acquire()
        _in_thread(signal.release)  # a Lock used as a signal
        with other:  # would record signal -> other if the entry stayed
            pass
        with other:
            with signal:
                pass
    assert _order_warnings(record) == []


def test_tracking_and_order_switches():
    _plait._debug_configure(tracking=False)
    try:
        lock = ps.Lock()
        with lock:
            assert lock.locked()
    finally:
        _plait._debug_configure(tracking=True)
    _plait._debug_configure(lock_order=True)
    _plait._debug_configure(lock_order=False)
    with lock:
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_works_in_lock_order_mode(lock_order):
    a, b = ps.Lock(name="fork-a"), ps.RLock(name="fork-b")
    with a:
        pid = os.fork()
        if pid == 0:  # child: the lock its only thread held is still held
            code = 0
            try:
                assert a.locked()
                a.release()
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    take_a_then_b(a, b)
                    take_a_then_b(a, b)
                    c = ps.Lock(name="fork-c")
                    with c:
                        pass
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# --- a wait refused in deadlock="raise" mode raises (never panics) -------------


def _debug_module():
    try:
        import plait.debug as debug
    except ImportError:
        return None
    return debug if hasattr(debug, "enable") and hasattr(debug, "disable") else None


@pytest.mark.skipif(_debug_module() is None, reason="plait.debug not in this build")
@pytest.mark.parametrize("cls", [ps.Lock, ps.RLock])
@pytest.mark.parametrize("call", ["acquire()", "acquire(True, 30)", "with"])
def test_refused_wait_raises_deadlock_error(cls, call):
    debug = _debug_module()
    a, b = cls(), cls()
    ready = threading.Event()

    def other():
        with a:
            ready.set()
            with b:
                pass

    debug.enable(deadlock="raise")
    try:
        with b:
            t = threading.Thread(target=other)
            t.start()
            assert ready.wait(30)
            while not b._waiters:  # until the other thread is parked on b
                threading.Event().wait(0.001)
            with pytest.raises(debug.DeadlockError):
                if call == "acquire()":
                    a.acquire()
                elif call == "with":
                    with a:
                        pass
                else:
                    a.acquire(True, 30)
            assert a._owner != threading.get_ident()
        t.join(30)
        assert not t.is_alive()
    finally:
        debug.disable()
