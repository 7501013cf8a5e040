"""More than one driver, node labels with label_selector, and Ray's hybrid
scheduling policy.

Ray docs: ray.init (address, RAY_ADDRESS, job_config, labels), ray.job_config.JobConfig,
namespaces, https://docs.ray.io/en/latest/ray-core/scheduling/labels.html
(label_selector, fallback_strategy, ray.io/node-id), the hybrid policy's
scheduler_spread_threshold, get_assigned_resources and OMP_NUM_THREADS
(https://docs.ray.io/en/latest/ray-core/scheduling/resources.html).

Each test starts its own small cluster (the policy and labels are set per
node when it starts) and leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from typing import Any, Dict, Iterator

import pytest

from fleet_test_utils import fleet_env, run_argv, run_python, wait_until
from test_cli import _cli, cli_env  # noqa: F401  (cli_env: the fixture, shared)

import fleet  # isort: skip
from fleet.cluster_utils import Cluster
from fleet.job_config import JobConfig
from fleet.util.placement_group import placement_group, remove_placement_group
from fleet.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@contextlib.contextmanager
def cluster(**head_args: Any) -> Iterator[Cluster]:
    """A Cluster whose head has `head_args`, with this driver connected."""
    if fleet.is_initialized():
        fleet.shutdown()
    c = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        fleet.init(address=c.address)
        yield c
    finally:
        if fleet.is_initialized():
            fleet.shutdown()
        c.shutdown()


@fleet.remote
def node_of() -> str:
    return fleet.get_runtime_context().get_node_id()


@fleet.remote(num_cpus=1)
def hold_until(flag: str) -> str:
    """Holds its CPU (no get: a blocked get would lend it back) until `flag` exists."""
    deadline = time.monotonic() + 60
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.01)
    return fleet.get_runtime_context().get_node_id()


def placed_together(n: int) -> Dict[str, int]:
    """Runs `n` CPU-holding tasks at once; counts them per node."""
    flag = os.path.join(tempfile.gettempdir(), f"fleet-flag-{uuid.uuid4().hex}")
    refs = [hold_until.remote(flag) for _ in range(n)]
    time.sleep(1.0)  # all are placed (leases granted) before any ends
    with open(flag, "w"):
        pass
    try:
        where = fleet.get(refs, timeout=60)
    finally:
        os.unlink(flag)
    counts: Dict[str, int] = {}
    for node in where:
        counts[node] = counts.get(node, 0) + 1
    return counts


# --------------------------------------------------------------------------
# The hybrid policy
# --------------------------------------------------------------------------


def test_hybrid_policy_packs_to_half_then_spreads():
    with cluster(num_cpus=4) as c:
        other = c.add_node(num_cpus=4)
        head = c.head_node.node_id
        # Up to half of the driver's node: all there.
        assert placed_together(2) == {head: 2}
        # Past half: the rest go to the emptier node.
        assert placed_together(4) == {head: 2, other.node_id: 2}


def test_spread_threshold_one_keeps_work_on_the_local_node():
    with cluster(num_cpus=4, _system_config={"scheduler_spread_threshold": 1.0}) as c:
        c.add_node(num_cpus=4)
        assert placed_together(4) == {c.head_node.node_id: 4}


def test_spread_threshold_is_checked():
    with pytest.raises(ValueError, match="scheduler_spread_threshold"):
        fleet.init(num_cpus=1, _system_config={"scheduler_spread_threshold": 2})
    assert not fleet.is_initialized()


def test_default_actors_spread_over_the_nodes():
    # An actor that holds no CPU while alive goes to a random node (as Ray):
    # they do not all pile onto the driver's node.
    with cluster(num_cpus=1) as c:
        c.add_node(num_cpus=1)
        c.add_node(num_cpus=1)

        @fleet.remote
        class Where:
            def node(self):
                return fleet.get_runtime_context().get_node_id()

        actors = [Where.remote() for _ in range(24)]
        nodes = fleet.get([a.node.remote() for a in actors], timeout=60)
        assert len(set(nodes)) == 3, nodes


# --------------------------------------------------------------------------
# Labels and label_selector
# --------------------------------------------------------------------------


def test_test_clusters_may_set_ray_io_labels_but_init_may_not(fresh):
    # As Ray: ray.io/ keys are Ray's own; cluster_utils may set them (Ray's
    # tests do), init(labels=...) refuses them.
    with cluster(num_cpus=1) as c:
        b = c.add_node(num_cpus=1, labels={"ray.io/market-type": "spot"})

        @fleet.remote(label_selector={"ray.io/market-type": "spot"})
        def labels_here():
            return fleet.get_runtime_context().get_node_labels()

        labels = fleet.get(labels_here.remote(), timeout=60)
        assert labels["ray.io/market-type"] == "spot"
        assert labels["ray.io/node-id"] == b.node_id
    fleet.shutdown()
    with pytest.raises(ValueError, match="ray.io/"):
        fleet.init(num_cpus=1, labels={"ray.io/market-type": "spot"})


def test_node_labels_and_task_label_selector():
    with cluster(num_cpus=1, labels={"zone": "a"}) as c:
        b = c.add_node(num_cpus=1, labels={"zone": "b", "gpu-type": "H100"})
        head = c.head_node.node_id
        labels = {n["NodeID"]: n["Labels"] for n in fleet.nodes()}
        assert labels[b.node_id] == {"zone": "b", "gpu-type": "H100", "ray.io/node-id": b.node_id}
        assert labels[head]["ray.io/node-id"] == head

        def run(selector):
            return fleet.get(node_of.options(label_selector=selector).remote(), timeout=30)

        for _ in range(3):
            assert run({"zone": "b"}) == b.node_id
            assert run({"zone": "!b"}) == head
            assert run({"zone": "in(c, b)"}) == b.node_id
            assert run({"zone": "!in(b)"}) == head
            assert run({"gpu-type": "!A100", "zone": "b"}) == b.node_id
            assert run({"ray.io/node-id": head}) == head

        # No node matches: it waits (as for missing resources), never runs elsewhere.
        ref = node_of.options(label_selector={"zone": "z"}).remote()
        ready, _ = fleet.wait([ref], timeout=1.0)
        assert not ready
        z = c.add_node(num_cpus=1, labels={"zone": "z"})
        assert fleet.get(ref, timeout=30) == z.node_id

        @fleet.remote
        def my_labels():
            return fleet.get_runtime_context().get_node_labels()

        assert my_labels.options(label_selector={"zone": "b"}).remote() is not None
        got = fleet.get(my_labels.options(label_selector={"zone": "b"}).remote(), timeout=30)
        assert got["zone"] == "b" and got["ray.io/node-id"] == b.node_id


def test_actor_label_selector_and_fallback_strategy():
    with cluster(num_cpus=1, labels={"zone": "a"}) as c:
        b = c.add_node(num_cpus=1, labels={"zone": "b"})

        @fleet.remote(num_cpus=0)
        class Where:
            def node(self):
                return fleet.get_runtime_context().get_node_id()

        for _ in range(3):
            a = Where.options(label_selector={"zone": "b"}).remote()
            assert fleet.get(a.node.remote(), timeout=30) == b.node_id
        # The selector matches no node: the first fallback that does is used.
        a = Where.options(
            label_selector={"zone": "x"},
            fallback_strategy=[{"label_selector": {"zone": "y"}},
                               {"label_selector": {"zone": "in(a)"}}],
        ).remote()
        assert fleet.get(a.node.remote(), timeout=30) == c.head_node.node_id


@pytest.mark.parametrize(
    "selector",
    [{"zone": "in()"}, {"zone": "-b"}, {"zone": "!!b"}, {"bad key!": "b"}, {"zone": 3}],
)
def test_bad_label_selectors_are_refused(selector):
    with pytest.raises(ValueError):
        node_of.options(label_selector=selector)


def test_a_label_selector_of_the_wrong_type_is_a_type_error():
    # As Ray's option table: the type is checked first (TypeError).
    with pytest.raises(TypeError, match="label_selector"):
        node_of.options(label_selector="zone=b")


def test_bad_fallback_strategies_are_refused():
    @fleet.remote
    class A:
        pass

    for bad in ([{}], [{"label_selector": {"zone": "in("}}], [{"num_cpus": 1}], ["x"], {}):
        with pytest.raises(ValueError):
            A.options(fallback_strategy=bad)
    with pytest.raises(ValueError, match="fallback_strategy"):
        node_of.options(fallback_strategy=[{"label_selector": {"a": "b"}}])  # actors only


def test_init_labels_are_checked():
    with pytest.raises(ValueError, match="ray.io/"):
        fleet.init(num_cpus=1, labels={"ray.io/node-id": "mine"})
    with pytest.raises(ValueError):
        fleet.init(num_cpus=1, labels={"zone": "not valid!"})
    assert not fleet.is_initialized()
    fleet.init(num_cpus=1, labels={"zone": "here"})
    try:
        assert fleet.get_runtime_context().get_node_labels()["zone"] == "here"
        assert fleet.get(node_of.options(label_selector={"zone": "here"}).remote(), timeout=30)
    finally:
        fleet.shutdown()


# --------------------------------------------------------------------------
# Workers: GPUs, OMP_NUM_THREADS, assigned resources
# --------------------------------------------------------------------------


def test_gpu_tasks_do_not_reuse_cpu_workers():
    fleet.init(num_cpus=2, num_gpus=2)
    try:
        @fleet.remote(num_cpus=1)
        def cpu_pid():
            return os.getpid()

        @fleet.remote(num_cpus=1, num_gpus=1)
        def gpu_pid():
            return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), fleet.get_gpu_ids()

        cpu = set(fleet.get([cpu_pid.remote() for _ in range(6)], timeout=60))
        for _ in range(4):
            pid, visible, ids = fleet.get(gpu_pid.remote(), timeout=60)
            assert pid not in cpu
            assert visible == ",".join(str(i) for i in ids)
        cpu_after = set(fleet.get([cpu_pid.remote() for _ in range(6)], timeout=60))
        gpu_pids = {fleet.get(gpu_pid.remote(), timeout=60)[0] for _ in range(4)}
        assert not cpu_after & gpu_pids
    finally:
        fleet.shutdown()


def test_omp_num_threads_follows_num_cpus():
    fleet.init(num_cpus=4)
    try:
        @fleet.remote
        def omp():
            return os.environ.get("OMP_NUM_THREADS")

        @fleet.remote(num_cpus=0)
        class A:
            def omp(self):
                return os.environ.get("OMP_NUM_THREADS")

        assert fleet.get(omp.remote(), timeout=30) == "1"
        assert fleet.get(omp.options(num_cpus=3).remote(), timeout=30) == "3"
        assert fleet.get(omp.options(num_cpus=0.5).remote(), timeout=30) == "1"
        assert fleet.get(omp.options(num_cpus=2.5).remote(), timeout=30) == "2"
        assert fleet.get(omp.remote(), timeout=30) == "1"  # set again per task
        assert fleet.get(A.remote().omp.remote(), timeout=30) == "1"
        assert fleet.get(A.options(num_cpus=2).remote().omp.remote(), timeout=30) == "2"
        # The user's own setting wins.
        env = {"env_vars": {"OMP_NUM_THREADS": "7"}}
        assert fleet.get(omp.options(num_cpus=2, runtime_env=env).remote(), timeout=30) == "7"
    finally:
        fleet.shutdown()


def test_assigned_resources_in_a_placement_group_use_plain_names():
    fleet.init(num_cpus=2)
    try:
        pg = placement_group([{"CPU": 1}, {"CPU": 1}])
        assert pg.wait(30)

        @fleet.remote(num_cpus=1)
        def assigned():
            return fleet.get_runtime_context().get_assigned_resources()

        for index in (-1, 1):
            strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
            got = fleet.get(assigned.options(scheduling_strategy=strategy).remote(), timeout=30)
            assert got == {"CPU": 1.0}
        remove_placement_group(pg)
    finally:
        fleet.shutdown()


def test_actor_in_group_waits_for_a_gpu_node_to_join():
    with cluster(num_cpus=1) as c:
        pg = placement_group([{"GPU": 1, "CPU": 1}])

        @fleet.remote(num_gpus=1, num_cpus=1)
        class G:
            def node(self):
                return fleet.get_runtime_context().get_node_id()

        g = G.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
        ready, _ = fleet.wait([g.node.remote()], timeout=1.0)
        assert not ready
        gpu_node = c.add_node(num_cpus=1, num_gpus=1)
        assert pg.wait(30)
        assert fleet.get(g.node.remote(), timeout=60) == gpu_node.node_id


# --------------------------------------------------------------------------
# JobConfig
# --------------------------------------------------------------------------


def test_job_config_is_honoured():
    ns = "jc-" + uuid.uuid4().hex[:8]
    config = JobConfig(
        runtime_env={"env_vars": {"FROM_JOB": "yes"}},
        metadata={"team": "core"},
        ray_namespace=ns,
    )
    ctx = fleet.init(num_cpus=1, job_config=config)
    try:
        assert ctx["namespace"] == ns
        assert fleet.get_runtime_context().namespace == ns

        @fleet.remote
        def env():
            return os.environ.get("FROM_JOB")

        assert fleet.get(env.remote(), timeout=30) == "yes"
    finally:
        fleet.shutdown()
    # init's own namespace wins over the JobConfig's.
    fleet.init(num_cpus=1, job_config=JobConfig(ray_namespace="x"), namespace="y")
    try:
        assert fleet.get_runtime_context().namespace == "y"
    finally:
        fleet.shutdown()


def test_job_config_refusals():
    with pytest.raises(ValueError, match="lifetime"):
        JobConfig(default_actor_lifetime="forever")
    with pytest.raises(ValueError, match="jvm_options"):
        fleet.init(num_cpus=1, job_config=JobConfig(jvm_options=["-Xmx1g"]))
    with pytest.raises(ValueError, match="runtime_env"):
        fleet.init(num_cpus=1, job_config=JobConfig(runtime_env={"conda": "x"}))
    with pytest.raises(TypeError):
        fleet.init(num_cpus=1, job_config={"ray_namespace": "x"})
    assert not fleet.is_initialized()
    assert JobConfig.from_json(JobConfig(metadata={"a": "b"}).to_json()).metadata == {"a": "b"}


# --------------------------------------------------------------------------
# Several drivers
# --------------------------------------------------------------------------

SECOND_DRIVER = """
import os, sys, fleet
from fleet.job_config import JobConfig
mode = sys.argv[1]
if mode == "address":
    fleet.init(address=os.environ["CLUSTER_ADDRESS"], namespace="shared")
