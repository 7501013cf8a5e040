"""fleet.util.multiprocessing.Pool: the multiprocessing.Pool API on fleet actors.

Ray docs: https://docs.ray.io/en/latest/ray-more-libs/multiprocessing.html
(behaviour: https://docs.python.org/3/library/multiprocessing.html#module-multiprocessing.pool)
"""

import multiprocessing
import os
import pickle
import threading
import time
from multiprocessing.pool import RemoteTraceback

import pytest

import fleet
from fleet.util.multiprocessing import AsyncResult, Pool, TimeoutError
from fleet_test_utils import run_python

# One shared cluster per module (conftest.fleet_cluster).
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every blocking call in this module


def square(x):
    return x * x


def add(a, b=0):
    return a + b


def pid(_=None):
    return os.getpid()


def sleep_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def sleep_return(seconds, value=None):
    time.sleep(seconds)
    return value


def fail_on_3(x):
    if x == 3:
        raise ValueError(f"three is bad ({x})")
    return x


_GLOBAL = None


def set_global(value):
    global _GLOBAL
    _GLOBAL = value


def read_global(_):
    return _GLOBAL


def bad_initializer():
    raise KeyError("initializer failed")


@pytest.fixture(scope="module")
def pool():
    """A two-process pool shared by the module's tests."""
    p = Pool(2)
    yield p
    p.terminate()


# ------------------------------------------------------------------ map


def test_map_and_map_async(pool):
    assert pool.map(square, range(100)) == [x * x for x in range(100)]
    assert pool.map_async(square, range(10)).get(timeout=T) == [x * x for x in range(10)]
    assert pool.map(square, iter(range(5))) == [0, 1, 4, 9, 16]
    assert pool.map(square, []) == []


def test_map_chunksize_is_honoured(pool):
    # Each chunk runs on one worker, in one call.
    pids = pool.map_async(pid, range(8), chunksize=4).get(timeout=T)
    assert len(set(pids[:4])) == 1 and len(set(pids[4:])) == 1
    assert pool.map_async(square, range(10), chunksize=3).get(timeout=T) == [
        x * x for x in range(10)
    ]


def test_default_processes_is_the_cluster_cpu_count(pool):
    # Two slow calls run at once on two different workers.
    start = time.monotonic()
    pids = pool.map_async(sleep_pid, [0.4, 0.4], chunksize=1).get(timeout=T)
    assert time.monotonic() - start < 0.8
    assert len(set(pids)) == 2
    with Pool() as p:
        pids = p.map_async(sleep_pid, [0.1] * 4, chunksize=1).get(timeout=T)
        assert len(set(pids)) == 2
        assert os.getpid() not in pids


def test_starmap(pool):
    assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert pool.starmap_async(add, [(i, i) for i in range(20)], chunksize=3).get(timeout=T) == [
        2 * i for i in range(20)
    ]


def test_lambdas_and_closures_work(pool):
    k = 10
    assert pool.map(lambda x: x + k, range(3)) == [10, 11, 12]


def test_map_reraises_the_original_exception(pool):
    with pytest.raises(ValueError, match="three is bad") as info:
        pool.map(fail_on_3, range(6))
    assert type(info.value) is ValueError  # the user's class itself, as in the stdlib
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_on_3" in str(info.value.__cause__)
    r = pool.map_async(fail_on_3, range(6), chunksize=1)
    with pytest.raises(ValueError):
        r.get(timeout=T)
    assert r.ready() and not r.successful()
    # The pool still works afterwards.
    assert pool.map(square, [2]) == [4]


# ---------------------------------------------------------------- apply


def test_apply_and_apply_async(pool):
    assert pool.apply(add, (1, 2)) == 3
    assert pool.apply(add, (1,), {"b": 5}) == 6
    assert pool.apply(pid) != os.getpid()
    r = pool.apply_async(add, [2, 3])
    assert isinstance(r, AsyncResult)
    assert r.get(timeout=T) == 5
    with pytest.raises(ValueError, match="three is bad"):
        pool.apply(fail_on_3, (3,))


