"""plait.loop: an asyncio event loop with a Rust core.

``EventLoop`` is a subclass of asyncio's own Unix selector loop whose hot
path is Rust (``plait._plait._LoopCore``): the ready queue and
``call_soon``, the timer heap and ``call_later``/``call_at``, an epoll
selector polled without the GIL, and the iterations of ``run_forever``.
Everything asyncio builds on those — transports, servers, happy eyeballs,
``sendfile``, TLS, subprocesses, signal handlers, debug mode — is asyncio's
code running on this core, so it behaves as asyncio does. Tasks and
futures stay asyncio's (C-accelerated) ``Task`` and ``Future``.

Use it with::

    plait.run(main())                                  # like asyncio.run
    asyncio.run(main(), loop_factory=plait.new_event_loop)   # 3.12+
    with asyncio.Runner(loop_factory=plait.new_event_loop) as runner: ...

``plait.install()`` makes it asyncio's default where event loop policies
still exist; nothing in plait depends on policies.

Differences from asyncio's loop:

* ``call_soon``/``call_later``/``call_at`` return ``plait.loop.Handle`` /
  ``TimerHandle``, with asyncio's API (``cancel``, ``cancelled``,
  ``get_context``, ``when``) but not subclasses of ``asyncio.Handle``
  (uvloop's handles are not either). In debug mode, or given a ``context``
  that is not a ``contextvars.Context``, they are asyncio's own.
* The loop's ``_ready`` deque and ``_scheduled`` heap are not used (the
  queue and heap live in Rust); ``_selector`` is a ``plait.loop.Selector``
  (epoll, with the ``selectors`` API). A loop must be given no selector or a
  ``plait.loop.Selector``.
* ``call_at`` (and so ``asyncio.timeout_at``) refuses at the call a time
  that asyncio's loop cannot compute a timeout from (a ``str``, an object
  with only ``__float__`` or ``__index__``, a ``Decimal``, an int too large
  for a float), with the ``TypeError``/``OverflowError`` asyncio's
  ``run_forever`` raises later, on every iteration, once that timer is first.
"""

import asyncio
import socket
import sys
import threading
from asyncio import events
from asyncio import unix_events as _unix_events

from asyncio import protocols as _protocols
from asyncio import selector_events as _selector_events

from plait._plait import Handle, Selector, TimerHandle, _LoopCore, _plait_install_transport
from plait.debug import _tasks as _debug_tasks

__all__ = ["EventLoop", "EventLoopPolicy", "Handle", "Selector", "TimerHandle", "install",
           "new_event_loop", "run"]

_HAS_SETUP = hasattr(asyncio.BaseEventLoop, "_run_forever_setup")


class _SocketTransport(_selector_events._SelectorSocketTransport):
    """asyncio's socket transport, with ``write`` and ``_read_ready``
    (its hot paths) replaced by native code that hands anything unusual
    back to asyncio's own methods (see ``crates/plait-py/src/loop/transport.rs``).

    The state those paths read lives in slots, which asyncio's code still
    uses as attributes and the native code reads at a fixed offset."""

    __slots__ = ("_plait_plain", "_plait_native", "_conn_lost", "_sock_fd", "_protocol", "_eof",
                 "_empty_waiter", "_buffer")

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        # A socket subclass may override recv and send, which asyncio's
        # transport calls: its reads and writes stay asyncio's.
        self._plait_plain = type(sock) is socket.socket
        super().__init__(loop, sock, protocol, waiter, extra, server)

    def set_protocol(self, protocol):
        super().set_protocol(protocol)
        # A BufferedProtocol's reads stay asyncio's (get_buffer/buffer_updated).
        self._plait_native = self._plait_plain and not isinstance(protocol, _protocols.BufferedProtocol)


def _pause_stream(reader: asyncio.StreamReader) -> None:
    """The end of StreamReader.feed_data, for the transport's native reads
    into a reader's buffer: the buffer is past twice the limit."""
    try:
        reader._transport.pause_reading()  # type: ignore[attr-defined]
    except NotImplementedError:
        reader._transport = None  # type: ignore[attr-defined]
    else:
        reader._paused = True  # type: ignore[attr-defined]


