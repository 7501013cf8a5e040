"""Generators as Ray 2.60 has them, beyond plain streaming (test_generators.py):
num_returns="dynamic" (one ref whose value is a DynamicObjectRefGenerator),
num_returns=None, a fixed num_returns on a generator (values before an error
stay readable), retries of generator tasks, and the ObjectRefGenerator
methods Ray programs use (next_ready, is_finished, _next_sync, ...).

Ray docs: .../ray-core/tasks/generators.html, .../ray-core/ray-generator.html.
"""

import asyncio
import os
import pickle
import time

import pytest

import fleet
from fleet import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator
from fleet._private import state as _state
from fleet.exceptions import RayTaskError, WorkerCrashedError

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every get/wait in this module


class Boom(Exception):
    pass


@fleet.remote(num_returns="dynamic")
def dyn(n):
    for i in range(n):
        yield i * 10


@fleet.remote(max_retries=0)
def gen_then_fail(n):
    yield from range(n)
    raise Boom("after the values")


@fleet.remote
class Counter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n


# ---------------------------------------------------------------- dynamic


def test_dynamic_returns_one_ref_whose_value_is_a_dynamic_generator():
    ref = dyn.remote(3)
    assert isinstance(ref, ObjectRef)
    gen = fleet.get(ref, timeout=T)
    assert isinstance(gen, DynamicObjectRefGenerator)
    assert len(gen) == 3
    refs = list(gen)
    assert all(isinstance(r, ObjectRef) for r in refs)
    assert fleet.get(refs, timeout=T) == [0, 10, 20]
    assert len(gen) == 0  # iterating hands each ref out once (as Ray)


def test_dynamic_empty_generator():
    assert len(fleet.get(dyn.remote(0), timeout=T)) == 0


def test_dynamic_large_values():
    @fleet.remote(num_returns="dynamic")
    def big(n):
        for i in range(n):
            yield bytes([i]) * 2_000_000

    refs = list(fleet.get(big.remote(3), timeout=T))
    values = fleet.get(refs, timeout=T)
    assert [v[:1] for v in values] == [b"\x00", b"\x01", b"\x02"]
    assert all(len(v) == 2_000_000 for v in values)


def test_dynamic_option_on_a_generator_function():
    @fleet.remote
    def plain(n):
        yield from range(n)

    gen = fleet.get(plain.options(num_returns="dynamic").remote(2), timeout=T)
    assert fleet.get(list(gen), timeout=T) == [0, 1]


def test_dynamic_on_a_function_that_is_not_a_generator_is_an_error():
    @fleet.remote(num_returns="dynamic", max_retries=0)
    def not_gen(n):
        return list(range(n))

    with pytest.raises(RayTaskError) as e:
        fleet.get(not_gen.remote(3), timeout=T)
    assert isinstance(e.value, ValueError)


def test_dynamic_error_midway_is_the_last_ref():
    gen = fleet.get(gen_then_fail.options(num_returns="dynamic").remote(1), timeout=T)
    first, last = list(gen)
    assert fleet.get(first, timeout=T) == 0
    with pytest.raises(Boom):
        fleet.get(last, timeout=T)


def test_dynamic_ref_and_generator_can_be_passed_to_tasks():
    @fleet.remote
    def total(g):
        return sum(fleet.get(list(g), timeout=T))

    ref = dyn.remote(4)
    assert fleet.get(total.remote(ref), timeout=T) == 60
    assert fleet.get(total.remote(fleet.get(ref, timeout=T)), timeout=T) == 60


def test_dynamic_generator_pickles_in_the_driver():
    gen = fleet.get(dyn.remote(2), timeout=T)
    copy = pickle.loads(pickle.dumps(gen))
    assert fleet.get(list(copy), timeout=T) == [0, 10]


def test_dynamic_items_outlive_the_generator_ref():
    ref = dyn.remote(3)
    refs = list(fleet.get(ref, timeout=T))
    del ref
    time.sleep(0.2)
    assert fleet.get(refs, timeout=T) == [0, 10, 20]


def test_dynamic_actor_method():
    @fleet.remote
    class Source:
        def items(self, n):
            for i in range(n):
                yield [i]

        async def aitems(self, n):
            for i in range(n):
                yield i

    s = Source.remote()
    gen = fleet.get(s.items.options(num_returns="dynamic").remote(3), timeout=T)
    assert fleet.get(list(gen), timeout=T) == [[0], [1], [2]]
    gen = fleet.get(s.aitems.options(num_returns="dynamic").remote(2), timeout=T)
    assert fleet.get(list(gen), timeout=T) == [0, 1]


