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
