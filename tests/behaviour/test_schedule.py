"""``schedule(fn, args, kwargs, *, delay=None, timeout=None)`` on both
executors: the call runs after ``delay`` seconds, handed over by plait's one
shared timer thread (no thread per delayed call); ``cancel()`` before it
starts means it never runs; shutdown waits for pending delayed calls
(``wait=True``) or cancels them (``cancel_futures=True``, ``wait=False``).
Outcomes only: what ran, in which order, which states were seen; the one
clock comparison is a lower bound (a timer never fires early)."""

import asyncio
import concurrent.futures as cf
import math
import os
import threading
import time

import plait.futures as pf
import pytest

pytestmark = pytest.mark.timeout(120)
BOUND = 60


def started_at(tag):
    return tag, time.monotonic()


def pid_and(x):
    return os.getpid(), x


def boom(msg):
    raise ValueError(msg)


def touch(path):
    with open(path, "w") as f:
        f.write("ran")
    return "ran"


def spin_forever():
    while True:
        pass


@pytest.fixture(params=["thread", "process"])
def executor(request):
    if request.param == "thread":
        ex = pf.ThreadPoolExecutor(2)
    else:
        ex = pf.ProcessPoolExecutor(2)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def _until(pred):
    end = time.monotonic() + BOUND
    while not pred():
        assert time.monotonic() < end, "condition not reached within the bound"
        time.sleep(0.005)


def test_delayed_call_runs_after_its_delay(executor):
    before = time.monotonic()
    f = executor.schedule(started_at, ("a",), delay=0.3)
    assert isinstance(f, pf.Future) and isinstance(f, cf.Future)
    tag, start = f.result(BOUND)
    assert tag == "a"
    assert start - before >= 0.3 - 0.01  # never early
    assert f.done() and not f.cancelled() and not f.running()


def test_kwargs_and_exception(executor):
    f = executor.schedule(pid_and, kwargs={"x": 5}, delay=0.05)
    assert f.result(BOUND)[1] == 5
    g = executor.schedule(boom, ("no",), delay=0.05)
    assert isinstance(g.exception(BOUND), ValueError)
    with pytest.raises(ValueError, match="no"):
        g.result(0)


def test_two_delays_run_in_deadline_order():
    # One worker: the call whose delay ends first runs first, whatever the
    # order of the schedule() calls.
    for ex in (pf.ThreadPoolExecutor(1), pf.ProcessPoolExecutor(1)):
        with ex:
            late = ex.schedule(started_at, ("late",), delay=0.5)
            early = ex.schedule(started_at, ("early",), delay=0.05)
            assert early.result(BOUND)[1] < late.result(BOUND)[1]


def test_delay_none_or_zero_submits_now(executor):
    assert executor.schedule(pid_and, (1,)).result(BOUND)[1] == 1
    assert executor.schedule(pid_and, (2,), delay=0).result(BOUND)[1] == 2


def test_cancel_before_the_delay_means_it_never_runs(executor, tmp_path):
    flag = tmp_path / "ran"
    f = executor.schedule(touch, (str(flag),), delay=30)
    assert not f.running()
    assert f.cancel()
    assert f.cancelled() and f.done()
    with pytest.raises(cf.CancelledError):
        f.result(0)
    # shutdown(wait=True) has nothing to wait for, and the call never ran
    executor.shutdown(wait=True)
    assert not flag.exists()


def test_cancel_after_hand_over_before_start_thread_pool():
    # The delay passed while the only worker is busy: the call is queued in
    # the pool, not started, so cancel() still succeeds and it never runs.
    ran = []
    gate = threading.Event()
    with pf.ThreadPoolExecutor(1) as ex:
        blocker = ex.submit(gate.wait, BOUND)
        _until(blocker.running)
        f = ex.schedule(ran.append, ("x",), delay=0.05)
        _until(lambda: f._plait_inner is not None)  # handed to the pool
        assert not f.running()
        assert f.cancel()
        assert f.cancelled()
        gate.set()
    assert ran == []


def test_running_delayed_call_is_not_cancelled():
    gate = threading.Event()
    started = threading.Event()

    def work():
        started.set()
        gate.wait(BOUND)
        return "finished"

    with pf.ThreadPoolExecutor(1) as ex:
        f = ex.schedule(work, delay=0.05)
        assert started.wait(BOUND)
        assert f.running()
        assert not f.cancel()
        gate.set()
        assert f.result(BOUND) == "finished"


def test_ten_thousand_pending_delayed_calls_create_no_threads(executor):
    executor.schedule(pid_and, (0,)).result(BOUND)  # workers already up
    py_threads = threading.active_count()
    os_threads = len(os.listdir("/proc/self/task"))
    futures = [executor.schedule(pid_and, (i,), delay=3600) for i in range(10_000)]
    assert threading.active_count() == py_threads
    # at most the one shared timer thread appears (if it was not running)
    assert len(os.listdir("/proc/self/task")) <= os_threads + 1
    assert not any(f.done() for f in futures)
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)


def test_shutdown_wait_runs_pending_delayed_calls(executor):
    f = executor.schedule(pid_and, ("later",), delay=0.3)
    executor.shutdown(wait=True)
    assert f.done() and f.result(0)[1] == "later"


