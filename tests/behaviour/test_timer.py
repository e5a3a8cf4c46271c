"""plait.sync.Timer: threading.Timer's API on one shared Rust timer thread.

Nothing here asserts a timing except as a generous upper bound against a
hang; every test is bounded by pytest-timeout. Process-level behaviour
(interpreter exit, Ctrl-C, fork) runs in a subprocess or forked child.
"""

import gc
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import weakref

import pytest
from _helpers import assert_sigint_interrupts, run_in_child

import plait
import plait._plait as ext
import plait.sync as ps
from plait.sync import Timer

pytestmark = pytest.mark.timeout(60)

#: Upper bound for "this should happen soon": only ever a hang detector.
SOON = 20.0


def wait_for(cond, bound=SOON):
    end = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < end, "condition not reached within the bound"
        time.sleep(0.002)


def run_script(code, timeout=SOON, **kwargs):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


# --- the API, as threading.Timer has it ---------------------------------------


def test_exported_from_plait_and_plait_sync():
    assert plait.Timer is ps.Timer is ext.Timer
    assert "Timer" in ps.__all__ and "Timer" in plait.__all__


def test_attributes_and_defaults_match_threading():
    def f():
        pass

    t = Timer(2.5, f)
    ref = threading.Timer(2.5, f)
    assert t.interval == 2.5
    assert t.function is f
    assert t.args == [] and type(t.args) is type(ref.args)
    assert t.kwargs == {} and type(t.kwargs) is type(ref.kwargs)
    assert re.fullmatch(r"Thread-\d+", t.name), t.name
    assert re.fullmatch(r"Thread-\d+", ref.name)
    assert t.daemon is False and ref.daemon is False
    assert t.ident is None and t.native_id is None
    assert isinstance(t.finished, ps.Event) and not t.finished.is_set()
    assert not t.is_alive()
    assert repr(t) == f"<Timer({t.name}, initial)>"


def test_names_share_threadings_counter():
    a = Timer(1, print).name
    b = threading.Thread().name
    c = Timer(1, print).name
    na, nb, nc = (int(re.search(r"\d+", n).group()) for n in (a, b, c))
    assert na < nb < nc


def test_args_and_kwargs_are_kept_as_given():
    args, kwargs = (1, 2), {"k": 3}
    t = Timer(1, print, args, kwargs)
    assert t.args is args and t.kwargs is kwargs
    t = Timer(1, print, args=None, kwargs=None)
    assert t.args == [] and t.kwargs == {}


def test_name_and_daemon_are_settable_before_start():
    t = Timer(0, lambda: None)
    t.name = 42
    assert t.name == "42"
    t.daemon = True
    assert t.daemon is True
    assert "daemon" in repr(t)
    t.start()
    with pytest.raises(RuntimeError, match="cannot set daemon status of active thread"):
        t.daemon = False
    t.name = "renamed"  # a name can change at any time
    assert t.name == "renamed"
    t.join(SOON)


def test_deprecated_aliases_warn():
    t = Timer(1, print)
    with pytest.warns(DeprecationWarning):
        t.setName("x")
    with pytest.warns(DeprecationWarning):
        assert t.getName() == "x"
    with pytest.warns(DeprecationWarning):
        t.setDaemon(True)
    with pytest.warns(DeprecationWarning):
        assert t.isDaemon() is True


def test_call_attributes_are_settable_before_start():
    got = []
    t = Timer(3600, print)
    t.interval = 0
    t.function = lambda *a, **k: got.append((a, k))
    t.args = (1,)
    t.kwargs = {"x": 2}
    t.start()
    t.join(SOON)
    assert got == [((1,), {"x": 2})]


def test_daemon_inherits_from_the_creating_thread():
    seen = {}

    def make(tag):
        seen[tag] = Timer(1, print).daemon

    d = threading.Thread(target=make, args=("daemon",), daemon=True)
    n = threading.Thread(target=make, args=("non-daemon",), daemon=False)
    for th in (d, n):
        th.start()
        th.join()
    assert seen == {"daemon": True, "non-daemon": False}
    assert Timer(1, print).daemon is False  # the main thread


def test_a_timer_made_by_a_timers_function_inherits_its_daemon_flag():
    seen = []

    def make():
        seen.append(Timer(1, print).daemon)

    for daemon in (True, False):
        t = Timer(0, make)
        t.daemon = daemon
        t.start()
        t.join(SOON)
    assert seen == [True, False]


# --- start / fire / join ----------------------------------------------------------


