"""plait.debug's Python layer: the graph built from a RAW STATE, cycles,
the report and the other views, the public API over a stand-in binding, and
the asyncio task graph on plait's loop.

The RAW STATE here is synthetic (the shape ``_plait._debug_state()``
returns, per the design notes), so these tests need no Rust support; the
behaviour tests drive the real binding."""

import asyncio
import concurrent.futures as cf
import io
import json
import signal
import threading

import pytest

import plait
import plait.debug as debug
from plait import _plait
from plait.debug import _format, _tasks
from plait.debug._graph import Snapshot, find_cycles

pytestmark = pytest.mark.timeout(60)

NOW = 1000.0
T1, T2, T3 = 111, 222, 333
LOCK_A, LOCK_B, FUT, SEM = 0xA0, 0xB0, 0xF0, 0x50


def prim(pid, kind="rlock", name=None, site="app.py:1", holders=(), waiters=(), loose=False,
         **extra):
    """A PRIMITIVE entry of the RAW STATE."""
    entry = {
        "id": pid, "kind": kind, "name": name or site, "site": site,
        "holders": [{"ident": i, "since": s, "count": 1} for i, s in holders],
        "waiters": [{"ident": i, "since": s, "deadline": None} for i, s in waiters],
        "stats": {"contended": 0, "wait_total": 0.0, "wait_max": 0.0, "hold_max": 0.0},
        "loose": loose,
    }
    entry.update(extra)
    return entry


def state(primitives=(), waits=None, workers=()):
    """A RAW STATE dict."""
    return {"version": 1, "pid": 4242, "now": NOW, "primitives": list(primitives),
            "waits": dict(waits or {}), "workers": list(workers)}


def threads(*idents, main=None):
    """Thread facts, as collect_threads() gives them."""
    return {i: {"name": f"T{i}", "main": i == main, "daemon": False,
                "stack": [f"app.py:{i} in work", "threading.py:1 in run"]} for i in idents}


def two_lock_state(kind="rlock", loose=False):
    """The classic: T1 holds A and waits for B, T2 holds B and waits for A."""
    return state(
        [prim(LOCK_A, kind, "A", "app.py:10", holders=[(T1, NOW - 3)], waiters=[(T2, NOW - 2)],
              loose=loose),
         prim(LOCK_B, kind, "B", "app.py:11", holders=[(T2, NOW - 3)], waiters=[(T1, NOW - 1)],
              loose=loose)],
        waits={T1: {"id": LOCK_B, "since": NOW - 1, "deadline": None},
               T2: {"id": LOCK_A, "since": NOW - 2, "deadline": None}})


def snap_of(raw, *idents, main=None, tasks=None):
    return Snapshot._from_state(raw, threads=threads(*idents, main=main), tasks=tasks, wall=0.0)


# --- graph --------------------------------------------------------------------------


def test_two_thread_two_lock_deadlock_is_one_cycle():
    snap = snap_of(two_lock_state(), T1, T2, main=T1)
    a, b = f"rlock:0x{LOCK_A:x}", f"rlock:0x{LOCK_B:x}"
    t1, t2 = f"thread:{T1}", f"thread:{T2}"
    assert snap.cycles == [[t1, b, t2, a]]
    kinds = {(e["from"], e["to"]): e["kind"] for e in snap.edges}
    assert kinds == {(t1, b): "waits_for", (t2, a): "waits_for", (a, t1): "held_by",
                     (b, t2): "held_by"}
    waits = {e["from"]: e["since_s"] for e in snap.edges if e["kind"] == "waits_for"}
    assert waits == {t1: 1.0, t2: 2.0}
    assert snap.node(t1)["main"] is True and snap.node(t2)["main"] is False
    assert snap.is_certain(snap.cycles[0])


