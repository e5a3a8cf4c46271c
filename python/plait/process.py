"""plait.process: ``multiprocessing``'s Pipe and Queue over a Rust transport,
and ``multiprocessing.pool``'s Pool and ThreadPool on plait's executors
(see ``plait._mp_pool``).

``Pipe()`` returns two :class:`Connection` objects with the
``multiprocessing.connection.Connection`` API over a Unix socket pair
(length-framed messages, read ahead in 64 KiB chunks). :class:`Queue` has
the ``multiprocessing.Queue`` API over a ring in shared memory (a memfd)
guarded by a process-shared futex: a put or get of a small item is a memcpy
and no system call unless a reader or writer sleeps. Items over 64 KiB go
through a ``SOCK_SEQPACKET`` socket as a memfd, with a marker in the ring
that keeps their place in line. Every item reaches exactly one reader whole,
whatever the number of producer and consumer processes. Objects are pickled
with the C pickler (``pickle.dumps`` at the highest protocol; objects it
cannot handle fall back to ``multiprocessing.reduction.ForkingPickler``).
The transport is ``plait_core::ipc`` (Rust, no Python) and its binding
``crates/plait-py/src/process/``.

Both pickle by passing their descriptors with
``multiprocessing.reduction.DupFd``, as multiprocessing's own Connection
does: they can be handed to ``multiprocessing.Process`` children under the
fork, spawn and forkserver start methods, and a Connection can be sent over
another Connection.

Differences from CPython, documented where they apply:

* ``Queue.qsize()`` counts items put and not yet got across all processes;
  it is approximate while puts and gets are in flight (CPython's is too).
* A Queue or Connection passed to a ``plait.futures.ProcessPoolExecutor``
  task as an argument travels by ``DupFd``'s resource sharer, as
  multiprocessing's own would (pool workers share the parent's authkey);
  one in the pool's ``initargs`` is inherited (forked workers) or passed
  at creation (spawned workers).
* A message interrupted half-way by Ctrl-C (``KeyboardInterrupt`` while a
  large ``send``/``recv`` waits for the peer) leaves that Connection's stream
  out of step, as with CPython's Connection; close it.
* Messages are at most 4 GiB - 1 on a Connection. A Queue item larger
  than 64 KiB travels in a memfd whose descriptor rides in the packet.
* ``Pipe(duplex=False)`` is a socket pair too (CPython uses ``os.pipe``);
  one end of a Connection is for one thread at a time, as in CPython.
* Items a process has put while the ring (or socket) was full wait in that
  process's feeder; they are flushed at exit unless ``cancel_join_thread``
  was called (as in CPython). A forked child does not inherit its parent's
  unsent items.
* A process killed while it holds the ring's lock (a copy of at most
  64 KiB) leaves the queue locked for the others, as a process killed
  holding ``multiprocessing.Queue``'s locks does.
* The ring holds 1 MiB of small items; beyond that, puts go to the
  feeder (they never block, as in CPython) until readers make room.
* Linux only: memfd, ``SOCK_SEQPACKET``, process-shared futexes.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import time
import queue as _queue
from multiprocessing import reduction as _reduction
from multiprocessing import util as _util
from multiprocessing.context import BufferTooShort

from plait._plait import _Channel, _ProcessQueueCore
from plait._mp_pool import (  # noqa: F401 - re-exported
    ApplyResult,
    AsyncResult,
    IMapIterator,
    IMapUnorderedIterator,
    MapResult,
    Pool,
    ThreadPool,
)
from plait.futures import WorkerDied

__all__ = [
    "Connection", "Pipe", "Queue", "BufferTooShort",
    "Pool", "ThreadPool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator",
    "IMapUnorderedIterator", "WorkerDied",
]

_HIGHEST = pickle.HIGHEST_PROTOCOL
_pdumps = pickle.dumps
_loads = pickle.loads


def _dumps(obj):
    try:
        return _pdumps(obj, _HIGHEST)
    except (TypeError, pickle.PicklingError, AttributeError):
        # multiprocessing's extra reducers (sockets, its own Connection, ...).
        return bytes(_reduction.ForkingPickler.dumps(obj, _HIGHEST))


class Connection:
    """One end of a :func:`Pipe`: ``multiprocessing.connection.Connection``.

    ``handle`` may be a file descriptor of a connected Unix stream socket
    (ownership passes to the Connection). Not safe for use by several
    threads at once on the same end, like CPython's.
    """

    __slots__ = ("_ch", "_readable", "_writable", "__weakref__")

    def __init__(self, handle, readable=True, writable=True):
        if not readable and not writable:
            raise ValueError("at least one of `readable` and `writable` must be True")
        self._ch = handle if isinstance(handle, _Channel) else _Channel(handle.__index__())
        self._readable = readable
        self._writable = writable

    def __repr__(self):
        state = "closed" if self._ch.closed else f"fd={self._ch.fileno()}"
        return f"<plait.process.Connection {state}>"

    @property
    def closed(self):
        """True if the connection is closed"""
        return self._ch.closed

    @property
    def readable(self):
        """True if the connection is readable"""
        return self._readable

    @property
    def writable(self):
        """True if the connection is writable"""
        return self._writable

    def _check_readable(self):
        if not self._readable:
            raise OSError("connection is write-only")

    def _check_writable(self):
        if not self._writable:
            raise OSError("connection is read-only")

    def fileno(self):
        """File descriptor or handle of the connection"""
        return self._ch.fileno()

    def close(self):
        """Close the connection"""
        self._ch.close()

    def send_bytes(self, buf, offset=0, size=None):
        """Send the bytes data from a bytes-like object"""
        self._ch.fileno()
        self._check_writable()
        if type(buf) is bytes and offset == 0 and size is None:
            self._ch.send_bytes(buf)
            return
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast("B")
        n = m.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._ch.send_bytes(bytes(m[offset : offset + size]))

    def send(self, obj):
        """Send a (picklable) object"""
        if not self._writable:
            self._check_writable()
        try:
            data = _pdumps(obj, _HIGHEST)
        except (TypeError, pickle.PicklingError, AttributeError):
            data = _dumps(obj)
        self._ch.send_bytes(data)

    def recv_bytes(self, maxlength=None):
        """Receive bytes data as a bytes object."""
        self._ch.fileno()
        self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        return self._ch.recv_bytes(maxlength)

    def recv_bytes_into(self, buf, offset=0):
        """Receive bytes data into a writeable bytes-like object.
        Return the number of bytes read."""
        self._ch.fileno()
        self._check_readable()
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            elif offset > bytesize:
                raise ValueError("offset too large")
            data = self._ch.recv_bytes(None)
            size = len(data)
            if bytesize < offset + size:
                raise BufferTooShort(data)
            flat = m.cast("B") if m.ndim != 1 or m.format != "B" else m
            flat[offset : offset + size] = data
            return size

    def recv(self):
        """Receive a (picklable) object"""
        if not self._readable:
            self._ch.fileno()
            self._check_readable()
        return _loads(self._ch.recv_bytes(None))

    def poll(self, timeout=0.0):
        """Whether there is any input available to be read"""
        self._ch.fileno()
        self._check_readable()
        return self._ch.poll(timeout)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()

    def __reduce__(self):
        df = _reduction.DupFd(self.fileno())
        return _rebuild_connection, (df, self._readable, self._writable)


def _rebuild_connection(df, readable, writable):
    return Connection(_Channel(df.detach()), readable, writable)


def Pipe(duplex=True):
    """Two connected :class:`Connection` objects. With ``duplex=False`` the
    first can only receive and the second can only send."""
    a, b = _Channel.pair()
    if duplex:
        return Connection(a), Connection(b)
    return Connection(a, writable=False), Connection(b, readable=False)


def _poll_timeout(timeout):
    """``multiprocessing.Queue.get``'s reading of a timeout, with its errors:
    ``time.monotonic() + timeout`` (TypeError, OverflowError), then
    ``Connection.poll``'s milliseconds, which it checks even when an item is
    there (``math.ceil``: OverflowError for inf, ValueError for NaN; more
    than a C int of milliseconds: OverflowError)."""
    now = time.monotonic()
    t = now + timeout - now
    if not t <= 0 and math.ceil(t * 1e3) > 2**31 - 1:
        raise OverflowError("timeout is too large")
    return t


class Queue:
    """``multiprocessing.Queue`` over a Rust transport.

    ``put`` never blocks on a full ring (only on ``maxsize``): when the
    ring is full the item waits in this process's FIFO and a Rust feeder
    thread (no GIL) sends it, like CPython's feeder thread; ``join_thread``
    and ``cancel_join_thread`` govern that FIFO at exit as in CPython.
    ``qsize()`` is a count shared by every process, approximate while
    operations are in flight. ``ctx`` is accepted and ignored. See the
    module docstring for passing a Queue to other processes.
    """

    def __init__(self, maxsize=0, *, ctx=None):
        self._core = _ProcessQueueCore(maxsize)
        self._init(maxsize)

    def _init(self, maxsize):
        self._maxsize = maxsize
        self._closed = False
        self._joincancelled = False
        self._feeder_pid = None
        self._jointhread = None

    def __repr__(self):
        return f"<plait.process.Queue object at {id(self):#x}>"

    def put(self, obj, block=True, timeout=None):
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        try:
            data = _pdumps(obj, _HIGHEST)
        except (TypeError, pickle.PicklingError, AttributeError):
            data = _dumps(obj)
        if block and timeout is not None:
            if isinstance(timeout, (str, bytes, bytearray)):  # SemLock: PyFloat_AsDouble
                raise TypeError(f"must be real number, not {type(timeout).__name__}")
            timeout = float(timeout)
            if not timeout < 2.0**63:
                # NaN, inf or beyond a C long: multiprocessing's SemLock makes
                # a deadline sem_timedwait refuses, once it must wait.
                try:
                    started = self._core.put(data, False, None)
                except _queue.Full:
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL)) from None
                if started:
                    self._feeder_started()
                return
        if self._core.put(data, block, timeout):
            self._feeder_started()

    def get(self, block=True, timeout=None):
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        if block and timeout is not None:
            timeout = _poll_timeout(timeout)
        return _loads(self._core.get(block, timeout))

    def put_nowait(self, obj):
        return self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    def qsize(self):
        return self._core.qsize()

    def empty(self):
        return self._core.empty()

    def full(self):
        return self._core.full()

    def close(self):
        self._closed = True
        self._core.close()

    def join_thread(self):
        assert self._closed, f"Queue {self!r} not closed"
        self._core.flush(None)

    def cancel_join_thread(self):
        self._joincancelled = True
        if self._jointhread is not None:
            self._jointhread.cancel()
            self._jointhread = None

    def _feeder_started(self):
        pid = os.getpid()
        if self._feeder_pid == pid:
            return
        self._feeder_pid = pid
        if not self._joincancelled:
            # As CPython: at exit (and when the queue is collected) wait for
            # the items this process still has to send.
            self._jointhread = _util.Finalize(self, _ProcessQueueCore.flush, [self._core], exitpriority=-5)

    def __reduce__(self):
        dup = _reduction.DupFd
        return _rebuild_queue, (tuple(dup(fd) for fd in self._core.fds()), self._maxsize)


def _rebuild_queue(dfs, maxsize):
    q = Queue.__new__(Queue)
    q._core = _ProcessQueueCore(maxsize, tuple(df.detach() for df in dfs))
    q._init(maxsize)
    return q


