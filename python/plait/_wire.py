"""How calls and results travel between a process pool and its workers.

Small values are a pickle, sent through the worker's socket. Large
``bytes``/``bytearray`` values and other buffer-protocol objects that pickle
out-of-band (protocol 5) travel through shared memory instead: the pickle
stream goes through the socket, and the buffers are copied once into a
shared segment and once out of it, straight into the receiver's new
``bytes`` objects.

Segments are ``memfd`` files that their owner recycles (see
``crates/plait-core/src/ipc/shm.rs`` for the protocol): the parent owns the
segments of calls, which a worker opens as ``/proc/<parent>/fd/<n>``; a
worker owns the segments of its results and sends their descriptor with
the frame (SCM_RIGHTS). The receiver marks a segment free once it has
copied out; the sender reuses its pages for the next transfer, so the
steady state allocates no memory, and no name in ``/dev/shm`` can outlive
anyone. When the parent's pool of segments is exhausted (many large calls
queued) a call falls back to a named, one-use ``/dev/shm`` file (mode
0600), which costs no descriptor while it waits.

Envelope (first byte):

``P`` + pickle
``M`` + segment head (pid, fd, serial, generation, buffer sizes; built and
parsed in Rust) + pickle stream
``S`` + u16 LE name length + name (UTF-8) + pickle of ``(sizes, stream)``

The ``S`` segment name is in clear so the parent's Rust side can unlink a
segment nobody consumed (a cancelled call, a dead worker, a result never
read).
"""

import itertools
import os
import pickle
import struct

from plait import _plait

#: Buffers at least this large go through shared memory.
THRESHOLD = 1 << 16
SHM_DIR = "/dev/shm"

_counter = itertools.count()
_NAME_LEN = struct.Struct("<H")


def _rebuild_bytes(buf):
    # decode() hands over bytes objects read from the segment: reuse them
    # rather than copying 10 MiB once more.
    if type(buf) is memoryview and type(buf.obj) is bytes and buf.nbytes == len(buf.obj):
        return buf.obj
    return bytes(buf)


class _Big:
    """A large bytes/bytearray marked to pickle out-of-band. (The pickler
    never consults ``reducer_override`` for exact bytes or bytearray, so
    they are wrapped where they are found: the call's arguments, a result,
    and one level inside a tuple, list or dict.)"""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        rebuild = _rebuild_bytes if type(self.data) is bytes else bytearray
        return rebuild, (pickle.PickleBuffer(self.data),)


def _mark(x):
    t = type(x)
    if (t is bytes or t is bytearray) and len(x) >= THRESHOLD:
        return _Big(x)
    return x


def _mark_value(v):
    t = type(v)
    if t is tuple:
        return tuple(_mark(x) for x in v)
    if t is list:
        return [_mark(x) for x in v]
    if t is dict:
        return {k: _mark(x) for k, x in v.items()}
    return _mark(v)


def mark_call(fn, args, kwargs):
    """The call triple with its large buffers marked out-of-band."""
    return fn, tuple(_mark_value(a) for a in args), {k: _mark_value(v) for k, v in kwargs.items()}


class InheritFds:
    """Stands for multiprocessing's spawning ``Popen`` while a pool pickles
    a spawned worker's setup: multiprocessing objects (queues, locks) then
    agree to pickle, and the descriptors they name are collected, for the
    worker to inherit at the same numbers."""

    def __init__(self):
        self.fds = []

    def duplicate_for_child(self, fd):
        self.fds.append(fd)
        return fd

    class DupFd:
        """An inherited descriptor, as the worker unpickles it."""

        def __init__(self, fd):
            self.fd = fd

        def detach(self):
            return self.fd


def encode(obj, dumps=None, fds=None):
    """Serialize ``obj`` for the other side (``dumps`` may be cloudpickle's
    ``dumps``, used when plain pickle cannot).

    ``fds``: a list when the caller sends descriptors with the message (a
    worker's results): a segment's descriptor is appended, and the caller
    closes it once sent. Without it the receiver opens the segment through
    ``/proc`` (the parent's calls)."""
    buffers = []
    stream = (dumps or pickle.dumps)(_mark_value(obj), protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return b"P" + stream
    raws = [b.raw() for b in buffers]
    try:
        put = _plait._shm_put(raws, fds is not None)
    except OSError:
        put = None  # no memfd here: a named file still works
    if put is not None:
        head, fd = put
        if fd >= 0:
            fds.append(fd)
        return b"M" + head + stream
    sizes = [r.nbytes for r in raws]
    total = sum(sizes)
    path = os.path.join(SHM_DIR, f"plait-{os.getpid()}-{next(_counter)}-{os.urandom(4).hex()}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        # pwrite: the kernel copies into the segment's pages directly, with
        # none of the per-page faults of writing through a fresh mapping.
        offset = 0
        for r in raws:
            done = 0
            while done < r.nbytes:
                done += os.pwrite(fd, r[done:], offset + done)
            offset += r.nbytes
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    name = path.encode()
    return b"S" + _NAME_LEN.pack(len(name)) + name + pickle.dumps((sizes, stream), protocol=5)


def encode_small(obj):
    """:func:`encode` for a value that holds no buffer anywhere (the
    caller knows): the plain envelope, without looking for buffers."""
    return b"P" + pickle.dumps(obj, protocol=5)


def decode(data, taken=None):
    """Rebuild a value from :func:`encode`'s output. ``taken``: the
    ``(buffers, stream offset)`` of an ``M`` envelope, when the caller
    already copied them out (the parent, from a segment mapped on receipt)."""
    view = memoryview(data)
    kind = view[:1]
    if kind == b"P":
        return pickle.loads(view[1:])
    if kind == b"M":
        if taken is None:
            # (A worker decodes a slice of its read buffer: the envelope
            # itself is small, its buffers are in the segment.)
            taken = _plait._shm_take(data if type(data) is bytes else bytes(data))
        buffers, at = taken
        return pickle.loads(view[at:], buffers=buffers)
    (n,) = _NAME_LEN.unpack_from(view, 1)
    path = bytes(view[3 : 3 + n]).decode()
    sizes, stream = pickle.loads(view[3 + n :])
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        # pread: one kernel copy straight into a new bytes object per buffer.
        buffers = []
        offset = 0
        for size in sizes:
            chunk = os.pread(fd, size, offset)
            while len(chunk) < size:  # pread may return short on huge reads
                chunk += os.pread(fd, size - len(chunk), offset + len(chunk))
            buffers.append(chunk)
            offset += size
    finally:
        os.close(fd)
    return pickle.loads(stream, buffers=buffers)
