"""Chaos: 1,000 tasks on plait's ProcessPoolExecutor with seeded random
outcomes — a result, the task's own exception, a per-call time-out
(``schedule(timeout=...)``), a worker SIGKILLed mid-task (by the task
itself, or by this test from outside), a cancel while pending and a cancel
while running.

Every future must resolve exactly once (a done-callback counts), with the
outcome its plan says: the right result, the task's own exception,
``TimeoutError``, ``WorkerDied`` (naming SIGKILL) or ``CancelledError``.
Afterwards the pool shuts down and no child process of this test remains
(``ps --ppid``).  Every wait is bounded and pytest-timeout bounds the test.

The slow outcomes (each replaces a worker, a fresh interpreter) are kept to a
few dozen, so the test takes ~10-30 s on a 2-core machine; the 1,000 tasks
are mostly results and exceptions, which is also where lost or duplicated
completions would show.
"""

import collections
import concurrent.futures as cf
import multiprocessing
import os
import random
import signal
import subprocess
import threading
import time

import plait.futures as pf
import pytest

TASKS = 1000
WORKERS = 4
BOUND = 60  # seconds, for any single wait
SLEEPER = 30.0  # how long a task meant to be timed out / killed / cancelled sleeps
TIMEOUT = 0.25  # the per-call limit of the time-out tasks

#: outcome -> how many of the 1,000 tasks get it (the rest are results).
SLOW = {
    "exception": 150,
    "timeout": 12,
    "self_kill": 12,
    "test_kill": 8,
    "cancel_pending": 60,
    "cancel_running": 8,
}


class ChaosError(Exception):
    """The task's own exception, raised by 'exception' tasks."""


def result_task(i, payload):
    return i, payload[::-1]


def exception_task(i):
    raise ChaosError(f"task {i} failed on purpose")


def sleeper(seconds):
    time.sleep(seconds)
    return "should not finish"


def self_kill(delay):
    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(SLEEPER)


def report_pid_then_sleep(path, seconds):
    """Write this worker's pid to ``path`` (atomically), then sleep."""
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(seconds)
    return "should not finish"


def child_processes():
    """This process's children, except the ``ps`` that lists them."""
    ps = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "pid=,stat=,comm="],
                        capture_output=True, text=True, timeout=30, check=False)
    return [line.strip() for line in ps.stdout.splitlines()
            if line.split() and line.split()[-1] != "ps"]


