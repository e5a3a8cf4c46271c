"""CPython's own ``test_concurrent_futures`` run against plait.futures.

Nothing is copied: the suite's thread-pool test classes are subclassed with
``executor_type`` swapped to plait's ThreadPoolExecutor, and while each test
runs, the suite's module globals that stand for "the implementation" are
pointed at plait:

* ``futures`` (the suite calls ``futures.wait``, ``futures.as_completed``,
  ``futures.ThreadPoolExecutor``, ``futures.TimeoutError`` ... through it)
  becomes plait.futures, falling back to ``concurrent.futures`` only for
  names plait does not define (``ProcessPoolExecutor``);
* ``Future`` and ``create_future`` make plait Futures.  The suite's
  ``create_future(state, exception, result)`` writes CPython's private
  ``_state``/``_exception``/``_result``; ours reaches the same states through
  the public API only (``set_running_or_notify_cancel``, ``cancel``,
  ``set_result``, ``set_exception``), and the module-level constants
  (``PENDING_FUTURE``, ``RUNNING_FUTURE``, ``CANCELLED_FUTURE``,
  ``CANCELLED_AND_NOTIFIED_FUTURE``, ``EXCEPTION_FUTURE``,
  ``SUCCESSFUL_FUTURE``) are rebuilt that way for every test;
* ``assert_python_ok`` (the interpreter-exit tests run a child ``-c`` script
  that does ``from concurrent.futures import ThreadPoolExecutor``) gets a
  one-line prelude that makes that import return plait's executor.

The wait and as_completed tests also run a second time with the suite's
constant futures left as the standard library's (``...StdlibFutures``
classes): plait's ``wait``/``as_completed`` over a mix of plait and standard
futures.

Where the interpreter ships the suite: one module in older versions (3.10
here), a package of modules in newer ones (3.13 here); both shapes are
handled.  The 3.11 and 3.12 interpreters on this machine do not ship it; the
module is then skipped and tests/behaviour/test_futures*.py cover the same
contract.

With ``PLAIT_FUTURES_STANDIN=1`` the same plumbing runs against
``concurrent.futures`` itself, which validates this file.

Tests that read CPython's private executor attributes run when the
implementation under test provides them (plait.futures keeps ``_threads``,
``_max_workers`` and ``_broken`` with CPython's meaning) and are skipped,
naming the missing attribute, when it does not:

* ``ThreadPoolExecutorTest.test_default_workers`` (``_max_workers``);
  ``test_saturation`` (``_max_workers``, ``_threads``);
  ``test_idle_thread_reuse`` (``_threads``).
* ``ThreadPoolShutdownTest.test_threads_terminate``,
  ``test_context_manager_shutdown``, ``test_del_shutdown``,
  ``test_shutdown_no_wait``, ``test_thread_names_assigned``,
  ``test_thread_names_default`` (``_threads``).
* ``ThreadPoolFailingInitializerTest.test_initializer`` (``_broken``).

The same contracts are also checked through public behaviour only in
tests/behaviour/test_futures.py (test_default_max_workers,
test_idle_workers_are_reused, test_thread_name_prefix_visible_in_enumerate,
test_workers_exit_after_shutdown, test_failing_initializer_breaks_pool, ...).

Excluded, with reasons:

* ``FutureTests.test_exception_with_success``: completes a future by writing
  its private ``_state`` and ``_exception`` under ``_condition`` and
  notifying by hand: CPython's internal protocol, not the contract (plait's
  waiters park in Rust, not on ``_condition``).  Covered by
  test_exception_waits_for_set_exception.
* ``test_deadlock.py`` and ``test_process_pool.py`` (3.13) and the
  process-pool classes of the 3.10 module: process pools only;
  ProcessPoolExecutor is not part of plait.futures yet.
* Only the ``ThreadPool*`` variants of the executor-parameterised classes
  are plugged; the ``ProcessPool*`` ones are not collected at all.
"""

from __future__ import annotations

import concurrent.futures as std_futures
import importlib
import logging
import os
import sys
import types
import unittest

import pytest

pytestmark = pytest.mark.timeout(180)


def futures_under_test():
    """plait.futures, or concurrent.futures with PLAIT_FUTURES_STANDIN=1."""
    if os.environ.get("PLAIT_FUTURES_STANDIN") == "1":
        return std_futures
    return pytest.importorskip(
        "plait.futures", reason="plait.futures is not importable (build plait; "
        "PLAIT_FUTURES_STANDIN=1 runs these tests against concurrent.futures)")


under_test = futures_under_test()

try:
    _suite = importlib.import_module("test.test_concurrent_futures")
except ImportError as exc:  # 3.11 / 3.12 here
    pytest.skip(
        f"Python {sys.version.split()[0]} here does not ship test.test_concurrent_futures "
        f"({exc}); tests/behaviour/test_futures*.py cover the contract",
        allow_module_level=True)

