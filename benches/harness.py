"""The comparison harness behind ``python -m plait bench``.

Why it looks like this:

* **One process, side by side.** Absolute timings on shared virtual machines are
  noise; ratios between implementations measured in the same run, interleaved
  repeat by repeat, are not.  Every workload therefore runs the standard library,
  CPython's own C-implemented types (the *reference*: the cost of a C method call
  pair is the limit for any primitive called from Python) and plait, and the
  table prints ``plait / reference`` and ``plait / stdlib``.
* **Bounded.** Each repeat is sized by a calibration run to take about
  ``--time`` seconds, so the whole table finishes in about a minute on a 2-core
  machine whatever the speed of the implementation; ``--quick`` is a smoke run.
* **Paired.** Rates are the best repeat; ratios are the median of per-repeat
  ratios between columns run back to back (see :meth:`Measurement.ratio`).
* **Never asserts.** A benchmark reports; the tests decide correctness.  A
  variant that raises is reported in the table as ``error`` and the run goes on;
  one that hangs is killed by a watchdog with a traceback instead of hanging.
* **Open for more groups.** Workload groups live in ``bench_<group>.py`` modules
  listed in :data:`GROUP_MODULES`; each exposes ``GROUP``, ``TITLE`` and
  ``workloads(ctx) -> list[Workload]``.  Later areas (futures, processes, the
  event loop, peers such as uvloop or loky) add a module and a line here.

Run it as ``python -m plait bench [--quick] [--pin] [FILTER ...]``; the
harness can also run directly: ``python benches/harness.py --quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import signal
import importlib
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

#: Workload groups, in the order the table prints them.  Later issues append
#: e.g. "bench_futures", "bench_process", "bench_loop".
GROUP_MODULES: tuple[str, ...] = (
    "bench_queue", "bench_sync", "bench_futures", "bench_timer", "bench_processes", "bench_process",
    "bench_loop", "bench_signals", "bench_switch", "bench_cluster",
)

#: The standard-library module that each plait area replaces.  An
#: :class:`Impl` resolves ``impl.sync``/``impl.queue``/... through this table.
STDLIB_AREAS: dict[str, str] = {
    "sync": "threading",
    "queue": "queue",
    "futures": "concurrent.futures",
    "process": "multiprocessing",
    "loop": "asyncio",
}

#: Role names of the three fixed table columns.  Any other role a workload
#: gives a variant (a peer library) is printed on its own line under the row.
STDLIB, REF, PLAIT = "stdlib", "ref", "plait"

#: How long a single variant may run (calibration plus one repeat) before the
#: watchdog decides it hangs, dumps every thread's traceback and exits.
WATCHDOG_SECONDS = 120.0


# --------------------------------------------------------------------------
# Implementations: which modules stand behind "stdlib" and "plait".


class Impl:
    """One implementation of plait's Python surface, addressed by area.

    ``impl.sync`` and ``impl.queue`` are the modules that implement
    ``threading``'s primitives and ``queue``; workloads are written once
    against these attributes so the same code runs on every implementation.
    """

    def __init__(self, name: str, label: str, module_names: dict[str, str]):
        self.name = name
        self.label = label
        self._module_names = module_names

    def module(self, area: str):
        """Import and return the module implementing ``area`` ("sync", ...)."""
        return importlib.import_module(self._module_names[area])

    def __getattr__(self, area: str):
        if area.startswith("_") or area not in self._module_names:
            raise AttributeError(area)
        return self.module(area)

    def __repr__(self) -> str:
        return f"Impl({self.name!r}, {self.label!r})"


def stdlib_impl() -> Impl:
    return Impl(STDLIB, "standard library", dict(STDLIB_AREAS))


def plait_impl(as_plait: str | None = None) -> tuple[Impl | None, str]:
    """Return (plait implementation or None, one line describing it).

    ``as_plait="stdlib"`` puts the standard library in plait's column: a
    stand-in to exercise the harness before the extension is built.  The
    table marks such a run loudly so it is never mistaken for a measurement.
    """
    if as_plait == "stdlib":
        impl = Impl(PLAIT, "stand-in: standard library", dict(STDLIB_AREAS))
        return impl, "plait column: STAND-IN (the standard library), not plait"
    if as_plait not in (None, "plait"):
        raise SystemExit(f"--as-plait: unknown implementation {as_plait!r} (use 'stdlib')")
    try:
        import plait.queue  # noqa: F401  (the built extension is what we check)
        import plait.sync  # noqa: F401
    except ImportError as exc:
        return None, (
            f"plait: NOT AVAILABLE ({type(exc).__name__}: {exc}); build it with "
            "`make build` — its columns are left empty"
        )
    import plait

    where = os.path.dirname(os.path.abspath(getattr(plait, "__file__", None) or "."))
    version = getattr(plait, "__version__", "?")
    areas = {area: f"plait.{area}" for area in STDLIB_AREAS}
    return Impl(PLAIT, "plait", areas), f"plait {version} from {where}"


# --------------------------------------------------------------------------
# Workloads.

#: A variant's runner: perform ``n`` operations, return the seconds the timed
#: part took (setup such as starting a thread may stay outside the timing).
Runner = Callable[[int], float]


@dataclass
class Variant:
    """One implementation of one workload."""

    role: str  # STDLIB, REF, PLAIT, or a peer's name
    what: str  # what exactly runs, e.g. "queue.Queue" (shown by --list)
    run: Runner


@dataclass
class Workload:
    """A row of the table: one operation pattern, several implementations.

    ``target`` is the issue's goal for ``plait / reference`` (None: shown for
    information only).  ``stdlib_is_ref`` says the standard library's public
    class *is* the C reference (``threading.Lock``), so the stdlib column
    shows ``= ref`` instead of measuring the same thing twice.
    """

    group: str
    name: str
    unit: str  # what one operation is, <= 6 chars: "pairs", "items", "trips" (round trips)
    reference: str  # short name of the reference, <= 10 chars, e.g. "C SimpleQ"
    variants: list[Variant]
    target: float | None = None
    stdlib_is_ref: bool = False
    pinned: bool = False  # run with the calling thread pinned to one CPU
    start_n: int = 2000  # first calibration size; small for slow workloads
    #: The column the target is judged against: REF (the default) or STDLIB
    #: for targets stated against the standard library (futures: ">= 8x").
    target_vs: str = REF
    #: If set (e.g. "task"), a line under the row gives each column's time
    #: per operation in microseconds ("us/task").
    per_op: str | None = None
    #: Extra lines printed under the row after it is measured (e.g. memory,
    #: which the rate columns cannot show).  A note that raises is reported.
    notes: Callable[[], list[str]] | None = None
    #: Called once before the row is measured, outside the watchdog (e.g. to
    #: build a native tool).  If it raises, the row is reported, not measured.
    setup: Callable[[], None] | None = None
    #: Fewer repeats than the run's, for rows whose repeat is a long fixed
    #: batch (the median of 5 long repeats is as stable as of 9 short ones).
    max_repeats: int | None = None
    #: Targets for plait against peers, role -> minimum plait/peer (the event
    #: loop's ">= uvloop and >= rloop"), judged on the peer's line.
    peer_targets: dict[str, float] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.group}: {self.name}"


@dataclass
class BenchContext:
    """What a group module gets to build its workloads from."""

    stdlib: Impl
    plait: Impl | None
    can_pin: bool  # this OS lets us pin a thread to one CPU
    whole_run_pinned: bool  # --pin: the whole process already runs on one CPU
    quick: bool = False  # --quick: groups may shrink fixed batch sizes
    repeat_time: float = 0.1  # --time: the target length of one repeat

    def pin_modes(self) -> list[tuple[str, bool]]:
        """(label, pin-this-workload) pairs for handoff-bound workloads.

        Handoffs between threads cost ~10x more when the other vCPU has to be
        woken from halt, so those workloads run both ways; see DESIGN.md.
        """
        if self.whole_run_pinned:
            return [("pinned (run)", False)]
        if not self.can_pin:
            return [("unpinned", False)]
        return [("unpinned", False), ("pinned", True)]

    def impls(self) -> list[Impl]:
        """The implementations that are available, stdlib first."""
        return [self.stdlib] + ([self.plait] if self.plait is not None else [])


@dataclass
class Measurement:
    """Every repeat's rate per role; repeat i of each role ran back to back."""

    samples: dict[str, list[float | None]] = field(default_factory=dict)  # role -> ops/s
    errors: dict[str, str] = field(default_factory=dict)  # role -> message

    def best(self, role: str) -> float | None:
        """The role's best rate: the least disturbed repeat."""
        rates = [r for r in self.samples.get(role, ()) if r]
        return max(rates) if rates else None

    def ratio(self, role: str, base: str) -> float | None:
        """Median over repeats of rate(role) / rate(base) within the same repeat.

        On these VMs a core's speed changes in bursts of a second or so (the
        same C loop measures 8 M/s, then 19 M/s).  Repeats of two variants run
        back to back see the same burst, so their ratio is stable even when
        the rates are not, and the median drops the odd pair that straddles a
        change.  Ratios of best-of rates would compare different bursts.
        """
        pairs = [a / b for a, b in zip(self.samples.get(role, ()), self.samples.get(base, ()))
                 if a and b]
        return statistics.median(pairs) if pairs else None


