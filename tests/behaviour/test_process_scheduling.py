"""ProcessPoolExecutor schedules as users expect (issue 13): no task waits
behind a long one while a worker is idle, a future is RUNNING only once its
task started, cancel() stops every task that has not started (prefetched or
not) and never a running one (``cancel(kill=True)`` does), shutdown waits
only for what started, a task may run a pool of its own, and Ctrl-C in a
``with`` block ends the program promptly with no worker left.

Outcomes only: which worker (pid) ran what, which states were seen, what
ran at all; concurrency is proven by a rendezvous the tasks can only pass
when all of them run at once. Every wait is bounded."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import _helpers
from _bounds import alive

import concurrent.futures as cf
import multiprocessing as mp
import plait.futures as pf

pytestmark = pytest.mark.timeout(180)
BOUND = 60


def square(x):
    return x * x


def touch(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)


def rendezvous(directory, me, n):
    """Say "I run" and wait until ``n`` tasks said so: passing proves
    they all ran at the same time. Returns (pid, met)."""
    touch(os.path.join(directory, f"here-{me}"))
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if sum(name.startswith("here-") and not name.endswith(".tmp") for name in os.listdir(directory)) >= n:
            return os.getpid(), True
        time.sleep(0.005)
    return os.getpid(), False


def block(directory, me):
    """Mark that task ``me`` started, then wait for the test's release."""
    touch(os.path.join(directory, f"started-{me}"))
    deadline = time.monotonic() + BOUND
    while not os.path.exists(os.path.join(directory, "release")) and time.monotonic() < deadline:
        time.sleep(0.005)
    return me


def sleep_then_mark(directory, me, t):
    touch(os.path.join(directory, f"started-{me}"))
    time.sleep(t)
    touch(os.path.join(directory, f"done-{me}"))
    return me


def started(directory):
    return sorted(int(n.split("-")[1]) for n in os.listdir(directory)
                  if n.startswith("started-") and not n.endswith(".tmp"))


def wait_until(cond, what):
    _helpers.wait_until(cond, what, bound=BOUND)


def nested_sum(n):
    with pf.ProcessPoolExecutor(2) as ex:
        return os.getpid(), sum(ex.map(square, range(n)))


@pytest.fixture(params=["fork", "spawn"])
def ctx(request):
    return mp.get_context(request.param)


def test_two_long_tasks_on_two_workers_run_at_once_on_different_workers(ctx, tmp_path):
    # Issue: two sleep(2) tasks took 4 s, both on one worker.
    with pf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        fs = [ex.submit(rendezvous, str(tmp_path), i, 2) for i in range(2)]
        out = [f.result(BOUND + 10) for f in fs]
    assert all(met for _, met in out), out
    assert out[0][0] != out[1][0]


def test_eight_long_tasks_two_run_six_pending_and_cancellable(ctx, tmp_path):
    d = str(tmp_path)
    with pf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        fs = [ex.submit(block, d, i) for i in range(8)]
        wait_until(lambda: len(started(d)) == 2, "two tasks never started")
        time.sleep(0.2)  # let the pool prefetch if it would
        running = [i for i, f in enumerate(fs) if f.running()]
        assert running == started(d), "running() means started"
        pending = [i for i in range(8) if i not in running]
        assert all(not fs[i].running() and not fs[i].done() for i in pending)
        # cancel() succeeds for every task that has not started.
        assert [fs[i].cancel() for i in pending] == [True] * 6
        # ... and never for a running one, which runs on.
        assert [fs[i].cancel() for i in running] == [False, False]
        touch(os.path.join(d, "release"))
        assert [fs[i].result(BOUND) for i in running] == running
    assert all(fs[i].cancelled() for i in pending)
    assert started(d) == running, "a cancelled task ran"


def test_shutdown_after_cancelling_most_waits_only_for_what_started(ctx, tmp_path):
    d = str(tmp_path)
    ex = pf.ProcessPoolExecutor(2, mp_context=ctx)
    fs = [ex.submit(block, d, i) for i in range(40)]
    wait_until(lambda: len(started(d)) == 2, "two tasks never started")
    assert [f.cancel() for f in fs[4:]] == [True] * 36
    touch(os.path.join(d, "release"))
    ex.shutdown(wait=True)
    assert [f.result(0) for f in fs[:4]] == [0, 1, 2, 3]
    assert all(f.cancelled() for f in fs[4:])
    assert started(d) == [0, 1, 2, 3]


