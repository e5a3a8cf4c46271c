"""A switched program's worker processes are switched, with the parent's parts.

One program (``PROGRAM``, written to a temporary file) starts a child in each
way a program can, and every child reports what it runs on: whether
``threading.Lock()`` and ``queue.Queue`` are plait's and what
``plait.patched()`` says. The ways:

* ``multiprocessing.Process`` with the start methods fork, spawn and
  forkserver (spawn and forkserver children are switched by the object the
  switch puts in multiprocessing's preparation data; fork children inherit
  the switched modules);
* ``multiprocessing`` Pool workers, per start method (plait's Pool under the
  switch: a forked zygote for fork, spawned interpreters otherwise; the
  standard Pool, whose workers are ``Process`` children, with
  ``--no-multiprocessing``);
* ``concurrent.futures.ProcessPoolExecutor`` workers (plait's pool under the
  switch) forked from a zygote (``mp_context`` fork) and spawned
  (``mp_context`` spawn: switched through the workers' setup); see
  ``plait/futures/_process_start.py``.

The program runs under ``python -m plait run`` (every part), under
``--no-threading --no-multiprocessing`` (children follow the parent's
parts), and with ``plait.patch()`` then ``plait.unpatch()`` (children made
afterwards are not switched). A spawned child whose interpreter cannot
import plait still runs, unswitched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.switch._run import env, plait_run, python

pytestmark = pytest.mark.timeout(300)

ALL = ["threading", "queue", "futures", "asyncio", "multiprocessing"]

PROGRAM = textwrap.dedent('''
    import json
    import multiprocessing
    import sys


    def report():
        import queue
        import threading

        def plaits(cls):
            return any(c.__module__.partition(".")[0] == "plait" for c in cls.__mro__)

        out = {"lock": plaits(type(threading.Lock())), "queue": plaits(queue.Queue)}
        try:
            import plait
        except ImportError:
            out["patched"] = None
        else:
            out["patched"] = list(plait.patched())
        return out


    def put_report(q):
        q.put(report())


    def by_process(method):
        ctx = multiprocessing.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=put_report, args=(q,))
        p.start()
        try:
            return q.get(timeout=120)
        finally:
            p.join(120)


    def by_pool(method):
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(1) as pool:
            out = pool.apply(report)
            out["pool"] = type(pool).__module__
        return out


    def by_executor(method):
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(1, mp_context=ctx) as ex:
            out = ex.submit(report).result(timeout=120)
            out["executor"] = type(ex).__module__
        return out


    WAYS = {"process": by_process, "pool": by_pool, "executor": by_executor}


    if __name__ == "__main__":
        if sys.argv[1] == "unpatch":
            import plait

            plait.patch()
            plait.unpatch()
        elif sys.argv[1] == "no-plait":
            # Children run an interpreter that cannot import plait.
            multiprocessing.set_executable(sys.argv[2])
            del sys.argv[2]
        results = {"parent": report()}
        for case in sys.argv[2:]:
            way, method = case.split("-")
            try:
                results[case] = WAYS[way](method)
            except BaseException as exc:
                results[case] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(results))
''')

CASES = ["process-fork", "process-spawn", "process-forkserver",
         "pool-fork", "pool-spawn", "pool-forkserver",
         "executor-fork", "executor-spawn"]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("workers") / "workers.py"
    path.write_text(PROGRAM)
    return str(path)


def _results(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def switched(program):
    return _results(plait_run(program, "run", *CASES))


@pytest.fixture(scope="module")
def some_parts(program):
    return _results(plait_run(program, "run", *CASES,
                              options=("--no-threading", "--no-multiprocessing")))


@pytest.fixture(scope="module")
def after_unpatch(program):
    return _results(python(program, "unpatch", *CASES))


@pytest.mark.parametrize("case", CASES)
def test_worker_of_switched_program_is_switched(switched, case):
    assert switched["parent"] == {"lock": True, "queue": True, "patched": ALL}
    report = switched[case]
    assert isinstance(report, dict), report
    assert (report["lock"], report["queue"], report["patched"]) == (True, True, ALL)
    if case.startswith("pool"):
        assert report["pool"] == "plait._mp_pool"
    if case.startswith("executor"):
        assert report["executor"] == "plait.futures"


@pytest.mark.parametrize("case", CASES)
def test_worker_follows_parents_parts(some_parts, case):
    parts = [p for p in ALL if p not in ("threading", "multiprocessing")]
    assert some_parts["parent"] == {"lock": False, "queue": True, "patched": parts}
    report = some_parts[case]
    assert isinstance(report, dict), report
    assert (report["lock"], report["queue"], report["patched"]) == (False, True, parts)
    if case.startswith("pool"):  # the standard Pool: its workers are Process children
        assert report["pool"] == "multiprocessing.pool"


@pytest.mark.parametrize("case", CASES)
def test_worker_made_after_unpatch_is_not_switched(after_unpatch, case):
    assert after_unpatch["parent"] == {"lock": False, "queue": False, "patched": []}
    report = after_unpatch[case]
    assert isinstance(report, dict), report
    assert (report["lock"], report["queue"], report["patched"]) == (False, False, [])
    if case.startswith("pool"):
        assert report["pool"] == "multiprocessing.pool"
    if case.startswith("executor"):
        assert report["executor"] == "concurrent.futures.process"


def test_child_that_cannot_import_plait_still_runs(program):
    """A spawned child runs an interpreter without plait (the venv's base
    interpreter): unpickling the switch's hook fails quietly and the child
    runs unswitched."""
    base = getattr(sys, "_base_executable", None)
    if not base or base == sys.executable:
        pytest.skip("no interpreter without plait here (not in a virtual environment)")
    probe = subprocess.run([base, "-c", "import plait"], capture_output=True, timeout=60,
                           env=env())
    if probe.returncode == 0:
        pytest.skip(f"{base} can import plait")
    results = _results(plait_run(program, "no-plait", base, "process-spawn",
                                 "process-forkserver"))
    assert results["parent"]["lock"] is True
    for case in ("process-spawn", "process-forkserver"):
        report = results[case]
        assert isinstance(report, dict), report
        assert report["lock"] is False and report["queue"] is False, report


def test_package_main_is_not_run_again_in_spawned_workers(tmp_path):
    """``python -m plait run -m package``: a package's ``__main__.py`` runs
    its code unguarded (``python -m test`` is one), so spawned workers must
    not load it as ``__mp_main__``, as multiprocessing's spawn does not."""
    pkg = tmp_path / "unguarded"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(textwrap.dedent('''
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        print("main ran", flush=True)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=ctx) as ex:
            print(type(ex).__module__, sorted(ex.map(abs, [-1, -2, 3])), flush=True)
    '''))
    for run, executor in ((plait_run, "plait.futures"), (python, "concurrent.futures.process")):
        proc = run("-m", "unguarded", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.count("main ran") == 1, proc.stdout + proc.stderr
        assert f"{executor} [1, 2, 3]" in proc.stdout, proc.stdout


def test_forkserver_started_before_the_switch_changes(tmp_path):
    """The forkserver process is not switched itself: each child it forks
    switches (or not) from the preparation data of its own start, so a
    forkserver started before ``patch()`` or ``unpatch()`` serves the state
    at the child's start."""
    path = tmp_path / "forkserver_switch.py"
    path.write_text(PROGRAM + textwrap.dedent('''
        def run_switching():
            import plait

            ctx = multiprocessing.get_context("forkserver")
            out = [by_process("forkserver")]
            plait.patch()
            out.append(by_process("forkserver"))
            plait.unpatch()
            out.append(by_process("forkserver"))
            print(json.dumps(out))
    '''))
    proc = python("-c", "import forkserver_switch as m; m.run_switching()", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before, switched, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (before["lock"], before["patched"]) == (False, [])
    assert (switched["lock"], switched["queue"], switched["patched"]) == (True, True, ALL)
    assert (after["lock"], after["patched"]) == (False, [])


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_manager_of_switched_program(method):
    """``multiprocessing.Manager()`` of a switched program: its registry holds
    the switched ``threading.Lock`` and ``queue.Queue``, which its server
    process (forked, spawned or forkserver's) must make and expose."""
    proc = plait_run("-c", textwrap.dedent(f'''
        import multiprocessing

        if __name__ == "__main__":
            with multiprocessing.get_context("{method}").Manager() as m:
                lock, q = m.Lock(), m.Queue()
                with lock:
                    q.put(1)
                print(q.get(timeout=60))
    '''))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["1"]
