"""Drop-in replacement for ``concurrent.futures`` (threads).

``Future`` and ``ThreadPoolExecutor`` are implemented in Rust and are
subclasses of the standard library's classes, so ``isinstance`` checks,
``asyncio.wrap_future``, ``loop.run_in_executor`` and
``loop.set_default_executor`` accept them, and the standard library's
``wait`` / ``as_completed`` accept plait futures (as plait's accept a mix of
plait and standard futures). The exceptions are the standard library's own
classes.

Differences from CPython:

* A ``Future``'s ``_condition`` and ``_waiters`` (the private protocol
  ``wait`` / ``as_completed`` use) are created on first use; ``_result``,
  ``_exception`` and ``_state`` read and write the Rust state.
* ``ThreadPoolExecutor`` has no ``_work_queue``, ``_idle_semaphore`` or
  ``_shutdown_lock``; ``_threads``, ``_max_workers``, ``_shutdown`` and
  ``_broken`` exist. ``map`` takes the keyword-only ``buffersize`` of
  Python 3.14 on every version.
"""

import itertools
import os
import threading
import time
import weakref
from concurrent import futures as _cf
from concurrent.futures import _base
from concurrent.futures import thread as _cf_thread

from plait._plait import _FutureCore, _interpreter_exiting, _ThreadPoolCore
from plait.sync import Event as _Event
from plait.sync import Lock as _Lock

FIRST_COMPLETED = _cf.FIRST_COMPLETED
FIRST_EXCEPTION = _cf.FIRST_EXCEPTION
ALL_COMPLETED = _cf.ALL_COMPLETED
CancelledError = _cf.CancelledError
TimeoutError = _cf.TimeoutError
BrokenExecutor = _cf.BrokenExecutor
InvalidStateError = _cf.InvalidStateError
BrokenThreadPool = _cf_thread.BrokenThreadPool
Executor = _cf.Executor

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "BrokenThreadPool",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

_DONE = ("CANCELLED_AND_NOTIFIED", "FINISHED")
_AS_COMPLETED = "_AS_COMPLETED"


class Future(_FutureCore, _cf.Future):
    """The result of an asynchronous call, like ``concurrent.futures.Future``
    (and an instance of it)."""

    # The standard library's __init__ builds a Condition per future; the
    # Rust state is made in __new__, so no per-future Python work remains.
    __init__ = object.__init__


# ---- wait / as_completed ---------------------------------------------------


class _Collector:
    """A waiter in the protocol ``concurrent.futures`` futures share: it is
    appended to each future's ``_waiters`` under ``_condition``, and the
    future calls ``add_result`` / ``add_exception`` / ``add_cancelled`` when
    it finishes. Works for plait and standard-library futures alike."""

    __slots__ = ("lock", "event", "finished", "mode", "pending")

    def __init__(self, mode, pending):
        self.lock = _Lock()
        self.event = _Event()
        self.finished = []
        self.mode = mode
        self.pending = pending

    def _arrived(self, future, failed):
        with self.lock:
            self.finished.append(future)
            self.pending -= 1
            if (
                self.mode in (FIRST_COMPLETED, _AS_COMPLETED)
                or (failed and self.mode == FIRST_EXCEPTION)
                or self.pending <= 0
            ):
                self.event.set()

    def add_result(self, future):
        self._arrived(future, False)

    def add_exception(self, future):
        self._arrived(future, True)

    def add_cancelled(self, future):
        self._arrived(future, True)


class _Holding:
    """Hold every future's ``_condition`` (in a fixed order, so two callers
    never deadlock) while their states are read and waiters registered."""

    def __init__(self, fs):
        self.conditions = [f._condition for f in sorted(fs, key=id)]

    def __enter__(self):
        for c in self.conditions:
            c.acquire()

    def __exit__(self, *exc):
        for c in self.conditions:
            c.release()


def _unregister(fs, collector):
    for f in fs:
        with f._condition:
            try:
                f._waiters.remove(collector)
            except ValueError:
                pass


