"""``ProcessPoolExecutor``: the Rust ``_ProcessPoolCore`` (a supervisor
thread, worker lifecycle, time limits) as a
``concurrent.futures.ProcessPoolExecutor``, ``WorkerDied``, and the exit
hooks that let pools finish their work, or kill their workers after Ctrl-C."""

import functools
import itertools
import multiprocessing as _mp
import os as _os
import pickle as _pickle
import sys as _sys
import threading
import weakref
from concurrent.futures import process as _cf_process
from multiprocessing import context as _mp_context
from multiprocessing import reduction as _mp_reduction

from plait import _wire
from plait._plait import _ClaimPage, _executor_map, _ProcessPoolCore

from . import _delayed
from ._common import (check_buffersize, cpu_count, exit_executor, initializer_call, map_timeout,
                      process_queue_size)
from ._process_call import _process_chunk
from ._process_start import _fork_zygote, _main_path, _single_threaded, _start_method

BrokenProcessPool = _cf_process.BrokenProcessPool


class WorkerDied(BrokenProcessPool):
    """The worker process running this task died (a signal, ``os._exit``,
    running out of memory); the message names the exit code or signal and
    carries the worker's last traceback when faulthandler could write one.
    Only this task fails: the pool replaces the worker. A subclass of
    ``BrokenProcessPool``, so existing ``except`` clauses still catch it."""

    __module__ = "plait.futures"


_live_process_pools = weakref.WeakSet()
_start_lock = threading.Lock()


def _reset_after_fork():
    # The zygote is forked while a pool holds `_start_lock`: a child (and
    # every worker, which may start a pool of its own) gets a fresh one.
    # The pools alive here are the parent's (their supervisors did not
    # survive the fork): at exit the child must not wait for them.
    global _start_lock
    _start_lock = threading.Lock()
    _live_process_pools.clear()