# --------------------------------------------------------------------------
# Timing.


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


@contextlib.contextmanager
def pinned_to_one_cpu() -> Iterator[int | None]:
    """Pin the calling thread to one CPU for the duration of the block.

    On Linux affinity is per thread and inherited by threads created later,
    so a workload that starts its threads inside this block has all of them
    on one CPU, while the rest of the run is left alone.
    """
    if not can_pin():
        yield None
        return
    old = os.sched_getaffinity(0)
    cpu = min(old)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, old)


def calibrate(run: Runner, start_n: int, repeat_time: float) -> int:
    """Find n such that ``run(n)`` takes about ``repeat_time`` seconds.

    The calibration runs double as the warm-up (first calls, allocator and
    branch predictors, thread creation paths).
    """
    n = max(1, start_n)
    while True:
        elapsed = run(n)
        if elapsed >= repeat_time / 8 or n >= 1 << 30:
            break
        # Grow fast, but by at most 16x a step: one lucky fast run must not
        # turn into a repeat far longer than the budget.
        n *= 16 if elapsed <= 0 else min(16, max(2, int(repeat_time / 8 / elapsed) + 1))
    return max(1, int(n * repeat_time / max(elapsed, 1e-9)))


def measure(workload: Workload, repeats: int, repeat_time: float) -> Measurement:
    """``repeats`` rates for every variant, interleaved.

    Each repeat runs every variant once, back to back, in an order that
    rotates from repeat to repeat, so every column sees the same phases of a
    noisy machine and no column always runs first.
    """
    result = Measurement()
    if workload.max_repeats is not None:
        repeats = max(1, min(repeats, workload.max_repeats))
    result.samples = {v.role: [None] * repeats for v in workload.variants}
    if workload.setup is not None:
        try:
            workload.setup()
        except Exception as exc:  # report, never abort the table
            result.errors["setup"] = f"{type(exc).__name__}: {exc}"
            return result
    sizes: dict[int, int] = {}
    live = list(range(len(workload.variants)))
    pin = pinned_to_one_cpu() if workload.pinned else contextlib.nullcontext()
    with pin:
        for i in list(live):
            variant = workload.variants[i]
            try:
                with _watchdog():
                    sizes[i] = calibrate(variant.run, workload.start_n, repeat_time)
            except Exception as exc:  # report, never abort the table
                result.errors[variant.role] = f"{type(exc).__name__}: {exc}"
                live.remove(i)
        for r in range(repeats):
            order = live[r % len(live):] + live[: r % len(live)] if live else []
            for i in order:
                variant = workload.variants[i]
                if variant.role in result.errors:
                    continue
                try:
                    with _watchdog():
                        elapsed = variant.run(sizes[i])
                except Exception as exc:
                    result.errors[variant.role] = f"{type(exc).__name__}: {exc}"
                    continue
                result.samples[variant.role][r] = sizes[i] / max(elapsed, 1e-9)
    return result