def plan(rng):
    outcomes = [kind for kind, n in SLOW.items() for _ in range(n)]
    outcomes += ["result"] * (TASKS - len(outcomes))
    rng.shuffle(outcomes)
    return outcomes


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [int(os.environ.get("PLAIT_CHAOS_SEED", "20261121"))])
@pytest.mark.parametrize("method", ["fork", "spawn"])  # zygote-forked / fresh workers
def test_process_pool_chaos(seed, method, tmp_path):
    rng = random.Random(seed)
    outcomes = plan(rng)
    assert len(outcomes) == TASKS
    calls = collections.Counter()
    calls_lock = threading.Lock()

    def counted(i):
        def done(_f):
            with calls_lock:
                calls[i] += 1
        return done

    expected_results = {}
    futures = []
    # Children that existed before this pool (e.g. a multiprocessing
    # resource tracker or Manager started by an earlier test) are not ours.
    before = {line.split()[0] for line in child_processes()}
    pool = pf.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context(method))
    started = time.monotonic()
    try:
        for i, kind in enumerate(outcomes):
            if kind in ("result", "cancel_pending"):
                payload = rng.randbytes(rng.choice((0, 16, 1024, 70_000)))
                expected_results[i] = (i, payload[::-1])
                f = pool.submit(result_task, i, payload)
            elif kind == "exception":
                f = pool.submit(exception_task, i)
            elif kind == "timeout":
                f = pool.schedule(sleeper, (SLEEPER,), timeout=TIMEOUT)
            elif kind == "self_kill":
                f = pool.schedule(self_kill, (rng.uniform(0.0, 0.05),))
            elif kind in ("test_kill", "cancel_running"):
                f = pool.submit(report_pid_then_sleep, str(tmp_path / f"{i}.pid"), SLEEPER)
            else:  # pragma: no cover
                raise AssertionError(kind)
            f.add_done_callback(counted(i))
            futures.append(f)

        # Cancel the pending ones (nothing is dispatched until a worker is
        # free, and the pool is still busy with the first tasks).  A task the
        # pool reached first is not cancellable and must complete normally.
        cancelled_pending = set()
        for i, kind in enumerate(outcomes):
            if kind == "cancel_pending" and futures[i].cancel():
                cancelled_pending.add(i)
                assert futures[i].cancelled()

        # Act on the tasks that must be killed or cancelled from here once
        # they run, in whatever order the pool reaches them.
        todo = {i for i, kind in enumerate(outcomes) if kind in ("test_kill", "cancel_running")}
        deadline = time.monotonic() + 4 * BOUND
        while todo:
            assert time.monotonic() < deadline, f"tasks {sorted(todo)} never started"
            for i in sorted(todo):
                f = futures[i]
                assert not f.done(), f"task {i} ({outcomes[i]}) finished before it was acted on"
                # Act once the task is really executing: it has written its
                # pid.  (running() alone can mean "sent ahead to a busy
                # worker", and cancel() then says False, as in CPython.)
                pidfile = tmp_path / f"{i}.pid"
                if not (f.running() and pidfile.exists()):
                    continue
                if outcomes[i] == "cancel_running":
                    # Until the pool has seen the previous task's result, it
                    # may not know this one started: retry (bounded by the
                    # deadline above).
                    if f.cancel(kill=True):
                        assert f.cancelled()
                        todo.discard(i)
                else:
                    os.kill(int(pidfile.read_text()), signal.SIGKILL)
                    todo.discard(i)
            time.sleep(0.005)

        _done, not_done = cf.wait(futures, timeout=4 * BOUND)
        assert not not_done, f"{len(not_done)} futures never resolved"
        elapsed = time.monotonic() - started

        wrong = []
        for i, (kind, f) in enumerate(zip(outcomes, futures)):
            try:
                if kind == "result" or (kind == "cancel_pending" and i not in cancelled_pending):
                    if f.result(0) != expected_results[i]:
                        wrong.append((i, kind, "wrong result"))
                    continue
                if kind in ("cancel_pending", "cancel_running"):
                    assert f.cancelled(), "not cancelled"
                    with pytest.raises(cf.CancelledError):
                        f.result(0)
                    continue
                exc = f.exception(0)
                if kind == "exception":
                    assert type(exc) is ChaosError, repr(exc)
                    assert str(exc) == f"task {i} failed on purpose"
                elif kind == "timeout":
                    assert isinstance(exc, cf.TimeoutError), repr(exc)
                    assert not isinstance(exc, pf.WorkerDied)
                else:  # self_kill, test_kill
                    assert isinstance(exc, pf.WorkerDied), repr(exc)
                    assert isinstance(exc, cf.process.BrokenProcessPool)
                    assert "SIGKILL" in str(exc), str(exc)
            except BaseException as e:  # noqa: BLE001 - collected, reported once
                wrong.append((i, kind, f"{type(e).__name__}: {e}"))
        assert not wrong, f"{len(wrong)} wrong outcomes, e.g. {wrong[:5]}"

        # Most pending cancels must really have hit pending tasks, or this
        # test does not test them.
        assert len(cancelled_pending) >= SLOW["cancel_pending"] // 2, len(cancelled_pending)

        # The pool still works after all that.
        assert pool.submit(result_task, -1, b"ok").result(BOUND) == (-1, b"ko")
    finally:
        t0 = time.monotonic()
        pool.shutdown(wait=True, cancel_futures=True)
        assert time.monotonic() - t0 < BOUND

    # Every callback ran exactly once (give any in flight a moment).
    deadline = time.monotonic() + 5
    while sum(calls.values()) < TASKS and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    with calls_lock:
        counts = dict(calls)
    missing = [i for i in range(TASKS) if counts.get(i, 0) == 0]
    repeated = {i: n for i, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} done-callbacks never ran, e.g. {missing[:10]}"
    assert not repeated, f"done-callbacks ran more than once: {dict(list(repeated.items())[:10])}"

    # No worker survives the pool.
    deadline = time.monotonic() + 10
    left = [c for c in child_processes() if c.split()[0] not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [c for c in child_processes() if c.split()[0] not in before]
    assert left == [], f"child processes left after shutdown: {left}"
    print(f"chaos seed {seed}: {TASKS} tasks in {elapsed:.1f} s; "
          f"{len(cancelled_pending)} of {SLOW['cancel_pending']} pending cancels hit")