def test_dynamic_retry_exceptions_reruns_and_keeps_first_items():
    @fleet.remote(num_returns="dynamic", max_retries=1, retry_exceptions=[Boom])
    def flaky(counter):
        for i in range(3):
            yield i
            if fleet.get(counter.inc.remote(), timeout=T) == 1:
                raise Boom("first attempt")

    c = Counter.remote()
    gen = fleet.get(flaky.remote(c), timeout=T)
    assert fleet.get(list(gen), timeout=T) == [0, 1, 2]


def test_dynamic_without_retry_exceptions_keeps_the_error_item():
    @fleet.remote(num_returns="dynamic", max_retries=1)
    def flaky(counter):
        for i in range(3):
            yield i
            if fleet.get(counter.inc.remote(), timeout=T) == 1:
                raise Boom("first attempt")

    c = Counter.remote()
    first, last = list(fleet.get(flaky.remote(c), timeout=T))
    assert fleet.get(first, timeout=T) == 0
    with pytest.raises(Boom):
        fleet.get(last, timeout=T)


# ---------------------------------------------------------------- num_returns=None


def test_num_returns_none_streams_a_generator_and_returns_one_value_otherwise():
    @fleet.remote
    def g():
        yield 1

    @fleet.remote
    def f():
        return 2

    assert isinstance(g.options(num_returns=None).remote(), ObjectRefGenerator)
    assert fleet.get(f.options(num_returns=None).remote(), timeout=T) == 2

    @fleet.remote
    class A:
        def g(self):
            yield 1

        def f(self):
            return 2

    a = A.remote()
    assert isinstance(a.g.options(num_returns=None).remote(), ObjectRefGenerator)
    assert fleet.get(a.f.options(num_returns=None).remote(), timeout=T) == 2


# ---------------------------------------------------------------- fixed num_returns


def test_fixed_num_returns_keeps_values_yielded_before_an_error():
    r1, r2, r3 = gen_then_fail.options(num_returns=3).remote(1)
    assert fleet.get(r1, timeout=T) == 0
    for r in (r2, r3):
        with pytest.raises(RayTaskError) as e:
            fleet.get(r, timeout=T)
        assert isinstance(e.value, Boom)


def test_fixed_num_returns_too_few_values_fails_only_the_missing_ones():
    @fleet.remote(max_retries=0)
    def two():
        yield "a"
        yield "b"

    refs = two.options(num_returns=3).remote()
    assert fleet.get(refs[:2], timeout=T) == ["a", "b"]
    with pytest.raises(RayTaskError) as e:
        fleet.get(refs[2], timeout=T)
    assert isinstance(e.value, ValueError)
    assert "Task returned 2 objects, but num_returns=3." in str(e.value)


def test_fixed_num_returns_too_many_values_keeps_the_first_ones():
    @fleet.remote(max_retries=0)
    def four():
        yield from range(4)

    assert fleet.get(four.options(num_returns=3).remote(), timeout=T) == [0, 1, 2]


def test_num_returns_one_on_a_generator_is_its_single_value():
    @fleet.remote
    def one():
        yield [0]

    assert fleet.get(one.options(num_returns=1).remote(), timeout=T) == [0]


def test_fixed_num_returns_on_an_actor_generator_keeps_values_before_an_error():
    @fleet.remote
    class A:
        def g(self):
            yield "ok"
            raise Boom("x")

    r1, r2 = A.remote().g.options(num_returns=2).remote()
    assert fleet.get(r1, timeout=T) == "ok"
    with pytest.raises(Boom):
        fleet.get(r2, timeout=T)


# ---------------------------------------------------------------- streaming retries


def test_streaming_retry_exceptions_reruns_and_deduplicates_items():
    @fleet.remote(retry_exceptions=[Boom], max_retries=2)
    def flaky(counter):
        for i in range(4):
            if i == 2 and fleet.get(counter.inc.remote(), timeout=T) == 1:
                raise Boom("first attempt")
            yield i

    c = Counter.remote()
    gen = flaky.remote(c)
    assert [fleet.get(r, timeout=T) for r in gen] == [0, 1, 2, 3]


