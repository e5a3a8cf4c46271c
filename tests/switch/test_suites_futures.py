"""CPython's own ``concurrent.futures`` and ``multiprocessing.pool`` tests, run
under the switch (``python -m plait run -m test ...``, see tests/switch/_suites.py).

* ``test_concurrent_futures``: the whole suite (thread pools, process pools
  with fork, forkserver and spawn, wait, as_completed, Future, shutdown,
  initializers, deadlocks), with ``exclusions/test_concurrent_futures.txt``.
  The 3.11 and 3.12 interpreters here do not ship it (3.10 ships a module,
  3.13 a package): there it is skipped, and the pool suite below and
  test_workers.py are what this file runs.
* The pool tests (``_TestPool``, ``_TestPoolWorkerErrors``,
  ``_TestPoolWorkerLifetime``, for processes and threads) of
  ``test._test_multiprocessing``, which every version here ships, through
  ``suites/switch_mp_pool.py`` (the classes built as CPython's
  ``test_multiprocessing_<method>`` modules build them), with
  ``exclusions/mp_pool.txt``. Under the switch ``multiprocessing.Pool`` is
  plait's Pool. Two start methods, one run each: ``fork`` (plait's Pool forks
  its workers from a zygote) and ``spawn`` (fresh interpreters switched
  through their setup); ``forkserver`` takes plait's spawn path again and is
  not run. The thread classes do not depend on the start method and run in
  both (about a second).

The excluded tests are run on their own and each must fail there: the
exclusion is still needed, and the switch was on in the suite's process
(not the ``[hangs]`` or ``[flaky]`` ones).

Also: asyncio's default executor (``run_in_executor(None, ...)``) is plait's
under the switch, and the standard ``concurrent.futures.Future`` (not
switched) mixes with the switched ``wait`` / ``as_completed``.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import sys
import textwrap

import pytest

from tests.switch import _suites
from tests.switch._run import plait_run

pytestmark = pytest.mark.timeout(900)

SUITES = _suites.HERE / "suites"

HAS_CF_SUITE = importlib.util.find_spec("test.test_concurrent_futures") is not None
needs_cf_suite = pytest.mark.skipif(
    not HAS_CF_SUITE,
    reason=f"Python {sys.version.split()[0]} here does not ship test.test_concurrent_futures")

# "FAIL: test_x (pkg.Class.test_x)" (3.11+) or "FAIL: test_x (pkg.Class)" (3.10).
_FAILED = re.compile(r"^(?:FAIL|ERROR): (?P<name>\w+) \((?P<id>[\w.]+)\)", re.M)
_RAN = re.compile(r"^Ran (\d+) tests?", re.M)
_SKIPPED = re.compile(r"^(?:OK|FAILED) \(.*\bskipped=(\d+)", re.M)


def alone(name):
    """The exclusions of ``exclusions/<name>.txt`` to run on their own: not
    the ``[hangs]`` ones, nor the ``[flaky]`` ones, which may pass alone."""
    return [e for e in _suites.load(name) if not (e.hangs or e.flaky)]


def check_each_fails(proc, exclusions):
    """Every test ``run_only`` ran failed, and every exclusion matched one."""
    out = _suites.report(proc)
    text = proc.stdout + proc.stderr
    failed = set()
    for m in _FAILED.finditer(text):
        test_id = m["id"]
        if not test_id.endswith("." + m["name"]):
            test_id += "." + m["name"]
        failed.add(test_id)
    ran = sum(int(n) for n in _RAN.findall(text)) - sum(int(n) for n in _SKIPPED.findall(text))
    assert ran and ran == len(failed), f"{ran} ran, {len(failed)} failed: {sorted(failed)}\n{out}"
    for exclusion in exclusions:
        assert any(fnmatch.fnmatchcase(t, exclusion.pattern) for t in failed), (
            f"{exclusion.pattern} did not fail alone (no longer needed?)\n{out}")


# --- test_concurrent_futures -------------------------------------------------------


@needs_cf_suite
def test_concurrent_futures_suite_passes_switched():
    proc = _suites.run_suite(["test_concurrent_futures"],
                             _suites.load("test_concurrent_futures"))
    assert proc.returncode == 0, _suites.report(proc)


@needs_cf_suite
def test_concurrent_futures_exclusions_fail_alone():
    exclusions = alone("test_concurrent_futures")
    proc = _suites.run_only(["test_concurrent_futures"], exclusions, extra=("-v",))
    assert proc.returncode != 0, _suites.report(proc)
    check_each_fails(proc, exclusions)


# --- multiprocessing.pool ----------------------------------------------------------


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_pool_suite_passes_switched(start, monkeypatch):
    monkeypatch.setenv("PLAIT_SWITCH_POOL_START", start)
    proc = _suites.run_suite(["--testdir", str(SUITES), "switch_mp_pool"],
                             _suites.load("mp_pool"), extra=("-v",), timeout=600)
    assert proc.returncode == 0, _suites.report(proc)
    # The suite did run the pool classes (an empty run also exits 0).
    assert re.search(r"^Ran [1-9]\d+ tests", proc.stdout + proc.stderr, re.M), (
        _suites.report(proc))
    assert "WithProcessesTestPool" in proc.stdout + proc.stderr


def test_pool_exclusions_fail_alone():
    exclusions = alone("mp_pool")
    proc = _suites.run_only(["--testdir", str(SUITES), "switch_mp_pool"], exclusions,
                            extra=("-v",))
    assert proc.returncode != 0, _suites.report(proc)
    check_each_fails(proc, exclusions)


# --- asyncio's default executor, standard futures with the switched wait -------------


def _run_ok(code, options=()):
    proc = plait_run("-c", textwrap.dedent(code), options=options, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("options", [(), ("--no-asyncio",)], ids=["plait-loop", "std-loop"])
def test_asyncio_default_executor_is_plaits(options):
    out = _run_ok('''
        import asyncio
        import threading

        async def main():
            loop = asyncio.get_running_loop()
            name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
            print(type(loop._default_executor).__module__, name.startswith("asyncio"))

        asyncio.run(main())
    ''', options)
    assert out.split() == ["plait.futures", "True"]


def test_standard_future_mixes_with_switched_wait_and_as_completed():
    out = _run_ok('''
        import concurrent.futures as cf
        import threading

        assert cf.wait.__module__ == "plait.futures", cf.wait
        assert cf.as_completed.__module__ == "plait.futures", cf.as_completed
        assert cf.Future.__module__ == "concurrent.futures._base"  # not switched

        with cf.ThreadPoolExecutor(2) as ex:
            gate = threading.Event()
            plait_done = ex.submit(lambda: 1)
            plait_blocked = ex.submit(gate.wait, 60)
            std_done, std_later, std_never = cf.Future(), cf.Future(), cf.Future()
            std_done.set_result(2)

            done, not_done = cf.wait([plait_done, std_done, std_never], timeout=0.05)
            assert done == {plait_done, std_done} and not_done == {std_never}, (done, not_done)

            # A standard future completed by another thread wakes the switched wait.
            threading.Timer(0.05, std_later.set_result, (3,)).start()
            done, _ = cf.wait([std_later, std_never], return_when=cf.FIRST_COMPLETED,
                              timeout=60)
            assert done == {std_later}, done

            std_failed = cf.Future()
            std_failed.set_exception(ValueError("std"))
            done, not_done = cf.wait([plait_blocked, std_failed],
                                     return_when=cf.FIRST_EXCEPTION, timeout=60)
            assert done == {std_failed} and not_done == {plait_blocked}, (done, not_done)

            gate.set()
            order = [f.result() for f in cf.as_completed(
                [plait_done, std_done, std_later, plait_blocked], timeout=60)]
            assert sorted(order, key=str) == [1, 2, 3, True], order

            try:
                list(cf.as_completed([std_never], timeout=0.05))
            except cf.TimeoutError:
                print("timeout")
            std_never.cancel()
        print("ok")
    ''')
    assert out.split() == ["timeout", "ok"]
