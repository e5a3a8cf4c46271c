"""A threaded program that logs heavily: many threads, several loggers and
handlers — a QueueHandler feeding a QueueListener (which writes a
RotatingFileHandler and a FileHandler), a FileHandler of its own on one
logger, warnings to stderr — into the directory ``sys.argv[1]``. Prints
what it logged per level."""

import collections
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading

import _facts

THREADS, MESSAGES = 8, 250
out = sys.argv[1]
print("switch:", json.dumps(_facts.switched()), flush=True)

plain = logging.Formatter("%(name)s %(levelname)s %(threadName)s %(message)s")
rotating = logging.handlers.RotatingFileHandler(os.path.join(out, "rotating.log"),
                                                maxBytes=20_000, backupCount=1000)
everything = logging.FileHandler(os.path.join(out, "all.log"))
for handler in (rotating, everything):
    handler.setFormatter(plain)
records = queue.Queue()
listener = logging.handlers.QueueListener(records, rotating, everything,
                                          respect_handler_level=True)
root = logging.getLogger()
root.setLevel(logging.DEBUG)
root.addHandler(logging.handlers.QueueHandler(records))
errors = logging.StreamHandler(sys.stderr)
errors.setLevel(logging.ERROR)
errors.setFormatter(plain)
root.addHandler(errors)
odd = logging.FileHandler(os.path.join(out, "odd.log"))
odd.setFormatter(plain)
logging.getLogger("app.odd").addHandler(odd)

counts = collections.Counter()
counts_lock = threading.Lock()
LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)


def work(n):
    log = logging.getLogger("app.odd" if n % 2 else "app.even").getChild(str(n))
    for i in range(MESSAGES):
        level = LEVELS[(n + i) % len(LEVELS)] if i % 50 else logging.ERROR
        log.log(level, "message %d of %d", i, n)
        with counts_lock:
            counts[logging.getLevelName(level)] += 1


listener.start()
threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
listener.stop()
logging.shutdown()
print("logged", sorted(counts.items()))
