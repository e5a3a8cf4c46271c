"""Drop-in replacement for the ``queue`` module.

``Queue``, ``LifoQueue`` and ``PriorityQueue`` are implemented in Rust and
are also subclasses of the standard library's classes, so
``isinstance(q, queue.Queue)`` holds and ``queue.Empty`` / ``queue.Full``
(the standard library's own classes) are what they raise.

Subclasses may override the storage hooks ``_init``, ``_qsize``, ``_put``
and ``_get`` as with the standard library; such a subclass runs the
standard library's algorithm (at its speed) over those hooks. So does a
subclass whose methods use the internals ``self.queue``, ``self.mutex``,
``self.not_empty``, ``self.not_full`` or ``self.all_tasks_done``: it gets
the real ones, with CPython's meaning.

``maxsize`` and ``unfinished_tasks`` are assignable, as in CPython
(``q.unfinished_tasks = 0`` also releases ``join()``); ``maxsize`` is the
very object given (``Queue(1.5)`` holds 2 items, as CPython's does; a
``maxsize`` that does not compare with 0, such as None, makes ``put`` and
``full`` raise what CPython raises). ``copy.copy(q)`` is a second object
over the same queue, as CPython's copy shares the original's deque.

Differences from CPython: the fast classes keep their items in Rust, so
their ``queue`` attribute is a view of the items (``len``, iteration,
indexing, ``in``, ``clear()``, ``copy()``; a new view each time, not the
deque itself: it cannot be mutated otherwise), and ``mutex``,
``not_empty``, ``not_full`` and ``all_tasks_done`` are a Lock and
Conditions of their own, made on first use, which the queue's operations
do not take (``with q.mutex: q.queue.clear()`` and notifying them work;
holding ``mutex`` does not stop other threads' ``put`` and ``get``).
``unfinished_tasks`` must be an int. A NaN timeout raises ValueError
where a blocking ``get``/``put`` would have to wait (CPython's loop spins
until an item or room appears). ``shutdown()`` / ``ShutDown`` exist on
Python 3.13+, as in the standard library.

Addition: every queue's constructor takes a keyword-only ``name=`` (a str)
that names it in ``plait.debug``; without it, a queue is known by its
creation site ``file:line``.
"""

import queue as _std
import sys as _sys
import types as _types
from collections import deque as _deque

from plait._plait import SimpleQueue, _QueueCore

Empty = _std.Empty
Full = _std.Full
# Taken now: under plait.patch() the name queue.Queue is a subclass of ours,
# and a hooks-mode __init__ reaching it would call itself.
_std_queue_init = _std.Queue.__init__

if _sys.version_info >= (3, 13):
    ShutDown = _std.ShutDown
else:

    class ShutDown(Exception):
        """Raised when put/get is used on a queue that was shut down."""


_HOOKS = ("_init", "_qsize", "_put", "_get")
#: CPython's Queue internals; a subclass whose code uses them runs the
#: standard library's algorithm, which has them.
_INTERNALS = frozenset({"queue", "mutex", "not_empty", "not_full", "all_tasks_done"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "STORE_ATTR", "DELETE_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR"})


def _codes(value):
    """The code objects of a class attribute (function, property...)."""
    for v in (value, getattr(value, "__func__", None), *(getattr(value, a, None) for a in ("fget", "fset", "fdel"))):
        code = getattr(v, "__code__", None)
        if isinstance(code, _types.CodeType):
            yield code


def _uses_internals(code):
    import dis

    for ins in dis.get_instructions(code):
        if ins.opname in _ATTR_OPS and ins.argval in _INTERNALS:
            return True
    return any(_uses_internals(c) for c in code.co_consts if isinstance(c, _types.CodeType))


def _touches_internals(cls, stop):
    for klass in cls.__mro__:
        if klass in stop:
            continue
        for value in vars(klass).values():
            if any(_uses_internals(c) for c in _codes(value)):
                return True
    return False


class _Absent:
    """A class attribute that reads as missing unless the instance has its
    own (``is_shutdown`` before 3.13, as in CPython)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, cls=None):
        raise AttributeError(self.name)


def _absent(cls, name):
    """Whether ``name`` on ``cls`` is an ``_Absent`` (the first definition
    along the MRO)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return isinstance(vars(klass)[name], _Absent)
    return False


class _Made:
    """A fast queue's own stand-in for one of CPython's internals, made on
    first use and kept in the instance's ``__dict__`` (a hooks-mode
    instance has the standard library's there already: it wins, since this
    descriptor defines no ``__set__``). With ``keep=False`` a new one is
    made at each read."""

    def __init__(self, make, keep=True):
        self.make = make
        self.keep = keep

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        if not self.keep:
            return self.make(obj)
        return obj.__dict__.setdefault(self.name, self.make(obj))


