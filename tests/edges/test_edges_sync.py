"""The sync primitives at the edges: odd arguments, odd timeouts, and the
objects themselves (attributes, copies, weak references, subclasses), each
case run on ``threading`` and on ``plait.sync`` in one process (see
``_table.py``).

The cases are generated: every call's arguments crossed with odd values, in
each state that matters (CPython often reads a timeout only when it has to
wait: an Event already set returns True without looking at it).  A case
that must wait uses only values that cannot wait long (no ``True``, ``1.5``
or None where the wait is real).
"""

from __future__ import annotations

import copy
import decimal
import fractions
import pickle
import sys
import threading
import weakref

import pytest

from _bounds import wait_until
from _table import PLAIT, STD, Case, Floaty, Index, Str, check, ok, params, raises

INF = float("inf")
NAN = float("nan")


#: Values that cannot make a wait long: errors, non-positive, or tiny.
QUICK = {
    "x": "x",
    "strsub": Str("x"),
    "bytes": b"x",
    "list": [],
    "object": object(),
    "-1": -1,
    "-1.0": -1.0,
    "-1.5": -1.5,
    "0": 0,
    "0.0": 0.0,
    "-0.0": -0.0,
    "False": False,
    "2**63": 2**63,
    "2**64": 2**64,
    "-2**64": -(2**64),
    "10**400": 10**400,
    "1e300": 1e300,
    "-1e300": -1e300,
    "9.3e9": 9.3e9,
    "inf": INF,
    "-inf": -INF,
    "index0": Index(0),
    "index1": Index(1),
    "floaty": Floaty(),
    "fraction": fractions.Fraction(1, 100),
    "fraction0": fractions.Fraction(0),
    "decimal": decimal.Decimal("0.01"),
    "0.01": 0.01,
    "intsub": type("IntSub", (int,), {})(0),
    "floatsub": type("FloatSub", (float,), {})(0.01),
}
#: Any value: for states where nothing waits.
ANY = {**QUICK, "None": None, "True": True, "1": 1, "1.5": 1.5, "1e9": 1e9, "nan": NAN}

NAN_WHY = (
    "a NaN timeout raises ValueError: CPython's pure-Python waits read NaN as "
    "0 (`timeout > 0` is false) and then return at once or spin forever"
)


def _nan(id, body, std_hangs):
    return Case(id, body, differs=raises(ValueError), why=NAN_WHY, std_hangs=std_hangs)


def _held(m, cls="RLock"):
    lock = getattr(m, cls)()
    lock.acquire()
    return lock


# --- Lock and RLock -------------------------------------------------------


def _lock_cases():
    cases = []
    for cls in ("Lock", "RLock"):
        cases += [
            Case(f"{cls}()-args", lambda m, c=cls: type(getattr(m, c)(1)).__name__ and None),
            Case(f"{cls}()-kwargs", lambda m, c=cls: getattr(m, c)(x=1) and None),
        ]
        for k, v in ANY.items():
            if k == "nan":
                continue
            # Free: nothing waits, but CPython still reads every argument.
            cases += [
                Case(f"{cls}.acquire({k})", lambda m, c=cls, v=v: getattr(m, c)().acquire(v)),
                Case(f"{cls}.acquire(blocking={k})", lambda m, c=cls, v=v: getattr(m, c)().acquire(blocking=v)),
                Case(f"{cls}.acquire(timeout={k})", lambda m, c=cls, v=v: getattr(m, c)().acquire(timeout=v)),
                Case(f"{cls}.acquire(False,{k})", lambda m, c=cls, v=v: getattr(m, c)().acquire(False, v)),
            ]
        cases.append(Case(f"{cls}.acquire(timeout=nan)", lambda m, c=cls: getattr(m, c)().acquire(timeout=NAN)))
        for k, v in QUICK.items():
            if k in ("-1", "-1.0", "index1"):
                continue  # -1 waits until released, Index(1) a second
            # Held by another thread: the acquire must wait (briefly).
            cases.append(Case(f"{cls}.acquire(True,{k})-held", lambda m, c=cls, v=v: _acquire_held(m, c, v)))
    return cases


def _acquire_held(m, cls, timeout):
    lock = getattr(m, cls)()
    taken = threading.Event()
    done = threading.Event()

    def hold():
        lock.acquire()
        taken.set()
        done.wait(10)
        lock.release()

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert taken.wait(10)
        return lock.acquire(True, timeout)
    finally:
        done.set()
        t.join(10)


