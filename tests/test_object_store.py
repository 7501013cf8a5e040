"""The node's shared-memory object store: zero-copy gets, large values in
tasks/actors/generators, pinning, freeing, spilling, errors and visibility.

Ray docs: https://docs.ray.io/en/latest/ray-core/objects.html,
.../ray-core/objects/serialization.html (numpy arrays are zero-copy, read-only
views of shared memory), .../ray-core/objects/object-spilling.html
(object_spilling_config), .../ray-observability/user-guides/debug-apps/debug-memory.html
(``ray memory``, call sites) and the API reference of ray.util.state.list_objects.

Values larger than the inline threshold (100 KiB serialized) live in the store.
Each group of tests starts its own cluster (a 512 MiB store shared by the tests
of a class, since one test gets a 400 MiB array; a fresh 100 MiB store with a
private spill directory per spilling/store-full test) and checks after
shutdown that no process of the cluster is left behind.
"""

import array
import gc
import inspect
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

from fleet_test_utils import (  # isort: skip
    Proc,
    fleet_env,
    kill_leftovers,
    run_argv,
    shutdown_checked,
    wait_dead,
    wait_until,
)

import fleet  # isort: skip
from fleet._private import internal_api  # isort: skip
from fleet._private import state as _state  # isort: skip
from fleet.exceptions import (  # isort: skip
    ObjectLostError,
    ObjectStoreFullError,
    TaskCancelledError,
    WorkerCrashedError,
)
from fleet.util.state import list_objects, memory_summary  # isort: skip

pytestmark = pytest.mark.timeout(90)

T = 30  # timeout (s) for every get in this module
MiB = 1 << 20
BIG_STORE = 512 * MiB
SMALL_STORE = 100 * MiB
FULL_TIMEOUT_MS = 1000  # object_store_full_timeout_ms of every cluster here


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _start(store_bytes, spill_dir=None, num_cpus=2):
    if fleet.is_initialized():
        fleet.shutdown()
    config = {"object_store_full_timeout_ms": FULL_TIMEOUT_MS}
    if spill_dir is not None:
        config["object_spilling_config"] = json.dumps(
            {"type": "filesystem", "params": {"directory_path": str(spill_dir)}}
        )
    return fleet.init(num_cpus=num_cpus, object_store_memory=store_bytes, _system_config=config)


def _stop():
    left = shutdown_checked(10.0)
    if left:
        pytest.fail(f"processes of the cluster outlived shutdown: {left}")


@pytest.fixture(scope="class")
def big_store(tmp_path_factory):
    """A 2-CPU cluster with a 512 MiB store, shared by the tests of a class."""
    spill = tmp_path_factory.mktemp("spill-big")
    _start(BIG_STORE, spill)
    try:
        yield str(spill)
    finally:
        _stop()


@pytest.fixture
def small_store(tmp_path):
    """A fresh 2-CPU cluster with a 100 MiB store; yields its spill directory."""
    spill = tmp_path / "spill"
    _start(SMALL_STORE, spill)
    try:
        yield str(spill)
    finally:
        _stop()


def _info():
    """The store's counters (used, capacity, spilled_total, restored_total, spill_dir...)."""
    raw = _state.core.store_list()
    return {k: v for k, v in raw.items() if k != "objects"}


def _used():
    return _info()["used"]


def _obj(ref):
    """The list_objects record of `ref` (an ObjectRef or its hex id), or None."""
    h = ref if isinstance(ref, str) else ref.hex()
    found = list_objects(filters=[("object_id", "=", h)])
    return found[0] if found else None


def _addr(a):
    return a.__array_interface__["data"][0]


def _wait(cond, timeout=10.0, what=""):
    """Polls `cond` until true; `what` (text, or a function giving it) says what failed."""
    if not wait_until(cond, timeout, 0.02):
        text = what() if callable(what) else what
        raise AssertionError(f"timed out after {timeout} s waiting for {text}")


def _wait_used(expected):
    _wait(
        lambda: _used() == expected,
        10.0,
        lambda: f"the store's used bytes to return to {expected}; now {_info()}, "
        f"objects: {list_objects()}",
    )


