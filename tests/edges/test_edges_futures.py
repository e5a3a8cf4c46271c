"""The edges of ``plait.futures`` and the process pools, case by case against
``concurrent.futures`` and ``multiprocessing.pool`` in the same process (see
``_table``): odd timeouts crossed with a future that is done, one that
finishes soon and one that never does; ``wait``'s ``return_when`` and odd
``fs``; ``Future``'s state machine and done-callbacks (with what they log);
the executors' constructor arguments, ``submit`` and ``map``; what a
process pool reports when a call, its result or its exception cannot be
pickled."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.pool
import re
import sys
import threading
import time

import plait.process
import pytest
from _table import Case, Floaty, Index, Str, check, ok, params, raises

PY = sys.version_info[:2]
INF = float("inf")
NAN = float("nan")


#: Odd values, by case-id name.
ODD = {
    "None": None,
    "True": True,
    "str": "x",
    "strsub": Str("x"),
    "1.5": 1.5,
    "-1": -1,
    "0": 0,
    "0.01": 0.01,
    "2**63": 2**63,
    "2**64": 2**64,
    "-2**64": -(2**64),
    "inf": INF,
    "-inf": -INF,
    "nan": NAN,
    "index": Index(),
    "floaty": Floaty(),
}

#: Timeouts that let a wait on a future that never finishes go on for a
#: while (or for ever): only crossed with futures that finish.
LONG = {"None", "True", "1.5"}

NAN_WHY = (
    "a NaN timeout raises ValueError; CPython treats it as 0 (a wait returns at "
    "once as if timed out, and as_completed spins)"
)


# ---- futures in a state ---------------------------------------------------------


def done(m):
    f = m.Future()
    f.set_result(1)
    return f


def soon(m):
    """A future a helper thread finishes 20 ms from now."""
    f = m.Future()
    t = threading.Timer(0.02, f.set_result, (1,))
    t.daemon = True
    t.start()
    return f


def never(m):
    return m.Future()


STATES = {"done": done, "soon": soon, "never": never}


def _timeout_cases():
    waits = {
        "result": lambda m, f, t: f.result(timeout=t),
        "exception": lambda m, f, t: f.exception(timeout=t),
        "wait": lambda m, f, t: tuple(map(len, m.wait([f], timeout=t))),
        "wait-first": lambda m, f, t: tuple(map(len, m.wait([f], t, m.FIRST_COMPLETED))),
        "as_completed": lambda m, f, t: len(list(m.as_completed([f], timeout=t))),
    }
    cases = []
    for wname, w in waits.items():
        for sname, make in STATES.items():
            for vname, v in ODD.items():
                if sname == "never" and vname in LONG:
                    continue

                def body(m, w=w, make=make, v=v):
                    return w(m, make(m), v)

                cid = f"{wname}-{sname}-timeout-{vname}"
                if vname == "nan" and sname != "done":
                    # CPython: result/exception/wait time out at once,
                    # as_completed spins until the future finishes (never:
                    # for ever).
                    hangs = wname == "as_completed" and sname == "never"
                    cases.append(
                        Case(cid, body, differs=raises(ValueError), why=NAN_WHY, std_hangs=hangs)
                    )
                else:
                    cases.append(Case(cid, body))
    return cases


# ---- wait and as_completed: return_when, fs --------------------------------------


def _wait_cases():
    cases = []
    whens = {
        "bogus": "bogus",
        "None": None,
        "0": 0,
        "1.5": 1.5,
        "strsub-first": Str("FIRST_COMPLETED"),
        "FIRST_COMPLETED": "FIRST_COMPLETED",
        "FIRST_EXCEPTION": "FIRST_EXCEPTION",
        "ALL_COMPLETED": "ALL_COMPLETED",
    }
    fss = {
        "all-done": lambda m: [done(m), done(m)],
        "one-pending": lambda m: [done(m), never(m)],
        "pending": lambda m: [never(m)],
        "empty": lambda m: [],
        "failed-and-pending": lambda m: [_failed(m), never(m)],
        "cancelled-and-pending": lambda m: [_cancelled(m), never(m)],
    }
    for wn, when in whens.items():
        for fn, make in fss.items():
            cases.append(
                Case(
                    f"wait-return_when-{wn}-{fn}",
                    lambda m, when=when, make=make: tuple(map(len, m.wait(make(m), 0.01, when))),
                )
            )
    odd_fs = {
        "duplicates": lambda m: [done(m)] * 3,
        "duplicates-pending": lambda m: [never(m)] * 2,
        "int-item": lambda m: [done(m), 1],
        "None-item": lambda m: [None],
        "str": lambda m: "ab",
        "None": lambda m: None,
        "int": lambda m: 5,
        "generator": lambda m: (done(m) for _ in range(3)),
        "dict": lambda m: {done(m): 1},
        "std-future-mixed": lambda m: [done(m), _std_done()],
    }
    for name, make in odd_fs.items():
        cases.append(
            Case(f"wait-fs-{name}", lambda m, make=make: tuple(map(len, m.wait(make(m), 0.01))))
        )
        cases.append(
            Case(
                f"as_completed-fs-{name}",
                lambda m, make=make: len(list(m.as_completed(make(m), 0.01))),
            )
        )
    cases.append(
        Case("as_completed-not-iterated", lambda m: type(m.as_completed(None, "x")).__name__)
    )
    cases.append(Case("wait-no-args", lambda m: m.wait()))
    cases.append(
        Case(
            "wait-return_when-keyword-bogus-done",
            lambda m: tuple(map(len, m.wait([done(m)], return_when="bogus"))),
        )
    )
    return cases


def _failed(m):
    f = m.Future()
    f.set_exception(ValueError("x"))
    return f


def _cancelled(m):
    f = m.Future()
    f.cancel()
    return f


def _std_done():
    import concurrent.futures

    f = concurrent.futures.Future()
    f.set_result(2)
    return f


# ---- Future's state machine --------------------------------------------------------


class Stop(BaseException):
    """A BaseException the harness does not re-raise (as KeyboardInterrupt)."""


def _logged(body, tb=True):
    """Run ``body()``; return its value and what it logged through
    ``concurrent.futures``' logger: (level, message, exception class, and
    with ``tb`` whether the record has a traceback)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("concurrent.futures")
    handler = Keep()
    logger.addHandler(handler)
    try:
        value = body()
    finally:
        logger.removeHandler(handler)
    seen = []
    for r in records:
        ei = r.exc_info
        seen.append(
            (r.levelname, r.msg, ei and ei[0].__name__)
            + ((bool(ei and ei[2] is not None),) if tb else ())
        )
    return value, seen


