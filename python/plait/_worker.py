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
  ``T`` u64 task id, u32 claim slot, pickled ``(fn, args, kwargs)``
worker -> parent
  ``S`` ready (after setup and the initializer)
  ``F`` pickled message: the initializer failed; the worker exits
  ``R`` u64 task id, pickled result
  ``E`` u64 task id, pickled ``(exception or None, type name, message,
  formatted remote traceback)``
  ``X`` u64 task id: skipped, its claim was cancelled or taken back

Before running a task the worker claims it in the pool's claim page (shared
memory, see ``plait_core::pool::claim``): a task cancelled or taken back
while it waited in the socket is skipped. The next task, when it is already
read, is claimed before the current result is sent, so the parent finds it
decided when it reads that result.

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
TASK_HEADER = struct.Struct("<IBQ")  # an R/E/X frame's header and task id
TASK_IN = struct.Struct("<IBQI")  # a T frame's header, task id and claim slot
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


def _send(sock, kind, payload, fds=()):
    data = HEADER.pack(len(payload) + 1, ord(kind)) + payload
    if not fds:
        sock.sendall(data)
        return
    _send_frame_with_fds(sock, data, fds)


def _send_frame_with_fds(sock, data, fds):
    # Shared-memory segments go with their frame (see plait._wire); the
    # descriptors are ours to close once sent.
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
        return _encode((exc, type(exc).__qualname__, str(exc), tb), fds)
    except BaseException as failure:  # noqa: BLE001 - the exception cannot be pickled
        return _unsendable_payload(failure, f"the exception {_describe(exc)}", fds)


def _describe(obj):
    """``repr(obj)`` for an error message, even when repr itself fails."""
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001 - any repr failure: name the type
        return f"<{type(obj).__qualname__} object>"


def _unsendable_payload(failure, what, fds):
    """The error payload when pickling ``what`` (a task's exception or
    result) failed with ``failure``: the pickling error itself, as CPython's
    process pool reports it (its class is the contract), with ``what`` in
    its message, the traceback of both as the remote traceback, and
    ``_plait_unsent`` (what could not be sent) for
    ``multiprocessing.pool``'s ``MaybeEncodingError``."""
    tb = "".join(traceback.format_exception(type(failure), failure, failure.__traceback__))
    failure.__traceback__ = None
    try:
        failure.args = (f"{failure} ({what} could not be sent back)",)
        failure._plait_unsent = what
        return _encode((failure, type(failure).__qualname__, str(failure), tb), fds)
    except Exception:  # noqa: BLE001 - the pickling error itself cannot be pickled
        err = pickle.PicklingError(f"{type(failure).__qualname__}: {failure}")
        err._plait_unsent = what
        return _encode((err, "PicklingError", str(err), tb), fds)


def _setup(setup):
    switch = setup.get("switch")
    if switch:  # the parent ran under plait.patch(): before anything of its
        from plait import _switch  # own is loaded here

        _switch._apply_in_child(switch)
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


def main(fd, inherited=None, crash_fd=None):
    """Serve tasks on ``fd``. ``inherited``: the setup of a forked worker
    (its initializer and initargs; the rest it has already). ``crash_fd``:
    the descriptor (a memfd the pool created) faulthandler writes to; a
    spawned worker finds its number in ``PLAIT_WORKER_CRASH_FD``."""
    from plait import _plait, _wire

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _plait._worker_malloc_tuning()
    sock = socket.socket(fileno=fd)
    rfile = sock.makefile("rb", buffering=1 << 16)
    _crash_log(crash_fd)
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
        _serve(sock, rfile, _claims(inherited, payload))
    except (EOFError, ConnectionError, OSError):
        return 0


def _claims(inherited, payload):
    """The pool's claim page: inherited by a forked worker, mapped from the
    descriptor a spawned one inherited (None: run every task)."""
    if inherited is not None:
        return inherited.get("claims")
    try:
        fd = pickle.loads(payload).get("claims_fd")
    except Exception:
        return None
    if fd is None:
        return None
    from plait import _plait

    return _plait._ClaimPage.from_fd(fd)


def _serve(sock, rfile, claims=None):
    """Run task frames until EOF. The parent sends tasks in batches: one
    read brings in several, parsed in place. Each result is sent before the
    next task starts, so the results of finished tasks survive a task that
    kills its worker (the parent reads them after the EOF)."""
    from plait import _wire

    decode, encode, encode_small = _wire.decode, _wire.encode, _wire.encode_small
    unpack_in = TASK_IN.unpack_from
    pack_header = TASK_HEADER.pack
    sendall = sock.sendall
    read1 = rfile.read1
    claim = claims.start if claims is not None else None
    T = ord("T")
    R = ord("R")
    E = ord("E")
    X = ord("X")
    size = TASK_IN.size
    skipped = X, 9
    # The next frame, when it was claimed ahead (position, claimed).
    ahead = ahead_ok = -1
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
            if kind == T and length >= 13:
                fn = args = kwargs = result = None
                _, _, task_id, slot = unpack_in(buf, pos)
                if ahead == pos:
                    ok = ahead_ok
                else:
                    ok = claim is None or claim(slot, task_id)
                ahead = -1
                if not ok:
                    sendall(pack_header(skipped[1], skipped[0], task_id))
                    pos = stop
                    continue
                fds = []  # a result's shared-memory segment travels along
                try:
                    fn, args, kwargs = decode(view[pos + size : stop])
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # the task's failure, reported
                    body = _error_payload(exc, fds)
                    kind = E
                else:
                    try:
                        body = encode_small(result) if type(result) in SCALARS else encode(result, fds=fds)
                        kind = R
                    except BaseException as failure:  # noqa: BLE001 - the result cannot be pickled
                        what = f"the result {_describe(result)}"
                        body = _unsendable_payload(failure, what, fds)
                        kind = E
                fn = args = kwargs = result = None
                if claim is not None and end - stop >= size:
                    # Claim the next task before sending this result.
                    nlength, nkind = HEADER.unpack_from(buf, stop)
                    if nkind == T and stop + 4 + nlength <= end and nlength >= 13:
                        _, _, next_id, next_slot = unpack_in(buf, stop)
                        ahead, ahead_ok = stop, claim(next_slot, next_id)
                frame = pack_header(len(body) + 9, kind, task_id) + body
                if fds:
                    _send_frame_with_fds(sock, frame, fds)
                else:
                    sendall(frame)
            pos = stop
        buf = buf[pos:]


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


def _crash_log(crash_fd):
    """Send faulthandler's output to the pool's crash-log descriptor (no
    file at any path), kept from the worker's own children."""
    env = os.environ.pop("PLAIT_WORKER_CRASH_FD", None)
    if crash_fd is None and env:
        crash_fd = int(env)
    if crash_fd is not None and crash_fd >= 0:
        os.set_inheritable(crash_fd, False)
        faulthandler.enable(file=crash_fd, all_threads=True)


def zygote(sock, inherited):
    """The zygote's loop (in a process just forked from the pool's owner,
    which has one thread). Each request is one byte with the worker's socket
    and its crash-log descriptor attached (``SCM_RIGHTS``, in that order);
    the zygote forks a worker
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
                msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 2)
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
                code = main(fds[0], inherited, fds[1] if len(fds) > 1 else None)
                _at_exit()
                break
            for fd in fds:
                os.close(fd)
            sock.sendall(struct.pack("<i", pid))
    except BaseException:
        code = code or 1
    finally:
        os._exit(code or 0)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
