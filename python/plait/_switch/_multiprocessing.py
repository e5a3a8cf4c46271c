"""The ``multiprocessing`` part of the switch: ``multiprocessing.pool.Pool``
and ``ThreadPool`` become plait's (``plait._mp_pool``), so
``multiprocessing.Pool()``, ``multiprocessing.get_context(...).Pool()`` and
``multiprocessing.dummy.Pool()`` — which look them up there when called —
make plait pools. ``multiprocessing.Process``, its queues, pipes and
managers stay the standard library's."""

from multiprocessing import pool as _pool

from plait import _mp_pool


def apply(set_attr):
    set_attr(_pool, "Pool", _mp_pool.Pool)
    set_attr(_pool, "ThreadPool", _mp_pool.ThreadPool)
