"""plait.debug sees third-party code under the switch.

The modules in ``thirdparty/`` know nothing of plait: they ``import
threading`` / ``import queue`` and make their locks, queues and conditions
as any library does. Under ``python -m plait run`` those are plait's, so
plait.debug reports a deadlock between two of them, with their creation
sites in the third-party file (not ``threading.py``, not the switch's thin
subclasses in ``python/plait/_switch/``), refuses the closing wait with
``deadlock=raise``, and ``python -m plait inspect`` shows what a blocked
program waits on. Run plain, or with ``--no-threading``, the same program's
locks are the standard library's and plait sees none of them: that is what
the switch is for.

Every child is ours, killed at the end of its test; every wait is bounded.
Tests assert what happened, never how fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _bounds import wait_until

from tests.switch._run import env

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inspect uses /proc"),
]

THIRDPARTY = Path(__file__).resolve().parent / "thirdparty"

#: Hang bound for one wait on a child.
BOUND = 60.0


def site(module: str, tag: str) -> str:
    """``"<thirdparty>/module.py:N"``, N the line marked ``# site: tag``."""
    path = THIRDPARTY / f"{module}.py"
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# site: {tag}"):
            return f"{path}:{number}"
    raise AssertionError(f"no '# site: {tag}' line in {path}")


def line_of(module: str, tag: str) -> int:
    return int(site(module, tag).rsplit(":", 1)[1])


def child_env(**extra):
    """The program's environment: the third-party directory on PYTHONPATH,
    as an installed library would be importable."""
    path = os.pathsep.join(p for p in (str(THIRDPARTY), os.environ.get("PYTHONPATH")) if p)
    return env(PYTHONPATH=path, **extra)


class Program:
    """A user program (``source``, written to a file) run as ``python
    prog.py`` or ``python -m plait run [options] prog.py``; stdout and
    stderr are collected by threads so the test can wait, bounded, for a
    line. Killed on exit: it is ours."""

    def __init__(self, tmp_path: Path, source: str, args=(), switch=True, options=(),
                 **env_extra):
        script = tmp_path / "prog.py"
        script.write_text(textwrap.dedent(source))
        prefix = [sys.executable, "-m", "plait", "run", *options] if switch else [sys.executable]
        self.proc = subprocess.Popen([*prefix, str(script), *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=child_env(**env_extra))
        self.pid = self.proc.pid
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, into), daemon=True)
                         for s, into in ((self.proc.stdout, self._out),
                                         (self.proc.stderr, self._err))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def wait_for(self, text: str, stream: str = "stdout") -> str:
        """Wait (bounded) until ``text`` appears in ``stream``; fail if the
        program ends first or the bound passes."""
        end = time.monotonic() + BOUND
        while time.monotonic() < end:
            got = getattr(self, stream)
            if text in got:
                return got
            if self.proc.poll() is not None:
                for r in self._readers:
                    r.join(BOUND)
                if text in getattr(self, stream):
                    return getattr(self, stream)
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in the program's {stream} (exit {self.proc.poll()})"
                             f"\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")

    def finish(self) -> int:
        """Wait (bounded) for the program to end by itself; its exit code."""
        code = self.proc.wait(BOUND)
        for r in self._readers:
            r.join(BOUND)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()  # our own child
        self.proc.wait(BOUND)
        for r in self._readers:
            r.join(BOUND)


def inspect(pid: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plait", "inspect", str(pid), *args],
                          capture_output=True, text=True, timeout=BOUND, env=env())


