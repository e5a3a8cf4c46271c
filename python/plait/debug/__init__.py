"""plait.debug: see every wait, catch deadlocks before and when they happen.

Every plait primitive knows its name, its owner(s) and its waiters, every
future what runs it. This module turns that into a wait graph::

    snap = plait.debug.snapshot()
    print(snap)             # like jstack: who waits for what, held by whom, stacks, deadlocks
    snap.to_json()          # {"version": 1, "pid", "nodes", "edges", "cycles"}
    snap.to_dot()           # Graphviz; cycle edges in red
    snap.to_mermaid()

    plait.debug.dump()                      # print the report to stderr
    plait.debug.dump_on(signal.SIGUSR1)     # ... on a signal
    plait.debug.enable(deadlock="raise")    # DeadlockError instead of hanging
    plait.debug.enable(lock_order=True)     # LockOrderWarning on an inverted lock order
    plait.debug.enable(stall=10.0)          # report when nothing can wake anyone for 10 s
    plait.debug.top(10)                     # the most contended primitives

The environment variable ``PLAIT_DEBUG`` (a comma-separated list of
``deadlock``, ``deadlock=raise``, ``deadlock=off``, ``lock-order``,
``stall=SECONDS``, ``inspect=off``) is read when this module is imported.

Reports also go to the ``plait.debug`` logger when it (or an ancestor) has
handlers.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from plait import _plait
from plait.debug import _format
from plait.debug._format import format_top
from plait.debug._graph import Snapshot, collect_threads, node_id

__all__ = [
    "DeadlockError",
    "LockOrderWarning",
    "Snapshot",
    "disable",
    "dump",
    "dump_on",
    "enable",
    "format_top",
    "settings",
    "snapshot",
    "top",
]

logger = logging.getLogger("plait.debug")

_DEADLOCK_MODES = ("default", "report", "raise", "off")


class DeadlockError(RuntimeError):
    """Raised (with ``enable(deadlock="raise")``) in the thread whose wait
    would close a cycle of waits; the thread has not acquired anything, and
    no other thread is disturbed. The message is the cycle's report."""


class LockOrderWarning(RuntimeWarning):
    """Warned (with ``enable(lock_order=True)``) the first time two locks are
    taken in the order opposite to one seen before: a deadlock waiting for
    the wrong timing."""


# --- snapshots ---------------------------------------------------------------------


def snapshot(*, all: bool = False) -> Snapshot:  # noqa: A002 - the documented keyword
    """The wait graph of this process now.

    ``all=False`` describes the primitives that are held or waited on (and
    futures that run or are waited for); ``all=True`` every live one."""
    from plait.debug import _tasks  # asyncio only when a snapshot is taken

    state = _plait._debug_state(all)
    threads = collect_threads()
    tasks = _tasks.collect()
    missing = tasks.prim_ids - {p["id"] for p in state.get("primitives", ())}
    if missing and not all:
        # A task awaits a plait future the short state left out: describe it
        # too, so the chain goes on to what runs it.
        extra = [p for p in _plait._debug_state(True).get("primitives", ()) if p["id"] in missing]
        state = dict(state, primitives=list(state.get("primitives", ())) + extra)
    return Snapshot._from_state(state, threads=threads, tasks=tasks)


def dump(file: Optional[IO[str]] = None) -> None:
    """Write the report of :func:`snapshot` to ``file`` (default ``sys.stderr``)."""
    stream = sys.stderr if file is None else file
    if stream is None:  # pythonw, or stderr closed
        return
    stream.write(str(snapshot()))
    stream.flush()


def dump_on(signum: int, file: Optional[IO[str]] = None) -> Union[Callable[..., Any], int, None]:
    """Install a handler that :func:`dump`\\ s on signal ``signum`` (from the
    main thread, as ``signal.signal`` requires); returns the previous handler.
    The handler does not chain to the previous one."""

    def _dump_handler(_signum: int, _frame: Any) -> None:
        dump(file)

    return signal.signal(signum, _dump_handler)


