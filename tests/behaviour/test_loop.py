"""plait.loop: the entry points, the handle contract, threads, signals,
Ctrl-C, debug mode and the exception handler. CPython's own asyncio suites
run on the loop in tests/conformance/test_asyncio_suites.py; this file
covers what they do not. Every wait is bounded."""

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import plait
import plait.loop

pytestmark = pytest.mark.timeout(60)


def test_entry_points_make_plait_loops():
    async def kind():
        return type(asyncio.get_running_loop())

    assert plait.run(kind()) is plait.loop.EventLoop
    assert plait.EventLoop is plait.loop.EventLoop
    loop = plait.new_event_loop()
    assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(loop, asyncio.BaseEventLoop)
    loop.close()
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=plait.new_event_loop) as runner:
            assert runner.run(kind()) is plait.loop.EventLoop
    if sys.version_info >= (3, 12):
        assert asyncio.run(kind(), loop_factory=plait.new_event_loop) is plait.loop.EventLoop


def test_run_returns_and_raises_like_asyncio_run():
    async def boom():
        raise ValueError("x")

    async def value():
        await asyncio.sleep(0.01)
        return 7

    assert plait.run(value()) == 7
    with pytest.raises(ValueError):
        plait.run(boom())
    with pytest.raises(ValueError):
        plait.run(42)  # not a coroutine

    async def nested():
        coro = value()
        try:
            plait.run(coro)
        finally:
            coro.close()

    with pytest.raises(RuntimeError):
        plait.run(nested())


def test_install_sets_the_policy():
    if plait.loop.EventLoopPolicy is None:
        pytest.skip("no event loop policies in this Python")
    old = asyncio.get_event_loop_policy()
    try:
        plait.install()
        loop = asyncio.new_event_loop()
        assert type(loop) is plait.loop.EventLoop
        loop.close()
    finally:
        asyncio.set_event_loop_policy(old)


@pytest.fixture
def loop():
    lp = plait.new_event_loop()
    yield lp
    lp.close()


