"""fleet.util.queue.Queue: FIFO order, blocking and non-blocking put/get, batches,
async use, sharing with tasks and actors, shutdown.

Ray docs: https://docs.ray.io/en/latest/ray-core/api/doc/ray.util.queue.Queue.html
"""

import asyncio
import pickle
import queue as stdlib_queue
import threading
import time

import pytest

import fleet
from fleet.util.queue import Empty, Full, Queue

# One shared cluster per module (conftest.fleet_cluster).
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every blocking call in this module


@pytest.fixture
def q():
    """An unbounded queue, shut down after the test."""
    queue = Queue()
    yield queue
    queue.shutdown(force=True)


@pytest.fixture
def q2():
    """A queue of at most two items, shut down after the test."""
    queue = Queue(maxsize=2)
    yield queue
    queue.shutdown(force=True)


def test_fifo_order_and_size(q):
    assert q.empty() and not q.full()
    assert q.size() == q.qsize() == len(q) == 0
    for i in range(10):
        q.put(i)
    assert q.size() == q.qsize() == len(q) == 10
    assert not q.empty()
    assert not q.full()  # no maxsize: never full
    assert [q.get(timeout=T) for _ in range(10)] == list(range(10))
    assert q.empty()


def test_values_of_any_picklable_type(q):
    values = [None, "text", b"\x00bytes", {"a": [1, 2]}, (1, 2.5), list(range(1000))]
    for v in values:
        q.put(v, timeout=T)
    assert [q.get(timeout=T) for _ in values] == values


def test_get_on_empty_queue_raises_empty(q):
    for get in (q.get_nowait, lambda: q.get(block=False), lambda: q.get(timeout=0)):
        with pytest.raises(Empty) as info:
            get()
        assert isinstance(info.value, stdlib_queue.Empty)  # stdlib-compatible
    start = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - start >= 0.19


def test_timed_out_get_does_not_take_a_later_item(q):
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    q.put("x")
    assert q.qsize() == 1
    assert q.get(timeout=T) == "x"


def test_put_on_full_queue_raises_full(q2):
    q2.put(1)
    q2.put_nowait(2)
    assert q2.full() and q2.size() == 2
    for put in (
        lambda: q2.put_nowait(3),
        lambda: q2.put(3, block=False),
        lambda: q2.put(3, timeout=0),
        lambda: q2.put(3, timeout=0.1),
    ):
        with pytest.raises(Full) as info:
            put()
        assert isinstance(info.value, stdlib_queue.Full)
    assert q2.size() == 2
    assert [q2.get_nowait(), q2.get_nowait()] == [1, 2]


def test_blocked_put_proceeds_when_room_appears(q2):
    q2.put_nowait_batch(["a", "b"])
    taker = threading.Timer(0.2, lambda: q2.get(timeout=T))
    taker.start()
    start = time.monotonic()
    q2.put("c", timeout=T)  # blocks until the timer takes "a"
    assert time.monotonic() - start >= 0.15
    taker.join(T)
    assert q2.get_nowait_batch(2) == ["b", "c"]


def test_blocked_get_does_not_hold_up_other_callers(q):
    got = []
    getter = threading.Thread(target=lambda: got.append(q.get(timeout=T)))
    getter.start()
    time.sleep(0.1)  # the getter now waits inside the actor
    start = time.monotonic()
    assert q.size() == 0  # the actor still answers
    q.put("item", timeout=T)
    getter.join(T)
    assert got == ["item"]
    assert time.monotonic() - start < 5


def test_many_blocked_getters_each_get_one_item(q):
    got = []
    lock = threading.Lock()

    def take():
        item = q.get(timeout=T)
        with lock:
            got.append(item)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    q.put_nowait_batch(range(4))
    for t in threads:
        t.join(T)
    assert sorted(got) == [0, 1, 2, 3]
    assert q.empty()


def test_batches(q, q2):
    q.put_nowait_batch([1, 2, 3])
    q.put_nowait_batch(iter([4, 5]))
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    with pytest.raises(Empty):
        q.get_nowait_batch(4)  # only three left: takes none
    assert q.get_nowait_batch(3) == [3, 4, 5]

    q2.put(0)
    with pytest.raises(Full):
        q2.put_nowait_batch([1, 2])  # room for one: adds none
    assert q2.size() == 1
    q2.put_nowait_batch([1])
    assert q2.full()


