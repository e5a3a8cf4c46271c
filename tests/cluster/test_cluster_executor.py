"""plait.cluster.ClusterExecutor: the executor contract of plait's process
pool on a dask.distributed LocalCluster (127.0.0.1 only). The behaviour tests
run on both backends from this one file (``local``: plait's
ProcessPoolExecutor, ``cluster``: ClusterExecutor); what only a cluster has
(a lost dask worker, classes of the client's ``__main__``) is cluster-only.
Every wait is bounded; no test asserts a duration."""

import importlib.util
import os
import signal
import sys
import time

import pytest

import concurrent.futures as cf
import plait.futures as pf
from _bounds import wait_until

pytestmark = pytest.mark.timeout(180)
BOUND = 60
HAVE_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
NO_DISTRIBUTED = "plait.cluster needs dask.distributed (pip install 'plait[cluster]')"


def square(x):
    return x * x


def add(x, y):
    return x + y


class PlainError(ValueError):
    pass


def raise_plain(msg):
    raise PlainError(msg)


# As a script's own class and function: cloudpickle sends both by value, as
# it does for a real __main__ (the dask worker's __main__ is another module).
class MainError(ValueError):
    pass


def raise_main(msg):
    raise MainError(msg)


def make_main_error(msg):
    return MainError(msg)


def raise_local(msg):
    class LocalError(ValueError):
        pass

    raise LocalError(msg)


MainError.__module__ = raise_main.__module__ = make_main_error.__module__ = "__main__"


def exit_now(code):
    os._exit(code)


def nap(seconds):
    time.sleep(seconds)
    return seconds


def write_mark(path):
    with open(path, "a") as f:
        f.write("ran\n")
    return path


def make(kind):
    if kind == "local":
        return pf.ProcessPoolExecutor(2)
    from plait.cluster import ClusterExecutor

    return ClusterExecutor(n_workers=2, threads_per_worker=1)


KINDS = ["local", pytest.param("cluster", marks=pytest.mark.skipif(
    not HAVE_DISTRIBUTED, reason=NO_DISTRIBUTED))]
cluster_only = pytest.mark.skipif(not HAVE_DISTRIBUTED, reason=NO_DISTRIBUTED)


@pytest.fixture(scope="module", params=KINDS)
def ex(request):
    executor = make(request.param)
    yield executor
    executor.shutdown(wait=True, kill_workers=True)


@pytest.fixture
def cluster():
    if not HAVE_DISTRIBUTED:
        pytest.skip(NO_DISTRIBUTED)
    executor = make("cluster")
    yield executor
    executor.shutdown(wait=True, kill_workers=True)


def descendants():
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(_cmdline(p))}


def _cmdline(p):
    try:
        return p.cmdline()
    except Exception:  # noqa: BLE001 - gone meanwhile
        return []


def wait_running(future):
    wait_until(future.running, "the task never started", BOUND)


# -- results and exceptions ------------------------------------------------

def test_results(ex):
    f = ex.submit(add, 2, y=3)
    assert isinstance(f, pf.Future) and isinstance(f, cf.Future)
    assert f.result(BOUND) == 5
    futures = [ex.submit(square, i) for i in range(20)]
    done, not_done = pf.wait(futures, timeout=BOUND)
    assert not not_done
    assert [f.result(0) for f in futures] == [i * i for i in range(20)]
    assert sorted(f.result(0) for f in pf.as_completed(futures, timeout=BOUND)) == \
        sorted(i * i for i in range(20))


def test_the_same_call_submitted_twice_runs_twice(ex, tmp_path):
    # No de-duplication by arguments (dask's submit would run it once).
    path = str(tmp_path / "log")
    futures = [ex.submit(write_mark, path) for _ in range(3)]
    assert list(ex.map(write_mark, [path] * 3, timeout=BOUND)) == [path] * 3
    assert [f.result(BOUND) for f in futures] == [path] * 3
    assert open(path).read() == "ran\n" * 6