def _raise_value_error(f):
    raise ValueError("callback")


def _raise_stop(f):
    raise Stop


def _future_cases():
    def s(*steps):
        """Apply ``steps`` (method name, args) to a new future; the value
        of the last, or the exception class of the first that raises."""

        def body(m):
            f = m.Future()
            value = None
            for name, *args in steps:
                value = getattr(f, name)(*args)
            return value if not isinstance(value, BaseException) else type(value).__name__

        return body

    R, E, C, RN = (
        ("set_result", 1),
        ("set_exception", ValueError("x")),
        ("cancel",),
        ("set_running_or_notify_cancel",),
    )
    table = {
        "set_result-twice": s(R, R),
        "set_exception-after-result": s(R, E),
        "set_result-after-exception": s(E, R),
        "set_exception-twice": s(E, E),
        "set_result-after-cancel": s(C, R),
        "set_exception-after-cancel": s(C, E),
        "cancel-twice": s(C, C),
        "cancel-after-result": s(R, C),
        "cancel-running": s(RN, C),
        "running-twice": s(RN, RN),
        "running-after-cancel": s(C, RN),
        "running-after-cancel-twice": s(C, RN, RN),
        "running-after-result": s(R, RN),
        "result-after-running": s(RN, R, ("result",)),
        "result-cancelled": s(C, ("result",)),
        "exception-cancelled": s(C, ("exception",)),
        "result-pending-0": s(("result", 0)),
        "exception-pending-0": s(("exception", 0)),
        "result-running-0": s(RN, ("result", 0)),
        "set_exception-int": s(("set_exception", 5), ("result", 0)),
        "set_exception-int-exception": s(("set_exception", 5), ("exception", 0)),
        "set_exception-class": s(("set_exception", ValueError), ("result", 0)),
        "set_exception-class-exception": s(("set_exception", ValueError), ("exception", 0)),
        "set_exception-None-result": s(("set_exception", None), ("result", 0)),
        "set_exception-None-done": s(("set_exception", None), ("done",)),
        "set_result-no-arg": s(("set_result",)),
        "set_exception-no-arg": s(("set_exception",)),
        "done-callback-None-pending": s(("add_done_callback", None)),
        "cancelled-pending": s(("cancelled",)),
        "running-pending": s(("running",)),
        "done-after-cancel": s(C, ("done",)),
        "running-after-notify": s(RN, ("running",)),
    }
    cases = [Case(f"future-{k}", v) for k, v in table.items()]
    cases += [
        Case("future-args", lambda m: m.Future(1)),
        Case("future-kwargs", lambda m: m.Future(x=1)),
        Case("future-class-getitem", lambda m: type(m.Future[int]).__name__),
        Case(
            "future-is-cf-future",
            lambda m: isinstance(m.Future(), __import__("concurrent.futures").futures.Future),
        ),
        Case("future-set-attribute", lambda m: setattr(m.Future(), "tag", 1)),
    ]

    # Done-callbacks: what runs, what raises, what is logged (bullet 3 of
    # the issue: the record carries the traceback on every version).
    def cb_case(add_before, callback, finish="set_result"):
        def body(m):
            def run():
                f = m.Future()
                if add_before:
                    f.add_done_callback(callback)
                try:
                    getattr(f, finish)(*((1,) if finish == "set_result" else ()))
                except Stop:
                    return "stop-from-finish"
                if not add_before:
                    f.add_done_callback(callback)
                return f.done()

            # A callback that is not callable fails in no Python frame, so its
            # traceback is empty in plait: the traceback is compared for the
            # others.
            return _logged(run, tb=callback != 5)

        return body

    for when in ("before", "after"):
        for cname, cb in (
            ("ValueError", _raise_value_error),
            ("not-callable", 5),
            ("Stop", _raise_stop),
            ("ok", lambda f: None),
        ):
            for finish in ("set_result", "cancel"):
                cases.append(
                    Case(
                        f"future-callback-{cname}-{when}-{finish}",
                        cb_case(when == "before", cb, finish),
                    )
                )
    return cases


