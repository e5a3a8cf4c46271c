"""The switch: ``plait.patch()`` / ``plait.unpatch()`` (and, through them,
``python -m plait run``).

``patch()`` puts plait's classes where the standard library's are looked
up, so code that imports ``threading``, ``queue``, ``concurrent.futures``,
``asyncio`` or ``multiprocessing`` later — the libraries a program runs,
not only its own code — gets plait. Each part is one module here with an
``apply(set_attr)`` function that names every attribute it replaces:

* ``_threading`` — ``threading.Lock``, ``RLock`` (through ``_CRLock``, so
  ``threading.RLock`` keeps its own argument warnings), ``Condition``,
  ``Semaphore``, ``BoundedSemaphore``, ``Event``, ``Barrier``, ``Timer``;
* ``_queue`` — ``queue.Queue``, ``LifoQueue``, ``PriorityQueue``,
  ``SimpleQueue``;
* ``_futures`` — ``concurrent.futures.ThreadPoolExecutor``,
  ``ProcessPoolExecutor``, ``wait``, ``as_completed``;
* ``_asyncio`` — the loop asyncio makes for ``asyncio.run``,
  ``asyncio.Runner`` and ``asyncio.new_event_loop``;
* ``_multiprocessing`` — ``multiprocessing.Pool`` and
  ``multiprocessing.pool.ThreadPool`` (so ``multiprocessing.dummy.Pool``).

What is replaced is recorded (the object, the attribute, whether it was
there and what it was), and ``unpatch()`` puts back exactly that, in the
reverse order. Objects made while switched stay plait's.

A name a module took with ``from threading import Lock`` *before* the
switch keeps the standard class: ``python -m plait run`` switches before
the program's first line, which is why it exists.

Worker processes of a switched program are switched too, with the same
parts: ``multiprocessing``'s spawn and forkserver children (through the
preparation data every such child unpickles first, before it imports the
parent's ``__main__``), plait's process-pool workers (through their setup),
and forked children (which inherit the switched modules).
"""

from __future__ import annotations

import threading as _threading

__all__ = ["PARTS", "patch", "unpatch", "patched"]

#: The parts of the standard library the switch can replace, in the order
#: they are applied (unpatch undoes them in reverse).
PARTS = ("threading", "queue", "futures", "asyncio", "multiprocessing")

# Taken before anything is switched, so always the standard library's lock;
# never held across code that could wait on another thread.
_lock = _threading.RLock()
# part -> [(obj, name, had, old), ...] in the order they were set.
_applied: dict[str, list] = {}
# The hook on multiprocessing's children: (obj, name, had, old) or None.
_child_hook: list = []


def _setter(record):
    def set_attr(obj, name, value):
        had = name in vars(obj)
        old = vars(obj).get(name)
        record.append((obj, name, had, old))
        setattr(obj, name, value)

    return set_attr


def _restore(record):
    for obj, name, had, old in reversed(record):
        if had:
            setattr(obj, name, old)
        else:
            try:
                delattr(obj, name)
            except AttributeError:
                pass
    record.clear()


def patch(*, threading=True, queue=True, futures=True, asyncio=True, multiprocessing=True):
    """Switch the standard library's concurrency classes to plait's, for
    every module that looks them up from now on.

    Each keyword is a part (``threading``, ``queue``, ``futures`` — that is
    ``concurrent.futures`` —, ``asyncio`` and ``multiprocessing``); False
    leaves that part alone; anything but True or False is a TypeError (and
    then nothing is switched). Calls add up: a part switched by an earlier
    call stays switched, and switching a part twice changes nothing.
    ``unpatch()`` undoes every part. Safe to call from several threads.

    Only lookups made after the call are switched: a name a module already
    took with ``from threading import Lock`` keeps the standard class
    (``python -m plait run`` switches before the program's first line).
    """
    wanted = {"threading": threading, "queue": queue, "futures": futures,
              "asyncio": asyncio, "multiprocessing": multiprocessing}
    for part, value in wanted.items():
        if not isinstance(value, bool):
            raise TypeError(f"patch() argument {part!r} must be True or False, "
                            f"not {type(value).__name__}")
    import importlib

    with _lock:
        for part in PARTS:
            if wanted[part] and part not in _applied:
                module = importlib.import_module(f"plait._switch._{part}")
                record: list = []
                try:
                    module.apply(_setter(record))
                except BaseException:
                    _restore(record)
                    raise
                _applied[part] = record
        if _applied and not _child_hook:
            _install_child_hook()


def unpatch():
    """Undo ``patch()``: every attribute it replaced is the standard
    library's again (objects made meanwhile stay plait's). Does nothing
    when nothing is switched."""
    with _lock:
        for part in reversed(PARTS):
            record = _applied.pop(part, None)
            if record is not None:
                _restore(record)
        if _child_hook:
            _restore(_child_hook)


def patched():
    """The parts switched now, in ``PARTS`` order (a tuple; empty if none)."""
    return tuple(part for part in PARTS if part in _applied)


# --- worker processes -------------------------------------------------------------


def _apply_in_child(parts):
    """Run in a worker process before it loads anything of the parent's:
    switch the same parts as the parent."""
    patch(**{part: part in parts for part in PARTS})


class _SwitchInChild:
    """Put in multiprocessing's preparation data, which a spawn or
    forkserver child unpickles before it imports the parent's ``__main__``:
    unpickling it switches the child. Unpickling never fails: a child that
    cannot import plait runs unswitched."""

    def __init__(self, parts):
        self.parts = tuple(parts)

    def __reduce__(self):
        source = ("try:\n"
                  "    import plait._switch as s\n"
                  f"    s._apply_in_child({self.parts!r})\n"
                  "except Exception:\n"
                  "    pass\n")
        return (exec, (source, {}))


def _install_child_hook():
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def get_preparation_data(name):
        data = original(name)
        parts = patched()
        if parts:
            data["plait_switch"] = _SwitchInChild(parts)
        return data

    get_preparation_data.__wrapped__ = original
    _setter(_child_hook)(spawn, "get_preparation_data", get_preparation_data)


def _worker_setup():
    """What a spawned plait process-pool worker needs to switch itself (the
    parts, for ``_worker``'s setup), or None when nothing is switched."""
    return patched() or None

