"""What runs inside each dask worker: one plait process pool, and the dask
tasks that hand calls to it.

Why a plait pool inside the dask worker: a call that crashes its process
(``os._exit``, a signal, running out of memory) then fails only that call
with ``WorkerDied`` and the dask worker lives on; a per-call time limit kills
only that call's process (``TimeoutError``); ``cancel(kill=True)`` can stop a
running call. dask alone can do none of these.

* ``PoolPlugin`` (a ``distributed.WorkerPlugin``: ``register_plugin``
  refuses duck-typed plugins) makes the pool when the worker starts (so the
  spawn cost is paid at start-up, not by the first task) with one process
  per dask thread, and kills it at teardown (closing with tasks running
  then takes a fraction of a second, not the nanny's 4 s). dask workers run
  threads, so the pool spawns its workers; nothing is forked.
* ``run_call`` / ``run_chunk`` are the dask tasks. Each first claims its
  call from the scheduler (``_claims``: refused → ``NOT_RUN``, nothing is
  called), then reports "started" on the executor's topic (``log_event``,
  fire-and-forget: only the client's RUNNING state hangs on it, never a
  decision). The outcome returns as a value (see ``_outcome``).
* ``kill_task`` runs through ``client.run``: ``cancel(kill=True)`` of the
  plait pool future running a dask key.
"""

import threading

from distributed import WorkerPlugin, get_worker
from distributed.worker import thread_state

from . import _claims, _outcome


class PoolPlugin(WorkerPlugin):
    """One plait ``ProcessPoolExecutor`` per dask worker, named after the
    executor that registered it (two executors on one cluster have two)."""

    idempotent = True

    def __init__(self, name):
        # Only the name travels to the workers; the rest is made there.
        self.name = name

    def setup(self, worker):
        from plait.futures import ProcessPoolExecutor

        # dask key -> the plait future(s) running it, for kill_task.
        self.running = {}
        self.lock = threading.Lock()
        # The client's script (this dask worker's __main__ when it was
        # spawned from it) is not loaded again in each plait process: calls
        # come as cloudpickle, which sends __main__'s functions by value.
        self.pool = ProcessPoolExecutor(max_workers=worker.state.nthreads, _load_main=False)
        # Start its workers now rather than at the first task.
        self.pool.submit(int).result()

    def teardown(self, worker):
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True, kill_workers=True)


def _plugin(name, tid, attempt):
    """The executor's pool plugin once the claim is won, else None."""
    worker = get_worker()
    if not _claims.claim(worker, tid, attempt):
        return None
    worker.log_event(name, [tid, attempt])
    return worker.plugins[name]


def _run(plugin, key, fn, args, kwargs, timeout):
    future = plugin.pool.schedule(fn, args, kwargs, timeout=timeout)
    with plugin.lock:
        plugin.running[key] = future
    try:
        return _outcome.from_pool_future(future)
    finally:
        with plugin.lock:
            plugin.running.pop(key, None)


def run_call(name, tid, attempt, fn_blob, args, kwargs, timeout):
    """The dask task of one ``submit``."""
    plugin = _plugin(name, tid, attempt)
    if plugin is None:
        return _outcome.NOT_RUN_OUTCOME
    return _run(plugin, thread_state.key, _outcome.call_in_pool, (fn_blob, args, kwargs), None, timeout)


def run_chunk(name, tid, attempt, fn_blob, chunk, timeout):
    """The dask task of one ``map`` chunk: one plait task per item (so a
    crash or a time limit fails only its item), the outcomes in order."""
    plugin = _plugin(name, tid, attempt)
    if plugin is None:
        return _outcome.NOT_RUN_OUTCOME
    key = thread_state.key
    futures = [plugin.pool.schedule(_outcome.call_in_pool, (fn_blob, args, None), timeout=timeout)
               for args in chunk]
    with plugin.lock:
        plugin.running[key] = futures
    try:
        return [_outcome.from_pool_future(f) for f in futures]
    finally:
        with plugin.lock:
            plugin.running.pop(key, None)


def kill_task(name, key, dask_worker=None):
    """``cancel(kill=True)`` of what runs ``key`` here (through
    ``client.run``); whether something was stopped."""
    plugin = dask_worker.plugins.get(name) if dask_worker is not None else None
    if plugin is None:
        return False
    with plugin.lock:
        held = plugin.running.get(key)
    if held is None:
        return False
    futures = held if isinstance(held, list) else [held]
    return any([f.cancel(kill=True) for f in futures])