# --- Semaphore and BoundedSemaphore ---------------------------------------


def _num(v):
    """A count as compared: floats rounded (plait adds in another order)
    and NaN as a string (NaN != NaN)."""
    if isinstance(v, float):
        return "nan" if v != v else round(v, 9)
    return v


def _sem_state(s):
    return (_num(s._value), [s.acquire(False) for _ in range(3)], _num(s._value))


BIG_WHY = (
    "CPython before 3.12 wakes waiters with `for i in range(n)`, so a "
    "release of 2**63 permits loops 2**63 times; plait adds them at once"
)


def _big(id, body, expected):
    if sys.version_info >= (3, 12):
        return Case(id, body)
    return Case(id, body, differs=ok(expected), why=BIG_WHY, std_hangs=True)


def _sem_cases():
    cases = []
    for cls in ("Semaphore", "BoundedSemaphore"):
        for k, v in ANY.items():
            cases.append(Case(f"{cls}({k})", lambda m, c=cls, v=v: _sem_state(getattr(m, c)(v))))
            # A count of 1: nothing waits, whatever blocking and timeout say.
            cases += [
                Case(f"{cls}.acquire({k})", lambda m, c=cls, v=v: getattr(m, c)(1).acquire(v)),
                Case(f"{cls}.acquire(timeout={k})", lambda m, c=cls, v=v: getattr(m, c)(1).acquire(timeout=v)),
                Case(f"{cls}.acquire({k},1)", lambda m, c=cls, v=v: getattr(m, c)(1).acquire(v, 1)),
                Case(f"{cls}.acquire({k},None)-empty", lambda m, c=cls, v=v: _empty(m, c).acquire(v, None)
                     if not v else "skip"),
            ]
            # release(n) on a semaphore with room for it.
            body = lambda m, c=cls, v=v: _release(m, c, v)  # noqa: E731
            if cls == "Semaphore" and type(v) is int and v >= 2**63:
                cases.append(_big(f"{cls}.release({k})", body, v))
            else:
                cases.append(Case(f"{cls}.release({k})", body))
        for k, v in QUICK.items():
            # A count of 0: the acquire waits (briefly), CPython reads the timeout.
            cases.append(Case(f"{cls}.acquire(timeout={k})-empty", lambda m, c=cls, v=v: _empty(m, c).acquire(timeout=v)))
            cases.append(Case(f"{cls}.acquire({k},0.01)-empty", lambda m, c=cls, v=v: _empty(m, c).acquire(v, 0.01)))
        cases.append(_nan(f"{cls}.acquire(timeout=nan)-empty", lambda m, c=cls: _empty(m, c).acquire(timeout=NAN), True))
        cases += [
            Case(f"{cls}-2**63-release", lambda m, c=cls: _release_big(m, c, 2**63)),
            Case(f"{cls}-1.5-release", lambda m, c=cls: _release_big(m, c, 1.5)),
            Case(f"{cls}(2.0)-whole-float", lambda m, c=cls: _sem_state(getattr(m, c)(2.0))),
            Case(f"{cls}(fraction2)", lambda m, c=cls: _sem_state(getattr(m, c)(fractions.Fraction(2)))),
            Case(f"{cls}.release(1.5)-then", lambda m, c=cls: _release_then(m, c, 1.5)),
            Case(f"{cls}.release(2.0)-then", lambda m, c=cls: _release_then(m, c, 2.0)),
        ]
        then = lambda m, c=cls: _release_then(m, c, 2**64)  # noqa: E731
        if cls == "Semaphore":
            cases.append(_big(f"{cls}.release(2**64)-then", then, (2**64, [True] * 3, 2**64 - 3)))
        else:
            cases.append(Case(f"{cls}.release(2**64)-then", then))
    cases.append(Case("BoundedSemaphore-too-many", lambda m: m.BoundedSemaphore(1).release()))
    cases.append(Case("BoundedSemaphore(1.5)-bound", lambda m: _bounded_float(m)))
    return cases


def _empty(m, cls):
    s = getattr(m, cls)(1)
    s.acquire()
    return s


def _release(m, cls, n):
    s = getattr(m, cls)(3)
    for _ in range(3):
        s.acquire()
    s.release(n)
    return _num(s._value)


def _release_big(m, cls, initial):
    s = getattr(m, cls)(initial)
    s.acquire()
    s.acquire()
    s.release()
    return _num(s._value)