def top(n: int = 10) -> List[Dict[str, Any]]:
    """The ``n`` most contended live primitives (by contended acquisitions,
    then total wait): dicts with id, kind, name, site, contended, wait_total,
    wait_max, hold_max (seconds). :func:`format_top` prints them as a table."""
    return _format.top_rows(_plait._debug_stats(), n)


# --- settings ------------------------------------------------------------------------


def enable(*, deadlock: Optional[str] = None, lock_order: Optional[bool] = None,
           stall: Optional[float] = None, inspect: Optional[bool] = None,
           tracking: Optional[bool] = None) -> Dict[str, Any]:
    """Turn checks on (a ``None`` argument leaves that setting as it is);
    returns the settings now in force (see :func:`settings`).

    * ``deadlock``: ``"report"`` writes a report when a wait would close a
      cycle and waits anyway; ``"raise"`` raises :class:`DeadlockError` in
      that thread instead; ``"off"`` checks nothing; ``"default"`` (the
      setting at start) reports once a cycle that has lasted 2 s.
    * ``lock_order``: warn with :class:`LockOrderWarning` when two locks are
      taken in the order opposite to one seen before.
    * ``stall``: seconds after which a process where every thread is blocked
      on plait primitives that nothing can wake is reported (0 turns it off).
    * ``inspect``: whether ``python -m plait inspect`` may attach.
    * ``tracking``: ``False`` stops primitives recording holders' times and
      waits (the last few percent of uncontended speed; every report and
      check goes with it). On by default."""
    if deadlock is not None and deadlock not in _DEADLOCK_MODES:
        raise ValueError(f"deadlock must be one of {', '.join(map(repr, _DEADLOCK_MODES))} "
                         f"or None, not {deadlock!r}")
    if stall is not None:
        stall = float(stall)
        if not stall >= 0.0:
            raise ValueError(f"stall must be a number of seconds >= 0, not {stall!r}")
    return dict(_plait._debug_configure(
        deadlock=deadlock,
        lock_order=None if lock_order is None else bool(lock_order),
        stall=stall,
        inspect=None if inspect is None else bool(inspect),
        tracking=None if tracking is None else bool(tracking),
    ))


def disable() -> Dict[str, Any]:
    """Turn off deadlock checks (the default 2 s report too), lock-order
    checks and stall reports; returns the settings now in force."""
    return dict(_plait._debug_configure(deadlock="off", lock_order=False, stall=0.0, inspect=None))


def settings() -> Dict[str, Any]:
    """The settings in force: ``{"deadlock": str, "lock_order": bool,
    "stall": float | None, "inspect": bool}``."""
    return dict(_plait._debug_configure(deadlock=None, lock_order=None, stall=None, inspect=None))


# --- PLAIT_DEBUG -----------------------------------------------------------------------

_ON = ("", "1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")


def _flag(value: str) -> Optional[bool]:
    value = value.strip().lower()
    return True if value in _ON else False if value in _OFF else None


#: ``PLAIT_DEBUG`` items that are on/off switches, and their ``enable`` keyword.
_SWITCHES = {"lock-order": "lock_order", "tracking": "tracking", "inspect": "inspect"}


def _parse_token(key: str, value: Optional[str]) -> Dict[str, Any]:
    """One ``PLAIT_DEBUG`` item as ``enable`` keywords; ValueError if unknown."""
    key = key.strip().lower().replace("_", "-")
    if key == "deadlock":
        mode = "report" if value is None or value.strip() == "" else value.strip().lower()
        if mode not in _DEADLOCK_MODES:
            raise ValueError(f"deadlock={value}")
        return {"deadlock": mode}
    if key == "stall" and value is not None:
        seconds = float(value)  # ValueError if not a number
        if not seconds >= 0.0:
            raise ValueError(f"stall={value}")
        return {"stall": seconds}
    if key in _SWITCHES:
        flag = _flag(value or "")
        if flag is None:
            raise ValueError(f"{key}={value}")
        return {_SWITCHES[key]: flag}
    raise ValueError(key if value is None else f"{key}={value}")


