"""Synchronisation workloads: uncontended primitive calls and a two-thread handoff.

References are CPython's own C types: ``_thread.allocate_lock()`` (what
``threading.Lock`` is) and ``_thread.RLock`` (what ``threading.RLock`` is).
An uncontended acquire+release pair of the C lock is the cost of two C method
calls, the floor for any primitive called from Python, so Semaphore and
Event are held against it too (issue 2, section 4).

plait.debug's cost (issue 14) has two rows for the uncontended plait Lock:
tracking on (the default) against tracking off (what the Lock cost before
plait.debug: target within 5%), and lock_order on against the default
(target at least half its speed), alone and with another lock held (every
acquire then checks an order).

The handoff workload (Event ping-pong) is bound by waking the other thread,
not by the primitive: its reference is the cheapest handoff two Python
threads can do, two C locks used as binary semaphores.  On virtual machines
waking a halted vCPU dominates, so it runs unpinned and pinned to one CPU.
"""

from __future__ import annotations

import _thread
import threading
from itertools import repeat
from time import perf_counter
from typing import Callable

from harness import PLAIT, REF, STDLIB, BenchContext, Variant, Workload

GROUP = "sync"
TITLE = "sync: Lock, RLock, Semaphore, BoundedSemaphore, Event"

Runner = Callable[[int], float]


def _c_rlock():
    """CPython's C RLock (``threading.RLock()`` returns one when it exists)."""
    return getattr(_thread, "RLock", None) or threading._CRLock  # type: ignore[attr-defined]


# --- uncontended pairs, one thread -------------------------------------------


def acquire_release(make) -> Runner:
    """n x ``acquire(); release()`` on one object, methods cached in locals."""

    def run(n: int) -> float:
        obj = make()
        acquire, release = obj.acquire, obj.release
        t0 = perf_counter()
        for _ in repeat(None, n):
            acquire()
            release()
        return perf_counter() - t0

    return run


def acquire_release_nested(make) -> Runner:
    """``acquire_release`` with another lock held throughout: in lock_order
    mode every acquire then checks an order (one the thread has seen)."""
    inner = acquire_release(make)

    def run(n: int) -> float:
        outer = make()
        with outer:
            return inner(n)

    return run


def with_block(make) -> Runner:
    """n x ``with lock: pass``: the context-manager protocol, as most code uses locks."""

    def run(n: int) -> float:
        lock = make()
        t0 = perf_counter()
        for _ in repeat(None, n):
            with lock:
                pass
        return perf_counter() - t0

    return run


def with_attribute(make):
    """``make`` whose objects carry an instance attribute (``ev.result = x``,
    which the edges issue made possible): on 3.12+ CPython's method-call
    specialisation handles instances with a ``__dict__`` differently."""

    def made():
        obj = make()
        obj.result = None
        return obj

    return made


def set_clear(make_event) -> Runner:
    """n x ``set(); clear()`` on an Event nobody waits on."""

    def run(n: int) -> float:
        event = make_event()
        set_, clear = event.set, event.clear
        t0 = perf_counter()
        for _ in repeat(None, n):
            set_()
            clear()
        return perf_counter() - t0

    return run


def in_debug_mode(runner: Runner, *, tracking: bool = True, lock_order: bool = False) -> Runner:
    """``runner`` with plait.debug's switches set for the timed part only
    (rows run interleaved, so every variant sets its own mode)."""
    import plait._plait as native

    def run(n: int) -> float:
        native._debug_configure(tracking=tracking)
        native._debug_configure(lock_order=lock_order)
        try:
            return runner(n)
        finally:
            native._debug_configure(tracking=True)
            native._debug_configure(lock_order=False)

    return run


#: plait's Lock acquire+release over the C lock's, uncontended, measured by
#: this bench at 804a718 (the commit before plait.debug): "today's speed".
TODAY_LOCK_VS_C = 1.70


