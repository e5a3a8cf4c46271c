"""plait.futures behaviour: the whole contract of issue 3, through public API.

Future (states, result/exception with timeouts, done callbacks, the
set_* methods, InvalidStateError, the standard library's exception classes),
wait / as_completed, and ThreadPoolExecutor (max_workers default and checks,
thread names, initializer, a failing initializer, submit, map with
timeout/chunksize/buffersize, shutdown, context manager, threading.local,
idle worker reuse, tracebacks, interpreter exit).

With ``PLAIT_FUTURES_STANDIN=1`` every test runs against
``concurrent.futures`` instead, which validates the tests themselves.
Correctness tests never assert on speed: a timeout is checked by what it
did (the TimeoutError, the futures still pending), and the few time bounds
left are generous upper bounds against hangs.
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.thread  # noqa: F401  (makes cf.thread available)
import inspect
import itertools
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import types

import pytest

pytestmark = pytest.mark.timeout(60)


class _StandIn(types.ModuleType):
    """concurrent.futures, plus the BrokenThreadPool that plait.futures
    re-exports from concurrent.futures.thread."""

    BrokenThreadPool = cf.thread.BrokenThreadPool

    def __getattr__(self, name):
        return getattr(cf, name)


def futures_under_test():
    """plait.futures, or concurrent.futures with PLAIT_FUTURES_STANDIN=1."""
    if os.environ.get("PLAIT_FUTURES_STANDIN") == "1":
        return _StandIn("concurrent.futures")
    return pytest.importorskip(
        "plait.futures", reason="plait.futures is not importable (build plait; "
        "PLAIT_FUTURES_STANDIN=1 runs these tests against concurrent.futures)")


fut = futures_under_test()
Future = fut.Future
TPE = fut.ThreadPoolExecutor


@pytest.fixture
def executor():
    ex = TPE(max_workers=4)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def wait_until(predicate, timeout=10.0):
    """Poll ``predicate`` until true; False if ``timeout`` passes first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def later(delay, fn, *args):
    """Run ``fn(*args)`` in a plain thread after ``delay`` seconds."""
    t = threading.Timer(delay, fn, args)
    t.start()
    return t


# ==========================================================================
# Names


def test_exports_and_standard_exception_classes():
    for name in ("Future", "ThreadPoolExecutor", "wait", "as_completed", "FIRST_COMPLETED",
                 "FIRST_EXCEPTION", "ALL_COMPLETED", "CancelledError", "TimeoutError",
                 "BrokenExecutor", "InvalidStateError", "BrokenThreadPool"):
        assert hasattr(fut, name), name
    # The standard library's own classes, so existing except clauses work.
    assert fut.CancelledError is cf.CancelledError
    assert fut.TimeoutError is cf.TimeoutError
    assert fut.BrokenExecutor is cf.BrokenExecutor
    assert fut.InvalidStateError is cf.InvalidStateError
    assert fut.BrokenThreadPool is cf.thread.BrokenThreadPool
    assert issubclass(fut.BrokenThreadPool, fut.BrokenExecutor)
    assert fut.FIRST_COMPLETED == cf.FIRST_COMPLETED
    assert fut.FIRST_EXCEPTION == cf.FIRST_EXCEPTION
    assert fut.ALL_COMPLETED == cf.ALL_COMPLETED


def test_future_is_a_concurrent_futures_future():
    assert issubclass(Future, cf.Future)
    assert isinstance(Future(), cf.Future)


# ==========================================================================
# Future: states


def test_new_future_is_pending():
    f = Future()
    assert not f.done() and not f.running() and not f.cancelled()
    assert "state=pending" in repr(f)


def test_cancel_pending():
    f = Future()
    assert f.cancel() is True
    assert f.cancelled() and f.done() and not f.running()
    assert f.cancel() is True  # cancelling again still says cancelled
    with pytest.raises(cf.CancelledError):
        f.result()
    with pytest.raises(cf.CancelledError):
        f.exception()
    with pytest.raises(cf.CancelledError):
        f.result(timeout=0)
    assert "state=cancelled" in repr(f)