# ---- executors -------------------------------------------------------------------------


def _tpe_run(m, *args, **kwargs):
    ex = m.ThreadPoolExecutor(*args, **kwargs)
    try:
        return ex.submit(int, "3").result(timeout=5)
    finally:
        ex.shutdown()


def _thread_name(m, prefix):
    with m.ThreadPoolExecutor(1, thread_name_prefix=prefix) as ex:
        name = ex.submit(lambda: threading.current_thread().name).result(timeout=5)
    return re.sub(r"ThreadPoolExecutor-\d+", "TPE", name)


def _ppe_make(m, *args, **kwargs):
    ex = m.ProcessPoolExecutor(*args, **kwargs)
    ex.shutdown()
    return type(ex).__name__.replace("ProcessPoolExecutor", "PPE")


def _ppe_map(m, chunksize):
    # No worker starts: map refuses the chunksize before submitting.
    ex = m.ProcessPoolExecutor(1)
    try:
        return list(ex.map(abs, [], chunksize=chunksize))
    finally:
        ex.shutdown()


def _initializer_fails():
    raise KeyError("initializer")


def _executor_cases():
    cases = []
    for vname, v in ODD.items():
        body = lambda m, v=v: _tpe_run(m, v)
        if vname == "nan":
            # CPython accepts NaN and never starts a worker (a submitted
            # call never runs): not run on CPython.
            cases.append(
                Case(
                    f"tpe-max_workers-{vname}",
                    body,
                    differs=raises(ValueError),
                    why="ThreadPoolExecutor(max_workers=nan) raises ValueError; CPython accepts it "
                    "and never starts a worker, so every submitted call waits for ever",
                    std_hangs=True,
                )
            )
        else:
            cases.append(Case(f"tpe-max_workers-{vname}", body))
        cases.append(Case(f"ppe-max_workers-{vname}", lambda m, v=v: _ppe_make(m, v)))
        cases.append(Case(f"tpe-thread_name_prefix-{vname}", lambda m, v=v: _thread_name(m, v)))
        cases.append(
            Case(
                f"tpe-map-chunksize-{vname}",
                lambda m, v=v: list(m.ThreadPoolExecutor(1).map(abs, [-1, -2], chunksize=v)),
            )
        )
        if vname not in ("None", "True", "0.01", "1.5", "index", "2**63", "2**64"):
            # Only values refused before anything is submitted.
            cases.append(Case(f"ppe-map-chunksize-{vname}", lambda m, v=v: _ppe_map(m, v)))
        cases.append(
            Case(
                f"ppe-max_tasks_per_child-{vname}",
                lambda m, v=v: _ppe_make(m, 1, max_tasks_per_child=v),
                **_tasks_per_child_on_310(vname),
            )
        )
        cases.append(
            Case(
                f"tpe-map-timeout-{vname}-slow",
                lambda m, v=v: _map_timeout(m, v, 0.05),
                **_map_nan(vname),
            )
        )
        cases.append(
            Case(
                f"tpe-map-timeout-{vname}-empty",
                lambda m, v=v: list(m.ThreadPoolExecutor(1).map(abs, [], timeout=v)),
            )
        )
    cases += [
        Case("tpe-initializer-not-callable", lambda m: _tpe_run(m, 1, initializer=5)),
        Case("tpe-initargs-not-iterable-no-initializer", lambda m: _tpe_run(m, 1, initargs=5)),
        Case("tpe-initargs-not-iterable", lambda m: _tpe_run(m, 1, initializer=print, initargs=5)),
        Case(
            "tpe-initargs-wrong-arity",
            lambda m: _tpe_run(m, 1, initializer=_initializer_fails, initargs=(1,)),
        ),
        Case("tpe-initializer-fails", lambda m: _tpe_run(m, 1, initializer=_initializer_fails)),
        Case(
            "tpe-initializer-fails-logged",
            lambda m: _logged(
                lambda: _outcome_name(lambda: _tpe_run(m, 1, initializer=_initializer_fails))
            ),
        ),
        Case("tpe-initializer-fails-then-submit", _broken_then_submit),
        Case(
            "tpe-submit-after-shutdown",
            lambda m: _after_shutdown(m.ThreadPoolExecutor(1), "submit"),
        ),
        Case("tpe-map-after-shutdown", lambda m: _after_shutdown(m.ThreadPoolExecutor(1), "map")),
        Case("tpe-submit-after-with", lambda m: _after_with(m.ThreadPoolExecutor(1))),
        Case("tpe-shutdown-twice", lambda m: _shutdown_twice(m.ThreadPoolExecutor(1))),
        Case("tpe-submit-no-fn", lambda m: m.ThreadPoolExecutor(1).submit()),
        Case("tpe-submit-fn-keyword", lambda m: m.ThreadPoolExecutor(1).submit(fn=abs)),
        Case("tpe-submit-not-callable", lambda m: _failure_of(m.ThreadPoolExecutor(1).submit(5))),
        Case(
            "tpe-submit-kwargs",
            lambda m: m.ThreadPoolExecutor(1).submit(dict, a=1, fn=2).result(timeout=5),
        ),
        Case("tpe-map-no-iterables", lambda m: list(m.ThreadPoolExecutor(1).map(abs))),
        Case("tpe-map-not-iterable", lambda m: list(m.ThreadPoolExecutor(1).map(abs, 5))),
        Case("tpe-map-fn-raises", lambda m: list(m.ThreadPoolExecutor(1).map(abs, ["x"]))),
        Case(
            "tpe-map-zip-shortest",
            lambda m: list(m.ThreadPoolExecutor(1).map(pow, [1, 2, 3], [2, 2])),
        ),
        Case("tpe-too-many-args", lambda m: m.ThreadPoolExecutor(1, "p", None, (), 5)),
        Case("tpe-unknown-keyword", lambda m: m.ThreadPoolExecutor(bogus=1)),
        Case("ppe-mp_context-str", lambda m: _ppe_make(m, 1, mp_context="x")),
        Case(
            "ppe-mp_context-spawn", lambda m: _ppe_make(m, 1, multiprocessing.get_context("spawn"))
        ),
        Case(
            "ppe-mp_context-fork-tasks-per-child",
            lambda m: _ppe_make(m, 1, multiprocessing.get_context("fork"), max_tasks_per_child=2),
            **_tasks_per_child_on_310("fork"),
        ),
        Case("ppe-initializer-not-callable", lambda m: _ppe_make(m, 1, initializer=5)),
        Case("ppe-initargs-not-iterable-no-initializer", lambda m: _ppe_make(m, 1, initargs=5)),
        Case(
            "ppe-submit-after-shutdown",
            lambda m: _after_shutdown(m.ProcessPoolExecutor(1), "submit"),
        ),
        Case("ppe-map-after-shutdown", lambda m: _after_shutdown(m.ProcessPoolExecutor(1), "map")),
        Case("ppe-shutdown-twice", lambda m: _shutdown_twice(m.ProcessPoolExecutor(1))),
        Case("ppe-submit-no-fn", lambda m: m.ProcessPoolExecutor(1).submit()),
    ]
    # buffersize follows 3.14's checks: an int (bool included) >= 1, or None.
    buffersizes = {
        "0": (0, raises(ValueError)),
        "-1": (-1, raises(ValueError)),
        "1.5": (1.5, raises(TypeError)),
        "str": ("x", raises(TypeError)),
        "True": (True, ok([1, 2, 3])),
        "2": (2, ok([1, 2, 3])),
        "None": (None, ok([1, 2, 3])),
    }
    for bname, (b, mine) in buffersizes.items():
        body = lambda m, b=b: _buffered_map(m, b)
        if PY >= (3, 14) or mine.kind == "raises" and mine.value is TypeError:
            cases.append(Case(f"tpe-map-buffersize-{bname}", body))
        else:
            cases.append(
                Case(
                    f"tpe-map-buffersize-{bname}",
                    body,
                    differs=mine,
                    why="map(buffersize=) is plait's addition before Python 3.14 "
                    "(CPython raises TypeError); it follows 3.14's checks",
                )
            )
    return cases


