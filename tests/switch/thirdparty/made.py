"""One of each switched primitive, each made on its own line (the tests read
the lines by their ``# site:`` comments)."""

import queue
import threading


def make_all():
    return {
        "lock": threading.Lock(),  # site: lock
        "rlock": threading.RLock(),  # site: rlock
        "condition": threading.Condition(),  # site: condition
        "semaphore": threading.Semaphore(2),  # site: semaphore
        "bounded": threading.BoundedSemaphore(2),  # site: bounded
        "event": threading.Event(),  # site: event
        "barrier": threading.Barrier(2),  # site: barrier
        "queue": queue.Queue(),  # site: queue
        "lifo": queue.LifoQueue(),  # site: lifo
        "priority": queue.PriorityQueue(),  # site: priority
        "simple": queue.SimpleQueue(),  # site: simple
    }