def _mutex(q):
    import plait.sync

    return plait.sync.Lock()


def _condition(q):
    import plait.sync

    return plait.sync.Condition(q.mutex)


class _Items:
    """``q.queue`` of a fast plait queue: a view of its items in storage
    order (CPython's deque for a Queue, list for a LifoQueue or
    PriorityQueue). Each read is a snapshot; ``clear()`` empties the queue
    (its ``unfinished_tasks`` is kept, as clearing CPython's deque keeps it)."""

    __slots__ = ("_q",)

    def __init__(self, q):
        self._q = q

    def copy(self):
        items = _QueueCore._snapshot(self._q)
        return _deque(items) if self._q._plait_order == 0 else items

    def clear(self):
        _QueueCore._clear(self._q)

    def __len__(self):
        return _QueueCore.qsize(self._q)

    def __bool__(self):
        return _QueueCore.qsize(self._q) > 0

    def __iter__(self):
        return iter(_QueueCore._snapshot(self._q))

    def __reversed__(self):
        return reversed(_QueueCore._snapshot(self._q))

    def __contains__(self, item):
        return item in _QueueCore._snapshot(self._q)

    def __getitem__(self, index):
        return self.copy()[index]

    def count(self, item):
        return _QueueCore._snapshot(self._q).count(item)

    def index(self, item, *args):
        return _QueueCore._snapshot(self._q).index(item, *args)

    def __eq__(self, other):
        if isinstance(other, _Items):
            other = other.copy()
        return self.copy() == other

    __hash__ = None

    def __repr__(self):
        return repr(self.copy())


class Queue(_QueueCore, _std.Queue):
    """A FIFO queue with ``queue.Queue``'s contract, implemented in Rust."""

    _plait_order = 0
    _plait_hooks = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        bases = globals().get("_BASES")
        if bases is None:  # defining plait's own LifoQueue / PriorityQueue
            return
        base = bases[cls._plait_order]
        cls._plait_hooks = any(getattr(cls, h) is not getattr(base, h) for h in _HOOKS) or _touches_internals(
            cls, _STOP
        )

    def __init__(self, maxsize=0, *, name=None):
        # ``name`` (for plait.debug) is taken by _QueueCore.__new__.
        if self._plait_hooks:
            _std_queue_init(self, maxsize)
        else:
            self.maxsize = maxsize

    queue = _Made(_Items, keep=False)  # a view keeps the queue: no cycle
    mutex = _Made(_mutex)
    not_empty = _Made(_condition)
    not_full = _Made(_condition)
    all_tasks_done = _Made(_condition)

    def __dir__(self):
        # Leave out what reads as missing (``is_shutdown`` before 3.13):
        # code that gets every name dir() lists (multiprocessing's managers
        # do, to find a Queue's methods) must not meet an AttributeError.
        names = super().__dir__()
        own = getattr(self, "__dict__", {})
        return [n for n in names if n in own or not _absent(type(self), n)]

    def __copy__(self):
        # CPython's copy shares the original's deque, mutex and counters:
        # a second object over the same queue.
        cls = type(self)
        new = cls.__new__(cls, _plait_share=self)
        new.__dict__.update(self.__dict__)
        return new

    if _sys.version_info < (3, 13):
        is_shutdown = _Absent()
    else:

        def shutdown(self, immediate=False):
            """Shut the queue down: puts raise ShutDown; gets raise it once
            the queue is empty. With ``immediate``, the queue is emptied and
            ``join()`` callers are released."""
            self._shutdown(immediate)


class LifoQueue(Queue, _std.LifoQueue):
    """A LIFO queue with ``queue.LifoQueue``'s contract."""

    _plait_order = 1


class PriorityQueue(Queue, _std.PriorityQueue):
    """A priority queue with ``queue.PriorityQueue``'s contract: lowest
    first, ordered by the items' own ``<``, in the same order as ``heapq``."""

    _plait_order = 2


_BASES = {0: Queue, 1: LifoQueue, 2: PriorityQueue}
_STOP = frozenset({Queue, LifoQueue, PriorityQueue, _QueueCore, _std.Queue, _std.LifoQueue, _std.PriorityQueue, object})

for _cls in (Queue, LifoQueue, PriorityQueue, SimpleQueue):
    _cls.__module__ = __name__
del _cls

__all__ = ["Empty", "Full", "Queue", "PriorityQueue", "LifoQueue", "SimpleQueue", "ShutDown"]
