"""A hang bound shared by every test directory (tests/ is on the path
through its conftest.py)."""

import time


def wait_until(cond, what="condition not reached within the bound", bound=30.0):
    """Poll ``cond`` until it holds; fail with ``what`` after ``bound``
    seconds. A hang bound, not a timing assertion: how long it took is
    never checked."""
    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def alive(pid):
    """``pid`` is a running process (not a zombie), read from /proc: never a
    signal. A process that exits between the open and the read makes the
    read fail with ESRCH (ProcessLookupError): gone, as a missing file is."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False
