"""The ``queue`` part of the switch: ``queue.Queue``, ``LifoQueue``,
``PriorityQueue`` and ``SimpleQueue`` become plait's, as subclasses named and
placed as the standard library's, taking exactly its arguments (plait's
``name=`` stays on ``plait.queue``'s classes). A subclass a program makes of
them keeps plait's rule: one that overrides ``_init``/``_put``/``_get``/
``_qsize`` or uses the internals runs the standard library's algorithm."""

import queue as _std

from plait import queue as _plait_queue

_std_queue_init = _plait_queue._std_queue_init


class Queue(_plait_queue.Queue):
    __slots__ = ()

    def __init__(self, maxsize=0):
        # plait.queue.Queue.__init__ without its name= (which __new__ takes),
        # inlined: one Python call per construction, not two.
        if self._plait_hooks:
            _std_queue_init(self, maxsize)
        else:
            self.maxsize = maxsize


class LifoQueue(_plait_queue.LifoQueue, Queue):
    __slots__ = ()
    __init__ = Queue.__init__


class PriorityQueue(_plait_queue.PriorityQueue, Queue):
    __slots__ = ()
    __init__ = Queue.__init__


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
