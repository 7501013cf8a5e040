"""Linux network namespaces as stand-in hosts for multi-host fleet tests.

``NetnsCluster(n)`` builds ``n`` "hosts" on one machine, each a network
namespace joined to the others by a bridge, and tears them down again::

    root namespace:  bridge flbr0 (10.77.0.254/24)
                       |-- vflhost1 <-veth-> eth0 10.77.0.1/24 in netns flhost1
                       |-- vflhost2 <-veth-> eth0 10.77.0.2/24 in netns flhost2
                       `-- ...

Only the network is separate: the hosts share the file system, /dev/shm and
the process table. So that every host keeps its own fleet state
(cluster.json, session directories), each command run in a namespace gets
``FLEET_TMPDIR=/tmp/fleet-netns/<ns>`` in its environment, and the
``PYTHONPATH`` that makes this process import its ``fleet`` package, so the
hosts run the same code.

Entering the context first removes what a crashed earlier run may have left
(namespaces named ``flhost<N>``, their processes, the bridge, root-side veth
ends, fleet processes whose ``FLEET_TMPDIR`` lies under /tmp/fleet-netns).
Leaving it kills whatever still runs in the namespaces and deletes them.

Needs root and iproute2 (``ip``); ``netns_supported()`` says whether both are
there and work. No pytest dependency: ``bench/transfer_netns.py`` uses it too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Dict, List, Mapping, Optional, Sequence, Tuple, Type

BRIDGE = "flbr0"
SUBNET = "10.77.0"
BRIDGE_IP = f"{SUBNET}.254"
PREFIX = "flhost"
STATE_ROOT = "/tmp/fleet-netns"
FLEET_MARKERS = ("fleet-gcs", "fleet-node", "fleet._private")

_NS_RE = re.compile(rf"^{PREFIX}\d+$")
_VETH_RE = re.compile(rf"^v{PREFIX}\d+$")


# --------------------------------------------------------------------------
# Commands in the root namespace
# --------------------------------------------------------------------------


def _ip(*args: str, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Runs ``ip ARGS``; raises RuntimeError with ip's message if `check` and it fails."""
    res = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"`ip {' '.join(args)}` failed (exit {res.returncode}): {res.stderr.strip()}"
        )
    return res