def test_set_running_or_notify_cancel():
    f = Future()
    assert f.set_running_or_notify_cancel() is True
    assert f.running() and not f.done()
    assert f.cancel() is False  # a running future cannot be cancelled
    assert not f.cancelled()
    assert "state=running" in repr(f)
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()  # already running
    f.set_result(1)
    assert not f.running() and f.done()
    assert f.cancel() is False


def test_set_running_on_cancelled_future_notifies():
    f = Future()
    calls = []
    f.add_done_callback(calls.append)
    assert f.cancel()
    assert calls == [f]
    assert f.set_running_or_notify_cancel() is False
    assert f.cancelled() and f.done()
    assert calls == [f]  # callbacks ran once, at cancel()


def test_set_result_and_result():
    f = Future()
    f.set_result(42)
    assert f.done() and not f.cancelled() and not f.running()
    assert f.result() == 42 and f.result(timeout=0) == 42
    assert f.exception() is None and f.exception(timeout=0) is None
    assert "state=finished returned int" in repr(f)


def test_result_can_be_none_or_any_object():
    f = Future()
    obj = object()
    f.set_result(obj)
    assert f.result() is obj
    g = Future()
    g.set_result(None)
    assert g.result() is None and g.done()


def test_set_exception_and_exception():
    f = Future()
    err = ValueError("bad")
    f.set_exception(err)
    assert f.done() and not f.cancelled()
    assert f.exception() is err
    with pytest.raises(ValueError) as info:
        f.result()
    assert info.value is err
    assert "state=finished raised ValueError" in repr(f)


def test_invalid_state_error():
    f = Future()
    f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())
    assert f.result() == 1

    g = Future()
    g.set_exception(KeyError("k"))
    with pytest.raises(cf.InvalidStateError):
        g.set_result(1)
    assert isinstance(g.exception(), KeyError)

    h = Future()
    h.cancel()
    with pytest.raises(cf.InvalidStateError):
        h.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        h.set_exception(ValueError())
    assert h.cancelled()


def test_invalid_state_error_names_the_future():
    f = Future()
    f.set_result(1)
    with pytest.raises(cf.InvalidStateError, match=r"FINISHED: <Future at 0x[0-9a-f]+ "):
        f.set_result(2)


# ==========================================================================
# Future: waiting with timeouts


def test_result_timeout():
    f = Future()
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.1)
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0)
    if sys.version_info >= (3, 11):
        with pytest.raises(TimeoutError):  # the builtin is the same class there
            f.result(timeout=0)
    assert not f.done()
    # A timed wait is a wait: a result set meanwhile is returned, not a timeout.
    later(0.05, f.set_result, 7)
    assert f.result(timeout=30) == 7


def test_exception_timeout():
    f = Future()
    with pytest.raises(cf.TimeoutError):
        f.exception(timeout=0.1)
    assert not f.done()
    f.set_running_or_notify_cancel()
    with pytest.raises(cf.TimeoutError):
        f.exception(timeout=0)


def test_result_waits_for_set_result():
    f = Future()
    later(0.05, f.set_result, "done")
    assert f.result(timeout=10) == "done"


def test_result_waits_without_timeout():
    f = Future()
    later(0.05, f.set_result, 7)
    assert f.result() == 7


def test_exception_waits_for_set_exception():
    f = Future()
    err = OSError("io")
    later(0.05, f.set_exception, err)
    assert f.exception(timeout=10) is err


def test_result_wakes_on_cancel():
    f = Future()
    later(0.05, f.cancel)
    with pytest.raises(cf.CancelledError):
        f.result(timeout=10)


