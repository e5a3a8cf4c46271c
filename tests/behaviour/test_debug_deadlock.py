"""plait.debug finds deadlocks: before a thread parks (``deadlock="report"``
and ``"raise"``), after a cycle has lasted 2 s with no setting at all, and
across kinds (a thread waiting on a future whose runner waits on a lock
the thread holds). Each deadlock that must stay deadlocked runs in a child
process the test kills itself; each in-process one is broken by the test.
Tests assert what happened, never how fast."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import plait.debug as debug
import plait.sync as ps
from plait.futures import ThreadPoolExecutor

from _helpers import wait_until

BOUND = 30.0


def waiting_on(lock_name):
    """Idents of the threads parked on the primitive named ``lock_name``."""
    state = debug.snapshot()
    for n in state.nodes:
        if n.get("name") == lock_name:
            return {e["from"] for e in state.edges if e["to"] == n["id"] and e["kind"] == "waits_for"}
    return set()


@pytest.fixture
def mode():
    """Set a deadlock mode for one test; restore the default after."""
    before = debug.settings()
    yield lambda m: debug.enable(deadlock=m)
    debug.enable(deadlock=before["deadlock"])


def classic(first, second, first_name):
    """Thread ``t`` takes ``second`` then waits for ``first`` (named
    ``first_name``), which the caller holds. Returns ``t`` once parked."""
    ready = threading.Event()

    def run():
        with second:
            ready.set()
            with first:
                pass

    t = threading.Thread(target=run, name="worker-1", daemon=True)
    t.start()
    ready.wait(BOUND)
    wait_until(lambda: len(waiting_on(first_name)) == 1)
    return t


def test_raise_mode_refuses_the_wait_that_closes_the_cycle(mode):
    mode("raise")
    first, second = ps.Lock(name="first"), ps.Lock(name="second")
    first.acquire()
    t = classic(first, second, "first")
    with pytest.raises(debug.DeadlockError) as info:
        second.acquire()
    assert isinstance(info.value, RuntimeError)
    text = str(info.value)
    assert "first" in text and "second" in text and "worker-1" in text
    # Nothing was acquired by the refused wait, and the other thread is
    # undisturbed: releasing `first` lets it finish normally.
    first.release()
    t.join(BOUND)
    assert not t.is_alive()
    assert not second.locked() and not first.locked()


def test_raise_mode_spans_kinds_thread_future_pool_thread_lock(mode):
    mode("raise")
    lock = ps.Lock(name="ledger")
    with ThreadPoolExecutor(max_workers=1) as pool:
        lock.acquire()
        try:
            fut = pool.submit(lambda: lock.acquire() and lock.release() or "done")
            wait_until(lambda: len(waiting_on("ledger")) == 1)
            with pytest.raises(debug.DeadlockError) as info:
                fut.result()
            assert "ledger" in str(info.value)
        finally:
            lock.release()
        assert fut.result(timeout=BOUND) == "done"


def test_snapshot_shows_the_cross_kind_cycle():
    lock = ps.Lock(name="ledger")
    held = threading.Event()
    release = threading.Event()
    box = {}

    def owner(pool):
        # Takes the lock and never releases it: the test does (a plain
        # Lock may be released by any thread), which breaks the cycle.
        lock.acquire()
        box["fut"] = pool.submit(lambda: lock.acquire() and lock.release())
        held.set()
        box["fut"].result()
        release.set()

    with ThreadPoolExecutor(max_workers=1) as pool:
        t = threading.Thread(target=owner, args=(pool,), name="owner", daemon=True)
        t.start()
        held.wait(BOUND)
        wait_until(lambda: len(waiting_on("ledger")) == 1 and _future_waited(debug.snapshot()))
        snap = debug.snapshot()
        kinds = [sorted(_kind_of(snap, n) for n in cycle) for cycle in snap.cycles]
        assert ["future", "lock", "thread", "thread"] in kinds, str(snap)
        text = str(snap)
        assert "Found one deadlock" in text and "ledger" in text
        assert "red" in snap.to_dot()
        # Break it from outside: a plain Lock may be released by anyone.
        lock.release()
        release.wait(BOUND)
        t.join(BOUND)
        assert not t.is_alive()


def _kind_of(snap, node_id):
    return next(n["kind"] for n in snap.nodes if n["id"] == node_id)


def _future_waited(snap):
    futures = {n["id"] for n in snap.nodes if n["kind"] == "future"}
    return any(e["kind"] == "waits_for" and e["to"] in futures for e in snap.edges)


DEADLOCK_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    import plait.sync as ps
    first, second = ps.Lock(name="first"), ps.Lock(name="second")
    go = threading.Barrier(2)

    def one():
        with first:
            go.wait()
            with second:
                pass

    def two():
        with second:
            go.wait()
            with first:
                pass

    for f in (one, two):
        threading.Thread(target=f, name=f.__name__, daemon=True).start()
    print("ready", flush=True)
    for t in threading.enumerate():
        if t is not threading.current_thread():
            t.join()
    """
)


