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
    fleet.shutdown()


@fleet.remote
def _pid() -> int:
    return os.getpid()


if __name__ == "__main__":
    main()