@contextlib.contextmanager
def _watchdog() -> Iterator[None]:
    """Turn a hang into a traceback and an exit instead of a silent stall.

    A real-time timer signal, not ``faulthandler.dump_traceback_later``:
    that one runs a thread, and a process pool that forks only a parent
    with no other thread would then never fork in a benchmark. faulthandler
    dumps every thread on SIGALRM, then chains to the default action, which
    ends the process."""
    faulthandler.register(signal.SIGALRM, all_threads=True, chain=True)
    signal.setitimer(signal.ITIMER_REAL, WATCHDOG_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.unregister(signal.SIGALRM)


# --------------------------------------------------------------------------
# Table.


def _symbols() -> tuple[str, str, str, str]:
    """(times, at-least, dash, micro) in Unicode when stdout can encode them."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "×≥—µ".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "x", ">=", "-", "u"
    return "×", "≥", "—", "µ"


TIMES, AT_LEAST, DASH, MICRO = _symbols()


def fmt_rate(x: float | None) -> str:
    if x is None:
        return DASH
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            v = x / scale
            return f"{v:.3g} {suffix}" if v < 100 else f"{v:.0f} {suffix}"
    return f"{x:.3g}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.2f}{TIMES}" if x < 10 else f"{x:.1f}{TIMES}" if x < 100 else f"{x:.0f}{TIMES}"


# column: (title, width, align).  About 120 characters in all.
COLUMNS = (
    ("workload", 40, "<"),
    ("unit/s", 6, "<"),
    ("reference", 10, "<"),
    ("stdlib", 7, ">"),
    ("C ref", 7, ">"),
    ("plait", 7, ">"),
    ("plait/ref", 9, ">"),
    ("plait/std", 9, ">"),
    ("target", 10, "<"),
)


def _row(cells: list[str]) -> str:
    parts = []
    for (title, width, align), cell in zip(COLUMNS, cells):
        parts.append(f"{cell:{align}{width}}")
    return "  ".join(parts).rstrip()


@dataclass
class Verdict:
    workload: Workload
    ratio: float | None
    passed: bool | None  # None: no target, or plait not measured
    #: Verdicts of the row's peer targets (plait/peer), where judged.
    peer_passed: list[bool] = field(default_factory=list)


def format_workload(w: Workload, m: Measurement) -> tuple[list[str], Verdict]:
    """The table line(s) for one measured workload, and its verdict."""
    ref = m.best(REF)
    std = ref if w.stdlib_is_ref else m.best(STDLIB)
    pl = m.best(PLAIT)
    vs_ref = m.ratio(PLAIT, REF)
    vs_std = vs_ref if w.stdlib_is_ref else m.ratio(PLAIT, STDLIB)
    passed = None
    target = ""
    judged = vs_std if w.target_vs == STDLIB else vs_ref
    if w.target is not None:
        target = f"{AT_LEAST}{w.target:g}{TIMES}" + (" std" if w.target_vs == STDLIB else "")
        if judged is not None:
            # Judged on the ratio as printed, so a row never shows "1.00x FAIL".
            passed = round(judged, 2) >= w.target
            target += " PASS" if passed else " FAIL"
    std_cell = "= ref" if w.stdlib_is_ref else ("error" if STDLIB in m.errors else fmt_rate(std))
    ref_cell = "error" if REF in m.errors else fmt_rate(ref)
    pl_cell = "error" if PLAIT in m.errors else fmt_rate(pl)
    lines = [_row(["  " + w.name, w.unit, w.reference, std_cell, ref_cell, pl_cell,
                   fmt_ratio(vs_ref), fmt_ratio(vs_std), target])]
    if w.per_op:
        times = [f"{label} {1e6 / rate:.3g}" for label, rate in
                 (("stdlib", std), ("C ref", ref), ("plait", pl))
                 if rate and not (label == "stdlib" and w.stdlib_is_ref)]
        if times:
            lines.append(f"      {MICRO}s/{w.per_op}: " + ", ".join(times))
    peer_passed: list[bool] = []
    for v in w.variants:
        if v.role not in (STDLIB, REF, PLAIT):
            rate = m.best(v.role)
            peer_ratio = fmt_ratio(m.ratio(v.role, REF))
            line = f"      {v.role}: {fmt_rate(rate)} {w.unit}/s ({peer_ratio} ref)"
            vs_peer = m.ratio(PLAIT, v.role)
            if vs_peer is not None:
                line += f"; plait/{v.role} {fmt_ratio(vs_peer)}"
            if v.role in w.peer_targets:
                line += f", target {AT_LEAST}{w.peer_targets[v.role]:g}{TIMES}"
                if vs_peer is not None:
                    ok = round(vs_peer, 2) >= w.peer_targets[v.role]
                    peer_passed.append(ok)
                    line += " PASS" if ok else " FAIL"
            lines.append(line)
    for role, message in m.errors.items():
        lines.append(f"      ! {role} failed: {message}")
    if w.notes is not None:
        try:
            lines.extend(f"      {note}" for note in w.notes())
        except Exception as exc:  # report, never abort the table
            lines.append(f"      ! notes failed: {type(exc).__name__}: {exc}")
    return lines, Verdict(w, judged, passed, peer_passed)


def header_lines(plait_line: str, opts: argparse.Namespace, pinned_cpu: int | None) -> list[str]:
    impl = platform.python_implementation()
    gil = ""
    if hasattr(sys, "_is_gil_enabled"):
        gil = ", GIL enabled" if sys._is_gil_enabled() else ", free-threaded (GIL disabled)"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} CPUs" + (f" ({usable} usable)" if usable is not None else "")
    pin = f"; whole run pinned to CPU {pinned_cpu}" if pinned_cpu is not None else ""
    return [
        "plait bench: the standard library, CPython's C types and plait, side by side in one run",
        f"Python {platform.python_version()} ({impl}{gil}) on {platform.platform()}; {cores}{pin}",
        plait_line,
        f"method: {opts.repeat} interleaved repeats of ~{opts.time:g} s per column after a "
        "calibrating warm-up; rates: the best repeat;",
        "  ratios: the median over repeats of the two columns' rates in the same repeat "
        "(robust to this machine's speed bursts)",
    ]


# --------------------------------------------------------------------------
# Command line.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options; shared by ``python -m plait bench`` and direct runs."""
    parser.add_argument(
        "filters", nargs="*", metavar="FILTER",
        help="run only workloads whose 'group: name' contains one of these "
        "(case-insensitive), e.g. 'queue', 'ping-pong', 'rlock'")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 short repeats per column (a few seconds in all)")
    parser.add_argument("--time", type=float, default=None, metavar="SECONDS",
                        help="target length of one repeat (default 0.1, --quick 0.02)")
    parser.add_argument("--repeat", type=int, default=None, metavar="N",
                        help="repeats per column (default 9, --quick 3)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the whole run to one CPU (handoff rows are then labelled "
                        "'pinned (run)' and run once)")
    parser.add_argument("--list", action="store_true",
                        help="list the workloads and what each column runs, then exit")
    parser.add_argument("--as-plait", metavar="IMPL", default=None,
                        help="developer aid: run IMPL ('stdlib') in plait's column to "
                        "exercise the harness before plait is built")


def collect(ctx: BenchContext) -> list[Workload]:
    """Import every group module and gather its workloads."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    workloads: list[Workload] = []
    for module_name in GROUP_MODULES:
        module = importlib.import_module(module_name)
        workloads.extend(module.workloads(ctx))
    return workloads


def legends(groups: set[str]) -> list[str]:
    """Footer lines of the groups that ran (a module's optional ``LEGEND``):
    what a group's reference column and units mean where they are not C types."""
    lines: list[str] = []
    for module_name in GROUP_MODULES:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, "GROUP", None) in groups:
            legend = getattr(module, "LEGEND", None)
            lines.extend(legend() if callable(legend) else legend or ())
    return lines


def select(workloads: list[Workload], filters: list[str]) -> list[Workload]:
    if not filters:
        return workloads
    wanted = [f.lower() for f in filters]
    return [w for w in workloads if any(f in w.full_name.lower() for f in wanted)]


def run(opts: argparse.Namespace) -> int:
    """Print the table for the selected workloads. Returns the exit status."""
    opts.time = opts.time if opts.time is not None else (0.02 if opts.quick else 0.1)
    opts.repeat = opts.repeat if opts.repeat is not None else (3 if opts.quick else 9)
    if opts.time <= 0 or opts.repeat < 1:
        print("bench: --time must be > 0 and --repeat >= 1", file=sys.stderr)
        return 2

    pinned_cpu = None
    if opts.pin:
        if not can_pin():
            print("bench: --pin needs os.sched_setaffinity (Linux)", file=sys.stderr)
            return 2
        # Before any thread exists, so every thread of the run inherits it.
        pinned_cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {pinned_cpu})

    plait, plait_line = plait_impl(opts.as_plait)
    ctx = BenchContext(stdlib=stdlib_impl(), plait=plait, can_pin=can_pin(),
                       whole_run_pinned=opts.pin, quick=opts.quick, repeat_time=opts.time)
    workloads = select(collect(ctx), opts.filters)
    if not workloads:
        print(f"bench: no workload matches {' '.join(opts.filters)!r}; try --list",
              file=sys.stderr)
        return 2

    if opts.list:
        for w in workloads:
            base = "std" if w.target_vs == STDLIB else "ref"
            target = f", target plait/{base} {AT_LEAST}{w.target:g}" if w.target else ""
            print(f"{w.full_name}  [{w.unit}/s{target}]")
            for v in w.variants:
                print(f"    {v.role:>7}: {v.what}")
        return 0

    for line in header_lines(plait_line, opts, pinned_cpu):
        print(line)
    print()
    print(_row([title for title, _, _ in COLUMNS]))
    verdicts: list[Verdict] = []
    group = None
    started = time.perf_counter()
    for w in workloads:
        if w.group != group:
            group = w.group
            print(group)
        lines, verdict = format_workload(w, measure(w, opts.repeat, opts.time))
        verdicts.append(verdict)
        for line in lines:
            print(line, flush=True)
    elapsed = time.perf_counter() - started

    judged = [v.passed for v in verdicts if v.passed is not None]
    judged += [ok for v in verdicts for ok in v.peer_passed]
    print()
    print("C ref: CPython's own C types, the limit for a primitive called from Python "
          "(C SimpleQ = _queue.SimpleQueue,")
    print("  C Lock = _thread.allocate_lock(), C RLock = _thread.RLock, C handoff = two C locks "
          "as binary semaphores,")
    print("  C queues = worker threads fed by two _queue.SimpleQueue, a pool without futures).")
    print("pairs = put+get or acquire+release; trips = round trips; target is for plait/ref "
          "(plait/std where it says 'std'); --list shows what runs.")
    for line in legends({w.group for w in workloads}):
        print(line)
    if plait is None:
        print("targets: not judged, plait is not available")
    else:
        met = sum(1 for ok in judged if ok)
        print(f"targets met: {met} of {len(judged)}"
              + (" (FAIL rows above)" if met < len(judged) else ""))
        if opts.as_plait:
            print("NOTE: plait's column ran a STAND-IN, not plait; these numbers measure nothing "
                  "about plait")
    print(f"({elapsed:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benches/harness.py",
        description="The plait comparison table (same as `python -m plait bench`).")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
