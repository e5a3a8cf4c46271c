"""plait.futures mixed with the standard library, one test per line of the
issue's interoperability list:

* ``isinstance(f, concurrent.futures.Future)`` is true;
* the standard library's ``concurrent.futures.wait`` and ``as_completed``
  accept plait futures;
* plait's ``wait`` and ``as_completed`` accept a mix of plait and standard
  futures;
* ``asyncio.wrap_future(plait_future)``;
* ``loop.run_in_executor(plait_executor, fn)``;
* ``loop.set_default_executor(plait_executor)`` then
  ``run_in_executor(None, fn)``;
* ``asyncio.to_thread`` with plait set as the default executor.

All on the standard asyncio event loop.  With ``PLAIT_FUTURES_STANDIN=1``
the "plait" side is ``concurrent.futures`` itself (validates the tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import os
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(60)


def futures_under_test():
    """plait.futures, or concurrent.futures with PLAIT_FUTURES_STANDIN=1."""
    if os.environ.get("PLAIT_FUTURES_STANDIN") == "1":
        return cf
    return pytest.importorskip(
        "plait.futures", reason="plait.futures is not importable (build plait; "
        "PLAIT_FUTURES_STANDIN=1 runs these tests against concurrent.futures)")


fut = futures_under_test()
PREFIX = "PlaitInterop"


@pytest.fixture
def plait_pool():
    ex = fut.ThreadPoolExecutor(max_workers=3, thread_name_prefix=PREFIX)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def std_pool():
    ex = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="StdInterop")
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def later(delay, fn, *args):
    t = threading.Timer(delay, fn, args)
    t.start()
    return t


def in_plait_worker() -> str:
    return threading.current_thread().name


# --------------------------------------------------------------------------
# isinstance


def test_isinstance_concurrent_futures_future(plait_pool):
    assert isinstance(fut.Future(), cf.Future)
    f = plait_pool.submit(pow, 2, 5)
    assert isinstance(f, cf.Future)
    assert isinstance(f, fut.Future)
    assert f.result(10) == 32


def test_executor_isinstance_executor(plait_pool):
    # asyncio.set_default_executor (3.11+) requires a ThreadPoolExecutor.
    assert isinstance(plait_pool, cf.Executor)
    assert isinstance(plait_pool, cf.ThreadPoolExecutor)


# --------------------------------------------------------------------------
# the standard library's wait / as_completed over plait futures


def test_stdlib_wait_all_completed_on_plait_futures(plait_pool):
    fs = [plait_pool.submit(time.sleep, 0.01 * i) for i in range(6)]
    done, not_done = cf.wait(fs, timeout=30)
    assert done == set(fs) and not not_done


def test_stdlib_wait_first_completed_on_plait_futures():
    a, b = fut.Future(), fut.Future()
    later(0.05, a.set_result, "a")
    done, not_done = cf.wait([a, b], timeout=10, return_when=cf.FIRST_COMPLETED)
    assert done == {a} and not_done == {b}


def test_stdlib_wait_first_exception_on_plait_futures(plait_pool):
    release = threading.Event()
    ok = plait_pool.submit(pow, 2, 2)
    bad = plait_pool.submit(divmod, 1, 0)
    slow = plait_pool.submit(release.wait, 30)
    try:
        done, not_done = cf.wait([ok, bad, slow], timeout=10, return_when=cf.FIRST_EXCEPTION)
        assert bad in done and slow in not_done
    finally:
        release.set()


def test_stdlib_wait_timeout_and_cancelled_plait_futures():
    pending = fut.Future()
    notified = fut.Future()
    notified.cancel()
    notified.set_running_or_notify_cancel()
    done, not_done = cf.wait([pending, notified], timeout=0.05)
    assert done == {notified} and not_done == {pending}


def test_stdlib_as_completed_on_plait_futures():
    a, b, c = fut.Future(), fut.Future(), fut.Future()
    c.set_result("c")
    later(0.03, b.set_result, "b")
    later(0.1, a.set_exception, ValueError("a"))
    order = list(cf.as_completed([a, b, c], timeout=10))
    assert order == [c, b, a]


def test_stdlib_as_completed_timeout_on_plait_futures():
    a = fut.Future()
    with pytest.raises(cf.TimeoutError):
        list(cf.as_completed([a], timeout=0.05))
    a.set_result(1)
    assert list(cf.as_completed([a], timeout=0)) == [a]


def test_stdlib_as_completed_on_plait_executor(plait_pool):
    fs = [plait_pool.submit(pow, 3, i) for i in range(30)]
    assert set(cf.as_completed(fs, timeout=30)) == set(fs)


# --------------------------------------------------------------------------
# plait's wait / as_completed over a mix


def test_plait_wait_on_mixed_futures(plait_pool, std_pool):
    mixed = [plait_pool.submit(pow, 2, i) for i in range(5)]
    mixed += [std_pool.submit(pow, 3, i) for i in range(5)]
    bare_std, bare_plait = cf.Future(), fut.Future()
    later(0.05, bare_std.set_result, "std")
    later(0.08, bare_plait.set_result, "plait")
    mixed += [bare_std, bare_plait]
    done, not_done = fut.wait(mixed, timeout=30)
    assert done == set(mixed) and not not_done


def test_plait_wait_first_completed_mixed():
    std_f, plait_f = cf.Future(), fut.Future()
    later(0.05, std_f.set_result, 1)
    done, not_done = fut.wait([std_f, plait_f], timeout=10, return_when=fut.FIRST_COMPLETED)
    assert done == {std_f} and not_done == {plait_f}
    later(0.05, plait_f.set_result, 2)
    done, not_done = fut.wait([std_f, plait_f], timeout=10, return_when=fut.ALL_COMPLETED)
    assert done == {std_f, plait_f}


def test_plait_wait_first_exception_mixed():
    std_f, plait_f, other = cf.Future(), fut.Future(), cf.Future()
    later(0.03, plait_f.set_result, 1)
    later(0.06, std_f.set_exception, KeyError("std"))
    done, not_done = fut.wait([std_f, plait_f, other], timeout=10,
                              return_when=fut.FIRST_EXCEPTION)
    assert done == {std_f, plait_f} and not_done == {other}


def test_plait_wait_timeout_mixed():
    done_std = cf.Future()
    done_std.set_result(0)
    pending_std, pending_plait = cf.Future(), fut.Future()
    done, not_done = fut.wait([done_std, pending_std, pending_plait], timeout=0.05)
    assert done == {done_std} and not_done == {pending_std, pending_plait}


def test_plait_as_completed_mixed(std_pool):
    std_f, plait_f, ready = cf.Future(), fut.Future(), fut.Future()
    ready.set_result("ready")
    later(0.03, plait_f.set_result, "plait")
    later(0.1, std_f.set_result, "std")
    from_std_pool = std_pool.submit(pow, 2, 4)
    got = [f for f in fut.as_completed([std_f, plait_f, ready, from_std_pool], timeout=10)]
    assert set(got) == {std_f, plait_f, ready, from_std_pool}
    assert got.index(plait_f) < got.index(std_f)
    assert got[0] is ready or got[0] is from_std_pool


def test_plait_as_completed_timeout_mixed():
    std_f, plait_f = cf.Future(), fut.Future()
    plait_f.set_result(1)
    got = []
    with pytest.raises(cf.TimeoutError) as info:
        for f in fut.as_completed([std_f, plait_f], timeout=0.05):
            got.append(f)
    assert got == [plait_f]
    assert str(info.value) == "1 (of 2) futures unfinished"


def test_mixed_waiters_leave_no_registrations_behind():
    """After wait/as_completed return, a later completion notifies nobody
    stale: completing the futures afterwards must not raise."""
    std_f, plait_f = cf.Future(), fut.Future()
    fut.wait([std_f, plait_f], timeout=0.01)
    with pytest.raises(cf.TimeoutError):
        list(fut.as_completed([std_f, plait_f], timeout=0.01))
    cf.wait([std_f, plait_f], timeout=0.01)
    std_f.set_result(1)
    plait_f.set_result(2)
    assert fut.wait([std_f, plait_f], timeout=1).not_done == set()


# --------------------------------------------------------------------------
# asyncio


def test_asyncio_wrap_future_result(plait_pool):
    async def main():
        f = plait_pool.submit(pow, 2, 20)
        return await asyncio.wrap_future(f)

    assert asyncio.run(main()) == 2 ** 20


def test_asyncio_wrap_future_exception():
    async def main():
        f = fut.Future()
        later(0.02, f.set_exception, LookupError("inner"))
        with pytest.raises(LookupError, match="inner"):
            await asyncio.wrap_future(f)
        return "ok"

    assert asyncio.run(main()) == "ok"


def test_asyncio_wrap_future_bare_future_set_from_thread():
    async def main():
        f = fut.Future()
        later(0.02, f.set_result, "from a thread")
        return await asyncio.wait_for(asyncio.wrap_future(f), 10)

    assert asyncio.run(main()) == "from a thread"


def test_asyncio_wrap_future_cancel_propagates():
    async def main():
        f = fut.Future()
        wrapped = asyncio.wrap_future(f)
        wrapped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wrapped
        return f

    f = asyncio.run(main())
    assert f.cancelled()


def test_asyncio_wrap_future_of_cancelled_plait_future():
    async def main():
        f = fut.Future()
        wrapped = asyncio.wrap_future(f)
        await asyncio.sleep(0)
        f.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(wrapped, 10)

    asyncio.run(main())


def test_run_in_executor_plait(plait_pool):
    async def main():
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(plait_pool, pow, 2, i) for i in range(20)))
        name = await loop.run_in_executor(plait_pool, in_plait_worker)
        return results, name

    results, name = asyncio.run(main())
    assert results == [2 ** i for i in range(20)]
    assert name.startswith(PREFIX)


def test_run_in_executor_plait_exception(plait_pool):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(plait_pool, divmod, 1, 0)
        return "ok"

    assert asyncio.run(main()) == "ok"


def test_set_default_executor_then_run_in_executor_none():
    pool = fut.ThreadPoolExecutor(max_workers=2, thread_name_prefix=PREFIX + "Default")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(pool)
        names = await asyncio.gather(
            *(loop.run_in_executor(None, in_plait_worker) for _ in range(6)))
        value = await loop.run_in_executor(None, pow, 3, 4)
        return names, value

    try:
        names, value = asyncio.run(main())  # its shutdown_default_executor shuts the pool
    finally:
        pool.shutdown(wait=True)
    assert value == 81
    assert all(n.startswith(PREFIX + "Default") for n in names), names
    with pytest.raises(RuntimeError):
        pool.submit(pow, 1, 1)  # asyncio.run shut the default executor down


def test_asyncio_to_thread_uses_plait_default_executor():
    pool = fut.ThreadPoolExecutor(max_workers=2, thread_name_prefix=PREFIX + "ToThread")
    var = contextvars.ContextVar("var", default="unset")

    def work(x):
        return threading.current_thread().name, var.get(), x * 2

    async def main():
        asyncio.get_running_loop().set_default_executor(pool)
        var.set("propagated")
        return await asyncio.gather(*(asyncio.to_thread(work, i) for i in range(5)))

    try:
        results = asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
    for i, (name, value, doubled) in enumerate(results):
        assert name.startswith(PREFIX + "ToThread"), name
        assert value == "propagated"  # to_thread copies the context
        assert doubled == 2 * i


def test_new_event_loop_with_plait_default_executor_closes_cleanly():
    pool = fut.ThreadPoolExecutor(max_workers=1)
    loop = asyncio.new_event_loop()
    try:
        loop.set_default_executor(pool)
        assert loop.run_until_complete(loop.run_in_executor(None, pow, 2, 3)) == 8
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        pool.shutdown(wait=True)
