"""The asyncio part of the switch: which loop each of asyncio's doors gives
a program, plain, under ``python -m plait run``, with ``--no-asyncio``,
after ``plait.patch()`` and ``plait.unpatch()``, with a policy of the
program's own (kept), and that the switch itself never warns
(``-W error::DeprecationWarning``, also with 3.14's deprecated policy names).

``asyncio.SelectorEventLoop()`` without a selector is a door too (uvicorn
names it as its loop factory); with a ``selectors`` selector it stays
asyncio's loop, and a program's subclass of it stays the program's.

The program is ``apps_async/loops.py``: one ``door: module.Class`` line per
door."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from tests.switch._run import plait_run, python

pytestmark = pytest.mark.timeout(120)

LOOPS = str(Path(__file__).resolve().parent / "apps_async" / "loops.py")
WERROR = ("-W", "error::DeprecationWarning")

PLAIT = "plait.loop.EventLoop"
ASYNCIO = "asyncio.unix_events._UnixSelectorEventLoop"
DOORS = ["get_event_loop", "run", "Runner", "new_event_loop", "IsolatedAsyncioTestCase",
         "EventLoop", "SelectorEventLoop", "SelectorEventLoop(selector)", "subclass"]
#: What the doors that are not the switch's give, switched or not: asyncio's
#: loop for an explicit ``selectors`` selector, and a program's own subclass
#: of ``asyncio.SelectorEventLoop`` (still an instance of it).
FIXED = {"SelectorEventLoop(selector)": ASYNCIO, "subclass": "__main__.MyLoop, an instance: True"}


def doors(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    out = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    expected = [d for d in DOORS
                if (d != "Runner" or sys.version_info >= (3, 11))
                and (d != "EventLoop" or sys.version_info >= (3, 13))]
    assert list(out) == expected, proc.stdout
    return out


def expect(loop):
    """Every door gives ``loop``, except the FIXED ones."""
    def want(door):
        return FIXED.get(door, loop)
    return want


def check(out, want):
    assert out == {door: want(door) for door in out}


def test_plain_python_gives_asyncios_loops():
    check(doors(python(*WERROR, LOOPS)), expect(ASYNCIO))


def test_plait_run_gives_plaits_loops():
    check(doors(python(*WERROR, "-m", "plait", "run", LOOPS)), expect(PLAIT))


def test_no_asyncio_leaves_the_loop_alone():
    for option in ("--no-asyncio", "--no-loop"):
        check(doors(plait_run(LOOPS, options=(option,))), expect(ASYNCIO))


def _by_name(out):
    # Loop classes asked for by name, not through the policy, are the switch's.
    for door in ("SelectorEventLoop", "EventLoop"):
        assert out.pop(door, PLAIT) == PLAIT, door


def test_a_programs_own_policy_is_kept():
    out = doors(python(*WERROR, "-m", "plait", "run", LOOPS, "policy"))
    _by_name(out)
    check(out, expect("__main__.MyLoop"))


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_uvloops_policy_is_kept():
    out = doors(python(*WERROR, "-m", "plait", "run", LOOPS, "uvloop"))
    assert out.pop("get_event_loop") == "none"  # uvloop's policy makes none there
    _by_name(out)
    check(out, expect("uvloop.Loop"))


PATCH_UNPATCH = textwrap.dedent("""
    import asyncio, runpy, sys, warnings, plait
    loops = sys.argv[1]

    def fresh_policy():  # get_event_loop makes a loop only until one was set
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(None)

    plait.patch(threading=False, queue=False, futures=False, multiprocessing=False)
    assert plait.patched() == ("asyncio",), plait.patched()
    print("patched")
    runpy.run_path(loops, run_name="__main__")
    plait.unpatch()
    print("unpatched")
    fresh_policy()
    runpy.run_path(loops, run_name="__main__")
""")


def test_patch_then_unpatch():
    proc = python(*WERROR, "-c", PATCH_UNPATCH, LOOPS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    first, second = proc.stdout.split("unpatched\n")
    assert first.startswith("patched\n")
    names = (["get_event_loop", "run"] + (["Runner"] if sys.version_info >= (3, 11) else [])
             + ["new_event_loop", "IsolatedAsyncioTestCase"]
             + (["EventLoop"] if sys.version_info >= (3, 13) else []) + ["SelectorEventLoop"])
    for text, loop in ((first, PLAIT), (second, ASYNCIO)):
        out = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
        assert {k: out.get(k) for k in names} == dict.fromkeys(names, loop), text
        assert {k: out.get(k) for k in FIXED} == FIXED, text


# 3.14 deprecates the policy system's public names (a module __getattr__
# that warns); the switch and plait.loop must not touch them.
PY314_STYLE = textwrap.dedent("""
    import asyncio, warnings
    from asyncio import unix_events
    # asyncio <= 3.13 makes its default policy through the public name
    # (3.14 through a private one): made here, before the names warn.
    asyncio.get_event_loop_policy()
    for mod, names in ((asyncio, ("DefaultEventLoopPolicy", "AbstractEventLoopPolicy",
                                  "get_event_loop_policy", "set_event_loop_policy")),
                       (unix_events, ("DefaultEventLoopPolicy",))):
        gone = {n: vars(mod).pop(n) for n in names}
        def __getattr__(name, gone=gone, mod=mod.__name__):
            if name in gone:
                warnings.warn(f"{mod}.{name} is deprecated", DeprecationWarning, stacklevel=2)
                return gone[name]
            raise AttributeError(name)
        mod.__getattr__ = __getattr__
    import plait
    plait.patch()
    async def main():
        return type(asyncio.get_running_loop()).__module__
    print(asyncio.run(main()))
    plait.unpatch()
    print(asyncio.run(main()))
""")


def test_the_switch_does_not_use_314s_deprecated_policy_names():
    proc = python(*WERROR, "-c", PY314_STYLE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["plait.loop", "asyncio.unix_events"]
