"""plait.futures.ProcessPoolExecutor with large buffers: they travel through
recycled shared-memory segments (see ``plait._wire`` and
``crates/plait-core/src/ipc/shm.rs``). These tests check that reuse never hands a
reader someone else's bytes, that nothing is left behind — in ``/dev/shm``,
in the parent's mappings or descriptors — after results are read, dropped
unread, cancelled, or their worker killed, and that out-of-band buffers of
every kind still arrive intact. Every wait is bounded; no timing asserts."""

import gc
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import concurrent.futures as cf
import plait.futures as pf

pytestmark = pytest.mark.timeout(180)
BOUND = 60
MiB = 1 << 20


def echo(x):
    return x


def digest_and_echo(x):
    return hashlib.sha256(x).hexdigest(), x


def make(seed, size):
    # Distinct, position-dependent contents, so a mix-up cannot go unseen.
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    return (block * (size // len(block) + 1))[:size]


def pid():
    return os.getpid()


def pid_and_big(seed):
    return os.getpid(), make(seed, 2 * MiB)


def sleep_then(t, x):
    time.sleep(t)
    return x


def kill_self_after(t):
    time.sleep(t)
    os.kill(os.getpid(), signal.SIGKILL)


class Blob:
    """A numpy-like object: its buffer pickles out-of-band (protocol 5)."""

    def __init__(self, data):
        self.data = bytearray(data)

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return Blob, (pickle.PickleBuffer(self.data),)
        return Blob, (bytes(self.data),)

    def __eq__(self, other):
        return type(other) is Blob and self.data == other.data


def grow_blob(b):
    b.data += b"!"
    return b


def shm_names(*pids):
    prefixes = tuple(f"plait-{p}-" for p in pids)
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefixes))


