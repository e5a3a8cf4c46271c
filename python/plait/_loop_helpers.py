"""The Python half of plait.loop's Rust core: what runs rarely (reprs,
error reports, debug mode), written against asyncio's own helpers so that
messages and behaviour match asyncio's exactly."""

import sys
from asyncio import base_events, events, format_helpers

_DEBUG_KW = sys.version_info >= (3, 13)


def _callback_source(callback, args, loop):
    if _DEBUG_KW:
        return format_helpers._format_callback_source(callback, args, debug=loop.get_debug())
    return format_helpers._format_callback_source(callback, args)


def report_callback_error(handle, exc, callback, args):
    """A callback raised: what ``asyncio.Handle._run`` does."""
    loop = handle._loop
    cb = _callback_source(callback, args, loop)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    loop.call_exception_handler(context)


def handle_repr(handle):
    info = events.Handle._repr_info(handle)
    if hasattr(handle, "_when"):  # a TimerHandle, as asyncio's repr shows it
        info.insert(2 if handle._cancelled else 1, f"when={handle._when}")
    return "<{}>".format(" ".join(info))


def debug_call_soon(loop, callback, args, context):
    """``call_soon`` in debug mode: asyncio's checks and its own Handle,
    which records where it was made."""
    loop._check_thread()
    loop._check_callback(callback, "call_soon")
    handle = events.Handle(callback, args, loop, context)
    if handle._source_traceback:
        del handle._source_traceback[-1]  # this frame
    loop._add_callback(handle)
    return handle


def debug_call_soon_internal(loop, callback, args, context):
    """``_call_soon`` (``call_soon_threadsafe``'s) in debug mode."""
    handle = events.Handle(callback, args, loop, context)
    if handle._source_traceback:
        del handle._source_traceback[-1]  # this frame
    loop._add_callback(handle)
    return handle


def debug_call_at(loop, when, callback, args, context):
    """``call_at`` / ``call_later`` in debug mode."""
    loop._check_thread()
    loop._check_callback(callback, "call_at")
    timer = events.TimerHandle(when, callback, args, loop, context)
    if timer._source_traceback:
        del timer._source_traceback[-1]  # this frame
    return timer


def plain_call_soon(loop, callback, args, context):
    """``call_soon`` with a context that is not a ``contextvars.Context``:
    asyncio's own Handle, which takes it and fails when run (reported to
    the exception handler), as asyncio's loop does."""
    handle = events.Handle(callback, args, loop, context)
    loop._add_callback(handle)
    return handle


def plain_call_at(loop, when, callback, args, context):
    """``call_at`` with a context that is not a ``contextvars.Context``
    (see ``plain_call_soon``)."""
    return events.TimerHandle(when, callback, args, loop, context)


def check_slow_callback(loop, handle, dt):
    if dt >= loop.slow_callback_duration:
        # asyncio's base_events.logger, looked up at call time as asyncio's
        # own loop does (tests mock it there).
        base_events.logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), dt)
