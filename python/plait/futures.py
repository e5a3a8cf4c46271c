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

import collections
import functools
import multiprocessing as _mp
import itertools
import os
import threading
import time
import weakref
from concurrent import futures as _cf
from concurrent.futures import _base
from concurrent.futures import process as _cf_process
from concurrent.futures import thread as _cf_thread

from plait import _plait as _plait_mod
from plait._plait import _FutureCore, _interpreter_exiting, _ProcessPoolCore, _ThreadPoolCore
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
BrokenProcessPool = _cf_process.BrokenProcessPool
Executor = _cf.Executor

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "BrokenProcessPool",
    "BrokenThreadPool",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "WorkerDied",
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


# ---- ProcessPoolExecutor ---------------------------------------------------

import pickle as _pickle  # noqa: E402

from plait import _wire  # noqa: E402
import sys as _sys  # noqa: E402


class WorkerDied(BrokenProcessPool):
    """The worker process running this task died (a signal, ``os._exit``,
    running out of memory); the message names the exit code or signal and
    carries the worker's last traceback when faulthandler could write one.
    Only this task fails: the pool replaces the worker. A subclass of
    ``BrokenProcessPool``, so existing ``except`` clauses still catch it."""


def _process_chunk(fn, chunk):
    return [fn(*args) for args in chunk]


#: Argument types that can hold no buffer: a call with only these skips
#: the search for large buffers.
_SCALARS = frozenset({int, float, str, bool, type(None), complex})


def _dumps_call(fn, args, kwargs):
    """The call as the worker receives it (see ``plait._wire``: large
    buffers travel through shared memory)."""
    try:
        if not kwargs:
            for a in args:
                if type(a) not in _SCALARS:
                    break
            else:
                return _wire.encode_small((fn, args, kwargs))
        return _wire.encode(_wire.mark_call(fn, args, kwargs))
    except (_pickle.PicklingError, AttributeError, TypeError) as exc:
        try:
            import cloudpickle
        except ImportError:
            raise _pickle.PicklingError(
                f"cannot send {fn!r} and its arguments to a worker process ({exc}); "
                "define the function at module level, or install cloudpickle "
                "(pip install cloudpickle), which plait uses for lambdas and closures"
            ) from exc
        return _wire.encode(_wire.mark_call(fn, args, kwargs), dumps=cloudpickle.dumps)


def _result_or_cancel(future, timeout):
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future


def _main_path():
    main = _sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and not getattr(_sys.flags, "interactive", 0) and path.endswith(".py"):
        return os.path.abspath(path)
    return None


_live_process_pools = weakref.WeakSet()


def _start_method(mp_context):
    """How a pool starts its workers: "fork" (a zygote forked from this
    process forks them), "spawn" (fresh interpreters), or "auto" (fork if
    this process has a single thread when the pool starts, else spawn)."""
    if mp_context is not None:
        method = mp_context.get_start_method()
    else:
        # A start method set for the whole program is honoured when it
        # avoids fork; "fork" there may be only the platform's default, so
        # it does not make plait fork a process that runs threads.
        method = _mp.get_start_method(allow_none=True)
        if method not in ("spawn", "forkserver"):
            return "auto"
    return "fork" if method == "fork" else "spawn"


def _fork_zygote(inherited, die_with_parent):
    """Fork the pool's zygote (see ``plait._worker.zygote``); its pid and
    the file descriptor of our end of its socket."""
    import socket

    from plait import _worker

    ours, theirs = socket.socketpair()
    # Output buffered now would be written again by every worker.
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: S110 - a closed or odd stream
            pass
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        try:
            ours.close()
            _plait_mod._die_with_parent(os.getppid() if die_with_parent else 0)
        finally:
            _worker.zygote(theirs, inherited)
    theirs.close()
    return pid, ours.detach()


_start_lock = threading.Lock()


def _single_threaded():
    """Whether this process has one thread. A thread that just ended (its
    ``join`` returned) may still be leaving the kernel's list for a moment:
    when Python knows of no other thread, give such threads 20 ms."""
    if _plait_mod._thread_count() == 1:
        return True
    if threading.active_count() != 1:
        return False
    deadline = time.monotonic() + 0.02
    while time.monotonic() < deadline:
        time.sleep(0.001)
        if _plait_mod._thread_count() == 1:
            return True
    return False


