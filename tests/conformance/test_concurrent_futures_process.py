"""CPython's own process-pool tests (``test.test_concurrent_futures``) run
against plait.futures.ProcessPoolExecutor.

The plumbing is test_concurrent_futures_suite.py's (which plugs the thread
pool): nothing is copied, the suite's ``ProcessPoolSpawn*`` test classes are
subclassed with ``executor_type`` swapped to plait's ProcessPoolExecutor,
and while each test runs the suite's module globals that stand for "the
implementation" (``futures``, ``Future``, ``create_future``, the constant
futures) point at plait.  A child ``-c`` script's
``from concurrent.futures import ProcessPoolExecutor`` gets plait's.

The *spawn* variants (workers are fresh interpreters, ``python -m
plait._worker``) and the *fork* variants (workers forked by the pool's
zygote) are plugged. Forkserver runs plait's spawn path, so its variants
would repeat the spawn ones; they are not collected.

Where the interpreter ships the suite: one module in 3.10 here, a package in
3.13 here.  The 3.11 and 3.12 interpreters here do not ship it: the module
is skipped, and tests/behaviour/test_process_pool.py plus
tests/stress/test_process_chaos.py cover the contract.  With
``PLAIT_FUTURES_STANDIN=1`` the same plumbing runs against
``concurrent.futures`` itself, which validates this file.

Excluded, with reasons (each shows as a skip naming its reason):

* CPython's private machinery, which plait replaces by a Rust supervisor
  thread and a socket per worker:
  ``ProcessPoolExecutorTest.test_killed_child`` (``_processes``; it also
  expects the *whole pool* to break, where plait deliberately fails only the
  dead worker's task with ``WorkerDied`` — tests/behaviour/test_process_pool.py
  test_a_dead_worker_fails_only_its_task);
  ``test_saturation``, ``test_idle_process_reuse_one``,
  ``test_idle_process_reuse_multiple``, ``test_max_tasks_per_child``
  (``_processes``: worker processes are not Python objects in plait;
  test_max_tasks_per_child_replaces_workers covers the last);
  ``test_python_finalization_error`` (makes CPython's second Python thread,
  the queue feeder, fail to start; plait starts no Python thread);
  ``ProcessPoolShutdownTest.test_processes_terminate``,
  ``test_context_manager_shutdown``, ``test_del_shutdown``,
  ``test_shutdown_no_wait`` (``_processes``, ``_executor_manager_thread``,
  ``_call_queue``); the deadlock tests' ``_fail_on_deadlock`` (reads
  ``_processes``) only runs when a test already failed.
* ``ExecutorDeadlockTest.test_shutdown_deadlock_pickle`` (reads
  ``_executor_manager_thread``) and
  ``test_gh105829_should_not_deadlock_if_wakeup_pipe_full`` (mocks
  ``concurrent.futures.process._ThreadWakeup`` and ``_ExecutorManagerThread``,
  CPython internals).
* ``test_crash_big_data`` (3.13): relies on CPython's pool breaking *as a
  whole* when a worker dies (the 'big data' result is never read); in plait
  only the dead worker's task fails.

Anything not listed runs as CPython wrote it.
"""

from __future__ import annotations

import concurrent.futures as std_futures
import importlib
import os
import sys
import unittest

import pytest

if os.environ.get("PLAIT_FUTURES_STANDIN") != "1":
    try:
        import plait.futures  # noqa: F401
    except ImportError as exc:  # a stale build (another interpreter's lags)
        pytest.skip(f"plait.futures is not importable ({exc}); rebuild plait",
                    allow_module_level=True)

try:
    _suite = importlib.import_module("test.test_concurrent_futures")
except ImportError as exc:  # 3.11 / 3.12 here
    pytest.skip(
        f"Python {sys.version.split()[0]} here does not ship test.test_concurrent_futures "
        f"({exc}); tests/behaviour/test_process_pool.py and "
        "tests/stress/test_process_chaos.py cover the contract",
        allow_module_level=True)

from test_concurrent_futures_suite import (  # the shared plumbing
    FUTURES_PROXY,
    _plugged_assert_python_ok,
    constant_futures,
    create_future,
    excluded,
    under_test,
)

pytestmark = pytest.mark.timeout(300)

if not hasattr(under_test, "ProcessPoolExecutor"):
    pytest.skip(f"{under_test.__name__} has no ProcessPoolExecutor (rebuild plait)",
                allow_module_level=True)

