"""Timer workloads: many Timers started, then cancelled.

``threading.Timer`` is a thread per timer; plait's Timers share one Rust
timer thread and cost a map entry each.  The row times a batch of timers
that are all pending at once: start every one (interval one hour), cancel
every one, join every one (for ``threading.Timer`` the join is when the
thread, and its memory, is really gone; for plait it returns at once).

A batch is 100,000 timers for plait but only 2,000 for the standard
library: 100,000 threads would take minutes and gigabytes of address space
on this machine.  Rates are therefore per timer, each column at its own
batch size, which flatters the standard library if anything (fewer threads
alive at once).  One repeat is a whole number of batches; the harness's
size ``n`` only decides how many.

Memory cannot be a rate, so it is printed under the row, measured in a fresh
subprocess per implementation: the RSS growth while a whole batch is pending
(``/proc/self/statm``; covers thread stacks, the Rust heap and Python objects), and
the peak of the Python heap (``tracemalloc``), each divided by the batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import repeat
from time import perf_counter
from typing import Callable

from harness import PLAIT, STDLIB, BenchContext, Variant, Workload

GROUP = "timer"
TITLE = "timer: Timer start, cancel, join"

#: Timers pending at once, per column (see the module docstring).
PLAIT_BATCH = 100_000
STDLIB_BATCH = 2_000

Runner = Callable[[int], float]


def _noop() -> None:
    pass


def start_cancel_join(make_timer, batch: int) -> Runner:
    """Whole batches of ``batch`` timers: start all, cancel all, join all."""

    def run(n: int) -> float:
        batches = max(1, round(n / batch))
        total = 0.0
        for _ in range(batches):
            t0 = perf_counter()
            timers = [make_timer(3600, _noop) for _ in repeat(None, batch)]
            for t in timers:
                t.start()
            for t in timers:
                t.cancel()
            for t in timers:
                t.join()
            total += perf_counter() - t0
            del timers
        # Seconds for n timers at the rate this run measured.
        return total * n / (batches * batch)

    return run


PROBE = r"""
import gc, json, resource, sys, tracemalloc
which, n = sys.argv[1], int(sys.argv[2])
if which == "plait":
    from plait.sync import Timer
else:
    from threading import Timer

def noop():
    pass

def start_batch():
    timers = [Timer(3600, noop) for _ in range(n)]
    for t in timers:
        t.start()
    return timers

def end_batch(timers):
    for t in timers:
        t.cancel()
    for t in timers:
        t.join()

def rss():
    # Current RSS: with every timer of the batch pending, it is the peak.
    # (ru_maxrss would do, but a child inherits its parent's peak.)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

warm = Timer(0, noop)   # imports, first thread, timer thread
warm.start()
warm.join()
gc.collect()
rss0 = rss()
timers = start_batch()
rss1 = rss()
end_batch(timers)
del timers
gc.collect()
tracemalloc.start()
timers = start_batch()
heap = tracemalloc.get_traced_memory()[1]
end_batch(timers)
del timers
tracemalloc.stop()
print(json.dumps({"rss": (rss1 - rss0) / n, "heap": heap / n}))
"""


def _fmt_bytes(x: float) -> str:
    return f"{x / 1024:.1f} KiB" if x >= 1024 else f"{x:.0f} B"


def memory_notes(columns: list[tuple[str, int]]) -> Callable[[], list[str]]:
    """Peak memory per pending timer, one fresh subprocess per column."""

    def notes() -> list[str]:
        lines = ["peak memory per pending timer (fresh process; RSS growth / Python heap):"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        for which, batch in columns:
            r = subprocess.run([sys.executable, "-c", PROBE, which, str(batch)],
                               capture_output=True, text=True, timeout=300, env=env)
            if r.returncode != 0:
                lines.append(f"  {which:>6}, {batch:,} pending: error: "
                             f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            m = json.loads(r.stdout)
            lines.append(f"  {which:>6}, {batch:,} pending: {_fmt_bytes(m['rss'])} RSS, "
                         f"{_fmt_bytes(m['heap'])} Python heap")
        return lines

    return notes


def workloads(ctx: BenchContext) -> list[Workload]:
    std = ctx.stdlib.sync
    variants = [Variant(STDLIB, f"threading.Timer, batches of {STDLIB_BATCH:,}",
                        start_cancel_join(std.Timer, STDLIB_BATCH))]
    columns = [("stdlib", STDLIB_BATCH)]
    if ctx.plait is not None:
        pl = ctx.plait.sync
        variants.append(Variant(PLAIT, f"{ctx.plait.label}: sync.Timer, batches of {PLAIT_BATCH:,}",
                                start_cancel_join(pl.Timer, PLAIT_BATCH)))
        if ctx.plait.name == PLAIT and pl.__name__.startswith("plait"):
            columns.append(("plait", PLAIT_BATCH))
    return [Workload(
        GROUP, "Timers start+cancel+join, 100k (std 2k)", "timers", "(none)", variants,
        start_n=STDLIB_BATCH, notes=memory_notes(columns))]