class ProcessPoolExecutor(_ProcessPoolCore, _cf_process.ProcessPoolExecutor):
    """A pool of worker processes, like
    ``concurrent.futures.ProcessPoolExecutor`` (and an instance of it), run
    by a Rust supervisor thread.

    * Workers start at the first submit. When this process then has a single
      thread (or ``mp_context`` asks for fork), a *zygote* is forked once and
      forks every worker, as CPython's fork-based pool does, in about a
      millisecond each: functions and state of ``__main__`` and the
      initializer's arguments (multiprocessing queues and locks included)
      are inherited. Otherwise (other threads run, or ``mp_context`` is
      spawn or forkserver) workers are fresh interpreters
      (``python -m plait._worker``); a process that runs threads is never
      forked unless ``mp_context`` asks for fork.
    * A worker that dies fails only its task (``WorkerDied``) and is
      replaced. ``task_timeout`` (keyword-only, seconds) is a default time
      limit per task; ``schedule(fn, args, kwargs, timeout=...)`` sets one
      per call. A task past its limit gets ``TimeoutError`` and its worker
      is killed and replaced; ``cancel()`` on a running task does the same
      with ``CancelledError``.
    * ``shutdown(kill_workers=True)`` kills the workers at once.
    * Lambdas and closures need ``cloudpickle`` installed."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(),
                 *, max_tasks_per_child=None, task_timeout=None):
        if max_workers is None:
            max_workers = _cpu_count()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._plait_method = _start_method(mp_context)
        if mp_context is None:
            mp_context = _mp.get_context("spawn" if max_tasks_per_child is not None else None)
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if self._plait_method == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                                 "multiprocessing start method; supply a different mp_context.")
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._max_tasks_per_child = max_tasks_per_child
        self._task_timeout = task_timeout
        if self._plait_method == "spawn":
            self._plait_setup()  # fail now if it cannot travel
        _live_process_pools.add(self)

    def _plait_setup(self):
        """What a spawned worker needs, pickled as multiprocessing pickles a
        spawned Process: multiprocessing queues and locks in ``initargs``
        travel too (their descriptors are inherited; see
        ``_wire.InheritFds``). Returns the bytes and those descriptors."""
        from multiprocessing import context as mp_context
        from multiprocessing import reduction

        popen = _wire.InheritFds()
        mp_context.set_spawning_popen(popen)
        try:
            # The initializer is unpickled after sys.path and __main__ are
            # in place in the worker: a pickle inside the pickle.
            init = bytes(reduction.ForkingPickler.dumps((self._initializer, self._initargs)))
        finally:
            mp_context.set_spawning_popen(None)
        data = _pickle.dumps({
            "sys_path": list(_sys.path),
            "main_path": _main_path(),
            "authkey": bytes(_mp.current_process().authkey),
            "init": init,
        })
        return data, popen.fds

    def _plait_begin(self):
        # The first submit starts the workers, as in CPython, so functions
        # defined after the pool was made are there for a forked worker.
        with _start_lock:
            if self._plait_started:
                return
            method = self._plait_method
            if method == "auto":
                method = "fork" if _single_threaded() else "spawn"
            zygote = None
            if method == "fork":
                try:
                    # Only needed if the zygote fails and workers must be
                    # spawned after all.
                    setup, fds = self._plait_setup()
                except Exception:
                    setup, fds = None, []
                inherited = {"initializer": self._initializer, "initargs": self._initargs}
                zygote = _fork_zygote(inherited, threading.current_thread() is threading.main_thread())
            else:
                setup, fds = self._plait_setup()
            self._plait_start(_sys.executable, self._max_workers, self._max_tasks_per_child,
                              setup, fds, self._task_timeout, zygote)

    def submit(self, fn, /, *args, **kwargs):
        if not self._plait_started:
            self._plait_begin()
        return self._plait_submit_call(fn, args, kwargs, None)

    def schedule(self, fn, args=(), kwargs=None, *, timeout=None):
        """Like ``submit(fn, *args, **kwargs)``, with a per-call time limit
        in seconds (None: the pool's ``task_timeout``)."""
        if not self._plait_started:
            self._plait_begin()
        return self._plait_submit_call(fn, tuple(args), dict(kwargs) if kwargs else {}, timeout)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """``map`` in the pool; ``chunksize`` items travel per message."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return self._map_simple(fn, iterables, timeout, buffersize)
        it = zip(*iterables)
        chunks = iter(lambda: list(itertools.islice(it, chunksize)), [])
        results = self._map_simple(functools.partial(_process_chunk, fn), (chunks,), timeout, buffersize)
        return itertools.chain.from_iterable(results)

    def _map_simple(self, fn, iterables, timeout, buffersize):
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        end = None if timeout is None else timeout + time.monotonic()
        args_iter = zip(*iterables)
        pending = collections.deque(
            self.submit(fn, *a) for a in (itertools.islice(args_iter, buffersize) if buffersize else args_iter)
        )
        ref = weakref.ref(self)

        def results():
            try:
                while pending:
                    if buffersize:
                        ex = ref()
                        nxt = next(args_iter, None) if ex is not None else None
                        if nxt is not None:
                            pending.append(ex.submit(fn, *nxt))
                        del ex
                    # The paused generator must not keep the result alive.
                    yield _result_or_cancel(pending.popleft(), None if end is None else end - time.monotonic())
            finally:
                for f in pending:
                    f.cancel()

        return results()

    def shutdown(self, wait=True, *, cancel_futures=False, kill_workers=False):
        """Refuse new work; ``cancel_futures`` cancels what has not started;
        ``kill_workers`` kills the workers now (running tasks fail); with
        ``wait``, return once every worker has exited (running tasks end or
        reach their time limit first)."""
        self._plait_shutdown(cancel_futures, kill_workers)
        if wait:
            self._plait_wait_stopped()


_interrupted = False
_previous_excepthook = _sys.excepthook


def _note_interrupt(exc_type, exc, tb):
    # The interpreter is about to exit on an unhandled Ctrl-C: at exit the
    # pools kill their workers instead of waiting for them.
    global _interrupted
    if issubclass(exc_type, KeyboardInterrupt):
        _interrupted = True
    _previous_excepthook(exc_type, exc, tb)


if _sys.excepthook is _sys.__excepthook__:
    _sys.excepthook = _note_interrupt


def _process_pools_exit():
    # At exit: let pools finish their work, as CPython does; after an
    # unhandled Ctrl-C (or a Ctrl-C while waiting here), kill the workers
    # instead, so no child outlives the program.
    for p in list(_live_process_pools):
        try:
            if _interrupted:
                raise KeyboardInterrupt
            p.shutdown(wait=True)
        except BaseException:
            p.shutdown(wait=False, kill_workers=True)
            p._plait_wait_stopped(5)


threading._register_atexit(_process_pools_exit)