def test_waits_table_and_waiters_list_give_one_edge():
    raw = two_lock_state()
    raw["primitives"][0]["waiters"][0]["since"] = None  # the table's since fills it in
    raw["waits"][T1]["deadline"] = NOW + 2.5  # and its deadline
    snap = snap_of(raw, T1, T2)
    waits = {e["from"]: e for e in snap.edges if e["kind"] == "waits_for"}
    assert len(waits) == 2
    assert waits[f"thread:{T2}"]["since_s"] == 2.0
    assert waits[f"thread:{T1}"]["timeout_s"] == 2.5
    assert 'waiting to acquire rlock "B" (created at app.py:11) (timeout in 2.500 s)' in str(snap)


def test_thread_plait_knows_but_python_does_not_gets_a_bare_node():
    raw = state([prim(LOCK_A, holders=[(999, NOW - 1)])])
    snap = snap_of(raw, T1)
    node = snap.node("thread:999")
    assert node["python"] is False and node["ident"] == 999
    assert snap.node(f"thread:{T1}")["python"] is True


def test_wait_on_a_primitive_the_list_left_out_still_shows():
    raw = state(waits={T1: {"id": LOCK_A, "since": NOW - 1, "deadline": NOW + 4}})
    snap = snap_of(raw, T1)
    (edge,) = snap.edges
    assert edge["to"] == f"lock:0x{LOCK_A:x}" and edge["timeout_s"] == 4.0


def test_cross_kind_cycle_thread_future_pool_thread_lock():
    # T1 holds L and waits for F's result; F runs on pool thread T2, which waits for L.
    raw = state(
        [prim(LOCK_A, "rlock", "L", "app.py:5", holders=[(T1, NOW - 5)], waiters=[(T2, NOW - 4)]),
         prim(FUT, "future", "app.py:7", "app.py:7", waiters=[(T1, NOW - 4.5)], state="RUNNING",
              runs_on={"thread": T2})],
        waits={T1: {"id": FUT, "since": NOW - 4.5, "deadline": None},
               T2: {"id": LOCK_A, "since": NOW - 4, "deadline": None}})
    snap = snap_of(raw, T1, T2)
    assert snap.cycles == [[f"thread:{T1}", f"future:0x{FUT:x}", f"thread:{T2}",
                            f"rlock:0x{LOCK_A:x}"]]
    text = str(snap)
    assert "Found one deadlock:" in text
    assert "waiting for the result of future submitted at app.py:7" in text
    assert f'which runs on thread "T{T2}"' in text


def test_process_pool_worker_with_its_task_and_pid():
    raw = state([prim(FUT, "future", "f", "app.py:9", waiters=[(T1, NOW - 2)], state="RUNNING",
                      runs_on={"worker": 7777})],
                workers=[{"pid": 7777, "pool": "ProcessPoolExecutor-1", "task": FUT,
                          "since": NOW - 3},
                         {"pid": 7778, "pool": "ProcessPoolExecutor-1", "task": None,
                          "since": None}])
    snap = snap_of(raw, T1)
    worker = snap.node("worker:7777")
    assert worker["pid"] == 7777 and worker["kind"] == "worker"
    (runs,) = snap.edges_from(f"future:0x{FUT:x}", "runs_on")
    assert runs["to"] == "worker:7777" and runs["since_s"] == 3.0
    text = str(snap)
    assert "which runs on worker pid 7777 of pool 'ProcessPoolExecutor-1' for 3.000 s" in text
    assert "worker pid 7778 of pool 'ProcessPoolExecutor-1' is idle" in text
    assert not snap.cycles


def test_semaphore_with_several_holders():
    raw = state([prim(SEM, "semaphore", "slots", "app.py:3", holders=[(T1, NOW - 1), (T2, NOW - 2)],
                      waiters=[(T3, NOW - 1)], loose=True)])
    snap = snap_of(raw, T1, T2, T3)
    held = {e["to"] for e in snap.edges_from(f"semaphore:0x{SEM:x}", "held_by")}
    assert held == {f"thread:{T1}", f"thread:{T2}"}
    assert str(snap).count("which is held by") == 2


def test_output_is_deterministic():
    one = snap_of(two_lock_state(), T1, T2).to_dict()
    two = snap_of(two_lock_state(), T2, T1).to_dict()
    assert one == two


# --- cycles -------------------------------------------------------------------------


def edges(*pairs):
    return [{"from": a, "to": b} for a, b in pairs]


