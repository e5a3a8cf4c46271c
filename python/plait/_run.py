"""``python -m plait run``: run a program with the standard library switched
to plait before its first line.

    python -m plait run [options] script.py [args...]
    python -m plait run [options] -m module [args...]
    python -m plait run [options] -c command [args...]

The program runs as ``python script.py`` / ``python -m module`` /
``python -c command`` would run it: the same ``sys.argv``, ``sys.path[0]``,
a fresh ``__main__`` module (so ``if __name__ == "__main__"`` and pickling
of its functions work), the same exit code (``sys.exit(n)``, 1 after an
uncaught exception, death by SIGINT after an uncaught ``KeyboardInterrupt``)
and the same traceback (plait's frames are left out of it), with the
interpreter's own signal handling.

This module imports only what the switch needs before the program starts:
every module imported before the switch that takes a class by name (``from
threading import Lock``) would keep the standard one.
"""

import os
import sys

USAGE = """\
usage: python -m plait run [options] script.py [args...]
       python -m plait run [options] -m module [args...]
       python -m plait run [options] -c command [args...]

Run a Python program with the standard library's threading primitives,
queues, concurrent.futures executors, asyncio event loops and
multiprocessing pools switched to plait's before its first line
(plait.patch()). The program runs as `python script.py` would: the same
sys.argv, __main__, exit code and signals. Worker processes it starts are
switched too.

options:
  -h, --help             show this message and exit
  --debug MODE           plait.debug settings, as the PLAIT_DEBUG environment
                         variable takes them (e.g. deadlock, deadlock=raise,
                         lock-order, stall=5, inspect=off; comma-separated)
  --no-threading         leave threading's Lock, RLock, Condition, Semaphore,
                         BoundedSemaphore, Event, Barrier and Timer alone
  --no-queue             leave queue's Queue, LifoQueue, PriorityQueue and
                         SimpleQueue alone
  --no-futures           leave concurrent.futures' executors, wait and
                         as_completed alone
  --no-asyncio, --no-loop
                         leave asyncio's event loop alone
  --no-multiprocessing, --no-pool
                         leave multiprocessing.Pool and ThreadPool alone
"""

#: option -> patch() keyword it turns off
_OFF = {
    "--no-threading": "threading",
    "--no-queue": "queue",
    "--no-futures": "futures",
    "--no-asyncio": "asyncio",
    "--no-loop": "asyncio",
    "--no-multiprocessing": "multiprocessing",
    "--no-pool": "multiprocessing",
}


class UsageError(Exception):
    pass


def parse(argv):
    """``(parts, debug, kind, target, args)`` from the arguments after
    ``run``: ``kind`` is "script", "module" or "command"; ``parts`` the
    ``patch()`` keywords. UsageError on a mistake; None for --help."""
    parts = {part: True for part in ("threading", "queue", "futures", "asyncio",
                                     "multiprocessing")}
    debug = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            return None
        if arg in _OFF:
            parts[_OFF[arg]] = False
        elif arg == "--debug" or arg.startswith("--debug="):
            if arg == "--debug":
                i += 1
                if i == len(argv):
                    raise UsageError("--debug needs a MODE (e.g. --debug deadlock)")
                debug = argv[i]
            else:
                debug = arg.partition("=")[2]
        elif arg in ("-m", "-c"):
            i += 1
            if i == len(argv):
                raise UsageError(f"argument expected for the {arg} option")
            kind = "module" if arg == "-m" else "command"
            return parts, debug, kind, argv[i], argv[i + 1:]
        elif arg.startswith("-m") and len(arg) > 2:  # -mmodule, as python takes it
            return parts, debug, "module", arg[2:], argv[i + 1:]
        elif arg.startswith("-c") and len(arg) > 2:
            return parts, debug, "command", arg[2:], argv[i + 1:]
        elif arg == "--":
            if i + 1 == len(argv):
                raise UsageError("no program to run after --")
            return parts, debug, "script", argv[i + 1], argv[i + 2:]
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r} (options come before the program; "
                             "see python -m plait run --help)")
        else:
            return parts, debug, "script", arg, argv[i + 1:]
        i += 1
    raise UsageError("no program to run: give a script, -m module or -c command")