if hasattr(_suite, "__path__"):  # a package (3.13 here)
    SUITE_MODULES = [
        importlib.import_module(f"test.test_concurrent_futures.{name}")
        for name in ("util", "executor", "test_process_pool", "test_wait", "test_as_completed",
                     "test_shutdown", "test_init", "test_deadlock")
    ]
else:  # one module (3.10 here)
    SUITE_MODULES = [_suite]


def suite_class(name: str) -> type:
    """The suite's test class ``name`` (looked up, never bound at module level,
    so that pytest does not collect the unplugged originals)."""
    for module in SUITE_MODULES:
        cls = module.__dict__.get(name)
        if isinstance(cls, type):
            return cls
    raise LookupError(f"{name} not found in {[m.__name__ for m in SUITE_MODULES]}")


def has_suite_class(name: str) -> bool:
    return any(isinstance(m.__dict__.get(name), type) for m in SUITE_MODULES)


#: First in a child ``-c`` script: its ``from concurrent.futures import
#: ProcessPoolExecutor`` (or ThreadPoolExecutor) gets the executor under test.
CHILD_PRELUDE = (
    f"import concurrent.futures as _cf, {under_test.__name__} as _ut; "
    "_cf.ThreadPoolExecutor = _ut.ThreadPoolExecutor; "
    "_cf.ProcessPoolExecutor = _ut.ProcessPoolExecutor\n"
)


class ProcPlug:
    """Points the suite's globals at the implementation under test for one test."""

    executor_type = under_test.ProcessPoolExecutor

    def setUp(self):
        replacements = {"futures": FUTURES_PROXY, "Future": under_test.Future,
                        "create_future": create_future}
        replacements.update(constant_futures())
        for module in SUITE_MODULES:
            names = dict(replacements)
            if "assert_python_ok" in module.__dict__:
                names["assert_python_ok"] = _plugged_assert_python_ok(
                    module.__dict__["assert_python_ok"], CHILD_PRELUDE)
            for name, value in names.items():
                if name in module.__dict__:
                    self.addCleanup(setattr, module, name, module.__dict__[name])
                    setattr(module, name, value)
        super().setUp()


PRIVATE = "reads CPython's private ProcessPoolExecutor attribute(s) {} (no such objects in plait)"


def private(*attrs: str):
    return excluded(PRIVATE.format(", ".join(attrs)))


def known_gap(cls_name: str, test_name: str, gap: str):
    """The suite's test, which may fail (not strictly: it depends on timing)
    because of a known plait gap."""
    if not has_suite_class(cls_name) or not hasattr(suite_class(cls_name), test_name):
        return None
    original = getattr(suite_class(cls_name), test_name)
    if under_test is std_futures:
        return original

    def test(self):
        return original(self)

    return pytest.mark.xfail(reason=f"plait gap: {gap}", strict=False)(test)


def known_bug(cls_name: str, test_name: str, bug: str):
    """The suite's test, expected to fail (strictly: a fix makes it pass and
    this marker must then go) because of a plait bug reported upstream."""
    if not has_suite_class(cls_name) or not hasattr(suite_class(cls_name), test_name):
        return None
    original = getattr(suite_class(cls_name), test_name)
    if under_test is std_futures:  # PLAIT_FUTURES_STANDIN=1: CPython passes it
        return original

    def test(self):
        return original(self)

    return pytest.mark.xfail(reason=f"plait bug: {bug}", strict=True)(test)


def plugged(global_name: str, name: str, **overrides) -> None:
    """Bind ``global_name`` here to a plugged subclass of the suite's class
    ``name`` (nothing if this interpreter's suite does not have it).  The
    class is reachable as ``<this module>.<global_name>``, so the suite's
    classmethods submitted to the pool pickle by reference."""
    if not has_suite_class(name):
        return
    overrides = {k: v for k, v in overrides.items() if v is not None}
    globals()[global_name] = type(
        global_name, (ProcPlug, suite_class(name)),
        {"__module__": __name__, "__qualname__": global_name, **overrides})


BY_DESIGN_ONE_TASK = ("expects the whole pool to break (BrokenProcessPool) when {}; plait "
                      "delivers that error to the one task's future and keeps the pool, by design")

