"""Placement group create/removal rate, fleet and Ray side by side.

The workload is Ray's own microbenchmark ("placement group create/removal"
in ray/_private/ray_perf.py): create 100 groups of one {"custom": 0.001}
bundle (SPREAD), wait for each, then remove them all; the rate counts groups
per second. Ray runs in its own virtualenv (RAY_PYTHON, default
/opt/rayvenv/bin/python) when it is there.

    python bench/placement_groups.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NUM_PGS = 100
RAY_PYTHON = os.environ.get("RAY_PYTHON", "/opt/rayvenv/bin/python")


def run(backend: str, rounds: int) -> list:
    """Create/remove rates (groups/s), one per round, on `backend`."""
    if backend == "ray":
        import ray as lib
        from ray.util import placement_group, remove_placement_group
    else:
        import fleet as lib
        from fleet.util import placement_group, remove_placement_group
    lib.init(num_cpus=2, resources={"custom": 100})
    rates = []
    try:
        for r in range(rounds + 1):  # the first round warms up
            start = time.perf_counter()
            pgs = [
                placement_group([{"custom": 0.001}], strategy="SPREAD") for _ in range(NUM_PGS)
            ]
            for pg in pgs:
                if not pg.wait(timeout_seconds=30):
                    raise RuntimeError("a placement group was not created within 30 s")
            for pg in pgs:
                remove_placement_group(pg)
            if r > 0:
                rates.append(NUM_PGS / (time.perf_counter() - start))
    finally:
        lib.shutdown()
    return rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--backend", choices=["fleet", "ray"], default=None,
                   help="run one backend and print JSON (used internally)")
    args = p.parse_args()
    if args.backend:
        print(json.dumps(run(args.backend, args.rounds)))
        return 0
    fleet_rates = run("fleet", args.rounds)
    ray_rates = None
    if os.path.exists(RAY_PYTHON):
        out = subprocess.run(
            [RAY_PYTHON, os.path.abspath(__file__), "--backend", "ray", "--rounds",
             str(args.rounds)],
            capture_output=True, text=True, timeout=600,
        )
        if out.returncode == 0:
            ray_rates = json.loads(out.stdout.strip().splitlines()[-1])
        else:
            print(f"(Ray run failed: {out.stderr.strip()[-500:]})", file=sys.stderr)
    f = statistics.median(fleet_rates)
    print("placement group create/removal (100 groups of 1 bundle, per second, median)")
    print(f"  fleet: {f:10.1f}/s   rounds: {', '.join(f'{x:.0f}' for x in fleet_rates)}")
    if ray_rates:
        r = statistics.median(ray_rates)
        print(f"  Ray:   {r:10.1f}/s   rounds: {', '.join(f'{x:.0f}' for x in ray_rates)}")
        print(f"  fleet / Ray: {f / r:.1f}x (target >= 3x)")
    else:
        print("  Ray: not installed here (set RAY_PYTHON); Ray's published figure is ~765/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