def test_stdlib_wait_counts_every_cancelled_queued_task_done(tmp_path):
    # The standard library's wait() counts a cancelled future done only once
    # the executor has told its waiters (CANCELLED_AND_NOTIFIED): cancelled
    # tasks queued behind a running one must all be told when it ends, not
    # a few per turn of the supervisor.
    d = str(tmp_path)
    with pf.ProcessPoolExecutor(1) as ex:
        first = ex.submit(block, d, 0)
        rest = [ex.submit(square, i) for i in range(10)]
        wait_until(lambda: started(d) == [0], "the first task never started")
        assert [f.cancel() for f in rest] == [True] * 10
        touch(os.path.join(d, "release"))
        assert first.result(timeout=BOUND) == 0
        done, not_done = cf.wait(rest, timeout=BOUND)
        assert not not_done, [f._state for f in not_done]
        assert all(f._state == "CANCELLED_AND_NOTIFIED" for f in rest)


def test_shutdown_cancel_futures_cancels_prefetched_tasks(ctx, tmp_path):
    d = str(tmp_path)
    ex = pf.ProcessPoolExecutor(2, mp_context=ctx)
    fs = [ex.submit(block, d, i) for i in range(10)]
    wait_until(lambda: len(started(d)) == 2, "two tasks never started")
    first = started(d)
    ex.shutdown(wait=False, cancel_futures=True)
    # The supervisor ends them in its own time: wait for that before the
    # running tasks may finish (they would take the next ones).
    wait_until(lambda: all(f.done() for i, f in enumerate(fs) if i not in first), "not cancelled")
    touch(os.path.join(d, "release"))
    ex.shutdown(wait=True)
    assert [i for i, f in enumerate(fs) if not f.cancelled()] == first
    assert started(d) == first


def test_tiny_tasks_do_not_wait_behind_a_long_one(ctx, tmp_path):
    # A long task and many tiny ones on two workers: every tiny one finishes
    # while the long one still runs (none is left prefetched behind it).
    d = str(tmp_path)
    with pf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        ex.submit(square, 1).result(BOUND)  # workers up
        long = ex.submit(block, d, 0)
        wait_until(lambda: started(d) == [0], "the long task never started")
        for _ in range(5):
            tiny = [ex.submit(square, i) for i in range(20)]
            assert [f.result(BOUND) for f in tiny] == [i * i for i in range(20)]
        assert not long.done()
        touch(os.path.join(d, "release"))
        assert long.result(BOUND) == 0


def test_map_timeout_cleanup_does_not_kill_running_work(ctx, tmp_path):
    # map's cleanup cancels every future, as CPython's: running ones finish.
    d = str(tmp_path)
    with pf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        ex.submit(square, 1).result(BOUND)
        it = ex.map(sleep_then_mark, [d, d], [0, 1], [1.0, 1.0], timeout=5)
        wait_until(lambda: started(d), "no task started")
        fs_started = started(d)
        with pytest.raises(cf.TimeoutError):
            for _ in ex.map(sleep_then_mark, [d], [2], [1.0], timeout=0.05):
                pass
        del it  # its cleanup cancels too
    ran = started(d)
    assert 0 in fs_started or 1 in fs_started
    done = sorted(int(n.split("-")[1]) for n in os.listdir(d) if n.startswith("done-") and not n.endswith(".tmp"))
    assert done == ran, "a task that started was killed"


def test_cancel_kill_stops_a_running_task_and_the_pool_goes_on(ctx, tmp_path):
    d = str(tmp_path)
    with pf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        f = ex.submit(block, d, 0)
        wait_until(lambda: started(d) == [0], "the task never started")
        assert f.cancel() is False and f.running()
        assert f.cancel(kill=True) and f.cancelled()
        assert ex.submit(square, 3).result(BOUND) == 9


