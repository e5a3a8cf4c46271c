"""The threading and queue parts of the switch: what ``plait.patch()`` puts in
``threading`` and ``queue`` is plait's, reads and behaves as the standard
library's (reprs, refused arguments, warnings, ``__all__``, copy/pickle,
subclasses), survives fork, answers Ctrl-C, and ``unpatch()`` puts back
exactly what was there.

In-process tests patch and unpatch around themselves (``switched``); the
fork and Ctrl-C tests run a child under ``python -m plait run``.
"""

from __future__ import annotations

import _thread
import contextlib
import copy
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import threading
import types
import unittest
import warnings

import pytest

import plait
import plait.queue
import plait.sync
from plait import _plait
from tests.switch._run import env

THREADING = ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event",
             "Barrier", "Timer")
QUEUE = ("Queue", "LifoQueue", "PriorityQueue", "SimpleQueue")


@contextlib.contextmanager
def switched():
    assert plait.patched() == (), "a test left the switch on"
    plait.patch()
    try:
        yield
    finally:
        plait.unpatch()


def make_all():
    """One object of every switched kind, as the program would make it."""
    return {
        "Lock": threading.Lock(), "RLock": threading.RLock(),
        "Condition": threading.Condition(), "Semaphore": threading.Semaphore(2),
        "BoundedSemaphore": threading.BoundedSemaphore(3), "Event": threading.Event(),
        "Barrier": threading.Barrier(2), "Timer": threading.Timer(60, print),
        "Queue": queue.Queue(), "LifoQueue": queue.LifoQueue(3),
        "PriorityQueue": queue.PriorityQueue(), "SimpleQueue": queue.SimpleQueue(),
    }


PLAIT_BASE = {
    "Lock": _plait.Lock, "RLock": _plait.RLock, "Condition": _plait.Condition,
    "Semaphore": _plait.Semaphore, "BoundedSemaphore": _plait.BoundedSemaphore,
    "Event": _plait.Event, "Barrier": _plait.Barrier, "Timer": _plait.Timer,
    "Queue": plait.queue.Queue, "LifoQueue": plait.queue.LifoQueue,
    "PriorityQueue": plait.queue.PriorityQueue, "SimpleQueue": plait.queue.SimpleQueue,
}


def test_every_name_is_plaits():
    std = make_all()
    with switched():
        objs = make_all()
    for kind, obj in objs.items():
        assert isinstance(obj, PLAIT_BASE[kind]), kind
        assert not isinstance(std[kind], PLAIT_BASE[kind]), kind
        # named and placed as the standard library's class
        assert type(obj).__module__ == type(std[kind]).__module__, kind
        assert type(obj).__qualname__ == type(std[kind]).__qualname__, kind


_ADDR = re.compile(r"0x[0-9a-f]+|\d+")


def _states(objs):
    """Each object's repr, in a few states (addresses and numbers masked)."""
    out = {}
    for kind, obj in objs.items():
        reprs = [repr(obj)]
        if kind in ("Lock", "RLock"):
            obj.acquire()
            reprs.append(repr(obj))
            obj.release()
        elif kind == "Event":
            obj.set()
            reprs.append(repr(obj))
        elif kind in ("Semaphore", "BoundedSemaphore"):
            obj.acquire()
            reprs.append(repr(obj))
            obj.release()
        elif kind == "Condition":
            with obj:
                reprs.append(repr(obj))
        out[kind] = [_ADDR.sub("N", r) for r in reprs]
    return out


def test_reprs_read_as_the_standard_librarys():
    std = _states(make_all())
    with switched():
        ours = _states(make_all())
    assert ours == std


