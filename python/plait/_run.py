"""``python -m plait run``: run a program with the standard library switched
to plait before its first line.

    python -m plait run [options] script.py [args...]
    python -m plait run [options] -m module [args...]
    python -m plait run [options] -c command [args...]

(``script.py`` may also be a directory or zip file with a ``__main__.py``,
or ``-`` for the program on stdin.) The program runs as ``python
script.py`` / ``python -m module`` / ``python -c command`` would run it:
the same ``sys.argv``, ``sys.path[0]`` (also under ``-P``/``-I``), a fresh
``__main__`` module with the same names, ``__loader__`` and ``__spec__`` (so
``if __name__ == "__main__"`` and pickling of its functions work), the same
exit code (``sys.exit(n)``, 1 after an uncaught exception, death by SIGINT
after an uncaught ``KeyboardInterrupt``), the same traceback (plait's frames
are left out of what ``sys.excepthook`` gets, whichever hook the program
installed), the same end (a script's ``__file__`` dropped, then threads
joined and atexit handlers run; ``python -i``'s prompt), with the
interpreter's own options, warnings and signal handling.

What cannot be the same: plait's frames are on the stack below the
program's first frame while it runs, so ``traceback.print_stack()``,
``inspect.stack()`` and a ``warnings.warn`` with a ``stacklevel`` that
reaches past the program's first frame see them; ``sys.orig_argv`` is the
interpreter's real command line; ``sys.modules`` holds plait's modules.

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

(script.py may also be a directory or zip file with a __main__.py, or -
for the program on stdin.)

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
            if not debug.strip():
                raise UsageError("--debug needs a MODE (e.g. --debug deadlock)")
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
        elif arg.startswith("-") and arg != "-":  # "-": the program from stdin
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
    if kind == "module":
        main = _run_module(target, args)
    elif kind == "command":
        main = _run_command(target, args)
    else:
        main = _run_script(target, args)
    # The program's module: python takes __file__ and __cached__ back out of
    # a script's __main__ when the script ends, before threads are joined
    # and atexit handlers run (not after sys.exit(), not for -m or -c).
    _forget_file(main)


def wants_prompt():
    """Whether python goes on to its interactive prompt once the program has
    ended: ``python -i``, or PYTHONINSPECT set (even by the program)."""
    return bool(sys.flags.inspect) or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONINSPECT")))


# --- running the program ----------------------------------------------------------
#
# Every runner ends in a call to _run_code (or, for -m and for directories
# and zip files, _run_runpy, which lets runpy run it as python does), so the
# traceback of an uncaught exception starts with plait's frames up to that
# one. They are left out of what sys.excepthook gets (_hand_over), as if
# python had run the program; runpy's own frames stay, as python shows them.

_SAFE_PATH = bool(getattr(sys.flags, "safe_path", sys.flags.isolated))  # -P, -I (3.10: -I)


def _fresh_main(**names):
    """A new ``__main__`` module in ``sys.modules``, with what the
    interpreter's own has before a program runs, plus ``names``."""
    import builtins
    import types

    from importlib.machinery import BuiltinImporter

    main = types.ModuleType("__main__")
    if sys.version_info < (3, 14):  # the interpreter's own __main__ has it until 3.14
        main.__annotations__ = {}
    main.__builtins__ = builtins
    main.__loader__ = BuiltinImporter
    vars(main).update(names)
    sys.modules["__main__"] = main
    return main


def _run_code(source, filename, main):
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
        if filename == "<string>" and sys.version_info >= (3, 13):
            # python -c keeps the command's lines for tracebacks from 3.13.
            import linecache

            if hasattr(linecache, "_register_code"):
                linecache._register_code(filename, source, filename)  # as 3.13's run_mod
        exec(code, vars(main))
    except BaseException as exc:
        if _printed(exc):
            _hand_over(exc, main if filename != "<string>" else None)
        raise


def _run_runpy(name, alter_argv):
    import runpy

    try:
        runpy._run_module_as_main(name, alter_argv=alter_argv)
    except BaseException as exc:
        if _printed(exc):
            _hand_over(exc, None)
        raise