def _parse_env(text: str) -> Dict[str, Any]:
    """``PLAIT_DEBUG``'s value as ``enable`` keywords; an item it does not
    understand is skipped with a RuntimeWarning (a typo must not stop the
    program from starting)."""
    kwargs: Dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        try:
            kwargs.update(_parse_token(key, value if sep else None))
        except ValueError:
            warnings.warn(f"PLAIT_DEBUG: ignoring {item.strip()!r} (expected deadlock, "
                          "deadlock=raise, deadlock=off, lock-order, stall=SECONDS, inspect=off)",
                          RuntimeWarning, stacklevel=2)
    return kwargs


def _configure_from_env() -> None:
    text = os.environ.get("PLAIT_DEBUG", "")
    if text.strip():
        kwargs = _parse_env(text)
        if kwargs:
            enable(**kwargs)


# --- called by the binding -----------------------------------------------------------


def _emit(text: str) -> None:
    """Write a report to stderr, and to the ``plait.debug`` logger when it
    has somewhere to go (so it is not printed twice by logging's last resort)."""
    text = text if text.endswith("\n") else text + "\n"
    stream = sys.stderr
    if stream is not None:
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed
            pass
    if logger.hasHandlers():
        logger.warning("%s", text.rstrip("\n"))


def _cycle_ids(snap: Snapshot, cycle: Sequence[Tuple[int, int]]) -> List[str]:
    """Node ids of a cycle given as (thread ident, primitive it waits for)
    pairs: thread, primitive, next thread, ... Primitives the state did not
    describe get a bare node."""
    kinds = {n.get("prim_id"): n["kind"] for n in snap.nodes if "prim_id" in n}
    ids: List[str] = []
    for ident, prim_id in cycle:
        ids.append(node_id("thread", ident))
        kind = kinds.get(prim_id, "lock")
        pid = node_id(kind, prim_id)
        if snap.node(pid) is None:
            snap._add_node({"id": pid, "kind": kind, "name": f"0x{prim_id:x}", "site": None,
                            "prim_id": prim_id, "loose": False, "unknown": True})
        ids.append(pid)
    for tid in ids[::2]:
        if snap.node(tid) is None:
            ident = int(tid.split(":", 1)[1])
            snap._add_node({"id": tid, "kind": "thread", "name": f"<thread {ident}>",
                            "ident": ident, "main": False, "python": False, "stack": []})
    return ids


def _on_deadlock(cycle: Sequence[Tuple[int, int]], certain: bool) -> str:
    """The report for a cycle the binding found before a thread parked:
    ``cycle`` lists (thread ident, primitive id) pairs, each thread waiting
    for (or about to wait for) its primitive, which the next thread holds.
    Returns the text; the binding logs it or raises DeadlockError with it."""
    snap = Snapshot._from_state(_plait._debug_state(True))
    ids = _cycle_ids(snap, cycle)
    ident = threading.get_ident()
    # Not current_thread(): in a thread threading did not start, that makes
    # (and registers) a _DummyThread.
    me = threading._active.get(ident)
    name = me.name if me is not None else f"<thread {ident}>"
    head = (f"plait.debug: deadlock in process {snap.pid}, found when thread {name!r} "
            f"(ident {ident}) was about to wait")
    return head + "\n" + _format.cycle_block(snap, ids, certain=bool(certain), stacks=True) + "\n"


_RENDER = {
    "text": str,
    "json": Snapshot.to_json,
    "dot": Snapshot.to_dot,
    "mermaid": Snapshot.to_mermaid,
}


def _render(fmt: str = "text") -> str:
    """A snapshot of this process as ``text`` (the report), ``json``, ``dot``
    or ``mermaid``: what the inspect agent sends back."""
    try:
        view = _RENDER[fmt]
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(_RENDER)}, not {fmt!r}") from None
    return view(snapshot())


def _on_stall(seconds: float) -> None:
    """Report a stall: every thread has been blocked for ``seconds`` on plait
    primitives that nothing can wake."""
    head = (f"plait.debug: stall: every thread has been blocked for {seconds:.1f} s on plait "
            "primitives that nothing can wake (no running owner, no timer, no timeout)\n")
    _emit(head + str(snapshot()))


_configure_from_env()
