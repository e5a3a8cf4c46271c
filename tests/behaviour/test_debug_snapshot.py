"""plait.debug.snapshot(): the graph of who holds what and who waits for
it, in its JSON schema, across threads, asyncio tasks, futures and the
primitives; statistics (top); a forked child's own picture."""

import asyncio
import inspect
import json
import os
import threading
import time

import pytest

import plait
import plait.debug as debug
import plait.queue as pq
import plait.sync as ps
from plait.futures import ThreadPoolExecutor

from _helpers import run_in_child, wait_until

BOUND = 30.0
KINDS = {"thread", "task", "future", "worker", "lock", "rlock", "condition", "semaphore", "event",
         "barrier", "queue"}


def node(snap, **match):
    found = [n for n in snap.nodes if all(n.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, snap.nodes)
    return found[0]


def edge(snap, frm, to, kind):
    return [e for e in snap.edges if e["from"] == frm and e["to"] == to and e["kind"] == kind]


def parked(name):
    snap = debug.snapshot()
    return any(n.get("name") == name and edge_to(snap, n["id"], "waits_for") for n in snap.nodes)


def edge_to(snap, node_id, kind):
    return [e for e in snap.edges if e["to"] == node_id and e["kind"] == kind]


def test_holder_and_waiter_with_since_and_schema():
    lock = ps.Lock(name="accounts")
    lock.acquire()
    t = threading.Thread(target=lambda: lock.acquire(timeout=BOUND) and lock.release(), name="teller")
    t.start()
    try:
        wait_until(lambda: parked("accounts"))
        time.sleep(0.05)
        snap = debug.snapshot()
        data = json.loads(snap.to_json())
        assert data["version"] == 1 and data["pid"] == os.getpid()
        assert {n["kind"] for n in data["nodes"]} <= KINDS
        lk = node(snap, name="accounts")
        assert lk["kind"] == "lock" and lk["site"].endswith(".py:" + lk["site"].rsplit(":", 1)[1])
        me = node(snap, kind="thread", ident=threading.get_ident())
        teller = node(snap, kind="thread", ident=t.ident)
        assert teller["name"] == "teller"
        held = edge(snap, lk["id"], me["id"], "held_by")
        waits = edge(snap, teller["id"], lk["id"], "waits_for")
        assert held and waits
        assert held[0]["since_s"] >= waits[0]["since_s"] >= 0
        assert snap.cycles == []
        text = str(snap)
        assert "teller" in text and "accounts" in text and "held by" in text
        assert "flowchart" in snap.to_mermaid() or "graph" in snap.to_mermaid()
        assert snap.to_dot().lstrip().startswith(("digraph", "strict digraph"))
    finally:
        lock.release()
        t.join(BOUND)


def test_default_name_is_the_creation_site():
    lock = ps.Lock(); line = inspect.currentframe().f_lineno  # noqa: E702 - same line on purpose
    lock.acquire()
    try:
        snap = debug.snapshot()
        lk = [n for n in snap.nodes if n["kind"] == "lock" and n["site"].endswith(f"test_debug_snapshot.py:{line}")]
        assert lk and lk[0]["name"] == lk[0]["site"]
    finally:
        lock.release()


def wait_barrier(barrier):
    try:
        barrier.wait(BOUND)
    except threading.BrokenBarrierError:
        pass  # the test aborts it to let the thread go


def test_every_kind_shows_its_waiters():
    prims = {
        "condition": ps.Condition(name="cv"),
        "event": ps.Event(name="ev"),
        "queue": pq.Queue(name="q"),
        "semaphore": ps.Semaphore(0, name="sem"),
        "barrier": ps.Barrier(2, name="bar"),
    }
    stop = threading.Event()

    def wait_cv():
        with prims["condition"]:
            prims["condition"].wait(BOUND)

    waiters = {
        "cv": wait_cv,
        "ev": lambda: prims["event"].wait(BOUND),
        "q": lambda: prims["queue"].get(timeout=BOUND),
        "sem": lambda: prims["semaphore"].acquire(timeout=BOUND),
        "bar": lambda: wait_barrier(prims["barrier"]),
    }
    threads = [threading.Thread(target=f, name=f"w-{n}", daemon=True) for n, f in waiters.items()]
    for t in threads:
        t.start()
    try:
        for name in waiters:
            wait_until(lambda: parked(name))
        snap = debug.snapshot()
        for kind, name in zip(prims, waiters):
            n = node(snap, name=name)
            assert n["kind"] == kind
            (w,) = edge_to(snap, n["id"], "waits_for")
            assert node(snap, id=w["from"])["name"] == f"w-{name}"
    finally:
        with prims["condition"]:
            prims["condition"].notify_all()
        prims["event"].set()
        prims["queue"].put(1)
        prims["semaphore"].release()
        prims["barrier"].abort()
        stop.set()
        for t in threads:
            t.join(BOUND)


def test_rlock_and_semaphore_holders():
    r = ps.RLock(name="re")
    s = ps.BoundedSemaphore(2, name="slots")
    with r, r, s:
        snap = debug.snapshot()
        me = node(snap, kind="thread", ident=threading.get_ident())
        assert edge(snap, node(snap, name="re")["id"], me["id"], "held_by")
        assert edge(snap, node(snap, name="slots")["id"], me["id"], "held_by")
    snap = debug.snapshot()
    assert not [n for n in snap.nodes if n.get("name") in ("re", "slots")]


def test_asyncio_task_waiting_on_a_pool_future_waiting_on_a_held_lock():
    lock = ps.Lock(name="vault")
    lock.acquire()
    pool = ThreadPoolExecutor(max_workers=1)
    done = threading.Event()

    async def teller():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, lambda: lock.acquire(timeout=BOUND) and lock.release())

    def run_loop():
        plait.run(teller_task())
        done.set()

    async def teller_task():
        await asyncio.create_task(teller(), name="teller-task")

    t = threading.Thread(target=run_loop, name="loop-thread", daemon=True)
    t.start()
    try:
        wait_until(lambda: parked("vault"))
        wait_until(lambda: any(n["kind"] == "task" and n["name"] == "teller-task" for n in debug.snapshot().nodes))
        snap = debug.snapshot()
        task = node(snap, kind="task", name="teller-task")
        # task -> future -> pool thread -> lock -> this thread
        (aw,) = [e for e in snap.edges if e["from"] == task["id"] and e["kind"] == "awaits"]
        fut = node(snap, id=aw["to"])
        assert fut["kind"] == "future"
        (ro,) = [e for e in snap.edges if e["from"] == fut["id"] and e["kind"] == "runs_on"]
        runner = node(snap, id=ro["to"])
        assert runner["kind"] == "thread"
        vault = node(snap, name="vault")
        assert edge(snap, runner["id"], vault["id"], "waits_for")
        me = node(snap, kind="thread", ident=threading.get_ident())
        assert edge(snap, vault["id"], me["id"], "held_by")
        assert "teller-task" in str(snap)
    finally:
        lock.release()
        done.wait(BOUND)
        t.join(BOUND)
        pool.shutdown()