def test_exception_keeps_type_and_remote_traceback(ex):
    exc = ex.submit(raise_plain, "bad 1").exception(BOUND)
    assert type(exc) is PlainError and str(exc) == "bad 1"
    assert isinstance(exc.__cause__, cf.process._RemoteTraceback)
    assert "raise_plain" in str(exc.__cause__)


def raise_interrupt():
    raise KeyboardInterrupt("in the call")


def test_system_exit_and_keyboard_interrupt_are_the_calls_outcome(ex):
    # As CPython's pool: the call's exception, not a dead (dask) worker.
    exc = ex.submit(sys.exit, 3).exception(BOUND)
    assert type(exc) is SystemExit
    exc = ex.submit(raise_interrupt).exception(BOUND)
    assert type(exc) is KeyboardInterrupt and str(exc) == "in the call"
    with pytest.raises(SystemExit):
        list(ex.map(sys.exit, [0, 4], timeout=BOUND))
    assert ex.submit(square, 5).result(BOUND) == 25
    if isinstance(ex, pf.ProcessPoolExecutor):
        return  # the rest depends on what this pytest process imported before
    # Fields an exception's __init__ sets are kept: the process running a
    # cluster call has not imported distributed (whose tblib pickling
    # rebuilds exceptions without __init__; a local pool forked from a
    # process that imported it loses them, as CPython's does).
    assert ex.submit(sys.exit, 3).exception(BOUND).code == 3
    assert ex.submit(imported, "distributed").result(BOUND) is False
    exc = ex.submit(raise_stop, 5).exception(BOUND)
    assert type(exc) is StopIteration and exc.value == 5


def imported(module):
    return module in sys.modules


def raise_stop(value):
    raise StopIteration(value)


@cluster_only
def test_main_class_exception_comes_back(cluster):
    # The client's __main__ classes and local classes come back by value:
    # results and exceptions travel with cloudpickle (plait.cluster._outcome).
    # plait's local pool keeps CPython's plain pickle for what it sends back
    # (CPython's pool tests expect a result that cannot be pickled to fail).
    ex = cluster
    exc = ex.submit(raise_main, "bad 2").exception(BOUND)
    assert type(exc) is MainError and str(exc) == "bad 2"
    assert "raise_main" in str(exc.__cause__)
    value = ex.submit(make_main_error, "as a result").result(BOUND)
    assert type(value) is MainError and str(value) == "as a result"
    # A lambda and a closure travel too, and a class made in the worker.
    k = 7
    assert ex.submit(lambda x: x + k, 1).result(BOUND) == 8
    exc = ex.submit(raise_local, "bad 3").exception(BOUND)
    assert type(exc).__name__ == "LocalError" and isinstance(exc, ValueError)
    assert str(exc) == "bad 3"


def test_schedule_delay(ex, tmp_path):
    f = ex.schedule(add, (2, 3), delay=0.2)
    assert isinstance(f, pf.Future)
    assert f.result(BOUND) == 5
    mark = tmp_path / "delayed"
    late = ex.schedule(write_mark, (str(mark),), delay=BOUND)
    assert late.cancel() and late.cancelled()
    with pytest.raises(cf.CancelledError):
        late.result(0)
    # A delayed call that did run: its mark is there; the cancelled one's never.
    ran = tmp_path / "ran"
    assert ex.schedule(write_mark, (str(ran),), delay=0.05).result(BOUND) == str(ran)
    assert ran.exists() and not mark.exists()
    with pytest.raises(ValueError):
        ex.schedule(add, (1, 2), delay=-1)


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_waits_for_delayed_calls(kind):
    executor = make(kind)
    f = executor.schedule(square, (4,), delay=0.3)
    g = executor.schedule(square, (5,), delay=BOUND)
    g.cancel()
    executor.shutdown(wait=True)
    assert f.result(0) == 16 and g.cancelled()
    with pytest.raises(RuntimeError):
        executor.schedule(square, (1,), delay=0.1)


