"""Process lifecycle: no orphans after shutdown or a dying driver, infeasible
tasks, and nested tasks on a one-CPU cluster.

Ray: processes of a local cluster started by ray.init() end with the driver;
an infeasible task logs a warning naming the resource request
(https://docs.ray.io/en/latest/ray-core/scheduling/resources.html); a worker
blocked in ray.get releases its CPU so nested tasks cannot deadlock
(https://docs.ray.io/en/latest/ray-core/tasks/nested-tasks.html).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fleet_test_utils import (
    FdRecorder,
    Proc,
    cluster_procs,
    fleet_env,
    kill_leftovers,
    run_python,
    wait_dead,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

T = 30


def test_no_orphans_after_shutdown(fresh):
    fleet = fresh
    fleet.init(num_cpus=2)

    @fleet.remote
    def f(x):
        return os.getpid()

    worker_pids = set(fleet.get([f.remote(i) for i in range(10)], timeout=T))
    procs = cluster_procs()
    names = {p.what for p in procs}
    assert {"fleet-gcs", "fleet-node", "worker"} <= names, procs
    assert worker_pids <= {p.pid for p in procs if p.what == "worker"}
    assert all(p.alive() for p in procs)
    t0 = time.monotonic()
    fleet.shutdown()
    assert time.monotonic() - t0 < 5
    left = wait_dead(procs, 5)
    kill_leftovers(left)
    assert not left, [(p, p.cmdline()) for p in left]


def test_repeated_init_shutdown_leaves_nothing(fresh):
    fleet = fresh
    all_procs = []
    for _ in range(3):
        fleet.init(num_cpus=1)
        assert fleet.get(fleet.put(1), timeout=T) == 1
        all_procs += cluster_procs()
        fleet.shutdown()
    left = wait_dead(all_procs, 5)
    kill_leftovers(left)
    assert not left, left


DRIVER = r"""
import json, os, sys, time
import fleet
fleet.init(num_cpus=2)

@fleet.remote
def f(x):
    return os.getpid()

fleet.get([f.remote(i) for i in range(10)], timeout=30)
from fleet._private import state
info = {
    "daemons": list(state.cluster.pids),
    "workers": list(state.core.node_stats()["worker_pids"]),
    "driver": os.getpid(),
}
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    json.dump(info, fh)
os.replace(tmp, sys.argv[1])
MODE = sys.argv[2]
if MODE == "sleep":
    time.sleep(120)
elif MODE == "exit":
    pass  # returns without fleet.shutdown()
elif MODE == "raise":
    raise RuntimeError("driver fails")
elif MODE == "os_exit":
    os._exit(3)
"""


def _start_driver(tmp_path, mode):
    info_path = str(tmp_path / "pids.json")
    out = open(tmp_path / "driver.out", "wb")
    p = subprocess.Popen(
        [sys.executable, "-c", DRIVER, info_path, mode],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=fleet_env(),
    )
    out.close()
    ok = wait_until(lambda: os.path.exists(info_path) or p.poll() is not None, 30)
    if not os.path.exists(info_path):
        p.kill()
        p.wait()
        pytest.fail(f"driver did not start (ok={ok}): {(tmp_path / 'driver.out').read_text()}")
    with open(info_path) as fh:
        info = json.load(fh)
    procs = [Proc(pid, "daemon") for pid in info["daemons"]]
    procs += [Proc(pid, "worker") for pid in info["workers"]]
    return p, procs


def test_sigkilled_driver_leaves_no_processes(tmp_path):
    p, procs = _start_driver(tmp_path, "sleep")
    try:
        assert len(procs) >= 3
        assert all(pr.alive() for pr in procs if pr.start is not None)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        left = wait_dead(procs, 10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    kill_leftovers(left)
    assert not left, [(pr, pr.cmdline()) for pr in left]


@pytest.mark.parametrize("mode", ["exit", "raise", "os_exit"])
def test_driver_exiting_without_shutdown_leaves_no_processes(tmp_path, mode):
    p, procs = _start_driver(tmp_path, mode)
    try:
        rc = p.wait(20)
        expected = {"exit": 0, "raise": 1, "os_exit": 3}[mode]
        assert rc == expected, (tmp_path / "driver.out").read_text()
        left = wait_dead(procs, 10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    kill_leftovers(left)
    assert not left, [(pr, pr.cmdline()) for pr in left]


def test_driver_exit_without_shutdown_is_quick():
    code = (
        "import fleet, time\n"
        "fleet.init(num_cpus=1)\n"
        "@fleet.remote\n"
        "def f():\n"
        "    return 1\n"
        "assert fleet.get(f.remote(), timeout=30) == 1\n"
        "print('DONE')\n"
    )
    t0 = time.monotonic()
    res = run_python(code, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "DONE" in res.stdout
    assert time.monotonic() - t0 < 15


def test_infeasible_task_warns_and_shutdown_is_prompt(fresh, tmp_path):
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote(num_cpus=100)
    def too_big():
        return 1

    with FdRecorder(tmp_path) as rec:
        ref = too_big.remote()
        ready, not_ready = fleet.wait([ref], timeout=1)
        assert ready == [] and not_ready == [ref]

        def warned():
            text = rec.err
            return "CPU" in text and "100" in text

        assert wait_until(warned, 8, 0.1), rec.err
    procs = cluster_procs()
    t0 = time.monotonic()
    fleet.shutdown()
    assert time.monotonic() - t0 < 5
    left = wait_dead(procs, 5)
    kill_leftovers(left)
    assert not left, left


def test_infeasible_custom_resource_stays_pending(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote(resources={"no_such_resource": 1})
    def needs_custom():
        return 1

    @fleet.remote
    def runs():
        return 2

    ref = needs_custom.remote()
    ready, _ = fleet.wait([ref], timeout=1)
    assert ready == []
    # Other work still runs: the scheduler is not stuck behind the pending task.
    assert fleet.get(runs.remote(), timeout=T) == 2
    assert fleet.wait([ref], timeout=0)[0] == []


def test_nested_tasks_on_one_cpu_do_not_deadlock(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote
    def leaf(x):
        return x + 1

    @fleet.remote
    def middle(x):
        return fleet.get(leaf.remote(x), timeout=T) * 2

    @fleet.remote
    def top(x):
        return fleet.get(middle.remote(x), timeout=T) + 100

    assert fleet.get(top.remote(1), timeout=T) == 104
    assert fleet.get([top.remote(i) for i in range(3)], timeout=T) == [
        (i + 1) * 2 + 100 for i in range(3)
    ]


def test_blocked_worker_lends_its_cpu_to_a_waiting_task(fresh):
    # A task blocked in get() on another task's result, on a one-CPU node.
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote
    def producer():
        return "made"

    @fleet.remote
    def consumer():
        return fleet.get(producer.remote(), timeout=T)

    assert fleet.get(consumer.remote(), timeout=T) == "made"


def test_many_outstanding_gets_from_a_waiting_driver(fresh):
    fleet = fresh
    fleet.init(num_cpus=2)

    @fleet.remote
    def f(x):
        time.sleep(0.01)
        return x

    refs = [f.remote(i) for i in range(200)]
    ready, not_ready = fleet.wait(refs, num_returns=200, timeout=T)
    assert len(ready) == 200 and not_ready == []
    assert fleet.get(refs, timeout=T) == list(range(200))
