"""Starting and finding the fleet daemons (fleet-gcs, fleet-node).

A local cluster started by ``init()`` runs its daemons as children of the
driver. Each daemon watches its stdin, a pipe from the driver: when the
driver exits for any reason (even SIGKILL) the pipe closes and the daemon
stops, and fleet-node kills its workers. ``fleet start`` runs them detached
and records them in /tmp/fleet/cluster.json for ``fleet stop`` and
``init(address="auto")``.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fleet._private.label_utils import encode_node_labels, validate_node_labels
from fleet._private.version import version_tag

FLEET_ROOT = os.environ.get("FLEET_TMPDIR", "/tmp/fleet")
CLUSTER_FILE = os.path.join(FLEET_ROOT, "cluster.json")


def bin_path(name: str) -> str:
    """Path of a fleet daemon binary shipped inside the package."""
    override = os.environ.get("FLEET_BIN_DIR")
    candidates = []
    if override:
        candidates.append(os.path.join(override, name))
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates.append(os.path.join(here, "_bin", name))
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    raise RuntimeError(
        f"cannot find the {name} executable (looked in {', '.join(candidates)}); "
        "reinstall fleet with `pip install .`"
    )


def new_session_dir() -> str:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    path = os.path.join(FLEET_ROOT, f"session_{stamp}_{os.getpid()}_{secrets.token_hex(3)}")
    os.makedirs(os.path.join(path, "logs"), exist_ok=True)
    os.makedirs(os.path.join(path, "sockets"), exist_ok=True)
    latest = os.path.join(FLEET_ROOT, "session_latest")
    try:
        tmp = latest + f".{os.getpid()}"
        os.symlink(path, tmp)
        os.replace(tmp, latest)
    except OSError:
        pass
    return path



def system_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def node_resources(
    num_cpus: Optional[float],
    num_gpus: Optional[float],
    resources: Optional[Dict[str, float]],
    node_ip: str,
    head: bool,
    memory: Optional[int] = None,
    object_store_memory: Optional[int] = None,
) -> Dict[str, float]:
    """The resource map a node advertises, with Ray's names."""
    res: Dict[str, float] = {}
    res["CPU"] = float(num_cpus if num_cpus is not None else (os.cpu_count() or 1))
    gpus = num_gpus if num_gpus is not None else _detect_gpus()
    if gpus:
        res["GPU"] = float(gpus)
    total_mem = system_memory_bytes()
    store = object_store_memory if object_store_memory is not None else int(total_mem * 0.3)
    if store <= 0 or store > total_mem:
        raise ValueError(
            f"object_store_memory={store:,} bytes: it must be positive and at most this "
            f"machine's memory ({total_mem:,} bytes); the default is 30% of it."
        )
    res["memory"] = float(memory if memory is not None else int(total_mem * 0.7) - store)
    res["object_store_memory"] = float(store)
    res[f"node:{node_ip}"] = 1.0
    if head:
        res["node:__internal_head__"] = 1.0
    for k, v in (resources or {}).items():
        if k in ("CPU", "GPU"):
            raise ValueError(
                f"Use the 'num_cpus' and 'num_gpus' arguments instead of '{k}' in 'resources'."
            )
        res[k] = float(v)
    return res


def _detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    except OSError:
        return 0


def _encode_resources(res: Dict[str, float]) -> str:
    for k in res:
        if "," in k or "=" in k:
            raise ValueError(f"resource name {k!r} may not contain ',' or '='")
    return ",".join(f"{k}={v!r}" for k, v in res.items())