if hasattr(_suite, "__path__"):  # a package (3.13 here)
    SUITE_MODULES = [
        importlib.import_module(f"test.test_concurrent_futures.{name}")
        for name in ("util", "executor", "test_thread_pool", "test_wait",
                     "test_as_completed", "test_future", "test_shutdown", "test_init")
    ]
else:  # one module (3.10 here)
    SUITE_MODULES = [_suite]

_base = importlib.import_module("concurrent.futures._base")
PENDING, RUNNING, CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED = (
    _base.PENDING, _base.RUNNING, _base.CANCELLED, _base.CANCELLED_AND_NOTIFIED, _base.FINISHED)


def suite_class(name: str) -> type:
    """The suite's test class ``name``, from whichever of its modules defines it.

    Looked up by name and never bound to a module-level name here, so that
    pytest does not collect the unplugged originals from this module.
    """
    for module in SUITE_MODULES:
        cls = module.__dict__.get(name)
        if isinstance(cls, type):
            return cls
    raise LookupError(f"{name} not found in {[m.__name__ for m in SUITE_MODULES]}")


# --------------------------------------------------------------------------
# What the suite's globals are pointed at.


class _FuturesProxy(types.ModuleType):
    """plait.futures, with concurrent.futures behind it for names plait lacks."""

    def __getattr__(self, name):
        try:
            return getattr(under_test, name)
        except AttributeError:
            return getattr(std_futures, name)


FUTURES_PROXY = _FuturesProxy(under_test.__name__)


def create_future(state=PENDING, exception=None, result=None):
    """A Future of the implementation under test in ``state``, by public calls only."""
    f = under_test.Future()
    if state == RUNNING:
        assert f.set_running_or_notify_cancel() is True
    elif state == CANCELLED:
        assert f.cancel() is True
    elif state == CANCELLED_AND_NOTIFIED:
        assert f.cancel() is True
        assert f.set_running_or_notify_cancel() is False
    elif state == FINISHED:
        if exception is not None:
            f.set_exception(exception)
        else:
            f.set_result(result)
    elif state != PENDING:
        raise ValueError(f"unknown state {state!r}")
    return f


def constant_futures() -> dict:
    """Fresh equivalents of the suite's module-level constant futures."""
    return {
        "PENDING_FUTURE": create_future(state=PENDING),
        "RUNNING_FUTURE": create_future(state=RUNNING),
        "CANCELLED_FUTURE": create_future(state=CANCELLED),
        "CANCELLED_AND_NOTIFIED_FUTURE": create_future(state=CANCELLED_AND_NOTIFIED),
        "EXCEPTION_FUTURE": create_future(state=FINISHED, exception=OSError()),
        "SUCCESSFUL_FUTURE": create_future(state=FINISHED, result=42),
    }


#: Put first in a child ``-c`` script, so that the script's
#: ``from concurrent.futures import ThreadPoolExecutor`` gets the executor
#: under test.  (The children run isolated, ``-I``: no environment variables.)
CHILD_PRELUDE = (
    f"import concurrent.futures as _cf, {under_test.__name__} as _ut; "
    "_cf.ThreadPoolExecutor = _ut.ThreadPoolExecutor\n"
)


def _plugged_assert_python_ok(original, prelude=CHILD_PRELUDE):
    """``assert_python_ok`` with ``prelude`` put first in a ``-c`` script."""

    def assert_python_ok(*args, **env_vars):
        args = list(args)
        if "-c" in args:
            i = args.index("-c") + 1
            args[i] = prelude + args[i]
        return original(*args, **env_vars)

    return assert_python_ok


class Plug:
    """Points the suite's globals at the implementation under test for one test."""

    executor_type = under_test.ThreadPoolExecutor
    #: False: leave the suite's constant futures (and ``Future``,
    #: ``create_future``) as the standard library's, to run plait's
    #: wait/as_completed over a mix of plait and standard futures.
    plait_futures_everywhere = True

    def setUp(self):
        replacements = {"futures": FUTURES_PROXY}
        if self.plait_futures_everywhere:
            replacements.update(constant_futures())
            replacements["Future"] = under_test.Future
            replacements["create_future"] = create_future
        for module in SUITE_MODULES:
            names = dict(replacements)
            if "assert_python_ok" in module.__dict__:
                names["assert_python_ok"] = _plugged_assert_python_ok(
                    module.__dict__["assert_python_ok"])
            for name, value in names.items():
                if name in module.__dict__:
                    self.addCleanup(setattr, module, name, module.__dict__[name])
                    setattr(module, name, value)
        super().setUp()


def excluded(reason: str):
    """A test method replaced by a skip, for the exclusions in the docstring."""

    def test(self):
        self.skipTest(f"excluded: {reason}")

    return test


