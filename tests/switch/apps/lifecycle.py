"""What happens after the program's last line: python joins non-daemon
threads, then runs atexit handlers; a script's ``__main__`` has lost its
``__file__`` by then (unless it ended with sys.exit)."""

import atexit
import sys
import threading

main = sys.modules["__main__"]


def late_worker():
    # Returns once the main thread has ended (python's shutdown marks it so
    # before it joins the other threads).
    threading.main_thread().join()
    print("worker: __file__ still set:", hasattr(main, "__file__"))
    print("worker: done")


def at_exit():
    print("atexit: __main__ is this module:", sys.modules["__main__"] is main)
    print("atexit: __file__ still set:", hasattr(main, "__file__"), hasattr(main, "__cached__"))


atexit.register(at_exit)
worker = threading.Thread(target=late_worker)  # not daemon: joined at exit
worker.start()
print("main: done")
if sys.argv[1:] == ["exception"]:
    raise ValueError("the last line")
if sys.argv[1:] == ["exit"]:
    sys.exit(0)
