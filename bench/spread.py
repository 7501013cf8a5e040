"""SPREAD over three nodes: how a 10,000-task job divides among them.

Starts a three-node cluster on this machine (``fleet.cluster_utils.Cluster``,
each node with the same CPUs), runs 10,000 tiny tasks with
``scheduling_strategy="SPREAD"`` that return their node id, and prints each
node's share. Target: every node runs >= 25% of the tasks.

    python bench/spread.py [--tasks 10000] [--cpus-per-node 2]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import fleet
from fleet.cluster_utils import Cluster


@fleet.remote(scheduling_strategy="SPREAD")
def where() -> str:
    """The node this task ran on."""
    return fleet.get_runtime_context().get_node_id()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--cpus-per-node", type=int, default=2)
    args = p.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=args.cpus_per_node)
        fleet.init(address=cluster.address)
        fleet.get([where.remote() for _ in range(100)], timeout=60)  # warm up
        start = time.perf_counter()
        nodes = fleet.get([where.remote() for _ in range(args.tasks)], timeout=600)
        elapsed = time.perf_counter() - start
        counts = collections.Counter(nodes)
        print(f"SPREAD: {args.tasks} tasks over 3 nodes in {elapsed:.2f} s "
              f"({args.tasks / elapsed:.0f} tasks/s)")
        for node in cluster.list_all_nodes():
            n = counts.get(node.node_id, 0)
            role = "head" if node.head else "node"
            print(f"  {role} {node.node_id[:12]}: {n:6d} tasks  {100 * n / args.tasks:5.1f}%")
        low = min(counts.get(n.node_id, 0) for n in cluster.list_all_nodes()) / args.tasks
        print(f"  smallest share {100 * low:.1f}% (target >= 25%): "
              f"{'MET' if low >= 0.25 else 'NOT MET'}")
    finally:
        fleet.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