def test_fires_with_args_and_kwargs_then_finishes():
    got = []
    t = Timer(0.01, lambda *a, **k: got.append((a, k)), args=[1, 2], kwargs={"k": "v"})
    t.start()
    assert t.is_alive() or got
    assert re.fullmatch(rf"<Timer\({t.name}, (started|stopped)\)>", repr(t))
    t.join(SOON)
    assert not t.is_alive()
    assert got == [((1, 2), {"k": "v"})]
    assert t.finished.is_set()
    assert repr(t) == f"<Timer({t.name}, stopped)>"


def test_start_twice_is_runtime_error():
    t = Timer(0, lambda: None)
    t.start()
    with pytest.raises(RuntimeError, match="^threads can only be started once$"):
        t.start()
    t.join(SOON)
    with pytest.raises(RuntimeError, match="^threads can only be started once$"):
        t.start()


def test_join_before_start_is_runtime_error():
    with pytest.raises(RuntimeError, match="^cannot join thread before it is started$"):
        Timer(0, print).join()


def test_join_with_timeout_returns_while_pending():
    t = Timer(3600, print)
    t.start()
    t0 = time.monotonic()
    assert t.join(0.05) is None
    assert time.monotonic() - t0 < SOON
    assert t.is_alive()
    t.join(0)
    t.join(-1)  # negative: no wait, as threading
    assert t.is_alive()
    t.cancel()
    t.join(SOON)
    assert not t.is_alive()


def test_timers_fire_in_deadline_order_on_one_thread():
    order, idents = [], set()
    lock = threading.Lock()

    def note(i):
        with lock:
            order.append(i)
            idents.add(threading.get_ident())

    timers = [Timer(delay, note, (i,)) for i, delay in ((2, 0.06), (0, 0.0), (1, 0.03), (3, 0.09))]
    for t in timers:
        t.start()
    for t in timers:
        t.join(SOON)
    assert order == [0, 1, 2, 3]
    assert len(idents) == 1 and threading.get_ident() not in idents


