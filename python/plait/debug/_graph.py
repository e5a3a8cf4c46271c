"""The wait graph: plait's RAW STATE plus what only Python knows.

The binding's ``_plait._debug_state()`` says which primitive each thread is
parked on, who holds each primitive, what runs each future and what each
pool worker is doing (see the RAW STATE in the design notes). This module
adds the Python-side facts (thread names, the main thread, Python stacks,
asyncio tasks) and turns the whole into nodes and edges:

* ``waits_for``: thread/task -> primitive/future (the thread is parked on it),
* ``held_by``:   primitive -> thread (the thread owns it),
* ``runs_on``:   future -> thread/worker (the call runs there),
* ``awaits``:    task -> task/future.

A deadlock is a cycle of these edges. :func:`find_cycles` lists the
elementary cycles, each once (rotations are the same cycle), within a budget
so a pathological graph cannot make a snapshot slow.

Nothing here runs on a primitive's hot path: it all runs when a snapshot is
asked for.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

__all__ = ["Snapshot", "build", "collect_threads", "find_cycles", "frame_stack", "node_id"]

#: Edge kinds, in the order the report explains them.
EDGE_KINDS = ("waits_for", "held_by", "runs_on", "awaits")
#: Primitive kinds the RAW STATE may carry.
PRIMITIVE_KINDS = ("lock", "rlock", "condition", "semaphore", "event", "barrier", "queue", "future")
#: At most this many cycles are listed, and the search stops after this many steps.
MAX_CYCLES = 64
SEARCH_BUDGET = 100_000

_DEBUG_DIR = os.path.dirname(os.path.abspath(__file__))

Node = Dict[str, Any]
Edge = Dict[str, Any]


def node_id(kind: str, key: Any) -> str:
    """The graph id of a node: ``thread:<ident>``, ``worker:<pid>``, or
    ``<kind>:0x<hex>`` for primitives, futures and tasks (``key`` an int)."""
    if kind in ("thread", "worker"):
        return f"{kind}:{key}"
    if isinstance(key, int):
        return f"{kind}:0x{key:x}"
    return f"{kind}:{key}"


# --- Python-side facts -------------------------------------------------------


def frame_stack(frame: Any, limit: int = 64) -> List[str]:
    """A frame's stack, most recent call first, as ``"file:line in func"``
    strings; frames of plait.debug itself are left out (the snapshot's own
    thread would otherwise show how it took the snapshot)."""
    lines: List[str] = []
    while frame is not None and len(lines) < limit:
        code = frame.f_code
        filename = code.co_filename
        if os.path.dirname(os.path.abspath(filename)) != _DEBUG_DIR:
            lines.append(f"{filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    return lines


def collect_threads() -> Dict[int, Dict[str, Any]]:
    """Every Python thread of this interpreter: ident -> {name, main, daemon, stack}."""
    frames = sys._current_frames()
    by_ident = {t.ident: t for t in threading.enumerate() if t.ident is not None}
    main_ident = threading.main_thread().ident
    # The inspect agent's helper thread, attached only to build this report.
    agent = sys.modules.get("plait.debug._agent")
    helper = getattr(agent, "reporting_thread", None)
    facts: Dict[int, Dict[str, Any]] = {}
    for ident, frame in frames.items():
        if ident == helper:
            continue
        thread = by_ident.get(ident)
        facts[ident] = {
            "name": thread.name if thread is not None else f"Thread-{ident}",
            "main": ident == main_ident,
            "daemon": thread.daemon if thread is not None else None,
            "stack": frame_stack(frame),
        }
    return facts


# --- the graph -----------------------------------------------------------------


@dataclass
class TaskGraph:
    """What :mod:`plait.debug._tasks` found on plait's loops: task nodes,
    the ``awaits`` edges, nodes for futures that plait's RAW STATE does not
    describe, and the ids of plait futures the edges point at."""

    nodes: List[Node] = field(default_factory=list)
    edges: List[Edge] = field(default_factory=list)
    prim_ids: Set[int] = field(default_factory=set)


def _since(now: float, since: Optional[float]) -> Optional[float]:
    return None if since is None else round(max(0.0, now - since), 6)


def _primitive_node(prim: Mapping[str, Any]) -> Node:
    kind = prim["kind"]
    node: Node = {
        "id": node_id(kind, prim["id"]),
        "kind": kind,
        "name": prim.get("name") or prim.get("site") or f"0x{prim['id']:x}",
        "site": prim.get("site"),
        "prim_id": prim["id"],
        "loose": bool(prim.get("loose", False)),
    }
    if "stats" in prim:
        node["stats"] = dict(prim["stats"])
    if kind == "future":
        node["state"] = prim.get("state")
    return node


def _thread_node(ident: int, facts: Optional[Mapping[str, Any]]) -> Node:
    if facts is None:  # a thread plait knows that runs no Python (or has just ended)
        return {"id": node_id("thread", ident), "kind": "thread", "name": f"<thread {ident}>",
                "ident": ident, "main": False, "python": False, "stack": []}
    return {"id": node_id("thread", ident), "kind": "thread", "name": facts["name"],
            "ident": ident, "main": bool(facts.get("main")), "daemon": facts.get("daemon"),
            "python": True, "stack": list(facts.get("stack") or [])}


class _Builder:
    """Accumulates nodes (by id, first one wins) and edges (one per
    ``(from, to, kind)``, the one that knows ``since_s`` wins)."""

    def __init__(self, now: float, threads: Mapping[int, Mapping[str, Any]]):
        self.now = now
        self.threads = threads
        self.nodes: Dict[str, Node] = {}
        self.edges: Dict[Tuple[str, str, str], Edge] = {}

    def node(self, node: Node) -> str:
        self.nodes.setdefault(node["id"], node)
        return node["id"]

    def thread(self, ident: int) -> str:
        return self.node(_thread_node(ident, self.threads.get(ident)))

    def edge(self, src: str, dst: str, kind: str, since_s: Optional[float], **extra: Any) -> None:
        key = (src, dst, kind)
        new = {"from": src, "to": dst, "kind": kind, "since_s": since_s, **extra}
        old = self.edges.setdefault(key, new)
        for name, value in new.items():  # the same edge seen twice: keep what either knows
            if old.get(name) is None and value is not None:
                old[name] = value

    def wait(self, ident: int, prim_node: str, since: Optional[float],
             deadline: Optional[float]) -> None:
        timeout = None if deadline is None else round(deadline - self.now, 6)
        self.edge(self.thread(ident), prim_node, "waits_for", _since(self.now, since),
                  timeout_s=timeout)


def _add_primitives(b: _Builder, state: Mapping[str, Any]) -> Dict[int, str]:
    """Primitive nodes with their holders, waiters and runners; returns prim id -> node id."""
    ids: Dict[int, str] = {}
    for prim in state.get("primitives", ()):
        nid = b.node(_primitive_node(prim))
        ids[prim["id"]] = nid
        for holder in prim.get("holders", ()):
            b.edge(nid, b.thread(holder["ident"]), "held_by", _since(b.now, holder.get("since")),
                   count=holder.get("count", 1))
        for waiter in prim.get("waiters", ()):
            b.wait(waiter["ident"], nid, waiter.get("since"), waiter.get("deadline"))
        runs_on = prim.get("runs_on")
        if runs_on and "thread" in runs_on:
            b.edge(nid, b.thread(runs_on["thread"]), "runs_on", None)
        elif runs_on and "worker" in runs_on:
            b.edge(nid, node_id("worker", runs_on["worker"]), "runs_on", None)
    return ids


def _add_waits(b: _Builder, state: Mapping[str, Any], ids: Mapping[int, str]) -> None:
    """The per-thread wait table (it may name a primitive the list left out)."""
    for ident, wait in state.get("waits", {}).items():
        prim_id = wait["id"]
        nid = ids.get(prim_id)
        if nid is None:
            nid = b.node({"id": node_id("lock", prim_id), "kind": "lock", "name": f"0x{prim_id:x}",
                          "site": None, "prim_id": prim_id, "loose": False, "unknown": True})
        b.wait(int(ident), nid, wait.get("since"), wait.get("deadline"))


def _add_workers(b: _Builder, state: Mapping[str, Any], ids: Mapping[int, str]) -> None:
    for worker in state.get("workers", ()):
        pid = worker["pid"]
        nid = b.node({"id": node_id("worker", pid), "kind": "worker",
                      "name": f"{worker.get('pool') or 'pool'} worker {pid}", "pid": pid,
                      "pool": worker.get("pool"), "task": worker.get("task")})
        task = worker.get("task")
        if task is not None:
            fut = ids.get(task, node_id("future", task))
            b.edge(fut, nid, "runs_on", _since(b.now, worker.get("since")))
    # A runs_on edge may name a worker the list did not (it has just been replaced).
    for (_src, dst, _kind) in list(b.edges):
        if dst.startswith("worker:") and dst not in b.nodes:
            pid = int(dst.split(":", 1)[1])
            b.node({"id": dst, "kind": "worker", "name": f"worker {pid}", "pid": pid,
                    "pool": None, "task": None})


def _add_tasks(b: _Builder, tasks: Optional[TaskGraph]) -> None:
    if tasks is None:
        return
    for node in tasks.nodes:
        b.node(node)
    for edge in tasks.edges:
        extra = {k: v for k, v in edge.items() if k not in ("from", "to", "kind", "since_s")}
        b.edge(edge["from"], edge["to"], edge["kind"], edge.get("since_s"), **extra)


def _fill_dangling(b: _Builder) -> None:
    """An edge to a node nobody described (a future the state left out): a bare node."""
    for (src, dst, _kind) in list(b.edges):
        for nid in (src, dst):
            if nid not in b.nodes:
                kind, _, key = nid.partition(":")
                b.node({"id": nid, "kind": kind, "name": key, "site": None})


def build(state: Mapping[str, Any], threads: Mapping[int, Mapping[str, Any]],
          tasks: Optional[TaskGraph] = None) -> Tuple[List[Node], List[Edge]]:
    """Nodes and edges from a RAW STATE, the threads' facts and the tasks' graph.

    Every Python thread is a node (blocked or not); a thread plait names
    but Python does not know gets a bare node. Nodes are sorted by kind then
    id, edges by (from, kind, to), so equal inputs give equal outputs."""
    b = _Builder(float(state.get("now", time.monotonic())), threads)
    for ident in threads:
        b.thread(ident)
    ids = _add_primitives(b, state)
    _add_waits(b, state, ids)
    _add_workers(b, state, ids)
    _add_tasks(b, tasks)
    _fill_dangling(b)
    nodes = sorted(b.nodes.values(), key=lambda n: (n["kind"], n["id"]))
    edges = sorted(b.edges.values(), key=lambda e: (e["from"], e["kind"], e["to"]))
    return nodes, edges


# --- cycles ----------------------------------------------------------------------


def _canonical(cycle: Sequence[str]) -> Tuple[str, ...]:
    """The rotation of a cycle that starts at its smallest node id."""
    start = min(range(len(cycle)), key=lambda i: cycle[i])
    return tuple(cycle[start:]) + tuple(cycle[:start])


def _readable(cycle: Tuple[str, ...]) -> List[str]:
    """The rotation that starts at a thread if there is one (the report reads
    from a thread), else the canonical one."""
    threads = [i for i, n in enumerate(cycle) if n.startswith("thread:")]
    if not threads:
        return list(cycle)
    start = min(threads, key=lambda i: cycle[i])
    return list(cycle[start:] + cycle[:start])


def find_cycles(edges: Iterable[Mapping[str, Any]], limit: int = MAX_CYCLES,
                budget: int = SEARCH_BUDGET) -> List[List[str]]:
    """Elementary cycles of the directed graph given by ``edges``.

    Each cycle is searched from its smallest node: a depth-first search from
    ``start`` visits only nodes greater than ``start``, so each cycle is
    found once; rotations are deduplicated again for safety. The search
    stops after ``limit`` cycles or ``budget`` steps (a wait graph is nearly
    a forest, so neither binds in practice)."""
    adj: Dict[str, List[str]] = {}
    for e in edges:
        adj.setdefault(e["from"], []).append(e["to"])
    for targets in adj.values():
        targets.sort()
    found: Dict[Tuple[str, ...], None] = {}
    steps = 0
    for start in sorted(adj):
        path = [start]
        on_path = {start}
        stack = [iter(adj.get(start, ()))]
        while stack and steps < budget and len(found) < limit:
            steps += 1
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
            elif nxt == start:
                found.setdefault(_canonical(path), None)
            elif nxt > start and nxt not in on_path:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(adj.get(nxt, ())))
    return sorted((_readable(c) for c in found), key=lambda c: (len(c), c))


# --- the snapshot ------------------------------------------------------------------


class Snapshot:
    """The wait graph of this process at one moment.

    ``nodes`` and ``edges`` are lists of dicts in the JSON schema's shape
    (plus a few extra keys: ``stack`` for threads and tasks, ``stats`` for
    primitives, ``timeout_s`` on waits); ``cycles`` lists node ids, each cycle
    starting at a thread where it has one. ``str(snapshot)`` is the report;
    ``to_json``/``to_dict``/``to_dot``/``to_mermaid`` are the other views."""

    def __init__(self, *, pid: int, now: float, wall: float, nodes: List[Node],
                 edges: List[Edge], cycles: List[List[str]], version: int = 1):
        self.version = version
        self.pid = pid
        self.now = now
        self.wall = wall
        self.nodes = nodes
        self.edges = edges
        self.cycles = cycles
        self._by_id = {n["id"]: n for n in nodes}

    @classmethod
    def _from_state(cls, state: Mapping[str, Any], *,
                    threads: Optional[Mapping[int, Mapping[str, Any]]] = None,
                    tasks: Optional[TaskGraph] = None,
                    wall: Optional[float] = None) -> "Snapshot":
        """A snapshot from a RAW STATE dict; ``threads`` (ident -> {name, main,
        daemon, stack}) defaults to this interpreter's threads, ``tasks`` to none."""
        if threads is None:
            threads = collect_threads()
        nodes, edges = build(state, threads, tasks)
        return cls(pid=int(state.get("pid", os.getpid())), now=float(state.get("now", 0.0)),
                   wall=time.time() if wall is None else wall, nodes=nodes, edges=edges,
                   cycles=find_cycles(edges), version=int(state.get("version", 1)))

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> "Snapshot":
        """A snapshot back from :meth:`to_dict`'s output (or its JSON, parsed):
        another process's graph, to show in another format."""
        return cls(pid=int(data["pid"]), now=0.0, wall=float(data.get("time", 0.0)),
                   nodes=[dict(n) for n in data["nodes"]], edges=[dict(e) for e in data["edges"]],
                   cycles=[list(c) for c in data["cycles"]], version=int(data.get("version", 1)))

    def _add_node(self, node: Node) -> None:
        """Add a node the state did not describe (for a cycle the binding names)."""
        if node["id"] not in self._by_id:
            self.nodes.append(node)
            self._by_id[node["id"]] = node

    # -- queries --

    def node(self, nid: str) -> Optional[Node]:
        """The node with this id, or None."""
        return self._by_id.get(nid)

    def edges_from(self, nid: str, kind: Optional[str] = None) -> List[Edge]:
        """Edges leaving ``nid`` (of one kind if given)."""
        return [e for e in self.edges if e["from"] == nid and (kind is None or e["kind"] == kind)]

    def edges_to(self, nid: str, kind: Optional[str] = None) -> List[Edge]:
        """Edges entering ``nid`` (of one kind if given)."""
        return [e for e in self.edges if e["to"] == nid and (kind is None or e["kind"] == kind)]

    def blocked(self) -> List[Node]:
        """Threads parked on a primitive, then tasks awaiting something."""
        return [n for kind in ("thread", "task") for n in self.nodes if n["kind"] == kind
                and (self.edges_from(n["id"], "waits_for") or self.edges_from(n["id"], "awaits"))]

    def cycle_edges(self) -> Set[Tuple[str, str]]:
        """The (from, to) pairs that lie on some cycle."""
        pairs: Set[Tuple[str, str]] = set()
        for cycle in self.cycles:
            for i, nid in enumerate(cycle):
                pairs.add((nid, cycle[(i + 1) % len(cycle)]))
        return pairs

    def is_certain(self, cycle: Sequence[str]) -> bool:
        """False when the cycle passes a ``loose`` primitive (a plain Lock or a
        Semaphore, which any thread may release): then it is only probable."""
        return not any((self._by_id.get(n) or {}).get("loose") for n in cycle)

    # -- views --

    def to_dict(self) -> Dict[str, Any]:
        """The JSON schema's dict: version, pid, nodes, edges, cycles."""
        from plait.debug import _format

        return _format.to_dict(self)

    def to_json(self, indent: Optional[int] = None) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_dot(self) -> str:
        """The graph in Graphviz's language; edges on a cycle are red."""
        from plait.debug import _format

        return _format.to_dot(self)

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart; edges on a cycle are red."""
        from plait.debug import _format

        return _format.to_mermaid(self)

    def __str__(self) -> str:
        from plait.debug import _format

        return _format.report(self)

    def __repr__(self) -> str:
        return (f"<plait.debug.Snapshot pid={self.pid} nodes={len(self.nodes)} "
                f"edges={len(self.edges)} cycles={len(self.cycles)}>")
