"""What the executors share: the default worker count and the checks on
``map``'s arguments."""

import os


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
