"""plait.futures.ProcessPoolExecutor: the concurrent.futures contract plus
what the standard library's pool lacks — a dead worker fails only its task,
per-task time limits, cancel(kill=True) of a running task, shutdown that never hangs, and
no child process left behind. Every wait is bounded."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import _bounds

import concurrent.futures as cf
import multiprocessing as mp
import plait.futures as pf

pytestmark = pytest.mark.timeout(120)
BOUND = 60


def square(x):
    return x * x


def boom(msg):
    raise ValueError(msg)


def kill_self(sig):
    os.kill(os.getpid(), sig)


def exit_now(code):
    os._exit(code)


def sleep_return(t):
    time.sleep(t)
    return t


def spin_forever():
    while True:
        pass


def pid():
    return os.getpid()


def children():
    out = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "pid=,comm="],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "python" in line]


@pytest.fixture(params=["fork", "spawn"])
def pool(request):
    # Workers forked by the pool's zygote, and fresh interpreters.
    ex = pf.ProcessPoolExecutor(2, mp_context=mp.get_context(request.param))
    yield ex
    ex.shutdown(wait=True, kill_workers=True)


def test_is_a_stdlib_process_pool_and_returns_plait_futures(pool):
    assert isinstance(pool, cf.ProcessPoolExecutor)
    f = pool.submit(square, 7)
    assert isinstance(f, cf.Future)
    assert f.result(BOUND) == 49


def test_map_with_and_without_chunks(pool):
    assert list(pool.map(square, range(20))) == [x * x for x in range(20)]
    assert list(pool.map(square, range(20), chunksize=6)) == [x * x for x in range(20)]
    assert list(pool.map(pow, [2, 3], [5, 6])) == [32, 729]


def test_exception_carries_the_remote_traceback(pool):
    exc = pool.submit(boom, "remote").exception(BOUND)
    assert isinstance(exc, ValueError) and str(exc) == "remote"
    assert "boom" in str(exc.__cause__)


@pytest.mark.parametrize("how, expect", [
    ((kill_self, signal.SIGKILL), "SIGKILL"),
    ((kill_self, signal.SIGSEGV), "SIGSEGV"),
    ((exit_now, 7), "exited with code 7"),
])
def test_a_dead_worker_fails_only_its_task(pool, how, expect):
    others = [pool.submit(sleep_return, 0.2) for _ in range(3)]
    dead = pool.submit(*how)
    with pytest.raises(pf.WorkerDied, match=expect):
        dead.result(BOUND)
    assert isinstance(dead.exception(), cf.process.BrokenProcessPool)
    assert [f.result(BOUND) for f in others] == [0.2] * 3
    assert pool.submit(square, 3).result(BOUND) == 9


def test_segfault_reports_the_workers_traceback(pool):
    f = pool.submit(kill_self, signal.SIGSEGV)
    with pytest.raises(pf.WorkerDied) as info:
        f.result(BOUND)
    assert "kill_self" in str(info.value)


def test_per_task_timeout_kills_and_replaces_the_worker(pool):
    f = pool.schedule(spin_forever, timeout=0.3)
    with pytest.raises(cf.TimeoutError):
        f.result(BOUND)
    assert pool.submit(square, 4).result(BOUND) == 16


def test_pool_wide_default_timeout():
    with pf.ProcessPoolExecutor(1, task_timeout=0.3) as ex:
        with pytest.raises(cf.TimeoutError):
            ex.submit(spin_forever).result(BOUND)
        assert ex.submit(square, 2).result(BOUND) == 4


def test_cancel_running_task_needs_kill(pool):
    # cancel() keeps CPython's meaning: a running task runs on.
    short = pool.submit(sleep_return, 0.5)
    deadline = time.monotonic() + BOUND
    while not short.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert short.cancel() is False and not short.cancelled()
    assert short.result(BOUND) == 0.5
    # cancel(kill=True) kills its worker; the future ends cancelled.
    f = pool.submit(sleep_return, 30)
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.cancel(kill=True) and f.cancelled()
    with pytest.raises(cf.CancelledError):
        f.result(BOUND)
    assert pool.submit(square, 5).result(BOUND) == 25


def test_cancel_kill_on_a_plain_future_is_a_plain_cancel():
    f = pf.Future()
    assert f.cancel(kill=True) and f.cancelled()
    g = pf.Future()
    assert g.set_running_or_notify_cancel()
    assert g.cancel(kill=True) is False and g.running()
    with pytest.raises(TypeError):
        pf.Future().cancel(True)


def test_shutdown_with_a_stuck_worker_does_not_hang():
    before = set(children())  # e.g. a resource tracker another test left
    ex = pf.ProcessPoolExecutor(1)
    f = ex.schedule(spin_forever, timeout=1.0)
    deadline = time.monotonic() + BOUND
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = ex.submit(square, 3)
    t0 = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - t0 < BOUND
    assert isinstance(f.exception(0), cf.TimeoutError)
    assert queued.cancelled() or queued.result(0) == 9
    assert set(children()) - before == set()


def test_shutdown_kill_workers():
    before = set(children())
    ex = pf.ProcessPoolExecutor(2)
    f = ex.submit(spin_forever)
    deadline = time.monotonic() + BOUND
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    ex.shutdown(wait=True, kill_workers=True)
    assert isinstance(f.exception(0), pf.WorkerDied)
    assert set(children()) - before == set()


def test_submit_after_shutdown(pool):
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(square, 1)


def test_failing_initializer_breaks_the_pool():
    ex = pf.ProcessPoolExecutor(1, initializer=boom, initargs=("init failed",))
    try:
        f = ex.submit(square, 2)
        with pytest.raises(cf.process.BrokenProcessPool):
            f.result(BOUND)
        with pytest.raises(cf.process.BrokenProcessPool):
            ex.submit(square, 3).result(BOUND)
    finally:
        ex.shutdown(kill_workers=True)


def test_max_tasks_per_child_replaces_workers():
    with pf.ProcessPoolExecutor(1, max_tasks_per_child=2) as ex:
        pids = [ex.submit(pid).result(BOUND) for _ in range(6)]
    assert len(set(pids)) == 3


def test_lambda_needs_cloudpickle_or_says_how(pool):
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match="cloudpickle"):
            pool.submit(lambda: 1).result(BOUND)
    else:
        assert pool.submit(lambda: 1).result(BOUND) == 1


def test_functions_from_main_work_and_no_child_survives(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import os, plait.futures as pf
        def triple(x):
            return 3 * x
        if __name__ == "__main__":
            ex = pf.ProcessPoolExecutor(2)
            print(sum(ex.map(triple, range(10))))
            # exit without shutdown: the pool finishes and reaps its workers
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=BOUND)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "135"


def test_ctrl_c_in_parent_leaves_no_worker(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time, plait.futures as pf
        def forever():
            while True:
                time.sleep(1)
        if __name__ == "__main__":
            ex = pf.ProcessPoolExecutor(2)
            fs = [ex.submit(forever) for _ in range(2)]
            while not all(f.running() for f in fs):
                time.sleep(0.01)
            print("ready", flush=True)
            fs[0].result()
    """))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        workers = subprocess.run(["ps", "--ppid", str(p.pid), "-o", "pid="], capture_output=True,
                                 text=True).stdout.split()
        assert len(workers) in (2, 3)  # and the zygote that forked them
        os.kill(p.pid, signal.SIGINT)
        p.wait(timeout=BOUND)
        deadline = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < deadline:
            alive = [w for w in workers if _bounds.alive(w)]
            time.sleep(0.05)
        assert alive == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def echo(x):
    return x


