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
* ``Event`` has no private ``_cond`` attribute; ``Semaphore`` exposes
  ``_value`` read-only.
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