def _spill_files(spill_dir):
    return sorted(os.listdir(spill_dir)) if os.path.isdir(spill_dir) else []


def _put_until_spilled(ref, size, value=0):
    """Puts 20 MiB fillers until `ref` is on disk only; returns the fillers."""
    fillers = []
    for _ in range(12):
        o = _obj(ref)
        if o is not None and o.where == "spilled":
            return fillers
        fillers.append(fleet.put(np.full(size, value, dtype=np.uint8)))
    _wait(lambda: _obj(ref).where == "spilled", 10.0, f"{ref.hex()} to be spilled")
    return fillers


# --------------------------------------------------------------------------
# Remote functions and actors
# --------------------------------------------------------------------------

N20 = 20 * MiB // 8  # int64 elements of a 20 MiB array


@fleet.remote
def filled(n, value):
    return np.full(n, value, dtype=np.int64)


@fleet.remote
def describe(a):
    """What a task sees of its array argument."""
    return int(a.sum()), bool(a.flags.writeable), a.nbytes


@fleet.remote
def get_inside(refs):
    """Gets refs passed inside a list (not resolved by fleet) from the worker."""
    out = []
    for r in refs:
        a = fleet.get(r, timeout=T)
        out.append((int(a.sum()), bool(a.flags.writeable)))
    return out


@fleet.remote(num_returns=2)
def two_large(n):
    return np.full(n, 1, dtype=np.int64), np.full(n, 2, dtype=np.int64)


@fleet.remote
def large_items(n, k):
    for i in range(k):
        yield np.full(n, i, dtype=np.int64)


@fleet.remote
def add_sums(a, b):
    return int(a.sum()) + int(b.sum())


@fleet.remote
def too_large_return(nbytes):
    return np.zeros(nbytes, dtype=np.uint8)


@fleet.remote
def pid():
    return os.getpid()


@fleet.remote(max_retries=0)
def write_until_killed(nbytes, exit_self):
    """Puts a large array over and over (each ref dropped at once). With
    `exit_self`, a thread ends the process with os._exit(1) as soon as the
    store lists an object being written (the main thread copies without the
    GIL, so the exit lands mid-write)."""
    from fleet.util.state import list_objects as objects

    a = np.ones(nbytes, dtype=np.uint8)

    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(o.where == "creating" for o in objects()):
                os._exit(1)
        os._exit(3)

    if exit_self:
        threading.Thread(target=watch, daemon=True).start()
    while True:
        fleet.put(a)


@fleet.remote
class Holder:
    def __init__(self):
        self.a = None

    def keep(self, a):
        self.a = a
        return bool(a.flags.writeable), int(a.sum())

    def doubled(self):
        return self.a * 2

    def drop(self):
        self.a = None
        return True