elif mode == "auto":
    fleet.init(address="auto", namespace="shared")
else:
    fleet.init(namespace="shared")  # RAY_ADDRESS
a = fleet.get_actor("counter")
print("COUNT", fleet.get(a.incr.remote(), timeout=30))
try:
    fleet.get_actor("counter", namespace="other")
except ValueError:
    print("NOT-IN-OTHER")
fleet.shutdown()
"""


def test_second_drivers_join_and_share_named_actors():
    with cluster(num_cpus=1) as c:
        fleet.shutdown()
        fleet.init(address=c.address, namespace="shared")

        @fleet.remote(num_cpus=0)
        class Counter:
            def __init__(self):
                self.n = 0

            def incr(self):
                self.n += 1
                return self.n

        counter = Counter.options(name="counter").remote()
        assert fleet.get(counter.incr.remote(), timeout=30) == 1
        env = fleet_env({"CLUSTER_ADDRESS": c.address})
        env.pop("FLEET_CLUSTER_TOKEN", None)  # found the way the CLI finds it
        expected = 2
        for mode, extra in (("address", {}), ("auto", {}), ("env", {"RAY_ADDRESS": c.address})):
            res = run_python(
                SECOND_DRIVER.replace("sys.argv[1]", repr(mode)), timeout=60, env={**env, **extra}
            )
            assert res.returncode == 0, res.stderr
            assert f"COUNT {expected}" in res.stdout, res.stdout + res.stderr
            assert "NOT-IN-OTHER" in res.stdout
            expected += 1
        assert fleet.get(counter.incr.remote(), timeout=30) == expected


def test_default_actor_lifetime_detached_outlives_the_driver():
    with cluster(num_cpus=1) as c:
        fleet.shutdown()
        code = f"""