def own_segment_inodes():
    """Inodes of the memfd segments this process itself holds open (its
    pool)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:plait"):
                out.add(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except OSError:
            pass
    return out


def foreign_segment_mappings():
    """Mappings of plait segments this process does not own: workers'
    segments still mapped here (results not yet consumed or dropped)."""
    own = own_segment_inodes()
    with open("/proc/self/maps") as f:
        lines = [ln.split() for ln in f if "/memfd:plait" in ln]
    return [ln for ln in lines if int(ln[4]) not in own]


def wait_done(fs):
    # Not cf.wait: a future someone waits on through its _condition is
    # decoded as soon as it finishes; these tests want results unread.
    deadline = time.monotonic() + BOUND
    while not all(f.done() for f in fs) and time.monotonic() < deadline:
        time.sleep(0.01)


def settle(check, bound=10.0):
    deadline = time.monotonic() + bound
    while True:
        gc.collect()
        # A reference the pool's thread dropped without the interpreter is
        # released on the next call into plait.
        pf.Future().done()
        value = check()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def pool():
    ex = pf.ProcessPoolExecutor(2)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def test_many_concurrent_round_trips_keep_their_own_bytes(pool):
    # More calls in flight than the pool keeps segments (overflow to named
    # files) and results left unread while more arrive (workers' one-off
    # segments): every value must come back exactly as sent.
    sizes = [MiB, 3 * MiB, 64 << 10, 2 * MiB + 17, (64 << 10) - 1]
    jobs = [(i, make(i, sizes[i % len(sizes)])) for i in range(40)]
    fs = [(i, data, pool.submit(digest_and_echo, data)) for i, data in jobs]
    for i, data, f in fs:
        digest, back = f.result(BOUND)
        assert digest == hashlib.sha256(data).hexdigest(), f"call {i} was read corrupted by the worker"
        assert back == data, f"result {i} came back corrupted"
    # Round trips one at a time reuse the same segments: still exact.
    for i in range(20):
        data = make(1000 + i, 5 * MiB)
        assert pool.submit(echo, data).result(BOUND) == data
    assert settle(foreign_segment_mappings) == []
    assert settle(lambda: shm_names(os.getpid())) == []


def test_results_read_in_any_order_and_from_many_threads(pool):
    fs = [pool.submit(echo, make(i, MiB + i)) for i in range(24)]
    with cf.ThreadPoolExecutor(4) as readers:
        outs = list(readers.map(lambda f: f.result(BOUND), reversed(fs)))
    for i, out in enumerate(reversed(outs)):
        assert out == make(i, MiB + i)


def test_buffer_kinds_still_work(pool):
    big = make(7, 3 * MiB)
    arr = bytearray(big)
    out = pool.submit(echo, [arr, b"small", {"k": big}, (big,)]).result(BOUND)
    assert type(out[0]) is bytearray and out[0] == arr
    assert out[1] == b"small" and out[2]["k"] == big and out[3] == (big,)
    # A numpy-like object whose buffer pickles out-of-band, both ways; the
    # worker's copy is its own (mutating it does not touch ours).
    blob = Blob(big)
    back = pool.submit(grow_blob, blob).result(BOUND)
    assert back.data == big + b"!" and blob.data == big
    # Several out-of-band buffers in one message, of mixed sizes.
    many = [Blob(make(i, (i + 1) * 100_000)) for i in range(6)]
    assert pool.submit(echo, many).result(BOUND) == many
    # A memoryview is pickled by the caller's own means: as bytes.
    assert pool.submit(echo, bytes(memoryview(big)[::2])).result(BOUND) == big[::2]


def test_unread_results_and_cancelled_calls_leave_nothing():
    with pf.ProcessPoolExecutor(1) as ex:
        worker = ex.submit(pid).result(BOUND)
        fs = [ex.submit(pid_and_big, i) for i in range(12)]
        wait_done(fs)
        assert foreign_segment_mappings()  # held for the unread results
        # One read, the rest dropped unread.
        assert fs[3].result(BOUND) == (worker, make(3, 2 * MiB))
        del fs
        # Calls cancelled while queued behind a busy worker.
        blocker = ex.submit(sleep_then, 0.5, None)
        queued = [ex.submit(echo, make(i, 2 * MiB)) for i in range(12)]
        for f in queued:
            f.cancel()
        blocker.result(BOUND)
        del queued
        assert settle(foreign_segment_mappings) == []
        assert settle(lambda: shm_names(os.getpid(), worker)) == []
        # The pool still works, with the recycled segments.
        data = make(99, 4 * MiB)
        assert ex.submit(echo, data).result(BOUND) == data
    assert settle(foreign_segment_mappings) == []
    assert settle(lambda: shm_names(os.getpid(), worker)) == []


def test_a_result_outlives_its_worker():
    # Each worker exits after one task: its segment must stay readable
    # until the parent reads the result, and then go.
    with pf.ProcessPoolExecutor(2, max_tasks_per_child=1) as ex:
        fs = [ex.submit(pid_and_big, i) for i in range(6)]
        wait_done(fs)
        time.sleep(0.3)  # let the workers exit before anything is read
        pids = set()
        for i, f in enumerate(fs):
            p, data = f.result(BOUND)
            pids.add(p)
            assert data == make(i, 2 * MiB)
    assert len(pids) == 6
    assert settle(foreign_segment_mappings) == []
    assert settle(lambda: shm_names(os.getpid(), *pids)) == []


def test_killed_worker_and_cancel_while_running_leave_nothing():
    with pf.ProcessPoolExecutor(2) as ex:
        worker_pids = {ex.submit(pid).result(BOUND) for _ in range(4)}
        dying = ex.submit(kill_self_after, 0.2)
        with pytest.raises(pf.BrokenProcessPool):
            dying.result(BOUND)
        running = ex.submit(sleep_then, 30, make(5, 2 * MiB))
        time.sleep(0.5)
        assert running.cancel(kill=True) or running.done()
        data = make(6, 3 * MiB)
        assert ex.submit(echo, data).result(BOUND) == data
        worker_pids |= {ex.submit(pid).result(BOUND) for _ in range(4)}
    assert settle(foreign_segment_mappings) == []
    assert settle(lambda: shm_names(os.getpid(), *worker_pids)) == []


def test_shutdown_with_large_calls_queued_leaves_nothing():
    ex = pf.ProcessPoolExecutor(1)
    worker = ex.submit(pid).result(BOUND)
    ex.submit(sleep_then, 0.3, None)
    fs = [ex.submit(echo, make(i, 2 * MiB)) for i in range(15)]
    ex.shutdown(wait=True, cancel_futures=True)
    for i, f in enumerate(fs):
        if not f.cancelled():
            assert f.result(BOUND) == make(i, 2 * MiB)
    del fs
    assert settle(foreign_segment_mappings) == []
    assert settle(lambda: shm_names(os.getpid(), worker)) == []


def test_a_forked_child_uses_its_own_segments(pool):
    data = make(1, 4 * MiB)
    assert pool.submit(echo, data).result(BOUND) == data
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's exit code is the result
        code = 1
        try:
            with pf.ProcessPoolExecutor(1) as ex:
                mine = make(2, 4 * MiB)
                code = 0 if ex.submit(echo, mine).result(BOUND) == mine else 3
        finally:
            os._exit(code)
    # Meanwhile the parent keeps using its own segments.
    for i in range(5):
        d = make(10 + i, 4 * MiB)
        assert pool.submit(echo, d).result(BOUND) == d
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_parent_killed_with_sigkill_leaves_nothing_in_dev_shm(tmp_path):
    script = tmp_path / "victim.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            import plait.futures as pf

            def hold(t, x):
                time.sleep(t)
                return x

            def pid():
                return os.getpid()

            if __name__ == "__main__":
                ex = pf.ProcessPoolExecutor(2)
                pids = {ex.submit(pid).result(60) for _ in range(4)}
                big = os.urandom(2 << 20)
                # Results waiting unread, calls running and queued.
                done = [ex.submit(hold, 0, big) for _ in range(2)]
                while not all(f.done() for f in done):
                    time.sleep(0.01)
                fs = [ex.submit(hold, 5, big) for _ in range(4)]
                time.sleep(0.5)
                print(os.getpid(), " ".join(map(str, pids)), flush=True)
                os.kill(os.getpid(), 9)
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=BOUND, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") for p in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert settle(lambda: shm_names(*pids)) == []
