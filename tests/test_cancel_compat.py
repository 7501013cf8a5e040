"""fleet.cancel where the canceller is not the submitter, and recursive
cancel reaching tasks several levels down and on other nodes (Ray forwards a
cancel to the ref's owner, and the owner to the task's executor).

Ray docs: https://docs.ray.io/en/latest/ray-core/api/doc/ray.cancel.html
"""

import os
import time

import pytest

import fleet
from fleet.cluster_utils import Cluster
from fleet.exceptions import RayTaskError, TaskCancelledError, WorkerCrashedError
from fleet_test_utils import wait_until

pytestmark = pytest.mark.timeout(120)

T = 30
QUICK = 10


def _wait_file(path, timeout=20.0) -> bool:
    return wait_until(lambda: os.path.exists(path), timeout, 0.01)


def _touch(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


@fleet.remote(max_retries=0)
def sleeper(started, interrupted):
    _touch(started)
    try:
        time.sleep(100)
    except KeyboardInterrupt:
        _touch(interrupted)
        raise
    return "slept"


@fleet.remote
def submit_inner(started, interrupted):
    # Returns a ref this task owns; the driver only borrows it.
    return [sleeper.remote(started, interrupted)]


@fleet.remote
def chain(depth, started, interrupted):
    if depth == 0:
        return fleet.get(sleeper.remote(started, interrupted), timeout=60)
    return fleet.get(chain.remote(depth - 1, started, interrupted), timeout=60)


@pytest.fixture(scope="module")
def cluster():
    if fleet.is_initialized():
        fleet.shutdown()
    fleet.init(num_cpus=4)
    yield
    fleet.shutdown()


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_cancel_a_ref_owned_by_another_task(cluster, tmp_path, force):
    started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")
    inner = fleet.get(submit_inner.remote(started, interrupted), timeout=T)[0]
    assert _wait_file(started), "the inner task never started"
    with pytest.raises(GetTimeoutError_):
        fleet.get(inner, timeout=0.2)
    t0 = time.monotonic()
    fleet.cancel(inner, force=force)
    expected = (TaskCancelledError, WorkerCrashedError) if force else TaskCancelledError
    with pytest.raises(expected):
        fleet.get(inner, timeout=QUICK)
    assert time.monotonic() - t0 < QUICK
    if not force:
        assert _wait_file(interrupted, 10), "the task was not interrupted"


GetTimeoutError_ = fleet.exceptions.GetTimeoutError


def test_recursive_cancel_reaches_a_grandchild(cluster, tmp_path):
    started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")
    ref = chain.remote(2, started, interrupted)
    assert _wait_file(started), "the innermost task never started"
    fleet.cancel(ref)
    with pytest.raises((TaskCancelledError, RayTaskError)):
        fleet.get(ref, timeout=QUICK)
    assert _wait_file(interrupted, 10), "the innermost task was not cancelled"


def test_cancel_of_a_finished_borrowed_ref_is_a_no_op(cluster, tmp_path):
    @fleet.remote
    def make():
        return [fleet.put(7)]

    inner = fleet.get(make.remote(), timeout=T)[0]
    fleet.cancel(inner)
    assert fleet.get(inner, timeout=T) == 7


@fleet.remote(resources={"far": 1}, max_retries=0)
def far_sleeper(started, interrupted):
    _touch(started)
    try:
        time.sleep(100)
    except KeyboardInterrupt:
        _touch(interrupted)
        raise
    return "slept"


@fleet.remote(max_retries=0)
def near_parent(started, interrupted):
    return fleet.get(far_sleeper.remote(started, interrupted), timeout=60)


def test_recursive_cancel_reaches_a_child_on_another_node(tmp_path):
    if fleet.is_initialized():
        fleet.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1, resources={"far": 1})
        fleet.init(address=c.address)
        started, interrupted = str(tmp_path / "started"), str(tmp_path / "interrupted")
        ref = near_parent.remote(started, interrupted)
        assert _wait_file(started), "the child on the other node never started"
        fleet.cancel(ref)
        with pytest.raises((TaskCancelledError, RayTaskError)):
            fleet.get(ref, timeout=QUICK)
        assert _wait_file(interrupted, 10), "the child on the other node was not cancelled"
    finally:
        fleet.shutdown()
        c.shutdown()


@fleet.remote
class Never:
    def wait(self):
        time.sleep(3600)


@fleet.remote(max_retries=0)
def get_first(refs, started):
    _touch(started)
    return fleet.get(refs[0])  # no timeout: only the cancel may end it


@fleet.remote(max_retries=0)
def wait_first(refs, started):
    _touch(started)
    fleet.wait(refs)
    return "waited"


@pytest.mark.parametrize("blocking", [get_first, wait_first], ids=["get", "wait"])
def test_cancel_interrupts_a_task_blocked_in_get_or_wait(cluster, tmp_path, blocking):
    never = Never.remote()
    started = str(tmp_path / "started")
    ref = blocking.remote([never.wait.remote()], started)
    assert _wait_file(started)
    time.sleep(0.3)  # well inside its blocking call
    t0 = time.monotonic()
    fleet.cancel(ref, recursive=False)
    with pytest.raises(TaskCancelledError):
        fleet.get(ref, timeout=QUICK)
    assert time.monotonic() - t0 < QUICK
    fleet.kill(never)
