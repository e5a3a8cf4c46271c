"""The queues at the edges: each case runs on ``queue`` and on ``plait.queue``
in one process and must have the same outcome (see ``_table.py``).

The table crosses every argument with odd values (None, bools, str, 1.5,
negatives, 2**63, 2**64, inf, NaN, subclasses, ``__index__`` / ``__float__``
objects, Fraction, Decimal) and each state that matters: CPython's
``queue.Queue`` only hands a timeout to a lock wait when it must wait (an
item or room present: ``inf`` and NaN pass), while ``SimpleQueue.get`` (C)
converts it first. Waits are bounded: a wait that must end takes a small
timeout, or another thread supplies the item (or room) after a moment.
"""

from __future__ import annotations

import copy
import pickle
import sys
import threading
import time
import weakref
from decimal import Decimal
from fractions import Fraction

import pytest

from _table import Case, Floaty, Index, Str, check, ok, params, raises

# ---- odd values ----------------------------------------------------------------


class Int(int):
    pass


class Float(float):
    pass


INF, NAN = float("inf"), float("nan")

#: (id, value, how long a valid wait on it lasts: "short" (<= 0.01 s; runs
#: on an empty queue), "long" (a wait another thread must end), or "fails"
#: (CPython raises or returns before waiting, in some state)).
TIMEOUTS = [
    ("None", None, "long"),
    ("0", 0, "short"),
    ("0.0", 0.0, "short"),
    ("-0.0", -0.0, "short"),
    ("0.01", 0.01, "short"),
    ("-1", -1, "fails"),
    ("-1e-10", -1e-10, "fails"),
    ("-1e-9", -1e-9, "fails"),
    ("True", True, "long"),
    ("False", False, "short"),
    ("inf", INF, "fails"),
    ("-inf", -INF, "fails"),
    ("nan", NAN, "fails"),
    ("2**63", 2**63, "fails"),
    ("2**64", 2**64, "fails"),
    ("-2**64", -(2**64), "fails"),
    ("10**10", 10**10, "fails"),
    ("9e9", 9e9, "long"),
    ("1e300", 1e300, "fails"),
    ("2**1100", 2**1100, "fails"),
    ("'x'", "x", "fails"),
    ("Str", Str("1"), "fails"),
    ("Idx0", Index(0), "fails"),
    ("Idx5", Index(5), "long"),  # SimpleQueue waits 5 s on it; Queue refuses it
    ("Flt", Floaty(0.01), "fails"),
    ("Fraction", Fraction(1, 100), "short"),
    ("Decimal", Decimal("0.01"), "fails"),
    ("Int", Int(0), "short"),
    ("Float", Float(0.01), "short"),
    ("list", [], "fails"),
]

#: ``block`` values: truthy ones wait, falsy ones do not.
BLOCKS = [("True", True), ("False", False), ("'x'", "x"), ("0", 0), ("None", None)]
DELAY = 0.03  # another thread's supplying put (or freeing get) comes this late

QUEUES = ("Queue", "LifoQueue", "PriorityQueue")
NAN_WHY = (
    "a NaN timeout: CPython's Condition.wait(nan) does not wait, so the queue's loop spins "
    "(forever if nothing comes); plait raises ValueError where it would wait"
)


def _later(fn):
    t = threading.Thread(target=lambda: (time.sleep(DELAY), fn()), daemon=True)
    t.start()
    return t


def _is_nan(v):
    return isinstance(v, float) and v != v


# ---- Queue.get / SimpleQueue.get: timeout x block x state -----------------------


def _get_case(cls, state, bid, block, tid, t, kind):
    def body(m):
        q = getattr(m, cls)()
        if state == "item":
            q.put(7)
        elif state == "supplied":
            _later(lambda: q.put(7))
        return q.get(block=block, timeout=t)

    cid = f"{cls}.get-{state}-block={bid}-timeout={tid}"
    waits = bool(block) and state != "item"
    if cls != "SimpleQueue" and waits and _is_nan(t):
        return Case(cid, body, differs=raises(ValueError), why=NAN_WHY, std_hangs=state == "empty")
    return Case(cid, body)


