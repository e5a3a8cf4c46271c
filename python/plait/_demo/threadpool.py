"""Demo section 2: a thread pool running many I/O-bound jobs (files and a
loopback TCP echo), the same code on ``concurrent.futures`` and ``plait.futures``."""

from __future__ import annotations

import os
import threading
import time
from types import ModuleType
from typing import Callable

from .common import STALL_SECONDS, DemoContext, RunResult, futures_modules, section, verdict
from .terminal import ProgressBar

IO_WORKERS = 16
IO_PAYLOAD = 4096  # bytes per job, written to a file, read back, echoed over TCP


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
    ok, note = verdict(done, jobs, total, expected, errors, note)
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
