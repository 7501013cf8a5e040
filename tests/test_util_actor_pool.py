"""fleet.util.ActorPool: map, map_unordered, submit/get_next, timeouts, membership.

Ray docs: https://docs.ray.io/en/latest/ray-core/api/doc/ray.util.ActorPool.html
"""

import time

import pytest

import fleet
from fleet.util import ActorPool

# One shared cluster per module (conftest.fleet_cluster).
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every blocking call in this module
SLOW = 0.4  # how long a "slow" call runs


@fleet.remote
class Worker:
    def __init__(self, tag):
        self.tag = tag

    def double(self, v):
        return 2 * v

    def tagged(self, v):
        return (self.tag, v)

    def sleep_then(self, args):
        seconds, value = args
        time.sleep(seconds)
        return value

    def fail(self, v):
        raise ValueError(f"bad value {v}")

    def ping(self):
        return self.tag


def double(a, v):
    return a.double.remote(v)


def sleep_then(a, v):
    return a.sleep_then.remote(v)


@pytest.fixture(scope="module")
def actors():
    """Two actors shared by the module's tests (tags 0 and 1)."""
    handles = [Worker.remote(0), Worker.remote(1)]
    assert fleet.get([h.ping.remote() for h in handles], timeout=T) == [0, 1]
    yield handles
    for h in handles:
        fleet.kill(h)


@pytest.fixture
def pool(actors):
    """A fresh pool over the shared actors; waits for their queued calls afterwards."""
    yield ActorPool(actors)
    # Calls dropped by a test may still run: let them end before the next test.
    fleet.get([h.ping.remote() for h in actors], timeout=T)


# ------------------------------------------------------------------ map


def test_map_returns_results_in_order(pool):
    results = pool.map(double, range(10))
    assert iter(results) is results  # an iterator, not a list
    assert list(results) == [2 * v for v in range(10)]
    assert not pool.has_next()


def test_readme_example():
    assert fleet.util.ActorPool is ActorPool
    a1, a2 = Worker.remote(1), Worker.remote(2)
    try:
        p = ActorPool([a1, a2])
        assert list(p.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])) == [2, 4, 6, 8]
    finally:
        fleet.kill(a1)
        fleet.kill(a2)


def test_map_submits_eagerly_and_uses_every_actor(pool):
    results = pool.map(lambda a, v: a.tagged.remote(v), range(8))
    assert pool.has_next()  # submitted before iterating
    assert not pool.has_free()
    out = list(results)
    assert [v for _, v in out] == list(range(8))
    assert {tag for tag, _ in out} == {0, 1}


def test_map_order_does_not_follow_finish_order(pool):
    values = [(SLOW, "slow"), (0, "fast1"), (0, "fast2")]
    assert list(pool.map(sleep_then, values)) == ["slow", "fast1", "fast2"]


def test_map_unordered_yields_as_results_finish(pool):
    values = [(SLOW, "slow"), (0, "fast1"), (0, "fast2")]
    out = list(pool.map_unordered(sleep_then, values))
    assert sorted(out) == ["fast1", "fast2", "slow"]
    assert out[-1] == "slow"
    assert sorted(pool.map_unordered(double, range(20))) == [2 * v for v in range(20)]


def test_map_runs_in_parallel(pool):
    start = time.monotonic()
    assert list(pool.map(sleep_then, [(SLOW, 1), (SLOW, 2)])) == [1, 2]
    assert time.monotonic() - start < 2 * SLOW


def test_map_discards_earlier_unretrieved_submissions(pool):
    pool.submit(double, 100)
    pool.submit(double, 200)
    pool.submit(double, 300)  # waits for an actor
    assert list(pool.map(double, [1, 2])) == [2, 4]
    assert not pool.has_next()


def test_map_empty_values(pool):
    assert list(pool.map(double, [])) == []
    assert list(pool.map_unordered(double, [])) == []
    assert pool.has_free()


# --------------------------------------------------------------- submit


def test_submit_and_get_next_in_order(pool):
    for v in range(5):  # more values than actors: three wait in the pool
        pool.submit(double, v)
    assert not pool.has_free()
    assert pool.has_next()
    assert [pool.get_next(timeout=T) for _ in range(5)] == [0, 2, 4, 6, 8]
    assert not pool.has_next()
    assert pool.has_free()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_unordered_returns_first_finished(pool):
    pool.submit(sleep_then, (SLOW, "slow"))
    pool.submit(sleep_then, (0, "fast"))
    assert pool.get_next_unordered(timeout=T) == "fast"
    assert pool.get_next_unordered(timeout=T) == "slow"
    assert not pool.has_next()


