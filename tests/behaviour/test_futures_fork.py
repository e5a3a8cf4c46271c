"""The executors in a child made by os.fork(): a thread pool starts fresh
workers there (the parent's queued calls are the parent's: never run twice),
a process pool the parent started says so at once (CPython's waits for
ever), and a pool made in the child works."""

import os
import threading

import plait.futures as pf
import plait.process as pp
import pytest
from _helpers import run_in_child

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def test_thread_pool_with_an_idle_worker():
    with pf.ThreadPoolExecutor(1) as ex:
        assert ex.submit(abs, -1).result(timeout=10) == 1  # its worker now waits, idle

        def child():
            assert ex.submit(abs, -2).result(timeout=10) == 2
            assert list(ex.map(abs, [-3, -4], timeout=10)) == [3, 4]
            ex.shutdown()

        run_in_child(child)
        assert ex.submit(abs, -5).result(timeout=10) == 5


def _note_pid(fd):
    os.write(fd, b"%d\n" % os.getpid())


def test_thread_pool_forked_while_a_task_runs():
    """The parent's running call and its queued one stay the parent's: the
    child's fresh worker runs only the child's calls."""
    release = threading.Event()
    r, w = os.pipe()
    try:
        with pf.ThreadPoolExecutor(1) as ex:
            running = ex.submit(release.wait, 10)
            queued = ex.submit(_note_pid, w)

            def child():
                assert ex.submit(abs, -2).result(timeout=10) == 2
                assert not queued.done()  # the parent runs it, not the child
                ex.shutdown(wait=True)

            run_in_child(child)
            release.set()
            assert running.result(timeout=10) is True
            queued.result(timeout=10)
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as f:
            r = -1
            assert f.read().split() == [b"%d" % os.getpid()]
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


def test_thread_pool_started_in_the_child():
    ex = pf.ThreadPoolExecutor(2)

    def child():
        assert [f.result(timeout=10) for f in [ex.submit(abs, -i) for i in range(5)]] == list(
            range(5)
        )
        ex.shutdown()

    run_in_child(child)
    ex.shutdown()


@pytest.mark.parametrize("kind", ["executor", "pool"])
def test_process_pool_of_the_parent_says_so(kind):
    """A process pool the parent started is the parent's: in the child its
    submit raises BrokenProcessPool at once (CPython's hangs), and a pool
    made in the child works."""
    if kind == "executor":
        pool = pf.ProcessPoolExecutor(1)
        assert pool.submit(abs, -1).result(timeout=60) == 1
        use = lambda p: p.submit(abs, -2).result(timeout=60)
    else:
        pool = pp.Pool(1)
        assert pool.apply(abs, (-1,)) == 1
        use = lambda p: p.apply_async(abs, (-2,)).get(timeout=60)
    try:

        def child():
            with pytest.raises(pf.BrokenProcessPool, match="parent of this forked process"):
                use(pool)
            fresh = pf.ProcessPoolExecutor(1) if kind == "executor" else pp.Pool(1)
            try:
                assert use(fresh) == 2
            finally:
                if kind == "executor":
                    fresh.shutdown()
                else:
                    fresh.close()
                    fresh.join()

        run_in_child(child, bound=60)
        assert use(pool) == 2  # the parent's pool is untouched
    finally:
        if kind == "executor":
            pool.shutdown()
        else:
            pool.close()
            pool.join()