def plug_variant(method: str) -> None:
    """Plug the suite's ``ProcessPool<method>*`` classes as ``Test*<method>``."""
    cls = f"ProcessPool{method}"
    plugged(
        f"TestExecutor{method}", f"{cls}ProcessPoolExecutorTest",
        test_killed_child=excluded(
            "reads _processes and expects the whole pool to break; plait fails only the dead "
            "worker's task (WorkerDied) by design"),
        test_saturation=private("_processes"),
        test_idle_process_reuse_one=private("_processes"),
        test_idle_process_reuse_multiple=private("_processes"),
        test_max_tasks_per_child=private("_processes"),
        test_python_finalization_error=excluded(
            "makes CPython's queue feeder thread fail to start; plait starts no Python thread"),
        test_free_reference=known_gap(
            f"{cls}ProcessPoolExecutorTest", "test_free_reference",
            "the supervisor thread finishes a future without the interpreter and drops its "
            "reference to it just after waking the waiter; the drop is done in the main "
            "thread at its next bytecode boundary (a pending call), which can come after the "
            "test's immediate check"),
    )
    plugged(f"TestWait{method}", f"{cls}WaitTest")
    plugged(f"TestAsCompleted{method}", f"{cls}AsCompletedTest")
    plugged(
        f"TestShutdown{method}", f"{cls}ProcessPoolShutdownTest",
        test_processes_terminate=private("_processes"),
        test_context_manager_shutdown=private("_processes"),
        test_del_shutdown=private("_processes", "_executor_manager_thread", "_call_queue"),
        test_shutdown_no_wait=private("_processes", "_executor_manager_thread", "_call_queue"),
        test_cancel_futures=excluded(
            "asserts that at least one of 50 tasks submitted right before "
            "shutdown(cancel_futures=True) was not cancelled: true of CPython, whose manager "
            "thread pushes max_workers+1 calls ahead into its call queue; plait dispatches "
            "only to an idle worker, so all 50 may still be pending and are cancelled, as "
            "documented"),
    )
    plugged(f"TestInitializer{method}", f"{cls}InitializerTest")
    plugged(f"TestFailingInitializer{method}", f"{cls}FailingInitializerTest")
    plugged(
        f"TestDeadlock{method}", f"{cls}ExecutorDeadlockTest",
        test_shutdown_deadlock_pickle=private("_executor_manager_thread"),
        test_gh105829_should_not_deadlock_if_wakeup_pipe_full=excluded(
            "mocks concurrent.futures.process._ThreadWakeup/_ExecutorManagerThread"),
        test_crash_big_data=excluded(
            "relies on the whole pool breaking when a worker dies; plait fails only that "
            "worker's task by design"),
        test_error_at_task_unpickle=excluded(BY_DESIGN_ONE_TASK.format(
            "a task's arguments fail to unpickle in the worker (plait: the UnpicklingError)")),
        test_exit_at_task_unpickle=excluded(BY_DESIGN_ONE_TASK.format(
            "unpickling a task's arguments calls sys.exit in the worker (plait: SystemExit, "
            "as for sys.exit in the task itself)")),
        test_error_during_result_unpickle_in_result_handler=excluded(BY_DESIGN_ONE_TASK.format(
            "a result fails to unpickle in the parent (plait: the UnpicklingError)")),
        test_exit_during_result_unpickle_in_result_handler=excluded(BY_DESIGN_ONE_TASK.format(
            "unpickling a result calls sys.exit in the parent (plait: SystemExit)")),
    )


# Spawn: fresh interpreters. Fork: workers forked by the pool's zygote.
# (Forkserver runs plait's spawn path again, so it is not collected.)
for _method in ("Spawn", "Fork"):
    plug_variant(_method)


def test_plug_reaches_the_suite():
    """Guard against silently testing the standard library: inside a plugged
    test the suite's globals are the implementation under test."""
    seen = {}

    class Probe(ProcPlug, unittest.TestCase):
        def runTest(self):
            for module in SUITE_MODULES:
                d = module.__dict__
                if "futures" in d:
                    seen.setdefault("ppe", d["futures"].ProcessPoolExecutor)
                    seen.setdefault("wait", d["futures"].wait)

    result = unittest.TestResult()
    Probe().run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert seen["ppe"] is under_test.ProcessPoolExecutor
    assert seen["wait"] is under_test.wait
    cls = globals().get("TestExecutorSpawn")
    assert cls is None or cls.executor_type is under_test.ProcessPoolExecutor
    for module in SUITE_MODULES:
        if "futures" in module.__dict__:
            assert module.__dict__["futures"] is std_futures