def _release_then(m, cls, n):
    s = getattr(m, cls)(0) if cls == "Semaphore" else _drained(m, cls, 10**30)
    s.release(n)
    return _sem_state(s)


def _drained(m, cls, value):
    return getattr(m, cls)(value)


def _bounded_float(m):
    s = m.BoundedSemaphore(1.5)
    out = [s.acquire(False), s.acquire(False), s._value]
    s.release()
    out.append(s._value)
    try:
        s.release()
        s.release()
    except ValueError:
        out.append("too many")
    out.append(s._value)
    return out


# --- Event ----------------------------------------------------------------


def _event_cases():
    cases = [Case("Event(1)", lambda m: m.Event(1)), Case("Event(x=1)", lambda m: m.Event(x=1))]
    for k, v in ANY.items():
        cases.append(Case(f"Event.wait({k})-set", lambda m, v=v: _set_event(m).wait(v)))
    for k, v in QUICK.items():
        cases.append(Case(f"Event.wait({k})-unset", lambda m, v=v: m.Event().wait(v)))
        cases.append(Case(f"Event.wait(timeout={k})-unset", lambda m, v=v: m.Event().wait(timeout=v)))
    cases.append(_nan("Event.wait(nan)-unset", lambda m: m.Event().wait(NAN), False))
    return cases


def _set_event(m):
    e = m.Event()
    e.set()
    return e


# --- Condition ------------------------------------------------------------


class LockLike:
    """A lock with only acquire/release (CPython's fallbacks are used)."""

    def __init__(self):
        self._lock = threading.Lock()

    def acquire(self, *a):
        return self._lock.acquire(*a)

    def release(self):
        self._lock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *a):
        self.release()


def _cond_cases():
    cases = []
    for k, v in {**ANY, "lock-like": LockLike()}.items():
        cases.append(Case(f"Condition({k})", lambda m, v=v: type(m.Condition(v)).__name__))
    for lk in ("Lock", "RLock"):
        cases.append(Case(f"Condition({lk})", lambda m, lk=lk: m.Condition(getattr(m, lk)()).acquire(False)))
    for k, v in ANY.items():
        cases += [
            Case(f"Condition.wait({k})-unowned", lambda m, v=v: m.Condition().wait(v)),
            Case(f"Condition.wait_for({k})-unowned", lambda m, v=v: m.Condition().wait_for(lambda: False, v)),
            Case(f"Condition.wait_for({k})-true", lambda m, v=v: _owned(m).wait_for(lambda: 7, v)),
            Case(f"Condition.notify({k})-unowned", lambda m, v=v: m.Condition().notify(v)),
            Case(f"Condition.notify({k})-nobody", lambda m, v=v: _owned(m).notify(v)),
        ]
    for k, v in QUICK.items():
        cases += [
            Case(f"Condition.wait({k})", lambda m, v=v: _owned(m).wait(v)),
            Case(f"Condition.wait_for({k})", lambda m, v=v: _wait_for_calls(m, v)),
            Case(f"Condition.wait({k})-lock-like", lambda m, v=v: _owned(m, LockLike()).wait(v)),
        ]
    for k, v in {**QUICK, "None": None, "1": 1, "2": 2, "True": True, "1.5": 1.5, "10": 10}.items():
        cases.append(Case(f"Condition.notify({k})-3-waiting", lambda m, v=v: _notify_waiting(m, v)))
    cases += [
        _nan("Condition.wait(nan)", lambda m: _owned(m).wait(NAN), False),
        _nan("Condition.wait_for(nan)", lambda m: _owned(m).wait_for(lambda: False, NAN), True),
        Case("Condition.notify_all-unowned", lambda m: m.Condition().notify_all()),
    ]
    return cases


def _owned(m, lock=None):
    c = m.Condition(lock)
    c.acquire()
    return c


def _wait_for_calls(m, timeout):
    calls = []

    def pred():
        calls.append(1)
        return False

    try:
        return _owned(m).wait_for(pred, timeout), len(calls)
    except Exception as e:
        return type(e).__name__, len(calls)


def _waiting(m, c):
    return len(c._waiters) if m is STD else len(c._waiter_idents)


def _notify_waiting(m, n):
    """Three threads wait; ``notify(n)`` wakes how many?"""
    c = m.Condition()
    results = []

    def waiter():
        with c:
            results.append(c.wait(10))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()

    def all_waiting():
        with c:
            return _waiting(m, c) == 3

    wait_until(all_waiting, "the three waiters never waited")
    try:
        with c:
            c.notify(n)
            return 3 - _waiting(m, c)
    finally:
        with c:
            c.notify_all()
        for t in threads:
            t.join(10)


