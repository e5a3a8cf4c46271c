"""``python -m plait demo``: real workloads on the standard library and on plait.

The demo runs *the same code* twice: once with ``threading`` + ``queue``, once
with ``plait.sync`` + ``plait.queue``, swapping only the module objects, which
is the promise plait makes.  Each run shows a live progress bar; each section
ends with a side-by-side table and a checksum that proves the run was not
only fast but correct (nothing lost, nothing duplicated).

The demo is a list of *sections* (:data:`SECTIONS`).  This one has the
multi-stage pipeline; later areas (thread pool, processes, a server) add a
function decorated with :func:`section`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, TextIO

#: Implementation name -> (module replacing ``threading``'s primitives,
#: module replacing ``queue``).  Built by :func:`implementations`.
Implementations = dict[str, tuple[ModuleType, ModuleType]]

STDLIB_NAME = "stdlib"
PLAIT_NAME = "plait"


def implementations(as_plait: str | None = None) -> tuple[Implementations, str | None]:
    """The implementations to compare, and an error message if plait is missing.

    ``as_plait="stdlib"`` is a developer aid: it runs the standard library
    under plait's name, to exercise the demo before the extension is built.
    """
    import queue

    impls: Implementations = {STDLIB_NAME: (threading, queue)}
    if as_plait == "stdlib":
        impls[f"{PLAIT_NAME}*"] = (threading, queue)
        return impls, None
    try:
        import plait.queue
        import plait.sync
    except ImportError as exc:
        return impls, (
            f"plait is not importable ({type(exc).__name__}: {exc}).\n"
            "Build it first: `make demo` builds and runs this demo, `make build` only builds."
        )
    impls[PLAIT_NAME] = (plait.sync, plait.queue)
    return impls, None


# --------------------------------------------------------------------------
# Terminal output: a progress bar that degrades to plain lines.


class Terminal:
    """Where the demo writes, and what that stream can show.

    A TTY gets a redrawn progress bar (``\\r`` plus an ANSI clear-to-end-of-line)
    and colour; a pipe or file gets one plain line per finished run, so logs
    stay readable.  ``NO_COLOR`` and ``TERM=dumb`` are honoured.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stdout
        is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        dumb = os.environ.get("TERM") == "dumb"
        self.live = (is_tty and not dumb) if live is None else live
        self.color = self.live and "NO_COLOR" not in os.environ
        self.columns = shutil.get_terminal_size((100, 24)).columns if self.live else 200
        encoding = getattr(self.stream, "encoding", None) or "ascii"
        try:
            "█░×—".encode(encoding)
            self.full, self.empty, self.times, self.dash = "█", "░", "×", "—"
        except (UnicodeEncodeError, LookupError):
            self.full, self.empty, self.times, self.dash = "#", "-", "x", "-"

    def write(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def paint(self, text: str, code: str) -> str:
        """Wrap ``text`` in an ANSI colour (``"1"`` bold, ``"32"`` green, ``"31"`` red)."""
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text


class ProgressBar:
    """A one-line progress bar for one run: ``label [████░░░░]  42%  ...``."""

    WIDTH = 32

    def __init__(self, term: Terminal, label: str, total: int, unit: str = "items"):
        self.term, self.label, self.total, self.unit = term, label, total, unit
        self._last_draw = 0.0

    def _line(self, done: int, elapsed: float, tail_width: int = 0) -> str:
        """The bar line, with the bar shrunk so the line fits the terminal.

        A line wider than the terminal wraps, and ``\r`` then redraws only its
        last row, so the width matters for the live display.
        """
        frac = min(1.0, done / self.total) if self.total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        head = f"  {self.label:<8} ["
        rest = (f"] {frac:4.0%}  {done:>9,}/{self.total:,} {self.unit}"
                f"  {elapsed:5.1f} s  {format_rate(rate):>7} {self.unit}/s")
        room = self.term.columns - len(head) - len(rest) - tail_width - 1
        if room < 8:  # a narrow terminal: keep the bar, drop the counts
            rest = f"] {frac:4.0%}  {elapsed:5.1f} s"
            room = self.term.columns - len(head) - len(rest) - tail_width - 1
        width = max(8, min(self.WIDTH, room))
        filled = int(frac * width)
        return head + self.term.full * filled + self.term.empty * (width - filled) + rest

    def update(self, done: int, elapsed: float) -> None:
        """Redraw, at most ~20 times a second, and only on a live terminal."""
        now = time.monotonic()
        if not self.term.live or now - self._last_draw < 0.05:
            return
        self._last_draw = now
        self.term.stream.write("\r" + self._line(done, elapsed) + "\x1b[K")
        self.term.stream.flush()

    def finish(self, done: int, elapsed: float, ok: bool, note: str = "") -> None:
        mark = self.term.paint("checksum OK", "32") if ok else self.term.paint("FAILED", "31")
        tail = f"  {mark}" + (f" ({note})" if note else "")
        if self.term.live:
            visible = len(tail) - (len(mark) - (11 if ok else 6))
            self.term.stream.write("\r" + self._line(done, elapsed, visible) + tail + "\x1b[K\n")
            self.term.stream.flush()
        else:
            self.term.write(self._line(done, elapsed) + tail)


def format_rate(x: float) -> str:
    for scale, suffix in ((1e6, " M"), (1e3, " k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}" if x / scale < 100 else f"{x / scale:.0f}{suffix}"
    return f"{x:.0f}"


# --------------------------------------------------------------------------
# Sections.


@dataclass
class DemoContext:
    """What every section gets: the implementations, the terminal, the options."""

    impls: Implementations
    term: Terminal
    quick: bool = False
    items: int | None = None  # override a section's default size


@dataclass
class RunResult:
    """One implementation's run of one section's workload."""

    impl: str
    items: int
    seconds: float
    ok: bool
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Section:
    key: str
    title: str
    run: Callable[[DemoContext], list[RunResult]]


#: The demo's sections, in order.  Append with the :func:`section` decorator.
SECTIONS: list[Section] = []


def section(key: str, title: str) -> Callable:
    """Register a demo section: a function ``(ctx) -> list[RunResult]``."""

    def register(fn: Callable[[DemoContext], list[RunResult]]):
        SECTIONS.append(Section(key, title, fn))
        return fn

    return register


def print_results(term: Terminal, results: list[RunResult], unit: str = "items") -> None:
    """The side-by-side table closing a section; speedup is relative to the first row."""
    base = results[0].rate if results and results[0].rate > 0 else None
    term.write()
    term.write(f"  {'implementation':<16}{unit:>10}{'seconds':>10}{unit + '/s':>12}"
               f"{'checksum':>11}{'speedup':>10}")
    for r in results:
        speedup = f"{r.rate / base:.2f}{term.times}" if base and r.ok else term.dash
        check = term.paint("OK", "32") if r.ok else term.paint("FAILED", "31")
        pad = 11 + (len(check) - (2 if r.ok else 6))  # colour codes take no columns
        term.write(f"  {r.impl:<16}{r.items:>10,}{r.seconds:>10.2f}{format_rate(r.rate):>12}"
                   f"{check:>{pad}}{speedup:>10}")
    for r in results:
        if r.note and not r.ok:
            term.write(f"  {r.impl}: {r.note}")


# --------------------------------------------------------------------------
# Section 1: a multi-stage producer/consumer pipeline.

MASK32 = 0xFFFF_FFFF
QUEUE_SIZE = 64  # bounded queues: back-pressure between the stages
TRANSFORM_WORKERS, RANK_WORKERS, SINK_WORKERS = 3, 3, 2
RESOURCE_SLOTS = 2  # a pretend resource the rank stage may use 2 at a time
STALL_SECONDS = 15.0  # no progress for this long: report a failure, do not hang
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


# --------------------------------------------------------------------------
# Command line.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help="run only these sections (default: all): "
                        + ", ".join(s.key for s in SECTIONS))
    parser.add_argument("--quick", action="store_true",
                        help="a much smaller run (a few seconds)")
    parser.add_argument("--items", type=int, default=None, metavar="N",
                        help="items per run (overrides the section's default)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no live progress bar, one line per run (the default when "
                        "stdout is not a terminal)")
    parser.add_argument("--as-plait", metavar="IMPL", default=None, choices=["stdlib"],
                        help="developer aid: run IMPL ('stdlib') in plait's place, to "
                        "exercise the demo before plait is built")


def run(opts: argparse.Namespace) -> int:
    """Run the selected sections. Returns the exit status."""
    term = Terminal(live=False if opts.no_progress else None)
    known = {s.key: s for s in SECTIONS}
    unknown = [k for k in opts.sections if k not in known]
    if unknown:
        print(f"demo: unknown section(s) {', '.join(unknown)}; choose from "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    if opts.items is not None and opts.items < 1:
        print("demo: --items must be at least 1", file=sys.stderr)
        return 2
    impls, problem = implementations(opts.as_plait)
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 1

    chosen = [known[k] for k in opts.sections] if opts.sections else SECTIONS
    ctx = DemoContext(impls=impls, term=term, quick=opts.quick, items=opts.items)
    term.write(term.paint("plait demo", "1") + ": the same code on "
               + " and ".join(impls) + ", swapping only the modules")
    if opts.as_plait:
        term.write(term.paint(f"NOTE: '{PLAIT_NAME}*' is a stand-in ({opts.as_plait}), "
                              "not plait", "31"))
    all_ok = True
    for number, sec in enumerate(chosen, 1):
        term.write()
        term.write(term.paint(f"{number}. {sec.title}", "1"))
        results = sec.run(ctx)
        print_results(term, results)
        all_ok = all_ok and all(r.ok for r in results)
    term.write()
    return 0 if all_ok else 1