def test_get_next_skips_results_already_returned_unordered(pool):
    pool.submit(sleep_then, (SLOW, "a"))
    pool.submit(sleep_then, (0, "b"))
    pool.submit(sleep_then, (0, "c"))
    assert pool.get_next_unordered(timeout=T) == "b"
    assert pool.get_next(timeout=T) == "a"
    assert pool.get_next(timeout=T) == "c"
    assert not pool.has_next()


def test_get_next_timeout_keeps_the_task(pool):
    pool.submit(sleep_then, (SLOW, "late"))
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    assert time.monotonic() - start < SLOW
    assert pool.has_next()
    assert pool.get_next(timeout=T) == "late"


def test_get_next_timeout_ignore_drops_the_task(pool):
    pool.submit(sleep_then, (SLOW, "dropped"))
    pool.submit(sleep_then, (0, "kept"))
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert pool.get_next(timeout=T) == "kept"
    assert not pool.has_next()
    assert pool.has_free()


def test_get_next_unordered_timeout(pool):
    pool.submit(sleep_then, (SLOW, "late"))
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    assert pool.get_next_unordered(timeout=T) == "late"


def test_get_next_unordered_timeout_ignore_drops_oldest(pool):
    pool.submit(sleep_then, (SLOW, "first"))
    pool.submit(sleep_then, (SLOW, "second"))
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next_unordered(timeout=0.05, ignore_if_timedout=True)
    assert pool.get_next_unordered(timeout=T) == "second"
    assert not pool.has_next()


def test_zero_timeout_returns_a_ready_result(pool):
    pool.submit(double, 21)
    deadline = time.monotonic() + T
    while True:
        try:
            assert pool.get_next(timeout=0) == 42
            break
        except TimeoutError:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_task_error_is_raised_and_actor_returns_to_pool(pool):
    pool.submit(lambda a, v: a.fail.remote(v), 7)
    with pytest.raises(ValueError, match="bad value 7") as info:
        pool.get_next(timeout=T)
    assert isinstance(info.value, fleet.exceptions.RayTaskError)
    assert pool.has_free()
    assert list(pool.map(double, [1, 2, 3])) == [2, 4, 6]


# ------------------------------------------------------------ membership


def test_pop_idle_and_push(pool, actors):
    assert pool.has_free()
    first = pool.pop_idle()
    second = pool.pop_idle()
    tags = fleet.get([first.ping.remote(), second.ping.remote()], timeout=T)
    assert sorted(tags) == [0, 1]
    assert pool.pop_idle() is None
    assert not pool.has_free()
    pool.push(first)
    assert pool.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(first)
    # With one actor, everything runs on it.
    assert {t for t, _ in pool.map(lambda a, v: a.tagged.remote(v), range(4))} == {tags[0]}
    pool.push(second)
    assert {t for t, _ in pool.map(lambda a, v: a.tagged.remote(v), range(6))} == {0, 1}


def test_push_busy_actor_is_rejected(actors):
    p = ActorPool([actors[0]])
    p.submit(double, 1)
    with pytest.raises(ValueError, match="already belongs"):
        p.push(actors[0])
    assert p.get_next(timeout=T) == 2


def test_push_starts_a_waiting_submission(actors):
    p = ActorPool([])
    p.submit(double, 5)
    assert not p.has_next()  # nothing can run it yet
    assert not p.has_free()
    assert p.pop_idle() is None
    p.push(actors[1])
    assert p.has_next()
    assert p.get_next(timeout=T) == 10


def test_dead_actor_leaves_the_pool():
    victim = Worker.remote(9)
    assert fleet.get(victim.ping.remote(), timeout=T) == 9
    p = ActorPool([victim])
    fleet.kill(victim)
    p.submit(double, 1)
    with pytest.raises(fleet.exceptions.RayActorError):
        p.get_next(timeout=T)
    assert not p.has_free()
    assert p.pop_idle() is None


# ------------------------------------------------------------ bad input


def test_bad_input_gives_clear_errors(pool):
    with pytest.raises(TypeError, match="list of actor handles"):
        ActorPool(5)
    with pytest.raises(TypeError, match="callable"):
        pool.submit("not a function", 1)
    with pytest.raises(TypeError, match="must return the ObjectRef"):
        pool.submit(lambda a, v: v, 1)  # forgot .remote()
    assert pool.has_free() and not pool.has_next()  # the actor stayed idle
    with pytest.raises(TypeError, match="must return the ObjectRef"):
        pool.map(lambda a, v: a.double, [1])  # the method, not a call of it
    assert pool.has_free()
    pool.submit(double, 1)
    with pytest.raises(ValueError, match="non-negative"):
        pool.get_next(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        pool.get_next_unordered(timeout="soon")
    assert pool.get_next(timeout=T) == 2
    with pytest.raises(ValueError, match="no actors"):
        ActorPool([]).map(double, [1, 2])
