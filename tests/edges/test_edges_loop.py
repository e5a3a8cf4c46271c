"""The event loop at its edges: each case runs on asyncio's default loop and
on plait's, in one process, and must have the same outcome (see _table.py).

Errors are compared by class and, for OS errors, by ``errno`` (retry logic
and HTTP clients test ``e.errno``). Timers are crossed with odd values; a
case that would wait forever on both loops is run for a few iterations
only and reports whether its timer fired.
"""

from __future__ import annotations

import asyncio
import fractions
import decimal
import socket
import struct
import sys
import tempfile

import pytest

from _table import PLAIT, STD, Case, Floaty, Index, Str, check, ok, params, raises

PY313 = sys.version_info >= (3, 13)

# ---- helpers ---------------------------------------------------------------


def on_loop(m, make, *, debug=False):
    """Run ``make(loop)`` (a coroutine) to completion on a new loop of
    ``m``, and close the loop."""
    loop = m.new_event_loop()
    try:
        loop.set_debug(debug)
        return loop.run_until_complete(make(loop))
    finally:
        loop.close()


async def settle(aw, wait=0.03):
    """``aw``'s result (or its exception, raised), or ``"pending"`` if it
    is still waiting after ``wait`` seconds (then it is cancelled)."""
    task = asyncio.ensure_future(aw)
    await asyncio.wait({task}, timeout=wait)
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return "pending"


def os_error(e):
    """What an OS error is compared by: class, errno, strerror."""
    return (type(e).__name__, e.errno, e.strerror)


def listener():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    return ls


