"""Queue workloads: put+get in one thread, and a producer -> consumer handoff.

The reference is CPython's C ``_queue.SimpleQueue``: the cheapest queue a
Python program can call, so ``plait / reference`` says how close plait's
full-featured queues (maxsize, task_done/join, ordering) come to the bare C
cost of a method-call pair (issue 2, section 4).

Every runner caches bound methods in locals and loops with
``itertools.repeat`` so the loop itself costs as little as possible and the
same in every column.
"""

from __future__ import annotations

import threading
from itertools import repeat
from time import perf_counter
from typing import Callable

from harness import PLAIT, REF, STDLIB, BenchContext, Variant, Workload

GROUP = "queue"
TITLE = "queue: Queue, LifoQueue, PriorityQueue, SimpleQueue"

#: The producer's end-of-stream marker: compared by identity, so it costs the
#: same in every column.
STOP = object()


def _c_simple_queue():
    import _queue

    return _queue.SimpleQueue


def put_get_one_thread(make_queue) -> Callable[[int], float]:
    """n x (put one item, get it back) on a fresh queue; the queue never grows."""

    def run(n: int) -> float:
        q = make_queue()
        put, get = q.put, q.get
        t0 = perf_counter()
        for _ in repeat(None, n):
            put(1)
            get()
        return perf_counter() - t0

    return run


def batch_put_get_one_thread(make_queue, batch: int = 64) -> Callable[[int], float]:
    """n items in batches: put ``batch`` items, then get them all.

    Unlike put+get of one item, the queue holds ``batch`` items, so a
    PriorityQueue really orders (compares) them.  Descending keys make every
    put sift up through the heap.
    """
    keys = list(range(batch, 0, -1))

    def run(n: int) -> float:
        q = make_queue()
        put, get = q.put, q.get
        rounds = max(1, n // batch)
        t0 = perf_counter()
        for _ in repeat(None, rounds):
            for k in keys:
                put(k)
            for _ in keys:
                get()
        return (perf_counter() - t0) * n / (rounds * batch)

    return run


def producer_consumer(make_queue) -> Callable[[int], float]:
    """One producer thread puts n items then STOP; this thread gets them all.

    Timed from before the producer starts until the consumer has seen STOP
    and the producer has been joined: the end-to-end cost of moving n items
    between two threads, GIL handoffs included.
    """

    def run(n: int) -> float:
        q = make_queue()
        put, get = q.put, q.get

        def produce() -> None:
            for _ in repeat(None, n):
                put(1)
            put(STOP)

        producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
        t0 = perf_counter()
        producer.start()
        while get() is not STOP:
            pass
        producer.join()
        return perf_counter() - t0

    return run


def workloads(ctx: BenchContext) -> list[Workload]:
    CSimpleQueue = _c_simple_queue()
    stdq = ctx.stdlib.queue
    plq = ctx.plait.queue if ctx.plait is not None else None
    out: list[Workload] = []

    def variants(pattern, cls_name: str) -> list[Variant]:
        vs = [
            Variant(STDLIB, f"queue.{cls_name}", pattern(getattr(stdq, cls_name))),
            Variant(REF, "_queue.SimpleQueue (C)", pattern(CSimpleQueue)),
        ]
        if plq is not None:
            vs.append(Variant(PLAIT, f"{ctx.plait.label}: queue.{cls_name}",
                              pattern(getattr(plq, cls_name))))
        return vs

    for cls_name in ("Queue", "LifoQueue", "PriorityQueue"):
        out.append(Workload(
            GROUP, f"{cls_name} put+get, 1 thread", "pairs", "C SimpleQ",
            variants(put_get_one_thread, cls_name), target=0.8, start_n=5000))

    out.append(Workload(
        GROUP, "PriorityQueue 64 puts then 64 gets", "pairs", "C SimpleQ",
        variants(batch_put_get_one_thread, "PriorityQueue"), target=None, start_n=5000))

    out.append(Workload(
        GROUP, "Queue producer -> consumer, 2 threads", "items", "C SimpleQ",
        variants(producer_consumer, "Queue"), target=0.8, start_n=5000))

    simple = [Variant(REF, "_queue.SimpleQueue (C) = queue.SimpleQueue",
                      put_get_one_thread(CSimpleQueue))]
    if plq is not None:
        simple.append(Variant(PLAIT, f"{ctx.plait.label}: queue.SimpleQueue",
                              put_get_one_thread(plq.SimpleQueue)))
    out.append(Workload(
        GROUP, "SimpleQueue put+get, 1 thread", "pairs", "C SimpleQ",
        simple, target=1.0, stdlib_is_ref=True, start_n=5000))
    return out
