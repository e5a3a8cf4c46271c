"""Delayed calls: ``schedule(fn, args, kwargs, delay=...)`` on both
executors.

A delayed call is an entry on plait's one shared timer thread (the
``plait.Timer`` service, ``plait_core::timer``): no thread per call, and a
pending call costs a map entry and a future. When its delay has passed, the
timer thread hands the call to the executor as if it were submitted then,
and the future the caller holds (a ``DelayedFuture``, a plait ``Future``)
follows the executor's future for it:

* until the delay has passed, ``cancel()`` takes the timer entry out (the
  call never runs) and the future ends CANCELLED;
* once handed over, ``cancel()``/``running()`` ask the executor's future,
  so ``cancel()`` succeeds exactly while the call has not started, and the
  outcome (result, exception, cancellation) is copied when it ends.

Shutdown treats delayed calls as queued work: ``shutdown(wait=True)``
(also ``with`` and interpreter exit) waits until every pending delay has
passed and its call was handed over, then shuts down as usual, so the calls
run; ``shutdown(cancel_futures=True)`` cancels them; ``shutdown(wait=False)``
cancels them too, since the pool that would run them is gone by the time
their delay passes. After ``shutdown()`` a new delayed call raises
RuntimeError, as ``submit`` does. ``shutdown(wait=True)`` called on the
timer thread itself (from a ``plait.Timer`` function) with delayed calls
pending raises RuntimeError rather than wait for itself.

The hand-over runs on the timer thread, one due call at a time: for a
process pool it pickles the call there, so a call with large arguments
delays the timers due after it by as long as the pickling takes.
"""

import functools
import math
import numbers
import threading
from concurrent.futures import InvalidStateError

from plait._plait import Timer

from ._future import Future

_WAITING = 0  # the timer entry is pending
_SUBMITTED = 1  # handed to the executor: _plait_inner is its future
_CANCELLED = 2  # cancelled before its delay passed
_FAILED = 3  # the executor refused it (its exception is the outcome)


def check_delay(delay):
    """``delay`` in seconds as a float (None stays None); TypeError for a
    non-number, ValueError for a negative, NaN or infinite one."""
    if delay is None:
        return None
    if not isinstance(delay, numbers.Real):
        raise TypeError(f"delay must be a number of seconds or None, not {type(delay).__name__}")
    seconds = float(delay)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"delay must be a finite number of seconds, not {delay!r}")
    if seconds < 0:
        raise ValueError(f"delay must be >= 0, not {delay!r}")
    return seconds


class _Pending:
    """An executor's delayed calls not yet handed over; ``closed`` once the
    executor shuts down."""

    __slots__ = ("lock", "futures", "closed")

    def __init__(self):
        self.lock = threading.RLock()
        self.futures = set()
        self.closed = False


_registry_lock = threading.Lock()


def _pending_of(executor):
    pending = executor.__dict__.get("_plait_delayed")
    if pending is None:
        with _registry_lock:
            pending = executor.__dict__.get("_plait_delayed")
            if pending is None:
                pending = executor._plait_delayed = _Pending()
    return pending


class DelayedFuture(Future):
    """The future of a delayed call (see the module docs)."""

    def cancel(self, **kwargs):
        """Cancel the call if it has not started: True if it will never
        run. Before its delay has passed the timer entry is removed; after,
        the executor's future decides (keywords such as ``kill=`` go to it)."""
        pending = self._plait_pending
        with pending.lock:
            state = self._plait_state
            if state == _WAITING:
                self._plait_state = _CANCELLED
                pending.futures.discard(self)
            inner = self._plait_inner
        if state == _WAITING:
            self._plait_timer.cancel()  # drops the entry now
            self._plait_timer = self._plait_submit = None
            return Future.cancel(self)
        if state == _SUBMITTED:
            if inner.cancel(**kwargs):
                Future.cancel(self)  # (the copy callback may have done it)
                return True
            return False
        return Future.cancel(self)

    def running(self):
        inner = self._plait_inner
        if inner is None and self._plait_state == _WAITING:
            # The hand-over may be under way (the call may have started
            # before _plait_inner is set): it holds the lock until then.
            with self._plait_pending.lock:
                inner = self._plait_inner
        if inner is not None and not self.done():
            return inner.running()
        return Future.running(self)

    def _plait_fire(self):
        # On the timer thread: hand the call to the executor.
        pending = self._plait_pending
        with pending.lock:
            if self._plait_state != _WAITING:
                return
            try:
                # The executor's future gets this one's label (the call's
                # function and where schedule() was called).
                inner = self._plait_submit_labelled(self._plait_submit)
            except BaseException as exc:  # e.g. the pool broke meanwhile
                inner, error = None, exc
                self._plait_state = _FAILED
            else:
                self._plait_inner = inner
                self._plait_state = _SUBMITTED
            self._plait_submit = self._plait_timer = None
            pending.futures.discard(self)
        if inner is None:
            try:
                self.set_exception(error)
            except InvalidStateError:  # cancelled just now
                pass
            return
        inner.add_done_callback(self._plait_copy)

    def _plait_copy(self, inner):
        try:
            if inner.cancelled():
                Future.cancel(self)
                return
            exc = inner.exception()
            if exc is None:
                self.set_result(inner.result())
            else:
                self.set_exception(exc)
        except InvalidStateError:  # the outer future ended first
            pass


def schedule_later(executor, submit, delay, fn):
    """A ``DelayedFuture`` for ``submit()`` (which hands the call of ``fn``
    to ``executor``), called on the shared timer thread after ``delay``
    seconds. ``plait.debug`` shows the future as a call of ``fn`` made
    where ``schedule`` was called."""
    pending = _pending_of(executor)
    fut = DelayedFuture()
    fut._plait_label(fn)
    fut._plait_pending = pending
    fut._plait_submit = submit
    fut._plait_inner = None
    fut._plait_state = _WAITING
    timer = Timer(delay, fut._plait_fire)
    # Interpreter exit is handled by the executors' exit hooks (they wait
    # for delayed calls first), not by the timer service.
    timer.daemon = True
    fut._plait_timer = timer
    with pending.lock:
        if pending.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        pending.futures.add(fut)
        timer.start()
    return fut


def before_shutdown(executor, wait, cancel_futures):
    """What ``shutdown`` does with delayed calls before the executor shuts
    down: refuse new ones; cancel the pending ones (``cancel_futures``, or
    without ``wait``), or wait until every one was handed over."""
    pending = _pending_of(executor)
    with pending.lock:
        pending.closed = True
        waiting = [(f, f._plait_timer) for f in pending.futures]
    if not waiting:
        return
    if cancel_futures or not wait:
        for f, _timer in waiting:
            f.cancel()
        return
    # A Timer is done once its hand-over returned (or it was cancelled).
    # join() waits detached and is interruptible by Ctrl-C; on the timer
    # thread itself it raises RuntimeError instead of waiting for itself.
    for _f, timer in waiting:
        if timer is not None:
            timer.join()


def submit_call(executor, fn, args, kwargs):
    """``executor.submit(fn, *args, **kwargs)`` as a zero-argument call."""
    return functools.partial(executor.submit, fn, *args, **kwargs)
