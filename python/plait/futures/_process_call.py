"""What travels to a worker process for one call: ``_dumps_call`` pickles
it in the submitting thread (the Rust process pool calls it through
``plait.futures._dumps_call``), ``_process_chunk`` runs a ``map`` chunk."""

import pickle as _pickle

from plait import _wire

def _process_chunk(fn, chunk):
    return [fn(*args) for args in chunk]


#: Argument types that can hold no buffer: a call with only these skips
#: the search for large buffers.
_SCALARS = frozenset({int, float, str, bool, type(None), complex})


def _dumps_call(fn, args, kwargs):
    """The call as the worker receives it (see ``plait._wire``: large
    buffers travel through shared memory)."""
    try:
        if not kwargs:
            for a in args:
                if type(a) not in _SCALARS:
                    break
            else:
                return _wire.encode_small((fn, args, kwargs))
        return _wire.encode(_wire.mark_call(fn, args, kwargs))
    except (_pickle.PicklingError, AttributeError, TypeError) as exc:
        try:
            import cloudpickle
        except ImportError:
            raise _with_hint(exc, fn) from None
        return _wire.encode(_wire.mark_call(fn, args, kwargs), dumps=cloudpickle.dumps)


def _with_hint(exc, fn):
    """The pickling error ``exc`` (its class, as CPython's pool reports it)
    with what to do about it in the message."""
    try:
        hinted = type(exc)(
            f"{exc} (cannot send {fn!r} and its arguments to a worker process; define "
            "the function at module level, or install cloudpickle (pip install "
            "cloudpickle), which plait uses for lambdas and closures)"
        )
    except Exception:  # an exception class that takes other arguments
        return exc
    hinted.__cause__ = exc.__cause__
    hinted.__context__ = exc.__context__
    return hinted


# Pickled by reference, as before the package split.
_process_chunk.__module__ = _dumps_call.__module__ = "plait.futures"
