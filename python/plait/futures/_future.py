"""``Future``: the Rust ``_FutureCore`` as a ``concurrent.futures.Future``."""

from concurrent import futures as _cf

from plait._plait import _FutureCore


class Future(_FutureCore, _cf.Future):
    """The result of an asynchronous call, like ``concurrent.futures.Future``
    (and an instance of it)."""

    __module__ = "plait.futures"

    # The standard library's __init__ builds a Condition per future; the
    # Rust state is made in __new__, so no per-future Python work remains.
    __init__ = object.__init__