def _get_cases():
    out = []
    for cls in (*QUEUES, "SimpleQueue"):
        for bid, block in BLOCKS:
            for tid, t, kind in TIMEOUTS:
                out.append(_get_case(cls, "item", bid, block, tid, t, kind))
                if not block or kind != "long":
                    out.append(_get_case(cls, "empty", bid, block, tid, t, kind))
                # One supplied wait per value is enough for the classes
                # that share the code (Lifo/Priority are Queue's).
                if block is True and kind != "short" and cls in ("Queue", "SimpleQueue"):
                    out.append(_get_case(cls, "supplied", bid, block, tid, t, kind))
    return out


# ---- Queue.put / SimpleQueue.put: timeout x block x state -----------------------


def _put_case(cls, state, bid, block, tid, t):
    def body(m):
        if state == "unbounded":
            q = getattr(m, cls)()
        else:
            q = getattr(m, cls)(1)
        if state in ("full", "freed"):
            q.put(1)
        if state == "freed":
            _later(q.get)
        r = q.put(2, block=block, timeout=t)
        return r, q.qsize()

    cid = f"{cls}.put-{state}-block={bid}-timeout={tid}"
    waits = bool(block) and state in ("full", "freed")
    if waits and _is_nan(t):
        return Case(cid, body, differs=raises(ValueError), why=NAN_WHY, std_hangs=state == "full")
    return Case(cid, body)


def _put_cases():
    out = []
    for cls in QUEUES:
        for bid, block in BLOCKS:
            for tid, t, kind in TIMEOUTS:
                for state in ("unbounded", "room"):
                    out.append(_put_case(cls, state, bid, block, tid, t))
                if not block or kind != "long":
                    out.append(_put_case(cls, "full", bid, block, tid, t))
                if block is True and kind != "short" and cls == "Queue":
                    out.append(_put_case(cls, "freed", bid, block, tid, t))
    # SimpleQueue.put ignores block and timeout entirely.
    for bid, block in BLOCKS:
        for tid, t, _ in TIMEOUTS:
            out.append(Case(f"SimpleQueue.put-block={bid}-timeout={tid}", _sq_put(block, t)))
    return out


def _sq_put(block, t):
    def body(m):
        q = m.SimpleQueue()
        q.put(1, block, t)
        q.put(2, block=block, timeout=t)
        return q.qsize()

    return body


# ---- maxsize: construction and every later call that reads it --------------------

MAXSIZES = [
    ("0", 0),
    ("1", 1),
    ("2", 2),
    ("-1", -1),
    ("True", True),
    ("False", False),
    ("1.5", 1.5),
    ("0.5", 0.5),
    ("-0.5", -0.5),
    ("2.0", 2.0),
    ("2**63-1", 2**63 - 1),
    ("2**63", 2**63),
    ("2**64", 2**64),
    ("-2**64", -(2**64)),
    ("2**1100", 2**1100),
    ("inf", INF),
    ("-inf", -INF),
    ("nan", NAN),
    ("None", None),
    ("'x'", "x"),
    ("Str", Str("2")),
    ("Idx", Index(2)),
    ("Flt", Floaty(1.5)),
    ("Int", Int(2)),
    ("Float", Float(1.5)),
    ("Fraction", Fraction(3, 2)),
    ("Decimal", Decimal("1.5")),
    ("bytes", b"2"),
    ("list", []),
]


def _step(fn):
    try:
        r = fn()
    except Exception as e:  # noqa: BLE001 - the class is the outcome
        return type(e).__name__
    return r if not _is_nan(r) else "nan"


def _trace(q):
    """Every call that reads maxsize, in order, with its outcome."""
    out = [_step(lambda: repr(q.maxsize))]
    for i in range(3):
        out += [
            _step(q.full),
            _step(lambda: q.put_nowait(i)),
            _step(lambda: q.put(i, block=False)),
            _step(lambda: q.put(i, timeout=0.001)),
            _step(q.qsize),
            _step(q.empty),
        ]
    out += [_step(q.get_nowait), _step(q.full), _step(lambda: q.put(9, timeout=-1)), _step(q.qsize)]
    return out


