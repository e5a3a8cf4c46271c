"""A ProcessPoolExecutor worker: ``python -m plait._worker FD``.

Started by the pool's Rust supervisor as a fresh interpreter (the parent is
never forked), with one end of a socketpair as file descriptor ``FD``.
Frames on it are ``u32 little-endian length | kind byte | payload``:

parent -> worker
  ``I`` pickled setup dict (sys.path, main module path, initializer, initargs)
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


def _dumps(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


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
    init = setup.get("initializer")
    if init is not None:
        init(*setup.get("initargs", ()))


def main(fd):
    from plait import _wire

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    rfile = sock.makefile("rb", buffering=1 << 16)
    crash_log = os.environ.get("PLAIT_WORKER_CRASH_LOG")
    if crash_log:
        faulthandler.enable(file=open(crash_log, "w"), all_threads=True)  # noqa: SIM115
    try:
        kind, payload = _recv(rfile)
        if kind != "I":
            return 2
        try:
            _setup(pickle.loads(payload))
        except BaseException as exc:
            msg = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            _send(sock, "F", _dumps(msg))
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


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
