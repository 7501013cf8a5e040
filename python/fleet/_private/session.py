"""Connecting this process to a cluster: init (starting a local cluster if
needed), shutdown, and the connection every other module asks for
(_ensure_initialized). Below actors and remote functions, which connect on
first use; above serialization and options."""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from typing import Any, Dict, List, Optional

from fleet import _core
from fleet._private import serialization, state
from fleet._private.options import _runtime_env
from fleet._private.version import version_tag

_init_lock = threading.RLock()


class FleetContext(dict):
    """What ``init`` returns: address information; usable as a context manager."""

    def __init__(self, info: Dict[str, Any]):
        super().__init__(info)
        self.address_info = info
        self.dashboard_url = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __enter__(self) -> FleetContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        shutdown()

    def disconnect(self) -> None:
        shutdown()


def is_initialized() -> bool:
    """True if ``init`` has connected this process to a cluster."""
    return state.core is not None


def _parse_address(address: Optional[str]) -> Optional[str]:
    if address is None:
        address = os.environ.get("FLEET_ADDRESS") or os.environ.get("RAY_ADDRESS") or None
    if address in ("local", ""):
        return None
    if address is not None and address.startswith("fleet://"):
        address = address[len("fleet://"):]
    if address is not None and address.startswith("ray://"):
        raise ValueError(
            f"address={address!r}: Ray Client (ray://) is not supported by fleet; connect to "
            "the control store's host:port from a machine in the cluster instead"
        )
    return address


# Keyword arguments of Ray's init() that fleet accepts without acting on
# them (a warning says so when one is given a value other than its default).
# object_spilling_directory and _system_config are used (a started cluster's
# spill folder and store settings); any other name is an error, as in Ray.
_RAY_INIT_IGNORED: Dict[str, Any] = {
    "local_mode": False,
    "labels": None,
    "logging_format": None,
    "logging_config": None,
    "enable_resource_isolation": False,
    "system_reserved_cpu": None,
    "system_reserved_memory": None,
    "_cgroup_path": None,
    "_enable_object_reconstruction": False,
    "_plasma_directory": None,
    "_driver_object_store_memory": None,
    "_memory": None,
    "_redis_password": None,
    "_redis_username": None,
    "_metrics_export_port": None,
    "_tracing_startup_hook": None,
    "_node_name": None,
    "_skip_env_hook": False,
    "_load_code_from_local": False,
    "_java_worker_options": None,
    "_disable_docker_cpu_warning": False,
    "_worker_path": None,
    "storage": None,
    "job_config": None,
}
_RAY_INIT_USED = ("object_spilling_directory", "_system_config")


def _check_init_kwargs(kwargs: Dict[str, Any]) -> None:
    """Ray's keyword arguments fleet has no use for: accepted (with a warning
    when set); unknown ones: RuntimeError, as Ray raises."""
    unknown = [k for k in kwargs if k not in _RAY_INIT_IGNORED and k not in _RAY_INIT_USED]
    if unknown:
        raise RuntimeError(f"Unknown keyword argument(s): {', '.join(unknown)}")
    if kwargs.get("local_mode"):
        raise ValueError("local_mode=True is not supported by fleet (Ray deprecated it too)")
    for k, v in kwargs.items():
        if k in _RAY_INIT_IGNORED and v != _RAY_INIT_IGNORED[k]:
            import warnings

            warnings.warn(
                f"fleet.init(): '{k}' has no effect in fleet and is ignored", stacklevel=3
            )