def _maxsize_cases():
    out = []
    for cls in QUEUES:
        for mid, v in MAXSIZES:

            def positional(m, cls=cls, v=v):
                return _trace(getattr(m, cls)(v))

            def keyword(m, cls=cls, v=v):
                return _trace(getattr(m, cls)(maxsize=v))

            def assigned(m, cls=cls, v=v):
                q = getattr(m, cls)(1)
                q.put(0)
                q.maxsize = v
                return _trace(q)

            out += [
                Case(f"{cls}({mid})", positional),
                Case(f"{cls}(maxsize={mid})", keyword),
                Case(f"{cls}.maxsize={mid}", assigned),
            ]
    return out


# ---- arguments of the constructors and methods -----------------------------------


def _args_cases():
    calls = {
        "Queue(1, 2)": lambda m: m.Queue(1, 2),
        "Queue(foo=1)": lambda m: m.Queue(foo=1),
        "Queue(maxsize=1, foo=1)": lambda m: m.Queue(maxsize=1, foo=1),
        "LifoQueue(1, 2)": lambda m: m.LifoQueue(1, 2),
        "PriorityQueue(foo=1)": lambda m: m.PriorityQueue(foo=1),
        "SimpleQueue(1)": lambda m: m.SimpleQueue(1),
        "SimpleQueue(maxsize=1)": lambda m: m.SimpleQueue(maxsize=1),
        "Queue.put()": lambda m: m.Queue().put(),
        "Queue.put(item=)": lambda m: (m.Queue().put(item=1), 1)[1],
        "Queue.put(1, True, None, 5)": lambda m: m.Queue().put(1, True, None, 5),
        "Queue.put(1, bogus=1)": lambda m: m.Queue().put(1, bogus=1),
        "Queue.get(True, 0, 1)": lambda m: m.Queue().get(True, 0, 1),
        "Queue.get(bogus=1)": lambda m: m.Queue().get(bogus=1),
        "Queue.get(timeout=0, block=False)": lambda m: m.Queue().get(timeout=0, block=False),
        "Queue.get_nowait(1)": lambda m: m.Queue().get_nowait(1),
        "Queue.put_nowait()": lambda m: m.Queue().put_nowait(),
        "Queue.put_nowait(1, 2)": lambda m: m.Queue().put_nowait(1, 2),
        "Queue.join(1)": lambda m: m.Queue().join(1),
        "Queue.task_done(1)": lambda m: m.Queue().task_done(1),
        "Queue.qsize(1)": lambda m: m.Queue().qsize(1),
        "SimpleQueue.put()": lambda m: m.SimpleQueue().put(),
        "SimpleQueue.put(item=)": lambda m: (m.SimpleQueue().put(item=1), 1)[1],
        "SimpleQueue.put(1, True, None, 5)": lambda m: m.SimpleQueue().put(1, True, None, 5),
        "SimpleQueue.get(True, 0, 1)": lambda m: m.SimpleQueue().get(True, 0, 1),
        "SimpleQueue.get(bogus=1)": lambda m: m.SimpleQueue().get(bogus=1),
        "SimpleQueue.get_nowait(1)": lambda m: m.SimpleQueue().get_nowait(1),
        "SimpleQueue.put_nowait(item=)": lambda m: (m.SimpleQueue().put_nowait(item=1), 1)[1],
        "Queue[int]": lambda m: m.Queue[int].__args__,
        "SimpleQueue[int]": lambda m: m.SimpleQueue[int].__args__,
        "LifoQueue order": lambda m: _drain(m.LifoQueue(), [3, 1, 2]),
        "PriorityQueue order": lambda m: _drain(m.PriorityQueue(), [3, 1, 2, 1]),
    }
    return [Case(cid, body) for cid, body in calls.items()] + [
        Case(
            "PriorityQueue.put(uncomparable)",
            _priority_mixed,
            differs=ok(("TypeError", 1, 1, 1, "Empty")),
            why="a put whose comparison fails leaves a plait PriorityQueue as it was; CPython's heapq "
            "keeps the item (uncounted by unfinished_tasks), so later gets compare it and fail",
        )
    ]


def _priority_mixed(m):
    q = m.PriorityQueue()
    q.put(1)
    return _step(lambda: q.put("x")), q.qsize(), q.unfinished_tasks, _step(q.get_nowait), _step(q.get_nowait)


