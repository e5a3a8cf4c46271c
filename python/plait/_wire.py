"""How calls and results travel between a process pool and its workers.

Small values are a pickle, sent through the worker's socket. Large
``bytes``/``bytearray`` values and other buffer-protocol objects that pickle
out-of-band (protocol 5) travel through shared memory instead: the pickle
stream goes through the socket, and the buffers are copied once into a
``/dev/shm`` segment (mode 0600) that the receiver maps and unlinks.

Envelope (first byte):

``P`` + pickle
``S`` + u16 LE name length + name (UTF-8) + pickle of ``(sizes, stream)``

The segment name is in clear so the parent's Rust side can unlink a segment
nobody consumed (a cancelled call, a dead worker, a result never read).
"""

import itertools
import os
import pickle
import struct

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


def encode(obj, dumps=None):
    """Serialize ``obj`` for the other side (``dumps`` may be cloudpickle's
    ``dumps``, used when plain pickle cannot)."""
    buffers = []
    stream = (dumps or pickle.dumps)(_mark_value(obj), protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return b"P" + stream
    raws = [b.raw() for b in buffers]
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


def decode(data):
    """Rebuild a value from :func:`encode`'s output."""
    view = memoryview(data)
    if view[:1] == b"P":
        return pickle.loads(view[1:])
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
