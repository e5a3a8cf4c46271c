"""Event-loop workloads: plait's loop against asyncio's, uvloop and rloop.

Columns.  ``stdlib`` is asyncio's default loop (``asyncio.new_event_loop()``,
the selector loop on Linux); ``plait`` is ``plait.new_event_loop()``; peers
(uvloop, rloop) are printed on lines under a row with ``plait/<peer>``.
The reference column differs by kind of row:

* **micro rows** (call_soon, sleep(0), future ping-pong, call_later,
  create_task + gather): ``ref`` is **rloop**, the issue's target is
  plait/rloop >= 1; uvloop is the peer line.
* **echo rows**: ``ref`` is **plait-echo-server**, a native single-threaded
  epoll echo server (``crates/plait-echo``): the limit a loop can approach.
  Targets: protocol 1 KiB within 5% of it (plait/ref >= 0.95) and >= uvloop
  and >= rloop (judged on the peer lines); streams 1 KiB >= rloop; 64 KiB,
  protocol and streams, within 10% (>= 0.90).  uvloop and rloop are peers.

Micro rows run whole fixed batches, the issue's sizes (``--quick``: a tenth),
so every column handles the same number of pending callbacks, timers or
tasks; rates are per operation.  A fresh loop per batch, created and closed
outside the timing, after a ``gc.collect()``.  The two heaviest rows run at
most 5 repeats to keep the group under ~3 minutes.

Echo rows: 10 connections, each in a closed loop (send one message, wait
for all of its echo, send the next), driven by ``plait-echo-client``, a
native epoll client in its own process, so the client is never the Python
bottleneck.  The server under test runs **in the bench process**, its
thread pinned to one CPU (the row is ``pinned``: CPU 0 normally), the client
pinned to another (CPU 1).  In-process rather than a child interpreter
because the bench process is idle apart from the loop under test (every
earlier row's threads are parked), so nothing else competes for CPU 0, and
the variants stay interleaved repeat by repeat like every other row; a child
interpreter per repeat would add an interpreter start per repeat and change
nothing in what is measured.  Each repeat: a fresh loop and server on an
ephemeral port, the client warms up 20 echoes per connection, then counts
for ``ECHO_SECONDS`` (0.25 s; ``--quick``: 0.1 s) and prints its rate; it
busy-polls its own CPU (see ``ECHO_SPIN_US``) so that the rate is the
server's, not the cost of waking an idle vCPU on the client side; the native
server is started for each repeat the same way (``--cpu 0``).  Every client
run has a timeout and is killed on overrun; the native server exits when the
pipe to its standard input closes.

The native tools are built on demand (``cargo build --release -p
plait-echo``, once per run, before the first echo row); without cargo and
without built binaries the echo rows say why and are not measured.

Stand-ins: ``--as-plait stdlib`` puts asyncio's loop in plait's column;
``PLAIT_BENCH_LOOP=uvloop`` (or ``rloop``, ``asyncio``) puts that loop there
for these rows only (a column that runs the same loop as another shows how
far identical code reads from 1.00x on this machine).  Without either, and
without ``plait.new_event_loop``, plait's column is empty.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from itertools import repeat
from pathlib import Path
from time import perf_counter

from harness import PLAIT, REF, STDLIB, BenchContext, Variant, Workload

GROUP = "loop"
TITLE = "loop: asyncio event loop (call_soon, sleep(0), futures, timers, tasks, TCP echo)"

Runner = Callable[[int], float]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: Fixed batch per micro row: (full run, --quick).
BATCH = {
    "call_soon": (1_000_000, 100_000),
    "sleep0": (100_000, 20_000),
    "ping_pong": (100_000, 10_000),
    "call_later": (100_000, 10_000),
    "gather": (100_000, 10_000),
}

ECHO_CONNS = 10
ECHO_SECONDS = (0.25, 0.1)  # counted seconds per repeat: (full, --quick)
ECHO_WARMUP_PER_CONN = 20
ECHO_READ = 65536  # reader.read(n) in the streams server
#: The client polls epoll without sleeping for up to this long (plait-echo-client
#: --spin-us): in effect always, so its CPU never halts and no echo waits for
#: a vCPU to wake.  Measured here: with it, identical code in two columns read
#: 0.89-1.04x over 6 paired repeats (1 KiB); sleeping at once, or after a 100 us
#: spin, 0.23-1.31x.  The client has CPU 1 to itself; the server loses nothing.
ECHO_SPIN_US = 1_000_000
#: How long a client run may overrun its counted seconds before it is killed.
CLIENT_SLACK = 30.0

REPO = Path(__file__).resolve().parent.parent
STANDIN_ENV = "PLAIT_BENCH_LOOP"
_PLAIT_LINE = "not collected"  # what runs in plait's column, for the legend


def _fmt_count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


# --------------------------------------------------------------------------
# Which loops run.


def _peer_factory(name: str) -> LoopFactory | None:
    """``uvloop.new_event_loop`` / ``rloop.new_event_loop``, None if absent."""
    try:
        return importlib.import_module(name).new_event_loop
    except ImportError:
        return None


def plait_factory(ctx: BenchContext) -> tuple[LoopFactory | None, str]:
    """(the loop factory for plait's column or None, what runs there)."""
    standin = os.environ.get(STANDIN_ENV)
    if standin:
        factory = asyncio.new_event_loop if standin == "asyncio" else _peer_factory(standin)
        if factory is None:
            raise SystemExit(f"{STANDIN_ENV}={standin}: cannot import {standin}")
        return factory, f"STAND-IN {standin}.new_event_loop ({STANDIN_ENV})"
    if ctx.plait is None:
        return None, "plait is not built"
    try:
        area = ctx.plait.loop  # asyncio under --as-plait stdlib, else plait.loop
    except ImportError:
        area = None
    factory = getattr(area, "new_event_loop", None)
    if factory is None and ctx.plait.name == PLAIT and ctx.plait.label == "plait":
        import plait

        factory = getattr(plait, "new_event_loop", None)
    if factory is None:
        return None, "plait.new_event_loop is not available yet"
    return factory, f"{ctx.plait.label}: {factory.__module__}.new_event_loop"


def _quiet_shutdown_errors(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Connections reset by a client that has exited are not errors here."""
    if isinstance(context.get("exception"), (ConnectionError, BrokenPipeError)):
        return
    loop.default_exception_handler(context)


def _fresh_loop(factory: LoopFactory) -> asyncio.AbstractEventLoop:
    gc.collect()  # the previous column's garbage is not this column's cost
    loop = factory()
    loop.set_exception_handler(_quiet_shutdown_errors)
    return loop


# --------------------------------------------------------------------------
# Micro workloads: whole batches, rate per operation.


def _batches(batch: int, one: Callable[[asyncio.AbstractEventLoop, int], float],
             factory: LoopFactory) -> Runner:
    def run(n: int) -> float:
        count = max(1, round(n / batch))
        total = 0.0
        for _ in range(count):
            loop = _fresh_loop(factory)
            try:
                total += one(loop, batch)
            finally:
                loop.close()
        return total * n / (count * batch)  # seconds for n at the measured rate

    return run


def _noop() -> None:
    pass


def call_soon_batch(loop: asyncio.AbstractEventLoop, n: int) -> float:
    """Schedule n callbacks from outside the loop, then run them all."""
    call_soon = loop.call_soon
    t0 = perf_counter()
    for _ in repeat(None, n):
        call_soon(_noop)
    call_soon(loop.stop)
    loop.run_forever()
    return perf_counter() - t0


def sleep0_batch(loop: asyncio.AbstractEventLoop, n: int) -> float:
    """One task yielding to the loop n times (one loop iteration each)."""

    async def yielder() -> None:
        sleep = asyncio.sleep
        for _ in repeat(None, n):
            await sleep(0)

    coro = yielder()
    t0 = perf_counter()
    loop.run_until_complete(coro)
    return perf_counter() - t0


def ping_pong_batch(loop: asyncio.AbstractEventLoop, n: int) -> float:
    """Two tasks, n round trips: each resolves a fresh future the other awaits."""
    new_future = loop.create_future
    ping = new_future()
    pong = new_future()

    async def pinger() -> None:
        nonlocal pong
        for _ in repeat(None, n):
            mine = pong = new_future()
            ping.set_result(None)
            await mine

    async def ponger() -> None:
        nonlocal ping
        for _ in repeat(None, n):
            await ping
            ping = new_future()
            pong.set_result(None)

    async def main() -> None:
        b = loop.create_task(ponger())
        a = loop.create_task(pinger())
        await a
        await b

    coro = main()
    t0 = perf_counter()
    loop.run_until_complete(coro)
    return perf_counter() - t0


def call_later_batch(loop: asyncio.AbstractEventLoop, n: int) -> float:
    """Schedule n timers (delays spread over 0-1 ms, all due by the time they
    are scheduled), run the loop until the last has fired."""
    left = n

    def fire() -> None:
        nonlocal left
        left -= 1
        if not left:
            loop.stop()

    call_later = loop.call_later
    delays = [(i % 1000) * 1e-6 for i in range(n)]
    t0 = perf_counter()
    for d in delays:
        call_later(d, fire)
    loop.run_forever()
    return perf_counter() - t0


async def _nothing() -> None:
    pass


def gather_batch(loop: asyncio.AbstractEventLoop, n: int) -> float:
    """create_task for n coroutines, then gather them all."""

    async def main() -> None:
        create_task = loop.create_task
        await asyncio.gather(*[create_task(_nothing()) for _ in repeat(None, n)])

    coro = main()
    t0 = perf_counter()
    loop.run_until_complete(coro)
    return perf_counter() - t0


MICRO = (
    # key, row name, unit, batch runner, max repeats
    ("call_soon", "call_soon + run, {n} callbacks", "calls", call_soon_batch, 5),
    ("sleep0", "asyncio.sleep(0), 1 task, {n} yields", "yields", sleep0_batch, None),
    ("ping_pong", "future ping-pong, 2 tasks, {n}", "trips", ping_pong_batch, None),
    ("call_later", "call_later + fire, {n} timers", "timers", call_later_batch, None),
    ("gather", "create_task + gather, {n} coros", "tasks", gather_batch, 5),
)


# --------------------------------------------------------------------------
# The native tools.


class EchoTools:
    """Paths of plait-echo-client and -server, built once per run on demand."""

    def __init__(self) -> None:
        self._paths: tuple[Path, Path] | None = None
        self._error: str | None = None

    def ensure(self) -> tuple[Path, Path]:
        if self._paths is None and self._error is None:
            try:
                self._paths = self._build()
            except Exception as exc:  # noqa: BLE001 (reported by every echo row)
                self._error = str(exc)
        if self._paths is None:
            raise RuntimeError(self._error)
        return self._paths

    @staticmethod
    def _build() -> tuple[Path, Path]:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
        if not target.is_absolute():
            target = REPO / target
        paths = (target / "release" / "plait-echo-client", target / "release" / "plait-echo-server")
        cargo = shutil.which("cargo")
        if cargo is None:
            if all(p.is_file() for p in paths):
                print("loop: cargo not found; using the echo tools already built in "
                      f"{paths[0].parent}", file=sys.stderr, flush=True)
                return paths
            raise RuntimeError("the native echo tools are not built and cargo is not on PATH: "
                               "install Rust (rustup), then `cargo build --release -p plait-echo`")
        print("loop: cargo build --release -p plait-echo (the native echo tools) ...",
              file=sys.stderr, flush=True)
        r = subprocess.run([cargo, "build", "--release", "--quiet", "-p", "plait-echo"],
                           cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
        if r.returncode != 0:
            tail = " | ".join(r.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"cargo build --release -p plait-echo failed: {tail}")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise RuntimeError(f"cargo built plait-echo but {', '.join(missing)} is missing")
        return paths


TOOLS = EchoTools()


def _cpus() -> tuple[int, int | None]:
    """(server CPU, client CPU): the CPU this thread is pinned to (the row is
    pinned) and another one of the machine's, or None on a 1-CPU machine."""
    mine = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    others = [c for c in range(os.cpu_count() or 1) if c != mine]
    return mine, (others[0] if others else None)


def _run_client(port: int, size: int, seconds: float) -> float:
    """Run plait-echo-client against 127.0.0.1:port; its messages/s."""
    client, _ = TOOLS.ensure()
    _, client_cpu = _cpus()
    cmd = [str(client), "--port", str(port), "--conns", str(ECHO_CONNS), "--size", str(size),
           "--duration", f"{seconds:g}", "--warmup", str(ECHO_WARMUP_PER_CONN * ECHO_CONNS),
           "--timeout", f"{seconds + CLIENT_SLACK - 5:g}", "--spin-us", str(ECHO_SPIN_US)]
    if client_cpu is not None:
        cmd += ["--cpu", str(client_cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=seconds + CLIENT_SLACK)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TimeoutError(f"plait-echo-client overran {seconds + CLIENT_SLACK:g} s; killed")
    if proc.returncode != 0:
        raise RuntimeError((err.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    report = json.loads(out.strip().splitlines()[-1])
    if not report.get("rate"):
        raise RuntimeError(f"plait-echo-client: no messages echoed: {out.strip()}")
    return float(report["rate"])


# --------------------------------------------------------------------------
# Echo servers.


class _EchoProtocol(asyncio.Protocol):
    """asyncio.Protocol echo: every chunk received is written straight back."""

    def __init__(self, live: set) -> None:
        self.live = live

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.write = transport.write
        self.live.add(transport)

    def data_received(self, data: bytes) -> None:
        self.write(data)

    def connection_lost(self, exc) -> None:
        self.live.discard(self.transport)


async def _serve_protocol(loop: asyncio.AbstractEventLoop, live: set):
    return await loop.create_server(lambda: _EchoProtocol(live), "127.0.0.1", 0)


async def _serve_streams(loop: asyncio.AbstractEventLoop, live: set):
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        live.add(writer)
        read, write, drain = reader.read, writer.write, writer.drain
        try:
            while True:
                data = await read(ECHO_READ)
                if not data:
                    break
                write(data)
                await drain()
        except ConnectionError:
            pass
        finally:
            live.discard(writer)
            writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _client_rate(port: int, size: int, seconds: float) -> float:
    """Run the native client in a thread (it only waits on the process) while
    this loop serves; resolve with its rate."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def resolve(outcome: tuple[float | None, BaseException | None]) -> None:
        if done.done():
            return
        rate, exc = outcome
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(rate)

    def wait() -> None:
        try:
            outcome = (_run_client(port, size, seconds), None)
        except BaseException as exc:  # noqa: BLE001 (handed to the loop's thread)
            outcome = (None, exc)
        loop.call_soon_threadsafe(resolve, outcome)

    threading.Thread(target=wait, name="plait-echo-client", daemon=True).start()
    return await done


async def _shutdown(server, live: set) -> None:
    """Close the server; give connections the client left a bounded moment
    to see their EOF, then close what is left."""
    server.close()
    sleep = asyncio.sleep
    for _ in range(200):  # <= ~1 s
        if not live:
            break
        await sleep(0.005)
    for t in list(live):
        t.close()
    await sleep(0)


def python_echo(factory: LoopFactory, serve, size: int, seconds: float) -> Runner:
    def run(n: int) -> float:
        loop = _fresh_loop(factory)
        live: set = set()
        try:
            server = loop.run_until_complete(serve(loop, live))
            port = server.sockets[0].getsockname()[1]
            try:
                rate = loop.run_until_complete(_client_rate(port, size, seconds))
            finally:
                loop.run_until_complete(_shutdown(server, live))
        finally:
            loop.close()
        return n / rate

    return run


def native_echo(size: int, seconds: float) -> Runner:
    def run(n: int) -> float:
        _, server = TOOLS.ensure()
        server_cpu, _ = _cpus()
        proc = subprocess.Popen(
            [str(server), "--port", "0", "--cpu", str(server_cpu), "--exit-on-stdin-eof",
             "--max-seconds", f"{seconds + 2 * CLIENT_SLACK:g}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()  # bounded: the server prints it or exits
            if not line:
                why = proc.stderr.read().strip() or "exited without a port"
                raise RuntimeError(f"plait-echo-server: {why}")
            rate = _run_client(json.loads(line)["port"], size, seconds)
        finally:
            proc.stdin.close()  # EOF: the server exits by itself
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        return n / rate

    return run


ECHO = (
    # row name, server kind, message size, target vs native, peer targets
    ("echo protocol 1 KiB, 10 conns", "protocol", 1024, 0.95, {"uvloop": 1.0, "rloop": 1.0}),
    ("echo streams 1 KiB, 10 conns", "streams", 1024, None, {"rloop": 1.0}),
    ("echo protocol 64 KiB, 10 conns", "protocol", 65536, 0.90, {}),
    ("echo streams 64 KiB, 10 conns", "streams", 65536, 0.90, {}),
)


# --------------------------------------------------------------------------
# The rows.


def _missing_note(names: list[str]) -> Callable[[], list[str]] | None:
    if not names:
        return None
    return lambda: [f"{name}: not installed (pip install {name.split()[0]}), its line is empty"
                    for name in names]


def workloads(ctx: BenchContext) -> list[Workload]:
    std_new = ctx.stdlib.loop.new_event_loop
    global _PLAIT_LINE
    pl_new, pl_what = plait_factory(ctx)
    _PLAIT_LINE = pl_what if pl_new is not None else f"empty ({pl_what})"
    uvloop_new, rloop_new = _peer_factory("uvloop"), _peer_factory("rloop")
    which = 1 if ctx.quick else 0
    out: list[Workload] = []

    for key, name, unit, one, max_repeats in MICRO:
        batch = BATCH[key][which]
        variants = [Variant(STDLIB, "asyncio.new_event_loop()", _batches(batch, one, std_new))]
        if rloop_new is not None:
            variants.append(Variant(REF, "rloop.new_event_loop()", _batches(batch, one, rloop_new)))
        if pl_new is not None:
            variants.append(Variant(PLAIT, pl_what, _batches(batch, one, pl_new)))
        if uvloop_new is not None:
            variants.append(Variant("uvloop", "uvloop.new_event_loop()",
                                    _batches(batch, one, uvloop_new)))
        missing = [n for n, f in (("rloop (ref)", rloop_new), ("uvloop", uvloop_new)) if f is None]
        out.append(Workload(GROUP, name.format(n=_fmt_count(batch)), unit, "rloop", variants,
                            target=1.0, start_n=batch, max_repeats=max_repeats,
                            notes=_missing_note(missing)))

    seconds = ECHO_SECONDS[which]
    for name, kind, size, target, peer_targets in ECHO:
        serve = _serve_protocol if kind == "protocol" else _serve_streams
        what = ("asyncio.Protocol echo (create_server)" if kind == "protocol"
                else f"asyncio.start_server, reader.read({ECHO_READ}) + write + drain")
        variants = [
            Variant(STDLIB, f"asyncio.new_event_loop(): {what}",
                    python_echo(std_new, serve, size, seconds)),
            Variant(REF, "plait-echo-server (native epoll, crates/plait-echo)",
                    native_echo(size, seconds)),
        ]
        if pl_new is not None:
            variants.append(Variant(PLAIT, f"{pl_what}: {what}",
                                    python_echo(pl_new, serve, size, seconds)))
        for peer, factory in (("uvloop", uvloop_new), ("rloop", rloop_new)):
            if factory is not None:
                variants.append(Variant(peer, f"{peer}.new_event_loop(): {what}",
                                        python_echo(factory, serve, size, seconds)))
        missing = [n for n, f in (("uvloop", uvloop_new), ("rloop", rloop_new)) if f is None]
        out.append(Workload(GROUP, name, "msgs", "native srv", variants, target=target,
                            pinned=True, start_n=1 << 30, setup=TOOLS.ensure,
                            max_repeats=7, peer_targets=peer_targets,
                            notes=_missing_note(missing)))
    return out


def LEGEND() -> list[str]:  # the harness's optional module attribute
    return [
        ("loop: micro rows' ref = rloop (target plait >= rloop); echo rows' ref = native srv, "
         "plait-echo-server (C-style"),
        (f"  epoll echo, the limit); echo = {ECHO_CONNS} connections in a closed loop from "
         "plait-echo-client (native, own process, pinned"),
        ("  to CPU 1), server under test in this process pinned to CPU 0; msgs = echoed "
         "messages. Peer lines: plait/<peer>."),
        f"  loop rows' plait column: {_PLAIT_LINE}",
    ]