def test_top_lists_the_most_contended():
    lock = ps.Lock(name="hot")
    lock.acquire()
    t = threading.Thread(target=lambda: lock.acquire(timeout=BOUND) and lock.release())
    t.start()
    wait_until(lambda: parked("hot"))
    lock.release()
    t.join(BOUND)
    rows = debug.top(50)
    hot = [r for r in rows if r["name"] == "hot"]
    assert hot and hot[0]["contended"] >= 1
    assert hot[0]["wait_total"] >= 0 and hot[0]["wait_max"] >= 0 and hot[0]["kind"] == "lock"


def test_dump_writes_the_report(capsys):
    lock = ps.Lock(name="dumped")
    with lock:
        debug.dump()
    assert "dumped" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_sees_its_own_picture():
    lock = ps.Lock(name="parent-held")
    other = threading.Thread(target=lambda: lock.acquire(timeout=BOUND) and lock.release(), daemon=True)
    lock.acquire()
    other.start()
    wait_until(lambda: parked("parent-held"))

    def child():
        snap = debug.snapshot()
        # The parent's waiter does not exist here; the survivor still holds.
        assert not [e for e in snap.edges if e["kind"] == "waits_for"]
        own = ps.Lock(name="child-lock")
        with own:
            assert any(n.get("name") == "child-lock" for n in debug.snapshot().nodes)

    try:
        run_in_child(child)
    finally:
        lock.release()
        other.join(BOUND)
