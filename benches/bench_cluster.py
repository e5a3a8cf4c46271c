"""The cluster: ``plait.cluster.ClusterExecutor`` against dask's own executor.

Both columns run on the SAME private ``LocalCluster`` (2 worker processes,
1 thread each, 127.0.0.1, the one ``ClusterExecutor()`` starts): the
reference is dask's ``client.get_executor().map`` (one dask task per call;
it ignores ``chunksize``), plait's column is ``ClusterExecutor.map`` with
its default chunksize, and a peer line runs it with an explicit one. The
call is ``abs`` (a builtin: nothing to pickle by value, the per-call cost
is the executor's).

* **map row**: each repeat is one whole batch of 2,000 calls (``--quick``:
  500) per column; the calibration run is every column's warm-up. Repeats
  rotate the order of the columns, and a note gives each column's seconds
  per batch by position (first in its repeat or not): the order effect.
  Target plait/ref >= 10x (issue 16).
* **start-up row**: ``ClusterExecutor()`` (private LocalCluster, the
  scheduler and worker plugins, the event subscription) against a bare
  ``LocalCluster`` + ``Client`` with the same options; only the constructor
  is timed, the close is in a note. For information.

Without dask.distributed (``pip install 'plait[cluster]'``) or without a
built plait the rows say so and are skipped. The whole group takes 20-30 s
on 2 cores (dask's column is 2-3 ms per call).
"""

from __future__ import annotations

import atexit
import statistics
import time
from typing import Callable

from harness import PLAIT, REF, BenchContext, Variant, Workload

GROUP = "cluster"
TITLE = "cluster: ClusterExecutor vs dask's client.get_executor() on one LocalCluster"

#: Calls per batch: (full run, --quick).
BATCH = (2_000, 500)
#: The explicit chunksize of the peer line.
EXPLICIT_CHUNKSIZE = 50
EXPLICIT = f"chunksize={EXPLICIT_CHUNKSIZE}"
#: Bound on one batch's results (well inside the harness's watchdog).
MAP_TIMEOUT = 60.0
CLUSTER_OPTIONS = dict(n_workers=2, threads_per_worker=1)


