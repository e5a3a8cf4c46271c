"""concurrent.futures with threads: submit + as_completed, map, wait with
FIRST_EXCEPTION, a cancelled future, callbacks. Prints results in a fixed
order."""

import json
import threading
from concurrent.futures import (FIRST_EXCEPTION, ThreadPoolExecutor, as_completed,
                                wait)

import _facts

print("switch:", json.dumps(_facts.switched()), flush=True)


def square(n):
    return n * n


def fail(n):
    raise ValueError(f"task {n} failed")


done_callbacks = []
callback_lock = threading.Lock()


def on_done(future):
    with callback_lock:
        done_callbacks.append(future.result())


with ThreadPoolExecutor(max_workers=4, thread_name_prefix="worker") as executor:
    futures = {executor.submit(square, n): n for n in range(200)}
    for future in futures:
        future.add_done_callback(on_done)
    results = sorted((futures[f], f.result()) for f in as_completed(futures, timeout=300))
    print("as_completed", len(results), sum(r for _, r in results))
    print("map", list(executor.map(square, range(10))))
    gate = threading.Event()
    blockers = [executor.submit(gate.wait, 300) for _ in range(4)]
    queued = executor.submit(square, 3)
    print("cancel queued", queued.cancel(), queued.cancelled())
    gate.set()
    print("blockers", [b.result() for b in blockers])
    mixed = [executor.submit(square, 2), executor.submit(fail, 7)]
    done, not_done = wait(mixed, timeout=300, return_when=FIRST_EXCEPTION)
    print("wait", any(f.exception() is not None for f in done))
    try:
        mixed[1].result()
    except ValueError as exc:
        print("raised", exc)
with callback_lock:
    print("callbacks", len(done_callbacks), sum(done_callbacks))
