"""Drop-in replacements for the ``threading`` synchronization primitives.

Every class has ``threading``'s contract (signatures, defaults, return
values, exceptions — ``threading.BrokenBarrierError`` included), with the
waiting done in Rust: uncontended operations are one atomic instruction,
blocked waits release the GIL and answer Ctrl-C, and objects stay usable in
a child made by ``os.fork()``.

Differences from CPython, all deliberate:

* After ``os.fork()``, a Lock or RLock held by a thread other than the
  forking one is released in the child (that thread does not exist there,
  so the lock could never be released).
* Arguments, timeouts and counts are read as the running Python's
  ``threading`` reads them (``Semaphore(1.5)``, ``Barrier(0)`` before 3.13,
  ``timeout=float("inf")`` an OverflowError...), except that a NaN timeout
  is a ValueError everywhere (CPython takes it for 0 in its pure-Python
  waits, then returns at once or spins forever).
* Event, Condition, Semaphore, BoundedSemaphore, Barrier and Timer take
  attributes, weak references and subclasses as CPython's Python classes
  do. ``copy.copy`` of an Event, Semaphore, Barrier or Timer is a new,
  independent object in the same state (CPython's copy shares the
  original's internal Condition); of a Condition, one sharing the lock and
  the waiters, as in CPython. Private state CPython code uses is there:
  ``Semaphore._value`` and ``Event._flag`` (assignable: threads waiting
  are then woken, where CPython's wait for the next release or set) and,
  read-only, ``BoundedSemaphore._initial_value``, ``Condition._lock``;
  ``Event`` has no ``_cond`` (it waits in Rust).
* ``Timer`` runs every timer's function on one shared Rust timer thread,
  one at a time (a slow function delays later timers); 100,000 pending
  timers cost a map entry each, not a thread each, and ``cancel()`` frees
  the entry at once. ``ident``/``native_id`` are None, and timers are not
  listed by ``threading.enumerate()``. See ``help(plait.sync.Timer)``.
* Every primitive exposes who holds it / who waits on it through private
  attributes (``_owner``, ``_waiters``) for ``plait.debug``.
"""

from threading import BrokenBarrierError

from plait._plait import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
    Timer,
)

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
    "Timer",
]
