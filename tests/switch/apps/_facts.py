"""What a program can see of how it was started, as one JSON line, and
whether the switch was on as a second line: the runner's tests print these
under plain ``python`` and under ``python -m plait run`` and compare the
first lines (the second says which is which)."""

import json
import pickle
import sys
import threading
import warnings


def _outcome(call):
    try:
        return repr(call())
    except Exception as exc:  # the same failure is expected of both
        return f"error: {type(exc).__name__}"


def _call(function, arg, results):
    results.put(function(arg))


def report(g, pool=False):
    """``g``: the program's globals (``work`` a function defined there)."""
    main = sys.modules["__main__"]
    loader = g.get("__loader__")
    spec = g.get("__spec__")
    facts = {
        "argv": sys.argv,
        "path0": sys.path[0],
        "name": g["__name__"],
        "file": g.get("__file__"),
        "cached": g.get("__cached__"),
        "package": g.get("__package__"),
        "doc": g.get("__doc__"),
        "globals": sorted(g),
        "main_is_this_module": vars(main) is g,
        "spec": None if spec is None else [spec.name, spec.origin, spec.parent],
        "loader": loader.__name__ if isinstance(loader, type) else type(loader).__name__,
        "loader_name": getattr(loader, "name", None),
        "builtins": type(g["__builtins__"]).__name__,
        "pickle_work": _outcome(lambda: pickle.loads(pickle.dumps(g["work"])) is g["work"]),
        "flags": [sys.flags.isolated, getattr(sys.flags, "safe_path", None),
                  sys.flags.dev_mode, sys.flags.optimize, sys.flags.ignore_environment],
        "warnoptions": sys.warnoptions,
        "hooks_are_python's": [sys.displayhook is sys.__displayhook__,
                               threading.excepthook is threading.__excepthook__,
                               sys.gettrace() is None, sys.getprofile() is None],
        "python_threads": [threading.active_count(),
                           threading.current_thread() is threading.main_thread()],
        "warning_filters": [repr(f) for f in warnings.filters[:4]],
    }
    if pool:
        # The worker unpickles `work` by reference to __main__, which it
        # imports as python's own process pool does.
        import concurrent.futures

        with concurrent.futures.ProcessPoolExecutor(1) as executor:
            facts["pool_work"] = _outcome(lambda: executor.submit(g["work"], 21).result())
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(1) as pool:
            facts["spawn_pool_work"] = _outcome(lambda: pool.apply(g["work"], (21,)))
        results = spawn.SimpleQueue()
        child = spawn.Process(target=_call, args=(g["work"], 21, results))
        child.start()
        facts["spawn_process_work"] = results.get()
        child.join()
        facts["spawn_process_exitcode"] = child.exitcode
    print(json.dumps(facts, sort_keys=True))
    print(json.dumps(switched()))


def switched():
    """Whether the switch is on here, seen from outside plait (the type of a
    new lock) and from plait (``plait.patched()``, if plait is loaded)."""
    import _thread
    import threading

    patched = getattr(sys.modules.get("plait._switch"), "patched", tuple)()
    return {"lock_switched": type(threading.Lock()) is not _thread.LockType,
            "patched": list(patched)}