def _outcome(call):
    """What a call does: ('ok' or the exception class, the warnings' classes
    and messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
            result = "ok"
        except Exception as exc:  # noqa: BLE001 - the class is the outcome
            result = type(exc).__name__
    return result, [(w.category.__name__, str(w.message)) for w in caught]


ARGUMENTS = [
    ("Lock", (), {}), ("Lock", (1,), {}), ("Lock", (), {"name": "x"}),
    ("RLock", (), {}), ("RLock", (1,), {}), ("RLock", (), {"name": "x"}),
    ("RLock", (), {"blocking": False}),
    ("Condition", (), {"name": "x"}), ("Condition", (None,), {}),
    ("Semaphore", (), {"name": "x"}), ("Semaphore", (-1,), {}), ("Semaphore", (2,), {}),
    ("BoundedSemaphore", (), {"name": "x"}), ("BoundedSemaphore", (0,), {}),
    ("Event", (), {"name": "x"}), ("Event", (1,), {}), ("Event", (), {}),
    ("Barrier", (2,), {"name": "x"}), ("Barrier", (2, None, 1.0), {}),
    ("Timer", (1, print), {"name": "x"}),
    ("Queue", (), {"name": "x"}), ("Queue", (5,), {}), ("Queue", (), {"maxsize": 2}),
    ("LifoQueue", (), {"name": "x"}), ("PriorityQueue", (), {"name": "x"}),
    ("SimpleQueue", (), {"name": "x"}), ("SimpleQueue", (1,), {}),
]


@pytest.mark.parametrize("kind,args,kwargs", ARGUMENTS,
                         ids=[f"{k}{a}{kw}" for k, a, kw in ARGUMENTS])
def test_arguments_taken_and_refused_as_the_standard_library(kind, args, kwargs):
    module = queue if kind in QUEUE else threading

    def call():
        getattr(module, kind)(*args, **kwargs)

    std = _outcome(call)
    with switched():
        ours = _outcome(call)
    assert ours == std


def test_name_refused_with_typeerror():
    with switched():
        for make in (lambda: threading.Lock(name="a"), lambda: threading.Event(name="a"),
                     lambda: queue.Queue(name="a")):
            with pytest.raises(TypeError):
                make()
    # plait's own classes keep the addition
    plait.sync.Lock(name="a"), plait.sync.Event(name="a"), plait.queue.Queue(name="a")


def test_all_as_checked_by_cpython():
    from test import support

    case = unittest.TestCase()
    extra = {"ThreadError"}
    if threading.excepthook.__module__ != "threading":  # pytest's own hook
        extra.add("excepthook")
    with switched():
        # test_threading's own check: every public name whose __module__ is
        # threading or _thread is in __all__, and __all__ names exist.
        support.check__all__(case, threading, ("threading", "_thread"), extra=extra,
                             not_exported={"currentThread", "activeCount"})
        support.check__all__(case, queue, ("queue", "_queue"), extra={"Empty"})


def test_user_subclasses_work():
    with switched():
        class MyEvent(threading.Event):
            def __init__(self, tag):
                super().__init__()
                self.tag = tag

        class MyCondition(threading.Condition):
            def notify_both(self):
                self.notify_all()

        class DoublingQueue(queue.Queue):
            def _put(self, item):
                super()._put(item * 2)

        class Stack(queue.LifoQueue):
            pass

        evt, cond, dq, st = MyEvent("t"), MyCondition(), DoublingQueue(2), Stack()
    assert isinstance(evt, _plait.Event) and evt.tag == "t"
    t = threading.Thread(target=evt.set)
    t.start()
    assert evt.wait(30)
    t.join(30)

    got = []

    def waiter():
        with cond:
            got.append(cond.wait_for(lambda: len(got) == 0 and flag, 30))

    flag = False
    t = threading.Thread(target=waiter)
    t.start()
    with cond:
        flag = True
        cond.notify_both()
    t.join(30)
    assert got == [True]

    dq.put(1)
    dq.put(2)
    with pytest.raises(queue.Full):
        dq.put_nowait(3)
    assert [dq.get(), dq.get()] == [2, 4]
    dq.task_done()
    dq.task_done()
    dq.join()
    st.put(1)
    st.put(2)
    assert (st.get(), st.get()) == (2, 1)


def _copy_outcomes(objs):
    out = {}
    for kind, obj in objs.items():
        out[kind] = tuple(_outcome(lambda f=f: f(obj))[0]
                          for f in (copy.copy, copy.deepcopy, pickle.dumps))
    return out


def test_copy_and_pickle_as_the_standard_library():
    std = _copy_outcomes(make_all())
    with switched():
        ours = _copy_outcomes(make_all())
    assert ours == std


def test_unpatch_restores_every_name_exactly():
    import asyncio
    import concurrent.futures
    import multiprocessing.pool

    modules = (threading, _thread, queue, concurrent.futures, asyncio, multiprocessing.pool)
    before = {m.__name__: dict(vars(m)) for m in modules}
    std_lock = threading.Lock
    plait.patch()
    try:
        assert threading.Lock is not std_lock
        assert _thread.allocate_lock is before["_thread"]["allocate_lock"]  # not touched
    finally:
        plait.unpatch()
    for m in modules:
        now = vars(m)
        old = before[m.__name__]
        # Submodules plait imported (concurrent.futures.thread, ...) stay
        # imported, and an imported submodule is an attribute of its package.
        added = {k for k in set(now) - set(old) if isinstance(now[k], types.ModuleType)}
        assert set(now) - added == set(old), m.__name__
        changed = [k for k in old if now[k] is not old[k]]
        assert changed == [], (m.__name__, changed)


def test_names_taken_before_patch_keep_the_standard_library():
    from threading import Event as Event0
    from threading import Lock as Lock0

    with switched():
        assert not isinstance(Lock0(), _plait.Lock)
        assert not isinstance(Event0(), _plait.Event)
        assert isinstance(threading.Lock(), _plait.Lock)


# --- switched programs: fork, Ctrl-C --------------------------------------------------

def _run(source, timeout=120):
    return subprocess.run([sys.executable, "-m", "plait", "run", "-c", source],
                          capture_output=True, text=True, timeout=timeout, env=env())


FORK_CHILD = r"""
import os, queue, threading
from plait import _plait
lock, rlock, cond = threading.Lock(), threading.RLock(), threading.Condition()
evt, q, sem = threading.Event(), queue.Queue(), threading.BoundedSemaphore(2)
assert isinstance(lock, _plait.Lock) and isinstance(evt, _plait.Event)
q.put("from parent")
rlock.acquire()
sem.acquire()
pid = os.fork()
if pid == 0:
    try:
        rlock.release()                      # held by this (the forking) thread
        assert lock.acquire(timeout=5)
        lock.release()
        assert q.get(timeout=5) == "from parent"
        evt._at_fork_reinit()
        t = threading.Thread(target=lambda: (q.put("from child thread"), evt.set()))
        with cond:
            t.start()
            cond.notify_all()
        assert evt.wait(30)
        assert q.get(timeout=30) == "from child thread"
        t.join(30)
        sem.release()
        code = 0
    except BaseException as exc:
        print("child failed:", repr(exc), flush=True)
        code = 1
    os._exit(code)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.timeout(120)
