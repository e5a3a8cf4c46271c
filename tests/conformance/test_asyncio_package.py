"""The whole of CPython's ``test.test_asyncio`` package, run by CPython's own
test runner (``python -m test``) with plait's loop behind the event loop
policy.

``test_asyncio_suites.py`` plugs plait into the suites that take a loop
factory. The rest of the package (tasks, futures, locks, queues, runners,
streams, the Unix loop, ...) makes its loops through the policy:
``asyncio.new_event_loop()``, ``asyncio.run()``, ``IsolatedAsyncioTestCase``.
Here ``asyncio.DefaultEventLoopPolicy``, the class asyncio makes its
default policy from (again after each module's ``tearDownModule`` resets it
with ``set_event_loop_policy(None)``), is plait's, so every such loop is a
``plait.loop.EventLoop``; the child counts them, which guards against
silently testing asyncio's own loop. Tests that build asyncio's
loop classes by name (``asyncio.SelectorEventLoop()``) or use the suite's
mock loops still run on those.

regrtest re-runs a failed test once (``-w``), as CPython's CI does: a
test that fails twice fails this one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not hasattr(asyncio, "set_event_loop_policy"),
                       reason="this Python has no event loop policies to put plait behind"),
]

CHILD = textwrap.dedent("""
    import asyncio, os, runpy, sys
    import plait.loop

    made = 0
    init = plait.loop.EventLoop.__init__

    def counting_init(self, *args, **kwargs):
        global made
        made += 1
        init(self, *args, **kwargs)

    def main():
        plait.loop.EventLoop.__init__ = counting_init
        # asyncio makes its default policy lazily, from this name.
        asyncio.DefaultEventLoopPolicy = plait.loop.EventLoopPolicy
        asyncio.set_event_loop_policy(None)
        sys.argv = ["test", "-w", "test_asyncio"]  # -w: re-run a failed test once
        try:
            runpy.run_module("test", run_name="__main__")
        finally:
            os.write(2, f"plait loops made: {made}\\n".encode())

    if __name__ == "__main__":  # spawned children import this as __mp_main__
        main()
""")


def test_cpython_asyncio_package_on_plait(tmp_path):
    script = tmp_path / "run_test_asyncio.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1100)
    out = proc.stdout + proc.stderr
    tail = "\n".join(out.splitlines()[-60:])
    assert proc.returncode == 0, f"test_asyncio failed on plait:\n{tail}"
    made = [int(line.rsplit(":", 1)[1]) for line in out.splitlines()
            if line.startswith("plait loops made:")]
    # About 550 (3.10) to 930 (3.13) loops: far more than a broken plug makes.
    assert made and made[-1] >= 300, f"too few plait loops ({made}):\n{tail}"
