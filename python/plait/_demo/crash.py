"""Demo section 4: a process-pool worker killed mid-flight; on plait only its job fails."""

from __future__ import annotations

import os
import time
from types import ModuleType
from typing import Callable

from .common import STALL_SECONDS, STDLIB_NAME, DemoContext, RunResult, process_futures, section
from .cpu import cpu_job, squares_below
from .terminal import ProgressBar

CRASH_WORK = 150_000  # loop iterations per ordinary job (a few ms)


def crash_job(job: int, kill: bool) -> int:
    """An ordinary job, or (``kill``) one whose process SIGKILLs itself mid-job,
    as the kernel's OOM killer or an operator would."""
    if kill:
        import signal

        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # never reached
    return cpu_job(CRASH_WORK + job)


def run_crash_batch(futures: ModuleType, jobs: int, victim: int, workers: int,
                    on_progress: Callable[[int, float], None]) -> dict:
    """Run the batch; return what happened to it."""
    from concurrent.futures.process import BrokenProcessPool

    done, total, failures = 0, 0, {}
    t0 = time.perf_counter()
    pool = futures.ProcessPoolExecutor(max_workers=workers)
    try:
        fs = {}
        for job in range(jobs):
            try:
                fs[pool.submit(crash_job, job, job == victim)] = job
            except BrokenProcessPool as exc:  # the standard library's pool broke
                failures[job] = exc
        for f in futures.as_completed(fs, timeout=STALL_SECONDS * 4):
            try:
                total += f.result()
                done += 1
            except Exception as exc:  # noqa: BLE001 - reported below
                failures[fs[f]] = exc
            on_progress(done + len(failures), time.perf_counter() - t0)
    finally:
        pool.shutdown(wait=True)
    expected = sum(squares_below(CRASH_WORK + job) for job in range(jobs) if job != victim)
    return {"done": done, "seconds": time.perf_counter() - t0, "failures": failures,
            "total_ok": total == expected}


@section("crash", "crash and recover: a worker killed mid-flight", unit="jobs")
def crash_section(ctx: DemoContext) -> list[RunResult]:
    import concurrent.futures as std_futures

    term = ctx.term
    futures, name, problem = process_futures(ctx.impls)
    if problem:
        term.write(f"  {problem}.")
        return []
    jobs = ctx.items or (40 if ctx.quick else 200)
    victim = jobs // 3
    workers = max(2, min(4, os.cpu_count() or 2))
    term.write(f"  {jobs} jobs on ProcessPoolExecutor({workers}); job {victim} SIGKILLs its own "
               "worker process mid-job.")
    term.write(f"  {name}: only that job fails (WorkerDied, naming the signal) and the pool "
               "replaces the worker;")
    term.write("  the standard library's pool breaks as a whole (BrokenProcessPool for "
               "every job still pending).")
    term.write()
    results = []
    died = getattr(futures, "WorkerDied", None)
    for label, mod in ((name, futures), (STDLIB_NAME, std_futures)):
        bar = ProgressBar(term, label, jobs, unit="jobs")
        bar.update(0, 0.0)
        try:
            r = run_crash_batch(mod, jobs, victim, workers, bar.update)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            bar.finish(0, 0.0, False, f"{type(exc).__name__}: {exc}")
            results.append(RunResult(label, 0, 0.0, False, f"{type(exc).__name__}: {exc}"))
            continue
        failures = r["failures"]
        victim_exc = failures.get(victim)
        if mod is futures:
            ok = (set(failures) == {victim} and died is not None
                  and isinstance(victim_exc, died) and "SIGKILL" in str(victim_exc)
                  and r["done"] == jobs - 1 and r["total_ok"])
            note = "" if ok else (f"{len(failures)} jobs failed: "
                                  + "; ".join(f"job {j}: {type(e).__name__}: {e}"
                                              for j, e in list(failures.items())[:2]))
            bar.finish(r["done"], r["seconds"], ok, note)
            first_line = str(victim_exc).splitlines()[0] if victim_exc else "no error"
            term.write(f"    job {victim}: {type(victim_exc).__name__}: {first_line}")
            term.write(f"    the other {r['done']:,} of {jobs - 1:,} jobs completed; "
                       f"checksum {'OK' if r['total_ok'] else 'differs'}")
            results.append(RunResult(label, r["done"], r["seconds"], ok, note))
        else:
            # The standard library is shown for contrast, not judged: its
            # documented behaviour is to break the whole pool.
            if term.live:
                term.stream.write("\r\x1b[K")
            kinds = sorted({type(e).__name__ for e in failures.values()})
            term.write(f"  {label:<8} {r['done']:,} of {jobs:,} jobs completed in "
                       f"{r['seconds']:.2f} s; {len(failures):,} failed "
                       f"({', '.join(kinds) or 'none'}): the pool broke")
    return results
