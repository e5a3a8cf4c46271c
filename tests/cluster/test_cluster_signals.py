"""Ctrl-C and exit with plait.cluster, as with plait's process pool.

A real SIGINT to a program (our own child, which handles it as Python does)
blocked in ``result()`` of a cluster call inside a ``with`` block: the
program stops, KeyboardInterrupt, the queued call cancelled and never run,
the running one stopped at the second Ctrl-C. A program that leaves without
``shutdown()``: its running call is let finish, unless it leaves on an
unhandled Ctrl-C, which kills it. No process of the private cluster is ever
left behind. Bounded; no duration is asserted."""

import importlib.util
import signal
import subprocess
import sys
import textwrap

import pytest

from _bounds import alive, wait_until

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                       reason="plait.cluster needs dask.distributed (pip install 'plait[cluster]')"),
]
BOUND = 90

PROGRAM = textwrap.dedent("""
    import os, sys, time
    import psutil
    from plait.cluster import ClusterExecutor

    def nap(seconds):
        time.sleep(seconds)
        return seconds

    def mark(path):
        open(path, "w").close()

    if __name__ == "__main__":
        out = sys.argv[1]
        try:
            with ClusterExecutor(n_workers=1, threads_per_worker=1) as ex:
                running = ex.submit(nap, 600)
                queued = ex.submit(mark, os.path.join(out, "queued-ran"))
                while not running.running():
                    time.sleep(0.01)
                pids = [p.pid for p in psutil.Process().children(recursive=True)]
                with open(os.path.join(out, "pids"), "w") as f:
                    f.write(" ".join(map(str, pids)))
                print("waiting", flush=True)
                running.result()
        except KeyboardInterrupt:
            print("interrupted", type(running.exception(0)).__name__,
                  queued.cancelled(), flush=True)
            raise
""")


def run_program(tmp_path, source, args, ready, interrupt):
    """Run ``source`` as a script with ``args``; once it prints ``ready``
    (having written its cluster's process ids to ``pids``), ``interrupt(p)``
    signals it (our own child, which handles SIGINT as Python does). Returns
    (exit code, stdout, stderr) once it ended and every process of its
    private cluster is gone."""
    script = tmp_path / "prog.py"
    script.write_text(source)
    p = subprocess.Popen([sys.executable, str(script), *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == ready
        pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
        assert pids  # the cluster's processes: nanny, worker, plait's
        interrupt(p)
        out, err = p.communicate(timeout=BOUND)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    wait_until(lambda: not any(alive(pid) for pid in pids),
               "a process of the private cluster outlived the program", BOUND)
    return p.returncode, out, err


def twice(p):
    # The with block waits for the running call; Ctrl-C again while it
    # waits kills it.
    p.send_signal(signal.SIGINT)
    try:
        p.wait(2.0)  # it waits for the running call (600 s): still there
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)


def once(p):
    p.send_signal(signal.SIGINT)


def test_ctrl_c_stops_a_program_waiting_on_the_cluster(tmp_path):
    code, out, err = run_program(tmp_path, PROGRAM, [tmp_path], "waiting", twice)
    assert code == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err
    assert out.split() == ["interrupted", "WorkerDied", "True"], (out, err)
    assert not (tmp_path / "queued-ran").exists()


# -- at exit, without a with block ----------------------------------------------

AT_EXIT = textwrap.dedent("""
    import os, sys, time
    import psutil
    from plait.cluster import ClusterExecutor

    def slow_mark(path, seconds):
        time.sleep(seconds)
        open(path, "w").close()

    if __name__ == "__main__":
        out, seconds = sys.argv[1], float(sys.argv[2])
        ex = ClusterExecutor(n_workers=1, threads_per_worker=1)
        f = ex.submit(slow_mark, os.path.join(out, "ran"), seconds)
        while not f.running():
            time.sleep(0.01)
        with open(os.path.join(out, "pids"), "w") as fp:
            fp.write(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)))
        print("leaving", flush=True)
        if seconds > 60:
            f.result()  # interrupted
""")


def test_at_exit_the_running_call_is_let_finish(tmp_path):
    # As CPython's pools (and plait's): leaving the program without
    # shutdown() waits for the calls, then closes the private cluster.
    code, _, err = run_program(tmp_path, AT_EXIT, [tmp_path, 1.0], "leaving", lambda p: None)
    assert code == 0, err
    assert (tmp_path / "ran").exists()


def test_at_exit_after_an_unhandled_ctrl_c_the_calls_are_killed(tmp_path):
    code, _, err = run_program(tmp_path, AT_EXIT, [tmp_path, 600], "leaving", once)
    assert code == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err
    assert not (tmp_path / "ran").exists()