def init(
    address: Optional[str] = None,
    *,
    num_cpus: Optional[int] = None,
    num_gpus: Optional[int] = None,
    resources: Optional[Dict[str, float]] = None,
    labels: Optional[Dict[str, str]] = None,
    memory: Optional[int] = None,
    object_store_memory: Optional[int] = None,
    namespace: Optional[str] = None,
    ignore_reinit_error: bool = False,
    job_config: Any = None,
    runtime_env: Optional[Dict[str, Any]] = None,
    log_to_driver: bool = True,
    include_dashboard: Optional[bool] = None,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: Optional[int] = None,
    logging_level: Any = None,
    configure_logging: bool = True,
    _temp_dir: Optional[str] = None,
    _node_ip_address: Optional[str] = None,
    **kwargs: Any,
) -> FleetContext:
    """Connects to a fleet cluster, starting a local one if no address is given.

    ``address``: None starts a one-node cluster as child processes of this
    driver; ``"auto"`` joins the cluster started on this machine by
    ``fleet start``; ``"host:port"`` joins the control store at that address
    (the cluster token comes from ``FLEET_CLUSTER_TOKEN``, from this process
    if it started that cluster, or from the token file this machine's
    ``fleet start`` or ``cluster_utils.Cluster`` registered for the address).
    Without an address, ``RAY_ADDRESS``/``FLEET_ADDRESS`` name one.

    ``labels``: this node's labels (a new local cluster only), matched by
    ``label_selector``. ``job_config``: a :class:`fleet.job_config.JobConfig`;
    ``namespace`` and ``runtime_env`` given here take precedence over its own.
    ``_system_config={"scheduler_spread_threshold": x}`` sets the hybrid
    policy's threshold (a new local cluster only).
    """
    from fleet._private import label_utils, services  # (only a driver that connects needs them)
    from fleet.job_config import JobConfig

    _check_init_kwargs(kwargs)
    if job_config is not None:
        if not isinstance(job_config, JobConfig):
            raise TypeError(f"job_config must be a JobConfig, got {type(job_config).__name__}")
        job_config._check_supported()
        if namespace is None:
            namespace = job_config.ray_namespace
        if runtime_env is None and job_config.runtime_env:
            runtime_env = job_config.runtime_env
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a string, got {namespace!r}")
    node_labels = label_utils.validate_node_labels(labels)
    err = _runtime_env(runtime_env)
    if err:
        raise ValueError(err)
    with _init_lock:
        if state.core is not None:
            if ignore_reinit_error:
                return FleetContext(_address_info())
            raise RuntimeError(
                "Maybe you called fleet.init twice by accident? This error can be suppressed "
                "by passing in 'ignore_reinit_error=True' or by calling 'fleet.shutdown()' "
                "prior to 'fleet.init()'."
            )
        address = _parse_address(address)
        cluster = None
        if address is None:
            res = services.node_resources(
                num_cpus, num_gpus, resources, "127.0.0.1", True, memory, object_store_memory
            )
            cluster = services.start_local_cluster(
                res, system_config=kwargs.get("_system_config"),
                spill_dir=kwargs.get("object_spilling_directory"), labels=node_labels,
            )
            gcs_address, node_socket = cluster.gcs_address, cluster.node_socket
            token, session_dir, node_ip = cluster.token, cluster.session_dir, cluster.node_ip
        else:
            if num_cpus is not None or num_gpus is not None or resources or labels:
                raise ValueError(
                    "When connecting to an existing cluster, num_cpus, num_gpus, resources "
                    "and labels must not be provided; set them on `fleet start` instead."
                )
            if kwargs.get("_system_config"):
                raise ValueError(
                    "When connecting to an existing cluster, _system_config must not be "
                    "provided: it is the cluster's, set when its nodes start."
                )
            info = services.read_cluster_file()
            if address == "auto":
                if info is None:
                    raise ConnectionError(
                        "Could not find any running fleet instance on this machine. Start one "
                        "with `fleet start --head`, or call fleet.init() without an address."
                    )
                gcs_address = info["gcs_address"]
            else:
                gcs_address = address
            token = os.environ.get("FLEET_CLUSTER_TOKEN", "") or services.known_token(gcs_address)
            local = info is not None and info["gcs_address"] == gcs_address
            if not token and local:
                token = info["token"]
            if local:
                node_socket, session_dir, node_ip = (
                    info["node_socket"], info["session_dir"], info["node_ip"],
                )
            else:
                node_socket, session_dir, node_ip = services.find_local_node(gcs_address, token)
        listen = os.path.join(
            session_dir, "sockets", f"driver-{os.getpid()}-{_core.random_id().hex()[:8]}.sock"
        )
        try:
            core = _core.Core(
                {
                    "node_address": node_socket,
                    "gcs_address": gcs_address,
                    "token": token,
                    "session_dir": session_dir,
                    "listen_path": listen,
                    "log_to_driver": "1" if log_to_driver else "0",
                    "dedup_logs": "0" if _env_off("FLEET_DEDUP_LOGS", "RAY_DEDUP_LOGS") else "1",
                    "node_ip": node_ip,
                    "namespace": namespace or "",
                    "max_tasks_in_flight": os.environ.get("FLEET_MAX_TASKS_IN_FLIGHT", ""),
                    "version": version_tag(),
                }
            )
        except RuntimeError as e:
            if cluster is not None:
                cluster.stop()
            raise ConnectionError(f"fleet.init could not connect: {e}") from None
        state.core = core
        state.mode = "driver"
        state.cluster = cluster
        state.gcs_address = gcs_address
        state.session_dir = session_dir
        state.node_ip = node_ip
        state.node_id_hex = core.node_id.hex()
        state.namespace = namespace or _anonymous_namespace()
        state.job_runtime_env = dict(runtime_env or {})
        state.default_actor_lifetime = (
            job_config.default_actor_lifetime if job_config is not None else "non_detached"
        )
        # Workers import functions defined in the driver's modules from these paths.
        search = list(job_config.code_search_path) if job_config is not None else []
        core.kv_put(
            f"job:{core.job_id}:sys_path",
            serialization.dumps([os.path.abspath(p) for p in search] + _driver_sys_path()), True,
        )
        core.kv_put(f"job:{core.job_id}:namespace", state.namespace.encode(), True)
        if job_config is not None:
            # What workers of this job inherit, and what other drivers can read.
            core.kv_put(f"job:{core.job_id}:config", json.dumps({
                "runtime_env": state.job_runtime_env,
                "default_actor_lifetime": state.default_actor_lifetime,
                "metadata": job_config.metadata,
            }).encode(), True)
        _register_atexit()
        return FleetContext(_address_info())


