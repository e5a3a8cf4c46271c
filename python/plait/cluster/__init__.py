"""plait's executor on a dask.distributed cluster (``pip install plait[cluster]``).

``ClusterExecutor`` keeps the contract of plait's ``ProcessPoolExecutor`` —
the same methods, plait futures, every call run exactly once, a crashed call
failing alone with ``WorkerDied``, per-call time limits, ``cancel`` — on
dask.distributed: a private ``LocalCluster`` on 127.0.0.1 by default, or an
existing cluster. ``make_executor`` picks the local pool or the cluster, so
one program runs on both::

    from plait.cluster import make_executor

    with make_executor() as ex:          # PLAIT_EXECUTOR=cluster to go wide
        print(list(ex.map(work, range(1000))))

The package, one module per idea: ``_executor`` (the client side: submit,
map, exactly once, shutdown), ``_future`` (``ClusterFuture`` and its
cancel), ``_dask_worker`` (what runs in each dask worker: the plait pool
plugin and the dask tasks), ``_outcome`` (how a result or an exception comes
back).
"""

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded on first use (see __getattr__); named here for type checkers
    from ._executor import ClusterExecutor
    from ._future import ClusterFuture

__all__ = ["ClusterExecutor", "ClusterFuture", "make_executor"]

KINDS = ("local", "cluster")


def __getattr__(name):
    # Lazily: make_executor("local") works without dask installed.
    if name in ("ClusterExecutor", "ClusterFuture"):
        try:
            from . import _executor, _future
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in ("distributed", "dask", "cloudpickle"):
                raise
            raise ImportError(
                "plait.cluster needs dask.distributed: pip install 'plait[cluster]'") from exc
        return getattr(_executor if name == "ClusterExecutor" else _future, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def make_executor(kind=None, **kwargs):
    """A ``ProcessPoolExecutor`` (``"local"``) or a ``ClusterExecutor``
    (``"cluster"``; ``kwargs`` go to the chosen class). Without ``kind``
    the environment decides: ``PLAIT_EXECUTOR`` (default ``local``), and
    for the cluster ``PLAIT_CLUSTER_ADDRESS`` (default: a private
    ``LocalCluster``)."""
    if kind is None:
        kind = os.environ.get("PLAIT_EXECUTOR", "local") or "local"
    kind = kind.strip().lower()
    if kind == "local":
        from plait.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(**kwargs)
    if kind == "cluster":
        if "address" not in kwargs and "client" not in kwargs:
            address = os.environ.get("PLAIT_CLUSTER_ADDRESS")
            if address:
                kwargs["address"] = address
        return __getattr__("ClusterExecutor")(**kwargs)
    raise ValueError("executor kind must be one of %s, not %r" % (", ".join(KINDS), kind))
