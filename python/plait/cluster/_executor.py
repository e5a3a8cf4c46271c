"""``ClusterExecutor``: plait's executor contract on a dask.distributed cluster.

How a call travels (see ``_dask_worker`` for the worker side):

1. ``submit`` cloudpickles the function once on the client; the arguments
   stay ordinary dask arguments (so dask resolves futures in them). One dask
   task per call (``pure=False``, a key of our own: never de-duplicated);
   ``map`` sends one dask task per chunk.
2. In the dask worker the task claims its call from the scheduler
   (``_claims``), reports "started" (an event, for the RUNNING state only),
   runs the call in the worker's plait process pool and returns the outcome
   as a value (``_outcome``).
3. The dask future's callback (dask's callback thread) finishes the plait
   future: result, exception (type kept, remote traceback as
   ``__cause__``), ``WorkerDied``, ``TimeoutError``.

Exactly once. A dask worker that is lost makes the scheduler re-run its tasks
elsewhere, silently, up to ``allowed-failures`` times. The private cluster is
made with ``distributed.scheduler.allowed-failures=0``, so those tasks fail
with ``KilledWorker`` instead, and the scheduler's claims tell the two
cases apart: a task that had started fails with ``WorkerDied`` (or is re-run
if ``retries=N`` allows), one that was only queued there is resubmitted (it
never ran, and that attempt can no longer start).

An external cluster (an address or a client) should have the same setting
(``distributed.scheduler.allowed-failures: 0`` in its scheduler's dask
config; ``ClusterExecutor`` warns at start otherwise). With another value
the claims still keep every call to one run: dask's silent re-run of a
started call is refused (``NOT_RUN``) and becomes ``WorkerDied``; only the
report comes later, after the doomed re-run.
"""

import collections
import functools
import itertools
import logging
import math
import numbers
import os
import threading
import time
import uuid
import weakref
from concurrent import futures as _cf
from concurrent.futures.process import BrokenProcessPool

import cloudpickle

from plait.futures import WorkerDied
from plait.futures import _delayed
from plait.futures._common import check_buffersize, exit_executor, map_timeout
from plait.futures._process_pool import _unhandled_interrupt

from . import _claims, _dask_worker, _outcome
from ._future import ClusterFuture, _plain_cancel

logger = logging.getLogger("plait.cluster")

# Without a length: this many items per dask task (≥ 20× faster than a task
# per call, measured).
UNSIZED_CHUNKSIZE = 64
MAX_CHUNKSIZE = 1000
# How long the start waits for its own probe event (the subscription is live).
SUBSCRIBE_BOUND = 30.0
# How long shutdown(kill_workers=True) waits for killed tasks to report.
KILL_DRAIN_BOUND = 10.0
# Arguments of these types this large are scattered to the cluster once per
# object per batch (a submit, a map) rather than sent with each task.
SCATTER_MIN_BYTES = 1 << 20
_BUFFER_TYPES = (bytes, bytearray, memoryview)
# Ended calls whose claims the scheduler drops in one message.
FORGET_BATCH = 256


#: Executors not yet closed: at exit their calls are let finish (see _at_exit).
_live_executors = weakref.WeakSet()


def _at_exit():
    """At interpreter exit (before dask's own exit hooks close clusters), as
    plait's process pool: the calls still running or queued are let finish,
    as CPython's pools do; after an unhandled Ctrl-C, or a Ctrl-C while
    waiting here, they are killed instead and the cluster closed."""
    for executor in list(_live_executors):
        try:
            if _unhandled_interrupt():
                raise KeyboardInterrupt
            executor.shutdown(wait=True)
        except BaseException:  # noqa: BLE001 - Ctrl-C: stop now
            executor.shutdown(wait=True, kill_workers=True)


# The threading module's exit hooks run before atexit's (where distributed
# closes its clusters) and before non-daemon threads are joined.
threading._register_atexit(_at_exit)
os.register_at_fork(after_in_child=_live_executors.clear)  # the parent's


