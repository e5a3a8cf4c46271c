"""A ProcessPoolExecutor worker, and the zygote that forks workers.

A worker is started one of two ways, with one end of a socketpair as file
descriptor ``FD``:

* spawned by the pool's Rust supervisor as a fresh interpreter,
  ``python -m plait._worker FD``;
* forked by the pool's zygote (:func:`zygote`), a single-threaded copy of
  the parent made when the pool started, which inherits the parent's
  modules, ``__main__`` and initializer as they were then.

Frames on the socket are ``u32 little-endian length | kind byte | payload``:

parent -> worker
  ``I`` pickled setup dict (sys.path, main module path, authkey,
  initializer, initargs); empty for a forked worker, which inherited it
  ``T`` u64 task id, pickled ``(fn, args, kwargs)``
worker -> parent
  ``S`` ready (after setup and the initializer)
  ``F`` pickled message: the initializer failed; the worker exits
  ``R`` u64 task id, pickled result
  ``E`` u64 task id, pickled ``(exception or None, type name, message,
  formatted remote traceback)``

EOF on the socket means "exit". SIGINT is ignored (Ctrl-C is the parent's
business); faulthandler writes to the file the parent names, so a crash
leaves the worker's last traceback for the parent to report.
"""

import array
import faulthandler
import os
import pickle
import signal
import socket
import struct
import sys
import traceback

HEADER = struct.Struct("<IB")
TASK_ID = struct.Struct("<Q")


def _read_exact(rfile, n):
    data = rfile.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _recv(rfile):
    # A buffered reader: one system call brings in every frame waiting.
    length, kind = HEADER.unpack(_read_exact(rfile, HEADER.size))
    return chr(kind), _read_exact(rfile, length - 1)


def _send(sock, kind, payload, fds=()):
    data = HEADER.pack(len(payload) + 1, ord(kind)) + payload
    if not fds:
        sock.sendall(data)
        return
    # Shared-memory segments go with their frame (see plait._wire).
    try:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])
    finally:
        for fd in fds:
            os.close(fd)


def _encode(obj, fds):
    from plait import _wire

    return _wire.encode(obj, fds=fds)


def _error_payload(exc, fds):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        exc.__traceback__ = None
        body = _encode((exc, type(exc).__qualname__, str(exc), tb), fds)
    except Exception:
        body = _encode((None, type(exc).__qualname__, str(exc), tb), fds)
    return body


def _setup(setup):
    authkey = setup.get("authkey")
    if authkey is not None:
        # Manager proxies and other authenticated connections to the parent.
        import multiprocessing

        multiprocessing.current_process().authkey = authkey
    sys.path[:] = setup.get("sys_path", sys.path)
    main_path = setup.get("main_path")
    if main_path:
        # Functions defined in the parent's __main__ pickle as __main__.name:
        # load that file as __mp_main__ and alias it, as multiprocessing does.
        import runpy
        import types

        try:
            namespace = runpy.run_path(main_path, run_name="__mp_main__")
            main = types.ModuleType("__mp_main__")
            main.__dict__.update(namespace)
            sys.modules["__main__"] = sys.modules["__mp_main__"] = main
        except BaseException:
            pass
    if "init" in setup:  # spawned: pickled apart, to load with the path set
        init, initargs = pickle.loads(setup["init"])
    else:  # forked: inherited
        init, initargs = setup.get("initializer"), setup.get("initargs", ())
    if init is not None:
        init(*initargs)


def main(fd, inherited=None, crash_log=None):
    """Serve tasks on ``fd``. ``inherited``: the setup of a forked worker
    (its initializer and initargs; the rest it has already)."""
    from plait import _wire

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    rfile = sock.makefile("rb", buffering=1 << 16)
    crash_log = crash_log or os.environ.get("PLAIT_WORKER_CRASH_LOG")
    if crash_log:
        faulthandler.enable(file=open(crash_log, "w"), all_threads=True)  # noqa: SIM115
    try:
        kind, payload = _recv(rfile)
        if kind != "I":
            return 2
        try:
            _setup(inherited if inherited is not None else pickle.loads(payload))
        except BaseException as exc:
            # As CPython's worker: the initializer's failure is logged here
            # (the test suite hands a multiprocessing queue to the handler).
            import logging

            logging.getLogger("concurrent.futures").critical("Exception in initializer:", exc_info=True)
            msg = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            _send(sock, "F", msg.encode("utf-8", "replace"))
            return 3
        _send(sock, "S", b"")
        while True:
            fn = args = kwargs = result = None
            kind, payload = _recv(rfile)
            if kind != "T":
                continue
            (task_id,) = TASK_ID.unpack_from(payload)
            head = payload[: TASK_ID.size]
            fds = []
            try:
                fn, args, kwargs = _wire.decode(payload[TASK_ID.size :])
                result = fn(*args, **kwargs)
                body = _wire.encode(result, fds=fds)
                kind = "R"
            except BaseException as exc:  # the task's failure, reported
                body = _error_payload(exc, fds)
                kind = "E"
            _send(sock, kind, head + body, fds)
    except (EOFError, ConnectionError, OSError):
        return 0


def _after_fork():
    """What multiprocessing does in a child it forks: forget the parent's
    children and finalizers (a worker must not join or terminate its
    parent's processes, nor run its parent's cleanups), and let inherited
    multiprocessing objects (queues, locks) reset their per-process state."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    process = sys.modules["multiprocessing.process"]
    process._children = set()
    util._finalizer_registry.clear()
    util._run_after_forkers()


def _at_exit():
    """What a multiprocessing child runs before ``os._exit``: its
    finalizers (which flush multiprocessing queues the worker fed), then
    the standard streams."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        try:
            util._exit_function()
        except Exception:  # noqa: S110 - exiting anyway
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: S110 - a closed or odd stream
            pass


def zygote(sock, inherited):
    """The zygote's loop (in a process just forked from the pool's owner,
    which has one thread). Each request is the worker's crash-log path with
    the worker's socket attached (``SCM_RIGHTS``); the zygote forks a worker
    that serves that socket and answers with its pid (i32 LE; ``-errno`` if
    the fork failed). The worker is forked as a sibling: the pool's owner
    is its parent, and reaps it. EOF means the pool is done. Never returns.
    """
    from plait import _plait

    # Workers die with the pool's owner if the zygote was told to.
    die_with_parent = _plait._dies_with_parent()
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _after_fork()
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
            except InterruptedError:
                continue
            if not msg or not fds:
                break
            try:
                pid = _plait._fork_sibling(die_with_parent)
            except OSError as exc:
                pid = -(exc.errno or 1)
            if pid == 0:
                sock.close()
                code = 70
                _after_fork()
                code = main(fds[0], inherited, os.fsdecode(msg))
                _at_exit()
                break
            os.close(fds[0])
            sock.sendall(struct.pack("<i", pid))
    except BaseException:
        code = code or 1
    finally:
        os._exit(code or 0)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