class Child:
    """A child Python process whose stderr is collected by a thread, so the
    test can wait (bounded) for text to appear. Killed on exit: it is ours."""

    def __init__(self, script, env_debug=None, stdin=False):
        env = dict(os.environ)
        env.pop("PLAIT_DEBUG", None)
        if env_debug:
            env["PLAIT_DEBUG"] = env_debug
        self.p = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE if stdin else None,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.err = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stderr:
            self.err.append(line)

    @property
    def stderr(self):
        return "".join(self.err)

    def ready(self):
        assert self.p.stdout.readline().strip() == "ready", self.stderr

    def wait_for(self, cond, bound=BOUND):
        end = time.monotonic() + bound
        while not cond(self.stderr) and time.monotonic() < end:
            time.sleep(0.05)
        return self.stderr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.reader.join(BOUND)


def run_deadlock(env_debug, until):
    """Run the two-thread deadlock in a child; return its stderr once
    ``until(stderr)`` holds (bounded), then end the child."""
    with Child(DEADLOCK_SCRIPT, env_debug) as c:
        c.ready()
        c.wait_for(until)
    return c.stderr


def test_report_mode_writes_the_report_and_keeps_waiting():
    err = run_deadlock("deadlock", lambda e: "Found one deadlock" in e)
    assert "Found one deadlock" in err
    assert "first" in err and "second" in err
    assert "held by" in err


def test_without_settings_a_cycle_lasting_two_seconds_is_reported_once():
    err = run_deadlock(None, lambda e: "Found one deadlock" in e)
    assert err.count("Found one deadlock") == 1
    assert "first" in err and "second" in err


def test_deadlock_off_reports_nothing():
    # Bounded look: the report would come after 2 s; give it several.
    end = time.monotonic() + 6

    err = run_deadlock("deadlock=off", lambda e: time.monotonic() > end)
    assert "Found one deadlock" not in err


def test_a_lock_used_as_a_signal_is_never_refused(mode):
    """CPython's lock_tests release a Lock from another thread: waiting on a
    Lock one holds oneself is legal for a plain Lock, never refused."""
    mode("raise")
    lock = ps.Lock()
    lock.acquire()
    threading.Timer(0.2, lock.release).start()
    assert lock.acquire(timeout=BOUND)
    lock.release()


def test_stall_reports_when_nothing_can_wake_anyone():
    script = textwrap.dedent(
        """
        import sys
        import plait.sync as ps
        print("ready", flush=True)
        ps.Event(name="never-set").wait()
        """
    )
    with Child(script, "stall=0.5") as c:
        c.ready()
        err = c.wait_for(lambda e: "never-set" in e)
    assert "stall" in err.lower() and "never-set" in err


def test_dump_on_signal_while_every_thread_is_blocked():
    script = textwrap.dedent(
        """
        import signal, threading
        import plait.debug, plait.sync as ps
        plait.debug.dump_on(signal.SIGUSR1)
        lock = ps.Lock(name="stuck")
        lock.acquire()
        t = threading.Thread(target=lock.acquire, name="blocked-helper", daemon=True)
        t.start()
        print("ready", flush=True)
        lock.acquire()
        """
    )
    with Child(script) as c:
        c.ready()
        time.sleep(0.3)
        # The child installed the handler itself before printing "ready".
        c.p.send_signal(signal.SIGUSR1)
        err = c.wait_for(lambda e: "blocked-helper" in e)
        assert "stuck" in err and "blocked-helper" in err and "MainThread" in err
        assert c.p.poll() is None, "the dump must not end the process"


COUNTER_SCRIPT = r"""
import sys, threading, time
import plait.sync as ps

# A Semaphore used as a counter: the consumer took permits before, then
# waits for the producer's next release (it "holds" permits of what it
# waits on: a probable cycle of one thread); a Lock used as a signal.
sem = ps.Semaphore(2)
sem.acquire(); sem.acquire()
signal = ps.Lock()
signal.acquire()

def later():
    time.sleep(4)
    sem.release()
    signal.release()

threading.Thread(target=later).start()
print("waiting", flush=True)
sem.acquire()
signal.acquire()
print("done", flush=True)
"""


def test_without_settings_a_probable_cycle_is_not_reported():
    """With no setting only certain cycles are reported: a thread waiting
    more than 2 s on a Semaphore it took permits of, or on a Lock it holds
    (released by another thread later), is a correct program."""
    env = {k: v for k, v in os.environ.items() if k != "PLAIT_DEBUG"}
    proc = subprocess.run([sys.executable, "-c", COUNTER_SCRIPT], capture_output=True,
                          text=True, timeout=BOUND, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["waiting", "done"]
    assert "deadlock" not in proc.stderr, proc.stderr
