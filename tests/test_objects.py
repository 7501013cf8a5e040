"""Objects: put/get round trips, get timeouts, wait, and ObjectRef semantics.

Ray docs: https://docs.ray.io/en/latest/ray-core/objects.html, the API
reference of ray.get / ray.put / ray.wait and ray.ObjectRef.
"""

import asyncio
import time

import numpy as np
import pytest

import fleet
from fleet import ObjectRef
from fleet.exceptions import GetTimeoutError, RayError

# One shared cluster per module (conftest.fleet_cluster).
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 30


@fleet.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@fleet.remote
def echo(x):
    return x


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


# ---------------------------------------------------------------- get


def test_get_single_and_list():
    r1, r2 = echo.remote(1), echo.remote(2)
    assert fleet.get(r1, timeout=T) == 1
    assert fleet.get([r1, r2], timeout=T) == [1, 2]
    assert fleet.get([], timeout=T) == []


def test_get_same_ref_twice_in_list():
    r = fleet.put("x")
    assert fleet.get([r, r], timeout=T) == ["x", "x"]


def test_get_timeout_raises_get_timeout_error():
    ref = sleep_then.remote(1.5, "late")
    t0 = time.monotonic()
    with pytest.raises(GetTimeoutError) as info:
        fleet.get(ref, timeout=0.3)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.2, elapsed
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, RayError)
    assert isinstance(info.value, fleet.exceptions.GetTimeoutError)
    # The object is still produced afterwards.
    assert fleet.get(ref, timeout=T) == "late"


def test_get_timeout_on_list():
    ready = fleet.put(1)
    slow = sleep_then.remote(1.0, 2)
    with pytest.raises(TimeoutError):
        fleet.get([ready, slow], timeout=0.3)
    assert fleet.get([ready, slow], timeout=T) == [1, 2]


def test_get_timeout_zero_on_ready_object():
    r = fleet.put(5)
    assert fleet.get(r, timeout=0) == 5


def test_get_rejects_non_refs():
    with pytest.raises((ValueError, TypeError)):
        fleet.get(5, timeout=T)
    with pytest.raises((ValueError, TypeError)):
        fleet.get([fleet.put(1), 5], timeout=T)


# ---------------------------------------------------------------- put


