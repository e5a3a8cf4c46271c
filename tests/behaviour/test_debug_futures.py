"""plait.debug for futures and pools: a future knows the callable it runs,
where it was submitted, and what runs it (a thread, a worker process); the
process pools list their workers with the task each runs.

Read from the raw state ``plait.debug`` builds its graph from
(``_plait._debug_state(all=True)``)."""

import multiprocessing as mp
import os
import sys
import threading
import time

import pytest

import plait.futures as pf
from plait import _plait
from plait.process import Pool, ThreadPool

from _helpers import run_in_child, wait_until

BOUND = 30.0


def here():
    """The caller's ``file:line``."""
    f = sys._getframe(1)
    return f"{f.f_code.co_filename}:{f.f_lineno}"


def state():
    return _plait._debug_state(all=True)


def future_id(fut):
    return fut._debug_id


def entry(fut):
    """The PRIMITIVE entry of ``fut`` in the raw state."""
    fid = future_id(fut)
    found = [p for p in state()["primitives"] if p["id"] == fid]
    assert len(found) == 1, f"future {fid:#x} not in the state"
    assert found[0]["kind"] == "future"
    return found[0]


def workers():
    return state()["workers"]


def _block(started, release, out):
    out.append(threading.get_ident())
    started.set()
    release.wait(BOUND)
    return 7


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# ---- threads ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_thread_pool_future_runs_on_its_worker_thread():
    started, release, out = threading.Event(), threading.Event(), []
    with pf.ThreadPoolExecutor(1) as ex:
        f = ex.submit(_block, started, release, out); site = here()  # noqa: E702
        assert started.wait(BOUND)
        e = entry(f)
        assert e["name"] == "_block"
        assert e["site"] == site
        assert e["state"] == "RUNNING"
        (worker,) = ex._threads
        assert e["runs_on"] == {"thread": worker.ident} == {"thread": out[0]}
        release.set()
        assert f.result(BOUND) == 7
    e = entry(f)
    assert e["state"] == "FINISHED"
    assert e["runs_on"] is None


@pytest.mark.timeout(60)
def test_queued_future_waited_for_shows_its_label():
    # A thread-pool future's label is made when its call starts, or when a
    # thread starts waiting for it: a waited-for queued future has it.
    started, release, out = threading.Event(), threading.Event(), []
    with pf.ThreadPoolExecutor(1) as ex:
        first = ex.submit(_block, started, release, out)
        assert started.wait(BOUND)
        queued = ex.submit(abs, -5); site = here()  # noqa: E702
        waiter = threading.Thread(target=queued.result, args=(BOUND,))
        waiter.start()
        wait_until(lambda: queued._waiter_idents, "the waiter parked")
        e = entry(queued)
        assert (e["state"], e["name"], e["site"], e["runs_on"]) == ("PENDING", "abs", site, None)
        release.set()
        waiter.join(BOUND)
        assert first.result(BOUND) == 7 and queued.result(BOUND) == 5


@pytest.mark.timeout(60)
def test_thread_pool_map_and_schedule_are_labelled():
    started, release, out = threading.Event(), threading.Event(), []
    with pf.ThreadPoolExecutor(1) as ex:
        # A delayed call: its future and the executor's future for it carry
        # the schedule() call site.
        f = ex.schedule(_block, (started, release, out), delay=0.01); site = here()  # noqa: E702
        assert (entry(f)["name"], entry(f)["site"]) == ("_block", site)
        assert started.wait(BOUND)
        wait_until(lambda: f._plait_inner is not None, "the delayed call was handed over")
        inner = entry(f._plait_inner)
        assert (inner["name"], inner["site"]) == ("_block", site)
        assert inner["runs_on"] == {"thread": out[0]}
        release.set()
        assert f.result(BOUND) == 7
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
    assert entry(f._plait_inner)["runs_on"] is None


@pytest.mark.timeout(60)
def test_future_run_by_user_code_runs_on_that_thread():
    f = pf.Future()
    ran, release = threading.Event(), threading.Event()
    idents = []

    def runner():
        idents.append(threading.get_ident())
        assert f.set_running_or_notify_cancel()
        ran.set()
        release.wait(BOUND)
        f.set_result(1)

    t = threading.Thread(target=runner)
    t.start()
    assert ran.wait(BOUND)
    assert entry(f)["runs_on"] == {"thread": idents[0]}
    release.set()
    t.join(BOUND)
    assert f.result(BOUND) == 1
    assert entry(f)["runs_on"] is None


@pytest.mark.timeout(60)
def test_mp_thread_pool_chunks_are_named_after_the_function():
    with ThreadPool(1) as p:
        r = p.map_async(abs, [-1, -2, -3], chunksize=1); site = here()  # noqa: E702
        fs = list(r._futures)
        assert r.get(BOUND) == [1, 2, 3]
        # Made when each call started (a thread pool defers them).
        assert {(entry(x)["name"], entry(x)["site"]) for x in fs} == {("abs", site)}
        r2 = p.apply_async(abs, (-4,)); site2 = here()  # noqa: E702
        assert r2.get(BOUND) == 4
        e = entry(r2._future)
        assert (e["name"], e["site"]) == ("abs", site2)


