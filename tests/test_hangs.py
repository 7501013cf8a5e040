"""Things that must not hang: a failed object ends a get at once, tasks
blocked in get or wait lend their CPU to the tasks they wait on, and a
get on something whose producer is gone fails instead of waiting.

Ray docs: https://docs.ray.io/en/latest/ray-core/api/doc/ray.get.html (raises
the first task error), https://docs.ray.io/en/latest/ray-core/patterns/nested-tasks.html
(nested tasks on a small node).
"""

import os
import time

import pytest

import fleet
from fleet.exceptions import GetTimeoutError, RayActorError, RayTaskError
from fleet_test_utils import wait_until

pytestmark = pytest.mark.timeout(90)

T = 30  # timeout (s) for every get/wait here
QUICK = 8  # a failure must end the get well within this many seconds


@pytest.fixture
def one_cpu(fresh):
    fleet.init(num_cpus=1)
    yield fleet


@fleet.remote(max_retries=0)
def slow(seconds):
    time.sleep(seconds)
    return "slow"


@fleet.remote(max_retries=0)
def bad():
    raise ValueError("bad on purpose")


@fleet.remote
class Victim:
    def pid(self):
        return os.getpid()

    def slow(self, seconds):
        time.sleep(seconds)
        return "slow"


# ------------------------------------------------------------ get fails fast


def test_get_raises_a_task_error_while_others_still_run(fresh):
    fleet.init(num_cpus=2)
    refs = [slow.remote(60), bad.remote()]
    t0 = time.monotonic()
    with pytest.raises(RayTaskError) as info:
        fleet.get(refs, timeout=T)
    assert time.monotonic() - t0 < QUICK
    assert isinstance(info.value, ValueError)
    assert "bad on purpose" in str(info.value)


def test_get_raises_the_error_of_a_failed_object_ready_before_the_call(fresh):
    fleet.init(num_cpus=2)
    b = bad.remote()
    fleet.wait([b], timeout=T)
    t0 = time.monotonic()
    with pytest.raises(RayTaskError):
        fleet.get([slow.remote(60), b], timeout=T)
    assert time.monotonic() - t0 < QUICK


def test_get_raises_when_an_actor_dies_while_others_still_run(fresh):
    fleet.init(num_cpus=2)
    a = Victim.remote()
    fleet.get(a.pid.remote(), timeout=T)
    refs = [slow.remote(60), a.slow.remote(60)]
    time.sleep(0.3)
    fleet.kill(a)
    t0 = time.monotonic()
    with pytest.raises(RayActorError):
        fleet.get(refs, timeout=T)
    assert time.monotonic() - t0 < QUICK


def test_get_still_times_out_when_nothing_fails(fresh):
    fleet.init(num_cpus=2)
    with pytest.raises(GetTimeoutError):
        fleet.get([slow.remote(5), slow.remote(5)], timeout=0.5)


def test_wait_counts_a_failed_object_as_ready(fresh):
    fleet.init(num_cpus=2)
    s, b = slow.remote(60), bad.remote()
    ready, not_ready = fleet.wait([s, b], num_returns=1, timeout=T)
    assert ready == [b] and not_ready == [s]


# ------------------------------------------------------ blocked tasks lend CPU


@fleet.remote
def leaf(x):
    return x + 1


@fleet.remote
def nest_get(depth):
    if depth == 0:
        return fleet.get(leaf.remote(0), timeout=T)
    return fleet.get(nest_get.remote(depth - 1), timeout=T) + 1


@fleet.remote
def nest_wait(depth):
    ref = leaf.remote(0) if depth == 0 else nest_wait.remote(depth - 1)
    ready, _ = fleet.wait([ref], timeout=T)
    assert ready == [ref]
    return fleet.get(ref, timeout=T) + 1


def _cpu_back(total):
    return wait_until(lambda: fleet.available_resources().get("CPU", 0) == total, 10, 0.05)