def test_call_soon_order_args_and_context(loop):
    var = contextvars.ContextVar("var", default="outer")
    seen = []

    def cb(tag, *rest):
        seen.append((tag, rest, var.get()))

    loop.call_soon(cb, 1)
    var.set("inner")  # handles copy the context when they are made
    loop.call_soon(cb, 2, "a", "b")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "explicit")
    loop.call_soon(cb, 3, context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [(1, (), "outer"), (2, ("a", "b"), "inner"), (3, (), "explicit")]


def test_handle_args_and_error_report_keep_their_arguments(loop):
    # None, one and several arguments are kept differently inside; asyncio's
    # view of them (``_args``, the error report's repr) is the same tuple.
    def cb(*a):
        pass

    hs = [loop.call_soon(cb), loop.call_soon(cb, 1), loop.call_soon(cb, 1, "two")]
    assert [h._args for h in hs] == [(), (1,), (1, "two")]
    def bad(x):
        raise ValueError(x)

    def report(lp):
        reports = []
        lp.set_exception_handler(lambda _, ctx: reports.append(ctx))
        lp.call_soon(bad, "only")
        lp.call_soon(lp.stop)
        lp.run_forever()
        assert len(reports) == 1 and reports[0]["exception"].args == ("only",)
        return reports[0]["message"]

    mine = report(loop)
    assert [h._args for h in hs] == [None, None, None]  # let go once run
    std = asyncio.new_event_loop()
    try:
        assert mine == report(std)  # the same words as asyncio's own loop
    finally:
        std.close()
    t1 = loop.call_at(5.0, cb, 1)
    t2 = loop.call_at(5.0, cb, 1)
    t3 = loop.call_at(5.0, cb, 2)
    assert t1 == t2 and t1 != t3
    for t in (t1, t2, t3):
        t.cancel()


def test_reused_handles_stand_for_their_own_call(loop):
    # call_soon reuses a handle object once nobody holds it any more; a
    # handle somebody holds (or watches through a weak reference) keeps
    # standing for its own call, pending or not.
    import weakref

    ran = []
    loop.call_soon(ran.append, "dropped at once")  # its handle is reused below
    kept = loop.call_soon(ran.append, "kept, then cancelled")
    watched = loop.call_soon(ran.append, "watched")
    ref = weakref.ref(watched)
    del watched
    later = loop.call_soon(ran.append, "later, cancelled")
    assert later is not kept and later is not ref()
    kept.cancel()
    later.cancel()
    assert kept.cancelled() and later.cancelled() and not ref().cancelled()
    assert ref()._args == ("watched",)
    others = [loop.call_soon(ran.append, i) for i in range(5)]
    assert len({id(h) for h in others}) == 5  # all held: all distinct
    del others
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["dropped at once", "watched", 0, 1, 2, 3, 4]


def test_a_subclass_overriding_call_soon_is_called(loop):
    seen = []

    class Loop(plait.loop.EventLoop):
        def call_soon(self, callback, *args, context=None):
            seen.append(callback)
            return super().call_soon(callback, *args, context=context)

    sub = Loop()
    try:
        async def main():
            await asyncio.sleep(0)  # the task's steps go through call_soon
            return 7

        assert sub.run_until_complete(main()) == 7
        assert seen, "the subclass's call_soon was bypassed"
    finally:
        sub.close()
    assert "call_soon" in vars(loop)  # the plain loop keeps its bound call_soon


def test_handle_and_timer_handle_contract(loop):
    ran = []
    h = loop.call_soon(ran.append, "no")
    assert not h.cancelled() and isinstance(h.get_context(), contextvars.Context)
    h.cancel()
    assert h.cancelled()
    h.cancel()  # twice is fine
    t0 = loop.time()
    th = loop.call_later(10, ran.append, "never")
    assert abs(th.when() - (t0 + 10)) < 1
    assert "TimerHandle" in repr(th) and "when=" in repr(th)
    th.cancel()
    assert "cancelled" in repr(th)
    at = loop.call_at(loop.time() + 0.01, ran.append, "at")
    assert at.when() > t0
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert ran == ["at"]
    with pytest.raises(TypeError):
        loop.call_later(None, print)
    # A context that is not a Context is taken, as asyncio takes it, and
    # fails when the callback runs (reported to the exception handler).
    reported = []
    loop.set_exception_handler(lambda lp, ctx: reported.append(type(ctx["exception"])))
    loop.call_soon(print, context=object())
    loop.call_later(0, print, context=object())
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert reported == [AttributeError, AttributeError]


def test_timers_fire_in_time_order(loop):
    out = []
    for d in (0.03, 0.01, 0.02, 0.01):
        loop.call_later(d, out.append, d)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == [0.01, 0.01, 0.02, 0.03]


def test_many_cancelled_timers_are_dropped(loop):
    hs = [loop.call_later(100, print) for _ in range(1000)]
    for h in hs[:900]:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    ready, timers = loop._plait_pending
    assert timers <= 200  # pruned, as asyncio prunes its heap


def test_call_soon_threadsafe_from_threads(loop):
    got = []
    n_threads, per = 4, 500

    def producer(k):
        for i in range(per):
            loop.call_soon_threadsafe(got.append, (k, i))

    def check():
        if len(got) == n_threads * per:
            loop.stop()
        else:
            loop.call_later(0.001, check)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    loop.call_soon(check)
    loop.run_forever()
    for t in threads:
        t.join()
    for k in range(n_threads):
        assert [i for kk, i in got if kk == k] == list(range(per))


def test_exception_handler_gets_loop_and_context(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))

    def bad():
        raise ZeroDivisionError("bad")

    h = loop.call_soon(bad)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(calls) == 1
    lp, ctx = calls[0]
    assert lp is loop and isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is h and ctx["message"].startswith("Exception in callback")


def test_keyboard_interrupt_in_a_callback_propagates_and_keeps_the_rest(loop):
    ran = []

    def stop_here():
        raise KeyboardInterrupt

    loop.call_soon(stop_here)
    loop.call_soon(ran.append, 1)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [1]


def test_debug_mode_warns_about_slow_callbacks_and_thread_misuse(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.03)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    assert any("took" in r.getMessage() and "Executing" in r.getMessage() for r in caplog.records)
    # Non-thread-safe calls from another thread while the loop runs.
    errors = []

    def other_thread():
        try:
            loop.call_soon(print)
        except RuntimeError as exc:
            errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other_thread).start())
    loop.run_forever()
    assert errors and "thread" in str(errors[0])