import fleet
from fleet.job_config import JobConfig
fleet.init(address={c.address!r}, namespace="keep",
           job_config=JobConfig(default_actor_lifetime="detached"))

@fleet.remote(num_cpus=0)
class Keeper:
    def ping(self):
        return "pong"

k = Keeper.options(name="keeper").remote()
assert fleet.get(k.ping.remote(), timeout=30) == "pong"
"""
        res = run_python(code, timeout=60)
        assert res.returncode == 0, res.stderr
        fleet.init(address=c.address, namespace="keep")
        keeper = fleet.get_actor("keeper")
        assert fleet.get(keeper.ping.remote(), timeout=30) == "pong"
        fleet.kill(keeper)


def test_init_auto_finds_a_cluster_utils_cluster():
    with cluster(num_cpus=1) as c:
        fleet.shutdown()
        info = fleet.init(address="auto")
        assert info["gcs_address"] == c.address
        assert wait_until(lambda: len(fleet.nodes()) == 1, 10)


def test_accelerator_type_needs_a_node_with_that_accelerator():
    from fleet.util import accelerators

    fleet.init(num_cpus=1, resources={f"accelerator_type:{accelerators.NVIDIA_A100}": 1})
    try:
        ok = node_of.options(accelerator_type=accelerators.NVIDIA_A100).remote()
        assert fleet.get(ok, timeout=30)
        other = node_of.options(accelerator_type=accelerators.NVIDIA_TESLA_V100).remote()
        ready, _ = fleet.wait([other], timeout=1.0)
        assert not ready
    finally:
        fleet.shutdown()


def test_a_burst_of_actors_fills_every_node():
    # Placed at once, before any node reports the first ones: actors whose
    # leases are still on their way count against their node.
    with cluster(num_cpus=0) as c:
        for _ in range(3):
            c.add_node(num_cpus=1)

        @fleet.remote(num_cpus=1)
        class One:
            def node(self):
                return fleet.get_runtime_context().get_node_id()

        actors = [One.remote() for _ in range(3)]
        nodes = fleet.get([a.node.remote() for a in actors], timeout=60)
        assert len(set(nodes)) == 3, nodes


def test_tasks_in_a_gpu_bundle_see_its_gpus():
    fleet.init(num_cpus=2, num_gpus=2)
    try:
        pg = placement_group([{"GPU": 1}, {"GPU": 1}], strategy="STRICT_PACK")
        assert pg.wait(30)

        @fleet.remote(num_gpus=1, num_cpus=0)
        def gpus():
            return fleet.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        seen = set()
        for index in (0, 1):
            s = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
            ids, visible = fleet.get(gpus.options(scheduling_strategy=s).remote(), timeout=30)
            assert len(ids) == 1 and visible == str(ids[0])
            seen.add(ids[0])
        assert seen == {0, 1}
        remove_placement_group(pg)
    finally:
        fleet.shutdown()


CLI_DRIVER = """
import json, sys, fleet
fleet.init(address=sys.argv[1])
me = fleet.get_runtime_context().get_node_labels()

