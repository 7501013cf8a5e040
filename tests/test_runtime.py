"""Runtime behaviours behind the API: the cluster token, worker pool sizing,
reference counting in the owner, and leases given back when idle."""

from __future__ import annotations

import gc
import glob
import os
import time

import pytest

from fleet._private import state
from fleet_test_utils import run_python, wait_until

pytestmark = pytest.mark.timeout(120)
T = 30


def test_wrong_token_is_refused_with_a_clear_error_on_both_ends(tmp_path):
    # A cluster started by a subprocess driver; a second driver joins it with
    # the wrong token. The joiner gets a ConnectionError naming the token, and
    # the daemon it tried logs the refusal.
    code = f"""
import json, os, time, fleet
fleet.init(num_cpus=1)
from fleet._private import state
print("INFO" + json.dumps({{"gcs": state.gcs_address, "session": state.session_dir}}), flush=True)
open({str(tmp_path / "up")!r}, "w").close()
while not os.path.exists({str(tmp_path / "done")!r}):
    time.sleep(0.05)
fleet.shutdown()
"""
    import subprocess
    import sys

    from fleet_test_utils import fleet_env

    owner = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=open(tmp_path / "out", "w"),
        stderr=subprocess.STDOUT,
        env=fleet_env(),
    )
    try:
        assert wait_until(lambda: (tmp_path / "up").exists(), 30), (tmp_path / "out").read_text()
        info = None
        for line in (tmp_path / "out").read_text().splitlines():
            if line.startswith("INFO"):
                import json

                info = json.loads(line[4:])
        assert info
        joiner = f"""
import fleet
from fleet._private import services
services.read_cluster_file = lambda: {{"gcs_address": {info["gcs"]!r},
    "node_socket": "unix:" + {info["session"]!r} + "/sockets/node.sock",
    "session_dir": {info["session"]!r}, "node_ip": "127.0.0.1", "token": "unused"}}
try:
    fleet.init(address={info["gcs"]!r})
    print("CONNECTED")
except ConnectionError as e:
    print("REFUSED", e)
"""
        res = run_python(joiner, env=fleet_env({"FLEET_CLUSTER_TOKEN": "not-the-token"}))
        assert "REFUSED" in res.stdout, res.stdout + res.stderr
        assert "token" in res.stdout.lower()
        assert "refused" in res.stderr.lower()  # the client's own log line
        logs = "".join(open(p).read() for p in glob.glob(info["session"] + "/logs/fleet-*.log"))
        assert "refused connection" in logs and "token" in logs
    finally:
        (tmp_path / "done").touch()
        owner.wait(30)


