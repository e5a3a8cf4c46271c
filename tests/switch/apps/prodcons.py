"""Producers and consumers on ``threading`` and ``queue`` only: a bounded
Queue with task_done/join, a PriorityQueue, a Condition-guarded tally, a
Semaphore limiting a section and a Barrier at the start. Prints counts and
checksums, which do not depend on the interleaving."""

import hashlib
import json
import queue
import threading

import _facts

PRODUCERS, CONSUMERS, ITEMS = 4, 4, 2000
print("switch:", json.dumps(_facts.switched()), flush=True)

work = queue.Queue(maxsize=16)
urgent = queue.PriorityQueue()
start = threading.Barrier(PRODUCERS + CONSUMERS)
tally = {"items": 0, "sum": 0, "digest": 0}
tally_changed = threading.Condition()
section = threading.Semaphore(2)
inside = []
inside_lock = threading.RLock()


def produce(p):
    start.wait()
    for i in range(ITEMS):
        work.put((p, i))
        if i % 100 == 0:
            urgent.put((i, p))


def consume():
    start.wait()
    while True:
        item = work.get()
        try:
            if item is None:
                return
            p, i = item
            digest = int.from_bytes(hashlib.sha256(f"{p}:{i}".encode()).digest()[:4], "big")
            with section:
                with inside_lock:
                    inside.append(1)
                    assert len(inside) <= 2
                with inside_lock:
                    inside.pop()
            with tally_changed:
                tally["items"] += 1
                tally["sum"] += p * ITEMS + i
                tally["digest"] ^= digest
                tally_changed.notify_all()
        finally:
            work.task_done()


producers = [threading.Thread(target=produce, args=(p,)) for p in range(PRODUCERS)]
consumers = [threading.Thread(target=consume) for _ in range(CONSUMERS)]
for thread in producers + consumers:
    thread.start()
with tally_changed:
    assert tally_changed.wait_for(lambda: tally["items"] == PRODUCERS * ITEMS, timeout=300)
for thread in producers:
    thread.join()
for _ in consumers:
    work.put(None)
work.join()
for thread in consumers:
    thread.join()
drained = []
while True:
    try:
        drained.append(urgent.get_nowait())
    except queue.Empty:
        break
print("items", tally["items"], "sum", tally["sum"], "digest", tally["digest"])
print("urgent in order", drained == sorted(drained), len(drained))