@fleet.remote(label_selector={"rack": "r1"})
def f():
    return fleet.get_runtime_context().get_node_labels()["rack"]

print("RESULT " + json.dumps({"labels": me, "rack": fleet.get(f.remote(), timeout=30)}))
fleet.shutdown()
"""


@pytest.fixture
def cli(cli_env):  # noqa: F811  (test_cli's fixture: a FLEET_TMPDIR and a free port)
    return cli_env


def test_fleet_start_labels_and_a_driver_joining_by_address(cli):
    import json
    import sys

    env, port = cli
    env = dict(env)
    env.pop("FLEET_CLUSTER_TOKEN", None)
    rc, out, err = _cli(env, "start", "--head", "--port", str(port), "--labels", "ray.io/x=1")
    assert rc == 2 and "ray.io/" in err, out + err
    rc, out, err = _cli(env, "start", "--head", "--num-cpus", "1", "--port", str(port),
                        "--labels", "rack=r1,tier=gold",
                        "--system-config", '{"scheduler_spread_threshold": 0.25}')
    assert rc == 0, out + err
    address = next(a for a in out.split() if a.endswith(f":{port}"))
    # Another driver joins by address alone: the token is found as the CLI finds it.
    res = run_argv([sys.executable, "-c", CLI_DRIVER, address], 60, env)
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    info = json.loads(line[len("RESULT "):])
    assert info["labels"]["rack"] == "r1" and info["labels"]["tier"] == "gold"
    assert "ray.io/node-id" in info["labels"]
    assert info["rack"] == "r1"


def test_ray_client_addresses_are_refused_clearly():
    with pytest.raises(ValueError, match="ray://"):
        fleet.init(address="ray://127.0.0.1:10001")
    assert not fleet.is_initialized()


def test_actors_after_tasks_never_queue_at_a_full_node():
    # Actor leases granted since a node's last report count against it too:
    # otherwise the control store could send one more actor to a node it
    # already filled, where it would wait while another node has room.
    with cluster(num_cpus=0, _system_config={"scheduler_spread_threshold": 0}) as c:
        for _ in range(2):
            c.add_node(num_cpus=8)

        @fleet.remote
        def busy():
            time.sleep(0.5)

        fleet.get([busy.remote() for _ in range(8)], timeout=60)

        @fleet.remote(num_cpus=1)
        class One:
            def node(self):
                return fleet.get_runtime_context().get_node_id()

        for _ in range(3):
            actors = [One.remote() for _ in range(10)]
            nodes = fleet.get([a.node.remote() for a in actors], timeout=30)
            assert len(nodes) == 10
            for a in actors:
                fleet.kill(a)
            wait_until(lambda: fleet.available_resources().get("CPU") == 16, 10)