def _missing() -> str | None:
    """Why the group cannot run, or None."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        return (f"skipped: dask.distributed is not installed ({exc}); "
                "pip install 'plait[cluster]'")
    try:
        from plait.cluster import ClusterExecutor  # noqa: F401
    except ImportError as exc:
        return f"skipped: plait.cluster is not available ({type(exc).__name__}: {exc})"
    return None


class _Shared:
    """The one ClusterExecutor (and its LocalCluster) both columns use."""

    def __init__(self) -> None:
        self.executor = None
        self.dask_executor = None

    def start(self) -> None:
        if self.executor is not None:
            return
        import logging

        from plait.cluster import ClusterExecutor

        # A closing cluster logs harmless CommClosedErrors.
        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.executor = ClusterExecutor(**CLUSTER_OPTIONS)
        self.dask_executor = self.executor._client.get_executor(pure=False)
        atexit.register(self.close)

    def close(self) -> None:
        if self.executor is not None:
            ex, self.executor, self.dask_executor = self.executor, None, None
            ex.shutdown(wait=True)


def _timed_batches(batch: int, one: Callable[[list[int]], list[int]],
                   log: list[float]) -> Callable[[int], float]:
    """Whole batches of ``batch`` calls until about ``n``; seconds for ``n``."""
    data = list(range(-batch, 0))
    expected = [abs(x) for x in data]

    def run(n: int) -> float:
        count = max(1, round(n / batch))
        total = 0.0
        for _ in range(count):
            t0 = time.perf_counter()
            got = one(data)
            elapsed = time.perf_counter() - t0
            if got != expected:
                raise RuntimeError("wrong results")
            log.append(elapsed)
            total += elapsed
        return total * n / (count * batch)

    return run


def _map_workload(ctx: BenchContext, why_not: str | None) -> Workload:
    batch = BATCH[1 if ctx.quick else 0]
    shared = _Shared()
    logs: dict[str, list[float]] = {REF: [], PLAIT: [], EXPLICIT: []}
    order: list[str] = []  # role of each run, in the order they ran

    def logged(role: str, fn: Callable[[list[int]], list[int]]):
        def one(data):
            order.append(role)
            return fn(data)
        return _timed_batches(batch, one, logs[role])

    def dask_map(data):
        return list(shared.dask_executor.map(abs, data, timeout=MAP_TIMEOUT))

    def plait_map(data):
        return list(shared.executor.map(abs, data, timeout=MAP_TIMEOUT))

    def plait_map_explicit(data):
        return list(shared.executor.map(abs, data, timeout=MAP_TIMEOUT,
                                        chunksize=EXPLICIT_CHUNKSIZE))

    def setup() -> None:
        if why_not:
            raise RuntimeError(why_not)
        shared.start()
        # A first touch of both paths (imports, the workers' plait pools)
        # before the calibration runs, which are each column's warm-up.
        dask_map(list(range(20)))
        plait_map(list(range(20)))

    def notes() -> list[str]:
        try:
            return _order_notes(batch, logs, order)
        finally:
            shared.close()

    variants = [
        Variant(REF, f"client.get_executor(pure=False).map(abs, {batch:,} ints)",
                logged(REF, dask_map)),
        Variant(PLAIT, f"ClusterExecutor.map(abs, {batch:,} ints) (default chunksize)",
                logged(PLAIT, plait_map)),
        Variant(EXPLICIT, f"ClusterExecutor.map(abs, {batch:,} ints, {EXPLICIT})",
                logged(EXPLICIT, plait_map_explicit)),
    ]
    return Workload(GROUP, f"map {batch:,} tiny calls, 2 workers", "calls", "dask exec",
                    variants, target=10.0, start_n=batch, max_repeats=2, per_op="call",
                    setup=setup, notes=notes)


def _order_notes(batch: int, logs: dict[str, list[float]], order: list[str]) -> list[str]:
    """Seconds per batch of each column: its warm-up (calibration) run, and
    the timed runs when it went first in its repeat or later."""
    roles = list(logs)
    per_role_runs: dict[str, list[tuple[int, float]]] = {r: [] for r in roles}
    seen = {r: 0 for r in roles}
    for pos, role in enumerate(order):
        i = seen[role]
        seen[role] += 1
        if i < len(logs[role]):
            per_role_runs[role].append((pos, logs[role][i]))
    n_roles = len(roles)
    lines = [f"s per batch of {batch:,} (warm-up | first in its repeat | later in its repeat):"]
    names = {REF: "dask exec", PLAIT: "plait default", EXPLICIT: f"plait {EXPLICIT}"}
    parts = []
    for role in roles:
        runs = per_role_runs[role]
        if not runs:
            continue
        warm = runs[0][1]
        timed = runs[1:]
        # Timed runs come after the n_roles calibration runs; each repeat is
        # n_roles runs, so a run's position in its repeat is (pos - n_roles) % n_roles.
        first = [t for pos, t in timed if (pos - n_roles) % n_roles == 0]
        later = [t for pos, t in timed if (pos - n_roles) % n_roles != 0]
        parts.append(f"{names[role]} {warm:.2f} | {_fmt(first)} | {_fmt(later)}")
    if not parts:
        return []
    lines.append("  " + "; ".join(parts))
    return lines


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}" if xs else "-"


def _startup_workload(ctx: BenchContext, why_not: str | None) -> Workload:
    closes: dict[str, list[float]] = {REF: [], PLAIT: []}

    def setup() -> None:
        if why_not:
            raise RuntimeError(why_not)
        import logging

        logging.getLogger("distributed").setLevel(logging.ERROR)

    def starts(make: Callable[[], Callable[[], None]], role: str) -> Callable[[int], float]:
        def run(n: int) -> float:
            total = 0.0
            for _ in range(n):
                t0 = time.perf_counter()
                close = make()
                total += time.perf_counter() - t0
                t1 = time.perf_counter()
                close()
                closes[role].append(time.perf_counter() - t1)
            return total
        return run

    def make_plait():
        from plait.cluster import ClusterExecutor

        ex = ClusterExecutor(**CLUSTER_OPTIONS)
        return lambda: ex.shutdown(wait=True)

    def make_dask():
        import dask
        import distributed

        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = distributed.LocalCluster(processes=True, host="127.0.0.1",
                                               dashboard_address="127.0.0.1:0",
                                               **CLUSTER_OPTIONS)
        client = distributed.Client(cluster, set_as_default=False)

        def close():
            client.close()
            cluster.close()
        return close

    def notes() -> list[str]:
        d, p = closes[REF], closes[PLAIT]
        if not (d or p):
            return []
        return [f"ms per close (median): LocalCluster+Client {_ms(d)}, "
                f"ClusterExecutor.shutdown() {_ms(p)}"]

    variants = [
        Variant(REF, "LocalCluster(2 workers, 127.0.0.1) + Client", starts(make_dask, REF)),
        Variant(PLAIT, "ClusterExecutor(n_workers=2)", starts(make_plait, PLAIT)),
    ]
    return Workload(GROUP, "start-up: ClusterExecutor()", "starts", "dask start", variants,
                    target=None, start_n=1, max_repeats=2, per_op="start", setup=setup,
                    notes=notes)


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.0f}" if xs else "-"


def workloads(ctx: BenchContext) -> list[Workload]:
    why_not = _missing()
    if ctx.plait is None or ctx.plait.label.startswith("stand-in"):
        why_not = "skipped: the cluster rows need the built plait (not a stand-in)"
    return [_map_workload(ctx, why_not), _startup_workload(ctx, why_not)]


LEGEND = [
    ("cluster: both columns on one private LocalCluster (2 worker processes x 1 thread, "
     "127.0.0.1); ref = dask's"),
    ("  client.get_executor().map (a dask task per call), plait = ClusterExecutor.map; "
     "calls = abs(x) calls; each repeat is a whole batch;"),
    ("  starts = executors started (constructor only, the close is in the note)."),
]
