"""``Future``: the Rust ``_FutureCore`` as a ``concurrent.futures.Future``."""

from concurrent import futures as _cf

from plait._plait import _FutureCore


class Future(_FutureCore, _cf.Future):
    """The result of an asynchronous call, like ``concurrent.futures.Future``
    (and an instance of it).

    ``cancel(*, kill=False)``: as CPython's, ``cancel()`` succeeds only for
    a call that has not started, and a running one runs on. ``kill=True``
    (plait's addition) also stops a running task of a
    ``ProcessPoolExecutor`` by killing (and replacing) its worker; the
    future then ends cancelled. For any other future ``kill=True`` is a
    plain ``cancel()``."""

    __module__ = "plait.futures"

    # The standard library's __init__ builds a Condition per future; the
    # Rust state is made in __new__, so no per-future Python work remains.
    __init__ = object.__init__