def wait(fs, timeout=None, return_when=ALL_COMPLETED):
    """Wait for the futures in ``fs`` (plait or standard ones) to complete,
    as ``concurrent.futures.wait``: returns ``(done, not_done)`` sets."""
    fs = set(fs)
    with _Holding(fs):
        done = {f for f in fs if f._state in _DONE}
        not_done = fs - done
        if return_when == FIRST_COMPLETED and done:
            return _base.DoneAndNotDoneFutures(done, not_done)
        if return_when == FIRST_EXCEPTION and done:
            if any(not f.cancelled() and f.exception() is not None for f in done):
                return _base.DoneAndNotDoneFutures(done, not_done)
        if not not_done:
            return _base.DoneAndNotDoneFutures(done, not_done)
        collector = _Collector(return_when, len(not_done))
        for f in not_done:
            f._waiters.append(collector)
    try:
        collector.event.wait(timeout)
    finally:
        _unregister(not_done, collector)
    with collector.lock:
        done.update(collector.finished)
    return _base.DoneAndNotDoneFutures(done, fs - done)


def _hand_out(ready, pending, collector):
    """Yield the futures in ``ready`` without keeping any reference to one
    once it is yielded (the caller may want it collected): it leaves every
    container here, and our waiter leaves it, before it is handed over."""
    while ready:
        f = ready[-1]
        pending.discard(f)
        with f._condition:
            try:
                f._waiters.remove(collector)
            except ValueError:
                pass
        del f
        yield ready.pop()


def as_completed(fs, timeout=None):
    """Yield the futures in ``fs`` (plait or standard ones) as they complete,
    as ``concurrent.futures.as_completed``; raises TimeoutError if some are
    still pending after ``timeout`` seconds."""
    end = None if timeout is None else timeout + time.monotonic()
    fs = set(fs)
    total = len(fs)
    with _Holding(fs):
        ready = [f for f in fs if f._state in _DONE]
        pending = fs.difference(ready)
        collector = _Collector(_AS_COMPLETED, len(pending))
        for f in pending:
            f._waiters.append(collector)
    del fs
    f = None
    try:
        ready.reverse()  # hand out in the order found
        yield from _hand_out(ready, pending, collector)
        while pending:
            left = None if end is None else end - time.monotonic()
            if (left is not None and left < 0) or not collector.event.wait(left):
                raise TimeoutError("%d (of %d) futures unfinished" % (len(pending), total))
            with collector.lock:
                ready = collector.finished
                collector.finished = []
                collector.event.clear()
            ready.reverse()
            yield from _hand_out(ready, pending, collector)
    finally:
        _unregister(pending, collector)


# ---- ThreadPoolExecutor ----------------------------------------------------

_live_pools = weakref.WeakSet()
_live_pools_lock = threading.Lock()


def _cpu_count():
    count = getattr(os, "process_cpu_count", None)
    return (count() if count else os.cpu_count()) or 1


class ThreadPoolExecutor(_ThreadPoolCore, _cf_thread.ThreadPoolExecutor):
    """A pool of worker threads, like ``concurrent.futures.ThreadPoolExecutor``
    (and an instance of it), with the queue, the futures and the worker loop
    in Rust. Workers are real ``threading.Thread`` objects named
    ``<thread_name_prefix>_<n>``; idle ones are reused."""

    _counter = itertools.count().__next__

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=()):
        if max_workers is None:
            max_workers = min(32, _cpu_count() + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or ("ThreadPoolExecutor-%d" % self._counter())
        self._initializer = initializer
        self._initargs = initargs
        self._threads = set()
        self._plait_setup(max_workers, Future, initializer, tuple(initargs))
        with _live_pools_lock:
            _live_pools.add(self)

    def _plait_start_worker(self, worker):
        # Called from submit() in Rust when a new worker is due.
        name = "%s_%d" % (self._thread_name_prefix or self, len(self._threads))
        t = threading.Thread(name=name, target=worker)
        t.start()
        self._threads.add(t)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Like ``map(fn, *iterables)`` with the calls made in the pool.

        ``buffersize`` (keyword-only, as in Python 3.14) bounds how many
        calls are submitted ahead of the results consumed, so an endless or
        large input is read lazily; None submits everything at once.
        ``chunksize`` is accepted and ignored, as for CPython's threads."""
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        return self._plait_map(fn, zip(*iterables), timeout, buffersize, weakref.ref(self))

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Refuse new work; with ``cancel_futures``, cancel what has not
        started; with ``wait``, return once every worker has finished."""
        self._plait_shutdown(cancel_futures)
        if wait:
            for t in list(self._threads):
                t.join()


def _python_exit():
    # At interpreter exit, as CPython does: stop accepting work, let every
    # pool finish what was submitted, and wait for the workers.
    _interpreter_exiting()
    with _live_pools_lock:
        pools = list(_live_pools)
    for p in pools:
        p._plait_shutdown(False)
    for p in pools:
        for t in list(p._threads):
            t.join()


threading._register_atexit(_python_exit)
