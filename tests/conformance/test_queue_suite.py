"""CPython's own ``test.test_queue`` run against plait.queue, by
subclassing the suite's mixins with ``queue = plait.queue`` (the suite's
own parameterisation). Nothing is copied.

Every test class of the suite that targets the C-accelerated module is
plugged: Queue, LifoQueue, PriorityQueue, the failing-hooks subclass test,
and SimpleQueue (including the reentrancy test of the C version).
"""

import unittest

import pytest

test_queue = pytest.importorskip("test.test_queue")

import plait.queue  # noqa: E402


class TestQueue(test_queue.QueueTest, unittest.TestCase):
    queue = plait.queue


class TestLifoQueue(test_queue.LifoQueueTest, unittest.TestCase):
    queue = plait.queue


class TestPriorityQueue(test_queue.PriorityQueueTest, unittest.TestCase):
    queue = plait.queue


class TestFailingQueue(test_queue.FailingQueueTest, unittest.TestCase):
    queue = plait.queue


class TestSimpleQueue(test_queue.CSimpleQueueTest):
    queue = plait.queue

    def setUp(self):
        self.type2test = self.queue.SimpleQueue
        test_queue.BaseSimpleQueueTest.setUp(self)