def inspect_json(pid: int) -> dict:
    p = inspect(pid, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


# --- a deadlock inside the third-party bank ------------------------------------------

#: The user's program: two transfers in opposite directions, the classic
#: lock-order deadlock, all of it inside ``bank``. The main thread prints
#: "stuck" once both threads wait at the bank's second acquire (read from
#: their frames, which needs no plait), and the sum of the balances if they
#: finish. A thread whose transfer raises prints what it got.
BANK_PROGRAM = """
    import sys, threading, time
    import bank

    Account = getattr(bank, sys.argv[1])
    second_acquire = int(sys.argv[2])
    alice, bob = Account("alice", 100), Account("bob", 100)
    both_hold_one = threading.Barrier(2)

    def pay(src, dst):
        try:
            bank.transfer(src, dst, 10, both_hold_one.wait)
        except Exception as exc:
            kind = type(exc)
            # One write per line: print() writes the text and the newline
            # apart, and the main thread prints too.
            sys.stdout.write(f"refused {threading.current_thread().name} {kind.__module__}."
                             f"{kind.__qualname__} runtime={isinstance(exc, RuntimeError)}\\n")
            sys.stdout.flush()
            print(exc, file=sys.stderr, flush=True)

    threads = [threading.Thread(target=pay, args=(alice, bob), name="pay-alice-to-bob"),
               threading.Thread(target=pay, args=(bob, alice), name="pay-bob-to-alice")]
    for t in threads:
        t.daemon = True
        t.start()
    while any(t.is_alive() for t in threads):
        frames = sys._current_frames()
        waiting = [f for f in (frames.get(t.ident) for t in threads)
                   if f is not None and f.f_code.co_name == "transfer"
                   and f.f_lineno == second_acquire]
        if len(waiting) == 2:
            sys.stdout.write("stuck\\n")
            sys.stdout.flush()
            break
        time.sleep(0.01)
    for t in threads:
        t.join()
    print("total", alice.balance + bob.balance, flush=True)
"""

ACCOUNTS = [("Account", "lock", "Account lock"), ("AuditedAccount", "rlock", "AuditedAccount lock")]


def bank_program(tmp_path, account="Account", **kw):
    return Program(tmp_path, BANK_PROGRAM, args=(account, line_of("bank", "the second acquire")),
                   **kw)


@pytest.mark.parametrize("account,kind,tag", ACCOUNTS)
def test_deadlock_between_third_party_locks_is_reported(tmp_path, account, kind, tag):
    with bank_program(tmp_path, account, options=("--debug", "deadlock")) as prog:
        prog.wait_for("stuck")
        err = prog.wait_for("Found one deadlock", "stderr")
        assert prog.proc.poll() is None, "report mode reports and keeps waiting"
    where = site("bank", tag)
    report = err[err.index("Found one deadlock"):]
    # Both edges of the cycle: each thread waits for the lock made at the
    # bank's line, held by the other thread.
    for waiter, holder in (("pay-alice-to-bob", "pay-bob-to-alice"),
                           ("pay-bob-to-alice", "pay-alice-to-bob")):
        assert (f'thread "{waiter}"' in report
                and f"waiting to acquire {kind} created at {where}" in report
                and f'held by thread "{holder}"' in report), report
    assert report.count(f"{kind} created at {where},") == 2, report
    # The site is the library's line, never the modules in between.
    assert "threading.py:" not in report.split("Python stacks")[0], report
    assert "_switch" not in report, report
    # The stacks name the bank's second acquire.
    assert f"{THIRDPARTY / 'bank.py'}:{line_of('bank', 'the second acquire')} in transfer" in report


def test_inspect_shows_the_cycle_with_third_party_sites(tmp_path):
    with bank_program(tmp_path) as prog:  # no --debug: the graph is there anyway
        prog.wait_for("stuck")
        doc = inspect_json(prog.pid)
        text = inspect(prog.pid)
        assert prog.proc.poll() is None, "inspect must leave the program alone"
    where = site("bank", "Account lock")
    nodes = {n["id"]: n for n in doc["nodes"]}
    locks = [n for n in doc["nodes"] if n["kind"] == "lock" and n.get("site") == where]
    assert len(locks) == 2, doc
    assert len(doc["cycles"]) == 1, doc
    cycle = doc["cycles"][0]
    names = {nodes[i]["name"] for i in cycle if nodes[i]["kind"] == "thread"}
    assert names == {"pay-alice-to-bob", "pay-bob-to-alice"}
    assert {nodes[i]["id"] for i in cycle if nodes[i]["kind"] == "lock"} == {n["id"] for n in locks}
    assert text.returncode == 0, text.stderr
    assert "Found one deadlock" in text.stdout and where in text.stdout, text.stdout


@pytest.mark.parametrize("account,kind,tag", ACCOUNTS)
def test_raise_mode_gives_the_program_deadlock_error(tmp_path, account, kind, tag):
    with bank_program(tmp_path, account, options=("--debug", "deadlock=raise")) as prog:
        code = prog.finish()
    out, err = prog.stdout, prog.stderr
    assert code == 0, err
    refused = [line for line in out.splitlines() if line.startswith("refused ")]
    # Exactly one thread's wait closed the cycle and was refused; the other
    # then finished its transfer, so the money is all there.
    assert len(refused) == 1, out
    assert refused[0].split()[1] in ("pay-alice-to-bob", "pay-bob-to-alice")
    assert refused[0].endswith("plait.debug.DeadlockError runtime=True"), out
    assert "total 200" in out, out
    assert f"{kind} created at {site('bank', tag)}" in err, err


def test_unswitched_program_is_not_seen_by_plait(tmp_path):
    """``python prog.py``, even with PLAIT_DEBUG set: plait is never
    imported, so nothing reports the deadlock and there is nothing to
    inspect."""
    with bank_program(tmp_path, switch=False, PLAIT_DEBUG="deadlock") as prog:
        prog.wait_for("stuck")
        p = inspect(prog.pid)
        assert prog.proc.poll() is None
    assert p.returncode == 1 and "no plait inspection socket" in p.stderr, p
    assert "deadlock" not in prog.stderr.lower(), prog.stderr
    # The program really is deadlocked (and reached that state): the "stuck"
    # line came from its own frames, and it never printed a total.
    assert "total" not in prog.stdout


def test_threading_left_alone_hides_the_locks(tmp_path):
    """``--no-threading``: plait is loaded and answers ``inspect``, it sees
    both threads blocked in the bank, but their locks are the standard
    library's: no lock, no cycle, no report."""
    with bank_program(tmp_path, options=("--no-threading", "--debug", "deadlock")) as prog:
        prog.wait_for("stuck")
        doc = inspect_json(prog.pid)
        assert prog.proc.poll() is None
    second = f"{THIRDPARTY / 'bank.py'}:{line_of('bank', 'the second acquire')} in transfer"
    threads = {n["name"]: n for n in doc["nodes"] if n["kind"] == "thread"}
    for name in ("pay-alice-to-bob", "pay-bob-to-alice"):
        assert threads[name]["stack"][0] == second, doc
    assert not [n for n in doc["nodes"] if n["kind"] in ("lock", "rlock")], doc
    assert doc["cycles"] == [], doc
    assert "Found one deadlock" not in prog.stderr, prog.stderr


# --- what a blocked program waits on --------------------------------------------------

MAILBOX_PROGRAM = """
    import threading
    import mailbox

    box = mailbox.Mailbox()
    threading.Thread(target=box.wait_ready, name="waits-for-ready", daemon=True).start()
    print("ready", flush=True)
    box.receive()  # nobody sends: blocks until the test kills the program
"""


def test_inspect_shows_third_party_queue_and_condition(tmp_path):
    with Program(tmp_path, MAILBOX_PROGRAM) as prog:
        prog.wait_for("ready")
        seen = {}

        def both_parked():  # two waits_for edges
            seen["doc"] = inspect_json(prog.pid)
            return len([e for e in seen["doc"]["edges"] if e["kind"] == "waits_for"]) == 2

        wait_until(both_parked, "both threads never showed as parked", bound=BOUND)
        doc = seen["doc"]
        text = inspect(prog.pid)
        assert prog.proc.poll() is None
    nodes = {n["id"]: n for n in doc["nodes"]}
    waits = {nodes[e["from"]]["name"]: nodes[e["to"]] for e in doc["edges"]
             if e["kind"] == "waits_for"}
    assert waits["MainThread"]["kind"] == "queue"
    assert waits["MainThread"]["site"] == site("mailbox", "Mailbox inbox")
    assert waits["waits-for-ready"]["kind"] == "condition"
    assert waits["waits-for-ready"]["site"] == site("mailbox", "Mailbox condition")
    assert text.returncode == 0, text.stderr
    assert f"waiting on queue created at {site('mailbox', 'Mailbox inbox')}" in text.stdout
    assert f"waiting on condition created at {site('mailbox', 'Mailbox condition')}" in text.stdout


# --- creation sites skip the switch's own frames ------------------------------------

SITES_PROGRAM = """
    import json
    import made
    import plait.debug

    objs = made.make_all()
    snap = json.loads(plait.debug.snapshot(all=True).to_json())
    print(json.dumps(snap["nodes"]))
"""

#: made.py's tag -> the kind plait.debug gives it.
MADE = {"lock": "lock", "rlock": "rlock", "condition": "condition", "semaphore": "semaphore",
        "bounded": "semaphore", "event": "event", "barrier": "barrier", "queue": "queue",
        "lifo": "queue", "priority": "queue", "simple": "queue"}


def test_every_switched_class_reports_the_third_party_line(tmp_path):
    """Each class the switch puts in ``threading`` and ``queue``, made in a
    third-party module, has that module's line as its site: the switch's
    thin subclasses (``python/plait/_switch/``), ``threading.RLock``'s
    function and ``allocate_lock`` are skipped."""
    with Program(tmp_path, SITES_PROGRAM) as prog:
        code = prog.finish()
    assert code == 0, prog.stderr
    nodes = json.loads(prog.stdout.strip().splitlines()[-1])
    by_site: dict[str, set] = {}
    for n in nodes:
        by_site.setdefault(n.get("site"), set()).add(n["kind"])
    for tag, kind in MADE.items():
        assert kind in by_site.get(site("made", tag), set()), (tag, by_site)
    assert not [s for s in by_site if s and "/plait/_switch/" in s], by_site