def test_streaming_retries_exhausted_ends_with_the_error():
    @fleet.remote(retry_exceptions=[Boom], max_retries=1)
    def always(n):
        yield from range(n)
        raise Boom("every attempt")

    gen = always.remote(2)
    refs = list(gen)
    assert fleet.get(refs[:2], timeout=T) == [0, 1]
    assert len(refs) == 3
    with pytest.raises(Boom):
        fleet.get(refs[2], timeout=T)
    assert gen.is_finished()


def test_worker_crash_midstream_is_retried_and_items_are_not_repeated(tmp_path):
    marker = str(tmp_path / "crashed-once")

    @fleet.remote(max_retries=1)
    def crash_once(path):
        yield "a"
        yield "b"
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        yield "c"

    assert [fleet.get(r, timeout=T) for r in crash_once.remote(marker)] == ["a", "b", "c"]
    assert fleet.get(list(fleet.get(
        crash_once.options(num_returns="dynamic").remote(str(tmp_path / "d")), timeout=T)),
        timeout=T) == ["a", "b", "c"]


def test_worker_crash_midstream_items_before_stay_and_error_comes_last(tmp_path):
    marker = str(tmp_path / "crashed")

    @fleet.remote(max_retries=0)
    def crash(path):
        yield 1
        yield 2
        os._exit(1)

    gen = crash.remote(marker)
    refs = list(gen)
    assert fleet.get(refs[:2], timeout=T) == [1, 2]
    assert len(refs) == 3
    with pytest.raises(WorkerCrashedError):
        fleet.get(refs[2], timeout=T)
    with pytest.raises(StopIteration):
        next(gen)


# ---------------------------------------------------------------- ObjectRefGenerator API


def test_get_of_a_generator_returns_it():
    gen = dyn.options(num_returns="streaming").remote(2)
    assert fleet.get(gen) is gen  # as Ray: the generator is its own value
    assert fleet.get(list(gen), timeout=T) == [0, 10]


def test_wait_needs_a_list_even_for_a_generator():
    gen = dyn.options(num_returns="streaming").remote(1)
    with pytest.raises(TypeError):
        fleet.wait(gen)
    ready, _ = fleet.wait([gen], timeout=T)
    assert ready == [gen]


def test_completed_next_ready_is_finished():
    gen = dyn.options(num_returns="streaming").remote(2)
    assert gen._generator_ref == gen.completed()
    fleet.get(gen.completed(), timeout=T)
    assert not gen.is_finished()
    assert gen.next_ready()
    assert fleet.get(next(gen), timeout=T) == 0
    assert gen.next_ready()
    assert fleet.get(next(gen), timeout=T) == 10
    assert not gen.next_ready()
    assert gen.is_finished()
    with pytest.raises(StopIteration):
        next(gen)


def test_is_finished_waits_for_the_error_item_to_be_taken():
    @fleet.remote(max_retries=0)
    def dies():
        yield 1
        os._exit(1)

    gen = dies.remote()
    assert fleet.get(next(gen), timeout=T) == 1
    with pytest.raises(WorkerCrashedError):
        fleet.get(gen.completed(), timeout=T)
    assert not gen.is_finished()  # the error is still to be handed out
    assert gen.next_ready()
    with pytest.raises(WorkerCrashedError):
        fleet.get(next(gen), timeout=T)
    assert gen.is_finished()
    assert not gen.next_ready()


def test_next_sync_with_a_timeout_gives_a_nil_ref(tmp_path):
    gate = str(tmp_path / "gate")

    @fleet.remote
    def slow(path):
        yield 1
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield 2

    gen = slow.remote(gate)
    assert fleet.get(gen._next_sync(timeout_s=T), timeout=T) == 1
    nil = gen._next_sync(timeout_s=0)
    assert nil.binary() == b"\xff" * len(nil.binary())
    open(gate, "w").close()
    assert fleet.get(gen._next_sync(timeout_s=T), timeout=T) == 2
    with pytest.raises(StopIteration):
        gen._next_sync(timeout_s=T)

    async def drain():
        g = slow.remote(gate)
        out = [await (await g._next_async(timeout_s=T)) for _ in range(2)]
        with pytest.raises(StopAsyncIteration):
            await g._next_async(timeout_s=T)
        return out

    assert asyncio.run(drain()) == [1, 2]


