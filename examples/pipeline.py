"""A log-crunching pipeline written against plait exactly as against queue/threading.

    reader ──▶ Queue(maxsize=256) ──▶ parser × 4 ──▶ aggregate under a Lock
                                                 └──▶ Event when the last line is counted

Only the imports differ from a standard-library program: ``plait.queue``
replaces ``queue``, ``plait.sync`` provides ``Lock`` and ``Event``; threads
are still ``threading.Thread``, and ``queue.Empty`` is the standard library's
own class, so existing ``except`` clauses keep working.

    python examples/pipeline.py            # on plait
    python examples/pipeline.py --stdlib   # the same program on the standard library
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--stdlib", action="store_true", help="use queue/threading instead of plait")
parser.add_argument("--lines", type=int, default=200_000, help="log lines to generate")
parser.add_argument("--workers", type=int, default=4, help="parser threads")
args = parser.parse_args()

if args.stdlib:
    import queue
    from threading import Event, Lock
else:
    try:
        from plait import queue  # was: import queue
        from plait.sync import Event, Lock  # was: from threading import Event, Lock
    except ImportError as exc:
        sys.exit(f"plait is not built ({exc}); run `make build`, or pass --stdlib")

STATUSES = (200, 200, 200, 200, 201, 204, 301, 304, 400, 404, 404, 500, 503)
PATHS = ("/", "/login", "/api/items", "/api/items/42", "/static/app.js", "/health")


def make_log(n: int, seed: int = 7) -> list[str]:
    """Synthetic access-log lines: ``<ip> <method> <path> <status> <bytes>``."""
    rng = random.Random(seed)
    return [f"10.0.{rng.randrange(256)}.{rng.randrange(256)} GET {rng.choice(PATHS)} "
            f"{rng.choice(STATUSES)} {rng.randrange(100, 50_000)}" for _ in range(n)]


lines = make_log(args.lines)
work = queue.Queue(maxsize=256)  # bounded: the reader waits when parsers fall behind
totals_lock = Lock()
by_status: Counter[int] = Counter()
bytes_by_path: Counter[str] = Counter()
counted = 0
all_counted = Event()


def reader() -> None:
    """Feed the lines, then one ``None`` per parser to say 'no more'."""
    for line in lines:
        work.put(line)
    for _ in range(args.workers):
        work.put(None)


def parser_worker() -> None:
    """Parse lines in small local batches, merge into the shared totals under the lock."""
    global counted
    local_status: Counter[int] = Counter()
    local_bytes: Counter[str] = Counter()
    pending = 0
    while True:
        line = work.get()
        if line is not None:
            _ip, _method, path, status, size = line.split()
            local_status[int(status)] += 1
            local_bytes[path] += int(size)
            pending += 1
        if pending == 64 or (line is None and pending):
            with totals_lock:
                by_status.update(local_status)
                bytes_by_path.update(local_bytes)
                counted += pending
                if counted == len(lines):
                    all_counted.set()
            local_status.clear()
            local_bytes.clear()
            pending = 0
        work.task_done()
        if line is None:
            return


start = time.perf_counter()
threads = [threading.Thread(target=reader, name="reader")]
threads += [threading.Thread(target=parser_worker, name=f"parser-{i}") for i in range(args.workers)]
for t in threads:
    t.start()
if not all_counted.wait(timeout=120):  # Event.wait returns the flag, as in threading
    sys.exit("timed out waiting for the parsers")
work.join()  # every put has been matched by a task_done
for t in threads:
    t.join()
elapsed = time.perf_counter() - start

try:
    work.get_nowait()
except queue.Empty:  # the standard library's own exception class
    pass

impl = "standard library" if args.stdlib else "plait"
print(f"{impl}: {len(lines):,} lines in {elapsed:.2f} s ({len(lines) / elapsed:,.0f} lines/s) "
      f"with {args.workers} parser threads")
for status, n in sorted(by_status.items()):
    print(f"  {status}: {n:>8,}")
top = bytes_by_path.most_common(3)
print("  most bytes: " + ", ".join(f"{path} {size / 1e6:.1f} MB" for path, size in top))
expected = Counter(int(line.split()[3]) for line in lines)
assert by_status == expected and counted == len(lines), "lost or duplicated lines"
print("  totals check: OK")
