"""``plait.patch()`` / ``plait.unpatch()`` / ``plait.patched()``: the API.

What is switched is process-wide, so every test that switches runs its
program in a fresh interpreter (the pytest process is never switched): one
that asserts in the child and prints ``ok``."""

from __future__ import annotations

import textwrap

import pytest

import plait
from tests.switch._run import python

PARTS = ("threading", "queue", "futures", "asyncio", "multiprocessing")


def run(program):
    result = python("-c", textwrap.dedent(program))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith("ok\n"), result.stdout
    return result.stdout


# --- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: plait.patch(True),
    lambda: plait.patch(threading=1),
    lambda: plait.patch(queue=None),
    lambda: plait.patch(futures="yes"),
    lambda: plait.patch(asyncio=0.0),
    lambda: plait.patch(multiprocessing=[]),
    lambda: plait.patch(loop=True),
    lambda: plait.patch(threading=True, queue=1),  # checked before anything is switched
])
def test_keyword_only_bools(call):
    before = plait.patched()
    with pytest.raises(TypeError):
        call()
    assert plait.patched() == before


def test_parts_and_signature():
    import inspect

    from plait import _switch

    assert _switch.PARTS == PARTS
    params = inspect.signature(plait.patch).parameters
    assert list(params) == list(PARTS)
    assert all(p.kind is p.KEYWORD_ONLY and p.default is True for p in params.values())
    assert plait.patched() == ()
    plait.unpatch()  # nothing switched: nothing to do
    assert plait.patched() == ()


def test_bad_argument_message():
    with pytest.raises(TypeError, match="'queue' must be True or False, not int"):
        plait.patch(queue=1)


# --- what is switched ------------------------------------------------------------------


def test_patch_switches_what_is_looked_up_afterwards():
    run("""
        import _thread, asyncio, queue, threading
        import concurrent.futures as cf, multiprocessing.pool as mpp
        import plait
        from plait import _plait, _mp_pool, futures as pf, loop

        assert plait.patch() is None
        assert plait.patched() == ('threading', 'queue', 'futures', 'asyncio', 'multiprocessing')
        for make, base in [(threading.Lock, _plait.Lock), (threading.RLock, _plait.RLock),
                           (threading.Condition, _plait.Condition),
                           (threading.Semaphore, _plait.Semaphore),
                           (threading.BoundedSemaphore, _plait.BoundedSemaphore),
                           (threading.Event, _plait.Event)]:
            obj = make()
            assert isinstance(obj, base), (make, type(obj).__mro__)
        assert isinstance(threading.Barrier(1), _plait.Barrier)
        assert type(threading.Lock()) is not _thread.LockType
        assert type(queue.Queue()).__mro__[1].__module__.startswith('plait')
        assert cf.ThreadPoolExecutor is pf.ThreadPoolExecutor
        assert cf.ProcessPoolExecutor is pf.ProcessPoolExecutor
        assert cf.wait is pf.wait and cf.as_completed is pf.as_completed
        event_loop = asyncio.new_event_loop()
        assert isinstance(event_loop, loop.EventLoop)
        event_loop.close()
        assert asyncio.run(asyncio.sleep(0, 'x')) == 'x'
        assert mpp.Pool is _mp_pool.Pool and mpp.ThreadPool is _mp_pool.ThreadPool
        print('ok')
    """)


def test_calls_add_up():
    run("""
        import threading, queue, _thread
        import plait
        off = dict(threading=False, queue=False, futures=False, asyncio=False,
                   multiprocessing=False)
        plait.patch(**{**off, 'threading': True})
        assert plait.patched() == ('threading',)
        switched_lock = threading.Lock
        plait.patch(**{**off, 'queue': True})   # threading=False does not undo threading
        assert plait.patched() == ('threading', 'queue')
        assert threading.Lock is switched_lock
        plait.patch(**{**off, 'multiprocessing': True, 'futures': True})
        assert plait.patched() == ('threading', 'queue', 'futures', 'multiprocessing')
        plait.patch()
        assert plait.patched() == ('threading', 'queue', 'futures', 'asyncio',
                                   'multiprocessing')
        plait.unpatch()
        assert plait.patched() == ()
        assert type(threading.Lock()) is _thread.LockType
        print('ok')
    """)


# The modules (and the one class) the parts write to, with everything the
# switch imports imported first, so that only what patch() itself sets can
# differ after unpatch().
_SNAPSHOT = """
    import sys, threading, queue, asyncio, concurrent.futures as cf
    import multiprocessing, multiprocessing.pool, multiprocessing.spawn
    for part in {parts!r}:
        __import__('plait._switch._' + part)
    from asyncio import unix_events
    import plait

    def snapshot():
        spaces = {{name: vars(module) for name, module in list(sys.modules.items())
                   if module is not None and name not in ('__main__', '__mp_main__')}}
        spaces['policy'] = vars(unix_events._UnixDefaultEventLoopPolicy)
        return {{name: dict(space) for name, space in spaces.items()}}

    def differences(before, after):
        out = []
        for name, space in before.items():
            now = after[name]
            for key in space.keys() | now.keys():
                if key not in now or key not in space or now[key] is not space[key]:
                    out.append((name, key, key in space, key in now))
        return out
"""