def _drain(q, items):
    for i in items:
        q.put(i)
    return [q.get_nowait() for _ in items]


# ---- task_done, join, unfinished_tasks -------------------------------------------


def _tasks_cases():
    def done_too_often(m):
        q = m.Queue()
        q.put(1)
        q.get()
        q.task_done()
        q.task_done()

    def reset_then_join(m):
        q = m.Queue()
        for i in range(3):
            q.put(i)
        q.unfinished_tasks = 0
        q.join()
        return q.unfinished_tasks, q.qsize()

    def reset_releases_waiting_join(m):
        q = m.Queue()
        q.put(1)
        out = []
        t = threading.Thread(target=lambda: out.append(q.join()))
        t.start()
        time.sleep(DELAY)
        with q.mutex:
            q.queue.clear()
            q.all_tasks_done.notify_all()
            q.unfinished_tasks = 0
        t.join(5)
        return out, q.qsize(), q.unfinished_tasks

    def assigned(value):
        def body(m):
            q = m.Queue()
            q.put(1)
            q.unfinished_tasks = value
            r = [q.unfinished_tasks]
            r.append(_step(q.task_done))
            r.append(q.unfinished_tasks)
            q.put(2)
            r.append(q.unfinished_tasks)
            return r

        return body

    def negative_then_put_join(m):
        q = m.Queue()
        q.unfinished_tasks = -1
        q.put(1)
        q.join()
        return q.unfinished_tasks

    def in_subclass_init(m):
        class Q(m.Queue):
            def __init__(self):
                super().__init__()
                self.unfinished_tasks = 2

        q = Q()
        q.task_done()
        return q.unfinished_tasks

    cases = [
        Case("task_done-on-fresh", lambda m: m.Queue().task_done()),
        Case("task_done-too-often", done_too_often),
        Case("task_done-after-put", lambda m: (lambda q: (q.put(1), q.task_done(), q.join()))(m.Queue())),
        Case("join-on-fresh", lambda m: m.Queue().join()),
        Case("unfinished_tasks=0-then-join", reset_then_join),
        Case("unfinished_tasks-reset-idiom-releases-join", reset_releases_waiting_join),
        Case("unfinished_tasks=-1-put-join", negative_then_put_join),
        Case("unfinished_tasks-in-subclass-init", in_subclass_init),
    ]
    # None and 'x' fail in CPython too (at the put's `+= 1`), here at once.
    for vid, v in [("0", 0), ("1", 1), ("5", 5), ("-1", -1), ("True", True), ("Int", Int(3)), ("None", None), ("'x'", "x")]:
        cases.append(Case(f"unfinished_tasks={vid}", assigned(v)))
    for vid, v in [("1.5", 1.5), ("2**64", 2**64)]:
        cases.append(
            Case(
                f"unfinished_tasks={vid}",
                assigned(v),
                differs=raises(TypeError) if vid != "2**64" else raises(OverflowError),
                why="plait counts unfinished tasks in a machine integer: it must be an int that fits",
            )
        )
    return cases


# ---- the object: attributes, copies, subclasses -----------------------------------


