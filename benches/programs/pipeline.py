"""The demo's producer/consumer pipeline as a plain program: ``threading`` and
``queue`` only, nothing of plait's. ``python -m plait bench`` runs it as
``python pipeline.py N`` and as ``python -m plait run pipeline.py N``, side by
side (benches/bench_switch.py): what a user gets from the switch without
changing a line.

    source x1 -> [Queue(64)] -> transform x3 -> [PriorityQueue(64)] -> rank x3 -> [Queue(64)] -> sink x2

The same topology as ``python -m plait demo pipeline`` (python/plait/_demo/
pipeline.py): bounded queues (back-pressure, so every stage blocks and
wakes), a Lock-guarded counter per stage, a BoundedSemaphore in the rank
stage, the sink under a Condition the main thread waits on, a Barrier to
start and sentinels to shut down. The per-item work is tiny on purpose: the
program measures the queues and locks between the stages.

Prints one JSON line: items, seconds (from the start line to the last item
at the sink), whether the checksum and counters hold, and which classes
``threading.Lock()`` and ``queue.Queue()`` made (so a run that was meant to
be switched can be told from one that was not). Exit status 1 if anything
was lost, duplicated or stalled.
"""

import json
import queue
import sys
import threading
import time

MASK32 = 0xFFFF_FFFF
QUEUE_SIZE = 64
TRANSFORM_WORKERS, RANK_WORKERS, SINK_WORKERS = 3, 3, 2
RESOURCE_SLOTS = 2
LAST = 1 << 62  # PriorityQueue sentinels sort after every real item
STALL_SECONDS = 60.0  # a hang bound, not a timing


def transform(value):
    return (value * 2654435761 + 12345) & MASK32


def rank(value):
    return value ^ (value >> 13)


def classes(obj):
    """The modules along an object's class hierarchy, e.g. ``_thread>plait``."""
    return ">".join(c.__module__ for c in type(obj).__mro__ if c is not object)


def main(items):
    to_transform = queue.Queue(maxsize=QUEUE_SIZE)
    to_rank = queue.PriorityQueue(maxsize=QUEUE_SIZE)
    to_sink = queue.Queue(maxsize=QUEUE_SIZE)
    tally_lock = threading.Lock()
    handled = [0, 0, 0, 0]  # per stage, under tally_lock
    resource = threading.BoundedSemaphore(RESOURCE_SLOTS)
    arrived = threading.Condition()  # guards sink_state
    sink_state = {"count": 0, "total": 0, "duplicates": 0}
    seen = bytearray(items)
    start_line = threading.Barrier(1 + TRANSFORM_WORKERS + RANK_WORKERS + SINK_WORKERS + 1)

    def count(stage):
        with tally_lock:
            handled[stage] += 1

    def source():
        start_line.wait()
        put = to_transform.put
        for seq in range(items):
            put((seq, seq))
            count(0)

    def transformer():
        start_line.wait()
        get, put = to_transform.get, to_rank.put
        while (item := get()) is not None:
            seq, value = item
            put((seq & 7, seq, transform(value)))
            count(1)

    def ranker():
        start_line.wait()
        get, put = to_rank.get, to_sink.put
        while (item := get())[2] is not None:
            _, seq, value = item
            with resource:
                value = rank(value)
            put((seq, value))
            count(2)

    def sink():
        start_line.wait()
        get = to_sink.get
        while (item := get()) is not None:
            seq, value = item
            with arrived:
                if seen[seq]:
                    sink_state["duplicates"] += 1
                seen[seq] = 1
                sink_state["count"] += 1
                sink_state["total"] += value
                if sink_state["count"] == items:
                    arrived.notify_all()
            count(3)

    plan = ([source] + [transformer] * TRANSFORM_WORKERS + [ranker] * RANK_WORKERS
            + [sink] * SINK_WORKERS)
    threads = [threading.Thread(target=f, name=f"{f.__name__}-{i}", daemon=True)
               for i, f in enumerate(plan)]
    for t in threads:
        t.start()
    expected = sum(rank(transform(seq)) for seq in range(items))
    start_line.wait()
    t0 = time.perf_counter()
    with arrived:
        done = arrived.wait_for(lambda: sink_state["count"] >= items, timeout=STALL_SECONDS)
    seconds = time.perf_counter() - t0

    for _ in range(TRANSFORM_WORKERS):
        to_transform.put(None)
    for k in range(RANK_WORKERS):
        to_rank.put((LAST, -1 - k, None))
    for _ in range(SINK_WORKERS):
        to_sink.put(None)
    for t in threads:
        t.join(STALL_SECONDS)
    with arrived, tally_lock:
        ok = (done and not any(t.is_alive() for t in threads)
              and sink_state["count"] == items and sink_state["duplicates"] == 0
              and sink_state["total"] == expected and all(seen) and handled == [items] * 4)
    print(json.dumps({"items": items, "seconds": seconds, "ok": ok,
                      "lock": classes(tally_lock), "queue": classes(to_transform)}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
