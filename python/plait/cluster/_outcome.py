"""What a task's outcome is on its way back: a value, not a raised exception.

A call's outcome travels as ``(status, payload, traceback_text)``:

* ``("ok", bytes, None)``: the result, cloudpickled;
* ``("error", bytes, text)``: the exception, cloudpickled, and the remote
  traceback as text (None when the exception did not come from the call
  itself: ``WorkerDied``, a time limit);
* ``("cancelled", None, None)``: ``cancel(kill=True)`` stopped it;
* ``("not-run", None, None)``: its claim was refused (see ``_claims``).

Why a value: dask's own error path logs "Compute Failed" at ERROR for every
exception and applies its retries to them; and plait's worker pickles with
stdlib pickle, which cannot send back a class the client defined in its
``__main__`` (it reaches the worker by value). cloudpickle sends such a class
by value both ways, and the client rebuilds the exception itself, with the
remote traceback as its ``__cause__``, exactly as the local pool does.
"""

import traceback
from concurrent.futures import CancelledError
from concurrent.futures.process import _RemoteTraceback

import cloudpickle

OK = "ok"
ERROR = "error"
CANCELLED = "cancelled"
NOT_RUN = "not-run"
NOT_RUN_OUTCOME = (NOT_RUN, None, None)


def _error(exc, tb_text):
    exc.__traceback__ = None
    try:
        return (ERROR, cloudpickle.dumps(exc), tb_text)
    except Exception as failure:  # noqa: BLE001 - the exception cannot be pickled
        text = "".join(traceback.format_exception(failure))
        err = type(failure)(f"{failure} (the exception {exc!r} could not be sent back)")
        try:
            return (ERROR, cloudpickle.dumps(err), (tb_text or "") + text)
        except Exception:  # noqa: BLE001 - not even the pickling error pickles
            import pickle

            err = pickle.PicklingError(f"{type(failure).__qualname__}: {failure}")
            return (ERROR, cloudpickle.dumps(err), (tb_text or "") + text)


def from_call(fn, args, kwargs):
    """Run ``fn(*args, **kwargs)`` and return its outcome (in plait's worker)."""
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: every exception is an outcome
        return _error(exc, "".join(traceback.format_exception(exc)))
    try:
        return (OK, cloudpickle.dumps(result), None)
    except Exception as failure:  # noqa: BLE001 - the result cannot be pickled
        failure.args = (f"{failure} (the result {result!r} could not be sent back)",)
        return _error(failure, "".join(traceback.format_exception(failure)))


def call_in_pool(fn_blob, args, kwargs):
    """In plait's worker process: the outcome of the call. It lives here,
    not beside the dask tasks, so that the worker never imports
    distributed: its import installs tblib's pickling of every exception
    class, which rebuilds an exception without calling its ``__init__``
    (``SystemExit.code``, ``StopIteration.value``... come back None)."""
    try:
        fn = cloudpickle.loads(fn_blob)
    except Exception as exc:  # noqa: BLE001 - fails only this call
        return from_call(_reraise, (exc,), {})
    return from_call(fn, args, kwargs or {})


def _reraise(exc):
    raise exc


def from_pool_future(future):
    """The outcome of a plait pool future whose task returned an outcome
    (in the dask worker): the pool's own failures (``WorkerDied``, a time
    limit, arguments that cannot be pickled) become outcomes too."""
    try:
        return future.result()
    except CancelledError:
        return (CANCELLED, None, None)
    except BaseException as exc:  # noqa: BLE001 - every failure is an outcome: a
        # SystemExit the pool reports (unpickling the call's arguments ran
        # sys.exit, say) raised here would end the dask worker
        cause = exc.__cause__
        tb_text = cause.tb if isinstance(cause, _RemoteTraceback) else None
        return _error(exc, tb_text)


def decode(outcome):
    """``(True, value)`` or ``(False, exception)`` (on the client). An
    outcome that cannot be unpickled here is that unpickling error."""
    status, payload, tb_text = outcome
    if status == CANCELLED:
        return False, CancelledError()
    try:
        obj = cloudpickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - fails only this task
        return False, exc
    if status == OK:
        return True, obj
    if tb_text:
        obj.__cause__ = _RemoteTraceback('\n"""\n%s"""' % tb_text)
    return False, obj