def test_async_result_states_and_timeout(pool):
    r = pool.apply_async(sleep_return, (0.5, "done"))
    assert not r.ready()
    with pytest.raises(ValueError, match="not ready"):
        r.successful()
    with pytest.raises(TimeoutError):
        r.get(timeout=0.05)
    assert TimeoutError is multiprocessing.TimeoutError
    r.wait(timeout=T)
    assert r.ready() and r.successful()
    assert r.get(timeout=0) == "done"


def test_callbacks(pool):
    seen = []
    done = threading.Event()

    def on_result(value):
        seen.append(("ok", value, threading.current_thread() is threading.main_thread()))

    def on_error(exc):
        seen.append(("err", type(exc), str(exc)))
        done.set()

    r = pool.apply_async(square, (7,), callback=on_result, error_callback=on_error)
    assert r.get(timeout=T) == 49
    assert seen == [("ok", 49, False)]  # called before get returns, in the result thread
    seen.clear()

    m = pool.map_async(square, range(5), callback=on_result, error_callback=on_error)
    assert m.get(timeout=T) == [0, 1, 4, 9, 16]
    assert seen == [("ok", [0, 1, 4, 9, 16], False)]  # once, with the whole list
    seen.clear()

    e = pool.map_async(fail_on_3, range(5), callback=on_result, error_callback=on_error)
    assert done.wait(T)
    assert not e.successful()
    assert seen == [("err", ValueError, "three is bad (3)")]


def test_failing_callback_does_not_break_the_pool(pool, capfd):
    def broken(_):
        raise RuntimeError("callback bug")

    r = pool.apply_async(square, (3,), callback=broken)
    assert r.get(timeout=T) == 9
    assert pool.apply_async(square, (4,)).get(timeout=T) == 16
    assert "callback bug" in capfd.readouterr().err  # reported, as in the stdlib


# ----------------------------------------------------------------- imap


def test_imap_in_order(pool):
    it = pool.imap(sleep_return, [0.2, 0, 0])
    assert iter(it) is it
    assert list(it) == [None, None, None]
    assert list(pool.imap(square, range(20))) == [x * x for x in range(20)]
    assert list(pool.imap(square, range(20), chunksize=3)) == [x * x for x in range(20)]
    assert list(pool.imap(square, (x for x in range(5)))) == [0, 1, 4, 9, 16]
    assert list(pool.imap(square, [])) == []


def test_imap_unordered_yields_as_results_finish(pool):
    def slow_first(x):
        time.sleep(0.5 if x == 0 else 0)
        return x

    out = list(pool.imap_unordered(slow_first, range(4)))
    assert sorted(out) == [0, 1, 2, 3]
    assert out[-1] == 0
    assert sorted(pool.imap_unordered(square, range(30), chunksize=4)) == sorted(
        x * x for x in range(30)
    )


def test_imap_next_timeout(pool):
    it = pool.imap(sleep_return, [0.5], chunksize=1)
    with pytest.raises(TimeoutError):
        it.next(timeout=0.05)
    assert it.next(timeout=T) is None
    with pytest.raises(StopIteration):
        it.next(timeout=T)


def test_imap_yields_the_failing_items_exception_and_goes_on(pool):
    # As Ray's imap: the exception is the failed item's result (not raised),
    # and the other items of its chunk still run.
    it = pool.imap(fail_on_3, range(6), chunksize=6)
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    err = next(it)
    assert isinstance(err, ValueError) and "three is bad" in str(err)
    assert list(it) == [4, 5]
    out = list(pool.imap_unordered(fail_on_3, range(6), chunksize=2))
    assert sorted(x for x in out if isinstance(x, int)) == [0, 1, 2, 4, 5]
    assert sum(isinstance(x, ValueError) for x in out) == 1


