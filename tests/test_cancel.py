"""fleet.cancel: queued and running tasks, force, recursive, actor calls,
generators, bad input, and the cluster afterwards.

Ray docs: https://docs.ray.io/en/latest/ray-core/api/doc/ray.cancel.html,
https://docs.ray.io/en/latest/ray-core/tasks.html#cancelling-tasks and
.../actors.html#cancelling-actor-tasks.
"""

import asyncio
import os
import threading
import time

import pytest

import fleet
from fleet.exceptions import RayError, TaskCancelledError, WorkerCrashedError
from fleet_test_utils import Proc, wait_dead, wait_until

# One shared cluster per module (conftest.fleet_cluster): 2 CPUs.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every get/wait in this module
QUICK = 10  # a cancelled task's get must fail well within this many seconds


def _wait_file(path, timeout=20.0) -> bool:
    return wait_until(lambda: os.path.exists(path), timeout, 0.01)


def _touch(path, text=""):
    with open(path, "a") as f:
        f.write(text)


def _read_pid(path) -> int:
    assert _wait_file(path), f"{path} was never written"
    assert wait_until(lambda: open(path).read().strip() != "", 10)
    return int(open(path).read().split()[0])


def cpus() -> float:
    return fleet.available_resources().get("CPU", 0.0)


@fleet.remote(max_retries=0)
def blocker(started, gate):
    """Holds a CPU until the file `gate` exists (at most 20 s)."""
    _touch(started, f"{os.getpid()}\n")
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@fleet.remote
def mark_ran(path):
    _touch(path, "ran\n")
    return "ran"


@fleet.remote
def sleeper(started, interrupted, seconds=100):
    """Records its start, sleeps; records a KeyboardInterrupt (cancel) if one comes."""
    _touch(started, f"{os.getpid()}\n")
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        _touch(interrupted, "interrupted\n")
        raise
    return "slept"


@fleet.remote
def ident(x):
    return x


def _assert_cancelled_quickly(ref, t0=None):
    t0 = time.monotonic() if t0 is None else t0
    with pytest.raises(TaskCancelledError) as info:
        fleet.get(ref, timeout=QUICK)
    assert time.monotonic() - t0 < QUICK
    return info.value


@pytest.fixture
def busy(tmp_path):
    """Both CPUs held by blockers; yields a function that releases them."""
    gate = str(tmp_path / "busy-gate")
    started = [str(tmp_path / f"busy-started-{i}") for i in range(2)]
    refs = [blocker.remote(s, gate) for s in started]
    for s in started:
        assert _wait_file(s), "a blocker did not start"

    def release():
        _touch(gate)
        assert fleet.get(refs, timeout=T) == ["released"] * 2

    try:
        yield release
    finally:
        _touch(gate)
        fleet.wait(refs, num_returns=2, timeout=T)


# ---------------------------------------------------------------- tasks


def test_cancel_a_queued_task(busy, tmp_path):
    ran = str(tmp_path / "ran")
    queued = mark_ran.remote(ran)
    time.sleep(0.1)
    fleet.cancel(queued)
    _assert_cancelled_quickly(queued)
    busy()
    # The cancelled task never runs, even once CPUs are free.
    assert fleet.get([ident.remote(i) for i in range(4)], timeout=T) == [0, 1, 2, 3]
    time.sleep(0.2)
    assert not os.path.exists(ran)


def test_cancel_many_queued_tasks(busy, tmp_path):
    ran = str(tmp_path / "ran")
    queued = [mark_ran.remote(ran) for _ in range(50)]
    for r in queued:
        fleet.cancel(r)
    for r in queued:
        with pytest.raises(TaskCancelledError):
            fleet.get(r, timeout=T)
    busy()
    assert fleet.get(ident.remote("after"), timeout=T) == "after"
    assert not os.path.exists(ran)


def test_cancel_a_running_task(tmp_path):
    started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")
    ref = sleeper.remote(started, interrupted)
    assert _wait_file(started)
    t0 = time.monotonic()
    fleet.cancel(ref)
    err = _assert_cancelled_quickly(ref, t0)
    assert isinstance(err, RayError)
    # force=False interrupts the task with KeyboardInterrupt.
    assert _wait_file(interrupted, 10), "the task never saw a KeyboardInterrupt"


def test_cancelled_running_task_is_not_retried(tmp_path):
    started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")
    ref = sleeper.options(max_retries=3, retry_exceptions=True).remote(started, interrupted)
    assert _wait_file(started)
    fleet.cancel(ref)
    _assert_cancelled_quickly(ref)
    time.sleep(0.5)
    with open(started) as f:
        assert len(f.read().split()) == 1  # ran once