def test_cycles_are_elementary_deduplicated_and_start_at_a_thread():
    found = find_cycles(edges(("lock:1", "thread:1"), ("thread:1", "lock:2"),
                              ("lock:2", "thread:2"), ("thread:2", "lock:1"),
                              ("thread:2", "lock:3"), ("lock:3", "thread:2"),
                              ("lock:9", "thread:1")))
    assert found == [["thread:2", "lock:3"], ["thread:1", "lock:2", "thread:2", "lock:1"]]


def test_no_cycle_in_a_chain_and_self_loop_is_a_cycle():
    assert find_cycles(edges(("a", "b"), ("b", "c"))) == []
    assert find_cycles(edges(("thread:1", "thread:1"))) == [["thread:1"]]


def test_cycle_search_is_bounded():
    # A complete graph on 9 nodes has many elementary cycles.
    nodes = [f"n{i}" for i in range(9)]
    es = edges(*[(a, b) for a in nodes for b in nodes if a != b])
    assert len(find_cycles(es, limit=10)) == 10
    assert len(find_cycles(es, budget=50)) < 50


# --- report -------------------------------------------------------------------------


def test_report_reads_like_jstack():
    text = str(snap_of(two_lock_state(), T1, T2, main=T1))
    assert text.startswith("plait.debug: process 4242 at 1970-01-01 00:00:00 UTC\n")
    assert "threads: 2 (2 blocked)" in text and "deadlocks: 1" in text
    assert (f'thread "T{T1}" (ident {T1}, main) blocked for 1.000 s\n'
            f'    holds rlock "A" (created at app.py:10) for 3.000 s\n'
            f'    waiting to acquire rlock "B" (created at app.py:11)\n'
            f'    which is held by thread "T{T2}" (ident {T2}) for 3.000 s\n'
            f"    Python stack (most recent call first):\n"
            f"        app.py:{T1} in work\n") in text
    block = text[text.index("Found one deadlock:"):]
    assert block.splitlines()[2:6] == [
        f'thread "T{T1}" (ident {T1}, main):',
        '  waiting to acquire rlock "B" (created at app.py:11),',
        f'  which is held by thread "T{T2}" (ident {T2})',
        f'thread "T{T2}" (ident {T2}):',
    ]
    assert text.rstrip().endswith("Found 1 deadlock.")


def test_loose_lock_cycle_is_only_probable():
    snap = snap_of(two_lock_state("lock", loose=True), T1, T2)
    assert not snap.is_certain(snap.cycles[0])
    text = str(snap)
    assert "Found one probable deadlock:" in text and "Found one deadlock:" not in text
    assert "is a plain Lock, which any thread may release" in text
    assert "probably, not certainly, a deadlock" in text
    assert "deadlocks: 1 (1 probable)" in text


def test_report_without_waits():
    text = str(snap_of(state(), T1, main=T1))
    assert "No thread or task is blocked in plait." in text
    assert f'Threads not blocked in plait: thread "T{T1}" (ident {T1}, main)' in text


def test_unheld_lock_and_pending_future():
    raw = state([prim(LOCK_A, "lock", "A", waiters=[(T1, NOW - 1)]),
                 prim(FUT, "future", "f", waiters=[(T2, NOW - 1)], state="PENDING", runs_on=None)])
    text = str(snap_of(raw, T1, T2))
    assert "which no thread holds" in text
    assert "which runs nowhere yet (state PENDING)" in text


# --- JSON, DOT, Mermaid ----------------------------------------------------------------


def test_json_schema():
    snap = snap_of(two_lock_state(), T1, T2)
    data = json.loads(snap.to_json())
    assert data["version"] == 1 and data["pid"] == 4242
    assert data["cycles"] == snap.cycles
    kinds = {"thread", "task", "future", "worker", "lock", "rlock", "condition", "semaphore",
             "event", "barrier", "queue"}
    for node in data["nodes"]:
        assert isinstance(node["id"], str) and node["kind"] in kinds and "name" in node
        if node["kind"] == "thread":
            assert isinstance(node["ident"], int)
        elif node["kind"] in kinds - {"thread", "task", "worker"}:
            assert "site" in node
    for edge in data["edges"]:
        assert edge["kind"] in {"waits_for", "held_by", "runs_on", "awaits"}
        assert {"from", "to", "since_s"} <= set(edge)


