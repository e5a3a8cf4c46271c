"""asyncio tasks on plait's event loops, as nodes and ``awaits`` edges.

plait's ``EventLoop.__init__`` calls :func:`register_loop`, which keeps the
loop in a ``WeakSet`` (a closed, dropped loop disappears by itself); that is
the only work done outside a snapshot.

At snapshot time, each pending task of each live plait loop becomes a
``task`` node, and what it awaits (``task._fut_waiter``) an ``awaits`` edge:

* another Task -> an edge to that task's node;
* an asyncio future made by ``asyncio.wrap_future`` (which is what
  ``loop.run_in_executor`` returns) -> an edge to the *concurrent* future it
  mirrors. The link is read back from the future itself: ``wrap_future``
  chains the two with ``asyncio.futures._chain_future``, which adds a done
  callback (``_call_check_cancel``) to the asyncio future whose closure holds
  the source future. Reading it here costs nothing on the loop's hot path,
  and covers every ``wrap_future``, not only ``run_in_executor``'s. A plait
  Future becomes its core node (``future:0x<id>``, the same node the RAW
  STATE describes, so the chain goes on to the thread or worker that runs
  it); any other ``concurrent.futures.Future`` a node of its own;
* ``asyncio.gather``'s future -> an edge to each child still pending;
* any other asyncio future -> a leaf ``future`` node.
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent import futures as _cf
from typing import Any, Iterable, List, Optional

from plait.debug._graph import TaskGraph, frame_stack, node_id

__all__ = ["chained_source", "collect", "prim_id_of", "register_loop"]

_loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()


def register_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Remember a plait loop (weakly) so snapshots can list its tasks."""
    _loops.add(loop)


def loops() -> List[asyncio.AbstractEventLoop]:
    """The live, not closed, plait loops."""
    return [loop for loop in list(_loops) if not loop.is_closed()]


def prim_id_of(fut: Any) -> Optional[int]:
    """The RAW STATE id of a plait Future (its core object), or None for any
    other future. The binding exposes it as ``_debug_id`` on ``_FutureCore``."""
    value = getattr(fut, "_debug_id", None)
    return value if isinstance(value, int) else None


def chained_source(afut: Any) -> Optional[_cf.Future]:
    """The concurrent future an asyncio future mirrors (``wrap_future``), or None."""
    try:
        callbacks = afut._callbacks or ()
    except AttributeError:
        return None
    for entry in list(callbacks):
        cb = entry[0] if isinstance(entry, tuple) else entry
        code = getattr(cb, "__code__", None)
        if code is None or code.co_name != "_call_check_cancel" or not cb.__closure__:
            continue
        for name, cell in zip(code.co_freevars, cb.__closure__):
            if name == "source":
                try:
                    source = cell.cell_contents
                except ValueError:  # an empty cell
                    return None
                return source if isinstance(source, _cf.Future) else None
    return None


def _task_id(task: asyncio.Task) -> str:
    return node_id("task", id(task))


def _task_node(task: asyncio.Task) -> dict:
    coro = task.get_coro()
    stack: List[str] = []
    for frame in reversed(task.get_stack()):  # oldest first; a suspended frame has no f_back
        stack.extend(frame_stack(frame, limit=1))
    return {"id": _task_id(task), "kind": "task", "name": task.get_name(),
            "coro": getattr(coro, "__qualname__", type(coro).__name__), "stack": stack}


def _concurrent_node(cfut: _cf.Future, graph: TaskGraph) -> str:
    """The node of a concurrent future: a plait core node, or one of its own."""
    prim = prim_id_of(cfut)
    if prim is not None:
        graph.prim_ids.add(prim)
        return node_id("future", prim)
    nid = f"future:py0x{id(cfut):x}"
    graph.nodes.append({"id": nid, "kind": "future",
                        "name": f"concurrent.futures.Future at 0x{id(cfut):x}",
                        "site": None, "state": getattr(cfut, "_state", None)})
    return nid


def _asyncio_node(afut: Any, graph: TaskGraph) -> str:
    nid = f"future:py0x{id(afut):x}"
    graph.nodes.append({"id": nid, "kind": "future",
                        "name": f"{type(afut).__name__} at 0x{id(afut):x}",
                        "site": None, "state": getattr(afut, "_state", None), "asyncio": True})
    return nid


def _targets(waiter: Any, graph: TaskGraph) -> List[str]:
    """Node ids of what a task awaiting ``waiter`` waits on."""
    if isinstance(waiter, asyncio.Task):
        return [_task_id(waiter)]
    source = chained_source(waiter)
    if source is not None:
        return [_concurrent_node(source, graph)]
    children = getattr(waiter, "_children", None)
    if children is not None:  # asyncio.gather
        out: List[str] = []
        for child in children:
            if not child.done():
                out.extend(_targets(child, graph))
        return out
    return [_asyncio_node(waiter, graph)]


def collect(from_loops: Optional[Iterable[asyncio.AbstractEventLoop]] = None) -> TaskGraph:
    """Task nodes and ``awaits`` edges for the pending tasks of plait's loops."""
    graph = TaskGraph()
    for loop in (loops() if from_loops is None else from_loops):
        for task in _all_tasks(loop):
            graph.nodes.append(_task_node(task))
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or waiter.done():
                continue
            for target in _targets(waiter, graph):
                graph.edges.append({"from": _task_id(task), "to": target, "kind": "awaits",
                                    "since_s": None})
    return graph


def _all_tasks(loop: asyncio.AbstractEventLoop) -> List[asyncio.Task]:
    """Pending tasks of ``loop``, safe to call from any thread (asyncio's
    ``all_tasks`` copies a WeakSet and retries if it changes meanwhile)."""
    for _ in range(10):
        try:
            return sorted(asyncio.all_tasks(loop), key=id)
        except RuntimeError:
            continue
    return []
