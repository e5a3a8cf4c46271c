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
  ``asyncio.Runner`` and ``asyncio.new_event_loop``, ``asyncio.EventLoop``
  (3.13+) and ``asyncio.SelectorEventLoop()`` called without a selector;
* ``_multiprocessing`` — ``multiprocessing.Pool`` and
  ``multiprocessing.pool.ThreadPool`` (so ``multiprocessing.dummy.Pool``).

``threading`` and ``queue`` are switched at once; ``concurrent.futures``,
``asyncio`` and ``multiprocessing.pool`` when they are first imported (a
finder on ``sys.meta_path`` wraps their loader), so a switched program that
never imports asyncio does not pay for importing it.

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

import sys
import threading as _threading

__all__ = ["PARTS", "patch", "unpatch", "patched"]

#: The parts of the standard library the switch can replace, in the order
#: they are applied (unpatch undoes them in reverse).
PARTS = ("threading", "queue", "futures", "asyncio", "multiprocessing")

#: Parts applied when their module is first imported (at once if it already
#: is): a switched program that never imports asyncio does not pay for
#: importing it. threading and queue are applied at once.
_TRIGGERS = {"futures": "concurrent.futures", "asyncio": "asyncio",
             "multiprocessing": "multiprocessing.pool"}
#: The module whose import installs the hook that switches multiprocessing's
#: spawn and forkserver children.
_CHILD_TRIGGER = "multiprocessing.spawn"

# Taken before anything is switched, so always the standard library's lock;
# held only while attributes are set, never across an import.
_lock = _threading.RLock()
# part -> [(obj, name, had, old), ...] in the order they were set.
_applied: dict[str, list] = {}
# Parts waiting for their module's first import.
_pending: set = set()
# The hook on multiprocessing's children, as a record like a part's.
_child_hook: list = []
_child_hook_pending = False


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

    ``concurrent.futures``, ``asyncio`` and ``multiprocessing.pool`` are
    switched when they are first imported, if they are not yet.
    """
    global _child_hook_pending
    wanted = {"threading": threading, "queue": queue, "futures": futures,
              "asyncio": asyncio, "multiprocessing": multiprocessing}
    for part, value in wanted.items():
        if not isinstance(value, bool):
            raise TypeError(f"patch() argument {part!r} must be True or False, "
                            f"not {type(value).__name__}")
    for part in PARTS:
        if not wanted[part]:
            continue
        trigger = _TRIGGERS.get(part)
        if trigger is None or trigger in sys.modules:
            _apply(part)
        else:
            with _lock:
                if part not in _applied:
                    _pending.add(part)
                    _watch()
    with _lock:
        if not (_applied or _pending) or _child_hook or _child_hook_pending:
            return
        if _CHILD_TRIGGER not in sys.modules:
            _child_hook_pending = True
            _watch()
            return
    _install_child_hook()


def _apply(part):
    """Switch one part now. Its module is imported outside ``_lock`` (an
    import may wait for another thread's import of the same module)."""
    import importlib

    module = importlib.import_module(f"plait._switch._{part}")
    with _lock:
        _pending.discard(part)
        if part in _applied:
            return
        record: list = []
        try:
            module.apply(_setter(record))
        except BaseException:
            _restore(record)
            raise
        _applied[part] = record


def unpatch():
    """Undo ``patch()``: every attribute it replaced is the standard
    library's again (objects made meanwhile stay plait's). Does nothing
    when nothing is switched."""
    global _child_hook_pending
    with _lock:
        _pending.clear()
        _child_hook_pending = False
        _unwatch()
        for part in reversed(PARTS):
            record = _applied.pop(part, None)
            if record is not None:
                _restore(record)
        if _child_hook:
            _restore(_child_hook)


def patched():
    """The parts switched now, in ``PARTS`` order (a tuple; empty if none).
    A part waiting for its module's first import counts as switched."""
    return tuple(part for part in PARTS if part in _applied or part in _pending)


# --- switching a part when its module is first imported -------------------------------


class _Loader:
    """Wraps the real loader of a watched module: runs the module, then
    switches what waited for it. The module keeps its real loader."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._loader.exec_module(module)
        _imported(self._name)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder:
    """On ``sys.meta_path`` while a part waits for its module: finds that
    module with the finders after it and wraps its loader."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        with _lock:
            watched = name in _TRIGGERS.values() and any(
                _TRIGGERS[p] == name for p in _pending)
            watched = watched or (name == _CHILD_TRIGGER and _child_hook_pending)
        if not watched:
            return None
        for finder in list(sys.meta_path):
            if finder is cls:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader, name)
        return spec

    @classmethod
    def invalidate_caches(cls):
        pass


def _watch():
    if _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)


def _unwatch():
    try:
        sys.meta_path.remove(_Finder)
    except ValueError:
        pass


def _imported(name):
    """A watched module has just been run: switch what waited for it. A
    failure is a warning, not a failed import of the program's module."""
    global _child_hook_pending
    with _lock:
        parts = [p for p in PARTS if p in _pending and _TRIGGERS[p] == name]
        child = name == _CHILD_TRIGGER and _child_hook_pending
        if child:
            _child_hook_pending = False
    try:
        for part in parts:
            _apply(part)
        if child:
            _install_child_hook()
    except Exception as exc:  # pragma: no cover - a plait bug; keep the program going
        import warnings

        with _lock:
            _pending.difference_update(parts)
        warnings.warn(f"plait.patch(): could not switch {name}: {type(exc).__name__}: {exc}",
                      RuntimeWarning, stacklevel=2)
    with _lock:
        if not (_pending or _child_hook_pending):
            _unwatch()


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

    with _lock:
        if _child_hook or not (_applied or _pending):
            return
        _install_child_hook_locked(spawn)


def _install_child_hook_locked(spawn):
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

