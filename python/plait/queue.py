"""Drop-in replacement for the ``queue`` module.

``Queue``, ``LifoQueue`` and ``PriorityQueue`` are implemented in Rust and
are also subclasses of the standard library's classes, so
``isinstance(q, queue.Queue)`` holds and ``queue.Empty`` / ``queue.Full``
(the standard library's own classes) are what they raise.

Subclasses may override the storage hooks ``_init``, ``_qsize``, ``_put``
and ``_get`` as with the standard library; such a subclass runs the
standard library's algorithm (at its speed) over those hooks.

Differences from CPython: the fast classes keep their items in Rust, so
the ``queue``, ``mutex``, ``not_empty``, ``not_full`` and
``all_tasks_done`` attributes do not exist (``maxsize``,
``unfinished_tasks`` and, on 3.13+, ``is_shutdown`` do).
``shutdown()`` / ``ShutDown`` exist on Python 3.13+, as in the standard
library.

Addition: every queue's constructor takes a keyword-only ``name=`` (a str)
that names it in ``plait.debug``; without it, a queue is known by its
creation site ``file:line``.
"""

import queue as _std
import sys as _sys

from plait._plait import SimpleQueue, _QueueCore

Empty = _std.Empty
Full = _std.Full

if _sys.version_info >= (3, 13):
    ShutDown = _std.ShutDown
else:

    class ShutDown(Exception):
        """Raised when put/get is used on a queue that was shut down."""


_HOOKS = ("_init", "_qsize", "_put", "_get")


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
        cls._plait_hooks = any(getattr(cls, h) is not getattr(base, h) for h in _HOOKS)

    def __init__(self, maxsize=0, *, name=None):
        # ``name`` (for plait.debug) is taken by _QueueCore.__new__.
        if self._plait_hooks:
            _std.Queue.__init__(self, maxsize)
        else:
            self.maxsize = maxsize

    if _sys.version_info >= (3, 13):

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

for _cls in (Queue, LifoQueue, PriorityQueue, SimpleQueue):
    _cls.__module__ = __name__
del _cls

__all__ = ["Empty", "Full", "Queue", "PriorityQueue", "LifoQueue", "SimpleQueue", "ShutDown"]
