"""``python -m plait inspect``: the agent thread, its socket, and the CLI.

Every test that starts a process kills its own child at the end (SIGKILL,
the test's own child only); the command under test never signals anyone.
Tests that read report content need ``plait.debug.snapshot`` (the graph,
written separately) and are skipped where it is not there yet.
"""

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import plait
from plait import _plait
from plait.debug import _inspect

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED and /proc"),
]


def _debug_module():
    try:
        import plait.debug as debug
    except ImportError:
        return None
    return debug


def has_snapshot():
    debug = _debug_module()
    return debug is not None and hasattr(debug, "snapshot")


def has_real_graph():
    # The real plait.debug (SPEC.md) has DeadlockError; a stand-in does not.
    debug = _debug_module()
    return has_snapshot() and hasattr(debug, "DeadlockError")


needs_snapshot = pytest.mark.skipif(not has_snapshot(), reason="plait.debug.snapshot not built yet")
needs_graph = pytest.mark.skipif(not has_real_graph(), reason="plait.debug's graph not built yet")


class Child:
    """A Python child running ``script``; it prints one JSON line
    (``{"pid": .., "path": ..}`` plus whatever the script adds) when ready."""

    def __init__(self, script, env=None, args=()):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, *args, "-c", textwrap.dedent(script)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=full_env)
        line = self.proc.stdout.readline()
        assert line, f"child failed to start: {self.proc.stderr.read()}"
        self.info = json.loads(line)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def finish(self):
        """Close its stdin (scripts that wait on it then exit normally)."""
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, at the end of the test
        self.proc.communicate(timeout=30)


READY = """
    import json, os, sys
    from plait import _plait
    def ready(**extra):
        st = _plait._agent_status()
        print(json.dumps({"pid": os.getpid(), "path": st["path"], "error": st["error"], **extra}),
              flush=True)
"""

WAIT_STDIN = READY + """
    ready()
    sys.stdin.read()
"""

DEADLOCKED = READY + """
    import threading, time
    import plait
    lock = plait.Lock()
    taken = threading.Event()
    def holder():
        lock.acquire()
        taken.set()
        threading.Event().wait()
    threading.Thread(target=holder, name="holder-thread", daemon=True).start()
    taken.wait()
    ready()
    lock.acquire()  # blocks for ever: the holder never releases
"""

# Holds the GIL for ever: ctypes.PyDLL calls do not release it.
GIL_HELD = READY + """
    import ctypes
    ready()
    ctypes.PyDLL(None).sleep(600)
"""


