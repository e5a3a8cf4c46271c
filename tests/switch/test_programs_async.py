"""Real async servers, unchanged, under ``python -m plait run``: an aiohttp
app and a uvicorn app (``apps_async/``). Each is started plain and switched,
driven from here over 127.0.0.1 (text, a streamed 4 MiB body, a 1 MiB
upload echoed, requests that only complete when all of them are in flight
together, a websocket for aiohttp), stopped with a signal, and must exit
cleanly with the same output either way; under the switch its loop must be
plait's (a route answers with the running loop's class).

uvicorn runs with ``--loop asyncio``: its default, ``auto``, is that
without uvloop and uvloop's loop with it — a program's own choice of loop,
which the switch leaves alone."""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.switch._run import env

pytestmark = pytest.mark.timeout(180)

APPS = Path(__file__).resolve().parent / "apps_async"
PLAIT_LOOP = "plait.loop.EventLoop"
ASYNCIO_LOOP = "asyncio.unix_events._UnixSelectorEventLoop"
CHUNK = bytes(range(256)) * 256
BIG_SHA = hashlib.sha256(CHUNK * 64).hexdigest()
STARTUP_BOUND = 60  # seconds for a server to answer its first request (a hang bound)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process this test started (output to files: no pipe to fill)."""

    def __init__(self, argv, port, cwd):
        self.port = port
        self.out = tempfile.TemporaryFile("w+")
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env(),
                                     stdout=self.out, stderr=self.err, text=True)

    def output(self):
        self.out.seek(0)
        self.err.seek(0)
        return self.out.read(), self.err.read()

    def wait_ready(self):
        deadline = time.monotonic() + STARTUP_BOUND
        while True:
            assert self.proc.poll() is None, ("server died", self.output())
            try:
                return self.get("/")
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(("server never answered", self.output()))
                time.sleep(0.05)

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def get(self, path):
        return self.request("GET", path)

    def stop(self, signum):
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(("server did not stop on", signum, self.output()))
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _drive(server):
    """The responses, as comparable values (the loop class apart)."""
    seen = {}
    status, _, body = server.get("/")
    seen["/"] = (status, body)
    status, headers, body = server.get("/big")
    assert status == 200 and hashlib.sha256(body).hexdigest() == BIG_SHA
    seen["/big"] = (status, len(body), {k.lower(): v for k, v in headers.items()}.get("x-sha256"))
    upload = os.urandom(1 << 20)
    status, headers, body = server.request("POST", "/echo", body=upload)
    assert body == upload
    seen["/echo"] = (status, {k.lower(): v for k, v in headers.items()}.get("x-length"))
    # Eight requests that each answer only once all eight are in: served concurrently.
    n, answers, errors = 8, [], []

    def one():
        try:
            answers.append(server.get(f"/gather/k?n={n}")[::2])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors and len(answers) == n, (errors, answers)
    seen["/gather"] = sorted(answers)
    status, _, body = server.get("/loop")
    assert status == 200
    return seen, body.decode()


def _normalize(text, port):
    text = text.replace(str(port), "PORT")
    text = re.sub(r"\[\d+\]", "[PID]", text)  # uvicorn's "server process [pid]"
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:N", text)  # clients' ports
    # /loop's answer (the loop class) is the one that differs, so its size too.
    text = re.sub(r'("GET /loop HTTP/1\.1" 200) \d+', r"\1 SIZE", text)
    # Lines of concurrent requests come in any order.
    return sorted(text.splitlines())


def _serve(argv, cwd, switched, signum, extra=None):
    port = _free_port()
    if switched:
        argv = ["-m", "plait", "run", *argv]
    server = Server([a.replace("{port}", str(port)) for a in argv], port, cwd)
    try:
        server.wait_ready()
        seen, loop = _drive(server)
        if extra is not None:
            seen["extra"] = extra(port)
        code = server.stop(signum)
    finally:
        server.kill()
    out, err = server.output()
    return {"seen": seen, "loop": loop, "code": code,
            "out": _normalize(out, port), "err": _normalize(err, port)}


def _compare(argv, cwd, signum, extra=None):
    plain = _serve(argv, cwd, False, signum, extra)
    switched = _serve(argv, cwd, True, signum, extra)
    assert plain["loop"] == ASYNCIO_LOOP, plain
    assert switched["loop"] == PLAIT_LOOP, switched
    # A clean stop: exit 0, or death by the same signal re-raised once the
    # server has shut down (uvicorn does that with SIGTERM); the same either way.
    assert switched["code"] == plain["code"] in (0, -signum), (plain, switched)
    for key in ("seen", "out", "err"):
        assert switched[key] == plain[key], (key, plain[key], switched[key])
    return plain


def _websocket(port):
    import asyncio

    import aiohttp

    async def talk():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                replies = []
                for word in ("hello", "plait"):
                    await ws.send_str(word)
                    replies.append((await ws.receive(timeout=60)).data)
                return replies

    return asyncio.run(talk())


@pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None,
                    reason="aiohttp is not installed (a test dependency: pip install aiohttp)")
def test_aiohttp_app():
    plain = _compare([str(APPS / "aiohttp_app.py"), "{port}"], APPS, signal.SIGINT, _websocket)
    assert plain["seen"]["extra"] == ["HELLO", "PLAIT"]
    assert "app: startup" in plain["out"] and "app: cleanup" in plain["out"], plain["out"]
    assert "stopped" in plain["out"], plain["out"]  # run_app returned: a clean stop


@pytest.mark.skipif(importlib.util.find_spec("uvicorn") is None,
                    reason="uvicorn is not installed (a test dependency: pip install uvicorn)")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_uvicorn_app(signum):
    plain = _compare(["-m", "uvicorn", "uvicorn_app:app", "--host", "127.0.0.1", "--port", "{port}",
                      "--loop", "asyncio"], APPS, signum)
    assert "app: startup" in plain["out"] and "app: shutdown" in plain["out"], plain["out"]
    assert any("Application shutdown complete" in line for line in plain["err"]), plain["err"]