def debug_workloads(pl, plabel: str, std) -> list[Workload]:
    """The plait.debug rows (empty when this plait has no debug switches)."""
    if not pl.__name__.startswith("plait."):  # --as-plait stand-in: nothing to switch
        return []
    try:
        import plait._plait as native
    except ImportError:
        return []
    if not (hasattr(native, "_debug_configure")):
        return []
    lock = acquire_release(pl.Lock)
    nested = acquire_release_nested(pl.Lock)
    std_row = Variant(STDLIB, "threading.Lock", acquire_release(std.Lock))
    c_row = Variant(REF, "_thread.allocate_lock() (C)", acquire_release(_thread.allocate_lock))
    return [
        # "Today's speed" is measured against a yardstick in the same run:
        # before plait.debug, plait's Lock did 1.70x the C lock's uncontended
        # acquire+release; the contract is at most 5% slower with tracking.
        Workload(GROUP, "Lock acq+rel, tracking, vs today", "pairs", "C Lock", [
            std_row,
            c_row,
            Variant(PLAIT, f"{plabel}: sync.Lock, tracking on (default)", in_debug_mode(lock)),
        ], target=round(0.95 * TODAY_LOCK_VS_C, 2)),
        # What tracking itself costs: one coarse clock read per acquire.
        Workload(GROUP, "Lock acquire+release, tracking on/off", "pairs", "track off", [
            std_row,
            Variant(REF, f"{plabel}: sync.Lock, tracking off", in_debug_mode(lock, tracking=False)),
            Variant(PLAIT, f"{plabel}: sync.Lock, tracking on (default)", in_debug_mode(lock)),
        ]),
        Workload(GROUP, "Lock acquire+release, lock_order", "pairs", "track on", [
            std_row,
            Variant(REF, f"{plabel}: sync.Lock, tracking on (default)", in_debug_mode(lock)),
            Variant(PLAIT, f"{plabel}: sync.Lock, lock_order on", in_debug_mode(lock, lock_order=True)),
        ], target=0.5),
        Workload(GROUP, "Lock acq+rel, another held, lock_order", "pairs", "track on", [
            Variant(STDLIB, "threading.Lock", acquire_release_nested(std.Lock)),
            Variant(REF, f"{plabel}: sync.Lock, tracking on (default)", in_debug_mode(nested)),
            Variant(PLAIT, f"{plabel}: sync.Lock, lock_order on", in_debug_mode(nested, lock_order=True)),
        ], target=0.5),
    ]


# --- handoff between two threads ----------------------------------------------


def event_ping_pong(make_event) -> Runner:
    """n round trips: A sets e1 and waits e2; B waits e1, clears it, sets e2.

    One untimed round trip first, so thread start-up stays out of the timing.
    """

    def run(n: int) -> float:
        e1, e2 = make_event(), make_event()

        def partner() -> None:
            wait1, clear1, set2 = e1.wait, e1.clear, e2.set
            for _ in repeat(None, n + 1):
                wait1()
                clear1()
                set2()

        thread = threading.Thread(target=partner, name="bench-pong", daemon=True)
        thread.start()
        set1, wait2, clear2 = e1.set, e2.wait, e2.clear
        set1()
        wait2()
        clear2()
        t0 = perf_counter()
        for _ in repeat(None, n):
            set1()
            wait2()
            clear2()
        elapsed = perf_counter() - t0
        thread.join()
        return elapsed

    return run


def c_lock_handoff() -> Runner:
    """The floor for a two-thread handoff: two C locks used as binary semaphores.

    A releases ``ping`` and blocks on ``pong``; B takes ``ping`` and releases
    ``pong``.  No Python-level primitive can hand over faster than this.
    """

    def run(n: int) -> float:
        ping, pong = _thread.allocate_lock(), _thread.allocate_lock()
        ping.acquire()
        pong.acquire()

        def partner() -> None:
            take, give = ping.acquire, pong.release
            for _ in repeat(None, n + 1):
                take()
                give()

        thread = threading.Thread(target=partner, name="bench-pong", daemon=True)
        thread.start()
        give, take = ping.release, pong.acquire
        give()
        take()
        t0 = perf_counter()
        for _ in repeat(None, n):
            give()
            take()
        elapsed = perf_counter() - t0
        thread.join()
        return elapsed

    return run