def _env_off(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().lower() in ("0", "false", "no") for n in names)


def _anonymous_namespace() -> str:
    return "anonymous-" + _core.random_id().hex()[:12]


def _driver_sys_path() -> List[str]:
    paths = []
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file:
        paths.append(os.path.dirname(os.path.abspath(main_file)))
    paths.append(os.getcwd())
    paths.extend(p for p in sys.path if p and os.path.isdir(p))
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _address_info() -> Dict[str, Any]:
    return {
        "address": state.gcs_address,
        "gcs_address": state.gcs_address,
        "node_ip_address": state.node_ip,
        "node_id": state.node_id_hex,
        "session_dir": state.session_dir,
        "namespace": state.namespace,
        "job_id": _job_hex(state.core.job_id) if state.core else None,
    }


def _job_hex(job_id: int) -> str:
    return int(job_id).to_bytes(4, "little").hex()


_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def shutdown(_exiting_interpreter: bool = False) -> None:
    """Disconnects; stops the local cluster if this driver started it."""
    with _init_lock:
        core, cluster = state.core, state.cluster
        state.core = None
        state.cluster = None
        state.mode = ""
        if core is not None:
            core.shutdown()
        if cluster is not None:
            cluster.stop()


def _ensure_initialized() -> Any:
    core = state.core
    if core is None:
        if os.environ.get("FLEET_ENABLE_AUTO_CONNECT",
                          os.environ.get("RAY_ENABLE_AUTO_CONNECT", "1")) == "0":
            raise RuntimeError(
                "fleet is not initialized: call fleet.init() first (connecting on first "
                "use is turned off by FLEET_ENABLE_AUTO_CONNECT=0 / RAY_ENABLE_AUTO_CONNECT=0)"
            )
        init()
        core = state.core
    return core
