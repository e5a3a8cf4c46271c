"""Prints how it was started (see _facts.py); ``--pool`` also runs ``work``
in a process-pool worker."""

import os
import sys

try:
    import _facts
except ImportError:  # under python -P / -I: not on sys.path
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import _facts


def work(x):
    return x * 2


if __name__ == "__main__":
    _facts.report(globals(), pool="--pool" in sys.argv)
