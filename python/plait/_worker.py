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
TASK_HEADER = struct.Struct("<IBQ")  # a T/R/E frame's header and task id
#: Result types that hold no buffer (sent without looking for one).
SCALARS = frozenset({int, float, str, bool, type(None), complex})


def _read_exact(rfile, n):
    data = rfile.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _recv(rfile):
    # A buffered reader: one system call brings in every frame waiting.
    length, kind = HEADER.unpack(_read_exact(rfile, HEADER.size))
    return chr(kind), _read_exact(rfile, length - 1)


def _send(sock, kind, payload):
    sock.sendall(HEADER.pack(len(payload) + 1, ord(kind)) + payload)


def _dumps(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _encode(obj):
    from plait import _wire

    return _wire.encode(obj)


def _error_payload(exc):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        exc.__traceback__ = None
        body = _encode((exc, type(exc).__qualname__, str(exc), tb))
    except Exception:
        body = _encode((None, type(exc).__qualname__, str(exc), tb))
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
        _serve(sock, rfile)
    except (EOFError, ConnectionError, OSError):
        return 0


def _serve(sock, rfile):
    """Run task frames until EOF. The parent sends tasks in batches: one
    read brings in several, parsed in place. Each result is sent before the
    next task starts, so the results of finished tasks survive a task that
    kills its worker (the parent reads them after the EOF)."""
    from plait import _wire

    decode, encode, encode_small = _wire.decode, _wire.encode, _wire.encode_small
    unpack_header = TASK_HEADER.unpack_from
    pack_header = TASK_HEADER.pack
    sendall = sock.sendall
    read1 = rfile.read1
    T = ord("T")
    R = ord("R")
    E = ord("E")
    size = TASK_HEADER.size
    buf = b""
    while True:
        missing = HEADER.size
        if len(buf) >= HEADER.size:
            # A frame larger than one read: fetch the rest in one go.
            missing = 4 + HEADER.unpack_from(buf)[0] - len(buf)
        if missing > 1 << 16:
            buf += _read_exact(rfile, missing)
        elif missing > 0:
            # Whatever is there, up to 64 KiB: often a batch of frames.
            chunk = read1(1 << 16)
            if not chunk:
                raise EOFError
            buf = buf + chunk if buf else chunk
            if len(chunk) < missing:
                continue
        end = len(buf)
        pos = 0
        view = memoryview(buf)
        while end - pos >= HEADER.size:
            length, kind = HEADER.unpack_from(buf, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            if kind == T and length >= 9:
                fn = args = kwargs = result = None
                _, _, task_id = unpack_header(buf, pos)
                try:
                    fn, args, kwargs = decode(view[pos + size : stop])
                    result = fn(*args, **kwargs)
                    body = encode_small(result) if type(result) in SCALARS else encode(result)
                    kind = R
                except BaseException as exc:  # the task's failure, reported
                    body = _error_payload(exc)
                    kind = E
                fn = args = kwargs = result = None
                sendall(pack_header(len(body) + 9, kind, task_id) + body)
            pos = stop
        buf = buf[pos:]


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