def shm_segments():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"plait-{os.getpid()}-"))


def test_large_buffers_travel_through_shared_memory_and_leave_nothing(pool):
    big = os.urandom(3 << 20)
    assert pool.submit(echo, big).result(BOUND) == big
    arr = bytearray(big)
    out = pool.submit(echo, [arr, b"small", {"k": big}]).result(BOUND)
    assert type(out[0]) is bytearray and out[0] == arr and out[1] == b"small" and out[2]["k"] == big
    # A call that never runs (cancelled while queued) leaves no segment.
    blocker = [pool.submit(sleep_return, 0.5) for _ in range(4)]
    queued = pool.submit(echo, big)
    queued.cancel()
    for f in blocker:
        f.result(BOUND)
    del queued
    import gc

    gc.collect()
    assert shm_segments() == []


def pid_and_big():
    return os.getpid(), os.urandom(1 << 20)


def test_an_unread_large_result_leaves_no_segment():
    with pf.ProcessPoolExecutor(1) as ex:
        worker = ex.submit(pid).result(BOUND)
        fs = [ex.submit(pid_and_big) for _ in range(4)]
        cf.wait(fs, timeout=BOUND)
        del fs
        import gc

        gc.collect()
        # Only this pool's worker: other tests may create segments beside us.
        assert [n for n in os.listdir("/dev/shm") if n.startswith(f"plait-{worker}-")] == []


# ---- how workers start: a zygote forked from a single-threaded parent, or
# fresh interpreters ----------------------------------------------------------


def run_script(tmp_path, body):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(body))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=BOUND)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


