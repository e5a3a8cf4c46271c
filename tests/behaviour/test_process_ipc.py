"""plait.process: Pipe/Connection and Queue, within one process, across
fork and spawn children, with many producers and consumers, and under
Ctrl-C. Every wait is bounded."""

import array
import multiprocessing as mp
import queue
import textwrap
import threading
from decimal import Decimal
from fractions import Fraction

import pytest
from _helpers import assert_sigint_interrupts

from plait.process import BufferTooShort, Pipe, Queue

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True, scope="module")
def _no_resource_tracker_left():
    """The spawn start method starts multiprocessing's resource tracker, a
    child that outlives the test; stop it so later tests that count this
    process's children (the process pool's) see none of ours."""
    yield
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._stop()

OBJECTS = [
    None, True, 0, -1, 2**100, 1.5, float("inf"), 1j, "", "héllo", b"", b"\x00" * 5,
    bytearray(b"ab"), [1, [2, [3]]], (1, "a"), {"k": [1, 2]}, {1, 2}, frozenset({3}),
    Decimal("1.1"), Fraction(1, 3), ValueError("boom"), range(5), slice(1, 2),
]


def big(n=10 << 20):
    return bytes(range(256)) * (n // 256)


# ---------------------------------------------------------------- Pipe


@pytest.mark.parametrize("duplex", [True, False])
def test_pipe_round_trips_objects(duplex):
    r, w = Pipe(duplex)
    for obj in OBJECTS:
        w.send(obj)
        got = r.recv()
        if isinstance(obj, Exception):
            assert type(got) is type(obj) and got.args == obj.args
        else:
            assert got == obj
    if duplex:
        r.send("back")
        assert w.recv() == "back"


def test_pipe_large_message_both_ways():
    a, b = Pipe()
    data = big()
    t = threading.Thread(target=a.send_bytes, args=(data,))
    t.start()
    assert b.recv_bytes() == data
    t.join(10)
    t = threading.Thread(target=b.send, args=(data,))
    t.start()
    assert a.recv() == data
    t.join(10)


def test_pipe_many_small_messages_in_order():
    a, b = Pipe()
    n = 20_000

    def produce():
        for i in range(n):
            a.send(i)

    t = threading.Thread(target=produce)
    t.start()
    assert [b.recv() for _ in range(n)] == list(range(n))
    t.join(10)


def test_send_bytes_offset_size_and_recv_bytes_into():
    a, b = Pipe()
    a.send_bytes(b"0123456789", 2, 3)
    assert b.recv_bytes() == b"234"
    a.send_bytes(array.array("i", [1, 2]))
    assert b.recv_bytes() == array.array("i", [1, 2]).tobytes()
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", -1)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 4)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 1, 5)
    a.send_bytes(b"hello")
    buf = bytearray(10)
    assert b.recv_bytes_into(buf, 2) == 5
    assert buf == b"\x00\x00hello\x00\x00\x00"
    a.send_bytes(b"toolong")
    with pytest.raises(BufferTooShort) as e:
        b.recv_bytes_into(bytearray(3))
    assert e.value.args[0] == b"toolong"
    a.send_bytes(b"x" * 100)
    with pytest.raises(OSError):
        b.recv_bytes(maxlength=10)


def test_poll_and_eof():
    a, b = Pipe()
    assert not b.poll()
    assert not b.poll(0.05)
    a.send(1)
    assert b.poll(None)
    assert b.recv() == 1
    a.send(2)
    a.close()
    assert b.poll(1)
    assert b.recv() == 2  # what was sent before close is still delivered
    assert b.poll(1)  # end of file counts as readable
    with pytest.raises(EOFError):
        b.recv()
    with pytest.raises(EOFError):
        b.recv_bytes()


def test_closed_handle_and_directions():
    a, b = Pipe(duplex=False)
    assert a.readable and not a.writable and b.writable and not b.readable
    with pytest.raises(OSError):
        a.send(1)
    with pytest.raises(OSError):
        b.recv()
    with pytest.raises(OSError):
        b.poll()
    with b:
        b.send(1)
        assert isinstance(b.fileno(), int)
    assert b.closed and not a.closed
    for call in (lambda: b.send(1), b.fileno, lambda: b.send_bytes(b"x")):
        with pytest.raises(OSError):
            call()
    b.close()  # idempotent
    assert a.recv() == 1
    with pytest.raises(EOFError):
        a.recv()
    a.close()
    with pytest.raises(OSError):
        a.recv()
    with pytest.raises(OSError):
        a.poll()


def test_send_to_closed_peer_is_broken_pipe():
    a, b = Pipe()
    b.close()
    with pytest.raises(OSError):
        for _ in range(100):
            a.send_bytes(b"x" * 65536)


def test_connection_sent_over_a_connection():
    a, b = Pipe()
    c, d = Pipe()
    a.send(c)
    c2 = b.recv()
    c2.send("via copy")
    assert d.recv() == "via copy"


# ---------------------------------------------------------------- Queue


def test_queue_round_trips_in_order():
    q = Queue()
    for obj in OBJECTS[:12]:
        q.put(obj)
    assert [q.get(timeout=5) for _ in OBJECTS[:12]] == OBJECTS[:12]
    data = big()
    q.put(data)
    q.put("after")
    assert q.get(timeout=5) == data
    assert q.get(timeout=5) == "after"


def test_queue_many_items_past_the_socket_buffer():
    q = Queue()
    n = 50_000
    for i in range(n):
        q.put(i)  # never blocks: the feeder holds what the socket cannot
    assert q.qsize() == n
    assert [q.get(timeout=5) for _ in range(n)] == list(range(n))
    assert q.qsize() == 0 and q.empty()


def test_queue_empty_and_timeouts():
    q = Queue()
    assert q.empty() and q.qsize() == 0 and not q.full()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)
    q.put_nowait(1)
    assert q.get(timeout=5) == 1


