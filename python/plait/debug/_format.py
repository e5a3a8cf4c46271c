"""Views of a :class:`~plait.debug._graph.Snapshot`: JSON, Graphviz, Mermaid,
the jstack-like report, and the ``top`` table.

The report reads like ``jstack``'s: a header, then each blocked thread or
task with what it waits for, who holds that and for how long, and its
Python stack; then each cycle as a "Found one deadlock:" block. A cycle
through a ``loose`` primitive (a plain Lock or a Semaphore, which any
thread may release) is reported as a *probable* deadlock, saying why.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence

from plait.debug._graph import Edge, Node, node_id

if TYPE_CHECKING:
    from plait.debug._graph import Snapshot

__all__ = ["cycle_block", "format_top", "report", "to_dict", "to_dot", "to_mermaid", "top_rows"]

PRIMITIVE_KINDS = ("lock", "rlock", "condition", "semaphore", "event", "barrier", "queue")

#: What a thread parked on a primitive of each kind is doing.
_WAIT_VERB = {
    "lock": "waiting to acquire",
    "rlock": "waiting to acquire",
    "semaphore": "waiting to acquire",
    "condition": "waiting on",
    "event": "waiting for",
    "barrier": "waiting at",
    "queue": "waiting on",
    "future": "waiting for the result of",
}

#: Why a loose primitive's ownership is only a guess, by kind.
_LOOSE_WHY = {
    "lock": "is a plain Lock, which any thread may release (not only the one that acquired it)",
    "semaphore": "is a Semaphore, which any thread may release (not only one that acquired it)",
}


# --- small words ------------------------------------------------------------------


def seconds(value: Optional[float]) -> str:
    """``1.234 s``, or ``an unknown time``."""
    return "an unknown time" if value is None else f"{value:.3f} s"


def describe(node: Optional[Node], nid: str = "?") -> str:
    """One node in words: ``thread "T1" (ident 12, main)``, ``lock "db" (created at a.py:3)``."""
    if node is None:
        return nid
    kind = node["kind"]
    name = node.get("name")
    if kind == "thread":
        extra = ", main" if node.get("main") else ""
        return f'thread "{name}" (ident {node.get("ident")}{extra})'
    if kind == "task":
        coro = node.get("coro")
        return f'task "{name}"' + (f" ({coro})" if coro else "")
    if kind == "worker":
        pool = node.get("pool")
        return f"worker pid {node.get('pid')}" + (f" of pool {pool!r}" if pool else "")
    site = node.get("site")
    where = "submitted at" if kind == "future" else "created at"
    if site and name != site:
        return f'{kind} "{name}" ({where} {site})'
    if site:
        return f"{kind} {where} {site}"
    return f'{kind} "{name}"'


def _verb(edge: Edge, target: Optional[Node]) -> str:
    if edge["kind"] == "awaits":
        return "awaiting"
    return _WAIT_VERB.get((target or {}).get("kind", ""), "waiting for")


def _wait_line(snap: "Snapshot", edge: Edge) -> str:
    target = snap.node(edge["to"])
    line = f"{_verb(edge, target)} {describe(target, edge['to'])}"
    if edge.get("timeout_s") is not None:
        line += f" (timeout in {seconds(max(0.0, edge['timeout_s']))})"
    return line


def _holder_lines(snap: "Snapshot", nid: str) -> List[str]:
    """Who holds a primitive / runs a future, as ``which ...`` lines."""
    node = snap.node(nid) or {"kind": nid.partition(":")[0]}
    kind = node["kind"]
    if kind == "task":
        return ["which is listed above" if snap.edges_from(nid, "awaits") else "which is running"]
    if kind == "future":
        runs = snap.edges_from(nid, "runs_on")
        if not runs:
            state = node.get("state")
            return [f"which runs nowhere yet{f' (state {state})' if state else ''}"]
        return [f"which runs on {describe(snap.node(e['to']), e['to'])}"
                + ("" if e["since_s"] is None else f" for {seconds(e['since_s'])}") for e in runs]
    held = snap.edges_from(nid, "held_by")
    if not held:
        return ["which no thread holds"] if kind in ("lock", "rlock", "semaphore") else []
    lines = []
    for e in held:
        count = f" ({e['count']} times)" if e.get("count", 1) > 1 else ""
        lines.append(f"which is held by {describe(snap.node(e['to']), e['to'])}{count}"
                     f" for {seconds(e['since_s'])}")
    return lines


def _stack_lines(node: Node, indent: str) -> List[str]:
    stack = node.get("stack") or []
    if not stack:
        return [f"{indent}(no Python stack)"]
    return [f"{indent}Python stack (most recent call first):"] + [f"{indent}    {s}" for s in stack]


# --- the report ------------------------------------------------------------------


def _header(snap: "Snapshot") -> List[str]:
    kinds: Dict[str, int] = {}
    for n in snap.nodes:
        kinds[n["kind"]] = kinds.get(n["kind"], 0) + 1
    blocked = snap.blocked()
    bthreads = sum(1 for n in blocked if n["kind"] == "thread")
    btasks = len(blocked) - bthreads
    prims = sum(v for k, v in kinds.items() if k in PRIMITIVE_KINDS)
    probable = sum(1 for c in snap.cycles if not snap.is_certain(c))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snap.wall))
    deadlocks = f"{len(snap.cycles)}" + (f" ({probable} probable)" if probable else "")
    return [
        f"plait.debug: process {snap.pid} at {stamp}",
        f"threads: {kinds.get('thread', 0)} ({bthreads} blocked), tasks: {kinds.get('task', 0)} "
        f"({btasks} waiting), primitives: {prims}, futures: {kinds.get('future', 0)}, "
        f"workers: {kinds.get('worker', 0)}, deadlocks: {deadlocks}",
    ]


def _holds_lines(snap: "Snapshot", nid: str, indent: str) -> List[str]:
    """What a thread or task holds (jstack's "- locked ..." lines)."""
    lines = []
    for e in snap.edges_to(nid, "held_by"):
        count = f" ({e['count']} times)" if e.get("count", 1) > 1 else ""
        lines.append(f"{indent}holds {describe(snap.node(e['from']), e['from'])}{count}"
                     f" for {seconds(e['since_s'])}")
    return lines


def _blocked_entry(snap: "Snapshot", node: Node) -> List[str]:
    waits = snap.edges_from(node["id"], "waits_for") + snap.edges_from(node["id"], "awaits")
    since = [e["since_s"] for e in waits if e["since_s"] is not None]
    state = "blocked" if node["kind"] == "thread" else "waiting"
    head = describe(node) + (f" {state} for {seconds(max(since))}" if since else f" {state}")
    lines = [head]
    lines.extend(_holds_lines(snap, node["id"], "    "))
    for edge in waits:
        lines.append(f"    {_wait_line(snap, edge)}")
        lines.extend(f"    {h}" for h in _holder_lines(snap, edge["to"]))
    lines.extend(_stack_lines(node, "    "))
    return lines


def _workers(snap: "Snapshot") -> List[str]:
    lines = []
    for node in snap.nodes:
        if node["kind"] != "worker":
            continue
        runs = snap.edges_to(node["id"], "runs_on")
        if runs:
            for e in runs:
                lines.append(f"{describe(node)} runs {describe(snap.node(e['from']), e['from'])}"
                             + ("" if e["since_s"] is None else f" for {seconds(e['since_s'])}"))
        else:
            lines.append(f"{describe(node)} is idle")
    return lines


def _others(snap: "Snapshot") -> List[str]:
    """Threads not blocked: those holding something get an entry (with
    their stack), the rest one line."""
    blocked = {n["id"] for n in snap.blocked()}
    lines: List[str] = []
    idle = []
    for n in snap.nodes:
        if n["kind"] != "thread" or n["id"] in blocked:
            continue
        holds = _holds_lines(snap, n["id"], "    ")
        if not holds:
            idle.append(describe(n))
            continue
        lines.append(f"{describe(n)} running")
        lines.extend(holds)
        lines.extend(_stack_lines(n, "    "))
        lines.append("")
    if idle:
        lines.append("Threads not blocked in plait: " + ", ".join(idle))
    while lines and not lines[-1]:
        lines.pop()
    return lines


def cycle_block(snap: "Snapshot", cycle: Sequence[str], certain: Optional[bool] = None,
                stacks: bool = False) -> str:
    """One "Found one deadlock:" block for a cycle of node ids. ``certain``
    defaults to :meth:`Snapshot.is_certain`; ``stacks`` adds the Python stacks
    of the threads and tasks on the cycle."""
    if certain is None:
        certain = snap.is_certain(cycle)
    title = "Found one deadlock:" if certain else "Found one probable deadlock:"
    lines = [title, "=" * len(title)]
    n = len(cycle)
    for i, nid in enumerate(cycle):
        nxt = cycle[(i + 1) % n]
        node = snap.node(nid)
        kind = (node or {}).get("kind", nid.partition(":")[0])
        edge_kind = _edge_kind(snap, nid, nxt) or ("runs_on" if kind == "future" else None)
        if kind in ("thread", "task"):
            edge = {"kind": edge_kind or "waits_for", "to": nxt, "since_s": None}
            lines.append(f"{describe(node, nid)}:")
            lines.append(f"  {_verb(edge, snap.node(nxt))} {describe(snap.node(nxt), nxt)},")
        elif edge_kind == "runs_on":
            lines.append(f"  which runs on {describe(snap.node(nxt), nxt)}")
        else:
            lines.append(f"  which is held by {describe(snap.node(nxt), nxt)}")
    if not certain:
        lines.extend(_loose_note(snap, cycle))
    if stacks:
        lines.append("")
        lines.append("Python stacks of the threads and tasks above:")
        for nid in cycle:
            node = snap.node(nid)
            if node is not None and node["kind"] in ("thread", "task"):
                lines.append(f"{describe(node)}:")
                lines.extend(_stack_lines(node, "  "))
    return "\n".join(lines)


def _edge_kind(snap: "Snapshot", src: str, dst: str) -> Optional[str]:
    for e in snap.edges_from(src):
        if e["to"] == dst:
            return e["kind"]
    return None


def _loose_note(snap: "Snapshot", cycle: Sequence[str]) -> List[str]:
    lines = []
    for nid in cycle:
        node = snap.node(nid)
        if node is None or not node.get("loose"):
            continue
        why = _LOOSE_WHY.get(node["kind"], "may be released by any thread")
        lines.append(f"Note: {describe(node)} {why}.")
    lines.append("plait cannot tell which thread will release such a primitive, so this is "
                 "probably, not certainly, a deadlock.")
    return lines


def report(snap: "Snapshot") -> str:
    """The human report (``str(snapshot)``)."""
    lines = _header(snap)
    for node in snap.blocked():
        lines.append("")
        lines.extend(_blocked_entry(snap, node))
    workers = _workers(snap)
    if workers:
        lines.append("")
        lines.extend(workers)
    others = _others(snap)
    if others:
        lines.append("")
        lines.extend(others)
    for cycle in snap.cycles:
        lines.append("")
        lines.append(cycle_block(snap, cycle))
    if snap.cycles:
        lines.append("")
        count = len(snap.cycles)
        lines.append(f"Found {count} deadlock{'s' if count > 1 else ''}.")
    elif not snap.blocked():
        lines.append("")
        lines.append("No thread or task is blocked in plait.")
    return "\n".join(lines) + "\n"


# --- JSON ------------------------------------------------------------------------


def to_dict(snap: "Snapshot") -> Dict[str, Any]:
    """The JSON schema's dict: version, pid, nodes, edges, cycles (copies)."""
    return {
        "version": snap.version,
        "pid": snap.pid,
        "time": snap.wall,
        "nodes": [dict(n) for n in snap.nodes],
        "edges": [dict(e) for e in snap.edges],
        "cycles": [list(c) for c in snap.cycles],
    }


# --- Graphviz --------------------------------------------------------------------

_DOT_SHAPE = {
    "thread": "box", "task": "box", "worker": "box3d", "future": "ellipse",
    "lock": "octagon", "rlock": "doubleoctagon", "condition": "hexagon", "semaphore": "trapezium",
    "event": "circle", "barrier": "house", "queue": "cylinder",
}

_EDGE_LABEL = {"waits_for": "waits for", "held_by": "held by", "runs_on": "runs on",
               "awaits": "awaits"}


def dot_quote(text: str) -> str:
    """A Graphviz double-quoted string (backslash, quote and newline escaped)."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _label(node: Node) -> str:
    kind = node["kind"]
    lines = [kind, str(node.get("name"))]
    if kind == "thread":
        lines.append(f"ident {node.get('ident')}" + (" (main)" if node.get("main") else ""))
    elif kind == "worker":
        lines[1] = f"pid {node.get('pid')}"
    elif node.get("site") and node.get("site") != node.get("name"):
        lines.append(str(node["site"]))
    return "\n".join(lines)


def _edge_text(edge: Edge) -> str:
    text = _EDGE_LABEL.get(edge["kind"], str(edge["kind"]))
    return text if edge["since_s"] is None else f"{text} {edge['since_s']:.1f}s"


def to_dot(snap: "Snapshot") -> str:
    """The graph in Graphviz's language; edges (and nodes) on a cycle are red."""
    on_cycle = snap.cycle_edges()
    cycle_nodes = {n for c in snap.cycles for n in c}
    out = ["digraph plait {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9];']
    for node in snap.nodes:
        attrs = [f"label={dot_quote(_label(node))}", f"shape={_DOT_SHAPE.get(node['kind'], 'box')}"]
        if node["kind"] == "task":
            attrs.append('style="rounded"')
        if node["id"] in cycle_nodes:
            attrs.append("color=red")
        out.append(f"  {dot_quote(node['id'])} [{', '.join(attrs)}];")
    for edge in snap.edges:
        attrs = [f"label={dot_quote(_edge_text(edge))}"]
        if (edge["from"], edge["to"]) in on_cycle:
            attrs += ["color=red", "fontcolor=red", "penwidth=2"]
        out.append(f"  {dot_quote(edge['from'])} -> {dot_quote(edge['to'])} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


# --- Mermaid ---------------------------------------------------------------------

_MERMAID_SHAPE = {
    "thread": ("[", "]"), "task": ("(", ")"), "worker": ("[[", "]]"), "future": ("([", "])"),
    "lock": ("{{", "}}"), "rlock": ("{{", "}}"), "condition": ("{{", "}}"),
    "semaphore": ("[/", "/]"), "event": ("((", "))"), "barrier": ("[\\", "\\]"),
    "queue": ("[(", ")]"),
}


def mermaid_text(text: str) -> str:
    """Text for a Mermaid quoted label: quotes and angle brackets as entities,
    newlines as ``<br/>``."""
    escaped = (str(text).replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
               .replace(">", "#gt;"))
    return escaped.replace("\n", "<br/>")


def to_mermaid(snap: "Snapshot") -> str:
    """The graph as a Mermaid flowchart; edges on a cycle are styled red."""
    short = {n["id"]: f"n{i}" for i, n in enumerate(snap.nodes)}
    on_cycle = snap.cycle_edges()
    out = ["flowchart LR"]
    for node in snap.nodes:
        left, right = _MERMAID_SHAPE.get(node["kind"], ("[", "]"))
        out.append(f'  {short[node["id"]]}{left}"{mermaid_text(_label(node))}"{right}')
    red = []
    for i, edge in enumerate(snap.edges):
        src, dst = short[edge["from"]], short[edge["to"]]
        out.append(f'  {src} -->|"{mermaid_text(_edge_text(edge))}"| {dst}')
        if (edge["from"], edge["to"]) in on_cycle:
            red.append(str(i))
    if red:
        out.append(f"  linkStyle {','.join(red)} stroke:red,stroke-width:3px,color:red")
    return "\n".join(out) + "\n"


# --- top -------------------------------------------------------------------------


def top_rows(prims: Iterable[Mapping[str, Any]], n: int = 10) -> List[Dict[str, Any]]:
    """The ``n`` most contended primitives (by contended acquisitions, then
    total wait) as flat dicts: id, kind, name, site and the four statistics."""
    rows = []
    for prim in prims:
        stats = prim.get("stats") or {}
        rows.append({
            "id": node_id(prim["kind"], prim["id"]), "kind": prim["kind"],
            "name": prim.get("name") or prim.get("site"), "site": prim.get("site"),
            "contended": int(stats.get("contended", 0)),
            "wait_total": float(stats.get("wait_total", 0.0)),
            "wait_max": float(stats.get("wait_max", 0.0)),
            "hold_max": float(stats.get("hold_max", 0.0)),
        })
    rows.sort(key=lambda r: (-r["contended"], -r["wait_total"], r["id"]))
    return rows[:max(0, n)]


def format_top(rows: Sequence[Mapping[str, Any]]) -> str:
    """A short table of :func:`top_rows`' output."""
    head = (f"{'contended':>10} {'wait total':>11} {'wait max':>10} {'hold max':>10}  "
            f"{'kind':<9} name")
    lines = [head]
    for r in rows:
        site = r.get("site")
        name = str(r.get("name")) + (f" ({site})" if site and site != r.get("name") else "")
        lines.append(f"{r['contended']:>10} {r['wait_total']:>9.3f} s {r['wait_max']:>8.3f} s "
                     f"{r['hold_max']:>8.3f} s  {r['kind']:<9} {name}")
    if not rows:
        lines.append("(no contended primitive)")
    return "\n".join(lines) + "\n"