def _wait_ready(proc: subprocess.Popen, name: str, log: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        if b"\n" in buf:
            line = buf.split(b"\n", 1)[0].decode()
            if line.startswith("READY "):
                return line[6:]
            raise RuntimeError(f"{name} failed to start: {line}. See {log}")
    proc.kill()
    raise RuntimeError(f"{name} did not start within {timeout:.0f} s. See {log}")


@dataclass
class LocalCluster:
    """Daemons of a cluster on this machine."""

    session_dir: str
    token: str
    gcs_address: str
    node_socket: str
    node_ip: str
    procs: List[subprocess.Popen] = field(default_factory=list)
    pids: List[int] = field(default_factory=list)

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the daemons (closing their stdin first) and waits for them."""
        for p in reversed(self.procs):
            try:
                if p.stdin:
                    p.stdin.close()
            except OSError:
                pass
            try:
                p.send_signal(signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for p in reversed(self.procs):
            try:
                p.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        self.procs.clear()


def _store_flags(
    resources: Dict[str, float], spill_dir: Optional[str], config: Dict[str, Any]
) -> List[str]:
    flags = []
    if "object_store_memory" in resources:
        flags += ["--object-store-memory", str(int(resources["object_store_memory"]))]
    spilling = config.get("object_spilling_config")
    if spill_dir is None and spilling:
        spec = json.loads(spilling) if isinstance(spilling, str) else spilling
        path = spec.get("params", {}).get("directory_path")
        if isinstance(path, list):
            path = path[0] if path else None
        spill_dir = path
    if spill_dir:
        flags += ["--spill-dir", os.path.abspath(spill_dir)]
    if "object_store_full_timeout_ms" in config:
        timeout_ms = int(config["object_store_full_timeout_ms"])
        flags += ["--object-store-full-timeout-ms", str(timeout_ms)]
    return flags


def _daemon_env(token: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["FLEET_CLUSTER_TOKEN"] = token
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = pkg_parent + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


def _spawn(args: List[str], log: str, env: Dict[str, str], detached: bool) -> subprocess.Popen:
    if not detached:
        args = [*args, "--watch-stdin"]
    with open(log, "ab") as err:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if detached else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            start_new_session=detached,
            close_fds=True,
        )


def _spread_threshold(config: Optional[Dict[str, Any]]) -> List[str]:
    """``--spread-threshold`` from Ray's ``scheduler_spread_threshold``
    system config (the hybrid policy's; default 0.5)."""
    value = (config or {}).get("scheduler_spread_threshold")
    if value is None:
        return []
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"scheduler_spread_threshold must be within [0, 1], got {value}")
    return ["--spread-threshold", repr(value)]


def start_gcs(
    session_dir: str, token: str, host: str = "127.0.0.1", port: int = 0,
    detached: bool = False, timeout: float = 30.0,
    system_config: Optional[Dict[str, Any]] = None,
) -> tuple[subprocess.Popen, str]:
    """Starts fleet-gcs; returns the process and its address once it serves."""
    log = os.path.join(session_dir, "logs", "fleet-gcs.log")
    proc = _spawn(
        [bin_path("fleet-gcs"), "--host", host, "--port", str(port),
         "--version-tag", version_tag(), *_spread_threshold(system_config)],
        log, _daemon_env(token), detached,
    )
    try:
        bound = _wait_ready(proc, "fleet-gcs", log, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return proc, f"{connect_host}:{bound}"


def start_node(
    gcs_address: str,
    token: str,
    session_dir: str,
    resources: Dict[str, float],
    node_ip: str = "127.0.0.1",
    head: bool = False,
    port: int = 0,
    socket_name: str = "node.sock",
    detached: bool = False,
    timeout: float = 30.0,
    spill_dir: Optional[str] = None,
    system_config: Optional[Dict[str, Any]] = None,
    labels: Optional[Dict[str, str]] = None,
) -> tuple[subprocess.Popen, str]:
    """Starts a fleet-node that joins the cluster at `gcs_address`; returns
    the process and its Unix socket address ("unix:/path") once it serves.
    `labels` are the node's (validated; ray.io/node-id is added by it)."""
    node_socket = os.path.join(session_dir, "sockets", socket_name)
    log = os.path.join(session_dir, "logs", "fleet-" + socket_name.replace(".sock", "") + ".log")
    args = [
        bin_path("fleet-node"),
        "--gcs-address", gcs_address,
        "--session-dir", session_dir,
        "--socket", node_socket,
        "--node-ip", node_ip,
        "--port", str(port),
        "--resources", _encode_resources(resources),
        "--python", sys.executable,
        "--version-tag", version_tag(),
        *_store_flags(resources, spill_dir, system_config or {}),
        *_spread_threshold(system_config),
    ]
    if labels:
        # (init and the CLI refuse ray.io/ keys before; a test Cluster may set them)
        args += ["--labels", encode_node_labels(validate_node_labels(labels, allow_reserved=True))]
    if head:
        args.append("--head")
    proc = _spawn(args, log, _daemon_env(token), detached)
    try:
        _wait_ready(proc, "fleet-node", log, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, "unix:" + node_socket


def start_local_cluster(
    resources: Dict[str, float],
    session_dir: Optional[str] = None,
    gcs_port: int = 0,
    gcs_host: str = "127.0.0.1",
    node_ip: str = "127.0.0.1",
    detached: bool = False,
    token: Optional[str] = None,
    timeout: float = 30.0,
    spill_dir: Optional[str] = None,
    system_config: Optional[Dict[str, Any]] = None,
    node_port: int = 0,
    labels: Optional[Dict[str, str]] = None,
) -> LocalCluster:
    """Starts fleet-gcs and the head fleet-node; returns once both are serving.

    The node's object store gets ``resources["object_store_memory"]`` bytes;
    spilled objects go to `spill_dir` (default: under the session dir).
    `system_config` may set ``object_spilling_config`` (Ray's JSON form:
    ``{"type": "filesystem", "params": {"directory_path": ...}}``) and
    ``object_store_full_timeout_ms``."""
    session_dir = session_dir or new_session_dir()
    token = token or secrets.token_hex(16)
    gcs, gcs_address = start_gcs(
        session_dir, token, gcs_host, gcs_port, detached, timeout, system_config
    )
    try:
        node, node_socket = start_node(
            gcs_address, token, session_dir, resources, node_ip, head=True, port=node_port,
            detached=detached, timeout=timeout, spill_dir=spill_dir,
            system_config=system_config, labels=labels,
        )
    except BaseException:
        gcs.kill()
        gcs.wait()
        raise
    procs = [gcs, node]
    cluster = LocalCluster(
        session_dir=session_dir,
        token=token,
        gcs_address=gcs_address,
        node_socket=node_socket,
        node_ip=node_ip,
        procs=procs,
        pids=[p.pid for p in procs],
    )
    if detached:
        for p in procs:
            p.stdout.close()
        cluster.procs = []
    return cluster


# Tokens of clusters this process started (cluster_utils.Cluster), so that
# init(address=...) needs no FLEET_CLUSTER_TOKEN for them.
_known_tokens: Dict[str, str] = {}


def remember_token(gcs_address: str, token: str) -> None:
    """Lets ``init(address=gcs_address)`` in this process use `token`."""
    _known_tokens[gcs_address] = token


def known_token(gcs_address: str) -> str:
    """The token remembered for `gcs_address` by this process, or else
    the token file this machine's user registered for it (other drivers of a
    cluster started here: ``fleet start``, ``cluster_utils.Cluster``), or ""."""
    token = _known_tokens.get(gcs_address, "")
    if token:
        return token
    try:
        with open(_address_file(gcs_address)) as f:
            token_file = json.load(f)["token_file"]
        with open(token_file) as f:
            return f.read().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _address_file(gcs_address: str) -> str:
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in gcs_address)
    return os.path.join(FLEET_ROOT, "addresses", safe + ".json")


def write_token_file(session_dir: str, token: str) -> str:
    """Writes the cluster token into the session (mode 0600); returns its path."""
    token_file = os.path.join(session_dir, "cluster_token")
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token_file


def register_address(gcs_address: str, token_file: str) -> None:
    """Records where the token of the cluster at `gcs_address` is, so that
    another driver on this machine can join it by address (as the CLI does)."""
    path = _address_file(gcs_address)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"token_file": token_file}, f)
    os.replace(tmp, path)