def test_callbacks_run_one_at_a_time():
    running, overlap = [0], []
    lock = threading.Lock()

    def work():
        with lock:
            running[0] += 1
            overlap.append(running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1

    timers = [Timer(0, work) for _ in range(10)]
    for t in timers:
        t.start()
    for t in timers:
        t.join(SOON)
    assert max(overlap) == 1


def test_zero_negative_nan_and_none_intervals():
    got = []
    for interval in (0, -5, float("nan")):
        t = Timer(interval, got.append, (interval,))
        t.start()
        t.join(SOON)
    assert got[:2] == [0, -5] and got[2] != got[2]
    t = Timer(None, got.append, ("never",))  # Event.wait(None): until cancelled
    t.start()
    t.join(0.02)
    assert t.is_alive()
    t.cancel()
    t.join(SOON)
    assert "never" not in got


def test_bad_interval_raises_from_start():
    t = Timer("soon", print)
    with pytest.raises(TypeError):
        t.start()
    assert not t.is_alive()


# --- cancel ---------------------------------------------------------------------------


def test_cancel_before_fire():
    got = []
    t = Timer(3600, got.append, (1,))
    t.start()
    assert t.is_alive()
    t.cancel()
    assert t.finished.is_set()
    t.join(SOON)
    assert not t.is_alive()
    assert got == []


def test_cancel_after_fire_is_harmless():
    got = []
    t = Timer(0, got.append, (1,))
    t.start()
    t.join(SOON)
    t.cancel()
    t.cancel()
    assert got == [1] and t.finished.is_set() and not t.is_alive()


def test_cancel_before_start_means_it_never_runs():
    got = []
    t = Timer(0, got.append, (1,))
    t.cancel()
    t.start()
    t.join(SOON)
    assert got == [] and not t.is_alive()
    with pytest.raises(RuntimeError, match="threads can only be started once"):
        t.start()


def test_cancel_while_running_waits_for_the_function_in_join():
    started, release = threading.Event(), threading.Event()
    done = []

    def slow():
        started.set()
        release.wait(SOON)
        done.append(1)

    t = Timer(0, slow)
    t.start()
    assert started.wait(SOON)
    t.cancel()  # too late to stop it
    assert t.is_alive()
    threading.Timer(0.05, release.set).start()
    t.join(SOON)
    assert done == [1] and not t.is_alive()


def test_a_cancelled_timer_is_freed_at_cancel():
    t = Timer(3600, print)
    t.start()
    ref = weakref.ref(t)
    del t
    gc.collect()
    assert ref() is not None, "a pending timer is kept alive by the timer thread"
    ref().cancel()
    assert ref() is None, "cancel() drops the timer thread's reference at once"


def test_reference_cycles_through_a_timer_are_collected():
    class Box:
        pass

    box = Box()
    t = Timer(0, lambda *a: box)  # timer -> function -> box -> timer
    box.timer = t
    t.args = (t,)
    t.start()
    t.join(SOON)
    ref = weakref.ref(t)
    del t, box
    gc.collect()
    assert ref() is None


def test_setting_finished_stops_the_call():
    got = []
    t = Timer(0.05, got.append, (1,))
    t.start()
    t.finished.set()
    t.join(SOON)
    assert got == []


# --- exceptions --------------------------------------------------------------------------


def test_exception_goes_to_threading_excepthook(monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", seen.append)

    def boom():
        raise ValueError("boom")

    t = Timer(0, boom)
    t.start()
    t.join(SOON)
    assert len(seen) == 1
    args = seen[0]
    assert args.exc_type is ValueError
    assert isinstance(args.exc_value, ValueError) and str(args.exc_value) == "boom"
    assert args.exc_traceback is not None
    assert args.thread is t
    # As CPython's Timer.run: `finished` is set only after a call that returned.
    assert not t.finished.is_set()
    assert not t.is_alive()


def test_default_excepthook_names_the_timer(capfd, monkeypatch):
    # pytest installs its own hook; use the interpreter's default.
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)

    def boom():
        raise KeyError("k")

    t = Timer(0, boom)
    t.name = "my-timer"
    t.start()
    t.join(SOON)
    err = capfd.readouterr().err
    assert "Exception in thread my-timer:" in err
    assert "KeyError" in err


def test_a_failing_excepthook_falls_back_to_sys_excepthook(monkeypatch, capfd):
    calls = []

    def bad_hook(args):
        raise RuntimeError("hook failed")

    monkeypatch.setattr(threading, "excepthook", bad_hook)
    monkeypatch.setattr(sys, "excepthook", lambda *a: calls.append(a))
    t = Timer(0, lambda: 1 / 0)
    t.start()
    t.join(SOON)
    assert "Exception in threading.excepthook:" in capfd.readouterr().err
    assert len(calls) == 1 and calls[0][0] is RuntimeError


def test_later_timers_still_fire_after_an_exception(monkeypatch):
    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    got = []
    bad = Timer(0, lambda: 1 / 0)
    good = Timer(0.01, got.append, (1,))
    bad.start()
    good.start()
    good.join(SOON)
    assert got == [1]


# --- run() -----------------------------------------------------------------------------------


def test_run_called_directly_waits_then_calls_in_the_caller():
    got = []
    t = Timer(0.02, lambda: got.append(threading.get_ident()))
    t.run()
    assert got == [threading.get_ident()]
    assert t.finished.is_set()
    assert not t.is_alive()


def test_run_called_directly_after_cancel_does_not_call():
    got = []
    t = Timer(3600, got.append, (1,))
    t.cancel()
    t.run()  # the wait returns at once: finished is set
    assert got == []


def test_run_called_directly_propagates_the_exception():
    t = Timer(0, lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        t.run()
    assert not t.finished.is_set()


# --- joins from a Timer's own function ----------------------------------------------------------


def test_join_from_its_own_function_is_runtime_error():
    errors = []
    holder = {}

    def self_join():
        try:
            holder["t"].join()
        except RuntimeError as e:
            errors.append(str(e))

    holder["t"] = t = Timer(0, self_join)
    t.start()
    t.join(SOON)
    assert errors == ["cannot join current thread"]


def test_join_of_a_pending_timer_from_a_function_is_runtime_error():
    errors = []
    later = Timer(3600, print)
    later.start()

    def join_other():
        try:
            later.join(1)
        except RuntimeError as e:
            errors.append(str(e))

    t = Timer(0, join_other)
    t.start()
    t.join(SOON)
    later.cancel()
    assert len(errors) == 1 and "share one thread" in errors[0]


# --- subclasses ------------------------------------------------------------------------------------


def test_subclass_with_its_own_init():
    got = []

    class Named(Timer):
        def __init__(self, fn):
            super().__init__(0, fn, ("x",))
            self.extra = "kept"

    t = Named(got.append)
    assert t.extra == "kept" and t.args == ("x",)
    t.start()
    t.join(SOON)
    assert got == ["x"]


def test_subclass_overriding_run_gets_a_thread_of_its_own():
    class Repeat(Timer):
        def run(self):
            while not self.finished.wait(self.interval):
                self.function(*self.args, **self.kwargs)

    ticks = []
    t = Repeat(0.005, ticks.append, (1,))
    t.daemon = True
    t.start()
    wait_for(lambda: len(ticks) >= 3)
    assert t.is_alive()
    assert isinstance(t.ident, int)
    t.cancel()
    t.join(SOON)
    assert not t.is_alive()


# --- scale and memory ----------------------------------------------------------------------------------


def test_100k_timers_started_then_cancelled_use_no_threads_and_free_memory():
    n = 100_000
    before_threads = threading.active_count()
    assert ext._timer_pending() == (0, 0)
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        timers = [Timer(3600, print) for _ in range(n)]
        for t in timers:
            t.start()
        assert ext._timer_pending() == (n, n)
        assert threading.active_count() <= before_threads + 2
        held, _ = tracemalloc.get_traced_memory()
        for t in timers:
            t.cancel()
        assert ext._timer_pending() == (0, 0)
        assert not any(t.is_alive() for t in timers)
        refs = [weakref.ref(t) for t in timers[:100]]
        del timers, t
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(r() is None for r in refs)
    # 100k live timers hold megabytes; after cancel+del (almost) all of it is
    # back. The bound is loose on purpose (allocator caches, free lists).
    assert held - base > 5_000_000, (held - base)
    assert after - base < (held - base) / 10, (base, held, after)
    assert threading.active_count() <= before_threads + 2


# --- interpreter exit --------------------------------------------------------------------------------------


def test_non_daemon_timer_fires_before_interpreter_exit():
    r = run_script(
        """
        import plait.sync as ps
        ps.Timer(0.2, print, ("non-daemon fired",)).start()
        print("main done", flush=True)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["main", "done", "non-daemon", "fired"]


def test_non_daemon_timer_started_from_a_daemon_thread_still_keeps_exit_waiting():
    r = run_script(
        """
        import threading, plait.sync as ps
        def go():
            t = ps.Timer(0.2, print, ("fired",))
            t.daemon = False
            t.start()
        th = threading.Thread(target=go, daemon=True); th.start(); th.join()
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fired"


def test_daemon_timer_is_dropped_at_exit():
    t0 = time.monotonic()
    r = run_script(
        """
        import plait.sync as ps
        t = ps.Timer(30, print, ("daemon fired",)); t.daemon = True; t.start()
        ps.Timer(0.1, print, ("non-daemon fired",)).start()
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "non-daemon fired"
    assert time.monotonic() - t0 < SOON


def test_start_after_interpreter_shutdown_began_is_runtime_error():
    r = run_script(
        """
        import atexit
        def late():
            import plait.sync as ps
            try:
                ps.Timer(0, print).start()
            except RuntimeError as e:
                print(e)
        atexit.register(late)      # runs after plait's own exit hook
        import plait.sync
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "can't create new thread at interpreter shutdown"


# --- Ctrl-C ----------------------------------------------------------------------------------------------------

JOIN_CHILD = """
import json, time, plait.sync as ps
t = ps.Timer(3600, print)
t.start()
print("ready", flush=True)
try:
    t.join()
    print(json.dumps({"raised": None}), flush=True)
except KeyboardInterrupt:
    at = time.monotonic()
    t.cancel()
    print(json.dumps({"raised": "KeyboardInterrupt", "at": at}), flush=True)
"""


def test_sigint_interrupts_join_in_the_main_thread():
    assert_sigint_interrupts(JOIN_CHILD, bound=SOON)


def test_sigint_ends_the_exit_wait_for_a_pending_timer():
    code = """
    import plait.sync as ps
    ps.Timer(3600, print, ("fired",)).start()
    print("ready", flush=True)
    """
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # now in the exit wait
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=SOON)
        assert "fired" not in out
        assert "KeyboardInterrupt" in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# --- fork ---------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_child_can_start_and_fire_timers():
    warm = Timer(0, lambda: None)  # the timer thread is running in the parent
    warm.start()
    warm.join(SOON)

    def child():
        got = []
        t = Timer(0.01, got.append, (1,))
        t.start()
        t.join(SOON)
        assert got == [1]
        assert not t.is_alive()

    run_in_child(child)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_child_keeps_the_timers_pending_at_fork():
    got = []
    t = Timer(0.2, got.append, (1,))
    t.start()
    try:
        def child():
            t.join(SOON)  # the child's own timer thread fires it
            assert got == [1]

        run_in_child(child)
    finally:
        t.cancel()
        t.join(SOON)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_function_running_at_fork_is_abandoned_in_the_child():
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(SOON)

    t = Timer(0, slow)
    t.start()
    assert started.wait(SOON)
    try:
        def child():
            t.join(SOON)
            assert not t.is_alive()

        run_in_child(child)
    finally:
        release.set()
        t.join(SOON)