def test_queue_full_with_maxsize():
    q = Queue(2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    t = threading.Timer(0.05, q.get)
    t.start()
    q.put(3, timeout=5)  # room made by the getter
    t.join()
    assert [q.get(timeout=5), q.get(timeout=5)] == [2, 3]


def test_queue_close_semantics():
    q = Queue()
    q.put(1)
    with pytest.raises(AssertionError):
        q.join_thread()
    q.close()
    q.close()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    q.join_thread()
    q2 = Queue()
    q2.cancel_join_thread()
    q2.close()
    q2.join_thread()


# ---------------------------------------------------------------- processes


def _child_echo(conn, q):
    while True:
        obj = conn.recv()
        if obj == "__stop__":
            break
        conn.send(obj)
    for i in range(1000):
        q.put(i)
    q.put(big())
    conn.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_parent_child(method):
    ctx = mp.get_context(method)
    a, b = Pipe()
    q = Queue()
    p = ctx.Process(target=_child_echo, args=(b, q))
    p.start()
    try:
        for obj in OBJECTS:
            a.send(obj)
            assert a.poll(10)
            got = a.recv()
            assert type(got) is type(obj)
        a.send("__stop__")
        assert [q.get(timeout=10) for _ in range(1000)] == list(range(1000))
        assert q.get(timeout=10) == big()
        b.close()
        assert a.poll(10)
        with pytest.raises(EOFError):
            a.recv()
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0


def _producer(q, start, n, payload):
    for i in range(start, start + n):
        q.put((i, payload * (i % 7)))


def _consumer(q, out):
    total, count, bad = 0, 0, 0
    while True:
        item = q.get(timeout=30)
        if item is None:
            break
        i, payload = item
        # An interleaved or torn message would not unpickle, or would carry
        # the wrong payload for its number.
        if payload != b"p" * (20_000 * (i % 7)):
            bad += 1
        total += i
        count += 1
    out.put((total, count, bad))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_many_producers_and_consumers_lose_nothing(method):
    ctx = mp.get_context(method)
    q, out = Queue(), Queue()
    n, producers, consumers = 3000, 3, 3
    # Payload sizes straddle the inline limit so both packet kinds interleave.
    payload = b"p" * 20_000
    ps = [ctx.Process(target=_producer, args=(q, k * n, n, payload)) for k in range(producers)]
    cs = [ctx.Process(target=_consumer, args=(q, out)) for _ in range(consumers)]
    for p in ps + cs:
        p.start()
    try:
        for p in ps:
            p.join(60)
            assert p.exitcode == 0
        for _ in cs:
            q.put(None)
        results = [out.get(timeout=60) for _ in cs]
    finally:
        for p in ps + cs:
            p.join(10)
            if p.is_alive():
                p.kill()
    total = producers * n
    assert sum(r[1] for r in results) == total
    assert sum(r[0] for r in results) == total * (total - 1) // 2
    assert sum(r[2] for r in results) == 0


def _bounded_producer(q, n):
    for i in range(n):
        q.put(i, timeout=30)


def test_maxsize_is_shared_across_processes():
    ctx = mp.get_context("spawn")
    q = Queue(5)
    p = ctx.Process(target=_bounded_producer, args=(q, 200))
    p.start()
    try:
        got = []
        for _ in range(200):
            assert q.qsize() <= 5
            got.append(q.get(timeout=30))
        assert got == list(range(200))
    finally:
        p.join(10)
    assert p.exitcode == 0


def _pool_task(n):
    from plait.process import Pipe, Queue

    a, b = Pipe()
    q = Queue()
    for i in range(n):
        q.put(i)
    a.send(sum(q.get(timeout=5) for _ in range(n)))
    return b.recv()


def test_usable_inside_plait_pool_workers():
    from plait.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as ex:
        assert list(ex.map(_pool_task, [10, 100], timeout=60)) == [45, 4950]


def _feed(q, n):
    for i in range(n):
        q.put(i)
    return n


def _reply(conn):
    conn.send("hi")
    return conn.recv()


def _seed(q):
    global _seeded
    _seeded = q


def _from_seed(n):
    _seeded.put(n * n)
    return n


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_queue_and_pipe_reach_pool_workers(method):
    """A Queue or Connection passed to a pool task as an argument (its
    descriptor travels through multiprocessing's resource sharer, which
    pool workers can use: they share the parent's authkey), and a Queue
    handed to every worker through ``initargs``."""
    from plait.futures import ProcessPoolExecutor

    q = Queue()
    a, b = Pipe()
    with ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        assert ex.submit(_feed, q, 5).result(60) == 5
        assert [q.get(timeout=10) for _ in range(5)] == list(range(5))
        f = ex.submit(_reply, b)
        assert a.recv() == "hi"
        a.send("back")
        assert f.result(60) == "back"
    seeded = Queue()
    with ProcessPoolExecutor(2, mp_context=mp.get_context(method), initializer=_seed,
                             initargs=(seeded,)) as ex:
        assert sorted(ex.map(_from_seed, range(6), timeout=60)) == list(range(6))
    assert sorted(seeded.get(timeout=10) for _ in range(6)) == [n * n for n in range(6)]


# ---------------------------------------------------------------- Ctrl-C

SIGINT_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from plait.process import Pipe, Queue

    if sys.argv[1] == "queue_get":
        q = Queue(); wait = q.get
    elif sys.argv[1] == "queue_put":
        q = Queue(1); q.put(1); wait = lambda: q.put(2)
    elif sys.argv[1] == "recv":
        a, b = Pipe(); wait = a.recv
    else:
        a, b = Pipe(); wait = lambda: a.poll(None)
    print("ready", flush=True)
    try:
        wait()
        print(json.dumps({"raised": None}), flush=True)
    except KeyboardInterrupt:
        print(json.dumps({"raised": "KeyboardInterrupt", "at": time.monotonic()}), flush=True)
    """
)


@pytest.mark.parametrize("case", ["queue_get", "queue_put", "recv", "poll"])
def test_sigint_interrupts_blocked_main_thread(case):
    assert_sigint_interrupts(SIGINT_CHILD, case)
