"""Chaos on a private LocalCluster: 300 calls through ClusterExecutor, a mix
of results, exceptions, ``os._exit(n)``, SIGKILL of the call's own process
and hangs beyond a per-call time limit, while one whole dask worker (ours:
started by the executor's LocalCluster) is SIGKILLed mid-run.

Every future must end exactly once with the outcome of its kind; a log file
per call (one line per start, written before the call does anything else)
proves that no call ran twice. A call that started on the killed dask worker
ends with ``WorkerDied`` ("was lost"); a call only queued there is
resubmitted and runs once. Every wait is bounded; no duration is asserted."""

import importlib.util
import logging
import os
import signal
import time

import pytest

import plait.futures as pf
from _bounds import wait_until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                       reason="plait.cluster needs dask.distributed"),
]

N = 300
BOUND = 180          # every future ends within this (a hang bound)
TIME_LIMIT = 1.0     # the per-call limit of the "hang" calls
HANG = 600           # what a hang would sleep without the limit


class ChaosError(ValueError):
    pass


def log_start(path):
    # One O_APPEND write before anything else: it survives os._exit/SIGKILL.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"start %d\n" % os.getpid())
    finally:
        os.close(fd)


def chaos(kind, i, path):
    log_start(path)
    if kind == "ok":
        return i * 3
    if kind == "raise":
        raise ChaosError("chaos %d" % i)
    if kind == "exit":
        os._exit(10 + i % 7)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind in ("hang", "victim"):
        time.sleep(HANG)
        return "woke"
    raise AssertionError(kind)


def kind_of(i):
    # 300 calls: 12 hangs, 24 exits, 24 kills, 60 exceptions, 180 results.
    if i % 25 == 7:
        return "hang"
    if i % 25 in (3, 16):
        return "exit"
    if i % 25 in (5, 19):
        return "kill"
    if i % 5 == 1:
        return "raise"
    return "ok"


def starts(path):
    try:
        with open(path) as f:
            return f.read().count("start ")
    except FileNotFoundError:
        return 0


def check_outcome(kind, i, future):
    """The outcome a call of ``kind`` must have when its dask worker lived."""
    exc = future.exception(0)
    if kind == "ok":
        assert exc is None and future.result(0) == i * 3
    elif kind == "raise":
        assert type(exc).__name__ == "ChaosError" and str(exc) == "chaos %d" % i
    elif kind == "exit":
        assert isinstance(exc, pf.WorkerDied) and "code %d" % (10 + i % 7) in str(exc), exc
    elif kind == "kill":
        assert isinstance(exc, pf.WorkerDied) and "signal 9" in str(exc), exc
    elif kind == "hang":
        assert isinstance(exc, pf.TimeoutError), exc
    else:
        raise AssertionError(kind)


def test_chaos_300_calls_and_a_killed_dask_worker(tmp_path):
    from plait.cluster import ClusterExecutor

    for name in ("distributed.scheduler", "distributed.nanny", "distributed.worker",
                 "distributed.core", "distributed.comm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logs = tmp_path / "logs"
    logs.mkdir()
    # One dask thread (and one plait process) per dask worker: the victim
    # occupies its worker's only slot, so what the scheduler queued behind it
    # on that worker has not started when the worker dies.
    executor = ClusterExecutor(n_workers=2, threads_per_worker=1)
    try:
        client = executor._client
        ends = {}

        def track(i, future):
            ends[i] = 0

            def on_done(_f, i=i):
                ends[i] += 1
            future.add_done_callback(on_done)
            return future

        victim_log = str(logs / "victim")
        victim = track("victim", executor.schedule(chaos, ("victim", -1, victim_log)))
        wait_until(lambda: starts(victim_log) == 1, "the victim never started", BOUND)

        futures = []
        for i in range(N):
            kind = kind_of(i)
            timeout = TIME_LIMIT if kind == "hang" else None
            futures.append(track(i, executor.schedule(
                chaos, (kind, i, str(logs / str(i))), timeout=timeout)))

        # Mid-run: some calls done, many still to go.
        wait_until(lambda: sum(f.done() for f in futures) >= 40,
                   "the other dask worker made no progress", BOUND)
        assert sum(f.done() for f in futures) < N
        holder = next(addr for addr, keys in client.processing().items()
                      if victim._plait_task.key in keys)
        pid = client.run(os.getpid, workers=[holder])[holder]
        os.kill(pid, signal.SIGKILL)  # our LocalCluster's worker process

        done, not_done = pf.wait(futures + [victim], timeout=BOUND)
        assert not not_done, "%d futures never ended" % len(not_done)

        exc = victim.exception(0)
        assert isinstance(exc, pf.WorkerDied) and "was lost" in str(exc), exc
        assert starts(victim_log) == 1

        lost = resubmitted = 0
        for i, future in enumerate(futures):
            kind = kind_of(i)
            n = starts(str(logs / str(i)))
            assert not future.cancelled(), i
            exc = future.exception(0)
            if isinstance(exc, pf.WorkerDied) and "was lost" in str(exc):
                # Started on the killed dask worker: started once, not re-run.
                assert n == 1, (i, kind, n)
                lost += 1
            else:
                assert n == 1, (i, kind, n)  # ran, and exactly once
                check_outcome(kind, i, future)
            if future._plait_task.attempt > 0:
                resubmitted += 1
        # Queued on the killed worker, never started there: sent again, ran once.
        assert resubmitted >= 1
        # A future ends once: each done-callback ran exactly once, also after
        # every late message of the cluster had its chance (the drain below).
        executor.shutdown(wait=True)
        assert set(ends.values()) == {1}, {k: v for k, v in ends.items() if v != 1}
        assert lost <= N
    finally:
        executor.shutdown(wait=True, kill_workers=True)