def _configure_debug(mode):
    """``--debug MODE``: applied here, and put in ``PLAIT_DEBUG`` for the
    processes the program starts. A MODE plait does not know is a usage
    error (the environment variable only warns)."""
    from plait import debug

    kwargs = {}
    for item in mode.split(","):
        if item.strip():
            key, sep, value = item.partition("=")
            try:
                kwargs.update(debug._parse_token(key, value if sep else None))
            except ValueError:
                raise UsageError(f"--debug: unknown setting {item.strip()!r} (expected "
                                 "deadlock, deadlock=raise, deadlock=off, lock-order, "
                                 "stall=SECONDS, inspect=off, tracking=off)") from None
    if kwargs:
        debug.enable(**kwargs)
    os.environ["PLAIT_DEBUG"] = mode


def main(argv):
    try:
        parsed = parse(argv)
    except UsageError as exc:
        sys.stderr.write(f"{USAGE.splitlines()[0]}\npython -m plait run: error: {exc}\n")
        sys.exit(2)
    if parsed is None:
        sys.stdout.write(USAGE)
        sys.exit(0)
    parts, debug, kind, target, args = parsed
    if debug is not None:
        try:
            _configure_debug(debug)
        except UsageError as exc:
            sys.stderr.write(f"python -m plait run: error: {exc}\n")
            sys.exit(2)
    import plait

    plait.patch(**parts)
    _trim_tracebacks()
    if kind == "module":
        _run_module(target, args)
    elif kind == "command":
        _run_command(target, args)
    else:
        _run_script(target, args)


# --- running the program ----------------------------------------------------------
#
# Each runner ends in a call to _run_code (or runpy's own, for -m), so the
# traceback of an uncaught exception starts with plait's frames up to that
# one: _trim_tracebacks leaves them out, as if python had run the program.


def _fresh_main(file=None, loader=None):
    import builtins
    import types

    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    main.__spec__ = None
    main.__loader__ = loader
    if file is not None:
        main.__file__ = file
        main.__cached__ = None
    sys.modules["__main__"] = main
    return main


def _run_code(code, namespace):
    exec(code, namespace)


def _run_script(path, args):
    import io

    sys.argv[:] = [path, *args]
    if os.path.isdir(path) or not os.path.isfile(path):
        if os.path.exists(path):
            # A directory or zip file with a __main__.py, as python runs it.
            import runpy

            if not sys.flags.safe_path:
                sys.path[0] = path
            _run_runpy(lambda: runpy._run_module_as_main("__main__", alter_argv=False))
            return
        sys.stderr.write(f"{sys.executable}: can't open file {os.path.abspath(path)!r}: "
                         f"[Errno 2] No such file or directory\n")
        sys.exit(2)
    path = os.path.abspath(path)  # __file__ and tracebacks, as python gives them
    if not sys.flags.safe_path:
        sys.path[0] = os.path.dirname(path)
    with io.open_code(path) as f:
        source = f.read()
    from importlib.machinery import SourceFileLoader

    main = _fresh_main(path, SourceFileLoader("__main__", path))
    code = compile(source, path, "exec", dont_inherit=True)
    _run_code(code, main.__dict__)


def _run_command(command, args):
    sys.argv[:] = ["-c", *args]
    if not sys.flags.safe_path:
        sys.path[0] = ""
    import importlib.machinery

    main = _fresh_main(loader=importlib.machinery.BuiltinImporter)
    code = compile(command, "<string>", "exec", dont_inherit=True)
    _run_code(code, main.__dict__)


def _run_module(name, args):
    import runpy

    sys.argv[:] = [name, *args]
    # As `python -m`: sys.path[0] is the working directory (it already is,
    # since `python -m plait` put it there), argv[0] the module's file.
    _run_runpy(lambda: runpy._run_module_as_main(name, alter_argv=True))


def _run_runpy(call):
    call()


_RUNNERS = {_run_code.__code__, _run_runpy.__code__}


def _trim_tracebacks():
    """Leave plait's frames (and ``python -m plait``'s own runpy frames) out
    of the traceback of an uncaught exception, by trimming what reaches
    ``sys.excepthook``. A hook the program installs replaces this one."""
    original = sys.excepthook

    def excepthook(exc_type, exc, tb):
        first = tb
        while first is not None:
            if first.tb_frame.f_code in _RUNNERS:
                tb = first.tb_next
                break
            first = first.tb_next
        if exc is not None and tb is not None:
            exc.__traceback__ = tb
        original(exc_type, exc, tb)

    sys.excepthook = excepthook
