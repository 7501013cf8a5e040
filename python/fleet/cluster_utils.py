"""A cluster of several nodes on this machine, for tests (Ray's
``ray.cluster_utils.Cluster``).

    from fleet.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2, resources={"gpu_box": 1})
    fleet.init(address=cluster.address)
    ...
    cluster.remove_node(worker)      # its fleet-node and workers are killed
    fleet.shutdown()
    cluster.shutdown()

Every node is a real fleet-node daemon with its own socket, TCP port,
object store and workers; they share the head's session directory. The
daemons are children of this process and stop with it (no orphans).
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from typing import Any, Dict, List, Optional

from fleet._private import services


class NodeHandle:
    """One node of a ``Cluster``."""

    def __init__(self, proc: subprocess.Popen, socket: str, index: int, head: bool):
        self.process = proc
        self.unix_socket = socket
        self.index = index
        self.head = head
        self.node_id: str = ""
        self.node_ip_address = "127.0.0.1"

    @property
    def address(self) -> str:
        """The node's Unix socket address."""
        return self.unix_socket

    @property
    def unique_id(self) -> str:
        """The node's id as hex (Ray's ``node.unique_id``)."""
        return self.node_id

    def alive(self) -> bool:
        """Whether its fleet-node process is running."""
        return self.process.poll() is None

    def __repr__(self) -> str:
        return f"NodeHandle(index={self.index}, node_id={self.node_id[:12]!r}, head={self.head})"


# add_node arguments fleet acts on.
_NODE_ARGS_USED = {
    "num_cpus", "num_gpus", "resources", "object_store_memory", "memory",
    "_system_config", "node_ip_address", "object_spilling_directory", "labels",
}
# Ray's other documented add_node arguments: accepted, with no effect in
# fleet (ports fleet picks itself, the dashboard and log monitor it does not
# have, object reconstruction it does not do, Ray's process layout).
_NODE_ARGS_IGNORED = {
    "include_dashboard", "dashboard_host", "dashboard_port", "dashboard_agent_listen_port",
    "enable_object_reconstruction", "min_worker_port", "max_worker_port", "worker_port_list",
    "node_manager_port", "object_manager_port", "redis_port", "ray_client_server_port",
    "metrics_export_port", "runtime_env_agent_port", "plasma_directory", "huge_pages",
    "plasma_store_socket_name", "raylet_socket_name", "temp_dir", "session_name",
    "include_log_monitor", "worker_path", "setup_worker_path",
    "autoscaling_config", "_temp_dir", "redis_max_memory", "log_to_driver",
}


