"""plait.process.Queue against multiprocessing.Queue: odd timeouts of a
blocking get/put in each state (an item there or not, room or not), the
outcome CPython gives (its get reads the timeout as Connection.poll does,
even when an item is there; its put as its semaphore does, only when it
must wait)."""

import fractions
import multiprocessing

import plait.process
from _bounds import wait_until
from _table import Case, check, params


def _queue(m, maxsize=0):
    cls = multiprocessing.Queue if m.name == "std" else plait.process.Queue
    return cls(maxsize)


def _ready(q):
    # The standard Queue's feeder thread sends the item a little later.
    wait_until(lambda: not q.empty(), "the item never arrived")
    return q


VALUES = {
    "inf": float("inf"),
    "-inf": float("-inf"),
    "nan": float("nan"),
    "2**64": 2**64,
    "-2**64": -(2**64),
    "1e300": 1e300,
    "3e6": 3e6,  # beyond poll()'s C int of milliseconds
    "-1": -1,
    "-0.5": -0.5,
    "0": 0,
    "0.0": 0.0,
    "str": "x",
    "bytes": b"1",
    "fraction": fractions.Fraction(1, 100),
    "True": True,
}


#: op -> (maxsize, items put first, the call under test)
OPS = {
    "get-empty": (0, (), lambda q, v: q.get(True, v)),
    "get-ready": (0, (5,), lambda q, v: _ready(q).get(True, v)),
    "put-full": (1, (1,), lambda q, v: q.put(2, True, v)),
    "put-room": (2, (), lambda q, v: q.put(2, True, v)),
}


def _body(op, v):
    maxsize, items, call = OPS[op]

    def body(m):
        q = _queue(m, maxsize)
        for x in items:
            q.put(x)
        try:
            return call(q, v)
        finally:
            q.close()

    return body


CASES = [
    Case(f"{op}-{name}", _body(op, v))
    for name, v in VALUES.items()
    for op in OPS
    # A valid positive timeout on an empty/full queue is a real wait: only
    # the ones that must fail or return at once.
    if not (op == "get-empty" and name in ("True", "fraction"))
    and not (op == "put-full" and name in ("True", "fraction", "3e6"))
]


@params(CASES)
def test_edge(case):
    check(case)