def _provided_private_attributes() -> set[str]:
    """The private executor attributes the suite reads that the
    implementation under test provides (plait keeps some of CPython's names)."""
    probe = under_test.ThreadPoolExecutor(max_workers=1)  # starts no thread
    try:
        return {a for a in ("_threads", "_max_workers", "_broken") if hasattr(probe, a)}
    finally:
        probe.shutdown()


PROVIDED = _provided_private_attributes()


def needs_private(cls_name: str, test_name: str, *attrs: str):
    """The suite's test if the implementation has every private attribute it
    reads, else a skip naming the missing ones."""
    missing = [a for a in attrs if a not in PROVIDED]
    if not missing:
        return getattr(suite_class(cls_name), test_name)
    return excluded(f"reads CPython's private executor attribute(s) {', '.join(missing)}, "
                    f"which {under_test.__name__}.ThreadPoolExecutor does not have")


# --------------------------------------------------------------------------
# The plugged test classes.


class TestThreadPoolExecutor(Plug, suite_class("ThreadPoolExecutorTest")):
    _c = "ThreadPoolExecutorTest"
    test_default_workers = needs_private(_c, "test_default_workers", "_max_workers")
    test_saturation = needs_private(_c, "test_saturation", "_max_workers", "_threads")
    test_idle_thread_reuse = needs_private(_c, "test_idle_thread_reuse", "_threads")


class TestThreadPoolWait(Plug, suite_class("ThreadPoolWaitTests")):
    pass


class TestThreadPoolWaitStdlibFutures(Plug, suite_class("ThreadPoolWaitTests")):
    plait_futures_everywhere = False


class TestThreadPoolAsCompleted(Plug, suite_class("ThreadPoolAsCompletedTest")):
    pass


class TestThreadPoolAsCompletedStdlibFutures(Plug, suite_class("ThreadPoolAsCompletedTest")):
    plait_futures_everywhere = False


class TestFuture(Plug, suite_class("FutureTests")):
    test_exception_with_success = excluded(
        "completes the future by writing its private _state/_exception under _condition")

    def setUp(self):
        # The suite expects a raising done-callback to be logged to stderr, as
        # it is where logging is not configured (logging.lastResort).  pytest's
        # log capture puts a handler on the root logger, which would swallow
        # the record; stop the ``concurrent.futures`` logger propagating to it
        # so the record reaches stderr exactly as outside pytest.
        logger = logging.getLogger("concurrent.futures")
        self.addCleanup(setattr, logger, "propagate", logger.propagate)
        logger.propagate = False
        super().setUp()


class TestThreadPoolShutdown(Plug, suite_class("ThreadPoolShutdownTest")):
    _c = "ThreadPoolShutdownTest"
    test_threads_terminate = needs_private(_c, "test_threads_terminate", "_threads")
    test_context_manager_shutdown = needs_private(_c, "test_context_manager_shutdown", "_threads")
    test_del_shutdown = needs_private(_c, "test_del_shutdown", "_threads")
    test_shutdown_no_wait = needs_private(_c, "test_shutdown_no_wait", "_threads")
    test_thread_names_assigned = needs_private(_c, "test_thread_names_assigned", "_threads")
    test_thread_names_default = needs_private(_c, "test_thread_names_default", "_threads")


class TestThreadPoolInitializer(Plug, suite_class("ThreadPoolInitializerTest")):
    pass


class TestThreadPoolFailingInitializer(Plug, suite_class("ThreadPoolFailingInitializerTest")):
    test_initializer = needs_private("ThreadPoolFailingInitializerTest", "test_initializer",
                                     "_broken")


def test_plug_reaches_the_suite():
    """Guard against silently testing the standard library: inside a plugged
    test the suite's globals are the implementation under test."""
    seen = {}

    class Probe(Plug, unittest.TestCase):
        def runTest(self):
            for module in SUITE_MODULES:
                d = module.__dict__
                if "futures" in d:
                    seen.setdefault("wait", d["futures"].wait)
                    seen.setdefault("tpe", d["futures"].ThreadPoolExecutor)
                if "Future" in d:
                    seen.setdefault("Future", d["Future"])
                if "SUCCESSFUL_FUTURE" in d:
                    seen.setdefault("constant", type(d["SUCCESSFUL_FUTURE"]))

    result = unittest.TestResult()
    Probe().run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert seen["wait"] is under_test.wait
    assert seen["tpe"] is under_test.ThreadPoolExecutor
    assert seen["Future"] is under_test.Future
    assert seen["constant"] is under_test.Future
    # ... and restored afterwards.
    for module in SUITE_MODULES:
        if "futures" in module.__dict__:
            assert module.__dict__["futures"] is std_futures
