"""Ctrl-C in plait.futures: a main thread blocked in ``future.result()``,
``wait()``, ``as_completed()`` iteration or ``executor.shutdown(wait=True)``
raises KeyboardInterrupt within 100 ms of a real SIGINT.

Same pattern as tests/behaviour/test_signals.py: each case runs in a fresh
subprocess (a failure cannot wedge the test runner); the child blocks in the
wait under test, the parent sends a real SIGINT and the child reports when
it raised.  The child leaves with ``os._exit`` so a worker still sleeping
(the shutdown case: the worker may keep running, only the main thread must
answer) does not hold the exit up.

With ``PLAIT_FUTURES_STANDIN=1`` (inherited by the child) the child uses
``concurrent.futures``, which validates the tests.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from _helpers import assert_sigint_interrupts

pytestmark = pytest.mark.timeout(60)

if os.environ.get("PLAIT_FUTURES_STANDIN") != "1":
    pytest.importorskip(
        "plait.futures", reason="plait.futures is not importable (build plait; "
        "PLAIT_FUTURES_STANDIN=1 runs these tests against concurrent.futures)")

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import concurrent.futures as fut
    if os.environ.get("PLAIT_FUTURES_STANDIN") != "1":
        import plait.futures as fut

    release = threading.Event()   # lets blocked workers finish afterwards
    started = threading.Event()   # a worker is inside its task

    def block():
        started.set()
        release.wait(60)

    def long_sleep():
        started.set()
        time.sleep(30)

    case = sys.argv[1]
    ex = fut.ThreadPoolExecutor(max_workers=2)
    if case == "result_bare":
        f = fut.Future()
        wait = f.result
    elif case == "result_executor":
        f = ex.submit(block)
        wait = f.result
    elif case == "exception":
        f = ex.submit(block)
        wait = f.exception
    elif case == "result_long_timeout":
        f = fut.Future()
        wait = lambda: f.result(timeout=600)
    elif case == "wait_all":
        fs = [ex.submit(block), fut.Future()]
        wait = lambda: fut.wait(fs)
    elif case == "wait_first":
        fs = [ex.submit(block), fut.Future()]
        wait = lambda: fut.wait(fs, return_when=fut.FIRST_COMPLETED)
    elif case == "wait_timeout":
        fs = [fut.Future()]
        wait = lambda: fut.wait(fs, timeout=600)
    elif case == "as_completed":
        done = fut.Future()
        done.set_result(1)
        fs = [done, ex.submit(block)]
        def wait():
            for f in fut.as_completed(fs):
                pass
    elif case == "as_completed_timeout":
        fs = [fut.Future()]
        def wait():
            for f in fut.as_completed(fs, timeout=600):
                pass
    elif case == "shutdown":
        ex.submit(long_sleep)
        started.wait(10)
        wait = lambda: ex.shutdown(wait=True)
    else:
        raise SystemExit("unknown case " + case)
    print("ready", flush=True)
    try:
        wait()
        print(json.dumps({"raised": None}), flush=True)
    except KeyboardInterrupt:
        print(json.dumps({"raised": "KeyboardInterrupt", "at": time.monotonic()}), flush=True)
    except BaseException as e:
        print(json.dumps({"raised": type(e).__name__}), flush=True)
    release.set()
    os._exit(0)
    """
)

CASES = ["result_bare", "result_executor", "exception", "result_long_timeout", "wait_all",
         "wait_first", "wait_timeout", "as_completed", "as_completed_timeout", "shutdown"]


@pytest.mark.parametrize("case", CASES)
def test_sigint_interrupts_blocked_main_thread(case):
    assert_sigint_interrupts(CHILD, case)


TIMEOUT_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import concurrent.futures as fut
    if os.environ.get("PLAIT_FUTURES_STANDIN") != "1":
        import plait.futures as fut
    f = fut.Future()
    waits = {
        "result": lambda: f.result(timeout=0.2),
        "exception": lambda: f.exception(timeout=0.2),
        "wait": lambda: fut.wait([f], timeout=0.2),
        "as_completed": lambda: list(fut.as_completed([f], timeout=0.2)),
    }
    out = {}
    for name, call in waits.items():
        t0 = time.monotonic()
        try:
            call()
            out[name] = ["returned", time.monotonic() - t0]
        except fut.TimeoutError:
            out[name] = ["TimeoutError", time.monotonic() - t0]
    print(json.dumps(out), flush=True)
    """
)


def test_timeouts_in_main_thread_are_honoured():
    """Sliced waits in the main thread still end when the timeout passes."""
    p = subprocess.run([sys.executable, "-c", TIMEOUT_CHILD], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["result"][0] == "TimeoutError"
    assert out["exception"][0] == "TimeoutError"
    assert out["wait"][0] == "returned"  # wait() returns (done, not_done) on timeout
    assert out["as_completed"][0] == "TimeoutError"
    for name, (_, seconds) in out.items():  # a hang bound, not a latency check
        assert seconds < 20, (name, seconds)