def test_unpatch_restores_every_attribute_by_identity():
    run(_SNAPSHOT.format(parts=PARTS) + """
    lazy = {'ThreadPoolExecutor', 'ProcessPoolExecutor'} & set(vars(cf))
    before = snapshot()
    plait.patch()
    changed = differences(before, snapshot())
    assert ('threading', 'Lock', True, True) in changed
    assert ('policy', '_loop_factory', True, True) in changed
    # concurrent.futures' executors are lazy names (a module __getattr__):
    # absent from the module before, set by patch, gone again after unpatch.
    assert lazy == set(), lazy
    assert ('concurrent.futures', 'ThreadPoolExecutor', False, True) in changed
    plait.unpatch()
    assert not differences(before, snapshot()), differences(before, snapshot())
    assert 'ThreadPoolExecutor' not in vars(cf)
    assert cf.ThreadPoolExecutor.__module__ == 'concurrent.futures.thread'
    print('ok')
    """)


def test_patch_twice_is_harmless_and_one_unpatch_undoes_it():
    run(_SNAPSHOT.format(parts=PARTS) + """
    before = snapshot()
    plait.patch()
    first = snapshot()
    plait.patch()
    plait.patch(queue=False)
    assert not differences(first, snapshot()), differences(first, snapshot())
    plait.unpatch()
    assert not differences(before, snapshot()), differences(before, snapshot())
    plait.unpatch()
    assert not differences(before, snapshot()), differences(before, snapshot())
    # and again, after an unpatch (the hook on multiprocessing's children is
    # a new wrapper of the same function)
    plait.patch()
    again = [d for d in differences(first, snapshot())
             if d[:2] != ('multiprocessing.spawn', 'get_preparation_data')]
    assert not again, again
    original = before['multiprocessing.spawn']['get_preparation_data']
    assert multiprocessing.spawn.get_preparation_data.__wrapped__ is original
    plait.unpatch()
    assert not differences(before, snapshot()), differences(before, snapshot())
    print('ok')
    """)


def test_concurrent_patch_calls():
    # Many threads switching at once (each one part, or all): every part is
    # applied once, so one unpatch() restores everything.
    run(_SNAPSHOT.format(parts=PARTS) + """
    before = snapshot()
    parts = ('threading', 'queue', 'futures', 'asyncio', 'multiprocessing')
    start = threading.Barrier(len(parts) * 2)
    errors = []

    def switch(only):
        try:
            start.wait()
            plait.patch(**{p: only is None or p == only for p in parts})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=switch, args=(p,)) for p in parts]
    threads += [threading.Thread(target=switch, args=(None,)) for _ in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], errors
    assert plait.patched() == parts
    from plait import _switch
    assert [len(_switch._applied[p]) for p in parts] == \
        [len(set((id(o), n) for o, n, *_ in _switch._applied[p])) for p in parts]
    plait.unpatch()
    assert not differences(before, snapshot()), differences(before, snapshot())
    print('ok')
    """)


def test_objects_made_while_switched_stay_plait():
    run("""
        import threading, queue
        import plait
        from plait import _plait
        plait.patch()
        lock, q = threading.Lock(), queue.Queue()
        plait.unpatch()
        assert isinstance(lock, _plait.Lock) and type(threading.Lock()) is not type(lock)
        with lock:
            q.put(1)
        assert q.get() == 1 and not lock.locked()
        print('ok')
    """)


def test_names_imported_before_patch_keep_the_standard_class():
    # Documented: `from threading import Lock` before the switch keeps the
    # standard library's; python -m plait run avoids it by switching first.
    run("""
        import _thread
        from threading import Lock as early_lock, Event as EarlyEvent
        from queue import Queue as EarlyQueue
        import plait, queue, threading
        plait.patch()
        from threading import Lock as late_lock
        assert type(early_lock()) is _thread.LockType
        assert EarlyEvent.__module__ == 'threading' and EarlyEvent is not threading.Event
        assert EarlyQueue is not queue.Queue
        assert type(late_lock()) is not _thread.LockType and late_lock is threading.Lock
        print('ok')
    """)
    from plait import _switch

    assert "``from threading import Lock``" in _switch.__doc__


def test_unpatch_before_anything_and_patched_is_a_tuple():
    run("""
        import plait
        plait.unpatch()
        assert plait.patched() == ()
        plait.patch(queue=True, threading=False, futures=False, asyncio=False,
                    multiprocessing=False)
        assert type(plait.patched()) is tuple and plait.patched() == ('queue',)
        plait.unpatch()
        print('ok')
    """)
