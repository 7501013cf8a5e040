"""The `fleet` command line: start, stop, status, microbenchmark."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from fleet._private import services


def _token(args: argparse.Namespace) -> str:
    """The cluster token: --token, FLEET_CLUSTER_TOKEN, or --token-file."""
    if args.token:
        return args.token.strip()
    if os.environ.get("FLEET_CLUSTER_TOKEN"):
        return os.environ["FLEET_CLUSTER_TOKEN"].strip()
    if args.token_file:
        with open(args.token_file) as f:
            return f.read().strip()
    return ""


def _labels(text: Optional[str]) -> Optional[dict]:
    """--labels as Ray takes it: "k1=v1,k2=v2" (or a JSON object)."""
    from fleet._private import label_utils

    if not text:
        return None
    if text.strip().startswith("{"):
        return label_utils.validate_node_labels(json.loads(text))
    return label_utils.parse_node_labels_string(text)


def _start(args: argparse.Namespace) -> int:
    if args.head == bool(args.address):
        print(
            "fleet start: pass --head to start a new cluster on this machine, or "
            "--address HEAD:PORT to join an existing one",
            file=sys.stderr,
        )
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
    try:
        args.labels = _labels(args.labels)
        args.system_config = json.loads(args.system_config) if args.system_config else None
    except ValueError as e:
        print(f"fleet start: {e}", file=sys.stderr)
        return 2
    if args.address:
        return _join(args, resources)
    node_ip = args.node_ip_address or services.local_ip_towards("192.0.2.1:9")
    res = services.node_resources(
        args.num_cpus, args.num_gpus, resources, node_ip, True,
        None, args.object_store_memory,
    )
    try:
        cluster = services.start_local_cluster(
            res, gcs_port=args.port, gcs_host="0.0.0.0", node_ip=node_ip, detached=True,
            spill_dir=args.spill_dir, token=_token(args) or None,
            node_port=args.node_manager_port, labels=args.labels,
            system_config=args.system_config,
        )
    except RuntimeError as e:
        print(f"fleet start failed: {e}", file=sys.stderr)
        return 1
    gcs_address = f"{node_ip}:{cluster.gcs_address.rsplit(':', 1)[1]}"
    cluster.gcs_address = gcs_address
    services.write_cluster_file(cluster)
    print("fleet runtime started.")
    print(f"  Control store address: {gcs_address}")
    print(f"  Session directory:     {cluster.session_dir}")
    print("  To add another machine to this cluster, run on it:")
    print(f"    fleet start --address {gcs_address} --token {cluster.token}")
    print("  (or put the token in FLEET_CLUSTER_TOKEN, or in a file given with --token-file)")
    print("  To connect from Python on this machine:")
    print('    import fleet; fleet.init(address="auto")')
    print(f"  Cluster token file (0600): {cluster.session_dir}/cluster_token")
    print("  To stop: fleet stop")
    return 0


def _join(args: argparse.Namespace, resources: Optional[dict]) -> int:
    from fleet import _core
    from fleet._private.version import version_tag

    gcs_address = args.address
    token = _token(args)
    if not token:
        print(
            "fleet start --address: the cluster token is missing. Pass --token (printed by "
            "`fleet start --head`), set FLEET_CLUSTER_TOKEN, or use --token-file.",
            file=sys.stderr,
        )
        return 2
    try:
        _core.probe_nodes(gcs_address, token, version_tag(), 10000)
    except RuntimeError as e:
        print(f"fleet start: cannot join the cluster at {gcs_address}: {e}", file=sys.stderr)
        return 1
    node_ip = args.node_ip_address or services.local_ip_towards(gcs_address)
    res = services.node_resources(
        args.num_cpus, args.num_gpus, resources, node_ip, False,
        None, args.object_store_memory,
    )
    session_dir = services.new_session_dir()
    try:
        proc, socket = services.start_node(
            gcs_address, token, session_dir, res, node_ip, port=args.node_manager_port,
            detached=True, spill_dir=args.spill_dir, labels=args.labels,
            system_config=args.system_config,
        )
    except RuntimeError as e:
        print(f"fleet start failed: {e}", file=sys.stderr)
        return 1
    proc.stdout.close()
    services.write_cluster_file(services.LocalCluster(
        session_dir=session_dir, token=token, gcs_address=gcs_address, node_socket=socket,
        node_ip=node_ip, pids=[proc.pid],
    ))
    print(f"fleet node started and joined the cluster at {gcs_address} (this node: {node_ip}).")
    print(f"  Session directory: {session_dir}")
    print('  To connect from Python on this machine: import fleet; fleet.init(address="auto")')
    print("  To stop: fleet stop")
    return 0


def _stop(args: argparse.Namespace) -> int:
    info = services.read_cluster_file()
    if info is None:
        print("No fleet cluster is running on this machine.")
        services.remove_cluster_file()
        return 0
    grace = 0.0 if args.force else args.grace_period
    services.stop_pids(list(reversed(info["pids"])), timeout=grace)
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
        core = fleet._private.state.core
        nodes = core.nodes()
        alive = [n for n in nodes if n["alive"]]
        print(f"======== fleet cluster {fleet._private.state.gcs_address} ========")
        print(f"Nodes: {len(alive)} alive, {len(nodes) - len(alive)} dead")
        for n in nodes:
            status = "ALIVE" if n["alive"] else f"DEAD ({n['death_reason']})"
            print(f"  node {n['node_id'][:16]}  {n['node_ip']}  {status}")
            if not n["alive"]:
                continue
            if n.get("is_head"):
                print("    head node (control store)")
            for k in sorted(n["total"]):
                if k.startswith("node:") or "_group_" in k:
                    continue
                total = n["total"][k]
                used = total - n["available"].get(k, 0.0)
                if k in ("memory", "object_store_memory"):
                    print(f"    {used / 2**30:.2f}/{total / 2**30:.2f} GiB {k}")
                else:
                    print(f"    {used:g}/{total:g} {k}")
        demands = [(n, d) for n in alive for d in n.get("pending", [])]
        print("Pending demands:")
        if not demands:
            print("  (none)")
        for n, d in demands:
            shape = ", ".join(f"{k}: {v:g}" for k, v in sorted(d["shape"].items())) or "nothing"
            why = "no node in the cluster can satisfy it" if d["infeasible"] else "waiting for room"
            print(f"  {{{shape}}} x {d['count']} ('{d['description']}', queued on "
                  f"{n['node_ip']}): {why}")
        groups = [g for g in core.placement_groups(b"", "", "") if g["state"] != "REMOVED"]
        waiting = [g for g in groups if g["state"] != "CREATED"]
        print(f"Placement groups: {len(groups) - len(waiting)} created, {len(waiting)} pending")
        for g in waiting:
            bundles = [g["bundles"][i] for i in sorted(g["bundles"])]
            print(f"  {g['placement_group_id'][:16]} {g['name'] or ''} {g['strategy']} "
                  f"{bundles}: {g['state']} ({g['pending_reason']})")
        store = core.store_list()
        mib = 1024 * 1024
        print(f"Object store (this node): {store['used'] / mib:.1f} MiB used of "
              f"{store['capacity'] / mib:.1f} MiB in {len(store['objects'])} objects, "
              f"{store['spilled_bytes'] / mib:.1f} MiB spilled")
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
    s.add_argument("--port", type=int, default=6380,
                   help="control store port, the one port other machines need (default 6380)")
    s.add_argument("--num-cpus", type=float, default=None)
    s.add_argument("--num-gpus", type=float, default=None)
    s.add_argument("--resources", default=None, help='custom resources as JSON: \'{"foo": 2}\'')
    s.add_argument("--object-store-memory", type=int, default=None,
                   help="bytes of shared memory for the object store (default: 30%% of RAM)")
    s.add_argument("--spill-dir", default=None,
                   help="where objects spill under memory pressure (default: the session dir)")
    s.add_argument("--node-ip-address", default=None,
                   help="this machine's IP as other nodes reach it (default: detected)")
    s.add_argument("--token", default=None,
                   help="cluster token (joining: the one `fleet start --head` printed)")
    s.add_argument("--token-file", default=None, help="read the cluster token from this file")
    s.add_argument("--labels", default=None,
                   help='node labels for label_selector scheduling: "k1=v1,k2=v2"')
    s.add_argument("--system-config", default=None,
                   help='JSON, e.g. \'{"scheduler_spread_threshold": 0.5}\'')
    s.add_argument("--node-manager-port", type=int, default=0,
                   help="fleet-node's TCP port for other nodes (default: any free port)")
    st = sub.add_parser("stop", help="stop fleet processes on this machine")
    st.add_argument("--grace-period", type=float, default=10.0)
    st.add_argument("-f", "--force", action="store_true",
                    help="kill the processes at once (SIGKILL) instead of asking them to stop")
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