# ---- processes -------------------------------------------------------------


@pytest.fixture(params=["fork", "spawn"])
def context(request):
    return mp.get_context(request.param)


def _worker_of(fut, pool_name):
    """The ``workers`` entry running ``fut``, once the supervisor says so."""
    fid = future_id(fut)
    found = []

    def look():
        found[:] = [w for w in workers() if w["task"] == fid]
        return bool(found)

    wait_until(look, "the worker running the task is listed")
    (w,) = found
    assert w["pool"] == pool_name
    return w


@pytest.mark.timeout(120)
def test_process_pool_task_runs_on_a_worker_pid(context):
    with pf.ProcessPoolExecutor(2, mp_context=context) as ex:
        f = ex.submit(time.sleep, 60); site = here()  # noqa: E702
        wait_until(f.running, "the task started")
        e = entry(f)
        assert (e["name"], e["site"], e["state"]) == ("sleep", site, "RUNNING")
        pid = e["runs_on"]["worker"]
        assert pid != os.getpid()
        assert parent_of(pid) == os.getpid()
        w = _worker_of(f, ex._plait_name)
        assert w["pid"] == pid
        assert w["since"] is not None and w["since"] <= time.monotonic()
        # Every listed worker of this pool is a child of ours.
        mine = [x for x in workers() if x["pool"] == ex._plait_name]
        assert all(parent_of(x["pid"]) == os.getpid() for x in mine)
        assert f.cancel(kill=True)
        wait_until(lambda: not any(x["task"] == future_id(f) for x in workers()),
                   "the killed task is no longer listed")
        assert entry(f)["runs_on"] is None
        g = ex.submit(abs, -3)
        assert g.result(BOUND) == 3
        assert entry(g)["runs_on"] is None
    assert not [x for x in workers() if x["pool"] == ex._plait_name]


@pytest.mark.timeout(120)
def test_pool_apply_async_worker_is_listed_under_the_pool():
    with Pool(1) as p:
        assert p.map(abs, [-1, -2, -3], chunksize=2) == [1, 2, 3]
        r = p.apply_async(time.sleep, (60,)); site = here()  # noqa: E702
        f = r._future
        wait_until(f.running, "the task started")
        e = entry(f)
        assert (e["name"], e["site"]) == ("sleep", site)
        w = _worker_of(f, p._executor._plait_name)
        assert w["pool"].startswith("Pool-")
        assert e["runs_on"] == {"worker": w["pid"]}
        r2 = p.map_async(abs, [-1, -2], chunksize=1); site2 = here()  # noqa: E702
        assert {(entry(x)["name"], entry(x)["site"]) for x in r2._futures} == {("abs", site2)}
        p.terminate()
        p.join()
    assert entry(f)["runs_on"] is None


@pytest.mark.timeout(120)
def test_process_pool_map_futures_name_the_mapped_function():
    # map's futures are internal; what is visible is that map still works
    # with the label taken from the mapped function (chunked or not).
    with pf.ProcessPoolExecutor(1) as ex:
        assert list(ex.map(abs, [-1, -2, -3], chunksize=2)) == [1, 2, 3]
        assert list(ex.map(abs, [-1, -2], buffersize=1)) == [1, 2]


@pytest.mark.timeout(120)
def test_forked_child_lists_no_parent_workers():
    with pf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        f = ex.submit(time.sleep, 60)
        _worker_of(f, ex._plait_name)

        def child():
            # The parent's pool is not ours: no workers, and no hang.
            assert workers() == []
            started, release, out = threading.Event(), threading.Event(), []
            with pf.ThreadPoolExecutor(1) as tp:
                g = tp.submit(_block, started, release, out)
                assert started.wait(BOUND)
                assert entry(g)["runs_on"] == {"thread": out[0]}
                release.set()
                assert g.result(BOUND) == 7

        run_in_child(child)
        assert f.cancel(kill=True)


# ---- a refused wait --------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(_plait, "_debug_configure"), reason="plait.debug's binding not merged yet")
def test_result_wait_that_would_deadlock_raises():
    from plait.debug import DeadlockError
    from plait.sync import Lock

    before = _plait._debug_configure()
    _plait._debug_configure(deadlock="raise")
    try:
        lock = Lock()
        with pf.ThreadPoolExecutor(1) as ex:
            with lock:
                entered = threading.Event()

                def task():
                    entered.set()
                    with lock:
                        return 1

                f = ex.submit(task)
                assert entered.wait(BOUND)
                # Whichever of the two parks second closes the cycle and is
                # refused: this wait, or the task's acquire (then the future
                # ends with that error). Either way result() raises it.
                with pytest.raises(DeadlockError):
                    f.result()
            wait_until(f.done, "the task ended")
    finally:
        _plait._debug_configure(deadlock=before["deadlock"])