def test_force_cancel_kills_the_worker(tmp_path):
    started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")
    ref = sleeper.remote(started, interrupted)
    pid = _read_pid(started)
    t0 = time.monotonic()
    try:
        fleet.cancel(ref, force=True)
    finally:
        if not fleet.wait([ref], timeout=0)[0]:
            fleet.cancel(ref)  # do not leave a 100 s task holding a CPU
    err = _assert_cancelled_quickly(ref, t0)
    # As Ray reports a force-cancel: the worker crashed.
    assert isinstance(err, WorkerCrashedError)
    assert not wait_dead([Proc(pid, "cancelled worker")], 10), "the worker outlived force=True"
    # Not retried (max_retries defaults to 3 for tasks).
    time.sleep(0.5)
    with open(started) as f:
        assert len(f.read().split()) == 1


def test_cancel_a_finished_task_is_a_no_op():
    ref = ident.remote("done")
    assert fleet.get(ref, timeout=T) == "done"
    fleet.cancel(ref)
    fleet.cancel(ref, force=True)
    assert fleet.get(ref, timeout=T) == "done"


def test_cancel_twice(tmp_path):
    started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")
    ref = sleeper.remote(started, interrupted)
    assert _wait_file(started)
    fleet.cancel(ref)
    fleet.cancel(ref)
    _assert_cancelled_quickly(ref)


def test_cancel_a_task_waiting_for_its_argument(busy, tmp_path):
    ran = str(tmp_path / "ran")
    dep = ident.remote("dep")  # queued behind the blockers
    waiting = mark_ran.options(max_retries=0).remote(dep)
    fleet.cancel(waiting)
    _assert_cancelled_quickly(waiting)
    busy()
    assert fleet.get(dep, timeout=T) == "dep"
    assert not os.path.exists(ran)


def test_dependents_of_a_cancelled_task_fail(busy):
    queued = ident.remote(1)
    downstream = ident.remote(queued)
    fleet.cancel(queued, recursive=False)
    _assert_cancelled_quickly(queued)
    with pytest.raises(TaskCancelledError):
        fleet.get(downstream, timeout=T)
    busy()


@fleet.remote(max_retries=0)
def parent(child_started, child_interrupted, child_seconds):
    child = sleeper.remote(child_started, child_interrupted, child_seconds)
    return fleet.get(child, timeout=60)


def test_recursive_cancel_cancels_children(tmp_path):
    started, interrupted = str(tmp_path / "child-started"), str(tmp_path / "child-interrupted")
    ref = parent.remote(started, interrupted, 100)
    assert _wait_file(started), "the child never started"
    fleet.cancel(ref)  # recursive=True by default
    _assert_cancelled_quickly(ref)
    assert _wait_file(interrupted, 10), "the child task was not cancelled"


def test_non_recursive_cancel_leaves_children_running(tmp_path):
    started, interrupted = str(tmp_path / "child-started"), str(tmp_path / "child-interrupted")
    ref = parent.remote(started, interrupted, 1.0)
    assert _wait_file(started), "the child never started"
    fleet.cancel(ref, recursive=False)
    _assert_cancelled_quickly(ref)
    # The child finishes its 1 s sleep undisturbed.
    time.sleep(1.5)
    assert not os.path.exists(interrupted)


@fleet.remote(max_concurrency=2)
class ThreadedSpawner:
    def spawn(self, child_started, child_interrupted):
        child = sleeper.remote(child_started, child_interrupted, 100)
        return fleet.get(child, timeout=60)


@fleet.remote
class AsyncSpawner:
    async def spawn(self, child_started, child_interrupted):
        child = sleeper.remote(child_started, child_interrupted, 100)
        return await child


@pytest.mark.parametrize("spawner", [ThreadedSpawner, AsyncSpawner], ids=["threaded", "async"])
def test_recursive_cancel_reaches_children_of_a_concurrent_actor_call(spawner, tmp_path):
    # Several calls run at once in such actors: the child's parent is the
    # call that submitted it (its context), not whatever ran last.
    started, interrupted = str(tmp_path / "child-started"), str(tmp_path / "child-interrupted")
    actor = spawner.remote()
    ref = actor.spawn.remote(started, interrupted)
    assert _wait_file(started), "the child never started"
    fleet.cancel(ref)  # recursive=True by default
    assert _wait_file(interrupted, 10), "the child task was not cancelled"
    fleet.kill(actor)


def test_leases_held_by_a_killed_actor_come_back(tmp_path):
    # An actor submits a task (so holds a lease as a client) and is killed
    # while it runs: the lease is revoked with the actor's connection, not
    # kept until some other client leaves.
    started, interrupted = str(tmp_path / "child-started"), str(tmp_path / "child-interrupted")
    actor = ThreadedSpawner.remote()
    actor.spawn.remote(started, interrupted)
    assert _wait_file(started), "the child never started"
    assert wait_until(lambda: cpus() == 1.0, 10), cpus()
    fleet.kill(actor)
    assert wait_until(lambda: cpus() == 2.0, 10), cpus()


def test_cancel_bad_input():
    with pytest.raises(TypeError):
        fleet.cancel(5)
    with pytest.raises(TypeError):
        fleet.cancel("not a ref")
    with pytest.raises(TypeError):
        fleet.cancel([ident.remote(1)])

    @fleet.remote
    class A:
        def f(self):
            return 1

    a = A.remote()
    with pytest.raises(TypeError):
        fleet.cancel(a)  # actors are stopped with fleet.kill
    assert fleet.get(a.f.remote(), timeout=T) == 1


