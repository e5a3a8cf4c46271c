"""Blocks its main thread in the wait ``sys.argv[1]`` names until Ctrl-C,
then reports the KeyboardInterrupt and exits 0."""

import queue
import sys
import threading

import _facts

kind = sys.argv[1]
print(_facts.switched(), flush=True)
try:
    print("waiting", flush=True)
    if kind == "event":
        threading.Event().wait()
    elif kind == "queue":
        queue.Queue().get()
    elif kind == "lock":
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()
    elif kind == "condition":
        condition = threading.Condition()
        with condition:
            condition.wait()
    elif kind == "uncaught":
        threading.Event().wait()
except KeyboardInterrupt:
    if kind == "uncaught":
        raise
    print("KeyboardInterrupt", flush=True)
    sys.exit(0)