def _run_script(path, args):
    sys.argv[:] = [path, *args]
    if path == "-":
        # The program from stdin, as `python -`: no loader, no sys.path entry.
        if not _SAFE_PATH:
            sys.path[0] = ""
        main = _fresh_main(__file__="<stdin>", __cached__=None)
        _run_code(sys.stdin.buffer.read(), "<stdin>", main)  # bytes: coding cookies
        return main
    if _importer(_abspath(path)) is not None:
        # A directory or zip file with a __main__.py: python puts it first on
        # sys.path even under -P, and runs its __main__ with runpy.
        entry = _abspath(path)
        if _SAFE_PATH:
            sys.path.insert(0, entry)
        else:
            sys.path[0] = entry
        _fresh_main()
        _run_runpy("__main__", False)
        return None
    try:
        import io

        with io.open_code(path) as f:
            source = f.read()
    except OSError as exc:
        program = (getattr(sys, "orig_argv", None) or [sys.executable])[0]
        sys.stderr.write(f"{program}: can't open file {_abspath(path)!r}: "
                         f"[Errno {exc.errno}] {exc.strerror}\n")
        sys.exit(2)
    if not _SAFE_PATH:
        # The script's directory, symbolic links resolved, as python sets it.
        sys.path[0] = os.path.dirname(os.path.realpath(path))
    path = _abspath(path)  # __file__ and tracebacks, as python gives them
    from importlib.machinery import SourceFileLoader

    main = _fresh_main(__file__=path, __cached__=None,
                       __loader__=SourceFileLoader("__main__", path))
    _run_code(source, path, main)
    return main


def _abspath(path):
    """``path`` made absolute as python's startup does it for the program's
    path: joined to the working directory, not normalised ("." alone is the
    working directory from 3.11)."""
    if os.path.isabs(path):
        return path
    cwd = os.getcwd()
    if path in ("", ".") and sys.version_info >= (3, 11):
        return cwd
    return cwd + os.sep + path


def _importer(path):
    """What python's startup asks of a script's path (PyImport_GetImporter):
    the path hook that takes it (a directory's FileFinder, a zip file's
    zipimporter), else None; cached in sys.path_importer_cache the same way."""
    cache = sys.path_importer_cache
    if path in cache:
        return cache[path]
    cache[path] = None
    for hook in sys.path_hooks:
        try:
            importer = hook(path)
        except ImportError:
            continue
        cache[path] = importer
        return importer
    return None


def _run_command(command, args):
    sys.argv[:] = ["-c", *args]
    if not _SAFE_PATH:
        sys.path[0] = ""
    main = _fresh_main()
    _run_code(command, "<string>", main)
    return None


def _run_module(name, args):
    sys.argv[:] = [name, *args]
    # As `python -m`: sys.path[0] is the working directory (it already is,
    # since `python -m plait` put it there), argv[0] the module's file; runpy
    # runs the module in the namespace of the __main__ it finds.
    _fresh_main()
    _run_runpy(name, True)
    return None


def _forget_file(main):
    if main is not None:
        vars(main).pop("__file__", None)
        vars(main).pop("__cached__", None)


_RUNNERS = {_run_code.__code__, _run_runpy.__code__}


def _printed(exc):
    """Whether python prints ``exc`` with sys.excepthook: every uncaught
    exception but SystemExit, and that too under ``python -i``."""
    return not isinstance(exc, SystemExit) or bool(sys.flags.inspect)


def _trim(tb):
    first = tb
    while first is not None:
        if first.tb_frame.f_code in _RUNNERS:
            return first.tb_next
        first = first.tb_next
    return tb


def _hand_over(exc, main):
    """The program ended with ``exc`` uncaught: let it go on to the
    interpreter, which prints it with ``sys.excepthook`` (whichever hook the
    program left there) and exits as python does (1, or death by SIGINT
    after a KeyboardInterrupt). For that one call the hook is wrapped, so it
    gets the traceback without plait's frames; then the program's hook is put
    back."""
    hook = getattr(sys, "excepthook", None)
    if hook is None:  # python's "sys.excepthook is missing" path, untrimmed
        return

    def excepthook(exc_type, value, tb):
        if sys.excepthook is excepthook:
            sys.excepthook = hook
        if value is not exc:  # pragma: no cover - not the exception handed over
            return hook(exc_type, value, tb)
        tb = _trim(tb)
        value.__traceback__ = tb
        if getattr(sys, "last_value", None) is value:
            sys.last_traceback = tb
        try:
            hook(exc_type, value, tb)
        except SystemExit:
            raise
        except BaseException as err:
            # What the interpreter prints when the hook fails, without this frame.
            err.__traceback__ = err.__traceback__.tb_next
            sys.stderr.write("Error in sys.excepthook:\n")
            sys.__excepthook__(type(err), err, err.__traceback__)
            sys.stderr.write("\nOriginal exception was:\n")
            sys.__excepthook__(exc_type, value, tb)
        finally:
            _forget_file(main)

    sys.excepthook = excepthook
