"""``plait.process.Pool`` and ``plait.process.ThreadPool``: the
``multiprocessing.pool`` API over plait's executors.

``Pool`` runs on the Rust process-pool supervisor behind
``plait.futures.ProcessPoolExecutor`` (``_ProcessPoolCore``), ``ThreadPool``
on ``plait.futures.ThreadPoolExecutor`` (``_ThreadPoolCore``). Each task (a
call, or a chunk of a ``map``) is one executor future; the result objects
here are thin views over those futures, so ``apply_async`` costs about one
``submit``. There is no task-handler or result-handler thread: the
supervisor (processes) or the worker thread (threads) completes a future and
runs the callbacks that wait on it.

Differences from CPython (``multiprocessing.pool``):

* A worker that dies (a signal, ``os._exit``) fails only the task it held
  with ``plait.futures.WorkerDied`` (a ``BrokenProcessPool``), passed to
  ``error_callback`` too; the pool starts a replacement. CPython's pool
  waits forever for that task's result.
* ``timeout=`` (keyword-only) on ``apply``/``apply_async``/``map``/...
  and ``task_timeout=`` on ``Pool()``: a per-task time limit in seconds, as
  on the executor. A task past it fails with ``concurrent.futures.TimeoutError``
  (the builtin ``TimeoutError`` from 3.11) and its worker is killed and replaced. ``AsyncResult.get(timeout)`` still
  raises ``multiprocessing.TimeoutError`` when *waiting* times out. Not on
  ``ThreadPool`` (a thread cannot be killed): ``ValueError`` there.
* ``terminate()`` ends every outstanding result: tasks that had not started
  are cancelled (``get()`` raises ``concurrent.futures.CancelledError``),
  running ones fail (their workers are killed). CPython leaves them
  unfinished, and their ``get()`` without a timeout never returns.
* Callbacks run one at a time (a lock per pool), in the supervisor thread
  (processes) or the worker thread that ran the task (threads), not in a
  result-handler thread.
* No ``_pool`` list of ``Process`` objects, no ``_repopulate_pool``: the
  supervisor owns the workers. ``_processes`` and ``_state`` are there.
* A result or exception a worker cannot pickle is a ``MaybeEncodingError``
  as in CPython, whose value names the exception (CPython shows an
  ``ExceptionWithTraceback`` object).
* In a child forked after the pool started, the pool is the parent's: a
  call raises ``BrokenProcessPool`` (CPython's waits for ever).
* ``imap``/``imap_unordered`` read an iterable that has no length in a
  helper thread per call (CPython's task-handler thread does it for every
  call); lists, tuples and ranges are chunked in the calling thread.
"""

from __future__ import annotations

import functools
import itertools
import sys
import threading
import warnings
from collections import deque
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as _FutureTimeoutError
from concurrent.futures import process as _cf_process
from multiprocessing import TimeoutError as _MpTimeoutError
from multiprocessing.pool import CLOSE, RUN, TERMINATE, MaybeEncodingError, RemoteTraceback

from plait.futures import FIRST_EXCEPTION, ProcessPoolExecutor, ThreadPoolExecutor
from plait.futures import wait as _wait
from plait.futures._common import cpu_count

__all__ = ["Pool", "ThreadPool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator",
           "IMapUnorderedIterator"]

_CfRemoteTraceback = _cf_process._RemoteTraceback


# ---- what runs in a worker --------------------------------------------------


class _Results(list):
    """A chunk's results. It pickles as the tuple of its items, so the
    worker's encoder does not visit every item looking for large buffers
    (a chunk of tiny items is the common case); the parent gets a list."""

    __slots__ = ()

    def __reduce__(self):
        return list, (tuple(self),)


class _Chunk:
    """A ``map`` chunk as one callable with no arguments: the call pickles
    in one plain ``pickle.dumps`` (see ``plait.futures._dumps_call``)."""

    __slots__ = ("fn", "items", "star")

    def __init__(self, fn, items, star):
        self.fn = fn
        self.items = items
        self.star = star

    def __reduce__(self):
        return _Chunk, (self.fn, self.items, self.star)

    def __call__(self):
        return _Results((itertools.starmap if self.star else map)(self.fn, self.items))

    @property
    def __wrapped__(self):
        # plait.debug names a chunk's future after the mapped function.
        return self.fn


