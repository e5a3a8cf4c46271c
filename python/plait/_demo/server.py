"""Demo section 5: an asyncio echo server on the standard loop and on plait's,
each in its own process, loaded by the native client ``plait-echo-client``."""

from __future__ import annotations

import os
import sys

from .common import STDLIB_NAME, DemoContext, RunResult, section

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

    # <root>/python/plait/_demo/server.py
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
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