def netns_supported() -> Tuple[bool, str]:
    """Whether namespaces can be built here: (True, "") or (False, why not)."""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "building network namespaces needs root"
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is not installed"
    probe = f"flprobe{os.getpid()}"
    try:
        res = _ip("netns", "add", probe, check=False)
        if res.returncode != 0:
            return False, f"`ip netns add` does not work here: {res.stderr.strip()}"
        res = _ip("-n", probe, "link", "set", "lo", "up", check=False)
        if res.returncode != 0:
            return False, f"cannot configure a network namespace: {res.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"`ip netns` does not work here: {e}"
    finally:
        try:
            _ip("netns", "del", probe, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return True, ""


def namespace_names() -> List[str]:
    """Names of the namespaces this module creates that exist now (``flhost<N>``)."""
    res = _ip("netns", "list", check=False)
    names = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts and _NS_RE.match(parts[0]):
            names.append(parts[0])
    return sorted(names)


def _link_names() -> List[str]:
    """Names of the network interfaces in the root namespace."""
    res = _ip("-o", "link", "show", check=False)
    names = []
    for line in res.stdout.splitlines():
        # "12: vflhost1@if11: <BROADCAST,...> ..."
        fields = line.split(":", 2)
        if len(fields) >= 2:
            names.append(fields[1].strip().split("@", 1)[0])
    return names


def namespace_pids(ns: str) -> List[int]:
    """Pids of the processes whose network namespace is `ns` (``ip netns pids``)."""
    res = _ip("netns", "pids", ns, check=False)
    return [int(tok) for tok in res.stdout.split() if tok.isdigit()]


# --------------------------------------------------------------------------
# fleet processes, found by the FLEET_TMPDIR in their environment
# --------------------------------------------------------------------------


@dataclass
class FleetProcess:
    """A fleet daemon or worker, with the FLEET_TMPDIR it was started with."""

    pid: int
    cmdline: str
    tmpdir: str


def _read_proc(pid: int, name: str) -> Optional[bytes]:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    stat = _read_proc(pid, "stat")
    if stat is None:
        return True
    text = stat.decode(errors="replace")
    rest = text[text.rfind(")") + 2 :].split()
    return not rest or rest[0] in ("Z", "X")


def _under(path: str, root: str) -> bool:
    path = os.path.normpath(path)
    root = os.path.normpath(root)
    return path == root or path.startswith(root + os.sep)


def fleet_processes(under: str = STATE_ROOT) -> List[FleetProcess]:
    """Live fleet processes (cmdline has ``fleet-gcs``, ``fleet-node`` or
    ``fleet._private``) whose environment's FLEET_TMPDIR lies under `under`."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        raw = _read_proc(pid, "cmdline")
        if not raw:
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if not any(m in cmdline for m in FLEET_MARKERS):
            continue
        environ = _read_proc(pid, "environ") or b""
        tmpdir = None
        for var in environ.split(b"\0"):
            if var.startswith(b"FLEET_TMPDIR="):
                tmpdir = var[len(b"FLEET_TMPDIR=") :].decode(errors="replace")
        if tmpdir is None or not _under(tmpdir, under):
            continue
        if _is_zombie(pid):
            continue
        found.append(FleetProcess(pid, cmdline, tmpdir))
    return found


def _kill_and_wait(pids: Sequence[int], timeout: float) -> List[int]:
    """SIGKILLs `pids`; waits up to `timeout` for them to go; returns those left."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not _is_zombie(pid)]
        if left:
            time.sleep(0.02)
    return left


def kill_fleet_processes(under: str, timeout: float = 5.0) -> List[FleetProcess]:
    """SIGKILLs the fleet processes of ``fleet_processes(under)``, waits until
    they are gone (or `timeout`), and returns the ones it killed."""
    procs = fleet_processes(under)
    _kill_and_wait([p.pid for p in procs], timeout)
    return procs


# --------------------------------------------------------------------------
# Commands in a namespace
# --------------------------------------------------------------------------


def state_dir(ns: str) -> str:
    """The FLEET_TMPDIR of host `ns`."""
    return os.path.join(STATE_ROOT, ns)


def _fleet_pythonpath(current: Optional[str]) -> str:
    """`current` with the directory holding this process's fleet package first."""
    parts = [p for p in (current or "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("fleet")
    if spec is not None and spec.origin is not None:
        parent = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
        if parent not in parts:
            parts.insert(0, parent)
    # sys.path entries added at run time (e.g. by fleet_test_utils) count too.
    for p in sys.path:
        if p and os.path.isdir(os.path.join(p, "fleet")) and p not in parts:
            parts.append(p)
    return os.pathsep.join(parts)


def host_env(ns: str, env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of a command in `ns`: this process's environment
    (less FLEET_ADDRESS, RAY_ADDRESS and FLEET_CLUSTER_TOKEN) plus `env`, with
    FLEET_TMPDIR set to ``state_dir(ns)`` and PYTHONPATH reaching the same
    fleet package as this process."""
    out = dict(os.environ)
    # A cluster address of the caller's environment must not leak into a host.
    for var in ("FLEET_ADDRESS", "RAY_ADDRESS", "FLEET_CLUSTER_TOKEN"):
        out.pop(var, None)
    out["PYTHONUNBUFFERED"] = "1"
    if env:
        out.update(env)
    out["FLEET_TMPDIR"] = state_dir(ns)
    out["PYTHONPATH"] = _fleet_pythonpath(out.get("PYTHONPATH"))
    return out


def fleet_cli(*args: str) -> List[str]:
    """argv of the ``fleet`` command line with `args` (``python -m fleet.scripts``)."""
    return [sys.executable, "-m", "fleet.scripts", *args]


def popen_in(
    ns: str,
    argv: Sequence[str],
    env: Optional[Mapping[str, str]] = None,
    **kwargs: object,
) -> subprocess.Popen:
    """Starts `argv` in namespace `ns` (``ip netns exec``) with ``host_env(ns, env)``;
    other keyword arguments go to ``subprocess.Popen``."""
    return subprocess.Popen(  # type: ignore[call-overload]
        ["ip", "netns", "exec", ns, *argv], env=host_env(ns, env), **kwargs
    )


def _read_all(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def run_in(
    ns: str,
    argv: Sequence[str],
    env: Optional[Mapping[str, str]] = None,
    timeout: float = 60.0,
    check: bool = False,
    input: Optional[str] = None,
) -> subprocess.CompletedProcess:
    """Runs `argv` in namespace `ns` and returns its CompletedProcess (text
    stdout/stderr).

    Output goes to temporary files, not pipes, so a daemon the command leaves
    behind holding its stdout (``fleet start``) cannot make this wait. After
    `timeout` seconds the command's process group is killed and
    ``subprocess.TimeoutExpired`` (with the output so far) is raised. With
    `check`, a non-zero exit raises ``subprocess.CalledProcessError``.
    """
    full = ["ip", "netns", "exec", ns, *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            full,
            env=host_env(ns, env),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            text=True,
        )
        timed_out = False
        try:
            proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()

        stdout, stderr = _read_all(out), _read_all(err)
    if timed_out:
        raise subprocess.TimeoutExpired(full, timeout, output=stdout, stderr=stderr)
    res = subprocess.CompletedProcess(full, proc.returncode, stdout, stderr)
    if check and res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, full, stdout, stderr)
    return res


# --------------------------------------------------------------------------
# The cluster of namespaces
# --------------------------------------------------------------------------

_REACH_SCRIPT = r"""
import socket, sys
bad = []
for ip in sys.argv[1:]:
    s = socket.socket()
    s.settimeout(2.0)
    try:
        s.connect((ip, 9))  # discard port: nobody listens, a refusal proves the path
    except ConnectionRefusedError:
        pass
    except OSError as e:
        bad.append(f"{ip}: {e}")
    else:
        pass
    finally:
        s.close()
print("\n".join(bad))
sys.exit(1 if bad else 0)
"""


def cleanup_stale(timeout: float = 10.0) -> None:
    """Removes what an earlier (crashed) run left: fleet processes with a
    FLEET_TMPDIR under /tmp/fleet-netns, the processes in ``flhost<N>``
    namespaces, those namespaces, root-side veth ends and the bridge."""
    kill_fleet_processes(STATE_ROOT, timeout=timeout)
    stale = namespace_names()
    pids = [pid for ns in stale for pid in namespace_pids(ns) if pid != os.getpid()]
    _kill_and_wait(pids, timeout)
    for ns in stale:
        _ip("netns", "del", ns, check=False)
    links = _link_names()
    for name in links:
        if _VETH_RE.match(name):
            _ip("link", "del", name, check=False)
    if BRIDGE in links:
        _ip("link", "del", BRIDGE, check=False)


class NetnsCluster:
    """`n` namespaces ``flhost1..n`` on bridge ``flbr0``; a context manager.

    Entering removes stale leftovers, builds the namespaces, wipes each
    host's state directory and checks that every host reaches every other.
    Leaving kills every process still in the namespaces (and fleet processes
    whose FLEET_TMPDIR is one of the hosts') and deletes the namespaces, the
    veth pairs and the bridge. The hosts' state directories (logs) stay until
    the next run unless ``keep_state=False``.
    """

    def __init__(self, n: int, keep_state: bool = True) -> None:
        if not 1 <= n <= 253:
            raise ValueError(f"n must be in 1..253, got {n}")
        self.n = n
        self.keep_state = keep_state
        self.hosts: List[str] = [f"{PREFIX}{i}" for i in range(1, n + 1)]
        self._ips: Dict[str, str] = {ns: f"{SUBNET}.{i}" for i, ns in enumerate(self.hosts, 1)}

    # -- addresses and commands --------------------------------------------

    def ip(self, ns: str) -> str:
        """The address of host `ns` (``10.77.0.<i>``)."""
        return self._ips[ns]

    def host_of(self, ip: str) -> str:
        """The namespace whose address is `ip`."""
        for ns, addr in self._ips.items():
            if addr == ip:
                return ns
        raise KeyError(ip)

    def run_in(
        self,
        ns: str,
        argv: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        timeout: float = 60.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """``run_in`` for one of this cluster's hosts."""
        self._check_host(ns)
        return run_in(ns, argv, env=env, timeout=timeout, check=check)

    def popen_in(
        self, ns: str, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
        **kwargs: object,
    ) -> subprocess.Popen:
        """``popen_in`` for one of this cluster's hosts."""
        self._check_host(ns)
        return popen_in(ns, argv, env=env, **kwargs)

    def _check_host(self, ns: str) -> None:
        if ns not in self._ips:
            raise KeyError(f"{ns} is not one of this cluster's hosts {self.hosts}")

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> NetnsCluster:
        cleanup_stale()
        try:
            self._build()
            self.check_connectivity()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.teardown()

    def _build(self) -> None:
        for ns in self.hosts:
            shutil.rmtree(state_dir(ns), ignore_errors=True)
            os.makedirs(state_dir(ns), exist_ok=True)
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for ns in self.hosts:
            veth = f"v{ns}"
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", BRIDGE)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{self.ip(ns)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def check_connectivity(self, timeout: float = 10.0) -> None:
        """Waits until every host reaches the bridge and every other host over
        TCP; raises RuntimeError (naming the likely cause) if they do not."""
        deadline = time.monotonic() + timeout
        problems: List[str] = []
        while True:
            problems = []
            for ns in self.hosts:
                targets = [BRIDGE_IP] + [self.ip(o) for o in self.hosts if o != ns]
                res = run_in(ns, [sys.executable, "-c", _REACH_SCRIPT, *targets], timeout=30)
                if res.returncode != 0:
                    problems.append(f"{ns} -> {res.stdout.strip() or res.stderr.strip()}")
            if not problems or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if problems:
            raise RuntimeError(
                "the namespaces cannot reach each other over bridge "
                f"{BRIDGE}: {'; '.join(problems)}. If br_netfilter is loaded "
                "(net.bridge.bridge-nf-call-iptables=1), an iptables FORWARD rule "
                "(e.g. Docker's DROP policy) may be dropping bridged traffic."
            )

    def teardown(self) -> None:
        """Kills what runs in the namespaces, deletes them, the veths and the bridge."""
        for ns in self.hosts:
            kill_fleet_processes(state_dir(ns))
        existing = namespace_names()
        pids = [
            pid for ns in self.hosts if ns in existing
            for pid in namespace_pids(ns) if pid != os.getpid()
        ]
        _kill_and_wait(pids, 10.0)
        for ns in self.hosts:
            _ip("netns", "del", ns, check=False)
        links = _link_names()
        for ns in self.hosts:
            if f"v{ns}" in links:
                _ip("link", "del", f"v{ns}", check=False)
        if BRIDGE in links:
            _ip("link", "del", BRIDGE, check=False)
        if not self.keep_state:
            for ns in self.hosts:
                shutil.rmtree(state_dir(ns), ignore_errors=True)

    def leftovers(self) -> List[str]:
        """What of the cluster's network setup exists now (empty after teardown)."""
        left = [f"netns {ns}" for ns in namespace_names()]
        links = _link_names()
        left += [f"link {name}" for name in links if name == BRIDGE or _VETH_RE.match(name)]
        return left