def test_objects_work_in_a_forked_child():
    proc = _run(FORK_CHILD)
    assert proc.returncode == 0, proc.stderr
    assert "child exit 0" in proc.stdout, proc.stdout + proc.stderr


CTRL_C = r"""
import queue, sys, threading, time
from plait import _plait
what = sys.argv[1]
obj = threading.Event() if what == "event" else queue.Queue()
assert isinstance(obj, (_plait.Event, _plait._QueueCore)), type(obj)
blocked = (lambda: obj._waiters) if what == "event" else (lambda: obj._waiting[0])

def watch():
    while not blocked():
        time.sleep(0.005)
    print("blocked", flush=True)

threading.Thread(target=watch, daemon=True).start()
try:
    obj.wait() if what == "event" else obj.get()
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what", ["event", "queue"])
def test_ctrl_c_interrupts_a_blocked_wait_in_the_main_thread(what):
    child = subprocess.Popen([sys.executable, "-m", "plait", "run", "-c", CTRL_C, what],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env())
    try:
        line = child.stdout.readline()
        assert line == "blocked\n", line + child.stderr.read()
        child.send_signal(signal.SIGINT)  # our own child
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert out == "interrupted\n", out + err
    assert child.returncode == 0, err


def test_lock_type_refuses_subclasses_as_the_standard_library():
    def subclass():
        type("MyLock", (type(threading.Lock()),), {})

    std = _outcome(subclass)
    with switched():
        ours = _outcome(subclass)
    assert ours == std == ("TypeError", [])
