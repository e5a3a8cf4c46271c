"""Process IPC workloads: small items from a child process to the parent.

The issue's target is against the standard library (``plait / stdlib``):
``plait.process.Queue`` small items between two processes >= 5x
``multiprocessing.Queue``. The Pipe row compares ``Connection.send/recv``
(for information; no target).

A forked child (started and waiting outside the timed part) puts or sends
n small ints as fast as it can once the parent says go; the timed part is
the parent receiving all n. References: ``multiprocessing.SimpleQueue`` (a
pipe and a lock, no feeder thread) for the queue row, and fixed 8-byte
records written with ``os.write`` to a bare ``os.pipe`` (no pickling, no
framing) for the pipe row: the floor for moving a small item between
processes from Python.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
from time import perf_counter

from harness import PLAIT, REF, STDLIB, BenchContext, Variant, Workload

GROUP = "process"
TITLE = "process: Queue and Pipe, small items child -> parent"

_fork = multiprocessing.get_context("fork")


def _put_n(q, n, go):
    go.recv()
    put = q.put
    for i in range(n):
        put(i)


def _send_n(conn, n, go):
    go.recv()
    send = conn.send
    for i in range(n):
        send(i)


def _write_n(fd, n, go):
    go.recv()
    pack = struct.Struct("q").pack
    write = os.write
    for i in range(n):
        write(fd, pack(i))


def _timed(target, args, receive, n, cleanup=()):
    go_r, go_w = _fork.Pipe(False)
    p = _fork.Process(target=target, args=(*args, n, go_r))
    p.start()
    try:
        t0 = perf_counter()
        go_w.send(1)
        receive(n)
        dt = perf_counter() - t0
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join()
        for c in cleanup:
            c()
    return dt


def queue_items(make_queue):
    def run(n: int) -> float:
        q = make_queue()

        def receive(n):
            get = q.get
            for _ in range(n):
                get()

        return _timed(_put_n, (q,), receive, n)

    return run


def pipe_items(make_pipe):
    def run(n: int) -> float:
        r, w = make_pipe(False)

        def receive(n):
            recv = r.recv
            for _ in range(n):
                recv()

        return _timed(_send_n, (w,), receive, n, (r.close, w.close))

    return run


def raw_pipe_items(n: int) -> float:
    r, w = os.pipe()

    def receive(n):
        left = 8 * n
        read = os.read
        while left:
            left -= len(read(r, min(left, 65536)))

    return _timed(_write_n, (w,), receive, n, (lambda: os.close(r), lambda: os.close(w)))


def workloads(ctx: BenchContext) -> list[Workload]:
    std = ctx.stdlib.process
    pl = ctx.plait.process if ctx.plait is not None else None
    plabel = ctx.plait.label if ctx.plait is not None else ""
    out: list[Workload] = []

    vs = [Variant(STDLIB, "multiprocessing.Queue", queue_items(std.Queue)),
          Variant(REF, "multiprocessing.SimpleQueue", queue_items(_fork.SimpleQueue))]
    if pl is not None:
        vs.append(Variant(PLAIT, f"{plabel}: process.Queue", queue_items(pl.Queue)))
    out.append(Workload(GROUP, "plait.process.Queue small items between two processes",
                        "items", "mp SimpleQ", vs, target=5.0, target_vs=STDLIB,
                        per_op="item", start_n=2000))

    vs = [Variant(STDLIB, "multiprocessing.Pipe", pipe_items(std.Pipe)),
          Variant(REF, "os.pipe, 8-byte os.write records", raw_pipe_items)]
    if pl is not None:
        vs.append(Variant(PLAIT, f"{plabel}: process.Pipe", pipe_items(pl.Pipe)))
    out.append(Workload(GROUP, "Pipe send -> recv small items between two processes",
                        "items", "raw pipe", vs, per_op="item", start_n=2000))
    return out
