"""A tiny accounts library: each account guards its balance with its own
lock, and a transfer takes the source's lock, then the destination's. Two
transfers in opposite directions at the same time deadlock: the classic
lock-order bug, inside code the program did not write."""

import threading


class Account:
    def __init__(self, name, balance):
        self.name = name
        self.balance = balance
        self._lock = threading.Lock()  # site: Account lock


class AuditedAccount(Account):
    """The same, with a reentrant lock (audit hooks may call back in)."""

    def __init__(self, name, balance):
        super().__init__(name, balance)
        self._lock = threading.RLock()  # site: AuditedAccount lock


def transfer(src, dst, amount, between=None):
    """Move ``amount`` from ``src`` to ``dst``; ``between()`` runs while only
    ``src``'s lock is held."""
    with src._lock:
        if between is not None:
            between()
        with dst._lock:  # site: the second acquire
            src.balance -= amount
            dst.balance += amount
