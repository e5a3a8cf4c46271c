"""``ClusterFuture``: a plait ``Future`` whose ``cancel`` reaches the dask task."""

from plait.futures import Future


class ClusterFuture(Future):
    """A ``plait.futures.Future`` (so ``wait``, ``as_completed``,
    ``asyncio.wrap_future`` and ``run_in_executor`` accept it) of a call on
    a ``ClusterExecutor``.

    ``cancel()`` as on plait's local pool: a call that has not started is
    cancelled (its dask task too) and never runs; a running one runs on and
    ``cancel()`` returns False. ``cancel(kill=True)`` also stops a running
    call: the plait process running it in its dask worker is killed (and
    replaced) and the future ends cancelled.

    It is RUNNING once its dask worker reported the start (an event through
    the scheduler), so for a moment after the call started it may still be
    PENDING; a ``cancel()`` that wins that race returns True and the call is
    killed as soon as its start is reported."""

    __module__ = "plait.cluster"

    _plait_task = None

    def cancel(self, *, kill=False):
        task = self._plait_task
        if task is None:
            return super().cancel()
        if kill and self.running():
            if not task.executor._kill(task):
                return self.cancelled()
            return self._force_cancel()
        if super().cancel():
            task.executor._cancel_dask(task)
            return True
        return self.cancelled()

    def _force_cancel(self):
        """RUNNING -> CANCELLED once its process was killed: the state is
        put back to PENDING so that the plain cancel notifies waiters and
        runs the callbacks as any cancel does."""
        if self.done():
            return self.cancelled()
        self._state = "PENDING"
        return Future.cancel(self)
