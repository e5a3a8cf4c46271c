"""Demo section 1: a multi-stage producer/consumer pipeline over bounded queues,
the same code on ``threading`` + ``queue`` and on ``plait.sync`` + ``plait.queue``."""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Callable

from .common import STALL_SECONDS, DemoContext, RunResult, section
from .terminal import ProgressBar

MASK32 = 0xFFFF_FFFF
QUEUE_SIZE = 64  # bounded queues: back-pressure between the stages
TRANSFORM_WORKERS, RANK_WORKERS, SINK_WORKERS = 3, 3, 2
RESOURCE_SLOTS = 2  # a pretend resource the rank stage may use 2 at a time
LAST = 1 << 62  # PriorityQueue sentinels sort after every real item


def transform(value: int) -> int:
    """Stage 2's work: a multiplicative hash, cheap on purpose.

    The per-item work is tiny so the pipeline measures what the demo is
    about: the cost of the queues and locks that connect the stages.
    """
    return (value * 2654435761 + 12345) & MASK32


def rank(value: int) -> int:
    """Stage 3's work: fold the high bits down."""
    return value ^ (value >> 13)


def expected_checksum(items: int) -> int:
    """What the sink must add up to if every item passed every stage once."""
    return sum(rank(transform(seq)) for seq in range(items))


def run_pipeline(sync: ModuleType, queue: ModuleType, items: int,
                 on_progress: Callable[[int, float], None]) -> tuple[int, float, bool, str]:
    """Push ``items`` items through four stages; return (delivered, seconds, ok, note).

    ``sync`` and ``queue`` are the modules to use: ``threading`` and ``queue``
    or ``plait.sync`` and ``plait.queue``.  Nothing else in here differs::

        source x1 -> [Queue] -> transform x3 -> [PriorityQueue] -> rank x3 -> [Queue] -> sink x2

    * bounded queues give back-pressure, so every stage blocks and wakes;
    * a ``Lock`` guards a shared counter of items handled per stage;
    * the rank stage uses a resource guarded by a ``BoundedSemaphore``;
    * the sink records every item under a ``Condition`` and notifies when the
      last one arrives; the main thread waits on it (with a timeout, to draw
      the progress bar);
    * a ``Barrier`` starts all threads together, an ``Event`` aborts the run
      if any worker fails.
    """
    to_transform = queue.Queue(maxsize=QUEUE_SIZE)
    to_rank = queue.PriorityQueue(maxsize=QUEUE_SIZE)
    to_sink = queue.Queue(maxsize=QUEUE_SIZE)
    failures = queue.SimpleQueue()

    tally_lock = sync.Lock()
    handled = [0, 0, 0, 0]  # per stage, under tally_lock
    resource = sync.BoundedSemaphore(RESOURCE_SLOTS)
    arrived = sync.Condition()  # its lock guards the sink's state below
    sink_state = {"count": 0, "total": 0, "duplicates": 0}
    seen = bytearray(items)
    abort = sync.Event()
    n_workers = 1 + TRANSFORM_WORKERS + RANK_WORKERS + SINK_WORKERS
    start_line = sync.Barrier(n_workers + 1)

    def count(stage: int) -> None:
        with tally_lock:
            handled[stage] += 1

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        """Run a worker body; report any exception and abort instead of hanging."""

        def worker() -> None:
            try:
                start_line.wait()
                body()
            except BaseException as exc:  # noqa: BLE001 - reported, then abort
                failures.put(f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")
                abort.set()

        return worker

    def source() -> None:
        put = to_transform.put
        for seq in range(items):
            put((seq, seq))
            count(0)

    def transformer() -> None:
        get, put = to_transform.get, to_rank.put
        while (item := get()) is not None:
            seq, value = item
            # Priority: a cheap bucket of the sequence number.
            put((seq & 7, seq, transform(value)))
            count(1)

    def ranker() -> None:
        get, put = to_rank.get, to_sink.put
        while (item := get())[2] is not None:
            _, seq, value = item
            with resource:
                value = rank(value)
            put((seq, value))
            count(2)

    def sink() -> None:
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

    plan = ([("source", source)] + [("transform", transformer)] * TRANSFORM_WORKERS
            + [("rank", ranker)] * RANK_WORKERS + [("sink", sink)] * SINK_WORKERS)
    threads = [threading.Thread(target=guarded(body), name=f"{name}-{i}", daemon=True)
               for i, (name, body) in enumerate(plan)]
    for t in threads:
        t.start()

    # The checksum is computed while the workers wait at the start line.
    expected = expected_checksum(items)
    start_line.wait()
    t0 = time.perf_counter()

    def finished() -> bool:
        return sink_state["count"] >= items or abort.is_set()

    last_count, last_change, note = -1, t0, ""
    while True:
        with arrived:
            done = arrived.wait_for(finished, timeout=0.1)
            delivered = sink_state["count"]
        now = time.perf_counter()
        on_progress(delivered, now - t0)
        if done:
            break
        if delivered != last_count:
            last_count, last_change = delivered, now
        elif now - last_change > STALL_SECONDS:
            note = f"stalled: no item arrived for {STALL_SECONDS:g} s"
            abort.set()
            break
    seconds = time.perf_counter() - t0

    if not abort.is_set():
        # Orderly shutdown, stage by stage; each worker exits on its sentinel.
        for _ in range(TRANSFORM_WORKERS):
            to_transform.put(None)
        for k in range(RANK_WORKERS):
            to_rank.put((LAST, -1 - k, None))
        for _ in range(SINK_WORKERS):
            to_sink.put(None)
        for t in threads:
            t.join(timeout=5.0)
        if any(t.is_alive() for t in threads):
            note = "a worker did not exit after its sentinel"

    errors = []
    while not failures.empty():
        errors.append(failures.get())
    if errors:
        note = "; ".join(errors[:3])
    with arrived:
        delivered = sink_state["count"]
        ok = (not note and delivered == items and sink_state["duplicates"] == 0
              and sink_state["total"] == expected and all(seen))
        if not ok and not note:
            note = (f"delivered {delivered:,} of {items:,}, "
                    f"{sink_state['duplicates']} duplicates, checksum "
                    f"{'matches' if sink_state['total'] == expected else 'differs'}")
    with tally_lock:
        if ok and handled != [items] * 4:
            ok, note = False, f"per-stage counters disagree: {handled}"
    return delivered, seconds, ok, note


@section("pipeline", "a 4-stage producer/consumer pipeline over bounded queues")
def pipeline_section(ctx: DemoContext) -> list[RunResult]:
    items = ctx.items or (20_000 if ctx.quick else 400_000)
    term = ctx.term
    term.write("  source x1 -> [Queue(64)] -> transform x3 -> [PriorityQueue(64)] -> rank x3 "
               "-> [Queue(64)] -> sink x2")
    term.write(f"  {items:,} items; a Lock-guarded counter per stage, a BoundedSemaphore in "
               "'rank', the sink under a Condition,")
    term.write("  a Barrier to start, an Event to abort; the same code on each implementation.")
    term.write()
    results = []
    for name, (sync, queue) in ctx.impls.items():
        bar = ProgressBar(term, name, items)
        bar.update(0, 0.0)
        delivered, seconds, ok, note = run_pipeline(sync, queue, items, bar.update)
        bar.finish(delivered, seconds, ok, note if not ok else "")
        results.append(RunResult(name, delivered, seconds, ok, note))
    return results