def test_a_snapshot_comes_back_from_its_dict():
    snap = snap_of(two_lock_state("lock", loose=True), T1, T2)
    again = Snapshot._from_dict(json.loads(snap.to_json()))
    assert again.to_dict() == snap.to_dict()
    assert str(again) == str(snap) and again.to_dot() == snap.to_dot()


def test_render_formats(binding):
    binding.raw = two_lock_state()
    assert debug._render().startswith("plait.debug: process 4242")
    assert json.loads(debug._render("json"))["pid"] == 4242
    assert debug._render("dot").startswith("digraph")
    assert debug._render("mermaid").startswith("flowchart")
    with pytest.raises(ValueError):
        debug._render("svg")


def test_dot_marks_cycle_edges_red_and_escapes_names():
    raw = two_lock_state()
    raw["primitives"][0]["name"] = 'we"ird\\name\nline'
    dot = snap_of(raw, T1, T2).to_dot()
    assert dot.startswith("digraph plait {") and dot.rstrip().endswith("}")
    assert dot.count("color=red, fontcolor=red, penwidth=2") == 4
    assert 'we\\"ird\\\\name\\nline' in dot
    assert f'"rlock:0x{LOCK_A:x}" [label=' in dot and "shape=doubleoctagon" in dot
    # every quoted string is closed: an even number of unescaped quotes per line
    for line in dot.splitlines():
        assert line.replace('\\"', "").count('"') % 2 == 0


def test_mermaid_styles_cycle_links_and_escapes():
    raw = two_lock_state()
    raw["primitives"][1]["name"] = 'B "<x>"'
    text = snap_of(raw, T1, T2).to_mermaid()
    assert text.startswith("flowchart LR\n")
    assert "linkStyle 0,1,2,3 stroke:red" in text
    assert "#quot;#lt;x#gt;#quot;" in text and '"<x>"' not in text


def test_dot_and_mermaid_leave_non_cycle_edges_plain():
    raw = state([prim(LOCK_A, holders=[(T1, NOW - 1)], waiters=[(T2, NOW - 1)])])
    snap = snap_of(raw, T1, T2)
    assert "color=red" not in snap.to_dot() and "linkStyle" not in snap.to_mermaid()


# --- top ----------------------------------------------------------------------------


def test_top_rows_and_table():
    prims = []
    for pid, contended, wait in ((1, 5, 0.5), (2, 9, 0.1), (3, 5, 0.9)):
        p = prim(pid, "lock", f"l{pid}", f"app.py:{pid}")
        p["stats"] = {"contended": contended, "wait_total": wait, "wait_max": wait,
                      "hold_max": 0.25}
        prims.append(p)
    rows = _format.top_rows(prims, 2)
    assert [r["name"] for r in rows] == ["l2", "l3"]
    assert rows[0] == {"id": "lock:0x2", "kind": "lock", "name": "l2", "site": "app.py:2",
                       "contended": 9, "wait_total": 0.1, "wait_max": 0.1, "hold_max": 0.25}
    table = debug.format_top(rows)
    assert table.splitlines()[0].split()[:2] == ["contended", "wait"]
    assert "l3 (app.py:3)" in table and len(table.splitlines()) == 3
    assert "(no contended primitive)" in debug.format_top([])


# --- the public API over a stand-in binding -------------------------------------------------


class FakeBinding:
    """What the binding exposes, recording calls."""

    def __init__(self, raw):
        self.raw = raw
        self.calls = []
        self.settings = {"deadlock": "default", "lock_order": False, "stall": None,
                         "inspect": True}

    def state(self, all=False):
        self.calls.append(("state", all))
        return self.raw

    def configure(self, deadlock=None, lock_order=None, stall=None, inspect=None, tracking=None):
        self.calls.append(("configure", deadlock, lock_order, stall, inspect))
        for key, value in (("deadlock", deadlock), ("lock_order", lock_order),
                           ("inspect", inspect)):
            if value is not None:
                self.settings[key] = value
        if stall is not None:
            self.settings["stall"] = stall or None
        return dict(self.settings)

    def stats(self):
        return [p for p in self.raw["primitives"] if p["stats"]["contended"] > 0]