def test_many_waiters_all_wake():
    f = Future()
    got = []
    lock = threading.Lock()

    def waiter():
        r = f.result(timeout=10)
        with lock:
            got.append(r)

    threads = [threading.Thread(target=waiter) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    f.set_result("x")
    for t in threads:
        t.join(10)
    assert got == ["x"] * 8


# ==========================================================================
# Future: done callbacks


def test_done_callback_on_result_exception_cancel():
    for finish in (lambda f: f.set_result(1), lambda f: f.set_exception(ValueError()),
                   lambda f: f.cancel()):
        f = Future()
        calls = []
        f.add_done_callback(calls.append)
        assert calls == []
        finish(f)
        assert calls == [f]


def test_done_callback_on_already_done_future_runs_at_once():
    f = Future()
    f.set_result(5)
    seen = []
    f.add_done_callback(lambda g: seen.append(g.result()))
    assert seen == [5]


def test_done_callbacks_run_in_order_once():
    f = Future()
    calls = []
    for i in range(5):
        f.add_done_callback(lambda g, i=i: calls.append(i))
    f.set_result(None)
    assert calls == [0, 1, 2, 3, 4]
    f.cancel()  # no effect on a finished future
    assert calls == [0, 1, 2, 3, 4]


def test_raising_callback_is_logged_and_does_not_break_the_future(caplog):
    f = Future()
    after = []

    def bad(g):
        raise ZeroDivisionError("callback failed")

    f.add_done_callback(bad)
    f.add_done_callback(after.append)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result("ok")
    assert after == [f]  # later callbacks still ran
    assert f.result() == "ok" and f.done() and not f.cancelled()
    records = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert records, caplog.text
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert "exception calling callback for" in rec.getMessage()
    assert rec.exc_info and rec.exc_info[0] is ZeroDivisionError
    assert "callback failed" in caplog.text


def test_raising_callback_on_done_future_is_logged(caplog):
    f = Future()
    f.set_exception(KeyError("k"))
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.add_done_callback(lambda g: 1 / 0)
    assert "exception calling callback for" in caplog.text
    assert "ZeroDivisionError" in caplog.text
    assert isinstance(f.exception(), KeyError)


def test_raising_callback_reaches_stderr_without_logging_config():
    """With logging unconfigured, the record is printed (logging.lastResort)."""
    code = "import os\n" + _CHILD_IMPORT + textwrap.dedent("""
        f = fut.Future()
        f.add_done_callback(lambda g: 1 / 0)
        f.set_result(1)
        print("result", f.result())
    """)
    p = run_child(code)
    assert p.returncode == 0, p.stderr
    assert "result 1" in p.stdout
    assert "exception calling callback for" in p.stderr
    assert "ZeroDivisionError" in p.stderr


def test_executor_future_callbacks_run():
    with TPE(2) as ex:
        done = threading.Event()
        seen = []

        def cb(f):
            seen.append(f.result())
            done.set()

        f = ex.submit(pow, 2, 10)
        f.add_done_callback(cb)
        assert done.wait(10)
        assert seen == [1024]


# ==========================================================================
# wait / as_completed


def finished(value=None, exc=None):
    f = Future()
    if exc is not None:
        f.set_exception(exc)
    else:
        f.set_result(value)
    return f


def cancelled_and_notified():
    f = Future()
    f.cancel()
    f.set_running_or_notify_cancel()
    return f


def test_wait_all_completed():
    a, b, c = Future(), Future(), finished(3)
    later(0.05, a.set_result, 1)
    later(0.1, b.set_exception, ValueError())
    res = fut.wait([a, b, c], timeout=10, return_when=fut.ALL_COMPLETED)
    assert res.done == {a, b, c} and res.not_done == set()
    done, not_done = res  # a named 2-tuple
    assert done == {a, b, c}


def test_wait_default_is_all_completed():
    a = Future()
    later(0.05, a.set_result, 1)
    done, not_done = fut.wait([a])
    assert done == {a} and not not_done


def test_wait_first_completed():
    a, b = Future(), Future()
    later(0.05, a.set_result, 1)
    done, not_done = fut.wait([a, b], timeout=10, return_when=fut.FIRST_COMPLETED)
    assert done == {a} and not_done == {b}


def test_wait_first_completed_returns_at_once_if_one_is_done():
    a, b = finished(1), Future()
    t0 = time.monotonic()
    done, not_done = fut.wait([a, b], timeout=60, return_when=fut.FIRST_COMPLETED)
    assert done == {a} and not_done == {b}
    assert time.monotonic() - t0 < 30  # a hang bound: it did not sit out the 60 s timeout


def test_wait_first_exception():
    a, b, c = Future(), Future(), Future()
    later(0.02, a.set_result, 1)
    later(0.08, b.set_exception, ValueError())
    done, not_done = fut.wait([a, b, c], timeout=10, return_when=fut.FIRST_EXCEPTION)
    assert done == {a, b} and not_done == {c}


def test_wait_first_exception_without_exception_waits_for_all():
    a, b = Future(), Future()
    later(0.02, a.set_result, 1)
    later(0.06, b.set_result, 2)
    done, not_done = fut.wait([a, b], timeout=10, return_when=fut.FIRST_EXCEPTION)
    assert done == {a, b} and not not_done


def test_wait_cancelled_counts_once_notified():
    """As in CPython: a future cancelled but not yet notified (cancel() with
    no set_running_or_notify_cancel()) is not 'done' for wait."""
    notified = cancelled_and_notified()
    merely = Future()
    merely.cancel()
    done, not_done = fut.wait([notified, merely], timeout=0)
    assert done == {notified} and not_done == {merely}


def test_wait_timeout():
    a, b = finished(1), Future()
    done, not_done = fut.wait([a, b], timeout=0.1)
    assert done == {a} and not_done == {b}
    assert not b.done()


def test_wait_duplicates_and_empty():
    a = finished(1)
    done, not_done = fut.wait([a, a, a])
    assert done == {a} and not not_done
    done, not_done = fut.wait([])
    assert done == set() and not_done == set()


def test_wait_executor_futures(executor):
    fs = [executor.submit(pow, 2, i) for i in range(50)]
    done, not_done = fut.wait(fs, timeout=30)
    assert done == set(fs) and not not_done
    assert sorted(f.result() for f in fs) == sorted(2 ** i for i in range(50))


def test_as_completed_order_of_completion():
    a, b, c = Future(), Future(), Future()
    later(0.02, b.set_result, "b")
    later(0.1, c.set_result, "c")
    later(0.2, a.set_result, "a")
    assert [f.result() for f in fut.as_completed([a, b, c], timeout=10)] == ["b", "c", "a"]


def test_as_completed_yields_done_ones_first():
    a, b = Future(), finished("b")
    later(0.05, a.set_result, "a")
    it = fut.as_completed([a, b])
    assert next(it) is b
    assert next(it) is a
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_duplicates_and_iterables():
    a = Future()
    later(0.02, a.set_result, 1)
    assert list(fut.as_completed(itertools.repeat(a, 3))) == [a]
    assert list(fut.as_completed(iter([]))) == []


def test_as_completed_timeout():
    done_one, pending_one, pending_two = finished(1), Future(), Future()
    got = []
    with pytest.raises(cf.TimeoutError) as info:
        for f in fut.as_completed([done_one, pending_one, pending_two], timeout=0.1):
            got.append(f)
    assert got == [done_one]
    assert not pending_one.done() and not pending_two.done()
    assert str(info.value) == "2 (of 3) futures unfinished"


def test_as_completed_zero_timeout_yields_finished_then_raises():
    a, b, c = finished(1), cancelled_and_notified(), Future()
    got = set()
    with pytest.raises(cf.TimeoutError):
        for f in fut.as_completed([a, b, c], timeout=0):
            got.add(f)
    assert got == {a, b}


def test_as_completed_executor(executor):
    fs = [executor.submit(time.sleep, 0.001 * (i % 5)) for i in range(40)]
    assert set(fut.as_completed(fs, timeout=30)) == set(fs)


# ==========================================================================
# ThreadPoolExecutor: construction


def expected_default_workers():
    cpus = getattr(os, "process_cpu_count", os.cpu_count)() or os.cpu_count() or 1
    return min(32, cpus + 4)


def test_default_max_workers():
    """The default is min(32, cpus + 4), seen as the number of tasks that can
    block at the same time (counted by the distinct threads that run them)."""
    expected = expected_default_workers()
    ex = TPE()
    release = threading.Event()
    started = threading.Semaphore(0)
    idents = set()
    lock = threading.Lock()

    def block():
        with lock:
            idents.add(threading.get_ident())
        started.release()
        release.wait(30)

    try:
        fs = [ex.submit(block) for _ in range(expected + 4)]
        for _ in range(expected):
            assert started.acquire(timeout=10), f"fewer than {expected} workers started"
        # No more than `expected` run at once: the rest wait for a free worker.
        assert not started.acquire(timeout=0.3)
        with lock:
            assert len(idents) == expected
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert all(f.done() for f in fs)


def test_max_workers_bounds_concurrency():
    ex = TPE(max_workers=3)
    release = threading.Event()
    running = [0, 0]  # current, peak
    lock = threading.Lock()

    def task():
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        release.wait(30)
        with lock:
            running[0] -= 1

    try:
        fs = [ex.submit(task) for _ in range(10)]
        assert wait_until(lambda: running[0] == 3)
        time.sleep(0.2)
        assert running[1] == 3
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert all(f.done() and f.exception() is None for f in fs)
    assert running[1] == 3


@pytest.mark.parametrize("bad", [0, -1])
def test_max_workers_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        TPE(max_workers=bad)


def test_initializer_must_be_callable():
    with pytest.raises(TypeError):
        TPE(max_workers=1, initializer=42)


def test_thread_name_prefix_visible_in_enumerate():
    ex = TPE(max_workers=2, thread_name_prefix="PlaitTestPool")
    release = threading.Event()
    names = []

    def task():
        names.append(threading.current_thread().name)
        release.wait(30)

    try:
        fs = [ex.submit(task) for _ in range(2)]
        assert wait_until(lambda: len(names) == 2)
        listed = [t.name for t in threading.enumerate() if t.name.startswith("PlaitTestPool")]
        assert len(listed) == 2, [t.name for t in threading.enumerate()]
        assert sorted(listed) == sorted(names)
        for name in names:
            assert name.startswith("PlaitTestPool_"), name
    finally:
        release.set()
        ex.shutdown(wait=True)
    for f in fs:
        f.result()


def test_default_thread_names():
    with TPE(max_workers=1) as ex:
        name = ex.submit(lambda: threading.current_thread().name).result(10)
    assert name.startswith("ThreadPoolExecutor-") and "_" in name, name


def test_workers_are_real_python_threads():
    with TPE(max_workers=2, thread_name_prefix="PlaitReal") as ex:
        def who():
            t = threading.current_thread()
            return (type(t).__name__, t.ident == threading.get_ident(), t.is_alive(),
                    t is not threading.main_thread())

        kind, same_ident, alive, not_main = ex.submit(who).result(10)
    assert same_ident and alive and not_main
    assert kind != "_DummyThread"


def test_workers_exit_after_shutdown():
    ex = TPE(max_workers=3, thread_name_prefix="PlaitExitPool")
    for f in [ex.submit(time.sleep, 0.01) for _ in range(6)]:
        f.result(10)
    ex.shutdown(wait=True)
    assert wait_until(lambda: not [t for t in threading.enumerate()
                                   if t.name.startswith("PlaitExitPool")], timeout=5)


# ==========================================================================
# Initializer


_init_state = threading.local()


def _initializer(tag, registry, lock):
    _init_state.tag = tag
    with lock:
        registry.append(threading.get_ident())


def test_initializer_runs_once_per_worker_before_tasks():
    registry, lock = [], threading.Lock()
    ex = TPE(max_workers=3, initializer=_initializer, initargs=("ready", registry, lock))
    try:
        def task(_):
            time.sleep(0.002)
            return getattr(_init_state, "tag", None), threading.get_ident()

        results = list(ex.map(task, range(60)))
    finally:
        ex.shutdown(wait=True)
    assert all(tag == "ready" for tag, _ in results)
    workers = {ident for _, ident in results}
    assert workers <= set(registry)
    assert len(registry) == len(set(registry))  # once per worker
    assert 1 <= len(registry) <= 3


def _failing_initializer():
    time.sleep(0.05)  # let tasks queue up behind it
    raise ValueError("error in initializer")


def test_failing_initializer_breaks_pool(caplog):
    ex = TPE(max_workers=1, initializer=_failing_initializer)
    try:
        with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
            fs = [ex.submit(pow, 2, i) for i in range(5)]
            for f in fs:
                with pytest.raises(fut.BrokenThreadPool) as info:
                    f.result(timeout=10)
                assert isinstance(info.value, cf.BrokenExecutor)
            assert wait_until(lambda: "error in initializer" in caplog.text, timeout=5)
        # Once the pending work has failed, the pool is broken for good.
        with pytest.raises(fut.BrokenThreadPool):
            ex.submit(pow, 2, 2)
    finally:
        ex.shutdown(wait=True)
    crit = [r for r in caplog.records
            if r.name == "concurrent.futures" and r.levelno == logging.CRITICAL]
    assert crit, caplog.text
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in crit)