def buffer_info(data, other=None):
    return type(data).__name__, len(bytes(data)), bytes(data[:4]), other is None or bytes(other) == bytes(data)


@cluster_only
def test_large_buffers_are_scattered_once(cluster):
    big = b"abcd" * (1 << 18)  # 1 MiB
    client = cluster._client
    scattered = []
    real_scatter = client.scatter

    def spy(data, *args, **kwargs):
        scattered.append(len(data))
        return real_scatter(data, *args, **kwargs)

    client.scatter = spy
    try:
        # The same object twice in one call: one scatter.
        assert cluster.submit(buffer_info, big, big).result(BOUND)[1:] == (len(big), b"abcd", True)
        assert len(scattered) == 1
        # bytearray and memoryview, as keywords too.
        assert cluster.submit(buffer_info, bytearray(big)).result(BOUND)[1] == len(big)
        assert cluster.submit(buffer_info, data=memoryview(big)).result(BOUND)[1:3] == \
            (len(big), b"abcd")
        assert len(scattered) == 3
        # A map: the same object in every item is scattered once.
        del scattered[:]
        results = list(cluster.map(buffer_info, [big] * 10, timeout=BOUND, chunksize=3))
        assert [r[1] for r in results] == [len(big)] * 10
        assert len(scattered) == 1
        # Small ones travel with the task.
        del scattered[:]
        assert cluster.submit(buffer_info, b"xy" * 10).result(BOUND)[1] == 20
        assert not scattered
    finally:
        del client.scatter


CLIENT_SCRIPT = """
import os, sys
with open(os.environ["PLAIT_TEST_MARKS"], "a") as f:
    with open("/proc/self/cmdline", "rb") as c:
        f.write(c.read().replace(b"\\0", b" ").decode().replace(" ", "_") + "\\n")


def double(x):
    return 2 * x


if __name__ == "__main__":
    from plait.cluster import ClusterExecutor

    with ClusterExecutor(n_workers=1, threads_per_worker=2) as ex:
        assert ex.submit(double, 21).result(60) == 42
        assert list(ex.map(double, range(4), timeout=60)) == [0, 2, 4, 6]
    print("ok")
"""


