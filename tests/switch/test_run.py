"""``python -m plait run`` runs a program as ``python`` would: each test runs
the same program both ways and compares what the program sees (argv,
sys.path[0], ``__main__``...), its output, its tracebacks and how it ends;
and checks the switch was on under ``plait run`` only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipapp

import pytest

from tests._bounds import wait_until
from tests.switch._run import APPS, TIMEOUT, both, env, plait_run, python, same_outcome

ALL_PARTS = ["threading", "queue", "futures", "asyncio", "multiprocessing"]


def facts(plain, switched):
    """The two runs of a program printing _facts.report: their facts are
    equal, and the switch was on under plait run only."""
    assert plain.returncode == 0, plain.stderr
    assert switched.returncode == 0, switched.stderr
    assert switched.stderr == plain.stderr
    plain_facts, plain_switch = plain.stdout.splitlines()
    switched_facts, switched_switch = switched.stdout.splitlines()
    assert json.loads(switched_facts) == json.loads(plain_facts)
    assert json.loads(plain_switch) == {"lock_switched": False, "patched": []}
    assert json.loads(switched_switch) == {"lock_switched": True, "patched": ALL_PARTS}
    return json.loads(plain_facts)


def apps_env(**extra):
    # _facts is importable wherever the program runs from.
    path = os.environ.get("PYTHONPATH")
    return env(PYTHONPATH=APPS + (os.pathsep + path if path else ""), **extra)


# --- what the program sees -------------------------------------------------------------


def test_script():
    seen = facts(*both("apps/introspect.py", "a", "--pool", cwd=os.path.dirname(APPS),
                       env=apps_env()))
    assert seen["argv"] == ["apps/introspect.py", "a", "--pool"]
    assert seen["path0"] == APPS
    assert seen["file"] == os.path.join(APPS, "introspect.py")
    assert seen["name"] == "__main__" and seen["main_is_this_module"]
    assert seen["pickle_work"] == "True" and seen["pool_work"] == "42"
    assert seen["spawn_pool_work"] == "42" and seen["spawn_process_work"] == 42


def test_sys_excepthook_is_pythons():
    # concurrent.futures imported: plait's futures (its process pools' exit
    # hook) are loaded, and add no hook of their own.
    plain, switched = both("-c", "import sys, concurrent.futures; "
                           "print(sys.excepthook is sys.__excepthook__)")
    same_outcome(plain, switched)


def test_script_path_as_python_makes_it_absolute():
    # Joined to the working directory, not normalised.
    seen = facts(*both("./../apps/introspect.py", cwd=APPS, env=apps_env()))
    assert seen["file"] == APPS + "/./../apps/introspect.py" and seen["path0"] == APPS


def test_module():
    seen = facts(*both("-m", "introspect", "b", "--pool", cwd=APPS, env=apps_env()))
    assert seen["argv"] == [os.path.join(APPS, "introspect.py"), "b", "--pool"]
    assert seen["spec"][0] == "introspect" and seen["pool_work"] == "42"
    assert seen["spawn_pool_work"] == "42" and seen["spawn_process_work"] == 42


def test_package_main():
    seen = facts(*both("-m", "pkgapp", "c", cwd=APPS, env=apps_env()))
    assert seen["spec"][0] == "pkgapp.__main__" and seen["package"] == "pkgapp"


def test_command():
    command = "import _facts\nwork = len\n_facts.report(globals())"
    seen = facts(*both("-c", command, "d", "-x", cwd=APPS, env=apps_env()))
    assert seen["argv"] == ["-c", "d", "-x"] and seen["path0"] == ""
    assert seen["loader"] == "BuiltinImporter" and seen["file"] is None


def test_directory_and_zipapp(tmp_path):
    seen = facts(*both("dirapp", "e", cwd=APPS, env=apps_env()))
    assert seen["path0"] == os.path.join(APPS, "dirapp") and seen["argv"] == ["dirapp", "e"]
    archive = tmp_path / "app.pyz"
    zipapp.create_archive(os.path.join(APPS, "dirapp"), archive)
    seen = facts(*both(str(archive), "f", cwd=tmp_path, env=apps_env()))
    assert seen["path0"] == str(archive) and seen["loader"] == "zipimporter"


def test_symlinked_script(tmp_path):
    # python puts the directory of the script the link points to on sys.path.
    link = tmp_path / "link.py"
    link.symlink_to(os.path.join(APPS, "introspect.py"))
    seen = facts(*both(str(link), cwd=tmp_path, env=apps_env()))
    assert seen["path0"] == APPS and seen["file"] == str(link)


def test_stdin_program_and_io():
    program = ("import sys\nprint(sys.argv, __file__, repr(sys.path[0]))\n"
               "print('read:', sys.stdin.read().upper())\n")
    plain, switched = both("-", "g", input=program, cwd=APPS)
    same_outcome(plain, switched)
    assert plain.stdout.startswith("['-', 'g'] <stdin> ''")


def test_stdin_and_stdout_of_a_script():
    program = "import sys; print(sys.stdin.readline().strip()[::-1]); sys.stdout.flush()"
    plain, switched = both("-c", program, input="plait\nmore\n")
    same_outcome(plain, switched)
    assert plain.stdout == "tialp\n"


@pytest.mark.parametrize("python_options", [
    pytest.param(["-P"], marks=pytest.mark.skipif(sys.version_info < (3, 11),
                                                 reason="-P is new in 3.11")),
    ["-I"],
    ["-W", "error::DeprecationWarning", "-W", "ignore::UserWarning"],
    ["-X", "dev"],
    ["-O"],
])
def test_interpreter_options(python_options, tmp_path):
    # The options are the interpreter's: python ... -m plait run keeps them
    # for the program (and -P/-I leave sys.path[0] alone as python does).
    shutil.copy(os.path.join(APPS, "_facts.py"), tmp_path)
    shutil.copy(os.path.join(APPS, "introspect.py"), tmp_path)
    seen = facts(*both(str(tmp_path / "introspect.py"), python_options=python_options,
                       cwd=tmp_path, env=env()))
    if python_options[0] in ("-P", "-I"):
        assert seen["path0"] != str(tmp_path)


@pytest.mark.parametrize("args", [["-c", "x = 5"], ["exits.py", "return"],
                                  ["exits.py", "exception"], ["exits.py", "exit-3"]])
def test_interactive_prompt_after_the_program(args):
    # python -i: the prompt comes after the program, in its __main__.
    plain, switched = both(*args, python_options=["-i"], cwd=APPS,
                           input="print('x is', globals().get('x'), __name__)\n")
    same_outcome(plain, switched)
    assert ">>> " in plain.stderr


def test_directory_with_safe_path():
    # python puts a directory it runs first on sys.path even under -P / -I.
    seen = facts(*both("dirapp", python_options=["-I"], cwd=APPS, env=env()))
    assert seen["path0"] == os.path.join(APPS, "dirapp")


def test_sys_modules_main_after_the_run():
    plain, switched = both(os.path.join(APPS, "lifecycle.py"))
    same_outcome(plain, switched)
    assert plain.stdout.splitlines() == [
        "main: done", "worker: __file__ still set: False", "worker: done",
        "atexit: __main__ is this module: True", "atexit: __file__ still set: False False"]


@pytest.mark.parametrize("end", ["exception", "exit"])
def test_lifecycle_after_an_exception_or_exit(end):
    plain, switched = both(os.path.join(APPS, "lifecycle.py"), end)
    same_outcome(plain, switched)
    assert plain.stdout.splitlines()[-1].endswith(str(end == "exit"))


# --- how it ends -----------------------------------------------------------------------


@pytest.mark.parametrize("mode, returncode", [
    ("return", 0),
    ("exception", 1),
    ("keyboard-interrupt", -signal.SIGINT),
    ("exit-3", 3),
    ("exit-message", 1),
    ("exit-none", 0),
    ("exit-list", 1),
    ("os-exit", 7),
    ("program-hook", 1),
    ("failing-hook", 1),
    ("exit-in-hook", 5),
    ("syntax-error-in-exec", 1),
    ("thread-exception", 0),
    ("thread-hook-fails", 0),
    ("exit-in-thread", 0),
])
def test_exit_and_traceback(mode, returncode):
    plain, switched = both(os.path.join(APPS, "exits.py"), mode)
    same_outcome(plain, switched)
    assert plain.returncode == returncode
    if mode in ("exception", "program-hook", "failing-hook", "syntax-error-in-exec"):
        assert "plait" not in switched.stderr and "Traceback" in switched.stderr


@pytest.mark.parametrize("how", [["-m", "exits"], ["-c", "import exits"]])
def test_traceback_of_module_and_command(how):
    plain, switched = both(*how, "exception", cwd=APPS)
    same_outcome(plain, switched)
    assert plain.returncode == 1 and "plait" not in switched.stderr


def test_script_that_does_not_compile(tmp_path):
    (tmp_path / "bad.py").write_text("x = (1 +\n")
    plain, switched = both("bad.py", cwd=tmp_path)
    same_outcome(plain, switched)
    assert plain.returncode == 1 and "SyntaxError" in plain.stderr


@pytest.mark.parametrize("args", [["missing.py"], ["-m", "no_such_module_here"], ["."],
                                  ["./"], [""]])
def test_nothing_to_run(args, tmp_path):
    plain, switched = both(*args, cwd=tmp_path)
    same_outcome(plain, switched)
    assert plain.returncode in (1, 2)


@pytest.mark.parametrize("kind", ["event", "queue", "lock", "condition"])
def test_sigint_interrupts_a_switched_wait(kind):
    # A real Ctrl-C, sent to the child this test started once its main
    # thread is asleep in the wait: the program gets KeyboardInterrupt.
    with subprocess.Popen([sys.executable, "-m", "plait", "run",
                           os.path.join(APPS, "sigwait.py"), kind],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env()) as child:
        try:
            switched = child.stdout.readline()
            assert child.stdout.readline() == "waiting\n"
            wait_until(lambda: _asleep(child.pid), what=f"{kind} wait to block")
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
    assert "'lock_switched': True" in switched
    assert (child.returncode, out, err) == (0, "KeyboardInterrupt\n", "")


def test_uncaught_sigint_kills_by_sigint():
    with subprocess.Popen([sys.executable, "-m", "plait", "run",
                           os.path.join(APPS, "sigwait.py"), "uncaught"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env()) as child:
        try:
            child.stdout.readline()
            assert child.stdout.readline() == "waiting\n"
            wait_until(lambda: _asleep(child.pid), what="wait to block")
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == -signal.SIGINT
    assert err.startswith("Traceback") and err.endswith("KeyboardInterrupt\n")
    assert "plait" not in err


def _asleep(pid):
    """The main thread of ``pid`` is asleep (state S: blocked in a wait)."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "S"


