"""CPython's own pool tests (``test._test_multiprocessing``, shipped with
the interpreter) run against ``plait.process.Pool`` and ``ThreadPool``.

Nothing is copied: the suite's ``_TestPool``, ``_TestPoolWorkerErrors`` and
``_TestPoolWorkerLifetime`` are subclassed with the suite's own mixins
(``ProcessesMixin``, ``ThreadsMixin``), whose ``Pool`` is swapped for
plait's, as CPython's ``test_multiprocessing_*`` modules instantiate them.
``_TestPoolWorkerErrors`` and ``_TestPoolWorkerLifetime`` call
``multiprocessing.Pool`` itself: while each of their tests runs,
``multiprocessing.Pool`` is plait's ``Pool``.

Excluded, with reasons:

* ``test_make_pool`` (both): asserts ``len(p._pool)``, the list of CPython's
  ``Process`` objects; plait's supervisor owns its workers and has no such
  list. Its ``ValueError`` checks are in tests/behaviour/test_mp_pool.py
  (test_bad_input_same_class_as_multiprocessing).
* ``test_pool_worker_lifetime``: reads the pids in ``p._pool`` and calls
  ``p._repopulate_pool()`` (CPython internals). Worker replacement after
  ``maxtasksperchild`` tasks is checked by pid in test_mp_pool.py
  (test_maxtasksperchild_replaces_workers).
* ``test_worker_finalization_via_atexit_handler_of_multiprocessing``: runs a
  child script that imports ``multiprocessing.Pool`` itself; it tests
  CPython's pool, not plait's.
* ``test_unpickleable_result``: expects ``MaybeEncodingError``; plait's
  worker reports an unpicklable result as the pickling error itself (the
  task fails, the pool keeps its workers, as the test otherwise checks).
* ``test_terminate`` on threads: terminates a ThreadPool whose threads sleep
  ``support.LONG_TIMEOUT`` (5 minutes); a thread cannot be stopped, and
  plait's worker threads are joined at interpreter exit (as
  ``concurrent.futures`` threads are), so the run would wait for them.
  ``terminate()`` cancelling queued work is checked on threads in
  test_mp_pool.py.
"""

import multiprocessing
import unittest
from unittest import mock

import pytest

tm = pytest.importorskip("test._test_multiprocessing")

from plait.process import Pool, ThreadPool  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def _skip(reason):
    def test(self):
        self.skipTest(reason)

    return test


class PlaitProcessesMixin(tm.ProcessesMixin):
    Pool = staticmethod(Pool)


class PlaitThreadsMixin(tm.ThreadsMixin):
    Pool = staticmethod(ThreadPool)


class _PatchMultiprocessingPool:
    """The suite's worker tests call ``multiprocessing.Pool`` directly."""

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(multiprocessing, "Pool", Pool)
        patcher.start()
        self.addCleanup(patcher.stop)


class TestPoolProcesses(tm._TestPool, PlaitProcessesMixin, unittest.TestCase):
    test_make_pool = _skip("reads CPython's pool._pool (see module docstring)")


class TestPoolThreads(tm._TestPool, PlaitThreadsMixin, unittest.TestCase):
    test_make_pool = _skip("reads CPython's pool._pool (see module docstring)")
    test_terminate = _skip("threads sleeping 5 minutes cannot be stopped (see module docstring)")


class TestPoolWorkerErrorsProcesses(_PatchMultiprocessingPool, tm._TestPoolWorkerErrors,
                                    PlaitProcessesMixin, unittest.TestCase):
    test_unpickleable_result = _skip("MaybeEncodingError (see module docstring)")


class TestPoolWorkerLifetimeProcesses(_PatchMultiprocessingPool, tm._TestPoolWorkerLifetime,
                                      PlaitProcessesMixin, unittest.TestCase):
    test_pool_worker_lifetime = _skip("reads CPython's pool._pool pids (see module docstring)")
    test_worker_finalization_via_atexit_handler_of_multiprocessing = _skip(
        "runs CPython's own Pool in a child (see module docstring)")
