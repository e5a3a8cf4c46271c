"""The ``queue`` part of the switch: ``queue.Queue``, ``LifoQueue``,
``PriorityQueue`` and ``SimpleQueue`` become plait's, as subclasses named and
placed as the standard library's, taking exactly its arguments (plait's
``name=`` stays on ``plait.queue``'s classes). A subclass a program makes of
them keeps plait's rule: one that overrides ``_init``/``_put``/``_get``/
``_qsize`` or uses the internals runs the standard library's algorithm."""

import queue as _std

from plait import queue as _plait_queue


class Queue(_plait_queue.Queue):
    __slots__ = ()

    def __init__(self, maxsize=0):
        super().__init__(maxsize)


class LifoQueue(_plait_queue.LifoQueue, Queue):
    __slots__ = ()

    def __init__(self, maxsize=0):
        _plait_queue.LifoQueue.__init__(self, maxsize)


class PriorityQueue(_plait_queue.PriorityQueue, Queue):
    __slots__ = ()

    def __init__(self, maxsize=0):
        _plait_queue.PriorityQueue.__init__(self, maxsize)


class SimpleQueue(_plait_queue.SimpleQueue):
    __slots__ = ()

    def __new__(cls):
        return _plait_queue.SimpleQueue.__new__(cls)


for _cls in (Queue, LifoQueue, PriorityQueue, SimpleQueue):
    _cls.__doc__ = getattr(_std, _cls.__name__).__doc__
    _cls.__module__ = "queue"
SimpleQueue.__module__ = "_queue"
del _cls


def apply(set_attr):
    for cls in (Queue, LifoQueue, PriorityQueue, SimpleQueue):
        set_attr(_std, cls.__name__, cls)