# --- the command line ------------------------------------------------------------------


def test_help():
    result = plait_run("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m plait run")
    assert "--no-threading" in result.stdout and "--debug MODE" in result.stdout


def test_double_dash_and_options_before_the_program():
    result = plait_run("--no-queue", "--", os.path.join(APPS, "introspect.py"), "--no-futures",
                       env=apps_env())
    assert result.returncode == 0, result.stderr
    seen, switched = map(json.loads, result.stdout.splitlines())
    assert seen["argv"][1:] == ["--no-futures"]
    assert switched["patched"] == ["threading", "futures", "asyncio", "multiprocessing"]


@pytest.mark.parametrize("args, message", [
    ([], "no program to run"),
    (["--nope", "x.py"], "unknown option '--nope'"),
    (["-c"], "argument expected for the -c option"),
    (["-m"], "argument expected for the -m option"),
    (["--"], "no program to run after --"),
    (["--debug"], "--debug needs a MODE"),
    (["--debug="], "--debug needs a MODE"),
    (["--debug", "sometimes", "-c", "pass"], "--debug: unknown setting 'sometimes'"),
])
def test_usage_errors(args, message):
    result = plait_run(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert "python -m plait run: error: " + message in result.stderr


@pytest.mark.parametrize("option", ["--debug", "--debug="])
def test_debug_mode_applied_and_passed_on(option):
    program = ("import os, plait.debug, subprocess, sys\n"
               "print(plait.debug.settings()['deadlock'], plait.debug.settings()['lock_order'])\n"
               "print(os.environ['PLAIT_DEBUG'])\n")
    args = [option, "deadlock=raise,lock-order"] if option == "--debug" else \
        [option + "deadlock=raise,lock-order"]
    result = plait_run("-c", program, options=args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["raise True", "deadlock=raise,lock-order"]


# Each --no-PART option leaves exactly that part the standard library's.
_STDLIB_CHECK = {
    "threading": "import _thread, threading; ok = threading.Lock is _thread.allocate_lock "
                 "if sys.version_info < (3, 13) else threading.Lock is _thread.LockType",
    "queue": "import queue, _queue; ok = queue.SimpleQueue is _queue.SimpleQueue",
    "futures": "import concurrent.futures as cf, concurrent.futures.thread as t; "
               "ok = cf.ThreadPoolExecutor is t.ThreadPoolExecutor and "
               "cf.ThreadPoolExecutor.__module__ == 'concurrent.futures.thread'",
    "asyncio": "import asyncio; loop = asyncio.new_event_loop(); "
               "ok = type(loop).__module__.startswith('asyncio'); loop.close()",
    "multiprocessing": "import multiprocessing.pool as p; ok = p.Pool.__module__ == "
                       "'multiprocessing.pool'",
}


@pytest.mark.parametrize("option, part", [
    ("--no-threading", "threading"), ("--no-queue", "queue"), ("--no-futures", "futures"),
    ("--no-asyncio", "asyncio"), ("--no-loop", "asyncio"),
    ("--no-multiprocessing", "multiprocessing"), ("--no-pool", "multiprocessing"),
])
def test_no_part_options(option, part):
    program = "import sys, plait\n" + "\n".join(
        f"{check}\nprint({name!r}, ok)" for name, check in _STDLIB_CHECK.items()) + \
        "\nprint('patched', *plait.patched())"
    result = plait_run("-c", program, options=[option])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].split()[1:] == [p for p in ALL_PARTS if p != part]
    assert lines[:-1] == [f"{name} {name == part}" for name in _STDLIB_CHECK]


def test_no_parts_at_all_is_python():
    # Every part off: the program sees the standard library only.
    options = ["--no-threading", "--no-queue", "--no-futures", "--no-loop", "--no-pool"]
    plain, switched = both("introspect.py", options=options, cwd=APPS, env=apps_env())
    assert switched.stdout == plain.stdout and switched.returncode == 0


def test_python_runs_the_helpers_in_a_fresh_interpreter():
    # Guard for the comparisons above: plain python here really is unswitched.
    result = python("-c", "import sys; print('plait' in sys.modules)")
    assert result.stdout == "False\n"
