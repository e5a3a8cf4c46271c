"""The harness of the edge tests: one case, run on the standard library and
on plait in the same process, must have the same outcome.

A case is a function of one argument, a namespace ``m`` holding either the
standard library's or plait's classes under the same names (``m.Lock``,
``m.Queue``, ``m.ThreadPoolExecutor``, ``m.new_event_loop``...).  Its
outcome is what it returned, or the class of the exception it raised
(messages may differ; the class is the contract).  ``check(case)`` runs it
on both and asserts the outcomes are equal, unless the case is a listed
*deliberate difference*: then plait's outcome must be the one the difference
states, and the standard library's is still run (and recorded) unless it
would hang.  Every difference is also written up in docs/differences.md.

Bodies must be bounded: a wait that might not end takes a small timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable

import plait.futures
import plait.queue
import plait.sync

_SYNC = ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier", "Timer")
_QUEUE = ("Queue", "LifoQueue", "PriorityQueue", "SimpleQueue", "Empty", "Full", "ShutDown")
_FUTURES = (
    "Future",
    "ThreadPoolExecutor",
    "ProcessPoolExecutor",
    "wait",
    "as_completed",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
    "CancelledError",
    "TimeoutError",
    "BrokenExecutor",
)


def _namespace(name, sync, q, futures, new_event_loop):
    ns = types.SimpleNamespace(name=name, new_event_loop=new_event_loop)
    ns.BrokenBarrierError = threading.BrokenBarrierError
    for mod, names in ((sync, _SYNC), (q, _QUEUE), (futures, _FUTURES)):
        for n in names:
            if hasattr(mod, n):
                setattr(ns, n, getattr(mod, n))
    return ns


def _plait_loop():
    import plait.loop

    return plait.loop.new_event_loop()


#: The standard library under the names the cases use.
STD = _namespace("std", threading, queue, concurrent.futures, asyncio.new_event_loop)
#: plait under the same names.
PLAIT = _namespace("plait", plait.sync, plait.queue, plait.futures, _plait_loop)


class Str(str):
    """A str subclass (odd values for the cases)."""


class Index:
    """An integer by ``__index__`` only (CPython's lock timeouts take it)."""

    def __init__(self, v=1):
        self.v = v

    def __index__(self):
        return self.v

    def __repr__(self):
        return f"Index({self.v!r})"


class Floaty:
    """A number by ``__float__`` only."""

    def __init__(self, v=0.01):
        self.v = v

    def __float__(self):
        return self.v

    def __repr__(self):
        return f"Floaty({self.v!r})"


@dataclass(frozen=True)
class Outcome:
    """What a case did: ``("ok", value)`` or ``("raises", exception class)``."""

    kind: str
    value: Any

    def __repr__(self):
        if self.kind == "raises":
            return f"raises {self.value.__name__}"
        return f"returns {self.value!r}"


def ok(value=None) -> Outcome:
    return Outcome("ok", value)


def raises(cls) -> Outcome:
    return Outcome("raises", cls)


def outcome(body: Callable[[Any], Any], m) -> Outcome:
    try:
        value = body(m)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the class is the outcome
        return raises(type(e))
    return ok(value)


@dataclass(frozen=True)
class Case:
    """One edge: ``body(m)`` on both implementations.

    ``differs``: plait's deliberate outcome, when it differs from CPython's
    on purpose (``why`` says why; docs/differences.md says it to users).
    ``std_hangs``: the standard library would not return (only with
    ``differs``), so it is not run.
    """

    id: str
    body: Callable[[Any], Any]
    differs: Outcome | None = None
    why: str = ""
    std_hangs: bool = False

    def __post_init__(self):
        assert not self.std_hangs or self.differs is not None, self.id
        assert (self.differs is None) == (not self.why), f"{self.id}: a difference says why"


def check(case: Case) -> None:
    """Assert plait's outcome of ``case`` is CPython's (or the documented
    deliberate difference)."""
    mine = outcome(case.body, PLAIT)
    if case.differs is not None:
        assert mine == case.differs, f"{case.id}: plait {mine}, the documented difference is {case.differs}"
        if not case.std_hangs:
            theirs = outcome(case.body, STD)
            assert theirs != case.differs, (
                f"{case.id}: CPython now also {theirs}; drop the difference"
            )
        return
    theirs = outcome(case.body, STD)
    assert mine == theirs, f"{case.id}: CPython {theirs}, plait {mine}"


def params(cases: list[Case]):
    """``pytest.mark.parametrize`` arguments for a table of cases."""
    import pytest

    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    return pytest.mark.parametrize("case", cases, ids=ids)
