"""plait.debug identity: every primitive takes a keyword-only ``name=``, and
without one is known by its creation site ``file:line`` (the user's line,
not plait's nor the standard library's threading/queue code).

Names and sites are read back through ``_plait._debug_state(all=True)``
(the raw state of issue 14); those tests skip where it does not exist yet.
"""

from __future__ import annotations

import inspect
import threading

import pytest

import plait.queue as pq
import plait.sync as ps
from plait import _plait

pytestmark = pytest.mark.timeout(60)

# Every constructor, with its ordinary (CPython) arguments.
MAKERS = {
    "Lock": lambda **kw: ps.Lock(**kw),
    "RLock": lambda **kw: ps.RLock(**kw),
    "Condition": lambda **kw: ps.Condition(**kw),
    "Condition(lock)": lambda **kw: ps.Condition(ps.Lock(), **kw),
    "Semaphore": lambda **kw: ps.Semaphore(2, **kw),
    "BoundedSemaphore": lambda **kw: ps.BoundedSemaphore(2, **kw),
    "Event": lambda **kw: ps.Event(**kw),
    "Barrier": lambda **kw: ps.Barrier(2, None, 5.0, **kw),
    "Queue": lambda **kw: pq.Queue(3, **kw),
    "Queue(maxsize=)": lambda **kw: pq.Queue(maxsize=3, **kw),
    "LifoQueue": lambda **kw: pq.LifoQueue(**kw),
    "PriorityQueue": lambda **kw: pq.PriorityQueue(**kw),
    "SimpleQueue": lambda **kw: pq.SimpleQueue(**kw),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_name_accepted(kind):
    obj = MAKERS[kind](name=f"named {kind}")
    assert obj is not None
    assert MAKERS[kind](name=None) is not None


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("bad", [1, b"bytes", object()])
def test_name_must_be_str(kind, bad):
    with pytest.raises(TypeError, match="name must be a str"):
        MAKERS[kind](name=bad)


def test_existing_signatures_unchanged():
    lock = ps.Lock()
    assert lock.acquire() and not lock.acquire(False)
    lock.release()
    assert lock.acquire(True, 0.01) is True
    assert lock.acquire(timeout=0.01) is False
    lock.release()
    with pytest.raises(ValueError):
        lock.acquire(False, 1)
    with pytest.raises(RuntimeError):
        lock.release()
    rlock = ps.RLock()
    with rlock, rlock:
        assert rlock._is_owned()
    with pytest.raises(RuntimeError):
        rlock.release()
    sem = ps.Semaphore(0, name="sem")
    assert sem.acquire(timeout=0.01) is False
    assert ps.Barrier(1, timeout=1.0).wait() == 0
    q = pq.Queue(maxsize=2)
    q.put(1)
    assert q.maxsize == 2 and q.get() == 1
    with pytest.raises(TypeError):
        ps.Semaphore(1, "positional name is not accepted")


class Hooked(pq.Queue):
    """A subclass overriding a storage hook (runs the stdlib's algorithm)."""

    def _put(self, item):
        super()._put(item)


def test_hooked_queue_accepts_name():
    q = Hooked(2, name="hooked")
    q.put(1)
    assert q.get() == 1


def test_lock_fast_paths_keep_the_contract():
    lock = ps.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(blocking=False) is False
    lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with pytest.raises(RuntimeError):
        lock.__exit__(None, None, None)
    rlock = ps.RLock()
    assert rlock.acquire() and rlock.acquire(False) and rlock.acquire(True)
    for _ in range(3):
        rlock.release()
    with pytest.raises(RuntimeError, match="un-acquired"):
        rlock.release()
    # A lock taken by another thread: acquire(False) fails, release works
    # (a plain Lock may be released by any thread).
    held = ps.Lock()
    t = threading.Thread(target=held.acquire)
    t.start()
    t.join()
    assert held.acquire(False) is False
    held.release()


# --- names and sites, read back through the raw debug state -------------------

needs_state = pytest.mark.skipif(
    not hasattr(_plait, "_debug_state"), reason="_plait._debug_state not in this build"
)


def _entries():
    return _plait._debug_state(all=True)["primitives"]


def _here(back: int = 0) -> str:
    """``file:line`` of the caller's line minus ``back``."""
    frame = inspect.currentframe().f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno - back}"


@needs_state
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_name_in_state(kind):
    obj = MAKERS[kind](name=f"state name {kind}")
    found = [e for e in _entries() if e["name"] == f"state name {kind}"]
    assert found, kind
    assert all(e["site"].startswith(__file__ + ":") for e in found)
    del obj


@needs_state
def test_default_name_is_the_creation_site():
    lock = ps.Lock()
    site = _here(1)
    rlock, cond, event = ps.RLock(), ps.Condition(), ps.Event()
    site2 = _here(1)
    queue, simple = pq.Queue(), pq.SimpleQueue()
    site3 = _here(1)
    entries = _entries()
    by_site = {}
    for e in entries:
        by_site.setdefault(e["site"], []).append(e)
    assert [e["kind"] for e in by_site[site]] == ["lock"]
    assert by_site[site][0]["name"] == site
    assert {"rlock", "condition", "event"} <= {e["kind"] for e in by_site[site2]}
    assert {"queue"} <= {e["kind"] for e in by_site[site3]}
    del lock, rlock, cond, event, queue, simple


def _maker_in(filename: str):
    """A function that makes a Lock, compiled as if it lived in ``filename``."""
    ns = {"ps": ps}
    exec(compile("def make(name):\n    return ps.Lock(name=name)\n", filename, "exec"), ns)
    return ns["make"]


@needs_state
@pytest.mark.parametrize("where", ["threading", "queue", "plait"])
def test_site_skips_plait_and_stdlib_frames(where):
    import os
    import queue

    import plait

    filename = {
        "threading": threading.__file__,
        "queue": queue.__file__,
        "plait": os.path.join(os.path.dirname(plait.__file__), "_made_up.py"),
    }[where]
    lock = _maker_in(filename)(f"skip {where}")
    site = _here(1)
    named = [e for e in _entries() if e["name"] == f"skip {where}"]
    assert named and named[0]["site"] == site
    del lock


@needs_state
@pytest.mark.parametrize("where", ["threading", "plait"])
def test_a_skipped_files_module_body_is_a_site(where):
    """What a skipped file (plait's, threading's, asyncio's) makes in its
    module body, at import, is known by that line: not by importlib's frames
    nor by whichever module imported it."""
    import os

    import plait

    filename = {"threading": threading.__file__,
                "plait": os.path.join(os.path.dirname(plait.__file__), "_made_up.py")}[where]
    ns = {"ps": ps}
    exec(compile(f"\n\nlock = ps.Lock(name='module body {where}')\n", filename, "exec"), ns)
    named = [e for e in _entries() if e["name"] == f"module body {where}"]
    assert named and named[0]["site"] == f"{filename}:3"
    del ns


@needs_state
def test_hooked_queue_site_is_the_callers_line():
    q = Hooked(name="hooked site")
    site = _here(1)
    named = [e for e in _entries() if e["name"] == "hooked site"]
    assert named and named[0]["site"] == site
    del q
