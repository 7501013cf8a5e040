"""fleet demo: real parallel work on a local cluster.

Estimates pi by Monte Carlo sampling in parallel tasks, compares the wall time
with running the same work serially, and runs the README's first program.
"""

import os
import random
import time

import fleet


def count_inside(n: int, seed: int) -> int:
    """Counts random points of the unit square that fall inside the circle."""
    rng = random.Random(seed)
    inside = 0
    for _ in range(n):
        x, y = rng.random(), rng.random()
        inside += x * x + y * y <= 1.0
    return inside


sample = fleet.remote(count_inside)  # the same function, as a remote function


@fleet.remote
def square(x):
    return x * x


@fleet.remote
def partial_sum(a, i: int, n: int) -> float:
    """Sums slice i of n of an array that lives in shared memory."""
    step = len(a) // n
    return float(a[i * step : (i + 1) * step if i < n - 1 else len(a)].sum())


def main() -> None:
    t0 = time.perf_counter()
    fleet.init()
    print(f"fleet.init() ready in {(time.perf_counter() - t0) * 1000:.0f} ms; "
          f"cluster resources: CPU={fleet.cluster_resources()['CPU']:g}")

    print("sum of squares 0..999 =", sum(fleet.get([square.remote(i) for i in range(1000)])))

    chunks, per_chunk = 8, 400_000
    t0 = time.perf_counter()
    inside = sum(fleet.get([sample.remote(per_chunk, s) for s in range(chunks)]))
    parallel = time.perf_counter() - t0
    t0 = time.perf_counter()
    serial_inside = sum(count_inside(per_chunk, s) for s in range(chunks))
    serial = time.perf_counter() - t0
    assert serial_inside == inside  # same seeds, same answer
    print(f"pi ~= {4 * inside / (chunks * per_chunk):.5f} from {chunks * per_chunk:,} samples: "
          f"{parallel:.2f} s in {chunks} parallel tasks vs {serial:.2f} s serially here "
          f"({serial / parallel:.1f}x on {os.cpu_count()} cores)")

    pids = set(fleet.get([_pid.remote() for _ in range(50)]))
    print(f"50 tasks ran in {len(pids)} reused worker processes: {sorted(pids)}")

    # An actor holds state; workers (tasks) update it through its handle.
    board = Scoreboard.remote()
    fleet.get([play.remote(board, player) for player in ("ann", "bob", "cy", "dee")])
    print("scoreboard kept by an actor:", fleet.get(board.standings.remote()))
    t0 = time.perf_counter()
    fleet.get([board.record.remote("bench", 0) for _ in range(10_000)])
    print(f"10,000 actor calls in {time.perf_counter() - t0:.2f} s")

    # A 400 MB array goes into the node's shared memory once; tasks and the
    # driver read it in place (zero-copy views), then it is freed.
    import numpy as np

    data = np.random.default_rng(0).random(50_000_000)
    t0 = time.perf_counter()
    ref = fleet.put(data)
    put_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    view = fleet.get(ref)
    get_ms = (time.perf_counter() - t0) * 1000
    parts = fleet.get([partial_sum.remote(ref, i, 4) for i in range(4)])
    assert abs(sum(parts) - data.sum()) < 1e-6 * data.sum()
    print(f"400 MB array: put in {put_s:.2f} s ({0.4 / put_s:.1f} GB/s), get (a read-only "
          f"view, writeable={view.flags.writeable}) in {get_ms:.2f} ms; 4 tasks summed it "
          f"in place: {sum(parts):,.1f}")
    del view, ref
    fleet.shutdown()
    multi_node()


def multi_node() -> None:
    """Three nodes on this machine (as three machines would be, with
    `fleet start --head` / `fleet start --address`): SPREAD tasks, a placement
    group, and an array moved from one node to another."""
    import collections

    from fleet.cluster_utils import Cluster
    from fleet.util import placement_group, remove_placement_group
    from fleet.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    b = cluster.add_node(num_cpus=1, resources={"b": 1})
    c = cluster.add_node(num_cpus=1, resources={"c": 1})
    fleet.init(address=cluster.address)
    print(f"3-node cluster up in {time.perf_counter() - t0:.2f} s")
    try:
        names = {cluster.head_node.node_id: "head", b.node_id: "b", c.node_id: "c"}
        spread = where.options(scheduling_strategy="SPREAD")
        nodes = fleet.get([spread.remote() for _ in range(3000)])
        counts = collections.Counter(names[n] for n in nodes)
        print(f"3,000 SPREAD tasks per node: {dict(sorted(counts.items()))}")

        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        assert pg.wait(timeout_seconds=10)
        in_bundle = [
            where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote()
            for i in range(2)
        ]
        bundle_nodes = [names[n] for n in fleet.get(in_bundle)]
        print("placement group STRICT_SPREAD, bundles on:", bundle_nodes)
        remove_placement_group(pg)

        ref = make_array.options(resources={"b": 0.1}).remote(200_000_000)
        total = fleet.get(sum_array.options(resources={"c": 0.1}).remote(ref))
        locations = fleet.experimental.get_object_locations([ref])[ref]["node_ids"]
        print(f"200 MB array made on node b, summed on node c ({total:,}); copies now on "
              f"{[names[n] for n in locations]}")
    finally:
        fleet.shutdown()
        cluster.shutdown()


@fleet.remote
def where() -> str:
    return fleet.get_runtime_context().get_node_id()


@fleet.remote
def make_array(n: int):
    import numpy as np

    return np.ones(n, dtype=np.uint8)


@fleet.remote
def sum_array(a) -> int:
    return int(a.sum())


@fleet.remote
class Scoreboard:
    """An actor: one process, its state, calls run in the order each caller made them."""

    def __init__(self):
        self.points = {}

    def record(self, player, points):
        self.points[player] = self.points.get(player, 0) + points
        return self.points[player]

    def standings(self):
        return sorted(self.points.items(), key=lambda kv: -kv[1])


@fleet.remote
def play(board, player):
    # A task that calls the actor it was handed.
    return fleet.get([board.record.remote(player, len(player) * k) for k in range(1, 4)])


@fleet.remote
def _pid() -> int:
    return os.getpid()


if __name__ == "__main__":
    main()
