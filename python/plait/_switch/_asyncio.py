"""The ``asyncio`` part of the switch: the loops asyncio makes itself —
``asyncio.run``, ``asyncio.Runner``, ``asyncio.new_event_loop`` and the
policy's ``get_event_loop`` (and so ``IsolatedAsyncioTestCase``),
``asyncio.EventLoop`` on 3.13+, and ``asyncio.SelectorEventLoop()`` asked
for without a selector — are plait's.

Where asyncio's default event loop policy exists (every version plait
supports), the switch sets the loop class that policy makes
(``_loop_factory``), looked up by its private name (3.14 deprecates the
public one): no policy is installed or replaced, so a program that set its
own policy (uvloop's, say) keeps it. Where the policy machinery is gone,
``asyncio.new_event_loop`` itself is replaced.

``asyncio.SelectorEventLoop`` is what programs that pick their loop class
name on Unix (uvicorn's ``--loop asyncio``, its default without uvloop,
passes it to ``asyncio.run(loop_factory=...)``): it is asyncio's default
loop there, as ``asyncio.EventLoop`` is. Switched, it is a subclass of
asyncio's class whose *call* gives a plait loop when no selector (or a
``plait.loop.Selector``) is given and asyncio's own loop when a selector
of the ``selectors`` module is; ``isinstance`` and ``issubclass`` answer
for asyncio's class (so both kinds of loop are instances), and a class
that subclasses it is an ordinary asyncio loop class.
"""

import asyncio as _asyncio
from asyncio import events as _events
from asyncio import unix_events as _unix_events

from plait import loop as _loop

_AsyncioLoop = _unix_events._UnixSelectorEventLoop


def _make(selector=None):
    # asyncio.SelectorEventLoop's own signature.
    if selector is None or isinstance(selector, _loop.Selector):
        return _loop.EventLoop(selector)
    return _AsyncioLoop(selector)


class _SelectorEventLoopType(type):
    def __call__(cls, *args, **kwargs):
        if cls is not SelectorEventLoop:  # a program's own subclass
            return super().__call__(*args, **kwargs)
        return _make(*args, **kwargs)

    def __instancecheck__(cls, obj):
        if cls is SelectorEventLoop:
            return isinstance(obj, _AsyncioLoop)
        return super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub):
        if cls is SelectorEventLoop:
            return issubclass(sub, _AsyncioLoop)
        return super().__subclasscheck__(sub)


class SelectorEventLoop(_AsyncioLoop, metaclass=_SelectorEventLoopType):
    """``asyncio.SelectorEventLoop`` under the switch: called with no
    selector (or a ``plait.loop.Selector``) it makes a ``plait.loop.
    EventLoop``; with a ``selectors`` selector, asyncio's own loop. Both are
    instances of it."""


def apply(set_attr):
    policy = getattr(_unix_events, "_UnixDefaultEventLoopPolicy", None)
    if policy is not None and "_loop_factory" in vars(policy):
        set_attr(policy, "_loop_factory", _loop.EventLoop)
    else:  # pragma: no cover - a Python without event loop policies
        set_attr(_events, "new_event_loop", _loop.new_event_loop)
        set_attr(_asyncio, "new_event_loop", _loop.new_event_loop)
    for module in (_asyncio, _unix_events):
        if vars(module).get("SelectorEventLoop") is _AsyncioLoop:
            set_attr(module, "SelectorEventLoop", SelectorEventLoop)
        if "EventLoop" in vars(module):  # 3.13+
            set_attr(module, "EventLoop", _loop.EventLoop)
