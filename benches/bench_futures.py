"""Thread-pool workloads: submit then collect, map, and a one-at-a-time round trip.

The issue's targets are against the standard library (``plait / stdlib``):

* submit n no-op tasks, then collect every result, with 2 and with 8
  workers: >= 8x less time per task (stdlib ~22-27 us/task on 2 cores);
* ``map`` over n items: >= 8x (stdlib ~28 us/item);
* one-at-a-time ``submit(fn).result()`` round trip: >= 1.5x (stdlib
  ~150-220 us).  Two GIL handoffs bound it, so its reference is the
  cheapest handoff two Python threads can do, two C locks used as binary
  semaphores (bench_sync's "C handoff"): the limit, not a target.

The reference for the bulk rows is a bare pool built from CPython's C
``_queue.SimpleQueue``: the main thread puts the callables on one queue, the
workers take them, call them and put the results on another, the main
thread takes n results.  No futures, no shutdown protocol: the floor for
moving a call to a worker thread and its result back.

n is sized by the harness's calibration (each repeat takes about
``--time`` seconds), not fixed at 100k; time per task is what is compared,
and is printed under each row.  The executor and its threads are created
and warmed up outside the timed part, and shut down after it.
"""

from __future__ import annotations

import threading
from itertools import repeat
from time import perf_counter
from typing import Callable

from bench_sync import c_lock_handoff
from harness import PLAIT, REF, STDLIB, BenchContext, Variant, Workload

GROUP = "futures"
TITLE = "futures: ThreadPoolExecutor submit/result, map, round trip"

Runner = Callable[[int], float]


def noop() -> None:
    return None


def identity(x):
    return x


def _warm(executor, workers: int) -> None:
    """Start every worker before timing (thread creation is not the subject)."""
    gate = threading.Barrier(workers + 1)
    fs = [executor.submit(gate.wait, 10) for _ in range(workers)]
    gate.wait(10)
    for f in fs:
        f.result()


def submit_then_collect(executor_type, workers: int) -> Runner:
    """Submit n no-op tasks, then wait for every result in submission order."""

    def run(n: int) -> float:
        executor = executor_type(max_workers=workers)
        try:
            _warm(executor, workers)
            submit = executor.submit
            t0 = perf_counter()
            fs = [submit(noop) for _ in repeat(None, n)]
            for f in fs:
                f.result()
            elapsed = perf_counter() - t0
        finally:
            executor.shutdown(wait=True)
        return elapsed

    return run


def map_all(executor_type, workers: int) -> Runner:
    """``list(executor.map(identity, range(n)))``."""

    def run(n: int) -> float:
        executor = executor_type(max_workers=workers)
        try:
            _warm(executor, workers)
            t0 = perf_counter()
            out = list(executor.map(identity, range(n)))
            elapsed = perf_counter() - t0
            assert len(out) == n
        finally:
            executor.shutdown(wait=True)
        return elapsed

    return run


def round_trip(executor_type) -> Runner:
    """n x ``submit(noop).result()``: one task in flight at a time, 1 worker."""

    def run(n: int) -> float:
        executor = executor_type(max_workers=1)
        try:
            _warm(executor, 1)
            submit = executor.submit
            t0 = perf_counter()
            for _ in repeat(None, n):
                submit(noop).result()
            elapsed = perf_counter() - t0
        finally:
            executor.shutdown(wait=True)
        return elapsed

    return run


def c_queue_pool(workers: int, per_item_arg: bool = False) -> Runner:
    """The reference: a pool of ``workers`` threads over two C SimpleQueues."""
    import _queue

    def run(n: int) -> float:
        tasks, results = _queue.SimpleQueue(), _queue.SimpleQueue()

        def worker() -> None:
            get, put = tasks.get, results.put
            while (item := get()) is not None:
                fn, arg = item
                put(fn(arg) if per_item_arg else fn())

        threads = [threading.Thread(target=worker, name=f"bench-cq-{i}", daemon=True)
                   for i in range(workers)]
        for t in threads:
            t.start()
        put, get = tasks.put, results.get
        t0 = perf_counter()
        if per_item_arg:
            for i in range(n):
                put((identity, i))
        else:
            item = (noop, None)
            for _ in repeat(None, n):
                put(item)
        for _ in repeat(None, n):
            get()
        elapsed = perf_counter() - t0
        for _ in threads:
            put(None)
        for t in threads:
            t.join()
        return elapsed

    return run


def workloads(ctx: BenchContext) -> list[Workload]:
    std = ctx.stdlib.futures
    pl = ctx.plait.futures if ctx.plait is not None else None
    plabel = ctx.plait.label if ctx.plait is not None else ""
    out: list[Workload] = []

    def variants(pattern, *args, ref: Variant) -> list[Variant]:
        vs = [Variant(STDLIB, "concurrent.futures.ThreadPoolExecutor",
                      pattern(std.ThreadPoolExecutor, *args)), ref]
        if pl is not None:
            vs.append(Variant(PLAIT, f"{plabel}: futures.ThreadPoolExecutor",
                              pattern(pl.ThreadPoolExecutor, *args)))
        return vs

    for workers in (2, 8):
        ref = Variant(REF, f"{workers} threads over two _queue.SimpleQueue (C)",
                      c_queue_pool(workers))
        out.append(Workload(
            GROUP, f"submit n no-ops, then results, {workers} wkrs", "tasks", "C queues",
            variants(submit_then_collect, workers, ref=ref),
            target=8.0, target_vs=STDLIB, per_op="task", start_n=500))

    ref = Variant(REF, "2 threads over two _queue.SimpleQueue (C)",
                  c_queue_pool(2, per_item_arg=True))
    out.append(Workload(
        GROUP, "map over n items, 2 workers", "items", "C queues",
        variants(map_all, 2, ref=ref),
        target=8.0, target_vs=STDLIB, per_op="item", start_n=500))

    for label, pinned in ctx.pin_modes():
        ref = Variant(REF, "two _thread locks as binary semaphores (C)", c_lock_handoff())
        out.append(Workload(
            GROUP, f"submit -> result 1 at a time, {label}", "trips", "C handoff",
            variants(round_trip, ref=ref),
            target=1.5, target_vs=STDLIB, per_op="trip", pinned=pinned, start_n=100))
    return out
