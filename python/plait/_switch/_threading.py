"""The ``threading`` part of the switch.

The classes put into ``threading`` are thin subclasses of plait's, named and
placed as the standard library's (``threading.Event``, ``_thread.lock``...),
so reprs, ``__module__``, ``threading.__all__`` checks and pickling errors
read as they do without the switch, and they take exactly the standard
library's arguments: plait's keyword-only ``name=`` stays on the
``plait.sync`` classes.

* ``Lock``: before 3.13 ``threading.Lock`` is a factory function (CPython's
  ``_thread.allocate_lock``) whose objects' type cannot be instantiated; from
  3.13 it is the type ``_thread.lock`` itself. Both are kept, and both pickle
  by reference as ``threading.Lock`` (multiprocessing's managers pickle it).
* ``RLock``: ``threading.RLock`` stays the standard library's function; what
  it makes is switched through ``threading._CRLock``, so its argument
  handling and warnings are the running version's own.
"""

import copyreg
import sys
import threading as _std

from plait import _plait

_lock_new = _plait.Lock.__new__
_rlock_new = _plait.RLock.__new__
# The bases' __init__, called directly: a super() call costs more than the
# rest of a construction (see "Cost" below).
_condition_init = _plait.Condition.__init__
_semaphore_init = _plait.Semaphore.__init__
_bounded_init = _plait.BoundedSemaphore.__init__
_event_init = _plait.Event.__init__
_barrier_init = _plait.Barrier.__init__


def _place(cls, name, module):
    cls.__name__ = cls.__qualname__ = name
    cls.__module__ = module
    return cls


def _no_subclass(cls, **kwargs):
    # CPython's _thread.lock is not an acceptable base type (test_threading's
    # test_lock_no_subclass); the class statement fails with a TypeError.
    raise TypeError("type '_thread.lock' is not an acceptable base type")


def _switched_lock_type():
    """What a pickled switched ``_thread.lock`` class stands for where it is
    unpickled: that process's ``threading.Lock`` (switched or not)."""
    return _std.Lock


class _LockType(type):
    """The switched lock class's metaclass: only so that the class pickles
    (by reference, as ``threading.Lock``; see ``copyreg`` below) although its
    name, ``_thread.lock``, names the C class. multiprocessing's managers
    pickle their registry, which holds ``threading.Lock``."""


copyreg.pickle(_LockType, lambda cls: (_switched_lock_type, ()))


if sys.version_info >= (3, 13):

    class lock(_plait.Lock, metaclass=_LockType):
        __slots__ = ()

        def __new__(cls):
            return _lock_new(cls)

        __init_subclass__ = classmethod(_no_subclass)

    _place(lock, "lock", "_thread")
    Lock = lock
else:

    class lock(_plait.Lock):
        __slots__ = ()

        def __new__(cls, *args, **kwargs):
            raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")

        __init_subclass__ = classmethod(_no_subclass)

    _place(lock, "lock", "_thread")

    def allocate_lock():
        return _lock_new(lock)

    allocate_lock.__doc__ = _std.Lock.__doc__
    # Named as where it is found, threading.Lock, so that pickle (by
    # reference) finds it: multiprocessing's managers pickle their registry,
    # which holds threading.Lock, for a spawned or forkserver server process.
    _place(allocate_lock, "Lock", "threading")
    Lock = allocate_lock


class RLock(_plait.RLock):
    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        # _thread.RLock takes (and ignores) any arguments; threading.RLock
        # warns about them where the running version does.
        return _rlock_new(cls)


_place(RLock, "RLock", "_thread")


class Condition(_plait.Condition):
    __slots__ = ()

    def __init__(self, lock=None):
        # The default lock is the switched RLock, as the standard library's
        # is threading.RLock(): its repr reads "_thread.RLock".
        _condition_init(self, _rlock_new(RLock) if lock is None else lock)


class Semaphore(_plait.Semaphore):
    __slots__ = ()

    def __init__(self, value=1):
        _semaphore_init(self, value)


class BoundedSemaphore(_plait.BoundedSemaphore, Semaphore):
    __slots__ = ()

    def __init__(self, value=1):
        _bounded_init(self, value)


class Event(_plait.Event):
    __slots__ = ()

    def __init__(self):
        _event_init(self)


class Barrier(_plait.Barrier):
    __slots__ = ()

    def __init__(self, parties, action=None, timeout=None):
        _barrier_init(self, parties, action, timeout)


class Timer(_plait.Timer):
    """``threading.Timer``'s docstring is put here below."""

    __slots__ = ()

    # CPython's Timer.run. A plait Timer that overrides run() runs on a
    # thread of its own, as CPython's: under the switch, timers of libraries
    # that do not know plait must not share plait.sync.Timer's one timer
    # thread (a slow function there would delay every other library's
    # timers, and current_thread() would not be the Timer).
    def run(self):
        self.finished.wait(self.interval)
        if not self.finished.is_set():
            self.function(*self.args, **self.kwargs)
        self.finished.set()


for _cls in (Condition, Semaphore, BoundedSemaphore, Event, Barrier, Timer):
    _cls.__doc__ = getattr(_std, _cls.__name__).__doc__
    _place(_cls, _cls.__name__, "threading")
del _cls


def apply(set_attr):
    set_attr(_std, "Lock", Lock)
    set_attr(_std, "_CRLock", RLock)
    for cls in (Condition, Semaphore, BoundedSemaphore, Event, Barrier, Timer):
        set_attr(_std, cls.__name__, cls)