def test_nested_gets_do_not_deadlock_one_cpu(one_cpu):
    assert fleet.get(nest_get.remote(4), timeout=T) == 5
    assert _cpu_back(1), fleet.available_resources()


def test_nested_waits_do_not_deadlock_one_cpu(one_cpu):
    assert fleet.get(nest_wait.remote(3), timeout=T) == 5
    assert _cpu_back(1), fleet.available_resources()


@fleet.remote
def hold_then_get(path):
    # Blocks in get on a child: meanwhile its CPU is lent out.
    child = slow.remote(1.5)
    with open(path, "w") as f:
        f.write("x")
    return fleet.get(child, timeout=T)


def test_blocked_task_lends_its_cpu_and_takes_it_back(one_cpu, tmp_path):
    path = str(tmp_path / "started")
    ref = hold_then_get.remote(path)
    assert wait_until(lambda: os.path.exists(path), 20, 0.01)
    # The child runs on the lent CPU; when both are done the CPU is whole again.
    assert fleet.get(ref, timeout=T) == "slow"
    assert _cpu_back(1), fleet.available_resources()


@fleet.remote(num_cpus=1)
class Getter:
    def get_child(self):
        return fleet.get(leaf.remote(1), timeout=3)


def test_an_actor_blocked_in_get_keeps_its_cpu(one_cpu):
    # As in Ray: an actor holds its resources for life, even while it waits,
    # so a task needing the node's only CPU cannot run meanwhile.
    g = Getter.remote()
    with pytest.raises(RayTaskError):
        fleet.get(g.get_child.remote(), timeout=T)


# ------------------------------------------------ producers that went away


@fleet.remote
class Owner:
    def make(self, seconds):
        # The object this actor owns; it never finishes if the actor dies.
        return [slow.remote(seconds)]

    def pid(self):
        return os.getpid()


@fleet.remote
class Reader:
    def read(self, refs):
        return fleet.get(refs[0], timeout=T)


def test_get_of_a_ref_whose_owner_died_fails(fresh):
    fleet.init(num_cpus=3)
    owner = Owner.remote()
    inner = fleet.get(owner.make.remote(60), timeout=T)[0]
    pid = fleet.get(owner.pid.remote(), timeout=T)
    os.kill(pid, 9)
    t0 = time.monotonic()
    with pytest.raises(fleet.exceptions.OwnerDiedError):
        fleet.get(inner, timeout=T)
    assert time.monotonic() - t0 < QUICK


def test_actor_call_with_an_argument_whose_owner_died_fails(fresh):
    fleet.init(num_cpus=3)
    owner = Owner.remote()
    reader = Reader.remote()
    inner = fleet.get(owner.make.remote(60), timeout=T)
    pid = fleet.get(owner.pid.remote(), timeout=T)
    os.kill(pid, 9)
    t0 = time.monotonic()
    with pytest.raises((fleet.exceptions.OwnerDiedError, RayTaskError)):
        fleet.get(reader.read.remote(inner), timeout=T)
    assert time.monotonic() - t0 < QUICK


@fleet.remote
class Held:
    def __init__(self, value):
        self.value = value

    def read(self):
        return self.value


@fleet.remote
class Creator:
    def create_pending(self, gate):
        # The constructor's argument waits on `gate`, which never opens: the
        # actor's creation waits on this process.
        never = gate.wait.remote()
        return [Held.remote(never)]

    def pid(self):
        return os.getpid()


@fleet.remote
class Gate:
    def wait(self):
        time.sleep(3600)


def test_actor_whose_owner_died_before_its_arguments_were_ready_is_dead(fresh):
    fleet.init(num_cpus=4)
    gate = Gate.options(max_concurrency=2).remote()
    creator = Creator.remote()
    held = fleet.get(creator.create_pending.remote(gate), timeout=T)[0]
    pid = fleet.get(creator.pid.remote(), timeout=T)
    os.kill(pid, 9)
    t0 = time.monotonic()
    with pytest.raises(RayActorError):
        fleet.get(held.read.remote(), timeout=T)
    assert time.monotonic() - t0 < QUICK
