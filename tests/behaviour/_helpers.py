"""Helpers shared by the behaviour tests: a forked child that must succeed
and a subprocess interrupted by a real SIGINT. Both are bounded, so a hang
fails the test instead of wedging the run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _bounds import wait_until  # noqa: F401 - re-exported for the behaviour tests


def run_in_child(fn, bound=20.0):
    """Fork, run ``fn()`` in the child, which exits 0 on success and 1 on an
    exception (printed); a child still running after ``bound`` seconds is
    killed and the test fails."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "child failed"
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("child hung")


#: Seconds a blocked wait may take to answer a real SIGINT before a test calls
#: it a hang.  Generous on purpose (shared VMs); the 100 ms contract is a
#: benchmark row (benches/bench_signals.py), not a test assertion.
SIGINT_BOUND = 5.0


def assert_sigint_interrupts(script, *args, within=SIGINT_BOUND, bound=10.0):
    """Run ``script`` (which blocks forever in the wait under test; it prints
    ``ready`` once blocked, then one JSON report ``{"raised": ...,
    "at": time.monotonic()}``), send it a real SIGINT, and check the wait
    raised KeyboardInterrupt.  ``within`` is a hang bound, not the latency
    contract (100 ms, measured by ``python -m plait bench``'s signal row):
    tests assert outcomes, never timings (CLOCK_MONOTONIC is system-wide, so
    the two clocks agree)."""
    p = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # let it park
        sent = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        report = json.loads(p.stdout.readline())
        assert report["raised"] == "KeyboardInterrupt"
        assert report["at"] - sent < within, f"took {report['at'] - sent:.3f}s"
        assert p.wait(timeout=bound) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