MAIN_NAME = """
    import os, sys, threading, plait.futures as pf
    def main_name():
        return sys.modules["__main__"].__name__ + ":" + str(os.getppid())
    if __name__ == "__main__":
        {before}
        with pf.ProcessPoolExecutor(2) as ex:
            {after}
            print(ex.submit(main_name).result(), os.getpid())
            print(ex.submit(later).result() if "later" in globals() else "-")
"""

# Defined after the pool was made, before its first submit: a forked worker
# has it (the zygote forks at the first submit, as CPython forks workers).
LATER = """def later():
                return "later"
            globals()["later"] = later"""


def test_single_threaded_parent_forks_its_workers(tmp_path):
    name, parent, later = run_script(tmp_path, MAIN_NAME.format(before="pass", after=LATER))
    # A forked worker has the parent's own __main__, and is its child.
    assert name == f"__main__:{parent}"
    assert later == "later"


def test_a_parent_with_threads_is_not_forked(tmp_path):
    before = "threading.Thread(target=threading.Event().wait, daemon=True).start()"
    name, parent, _ = run_script(tmp_path, MAIN_NAME.format(before=before, after="pass"))
    # A spawned worker loads the parent's script as __mp_main__.
    assert name == f"__mp_main__:{parent}"


def test_mp_context_chooses_the_start_method():
    # A forked worker inherits what this process set; a spawned one is a
    # fresh interpreter. (pytest's __main__ is a package's __main__.py,
    # which a spawned worker does not load, as multiprocessing does not.)
    _SET_IN_PARENT.append(True)
    try:
        with pf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            assert ex.submit(set_in_parent).result(BOUND) is False
            assert ex._mp_context.get_start_method() == "spawn"
        with pf.ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as ex:
            assert ex.submit(set_in_parent).result(BOUND) is True
    finally:
        _SET_IN_PARENT.clear()
    # As CPython: no fork with max_tasks_per_child, whose default is spawn.
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        pf.ProcessPoolExecutor(1, mp_context=mp.get_context("fork"), max_tasks_per_child=2)
    ex = pf.ProcessPoolExecutor(1, max_tasks_per_child=2)
    assert ex._mp_context.get_start_method() == "spawn"
    ex.shutdown()


_SET_IN_PARENT: list = []


def set_in_parent():
    return bool(_SET_IN_PARENT)


def put_from_initializer(q, lock):
    global _init_queue, _init_lock
    _init_queue, _init_lock = q, lock


def use_init_objects(x):
    with _init_lock:
        _init_queue.put(x * 10)
    return x


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_objects_in_initargs(method):
    # Forked workers inherit them; spawned ones get them pickled the way
    # multiprocessing pickles a spawned Process's arguments.
    ctx = mp.get_context(method)
    q, lock = ctx.Queue(), ctx.Lock()
    with pf.ProcessPoolExecutor(2, mp_context=ctx, initializer=put_from_initializer, initargs=(q, lock)) as ex:
        assert sorted(ex.map(use_init_objects, range(5))) == list(range(5))
    assert sorted(q.get(timeout=BOUND) for _ in range(5)) == [0, 10, 20, 30, 40]


def set_event(ev):
    ev.set()
    return ev.is_set()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_manager_proxies_work_in_workers(method):
    # Workers share the parent's multiprocessing authkey.
    with mp.Manager() as manager:
        ev = manager.Event()
        with pf.ProcessPoolExecutor(1, mp_context=mp.get_context(method)) as ex:
            assert ex.submit(set_event, ev).result(BOUND) is True
        assert ev.is_set()


def test_shutdown_before_any_submit_starts_nothing():
    before = set(children())
    ex = pf.ProcessPoolExecutor(2)
    ex.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)
    assert set(children()) - before == set()


# ---- streams of tiny tasks: workers hold several at once --------------------


def ident(i):
    return i


def wait_for_file(path, pid_path=None):
    """Block until ``path`` exists (the test's say-so), bounded by BOUND."""
    if pid_path:
        with open(pid_path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pid_path + ".tmp", pid_path)
    deadline = time.monotonic() + BOUND
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid()


def test_many_tiny_tasks_complete_once_each_in_order(pool):
    n = 3000
    calls = [0] * n

    def counted(i):
        def done(_f):
            calls[i] += 1
        return done

    fs = []
    for i in range(n):
        f = pool.submit(ident, i)
        f.add_done_callback(counted(i))
        fs.append(f)
    assert [f.result(BOUND) for f in fs] == list(range(n))
    assert list(pool.map(ident, range(n))) == list(range(n))
    _, not_done = cf.wait(fs, timeout=BOUND)
    assert not not_done and calls == [1] * n


