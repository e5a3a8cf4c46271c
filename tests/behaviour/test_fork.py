"""Fork: in a child made by os.fork() every plait object works, including
one that another thread held (or waited on) at the moment of the fork."""

import os
import threading
import time

import pytest

from _helpers import run_in_child

import plait.queue as pq
import plait.sync as ps

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"),
    # Forking with threads running is the point of these tests.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def hold_in_thread(acquire, release):
    """Start a thread that takes a primitive and keeps it until told."""
    taken, done = threading.Event(), threading.Event()

    def run():
        acquire()
        taken.set()
        done.wait()
        release()

    t = threading.Thread(target=run)
    t.start()
    taken.wait()
    return done, t


def test_every_object_works_in_child():
    lock, rlock, sem, bsem = ps.Lock(), ps.RLock(), ps.Semaphore(2), ps.BoundedSemaphore(1)
    ev, cond, bar = ps.Event(), ps.Condition(), ps.Barrier(1)
    q, sq, lq, prq = pq.Queue(4), pq.SimpleQueue(), pq.LifoQueue(), pq.PriorityQueue()
    q.put("kept")

    def child():
        assert lock.acquire(timeout=1) and (lock.release() is None)
        with rlock, rlock:
            pass
        with sem, bsem:
            pass
        ev.set()
        assert ev.wait(1)
        with cond:
            cond.notify_all()
            assert cond.wait(0.01) is False
        assert bar.wait(1) == 0
        assert q.get(timeout=1) == "kept"
        for x in (3, 1, 2):
            q.put(x), sq.put(x), lq.put(x), prq.put(x)
        assert [q.get() for _ in range(3)] == [3, 1, 2]
        assert [prq.get() for _ in range(3)] == [1, 2, 3]
        assert [lq.get() for _ in range(3)] == [2, 1, 3]
        assert [sq.get() for _ in range(3)] == [3, 1, 2]
        # threads work in the child too
        t = threading.Thread(target=lambda: q.put("from thread"))
        t.start()
        assert q.get(timeout=5) == "from thread"
        t.join()

    run_in_child(child)


@pytest.mark.parametrize("kind", ["lock", "rlock", "semaphore", "condition"])
def test_object_held_by_another_thread_at_fork(kind):
    if kind == "lock":
        obj = ps.Lock()
        done, t = hold_in_thread(obj.acquire, obj.release)

        def child():
            # The holder does not exist here; the lock was released.
            assert obj.acquire(timeout=2)
            obj.release()
    elif kind == "rlock":
        obj = ps.RLock()
        done, t = hold_in_thread(obj.acquire, obj.release)

        def child():
            assert obj.acquire(timeout=2)
            obj.release()
    elif kind == "semaphore":
        obj = ps.Semaphore(2)
        done, t = hold_in_thread(obj.acquire, obj.release)

        def child():
            # One permit was taken by a thread that is gone; the other works.
            assert obj.acquire(timeout=2)
            obj.release()
    else:
        obj = ps.Condition()
        done, t = hold_in_thread(obj.acquire, obj.release)

        def child():
            with obj:
                obj.notify_all()

    try:
        run_in_child(child)
    finally:
        done.set()
        t.join()


def test_fork_while_threads_are_parked():
    """Threads parked in waits at the moment of the fork do not exist in the
    child; the objects they waited on still work there."""
    lock, ev, q, cond = ps.Lock(), ps.Event(), pq.Queue(1), ps.Condition()
    lock.acquire()
    q.put(0)
    stop = ps.Event()
    waiters = [
        threading.Thread(target=lock.acquire),
        threading.Thread(target=ev.wait),
        threading.Thread(target=q.put, args=(1,)),
    ]

    def cond_waiter():
        with cond:
            cond.wait_for(stop.is_set)

    waiters.append(threading.Thread(target=cond_waiter))
    for t in waiters:
        t.start()
    time.sleep(0.2)

    def child():
        lock.release()  # held by the forking (main) thread: still held here
        assert lock.acquire(timeout=1)
        ev.set()
        assert ev.wait(1)
        assert q.get(timeout=1) == 0
        q.put(5, timeout=1)
        assert q.get(timeout=1) == 5
        with cond:
            cond.notify_all()

    try:
        run_in_child(child)
    finally:
        lock.release()
        ev.set()
        q.get()
        stop.set()
        with cond:
            cond.notify_all()
        for t in waiters:
            t.join(10)
        # parent: the thread blocked in put() got in after our get()
        assert not any(t.is_alive() for t in waiters)


def test_lock_held_by_forking_thread_stays_held_in_child():
    lock = ps.Lock()
    rlock = ps.RLock()
    lock.acquire()
    rlock.acquire()
    rlock.acquire()

    def child():
        assert lock.locked()
        assert not lock.acquire(blocking=False)
        lock.release()
        assert rlock._is_owned() and rlock._recursion_count() == 2
        rlock.release()
        rlock.release()
        assert not rlock._is_owned()

    try:
        run_in_child(child)
    finally:
        lock.release()
        rlock.release()
        rlock.release()