_plait_install_transport(_SocketTransport, _selector_events._SelectorSocketTransport.write,
                         _selector_events._SelectorSocketTransport._read_ready,
                         asyncio.StreamReaderProtocol, asyncio.StreamReader, _pause_stream)


class EventLoop(_LoopCore, _unix_events._UnixSelectorEventLoop):
    """An asyncio event loop with a Rust core (see the module docstring)."""

    def __init__(self, selector=None):
        if selector is None:
            selector = Selector()
        elif not isinstance(selector, Selector):
            raise TypeError(f"plait.loop.EventLoop needs a plait.loop.Selector, not {type(selector).__name__}")
        # The core needs its selector before asyncio's __init__ registers
        # its self-pipe; clock resolution and debug flag come after. It
        # calls ``self.time()`` for timers only when a subclass overrides
        # it or it is set on the instance (a patched or virtual clock).
        time_overridden = type(self).time is not _LoopCore.time
        self._plait_bind(selector, 1e-9, False, time_overridden)
        if type(self).call_soon is _LoopCore.call_soon:
            # Bound once and kept on the instance: asyncio's C tasks and
            # futures look ``loop.call_soon`` up for every step and callback,
            # and would otherwise make (and collect) a bound method each
            # time. A subclass that overrides call_soon keeps its own.
            self.call_soon = self.call_soon
        super().__init__(selector)
        self._plait_bind(selector, self._clock_resolution, bool(self._debug), time_overridden)
        _debug_tasks.register_loop(self)  # weakly, for plait.debug.snapshot()'s task graph

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        return _SocketTransport(self, sock, protocol, waiter, extra, server)

    def set_debug(self, enabled):
        super().set_debug(enabled)
        self._plait_set_debug(bool(enabled))

    def run_forever(self):
        """Run until ``stop()`` is called (asyncio's setup and cleanup around
        the Rust iterations)."""
        if _HAS_SETUP:
            self._run_forever_setup()
            try:
                self._plait_run_forever()
            finally:
                self._run_forever_cleanup()
            return
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            self._plait_run_forever()
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        super().close()
        self._plait_close()


def new_event_loop():
    """A new plait event loop (a loop factory for ``asyncio.Runner`` and,
    on 3.12+, ``asyncio.run``)."""
    return EventLoop()


def run(main, *, debug=None):
    """Run the coroutine ``main`` on a new plait loop and return its result,
    as ``asyncio.run`` does (Ctrl-C cancels ``main`` and exits cleanly)."""
    if events._get_running_loop() is not None:
        # As asyncio.run: refuse before making a loop (a Runner made here
        # could not close its loop from inside another).
        raise RuntimeError("plait.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_310(main, debug)


def _run_310(main, debug):
    # asyncio.run of 3.10, with a plait loop (run() has refused a
    # running loop already).
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop):
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception during asyncio.run() shutdown",
                "exception": task.exception(),
                "task": task,
            })


# asyncio's default policy class, by the private name it has on every
# version: 3.14 deprecates the public ``asyncio.DefaultEventLoopPolicy`` (a
# DeprecationWarning on access, an error under ``-W error``, and this module
# is imported by the switch before a program's first line); 3.16 removes it.
_DefaultPolicy = getattr(_unix_events, "_UnixDefaultEventLoopPolicy", None)

if _DefaultPolicy is not None:

    class EventLoopPolicy(_DefaultPolicy):
        """asyncio's default policy, making plait loops."""

        _loop_factory = EventLoop

        def new_event_loop(self):
            return EventLoop()

    def install():
        """Make plait's loop asyncio's default (through the event loop
        policy, where policies exist)."""
        asyncio.set_event_loop_policy(EventLoopPolicy())
else:  # pragma: no cover - policies removed
    EventLoopPolicy = None

    def install():
        raise RuntimeError("this Python has no event loop policies: use "
                           "asyncio.run(main(), loop_factory=plait.new_event_loop)")
