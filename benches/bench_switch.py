"""The switch: a whole program run plain and under ``python -m plait run``.

Unlike the other groups, each column here is a *separate interpreter*: the
same unchanged file, ``benches/programs/pipeline.py`` (the demo's
producer/consumer pipeline written against ``threading`` and ``queue``
only), run as ``python pipeline.py N`` (stdlib column) and as ``python -m
plait run pipeline.py N`` (plait column). There is no C reference: the
target is stated against the standard library (plait/std).

* **pipeline row**: the rate is items per second of the program's own
  clock, from its start line to the last item at the sink (interpreter
  start-up left out: the next row measures it). Each repeat is one run of
  a fixed batch; a note gives the wall time per run, start-up included,
  which is what a user waits for. A run whose checksum fails, or whose
  ``threading.Lock()`` is not plait's under the switch (or is plait's
  without it), is an error, not a number.
* **start-up row**: ``python -c pass`` against ``python -m plait run -c
  pass``: the fixed price of the switch (importing plait, switching
  threading and queue, and installing the import hook that switches
  concurrent.futures, asyncio and multiprocessing.pool when the program
  first imports them), for information.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

from harness import PLAIT, STDLIB, BenchContext, Variant, Workload

GROUP = "switch"
TITLE = "switch: python prog.py vs python -m plait run prog.py"

PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs", "pipeline.py")

#: Items per run of the pipeline program: (full run, --quick).
BATCH = (50_000, 10_000)

#: A hang bound per child, well inside the harness's watchdog.
CHILD_TIMEOUT = 60.0

PLAIN: tuple[str, ...] = (sys.executable,)
SWITCHED: tuple[str, ...] = (sys.executable, "-m", "plait", "run")


def _env() -> dict[str, str]:
    # The user's plait.debug settings would measure something else; and
    # bytecode caches on, as an installed plait has them (a checkout run
    # with PYTHONDONTWRITEBYTECODE=1 would compile plait's sources at every
    # start: about 100 ms more per start here).
    env = dict(os.environ)
    env.pop("PLAIT_DEBUG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _child(argv: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=_env())
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(argv[1:])}: exit {p.returncode}: {' | '.join(tail)}")
    return p, wall


def pipeline(prefix: tuple[str, ...], batch: int, switched: bool,
             walls: list[float]) -> Callable[[int], float]:
    """Runs of the program, ``batch`` items each, until about ``n`` items;
    seconds for ``n`` items at the rate measured by the program itself."""

    def run(n: int) -> float:
        count = max(1, round(n / batch))
        total = 0.0
        for _ in range(count):
            p, wall = _child([*prefix, PROGRAM, str(batch)])
            report = json.loads(p.stdout.strip().splitlines()[-1])
            if not report["ok"]:
                raise RuntimeError(f"the pipeline lost or duplicated items: {report}")
            if ("plait" in report["lock"]) != switched:
                raise RuntimeError(f"threading.Lock() made {report['lock']} "
                                   f"({'with' if switched else 'without'} the switch)")
            total += report["seconds"]
            walls.append(wall)
        return total * n / (count * batch)

    return run


def starts(argv: tuple[str, ...], walls: list[float]) -> Callable[[int], float]:
    """``n`` interpreters that do nothing, one after another."""

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            _, wall = _child(list(argv))
            walls.append(wall)
        return time.perf_counter() - t0

    return run


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def workloads(ctx: BenchContext) -> list[Workload]:
    batch = BATCH[1 if ctx.quick else 0]
    # --as-plait stdlib: plait's column runs the program plain too.
    stand_in = ctx.plait is not None and ctx.plait.label.startswith("stand-in")
    pl_prefix, pl_what = ((PLAIN, "python") if stand_in
                          else (SWITCHED, "python -m plait run"))
    walls: dict[str, list[float]] = {STDLIB: [], PLAIT: []}
    variants = [Variant(STDLIB, f"python {PROGRAM} {batch} (threading + queue, no plait)",
                        pipeline(PLAIN, batch, False, walls[STDLIB]))]
    if ctx.plait is not None:
        variants.append(Variant(PLAIT, f"{pl_what} {PROGRAM} {batch}",
                                pipeline(pl_prefix, batch, not stand_in, walls[PLAIT])))

    def wall_note() -> list[str]:
        std, pl = _median(walls[STDLIB]), _median(walls[PLAIT])
        line = f"wall time per run of {batch:,} items, start-up included (median): plain {std:.2f} s"
        if walls[PLAIT]:
            line += f", {pl_what} {pl:.2f} s ({std / pl:.2f}{_times()} plain)"
        return [line]

    start_walls: dict[str, list[float]] = {STDLIB: [], PLAIT: []}
    start_variants = [Variant(STDLIB, "python -c pass", starts((*PLAIN, "-c", "pass"),
                                                               start_walls[STDLIB]))]
    if ctx.plait is not None:
        argv = (*pl_prefix, "-c", "pass")
        start_variants.append(Variant(PLAIT, " ".join(["python", *argv[1:]]),
                                      starts(argv, start_walls[PLAIT])))

    def start_note() -> list[str]:
        std, pl = _median(start_walls[STDLIB]), _median(start_walls[PLAIT])
        line = f"ms per start (median): python -c pass {std * 1e3:.0f}"
        if start_walls[PLAIT]:
            line += f", {pl_what} -c pass {pl * 1e3:.0f} (+{(pl - std) * 1e3:.0f} ms)"
        return [line]

    return [
        Workload(GROUP, f"pipeline program, {batch // 1000}k items", "items", "-", variants,
                 target=2.0, target_vs=STDLIB, start_n=batch, max_repeats=5, notes=wall_note),
        Workload(GROUP, "start-up: -c pass", "starts", "-", start_variants,
                 target=None, target_vs=STDLIB, start_n=1, max_repeats=5, notes=start_note),
    ]


def _times() -> str:
    from harness import TIMES

    return TIMES


LEGEND = [
    ("switch: each column is a separate interpreter running the same unchanged file "
     "(benches/programs/pipeline.py,"),
    ("  threading + queue only): stdlib = python prog.py, plait = python -m plait run "
     "prog.py; items/s by the program's own clock"),
    ("  (start-up left out; the wall-time note includes it); starts = interpreters started; "
     "children run with bytecode caches on."),
]