_os.register_at_fork(after_in_child=_reset_after_fork)


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
      is killed and replaced.
    * A future is RUNNING only once its task started in a worker; a task
      sent ahead to a worker (prefetched) stays PENDING and ``cancel()``
      still stops it. ``cancel()`` on a running task returns False, as in
      CPython; ``future.cancel(kill=True)`` (plait's addition) kills and
      replaces the worker running it, and the future ends cancelled.
    * ``shutdown(kill_workers=True)`` kills the workers at once. Leaving a
      ``with`` block on ``KeyboardInterrupt`` (or another exception that is
      not an ``Exception``) cancels what has not started and waits only for
      running tasks; a second Ctrl-C while waiting kills them.
    * A task may run a process pool of its own. In a child forked after the
      pool started, the pool is the parent's: ``submit`` raises
      ``BrokenProcessPool`` (CPython's hangs); make a new pool there.
    * An exception that cannot be unpickled here fails only its task (with
      the unpickling error); CPython's pool breaks.
    * Lambdas and closures need ``cloudpickle`` installed."""

    __module__ = "plait.futures"

    _counter = itertools.count().__next__

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(),
                 *, max_tasks_per_child=None, task_timeout=None, _load_main=True):
        # _load_main=False (private; plait.cluster's pools inside dask
        # workers): spawned workers do not load the script __main__ runs.
        self._plait_load_main = _load_main
        if max_workers is None:
            max_workers = cpu_count()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        else:
            process_queue_size(max_workers)
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
        self._initializer, self._initargs = initializer_call(initializer, initargs)
        self._max_tasks_per_child = max_tasks_per_child
        self._task_timeout = task_timeout
        # What plait.debug calls the pool (plait.process.Pool renames its own).
        self._plait_name = "ProcessPoolExecutor-%d" % self._counter()
        if self._plait_method == "spawn":
            self._plait_setup()  # fail now if it cannot travel
        _live_process_pools.add(self)

    def _plait_setup(self, claims=None):
        """What a spawned worker needs, pickled as multiprocessing pickles a
        spawned Process: multiprocessing queues and locks in ``initargs``
        travel too (their descriptors are inherited; see
        ``_wire.InheritFds``). Returns the bytes and those descriptors."""
        popen = _wire.InheritFds()
        _mp_context.set_spawning_popen(popen)
        try:
            # The initializer is unpickled after sys.path and __main__ are
            # in place in the worker: a pickle inside the pickle.
            init = bytes(_mp_reduction.ForkingPickler.dumps((self._initializer, self._initargs)))
        finally:
            _mp_context.set_spawning_popen(None)
        setup = {
            "sys_path": list(_sys.path),
            "main_path": _main_path() if self._plait_load_main else None,
            "authkey": bytes(_mp.current_process().authkey),
            "init": init,
        }
        switch = _sys.modules.get("plait._switch")
        if switch is not None and switch.patched():
            # A switched program's workers are switched (plait.patch()).
            setup["switch"] = switch.patched()
        fds = list(popen.fds)
        if claims is not None:
            setup["claims_fd"] = claims.fd
            fds.append(claims.fd)
        return _pickle.dumps(setup), fds

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
            # Shared with the workers: who runs a prefetched task, or not.
            claims = _ClaimPage(self._max_workers)
            if method == "fork":
                try:
                    # Only needed if the zygote fails and workers must be
                    # spawned after all.
                    setup, fds = self._plait_setup(claims)
                except Exception:
                    setup, fds = None, []
                inherited = {"initializer": self._initializer, "initargs": self._initargs, "claims": claims}
                zygote = _fork_zygote(inherited, threading.current_thread() is threading.main_thread())
            else:
                setup, fds = self._plait_setup(claims)
            self._plait_start(_sys.executable, self._max_workers, self._max_tasks_per_child,
                              setup, fds, self._task_timeout, zygote, claims=claims,
                              name=getattr(self, "_plait_name", None))

    def submit(self, fn, /, *args, **kwargs):
        if not self._plait_started:
            self._plait_begin()
        return self._plait_submit_call(fn, args, kwargs, None)

    def schedule(self, fn, args=(), kwargs=None, *, delay=None, timeout=None):
        """Like ``submit(fn, *args, **kwargs)``, with a per-call time limit
        in seconds (None: the pool's ``task_timeout``), made after ``delay``
        seconds (None or 0: now). A delayed call waits on plait's shared
        timer thread (no thread of its own); ``cancel()`` before it starts
        means it never runs. ``shutdown(wait=True)`` waits for pending
        delayed calls to run; ``cancel_futures=True`` or ``wait=False``
        cancels them (see ``plait.futures._delayed``)."""
        if delay is not None:
            delay = _delayed.check_delay(delay)
        args = tuple(args)
        kwargs = dict(kwargs) if kwargs else {}
        if not self._plait_started:
            # Now, in the caller's thread: never start (fork) the pool from
            # the timer thread.
            self._plait_begin()
        if not delay:
            return self._plait_submit_call(fn, args, kwargs, timeout)
        submit = functools.partial(self._plait_submit_call, fn, args, kwargs, timeout)
        return _delayed.schedule_later(self, submit, delay, fn)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """``map`` in the pool; ``chunksize`` items travel per message.
        The same iterator as ``ThreadPoolExecutor.map`` (in Rust), with each
        call made through ``submit``."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        check_buffersize(buffersize)
        timeout = map_timeout(timeout)
        if chunksize == 1:
            return _executor_map(self, fn, zip(*iterables), timeout, buffersize, weakref.ref(self))
        it = zip(*iterables)
        if _sys.version_info >= (3, 13):
            # As CPython 3.13+, whose chunks are itertools.batched's (an
            # odd chunksize raises its TypeError, not islice's ValueError).
            chunks = map(list, itertools.batched(it, chunksize))
        else:
            chunks = iter(lambda: list(itertools.islice(it, chunksize)), [])
        chunk_fn = functools.partial(_process_chunk, fn)
        results = _executor_map(self, chunk_fn, zip(chunks), timeout, buffersize, weakref.ref(self),
                                label_func=fn)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait=True, *, cancel_futures=False, kill_workers=False):
        """Refuse new work; ``cancel_futures`` cancels what has not started;
        ``kill_workers`` kills the workers now (running tasks fail); with
        ``wait``, return once every worker has exited (running tasks end or
        reach their time limit first)."""
        _delayed.before_shutdown(self, wait and not kill_workers, cancel_futures)
        self._plait_shutdown(cancel_futures, kill_workers)
        if wait:
            self._plait_wait_stopped()

    def __exit__(self, exc_type, exc_val, exc_tb):
        # Ctrl-C in the block: queued calls cancelled, running ones waited
        # for; a second Ctrl-C kills them.
        return exit_executor(self, exc_type, self._kill_and_wait)

    def _kill_and_wait(self):
        self.shutdown(wait=False, kill_workers=True)
        self._plait_wait_stopped(5)


def _unhandled_interrupt():
    """Whether the program is exiting on an unhandled Ctrl-C: the
    interpreter leaves the exception in ``sys.last_value`` (3.12+ also
    ``sys.last_exc``) when it prints it, before the exit hooks run. (No
    ``sys.excepthook`` of plait's: a program, and the switch's tracebacks,
    see Python's own.)"""
    exc = getattr(_sys, "last_exc", None) or getattr(_sys, "last_value", None)
    return isinstance(exc, KeyboardInterrupt)


def _process_pools_exit():
    # At exit: let pools finish their work, as CPython does; after an
    # unhandled Ctrl-C (or a Ctrl-C while waiting here), kill the workers
    # instead, so no child outlives the program.
    for p in list(_live_process_pools):
        try:
            if _unhandled_interrupt():
                raise KeyboardInterrupt
            p.shutdown(wait=True)
        except BaseException:
            p.shutdown(wait=False, kill_workers=True)
            p._plait_wait_stopped(5)


threading._register_atexit(_process_pools_exit)