def test_a_task_may_run_its_own_process_pool(ctx):
    # Issue: the zygote was forked while the start lock was held, so a
    # worker's own pool deadlocked, and the outer shutdown hung.
    ex = pf.ProcessPoolExecutor(2, mp_context=ctx)
    fs = [ex.submit(nested_sum, 10) for _ in range(3)]
    assert [f.result(BOUND)[1] for f in fs] == [285] * 3
    ex.shutdown(wait=True)


CTRL_C = """
import os, signal, sys, threading, time
import concurrent.futures as cf
import plait.futures as pf

DIR = os.environ["PLAIT_TEST_DIR"]

def sleepy(i):
    open(os.path.join(DIR, "ran-%d" % i), "w").close()
    time.sleep(0.05)
    return os.getpid()

def interrupt():
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT)

if __name__ == "__main__":
    pids = set()
    try:
        with pf.ProcessPoolExecutor(2{ctx}) as ex:
            if {as_completed}:
                results = (f.result() for f in cf.as_completed([ex.submit(sleepy, i) for i in range(1000)]))
            else:
                results = ex.map(sleepy, range(1000))
            for k, pid in enumerate(results):
                pids.add(pid)
                if k == 3:
                    threading.Thread(target=interrupt).start()
    finally:
        with open(os.path.join(DIR, "pids"), "w") as f:
            f.write(" ".join(map(str, pids)))
"""




def run_program(tmp_path, source):
    """Run ``source`` (dedented) as a script with ``PLAIT_TEST_DIR`` set to
    a fresh directory; return (the completed process, that directory)."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(source))
    runs = tmp_path / "runs"
    runs.mkdir()
    env = dict(os.environ, PLAIT_TEST_DIR=str(runs))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=BOUND, env=env)
    return out, runs


@pytest.mark.parametrize("loop", ["map", "as_completed"])
@pytest.mark.parametrize("method", ["auto", "spawn"])
def test_ctrl_c_in_a_loop_inside_with_stops_promptly(tmp_path, method, loop):
    ctx = "" if method == "auto" else ", mp_context=__import__('multiprocessing').get_context('spawn')"
    out, runs = run_program(tmp_path, CTRL_C.format(ctx=ctx, as_completed=loop == "as_completed"))
    assert out.returncode != 0
    assert "KeyboardInterrupt" in out.stderr, out.stderr
    ran = [n for n in os.listdir(runs) if n.startswith("ran-")]
    assert 4 <= len(ran) < 200, len(ran)
    pids = [int(p) for p in (runs / "pids").read_text().split()]
    assert pids
    wait_until(lambda: not any(alive(p) for p in pids), "a worker outlived its parent")


def test_second_ctrl_c_kills_running_tasks(tmp_path):
    out, runs = run_program(tmp_path, """
        import os, signal, threading, time
        import plait.futures as pf
        DIR = os.environ["PLAIT_TEST_DIR"]
        def forever():
            open(os.path.join(DIR, "pid-%d" % os.getpid()), "w").close()
            while True:
                time.sleep(0.01)
        def interrupt_twice():
            while not any(n.startswith("pid-") for n in os.listdir(DIR)):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)
        if __name__ == "__main__":
            threading.Thread(target=interrupt_twice, daemon=True).start()
            with pf.ProcessPoolExecutor(1) as ex:
                ex.submit(forever).result()
    """)
    assert out.returncode != 0
    assert "KeyboardInterrupt" in out.stderr, out.stderr
    pids = [int(n.split("-")[1]) for n in os.listdir(runs)]
    assert pids
    wait_until(lambda: not any(alive(p) for p in pids), "the running task's worker was not killed")



def nested_block(directory):
    ex = pf.ProcessPoolExecutor(1)
    ex.submit(block, directory, 1)
    return block(directory, 0)


def test_killing_a_worker_that_runs_its_own_pool_leaves_no_process(ctx, tmp_path):
    # The nested pool's workers die with the worker that owns them.
    d = str(tmp_path)
    with pf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        f = ex.submit(nested_block, d)
        wait_until(lambda: started(d) == [0, 1], "the nested task never started")
        pids = [int((tmp_path / f"started-{i}").read_text()) for i in (0, 1)]
        assert pids[0] != pids[1]
        assert f.cancel(kill=True)
        wait_until(lambda: not any(alive(p) for p in pids), "a nested worker outlived its parent")
        assert ex.submit(square, 4).result(BOUND) == 16