def test_failing_initializer_message():
    ex = TPE(max_workers=1, initializer=_failing_initializer)
    try:
        f = ex.submit(int)
        with pytest.raises(fut.BrokenThreadPool, match="initializer"):
            f.result(timeout=10)
    finally:
        ex.shutdown(wait=True)


# ==========================================================================
# submit


def capture(*args, **kwargs):
    return args, kwargs


def test_submit_args_and_kwargs(executor):
    f = executor.submit(capture, 1, 2, a=3, fn=4, self=5)
    assert isinstance(f, Future)
    assert f.result(10) == ((1, 2), {"a": 3, "fn": 4, "self": 5})


def test_submit_needs_a_callable_positionally(executor):
    with pytest.raises(TypeError):
        executor.submit()
    with pytest.raises(TypeError):
        executor.submit(fn=capture)


def test_submit_exception_in_task(executor):
    f = executor.submit(divmod, 1, 0)
    with pytest.raises(ZeroDivisionError):
        f.result(10)
    assert isinstance(f.exception(), ZeroDivisionError)


def test_base_exception_in_task_is_captured(executor):
    class Stop(BaseException):
        pass

    def raise_stop():
        raise Stop()

    f = executor.submit(raise_stop)
    assert isinstance(f.exception(10), Stop)
    assert executor.submit(pow, 3, 2).result(10) == 9  # the worker survived


