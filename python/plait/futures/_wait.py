"""``wait`` and ``as_completed``, over plait and standard-library futures
alike, through the private protocol ``concurrent.futures`` futures share
(``_condition``, ``_state``, ``_waiters``)."""

import time
from concurrent import futures as _cf
from concurrent.futures import _base

from plait.sync import Event as _Event
from plait.sync import Lock as _Lock

FIRST_COMPLETED = _cf.FIRST_COMPLETED
FIRST_EXCEPTION = _cf.FIRST_EXCEPTION
ALL_COMPLETED = _cf.ALL_COMPLETED
TimeoutError = _cf.TimeoutError

_DONE = ("CANCELLED_AND_NOTIFIED", "FINISHED")
_AS_COMPLETED = "_AS_COMPLETED"


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


#: What ``return_when`` may be (CPython's wait accepts its as_completed mode too).
_RETURN_WHEN = (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED, _AS_COMPLETED)


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
        if return_when not in _RETURN_WHEN:
            raise ValueError(f"Invalid return condition: {return_when!r}")
        collector = _Collector(return_when, len(not_done))
        for f in not_done:
            f._waiters.append(collector)
    try:
        collector.event.wait(timeout)  # plait's Event reads timeout as CPython's
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


# Documented (and pickled by reference) as plait.futures.wait / as_completed.
wait.__module__ = as_completed.__module__ = "plait.futures"