def test_results_are_not_held_back_by_a_long_task_behind_them(pool, tmp_path):
    # Each worker warms up on tiny tasks (and holds several at once), then
    # one task blocks until this test has seen every earlier result.
    release = str(tmp_path / "release")
    fast = [pool.submit(ident, i) for i in range(2000)]
    blockers = [pool.submit(wait_for_file, release) for _ in range(2)]
    more = [pool.submit(ident, i) for i in range(20)]
    try:
        assert [f.result(BOUND) for f in fast] == list(range(2000))
        assert not any(b.done() for b in blockers)
    finally:
        open(release, "w").close()
    assert [f.result(BOUND) for f in more] == list(range(20))
    assert all(isinstance(b.result(BOUND), int) for b in blockers)


def test_cancel_after_many_tiny_tasks_kills_only_the_right_worker(pool, tmp_path):
    release = str(tmp_path / "release")
    assert [f.result(BOUND) for f in [pool.submit(ident, i) for i in range(2000)]] == list(range(2000))
    # One worker blocks on `other`; the victim then goes to the idle one,
    # and the tail queues behind both.
    other = pool.submit(wait_for_file, release, str(tmp_path / "other.pid"))
    deadline = time.monotonic() + BOUND
    while not (tmp_path / "other.pid").exists():
        assert time.monotonic() < deadline, "the blocking task never started"
        time.sleep(0.01)
    victim = pool.submit(wait_for_file, str(tmp_path / "never"), str(tmp_path / "victim.pid"))
    tail = [pool.submit(ident, i) for i in range(200)]
    try:
        while not (tmp_path / "victim.pid").exists():
            assert time.monotonic() < deadline, "the task to cancel never started"
            time.sleep(0.01)
        # It runs (it wrote its pid); the pool may still need a moment to see
        # that its previous task ended: retry, bounded.
        while not victim.cancel(kill=True):
            assert time.monotonic() < deadline, "a running task could not be cancelled"
            time.sleep(0.01)
        assert victim.cancelled()
        assert not other.done()
    finally:
        open(release, "w").close()
    # The other worker was not touched: its task ends normally, and the tail
    # (some of it held by the killed worker) runs elsewhere, once each.
    assert other.result(BOUND) == int((tmp_path / "other.pid").read_text())
    assert (tmp_path / "other.pid").read_text() != (tmp_path / "victim.pid").read_text()
    assert [f.result(BOUND) for f in tail] == list(range(200))


def test_shutdown_cancels_slow_tasks_queued_after_a_burst_of_tiny_ones():
    # As CPython's test_cancel_futures, on a pool that just ran a burst of
    # tiny tasks: the slow ones are not all swallowed by deep workers.
    with pf.ProcessPoolExecutor(2) as ex:
        assert list(ex.map(ident, range(2000))) == list(range(2000))
        time.sleep(0.1)  # the pool is idle again
        fs = [ex.submit(sleep_return, 0.1) for _ in range(50)]
        ex.shutdown(cancel_futures=True)
        cancelled = [f for f in fs if f.cancelled()]
        assert len(cancelled) > 20
        assert all(f.result(BOUND) == 0.1 for f in fs if not f.cancelled())


def test_a_finished_timer_leaves_no_thread_behind(tmp_path):
    # plait's timer thread ends once idle, so a pool made later still forks.
    before = ("t = __import__('plait.sync').sync.Timer(0.01, lambda: None); t.start(); t.join(); "
              "__import__('time').sleep(0.6)")
    name, parent, _ = run_script(tmp_path, MAIN_NAME.format(before=before, after="pass"))
    assert name == f"__main__:{parent}"


def test_a_forked_child_does_not_use_or_wait_for_its_parents_pool():
    # The pool's supervisor thread and workers are the parent's: in a child
    # made by os.fork(), submit says so (BrokenProcessPool), shutdown and
    # interpreter exit return at once, and the parent's pool is unharmed.
    with pf.ProcessPoolExecutor(1) as ex:
        assert ex.submit(square, 3).result(timeout=60) == 9
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(r)
            code = 1
            try:
                try:
                    ex.submit(square, 4)
                except cf.process.BrokenProcessPool as exc:
                    code = 0 if "parent" in str(exc) else 2
                ex.shutdown(wait=True)
                os.write(w, b"ok")
            finally:
                os._exit(code)
        os.close(w)
        _, status = os.waitpid(child, 0)
        with os.fdopen(r, "rb") as f:
            assert f.read() == b"ok"
        assert os.waitstatus_to_exitcode(status) == 0
        assert ex.submit(square, 5).result(timeout=60) == 25