# ---- results ------------------------------------------------------------------


class _Unsent:
    """What a worker could not send back, as ``MaybeEncodingError`` shows it."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _call(func, args, kwds):
    return func(*args, **kwds)


def _as_pool_error(exc):
    """The exception as ``multiprocessing.pool`` reports it: a remote
    traceback is a ``multiprocessing.pool.RemoteTraceback``, and a result or
    exception the worker could not pickle is a ``MaybeEncodingError``."""
    cause = exc.__cause__
    if type(cause) is _CfRemoteTraceback:
        cause = exc.__cause__ = RemoteTraceback(cause.tb)
    unsent = getattr(exc, "_plait_unsent", None)
    if unsent is not None and not isinstance(exc, MaybeEncodingError):
        wrapped = MaybeEncodingError(exc, _Unsent(unsent))
        wrapped.__cause__ = cause
        return wrapped
    return exc


def _outcome(future):
    """``(True, value)`` or ``(False, exception)`` of a finished future."""
    if future.cancelled():
        return False, CancelledError()
    exc = future.exception()
    if exc is None:
        return True, future.result()
    return False, _as_pool_error(exc)


def _wait_future(future, timeout):
    """Wait for ``future`` at most ``timeout`` seconds (None: for ever)."""
    try:
        future.exception(timeout)
    except BaseException:  # noqa: S110 - cancelled, or the wait timed out
        if not future.done():
            raise


class ApplyResult:
    """The result of ``apply_async``: ``get(timeout)``, ``wait(timeout)``,
    ``ready()``, ``successful()``, as ``multiprocessing.pool.AsyncResult``.
    A view of one ``plait.futures.Future``; with callbacks, it is ready
    once they have run (as CPython's)."""

    __slots__ = ("_future", "_event", "__weakref__")

    def __init__(self, future, event=None):
        self._future = future
        self._event = event

    def ready(self):
        if self._event is not None:
            return self._event.is_set()
        return self._future.done()

    def successful(self):
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return not self._future.cancelled() and self._future.exception() is None

    def wait(self, timeout=None):
        if self._event is not None:
            self._event.wait(timeout)
            return
        try:
            _wait_future(self._future, timeout)
        except _FutureTimeoutError:
            pass

    def get(self, timeout=None):
        if self._event is not None and not self._event.wait(timeout):
            raise _MpTimeoutError
        f = self._future
        try:
            return f.result(timeout)
        except BaseException as exc:
            # (not the builtin before 3.11)
            if isinstance(exc, _FutureTimeoutError) and not f.done():
                raise _MpTimeoutError from None
            err = _as_pool_error(exc)
            if err is exc:
                raise
            raise err  # noqa: B904 - its __cause__ is the remote traceback

    __class_getitem__ = classmethod(type(list[int]))


AsyncResult = ApplyResult


def _callback_runner(lock, callback, error_callback, event):
    """A done-callback that calls the user's callbacks, one at a time per
    pool, then marks the result ready."""

    def done(future):
        try:
            ok, value = _outcome(future)
            fn = callback if ok else error_callback
            if fn is not None:
                with lock:
                    fn(value)
        finally:
            event.set()

    return done


class MapResult:
    """The result of ``map_async``/``starmap_async``: a list in input
    order, or the exception of a chunk that failed (as CPython, the result
    is ready as soon as one chunk fails). Without callbacks it is a view of
    the chunks' futures (no Python runs as they finish); with callbacks,
    each chunk's completion is counted and the callback runs before the
    result is ready, as CPython's."""

    __slots__ = ("_futures", "_cond", "_left", "_claimed", "_failed", "_value",
                 "_callback", "_error_callback", "_cb_lock", "__weakref__")

    def __init__(self, futures, callback, error_callback, cb_lock):
        self._futures = futures
        self._failed = None
        self._value = None
        self._callback = callback
        self._error_callback = error_callback
        self._cb_lock = cb_lock
        self._claimed = False
        if callback is None and error_callback is None and futures:
            self._cond = None  # a view: see _check
            self._left = -1
            return
        self._cond = threading.Condition(threading.Lock())
        self._left = len(futures)
        if not futures:
            self._end(True, [])
        for f in futures:
            f.add_done_callback(self._chunk_done)

    # -- with callbacks
    def _chunk_done(self, future):
        ok, value = _outcome(future)
        with self._cond:
            if self._claimed:
                return
            if ok:
                self._left -= 1
                if self._left:
                    return
                value = [v for f in self._futures for v in f.result()]
            self._claimed = True
            self._futures = None
        self._end(ok, value)

    def _end(self, ok, value):
        # As CPython: the callback runs before the result is ready.
        self._claimed = True
        try:
            fn = self._callback if ok else self._error_callback
            if fn is not None:
                with self._cb_lock:
                    fn(value)
        finally:
            with self._cond:
                if ok:
                    self._value = value
                else:
                    self._failed = value
                self._left = 0
                self._cond.notify_all()

    # -- a view of the futures
    def _check(self):
        """Settle the view if every chunk is done or one failed: True then."""
        fs = self._futures
        if self._left == 0 or fs is None:
            return True
        for f in fs:
            if f.done():
                if f.cancelled() or f.exception() is not None:
                    break
            else:
                return False
        else:
            self._value = [v for f in fs for v in f.result()]
            self._left = 0
            self._futures = None
            return True
        # A failed chunk: the first in completion order is unknown here;
        # take the first failed in input order.
        for f in fs:
            if f.done() and (f.cancelled() or f.exception() is not None):
                self._failed = _outcome(f)[1]
                break
        self._left = 0
        self._futures = None
        return True

    def ready(self):
        if self._cond is None:
            return self._check()
        return self._left == 0

    def successful(self):
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._failed is None

    def wait(self, timeout=None):
        if self._cond is None:
            fs = self._futures
            if fs is not None and not self._check():
                _wait(fs, timeout, FIRST_EXCEPTION)
                self._check()
            return
        with self._cond:
            self._cond.wait_for(lambda: self._left == 0, timeout)

    def get(self, timeout=None):
        self.wait(timeout)
        if self._left:
            raise _MpTimeoutError
        if self._failed is not None:
            raise self._failed
        return self._value


class IMapIterator:
    """The iterator of ``imap``: results in input order; ``next(timeout)``
    raises ``multiprocessing.TimeoutError`` when no result comes in time.
    A task's exception is raised at its place (once per failed chunk); an
    exception of the input iterable is raised where it happened and ends
    the iteration."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._slots = deque()  # futures, then maybe a _Failed (unordered: outcomes)
        self._fed = False
        self._buffer = deque()
        self._ended = False

    # Feeding (the caller's thread, or a helper thread).
    def _add(self, future):
        with self._cond:
            self._slots.append(future)
            self._cond.notify_all()

    def _fail(self, exc):
        with self._cond:
            self._slots.append(_Failed(exc))
            self._fed = True
            self._cond.notify_all()

    def _finish(self):
        with self._cond:
            self._fed = True
            self._cond.notify_all()

    def __iter__(self):
        return self

    def next(self, timeout=None):
        while not self._buffer:
            if self._ended:
                raise StopIteration
            item = self._take(timeout)
            if item is None:
                self._ended = True
                raise StopIteration
            ok, value = item
            if not ok:
                if isinstance(value, _Failed):
                    self._ended = True
                    raise value.exc
                raise value
            self._buffer.extend(value)
        return self._buffer.popleft()

    __next__ = next

    def _take(self, timeout):
        """The next chunk's outcome, or None at the end."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._slots or self._fed, timeout):
                raise _MpTimeoutError
            if not self._slots:
                return None
            head = self._slots[0]
            if isinstance(head, _Failed):
                self._slots.popleft()
                return False, head
        try:
            _wait_future(head, timeout)
        except _FutureTimeoutError:
            raise _MpTimeoutError from None
        with self._cond:
            self._slots.popleft()
        return _outcome(head)


class IMapUnorderedIterator(IMapIterator):
    """The iterator of ``imap_unordered``: results as their chunks finish."""

    def __init__(self):
        super().__init__()
        self._submitted = 0
        self._taken = 0

    def _add(self, future):
        with self._cond:
            self._submitted += 1
        future.add_done_callback(self._completed)

    def _completed(self, future):
        with self._cond:
            self._slots.append(_outcome(future))
            self._cond.notify_all()

    def _take(self, timeout):
        with self._cond:
            if not self._cond.wait_for(
                    lambda: self._slots or (self._fed and self._taken == self._submitted), timeout):
                raise _MpTimeoutError
            if not self._slots:
                return None
            item = self._slots.popleft()
            if isinstance(item[1], _Failed):
                return item
            self._taken += 1
            return item

    def _fail(self, exc):
        with self._cond:
            self._slots.append((False, _Failed(exc)))
            self._fed = True
            self._cond.notify_all()


class _Failed:
    """The input iterable raised: the end of an imap."""

    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


# ---- the pools ------------------------------------------------------------------


class _BasePool:
    """What ``Pool`` and ``ThreadPool`` share: everything but the executor."""

    _wrap_exception = True

    def _setup(self, processes, executor):
        self._processes = processes
        self._executor = executor
        self._state = RUN
        self._cb_lock = threading.Lock()
        self._feeders = set()
        self._feeders_lock = threading.Lock()

    def __repr__(self):
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"state={self._state} pool_size={self._processes}>")

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    def __reduce__(self):
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    # -- apply
    def apply(self, func, args=(), kwds={}, *, timeout=None):
        """``func(*args, **kwds)`` in the pool; its result."""
        return self.apply_async(func, args, kwds, timeout=timeout).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None, *, timeout=None):
        """``func(*args, **kwds)`` in the pool, as an :class:`AsyncResult`."""
        if self._state != RUN:
            raise ValueError("Pool not running")
        if not isinstance(args, tuple) or not isinstance(kwds, dict):
            # As CPython: the worker calls func(*args, **kwds), so what is
            # not a sequence or a mapping fails the task, not this call.
            func, args, kwds = functools.partial(_call, func, args, kwds), (), {}
        f = self._submit(func, args, kwds, timeout)
        if callback is None and error_callback is None:
            return ApplyResult(f)
        event = threading.Event()
        f.add_done_callback(_callback_runner(self._cb_lock, callback, error_callback, event))
        return ApplyResult(f, event)

    # -- map
    def map(self, func, iterable, chunksize=None, *, timeout=None):
        """``list(map(func, iterable))`` with the calls made in the pool."""
        return self._map_async(func, iterable, False, chunksize, None, None, timeout).get()

    def starmap(self, func, iterable, chunksize=None, *, timeout=None):
        """``list(itertools.starmap(func, iterable))`` in the pool."""
        return self._map_async(func, iterable, True, chunksize, None, None, timeout).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, *,
                  timeout=None):
        return self._map_async(func, iterable, False, chunksize, callback, error_callback, timeout)

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, *,
                      timeout=None):
        return self._map_async(func, iterable, True, chunksize, callback, error_callback, timeout)

    def _map_async(self, func, iterable, star, chunksize, callback, error_callback, timeout):
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        n = len(iterable)
        if chunksize is None:
            chunksize, extra = divmod(n, self._processes * 4)
            if extra:
                chunksize += 1
        elif chunksize < 1:
            # CPython runs nothing and returns [None] * n (not a result).
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        elif not isinstance(chunksize, int) or chunksize > sys.maxsize:
            # CPython's islice refuses it in the task-handler thread (its
            # map then waits for ever when it is not an int).
            raise ValueError("chunksize must be an integer no larger than sys.maxsize, not %r" % (chunksize,))
        futures = []
        if n:
            if not isinstance(iterable, (list, tuple)):
                iterable = list(iterable)
            submit = self._submit
            for i in range(0, n, chunksize):
                futures.append(submit(_Chunk(func, iterable[i:i + chunksize], star), (), {}, timeout))
        return MapResult(futures, callback, error_callback, self._cb_lock)

    # -- imap
    def imap(self, func, iterable, chunksize=1, *, timeout=None):
        """Like ``map``, lazily: an iterator over the results in order."""
        return self._imap(IMapIterator(), func, iterable, chunksize, timeout)

    def imap_unordered(self, func, iterable, chunksize=1, *, timeout=None):
        """Like ``imap``, with the results in the order they finish."""
        return self._imap(IMapUnorderedIterator(), func, iterable, chunksize, timeout)

    def _imap(self, it, func, iterable, chunksize, timeout):
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        if isinstance(iterable, (list, tuple, range)):
            self._feed(it, func, iterable, chunksize, timeout)
            return it
        t = threading.Thread(target=self._feed, args=(it, func, iterable, chunksize, timeout),
                             name="plait-pool-imap-feeder", daemon=True)
        with self._feeders_lock:
            self._feeders.add(t)
        t.start()
        return it

    def _feed(self, it, func, iterable, chunksize, timeout):
        submit = self._submit
        try:
            source = iter(iterable)
            while self._state != TERMINATE:
                chunk = list(itertools.islice(source, chunksize))
                if not chunk:
                    break
                it._add(submit(_Chunk(func, chunk, False), (), {}, timeout))
        except BaseException as exc:
            it._fail(exc)
        else:
            it._finish()
        finally:
            with self._feeders_lock:
                self._feeders.discard(threading.current_thread())

    # -- lifetime
    def close(self):
        """No more work: the workers exit once what was submitted is done."""
        if self._state == RUN:
            self._state = CLOSE
            with self._feeders_lock:
                feeding = bool(self._feeders)
            if not feeding:  # else join() stops the executor after the feeders
                self._stop(kill=False)

    def terminate(self):
        """Stop now: cancel what has not started, kill running work."""
        self._state = TERMINATE
        self._stop(kill=True)

    def join(self):
        """Wait for the workers to exit (after ``close`` or ``terminate``)."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        while True:
            with self._feeders_lock:
                feeders = [t for t in self._feeders if t is not threading.current_thread()]
            if not feeders:
                break
            for t in feeders:
                t.join()
        if self._state == TERMINATE:
            self._stop(kill=True)
        self._join_executor()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            ex = getattr(self, "_executor", None)
            if ex is not None:
                self._state = CLOSE
                try:
                    ex.shutdown(wait=False)
                except Exception:  # noqa: S110 - interpreter shutting down
                    pass


class Pool(_BasePool):
    """``multiprocessing.Pool`` on plait's process-pool supervisor.

    ``Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None,
    context=None, *, task_timeout=None)``. ``processes`` worker processes
    (``os.cpu_count()`` by default) started as ``ProcessPoolExecutor``
    starts them (see its docstring); ``context`` is its ``mp_context``. See
    the module docstring for the differences from CPython (worker death,
    per-task ``timeout=``, ``terminate()``)."""

    _counter = itertools.count().__next__

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None, *, task_timeout=None):
        if processes is None:
            processes = cpu_count()
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and context is not None and context.get_start_method() == "fork":
            context = None  # the executor refuses fork with a task limit; a zygote forks
        ex = ProcessPoolExecutor(processes, context, initializer, initargs,
                                 max_tasks_per_child=maxtasksperchild, task_timeout=task_timeout)
        ex._plait_name = "Pool-%d" % Pool._counter()  # as plait.debug shows it
        self._setup(processes, ex)
        # As CPython's Pool: the workers start now, not at the first task.
        begin = getattr(ex, "_plait_begin", None)
        if begin is not None:
            begin()
        self._submit = ex._plait_submit_call

    def _stop(self, kill):
        self._executor.shutdown(wait=False, cancel_futures=kill, kill_workers=kill)

    def _join_executor(self):
        self._executor.shutdown(wait=True)


class ThreadPool(_BasePool):
    """``multiprocessing.pool.ThreadPool`` on ``plait.futures.ThreadPoolExecutor``.

    ``ThreadPool(processes=None, initializer=None, initargs=())``:
    ``processes`` threads (``os.cpu_count()`` by default), the initializer
    run once in each. A per-task ``timeout=`` is refused (``ValueError``):
    a thread cannot be stopped. ``terminate()`` cancels what has not
    started; ``join()`` then waits for running tasks to end."""

    def __init__(self, processes=None, initializer=None, initargs=()):
        if processes is None:
            processes = cpu_count()
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        ex = ThreadPoolExecutor(processes, "ThreadPool", initializer, tuple(initargs))
        self._setup(processes, ex)
        submit = ex.submit

        def _submit(func, args, kwds, timeout):
            if timeout is not None:
                raise ValueError("ThreadPool has no per-task timeout (a thread cannot be stopped)")
            return submit(func, *args, **kwds)

        self._submit = _submit

    def _stop(self, kill):
        self._executor.shutdown(wait=False, cancel_futures=kill)

    def _join_executor(self):
        self._executor.shutdown(wait=True)