# --------------------------------------------------------------------------
# Zero copy, large values, pinning, baseline, crashes, visibility (512 MiB)
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("big_store")
class TestZeroCopy:
    def test_numpy_get_is_a_read_only_view_without_copy(self):
        src = np.arange(50 * MiB // 8, dtype=np.int64)
        ref = fleet.put(src)
        assert _obj(ref) is not None, "a 50 MiB array must live in the object store"
        a = fleet.get(ref, timeout=T)
        assert a.flags.writeable is False
        assert a.base is not None
        assert not a.flags.owndata
        assert a.dtype == src.dtype and a.shape == src.shape
        np.testing.assert_array_equal(a, src)
        with pytest.raises(ValueError):
            a[0] = 1
        # Two gets of the same ref: the same shared memory (no copy).
        b = fleet.get(ref, timeout=T)
        assert _addr(a) == _addr(b)
        assert np.shares_memory(a, b)
        assert _addr(a) != _addr(src)
        # put() copied the value: changing the source later changes nothing stored.
        src[0] = -1
        assert fleet.get(ref, timeout=T)[0] == 0
        del a, b, ref

    def test_get_of_400mb_is_fast(self):
        base = _used()
        ref = fleet.put(np.full(400 * MiB, 7, dtype=np.uint8))
        t0 = time.perf_counter()
        a = fleet.get(ref, timeout=T)
        elapsed = time.perf_counter() - t0
        # A sanity bound only (a copy of 400 MiB takes longer on this machine);
        # the microbenchmark measures it precisely.
        assert elapsed < 0.5, f"get of a 400 MiB array took {elapsed:.3f} s"
        assert a.nbytes == 400 * MiB and a[0] == 7 and a[-1] == 7
        assert a.flags.writeable is False and not a.flags.owndata
        b = fleet.get(ref, timeout=T)
        assert _addr(a) == _addr(b)
        del a, b, ref
        _wait_used(base)

    @pytest.mark.parametrize(
        "make",
        [
            lambda: b"\x01\x02" * (3 * MiB),
            lambda: bytearray(b"ab" * (3 * MiB)),
            lambda: memoryview(b"xyz" * (2 * MiB)),
            lambda: array.array("d", range(MiB)),
            lambda: pickle.PickleBuffer(bytearray(b"q" * (5 * MiB))),
        ],
        ids=["bytes", "bytearray", "memoryview", "array.array", "PickleBuffer"],
    )
    def test_buffer_like_values_round_trip(self, make):
        value = make()
        ref = fleet.put(value)
        assert _obj(ref) is not None, "a value of several MiB must live in the store"
        out = fleet.get(ref, timeout=T)
        if isinstance(value, (bytes, bytearray, array.array)):
            assert type(out) is type(value)
            assert out == value
        else:
            assert bytes(memoryview(out)) == bytes(memoryview(value))
        del out, ref

    def test_nested_containers_of_arrays(self):
        rng = np.random.default_rng(0)
        value = {
            "floats": rng.random(MiB // 8, dtype=np.float64),
            "list": [
                np.arange(MiB, dtype=np.int16),
                rng.random((512, 256), dtype=np.float32),
                np.asfortranarray(rng.integers(0, 100, (300, 700))),
                np.arange(2 * MiB, dtype=np.int32)[::3],  # not contiguous
                np.zeros(0, dtype=np.uint8),
                np.ones(MiB, dtype=bool),
            ],
            "meta": ("name", 3, None),
        }
        ref = fleet.put(value)
        assert _obj(ref) is not None
        out = fleet.get(ref, timeout=T)
        assert set(out) == set(value) and out["meta"] == value["meta"]
        pairs = [(out["floats"], value["floats"])] + list(zip(out["list"], value["list"]))
        assert len(out["list"]) == len(value["list"])
        for got, want in pairs:
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        assert out["floats"].flags.writeable is False
        assert out["list"][0].flags.writeable is False
        assert out["list"][2].flags.f_contiguous
        del out, ref

    def test_unpicklable_values_raise_type_error_naming_the_type(self):
        with pytest.raises(TypeError, match="lock"):
            fleet.put(threading.Lock())
        with pytest.raises(TypeError, match="generator"):
            fleet.put(i for i in range(3))
        # Also when the unpicklable value sits beside a large array.
        with pytest.raises(TypeError, match="lock"):
            fleet.put({"a": np.ones(MiB), "lock": threading.Lock()})
        # Nothing was left in the store, and put works afterwards.
        assert fleet.get(fleet.put(np.ones(MiB)), timeout=T).sum() == MiB


@pytest.mark.usefixtures("big_store")
class TestLargeValues:
    def test_task_returns_large_array(self):
        base = _used()
        ref = filled.remote(N20, 3)
        a = fleet.get(ref, timeout=T)
        assert _obj(ref) is not None, "a 20 MiB return value must live in the store"
        assert a.shape == (N20,) and a[0] == 3 and a[-1] == 3 and int(a.sum()) == 3 * N20
        assert a.flags.writeable is False
        del a, ref
        _wait_used(base)

    def test_task_takes_large_array_directly(self):
        base = _used()
        total, writeable, nbytes = fleet.get(
            describe.remote(np.full(N20, 2, dtype=np.int64)), timeout=T
        )
        assert (total, nbytes) == (2 * N20, 20 * MiB)
        assert writeable is False, "a task's array argument must be read-only"
        # The argument's copy in the store goes once the task is done.
        _wait_used(base)

    def test_task_takes_ref_to_stored_array(self):
        ref = fleet.put(np.full(N20, 5, dtype=np.int64))
        total, writeable, _ = fleet.get(describe.remote(ref), timeout=T)
        assert total == 5 * N20 and writeable is False
        # A ref inside a list is not resolved: the worker gets it itself.
        ref2 = fleet.put(np.full(N20, 4, dtype=np.int64))
        assert fleet.get(get_inside.remote([ref, ref2]), timeout=T) == [
            (5 * N20, False),
            (4 * N20, False),
        ]
        del ref, ref2

    def test_num_returns_two_large(self):
        base = _used()
        r1, r2 = two_large.remote(N20)
        a, b = fleet.get([r1, r2], timeout=T)
        assert _obj(r1) is not None and _obj(r2) is not None
        assert int(a.sum()) == N20 and int(b.sum()) == 2 * N20
        assert a.flags.writeable is False and b.flags.writeable is False
        del a, b, r1, r2
        _wait_used(base)

    def test_streaming_generator_of_large_arrays(self):
        base = _used()
        seen = []
        for i, ref in enumerate(large_items.remote(N20, 3)):
            a = fleet.get(ref, timeout=T)
            assert a.shape == (N20,) and a[0] == i and a[-1] == i
            assert a.flags.writeable is False
            seen.append(int(a.sum()))
            del a, ref
        assert seen == [0, N20, 2 * N20]
        _wait_used(base)

    def test_actor_receives_and_returns_large_arrays(self):
        base = _used()
        h = Holder.remote()
        keep_line = inspect.currentframe().f_lineno + 1
        writeable, total = fleet.get(h.keep.remote(np.full(N20, 3, dtype=np.int64)), timeout=T)
        assert writeable is False and total == 3 * N20
        doubled = fleet.get(h.doubled.remote(), timeout=T)
        assert doubled.shape == (N20,) and int(doubled.sum()) == 6 * N20
        assert doubled.flags.writeable is False
        del doubled
        # The actor holds a view of its argument: that object stays pinned.
        site = f"{__file__}:{keep_line}"
        arg = [o for o in list_objects() if site in o.call_site]
        assert len(arg) == 1, (site, list_objects())
        assert arg[0].pinned and arg[0].pins >= 1 and arg[0].object_size >= 20 * MiB
        assert fleet.get(h.drop.remote(), timeout=T) is True
        _wait(
            lambda: not [o for o in list_objects() if site in o.call_site],
            10.0,
            "the actor's argument to leave the store once the actor lets go of it",
        )
        fleet.kill(h)
        _wait_used(base)


@pytest.mark.usefixtures("big_store")
class TestPinning:
    def test_view_pins_until_released(self):
        base = _used()
        ref = fleet.put(np.ones(10 * MiB, dtype=np.uint8))
        h = ref.hex()
        assert _obj(ref).pins == 0 and not _obj(ref).pinned
        a = fleet.get(ref, timeout=T)
        o = _obj(ref)
        assert o.pinned and o.pins >= 1 and o.where == "memory"
        del a
        gc.collect()
        _wait(lambda: _obj(h).pins == 0, 5.0, "pins to drop after del of the view")
        assert not _obj(ref).pinned
        # Still there while the ref lives; gone after del of the ref.
        assert fleet.get(ref, timeout=T)[-1] == 1
        gc.collect()
        del ref
        _wait(lambda: _obj(h) is None, 10.0,
              "the object to leave the store")
        _wait_used(base)

    def test_slice_of_a_view_keeps_the_pin(self):
        ref = fleet.put(np.arange(10 * MiB // 8, dtype=np.int64))
        h = ref.hex()
        a = fleet.get(ref, timeout=T)
        part = a[100:110]
        del a
        gc.collect()
        assert _obj(ref).pins >= 1, "a slice of the view still uses the shared memory"
        assert list(part) == list(range(100, 110))
        del part
        gc.collect()
        _wait(lambda: _obj(h).pins == 0, 5.0, "pins to drop after del of the slice")
        del ref

    def test_object_outlives_its_ref_while_viewed(self):
        base = _used()
        ref = fleet.put(np.full(10 * MiB, 9, dtype=np.uint8))
        h = ref.hex()
        a = fleet.get(ref, timeout=T)
        del ref
        gc.collect()
        time.sleep(0.2)
        o = _obj(h)
        assert o is not None and o.freed and o.pinned, o
        # The memory stays valid (no other object reuses it while viewed).
        filler = fleet.put(np.zeros(10 * MiB, dtype=np.uint8))
        assert int(a.sum()) == 9 * 10 * MiB
        del filler
        del a
        gc.collect()
        _wait(lambda: _obj(h) is None, 10.0,
              "the freed object to leave the store once its last view goes")
        _wait_used(base)


def _rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.usefixtures("big_store")
class TestBaseline:
    def test_memory_returns_to_baseline_after_1000_rounds(self):
        src = np.ones(10 * MiB, dtype=np.uint8)
        for _ in range(10):  # warm up (first touch of the pages, imports)
            r = fleet.put(src)
            v = fleet.get(r, timeout=T)
            del r, v
        gc.collect()
        _wait(lambda: not list_objects(), 10.0, "an empty store before the rounds")
        used0, rss0, objects0 = _used(), _rss_mib(), len(list_objects())
        for i in range(1000):
            r = fleet.put(src)
            v = fleet.get(r, timeout=T)
            if i % 100 == 0:
                assert v[0] == 1 and v[-1] == 1 and v.nbytes == 10 * MiB
            del r, v
        gc.collect()
        _wait_used(used0)
        assert len(list_objects()) == objects0
        grown = _rss_mib() - rss0
        assert grown < 100, f"driver RSS grew by {grown:.0f} MiB over 1000 rounds"


@pytest.mark.usefixtures("big_store")
class TestWriterDies:
    @pytest.mark.parametrize("how", ["os._exit", "cancel(force=True)"])
    def test_writer_dying_mid_write_leaves_nothing(self, how):
        base = _used()
        ref = write_until_killed.remote(150 * MiB, how == "os._exit")
        if how == "os._exit":
            with pytest.raises(WorkerCrashedError) as info:
                fleet.get(ref, timeout=T)
            # Exit code 1: the worker saw an object being written and exited
            # then (3: it never saw one).
            assert "code 1" in str(info.value), str(info.value)
            del info
        else:
            _wait(lambda: any(o.where == "creating" for o in list_objects()), 20.0,
                  "the task to be writing an object")
            fleet.cancel(ref, force=True)
            with pytest.raises((TaskCancelledError, WorkerCrashedError)):
                fleet.get(ref, timeout=T)
        _wait(lambda: not [o for o in list_objects() if o.where == "creating"], 10.0,
              "no object left half-written")
        _wait_used(base)
        assert list_objects() == []
        # The store still works.
        r = fleet.put(np.full(150 * MiB, 1, dtype=np.uint8))
        assert fleet.get(r, timeout=T)[-1] == 1
        del r


@pytest.mark.usefixtures("big_store")
class TestVisibility:
    def test_list_objects_and_memory_summary(self, big_store):
        put_line = inspect.currentframe().f_lineno + 1
        ref = fleet.put(np.ones(3 * MiB, dtype=np.uint8))
        o = _obj(ref)
        assert o is not None
        assert f"{__file__}:{put_line}" in o.call_site, o.call_site
        assert o.where == "memory" and o.object_size >= 3 * MiB and not o.freed
        assert o.owner
        a = fleet.get(ref, timeout=T)
        assert _obj(ref).pinned
        info = _info()
        for text in (memory_summary(), internal_api.memory_summary()):
            assert ref.hex() in text
            assert f"{os.path.basename(__file__)}:{put_line}" in text
            assert info["spill_dir"] in text  # the spill directory, in the header
        assert info["capacity"] == BIG_STORE
        assert info["used"] >= 3 * MiB
        assert os.path.realpath(info["spill_dir"]) == os.path.realpath(big_store)
        del a, ref


# --------------------------------------------------------------------------
# Spilling and errors (a fresh 100 MiB store each)
# --------------------------------------------------------------------------


def test_spill_and_restore_three_times_the_store(small_store):
    spill_dir = small_store
    n = 20 * MiB // 8
    refs = [fleet.put(np.full(n, i, dtype=np.int64)) for i in range(15)]
    ids = {r.hex() for r in refs}
    info = _info()
    assert info["spilled_total"] > 0, info
    assert os.path.realpath(info["spill_dir"]) == os.path.realpath(spill_dir)
    files = _spill_files(spill_dir)
    assert files, "the spill files must be in the configured directory"
    assert set(files) <= ids, files
    spilled = [o for o in list_objects() if o.where == "spilled"]
    assert len(spilled) >= 10, [(o.object_id, o.where) for o in list_objects()]
    assert info["spill_dir"] in memory_summary()
    for i, r in enumerate(refs):
        a = fleet.get(r, timeout=T)
        assert a.shape == (n,) and a[0] == i and a[-1] == i
        assert np.all(a == i), f"object {i} came back with other contents"
        del a
    # A task reads spilled objects too (restored for its worker).
    assert fleet.get(describe.remote(refs[0]), timeout=T)[0] == 0
    assert fleet.get(describe.remote(refs[1]), timeout=T)[0] == n
    assert _info()["restored_total"] > 0
    del refs, r
    gc.collect()
    _wait(lambda: not _spill_files(spill_dir), 10.0, "the spill files to be deleted")
    _wait(lambda: not list_objects(), 10.0, "an empty store")
    assert _used() == 0


def test_put_larger_than_store_fails_at_once(small_store):
    value = np.zeros(150 * MiB, dtype=np.uint8)
    t0 = time.monotonic()
    with pytest.raises(ObjectStoreFullError) as info:
        fleet.put(value)
    assert time.monotonic() - t0 < FULL_TIMEOUT_MS / 1000, "no waiting for the impossible"
    assert "150.0 MiB" in str(info.value), str(info.value)
    # The same from a task's return value.
    with pytest.raises(ObjectStoreFullError) as info:
        fleet.get(too_large_return.remote(150 * MiB), timeout=T)
    assert "150.0 MiB" in str(info.value), str(info.value)
    ref = fleet.put(np.ones(50 * MiB, dtype=np.uint8))
    assert fleet.get(ref, timeout=T)[-1] == 1


def test_store_full_of_pinned_objects(small_store):
    refs = [fleet.put(np.full(20 * MiB, i, dtype=np.uint8)) for i in range(4)]
    views = [fleet.get(r, timeout=T) for r in refs]
    t0 = time.monotonic()
    with pytest.raises(ObjectStoreFullError) as info:
        fleet.put(np.zeros(30 * MiB, dtype=np.uint8))
    elapsed = time.monotonic() - t0
    assert 0.8 * FULL_TIMEOUT_MS / 1000 <= elapsed < FULL_TIMEOUT_MS / 1000 + 10, elapsed
    assert "pinned" in str(info.value), str(info.value)
    del info, views
    gc.collect()
    # Once the views are gone, the put succeeds (spilling what it must) and
    # nothing was lost.
    ref = fleet.put(np.full(30 * MiB, 9, dtype=np.uint8))
    assert fleet.get(ref, timeout=T)[-1] == 9
    for i, r in enumerate(refs):
        a = fleet.get(r, timeout=T)
        assert a[0] == i and a[-1] == i
        del a


def test_task_args_larger_than_store_fail_with_store_full(small_store):
    """Two 60 MiB arguments cannot be pinned together in a 100 MiB store: the
    task fails with ObjectStoreFullError (its worker must not crash)."""
    a = np.ones(60 * MiB, dtype=np.uint8)
    with pytest.raises(ObjectStoreFullError):
        fleet.get(add_sums.options(max_retries=0).remote(a, a), timeout=T)
    assert fleet.get(add_sums.remote(a[: 20 * MiB], a[: 20 * MiB]), timeout=T) == 40 * MiB


def _lose_spill_file(spill_dir, damage):
    """Puts a 20 MiB object, pushes it to disk, and damages its spill file."""
    ref = fleet.put(np.full(20 * MiB, 1, dtype=np.uint8))
    fillers = _put_until_spilled(ref, 20 * MiB, 2)
    path = os.path.join(spill_dir, ref.hex())
    assert os.path.exists(path), (path, _spill_files(spill_dir))
    damage(path)
    return ref, fillers


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(1000)


def test_deleted_spill_file_loses_only_that_object(small_store):
    ref, fillers = _lose_spill_file(small_store, os.unlink)
    with pytest.raises(ObjectLostError) as info:
        fleet.get(ref, timeout=T)
    assert ref.hex() in str(info.value), str(info.value)
    # The cluster keeps working: tasks run, other (spilled) objects read back.
    assert isinstance(fleet.get(pid.remote(), timeout=T), int)
    for f in fillers:
        assert fleet.get(f, timeout=T)[-1] == 2
    other = fleet.put(np.full(20 * MiB, 5, dtype=np.uint8))
    assert fleet.get(describe.remote(other), timeout=T)[0] == 5 * 20 * MiB
    h = ref.hex()
    del ref, info
    _wait(lambda: _obj(h) is None, 10.0,
          "the lost object to leave the store's table once its ref goes")


def test_truncated_spill_file_loses_the_object(small_store):
    ref, fillers = _lose_spill_file(small_store, _truncate)
    with pytest.raises(ObjectLostError) as info:
        fleet.get(ref, timeout=T)
    assert ref.hex() in str(info.value), str(info.value)
    assert fleet.get(fillers[-1], timeout=T)[0] == 2


def test_damaged_spill_file_is_removed_when_the_object_goes(small_store):
    ref, fillers = _lose_spill_file(small_store, _truncate)
    h = ref.hex()
    with pytest.raises(ObjectLostError):
        fleet.get(ref, timeout=T)
    del ref, fillers
    gc.collect()
    _wait(lambda: not list_objects(), 10.0, "an empty store")
    _wait(
        lambda: not _spill_files(small_store),
        5.0,
        lambda: f"the spill directory to be empty; it holds {_spill_files(small_store)} "
        f"(the lost object was {h})",
    )


# --------------------------------------------------------------------------
# `fleet memory` against a cluster started by `fleet start --head`
# --------------------------------------------------------------------------

CLI_DRIVER = """\
import os, sys, time
import numpy as np
import fleet
fleet.init(address="auto")
ref = fleet.put(np.ones(5 * 2**20, dtype=np.uint8))
print("READY " + ref.hex(), flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.05)
del ref
fleet.shutdown()
"""
CLI_PUT_LINE = 5  # the line of the put in CLI_DRIVER


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(env, *args, timeout=30):
    return run_argv([sys.executable, "-m", "fleet.scripts", *args], timeout, env)


def test_fleet_memory_cli(tmp_path):
    if fleet.is_initialized():
        fleet.shutdown()
    root = tempfile.mkdtemp(prefix="flmem", dir="/tmp")  # short: unix socket paths
    env = fleet_env({"FLEET_TMPDIR": root})
    script = tmp_path / "driver.py"
    script.write_text(CLI_DRIVER)
    done = tmp_path / "done"
    out_path = tmp_path / "driver.out"
    driver = None
    daemons = []
    try:
        res = _cli(env, "start", "--head", "--num-cpus", "1", "--object-store-memory",
                   str(100_000_000), "--port", str(_free_port()))
        assert res.returncode == 0, res.stdout + res.stderr
        with open(os.path.join(root, "cluster.json")) as f:
            daemons = [Proc(p, "daemon") for p in json.load(f)["pids"]]
        with open(out_path, "wb") as out:
            driver = subprocess.Popen(
                [sys.executable, str(script), str(done)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env,
            )

        def ready():
            return "READY " in out_path.read_text() or driver.poll() is not None

        assert wait_until(ready, 30), out_path.read_text()
        text = out_path.read_text()
        assert driver.poll() is None, text
        hex_id = text.split("READY ", 1)[1].split()[0]
        res = _cli(env, "memory")
        assert res.returncode == 0, res.stdout + res.stderr
        assert hex_id in res.stdout, res.stdout
        assert f"driver.py:{CLI_PUT_LINE}" in res.stdout, res.stdout
        assert "memory" in res.stdout
        done.write_text("")
        assert driver.wait(30) == 0, out_path.read_text()
    finally:
        done.write_text("")
        if driver is not None and driver.poll() is None:
            try:
                driver.wait(10)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()
        _cli(env, "stop")
        left = wait_dead(daemons, 10)
        kill_leftovers(left)
        shutil.rmtree(root, ignore_errors=True)
    assert not left, left
