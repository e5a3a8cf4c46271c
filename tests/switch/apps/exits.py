"""Ends the way ``sys.argv[1]`` says; the runner's tests compare exit code,
stdout and stderr (tracebacks included) with plain python's."""

import atexit
import os
import sys
import threading
import traceback


def inner():
    raise ValueError("boom")


def outer():
    try:
        inner()
    except ValueError as exc:
        raise RuntimeError("wrapped") from exc


def program_hook(exc_type, exc, tb):
    sys.stderr.write("program's hook:\n" + "".join(traceback.format_exception(exc_type, exc, tb)))


def failing_hook(exc_type, exc, tb):
    raise OSError("the hook failed")


def failing_thread_hook(args):
    raise OSError("the thread hook failed")


def last_traceback():
    # What a post-mortem tool would read: the frames python keeps there.
    tb = getattr(sys, "last_traceback", None)
    print("last_traceback:", [f.name for f in traceback.extract_tb(tb)] if tb else None)


mode = sys.argv[1]
atexit.register(last_traceback)
if mode == "return":
    print("done")
elif mode == "exception":
    outer()
elif mode == "keyboard-interrupt":
    raise KeyboardInterrupt
elif mode == "exit-3":
    sys.exit(3)
elif mode == "exit-message":
    sys.exit("bye")
elif mode == "exit-none":
    sys.exit(None)
elif mode == "exit-list":
    sys.exit([1, 2])
elif mode == "os-exit":
    print("before os._exit", flush=True)
    os._exit(7)
elif mode == "program-hook":
    sys.excepthook = program_hook
    outer()
elif mode == "failing-hook":
    sys.excepthook = failing_hook
    outer()
elif mode == "exit-in-hook":
    sys.excepthook = lambda *args: sys.exit(5)
    outer()
elif mode == "syntax-error-in-exec":
    exec("1 +")
elif mode == "thread-exception":
    thread = threading.Thread(target=inner, name="worker")
    thread.start()
    thread.join()
    print("main goes on")
elif mode == "thread-hook-fails":
    threading.excepthook = failing_thread_hook
    thread = threading.Thread(target=inner, name="worker")
    thread.start()
    thread.join()
    print("main goes on")
elif mode == "exit-in-thread":
    thread = threading.Thread(target=sys.exit, args=(4,))
    thread.start()
    thread.join()
    print("main goes on")
else:
    raise SystemExit(f"unknown mode {mode!r}")
