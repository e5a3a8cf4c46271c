"""``python -m plait demo``: real workloads on the standard library and on plait.

The demo runs *the same code* twice: once with ``threading`` + ``queue``, once
with ``plait.sync`` + ``plait.queue``, swapping only the module objects, which
is the promise plait makes.  Each run shows a live progress bar; each section
ends with a side-by-side table and a checksum that proves the run was not
only fast but correct (nothing lost, nothing duplicated).

The demo is a list of *sections* (:data:`SECTIONS`): the multi-stage
pipeline, a thread pool running many I/O-bound jobs (the same code on
``concurrent.futures`` and ``plait.futures``), CPU-bound work on threads and
on processes (the GIL made visible), and a process pool surviving a worker
killed mid-job; later areas (a server) add a function decorated with
:func:`section`.
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
    unit: str = "items"  # what the closing table counts


#: The demo's sections, in order.  Append with the :func:`section` decorator.
SECTIONS: list[Section] = []


def section(key: str, title: str, unit: str = "items") -> Callable:
    """Register a demo section: a function ``(ctx) -> list[RunResult]``.

    A section that cannot run (a plait area not built yet) writes a note and
    returns no results; it then prints no table.
    """

    def register(fn: Callable[[DemoContext], list[RunResult]]):
        SECTIONS.append(Section(key, title, fn, unit))
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
# Section 2: a thread pool running many I/O-bound jobs.

IO_WORKERS = 16
IO_PAYLOAD = 4096  # bytes per job, written to a file, read back, echoed over TCP


def futures_modules(impls: Implementations) -> tuple[dict[str, ModuleType], str | None]:
    """Implementation name -> the module replacing ``concurrent.futures``.

    Derived from :func:`implementations`: the standard library (and the
    ``--as-plait stdlib`` stand-in, whose sync module is ``threading``) get
    ``concurrent.futures``; plait gets ``plait.futures``, or a note saying
    why it is missing.
    """
    import concurrent.futures

    mods: dict[str, ModuleType] = {}
    for name, (sync, _queue) in impls.items():
        if name == STDLIB_NAME or sync is threading:
            mods[name] = concurrent.futures
            continue
        try:
            import plait.futures
        except ImportError as exc:
            return mods, (f"plait.futures is not available ({type(exc).__name__}: {exc}); "
                          "this section needs it and is skipped")
        mods[name] = plait.futures
    return mods, None


def job_payload(job: int) -> bytes:
    """Job ``job``'s bytes: deterministic, different for every job."""
    seed = job.to_bytes(4, "little") * 8
    return (seed * (IO_PAYLOAD // len(seed) + 1))[:IO_PAYLOAD]


class EchoServer:
    """A loopback TCP echo server on one thread, started by the demo.

    Each connection's bytes are sent back; when the client shuts down its
    side, the server closes the connection.  It runs on a plain thread with
    ``selectors``, the same for every implementation under test.
    """

    def __init__(self) -> None:
        import selectors
        import socket

        self._selectors = selectors
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._wake_r, self._wake_w = socket.socketpair()
        self.selector.register(self._wake_r, selectors.EVENT_READ, "stop")
        self.thread = threading.Thread(target=self._serve, name="demo-echo-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        running = True
        while running:
            for key, _ in self.selector.select():
                if key.data == "stop":
                    running = False
                elif key.data == "accept":
                    try:
                        conn, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    self.selector.register(conn, self._selectors.EVENT_READ, "conn")
                else:
                    self._echo(key.fileobj)
        for key in list(self.selector.get_map().values()):
            if key.data == "conn":
                key.fileobj.close()
        self.selector.close()

    def _echo(self, conn) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            conn.setblocking(True)  # a few KB on loopback: sendall returns at once
            try:
                conn.sendall(data)
            except OSError:
                data = b""
            conn.setblocking(False)
        if not data:
            self.selector.unregister(conn)
            conn.close()

    def close(self) -> None:
        self._wake_w.send(b"x")
        self.thread.join(timeout=5)
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()


def io_job(job: int, directory: str, address: tuple) -> int:
    """One I/O-bound job: write a file, read it back, echo it through a local
    TCP server, and return the CRC-32 of what came back."""
    import socket
    import zlib

    payload = job_payload(job)
    path = os.path.join(directory, f"job-{job}.bin")
    with open(path, "wb") as f:
        f.write(payload)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return zlib.crc32(b"".join(chunks))


def run_io_jobs(futures: ModuleType, jobs: int, address: tuple, expected: int,
                on_progress: Callable[[int, float], None]) -> tuple[int, float, bool, str]:
    """Run ``jobs`` I/O jobs on ``futures.ThreadPoolExecutor``; (done, seconds, ok, note)."""
    import tempfile

    done, total, errors, note = 0, 0, [], ""
    with tempfile.TemporaryDirectory(prefix="plait-demo-") as directory:
        t0 = time.perf_counter()
        with futures.ThreadPoolExecutor(max_workers=IO_WORKERS,
                                        thread_name_prefix="demo-io") as pool:
            fs = [pool.submit(io_job, job, directory, address) for job in range(jobs)]
            try:
                for f in futures.as_completed(fs, timeout=STALL_SECONDS * 4):
                    try:
                        total += f.result()
                        done += 1
                    except Exception as exc:  # noqa: BLE001 - reported in the table
                        errors.append(f"{type(exc).__name__}: {exc}")
                    on_progress(done, time.perf_counter() - t0)
            except futures.TimeoutError:
                note = f"stalled: {jobs - done - len(errors)} jobs unfinished"
                for f in fs:
                    f.cancel()
        seconds = time.perf_counter() - t0
    if errors:
        note = f"{len(errors)} jobs failed, e.g. {errors[0]}"
    ok = not note and done == jobs and total == expected
    if not ok and not note:
        note = f"{done:,} of {jobs:,} jobs done, checksum differs"
    return done, seconds, ok, note


@section("threadpool", "thread pool: many I/O-bound jobs", unit="jobs")
def threadpool_section(ctx: DemoContext) -> list[RunResult]:
    import zlib

    term = ctx.term
    mods, problem = futures_modules(ctx.impls)
    if problem:
        term.write(f"  {problem}.")
        return []
    jobs = ctx.items or (200 if ctx.quick else 2000)
    term.write(f"  {jobs:,} jobs on ThreadPoolExecutor({IO_WORKERS}); each writes {IO_PAYLOAD:,} "
               "bytes to a temp file, reads them back,")
    term.write("  echoes them through a TCP server on 127.0.0.1 (started by the demo) and "
               "returns their CRC-32;")
    term.write("  results collected with as_completed(); the same code on each implementation.")
    term.write()
    expected = sum(zlib.crc32(job_payload(job)) for job in range(jobs))
    server = EchoServer()
    results = []
    try:
        for name, futures in mods.items():
            bar = ProgressBar(term, name, jobs, unit="jobs")
            bar.update(0, 0.0)
            done, seconds, ok, note = run_io_jobs(futures, jobs, server.address, expected,
                                                  bar.update)
            bar.finish(done, seconds, ok, note if not ok else "")
            results.append(RunResult(name, done, seconds, ok, note))
    finally:
        server.close()
    return results


# --------------------------------------------------------------------------
# Section 3: CPU-bound work on threads and on processes (the GIL made visible).


def cpu_job(n: int) -> int:
    """Pure-Python CPU work: the sum of i*i for i < n, one bytecode loop
    (holds the GIL throughout; the closed form checks the answer)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def squares_below(n: int) -> int:
    return (n - 1) * n * (2 * n - 1) // 6


def process_futures(impls: Implementations) -> tuple[ModuleType | None, str, str | None]:
    """(module with plait's ProcessPoolExecutor, its row label, problem)."""
    mods, problem = futures_modules(impls)
    if problem:
        return None, "", problem
    name = next((n for n in mods if n != STDLIB_NAME), None)
    if name is None:
        return None, "", "no plait implementation to compare"
    if mods[name].__name__ != "concurrent.futures" and not hasattr(mods[name],
                                                                   "ProcessPoolExecutor"):
        return None, "", (f"{mods[name].__name__} has no ProcessPoolExecutor (rebuild plait); "
                          "this section needs it and is skipped")
    return mods[name], name, None


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
    note = f"{len(errors)} jobs failed, e.g. {errors[0]}" if errors else ""
    ok = not errors and done == len(inputs) and total == expected
    if not ok and not note:
        note = f"{done} of {len(inputs)} jobs done, checksum differs"
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


# --------------------------------------------------------------------------
# Section 4: a worker killed mid-flight; only its job fails.

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


# --------------------------------------------------------------------------
# Section: an asyncio server on the standard loop and on plait's.

ECHO_SERVER = """
import asyncio, os, sys
kind, port = sys.argv[1], int(sys.argv[2])
if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
if kind == "plait":
    import plait.loop
    factory = plait.loop.new_event_loop
else:
    factory = asyncio.new_event_loop
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
loop = factory()
loop.run_until_complete(main())
"""


def echo_client() -> str | None:
    """The native load generator (``plait-echo-client``), built with cargo
    if this is a source checkout and it is missing; None if unavailable."""
    import shutil
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "target", "release", "plait-echo-client")
    if os.path.exists(path):
        return path
    cargo = shutil.which("cargo")
    if cargo is None or not os.path.exists(os.path.join(root, "crates", "plait-echo")):
        return None
    subprocess.run([cargo, "build", "--release", "--quiet", "-p", "plait-echo"], cwd=root,
                   capture_output=True, timeout=600)
    return path if os.path.exists(path) else None


def run_echo(kind: str, client: str, seconds: float, size: int) -> dict:
    """Start an echo server on ``kind``'s loop in a child process, load it
    with the native client (10 connections, closed loop), return its report."""
    import json
    import subprocess

    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, kind, "0"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        cmd = [client, "--port", str(port), "--conns", "10", "--size", str(size),
               "--duration", str(seconds), "--warmup", "200", "--timeout", str(seconds + 20)]
        if len(cpus) > 1:
            cmd += ["--cpu", str(cpus[-1])]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or f"client exited with {out.returncode}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@section("server", "An asyncio echo server: the standard loop vs plait.loop", unit="messages")
def server_section(ctx: DemoContext) -> list[RunResult]:
    term = ctx.term
    try:
        import plait.loop  # noqa: F401
    except ImportError as exc:
        term.write(f"  plait.loop is not available ({exc}).")
        return []
    client = echo_client()
    if client is None:
        term.write("  the native load generator (plait-echo-client) is not built and cargo is "
                   "not available: `cargo build --release -p plait-echo`.")
        return []
    seconds = 1.0 if ctx.quick else 3.0
    size = 1024
    term.write(f"  One asyncio.Protocol echo server, the same code on each loop, in its own "
               f"process; {size}-byte messages")
    term.write(f"  from 10 connections in a closed loop, driven for {seconds:g} s by a native "
               "epoll client (plait-echo-client) on another CPU.")
    term.write("  The client checks every echo; the table counts echoed messages.")
    term.write()
    results = []
    for label, kind in ((STDLIB_NAME, "asyncio"), ("plait", "plait")):
        term.write(f"  {label:<8} serving ...")
        try:
            report = run_echo(kind, client, seconds, size)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            results.append(RunResult(label, 0, 0.0, False, f"{type(exc).__name__}: {exc}"))
            continue
        ok = report.get("messages", 0) > 0
        results.append(RunResult(label, int(report["messages"]), float(report["seconds"]), ok,
                                 "" if ok else "no message echoed"))
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
        if results:
            print_results(term, results, sec.unit)
        all_ok = all_ok and all(r.ok for r in results)
    term.write()
    return 0 if all_ok else 1
