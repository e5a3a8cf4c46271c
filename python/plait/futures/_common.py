"""What the executors share: the default worker count and the checks on
their arguments."""

import functools
import math
import os
import sys


def cpu_count():
    """The CPUs this process may use (``os.process_cpu_count`` on 3.13+)."""
    count = getattr(os, "process_cpu_count", None)
    return (count() if count else os.cpu_count()) or 1


def check_buffersize(buffersize):
    """``map``'s ``buffersize``: None or a positive int, as Python 3.14."""
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


def map_timeout(timeout):
    """``map``'s ``timeout`` as seconds: CPython computes
    ``timeout + time.monotonic()`` when ``map`` is called (TypeError for what
    does not add to a float); an infinite or too large one raises
    OverflowError only when a result must be waited for, as ``result()``."""
    return None if timeout is None else float(timeout + 0.0)


def worker_limit(max_workers):
    """The number of threads ``max_workers`` allows: CPython starts one while
    ``threads < max_workers``, so 1.5 allows 2 and infinity no limit. NaN
    (CPython would never start one) raises ValueError."""
    if isinstance(max_workers, float):
        if math.isnan(max_workers):
            raise ValueError("max_workers must be a number greater than 0, not NaN")
        if math.isinf(max_workers):
            return sys.maxsize
        return min(math.ceil(max_workers), sys.maxsize)
    try:
        return min(max_workers.__index__(), sys.maxsize)
    except (AttributeError, TypeError):
        return min(math.ceil(max_workers), sys.maxsize)


def process_queue_size(max_workers):
    """Check ``max_workers`` as CPython's process pool does when it makes its
    call queue (``max_workers + 1`` slots, a C int semaphore): an integer
    (TypeError), small enough (OverflowError)."""
    size = max_workers + 1
    try:
        size = size.__index__()
    except AttributeError:
        name = type(size).__name__
        raise TypeError(f"'{name}' object cannot be interpreted as an integer") from None
    if size > 2**31 - 1:
        raise OverflowError("Python int too large to convert to C int")


def star_call(fn, args):
    return fn(*args)


def initializer_call(initializer, initargs):
    """``(initializer, initargs)`` as a worker runs ``initializer(*initargs)``:
    ``initargs`` that cannot be a tuple fail in the worker (breaking the
    pool), as in CPython, not in the constructor."""
    if initializer is None:
        return None, ()
    try:
        return initializer, tuple(initargs)
    except TypeError:
        return functools.partial(star_call, initializer, initargs), ()


def exit_executor(executor, exc_type, kill):
    """``__exit__`` of plait's process executors. A block that ends or raises
    an ``Exception``: ``shutdown(wait=True)``. One left on Ctrl-C (or
    another exception that is not an ``Exception``): what has not started is
    cancelled and the running calls are waited for; a second Ctrl-C while
    waiting calls ``kill()`` (the running calls are killed) and propagates."""
    if exc_type is None or issubclass(exc_type, Exception):
        executor.shutdown(wait=True)
        return False
    try:
        executor.shutdown(wait=True, cancel_futures=True)
    except BaseException:
        kill()
        raise
    return False