# --- Barrier --------------------------------------------------------------


def _barrier_state(b):
    return (b.parties, b.n_waiting, b.broken)


def _barrier_cases():
    cases = []
    for k, v in {**ANY, "1": 1, "2.0": 2.0, "fraction1": fractions.Fraction(1)}.items():
        cases.append(Case(f"Barrier({k})", lambda m, v=v: _barrier_state(m.Barrier(v))))
        cases.append(Case(f"Barrier({k}).wait(timeout=0.01)", lambda m, v=v: _barrier_wait(m.Barrier(v), 0.01)))
        # The last party never reads the timeout.
        cases.append(Case(f"Barrier(1,timeout={k}).wait()", lambda m, v=v: m.Barrier(1, timeout=v).wait()))
        cases.append(Case(f"Barrier(1).wait({k})", lambda m, v=v: m.Barrier(1).wait(v)))
    for k, v in QUICK.items():
        cases.append(Case(f"Barrier(2,timeout={k}).wait()", lambda m, v=v: _barrier_wait(m.Barrier(2, timeout=v))))
        cases.append(Case(f"Barrier(2).wait({k})", lambda m, v=v: _barrier_wait(m.Barrier(2), v)))
    for k, v in {"None": None, "0": 0, "empty": "", "5": 5, "x": "x", "callable": lambda: None}.items():
        cases.append(Case(f"Barrier(1,action={k}).wait()", lambda m, v=v: _barrier_wait(m.Barrier(1, action=v))))
    cases += [
        _nan("Barrier(2,timeout=nan).wait()", lambda m: m.Barrier(2, timeout=NAN).wait(), True),
        _nan("Barrier(2).wait(nan)", lambda m: m.Barrier(2).wait(NAN), True),
        Case("Barrier()", lambda m: m.Barrier()),
    ]
    return cases


def _barrier_wait(b, *timeout):
    try:
        return "ok", b.wait(*timeout), _barrier_state(b)
    except Exception as e:
        return type(e).__name__, _barrier_state(b)


# --- Timer (constructor only: its function runs in another thread) -------


def _timer_cases():
    cases = []
    for k, v in ANY.items():
        cases.append(Case(f"Timer({k},f)", lambda m, v=v: type(m.Timer(v, print)).__name__))
        cases.append(Case(f"Timer(0,{k})", lambda m, v=v: type(m.Timer(0, v)).__name__))
        cases.append(Case(f"Timer(0,f,args={k})", lambda m, v=v: type(m.Timer(0, print, args=v)).__name__))
    cases += [
        Case("Timer()", lambda m: m.Timer()),
        Case("Timer(0)", lambda m: m.Timer(0)),
        Case("Timer.cancel-unstarted", lambda m: m.Timer(0, print).cancel()),
        Case("Timer.join-unstarted", lambda m: m.Timer(0, print).join()),
        Case("Timer.-inf-runs", lambda m: _timer_runs(m, -INF)),
        Case("Timer.join(-1)-unstarted", lambda m: m.Timer(0, print).join(-1)),
        Case("Timer.0-runs", lambda m: _timer_runs(m, 0)),
    ]
    return cases


def _timer_join(m, timeout, done):
    t = m.Timer(0 if done else 5, lambda: None)
    t.start()
    try:
        if done:
            t.join(10)
        return t.join(timeout), t.is_alive()
    finally:
        t.cancel()


def _timer_join_cases():
    cases = []
    for k, v in QUICK.items():
        if k in ("floaty", "fraction", "decimal") or (isinstance(v, (int, float)) and 0 < v < 1):
            continue  # a pending join waits them out (or Floaty: max() keeps it, a TypeError)
        cases.append(Case(f"Timer.join({k})-done", lambda m, v=v: _timer_join(m, v, True)))
        cases.append(Case(f"Timer.join({k})-pending", lambda m, v=v: _timer_join(m, v, False)))
    return cases


def _timer_runs(m, interval):
    ran = threading.Event()
    t = m.Timer(interval, ran.set)
    t.start()
    t.join(10)
    return ran.is_set()


# --- The objects: attributes, copies, weak references, subclasses ---------

OBJECTS = {
    "Event": lambda m: m.Event(),
    "Condition": lambda m: m.Condition(),
    "Semaphore": lambda m: m.Semaphore(2),
    "BoundedSemaphore": lambda m: m.BoundedSemaphore(2),
    "Barrier": lambda m: m.Barrier(3),
    "Timer": lambda m: m.Timer(1, print),
}