# ---------------------------------------------------------------- actor calls


@fleet.remote
class Worker:
    def __init__(self):
        self.log = []
        self.saw_cancel = False

    def hold(self, gate):
        deadline = time.monotonic() + 20
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.log.append("hold")
        return "held"

    def record(self, x):
        self.log.append(x)
        return x

    def log_(self):
        return self.log

    def poll_cancel(self, started):
        _touch(started)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if fleet.get_runtime_context().is_canceled():
                self.saw_cancel = True
                return "saw cancel"
            time.sleep(0.01)
        return "no cancel"

    def saw_cancel_(self):
        return self.saw_cancel


def test_cancel_a_queued_actor_call(tmp_path):
    gate = str(tmp_path / "gate")
    w = Worker.remote()
    held = w.hold.remote(gate)
    queued = w.record.remote("cancelled")
    after = w.record.remote("after")
    time.sleep(0.2)
    fleet.cancel(queued)
    _assert_cancelled_quickly(queued)
    _touch(gate)
    assert fleet.get([held, after], timeout=T) == ["held", "after"]
    # The cancelled call never ran; the actor lives on.
    assert fleet.get(w.log_.remote(), timeout=T) == ["hold", "after"]


def test_running_sync_actor_call_sees_is_canceled(tmp_path):
    started = str(tmp_path / "started")
    w = Worker.remote()
    ref = w.poll_cancel.remote(started)
    assert _wait_file(started)
    fleet.cancel(ref)
    # A running call of a plain actor is not interrupted: it can check the flag.
    try:
        result = fleet.get(ref, timeout=T)
    except TaskCancelledError:
        result = "cancelled"
    assert result in ("saw cancel", "cancelled")
    assert fleet.get(w.saw_cancel_.remote(), timeout=T) is True
    assert fleet.get(w.record.remote("alive"), timeout=T) == "alive"


def test_force_cancel_of_an_actor_call_raises_value_error(tmp_path):
    gate = str(tmp_path / "gate")
    w = Worker.remote()
    ref = w.hold.remote(gate)
    with pytest.raises(ValueError, match="force"):
        fleet.cancel(ref, force=True)
    _touch(gate)
    # The call was not affected.
    assert fleet.get(ref, timeout=T) == "held"


@fleet.remote
class AsyncWorker:
    def __init__(self):
        self.cancelled = 0

    async def slow(self, seconds):
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "slept"

    async def cancelled_(self):
        return self.cancelled


def test_cancel_a_running_async_actor_call():
    a = AsyncWorker.remote()
    other = a.slow.remote(0.8)  # runs concurrently, not cancelled
    ref = a.slow.remote(100)
    time.sleep(0.3)
    t0 = time.monotonic()
    fleet.cancel(ref)
    _assert_cancelled_quickly(ref, t0)
    # The asyncio task was cancelled inside the actor, which stays alive.
    assert fleet.get(a.cancelled_.remote(), timeout=T) == 1
    assert fleet.get(other, timeout=T) == "slept"
    assert fleet.get(a.slow.remote(0), timeout=T) == "slept"


# ---------------------------------------------------------------- generators


@fleet.remote
def gated_stream(gate):
    yield "first"
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield "second"


def test_cancel_a_generator(tmp_path):
    gen = gated_stream.remote(str(tmp_path / "gate"))
    assert fleet.get(next(gen), timeout=T) == "first"
    fleet.cancel(gen)
    # The rest of the stream: the cancellation error, then the end (no hang).
    assert _drain(gen) == ["cancelled"]


def _drain(gen):
    """The values of the rest of a stream ("cancelled" for a TaskCancelledError),
    failing (not hanging) if it does not end within QUICK seconds."""
    out = []
    done = threading.Event()

    def drain():
        for ref in gen:
            try:
                out.append(fleet.get(ref, timeout=QUICK))
            except TaskCancelledError:
                out.append("cancelled")
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    assert done.wait(QUICK), f"the cancelled stream did not end; so far: {out}"
    return out


@fleet.remote
class AsyncStream:
    def __init__(self):
        self.cancelled = 0

    async def stream(self):
        try:
            yield "first"
            await asyncio.sleep(100)
            yield "second"
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def cancelled_(self):
        return self.cancelled


def test_cancel_an_async_actor_generator():
    a = AsyncStream.remote()
    gen = a.stream.remote()
    assert fleet.get(next(gen), timeout=T) == "first"
    fleet.cancel(gen)
    assert _drain(gen) == ["cancelled"]
    # The asyncio task was cancelled inside the actor, which stays alive.
    assert fleet.get(a.cancelled_.remote(), timeout=T) == 1


# ---------------------------------------------------------------- afterwards


def test_cluster_works_after_cancellations():
    assert fleet.get([ident.remote(i) for i in range(100)], timeout=T) == list(range(100))
    # Every CPU came back.
    assert wait_until(lambda: cpus() == 2.0, 10), cpus()
