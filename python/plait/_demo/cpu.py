"""Demo section 3: CPU-bound work on threads and on processes (the GIL made visible)."""

from __future__ import annotations

import os
import time
from typing import Callable

from .common import (STALL_SECONDS, STDLIB_NAME, DemoContext, RunResult, process_futures, section,
                     verdict)
from .terminal import ProgressBar


def cpu_job(n: int) -> int:
    """Pure-Python CPU work: the sum of i*i for i < n, one bytecode loop
    (holds the GIL throughout; the closed form checks the answer)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def squares_below(n: int) -> int:
    return (n - 1) * n * (2 * n - 1) // 6


def run_cpu_jobs(make_pool: Callable[[], object], as_completed: Callable, inputs: list[int],
                 on_progress: Callable[[int, float], None]) -> tuple[int, float, bool, str]:
    """``inputs`` CPU jobs on the pool ``make_pool()`` builds; (done, seconds, ok, note).
    The time includes starting the pool and its workers."""
    done, total, errors = 0, 0, []
    t0 = time.perf_counter()
    with make_pool() as pool:
        fs = [pool.submit(cpu_job, n) for n in inputs]
        for f in as_completed(fs, timeout=STALL_SECONDS * 8):
            try:
                total += f.result()
                done += 1
            except Exception as exc:  # noqa: BLE001 - reported in the table
                errors.append(f"{type(exc).__name__}: {exc}")
            on_progress(done, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    expected = sum(squares_below(n) for n in inputs)
    ok, note = verdict(done, len(inputs), total, expected, errors)
    return done, seconds, ok, note


@section("cpu", "CPU-bound work: threads vs processes (the GIL made visible)", unit="jobs")
def cpu_section(ctx: DemoContext) -> list[RunResult]:
    import concurrent.futures as std_futures

    term = ctx.term
    futures, name, problem = process_futures(ctx.impls)
    if problem:
        term.write(f"  {problem}.")
        return []
    jobs = ctx.items or (8 if ctx.quick else 24)
    size = 500_000 if ctx.quick else 2_000_000
    workers = os.cpu_count() or 2
    inputs = [size + job for job in range(jobs)]
    term.write(f"  {jobs} jobs, each a pure-Python loop summing i*i for {size:,} values of i; "
               f"{workers} workers")
    term.write("  (os.cpu_count()).  Threads share one GIL, so they take turns; processes each "
               "have their own")
    term.write("  interpreter and run in parallel.  Times include starting the pool.")
    term.write()
    runs = [
        (f"{name} threads", lambda: futures.ThreadPoolExecutor(max_workers=workers),
         futures.as_completed),
        (f"{name} processes", lambda: futures.ProcessPoolExecutor(max_workers=workers),
         futures.as_completed),
        (f"{STDLIB_NAME} processes", lambda: std_futures.ProcessPoolExecutor(max_workers=workers),
         std_futures.as_completed),
    ]
    results = []
    for label, make_pool, as_completed in runs:
        bar = ProgressBar(term, f"{label:<16}", jobs, unit="jobs")
        bar.update(0, 0.0)
        try:
            done, seconds, ok, note = run_cpu_jobs(make_pool, as_completed, inputs, bar.update)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            done, seconds, ok, note = 0, 0.0, False, f"{type(exc).__name__}: {exc}"
        bar.finish(done, seconds, ok, note if not ok else "")
        results.append(RunResult(label, done, seconds, ok, note))
    return results