VALUES = [
    {"a": 1, "b": [1, 2, {"c": None}]},
    b"\x00\x01binary\xff",
    None,
    [[1, 2], [3, [4, [5]]], []],
    (1, "two", 3.0),
    {1, 2, 3},
    "unicode \u2603",
    12345678901234567890,
    Point(1, 2),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_put_get_round_trip(value):
    assert fleet.get(fleet.put(value), timeout=T) == value


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_task_round_trip(value):
    assert fleet.get(echo.remote(value), timeout=T) == value


def test_put_get_numpy_array():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = fleet.get(fleet.put(arr), timeout=T)
    assert isinstance(out, np.ndarray)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert np.array_equal(out, arr)


def test_large_values():
    big = np.random.default_rng(0).integers(0, 255, size=20 * 1024 * 1024, dtype=np.uint8)
    out = fleet.get(fleet.put(big), timeout=T)
    assert np.array_equal(out, big)
    out2 = fleet.get(echo.remote(big), timeout=T)
    assert np.array_equal(out2, big)
    blob = b"z" * (8 * 1024 * 1024)
    assert fleet.get(echo.remote(blob), timeout=T) == blob


def test_put_object_ref_raises_type_error():
    r = fleet.put(1)
    with pytest.raises(TypeError):
        fleet.put(r)


def test_put_list_containing_ref_is_allowed():
    r = fleet.put(1)
    outer = fleet.get(fleet.put([r]), timeout=T)
    assert isinstance(outer[0], ObjectRef)
    assert outer[0] == r
    assert fleet.get(outer[0], timeout=T) == 1


def test_value_is_a_copy():
    data = [1, 2, 3]
    r = fleet.put(data)
    data.append(4)
    assert fleet.get(r, timeout=T) == [1, 2, 3]


# ---------------------------------------------------------------- ObjectRef


def test_object_ref_hash_repr_eq():
    r1 = fleet.put(1)
    r2 = fleet.put(1)
    assert r1 != r2
    # Another ObjectRef object for the same object equals it.
    r1_again = fleet.get(fleet.put([r1]), timeout=30)[0]
    assert r1_again is not r1
    assert r1_again == r1 and not (r1_again != r1)
    assert hash(r1_again) == hash(r1)
    h = r1.hex()
    assert isinstance(h, str) and h
    int(h, 16)  # valid hex
    assert h in repr(r1)
    assert h in str(r1)
    assert isinstance(r1.binary(), bytes) and r1.binary().hex() == h

    d = {r1: "one", r2: "two"}
    assert d[r1] == "one" and d[r2] == "two"
    s = {r1, r2, r1_again}
    assert len(s) == 2

    # A second ObjectRef object for the same object (via a round trip) is
    # equal, hashes the same and finds the same dict entry.
    same = fleet.get(fleet.put([r1]), timeout=T)[0]
    assert same is not r1
    assert same == r1
    assert hash(same) == hash(r1)
    assert d[same] == "one"
    assert same in s


def test_refs_from_tasks_are_distinct():
    refs = [echo.remote(1) for _ in range(10)]
    assert len(set(refs)) == 10
    assert fleet.get(refs, timeout=T) == [1] * 10


def test_object_ref_future_and_await():
    r = echo.remote("fut")
    assert r.future().result(timeout=T) == "fut"

    async def main():
        return await asyncio.wait_for(echo.remote("aw"), timeout=T)

    assert asyncio.run(main()) == "aw"


# ---------------------------------------------------------------- wait


def test_wait_all_ready_num_returns():
    refs = [fleet.put(i) for i in range(5)]
    assert fleet.get(refs, timeout=T) == list(range(5))
    ready, not_ready = fleet.wait(refs, num_returns=2, timeout=T)
    assert ready == refs[:2]
    assert not_ready == refs[2:]
    ready, not_ready = fleet.wait(refs, timeout=T)
    assert ready == refs[:1] and not_ready == refs[1:]
    ready, not_ready = fleet.wait(refs, num_returns=5, timeout=T)
    assert ready == refs and not_ready == []


def test_wait_timeout_returns_partial_lists():
    fast = [fleet.put("a"), fleet.put("b")]
    slow = sleep_then.remote(1.5, "slow")
    refs = [fast[0], slow, fast[1]]
    t0 = time.monotonic()
    ready, not_ready = fleet.wait(refs, num_returns=3, timeout=0.5)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 1.3, elapsed
    assert ready == fast  # in input order
    assert not_ready == [slow]
    assert fleet.get(slow, timeout=T) == "slow"


def test_wait_timeout_zero():
    slow = sleep_then.remote(1.0, 0)
    t0 = time.monotonic()
    ready, not_ready = fleet.wait([slow], timeout=0)
    assert time.monotonic() - t0 < 0.5
    assert ready == [] and not_ready == [slow]
    fleet.get(slow, timeout=T)


def test_wait_returns_when_num_returns_ready():
    slow = sleep_then.remote(1.5, 2)
    fast = fleet.put(1)
    t0 = time.monotonic()
    ready, not_ready = fleet.wait([slow, fast], num_returns=1, timeout=T)
    assert time.monotonic() - t0 < 1.2
    assert ready == [fast] and not_ready == [slow]
    fleet.get(slow, timeout=T)


def test_wait_preserves_input_order():
    refs = [sleep_then.remote(0.15 * (3 - i), i) for i in range(3)]  # finish in reverse
    ready, not_ready = fleet.wait(refs, num_returns=3, timeout=T)
    assert ready == refs and not_ready == []
    shuffled = [refs[2], refs[0], refs[1]]
    ready, not_ready = fleet.wait(shuffled, num_returns=3, timeout=T)
    assert ready == shuffled
    ready, not_ready = fleet.wait(shuffled, num_returns=2, timeout=T)
    assert ready == shuffled[:2] and not_ready == shuffled[2:]


def test_wait_loop_collects_everything():
    pending = [sleep_then.remote(0.05 * (i % 3), i) for i in range(9)]
    done = []
    while pending:
        ready, pending = fleet.wait(pending, timeout=T)
        assert len(ready) == 1
        done.extend(fleet.get(ready, timeout=T))
    assert sorted(done) == list(range(9))


def test_wait_duplicates_raise_value_error():
    r = fleet.put(1)
    with pytest.raises(ValueError):
        fleet.wait([r, r], timeout=T)


def test_wait_num_returns_too_large_raises_value_error():
    refs = [fleet.put(1), fleet.put(2)]
    with pytest.raises(ValueError):
        fleet.wait(refs, num_returns=3, timeout=T)


def test_wait_rejects_a_single_ref():
    with pytest.raises(TypeError):
        fleet.wait(fleet.put(1), timeout=T)


# ---------------------------------------------------------------- interrupts


class _Interrupted(Exception):
    pass


def test_blocking_get_is_interruptible_by_a_signal():
    # Like Ctrl-C on a driver blocked in ray.get: the signal handler runs (and
    # its exception propagates) without waiting for the object.
    import signal

    def handler(signum, frame):
        raise _Interrupted()

    old = signal.signal(signal.SIGALRM, handler)
    ref = sleep_then.remote(2.0, "done")
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        with pytest.raises(_Interrupted):
            fleet.get(ref, timeout=20)
        assert time.monotonic() - t0 < 2.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert fleet.get(ref, timeout=T) == "done"
