"""plait.process.Pool and ThreadPool: the multiprocessing.pool API, plus
what the standard Pool lacks — a dead worker fails only its task (the
standard Pool's get() never returns there), per-task time limits, a
terminate() that ends every result. Outcomes, never timings; every wait is
bounded."""

import concurrent.futures
import functools
import multiprocessing as mp
import multiprocessing.pool as mpp
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from concurrent.futures import CancelledError

import pytest

import plait.process as pp
from plait.futures import WorkerDied

pytestmark = pytest.mark.timeout(120)
BOUND = 60


def square(x):
    return x * x


def mul(x, y):
    return x * y


def boom(msg):
    raise KeyError(msg)


def pid(_=None):
    return os.getpid()


def exit_now(code):
    os._exit(code)


def kill_self(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_return(t):
    time.sleep(t)
    return t


def wait_for_file(path, bound=BOUND):
    deadline = time.monotonic() + bound
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return "gave up"
        time.sleep(0.01)
    return "slow"


def assert_gone(pid, what, bound=10):
    """Fail with ``what`` unless process ``pid`` is gone within ``bound`` s
    (a hang bound: it is usually gone at once)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)  # existence check only: signal 0 sends nothing
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(what)


_init_value = None


def set_init(v):
    global _init_value
    _init_value = (v, os.getpid(), threading.get_ident())


def get_init(_=None):
    return _init_value


def children():
    out = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "pid=,stat=,comm="],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "python" in line and " Z" not in line]


@pytest.fixture(params=["processes", "threads"])
def pool(request):
    p = pp.Pool(2) if request.param == "processes" else pp.ThreadPool(2)
    yield p
    p.terminate()
    p.join()


def test_every_call_returns_what_the_builtin_would(pool):
    assert pool.apply(square, (5,)) == 25
    assert pool.apply(mul, (), {"x": 3, "y": 4}) == 12
    assert pool.apply_async(square, (6,)).get(BOUND) == 36
    assert pool.map(square, range(10)) == [x * x for x in range(10)]
    assert pool.map(square, range(100), chunksize=7) == [x * x for x in range(100)]
    assert pool.map(square, iter(range(5))) == [0, 1, 4, 9, 16]
    assert pool.map(square, []) == []
    assert pool.map_async(square, range(20), 3).get(BOUND) == [x * x for x in range(20)]
    pairs = list(zip(range(30), range(30, 0, -1)))
    assert pool.starmap(mul, pairs, 4) == [a * b for a, b in pairs]
    assert pool.starmap_async(mul, pairs).get(BOUND) == [a * b for a, b in pairs]
    assert list(pool.imap(square, range(50), 3)) == [x * x for x in range(50)]
    assert list(pool.imap(square, (x for x in range(50)))) == [x * x for x in range(50)]
    assert sorted(pool.imap_unordered(square, range(50), 4)) == [x * x for x in range(50)]
    assert sorted(pool.imap_unordered(square, (x for x in range(9)))) == [x * x for x in range(9)]
    assert pool._processes == 2


def test_async_result_states_and_wait_timeout(pool, tmp_path):
    flag = str(tmp_path / "go")
    r = pool.apply_async(wait_for_file, (flag,))
    assert not r.ready()
    with pytest.raises(ValueError):
        r.successful()
    with pytest.raises(mp.TimeoutError):
        r.get(0.05)
    r.wait(0.05)
    m = pool.map_async(wait_for_file, [flag])
    with pytest.raises(mp.TimeoutError):
        m.get(0.05)
    it = pool.imap(wait_for_file, [flag])
    with pytest.raises(mp.TimeoutError):
        it.next(0.05)
    open(flag, "w").close()
    assert r.get(BOUND) == "slow" and r.ready() and r.successful()
    assert m.get(BOUND) == ["slow"] and m.successful()
    assert it.next(BOUND) == "slow"
    bad = pool.apply_async(boom, ("x",))
    bad.wait(BOUND)
    assert bad.ready() and not bad.successful()
    with pytest.raises(KeyError):
        bad.get()


def test_callbacks_run_once_each_before_the_result_is_ready(pool):
    seen = []
    active = [0, 0]
    lock = threading.Lock()

    def cb(value):
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.001)
        seen.append(value)
        with lock:
            active[0] -= 1

    rs = [pool.apply_async(square, (i,), callback=cb, error_callback=cb) for i in range(40)]
    rs.append(pool.apply_async(boom, ("k",), callback=cb, error_callback=cb))
    for r in rs:
        r.wait(BOUND)
    m = pool.map_async(square, range(10), 2, callback=cb, error_callback=cb)
    m.wait(BOUND)
    m2 = pool.map_async(boom, ["a"], callback=cb, error_callback=cb)
    m2.wait(BOUND)
    # Each callback ran before its result became ready, one at a time.
    assert sorted(v for v in seen if isinstance(v, int)) == sorted(i * i for i in range(40))
    assert [type(v) for v in seen if isinstance(v, Exception)] == [KeyError, KeyError]
    assert [x * x for x in range(10)] in seen
    assert active[1] == 1


def test_exception_keeps_its_type_and_remote_traceback():
    with pp.Pool(1) as p:
        with pytest.raises(KeyError) as info:
            p.apply(boom, ("remote",))
        assert type(info.value.__cause__) is mpp.RemoteTraceback
        assert "raise KeyError(msg)" in info.value.__cause__.tb
        got = []
        p.apply_async(boom, ("cb",), error_callback=got.append).wait(BOUND)
        assert type(got[0].__cause__) is mpp.RemoteTraceback
        with pytest.raises(KeyError):
            p.map(boom, ["a", "b"])


def test_map_async_raises_a_failing_chunk_and_imap_raises_at_its_place(pool):
    with pytest.raises(KeyError):
        pool.map_async(boom, ["a", "b", "c"], 1).get(BOUND)

    def gen():
        yield 1
        yield 2
        raise OSError("input broke")

    it = pool.imap(square, gen())
    assert [next(it), next(it)] == [1, 4]
    with pytest.raises(OSError, match="input broke"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(OSError):
        pool.map(square, gen())  # read in the caller, as CPython


def test_imap_unordered_yields_as_completed(pool, tmp_path):
    flag = str(tmp_path / "go")
    wait = functools.partial(wait_for_file, bound=15)
    it = pool.imap_unordered(wait, [flag] + [str(tmp_path)] * 5)
    # Five quick results arrive while the first task still waits.
    assert [next(it) for _ in range(5)] == ["slow"] * 5
    open(flag, "w").close()
    assert list(it) == ["slow"]


def test_initializer_runs_in_every_worker():
    with pp.Pool(2, initializer=set_init, initargs=("p",)) as p:
        got = {v for v in p.map(get_init, range(40), 1) if v}
        assert {v[0] for v in got} == {"p"}
    with pp.ThreadPool(3, initializer=set_init, initargs=("t",)) as t:
        assert t.apply(get_init)[0] == "t"


@pytest.mark.parametrize("how", [exit_now, kill_self])
def test_a_dead_worker_fails_only_its_task_and_the_pool_goes_on(how):
    with pp.Pool(2) as p:
        good = [p.apply_async(square, (i,)) for i in range(10)]
        errors = []
        dead = p.apply_async(how, (3,), error_callback=errors.append)
        with pytest.raises(WorkerDied):
            dead.get(BOUND)
        assert len(errors) == 1 and isinstance(errors[0], WorkerDied)
        assert [r.get(BOUND) for r in good] == [i * i for i in range(10)]
        with pytest.raises(WorkerDied):
            p.map(how, [3], 1)
        assert p.map(square, range(20)) == [x * x for x in range(20)]
        p.close()
        p.join()


def test_per_task_timeout_kills_that_worker():
    with pp.Pool(1) as p:
        before = p.apply(pid)
        r = p.apply_async(sleep_return, (BOUND,), timeout=0.5)
        # concurrent.futures' TimeoutError (the builtin from 3.11), as the executor's
        with pytest.raises(concurrent.futures.TimeoutError) as info:
            r.get(BOUND)
        assert not isinstance(info.value, mp.TimeoutError)
        assert p.apply(pid) != before
        assert p.map(sleep_return, [0, 0], timeout=30) == [0, 0]
    with pp.ThreadPool(1) as t, pytest.raises(ValueError):
        t.apply_async(square, (1,), timeout=1)


def test_maxtasksperchild_replaces_workers():
    with pp.Pool(1, maxtasksperchild=2) as p:
        pids = [p.apply(pid) for _ in range(6)]
    assert len(set(pids)) == 3
    assert all(pids.count(x) == 2 for x in set(pids))


@pytest.mark.parametrize("make", [pp.Pool, mp.Pool, pp.ThreadPool, mpp.ThreadPool],
                         ids=["plait", "mp", "plait-threads", "mp-threads"])
def test_bad_input_same_class_as_multiprocessing(make):
    for n in (0, -1):
        with pytest.raises(ValueError):
            make(n)
    with pytest.raises(TypeError):
        make(1, initializer=3)
    if make in (pp.Pool, mp.Pool):
        for value in (0, -1, 0.5, "12"):
            with pytest.raises(ValueError):
                make(1, maxtasksperchild=value)
    p = make(1)
    try:
        with pytest.raises(ValueError):
            p.imap(square, [1], chunksize=0)
        if make in (pp.Pool, pp.ThreadPool):  # CPython's map divides by it
            with pytest.raises(ValueError):
                p.map(square, [1], chunksize=0)
        with pytest.raises(ValueError):
            p.join()  # still running
        p.close()
        for call in (lambda: p.apply(square, (1,)), lambda: p.apply_async(square, (1,)),
                     lambda: p.map(square, [1]), lambda: p.imap(square, [1]),
                     lambda: p.imap_unordered(square, [1]), lambda: p.starmap(mul, [(1, 2)])):
            with pytest.raises(ValueError, match="Pool not running"):
                call()
        p.join()
        with pytest.raises(ValueError):
            with p:
                pass
    finally:
        p.terminate()
        p.join()


def test_close_then_join_drains_everything(pool):
    rs = [pool.apply_async(sleep_return, (0.01,)) for _ in range(10)]
    it = pool.imap(square, (x for x in range(30)))
    m = pool.map_async(square, range(30))
    pool.close()
    pool.join()
    assert all(r.ready() for r in rs) and m.ready()
    assert list(it) == [x * x for x in range(30)]


def test_terminate_ends_every_result_and_leaves_no_worker(tmp_path):
    before = set(children())  # other tests' pools may still be winding down
    p = pp.Pool(2)
    # No task can finish before terminate(): every one sleeps a minute.
    running = [p.apply_async(sleep_return, (BOUND,)) for _ in range(2)]
    queued = [p.apply_async(sleep_return, (BOUND,)) for i in range(10)]
    m = p.map_async(sleep_return, [BOUND] * 4, 1)
    time.sleep(0.2)
    p.terminate()
    p.join()
    for r in running + queued + [m]:
        assert r.ready()
        with pytest.raises((CancelledError, WorkerDied, mp.ProcessError, RuntimeError)):
            r.get(BOUND)
    assert set(children()) - before == set()


def test_terminate_on_threads_cancels_what_has_not_started():
    t = pp.ThreadPool(1)
    gate = threading.Event()
    first = t.apply_async(gate.wait, (BOUND,))
    queued = [t.apply_async(square, (i,)) for i in range(5)]
    t.terminate()
    gate.set()
    t.join()
    assert first.get(BOUND) is True
    for r in queued:
        with pytest.raises(CancelledError):
            r.get(BOUND)


def test_context_manager_terminates():
    with pp.Pool(1) as p:
        assert p.apply(square, (3,)) == 9
    assert p._state == mpp.TERMINATE
    p.join()
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply(square, (1,))


def test_a_running_pool_collected_warns():
    p = pp.ThreadPool(1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del p
        import gc

        gc.collect()
    assert any(issubclass(x.category, ResourceWarning) for x in w)


def test_no_worker_outlives_a_parent_that_never_closed(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        import os
        from plait.process import Pool

        def pid(_):
            return os.getpid()

        if __name__ == "__main__":
            p = Pool(2)
            print(sorted(set(p.map(pid, range(20), 1))))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=BOUND)
    assert out.returncode == 0, out.stderr
    for wpid in eval(out.stdout):
        assert_gone(wpid, f"worker {wpid} outlived its parent")


def test_a_forked_child_of_a_pool_owner_exits():
    # multiprocessing forks this process (its pool's executor alive): the
    # child must exit, not wait at exit for pools that are its parent's.
    with pp.Pool(1) as p:
        assert p.apply(square, (2,)) == 4
        child = mp.get_context("fork").Process(target=square, args=(3,))
        child.start()
        child.join(20)
        try:
            assert child.exitcode == 0
        finally:
            if child.exitcode is None:
                child.kill()
                child.join()


def test_processes_default_to_the_usable_cpus():
    from plait.futures._common import cpu_count

    with pp.ThreadPool() as t:
        assert t._processes == cpu_count() == len(os.sched_getaffinity(0))
        assert t.apply(square, (4,)) == 16


def test_ctrl_c_in_map_inside_with_kills_the_workers(tmp_path):
    # A real SIGINT while the main thread waits in map(): KeyboardInterrupt,
    # __exit__ terminates, the program ends and no worker survives it.
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from plait.process import Pool

        def hold(d):
            open(os.path.join(d, str(os.getpid())), "w").close()
            time.sleep(60)

        if __name__ == "__main__":
            d = sys.argv[1]
            with Pool(2) as p:
                r = p.map_async(hold, [d] * 8, 1)
                while len(os.listdir(d)) < 2:
                    time.sleep(0.01)
                print("ready", flush=True)
                r.get()
    """))
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(pids_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in err
    for name in os.listdir(pids_dir):
        assert_gone(int(name), f"worker {name} outlived the interrupted program")


def test_spawned_workers_and_a_task_limit_with_fork_context():
    with pp.Pool(2, context=mp.get_context("spawn"), initializer=set_init, initargs=("s",)) as p:
        assert p.map(square, range(10), 3) == [x * x for x in range(10)]
        assert p.apply(get_init)[0] == "s"
        with pytest.raises(WorkerDied):
            p.apply(exit_now, (1,))
        assert p.apply(square, (7,)) == 49
    # multiprocessing.Pool accepts a task limit with the fork context: so does plait's.
    with pp.Pool(1, maxtasksperchild=1, context=mp.get_context("fork")) as p:
        assert len({p.apply(pid) for _ in range(3)}) == 3