class _Peek:
    """A subclass that reaches into CPython's internals."""

    def peek(self):
        with self.mutex:
            return self.queue[0] if self.queue else None

    def put_front(self, item):
        with self.not_full:
            self.queue.appendleft(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()


def _object_cases():
    def extra_attr(m):
        q = m.Queue()
        q.extra = 1
        q.maxsize = 3
        return q.extra, q.maxsize, vars(q).get("extra")

    def copied(m):
        q = m.Queue(2)
        q.put(1)
        q.tag = "t"
        c = copy.copy(q)
        c.put(2)
        return type(c) is type(q), q.qsize(), c.qsize(), c.tag, c.maxsize, _step(lambda: q.put(3, block=False))

    def copied_then_get(m):
        q = m.Queue()
        q.put(1)
        c = copy.copy(q)
        return c.get_nowait(), _step(q.get_nowait), q.unfinished_tasks

    def copied_subclass(m):
        class Q(m.Queue):
            pass

        q = Q()
        q.put(1)
        c = copy.copy(q)
        return type(c) is Q, c.get_nowait()

    def weak(m):
        q = m.Queue()
        r = weakref.ref(q)
        return r() is q

    def internals_view(cls, items):
        def body(m):
            q = getattr(m, cls)()
            for i in items:
                q.put(i)
            v = q.queue
            return (list(v), len(v), bool(v), v[0], v[-1], 2 in v, 9 in v, v.count(1), list(reversed(v)))

        return body

    def clear_keeps_counter(m):
        q = m.Queue()
        q.put(1)
        q.put(2)
        q.queue.clear()
        return q.qsize(), q.empty(), q.unfinished_tasks, _step(q.get_nowait)

    def mutex_usable(m):
        q = m.Queue()
        with q.mutex:
            locked = q.mutex.locked()
        with q.not_empty:
            q.not_empty.notify()
        with q.not_full:
            q.not_full.notify_all()
        with q.all_tasks_done:
            q.all_tasks_done.notify_all()
        return locked, q.mutex is q.mutex, q.not_empty is q.not_empty

    def notify_unheld(m):
        m.Queue().not_empty.notify()

    def peek_subclass(m):
        class Q(_Peek, m.Queue):
            pass

        q = Q()
        first = q.peek()
        q.put(1)
        q.put(2)
        q.put_front(0)
        return first, q.peek(), [q.get(), q.get(), q.get()], q.unfinished_tasks

    def hooks_subclass(m):
        class Q(m.Queue):
            def _put(self, item):
                self.queue.append(item * 10)

        q = Q(2)
        q.put(1)
        q.put(2)
        return q.full(), _step(lambda: q.put(3, block=False)), q.get(), q.unfinished_tasks, q.maxsize

    def hooks_subclass_odd_maxsize(m):
        class Q(m.Queue):
            def _qsize(self):
                return len(self.queue)

        q = Q(1.5)
        return _trace(q)

    def hooks_subclass_none_maxsize(m):
        class Q(m.LifoQueue):
            def _get(self):
                return self.queue.pop()

        return _trace(Q(None))

    def subclass_module_name(m):
        # Naming the *module* queue in a method is not reaching into the
        # internals: the subclass stays fast (same outcome either way).
        import queue

        class Q(m.Queue):
            def get_or_none(self):
                try:
                    return self.get_nowait()
                except queue.Empty:
                    return None

        q = Q()
        return q.get_or_none(), (q.put(1), q.get_or_none())[1]

    cases = [
        Case("attr-assign", extra_attr),
        Case("copy.copy-shares", copied),
        Case("copy.copy-get", copied_then_get),
        Case("copy.copy-subclass", copied_subclass),
        Case("copy.deepcopy", lambda m: copy.deepcopy(m.Queue())),
        Case("pickle", lambda m: pickle.dumps(m.Queue())),
        Case("copy.copy-SimpleQueue", lambda m: copy.copy(m.SimpleQueue())),
        Case("pickle-SimpleQueue", lambda m: pickle.dumps(m.SimpleQueue())),
        Case("SimpleQueue-attr-assign", lambda m: setattr(m.SimpleQueue(), "x", 1)),
        Case("weakref", weak),
        Case("weakref-SimpleQueue", lambda m: weakref.ref(m.SimpleQueue()) is not None),
        Case("queue-view-Queue", internals_view("Queue", [1, 2, 3])),
        Case("queue-view-LifoQueue", internals_view("LifoQueue", [1, 2, 3])),
        Case("queue-view-PriorityQueue", internals_view("PriorityQueue", [3, 1, 2, 1])),
        Case("queue-view-empty-index", lambda m: m.Queue().queue[0]),
        Case("queue-clear-keeps-unfinished", clear_keeps_counter),
        Case("mutex-and-conditions", mutex_usable),
        Case("notify-unheld", notify_unheld),
        Case("subclass-peek-put_front", peek_subclass),
        Case("subclass-hooks", hooks_subclass),
        Case("subclass-hooks-maxsize-1.5", hooks_subclass_odd_maxsize),
        Case("subclass-hooks-maxsize-None", hooks_subclass_none_maxsize),
        Case("subclass-module-named-queue", subclass_module_name),
        Case("is_shutdown", lambda m: m.Queue().is_shutdown),
        Case("hasattr-shutdown", lambda m: hasattr(m.Queue(), "shutdown")),
    ]
    return cases


# ---- shutdown (3.13; an AttributeError on both before) ------------------------------


def _shutdown_cases():
    def run(*steps, maxsize=0, items=(), cls="Queue"):
        def body(m):
            q = getattr(m, cls)(maxsize)
            if not hasattr(q, "shutdown"):  # before 3.13, on both
                return "no shutdown"
            for i in items:
                q.put(i)
            return [_step(lambda s=s: s(q)) for s in steps]

        return body

    sd = lambda q: q.shutdown()  # noqa: E731
    sdi = lambda q: q.shutdown(immediate=True)  # noqa: E731
    cases = {
        "put": run(sd, lambda q: q.put(1, timeout=5), lambda q: q.put_nowait(1), lambda q: q.is_shutdown),
        "get-empty": run(sd, lambda q: q.get(timeout=5), lambda q: q.get(block=False), lambda q: q.get_nowait()),
        "get-drains-first": run(sd, lambda q: q.get(timeout=5), lambda q: q.get(timeout=5), items=[1]),
        "immediate": run(sdi, lambda q: q.get_nowait(), lambda q: q.qsize(), lambda q: q.unfinished_tasks, items=[1, 2]),
        "immediate-join": run(sdi, lambda q: q.unfinished_tasks, lambda q: q.join(), items=[1, 2]),
        "immediate-taken-item": run(
            lambda q: q.get_nowait(), sdi, lambda q: q.unfinished_tasks, lambda q: q.task_done(), lambda q: q.join(), items=[1, 2]
        ),
        "immediate='x'": run(lambda q: q.shutdown("x"), lambda q: q.get_nowait(), items=[1]),
        "immediate=0": run(lambda q: q.shutdown(0), lambda q: q.get_nowait(), items=[1]),
        "twice": run(sd, sdi, lambda q: q.is_shutdown),
        "bad-args": run(lambda q: q.shutdown(True, 1), lambda q: q.shutdown(bogus=1)),
        "then-bad-timeout-get": run(sd, lambda q: q.get(timeout="x"), lambda q: q.get(timeout=-1)),
        "then-bad-timeout-put": run(sd, lambda q: q.put(1, timeout="x"), lambda q: q.put(1, timeout=NAN), maxsize=1),
        "then-None-maxsize-put": run(sd, lambda q: q.put(1, timeout=5), lambda q: q.full(), maxsize=None),
        "lifo-immediate": run(sdi, lambda q: q.get_nowait(), items=[1, 2], cls="LifoQueue"),
        "priority-immediate": run(sdi, lambda q: q.get_nowait(), items=[2, 1], cls="PriorityQueue"),
        "full-put-blocked": run(sd, lambda q: q.put(2, timeout=0.01), maxsize=1, items=[1]),
    }

    def wakes_getter(m):
        q = m.Queue()
        out = []
        t = threading.Thread(target=lambda: out.append(_step(lambda: q.get(timeout=5))))
        t.start()
        time.sleep(DELAY)
        q.shutdown()
        t.join(5)
        return out

    def wakes_putter(m):
        q = m.Queue(1)
        q.put(1)
        out = []
        t = threading.Thread(target=lambda: out.append(_step(lambda: q.put(2, timeout=5))))
        t.start()
        time.sleep(DELAY)
        q.shutdown()
        t.join(5)
        return out

    out = [Case(f"shutdown-{cid}", body) for cid, body in cases.items()]
    if sys.version_info >= (3, 13):
        out += [Case("shutdown-wakes-getter", wakes_getter), Case("shutdown-wakes-putter", wakes_putter)]
    return out


CASES = _get_cases() + _put_cases() + _maxsize_cases() + _args_cases() + _tasks_cases() + _object_cases() + _shutdown_cases()


@params(CASES)
def test_queue_edge(case):
    check(case)


def test_table_is_broad():
    # The crossing above, not a hand-picked list.
    assert len(CASES) > 1500
