"""A worker's crash log has no name: faulthandler writes to a memfd the pool
created (inherited by a spawned worker, sent with the zygote's fork request
to a forked one), and the supervisor reads its own copy for the
``WorkerDied`` message. Nothing lands at a guessable path in the shared temp
directory, and a symlink planted at the old predictable name
(``plait-worker-<pid>-<id>-<fd>.log``) is never followed."""

import os
import subprocess
import sys
import tempfile
import textwrap

import multiprocessing as mp
import plait.futures as pf
import pytest

pytestmark = pytest.mark.timeout(120)
BOUND = 60


def ctypes_segfault():
    import ctypes

    ctypes.string_at(0)


def faulthandler_segfault():
    import faulthandler

    faulthandler._sigsegv()


def square(x):
    return x * x


def _plait_files():
    d = tempfile.gettempdir()
    return {n for n in os.listdir(d) if n.startswith("plait")}


@pytest.fixture(params=["fork", "spawn"])
def pool(request):
    with pf.ProcessPoolExecutor(2, mp_context=mp.get_context(request.param)) as ex:
        yield ex


@pytest.mark.parametrize("task", [ctypes_segfault, faulthandler_segfault])
def test_segfault_message_carries_the_traceback(pool, task):
    before = _plait_files()
    f = pool.submit(task)
    with pytest.raises(pf.WorkerDied) as info:
        f.result(BOUND)
    msg = str(info.value)
    assert "SIGSEGV" in msg
    assert "its last traceback" in msg
    assert task.__name__ in msg  # the task's frame, from faulthandler
    # the pool replaced the worker and goes on
    assert pool.submit(square, 7).result(BOUND) == 49
    assert _plait_files() <= before


def test_each_death_reports_its_own_traceback(pool):
    # Two deaths in a row on fresh workers: each message has its own task,
    # not a stale log of the previous one.
    first = pool.submit(ctypes_segfault)
    with pytest.raises(pf.WorkerDied) as a:
        first.result(BOUND)
    second = pool.submit(faulthandler_segfault)
    with pytest.raises(pf.WorkerDied) as b:
        second.result(BOUND)
    assert "ctypes_segfault" in str(a.value)
    assert "faulthandler_segfault" in str(b.value)
    assert "ctypes_segfault" not in str(b.value)


def worker_env():
    return {k: v for k, v in os.environ.items() if k.startswith("PLAIT_WORKER")}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_environment_names_no_crash_log(method):
    # No path in the worker's environment; the spawned worker's descriptor
    # number is removed once faulthandler has it.
    with pf.ProcessPoolExecutor(1, mp_context=mp.get_context(method)) as ex:
        assert ex.submit(worker_env).result(BOUND) == {}


SCRIPT = textwrap.dedent(
    """
    import ctypes, os, sys, tempfile
    import multiprocessing as mp
    import plait.futures as pf

    def crash():
        ctypes.string_at(0)

    def main():
        tmp = tempfile.gettempdir()
        target = sys.argv[1]
        planted = []
        # Every name the old code could pick for this process: worker ids
        # 0..7, socket descriptors 3..63.
        for wid in range(8):
            for fd in range(3, 64):
                name = os.path.join(tmp, "plait-worker-%d-%d-%d.log" % (os.getpid(), wid, fd))
                os.symlink(target, name)
                planted.append(name)
        messages = []
        for method in ("fork", "spawn"):
            with pf.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
                for _ in range(2):
                    try:
                        ex.submit(crash).result(60)
                    except pf.WorkerDied as exc:
                        messages.append(str(exc))
        assert len(messages) == 4, messages
        assert all("crash" in m for m in messages), messages
        for name in planted:
            assert os.path.islink(name) and os.readlink(name) == target, name
            os.unlink(name)
        print("OK")

    if __name__ == "__main__":
        main()
    """
)


def test_symlink_at_the_old_name_is_not_followed(tmp_path):
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    script = tmp_path / "crashes.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TMPDIR=str(shared))
    out = subprocess.run(
        [sys.executable, str(script), str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND * 2,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"
    assert target.read_text() == "precious\n"
    # nothing else landed in the (private) temp directory either
    assert sorted(os.listdir(shared)) == []