def test_bad_arguments_give_clear_errors(q):
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        q.get(timeout="soon")
    with pytest.raises(TypeError, match="Iterable"):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError, match="int"):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError, match="nonnegative"):
        q.get_nowait_batch(-1)
    with pytest.raises(TypeError, match="maxsize"):
        Queue(maxsize="10")
    with pytest.raises(TypeError, match="actor_options"):
        Queue(actor_options=[("num_cpus", 1)])
    assert q.empty()  # nothing was added along the way


def test_async_put_and_get(q2):
    async def main():
        await q2.put_async(1)
        await q2.put_async(2, timeout=T)
        with pytest.raises(Full):
            await q2.put_async(3, block=False)
        with pytest.raises(Full):
            await q2.put_async(3, timeout=0.05)
        assert await q2.get_async(timeout=T) == 1
        assert await q2.get_async() == 2
        with pytest.raises(Empty):
            await q2.get_async(block=False)
        with pytest.raises(Empty):
            await q2.get_async(timeout=0.05)
        # A waiting get_async leaves the event loop free for the put.
        getter = asyncio.ensure_future(q2.get_async(timeout=T))
        await asyncio.sleep(0.05)
        await q2.put_async("late")
        return await asyncio.wait_for(getter, T)

    assert asyncio.run(main()) == "late"


@fleet.remote
def produce(queue, start, n):
    for i in range(start, start + n):
        queue.put(i, timeout=T)
    return n


@fleet.remote
def consume(queue, n):
    return [queue.get(timeout=T) for _ in range(n)]


@fleet.remote
class Consumer:
    def __init__(self, queue):
        self.queue = queue

    def take(self, n):
        return [self.queue.get(timeout=T) for _ in range(n)]


def test_shared_with_tasks(q):
    refs = [produce.remote(q, 0, 20), produce.remote(q, 100, 20)]
    got = [q.get(timeout=T) for _ in range(40)]
    assert fleet.get(refs, timeout=T) == [20, 20]
    assert sorted(got) == list(range(20)) + list(range(100, 120))
    # And the other way round: a task takes what the driver puts.
    ref = consume.remote(q, 3)
    for i in range(3):
        q.put(i)
    assert fleet.get(ref, timeout=T) == [0, 1, 2]


def test_shared_with_an_actor(q):
    consumer = Consumer.remote(q)
    try:
        ref = consumer.take.remote(2)
        q.put("a")
        q.put("b")
        assert fleet.get(ref, timeout=T) == ["a", "b"]
    finally:
        fleet.kill(consumer)


def test_bounded_queue_applies_back_pressure_to_a_producer(q2):
    ref = produce.remote(q2, 0, 6)  # blocks whenever two items wait
    got = []
    while len(got) < 6:
        assert q2.size() <= 2
        got.append(q2.get(timeout=T))
    assert got == list(range(6))
    assert fleet.get(ref, timeout=T) == 6


def test_pickled_copy_uses_the_same_queue(q):
    copy = pickle.loads(pickle.dumps(q))
    copy.put("via copy")
    assert q.get(timeout=T) == "via copy"
    assert copy.maxsize == q.maxsize == 0


def test_shutdown():
    queue = Queue()
    queue.put(1)
    handle = queue.actor
    queue.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        queue.put(2)
    with pytest.raises(RuntimeError, match="shut down"):
        queue.get(timeout=T)
    queue.shutdown()  # a second call does nothing
    with pytest.raises(fleet.exceptions.RayActorError):
        fleet.get(handle.qsize.remote(), timeout=T)

    forced = Queue()
    handle = forced.actor
    forced.shutdown(force=True)
    with pytest.raises(fleet.exceptions.RayActorError):
        fleet.get(handle.qsize.remote(), timeout=T)


def test_actor_options_reach_the_actor():
    total = fleet.cluster_resources()["CPU"]

    def cpus_free():
        return fleet.available_resources().get("CPU", 0)

    queue = Queue(actor_options={"num_cpus": 1})
    try:
        queue.put(1)
        deadline = time.monotonic() + T
        while cpus_free() != total - 1:  # the actor holds one CPU
            assert time.monotonic() < deadline, fleet.available_resources()
            time.sleep(0.05)
        assert queue.get(timeout=T) == 1
    finally:
        queue.shutdown(force=True)