def test_executor_future_running_and_cancel():
    ex = TPE(max_workers=1)
    release, started = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(30)
        return "done"

    try:
        running = ex.submit(block)
        queued = ex.submit(pow, 2, 3)
        assert started.wait(10)
        assert running.running() and not running.done()
        assert running.cancel() is False
        assert queued.cancel() is True and queued.cancelled()
        release.set()
        assert running.result(10) == "done"
    finally:
        release.set()
        ex.shutdown(wait=True)
    with pytest.raises(cf.CancelledError):
        queued.result()


def test_cancelled_task_never_runs():
    ex = TPE(max_workers=1)
    release = threading.Event()
    ran = []
    try:
        ex.submit(release.wait, 30)
        fs = [ex.submit(ran.append, i) for i in range(10)]
        for f in fs[::2]:
            assert f.cancel()
        release.set()
        for f in fs[1::2]:
            f.result(10)
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert sorted(ran) == [1, 3, 5, 7, 9]


def test_no_lost_work_with_concurrent_submitters():
    ex = TPE(max_workers=4)
    per_thread, n_threads = 500, 4
    results = [[] for _ in range(n_threads)]

    def submitter(k):
        results[k] = [ex.submit(lambda x: x * 2, k * per_thread + i) for i in range(per_thread)]

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ex.shutdown(wait=True)
    values = sorted(f.result(0) for fs in results for f in fs)
    assert values == [2 * i for i in range(per_thread * n_threads)]