class Cluster:
    """Starts fleet-gcs and fleet-node daemons on this machine."""

    def __init__(
        self,
        initialize_head: bool = False,
        connect: bool = False,
        head_node_args: Optional[Dict[str, Any]] = None,
        shutdown_at_exit: bool = True,
    ):
        self.session_dir = services.new_session_dir()
        self.token = secrets.token_hex(16)
        self._gcs: Optional[subprocess.Popen] = None
        self.gcs_address = ""
        self.head_node: Optional[NodeHandle] = None
        self.worker_nodes: List[NodeHandle] = []
        self._next = 0
        self._connected = False
        self._cluster_file_pids: Optional[List[int]] = None
        if shutdown_at_exit:
            import atexit

            atexit.register(self.shutdown)
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    @property
    def address(self) -> str:
        """The control store's address, for ``fleet.init(address=...)``."""
        return self.gcs_address

    def connect(self, namespace: Optional[str] = None) -> Any:
        """``fleet.init`` on this cluster (the token is passed for you)."""
        import fleet

        self._connected = True
        return fleet.init(address=self.gcs_address, namespace=namespace)

    def add_node(self, wait: bool = True, **node_args: Any) -> NodeHandle:
        """Starts a node: the first is the head (it also starts fleet-gcs).
        Takes ``num_cpus``, ``num_gpus``, ``resources``, ``object_store_memory``,
        ``memory``, ``labels`` (for ``label_selector``) and ``_system_config``
        (``scheduler_spread_threshold``: the head's applies to actor placement
        too). Returns once the node serves (and, with `wait`, once the
        control store lists it)."""
        unknown = set(node_args) - _NODE_ARGS_USED - _NODE_ARGS_IGNORED
        if unknown:
            raise ValueError(f"Cluster.add_node: unknown arguments {sorted(unknown)}")
        head = self.head_node is None
        store = node_args.get("object_store_memory")
        if store is None:
            store = 256 * 1024 * 1024  # tests: small stores, many nodes on one machine
        node_ip = node_args.get("node_ip_address") or "127.0.0.1"
        res = services.node_resources(
            node_args.get("num_cpus", 1), node_args.get("num_gpus", 0),
            node_args.get("resources"), node_ip, head, node_args.get("memory"), store,
        )
        if head:
            self._gcs, self.gcs_address = services.start_gcs(
                self.session_dir, self.token, system_config=node_args.get("_system_config")
            )
            services.remember_token(self.gcs_address, self.token)
            # Other drivers on this machine find the token by address (and
            # address="auto" finds this cluster), as for `fleet start`.
            services.register_address(
                self.gcs_address, services.write_token_file(self.session_dir, self.token)
            )
        index = self._next
        self._next += 1
        proc, socket = services.start_node(
            self.gcs_address, self.token, self.session_dir, res, node_ip, head=head,
            socket_name="node.sock" if head else f"node-{index}.sock",
            system_config=node_args.get("_system_config"),
            spill_dir=node_args.get("object_spilling_directory"), labels=node_args.get("labels"),
        )
        node = NodeHandle(proc, socket, index, head)
        node.node_ip_address = node_ip
        node.node_id = self._find_node_id(socket)
        if head:
            self.head_node = node
            self._claim_cluster_file(socket, node_ip, proc.pid)
        else:
            self.worker_nodes.append(node)
        if wait:
            self.wait_for_nodes()
        return node

    def _find_node_id(self, socket: str, timeout: float = 10) -> str:
        from fleet import _core
        from fleet._private.version import version_tag

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in _core.probe_nodes(self.gcs_address, self.token, version_tag(), 5000):
                if n["alive"] and "unix:" + n["unix_socket"].removeprefix("unix:") == socket:
                    return n["node_id"]
            time.sleep(0.01)
        raise TimeoutError(f"the node at {socket} did not register with the control store")

    def remove_node(self, node: NodeHandle, allow_graceful: bool = True) -> None:
        """Stops a node's fleet-node (SIGTERM if graceful, else SIGKILL); its
        workers die with it and the control store marks it dead."""
        _stop_daemon(node.process, allow_graceful)
        if node is self.head_node:
            self.head_node = None
        elif node in self.worker_nodes:
            self.worker_nodes.remove(node)

    def list_all_nodes(self) -> List[NodeHandle]:
        """The head node (if any) and the worker nodes."""
        return ([self.head_node] if self.head_node else []) + list(self.worker_nodes)

    def wait_for_nodes(self, timeout: float = 30) -> None:
        """Waits until the control store lists exactly this cluster's live nodes."""
        from fleet import _core
        from fleet._private.version import version_tag

        want = {n.node_id for n in self.list_all_nodes()}
        deadline = time.monotonic() + timeout
        while True:
            alive = {
                n["node_id"]
                for n in _core.probe_nodes(self.gcs_address, self.token, version_tag(), 5000)
                if n["alive"]
            }
            if alive == want:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Timed out waiting for nodes: {len(alive)} alive, {len(want)} expected"
                )
            time.sleep(0.02)

    def shutdown(self) -> None:
        """Stops every node and the control store (disconnects the driver first)."""
        if self._connected:
            import fleet

            if fleet.is_initialized():
                fleet.shutdown()
            self._connected = False
        for node in list(reversed(self.worker_nodes)):
            self.remove_node(node)
        if self.head_node is not None:
            self.remove_node(self.head_node)
        if self._gcs is not None:
            gcs, self._gcs = self._gcs, None
            _stop_daemon(gcs, graceful=True)
            services.unregister_address(self.gcs_address)
            if self._cluster_file_pids:
                services.remove_cluster_file(self._cluster_file_pids)
                self._cluster_file_pids = None

    def _claim_cluster_file(self, socket: str, node_ip: str, node_pid: int) -> None:
        """Records this cluster as this machine's (``init(address="auto")``),
        unless a live one (``fleet start``, another Cluster) already is."""
        if services.read_cluster_file() is not None or self._gcs is None:
            return
        record = services.LocalCluster(
            session_dir=self.session_dir, token=self.token, gcs_address=self.gcs_address,
            node_socket=socket, node_ip=node_ip, pids=[self._gcs.pid, node_pid],
        )
        services.write_cluster_file(record)
        self._cluster_file_pids = record.pids


def _stop_daemon(proc: subprocess.Popen, graceful: bool) -> None:
    """Stops a daemon of the cluster and reaps it: graceful closes its stdin
    (it watches it: EOF stops it) and sends SIGTERM; otherwise SIGKILL. After
    10 s it is killed regardless."""
    if proc.poll() is None:
        if graceful and proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream:
                stream.close()
        except OSError:
            pass


__all__ = ["Cluster", "NodeHandle"]