@cluster_only
def test_plait_workers_do_not_load_the_client_script(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    marks = tmp_path / "marks"
    env = dict(os.environ, PLAIT_TEST_MARKS=str(marks))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=BOUND * 2, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout
    loaded_by = marks.read_text().split()
    # The client itself (and dask's own spawned processes, if any) only.
    assert any(str(script) in a for a in loaded_by)
    assert not [a for a in loaded_by if "plait._worker" in a], loaded_by


# -- failures of the task's process -----------------------------------------

def test_worker_died_fails_only_its_task(ex):
    exc = ex.submit(exit_now, 3).exception(BOUND)
    assert isinstance(exc, pf.WorkerDied)
    assert "code 3" in str(exc)
    assert ex.submit(square, 5).result(BOUND) == 25


def test_time_limit(ex):
    f = ex.schedule(nap, (BOUND * 2,), timeout=1.0)
    assert isinstance(f.exception(BOUND), cf.TimeoutError)
    assert ex.submit(square, 6).result(BOUND) == 36


# -- cancel -------------------------------------------------------------------

def test_cancel(ex, tmp_path):
    # Two workers busy; a third task waits and is cancelled: it never runs.
    busy = [ex.submit(nap, BOUND * 2) for _ in range(2)]
    for f in busy:
        wait_running(f)
    mark = tmp_path / "mark"
    queued = ex.submit(write_mark, str(mark))
    assert queued.cancel() is True
    assert queued.cancelled()
    with pytest.raises(cf.CancelledError):
        queued.result(0)
    # A running task: cancel() is refused, cancel(kill=True) stops it.
    assert busy[0].cancel() is False
    assert busy[0].running()
    for f in busy:
        assert f.cancel(kill=True) is True
        assert f.cancelled()
    assert ex.submit(square, 4).result(BOUND) == 16
    assert not mark.exists()


def test_kill_reaches_only_the_holding_worker(cluster):
    busy = [cluster.submit(nap, BOUND * 2) for _ in range(2)]
    for f in busy:
        wait_running(f)
    client = cluster._client
    sent = []
    real_run = client.run

    def spy(fn, *args, **kwargs):
        sent.append(kwargs.get("workers"))
        return real_run(fn, *args, **kwargs)

    client.run = spy
    try:
        assert busy[0].cancel(kill=True) is True
    finally:
        del client.run
    assert len(sent) == 1 and sent[0] is not None and len(sent[0]) == 1
    assert sent[0][0] in client.nthreads()
    # The other call runs on.
    assert busy[1].running() and not busy[1].done()
    assert busy[1].cancel(kill=True) is True


# -- map --------------------------------------------------------------------

def test_map_chunksize(ex):
    assert list(ex.map(square, range(100), timeout=BOUND, chunksize=7)) == \
        [i * i for i in range(100)]
    assert list(ex.map(add, range(10), range(10, 20), chunksize=3)) == \
        [a + b for a, b in zip(range(10), range(10, 20))]
    assert list(ex.map(square, [], chunksize=4)) == []
    with pytest.raises(ValueError):
        ex.map(square, range(3), chunksize=0)


def test_map_raises_at_the_failing_item(ex):
    # The local pool runs a chunk as one task (its first item raises), the
    # cluster runs each item as its own plait task (item 5 raises): both give
    # the results before the failure, in order, then the exception.
    got = []
    with pytest.raises(PlainError):
        for value in ex.map(square_or_raise, range(10), chunksize=4):
            got.append(value)
    assert got == [i * i for i in range(len(got))] and len(got) in (4, 5)


def square_or_raise(x):
    if x == 5:
        raise PlainError("five")
    return x * x


def test_map_timeout(ex):
    # The overall deadline, as CPython's (the nap then ends on its own).
    results = ex.map(nap, [3], timeout=0.5, chunksize=1)
    with pytest.raises(cf.TimeoutError):
        next(results)


@cluster_only
def test_map_default_chunksize(cluster):
    # 2 threads: 2,000 items go as chunks of 250, results in order.
    assert cluster._default_chunksize([range(2000)]) == 250
    assert cluster._default_chunksize([iter(range(5))]) == 64
    assert list(cluster.map(square, range(2000))) == [i * i for i in range(2000)]


# -- a lost dask worker -------------------------------------------------------

@cluster_only
def test_lost_dask_worker(cluster, tmp_path):
    client = cluster._client
    running = cluster.submit(nap, BOUND * 2)
    wait_running(running)
    holder = next(addr for addr, keys in client.processing().items()
                  if running._plait_task.key in keys)
    # Queued behind it on the same worker: never started, so resubmitted.
    queued = [cluster.submit(write_mark, str(tmp_path / ("q%d" % i))) for i in range(3)]
    pid = client.run(os.getpid, workers=[holder])[holder]
    os.kill(pid, signal.SIGKILL)
    exc = running.exception(BOUND)
    assert isinstance(exc, pf.WorkerDied) and "was lost" in str(exc)
    for i, f in enumerate(queued):
        assert f.result(BOUND) == str(tmp_path / ("q%d" % i))
        assert (tmp_path / ("q%d" % i)).read_text() == "ran\n"  # exactly once


# -- shutdown ---------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_leaves_no_process(kind):
    before = descendants()
    executor = make(kind)
    assert executor.submit(square, 3).result(BOUND) == 9
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)
    wait_until(lambda: descendants() <= before, "processes left after shutdown", BOUND)


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_kill_workers(kind):
    before = descendants()
    executor = make(kind)
    f = executor.submit(nap, BOUND * 2)
    wait_running(f)
    executor.shutdown(wait=True, kill_workers=True)
    assert isinstance(f.exception(0), pf.WorkerDied)
    wait_until(lambda: descendants() <= before, "processes left after shutdown", BOUND)