def test_submit_from_a_worker():
    with TPE(max_workers=2) as ex:
        inner = ex.submit(lambda: ex.submit(pow, 2, 5)).result(10)
        assert inner.result(10) == 32


# ==========================================================================
# map


def test_map_in_order(executor):
    assert list(executor.map(pow, range(10), range(10))) == [pow(i, i) for i in range(10)]


def test_map_shortest_iterable(executor):
    assert list(executor.map(pow, [2, 3, 4], [1, 2])) == [2, 9]


def test_map_chunksize_accepted(executor):
    assert list(executor.map(abs, range(-20, 20), chunksize=7)) == [abs(i) for i in range(-20, 20)]


def test_map_exception_at_its_position(executor):
    it = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(it) == (0, 1)
    assert next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_timeout():
    ex = TPE(max_workers=2)
    release = threading.Event()
    try:
        it = ex.map(lambda x: release.wait(30) if x else x, [0, 1], timeout=0.1)
        assert next(it) == 0
        with pytest.raises(cf.TimeoutError):
            next(it)
    finally:
        release.set()
        ex.shutdown(wait=True)


def test_map_submits_without_iteration():
    ex = TPE(max_workers=2)
    seen = []
    ex.map(seen.append, range(20))  # the iterator is never consumed
    ex.shutdown(wait=True)
    assert sorted(seen) == list(range(20))