def cli(*args, timeout=60):
    p = subprocess.run([sys.executable, "-m", "plait", "inspect", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def child_factory():
    children = []

    def make(script, **kw):
        c = Child(script, **kw)
        children.append(c)
        return c

    yield make
    for c in children:
        c.kill()


# ---------------------------------------------------------------------------
# The socket


def test_socket_and_directory_are_private(child_factory):
    c = child_factory(WAIT_STDIN)
    path = Path(c.info["path"])
    assert path.name == f"{c.pid}.sock"
    st = path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    dst = path.parent.lstat()
    assert stat.S_ISDIR(dst.st_mode) and stat.S_IMODE(dst.st_mode) == 0o700
    assert dst.st_uid == os.geteuid()


def test_ping_is_answered_without_the_interpreter(child_factory):
    c = child_factory(GIL_HELD)
    reply = _inspect.request(Path(c.info["path"]), c.pid, "ping", timeout=10)
    assert reply == f"plait {plait.__version__} pid {c.pid}\n"
    assert c.alive()


def test_unknown_request_is_described(child_factory):
    c = child_factory(WAIT_STDIN)
    reply = _inspect.request(Path(c.info["path"]), c.pid, "bogus", timeout=10)
    assert reply.startswith("plait inspect: unknown request")


SIGPIPE_DEFAULT = READY + """
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ready()
    sys.stdin.read()
"""


def test_client_that_hangs_up_early_does_not_harm_the_target(child_factory):
    # With SIGPIPE at its default action, a write to a closed socket would
    # kill the process: the agent must not raise it.
    c = child_factory(SIGPIPE_DEFAULT)
    for fmt in ("text", "json", "ping", "bogus"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(c.info["path"])
            s.sendall(fmt.encode() + b"\n")
    reply = _inspect.request(Path(c.info["path"]), c.pid, "ping", timeout=10)
    assert reply.endswith(f"pid {c.pid}\n")
    assert c.alive()


def test_socket_removed_at_exit(child_factory):
    c = child_factory(WAIT_STDIN)
    path = Path(c.info["path"])
    assert path.exists()
    code, _, err = c.finish()
    assert code == 0, err
    assert not path.exists()


@pytest.mark.parametrize("env", [{"PLAIT_INSPECT": "0"}, {"PLAIT_DEBUG": "deadlock,inspect=off"}])
def test_inspection_off_means_no_socket(child_factory, env):
    c = child_factory(WAIT_STDIN, env=env)
    assert c.info["path"] is None
    for d in _inspect.candidate_dirs():
        assert not (d / f"{c.pid}.sock").exists()
    code, out, err = cli(c.pid)
    assert code == 1 and out == ""
    assert "no plait inspection socket" in err and "PLAIT_INSPECT=0" in err
    assert c.alive()


def test_configure_inspect_turns_the_socket_off_and_on():
    before = _plait._agent_status()
    try:
        _plait._debug_configure(inspect=True)
        path = Path(_plait._agent_status()["path"])
        assert path.exists()
        _plait._debug_configure(inspect=False)
        st = _plait._agent_status()
        assert not st["running"] and st["path"] is None
        assert not path.exists()
        _plait._debug_configure(inspect=True)
        assert Path(_plait._agent_status()["path"]) == path and path.exists()
    finally:
        _plait._debug_configure(inspect=before["enabled"])


def test_insecure_runtime_dir_is_not_used(child_factory, tmp_path):
    (tmp_path / "plait").mkdir(mode=0o755)
    os.chmod(tmp_path / "plait", 0o755)
    c = child_factory(WAIT_STDIN, env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert c.info["path"] is not None
    assert not c.info["path"].startswith(str(tmp_path))
    assert list((tmp_path / "plait").iterdir()) == []


def test_private_runtime_dir_is_used(child_factory, tmp_path):
    os.chmod(tmp_path, 0o700)
    c = child_factory(WAIT_STDIN, env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert c.info["path"] == str(tmp_path / "plait" / f"{c.pid}.sock")
    assert stat.S_IMODE((tmp_path / "plait").lstat().st_mode) == 0o700


# ---------------------------------------------------------------------------
# Fork


FORKS = READY + """
    import os
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, (_plait._agent_status()["path"] or "").encode())
        os.close(w)
        sys.stdin.read()
        sys.exit(0)
    os.close(w)
    child_path = os.read(r, 4096).decode()
    ready(child=pid, child_path=child_path)
    sys.stdin.read()
    os.waitpid(pid, 0)
"""


def test_forked_child_gets_its_own_socket(child_factory):
    c = child_factory(FORKS)
    parent_path, child_path = Path(c.info["path"]), Path(c.info["child_path"])
    grandchild = c.info["child"]
    assert parent_path.name == f"{c.pid}.sock" and child_path.name == f"{grandchild}.sock"
    assert _inspect.request(parent_path, c.pid, "ping", 10).endswith(f"pid {c.pid}\n")
    assert _inspect.request(child_path, grandchild, "ping", 10).endswith(f"pid {grandchild}\n")
    code, _, err = c.finish()
    assert code == 0, err
    assert not parent_path.exists() and not child_path.exists()


RAW_FORK = READY + """
    import ctypes
    parent_path = _plait._agent_status()["path"]
    r, w = os.pipe()
    pid = ctypes.PyDLL(None).fork()  # not os.fork: no at-fork hooks run
    if pid == 0:
        st = _plait._agent_status()  # the parent's agent is not ours
        _plait._debug_configure(inspect=True)
        mine = _plait._agent_status()["path"]
        os.write(w, json.dumps([st["running"], mine]).encode())
        sys.stdin.read()
        os._exit(0)
    inherited, child_path = json.loads(os.read(r, 4096))
    ready(child=pid, inherited=inherited, child_path=child_path)
    sys.stdin.read()
    os.waitpid(pid, 0)
"""


def test_raw_fork_child_does_not_touch_the_parents_agent(child_factory):
    c = child_factory(RAW_FORK)
    assert c.info["inherited"] is False
    parent_path, child_path = Path(c.info["path"]), Path(c.info["child_path"])
    assert child_path.name == f"{c.info['child']}.sock"
    assert _inspect.request(parent_path, c.pid, "ping", 10).endswith(f"pid {c.pid}\n")
    assert _inspect.request(child_path, c.info["child"], "ping", 10).endswith(
        f"pid {c.info['child']}\n")
    code, _, err = c.finish()
    assert code == 0, err
    assert not parent_path.exists()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the fork-with-threads warning is 3.12+")
def test_fork_does_not_warn_about_threads():
    # os.fork() clears the warning when it is turned into an error, so
    # record it instead; the thread in the control run shows it is seen.
    script = """
        import os, sys, threading, warnings
        from plait import _plait
        assert _plait._agent_status()["running"]
        def forks(n):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                for _ in range(n):
                    pid = os.fork()
                    if pid == 0:
                        os._exit(0)
                    os.waitpid(pid, 0)
            return [str(w.message) for w in seen]
        quiet = forks(50)
        assert _plait._agent_status()["running"]
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        control = forks(1)
        stop.set()
        t.join()
        print(len(quiet), len(control), quiet[:1])
    """
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split(None, 2)[:2] == ["0", "1"], p.stdout


# ---------------------------------------------------------------------------
# The command


def test_listing_shows_the_process(child_factory):
    c = child_factory(WAIT_STDIN)
    code, out, err = cli()
    assert code == 0, err
    rows = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert rows[str(c.pid)].startswith(f"{sys.executable} -c")


def test_listing_removes_sockets_of_dead_processes(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    d = Path(_plait._agent_status()["path"] or "").parent
    if not _plait._agent_status()["running"]:
        pytest.skip("this test process has no agent")
    stale = d / f"{gone.pid}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    assert stale.exists()
    code, out, err = cli()
    assert code == 0, err
    assert not stale.exists()
    assert str(gone.pid) not in out.split()


EXECS = READY + """
    ready()
    os.execv("/bin/sleep", ["sleep", "600"])
"""


def wait_exec(pid):
    """Until ``pid`` runs /bin/sleep (it prints ready just before exec)."""
    while True:
        try:
            if os.readlink(f"/proc/{pid}/exe").endswith("sleep"):
                return
        except OSError:
            pass
        time.sleep(0.01)


def test_socket_left_by_exec_is_stale(child_factory):
    # exec() skips atexit: the socket stays, named for a live pid that no
    # longer runs plait.
    c = child_factory(EXECS)
    path = Path(c.info["path"])
    wait_exec(c.pid)
    code, out, err = cli()
    assert code == 0, err
    assert str(c.pid) not in [line.split(None, 1)[0] for line in out.splitlines()]
    assert not path.exists()
    assert c.alive()


def test_inspect_of_exec_replaced_process_removes_its_socket(child_factory):
    c = child_factory(EXECS)
    path = Path(c.info["path"])
    wait_exec(c.pid)
    code, out, err = cli(c.pid)
    assert code == 1 and out == ""
    assert "no live plait agent" in err and "removed it" in err
    assert not path.exists()
    assert c.alive()


def test_a_starting_agent_sweeps_sockets_of_dead_processes(child_factory):
    if not _plait._agent_status()["running"]:
        pytest.skip("this test process has no agent")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = Path(_plait._agent_status()["path"]).parent / f"{gone.pid}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    child_factory(WAIT_STDIN)
    assert not stale.exists()


def test_process_without_plait_is_refused_and_not_signalled(tmp_path):
    marker = tmp_path / "signalled"
    script = f"""
        import signal, sys, time
        def hit(signum, frame):
            open({str(marker)!r}, "a").write(f"{{signum}}\\n")
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                  signal.SIGQUIT, signal.SIGPIPE, signal.SIGALRM, signal.SIGCONT, signal.SIGWINCH):
            signal.signal(s, hit)
        print("ready", flush=True)
        time.sleep(600)
    """
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        for fmt in ([], ["--json"]):
            code, out, err = cli(p.pid, *fmt)
            assert code == 1 and out == ""
            assert f"process {p.pid}" in err and "no plait inspection socket" in err
        assert p.poll() is None
        assert not marker.exists()
    finally:
        p.kill()
        p.wait()


def test_dead_and_foreign_pids_are_refused():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    code, _, err = cli(gone.pid)
    assert code == 1 and f"no process {gone.pid} is running" in err
    code, _, err = cli(0)
    assert code == 1 and "not a process id" in err
    if os.geteuid() != 0 and Path("/proc/1").stat().st_uid != os.geteuid():
        code, _, err = cli(1)
        assert code == 1 and "plait inspects only your own processes" in err


def test_socket_served_by_another_pid_is_refused(tmp_path):
    # A socket named for PID but served by someone else (here: this test)
    # is what a stale file plus pid reuse would look like.
    if not _plait._agent_status()["running"]:
        pytest.skip("this test process has no agent")
    d = Path(_plait._agent_status()["path"]).parent
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                         stdin=subprocess.PIPE)
    path = d / f"{p.pid}.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))
            s.listen()
            code, out, err = cli(p.pid)
            assert code == 1 and out == ""
            assert f"served by process {os.getpid()}, not {p.pid}" in err
        assert p.poll() is None
    finally:
        path.unlink(missing_ok=True)
        p.kill()
        p.wait()


def test_gil_held_for_ever_gives_a_busy_reply(child_factory):
    c = child_factory(GIL_HELD)
    code, out, err = cli(c.pid)
    assert code == 1 and out == ""
    assert "interpreter is busy" in err and "GIL" in err
    # A second request does not pile up another thread waiting for the GIL.
    code, _, err = cli(c.pid, "--json")
    assert code == 1 and "interpreter is busy" in err
    assert c.alive()


@needs_snapshot
def test_deadlocked_process_is_reported_and_left_alone(child_factory):
    c = child_factory(DEADLOCKED)
    code, out, err = cli(c.pid)
    assert code == 0, err
    assert "holder-thread" in out
    assert "MainThread" in out
    assert c.alive()
    # Still deadlocked and still answering: nothing was disturbed.
    code2, out2, err2 = cli(c.pid)
    assert code2 == 0, err2
    assert "holder-thread" in out2
    assert c.alive()


@needs_graph
def test_report_names_the_lock_and_its_holder(child_factory):
    c = child_factory(DEADLOCKED)
    code, out, err = cli(c.pid)
    assert code == 0, err
    assert "lock" in out.lower() and "holder-thread" in out
    assert c.alive()


@needs_snapshot
def test_json_reply_parses(child_factory):
    c = child_factory(DEADLOCKED)
    code, out, err = cli(c.pid, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["version"] == 1 and doc["pid"] == c.pid
    assert any(n["kind"] == "thread" for n in doc["nodes"])
    assert c.alive()


@needs_graph
def test_json_shows_the_lock_its_holder_and_its_waiter(child_factory):
    c = child_factory(DEADLOCKED)
    code, out, err = cli(c.pid, "--json")
    assert code == 0, err
    doc = json.loads(out)
    nodes = {n["id"]: n for n in doc["nodes"]}
    locks = [n for n in doc["nodes"] if n["kind"] == "lock"]
    assert locks
    kinds = {(e["kind"], nodes[e["from"]]["kind"], nodes[e["to"]]["kind"]) for e in doc["edges"]}
    assert ("waits_for", "thread", "lock") in kinds
    assert ("held_by", "lock", "thread") in kinds
    assert c.alive()


@needs_graph
@pytest.mark.parametrize("flag,start", [("--dot", "digraph"), ("--mermaid", "")])
def test_graph_formats(child_factory, flag, start):
    c = child_factory(DEADLOCKED)
    code, out, err = cli(c.pid, flag)
    assert code == 0, err
    assert out.strip() and out.lstrip().startswith(start)
