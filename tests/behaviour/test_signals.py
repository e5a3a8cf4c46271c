"""Ctrl-C: a main thread blocked in any plait wait raises KeyboardInterrupt
promptly when a real SIGINT arrives, and timeouts are still honoured.

Each case runs in a fresh subprocess (so a failure cannot wedge the test
runner): the child blocks forever in the wait under test, the parent sends
it a real SIGINT, and the child reports how long the wait took to raise.
"""

import signal
import textwrap
import time

import pytest
from _helpers import assert_sigint_interrupts

CHILD = textwrap.dedent(
    """
    import json, sys, time, threading
    import plait.sync as ps, plait.queue as pq

    setup = {
        "lock": "o = ps.Lock(); o.acquire()\\nwait = o.acquire",
        "rlock": "o = ps.RLock(); t = threading.Thread(target=o.acquire); t.start(); t.join()\\nwait = o.acquire",
        "condition": "o = ps.Condition(); o.acquire()\\nwait = o.wait",
        "event": "o = ps.Event()\\nwait = o.wait",
        "semaphore": "o = ps.Semaphore(0)\\nwait = o.acquire",
        "barrier": "o = ps.Barrier(2)\\nwait = o.wait",
        "queue_get": "o = pq.Queue()\\nwait = o.get",
        "queue_put": "o = pq.Queue(1); o.put(1)\\nwait = lambda: o.put(2)",
        "simplequeue": "o = pq.SimpleQueue()\\nwait = o.get",
        "join": "o = pq.Queue(); o.put(1)\\nwait = o.join",
    }[sys.argv[1]]
    exec(setup)
    print("ready", flush=True)
    t0 = None
    try:
        # The parent notes when it sent SIGINT; we report when we raised.
        wait()
        print(json.dumps({"raised": None}), flush=True)
    except KeyboardInterrupt:
        print(json.dumps({"raised": "KeyboardInterrupt", "at": time.monotonic()}), flush=True)
    """
)

CASES = ["lock", "rlock", "condition", "event", "semaphore", "barrier", "queue_get",
         "queue_put", "simplequeue", "join"]


@pytest.mark.parametrize("case", CASES)
def test_sigint_interrupts_blocked_main_thread(case):
    assert_sigint_interrupts(CHILD, case)


def test_sigint_with_pthread_kill_in_process():
    """The same through signal.pthread_kill to our own main thread, with a
    custom handler that raises something else: the wait raises it."""
    import threading

    import plait.sync as ps

    class Custom(Exception):
        pass

    def handler(signum, frame):
        raise Custom()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        ev = ps.Event()
        main = threading.get_ident()
        t = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGUSR1))
        t.start()
        with pytest.raises(Custom):
            ev.wait(30)
        t.join()
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_handler_that_does_not_raise_keeps_waiting():
    import threading

    import plait.sync as ps

    hits = []
    old = signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
    try:
        ev = ps.Event()
        main = threading.get_ident()
        threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1)).start()
        threading.Timer(0.3, ev.set).start()
        assert ev.wait(30) is True
        assert hits == [1]
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("make_wait", [
    lambda ps, pq: ps.Event().wait,
    lambda ps, pq: (lambda l: (l.acquire(), lambda timeout: l.acquire(timeout=timeout))[1])(ps.Lock()),
    lambda ps, pq: (lambda s: lambda timeout: s.acquire(timeout=timeout))(ps.Semaphore(0)),
    lambda ps, pq: (lambda q: lambda timeout: q.get(timeout=timeout))(pq.Queue()),
])
def test_timeouts_in_main_thread_are_honoured(make_wait):
    import plait.queue as pq
    import plait.sync as ps

    wait = make_wait(ps, pq)
    t0 = time.monotonic()
    try:
        r = wait(timeout=0.2)
    except Exception as e:  # queue.Empty
        r = type(e).__name__
    dt = time.monotonic() - t0
    assert r in (False, "Empty")  # the timeout ended the wait: it reported failure
    assert dt < 30  # a hang bound: a timeout that never fires would block forever