def unregister_address(gcs_address: str) -> None:
    """Forgets `gcs_address` (its cluster stopped)."""
    try:
        os.unlink(_address_file(gcs_address))
    except OSError:
        pass


def local_ip_towards(address: str) -> str:
    """This machine's IP address on the route to `address` ("host:port")."""
    import socket

    host = address.rsplit(":", 1)[0]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def find_local_node(gcs_address: str, token: str) -> tuple[str, str, str]:
    """(node socket, session dir, node ip) of the cluster's fleet-node on this
    machine: the alive node whose IP is this machine's IP towards the control
    store (the head node if several, as with ``cluster_utils.Cluster``)."""
    from fleet import _core

    try:
        nodes = _core.probe_nodes(gcs_address, token, version_tag(), 10000)
    except RuntimeError as e:
        raise ConnectionError(f"fleet.init could not reach the cluster at {gcs_address}: {e}")
    ip = local_ip_towards(gcs_address)
    mine = [n for n in nodes if n["alive"] and n["node_ip"] == ip]
    if not mine:
        ips = ", ".join(sorted({n["node_ip"] for n in nodes if n["alive"]})) or "none"
        raise ConnectionError(
            f"No fleet-node of the cluster at {gcs_address} runs on this machine ({ip}); "
            f"nodes alive: {ips}. Join this machine first with "
            f"`fleet start --address {gcs_address}`."
        )
    mine.sort(key=lambda n: (not n["is_head"], n["start_time_ms"]))
    node = mine[0]
    socket_path = node["unix_socket"]
    if not socket_path.startswith("unix:"):
        socket_path = "unix:" + socket_path
    return socket_path, node["session_dir"], node["node_ip"]


def write_cluster_file(cluster: LocalCluster) -> None:
    """Records this machine's cluster for ``fleet stop`` and
    ``init(address="auto")`` (and its address for other drivers)."""
    os.makedirs(FLEET_ROOT, exist_ok=True)
    token_file = write_token_file(cluster.session_dir, cluster.token)
    register_address(cluster.gcs_address, token_file)
    info = {
        "gcs_address": cluster.gcs_address,
        "node_socket": cluster.node_socket,
        "session_dir": cluster.session_dir,
        "node_ip": cluster.node_ip,
        "token_file": token_file,
        "pids": cluster.pids,
    }
    tmp = CLUSTER_FILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, CLUSTER_FILE)


def read_cluster_file() -> Optional[dict]:
    try:
        with open(CLUSTER_FILE) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    alive = [pid for pid in info.get("pids", []) if _pid_alive(pid)]
    if not alive:
        return None
    try:
        with open(info["token_file"]) as f:
            info["token"] = f.read().strip()
    except OSError:
        info["token"] = os.environ.get("FLEET_CLUSTER_TOKEN", "")
    return info


def remove_cluster_file(owner_pids: Optional[List[int]] = None) -> None:
    """Removes this machine's cluster file (only if it names `owner_pids`,
    when given) and its address registration."""
    try:
        with open(CLUSTER_FILE) as f:
            info = json.load(f)
    except (OSError, ValueError):
        info = {}
    if owner_pids is not None and info.get("pids") != list(owner_pids):
        return
    if info.get("gcs_address"):
        unregister_address(info["gcs_address"])
    try:
        os.unlink(CLUSTER_FILE)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pids(pids: List[int], timeout: float = 5.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