def test_with_block_runs_pending_delayed_calls():
    for ex in (pf.ThreadPoolExecutor(1), pf.ProcessPoolExecutor(1)):
        with ex:
            f = ex.schedule(pid_and, ("in with",), delay=0.2)
        assert f.result(0)[1] == "in with"


@pytest.mark.parametrize("how", [dict(wait=True, cancel_futures=True), dict(wait=False)])
def test_shutdown_cancels_pending_delayed_calls(executor, tmp_path, how):
    flag = tmp_path / "ran"
    f = executor.schedule(touch, (str(flag),), delay=30)
    executor.shutdown(**how)
    assert f.cancelled()
    executor.shutdown(wait=True)
    assert not flag.exists()


def test_process_shutdown_kill_workers_cancels_pending_delayed_calls(tmp_path):
    flag = tmp_path / "ran"
    ex = pf.ProcessPoolExecutor(1)
    f = ex.schedule(touch, (str(flag),), delay=30)
    ex.shutdown(wait=True, kill_workers=True)
    assert f.cancelled() and not flag.exists()


def test_schedule_after_shutdown_raises(executor):
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        executor.schedule(pid_and, (1,), delay=1)
    with pytest.raises(RuntimeError):
        executor.schedule(pid_and, (1,))


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (-0.001, ValueError), (math.nan, ValueError),
                                     (math.inf, ValueError), ("1", TypeError), ([], TypeError),
                                     (object(), TypeError)])
def test_bad_delay(executor, bad, exc):
    with pytest.raises(exc):
        executor.schedule(pid_and, (1,), delay=bad)


def test_thread_pool_timeout_must_be_none():
    with pf.ThreadPoolExecutor(1) as ex:
        with pytest.raises(ValueError):
            ex.schedule(pid_and, (1,), delay=0.1, timeout=1)
        with pytest.raises(ValueError):
            ex.schedule(pid_and, (1,), timeout=1)


def test_process_pool_delay_with_timeout():
    with pf.ProcessPoolExecutor(1) as ex:
        f = ex.schedule(spin_forever, delay=0.05, timeout=0.3)
        with pytest.raises(cf.TimeoutError):
            f.result(BOUND)
        assert ex.submit(pid_and, 3).result(BOUND)[1] == 3


def test_wait_as_completed_and_asyncio(executor):
    fs = [executor.schedule(pid_and, (i,), delay=0.05 * (3 - i)) for i in range(3)]
    done, not_done = pf.wait(fs, timeout=BOUND)
    assert done == set(fs) and not not_done
    fs = [executor.schedule(pid_and, (i,), delay=0.05) for i in range(3)]
    assert sorted(f.result()[1] for f in pf.as_completed(fs, timeout=BOUND)) == [0, 1, 2]
    fs = [executor.schedule(pid_and, (i,), delay=0.05) for i in range(3)]
    assert sorted(f.result()[1] for f in cf.as_completed(fs, timeout=BOUND)) == [0, 1, 2]

    async def main():
        f = executor.schedule(pid_and, ("aio",), delay=0.05)
        return await asyncio.wait_for(asyncio.wrap_future(f), BOUND)

    assert asyncio.run(main())[1] == "aio"


def test_asyncio_cancel_cancels_the_delayed_call(tmp_path):
    flag = tmp_path / "ran"

    async def main(ex):
        f = ex.schedule(touch, (str(flag),), delay=30)
        af = asyncio.wrap_future(f)
        af.cancel()
        with pytest.raises(asyncio.CancelledError):
            await af
        return f

    with pf.ThreadPoolExecutor(1) as ex:
        f = asyncio.run(main(ex))
        _until(f.done)
        assert f.cancelled()
    assert not flag.exists()


def test_done_callback_runs_once(executor):
    seen = []
    f = executor.schedule(pid_and, (1,), delay=0.05)
    f.add_done_callback(lambda fut: seen.append(fut.result()[1]))
    f.result(BOUND)
    _until(lambda: seen)
    g = executor.schedule(pid_and, (2,), delay=30)
    g.add_done_callback(lambda fut: seen.append("cancelled" if fut.cancelled() else "?"))
    assert g.cancel()
    assert seen == [1, "cancelled"]


def test_shutdown_wait_from_the_timer_thread_raises_instead_of_hanging():
    # A plait.Timer's function runs on the shared timer thread, which is the
    # one that must hand the delayed calls over: waiting there would wait
    # for itself.
    import plait

    seen = []
    ex = pf.ThreadPoolExecutor(1)
    f = ex.schedule(pid_and, ("later",), delay=0.3)

    def on_timer():
        try:
            ex.shutdown(wait=True)
        except RuntimeError as exc:
            seen.append(exc)

    t = plait.Timer(0.01, on_timer)
    t.start()
    t.join(BOUND)
    assert len(seen) == 1
    assert f.result(BOUND)[1] == "later"  # still runs
    ex.shutdown(wait=True)


def test_ctrl_c_while_shutdown_waits_for_a_delayed_call():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import os, signal, threading, time
        import plait.futures as pf
        ex = pf.ThreadPoolExecutor(1)
        f = ex.schedule(print, ("never",), delay=600)
        main = threading.main_thread().ident
        threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
        try:
            ex.shutdown(wait=True)
        except KeyboardInterrupt:
            print("interrupted", f.done())
        ex.shutdown(wait=False)
        print("cancelled", f.cancelled())
        """
    )
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=BOUND)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["interrupted", "False", "cancelled", "True"]
