"""Prints, one ``name: module.Class`` line each, the loop class every door
of asyncio gives this program: run unchanged under ``python`` and under
``python -m plait run`` by tests/switch/test_patch_asyncio.py.

``policy`` as the first argument installs a policy of the program's own
before anything else; ``uvloop`` installs uvloop's."""

import asyncio
import selectors
import sys
import unittest
import warnings


def name(obj):
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class MyLoop(asyncio.SelectorEventLoop):
    pass


if sys.argv[1:] == ["policy"]:
    with warnings.catch_warnings():  # a policy API, deprecated on 3.14 (the program's)
        warnings.simplefilter("ignore", DeprecationWarning)

        class MyPolicy(asyncio.DefaultEventLoopPolicy):
            _loop_factory = MyLoop

        asyncio.set_event_loop_policy(MyPolicy())
elif sys.argv[1:] == ["uvloop"]:
    import uvloop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def running():
    return asyncio.get_running_loop()


def show(label, loop):
    print(f"{label}: {name(loop)}")
    if not loop.is_closed():
        loop.close()


# First: once a loop was set (asyncio.run sets and unsets one), it makes none.
with warnings.catch_warnings():  # 3.12+: asyncio's own warning when it makes a loop here
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:  # a policy that makes none (uvloop's)
        print("get_event_loop: none")
    else:
        print(f"get_event_loop: {name(loop)}")
        asyncio.set_event_loop(None)
        loop.close()
show("run", asyncio.run(running()))
if hasattr(asyncio, "Runner"):  # 3.11+
    with asyncio.Runner() as runner:
        print(f"Runner: {name(runner.get_loop())}")
show("new_event_loop", asyncio.new_event_loop())

seen = []


class Case(unittest.IsolatedAsyncioTestCase):
    async def test_loop(self):
        seen.append(name(asyncio.get_running_loop()))


result = unittest.TestResult()
Case("test_loop").run(result)
assert result.wasSuccessful(), result.errors + result.failures
print(f"IsolatedAsyncioTestCase: {seen[0]}")
if hasattr(asyncio, "EventLoop"):
    show("EventLoop", asyncio.EventLoop())
show("SelectorEventLoop", asyncio.SelectorEventLoop())
show("SelectorEventLoop(selector)", asyncio.SelectorEventLoop(selectors.DefaultSelector()))
loop = MyLoop()
print(f"subclass: {name(loop)}, an instance: {isinstance(loop, asyncio.SelectorEventLoop)}")
loop.close()
