"""Several nodes on one machine (``fleet.cluster_utils.Cluster``): the cluster
view, scheduling strategies, objects and actors across nodes, placement
groups and worker output relayed from other nodes.

Ray docs: https://docs.ray.io/en/latest/ray-core/scheduling/index.html,
.../scheduling/placement-group.html, .../ray-observability (log
deduplication) and ``ray.cluster_utils.Cluster``.

Most tests share one module cluster (`cl`): a head and two nodes with two
CPUs each, node "b" with the custom resource {"b": 1} and node "c" with
{"c": 1}. Tests that remove nodes or need an empty cluster start their own
small one (`own_cluster`); the `cl` fixture reconnects the driver to the
shared cluster afterwards. Every test leaves the shared cluster's resources
free (placement groups removed, actors killed).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Iterator, List, Set

import pytest

from fleet_test_utils import (
    FdRecorder,
    Proc,
    fleet_env,
    kill_leftovers,
    run_argv,
    wait_dead,
    wait_until,
)

import fleet  # isort: skip
from fleet._private import state
from fleet.cluster_utils import Cluster, NodeHandle
from fleet.util.placement_group import (
    get_current_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from fleet.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.timeout(90)

T = 30  # timeout (s) of every get/wait unless a test says otherwise
MIB = 1024 * 1024


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _children(pids: Set[int]) -> Set[int]:
    """Every descendant of `pids` (by scanning /proc for parent ids)."""
    parent: Dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        parent[int(name)] = int(data[data.rfind(")") + 2 :].split()[1])
    out: Set[int] = set()
    frontier = set(pids)
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out |= frontier
    return out


def cluster_processes(cluster: Cluster) -> List[Proc]:
    """The control store, every node daemon and all their descendants
    (workers, zygotes), remembered with their start times."""
    daemons = {n.process.pid: f"fleet-node {n.index}" for n in cluster.list_all_nodes()}
    gcs = getattr(cluster, "_gcs", None)
    if gcs is not None:
        daemons[gcs.pid] = "fleet-gcs"
    procs = [Proc(pid, what) for pid, what in daemons.items()]
    procs += [Proc(pid, "descendant") for pid in _children(set(daemons))]
    return [p for p in procs if p.alive()]


def shutdown_cluster(cluster: Cluster) -> List[Proc]:
    """Disconnects the driver, stops `cluster`; returns processes that outlived it."""
    procs = cluster_processes(cluster)
    if fleet.is_initialized():
        fleet.shutdown()
    cluster.shutdown()
    return wait_dead(procs, 10)


def alive_node_ids() -> Set[str]:
    return {n["NodeID"] for n in fleet.nodes() if n["Alive"]}


def node_entry(node_id: str) -> dict:
    [entry] = [n for n in fleet.nodes() if n["NodeID"] == node_id]
    return entry


def pattern(n: int):
    """n bytes with a[i] == i % 251 (a prime period: misplaced chunks show)."""
    return np.resize(np.arange(251, dtype=np.uint8), n)


def driver_node_id() -> str:
    return fleet.get_runtime_context().get_node_id()


@contextlib.contextmanager
def own_cluster(head_cpus: int = 1) -> Iterator[Cluster]:
    """A fresh cluster (head only) with the driver connected to it; on exit
    it is stopped and none of its processes may remain."""
    if fleet.is_initialized():
        fleet.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus})
    ok = False
    try:
        fleet.init(address=cluster.address)
        yield cluster
        ok = True
    finally:
        left = shutdown_cluster(cluster)
        if left:
            kill_leftovers(left)
            if ok:
                pytest.fail(f"processes of the cluster outlived Cluster.shutdown(): {left}")


@dataclass
class Shared:
    cluster: Cluster
    head: NodeHandle
    b: NodeHandle
    c: NodeHandle

    @property
    def ids(self) -> Set[str]:
        return {self.head.node_id, self.b.node_id, self.c.node_id}


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    if fleet.is_initialized():
        fleet.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        b = cluster.add_node(num_cpus=2, resources={"b": 1})
        c = cluster.add_node(num_cpus=2, resources={"c": 1})
        yield Shared(cluster, cluster.head_node, b, c)
    finally:
        left = shutdown_cluster(cluster)
        if left:
            kill_leftovers(left)
            pytest.fail(f"processes of the shared cluster outlived Cluster.shutdown(): {left}")


@pytest.fixture
def cl(shared: Shared) -> Shared:
    """The shared cluster, with this driver connected to it."""
    if not fleet.is_initialized() or state.gcs_address != shared.cluster.address:
        if fleet.is_initialized():
            fleet.shutdown()
        fleet.init(address=shared.cluster.address)
    return shared


# --------------------------------------------------------------------------
# Remote functions and actors
# --------------------------------------------------------------------------


@fleet.remote
def where():
    return fleet.get_runtime_context().get_node_id()


@fleet.remote
def where_pid():
    return fleet.get_runtime_context().get_node_id(), os.getpid()


@fleet.remote
def short_where():
    time.sleep(0.005)
    return fleet.get_runtime_context().get_node_id()


@fleet.remote(num_returns=2)
def produce(n):
    return pattern(n), fleet.get_runtime_context().get_node_id()


@fleet.remote
def check_array(a, n):
    ok = a.dtype == np.uint8 and a.size == n and bool(np.array_equal(a, pattern(n)))
    return ok, fleet.get_runtime_context().get_node_id(), int(a[n // 2])


@fleet.remote
def get_inner(refs, n):
    """Gets a ref passed inside a list (not resolved by the runtime)."""
    a = fleet.get(refs[0], timeout=60)
    return bool(np.array_equal(a, pattern(n))), fleet.get_runtime_context().get_node_id()


@fleet.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self, by=1):
        self.n += by
        return self.n

    def node(self):
        return fleet.get_runtime_context().get_node_id()

    def value(self):
        return self.n


@fleet.remote
def call_named(name, by):
    h = fleet.get_actor(name)
    return fleet.get(h.incr.remote(by), timeout=30), fleet.get_runtime_context().get_node_id()


@fleet.remote
def call_handle(h, times):
    out = [fleet.get(h.incr.remote(), timeout=30) for _ in range(times)]
    return out, fleet.get(h.node.remote(), timeout=30), fleet.get_runtime_context().get_node_id()


@fleet.remote(num_cpus=1)
def in_bundle():
    pg = get_current_placement_group()
    return fleet.get_runtime_context().get_node_id(), pg.id.hex() if pg else None


@fleet.remote
def printer(line, pause=0.0):
    time.sleep(pause)
    print(line, flush=True)
    return os.getpid()


# --------------------------------------------------------------------------
# 1. Cluster basics
# --------------------------------------------------------------------------


def test_nodes_lists_three_alive_nodes_with_their_resources(cl):
    nodes = {n["NodeID"]: n for n in fleet.nodes() if n["Alive"]}
    assert set(nodes) == cl.ids
    assert all(n["alive"] for n in nodes.values())
    for h in (cl.head, cl.b, cl.c):
        res = nodes[h.node_id]["Resources"]
        assert res["CPU"] == 2
        assert res["object_store_memory"] == 256 * MIB
    assert nodes[cl.b.node_id]["Resources"].get("b") == 1
    assert nodes[cl.c.node_id]["Resources"].get("c") == 1
    assert "b" not in nodes[cl.c.node_id]["Resources"]
    assert "c" not in nodes[cl.head.node_id]["Resources"]
    total = fleet.cluster_resources()
    assert total["CPU"] == 6
    assert total["b"] == 1 and total["c"] == 1
    # The driver joined the head node (its node id is the head's).
    assert driver_node_id() == cl.head.node_id


def test_remove_node_marks_it_dead_and_shutdown_reaps_everything():
    with own_cluster() as cluster:
        x = cluster.add_node(num_cpus=1, resources={"x": 1})
        assert alive_node_ids() == {cluster.head_node.node_id, x.node_id}
        on_x, x_worker = fleet.get(where_pid.options(resources={"x": 1}).remote(), timeout=T)
        on_head, head_worker = fleet.get(where_pid.remote(), timeout=T)
        assert on_x == x.node_id and on_head == cluster.head_node.node_id
        x_procs = [Proc(x.process.pid, "fleet-node x")] + [
            Proc(p, "x descendant") for p in _children({x.process.pid})
        ]
        assert any(p.pid == x_worker for p in x_procs)

        cluster.remove_node(x)
        assert wait_until(lambda: not node_entry(x.node_id)["Alive"], 5, 0.05), (
            f"removed node still alive in fleet.nodes(): {node_entry(x.node_id)}"
        )
        assert node_entry(x.node_id)["Resources"] == {}
        assert alive_node_ids() == {cluster.head_node.node_id}
        assert wait_until(lambda: "x" not in fleet.cluster_resources(), 5, 0.05)
        # Its worker went with it, the rest of the cluster still works.
        assert not wait_dead(x_procs, 10), "the removed node's processes survived it"
        assert fleet.get(where.remote(), timeout=T) == cluster.head_node.node_id
        procs = cluster_processes(cluster)
        assert any(p.pid == head_worker for p in procs)
    # own_cluster's exit: shutdown_cluster() found no survivors; check explicitly.
    assert not [p for p in procs if p.alive()], "cluster processes outlived Cluster.shutdown()"


# --------------------------------------------------------------------------
# 2. Scheduling
# --------------------------------------------------------------------------


def test_default_strategy_runs_small_task_on_head(cl):
    # The submitting node (the head) has free CPUs: no reason to leave it.
    for _ in range(3):
        assert fleet.get(where.remote(), timeout=T) == cl.head.node_id


def test_custom_resource_runs_on_the_node_that_has_it(cl):
    on_b = fleet.get([where.options(resources={"b": 0.5}).remote() for _ in range(4)], timeout=T)
    on_c = fleet.get([where.options(resources={"c": 0.25}).remote() for _ in range(4)], timeout=T)
    assert set(on_b) == {cl.b.node_id}
    assert set(on_c) == {cl.c.node_id}


def test_spread_uses_every_node(cl):
    refs = [short_where.options(scheduling_strategy="SPREAD").remote() for _ in range(300)]
    nodes = fleet.get(refs, timeout=90)
    counts = {n: nodes.count(n) for n in set(nodes)}
    assert set(counts) == cl.ids, f"SPREAD tasks ran on {counts}"
    # Round robin: no node is left with a token share.
    assert min(counts.values()) >= 30, f"SPREAD is lopsided: {counts}"


def test_hard_node_affinity_runs_on_that_node(cl):
    for h in (cl.b, cl.c, cl.head):
        s = NodeAffinitySchedulingStrategy(h.node_id, soft=False)
        refs = [where.options(scheduling_strategy=s).remote() for _ in range(3)]
        assert fleet.get(refs, timeout=T) == [h.node_id] * 3
    # Soft affinity to a live node with room also runs there.
    s = NodeAffinitySchedulingStrategy(cl.c.node_id, soft=True)
    assert fleet.get(where.options(scheduling_strategy=s).remote(), timeout=T) == cl.c.node_id


def _assert_unschedulable(ref, node_id):
    with pytest.raises(fleet.exceptions.RayError) as info:
        fleet.get(ref, timeout=T)
    assert not isinstance(info.value, fleet.exceptions.GetTimeoutError), (
        "hard affinity to a dead node hung instead of failing"
    )
    msg = str(info.value)
    assert node_id in msg or "NodeAffinity" in msg, msg


def test_affinity_to_a_dead_node():
    with own_cluster() as cluster:
        fleet.get(where.remote(), timeout=T)  # a worker is up
        for _ in range(3):
            x = cluster.add_node(num_cpus=1)
            dead = x.node_id
            hard = NodeAffinitySchedulingStrategy(dead, soft=False)
            soft = NodeAffinitySchedulingStrategy(dead, soft=True)
            cluster.remove_node(x)
            # Just gone (the cluster may not know yet): never run anywhere else.
            ref = where.options(scheduling_strategy=hard, max_retries=0).remote()
            _assert_unschedulable(ref, dead)
        assert wait_until(lambda: not node_entry(dead)["Alive"], 5, 0.01)
        # Known dead.
        _assert_unschedulable(where.options(scheduling_strategy=hard, max_retries=0).remote(),
                              dead)
        assert fleet.get(where.options(scheduling_strategy=soft).remote(), timeout=T) == (
            cluster.head_node.node_id
        )

        # Actors likewise: hard affinity to the dead node fails, soft runs elsewhere.
        a = Counter.options(scheduling_strategy=hard).remote()
        with pytest.raises(fleet.exceptions.RayActorError):
            fleet.get(a.value.remote(), timeout=T)
        a = Counter.options(scheduling_strategy=soft).remote()
        assert fleet.get(a.node.remote(), timeout=T) == cluster.head_node.node_id


def test_hard_affinity_to_unknown_node_fails(cl):
    s = NodeAffinitySchedulingStrategy("ab" * 16, soft=False)
    with pytest.raises(fleet.exceptions.RayError) as info:
        fleet.get(where.options(scheduling_strategy=s, max_retries=0).remote(), timeout=T)
    assert not isinstance(info.value, fleet.exceptions.GetTimeoutError)
    assert "ab" * 16 in str(info.value) or "NodeAffinity" in str(info.value), str(info.value)
    s = NodeAffinitySchedulingStrategy("ab" * 16, soft=True)
    assert fleet.get(where.options(scheduling_strategy=s).remote(), timeout=T) in cl.ids


def test_infeasible_task_waits_for_a_node_with_the_resource():
    with own_cluster() as cluster:
        ref = where.options(resources={"late": 1}).remote()
        ready, not_ready = fleet.wait([ref], timeout=1.5)
        assert ready == [] and not_ready == [ref]
        late = cluster.add_node(num_cpus=1, resources={"late": 1})
        assert fleet.get(ref, timeout=T) == late.node_id


# --------------------------------------------------------------------------
# 3. Objects across nodes
# --------------------------------------------------------------------------

BIG = 50 * 1000 * 1000


def test_large_object_made_on_b_reaches_driver_and_c(cl):
    arr_ref, node_ref = produce.options(resources={"b": 0.1}).remote(BIG)
    assert fleet.get(node_ref, timeout=T) == cl.b.node_id
    a = fleet.get(arr_ref, timeout=60)
    assert a.dtype == np.uint8 and a.size == BIG
    assert np.array_equal(a, pattern(BIG))
    del a
    ok, node, mid = fleet.get(check_array.options(resources={"c": 0.1}).remote(arr_ref, BIG),
                              timeout=60)
    assert node == cl.c.node_id
    assert ok and mid == (BIG // 2) % 251


def test_large_object_from_b_to_c_without_the_driver(cl):
    # The driver never reads it: c pulls it from b (ref passed inside a list,
    # so the task itself calls fleet.get on a borrowed ref).
    arr_ref, _ = produce.options(resources={"b": 0.1}).remote(BIG)
    ok, node = fleet.get(get_inner.options(resources={"c": 0.1}).remote([arr_ref], BIG),
                         timeout=60)
    assert node == cl.c.node_id and ok


def test_same_large_ref_to_eight_tasks_on_another_node(cl):
    arr_ref, _ = produce.options(resources={"b": 0.1}).remote(BIG)
    refs = [
        check_array.options(resources={"c": 0.1}, num_cpus=0.25).remote(arr_ref, BIG)
        for _ in range(8)
    ]
    out = fleet.get(refs, timeout=90)
    assert [ok for ok, _, _ in out] == [True] * 8
    assert {node for _, node, _ in out} == {cl.c.node_id}


def test_large_put_from_driver_consumed_on_other_nodes(cl):
    n = 40 * 1000 * 1000 + 7
    ref = fleet.put(pattern(n))
    out = fleet.get([check_array.options(resources={r: 0.1}).remote(ref, n) for r in "bc"],
                    timeout=60)
    assert [(ok, node) for ok, node, _ in out] == [(True, cl.b.node_id), (True, cl.c.node_id)]


# --------------------------------------------------------------------------
# 4. Actors across nodes
# --------------------------------------------------------------------------


def test_actor_with_custom_resource_runs_on_its_node(cl):
    a = Counter.options(resources={"c": 0.1}).remote()
    try:
        assert fleet.get(a.node.remote(), timeout=T) == cl.c.node_id
        assert fleet.get([a.incr.remote() for _ in range(5)], timeout=T) == [1, 2, 3, 4, 5]
    finally:
        fleet.kill(a)


def test_named_actor_found_from_driver_and_other_node(cl):
    name = f"counter-{uuid.uuid4().hex[:8]}"
    a = Counter.options(name=name, resources={"b": 0.1}).remote()
    try:
        assert fleet.get(a.node.remote(), timeout=T) == cl.b.node_id
        h = fleet.get_actor(name)
        assert fleet.get(h.incr.remote(10), timeout=T) == 10
        value, node = fleet.get(call_named.options(resources={"c": 0.1}).remote(name, 5),
                                timeout=T)
        assert node == cl.c.node_id
        assert value == 15
        assert fleet.get(h.value.remote(), timeout=T) == 15
    finally:
        fleet.kill(a)


def test_task_on_b_calls_actor_on_c(cl):
    a = Counter.options(resources={"c": 0.1}).remote()
    try:
        counts, actor_node, task_node = fleet.get(
            call_handle.options(resources={"b": 0.1}).remote(a, 4), timeout=T
        )
        assert counts == [1, 2, 3, 4]
        assert actor_node == cl.c.node_id and task_node == cl.b.node_id
        assert fleet.get(a.value.remote(), timeout=T) == 4
    finally:
        fleet.kill(a)


def test_actor_on_removed_node_dies():
    with own_cluster() as cluster:
        x = cluster.add_node(num_cpus=1, resources={"x": 1})
        a = Counter.options(resources={"x": 0.5}, max_restarts=0).remote()
        assert fleet.get(a.node.remote(), timeout=T) == x.node_id
        cluster.remove_node(x, allow_graceful=False)
        with pytest.raises(fleet.exceptions.RayActorError):
            fleet.get(a.incr.remote(), timeout=T)


@fleet.remote
def slow_where(seconds):
    time.sleep(seconds)
    return fleet.get_runtime_context().get_node_id()


@fleet.remote
def make_array(n):
    return pattern(n)


@fleet.remote(max_restarts=1, max_task_retries=-1)
class Restartable:
    def node(self):
        return fleet.get_runtime_context().get_node_id()


def test_node_death_retries_or_fails_its_tasks_and_loses_its_objects():
    with own_cluster(head_cpus=2) as cluster:
        x = cluster.add_node(num_cpus=2)
        on_x = NodeAffinitySchedulingStrategy(x.node_id, soft=True)
        only_copy = make_array.options(scheduling_strategy=on_x, max_retries=0).remote(MIB)
        ready, _ = fleet.wait([only_copy], timeout=T)
        assert ready == [only_copy]
        no_retry = slow_where.options(scheduling_strategy=on_x, max_retries=0).remote(3)
        retried = slow_where.options(scheduling_strategy=on_x, max_retries=1).remote(3)
        time.sleep(1)  # both are running on x
        cluster.remove_node(x, allow_graceful=False)
        # Ray: a retriable task runs again elsewhere; the others fail.
        assert fleet.get(retried, timeout=T) == cluster.head_node.node_id
        with pytest.raises(fleet.exceptions.RayError) as info:
            fleet.get(no_retry, timeout=T)
        assert not isinstance(info.value, fleet.exceptions.GetTimeoutError)
        with pytest.raises(fleet.exceptions.ObjectLostError):
            fleet.get(only_copy, timeout=T)


def test_actor_restarts_elsewhere_when_its_node_dies():
    # Ray: an actor with restarts left is restarted (on a live node) when its
    # node dies; with max_task_retries=-1 the calls made meanwhile wait for it.
    with own_cluster(head_cpus=2) as cluster:
        x = cluster.add_node(num_cpus=2)
        on_x = NodeAffinitySchedulingStrategy(x.node_id, soft=True)
        actors = [Restartable.options(scheduling_strategy=on_x).remote() for _ in range(4)]
        assert fleet.get([a.node.remote() for a in actors], timeout=T) == [x.node_id] * 4
        cluster.remove_node(x, allow_graceful=False)
        after = []
        for a in actors:
            try:
                after.append(fleet.get(a.node.remote(), timeout=T))
            except fleet.exceptions.RayActorError as e:
                after.append(f"{type(e).__name__}: {e}")
        assert after == [cluster.head_node.node_id] * 4, after


# --------------------------------------------------------------------------
# 5. Placement groups
# --------------------------------------------------------------------------


def wait_available_cpu(expected: float, timeout: float = 10) -> float:
    """Polls fleet.available_resources()["CPU"] until it equals `expected`."""
    last = [None]

    def check():
        last[0] = fleet.available_resources().get("CPU", 0.0)
        return last[0] == expected

    wait_until(check, timeout, 0.1)
    return last[0]


@pytest.mark.parametrize(
    "strategy,n",
    [("PACK", 3), ("SPREAD", 3), ("STRICT_PACK", 2), ("STRICT_SPREAD", 3)],
)
def test_placement_group_strategies(cl, strategy, n):
    # Start from a view where every node is free (the previous group's
    # release may take a report to show), so SPREAD can spread.
    assert wait_available_cpu(6) == 6
    pg = placement_group([{"CPU": 1}] * n, strategy=strategy)
    try:
        assert pg.wait(10) is True
        table = placement_group_table(pg)
        assert table["state"] == "CREATED"
        assert table["strategy"] == strategy
        assert table["placement_group_id"] == pg.id.hex()
        assert sorted(table["bundles"]) == list(range(n))
        assert all(b == {"CPU": 1.0} for b in table["bundles"].values())
        placed = table["bundles_to_node_id"]
        assert sorted(placed) == list(range(n))
        assert set(placed.values()) <= cl.ids
        distinct = len(set(placed.values()))
        if strategy == "STRICT_PACK":
            assert distinct == 1, placed
        elif strategy in ("STRICT_SPREAD", "SPREAD"):
            # Three free nodes: SPREAD spreads too (best effort, here possible).
            assert distinct == n, placed
        else:  # PACK: as few nodes as fit (2 CPUs a node)
            assert distinct == 2, placed
        assert fleet.get(pg.ready(), timeout=T) == pg  # as Ray: the group itself
        refs = [
            in_bundle.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=i
                )
            ).remote()
            for i in range(n)
        ]
        got = fleet.get(refs, timeout=T)
        assert [node for node, _ in got] == [placed[i] for i in range(n)]
        assert {pg_hex for _, pg_hex in got} == {pg.id.hex()}
    finally:
        remove_placement_group(pg)
    assert wait_until(lambda: placement_group_table(pg).get("state", "REMOVED") == "REMOVED",
                      5, 0.05)


def test_infeasible_placement_group_pending_and_in_status(cl):
    pg = placement_group([{"CPU": 100}], name="too-big")
    try:
        assert pg.wait(1) is False
        assert placement_group_table(pg)["state"] == "PENDING"
        res = run_argv(
            [sys.executable, "-m", "fleet.scripts", "status", "--address", cl.cluster.address],
            timeout=60, env=fleet_env({"FLEET_CLUSTER_TOKEN": cl.cluster.token}),
        )
        assert res.returncode == 0, res.stdout + res.stderr
        out = res.stdout
        assert "Placement groups:" in out, out
        section = out[out.index("Placement groups:"):]
        header = section.splitlines()[0]
        assert re.search(r"\b1 pending\b", header) or re.search(r"[1-9]\d* pending", header), out
        assert pg.id.hex()[:16] in section, out
        line = next(ln for ln in section.splitlines() if pg.id.hex()[:16] in ln)
        assert "PENDING" in line and "100" in line, line
    finally:
        remove_placement_group(pg)


def test_remove_placement_group_frees_resources(cl):
    assert wait_available_cpu(6) == 6, "the shared cluster's CPUs are not all free"
    pg = placement_group([{"CPU": 2}] * 3, strategy="STRICT_SPREAD")
    removed = False
    try:
        assert pg.wait(10) is True
        assert wait_available_cpu(0) == 0
        # Every CPU is reserved: an ordinary task cannot start...
        ref = where.options(num_cpus=1).remote()
        ready, _ = fleet.wait([ref], timeout=1.5)
        assert ready == []
        remove_placement_group(pg)
        removed = True
        # ... until the group goes.
        assert fleet.get(ref, timeout=T) in cl.ids
        assert wait_available_cpu(6) == 6
    finally:
        if not removed:
            remove_placement_group(pg)


def test_strict_spread_needs_one_node_per_bundle(cl):
    pg = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    try:
        assert pg.wait(1) is False
        assert placement_group_table(pg)["state"] == "PENDING"
    finally:
        remove_placement_group(pg)
    # The pending group reserved nothing.
    assert wait_available_cpu(6) == 6


def test_pending_placement_group_created_when_a_node_joins():
    with own_cluster() as cluster:
        pg = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
        assert pg.wait(1) is False
        new = cluster.add_node(num_cpus=1)
        assert pg.wait(15) is True
        placed = placement_group_table(pg)["bundles_to_node_id"]
        assert set(placed.values()) == {cluster.head_node.node_id, new.node_id}


@pytest.mark.parametrize(
    "bundles,strategy",
    [
        ([], "PACK"),
        ([{"CPU": 1}], "NOPE"),
        ([{"CPU": -1}], "PACK"),
        ([{}], "PACK"),
        ({"CPU": 1}, "PACK"),
    ],
)
def test_placement_group_bad_input(cl, bundles, strategy):
    with pytest.raises(ValueError):
        placement_group(bundles, strategy=strategy)


def bundle_strategy(pg, index=0):
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)


def test_actor_in_placement_group_right_after_wait(cl):
    # Ray: once pg.wait() is True (or pg.ready() resolved) the group's
    # bundles can be used, by tasks and actors alike.
    fleet.get(Counter.remote().value.remote(), timeout=T)  # the class is known, workers warm
    pg = placement_group([{"CPU": 1}], strategy="PACK")
    a = None
    try:
        assert pg.wait(10) is True
        a = Counter.options(num_cpus=1, scheduling_strategy=bundle_strategy(pg)).remote()
        node = fleet.get(a.node.remote(), timeout=10)
        assert node == placement_group_table(pg)["bundles_to_node_id"][0]
    finally:
        if a is not None:
            fleet.kill(a)
        remove_placement_group(pg)
    assert wait_available_cpu(6) == 6


def test_removing_placement_group_kills_its_actor(cl):
    pg = placement_group([{"CPU": 1}], strategy="PACK")
    removed = False
    try:
        assert pg.wait(10) is True
        # (Works around the race that test_actor_in_placement_group_right_after_wait
        # checks: wait until the control store's view has the bundle's resources.)
        key = f"CPU_group_0_{pg.id.hex()}"
        assert wait_until(lambda: key in fleet.cluster_resources(), 5, 0.02)
        a = Counter.options(num_cpus=1, scheduling_strategy=bundle_strategy(pg)).remote()
        node = fleet.get(a.node.remote(), timeout=T)
        assert node == placement_group_table(pg)["bundles_to_node_id"][0]
        assert fleet.get(a.incr.remote(), timeout=T) == 1
        remove_placement_group(pg)
        removed = True
        # The removal is asynchronous (as Ray's): a call may still slip in
        # before the actor is killed, but soon every call fails.
        deadline = time.monotonic() + 10
        while True:
            try:
                fleet.get(a.incr.remote(), timeout=T)
            except fleet.exceptions.RayActorError as e:
                err = e
                break
            assert time.monotonic() < deadline, "the group's actor outlived its removal"
            time.sleep(0.05)
        assert type(err).__name__ == "ActorDiedError", repr(err)
        assert isinstance(err, fleet.exceptions.ActorDiedError)
    finally:
        if not removed:
            remove_placement_group(pg)
    assert wait_available_cpu(6) == 6


def test_placement_group_with_custom_resource_bundles(cl):
    pg = placement_group([{"c": 0.5}, {"b": 0.5, "CPU": 1}], strategy="SPREAD")
    try:
        assert pg.wait(10) is True
        placed = placement_group_table(pg)["bundles_to_node_id"]
        assert placed == {0: cl.c.node_id, 1: cl.b.node_id}
        on_c = where.options(
            num_cpus=0, resources={"c": 0.5}, scheduling_strategy=bundle_strategy(pg, 0)
        ).remote()
        assert fleet.get(on_c, timeout=T) == cl.c.node_id
    finally:
        remove_placement_group(pg)
    assert wait_until(lambda: fleet.available_resources().get("c") == 1, 10, 0.1)


@fleet.remote(num_cpus=0)
def current_group():
    pg = get_current_placement_group()
    return fleet.get_runtime_context().get_node_id(), pg.id.hex() if pg else None


@fleet.remote(num_cpus=1)
def parent_of(n):
    return [fleet.get(current_group.remote(), timeout=30) for _ in range(n)]


def test_capture_child_tasks(cl):
    # Ray: with placement_group_capture_child_tasks=True the tasks a task
    # submits (without a strategy of their own) run in its group; without it
    # they do not. The two parents run one after the other in the same
    # one-CPU bundle (so, as here, on the same worker).
    pg = placement_group([{"CPU": 1}], strategy="PACK")
    try:
        assert pg.wait(10) is True
        node = placement_group_table(pg)["bundles_to_node_id"][0]
        captured = fleet.get(
            parent_of.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, 0, placement_group_capture_child_tasks=True
                )
            ).remote(2),
            timeout=T,
        )
        assert captured == [(node, pg.id.hex())] * 2
        free = fleet.get(
            parent_of.options(scheduling_strategy=bundle_strategy(pg, 0)).remote(2), timeout=T
        )
        assert [g for _, g in free] == [None, None], free
    finally:
        remove_placement_group(pg)


def test_placement_group_rescheduled_when_its_node_dies():
    # Ray: bundles on a node that dies are placed again on other nodes, and
    # the group's tasks run there.
    with own_cluster(head_cpus=1) as cluster:
        x = cluster.add_node(num_cpus=1)
        pg = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
        assert pg.wait(10) is True
        placed = placement_group_table(pg)["bundles_to_node_id"]
        assert set(placed.values()) == {cluster.head_node.node_id, x.node_id}
        refs = [where.options(scheduling_strategy=bundle_strategy(pg, i)).remote()
                for i in range(2)]
        assert fleet.get(refs, timeout=T) == [placed[0], placed[1]]

        for _ in range(2):
            y = cluster.add_node(num_cpus=1)
            cluster.remove_node(x)
            # Tasks submitted at once wait for the group to be placed again.
            refs = [where.options(scheduling_strategy=bundle_strategy(pg, i)).remote()
                    for i in range(2)]
            got = fleet.get(refs, timeout=15)
            table = placement_group_table(pg)
            assert table["state"] == "CREATED"
            placed = table["bundles_to_node_id"]
            assert set(placed.values()) == {cluster.head_node.node_id, y.node_id}
            assert got == [placed[0], placed[1]]
            x = y


# --------------------------------------------------------------------------
# 6. Worker output from other nodes
# --------------------------------------------------------------------------
# (FdRecorder, not capfd: capfd.readouterr() can drop a line that fleet's io
# thread writes while it runs; see fleet_test_utils.FdRecorder.)


def _lines_with(text: str, token: str) -> List[str]:
    return [ln for ln in text.splitlines() if token in ln]


def test_print_on_other_node_has_pid_and_node_prefix(cl, tmp_path):
    token = f"remote-line-{uuid.uuid4().hex}"
    with FdRecorder(tmp_path) as rec:
        pid = fleet.get(printer.options(resources={"b": 0.1}).remote(token), timeout=T)
        assert wait_until(lambda: token in rec.out, 5, 0.05), rec.out[-2000:]
    [line] = _lines_with(rec.out, token)
    prefix = line[: line.index(token)]
    assert f"pid={pid}" in prefix, line
    assert "node=" in prefix, line
    assert re.search(r"node=127\.0\.0\.1\b", prefix), line


def _five_prints(token: str) -> List[int]:
    """The same line printed by 5 tasks that run at the same time (so on 5
    different workers, across the three nodes)."""
    refs = [
        printer.options(scheduling_strategy="SPREAD").remote(token, 1.0) for _ in range(5)
    ]
    return fleet.get(refs, timeout=T)


def test_identical_lines_are_deduplicated(cl, tmp_path):
    token = f"same-line-{uuid.uuid4().hex}"
    with FdRecorder(tmp_path) as rec:
        t0 = time.monotonic()
        pids = _five_prints(token)
        assert len(set(pids)) == 5
        assert wait_until(lambda: token in rec.out, 5, 0.05)
        time.sleep(0.5)  # the copies arrive, and are folded
        if time.monotonic() - t0 < 4.5:
            assert len(_lines_with(rec.out, token)) == 1, _lines_with(rec.out, token)
        assert wait_until(lambda: "[repeated" in "".join(_lines_with(rec.out, token)), 10, 0.1), (
            _lines_with(rec.out, token)
        )
        time.sleep(0.3)
    lines = _lines_with(rec.out, token)
    assert len(lines) == 2, lines
    assert "[repeated" not in lines[0]
    assert lines[1].endswith(f"{token} [repeated 4x across cluster]"), lines


def test_dedup_summary_printed_at_shutdown(cl, tmp_path):
    token = f"shutdown-line-{uuid.uuid4().hex}"
    with FdRecorder(tmp_path) as rec:
        _five_prints(token)
        assert wait_until(lambda: token in rec.out, 5, 0.05)
        time.sleep(0.5)
        fleet.shutdown()  # well inside the 5 s window: the summary is flushed
        lines = _lines_with(rec.out, token)
    assert len(lines) == 2, lines
    assert lines[1].endswith(f"{token} [repeated 4x across cluster]"), lines


def test_dedup_disabled_by_env(cl, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_DEDUP_LOGS", "0")
    fleet.shutdown()
    fleet.init(address=cl.cluster.address)
    try:
        token = f"every-line-{uuid.uuid4().hex}"
        with FdRecorder(tmp_path) as rec:
            pids = _five_prints(token)
            assert wait_until(lambda: len(_lines_with(rec.out, token)) >= 5, 5, 0.05), (
                _lines_with(rec.out, token)
            )
            time.sleep(0.3)
        lines = _lines_with(rec.out, token)
        assert len(lines) == 5, lines
        assert not any("[repeated" in ln for ln in lines)
        assert {int(m.group(1)) for ln in lines if (m := re.search(r"pid=(\d+)", ln))} == set(
            pids
        )
    finally:
        fleet.shutdown()  # the next test reconnects without the variable


# --------------------------------------------------------------------------
# Object locations, placement group details
# --------------------------------------------------------------------------


def test_object_locations_follow_the_copies(cl):
    # The owner tracks every copy: the node that made the object, then also
    # the node that pulled it for a reader (as ray.experimental).
    n = 20 * 1024 * 1024
    ref, _ = produce.options(resources={"b": 0.01}).remote(n)
    fleet.wait([ref], fetch_local=False, timeout=T)
    locs = fleet.experimental.get_object_locations([ref])
    assert locs[ref]["node_ids"] == [cl.b.node_id], locs
    assert locs[ref]["object_size"] >= n
    ok, node, _ = fleet.get(check_array.options(resources={"c": 0.01}).remote(ref, n), timeout=T)
    assert ok and node == cl.c.node_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = fleet.experimental.get_object_locations([ref])[ref]["node_ids"]
        if set(got) == {cl.b.node_id, cl.c.node_id}:
            break
        time.sleep(0.05)
    assert got[0] == cl.b.node_id and set(got) == {cl.b.node_id, cl.c.node_id}, got
    small = fleet.put(7)
    assert fleet.experimental.get_object_locations([small])[small]["node_ids"] == [
        driver_node_id()
    ]
    with pytest.raises(TypeError):
        fleet.experimental.get_object_locations(ref)


def test_wait_without_timeout_returns_once_created(cl):
    # pg.wait(None) blocks until the group exists, however long that takes.
    assert wait_available_cpu(6) == 6
    blocker = placement_group([{"CPU": 2}] * 3, strategy="STRICT_SPREAD")
    assert blocker.wait(10)
    pg = placement_group([{"CPU": 2}], strategy="PACK")
    assert not pg.wait(0.2)
    import threading

    result = {}
    t = threading.Thread(target=lambda: result.setdefault("ready", pg.wait(None)))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()
    remove_placement_group(blocker)
    t.join(20)
    assert result.get("ready") is True
    remove_placement_group(pg)


def test_explicit_placement_group_none_opts_out_of_capture(cl):
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(10)

    @fleet.remote(num_cpus=0)
    def child():
        g = get_current_placement_group()
        return g.id.hex() if g else None

    @fleet.remote(num_cpus=1)
    def parent():
        return (fleet.get(child.remote(), timeout=30),
                fleet.get(child.options(placement_group=None).remote(), timeout=30))

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    captured, opted_out = fleet.get(parent.options(scheduling_strategy=strategy).remote(),
                                    timeout=T)
    assert captured == pg.id.hex()
    assert opted_out is None
    remove_placement_group(pg)