def test_map_empty(executor):
    assert list(executor.map(abs, [])) == []


def _has_buffersize():
    return "buffersize" in inspect.signature(TPE.map).parameters


needs_buffersize = pytest.mark.skipif(
    not _has_buffersize(),
    reason="this concurrent.futures (Python < 3.14) has no map(buffersize=)")


@needs_buffersize
def test_map_buffersize_is_keyword_only():
    param = inspect.signature(TPE.map).parameters["buffersize"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY
    assert param.default is None


@needs_buffersize
def test_map_buffersize_bounds_read_ahead_of_an_endless_input(executor):
    consumed = [0]

    def source():
        for i in itertools.count():
            consumed[0] += 1
            yield i

    it = executor.map(lambda x: x * x, source(), buffersize=4)
    assert consumed[0] <= 4
    taken = []
    for _ in range(25):
        taken.append(next(it))
        assert consumed[0] <= len(taken) + 4, (consumed[0], len(taken))
    assert taken == [i * i for i in range(25)]
    time.sleep(0.05)  # nothing reads ahead in the background either
    assert consumed[0] <= 25 + 4
    it.close()


@needs_buffersize
def test_map_buffersize_finite_input(executor):
    assert list(executor.map(pow, range(30), itertools.repeat(2), buffersize=3)) == \
        [i ** 2 for i in range(30)]
    assert list(executor.map(abs, [-1], buffersize=100)) == [1]


@needs_buffersize
def test_map_buffersize_checks():
    with TPE(1) as ex:
        with pytest.raises(ValueError):
            ex.map(abs, [1], buffersize=0)
        with pytest.raises(TypeError):
            ex.map(abs, [1], buffersize=1.5)


# ==========================================================================
# shutdown and the context manager


def test_submit_after_shutdown_raises_runtime_error():
    ex = TPE(max_workers=1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(pow, 2, 2)
    ex.shutdown()  # a second shutdown is harmless


def test_shutdown_wait_waits_for_running_and_queued_work():
    ex = TPE(max_workers=2)
    done = []
    fs = [ex.submit(lambda i=i: (time.sleep(0.02), done.append(i))) for i in range(10)]
    ex.shutdown(wait=True)
    assert sorted(done) == list(range(10))
    assert all(f.done() for f in fs)


def test_shutdown_no_wait_still_runs_queued_work():
    ex = TPE(max_workers=2)
    release = threading.Event()
    fs = [ex.submit(release.wait, 30)] + [ex.submit(pow, 2, i) for i in range(10)]
    ex.shutdown(wait=False)
    assert not fs[0].done()  # shutdown returned without waiting for the blocked task
    release.set()
    assert [f.result(10) for f in fs[1:]] == [2 ** i for i in range(10)]
    assert fs[0].result(10) is True


def test_shutdown_cancel_futures():
    ex = TPE(max_workers=1)
    release, started = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(30)
        return "ran"

    running = ex.submit(block)
    queued = [ex.submit(pow, 2, i) for i in range(20)]
    assert started.wait(10)
    later(0.1, release.set)
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == "ran"
    assert all(f.cancelled() for f in queued)
    assert all(f.done() for f in queued)


def test_context_manager():
    with TPE(max_workers=2) as ex:
        assert isinstance(ex, TPE)
        fs = [ex.submit(time.sleep, 0.01) for _ in range(6)]
    assert all(f.done() for f in fs)  # __exit__ waited
    with pytest.raises(RuntimeError):
        ex.submit(pow, 2, 2)


def test_context_manager_exit_on_exception():
    with pytest.raises(KeyError):
        with TPE(max_workers=1) as ex:
            f = ex.submit(time.sleep, 0.02)
            raise KeyError("body")
    assert f.done()


def test_shutdown_cancels_nothing_by_default():
    ex = TPE(max_workers=1)
    release = threading.Event()
    ex.submit(release.wait, 30)
    fs = [ex.submit(pow, 3, i) for i in range(5)]
    later(0.05, release.set)
    ex.shutdown(wait=True)
    assert [f.result(0) for f in fs] == [3 ** i for i in range(5)]


# ==========================================================================
# Workers: threading.local, reuse, tracebacks


def test_threading_local_is_per_worker():
    local = threading.local()
    ex = TPE(max_workers=4)

    def task(_):
        if not hasattr(local, "owner"):
            local.owner = threading.get_ident()
            local.count = 0
        local.count += 1
        time.sleep(0.001)
        return local.owner, threading.get_ident()

    try:
        pairs = list(ex.map(task, range(200)))
    finally:
        ex.shutdown(wait=True)
    assert all(owner == ident for owner, ident in pairs)
    assert not hasattr(local, "owner")  # the main thread's copy is untouched


def test_idle_workers_are_reused():
    ex = TPE(max_workers=8)
    try:
        idents = {ex.submit(threading.get_ident).result(10) for _ in range(30)}
    finally:
        ex.shutdown(wait=True)
    # One at a time, an idle worker is always free: CPython runs them all on
    # one thread; allow one spare for a worker still on its way to idle.
    assert len(idents) <= 2, len(idents)


def _innermost_raiser():
    raise LookupError("from deep inside")


def _middle_layer():
    _innermost_raiser()


def test_exception_keeps_its_traceback(executor):
    f = executor.submit(_middle_layer)
    exc = f.exception(10)
    assert isinstance(exc, LookupError)
    assert exc.__traceback__ is not None
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "_innermost_raiser" in text and "_middle_layer" in text
    try:
        f.result()
    except LookupError as raised:
        text = "".join(traceback.format_exception(type(raised), raised, raised.__traceback__))
        assert "_innermost_raiser" in text, text
    else:
        pytest.fail("result() did not raise")


# ==========================================================================
# Interpreter exit: no hang, no lost work


#: The child's way to get the module under test (the env var is inherited).
_CHILD_IMPORT = (
    "import concurrent.futures as fut\n"
    "if os.environ.get('PLAIT_FUTURES_STANDIN') != '1':\n"
    "    import plait.futures as fut"
)


def run_child(code, timeout=30):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("ending", ["plain", "del_executor", "shutdown_no_wait"])
def test_interpreter_exit_runs_all_submitted_work(ending):
    code = textwrap.dedent("""
        import os, sys, time
        {imp}
        def job(i):
            time.sleep(0.01)
            os.write(1, b"job %d\\n" % i)  # one write: lines never interleave
        ex = fut.ThreadPoolExecutor(max_workers=3)
        for i in range(40):
            ex.submit(job, i)
        if {ending!r} == "del_executor":
            del ex
        elif {ending!r} == "shutdown_no_wait":
            ex.shutdown(wait=False)
        print("main done", flush=True)
    """).format(imp=textwrap.indent(_CHILD_IMPORT, ""), ending=ending)
    t0 = time.monotonic()
    p = run_child(code)
    assert time.monotonic() - t0 < 30
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    jobs = sorted(int(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("job"))
    assert jobs == list(range(40))
    assert "main done" in p.stdout


def test_interpreter_exit_with_idle_pool_does_not_hang():
    code = textwrap.dedent("""
        import os
        {imp}
        ex = fut.ThreadPoolExecutor(max_workers=4)
        assert ex.submit(pow, 2, 8).result() == 256
        print("ok", flush=True)
    """).format(imp=_CHILD_IMPORT)
    p = run_child(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


def test_submit_after_interpreter_shutdown_is_refused():
    code = textwrap.dedent("""
        import atexit, os
        @atexit.register
        def last():
            try:
                ex.submit(id, None)
            except RuntimeError as e:
                print("refused:", e, flush=True)
        {imp}
        ex = fut.ThreadPoolExecutor(max_workers=2)
        ex.submit(id, 1).result()
    """).format(imp=_CHILD_IMPORT)
    p = run_child(code)
    assert p.returncode == 0, p.stderr
    # CPython says "after interpreter shutdown", or "after shutdown" once a
    # worker has seen the interpreter shutting down and marked its pool.
    assert re.search(r"refused: cannot schedule new futures after (interpreter )?shutdown",
                     p.stdout), p.stdout
