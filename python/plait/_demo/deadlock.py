"""Demo section 6: a program deadlocks; plait says who holds what.

A small bank: two tellers move money between two accounts, each locking the
source account and then the destination, so two opposite transfers
deadlock. The program runs in a child process (it never finishes on its
own). On the standard library, all there is to see is stacks: two threads
in ``lock.acquire()`` (``faulthandler``'s dump, as py-spy would show).
On plait, ``python -m plait inspect PID`` asks the hung process itself, and
its answer names each lock, who holds it, who waits for it and for how
long, and the cycle; with Graphviz installed the graph becomes a picture.
The child is ours, started here and killed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

from .common import PLAIT_NAME, STDLIB_NAME, DemoContext, RunResult, section

#: The program, written against ``threading``; ``{sync}`` is the module its
#: locks come from (``threading`` or ``plait.sync``).
BANK = textwrap.dedent(
    """
    import faulthandler, sys, threading
    import {sync} as sync

    checking = sync.Lock({named_checking})
    savings = sync.Lock({named_savings})
    balances = {{"checking": 100, "savings": 100}}
    both_hold_one = sync.Barrier(2)

    def transfer(src, dst, src_lock, dst_lock, amount):
        with src_lock:
            both_hold_one.wait()      # make the bad interleaving certain
            with dst_lock:
                balances[src] -= amount
                balances[dst] += amount

    tellers = [
        threading.Thread(target=transfer, name="teller-1",
                    args=("checking", "savings", checking, savings, 10)),
        threading.Thread(target=transfer, name="teller-2",
                    args=("savings", "checking", savings, checking, 20)),
    ]
    for t in tellers:
        t.start()
    print("started", flush=True)
    {after_start}
    for t in tellers:
        t.join()
    """
)

STDLIB_AFTER = "faulthandler.dump_traceback_later(1.0, exit=False, file=sys.stderr)"


def start(sync: str, named: bool, after: str = "") -> subprocess.Popen:
    code = BANK.format(
        sync=sync,
        named_checking='name="checking"' if named else "",
        named_savings='name="savings"' if named else "",
        after_start=after,
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(p: subprocess.Popen) -> str:
    """Kill our child and return what it wrote to stderr."""
    p.kill()
    _, err = p.communicate()
    return err


def inspect(pid: int, *fmt: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plait", "inspect", str(pid), *fmt],
                          capture_output=True, text=True, timeout=60)


@section("deadlock", "a deadlock, explained: who holds what (plait.debug)", unit="reports")
def deadlock_section(ctx: DemoContext) -> list[RunResult]:
    term = ctx.term
    term.write("  Two tellers transfer money in opposite directions; each locks its source")
    term.write("  account, then its destination: the program deadlocks and never ends.")
    term.write()

    # The standard library: stacks, and nothing about the locks.
    p = start("threading", named=False, after=STDLIB_AFTER)
    p.stdout.readline()
    time.sleep(1.5)
    stacks = [ln for ln in stop(p).splitlines() if "Thread" in ln or "transfer" in ln]
    term.write(f"  {STDLIB_NAME}: hung. faulthandler (what py-spy shows) gives stacks only:")
    for line in stacks[:4]:
        term.write(f"    {line.strip()}")
    term.write("    ... which lock is whose, and who waits for whom, is left to the reader.")
    term.write()

    # plait: the hung process answers `python -m plait inspect PID`.
    p = start("plait.sync", named=True, after="")
    t0 = time.perf_counter()
    try:
        p.stdout.readline()
        time.sleep(0.5)
        report = inspect(p.pid)
        seconds = time.perf_counter() - t0
        text = report.stdout
        term.write(f"  {PLAIT_NAME}: `python -m plait inspect {p.pid}` on the hung process:")
        for line in text.splitlines():
            term.write(f"    {line}")
        ok = (report.returncode == 0 and "Found one deadlock" in text
              and "checking" in text and "savings" in text)
        note = "" if ok else (report.stderr.strip().splitlines() or ["no deadlock in the report"])[-1]
        picture = render(inspect(p.pid, "--dot").stdout, term)
        if picture:
            term.write(f"  the graph as a picture: {picture}")
        alive = p.poll() is None
        if not alive:
            ok, note = False, "the inspected process died"
    finally:
        stop(p)
    term.write()
    return [RunResult(PLAIT_NAME, 1 if ok else 0, seconds, ok, note)]


def render(dot: str, term) -> str | None:
    """Render Graphviz ``dot`` source to a PNG when Graphviz is installed."""
    exe = shutil.which("dot")
    if not dot.strip():
        return None
    out_dir = tempfile.mkdtemp(prefix="plait-demo-")
    src = os.path.join(out_dir, "deadlock.dot")
    with open(src, "w") as f:
        f.write(dot)
    if exe is None:
        term.write(f"  (Graphviz is not installed: the graph's source is {src}; "
                   "`dot -Tpng` would draw it)")
        return None
    png = os.path.join(out_dir, "deadlock.png")
    r = subprocess.run([exe, "-Tpng", src, "-o", png], capture_output=True, timeout=60)
    return png if r.returncode == 0 else None
