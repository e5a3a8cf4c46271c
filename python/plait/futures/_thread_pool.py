"""``ThreadPoolExecutor``: the Rust ``_ThreadPoolCore`` (queue, futures,
worker loop, ``map``) as a ``concurrent.futures.ThreadPoolExecutor``, and
the interpreter-exit hook that lets every pool finish its work."""

import itertools
import threading
import weakref
from concurrent.futures import thread as _cf_thread

from plait._plait import _interpreter_exiting, _ThreadPoolCore

from . import _delayed
from ._common import check_buffersize, cpu_count, initializer_call, map_timeout, worker_limit
from ._future import Future

_live_pools = weakref.WeakSet()
_live_pools_lock = threading.Lock()


class ThreadPoolExecutor(_ThreadPoolCore, _cf_thread.ThreadPoolExecutor):
    """A pool of worker threads, like ``concurrent.futures.ThreadPoolExecutor``
    (and an instance of it), with the queue, the futures and the worker loop
    in Rust. Workers are real ``threading.Thread`` objects named
    ``<thread_name_prefix>_<n>``; idle ones are reused."""

    __module__ = "plait.futures"

    _counter = itertools.count().__next__

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=()):
        if max_workers is None:
            max_workers = min(32, cpu_count() + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        limit = worker_limit(max_workers)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or ("ThreadPoolExecutor-%d" % self._counter())
        self._initializer = initializer
        self._initargs = initargs
        self._threads = set()
        self._plait_setup(limit, Future, *initializer_call(initializer, initargs))
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
        check_buffersize(buffersize)
        return self._plait_map(fn, zip(*iterables), map_timeout(timeout), buffersize, weakref.ref(self))

    def schedule(self, fn, args=(), kwargs=None, *, delay=None, timeout=None):
        """``submit(fn, *args, **kwargs)`` after ``delay`` seconds (None or
        0: now). A delayed call waits on plait's shared timer thread (no
        thread of its own); ``cancel()`` before it starts means it never
        runs. ``shutdown(wait=True)`` waits for pending delayed calls to
        run; ``cancel_futures=True`` or ``wait=False`` cancels them (see
        ``plait.futures._delayed``).

        ``timeout`` is accepted for the same signature as
        ``ProcessPoolExecutor.schedule`` but must be None: a thread cannot
        be stopped, so a time limit could only abandon the call while it
        runs on (use a process pool, or ``future.result(timeout)``)."""
        if delay is not None:
            delay = _delayed.check_delay(delay)
        if timeout is not None:
            raise ValueError("ThreadPoolExecutor.schedule: timeout must be None (a thread "
                             "cannot be stopped; ProcessPoolExecutor.schedule enforces one)")
        args = tuple(args)
        kwargs = dict(kwargs) if kwargs else {}
        if not delay:
            return self.submit(fn, *args, **kwargs)
        return _delayed.schedule_later(self, _delayed.submit_call(self, fn, args, kwargs), delay, fn)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Refuse new work; with ``cancel_futures``, cancel what has not
        started; with ``wait``, return once every worker has finished.
        Pending delayed calls (``schedule(delay=...)``) are waited for with
        ``wait``, else cancelled."""
        _delayed.before_shutdown(self, wait, cancel_futures)
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
        _delayed.before_shutdown(p, True, False)
        p._plait_shutdown(False)
    for p in pools:
        for t in list(p._threads):
            t.join()


threading._register_atexit(_python_exit)
