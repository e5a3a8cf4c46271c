"""CPython's asyncio suites (the whole ``test.test_asyncio`` package) under
the switch: ``python -m plait run`` running regrtest sequentially, with
the exclusions of ``exclusions/test_asyncio.txt``.

Under the switch, the loops asyncio makes itself are plait's:
``asyncio.run``, ``asyncio.Runner``, ``asyncio.new_event_loop()``, the
policy's ``get_event_loop()`` and ``IsolatedAsyncioTestCase`` (so
test_tasks, test_taskgroups, test_timeouts, test_streams, test_ssl,
test_subprocess, test_locks, test_queues, test_waitfor ... run on plait's
loop). Tests that build ``asyncio.SelectorEventLoop`` explicitly (most of
test_events, test_sock_lowlevel, test_sendfile) or a loop class of their
own (test_base_events' and test_tasks' ``TestLoop``) keep it: that is the
switch's contract. Those run on plait's loop in
``tests/conformance/test_asyncio_suites.py``, which plugs it in by hand.

The suite's process is started as ``python -m plait run -c PRELUDE
test_asyncio ...``, where ``PRELUDE`` first checks that the switch is on,
then counts, per test module, the plait loops the tests make (printed at
exit), then runs regrtest exactly as ``-m test`` does: the count shows the
suites really ran on plait's loop, not silently on asyncio's.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile

import pytest

from tests.switch import _suites
from tests.switch._run import plait_run

pytestmark = pytest.mark.timeout(900)

TESTS = ["test_asyncio"]

#: Modules whose tests make their loops through asyncio's own doors
#: (asyncio.run, Runner, new_event_loop, IsolatedAsyncioTestCase): each
#: must have made plait loops under the switch.
SWITCHED = ["test_tasks", "test_taskgroups", "test_timeouts", "test_streams", "test_ssl",
            "test_subprocess", "test_locks", "test_waitfor"]

# Runs in the switched suite process before regrtest (``-c``; regrtest's
# arguments follow it on the command line).
PRELUDE = r"""
import asyncio, atexit, collections, runpy, sys, unittest
import plait.loop

loop = asyncio.new_event_loop()
assert type(loop) is plait.loop.EventLoop, f"the switch is off: {type(loop)}"
loop.close()
asyncio.set_event_loop_policy(None)  # as it was: regrtest checks it is unchanged

made = collections.Counter()

def _owner(frame):
    # The test module whose test made this loop (its ``self`` is a TestCase).
    while frame is not None:
        if "self" in frame.f_code.co_varnames:
            s = frame.f_locals.get("self")
            if isinstance(s, unittest.TestCase):
                return type(s).__module__
        frame = frame.f_back
    return "?"

_init = plait.loop.EventLoop.__init__

def __init__(self, *args, **kwargs):
    made[_owner(sys._getframe(1))] += 1
    _init(self, *args, **kwargs)

plait.loop.EventLoop.__init__ = __init__

@atexit.register
def _report():
    for module, n in sorted(made.items()):
        print(f"plait loops made by {module}: {n}", file=sys.stderr)

runpy.run_module("test", run_name="__main__", alter_sys=True)
"""

_MADE = re.compile(r"^plait loops made by (\S+): (\d+)$", re.M)


def _file(patterns):
    fd, name = tempfile.mkstemp(prefix="plait-switch-asyncio-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("".join(p + "\n" for p in patterns))
    return name


def _run(*args):
    return plait_run("-c", PRELUDE, *TESTS, *args, timeout=900)


def _exclusions():
    return _suites.load("test_asyncio")


def test_asyncio_suites_under_the_switch():
    exclusions = _exclusions()
    ignore = _file(e.pattern for e in exclusions)
    try:
        proc = _run("--ignorefile", ignore, "--fail-env-changed")
    finally:
        os.unlink(ignore)
    assert proc.returncode == 0, _suites.report(proc)
    made = {m: int(n) for m, n in _MADE.findall(proc.stderr)}
    for name in SWITCHED:
        if importlib.util.find_spec(f"test.test_asyncio.{name}") is None:
            continue  # not shipped with this Python
        assert made.get(f"test.test_asyncio.{name}", 0) > 0, (name, made)


def test_excluded_tests_still_fail_under_the_switch():
    runnable = [e for e in _exclusions() if not e.hangs]
    if not runnable:
        pytest.skip(f"no exclusion applies on Python {sys.version_info[0]}.{sys.version_info[1]}")
    match = _file(e.pattern for e in runnable)
    try:
        proc = _run("--matchfile", match, "-v")
    finally:
        os.unlink(match)
    assert proc.returncode != 0, _suites.report(proc)
    for e in runnable:  # each one ran, and failed
        method = re.escape(e.pattern.rsplit(".", 1)[-1]).replace(r"\*", r"\S*")
        assert re.search(rf"^{method} \(.*\) \.\.\. (FAIL|ERROR)$", proc.stdout, re.M), \
            (e, _suites.report(proc))
