"""Drop-in replacement for ``concurrent.futures``.

``Future``, ``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` are
implemented in Rust and are subclasses of the standard library's classes, so
``isinstance`` checks, ``asyncio.wrap_future``, ``loop.run_in_executor`` and
``loop.set_default_executor`` accept them, and the standard library's
``wait`` / ``as_completed`` accept plait futures (as plait's accept a mix of
plait and standard futures). The exceptions are the standard library's own
classes (plus ``WorkerDied``, a ``BrokenProcessPool``).

Differences from CPython:

* A ``Future``'s ``_condition`` and ``_waiters`` (the private protocol
  ``wait`` / ``as_completed`` use) are created on first use; ``_result``,
  ``_exception`` and ``_state`` read and write the Rust state.
* ``ThreadPoolExecutor`` has no ``_work_queue``, ``_idle_semaphore`` or
  ``_shutdown_lock``; ``_threads``, ``_max_workers``, ``_shutdown`` and
  ``_broken`` exist. ``map`` takes the keyword-only ``buffersize`` of
  Python 3.14 on every version, for both executors.
* ``ProcessPoolExecutor``: see its docstring (how workers start, worker
  death, time limits, ``kill_workers``).
* A NaN timeout (``result``, ``exception``, ``wait``, ``as_completed``,
  ``map``) raises ValueError once a wait is needed; CPython does not wait
  (and ``as_completed`` spins). ``ThreadPoolExecutor(max_workers=nan)``
  raises ValueError (CPython's never starts a worker).
* After ``os.fork()`` a ``ThreadPoolExecutor`` starts fresh workers in the
  child (calls the parent had queued stay the parent's); a process pool the
  parent started raises ``BrokenProcessPool`` in the child (CPython's hangs):
  make a new one there.
* A process-pool task whose exception or result cannot be pickled fails
  with the pickling error (CPython's class), its message naming what could
  not be sent.
* Both executors have ``schedule(fn, args=(), kwargs=None, *, delay=None,
  timeout=None)``: the call is submitted after ``delay`` seconds by plait's
  shared timer thread (no thread per delayed call) and ``cancel()`` works
  until it starts; ``timeout`` is a per-call time limit on the process pool
  and must be None on the thread pool (see ``_delayed``).

The package is one module per idea: ``_future`` (Future), ``_wait`` (wait,
as_completed), ``_thread_pool``, ``_process_pool`` (with ``_process_start``,
how workers start, and ``_process_call``, what travels to them), ``_delayed``
(delayed calls on the shared timer, for both executors). Every
public name, and the private ones the Rust side looks up here
(``_dumps_call``, ``_process_chunk``), are importable from
``plait.futures``, whose name the public classes carry.
"""

from concurrent import futures as _cf
from concurrent.futures import _base  # noqa: F401 - plait.futures._base, as before
from concurrent.futures import process as _cf_process
from concurrent.futures import thread as _cf_thread

from ._future import Future
# Looked up by the Rust process pool as plait.futures._dumps_call.
from ._process_call import _dumps_call, _process_chunk  # noqa: F401
from ._wait import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait

# The thread pool's exit hook must be registered before the process pools'
# (threading runs them in reverse order): import order matters here.
from ._thread_pool import ThreadPoolExecutor  # isort: skip
from ._process_pool import ProcessPoolExecutor, WorkerDied  # isort: skip

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
