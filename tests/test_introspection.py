"""Cluster introspection, the runtime context, and worker output on the driver.

Ray docs: ray.cluster_resources, ray.available_resources, ray.nodes,
ray.get_runtime_context (RuntimeContext), and "Worker logs (stdout and
stderr)" in https://docs.ray.io/en/latest/ray-observability/user-guides/configure-logging.html
"""

import os
import re
import time

import pytest

import fleet
from fleet_test_utils import FdRecorder, wait_until

# One shared cluster per module (conftest.fleet_cluster).
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 30


@fleet.remote
def context_info():
    ctx = fleet.get_runtime_context()
    return {
        "job_id": ctx.get_job_id(),
        "node_id": ctx.get_node_id(),
        "task_id": ctx.get_task_id(),
        "pid": os.getpid(),
    }


@fleet.remote
def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


# ---------------------------------------------------------------- resources


def test_cluster_resources():
    res = fleet.cluster_resources()
    assert res["CPU"] == 2
    assert "GPU" not in res or res["GPU"] == 0
    assert all(isinstance(v, (int, float)) for v in res.values())


def test_available_resources():
    # Eventually consistent: once idle, all CPUs are available again.
    assert wait_until(lambda: fleet.available_resources().get("CPU") == 2, 10)
    avail = fleet.available_resources()
    total = fleet.cluster_resources()
    for k, v in avail.items():
        assert k in total
        assert v <= total[k]


def test_available_resources_drop_while_a_task_runs():
    ref = sleep_for.remote(2.0)
    assert wait_until(lambda: fleet.available_resources().get("CPU", 0) == 1, 5), (
        fleet.available_resources()
    )
    fleet.get(ref, timeout=T)
    assert wait_until(lambda: fleet.available_resources().get("CPU") == 2, 10)


def test_nodes():
    nodes = fleet.nodes()
    assert isinstance(nodes, list) and len(nodes) == 1
    n = nodes[0]
    assert n["Alive"] is True
    assert n["Resources"]["CPU"] == 2
    assert isinstance(n["NodeID"], str) and n["NodeID"]
    assert n["NodeID"] == fleet.get_runtime_context().get_node_id()
    assert "NodeManagerAddress" in n


# ---------------------------------------------------------------- runtime context


def test_runtime_context_in_driver():
    ctx = fleet.get_runtime_context()
    job = ctx.get_job_id()
    assert isinstance(job, str) and job
    int(job, 16)
    node = ctx.get_node_id()
    assert isinstance(node, str) and node
    int(node, 16)
    assert ctx.get_task_id() is None
    # The (deprecated) properties give id objects, as Ray's do.
    with pytest.warns(DeprecationWarning):
        assert ctx.job_id.hex() == job
    with pytest.warns(DeprecationWarning):
        assert ctx.node_id.hex() == node


def test_runtime_context_in_task():
    ctx = fleet.get_runtime_context()
    a, b = fleet.get([context_info.remote(), context_info.remote()], timeout=T)
    for info in (a, b):
        assert info["job_id"] == ctx.get_job_id()
        assert info["node_id"] == ctx.get_node_id()
        assert isinstance(info["task_id"], str) and info["task_id"]
        int(info["task_id"], 16)
    assert a["task_id"] != b["task_id"]


@fleet.remote
def inner_context():
    return fleet.get_runtime_context().get_job_id()


@fleet.remote
def nested_context():
    return fleet.get_runtime_context().get_job_id(), fleet.get(inner_context.remote(), timeout=T)


def test_runtime_context_in_nested_task():
    outer_job, inner = fleet.get(nested_context.remote(), timeout=T)
    assert outer_job == inner == fleet.get_runtime_context().get_job_id()


def test_get_gpu_ids_in_driver_without_gpus():
    assert fleet.get_gpu_ids() == []


# ---------------------------------------------------------------- worker output


@fleet.remote
def printer(token):
    print(f"hello-{token}", flush=True)
    return os.getpid()


def test_print_in_task_reaches_driver_stdout(tmp_path):
    # (FdRecorder, not capfd: capfd.readouterr() can drop a line that fleet's
    # io thread writes while it runs; see FdRecorder.)
    token = f"tok{time.monotonic_ns()}"
    with FdRecorder(tmp_path) as rec:
        pid = fleet.get(printer.remote(token), timeout=T)
        assert wait_until(lambda: f"hello-{token}" in rec.out, 5, 0.1), rec.out
    lines = [ln for ln in rec.out.splitlines() if f"hello-{token}" in ln]
    assert lines
    # Ray's prefix is "(pid=N)" or, in newer versions, "(task_name pid=N)".
    m = re.search(r"\((?:[^()\s]+ )?pid=(\d+)[^)]*\)", lines[0])
    assert m, lines[0]
    assert m.group(1) == str(pid)
    assert m.start() < lines[0].index(f"hello-{token}")


@fleet.remote
def stderr_printer(token):
    import sys

    print(f"err-{token}", file=sys.stderr, flush=True)
    return True


def test_stderr_in_task_reaches_driver(tmp_path):
    token = f"tok{time.monotonic_ns()}"
    with FdRecorder(tmp_path) as rec:
        fleet.get(stderr_printer.remote(token), timeout=T)

        def found():
            return f"err-{token}" in rec.out + rec.err

        assert wait_until(found, 5, 0.1), rec.out + rec.err
