"""plait: Python's concurrency stack rebuilt in Rust.

Same APIs as the standard library, implemented in a Rust core:

* ``plait.sync``  — Lock, RLock, Condition, Semaphore, BoundedSemaphore,
  Event, Barrier, Timer (the ``threading`` primitives)
* ``plait.queue`` — Queue, LifoQueue, PriorityQueue, SimpleQueue, Empty,
  Full (the ``queue`` module)

* ``plait.loop``  — an asyncio event loop with a Rust core:
  ``plait.run(main())``, ``plait.new_event_loop()``, ``plait.EventLoop``
* ``plait.debug`` — who holds what and who waits for it: ``snapshot()``,
  ``dump()``, deadlock and lock-order detection, ``python -m plait inspect``
* ``plait.patch()`` / ``plait.unpatch()`` — switch the standard library's
  ``threading``, ``queue``, ``concurrent.futures``, asyncio loops and
  ``multiprocessing`` pools to plait for a whole program (what
  ``python -m plait run`` does before the program starts)

Switch by changing an import::

    from plait.sync import Lock, Condition
    from plait import queue
"""

try:
    from plait._plait import __version__
except ImportError as _exc:  # pragma: no cover - a source checkout not built yet
    raise ImportError(
        "plait's Rust extension (plait._plait) is not built for this interpreter: "
        "run `make build` (or `maturin develop --release`) in the plait checkout, "
        "or `pip install plait`"
    ) from _exc

from plait._plait import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
    Timer,
)

# For type checkers (and mypy.stubtest) only: at run time these four come from
# __getattr__, below. Spelled without `import typing`, which plait does not need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from plait._switch import patch, patched, unpatch
    from plait.loop import EventLoop, install, new_event_loop, run
del TYPE_CHECKING


def __getattr__(name):
    # plait.run / new_event_loop / EventLoop / install import asyncio only
    # when first used.
    if name in ("run", "new_event_loop", "EventLoop", "install"):
        from plait import loop

        return getattr(loop, name)
    if name in ("patch", "unpatch", "patched"):
        from plait import _switch

        return getattr(_switch, name)
    if name == "debug":
        import importlib

        return importlib.import_module("plait.debug")
    raise AttributeError(f"module 'plait' has no attribute {name!r}")


__all__ = [
    "__version__",
    "EventLoop",
    "install",
    "new_event_loop",
    "run",
    "patch",
    "patched",
    "unpatch",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
    "Timer",
]

# PLAIT_DEBUG (e.g. "deadlock=raise,lock-order") is read by plait.debug,
# which is otherwise imported only when first used.
import os as _os  # noqa: E402

if _os.environ.get("PLAIT_DEBUG"):
    import plait.debug  # noqa: E402, F401

del _os
