"""A tiny messaging library: an inbox queue and a readiness condition."""

import queue
import threading


class Mailbox:
    def __init__(self):
        self.inbox = queue.Queue()  # site: Mailbox inbox
        self.ready_cond = threading.Condition()  # site: Mailbox condition
        self.is_ready = False

    def receive(self):
        return self.inbox.get()

    def wait_ready(self):
        with self.ready_cond:
            while not self.is_ready:
                self.ready_cond.wait()
