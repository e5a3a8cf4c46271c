"""Ctrl-C latency: how soon a main thread blocked in a wait raises
KeyboardInterrupt after a real SIGINT.

The contract (DESIGN.md, "Signals") is that every blocked plait wait in the
main thread answers Ctrl-C within 100 ms, as a CPython lock wait does.  The
behaviour tests check that the interrupt happens, with a generous bound
against hangs; this row measures how soon.

One interrupt: the main thread blocks in a wait that never ends on its own
(a held Lock, an Event never set, an empty Queue); a helper thread, released
just before, sleeps ``SETTLE`` seconds so the wait is parked, notes the time
and sends SIGINT to the main thread with ``signal.pthread_kill`` (this
process only); the main thread notes when KeyboardInterrupt reached it.  The
timed part is only that latency, so the rate is interrupts per second of
latency and the ``us/SIGINT`` line under the row is the mean latency.

A repeat performs at most ``PER_REPEAT`` real interrupts (each also costs
``SETTLE`` of wall time) and scales their latency to the ``n`` the harness
asked for.  The worst single latency of each column is printed under the row,
next to the 100 ms contract.  The rows must run in the main thread, which is
where the harness runs workloads.
"""

from __future__ import annotations

import _thread
import signal
import threading
from time import perf_counter, sleep
from typing import Callable

from harness import PLAIT, REF, STDLIB, BenchContext, Variant, Workload

GROUP = "signals"
TITLE = "signals: Ctrl-C latency, main thread blocked in a wait, SIGINT by pthread_kill"

SETTLE = 0.002  # seconds the helper waits so the main thread is parked
PER_REPEAT = 40  # real interrupts per repeat (quick: a quarter)
CONTRACT = 0.1  # seconds: DESIGN.md's bound for answering Ctrl-C

Runner = Callable[[int], float]
#: Makes a fresh ``wait`` callable that blocks until interrupted.
WaitFactory = Callable[[], Callable[[], object]]


def held_lock(make_lock) -> WaitFactory:
    def make():
        lock = make_lock()
        lock.acquire()
        return lock.acquire

    return make


def unset_event(make_event) -> WaitFactory:
    return lambda: make_event().wait


def empty_queue(make_queue) -> WaitFactory:
    return lambda: make_queue().get


def interrupt_latency(make_wait: WaitFactory, cap: int, worst: dict[str, float],
                      role: str) -> Runner:
    """Interrupt ``min(n, cap)`` blocked waits; return their latency scaled to ``n``."""

    def run(n: int) -> float:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal rows must run in the main thread")
        count = max(1, min(n, cap))
        main = threading.main_thread().ident
        go = _thread.allocate_lock()
        go.acquire()
        sent = [0.0]

        def fire() -> None:
            for _ in range(count):
                go.acquire()
                sleep(SETTLE)
                sent[0] = perf_counter()
                signal.pthread_kill(main, signal.SIGINT)

        old = signal.signal(signal.SIGINT, signal.default_int_handler)
        helper = threading.Thread(target=fire, name="bench-sigint", daemon=True)
        total = 0.0
        try:
            helper.start()
            for _ in range(count):
                wait = make_wait()
                try:
                    go.release()
                    wait()
                except KeyboardInterrupt:
                    latency = perf_counter() - sent[0]
                else:
                    raise RuntimeError("the wait returned without an interrupt")
                total += latency
                worst[role] = max(worst.get(role, 0.0), latency)
            helper.join()
        finally:
            signal.signal(signal.SIGINT, old)
        return total * n / count

    return run


def worst_note(worst: dict[str, float]) -> Callable[[], list[str]]:
    def notes() -> list[str]:
        parts = [f"{role} {worst[role] * 1e3:.2f} ms" for role in (STDLIB, REF, PLAIT)
                 if role in worst]
        verdict = ""
        if PLAIT in worst:
            verdict = "; plait PASS" if worst[PLAIT] <= CONTRACT else "; plait FAIL"
        return [f"worst single interrupt: {', '.join(parts)} "
                f"(contract: within {CONTRACT * 1e3:.0f} ms{verdict})"]

    return notes


def workloads(ctx: BenchContext) -> list[Workload]:
    import queue as std_queue

    import _queue

    cap = max(5, PER_REPEAT // 4) if ctx.quick else PER_REPEAT
    rows = [
        # (name, reference, stdlib factory, C reference factory, plait factory, stdlib is ref)
        ("Ctrl-C in Lock.acquire()", "C lock", None,
         held_lock(_thread.allocate_lock), lambda pl: held_lock(pl.sync.Lock), True),
        ("Ctrl-C in Event.wait()", "C lock", unset_event(ctx.stdlib.sync.Event),
         held_lock(_thread.allocate_lock), lambda pl: unset_event(pl.sync.Event), False),
        ("Ctrl-C in Queue.get()", "C SimpleQ", empty_queue(std_queue.Queue),
         empty_queue(_queue.SimpleQueue), lambda pl: empty_queue(pl.queue.Queue), False),
    ]
    out = []
    for name, reference, std, ref, plait_wait, stdlib_is_ref in rows:
        worst: dict[str, float] = {}
        variants = []
        if std is not None:
            variants.append(Variant(STDLIB, f"stdlib: {name}",
                                    interrupt_latency(std, cap, worst, STDLIB)))
        variants.append(Variant(REF, f"C reference ({reference}): {name}",
                                interrupt_latency(ref, cap, worst, REF)))
        if ctx.plait is not None:
            variants.append(Variant(PLAIT, f"{ctx.plait.label}: {name}",
                                    interrupt_latency(plait_wait(ctx.plait), cap, worst, PLAIT)))
        out.append(Workload(GROUP, name, "SIGINT", reference, variants,
                            stdlib_is_ref=stdlib_is_ref, start_n=cap, per_op="SIGINT",
                            max_repeats=5, notes=worst_note(worst)))
    return out