def test_generator_send_throw_close_are_not_supported():
    gen = dyn.options(num_returns="streaming").remote(0)
    for call in (lambda: gen.send(1), lambda: gen.throw(Boom()), gen.close):
        with pytest.raises(NotImplementedError):
            call()


@fleet.remote
def produce(counter, n):
    for i in range(n):
        fleet.get(counter.inc.remote(), timeout=T)  # counts the items produced
        yield i


def test_backpressure_pauses_the_generator_until_the_reader_takes_items():
    c = Counter.remote()
    gen = produce.options(_generator_backpressure_num_objects=1).remote(c, 5)
    assert fleet.get(next(gen), timeout=T) == 0
    time.sleep(0.5)  # a generator without backpressure would produce all 5 meanwhile
    produced = fleet.get(c.inc.remote(), timeout=T) - 1
    assert produced <= 2, "item 0 was taken: at most item 1 may wait unread"
    assert [fleet.get(r, timeout=T) for r in gen] == [1, 2, 3, 4]


def test_backpressure_off_values_do_not_pause():
    for off in (-1, 0, None):
        c = Counter.remote()
        gen = produce.options(_generator_backpressure_num_objects=off).remote(c, 3)
        fleet.get(gen.completed(), timeout=T)  # finishes with nothing read
        assert [fleet.get(r, timeout=T) for r in gen] == [0, 1, 2]
    with pytest.raises(ValueError):
        produce.options(_generator_backpressure_num_objects="1")


def test_backpressure_dropped_reader_releases_the_generator():
    c = Counter.remote()
    gen = produce.options(_generator_backpressure_num_objects=1).remote(c, 4)
    fleet.get(next(gen), timeout=T)
    done = gen.completed()
    del gen  # nobody reads on: the generator must not wait for ever
    fleet.get(done, timeout=T)


def test_backpressure_on_actor_generators():
    @fleet.remote
    class Source:
        def items(self, counter, n):
            for i in range(n):
                fleet.get(counter.inc.remote(), timeout=T)
                yield i

        async def aitems(self, counter, n):
            for i in range(n):
                await counter.inc.remote()
                yield i

    s = Source.remote()
    for method in (s.items, s.aitems):
        c = Counter.remote()
        gen = method.options(_generator_backpressure_num_objects=1).remote(c, 4)
        assert fleet.get(next(gen), timeout=T) == 0
        time.sleep(0.3)
        assert fleet.get(c.inc.remote(), timeout=T) - 1 <= 2
        assert [fleet.get(r, timeout=T) for r in gen] == [1, 2, 3]


# ---------------------------------------------------------------- no leaks


def _objects_settle_to(baseline, timeout=20.0):
    """Waits until this driver's memory store holds `baseline` objects again."""
    import gc

    core = _state.core
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gc.collect()
        if core.num_objects() <= baseline:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("failure", ["exception", "crash"])
def test_streaming_failure_leaks_nothing(failure):
    @fleet.remote(max_retries=0)
    def fails(kind):
        for i in range(3):
            yield bytes(200_000) if i == 1 else i  # one item in the shared-memory store
        if kind == "crash":
            os._exit(1)
        raise Boom("midway")

    fleet.get(dyn.remote(0), timeout=T)  # warm: a worker and its function
    import gc

    gc.collect()
    baseline = _state.core.num_objects()
    gen = fails.remote(failure)
    refs = list(gen)
    assert len(refs) == 4
    with pytest.raises((Boom, WorkerCrashedError)):
        fleet.get(refs[3], timeout=T)
    del refs, gen
    assert _objects_settle_to(baseline)
    # Dropped before reading anything: the items are freed as they arrive.
    gen = fails.remote(failure)
    fleet.wait([gen.completed()], timeout=T)
    del gen
    assert _objects_settle_to(baseline)


def test_dynamic_failure_and_drop_leak_nothing():
    import gc

    fleet.get(dyn.remote(0), timeout=T)
    gc.collect()
    baseline = _state.core.num_objects()
    ref = gen_then_fail.options(num_returns="dynamic").remote(3)
    refs = list(fleet.get(ref, timeout=T))
    assert len(refs) == 4
    del ref, refs
    assert _objects_settle_to(baseline)

    @fleet.remote(num_returns="dynamic", max_retries=0)
    def dies():
        yield 1
        yield 2
        os._exit(1)

    with pytest.raises(WorkerCrashedError):
        fleet.get(dies.remote(), timeout=T)
    assert _objects_settle_to(baseline)