def test_surplus_workers_are_reaped_back_to_num_cpus(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote
    def leaf(i):
        return os.getpid()

    @fleet.remote
    def parent(depth):
        # Blocks in get(): lends its CPU, so fleet-node starts more workers.
        if depth == 0:
            return {os.getpid()}
        return {os.getpid()} | fleet.get(parent.remote(depth - 1), timeout=T)

    pids = fleet.get(parent.remote(3), timeout=T)
    assert len(pids) >= 3  # nested blocked tasks each needed a worker
    core = state.core
    # Idle workers beyond num_cpus exit after about a second of idleness.
    assert wait_until(lambda: core.node_stats()["num_workers"] <= 1, 15), core.node_stats()
    # And the pool still works.
    assert fleet.get(leaf.remote(1), timeout=T) > 0


def test_owner_frees_objects_when_refs_are_dropped(fresh):
    fleet = fresh
    fleet.init(num_cpus=2)

    @fleet.remote
    def f(i):
        return i

    core = state.core
    base = core.num_objects()
    refs = [f.remote(i) for i in range(3000)]
    puts = [fleet.put(i) for i in range(1000)]
    assert fleet.get(refs, timeout=T) == list(range(3000))
    assert core.num_objects() >= base + 4000
    del refs, puts
    gc.collect()
    assert core.num_objects() == base


def test_refs_held_by_pending_tasks_keep_their_objects(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote
    def slow(x):
        time.sleep(0.5)
        return x

    @fleet.remote
    def add(a, b):
        return a + b

    a = fleet.put(40)
    b = slow.remote(2)
    out = add.remote(a, b)
    del a, b  # only the pending task holds them now
    gc.collect()
    assert fleet.get(out, timeout=T) == 42


def test_idle_leases_are_given_back(fresh):
    fleet = fresh
    fleet.init(num_cpus=2)

    @fleet.remote
    def f():
        return 1

    assert sum(fleet.get([f.remote() for _ in range(200)], timeout=T)) == 200
    # Nothing runs now: every CPU is free again (eventually consistent).
    assert wait_until(lambda: fleet.available_resources().get("CPU") == 2.0, 10), (
        fleet.available_resources()
    )


def test_function_is_exported_once_per_job(fresh):
    fleet = fresh
    fleet.init(num_cpus=2)

    @fleet.remote
    def g(i):
        return i

    fleet.get([g.remote(i) for i in range(50)], timeout=T)
    fleet.get(g.options(num_cpus=0.5).remote(1), timeout=T)
    keys = state.core.kv_keys(f"fn:{state.core.job_id}:")
    assert len([k for k in keys if k.endswith(":" + g._name)]) == 1, keys


def test_worker_crash_error_explains_itself(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote(max_retries=0)
    def dies_loudly():
        import sys

        print("fleet-test: about to exit 7", file=sys.stderr, flush=True)
        os._exit(7)

    with pytest.raises(fleet.exceptions.WorkerCrashedError) as info:
        fleet.get(dies_loudly.remote(), timeout=T)
    text = str(info.value)
    assert "dies_loudly" in text
    assert "pid=" in text
    assert "exited with code 7" in text
    assert "fleet-test: about to exit 7" in text


def test_max_calls_retires_the_worker(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)

    @fleet.remote(max_calls=1)
    def pid_once():
        return os.getpid()

    @fleet.remote(max_calls=2)
    def pid_twice():
        return os.getpid()

    once = [fleet.get(pid_once.remote(), timeout=T) for _ in range(3)]
    assert len(set(once)) == 3, once  # a fresh worker for every call
    twice = [fleet.get(pid_twice.remote(), timeout=T) for _ in range(4)]
    assert twice[0] == twice[1] and twice[2] == twice[3] and twice[0] != twice[2], twice
    # Many calls at once: all complete, none is lost to a retiring worker.
    assert len(fleet.get([pid_once.remote() for _ in range(6)], timeout=T)) == 6


def test_ctrl_c_interrupts_get_and_wait_in_the_driver():
    code = """
import os, signal, threading, time
import fleet
fleet.init(num_cpus=1)

@fleet.remote
def slow():
    time.sleep(60)

r = slow.remote()
for call in (lambda: fleet.get(r), lambda: fleet.wait([r])):
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.time()
    try:
        call()
        print("NOT INTERRUPTED")
    except KeyboardInterrupt:
        print("INTERRUPTED", round(time.time() - t0, 1))
fleet.shutdown()
"""
    res = run_python(code, timeout=60)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(("INTERRUPTED", "NOT"))]
    assert len(lines) == 2 and all(ln.startswith("INTERRUPTED") for ln in lines), (
        res.stdout + res.stderr
    )
    assert all(float(ln.split()[1]) < 10 for ln in lines), lines


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class _Probe:
    def pid(self):
        return os.getpid()

    def rand(self):
        import random

        return random.random()


def test_workers_are_forked_from_the_zygote_and_it_ends_with_the_cluster(fresh):
    from fleet_test_utils import Proc, wait_dead

    fleet = fresh
    fleet.init(num_cpus=1)
    core = state.core
    assert wait_until(lambda: core.node_stats()["zygote_pid"] > 0, 15), core.node_stats()
    zygote = core.node_stats()["zygote_pid"]
    probe = fleet.remote(_Probe).options(num_cpus=0)
    actors = [probe.remote() for _ in range(3)]
    pids = fleet.get([a.pid.remote() for a in actors], timeout=T)
    # One may run on the prestarted worker (fork + exec, before the zygote was
    # up); the workers started for the others come from the zygote.
    assert sum(_ppid(p) == zygote for p in pids) >= 2, "new workers must be forked by the zygote"
    # Each forked worker reseeds: no two share the zygote's random sequence.
    values = fleet.get([a.rand.remote() for a in actors], timeout=T)
    assert len(set(values)) == 3, values
    fleet.shutdown()
    assert not wait_dead([Proc(zygote, "zygote"), *(Proc(p, "actor") for p in pids)], 10)


def test_workers_still_start_when_the_zygote_dies(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)
    core = state.core
    assert wait_until(lambda: core.node_stats()["zygote_pid"] > 0, 15)
    zygote = core.node_stats()["zygote_pid"]
    os.kill(zygote, 9)
    assert wait_until(lambda: core.node_stats()["zygote_pid"] == 0, 10)
    probe = fleet.remote(_Probe).options(num_cpus=0)
    a = probe.remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    assert _ppid(pid) == state.cluster.pids[1], "fleet-node starts workers itself then"