class _Task:
    """One dask task: a call or a chunk, and the plait future it finishes.
    A resubmitted task keeps its future and gets a new key."""

    __slots__ = ("executor", "future", "func", "args", "reruns", "tid", "attempt", "key", "dask",
                 "chunk")

    def __init__(self, executor, future, func, args, reruns, chunk):
        self.executor = executor
        self.future = future
        self.func = func
        self.args = args
        self.reruns = reruns
        self.chunk = chunk
        self.tid = None
        self.attempt = -1
        self.key = None
        self.dask = None


def _allowed_failures(dask_scheduler=None):
    return dask_scheduler.allowed_failures


def _processing_on(key, dask_scheduler=None):
    """On the scheduler: the address of the worker processing ``key``
    (None: not processing, or unknown)."""
    ts = dask_scheduler.tasks.get(key)
    ws = getattr(ts, "processing_on", None) if ts is not None else None
    return getattr(ws, "address", None)


def _check_timeout(value):
    """A time limit is a real number (bad input fails in the caller, as on
    plait's process pool, not later on a dask worker)."""
    if not isinstance(value, numbers.Real):
        raise TypeError("must be real number, not %s" % type(value).__name__)


class ClusterExecutor(_cf.Executor):
    """A ``concurrent.futures.Executor`` that runs calls on a dask.distributed
    cluster, with the promises of plait's ``ProcessPoolExecutor``.

    * ``ClusterExecutor()`` starts a private ``LocalCluster`` on 127.0.0.1
      (worker processes, the dashboard on a random 127.0.0.1 port;
      ``n_workers``, ``threads_per_worker`` and ``**cluster_kwargs`` go to
      it) and closes it at shutdown.
      ``ClusterExecutor("tcp://host:8786")`` or ``ClusterExecutor(client=c)``
      uses that cluster and leaves it running.
    * Each dask worker runs the calls in a plait process pool (one process
      per dask thread): a call that crashes its process fails alone with
      ``WorkerDied`` and the dask worker lives on; ``task_timeout`` (or
      ``schedule(..., timeout=)``) is a per-call time limit (the process is
      killed, ``TimeoutError``).
    * Every ``submit`` runs exactly once (see the module docstring); a lost
      dask worker fails the calls it was running with ``WorkerDied`` unless
      ``retries=N`` allows N re-runs.
    * Futures are ``plait.futures.Future``\\ s (``ClusterFuture``; see its
      ``cancel``). Exceptions keep their type (classes of the client's
      ``__main__`` included: results and exceptions travel by cloudpickle)
      and carry the remote traceback as ``__cause__``.
    * ``map`` sends one dask task per chunk of ``chunksize`` calls (a dask
      task costs milliseconds). ``chunksize=None`` (the default, unlike
      CPython's 1) picks ``ceil(n / (4 × threads))`` clamped to [1, 1000]
      for inputs with a length, else 64. Each call of a chunk still runs as
      its own plait task (a crash or time limit fails only that call).
    * ``schedule(..., delay=)`` waits on plait's shared timer thread (as
      plait's process pool): ``cancel()`` before the delay has passed means
      the call is never sent; ``shutdown(wait=True)`` waits for pending
      delays, ``cancel_futures``/``kill_workers``/``wait=False`` cancel them.
    """

    __module__ = "plait.cluster"

    def __init__(self, address=None, *, client=None, n_workers=None, threads_per_worker=1,
                 retries=0, task_timeout=None, **cluster_kwargs):
        import dask
        import distributed

        if address is not None and client is not None:
            raise TypeError("give an address or a client, not both")
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError("retries must be an int, not %s" % type(retries).__name__)
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if task_timeout is not None:
            _check_timeout(task_timeout)
        self._retries = retries
        self._task_timeout = task_timeout
        self._cluster = None
        self._own_client = client is None
        if client is None:
            if address is None:
                # dashboard_address=None still serves on 127.0.0.1:8787 (a
                # fixed port: two executors collide); ":0" alone binds
                # every interface (both measured with distributed 2026.8).
                options = dict(n_workers=n_workers, threads_per_worker=threads_per_worker,
                               processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
                options.update(cluster_kwargs)
                with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                    self._cluster = distributed.LocalCluster(**options)
                client = distributed.Client(self._cluster, set_as_default=False)
            else:
                client = distributed.Client(address, set_as_default=False)
        self._client = client
        self._name = "plait-%s" % uuid.uuid4().hex[:12]
        # A forked child has a copy of the client without its event loop
        # thread: nothing may go to the cluster from there (see _forked).
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._tasks = {}
        self._tids = itertools.count()
        self._forget = []
        self._shutdown = False
        self._closed = False
        try:
            client.register_plugin(_claims.ClaimPlugin())
            self._subscribe()
            client.register_plugin(_dask_worker.PoolPlugin(self._name))
            self._threads = max(1, sum(client.nthreads().values()))
            if self._cluster is None:
                allowed = client.run_on_scheduler(_allowed_failures)
                if allowed:
                    logger.warning(
                        "the dask scheduler at %s re-runs the tasks of a lost worker "
                        "(distributed.scheduler.allowed-failures=%s): calls still run once "
                        "(the re-run of a started call is refused), but a lost worker's "
                        "calls are reported only after those re-runs; set it to 0",
                        client.scheduler.address, allowed)
        except BaseException:
            self._close()
            raise
        _live_executors.add(self)

    # -- start-up ---------------------------------------------------------

    def _subscribe(self):
        """Subscribe to the started events and wait until our own probe
        comes back (the RUNNING state of early calls depends on it)."""
        probed = threading.Event()

        def on_event(event):
            _, msg = event
            if msg == "probe":
                probed.set()
            else:
                self._on_started(msg)

        self._client.subscribe_topic(self._name, on_event)
        deadline = time.monotonic() + SUBSCRIBE_BOUND
        while not probed.wait(0.05):
            if time.monotonic() > deadline:
                raise TimeoutError("the dask scheduler did not confirm the event subscription")
            self._client.log_event(self._name, "probe")

    # -- submitting -------------------------------------------------------

    def submit(self, fn, /, *args, **kwargs):
        return self.schedule(fn, args, kwargs)

    def schedule(self, fn, args=(), kwargs=None, *, delay=None, timeout=None):
        """Like ``submit(fn, *args, **kwargs)`` with a per-call time limit
        in seconds (None: the executor's ``task_timeout``), sent after
        ``delay`` seconds (None or 0: now) from plait's shared timer thread
        (``plait.futures._delayed``)."""
        if delay is not None:
            delay = _delayed.check_delay(delay)
        args = tuple(args)
        kwargs = dict(kwargs or {})
        if delay:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            submit = functools.partial(self._schedule_now, fn, args, kwargs, timeout)
            return _delayed.schedule_later(self, submit, delay, fn)
        return self._schedule_now(fn, args, kwargs, timeout)

    def _schedule_now(self, fn, args, kwargs, timeout):
        if timeout is None:
            timeout = self._task_timeout
        else:
            _check_timeout(timeout)
        memo = {}
        args = tuple(self._scatter_big(a, memo) for a in args)
        kwargs = {k: self._scatter_big(v, memo) for k, v in kwargs.items()}
        return self._start(_dask_worker.run_call, (cloudpickle.dumps(fn), args, kwargs, timeout),
                           chunk=False)

    def _start(self, func, args, chunk):
        """A future for the dask task ``func(name, tid, attempt, *args)``,
        sent now."""
        future = ClusterFuture()
        task = _Task(self, future, func, args, self._retries, chunk)
        future._plait_task = task
        self._launch(task)
        return future

    def _scatter_big(self, value, memo):
        """``value``, or for a bytes-like argument of at least
        ``SCATTER_MIN_BYTES`` the dask future of its copy on the cluster
        (scattered once per object in ``memo``: one batch; dask hands the
        data to the task in place of the future)."""
        if not isinstance(value, _BUFFER_TYPES):
            return value
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        if size < SCATTER_MIN_BYTES:
            return value
        held = memo.get(id(value))
        if held is None:
            data = value
            if isinstance(value, memoryview):
                data = value.tobytes() if not value.c_contiguous else value.cast("B")
            [future] = self._client.scatter([data], hash=False)
            # The object stays referenced while the memo lives: its id is not reused.
            held = memo[id(value)] = (value, future)
        return held[1]

    def _forked(self):
        """Whether this is a child forked after the executor started: the
        cluster is the parent's, and the copy of its client cannot talk to
        it (its event loop thread did not survive the fork)."""
        return os.getpid() != self._pid

    def _launch(self, task):
        if self._forked():
            raise BrokenProcessPool(
                "this ClusterExecutor was started by the parent of this forked process; "
                "its cluster connection is the parent's (make a new executor in the child)")
        with self._lock:
            if task.tid is None:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                task.tid = "%s-%d" % (self._name, next(self._tids))
            task.attempt += 1
            key = task.key = "%s-%d" % (task.tid, task.attempt)
            self._tasks[key] = task
        try:
            dask_future = self._client.submit(task.func, self._name, task.tid, task.attempt,
                                              *task.args, key=key, pure=False)
        except BaseException:
            with self._lock:
                self._tasks.pop(key, None)
                self._drained.notify_all()
            raise
        task.dask = dask_future
        dask_future.add_done_callback(self._on_dask_done)

    # -- events from the cluster -----------------------------------------

    def _on_started(self, msg):
        """A dask worker won the claim of ``(tid, attempt)`` (in the
        client's event loop: no blocking here). Only the RUNNING state
        depends on this event; a lost one leaves the future PENDING until
        it ends."""
        tid, attempt = msg
        with self._lock:
            task = self._tasks.get("%s-%d" % (tid, attempt))
        if task is not None and task.future._state == "PENDING":
            task.future.set_running_or_notify_cancel()

    def _on_dask_done(self, dask_future):
        """The dask task ended (dask's callback thread)."""
        with self._lock:
            task = self._tasks.pop(dask_future.key, None)
        if task is None:
            return
        try:
            self._settle(task, dask_future)
        except BaseException as exc:  # noqa: BLE001 - the future must end
            self._finish(task, False, exc)
        finally:
            forget = None
            with self._lock:
                if task.future.done():
                    self._forget.append(task.tid)
                    task.args = None  # scattered arguments are released
                    if len(self._forget) >= FORGET_BATCH:
                        forget, self._forget = self._forget, []
                self._drained.notify_all()
            if forget:
                self._forget_claims(forget)

    def _forget_claims(self, tids):
        try:
            self._client.sync(self._client.scheduler.plait_forget, tids=tids)
        except Exception:  # noqa: BLE001 - the cluster is gone, and its claims
            pass

    def _settle(self, task, dask_future):
        from distributed.scheduler import KilledWorker

        status = dask_future.status
        if status == "finished":
            try:
                outcome = dask_future.result()
            except Exception as exc:  # noqa: BLE001 - fails only this task
                self._finish(task, False, exc)
                return
            dask_future.release()
            if isinstance(outcome, tuple) and outcome[0] == _outcome.NOT_RUN:
                # Refused: we cancelled it, or dask re-ran a call that had
                # started on a lost worker (allowed-failures > 0).
                self._finish(task, False, WorkerDied(
                    "the dask worker running this task was lost (dask's re-run of it "
                    "was refused)"))
            elif task.chunk:
                self._finish(task, True, outcome)
            else:
                self._finish(task, *_outcome.decode(outcome))
        elif status == "error":
            exc = dask_future.exception()
            dask_future.release()
            if isinstance(exc, KilledWorker):
                self._lost(task, exc)
            else:
                self._finish(task, False, exc)
        elif not task.future.done():
            self._finish(task, False, BrokenProcessPool(
                "the dask task was cancelled by the cluster (closed or restarted)"))

    def _lost(self, task, exc):
        """A dask worker holding ``task`` was lost: did the call start?"""
        client = self._client
        verdict = client.sync(client.scheduler.plait_retire, tid=task.tid, attempt=task.attempt,
                              rerun=task.reruns > 0)
        if verdict == "cancelled" or task.future.done():
            return
        if verdict == "started":
            if task.reruns <= 0:
                worker = getattr(getattr(exc, "last_worker", None), "address", "?")
                self._finish(task, False, WorkerDied(
                    "the dask worker at %s was lost while running this task" % worker))
                return
            # A re-run the user asked for (the scheduler freed the claim for
            # the next attempt only).
            task.reruns -= 1
        # Not started: that attempt can no longer start; the next runs once.
        try:
            self._launch(task)
        except BaseException as failure:  # noqa: BLE001 - the client is closing
            self._finish(task, False, BrokenProcessPool(
                "the dask worker holding this task was lost and it could not be "
                "resubmitted: %r" % (failure,)))

    def _finish(self, task, ok, value):
        future = task.future
        if future._state == "PENDING" and not future.set_running_or_notify_cancel():
            return  # cancelled
        if future.done():
            return
        try:
            if ok:
                future.set_result(value)
            elif isinstance(value, _cf.CancelledError):
                future._force_cancel()
            else:
                future.set_exception(value)
        except _cf.InvalidStateError:
            pass  # cancelled meanwhile (kill)

    # -- cancel -----------------------------------------------------------

    def _cancel_pending(self, tasks):
        """Cancel calls that had not started, at the scheduler (``_claims``),
        and their futures: for each, whether it will never run (True) or
        started (False)."""
        client = self._client
        try:
            verdicts = client.sync(client.scheduler.plait_cancel, tids=[t.tid for t in tasks])
        except Exception:  # noqa: BLE001 - the cluster is gone: nothing starts any more
            verdicts = [True] * len(tasks)
        for task, never_runs in zip(tasks, verdicts):
            if not never_runs:
                continue
            # The future first: dask's cancel ends the dask future at once,
            # and its callback must find this one cancelled, not broken.
            _plain_cancel(task.future)
            if task.dask is not None:
                try:
                    task.dask.cancel()  # frees its slot; if reached, it returns NOT_RUN
                except Exception:  # noqa: BLE001 - the client is closed
                    pass
        return verdicts

    def _kill(self, task):
        """Kill the plait process running ``task`` in its dask worker;
        whether one was killed."""
        client = self._client
        try:
            # Only to the worker holding it (the scheduler knows which).
            where = client.run_on_scheduler(_processing_on, task.key)
            if where is None:
                return False
            answers = client.run(_dask_worker.kill_task, self._name, task.key, workers=[where])
        except Exception:  # noqa: BLE001 - the client is closed, or that worker is gone
            return False
        return any(answers.values())

    # -- map --------------------------------------------------------------

    def map(self, fn, *iterables, timeout=None, chunksize=None, buffersize=None):
        """``map`` on the cluster: one dask task per chunk, results in
        order; ``timeout`` is the overall deadline (as CPython's)."""
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        check_buffersize(buffersize)
        timeout = map_timeout(timeout)
        deadline = None if timeout is None else timeout + time.monotonic()
        if chunksize is None:
            chunksize = self._default_chunksize(iterables)
        blob = cloudpickle.dumps(fn)
        memo = {}
        items = (tuple(self._scatter_big(a, memo) for a in item) for item in zip(*iterables))
        chunks = iter(lambda: list(itertools.islice(items, chunksize)), [])
        submitted = collections.deque()
        for chunk in (chunks if buffersize is None else itertools.islice(chunks, buffersize)):
            submitted.append(self._submit_chunk(blob, chunk))
        return self._map_results(submitted, chunks if buffersize is not None else None,
                                 blob, deadline)

    def _default_chunksize(self, iterables):
        try:
            n = min(len(it) for it in iterables)
        except TypeError:
            return UNSIZED_CHUNKSIZE
        return max(1, min(MAX_CHUNKSIZE, math.ceil(n / (4 * self._threads))))

    def _submit_chunk(self, blob, chunk):
        return self._start(_dask_worker.run_chunk, (blob, chunk, self._task_timeout), chunk=True)

    def _map_results(self, submitted, more, blob, deadline):
        try:
            while submitted:
                future = submitted.popleft()
                if more is not None:
                    for chunk in itertools.islice(more, 1):
                        submitted.append(self._submit_chunk(blob, chunk))
                wait = None if deadline is None else deadline - time.monotonic()
                for outcome in future.result(wait):
                    ok, value = _outcome.decode(outcome)
                    if not ok:
                        raise value
                    yield value
                    value = None
        finally:
            for future in submitted:
                future.cancel()

    # -- shutdown ---------------------------------------------------------

    def __exit__(self, exc_type, exc_val, exc_tb):
        # As plait's process pool: Ctrl-C in the block cancels the queued
        # calls and waits for the running ones; a second Ctrl-C kills them.
        return exit_executor(self, exc_type,
                             functools.partial(self.shutdown, wait=True, kill_workers=True))

    def shutdown(self, wait=True, *, cancel_futures=False, kill_workers=False):
        """Refuse new work; ``cancel_futures`` cancels what has not started;
        ``kill_workers`` kills the running calls now (``WorkerDied``); with
        ``wait``, return once every call ended and the cluster (if private)
        is closed."""
        if self._forked():
            # The parent's executor: refuse new work here, leave its calls
            # and its cluster to the parent.
            with self._lock:
                self._shutdown = True
            return
        # Delayed calls first: waited for (handed over) or cancelled.
        _delayed.before_shutdown(self, wait, cancel_futures or kill_workers)
        with self._lock:
            self._shutdown = True
            tasks = list(self._tasks.values())
        if cancel_futures or kill_workers:
            pending = [t for t in tasks if t.future._state == "PENDING"]
            if pending:
                self._cancel_pending(pending)
        if kill_workers:
            self._kill_pools()
            self._wait_drained(KILL_DRAIN_BOUND)
            for task in tasks:
                self._finish(task, False, WorkerDied(
                    "the executor was shut down with kill_workers=True"))
            self._close()
        elif wait:
            self._wait_drained(None)
            self._close()
        else:
            threading.Thread(target=self._close_when_drained, daemon=True,
                             name="%s-shutdown" % self._name).start()

    def _wait_drained(self, bound):
        deadline = None if bound is None else time.monotonic() + bound
        with self._lock:
            while self._tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                self._drained.wait(0.1 if left is None else min(left, 0.1))

    def _close_when_drained(self):
        self._wait_drained(None)
        self._close()

    def _kill_pools(self):
        """Kill every plait process of this executor (the plugin's teardown
        kills its pool): the running calls end with ``WorkerDied``."""
        try:
            self._client.unregister_worker_plugin(self._name)
        except Exception:  # noqa: BLE001 - not registered, or the client is closed
            pass

    def _close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _live_executors.discard(self)
        client = self._client
        forget, self._forget = self._forget, []
        if forget:
            self._forget_claims(forget)
        try:
            client.unsubscribe_topic(self._name)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        if self._cluster is not None:
            client.close()
            self._cluster.close()
        else:
            self._kill_pools()
            if self._own_client:
                client.close()