def _attrs(obj):
    obj.result = 42
    obj.__dict__["other"] = 1
    return obj.result, obj.other, "result" in vars(obj)


def _copy_kept(m, make):
    o = make(m)
    o.result = [1]
    c = copy.copy(o)
    return type(c) is type(o), c is not o, c.result is o.result


def _object_cases():
    cases = []
    for name, make in OBJECTS.items():
        cases += [
            Case(f"{name}-attribute", lambda m, f=make: _attrs(f(m))),
            Case(f"{name}-weakref", lambda m, f=make: (lambda o: weakref.ref(o)() is o)(f(m))),
            Case(f"{name}-copy", lambda m, f=make: _copy_kept(m, f)),
            Case(f"{name}-deepcopy", lambda m, f=make: copy.deepcopy(f(m)) and None),
            Case(f"{name}-pickle", lambda m, f=make: pickle.dumps(f(m)) and None),
        ]
    for name in ("Lock", "RLock"):
        cases += [
            Case(f"{name}-attribute", lambda m, n=name: setattr(getattr(m, n)(), "x", 1)),
            Case(f"{name}-copy", lambda m, n=name: copy.copy(getattr(m, n)()) and None),
            Case(f"{name}-pickle", lambda m, n=name: pickle.dumps(getattr(m, n)()) and None),
            Case(f"{name}-weakref", lambda m, n=name: (lambda o: weakref.ref(o)() is o)(getattr(m, n)())),
        ]
    cases += [
        Case("Event-copy-state", lambda m: _event_copy(m)),
        Case("Semaphore-copy-state", lambda m: _sem_copy(m, "Semaphore")),
        Case("BoundedSemaphore-copy-state", lambda m: _sem_copy(m, "BoundedSemaphore")),
        Case("Condition-copy-shares", lambda m: _cond_copy(m)),
        Case("Barrier-copy-state", lambda m: _barrier_copy(m)),
        Case("Event._flag", lambda m: (lambda e: (e._flag, e.set(), e._flag))(m.Event())),
        Case("Semaphore._value", lambda m: (lambda s: (s._value, s.acquire(), s._value))(m.Semaphore(3))),
        Case("BoundedSemaphore._initial_value", lambda m: m.BoundedSemaphore(3)._initial_value),
        Case("Semaphore._value=", lambda m: _assign_value(m, "Semaphore", 2)),
        Case("Semaphore._value=1.5", lambda m: _assign_value(m, "Semaphore", 1.5)),
        Case("BoundedSemaphore._value=", lambda m: _assign_value(m, "BoundedSemaphore", 1)),
        Case("Event._flag=", lambda m: _assign_flag(m)),
        Case("Condition._lock", lambda m: (lambda lk: m.Condition(lk)._lock is lk)(m.Lock())),
        Case("BoundedSemaphore-is-Semaphore", lambda m: issubclass(m.BoundedSemaphore, m.Semaphore)),
    ]
    cases += [Case(f"subclass-{n}", body) for n, body in _subclasses().items()]
    return cases


def _assign_value(m, cls, value):
    s = getattr(m, cls)(2)
    s.acquire()
    s.acquire()
    s._value = value
    out = [_num(s._value), s.acquire(False), s.acquire(False), s.acquire(False), _num(s._value)]
    s.release()
    try:
        s.release()
        s.release()
    except ValueError:
        out.append("bounded")
    return out


def _assign_flag(m):
    e = m.Event()
    e._flag = True
    out = [e.is_set(), e.wait(0)]
    e._flag = False
    return out + [e.is_set(), e.wait(0)]


def _event_copy(m):
    e = m.Event()
    c = copy.copy(e)
    c.set()
    d = copy.copy(c)
    return e.is_set(), c.is_set(), d.is_set()


def _sem_copy(m, cls):
    s = getattr(m, cls)(3)
    s.acquire()
    c = copy.copy(s)
    c.acquire()
    out = [s._value, c._value]
    c.release()
    c.release()
    try:
        c.release()
    except ValueError:
        out.append("bounded")
    return out


def _cond_copy(m):
    lock = m.RLock()
    c = m.Condition(lock)
    d = copy.copy(c)
    with d:
        owned = c._is_owned()
    return d._lock is lock, owned