@pytest.fixture
def binding(monkeypatch):
    fake = FakeBinding(state())
    monkeypatch.setattr(_plait, "_debug_state", fake.state, raising=False)
    monkeypatch.setattr(_plait, "_debug_configure", fake.configure, raising=False)
    monkeypatch.setattr(_plait, "_debug_stats", fake.stats, raising=False)
    return fake


def test_snapshot_and_dump_use_the_binding_and_live_threads(binding):
    me = threading.get_ident()
    binding.raw = state([prim(LOCK_A, "lock", "A", holders=[(me, NOW - 1)])])
    snap = debug.snapshot()
    assert binding.calls == [("state", False)]
    node = snap.node(f"thread:{me}")
    assert node["name"] == threading.current_thread().name and node["python"]
    assert not any("plait/debug" in line for line in node["stack"])
    assert any("test_debug_graph.py" in line for line in node["stack"])
    out = io.StringIO()
    debug.dump(out)
    assert out.getvalue().startswith("plait.debug: process 4242")


def test_dump_on_installs_a_handler_and_returns_the_previous(binding):
    out = io.StringIO()
    previous = debug.dump_on(signal.SIGUSR2, out)
    try:
        signal.raise_signal(signal.SIGUSR2)
        assert "plait.debug: process" in out.getvalue()
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_enable_disable_settings(binding):
    assert debug.settings()["deadlock"] == "default"
    assert debug.enable(deadlock="raise", stall=2)["deadlock"] == "raise"
    assert binding.calls[-1] == ("configure", "raise", None, 2.0, None)
    assert debug.enable(lock_order=1)["lock_order"] is True
    with pytest.raises(ValueError):
        debug.enable(deadlock="loud")
    with pytest.raises(ValueError):
        debug.enable(stall=-1)
    off = debug.disable()
    assert off["deadlock"] == "off" and off["lock_order"] is False and off["stall"] is None


def test_top_sorts_the_binding_stats(binding):
    a, b = prim(1, "lock"), prim(2, "lock")
    a["stats"]["contended"], b["stats"]["contended"] = 1, 3
    binding.raw = state([a, b])
    assert [r["id"] for r in debug.top()] == ["lock:0x2", "lock:0x1"]


def test_on_deadlock_describes_the_cycle_with_stacks(binding):
    me = threading.get_ident()
    # This thread holds B and is about to wait for A, held by T2 which waits for B.
    binding.raw = state(
        [prim(LOCK_A, "rlock", "A", "app.py:10", holders=[(T2, NOW - 3)]),
         prim(LOCK_B, "rlock", "B", "app.py:11", holders=[(me, NOW - 3)], waiters=[(T2, NOW - 2)])],
        waits={T2: {"id": LOCK_B, "since": NOW - 2, "deadline": None}})
    text = debug._on_deadlock([(me, LOCK_A), (T2, LOCK_B)], True)
    assert binding.calls == [("state", True)]
    assert text.startswith("plait.debug: deadlock in process 4242, found when thread ")
    assert "Found one deadlock:" in text
    assert 'waiting to acquire rlock "A" (created at app.py:10),' in text
    assert f"which is held by thread \"<thread {T2}>\" (ident {T2})" in text
    assert "Python stacks of the threads and tasks above:" in text
    assert "test_debug_graph.py" in text


def test_on_deadlock_not_certain_and_unknown_primitive(binding):
    me = threading.get_ident()
    text = debug._on_deadlock([(me, 0x123), (T2, 0x456)], False)
    assert "Found one probable deadlock:" in text and 'lock "0x123"' in text


