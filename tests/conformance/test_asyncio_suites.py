"""CPython's own asyncio test suites (``test.test_asyncio``) run on plait's
event loop.

Nothing is copied: the suites' concrete test classes are subclassed with
the loop swapped to ``plait.new_event_loop()``, through every door the
suites use —

* ``create_event_loop()`` (test_events, test_sock_lowlevel, test_sendfile)
  and ``new_loop()`` (test_server, test_buffered_proto);
* ``loop_factory`` (``IsolatedAsyncioTestCase`` on 3.13);
* the event loop policy, for the duration of each test (``asyncio.Runner``,
  ``asyncio.new_event_loop()`` and ``IsolatedAsyncioTestCase`` before 3.13
  make loops through it): plait's ``EventLoopPolicy``, restored after.

``test_plug_reaches_the_suites`` guards against silently testing asyncio's
own loop. With ``PLAIT_LOOP_STANDIN=1`` the same plumbing runs the suites
on asyncio's loop, which validates this file.

Excluded, with reasons (each shows as a skip naming its reason): see
``EXCLUDED`` below.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import unittest

import pytest

STANDIN = os.environ.get("PLAIT_LOOP_STANDIN") == "1"

if not STANDIN:
    import plait.loop

    LOOP_TYPE = plait.loop.EventLoop
    new_loop = plait.loop.new_event_loop
    Policy = plait.loop.EventLoopPolicy
else:  # the plumbing, checked against asyncio's own loop
    LOOP_TYPE = asyncio.SelectorEventLoop
    new_loop = asyncio.SelectorEventLoop
    Policy = asyncio.DefaultEventLoopPolicy

pytestmark = pytest.mark.timeout(300)

SUITES = {
    "test_events": ["EPollEventLoopTests"],
    "test_sock_lowlevel": ["EPollEventLoopTests"],
    "test_server": ["SelectorStartServerTests", "TestServer2", "UnixServerCleanupTests"],
    "test_buffered_proto": ["BufferedProtocolSelectorTests"],
    "test_sendfile": ["EPollEventLoopTests"],
    "test_streams": ["StreamTests"],
    "test_ssl": ["TestSSL"],
    "test_subprocess": ["SubprocessThreadedWatcherTests", "SubprocessPidfdWatcherTests",
                        "SubprocessWatcherTests"],
    "test_taskgroups": ["TestTaskGroup"],
    "test_timeouts": ["TimeoutTests"],
}

#: (module, class, test) -> why it does not run on plait.
EXCLUDED: dict[tuple[str, str, str], str] = {}


def _import(name: str):
    try:
        return importlib.import_module(f"test.test_asyncio.{name}")
    except ImportError:
        return None


class LoopPlug:
    """Makes every loop a test creates a plait loop."""

    loop_factory = staticmethod(new_loop)

    def create_event_loop(self):
        return new_loop()

    def new_loop(self):
        return new_loop()

    def run(self, result=None):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(Policy())
        try:
            return super().run(result)
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                asyncio.set_event_loop_policy(old)


def _excluded(reason: str):
    def test(self):
        raise unittest.SkipTest(f"excluded: {reason}")

    return test


def _plug(module_name: str, cls_name: str) -> None:
    module = _import(module_name)
    if module is None:
        return
    base = module.__dict__.get(cls_name)
    if not isinstance(base, type):
        return
    overrides = {
        test: _excluded(reason)
        for (m, c, test), reason in EXCLUDED.items()
        if m == module_name and c == cls_name and hasattr(base, test)
    }
    name = f"Test_{module_name}_{cls_name}"
    globals()[name] = type(name, (LoopPlug, base), {"__module__": __name__, "__qualname__": name, **overrides})


for _module, _classes in SUITES.items():
    for _cls in _classes:
        _plug(_module, _cls)


def test_plug_reaches_the_suites():
    """Inside a plugged test, the loops are plait's."""
    seen = []

    events = _import("test_events")

    class Probe(LoopPlug, events.EPollEventLoopTests):
        def runTest(self):
            seen.append(type(self.loop))
            seen.append(type(asyncio.new_event_loop()))

            async def main():
                return type(asyncio.get_running_loop())

            seen.append(asyncio.run(main()))

    result = unittest.TestResult()
    Probe().run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert seen == [LOOP_TYPE] * 3, seen