def _barrier_copy(m):
    b = m.Barrier(2, timeout=5)
    c = copy.copy(b)
    b.abort()
    d = copy.copy(b)
    return _barrier_state(c), _barrier_state(d), c.wait(0) if False else c.n_waiting


def _subclasses():
    def event(m):
        class E(m.Event):
            def __init__(self, result):
                super().__init__()
                self.result = result

            def fire(self):
                self.set()
                return self.result

        e = E(5)
        return type(e).__name__, e.fire(), e.is_set(), isinstance(e, m.Event)

    def event_kw(m):
        class E(m.Event):
            def __init__(self, *, tag):
                super().__init__()
                self.tag = tag

        return E(tag="t").tag

    def semaphore(m):
        class Pool(m.Semaphore):
            def __init__(self, size, label):
                super().__init__(size)
                self.label = label

        p = Pool(2, "db")
        return p.label, p.acquire(False), p.acquire(False), p.acquire(False), p._value

    def bounded(m):
        class B(m.BoundedSemaphore):
            def __init__(self):
                super().__init__(1)

        b = B()
        b.acquire()
        b.release()
        try:
            b.release()
        except ValueError:
            return "bounded", isinstance(b, m.Semaphore)

    def condition(m):
        class C(m.Condition):
            def __init__(self):
                super().__init__(m.Lock())
                self.items = []

            def put(self, x):
                with self:
                    self.items.append(x)
                    self.notify()

        c = C()
        c.put(1)
        with c:
            return c.wait_for(lambda: c.items, 0.01)

    def barrier(m):
        class B(m.Barrier):
            def __init__(self):
                super().__init__(1, action=self.act)
                self.acted = 0

            def act(self):
                self.acted += 1

        b = B()
        return b.wait(), b.acted, b.parties

    def timer(m):
        class T(m.Timer):
            def __init__(self, flag):
                super().__init__(0, flag.set)
                self.extra = 1

        flag = threading.Event()
        t = T(flag)
        t.start()
        t.join(10)
        return flag.is_set(), t.extra

    def slots(m):
        class E(m.Event):
            __slots__ = ("a",)

        e = E()
        e.a = 1
        return e.a, e.is_set()

    def repr_sub(m):
        class E(m.Event):
            pass

        return repr(E()).split(" at ")[0].rsplit(".", 1)[-1]

    return {
        "event": event,
        "event-kw": event_kw,
        "semaphore": semaphore,
        "bounded": bounded,
        "condition": condition,
        "barrier": barrier,
        "timer": timer,
        "slots": slots,
        "repr": repr_sub,
    }


CASES = _lock_cases() + _sem_cases() + _event_cases() + _cond_cases() + _barrier_cases() + _timer_cases() + _timer_join_cases() + _object_cases()


@params(CASES)
def test_edge(case):
    check(case)


def test_rlock_arguments_warn_as_cpython():
    """3.13 warns about RLock arguments (DeprecationWarning); earlier ones
    ignore them silently: plait does what the running Python does."""
    import warnings

    def warned(cls):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cls(1)
        return [x.category for x in w]

    assert warned(PLAIT.RLock) == warned(STD.RLock)


def test_semaphore_exotic_count_wakes_waiters():
    """A release that makes the count a fraction wakes the threads waiting
    (the count never reaches 0 again: CPython's acquire then never blocks)."""
    if sys.version_info < (3, 12):
        pytest.skip("release(1.5) is a TypeError before 3.12")
    s = PLAIT.Semaphore(0)
    got = []
    threads = [threading.Thread(target=lambda: got.append(s.acquire(timeout=10))) for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: len(s._waiters) == 2, "the two acquirers never waited")
    s.release(1.5)
    for t in threads:
        t.join(10)
    assert got == [True, True]
    assert [s.acquire(False) for _ in range(3)] == [True] * 3
    assert s._value == 1.5 - 5


@pytest.mark.parametrize("what", ["_value", "_flag"])
def test_private_assignment_wakes_waiters(what):
    """Assigning ``Semaphore._value`` or ``Event._flag`` wakes the threads
    that can now go on (documented: CPython's leave them waiting until the
    next release/set)."""
    obj = PLAIT.Semaphore(0) if what == "_value" else PLAIT.Event()
    wait = obj.acquire if what == "_value" else obj.wait
    got = []
    t = threading.Thread(target=lambda: got.append(wait(timeout=10)))
    t.start()
    wait_until(lambda: obj._waiters, "the waiter never waited")
    setattr(obj, what, 1 if what == "_value" else True)
    t.join(10)
    assert got == [True]
