"""The ``asyncio`` part of the switch: the loops asyncio makes itself —
``asyncio.run``, ``asyncio.Runner`` and ``asyncio.new_event_loop`` (and so
``IsolatedAsyncioTestCase``), and ``asyncio.EventLoop`` on 3.13+ — are
plait's.

Where asyncio's default event loop policy exists (every version plait
supports), the switch sets the loop class that policy makes
(``_loop_factory``): no policy is installed or replaced, so a program that
sets its own policy (uvloop's, say) keeps it. Where the policy machinery is
gone, ``asyncio.new_event_loop`` itself is replaced. ``asyncio.
SelectorEventLoop`` stays asyncio's class."""

import asyncio as _asyncio
from asyncio import events as _events
from asyncio import unix_events as _unix_events

from plait import loop as _loop


def apply(set_attr):
    policy = getattr(_unix_events, "_UnixDefaultEventLoopPolicy", None)
    if policy is not None and "_loop_factory" in vars(policy):
        set_attr(policy, "_loop_factory", _loop.EventLoop)
    else:  # pragma: no cover - a Python without event loop policies
        set_attr(_events, "new_event_loop", _loop.new_event_loop)
        set_attr(_asyncio, "new_event_loop", _loop.new_event_loop)
    if "EventLoop" in vars(_asyncio):
        set_attr(_asyncio, "EventLoop", _loop.EventLoop)
        if "EventLoop" in vars(_unix_events):
            set_attr(_unix_events, "EventLoop", _loop.EventLoop)