def test_on_stall_writes_stderr_and_the_logger(binding, capsys, caplog):
    with caplog.at_level("WARNING", logger="plait.debug"):
        debug._on_stall(2.5)
    assert "stall: every thread has been blocked for 2.5 s" in capsys.readouterr().err
    assert any("stall" in r.getMessage() for r in caplog.records)


def test_exceptions_and_logger():
    assert issubclass(debug.DeadlockError, RuntimeError)
    assert issubclass(debug.LockOrderWarning, RuntimeWarning)
    assert debug.logger.name == "plait.debug"


# --- PLAIT_DEBUG ------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("deadlock", {"deadlock": "report"}),
    ("deadlock=raise", {"deadlock": "raise"}),
    (" deadlock=off , lock-order", {"deadlock": "off", "lock_order": True}),
    ("lock_order=0,stall=2.5", {"lock_order": False, "stall": 2.5}),
    ("inspect=off", {"inspect": False}),
    ("", {}),
])
def test_plait_debug_parsing(text, expected):
    assert debug._parse_env(text) == expected


def test_plait_debug_bad_items_warn_and_are_skipped():
    with pytest.warns(RuntimeWarning, match="PLAIT_DEBUG: ignoring 'stall=soon'"):
        assert debug._parse_env("stall=soon,deadlock") == {"deadlock": "report"}
    with pytest.warns(RuntimeWarning):
        assert debug._parse_env("deadlock=maybe,verbose") == {}


def test_plait_debug_at_import_calls_enable(binding, monkeypatch):
    monkeypatch.setenv("PLAIT_DEBUG", "deadlock=raise,stall=3")
    debug._configure_from_env()
    assert binding.calls[-1] == ("configure", "raise", None, 3.0, None)


# --- asyncio tasks on plait's loop ----------------------------------------------------------


class CoreFuture(cf.Future):
    """A concurrent future carrying a core id, as plait's Future does."""

    _debug_id = FUT


async def await_wrapped(source):
    """A task body awaiting ``wrap_future(source)``."""
    return await asyncio.wrap_future(source)


def run_on_plait(coro_fn):
    """Run ``coro_fn()`` on a plait loop."""
    return plait.run(coro_fn())


def test_plait_loops_register_weakly():
    loop = plait.new_event_loop()
    try:
        assert loop in _tasks.loops()
    finally:
        loop.close()
    assert loop not in _tasks.loops()


def test_task_awaiting_run_in_executor_links_to_the_concurrent_future():
    release = threading.Event()

    async def main():
        loop = asyncio.get_running_loop()
        with cf.ThreadPoolExecutor(1) as pool:
            async def call():
                return await loop.run_in_executor(pool, release.wait, 30)

            inner = asyncio.ensure_future(call())

            async def follow():
                return await inner

            outer = asyncio.ensure_future(follow())
            for _ in range(5):
                await asyncio.sleep(0)
            graph = _tasks.collect()
            release.set()
            await outer
        return graph, inner, outer

    graph, inner, outer = run_on_plait(main)
    by_id = {n["id"]: n for n in graph.nodes}
    inner_id = f"task:0x{id(inner):x}"
    (to_future,) = [e for e in graph.edges if e["from"] == inner_id]
    assert to_future["kind"] == "awaits" and to_future["to"].startswith("future:py0x")
    assert by_id[to_future["to"]]["name"].startswith("concurrent.futures.Future")
    assert by_id[inner_id]["kind"] == "task"
    assert any(e["to"] == inner_id for e in graph.edges if e["kind"] == "awaits")
    assert graph.prim_ids == set()


