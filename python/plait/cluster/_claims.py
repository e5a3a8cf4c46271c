"""Who may start a call: a claim kept by the dask scheduler.

Why: "exactly once" and "cancel() returned True, so it never runs" need one
authority that decides, atomically, between a task starting and the client
cancelling it or declaring it lost. dask has none: its ``Future.cancel()``
only sends a message (a queued task starts anyway, often: measured in part
A, 64–72 % of cancelled submits ran), and a fire-and-forget start event
(``log_event``) can die with its worker (0 of 10 arrived before a SIGKILL).
The scheduler is the one process every worker and the client already talk
to, and its handlers run one at a time on its event loop: each decision
below is atomic.

* A task's wrapper, before it hands the call to plait's pool, claims
  ``(tid, attempt)`` with a synchronous RPC (≈0.4 ms; one per ``map``
  chunk). Refused (cancelled, already claimed by another attempt, or this
  attempt declared lost) → it returns ``NOT_RUN`` and calls nothing.
* ``cancel(tids)``: True for each tid not claimed (it can never be claimed
  any more), False for one that started.
* ``retire(tid, attempt, rerun)`` after ``KilledWorker``: "started" (→
  ``WorkerDied``; with ``rerun``, the user's retries, the claim is freed
  for the next attempt only), "cancelled",
  or "not-started" (that attempt can no longer claim, even from a node that
  was only cut off: resubmit as ``attempt + 1``).
* ``forget(tids)`` in batches once futures ended, to keep the state bounded.

The plugin is pickled by reference: the scheduler must be able to import
plait (true for a LocalCluster; a remote scheduler needs plait installed).
"""

from distributed.diagnostics.plugin import SchedulerPlugin

NAME = "plait-claims"


class ClaimPlugin(SchedulerPlugin):
    """The claims, on the scheduler. One per scheduler, shared by every
    ``ClusterExecutor`` (task ids carry the executor's unique name)."""

    name = NAME
    idempotent = True

    def __init__(self):
        self.claimed = {}  # tid -> the attempt that started it
        self.cancelled = set()  # tids cancelled before any claim
        self.dead = set()  # (tid, attempt) declared lost by the client

    async def start(self, scheduler):
        scheduler.handlers.update({
            "plait_claim": self.claim,
            "plait_cancel": self.cancel,
            "plait_retire": self.retire,
            "plait_forget": self.forget,
        })

    def claim(self, tid=None, attempt=None):
        if tid in self.cancelled or tid in self.claimed or (tid, attempt) in self.dead:
            return False
        self.claimed[tid] = attempt
        return True

    def cancel(self, tids=()):
        out = []
        for tid in tids:
            if tid in self.claimed:
                out.append(False)
            else:
                self.cancelled.add(tid)
                out.append(True)
        return out

    def retire(self, tid=None, attempt=None, rerun=False):
        if self.claimed.get(tid) == attempt:
            if rerun:
                # The user's retries: the next attempt may claim, this one
                # (a re-run dask might still make of it) never again.
                del self.claimed[tid]
                self.dead.add((tid, attempt))
            return "started"
        if tid in self.cancelled:
            return "cancelled"
        self.dead.add((tid, attempt))
        return "not-started"

    def forget(self, tids=()):
        tids = set(tids)
        for tid in tids:
            self.claimed.pop(tid, None)
            self.cancelled.discard(tid)
        if self.dead:
            self.dead = {d for d in self.dead if d[0] not in tids}


def claim(worker, tid, attempt):
    """In a dask task: whether this attempt may run (blocks on one RPC)."""
    from distributed.utils import sync

    return sync(worker.loop, worker.scheduler.plait_claim, tid=tid, attempt=attempt)