def _buffered_map(m, buffersize):
    # The executor must live: a buffered map stops submitting once it is
    # collected (as in 3.14).
    with m.ThreadPoolExecutor(1) as ex:
        return list(ex.map(abs, [-1, -2, -3], buffersize=buffersize))


def _map_nan(vname):
    if vname == "nan":
        return {"differs": raises(ValueError), "why": NAN_WHY}
    return {}


def _map_timeout(m, timeout, delay):
    with m.ThreadPoolExecutor(1) as ex:
        return list(ex.map(lambda x: time.sleep(delay) or x, [1, 2], timeout=timeout))


def _outcome_name(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the class is the outcome
        return type(e).__name__


def _failure_of(f):
    return type(f.exception(timeout=5)).__name__


def _broken_then_submit(m):
    ex = m.ThreadPoolExecutor(1, initializer=_initializer_fails)
    try:
        f = ex.submit(abs, 1)
        name = type(f.exception(timeout=5)).__name__
        return name, ex.submit(abs, 1)
    finally:
        ex.shutdown()


def _after_shutdown(ex, what):
    ex.shutdown()
    if what == "map":
        return ex.map(abs, [1])
    return ex.submit(abs, 1)


def _after_with(ex):
    with ex:
        pass
    return ex.submit(abs, 1)


def _shutdown_twice(ex):
    ex.shutdown()
    return ex.shutdown(wait=False, cancel_futures=True)


# ---- what cannot be pickled (process pools) -------------------------------------------


class LockedError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


class RefusedError(Exception):
    def __reduce__(self):
        raise TypeError("refused")


def raise_locked():
    raise LockedError("boom")


def raise_refused():
    raise RefusedError("boom")


def return_lock():
    return threading.Lock()


def identity(x):
    return x


class TwoArgsError(Exception):
    """Pickles, but does not unpickle (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__(a)


def raise_two_args():
    raise TwoArgsError(1, 2)


def _unpickling_fails(m):
    """An exception that fails to unpickle in the parent, then the next call."""
    with m.ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as ex:
        first = type(ex.submit(raise_two_args).exception(timeout=60)).__name__
        try:
            after = ex.submit(abs, -1).result(timeout=60)
        except Exception as e:  # noqa: BLE001 - the class is the outcome
            after = type(e).__name__
    return first, after


def _local_function():
    def local():
        return 1

    return local


_POOLS = {}


def _process_pool(m):
    """One spawn-started pool of each kind per implementation, shared by the
    cases (starting a worker costs more than a case)."""
    key = ("executor", m.name)
    if key not in _POOLS:
        _POOLS[key] = m.ProcessPoolExecutor(1, multiprocessing.get_context("spawn"))
    return _POOLS[key]


def _mp_pool(m):
    key = ("pool", m.name)
    if key not in _POOLS:
        ctx = multiprocessing.get_context("spawn")
        _POOLS[key] = ctx.Pool(1) if m.name == "std" else plait.process.Pool(1, context=ctx)
    return _POOLS[key]


@pytest.fixture(scope="module", autouse=True)
def _stop_pools():
    yield
    for key, p in _POOLS.items():
        if key[0] == "executor":
            p.shutdown()
        else:
            p.terminate()
            p.join()
    _POOLS.clear()


try:
    import cloudpickle  # noqa: F401

    _HAS_CLOUDPICKLE = True
except ImportError:
    _HAS_CLOUDPICKLE = False


CALLS = {
    "exception-unpicklable": (raise_locked, ()),
    "exception-reduce-raises": (raise_refused, ()),
    "result-unpicklable": (return_lock, ()),
    "argument-unpicklable": (identity, (threading.Lock(),)),
    "argument-lambda": (lambda: 1, ()),
    "argument-local-function": (_local_function(), ()),
    "fine": (identity, (5,)),
}


def _pickling_cases():
    cases = []
    for name, (fn, args) in CALLS.items():

        def ppe(m, fn=fn, args=args):
            f = _process_pool(m).submit(fn, *args)  # never raises: the future fails
            exc = f.exception(timeout=60)
            return f.result() if exc is None else type(exc).__name__

        def pool(m, fn=fn, args=args):
            return _mp_pool(m).apply_async(fn, args).get(timeout=60)

        def pool_map(m, fn=fn, args=args):
            return _mp_pool(m).map_async(fn, [args[0]] if args else []).get(timeout=60)

        # With cloudpickle installed (plait[cluster] brings it), plait sends
        # what pickle cannot by value, as the README says; CPython's pools
        # cannot send a lambda or a local function at all.
        by_value = name in ("argument-lambda", "argument-local-function") and _HAS_CLOUDPICKLE
        extra = dict(differs=ok(1), why="plait sends a lambda or local function with "
                     "cloudpickle when it is installed; CPython's pools cannot pickle it") \
            if by_value else {}
        cases.append(Case(f"ppe-{name}", ppe, **extra))
        cases.append(Case(f"pool-apply-{name}", pool, **extra))
        if args:
            cases.append(Case(f"pool-map-{name}", pool_map))
    cases.append(
        Case(
            "ppe-exception-does-not-unpickle",
            _unpickling_fails,
            differs=ok(("TypeError", 1)),
            why="an exception that cannot be unpickled in the parent fails only its task (with "
            "the unpickling error); CPython's pool breaks (BrokenProcessPool for every call)",
        )
    )
    return cases


def _pool_class(m):
    return multiprocessing.pool.Pool if m.name == "std" else plait.process.Pool


def _pool_make(m, *args, **kwargs):
    # Only for arguments refused before a worker starts.
    return _pool_class(m)(*args, **kwargs)


def _slow_abs(x):
    time.sleep(0.2)
    return abs(x)


def _pool_cases():
    """multiprocessing.Pool: arguments refused up front, and calls on the
    shared spawn-started pool (see ``_mp_pool``)."""
    cases = []
    for vname, v in ODD.items():
        if vname not in ("None", "True", "1.5", "0.01", "2**63", "2**64", "inf", "index"):
            # Refused before any worker starts, on CPython too.
            cases.append(Case(f"pool-processes-{vname}", lambda m, v=v: _pool_make(m, v)))
        if vname not in ("None", "True", "2**63", "2**64", "index"):
            cases.append(
                Case(
                    f"pool-maxtasksperchild-{vname}",
                    lambda m, v=v: _pool_make(m, 1, maxtasksperchild=v),
                )
            )
        cases.append(
            Case(
                f"pool-map-chunksize-{vname}",
                lambda m, v=v: _mp_pool(m).map(abs, [-1, -2, -3], chunksize=v),
                **_pool_chunksize_differs(vname),
            )
        )
        if vname not in LONG:
            cases.append(
                Case(f"pool-get-ready-timeout-{vname}", lambda m, v=v: _pool_get(m, v, ready=True))
            )
            # CPython: NaN does not wait (multiprocessing.TimeoutError).
            cases.append(
                Case(
                    f"pool-get-pending-timeout-{vname}",
                    lambda m, v=v: _pool_get(m, v, ready=False),
                    **_map_nan(vname),
                )
            )
    cases += [
        Case("pool-initializer-not-callable", lambda m: _pool_make(m, 1, initializer=5)),
        Case("pool-apply-args-not-a-tuple", lambda m: _mp_pool(m).apply(abs, 5)),
        Case("pool-apply-kwds-not-a-dict", lambda m: _mp_pool(m).apply(abs, (1,), 5)),
        Case("pool-apply-args-list", lambda m: _mp_pool(m).apply(abs, [-4])),
        Case("pool-map-empty", lambda m: _mp_pool(m).map(abs, [])),
        Case("pool-map-not-iterable", lambda m: _mp_pool(m).map(abs, 5)),
        Case("pool-starmap-not-tuples", lambda m: _mp_pool(m).starmap(abs, [1, 2])),
        Case("pool-imap-chunksize-0", lambda m: list(_mp_pool(m).imap(abs, [1], chunksize=0))),
        Case(
            "pool-imap-unordered-chunksize-0",
            lambda m: list(_mp_pool(m).imap_unordered(abs, [1], chunksize=0)),
        ),
        Case("pool-task-raises", lambda m: _mp_pool(m).apply(abs, ("x",))),
    ]
    return cases


#: 3.11's outcome of ProcessPoolExecutor(1, max_tasks_per_child=v), which
#: plait gives on 3.10 too (CPython 3.10 has no such argument: TypeError).
_TASKS_PER_CHILD_311 = {
    "None": ok("PPE"),
    "True": ok("PPE"),
    "2**63": ok("PPE"),
    "2**64": ok("PPE"),
    "0": raises(ValueError),
    "-1": raises(ValueError),
    "-2**64": raises(ValueError),
    "fork": raises(ValueError),  # with the fork context
}


def _tasks_per_child_on_310(vname):
    if sys.version_info >= (3, 11) or vname not in _TASKS_PER_CHILD_311:
        return {}
    return {
        "differs": _TASKS_PER_CHILD_311[vname],
        "why": "ProcessPoolExecutor takes max_tasks_per_child on 3.10 too, checked as 3.11 "
        "checks it; CPython 3.10 has no such argument (TypeError)",
    }


def _pool_chunksize_differs(vname):
    if vname in ("-1", "0", "-2**64", "-inf"):
        return {
            "differs": raises(ValueError),
            "why": "Pool.map(chunksize < 1) raises ValueError; CPython runs nothing and "
            "returns [None] * len(iterable)",
        }
    if vname in ("1.5", "0.01", "nan"):
        return {
            "differs": raises(ValueError),
            "std_hangs": True,
            "why": "Pool.map(chunksize=<a float that is not infinite>) raises ValueError; "
            "CPython's task handler fails on it and the map never returns",
        }
    return {}


def _pool_get(m, timeout, ready):
    r = _mp_pool(m).apply_async(abs if ready else _slow_abs, (-1,))
    if ready:
        r.wait(60)
    return r.get(timeout)


CASES = _timeout_cases() + _wait_cases() + _future_cases() + _executor_cases()
PICKLING = _pickling_cases() + _pool_cases()


@params(CASES)
def test_edge(case):
    check(case)


@params(PICKLING)
def test_pickling_edge(case):
    check(case)


def test_unpicklable_keeps_the_original_text():
    """The pickling error names what could not be sent: the task's
    exception (type and message) or its result."""
    import plait.futures as pf

    ex = _process_pool(
        type("M", (), {"name": "plait", "ProcessPoolExecutor": pf.ProcessPoolExecutor})
    )
    exc = ex.submit(raise_locked).exception(timeout=60)
    assert isinstance(exc, TypeError) and "LockedError('boom')" in str(exc)
    assert "LockedError: boom" in str(exc.__cause__)  # the remote traceback has both
    exc = ex.submit(return_lock).exception(timeout=60)
    assert isinstance(exc, TypeError) and "the result <unlocked _thread.lock" in str(exc)
    with pytest.raises(multiprocessing.pool.MaybeEncodingError, match="LockedError"):
        _mp_pool(type("M", (), {"name": "plait"})).apply(raise_locked)


def test_callback_log_has_traceback():
    """The record of a failed done-callback carries the traceback (3.11 lost
    it), as CPython's: same logger, level, message and exc_info."""
    import concurrent.futures as cf

    import plait.futures as pf

    def records(mod):
        f = mod.Future()
        f.add_done_callback(_raise_value_error)
        return _logged(lambda: f.set_result(1))[1]

    assert (
        records(pf)
        == records(cf)
        == [("ERROR", "exception calling callback for %r", "ValueError", True)]
    )
