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

    Whether a call started is decided by the dask scheduler (see
    ``plait.cluster._claims``), so ``cancel()`` is exact: True means the
    function never runs. The RUNNING state follows a start event and may lag
    the start by a moment (``cancel()`` then answers False all the same)."""

    __module__ = "plait.cluster"

    _plait_task = None

    def cancel(self, *, kill=False):
        task = self._plait_task
        if task is None or self.done():
            return super().cancel()
        if task.executor._forked():
            # A copy in a forked child: the call is the parent's to cancel.
            return False
        if self._state == "PENDING":
            # The scheduler decides, against the task's claim to start.
            if task.executor._cancel_pending([task])[0]:
                return self.cancelled()
            if self._state == "PENDING":
                self.set_running_or_notify_cancel()
        if kill and self.running():
            if not task.executor._kill(task):
                return self.cancelled()
            return self._force_cancel()
        return self.cancelled()

    def _force_cancel(self):
        """RUNNING -> CANCELLED once its process was killed (waiters woken,
        callbacks run, as by any cancel)."""
        self._plait_force_cancel()
        return self.cancelled()


_plain_cancel = Future.cancel  # plait's own: PENDING -> CANCELLED, callbacks