def test_wrap_future_of_a_plait_future_joins_the_core_graph(binding):
    # A task awaits a wrapped core future, which runs on T2, which waits on a
    # lock held by T1: the snapshot shows the whole chain.
    binding.raw = state(
        [prim(LOCK_A, "rlock", "L", holders=[(T1, NOW - 2)], waiters=[(T2, NOW - 1)]),
         prim(FUT, "future", "job", "app.py:20", state="RUNNING", runs_on={"thread": T2})],
        waits={T2: {"id": LOCK_A, "since": NOW - 1, "deadline": None}})

    async def main():
        source = CoreFuture()
        task = asyncio.ensure_future(await_wrapped(source))
        for _ in range(3):
            await asyncio.sleep(0)
        snap = debug.snapshot()
        source.set_result(None)
        await task
        return snap, task

    snap, task = run_on_plait(main)
    chain = [f"task:0x{id(task):x}", f"future:0x{FUT:x}", f"thread:{T2}", f"rlock:0x{LOCK_A:x}",
             f"thread:{T1}"]
    for src, dst in zip(chain, chain[1:]):
        assert any(e["from"] == src and e["to"] == dst for e in snap.edges), (src, dst)
    text = str(snap)
    assert f'task "{task.get_name()}"' in text and 'awaiting future "job"' in text


def test_task_awaiting_a_plait_pool_future():
    from plait.futures import ThreadPoolExecutor

    release = threading.Event()

    async def main():
        with ThreadPoolExecutor(1) as pool:
            source = pool.submit(release.wait, 30)
            task = asyncio.ensure_future(await_wrapped(source))
            await asyncio.sleep(0)
            graph = _tasks.collect([asyncio.get_running_loop()])
            release.set()
            await task
        return graph, task, source

    graph, task, source = run_on_plait(main)
    (edge,) = [e for e in graph.edges if e["from"] == f"task:0x{id(task):x}"]
    prim = _tasks.prim_id_of(source)
    if prim is None:  # a binding without _debug_id: the future is a node of its own
        assert edge["to"] == f"future:py0x{id(source):x}"
    else:
        assert edge["to"] == f"future:0x{prim:x}" and graph.prim_ids == {prim}


def test_missing_core_future_is_fetched_with_all(binding, monkeypatch):
    calls = []

    def fake_state(all=False):
        calls.append(all)
        return state([prim(FUT, "future", "job", runs_on={"thread": T2}, state="RUNNING")]
                     if all else [])

    monkeypatch.setattr(_plait, "_debug_state", fake_state, raising=False)

    async def main():
        source = CoreFuture()
        task = asyncio.ensure_future(await_wrapped(source))
        await asyncio.sleep(0)
        snap = debug.snapshot()
        source.set_result(None)
        await task
        return snap

    snap = run_on_plait(main)
    assert calls == [False, True]
    assert snap.edges_from(f"future:0x{FUT:x}", "runs_on")[0]["to"] == f"thread:{T2}"


def test_task_awaiting_task_and_gather():
    async def main():
        gate = asyncio.Event()
        a = asyncio.ensure_future(gate.wait())
        b = asyncio.ensure_future(gate.wait())
        both = asyncio.ensure_future(asyncio.gather(a, b))

        async def waiter():
            await both

        w = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        graph = _tasks.collect([asyncio.get_running_loop()])
        gate.set()
        await w
        return graph, a, b, w

    graph, a, b, w = run_on_plait(main)
    ids = {t: f"task:0x{id(t):x}" for t in (a, b, w)}
    awaited = {e["to"] for e in graph.edges if e["from"] == ids[w]}
    assert awaited == {ids[a], ids[b]}  # gather, seen through to its children
    leaf = [e["to"] for e in graph.edges if e["from"] == ids[a]]
    assert len(leaf) == 1 and leaf[0].startswith("future:py0x")


def test_snapshot_from_another_thread_while_the_loop_runs(binding):
    started = threading.Event()
    results = {}

    async def sleeper():
        started.set()
        await asyncio.sleep(30)

    async def main():
        task = asyncio.ensure_future(sleeper())
        results["task"] = task
        loop = asyncio.get_running_loop()
        snap = await loop.run_in_executor(None, lambda: (started.wait(10), debug.snapshot())[1])
        task.cancel()
        return snap

    snap = run_on_plait(main)
    node = snap.node(f"task:0x{id(results['task']):x}")
    assert node is not None and node["coro"].endswith("sleeper")
    assert any("in sleeper" in line for line in node["stack"])


def test_chained_source_of_a_plain_future_is_none():
    async def main():
        return _tasks.chained_source(asyncio.get_running_loop().create_future())

    assert run_on_plait(main) is None
