"""Streaming generators: remote generator functions and actor methods return
an ObjectRefGenerator that yields one ObjectRef per value, as it is produced.

Ray docs: https://docs.ray.io/en/latest/ray-core/ray-generator.html,
.../ray-core/tasks/dynamic_generators.html (integer num_returns on a generator)
and the API reference of ray.wait (ObjectRefGenerator arguments).
"""

import asyncio
import os
import pickle
import threading
import time

import pytest

import fleet
from fleet import ObjectRef, ObjectRefGenerator
from fleet.exceptions import RayError, RayTaskError, WorkerCrashedError

# One shared cluster per module (conftest.fleet_cluster): 2 CPUs.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every get/wait in this module


def wait_for_file(path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class StreamError(Exception):
    pass


@fleet.remote
def count(n):
    yield from range(n)


@fleet.remote
def gated(first, gate):
    """Yields `first`, then waits (up to 20 s) for the file `gate`, then yields 'after'."""
    yield first
    wait_for_file(gate)
    yield "after"


@fleet.remote(max_retries=0)
def fails_midway(n):
    yield from range(n)
    raise StreamError(f"failed after {n}")


def nxt(gen):
    """next(gen), with a deadline: waits (fleet.wait) for the next item or the end."""
    ready, _ = fleet.wait([gen], timeout=T)
    assert ready == [gen], f"no next item (or end) within {T} s"
    return next(gen)


def _refs(gen):
    refs = []
    while True:
        try:
            refs.append(nxt(gen))
        except StopIteration:
            return refs


def _values(gen):
    return [fleet.get(ref, timeout=T) for ref in _refs(gen)]


# ---------------------------------------------------------------- tasks


def test_generator_task_returns_object_ref_generator():
    gen = count.remote(3)
    assert isinstance(gen, ObjectRefGenerator)
    refs = list(gen)
    assert len(refs) == 3
    assert all(isinstance(r, ObjectRef) for r in refs)
    assert fleet.get(refs, timeout=T) == [0, 1, 2]


def test_values_arrive_in_order():
    assert _values(count.remote(200)) == list(range(200))


def test_empty_generator():
    gen = count.remote(0)
    with pytest.raises(StopIteration):
        nxt(gen)


def test_next_after_the_end_keeps_raising_stop_iteration():
    gen = count.remote(1)
    assert fleet.get(nxt(gen), timeout=T) == 0
    for _ in range(2):
        with pytest.raises(StopIteration):
            nxt(gen)


def test_items_are_available_before_the_task_finishes(tmp_path):
    gate = str(tmp_path / "gate")
    gen = gated.remote("first", gate)
    t0 = time.monotonic()
    first = nxt(gen)
    assert fleet.get(first, timeout=T) == "first"
    assert time.monotonic() - t0 < 15
    # The task is still running: it waits for the gate.
    ready, _ = fleet.wait([gen.completed()], timeout=0.2)
    assert ready == []
    open(gate, "w").close()
    assert fleet.get(nxt(gen), timeout=T) == "after"
    with pytest.raises(StopIteration):
        nxt(gen)
    fleet.get(gen.completed(), timeout=T)


def test_exception_midstream_surfaces_on_the_next_item_and_ends_the_stream():
    gen = fails_midway.remote(2)
    assert fleet.get(nxt(gen), timeout=T) == 0
    assert fleet.get(nxt(gen), timeout=T) == 1
    bad = nxt(gen)
    with pytest.raises(StreamError, match="failed after 2") as info:
        fleet.get(bad, timeout=T)
    assert isinstance(info.value, RayTaskError)
    with pytest.raises(StopIteration):
        nxt(gen)


def test_exception_before_the_first_yield():
    gen = fails_midway.remote(0)
    refs = _refs(gen)
    assert len(refs) == 1
    with pytest.raises(StreamError):
        fleet.get(refs[0], timeout=T)


@fleet.remote(max_retries=0)
def crash_midway():
    yield "before"
    os._exit(1)


def test_worker_death_midstream_surfaces_as_an_error_item():
    gen = crash_midway.remote()
    assert fleet.get(nxt(gen), timeout=T) == "before"
    with pytest.raises(WorkerCrashedError):
        # The error may come as the next item (or end the stream after it).
        for ref in _refs(gen):
            fleet.get(ref, timeout=T)
    with pytest.raises(StopIteration):
        nxt(gen)


def test_num_returns_streaming_option():
    @fleet.remote(num_returns="streaming")
    def deco():
        yield "d1"
        yield "d2"

    @fleet.remote
    def plain_gen():
        yield "o1"

    gen = deco.remote()
    assert isinstance(gen, ObjectRefGenerator)
    assert _values(gen) == ["d1", "d2"]
    gen = plain_gen.options(num_returns="streaming").remote()
    assert isinstance(gen, ObjectRefGenerator)
    assert _values(gen) == ["o1"]


def test_streaming_from_a_function_that_is_not_a_generator_is_an_error():
    @fleet.remote(num_returns="streaming", max_retries=0)
    def not_a_generator():
        return [1, 2]

    gen = not_a_generator.remote()
    with pytest.raises(RayError):
        for ref in _refs(gen):
            fleet.get(ref, timeout=T)


def test_generator_with_integer_num_returns_returns_that_many_refs():
    @fleet.remote(num_returns=3)
    def three():
        yield "a"
        yield "b"
        yield "c"

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert all(isinstance(r, ObjectRef) for r in refs)
    assert fleet.get(refs, timeout=T) == ["a", "b", "c"]
    refs = count.options(num_returns=2).remote(2)
    assert fleet.get(refs, timeout=T) == [0, 1]


def test_generator_yielding_fewer_values_than_num_returns_fails_the_missing_ones():
    # As Ray: the values yielded are kept; the missing positions hold a ValueError.
    refs = count.options(num_returns=3, max_retries=0).remote(2)
    assert fleet.get(refs[:2], timeout=T) == [0, 1]
    with pytest.raises(ValueError):
        fleet.get(refs[2], timeout=T)


def test_refs_of_a_generator_can_be_passed_to_tasks():
    @fleet.remote
    def double(x):
        return 2 * x

    refs = list(count.remote(4))
    assert fleet.get([double.remote(r) for r in refs], timeout=T) == [0, 2, 4, 6]


def test_large_values_stream():
    @fleet.remote
    def big():
        for i in range(3):
            yield bytes([i]) * 200_000

    vals = _values(big.remote())
    assert [len(v) for v in vals] == [200_000] * 3
    assert [v[0] for v in vals] == [0, 1, 2]


def test_many_generators_at_once():
    gens = [count.remote(20) for _ in range(10)]
    for gen in gens:
        assert _values(gen) == list(range(20))


def test_generator_can_be_dropped_midstream(tmp_path):
    gate = str(tmp_path / "gate")
    gen = gated.remote("x", gate)
    assert fleet.get(nxt(gen), timeout=T) == "x"
    del gen
    # The cluster is not stuck: other work runs meanwhile, and after the
    # dropped task finishes.
    assert _values(count.remote(3)) == [0, 1, 2]
    open(gate, "w").close()
    assert _values(count.remote(3)) == [0, 1, 2]


# ---------------------------------------------------------------- async iteration


def test_async_iteration_in_the_driver():
    async def consume():
        out = []
        async for ref in count.remote(5):
            out.append(fleet.get(ref, timeout=T))
        return out

    # (wait_for: a broken end of stream must fail the test, not hang it)
    assert asyncio.run(asyncio.wait_for(consume(), 10)) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- wait


def test_wait_on_a_generator(tmp_path):
    gate = str(tmp_path / "gate")
    gen = gated.remote("first", gate)
    ready, not_ready = fleet.wait([gen], timeout=T)
    assert ready == [gen] and not_ready == []
    assert fleet.get(nxt(gen), timeout=T) == "first"
    # The next item waits for the gate: not ready.
    t0 = time.monotonic()
    ready, not_ready = fleet.wait([gen], timeout=0.3)
    assert ready == [] and not_ready == [gen]
    assert time.monotonic() - t0 >= 0.25
    open(gate, "w").close()
    ready, _ = fleet.wait([gen], timeout=T)
    assert ready == [gen]
    assert fleet.get(nxt(gen), timeout=T) == "after"
    # At the end a generator is ready too (next() raises StopIteration at once).
    ready, _ = fleet.wait([gen], timeout=T)
    assert ready == [gen]
    with pytest.raises(StopIteration):
        nxt(gen)


def test_wait_mixing_generators_and_refs(tmp_path):
    gate = str(tmp_path / "gate")

    @fleet.remote
    def value():
        return "v"

    blocked = gated.remote("first", gate)
    assert fleet.get(nxt(blocked), timeout=T) == "first"  # now waits for the gate
    ref = value.remote()
    done = count.remote(1)
    ready, not_ready = fleet.wait([blocked, ref, done], num_returns=2, timeout=T)
    assert ready == [ref, done]
    assert not_ready == [blocked]
    open(gate, "w").close()
    assert _values(blocked) == ["after"]


def test_wait_on_generators_bad_input():
    gen = count.remote(1)
    with pytest.raises(ValueError):
        fleet.wait([gen], num_returns=2, timeout=T)
    with pytest.raises(ValueError):
        fleet.wait([gen], num_returns=0, timeout=T)
    assert _values(gen) == [0]


# ---------------------------------------------------------------- serialization


def test_object_ref_generator_is_not_picklable():
    gen = count.remote(2)
    with pytest.raises(TypeError):
        pickle.dumps(gen)

    @fleet.remote
    def takes(g):
        return g

    with pytest.raises(TypeError):
        takes.remote(gen)
    # Still usable here.
    assert _values(gen) == [0, 1]


def test_get_of_a_generator_returns_the_generator():
    gen = count.remote(1)
    assert fleet.get(gen, timeout=T) is gen  # as Ray's get
    assert _values(gen) == [0]


# ---------------------------------------------------------------- actor methods


@fleet.remote
class Streamer:
    def __init__(self):
        self.calls = 0

    def numbers(self, n):
        self.calls += 1
        for i in range(n):
            yield i * 10

    def failing(self):
        yield "ok"
        raise StreamError("actor stream failed")

    def calls_(self):
        return self.calls


@fleet.remote
class AsyncStreamer:
    async def numbers(self, n, delay=0.0):
        for i in range(n):
            await asyncio.sleep(delay)
            yield i

    def sync_numbers(self, n):
        for i in range(n):
            yield -i

    async def ping(self):
        return "pong"


def test_generator_actor_method():
    s = Streamer.remote()
    gen = s.numbers.remote(4)
    assert isinstance(gen, ObjectRefGenerator)
    assert _values(gen) == [0, 10, 20, 30]
    # The actor keeps its state across generator calls.
    assert _values(s.numbers.remote(1)) == [0]
    assert fleet.get(s.calls_.remote(), timeout=T) == 2


def test_generator_actor_method_exception_leaves_the_actor_alive():
    s = Streamer.remote()
    gen = s.failing.remote()
    assert fleet.get(nxt(gen), timeout=T) == "ok"
    with pytest.raises(StreamError):
        fleet.get(nxt(gen), timeout=T)
    with pytest.raises(StopIteration):
        nxt(gen)
    assert fleet.get(s.calls_.remote(), timeout=T) == 0


def test_async_generator_actor_method():
    a = AsyncStreamer.remote()
    gen = a.numbers.remote(5)
    assert isinstance(gen, ObjectRefGenerator)
    assert _values(gen) == [0, 1, 2, 3, 4]
    assert _values(a.sync_numbers.remote(3)) == [0, -1, -2]


def test_async_actor_streams_concurrently():
    a = AsyncStreamer.remote()
    fleet.get(a.ping.remote(), timeout=T)
    t0 = time.monotonic()
    gens = [a.numbers.remote(5, 0.1) for _ in range(10)]
    # Interleaved: ten streams of 5 x 0.1 s finish in far less than 5 s.
    for gen in gens:
        assert _values(gen) == [0, 1, 2, 3, 4]
    assert time.monotonic() - t0 < 4
    # Calls are served while streams run.
    assert fleet.get(a.ping.remote(), timeout=T) == "pong"


def test_generator_method_of_a_threaded_actor():
    s = Streamer.options(max_concurrency=3).remote()
    gens = [s.numbers.remote(5) for _ in range(3)]
    for gen in gens:
        assert _values(gen) == [0, 10, 20, 30, 40]


def test_actor_generator_with_integer_num_returns():
    s = Streamer.remote()
    refs = s.numbers.options(num_returns=2).remote(2)
    assert isinstance(refs, list) and len(refs) == 2
    assert fleet.get(refs, timeout=T) == [0, 10]


def test_actor_method_streaming_option_on_the_decorator():
    @fleet.remote
    class Deco:
        @fleet.method(num_returns="streaming")
        def items(self):
            yield "i1"
            yield "i2"

    d = Deco.remote()
    gen = d.items.remote()
    assert isinstance(gen, ObjectRefGenerator)
    assert _values(gen) == ["i1", "i2"]


def test_next_blocks_until_the_item_is_produced(tmp_path):
    gate = str(tmp_path / "gate")
    gen = gated.remote("first", gate)
    assert fleet.get(nxt(gen), timeout=T) == "first"
    got = []
    th = threading.Thread(target=lambda: got.append(next(gen)), daemon=True)
    th.start()
    th.join(0.3)
    assert th.is_alive(), "next() returned an item the task has not produced yet"
    open(gate, "w").close()
    th.join(T)
    assert not th.is_alive()
    assert fleet.get(got[0], timeout=T) == "after"