def reset(sock):
    """Close ``sock`` with SO_LINGER 0: the peer gets a reset (RST)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def refused_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- timers crossed with odd values -----------------------------------------

VALUES = {
    "None": None,
    "True": True,
    "False": False,
    "0": 0,
    "-1": -1,
    "0.001": 0.001,
    "1.5": 1.5,
    "2**63": 2**63,
    "2**64": 2**64,
    "-2**64": -(2**64),
    "2**1100": 2**1100,
    "1e300": 1e300,
    "inf": float("inf"),
    "-inf": float("-inf"),
    "nan": float("nan"),
    "str": "x",
    "str-subclass": Str("1"),
    "index": Index(),
    "float-like": Floaty(),
    "complex": 1j,
    "fraction": fractions.Fraction(1, 1000),
    "decimal": decimal.Decimal("0.001"),
}


def timer_ops():
    """Each way to ask the loop for a timer, as ``op(loop, value)``: a
    coroutine whose outcome is compared."""

    async def call_later(loop, v):
        fired = loop.create_future()
        loop.call_later(v, fired.set_result, "fired")
        return await settle(fired)

    async def call_at(loop, v):
        fired = loop.create_future()
        loop.call_at(v, fired.set_result, "fired")
        return await settle(fired)

    async def call_at_relative(loop, v):
        # call_at(loop.time() + v): the arithmetic is the caller's.
        fired = loop.create_future()
        loop.call_at(loop.time() + v, fired.set_result, "fired")
        return await settle(fired)

    async def sleep(loop, v):
        return await settle(asyncio.sleep(v, "slept"))

    async def wait_for_pending(loop, v):
        return await settle(asyncio.wait_for(loop.create_future(), v))

    async def wait_for_done(loop, v):
        async def now():
            return "done"

        coro = now()
        try:
            return await settle(asyncio.wait_for(coro, v))
        finally:
            coro.close()  # wait_for may refuse v before awaiting it

    async def wait(loop, v):
        async def sizes():
            done, pending = await asyncio.wait({loop.create_future()}, timeout=v)
            return len(done), len(pending)

        return await settle(sizes())

    async def as_completed(loop, v):
        async def first():
            for f in asyncio.as_completed([loop.create_future()], timeout=v):
                return await f

        return await settle(first())

    ops = [call_later, call_at, call_at_relative, sleep, wait_for_pending, wait_for_done, wait, as_completed]
    if hasattr(asyncio, "timeout"):

        async def timeout(loop, v):
            async def body():
                async with asyncio.timeout(v):
                    await loop.create_future()

            return await settle(body())

        async def timeout_at(loop, v):
            async def body():
                async with asyncio.timeout_at(v):
                    await loop.create_future()

            return await settle(body())

        ops += [timeout, timeout_at]
    return ops


def timer_case(op, name, value) -> Case:
    def body(m):
        return on_loop(m, lambda loop: op(loop, value))

    cid = f"{op.__name__}-{name}"
    return Case(cid, body, **TIMER_DIFFERS.get(cid, {}))


_UNCOMPUTABLE = (
    "asyncio accepts a deadline it cannot compute a timeout from and fails in "
    "run_forever once it reaches the head of the heap; plait raises at the call"
)

#: Cases whose settle() timer is scheduled before the huge one, so
#: asyncio's loop never looks at it within the case (see the whys).
TIMER_DIFFERS = {
    "call_at-2**1100": dict(differs=raises(OverflowError), why=_UNCOMPUTABLE),
    "timeout_at-2**1100": dict(differs=raises(OverflowError), why=_UNCOMPUTABLE),
}

TIMERS = [timer_case(op, name, v) for op in timer_ops() for name, v in VALUES.items()]


def timer_on_closed_loop(kind, name, value) -> Case:
    # A closed loop is refused before the value is looked at (call_at), or
    # after `time() + delay` is computed (call_later), as asyncio does.
    def body(m):
        loop = m.new_event_loop()
        loop.close()
        getattr(loop, kind)(value, print)

    return Case(f"{kind}-closed-{name}", body)


CLOSED_TIMERS = [timer_on_closed_loop(k, n, v) for k in ("call_later", "call_at") for n, v in VALUES.items()]


def timer_when_case(name, value) -> Case:
    # What the handle reports: when() and the repr's absence of surprises.
    def body(m):
        loop = m.new_event_loop()
        try:
            h = loop.call_at(value, print)
            when = h.when()
            h.cancel()
            return type(when).__name__, when == when, h.cancelled()
        finally:
            loop.close()

    return Case(f"timer-when-{name}", body)


def _bad_when_differs(cls):
    return dict(differs=raises(cls), why="asyncio accepts a time it cannot subtract from and then every loop iteration raises; plait raises at the call")


TIMER_WHEN = []
for _name, _v in VALUES.items():
    _c = timer_when_case(_name, _v)
    if _name in ("str", "str-subclass", "index", "float-like", "decimal"):
        _c = Case(_c.id, _c.body, **_bad_when_differs(TypeError))
    elif _name == "complex":
        _c = Case(_c.id, _c.body, **_bad_when_differs(TypeError))
    elif _name == "2**1100":
        _c = Case(_c.id, _c.body, **_bad_when_differs(OverflowError))
    TIMER_WHEN.append(_c)


def nan_timer_with_others(m):
    # A NaN timer among others: the loop keeps running the others.
    async def main(loop):
        order = []
        loop.call_later(0.001, order.append, "soon")
        loop.call_later(float("nan"), order.append, "nan")
        loop.call_later(0.002, order.append, "later")
        await asyncio.sleep(0.02)
        return sorted(order)

    return on_loop(m, main)


# ---- transport errors (issue 17) ---------------------------------------------


def reset_while_reading_stream(m):
    async def main(loop):
        ls = listener()
        try:
            r, w = await asyncio.open_connection(*ls.getsockname())
            peer, _ = ls.accept()
            reset(peer)
            try:
                await asyncio.wait_for(r.read(100), 5)
            except OSError as e:
                return os_error(e)
            finally:
                w.close()
        finally:
            ls.close()

    return on_loop(m, main)


def reset_connection(loop, pause=False):
    """Connect a protocol to a fresh listener and reset the connection from
    the peer's side; returns (listener, transport, future of the exception
    connection_lost gets). With ``pause``, reading is paused first so that a
    write, not a read, meets the reset."""

    async def connect():
        ls = listener()
        lost = loop.create_future()

        class P(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        try:
            tr, _ = await loop.create_connection(P, *ls.getsockname())
            if pause:
                tr.pause_reading()
            peer, _ = ls.accept()
            reset(peer)
            if pause:
                await asyncio.sleep(0.02)  # let the RST arrive before the write
        except BaseException:
            ls.close()
            raise
        return ls, tr, lost

    return connect()


def reset_while_reading_protocol(m):
    async def main(loop):
        ls, _, lost = await reset_connection(loop)
        try:
            return os_error(await asyncio.wait_for(lost, 5))
        finally:
            ls.close()

    return on_loop(m, main)


def write_after_reset_protocol(m):
    async def main(loop):
        ls, tr, lost = await reset_connection(loop, pause=True)
        try:
            tr.write(b"x" * 10)
            return os_error(await asyncio.wait_for(lost, 5))
        finally:
            ls.close()

    return on_loop(m, main)


def write_after_reset_stream(m):
    async def main(loop):
        ls = listener()
        try:
            r, w = await asyncio.open_connection(*ls.getsockname())
            w.transport.pause_reading()
            peer, _ = ls.accept()
            reset(peer)
            await asyncio.sleep(0.02)
            try:
                for _ in range(3):
                    w.write(b"x" * 10)
                    await asyncio.wait_for(w.drain(), 5)
            except OSError as e:
                return os_error(e)
            finally:
                w.close()
        finally:
            ls.close()

    return on_loop(m, main)


def write_after_reset_twice(m):
    # The second write after the reset is a no-op (the connection is lost).
    async def main(loop):
        ls, tr, lost = await reset_connection(loop, pause=True)
        try:
            tr.write(b"x")
            tr.write(bytearray(b"y"))
            exc = await asyncio.wait_for(lost, 5)
            return os_error(exc), tr.is_closing()
        finally:
            ls.close()

    return on_loop(m, main)


def connect_refused(how):
    def body(m):
        async def main(loop):
            port = refused_port()
            try:
                if how == "create_connection":
                    await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
                elif how == "open_connection":
                    await asyncio.open_connection("127.0.0.1", port)
                else:
                    with socket.socket() as s:
                        s.setblocking(False)
                        await loop.sock_connect(s, ("127.0.0.1", port))
            except OSError as e:
                return type(e).__name__, e.errno

        return on_loop(m, main)

    return Case(f"connect-refused-{how}", body)


def sock_op_after_reset(op):
    def body(m):
        async def main(loop):
            ls = listener()
            c = socket.socket()
            c.setblocking(False)
            try:
                await loop.sock_connect(c, ls.getsockname())
                peer, _ = ls.accept()
                reset(peer)
                await asyncio.sleep(0.02)
                try:
                    if op == "recv":
                        return await asyncio.wait_for(loop.sock_recv(c, 10), 5)
                    if op == "recv_into":
                        return await asyncio.wait_for(loop.sock_recv_into(c, bytearray(10)), 5)
                    for _ in range(3):
                        await asyncio.wait_for(loop.sock_sendall(c, b"x" * 10), 5)
                    return "sent"
                except OSError as e:
                    return os_error(e)
            finally:
                c.close()
                ls.close()

        return on_loop(m, main)

    return Case(f"sock-{op}-after-reset", body)


def sock_op_on_closed(op):
    def body(m):
        async def main(loop):
            c = socket.socket()
            c.setblocking(False)
            c.close()
            if op == "recv":
                return await settle(loop.sock_recv(c, 10))
            if op == "sendall":
                return await settle(loop.sock_sendall(c, b"x"))
            return await settle(loop.sock_connect(c, ("127.0.0.1", refused_port())))

        return on_loop(m, main)

    return Case(f"sock-{op}-on-closed-socket", body)


def stream_after_eof(what):
    def body(m):
        async def main(loop):
            ls = listener()
            try:
                r, w = await asyncio.open_connection(*ls.getsockname())
                peer, _ = ls.accept()
                peer.sendall(b"abc")
                peer.close()
                first = await asyncio.wait_for(r.read(), 5)
                try:
                    if what == "read":
                        return first, await r.read(10), r.at_eof()
                    if what == "readexactly":
                        return first, await r.readexactly(1)
                    return first, await r.readline()
                finally:
                    w.close()
            finally:
                ls.close()

        return on_loop(m, main)

    return Case(f"stream-{what}-after-eof", body)


def transport_write(state, data_name, data):
    def body(m):
        async def main(loop):
            ls = listener()
            try:
                tr, _ = await loop.create_connection(asyncio.Protocol, *ls.getsockname())
                peer, _ = ls.accept()
                try:
                    if state == "closed":
                        tr.close()
                    elif state == "aborted":
                        tr.abort()
                    elif state == "eof":
                        tr.write_eof()
                    tr.write(data)
                    await asyncio.sleep(0)
                    return tr.is_closing(), tr.get_write_buffer_size()
                finally:
                    tr.abort()
                    peer.close()
            finally:
                ls.close()

        return on_loop(m, main)

    return Case(f"transport-write-{state}-{data_name}", body)


WRITE_DATA = {
    "bytes": b"abc",
    "empty": b"",
    "bytearray": bytearray(b"abc"),
    "memoryview": memoryview(b"abc"),
    "str": "abc",
    "int": 1,
    "None": None,
    "list": [b"a"],
}

TRANSPORT = [
    Case("reset-while-reading-stream", reset_while_reading_stream),
    Case("reset-while-reading-protocol", reset_while_reading_protocol),
    Case("write-after-reset-protocol", write_after_reset_protocol),
    Case("write-after-reset-stream", write_after_reset_stream),
    Case("write-after-reset-twice", write_after_reset_twice),
    *[connect_refused(h) for h in ("create_connection", "open_connection", "sock_connect")],
    *[sock_op_after_reset(op) for op in ("recv", "recv_into", "sendall")],
    *[sock_op_on_closed(op) for op in ("recv", "sendall", "connect")],
    *[stream_after_eof(w) for w in ("read", "readexactly", "readline")],
    *[transport_write(s, n, d) for s in ("open", "closed", "aborted", "eof") for n, d in WRITE_DATA.items()],
]

# ---- readers, callbacks, running ---------------------------------------------


def add_io(kind, target):
    def body(m):
        loop = m.new_event_loop()
        try:
            if target == "closed-fd":
                r, w = socket.socketpair()
                fd = r.fileno()
                r.close()
                w.close()
                obj = fd
            elif target == "closed-socket":
                obj = socket.socket()
                obj.close()
            elif target == "regular-file":
                f = tempfile.TemporaryFile()
                obj = f.fileno()
            elif target == "negative":
                obj = -1
            elif target == "str":
                obj = "x"
            elif target == "None":
                obj = None
            elif target == "float":
                obj = 1.5
            try:
                getattr(loop, kind)(obj, print)
            except OSError as e:
                return os_error(e)
            return "added"
        finally:
            loop.close()

    return Case(f"{kind}-{target}", body)


def remove_io(kind, target):
    def body(m):
        loop = m.new_event_loop()
        try:
            if target == "never-added":
                with socket.socket() as s:
                    return getattr(loop, kind)(s.fileno())
            if target == "str":
                return getattr(loop, kind)("x")
            return getattr(loop, kind)(-1)
        finally:
            loop.close()

    return Case(f"{kind}-{target}", body)


def run_callback(api, callback, debug):
    """Schedule ``callback`` with ``api`` and run a few iterations: the
    outcome is what the call raised, else the exceptions the loop reported."""

    def body(m):
        async def main(loop):
            reported = []
            loop.set_exception_handler(lambda lp, ctx: reported.append(type(ctx.get("exception")).__name__))
            if api == "call_soon":
                loop.call_soon(callback)
            elif api == "call_soon_threadsafe":
                loop.call_soon_threadsafe(callback)
            elif api == "call_later":
                loop.call_later(0, callback)
            else:
                loop.call_at(loop.time(), callback)
            await asyncio.sleep(0.01)
            return reported

        return on_loop(m, main, debug=debug)

    name = type(callback).__name__
    return Case(f"{api}-{name}-{'debug' if debug else 'plain'}", body)


def call_soon_context(value, name):
    def body(m):
        async def main(loop):
            reported = []
            loop.set_exception_handler(lambda lp, ctx: reported.append(type(ctx.get("exception")).__name__))
            loop.call_soon(print, context=value)
            await asyncio.sleep(0.01)
            return reported

        return on_loop(m, main)

    return Case(f"call_soon-context-{name}", body)


def run_until_complete_of(name, make):
    def body(m):
        loop = m.new_event_loop()
        try:
            return loop.run_until_complete(make(loop))
        finally:
            loop.close()

    return Case(f"run_until_complete-{name}", body)


async def _value():
    return 1


def _closed_then(op):
    def body(m):
        loop = m.new_event_loop()
        loop.close()
        if op == "run_until_complete":
            coro = _value()
            try:
                return loop.run_until_complete(coro)
            finally:
                coro.close()
        if op == "call_soon":
            return loop.call_soon(print)
        if op == "call_soon_threadsafe":
            return loop.call_soon_threadsafe(print)
        if op == "create_task":
            coro = _value()
            try:
                return loop.create_task(coro)
            finally:
                coro.close()
        if op == "add_reader":
            r, w = socket.socketpair()
            with r, w:
                return loop.add_reader(r, print)
        if op == "run_forever":
            return loop.run_forever()
        if op == "close":
            return loop.close()
        if op == "is_closed":
            return loop.is_closed()

    return Case(f"closed-loop-{op}", body)


def _while_running(op):
    def body(m):
        async def main(loop):
            if op == "close":
                loop.close()
            elif op == "run_forever":
                loop.run_forever()
            elif op == "run_until_complete":
                coro = _value()
                try:
                    loop.run_until_complete(coro)
                finally:
                    coro.close()
            elif op == "stop":
                loop.stop()

        return on_loop(m, main)

    return Case(f"running-loop-{op}", body)


def _create_task_of(name, obj):
    def body(m):
        loop = m.new_event_loop()
        try:
            return type(loop.create_task(obj)).__name__
        finally:
            loop.close()

    return Case(f"create_task-{name}", body)


CALLBACKS = [
    *[add_io(k, t) for k in ("add_reader", "add_writer")
      for t in ("closed-fd", "closed-socket", "regular-file", "negative", "str", "None", "float")],
    *[remove_io(k, t) for k in ("remove_reader", "remove_writer") for t in ("never-added", "str", "negative")],
    *[run_callback(api, cb, debug)
      for api in ("call_soon", "call_soon_threadsafe", "call_later", "call_at")
      for cb in (1, None, "x")
      for debug in (False, True)],
    *[call_soon_context(v, n) for n, v in (("None", None), ("str", "x"), ("dict", {}))],
    run_until_complete_of("int", lambda loop: 1),
    run_until_complete_of("None", lambda loop: None),
    run_until_complete_of("generator", lambda loop: (x for x in ())),
    run_until_complete_of("future-of-other-loop", lambda loop: asyncio.new_event_loop().create_future()),
    run_until_complete_of("coroutine-raising", lambda loop: _raise(KeyError)),
    run_until_complete_of("coroutine-value", lambda loop: _value()),
    *[_closed_then(op) for op in ("run_until_complete", "call_soon", "call_soon_threadsafe", "create_task",
                                  "add_reader", "run_forever", "close", "is_closed")],
    *[_while_running(op) for op in ("close", "run_forever", "run_until_complete", "stop")],
    _create_task_of("int", 1),
    _create_task_of("None", None),
    _create_task_of("future", asyncio.Future),
]


async def _raise(cls):
    raise cls("x")


# ---- the selector (plait.loop.Selector against selectors.EpollSelector) -------


def _selector(m):
    import selectors

    import plait.loop

    return plait.loop.Selector() if m is PLAIT else selectors.EpollSelector()


SELECT_TIMEOUTS = {k: v for k, v in VALUES.items() if k not in ("1.5", "True")}


def select_case(name, timeout) -> Case:
    # A socket with data waiting: select returns at once unless it fails.
    def body(m):
        sel = _selector(m)
        r, w = socket.socketpair()
        try:
            sel.register(r, 1)
            w.send(b"x")
            return [(k.fd == r.fileno(), ev) for k, ev in sel.select(timeout)]
        finally:
            sel.close()
            r.close()
            w.close()

    return Case(f"select-timeout-{name}", body)


EVENTS = {**{k: v for k, v in VALUES.items() if k not in ("fraction", "decimal")}, "4": 4, "3": 3, "2**32+1": 2**32 + 1}


def events_case(op, name, events) -> Case:
    def body(m):
        sel = _selector(m)
        r, w = socket.socketpair()
        try:
            if op == "modify":
                sel.register(r, 1)
            key = getattr(sel, op)(r, events)
            return key.events == events, sel.get_key(r).fd == r.fileno()
        finally:
            sel.close()
            r.close()
            w.close()

    return Case(f"selector-{op}-events-{name}", body)


FILEOBJS = {"-1": -1, "2**40": 2**40, "str": "x", "None": None, "float": 1.5, "index": Index()}


def fileobj_case(op, name, fileobj) -> Case:
    def body(m):
        sel = _selector(m)
        try:
            if op == "register":
                return sel.register(fileobj, 1).events
            return getattr(sel, op)(fileobj)
        finally:
            sel.close()

    return Case(f"selector-{op}-fileobj-{name}", body)


SELECTOR = [
    *[select_case(n, t) for n, t in SELECT_TIMEOUTS.items()],
    *[events_case(op, n, e) for op in ("register", "modify") for n, e in EVENTS.items()],
    *[fileobj_case(op, n, f) for op in ("register", "unregister", "get_key") for n, f in FILEOBJS.items()],
]

ALL = [*TIMERS, *CLOSED_TIMERS, *TIMER_WHEN, Case("nan-timer-with-others", nan_timer_with_others),
       *TRANSPORT, *CALLBACKS, *SELECTOR]


@params(ALL)
def test_edge(case):
    check(case)


# ---- beyond the table ---------------------------------------------------------


def test_reset_reaches_both_loops_as_the_same_os_error():
    # The two cases, compared explicitly: class, errno and strerror.
    reset = ("ConnectionResetError", 104, "Connection reset by peer")
    for body in (reset_while_reading_protocol, write_after_reset_protocol):
        assert body(STD) == reset and body(PLAIT) == reset, body.__name__
    # Streams: what the reader raises (3.13's asyncio raises its own
    # ConnectionResetError without an errno for a read): the same.
    for body in (reset_while_reading_stream, write_after_reset_stream):
        theirs, mine = body(STD), body(PLAIT)
        assert theirs[0] == "ConnectionResetError" and mine == theirs, body.__name__


@pytest.mark.parametrize("make", ["call_later", "call_at", "wait_for", "timeout", "sleep"])
def test_nan_delay_as_the_running_python_does(make):
    # <= 3.12: the timer runs at once (a wait times out, a sleep ends);
    # 3.13: ValueError. Never a wait that does not end.
    nan = float("nan")

    async def main(loop):
        fired = loop.create_future()
        if make == "call_later":
            loop.call_later(nan, fired.set_result, "fired")
            return await asyncio.wait_for(fired, 5)
        if make == "call_at":
            loop.call_at(nan, fired.set_result, "fired")
            return await asyncio.wait_for(fired, 5)
        if make == "wait_for":
            try:
                await asyncio.wait_for(fired, nan)
            except asyncio.TimeoutError:
                return "timed out"
        if make == "timeout":
            if not hasattr(asyncio, "timeout"):
                return "timed out"
            try:
                async with asyncio.timeout(nan):
                    await fired
            except TimeoutError:
                return "timed out"
        await asyncio.sleep(nan)
        return "slept"

    expected = {"call_later": "fired", "call_at": "fired", "wait_for": "timed out", "timeout": "timed out",
                "sleep": "slept"}[make]
    for m in (STD, PLAIT):
        if PY313:
            with pytest.raises(ValueError):
                on_loop(m, main)
        else:
            assert on_loop(m, main) == expected, m.name