# --- the group -------------------------------------------------------------------


def workloads(ctx: BenchContext) -> list[Workload]:
    std = ctx.stdlib.sync
    pl = ctx.plait.sync if ctx.plait is not None else None
    plabel = ctx.plait.label if ctx.plait is not None else ""
    c_lock = _thread.allocate_lock
    c_rlock = _c_rlock()
    out: list[Workload] = []

    def trio(pattern, cls_name: str, ref_make, ref_what: str, ref_pattern=None) -> list[Variant]:
        vs = [Variant(STDLIB, f"threading.{cls_name}", pattern(getattr(std, cls_name))),
              Variant(REF, ref_what, (ref_pattern or pattern)(ref_make))]
        if pl is not None:
            vs.append(Variant(PLAIT, f"{plabel}: sync.{cls_name}", pattern(getattr(pl, cls_name))))
        return vs

    def duo(pattern, cls_name: str, ref_make, ref_what: str) -> list[Variant]:
        vs = [Variant(REF, ref_what, pattern(ref_make))]
        if pl is not None:
            vs.append(Variant(PLAIT, f"{plabel}: sync.{cls_name}", pattern(getattr(pl, cls_name))))
        return vs

    for cls_name in ("Semaphore", "BoundedSemaphore"):
        out.append(Workload(
            GROUP, f"{cls_name} acquire+release", "pairs", "C Lock",
            trio(acquire_release, cls_name, c_lock, "_thread.allocate_lock() (C)"),
            target=1.0))

    out.append(Workload(
        GROUP, "Event set+clear", "pairs", "C Lock",
        trio(set_clear, "Event", c_lock, "_thread.allocate_lock() acquire+release (C)",
             ref_pattern=acquire_release),
        target=1.0))

    # Information only: the cost of an instance attribute on plait's Event.
    out.append(Workload(
        GROUP, "Event set+clear, with an attribute", "pairs", "C Lock",
        [Variant(STDLIB, "threading.Event (.result set)", set_clear(with_attribute(std.Event))),
         Variant(REF, "_thread.allocate_lock() acquire+release (C)", acquire_release(c_lock))]
        + ([Variant(PLAIT, f"{plabel}: sync.Event (.result set)", set_clear(with_attribute(pl.Event)))]
           if pl is not None else [])))

    for cls_name, ref_make, ref_name, ref_what in (
        ("Lock", c_lock, "C Lock", "_thread.allocate_lock() (C) = threading.Lock"),
        ("RLock", c_rlock, "C RLock", "_thread.RLock (C) = threading.RLock"),
    ):
        out.append(Workload(
            GROUP, f"{cls_name} acquire+release", "pairs", ref_name,
            duo(acquire_release, cls_name, ref_make, ref_what),
            target=1.0, stdlib_is_ref=True))
        out.append(Workload(
            GROUP, f"{cls_name} with-block", "blocks", ref_name,
            duo(with_block, cls_name, ref_make, ref_what),
            target=1.0, stdlib_is_ref=True))

    if pl is not None:
        out.extend(debug_workloads(pl, plabel, std))

    for label, pinned in ctx.pin_modes():
        variants = [Variant(STDLIB, "threading.Event", event_ping_pong(std.Event)),
                    Variant(REF, "two _thread locks as binary semaphores (C)", c_lock_handoff())]
        if pl is not None:
            variants.append(Variant(PLAIT, f"{plabel}: sync.Event", event_ping_pong(pl.Event)))
        out.append(Workload(
            GROUP, f"Event ping-pong, 2 threads, {label}", "trips", "C handoff",
            variants, target=1.0, pinned=pinned, start_n=200))
    return out