@pytest.mark.parametrize("kind", KINDS)
def test_context_manager(kind):
    with make(kind) as executor:
        futures = [executor.submit(nap, 0.2) for _ in range(4)]
    assert all(f.result(0) == 0.2 for f in futures)


def test_make_executor(monkeypatch):
    from plait.cluster import make_executor

    monkeypatch.delenv("PLAIT_EXECUTOR", raising=False)
    with make_executor(max_workers=1) as executor:
        assert isinstance(executor, pf.ProcessPoolExecutor)
    with pytest.raises(ValueError):
        make_executor("elsewhere")
    if HAVE_DISTRIBUTED:
        from plait.cluster import ClusterExecutor

        monkeypatch.setenv("PLAIT_EXECUTOR", "cluster")
        with make_executor(n_workers=1) as executor:
            assert isinstance(executor, ClusterExecutor)
            assert executor.submit(square, 2).result(BOUND) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_cancel_futures(kind, tmp_path):
    # Both workers busy; queued calls are cancelled and never run, the
    # running ones finish.
    executor = make(kind)
    busy = [executor.submit(nap, 1.0) for _ in range(2)]
    for f in busy:
        wait_running(f)
    queued = [executor.submit(write_mark, str(tmp_path / ("m%d" % i))) for i in range(4)]
    executor.shutdown(wait=True, cancel_futures=True)
    assert [f.result(0) for f in busy] == [1.0, 1.0]
    assert all(f.cancelled() for f in queued)
    assert not any((tmp_path / ("m%d" % i)).exists() for i in range(4))


# -- the futures in other places ----------------------------------------------

def test_asyncio_accepts_the_futures(ex):
    import asyncio

    async def main():
        loop = asyncio.get_running_loop()
        a = await asyncio.wrap_future(ex.submit(square, 3))
        b = await loop.run_in_executor(ex, square, 4)
        return a, b

    assert asyncio.run(main()) == (9, 16)


def test_futures_from_both_kinds_mix_in_wait():
    if not HAVE_DISTRIBUTED:
        pytest.skip(NO_DISTRIBUTED)
    with make("local") as local, make("cluster") as cluster:
        futures = [local.submit(square, 2), cluster.submit(square, 3)]
        done, not_done = cf.wait(futures, timeout=BOUND)
        assert not not_done
        assert sorted(f.result(0) for f in pf.as_completed(futures, timeout=BOUND)) == [4, 9]


# -- bad input ----------------------------------------------------------------

def test_bad_input_raises_what_the_local_pool_raises(ex):
    with pytest.raises(TypeError):
        ex.submit()
    with pytest.raises(TypeError):
        ex.schedule(square, (1,), timeout="soon")
    with pytest.raises(ValueError):
        ex.schedule(square, (1,), delay=-1)
    with pytest.raises(TypeError):
        ex.schedule(square, 5)  # args must be iterable
    with pytest.raises(ValueError):
        ex.map(square, [1], buffersize=0)
    # A call that is not callable fails in its future, as on CPython's pool.
    assert isinstance(ex.submit(5).exception(BOUND), TypeError)
    assert ex.submit(square, 3).result(BOUND) == 9


@cluster_only
def test_bad_constructor_arguments():
    from plait.cluster import ClusterExecutor

    with pytest.raises(ValueError):
        ClusterExecutor(retries=-1)
    with pytest.raises(TypeError):
        ClusterExecutor(retries=1.5)
    with pytest.raises(TypeError):
        ClusterExecutor(task_timeout="1")
    with pytest.raises(TypeError):
        ClusterExecutor("tcp://127.0.0.1:1", client=object())


# -- an existing cluster --------------------------------------------------------

def worker_plugins(dask_worker=None):
    return sorted(name for name in dask_worker.plugins if name.startswith("plait-"))


