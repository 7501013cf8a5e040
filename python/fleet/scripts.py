"""The `fleet` command line: start, stop, status, microbenchmark."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from fleet._private import services


def _start(args: argparse.Namespace) -> int:
    if args.address:
        print(
            "fleet start --address: joining another machine's cluster is not implemented yet "
            "(it comes with multi-node support). Use `fleet start --head` on one machine.",
            file=sys.stderr,
        )
        return 2
    if not args.head:
        print("fleet start: pass --head to start a cluster on this machine", file=sys.stderr)
        return 2
    existing = services.read_cluster_file()
    if existing is not None:
        print(
            f"A fleet cluster is already running on this machine ({existing['gcs_address']}); "
            "stop it first with `fleet stop`.",
            file=sys.stderr,
        )
        return 1
    resources = json.loads(args.resources) if args.resources else None
    res = services.node_resources(
        args.num_cpus, args.num_gpus, resources, args.node_ip_address, True,
        None, args.object_store_memory,
    )
    try:
        cluster = services.start_local_cluster(
            res, gcs_port=args.port, gcs_host=args.node_ip_address,
            node_ip=args.node_ip_address, detached=True, spill_dir=args.spill_dir,
        )
    except RuntimeError as e:
        print(f"fleet start failed: {e}", file=sys.stderr)
        return 1
    services.write_cluster_file(cluster)
    print("fleet runtime started.")
    print(f"  Control store address: {cluster.gcs_address}")
    print(f"  Session directory:     {cluster.session_dir}")
    print("  To connect from Python on this machine:")
    print('    import fleet; fleet.init(address="auto")')
    print(f"  Cluster token file (0600): {cluster.session_dir}/cluster_token")
    print("  To stop: fleet stop")
    return 0


def _stop(args: argparse.Namespace) -> int:
    info = services.read_cluster_file()
    if info is None:
        print("No fleet cluster is running on this machine.")
        services.remove_cluster_file()
        return 0
    services.stop_pids(list(reversed(info["pids"])), timeout=args.grace_period)
    services.remove_cluster_file()
    print(f"Stopped fleet cluster {info['gcs_address']}.")
    return 0


def _connect(args: argparse.Namespace) -> bool:
    """Joins the cluster named by --address (or this machine's) as a quiet
    driver; False (with a message) if there is none."""
    import fleet

    info = services.read_cluster_file()
    if info is None and not args.address:
        print("No fleet cluster is running on this machine (start one with `fleet start --head`).")
        return False
    fleet.init(address=args.address or "auto", log_to_driver=False)
    return True


def _status(args: argparse.Namespace) -> int:
    import fleet

    if not _connect(args):
        return 1
    try:
        nodes = fleet._private.state.core.nodes()
        alive = [n for n in nodes if n["alive"]]
        print(f"======== fleet cluster {fleet._private.state.gcs_address} ========")
        print(f"Nodes: {len(alive)} alive, {len(nodes) - len(alive)} dead")
        for n in nodes:
            status = "ALIVE" if n["alive"] else f"DEAD ({n['death_reason']})"
            print(f"  node {n['node_id'][:16]}  {n['node_ip']}  {status}")
            for k in sorted(n["total"]):
                if k.startswith("node:"):
                    continue
                total = n["total"][k]
                used = total - n["available"].get(k, 0.0)
                if k in ("memory", "object_store_memory"):
                    print(f"    {used / 2**30:.2f}/{total / 2**30:.2f} GiB {k}")
                else:
                    print(f"    {used:g}/{total:g} {k}")
        store = fleet._private.state.core.store_list()
        mib = 1024 * 1024
        print(f"Object store (this node): {store['used'] / mib:.1f} MiB used of "
              f"{store['capacity'] / mib:.1f} MiB in {len(store['objects'])} objects, "
              f"{store['spilled_bytes'] / mib:.1f} MiB spilled")
        stats = fleet._private.state.core.node_stats()
        if stats["pending_leases"]:
            print(f"Pending lease requests on this node: {stats['pending_leases']}")
    finally:
        fleet.shutdown()
    return 0


def _memory(args: argparse.Namespace) -> int:
    import fleet
    from fleet.util.state import memory_summary

    if not _connect(args):
        return 1
    try:
        print(memory_summary())
    finally:
        fleet.shutdown()
    return 0


def _microbenchmark(rest: List[str]) -> int:
    from fleet._private import microbenchmark

    return microbenchmark.main(rest)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `fleet` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "microbenchmark":
        return _microbenchmark(argv[1:])
    p = argparse.ArgumentParser(prog="fleet", description="fleet cluster command line")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start fleet on this machine")
    s.add_argument("--head", action="store_true", help="start the head node (control store)")
    s.add_argument("--address", default=None, help="join the cluster at HEAD:PORT")
    s.add_argument("--port", type=int, default=6380, help="control store port (default 6380)")
    s.add_argument("--num-cpus", type=float, default=None)
    s.add_argument("--num-gpus", type=float, default=None)
    s.add_argument("--resources", default=None, help='custom resources as JSON: \'{"foo": 2}\'')
    s.add_argument("--object-store-memory", type=int, default=None,
                   help="bytes of shared memory for the object store (default: 30%% of RAM)")
    s.add_argument("--spill-dir", default=None,
                   help="where objects spill under memory pressure (default: the session dir)")
    s.add_argument("--node-ip-address", default="127.0.0.1")
    st = sub.add_parser("stop", help="stop fleet processes on this machine")
    st.add_argument("--grace-period", type=float, default=10.0)
    ss = sub.add_parser("status", help="show nodes and resources")
    ss.add_argument("--address", default=None)
    sm = sub.add_parser("memory", help="list the objects in this node's object store")
    sm.add_argument("--address", default=None)
    sub.add_parser("microbenchmark", help="run the microbenchmarks (see --help)")
    args = p.parse_args(argv)
    if args.cmd == "start":
        return _start(args)
    if args.cmd == "stop":
        return _stop(args)
    if args.cmd == "status":
        return _status(args)
    if args.cmd == "memory":
        return _memory(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