def test_imap_input_error_is_raised_in_place(pool):
    def broken_input():
        yield from range(3)
        raise OSError("input broke")

    it = pool.imap(square, broken_input())
    assert [next(it), next(it), next(it)] == [0, 1, 4]
    with pytest.raises(OSError, match="input broke"):
        next(it)
    assert list(it) == []


def test_imap_reads_its_input_lazily(pool):
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    it = pool.imap(square, endless())
    assert [next(it) for _ in range(50)] == [x * x for x in range(50)]
    del it


# ------------------------------------------------------- pool life cycle


def test_close_then_join_waits_for_the_work():
    p = Pool(2)
    r = p.map_async(sleep_return, [0.2, 0.2, 0.2], chunksize=1)
    it = p.imap(square, range(5))
    p.close()
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply(square, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    p.join()
    assert r.ready() and r.get(timeout=0) == [None, None, None]
    assert list(it) == [0, 1, 4, 9, 16]  # given before close: still delivered


def test_join_requires_close():
    with Pool(1) as p:
        with pytest.raises(ValueError, match="still running"):
            p.join()


def test_context_manager_terminates():
    with Pool(2) as p:
        assert p.map(square, [1, 2]) == [1, 4]
        r = p.apply_async(sleep_return, (30,))
    start = time.monotonic()
    with pytest.raises(fleet.exceptions.RayActorError, match="terminated"):
        r.get(timeout=T)  # fails at once instead of waiting 30 s
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    p.join()  # allowed after terminate


def test_initializer_runs_in_every_worker():
    with Pool(2, initializer=set_global, initargs=("ready",)) as p:
        assert p.map(read_global, range(6), chunksize=1) == ["ready"] * 6


def test_failing_initializer_raises_at_creation():
    with pytest.raises(KeyError, match="initializer failed"):
        Pool(1, initializer=bad_initializer)


def test_maxtasksperchild_replaces_workers():
    with Pool(1, maxtasksperchild=2) as p:
        pids = [p.apply_async(pid).get(timeout=T) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_dead_worker_fails_its_call_and_is_replaced():
    with Pool(1) as p:
        first = p.apply(pid)
        r = p.apply_async(os._exit, (1,))
        with pytest.raises(fleet.exceptions.RayActorError):
            r.get(timeout=T)
        assert p.apply_async(pid).get(timeout=T) != first


# ------------------------------------------------------------ bad input


def test_bad_input_gives_clear_errors(pool):
    with pytest.raises(ValueError, match="at least 1"):
        Pool(0)
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(3)
    with pytest.raises(TypeError, match="processes"):
        Pool("2")
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=0)
    with pytest.raises(TypeError, match="initializer"):
        Pool(1, initializer=5)
    with pytest.raises(TypeError, match="callable"):
        pool.map(5, [1])
    with pytest.raises(TypeError, match="callable"):
        pool.apply_async("square")
    with pytest.raises(ValueError, match="Chunksize"):
        pool.imap(square, [1], chunksize=0)
    with pytest.raises(ValueError, match="Chunksize"):
        pool.map(square, [1], chunksize=0)
    with pytest.raises(NotImplementedError, match="pickled"):
        pickle.dumps(pool)


def test_unpicklable_result_fails_instead_of_hanging(pool):
    with pytest.raises(Exception):  # noqa: B017 - whatever the serializer raises
        pool.apply_async(threading.Lock).get(timeout=T)
    assert pool.apply(square, (5,)) == 25


def test_pool_starts_fleet_when_needed():
    code = """
import fleet
from fleet.util.multiprocessing import Pool
assert not fleet.is_initialized()
with Pool(2) as p:
    assert fleet.is_initialized()
    assert fleet.cluster_resources()["CPU"] == 2
    print("RESULT", p.map(abs, [-1, -2, 3]))
fleet.shutdown()
"""
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT [1, 2, 3]" in proc.stdout