@cluster_only
def test_an_existing_cluster_is_used_and_left_running():
    import dask
    import distributed
    from plait.cluster import ClusterExecutor

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address="127.0.0.1:0")
    try:
        with ClusterExecutor(cluster.scheduler_address) as ex:
            assert ex.submit(square, 7).result(BOUND) == 49
            assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
        with distributed.Client(cluster, set_as_default=False) as client:
            with ClusterExecutor(client=client) as ex:
                assert ex.submit(exit_now, 4).exception(BOUND).__class__ is pf.WorkerDied
                assert ex.submit(square, 8).result(BOUND) == 64
            # The client and its cluster still work; no plait pool is left
            # in the dask worker.
            assert client.submit(square, 9, pure=False).result(BOUND) == 81
            assert len(client.nthreads()) == 1
            assert list(client.run(worker_plugins).values()) == [[]]
    finally:
        cluster.close()


# -- retries -------------------------------------------------------------------

def run_twice_or_nap(path):
    """The first run records itself and naps (its dask worker is killed
    then); the second records itself and returns how many runs there were."""
    with open(path, "a") as f:
        f.write("run\n")
    runs = open(path).read().count("run")
    if runs == 1:
        time.sleep(BOUND * 2)
    return runs


@cluster_only
def test_retries_rerun_a_call_of_a_lost_worker(tmp_path):
    from plait.cluster import ClusterExecutor

    path = str(tmp_path / "runs")
    with ClusterExecutor(n_workers=2, threads_per_worker=1, retries=1) as ex:
        client = ex._client
        f = ex.submit(run_twice_or_nap, path)
        wait_running(f)
        wait_until(lambda: os.path.exists(path), "the call never ran", BOUND)
        holder = next(addr for addr, keys in client.processing().items()
                      if f._plait_task.key in keys)
        pid = client.run(os.getpid, workers=[holder])[holder]
        os.kill(pid, signal.SIGKILL)
        assert f.result(BOUND) == 2
    assert open(path).read() == "run\nrun\n"


# -- fork ------------------------------------------------------------------------

@cluster_only
def test_a_forked_child_gets_a_refusal_not_a_hang(cluster):
    # The child's copy of the client has no event loop thread: the copy of
    # the executor refuses work (as plait's local pool does in a forked
    # child), cancel() cannot reach the parent's call, shutdown() leaves the
    # parent's cluster alone; done futures read as in the parent.
    done = cluster.submit(square, 6)
    assert done.result(BOUND) == 36
    running = cluster.submit(nap, 2)
    wait_running(running)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            assert done.result(0) == 36
            assert running.cancel() is False and running.cancel(kill=True) is False
            try:
                cluster.submit(square, 1)
            except cf.process.BrokenProcessPool as exc:
                assert "forked" in str(exc)
            else:
                raise AssertionError("submit in a forked child did not refuse")
            cluster.shutdown(wait=True)
            code = 0
        finally:
            os._exit(code)
    reaped = []
    try:
        wait_until(lambda: reaped.append(os.waitpid(pid, os.WNOHANG)) or reaped[-1][0] == pid,
                   "the forked child hung", BOUND)
    finally:
        if not reaped or reaped[-1][0] != pid:
            os.kill(pid, signal.SIGKILL)  # our own child, stuck
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(reaped[-1][1]) == 0
    # The parent's executor is untouched by the child's shutdown.
    assert running.result(BOUND) == 2
    assert cluster.submit(square, 7).result(BOUND) == 49


# -- network hygiene ------------------------------------------------------------

def listening_addresses(pids):
    import psutil

    found = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            conns = (getattr(proc, "net_connections", None) or proc.connections)(kind="inet")
        except psutil.Error:
            continue  # gone meanwhile
        found |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return found


@cluster_only
def test_the_private_cluster_listens_on_loopback_only(cluster):
    import psutil

    assert cluster.submit(square, 2).result(BOUND) == 4
    pids = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    listening = listening_addresses(pids)
    # The scheduler, its dashboard, each nanny and worker: something listens ...
    assert len(listening) >= 4, listening
    # ... and only on loopback (this process's other sockets included).
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening
