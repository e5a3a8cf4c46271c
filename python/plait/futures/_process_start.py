"""How a process pool starts its workers: by forking a zygote (which forks
every worker) or by spawning fresh interpreters, and how it decides."""

import multiprocessing as _mp
import os
import socket
import sys as _sys
import threading
import time

from plait import _plait as _plait_mod
from plait import _worker


def _main_path():
    """The script ``__main__`` runs, for a spawned worker to load as its
    ``__main__`` (None in an interactive session, or without a ``.py`` script).

    A package's ``__main__.py`` (``python -m package``, ``python -m test``)
    is not loaded, as multiprocessing's spawn does not load it: such files
    run their "main only" code unguarded (regrtest would start again in
    every worker)."""
    main = _sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and not getattr(_sys.flags, "interactive", 0) and path.endswith(".py"):
        if os.path.basename(path) == "__main__.py":
            return None
        return os.path.abspath(path)
    return None


def _start_method(mp_context):
    """How a pool starts its workers: "fork" (a zygote forked from this
    process forks them), "spawn" (fresh interpreters), or "auto" (fork if
    this process has a single thread when the pool starts, else spawn)."""
    if mp_context is not None:
        method = mp_context.get_start_method()
    else:
        # A start method set for the whole program is honoured when it
        # avoids fork; "fork" there may be only the platform's default, so
        # it does not make plait fork a process that runs threads.
        method = _mp.get_start_method(allow_none=True)
        if method not in ("spawn", "forkserver"):
            return "auto"
    return "fork" if method == "fork" else "spawn"


def _fork_zygote(inherited, die_with_parent):
    """Fork the pool's zygote (see ``plait._worker.zygote``); its pid and
    the file descriptor of our end of its socket."""
    ours, theirs = socket.socketpair()
    # Output buffered now would be written again by every worker.
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: S110 - a closed or odd stream
            pass
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        try:
            ours.close()
            _plait_mod._die_with_parent(os.getppid() if die_with_parent else 0)
        finally:
            _worker.zygote(theirs, inherited)
    theirs.close()
    return pid, ours.detach()



def _single_threaded():
    """Whether this process has one thread. A thread that just ended (its
    ``join`` returned) may still be leaving the kernel's list for a moment:
    when Python knows of no other thread, give such threads 20 ms."""
    if _plait_mod._thread_count() == 1:
        return True
    if threading.active_count() != 1:
        return False
    deadline = time.monotonic() + 0.02
    while time.monotonic() < deadline:
        time.sleep(0.001)
        if _plait_mod._thread_count() == 1:
            return True
    return False