def test_readers_writers_and_sockets(loop):
    import socket

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = []

    def on_read():
        got.append(a.recv(100))
        loop.remove_reader(a)
        loop.stop()

    loop.add_reader(a, on_read)
    loop.add_writer(b, lambda: (b.send(b"ping"), loop.remove_writer(b)))
    loop.run_forever()
    assert got == [b"ping"]
    assert not loop.remove_reader(a)

    async def roundtrip():
        await loop.sock_sendall(b, b"hello")
        return await loop.sock_recv(a, 100)

    assert loop.run_until_complete(roundtrip()) == b"hello"
    a.close()
    b.close()


def test_closed_loop_refuses_work(loop):
    loop.close()
    assert loop.is_closed()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_later(1, print)
    loop.close()  # twice is fine


CTRL_C = textwrap.dedent(
    """
    import asyncio, json, sys, time, plait
    cancelled = False
    async def main():
        global cancelled
        print("ready", flush=True)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled = True
            raise
    try:
        plait.run(main())
        print(json.dumps({"raised": None}), flush=True)
    except KeyboardInterrupt:
        print(json.dumps({"raised": "KeyboardInterrupt", "at": time.monotonic(),
                          "cancelled": cancelled}), flush=True)
    """
)


def test_ctrl_c_cancels_the_main_task_and_exits_cleanly():
    p = subprocess.Popen([sys.executable, "-c", CTRL_C], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        sent = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        report = json.loads(p.stdout.readline())
        assert report["raised"] == "KeyboardInterrupt"
        assert report["at"] - sent < 5.0  # a hang bound; the latency is a bench row
        if sys.version_info >= (3, 11):  # asyncio.Runner cancels the main task
            assert report["cancelled"] is True
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()


SIGTERM = textwrap.dedent(
    """
    import asyncio, os, signal, plait
    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, got.set_result, "term")
        print("ready", flush=True)
        print(await asyncio.wait_for(got, 20), flush=True)
        assert loop.remove_signal_handler(signal.SIGTERM)
        assert not loop.remove_signal_handler(signal.SIGTERM)
    plait.run(main())
    """
)


def test_sigterm_handler_installed_with_add_signal_handler_fires():
    p = subprocess.Popen([sys.executable, "-c", SIGTERM], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        os.kill(p.pid, signal.SIGTERM)
        assert p.stdout.readline().strip() == "term"
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_streams_server_and_client():
    async def main():
        async def handle(reader, writer):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        out = []
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            for i in range(20):
                w.write(b"x" * i + b"\n")
                out.append(await r.readline())
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
        return out

    out = plait.run(main())
    assert out == [b"x" * i + b"\n" for i in range(20)] * 3


def test_subprocess_exec():
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; print(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(b"hello")
        return out, proc.returncode

    assert plait.run(main()) == (b"HELLO\n", 0)


def test_loop_works_in_a_forked_child():
    from _helpers import run_in_child

    def child():
        async def main():
            await asyncio.sleep(0.01)
            return 5

        assert plait.run(main()) == 5

    run_in_child(child)


@pytest.mark.parametrize("loop_name", ["plait", "asyncio"])
def test_example_http_server_runs_the_same_on_both_loops(loop_name):
    import urllib.request

    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "http_server.py")
    p = subprocess.Popen([sys.executable, example, "--loop", loop_name, "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().split()[-1]
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
        expected = "plait.loop" if loop_name == "plait" else "asyncio"
        assert body.startswith("hello from ") and expected in body
        with urllib.request.urlopen(url + "echo?abc", timeout=10) as r:
            assert r.read() == b"abc\n"
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10) == 0
        assert "stopped" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_dropped_loop_is_garbage_collected():
    # A closed loop, one that served a connection, and one never closed
    # (asyncio warns about it, and still frees it) all go away once dropped.
    import gc
    import warnings
    import weakref

    async def served():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)  # the server side's close completes

    refs = []
    for close in (True, False):
        lp = plait.new_event_loop()
        lp.run_until_complete(served() if close else asyncio.sleep(0.001))
        if close:
            lp.close()
        refs.append(weakref.ref(lp))
        del lp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert [r() for r in refs] == [None, None]


def test_protocol_receives_large_then_small_messages_intact(loop):
    # Large reads switch the transport to receiving straight into bytes
    # objects of the size waiting; small reads switch it back. Every byte
    # must arrive, in order, either way.
    import hashlib

    got = bytearray()
    done = loop.create_future()
    blob = os.urandom(3 * 1024 * 1024) + b"tail" * 10

    class Sink(asyncio.Protocol):
        def data_received(self, data):
            assert type(data) is bytes
            got.extend(data)
            if len(got) >= len(blob) + 5 and not done.done():
                done.set_result(None)

    async def main():
        server = await loop.create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        view = memoryview(blob)
        for i in range(0, len(blob), 200_000):
            writer.write(view[i:i + 200_000])
            await writer.drain()
            await asyncio.sleep(0)
        for piece in (b"a", b"bc", b"de"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.001)
        await asyncio.wait_for(done, 10)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob + b"abcde").digest()


def test_transport_state_changes_reach_the_native_paths(loop):
    # The native read and write read the transport's state from slots that
    # asyncio's own code assigns: a BufferedProtocol swapped in by
    # set_protocol gets the next data, through asyncio's read path, and a
    # closed transport's write is dropped as asyncio drops it.
    events = []
    done = loop.create_future()

    class Second(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(64)

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            events.append(("second", bytes(self.buf[:nbytes])))
            done.set_result(None)

    transports = []

    class First(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            transports.append(transport)

        def data_received(self, data):
            events.append(("first", data))
            self.transport.write(b"reply")
            self.transport.set_protocol(Second())

    async def main():
        server = await loop.create_server(First, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"one")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readexactly(5), 10)
        writer.write(b"two")
        await writer.drain()
        await asyncio.wait_for(done, 10)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return reply

    assert loop.run_until_complete(main()) == b"reply"
    t = transports[0]
    t.close()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert t._conn_lost == 1
    t.write(b"after close")  # counted and dropped, as asyncio does
    assert t._conn_lost == 2
    assert events == [("first", b"one"), ("second", b"two")]


BOTH_LOOPS = pytest.mark.parametrize("factory", [asyncio.new_event_loop, plait.new_event_loop],
                                     ids=["asyncio", "plait"])


def _run_streams(factory, handler, client, limit=2 ** 16):
    """Serve `handler` with asyncio.start_server on a fresh loop from
    `factory`, run `client(port)` against it, and return both results."""
    async def main():
        result = {}

        async def handle(reader, writer):
            try:
                result["server"] = await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=limit)
        port = server.sockets[0].getsockname()[1]
        got = await asyncio.wait_for(client(port), 30)
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        return got, result.get("server")

    lp = factory()
    try:
        return lp.run_until_complete(main())
    finally:
        lp.close()


async def _send_after_go(port, payload):
    """Wait for the server's b"go", then send `payload` and read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readexactly(2)
    writer.write(payload)
    await writer.drain()
    await reader.read()
    writer.close()


async def _send(port, payload):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    back = await reader.read()
    writer.close()
    await writer.wait_closed()
    return back


@BOTH_LOOPS
def test_stream_reads_of_every_size_arrive_whole(factory):
    # plait's transport reads straight into a StreamReader's buffer: small
    # reads through its reused buffer, large ones straight in. Mixed sizes
    # echoed through start_server/open_connection come back byte for byte.
    sizes = [1, 1000, 70000, 5, 300000, 64 * 1024, 2, 1 << 20]
    payload = b"".join(os.urandom(n) for n in sizes)

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    back, _ = _run_streams(factory, echo, lambda port: _send(port, payload))
    assert back == payload


@BOTH_LOOPS
def test_stream_reader_past_twice_its_limit_pauses_the_transport(factory):
    # feed_data's tail: past 2 * limit the transport stops reading until
    # the reader drains the buffer below the limit.
    limit = 1024
    payload = os.urandom(256 * 1024)

    async def slow(reader, writer):
        for _ in range(1000):
            if reader._paused:
                break
            await asyncio.sleep(0.005)
        paused = (reader._paused, writer.transport.is_reading(), len(reader._buffer) > 2 * limit)
        data = await reader.read()
        writer.write(len(data).to_bytes(8, "big"))
        await writer.drain()
        return paused, data == payload, writer.transport.is_closing() or writer.transport.is_reading()

    back, server = _run_streams(factory, slow, lambda port: _send(port, payload), limit=limit)
    assert int.from_bytes(back, "big") == len(payload)
    assert server == ((True, False, True), True, True)


@BOTH_LOOPS
def test_stream_protocol_subclass_and_cancelled_read(factory):
    # A StreamReaderProtocol subclass's own data_received is called (the
    # native feed is for asyncio's exact classes only); a read cancelled
    # while waiting loses nothing: the next read gets the data.
    seen = []

    class Counting(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(len(data))
            super().data_received(data)

    async def main():
        ready = asyncio.get_running_loop().create_future()
        results = {}

        async def handle(reader, writer):
            pending = asyncio.ensure_future(reader.read(10))
            await asyncio.sleep(0.01)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            ready.set_result(None)
            results["first"] = await reader.readexactly(5)
            writer.close()

        loop = asyncio.get_running_loop()

        def factory_():
            reader = asyncio.StreamReader(loop=loop)
            return asyncio.StreamReaderProtocol(reader, handle, loop=loop)

        server = await loop.create_server(factory_, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await ready
        w.write(b"hello")
        await w.drain()
        await r.read()
        w.close()
        await w.wait_closed()

        def counting_():
            return Counting(asyncio.StreamReader(loop=loop), lambda r, w: results.setdefault("sub", (r, w)), loop=loop)

        sub = await loop.create_server(counting_, "127.0.0.1", 0)
        r2, w2 = await asyncio.open_connection("127.0.0.1", sub.sockets[0].getsockname()[1])
        w2.write(b"abc")
        await w2.drain()
        for _ in range(1000):
            if seen:
                break
            await asyncio.sleep(0.005)
        sub_data = await results["sub"][0].read(3)  # the writer is kept: 3.12's closes when collected
        w2.close()
        await w2.wait_closed()
        results["sub"][1].close()  # 3.12's Server.wait_closed waits for its connections
        for s in (server, sub):
            s.close()
            await s.wait_closed()
        return results["first"], sub_data

    lp = factory()
    try:
        assert lp.run_until_complete(asyncio.wait_for(main(), 30)) == (b"hello", b"abc")
    finally:
        lp.close()
    assert seen == [3]


@BOTH_LOOPS
def test_patched_feed_data_and_data_received_are_called(factory):
    # Tests patch asyncio's stream methods on an instance or on the class;
    # plait's transport feeds the reader itself only while both are
    # asyncio's own, so a patch sees every byte.
    from unittest import mock

    calls = []

    async def patch_instance(reader, writer):
        real = reader.feed_data
        with mock.patch.object(reader, "feed_data", side_effect=lambda d: (calls.append(("instance", d)), real(d))):
            writer.write(b"go")
            return await reader.readexactly(3)

    def client(port):
        return _send_after_go(port, b"abc")

    _, got = _run_streams(factory, patch_instance, client)
    assert got == b"abc" and calls == [("instance", b"abc")]

    calls.clear()
    real_received = asyncio.StreamReaderProtocol.data_received

    def received(self, data):
        calls.append(("class", data))
        real_received(self, data)

    async def read3(reader, writer):
        writer.write(b"go")
        return await reader.readexactly(3)

    with mock.patch.object(asyncio.StreamReaderProtocol, "data_received", received):
        _, got = _run_streams(factory, read3, client)
    assert got == b"abc" and ("class", b"abc") in calls


@BOTH_LOOPS
def test_stream_buffer_held_by_a_memoryview_fails_as_asyncio_does(factory):
    # While a memoryview of the reader's buffer is alive the buffer cannot
    # grow: asyncio's feed_data raises BufferError inside data_received,
    # a fatal error for the transport that the reader then reports.
    async def hold(reader, writer):
        view = memoryview(reader._buffer)
        writer.write(b"go")
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(10), 10)
        except BaseException as exc:  # the reader's exception, set by connection_lost
            return type(exc).__name__
        finally:
            view.release()
        return "no error"

    lp_errors = []

    def quiet(factory_=factory):
        lp = factory_()
        lp.set_exception_handler(lambda lp_, ctx: lp_errors.append(ctx.get("message")))
        return lp

    _, server = _run_streams(quiet, hold, lambda port: _send_after_go(port, b"data"))
    assert server == "BufferError"
    assert lp_errors == ["Fatal error: protocol.data_received() call failed."]


def test_timers_follow_a_patched_or_overridden_clock(loop):
    # asyncio's loop asks self.time() when it schedules call_later and when
    # it decides which timers are due, so tests (aiohttp's among them) patch
    # loop.time to make time pass, and virtual clocks override it.
    from unittest import mock

    async def patched():
        fired = []
        now = loop.time()
        with mock.patch.object(loop, "time") as clock:
            clock.return_value = now
            loop.call_at(now + 1000, fired.append, "at")
            loop.call_later(500, fired.append, "later")
            await asyncio.sleep(0)
            assert fired == []
            clock.return_value = now + 1000
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert fired == ["later", "at"]
        # Unpatched, the real clock again: a day-long timer stays pending.
        h = loop.call_later(86400, fired.append, "day")
        await asyncio.sleep(0.01)
        assert fired == ["later", "at"]
        h.cancel()

    # (no wait_for here: its timeout would fire when the clock jumps)
    loop.run_until_complete(patched())

    class VirtualClockLoop(plait.EventLoop):
        offset = 0.0

        def time(self):
            return super().time() + self.offset

    vloop = VirtualClockLoop()
    try:
        async def jump():
            fired = []
            vloop.call_later(3600, fired.append, "hour")
            await asyncio.sleep(0)
            vloop.offset = 3600.0
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return fired

        assert vloop.run_until_complete(jump()) == ["hour"]
    finally:
        vloop.close()


def test_timer_when_is_what_call_at_was_given(loop):
    # asyncio's TimerHandle keeps `when` as given: aiohttp schedules its
    # timeouts at whole seconds (an int) and checks what it scheduled.
    at_int = loop.call_at(10**6, lambda: None)
    at_float = loop.call_at(10.5, lambda: None)
    later = loop.call_later(1, lambda: None)
    try:
        assert at_int.when() == 10**6 and type(at_int.when()) is int
        assert at_int._when == 10**6 and type(at_int._when) is int
        assert at_float.when() == 10.5 and type(at_float.when()) is float
        assert type(later.when()) is float
        assert at_float < at_int
    finally:
        for h in (at_int, at_float, later):
            h.cancel()


def test_socket_data_is_seen_within_two_iterations(loop):
    # asyncio's loop polls I/O on every iteration, and programs' tests count
    # on it (websockets' wait two sleep(0)s for the other side to get a
    # frame), so plait's must too while any socket is watched, even with
    # callbacks ready all the time.
    import socket

    a, b = socket.socketpair()
    got = []

    class Recorder(asyncio.Protocol):
        def data_received(self, data):
            got.append(data)

    async def main():
        ta, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        tb, _ = await loop.create_connection(Recorder, sock=b)
        busy = True

        async def spin():  # keeps a callback ready on every iteration
            while busy:
                await asyncio.sleep(0)

        spinner = asyncio.ensure_future(spin())
        for i in range(200):
            ta.write(b"x%d" % i)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert b"".join(got).endswith(b"x%d" % i), (i, got[-3:])
        busy = False
        await spinner
        ta.close()
        tb.close()

    loop.run_until_complete(main())


def test_socket_subclass_recv_and_send_are_called(loop):
    # asyncio's transport calls the socket's own recv and send, so a
    # subclass that overrides them (tracing, test doubles) sees every call.
    import socket

    calls = []

    class Tracked(socket.socket):
        def recv(self, *args):
            calls.append("recv")
            return super().recv(*args)

        def send(self, *args):
            calls.append("send")
            return super().send(*args)

    a, b = socket.socketpair()
    tracked = Tracked(a.family, a.type, fileno=a.detach())
    echoed = loop.create_future()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class Client(asyncio.Protocol):
        def data_received(self, data):
            echoed.set_result(data)

    async def main():
        t1, _ = await loop.create_connection(Echo, sock=tracked)
        t2, _ = await loop.create_connection(Client, sock=b)
        t2.write(b"ping")
        assert await asyncio.wait_for(echoed, 10) == b"ping"
        t1.close()
        t2.close()

    loop.run_until_complete(main())
    assert "recv" in calls and "send" in calls
