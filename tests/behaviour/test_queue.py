"""plait.queue behaviour beyond CPython's test_queue: interop with the
standard library (isinstance, its exception classes), hooks subclasses,
PriorityQueue with failing comparisons, and argument checks."""

import queue as std
import sys
import threading

import pytest

import plait.queue as pq


def test_standard_exceptions_and_isinstance():
    assert pq.Empty is std.Empty and pq.Full is std.Full
    for cls, base in [(pq.Queue, std.Queue), (pq.LifoQueue, std.LifoQueue), (pq.PriorityQueue, std.PriorityQueue)]:
        q = cls(1)
        assert isinstance(q, base)
        q.put(1)
        with pytest.raises(std.Full):
            q.put(2, block=False)
        with pytest.raises(std.Full):
            q.put(2, timeout=0.01)
        q.get()
        with pytest.raises(std.Empty):
            q.get(timeout=0.01)


def test_generic_alias():
    assert pq.Queue[int].__origin__ is pq.Queue
    assert pq.SimpleQueue[int].__origin__ is pq.SimpleQueue


def test_negative_timeouts():
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        pq.SimpleQueue().get(timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        pq.Queue().get(timeout=-1)
    pq.Queue().put(1, timeout=-1)  # unbounded: CPython does not check here either


def test_maxsize_is_writable_and_wakes_putters():
    q = pq.Queue(1)
    q.put(1)
    done = []
    t = threading.Thread(target=lambda: done.append(q.put(2, timeout=10)))
    t.start()
    q.maxsize = 2
    t.join(10)
    assert done == [None] and q.qsize() == 2


def test_priority_queue_comparison_error_leaves_queue_intact():
    class Bad:
        def __lt__(self, other):
            raise ZeroDivisionError

    q = pq.PriorityQueue()
    for x in (3, 1, 2):
        q.put(x)
    with pytest.raises(ZeroDivisionError):
        q.put(Bad())
    with pytest.raises(TypeError):
        q.put("str")
    assert [q.get(), q.get(), q.get()] == [1, 2, 3]


def test_priority_queue_equal_keys_leave_in_heapq_order():
    import heapq

    items = [(p, i) for i, p in enumerate([3, 1, 3, 2, 1, 3, 2, 2, 1])]

    class Key:
        def __init__(self, item):
            self.item = item

        def __lt__(self, other):
            return self.item[0] < other.item[0]

    h = []
    q = pq.PriorityQueue()
    for it in items:
        heapq.heappush(h, Key(it))
        q.put(Key(it))
    expected = [heapq.heappop(h).item for _ in items]
    assert [q.get().item for _ in items] == expected


def test_hooks_subclass_runs_stdlib_algorithm():
    class UniqueQueue(pq.Queue):
        def _init(self, maxsize):
            self.queue = []
            self.seen = set()

        def _put(self, item):
            if item not in self.seen:
                self.seen.add(item)
                self.queue.append(item)

        def _get(self):
            return self.queue.pop(0)

    q = UniqueQueue()
    for x in (1, 2, 1, 3, 2):
        q.put(x)
    assert q.qsize() == 3
    assert [q.get(), q.get(), q.get()] == [1, 2, 3]
    assert q.unfinished_tasks == 5


def test_task_done_too_many():
    q = pq.Queue()
    with pytest.raises(ValueError, match="task_done\\(\\) called too many times"):
        q.task_done()


def test_unfinished_tasks_and_join():
    q = pq.Queue()
    q.put(1)
    q.put(2)
    assert q.unfinished_tasks == 2

    def worker():
        while True:
            q.get()
            q.task_done()

    threading.Thread(target=worker, daemon=True).start()
    q.join()
    assert q.unfinished_tasks == 0


@pytest.mark.skipif(sys.version_info < (3, 13), reason="shutdown() is 3.13+")
def test_shutdown_immediate_releases_join_and_getters():
    q = pq.Queue()
    q.put(1)
    errors = []
    t = threading.Thread(target=lambda: errors.append(_catch(q.join)))
    t.start()
    q.shutdown(immediate=True)
    t.join(10)
    assert errors == [None]
    with pytest.raises(std.ShutDown):
        q.get()
    with pytest.raises(std.ShutDown):
        q.put(1)


def test_no_shutdown_before_313():
    if sys.version_info < (3, 13):
        assert not hasattr(pq.Queue(), "shutdown")


def _catch(fn):
    try:
        return fn()
    except BaseException as e:  # noqa: BLE001
        return e


def test_subclass_reaching_into_internals_runs_stdlib_algorithm():
    # A subclass that uses self.queue / self.mutex / the conditions gets the
    # real ones (the standard library's algorithm); one that only names the
    # *module* queue stays on the Rust path.
    class Peek(pq.Queue):
        def peek(self):
            with self.mutex:
                return self.queue[0]

    class UsesModule(pq.Queue):
        def get_or_none(self):
            try:
                return self.get_nowait()
            except std.Empty:
                return None

    class UsesModuleByName(pq.Queue):
        def get_or_none(self):
            import queue

            try:
                return self.get_nowait()
            except queue.Empty:
                return None

    assert Peek._plait_hooks
    assert not UsesModule._plait_hooks and not UsesModuleByName._plait_hooks
    q = Peek()
    q.put(1)
    assert isinstance(q.queue, type(std.Queue().queue)) and q.peek() == 1


def test_unfinished_tasks_reset_releases_join_waiting_in_rust():
    q = pq.Queue()
    q.put(1)
    done = threading.Event()
    t = threading.Thread(target=lambda: (q.join(), done.set()))
    t.start()
    assert not done.wait(0.05)
    q.unfinished_tasks = 0
    assert done.wait(10)
    t.join(10)


def test_maxsize_is_the_object_given_and_float_bounds_at_its_ceiling():
    q = pq.Queue(1.5)
    assert q.maxsize == 1.5
    q.put(1)
    assert not q.full()
    q.put(2)
    assert q.full()
    with pytest.raises(std.Full):
        q.put(3, block=False)
    q.maxsize = None
    with pytest.raises(TypeError):
        q.put(3)  # CPython: '>' not supported between 'NoneType' and 'int'
    with pytest.raises(TypeError):
        q.full()
    assert q.get() == 1


def test_infinite_timeout_overflows_only_when_waiting():
    q = pq.Queue()
    q.put(1)
    assert q.get(timeout=float("inf")) == 1
    with pytest.raises(OverflowError):
        q.get(timeout=float("inf"))
    with pytest.raises(OverflowError):
        pq.SimpleQueue().get(timeout=float("inf"))
    with pytest.raises(ValueError):
        q.get(timeout=float("nan"))  # CPython spins here; see docs/differences.md
