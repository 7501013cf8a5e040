"""GPU scheduling with logical GPUs (no real GPU needed).

Ray docs: https://docs.ray.io/en/latest/ray-core/scheduling/accelerators.html
- a task with num_gpus=k gets k GPU ids; CUDA_VISIBLE_DEVICES is set to them
  and ray.get_gpu_ids() returns them; concurrent tasks get disjoint ids;
  a task that requests no GPU gets [] from ray.get_gpu_ids().
"""

import os
import time

import pytest

import fleet

pytestmark = pytest.mark.timeout(60)

T = 30


@pytest.fixture(scope="module", autouse=True)
def gpu_cluster():
    if fleet.is_initialized():
        fleet.shutdown()
    ctx = fleet.init(num_cpus=2, num_gpus=2)
    try:
        yield ctx
    finally:
        fleet.shutdown()


@fleet.remote(num_gpus=1)
def one_gpu():
    return fleet.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@fleet.remote(num_gpus=1)
def one_gpu_rendezvous(directory, me, other):
    ids = fleet.get_gpu_ids()
    open(os.path.join(directory, me), "w").close()
    deadline = time.monotonic() + 6
    met = False
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(directory, other)):
            met = True
            time.sleep(0.2)
            break
        time.sleep(0.02)
    return met, ids, os.environ.get("CUDA_VISIBLE_DEVICES")


@fleet.remote
def no_gpu():
    return fleet.get_gpu_ids()


def test_cluster_has_two_gpus():
    assert fleet.cluster_resources()["GPU"] == 2


def test_task_with_one_gpu():
    ids, visible = fleet.get(one_gpu.remote(), timeout=T)
    assert visible in {"0", "1"}
    assert ids == [int(visible)]
    assert all(isinstance(i, int) for i in ids)


def test_task_without_gpu_gets_no_ids():
    assert fleet.get(no_gpu.remote(), timeout=T) == []
    assert fleet.get(no_gpu.options(num_gpus=0).remote(), timeout=T) == []


def test_gpu_ids_after_a_gpu_task_on_a_reused_worker():
    # Run GPU and non-GPU tasks interleaved: the non-GPU ones never see ids.
    for _ in range(3):
        ids, _ = fleet.get(one_gpu.remote(), timeout=T)
        assert len(ids) == 1
        assert fleet.get(no_gpu.remote(), timeout=T) == []


def test_two_concurrent_tasks_get_different_gpus(tmp_path):
    d = str(tmp_path)
    a = one_gpu_rendezvous.remote(d, "a", "b")
    b = one_gpu_rendezvous.remote(d, "b", "a")
    (met_a, ids_a, vis_a), (met_b, ids_b, vis_b) = fleet.get([a, b], timeout=T)
    assert met_a and met_b, "the two 1-GPU tasks did not run at the same time"
    assert len(ids_a) == 1 and len(ids_b) == 1
    assert ids_a != ids_b
    assert {vis_a, vis_b} == {"0", "1"}


def test_task_with_two_gpus():
    @fleet.remote(num_gpus=2)
    def two():
        return sorted(fleet.get_gpu_ids()), os.environ.get("CUDA_VISIBLE_DEVICES")

    ids, visible = fleet.get(two.remote(), timeout=T)
    assert ids == [0, 1]
    assert sorted(visible.split(",")) == ["0", "1"]


def test_fractional_gpu():
    @fleet.remote(num_gpus=0.5)
    def half():
        return fleet.get_gpu_ids()

    ids = fleet.get(half.remote(), timeout=T)
    assert len(ids) == 1 and ids[0] in (0, 1)


def test_more_gpus_than_the_cluster_has_stays_pending():
    ref = one_gpu.options(num_gpus=3).remote()
    ready, not_ready = fleet.wait([ref], timeout=1)
    assert ready == [] and not_ready == [ref]
