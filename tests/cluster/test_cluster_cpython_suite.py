"""CPython's own executor tests (``test.test_concurrent_futures``) run
against ``plait.cluster.ClusterExecutor`` on a private LocalCluster.

The plumbing is tests/conformance/test_concurrent_futures_process.py's:
nothing is copied, the suite's spawn process-pool classes are subclassed
with ``executor_type`` swapped, and while each test runs the suite's globals
standing for "the implementation" point at plait. The suite makes its
executor as ``executor_type(max_workers=n, mp_context=ctx)``: here that is
one dask worker with ``n`` threads (a plait pool of ``n`` processes inside
it); dask chooses how its workers start, so ``mp_context`` is not used.

Plugged: ``ExecutorTest`` (submit, map, map's timeout, stale references,
...), ``WaitTest``, ``AsCompletedTest``, and the initializer-free parts of
``ProcessPoolShutdownTest``. Where the interpreter does not ship the suite
(3.11 and 3.12 here) the module is skipped; tests/cluster/
test_cluster_executor.py covers the contract on every version.

Excluded, with reasons (each shows as a skip naming its reason): the tests
that read CPython's private process-pool attributes (as in the process pool
file), the ones that start CPython's own pool in a child interpreter
(``assert_python_ok``: a cluster per child is not what they test), and
``initializer``/``max_tasks_per_child`` tests (ClusterExecutor has neither:
a dask cluster prepares its workers with plugins), and ``test_cancel_futures``
(it needs some of 50 queued calls to escape the cancel, as CPython's
call-queue push-ahead lets them; the process pool file excludes it too).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest

if importlib.util.find_spec("distributed") is None:
    pytest.skip("plait.cluster needs dask.distributed (pip install 'plait[cluster]')",
                allow_module_level=True)
try:
    _suite = importlib.import_module("test.test_concurrent_futures")
except ImportError as exc:  # 3.11 / 3.12 here
    pytest.skip(
        f"Python {sys.version.split()[0]} here does not ship test.test_concurrent_futures "
        f"({exc}); tests/cluster/test_cluster_executor.py covers the contract",
        allow_module_level=True)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "conformance"))
from test_concurrent_futures_process import (  # noqa: E402 - the shared plumbing
    ProcPlug,
    has_suite_class,
    private,
    suite_class,
)
from test_concurrent_futures_suite import excluded  # noqa: E402

from plait.cluster import ClusterExecutor  # noqa: E402

pytestmark = pytest.mark.timeout(300)

class SuiteClusterExecutor(ClusterExecutor):
    """The suite's ``executor_type(max_workers=n, mp_context=ctx)``: one dask
    worker with ``n`` threads (a plait pool of ``n`` processes)."""

    def __init__(self, max_workers=None, mp_context=None, **kwargs):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        super().__init__(n_workers=1, threads_per_worker=max_workers or 2, **kwargs)


class ClusterPlug(ProcPlug):
    """The process pool file's plug (the suite's globals pointed at plait
    while a test runs) with the cluster as the executor."""

    executor_type = SuiteClusterExecutor


def plugged(global_name, name, **overrides):
    if not has_suite_class(name):
        return
    overrides = {k: v for k, v in overrides.items()
                 if hasattr(suite_class(name), k)}
    globals()[global_name] = type(
        global_name, (ClusterPlug, suite_class(name)),
        {"__module__": __name__, "__qualname__": global_name, **overrides})


CHILD = excluded("runs a child interpreter with CPython's own executor classes (assert_python_ok)")
NO_MAX_TASKS = excluded("ClusterExecutor has no max_tasks_per_child")

plugged(
    "TestClusterExecutor", "ProcessPoolSpawnProcessPoolExecutorTest",
    test_killed_child=private("_processes"),
    test_saturation=private("_processes"),
    test_idle_process_reuse_one=private("_processes"),
    test_idle_process_reuse_multiple=private("_processes"),
    test_max_tasks_per_child=NO_MAX_TASKS,
    test_max_tasks_per_child_defaults_to_spawn_context=NO_MAX_TASKS,
    test_max_tasks_early_shutdown=NO_MAX_TASKS,
    test_python_finalization_error=excluded(
        "makes CPython's queue feeder thread fail to start; plait starts no Python thread"),
    test_ressources_gced_in_workers=excluded(
        "passes a multiprocessing Event made from the suite's mp_context to the calls: "
        "it cannot travel to a dask cluster's workers"),
    test_traceback=None,
    test_map_chunksize=None,
    test_del_shutdown=CHILD,
    test_interpreter_shutdown=CHILD,
    test_hang_issue12364=None,
    test_hang_gh83386=CHILD,
    test_submit_after_interpreter_shutdown=CHILD,
    test_idle_process_reuse=None,
    test_free_reference=None,
)
plugged("TestClusterWait", "ProcessPoolSpawnWaitTest")
plugged("TestClusterAsCompleted", "ProcessPoolSpawnAsCompletedTest")
plugged(
    "TestClusterShutdown", "ProcessPoolSpawnProcessPoolShutdownTest",
    test_processes_terminate=private("_processes"),
    test_context_manager_shutdown=private("_processes"),
    test_del_shutdown=private("_processes", "_executor_manager_thread", "_call_queue"),
    test_shutdown_no_wait=private("_processes", "_executor_manager_thread", "_call_queue"),
    test_interpreter_shutdown=CHILD,
    test_run_after_interpreter_shutdown=CHILD,
    test_submit_after_interpreter_shutdown=CHILD,
    test_hang_issue12364=None,
    test_hang_gh83386=CHILD,
    test_cancel_futures=excluded(
        "asserts that at least one of 50 calls submitted right before "
        "shutdown(cancel_futures=True) was not cancelled: true of CPython, whose manager "
        "thread pushes calls ahead into its call queue; a call that has not started is "
        "cancelled here (as on plait's local pool, whose process file excludes it too)"),
    test_cancel_futures_wait_false=CHILD,
    test_shutdown_gh_132969_case_1=CHILD,
    test_shutdown_gh_132969_case_2=CHILD,
)
