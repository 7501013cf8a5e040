"""A real multi-host fleet cluster: three hosts in Linux network namespaces.

``netns_cluster.NetnsCluster(3)`` builds hosts flhost1..3 (10.77.0.1..3) on
one bridge; each has its own FLEET_TMPDIR, so each keeps its own cluster.json
and session directories, as separate machines would. The cluster is started
exactly as a user would start one (Ray: ``ray start --head`` prints the
``ray start --address=...`` to run on the other machines):

- flhost1: ``fleet start --head --port 6380 --node-ip-address 10.77.0.1
  --num-cpus 2``, whose output names the join command with the token;
- flhost2/3: ``fleet start --address 10.77.0.1:6380 --token <token>
  --node-ip-address 10.77.0.<i> --num-cpus 2 --resources '{"host<i>": 1}'``.

Drivers run in flhost1 (``fleet.init(address="10.77.0.1:6380")``, the token
in FLEET_CLUSTER_TOKEN) as separate processes and print one ``RESULT <json>``
line that the test parses. The tests run in file order and the node-failure
test, which kills flhost3, comes last. Afterwards ``fleet stop`` runs on every
host, and no fleet process of these hosts may outlive it.

Skipped unless running as root with a working ``ip netns``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import netns_cluster as nc

_NETNS_OK, _NETNS_WHY = nc.netns_supported()
pytestmark = pytest.mark.skipif(
    not _NETNS_OK, reason=f"multi-host tests need Linux network namespaces: {_NETNS_WHY}"
)

HEAD = "flhost1"
HEAD_IP = "10.77.0.1"
PORT = 6380
ADDRESS = f"{HEAD_IP}:{PORT}"
IPS = {"flhost1": "10.77.0.1", "flhost2": "10.77.0.2", "flhost3": "10.77.0.3"}

JOIN_RE = re.compile(r"fleet start --address (\S+) --token ([0-9a-fA-F]+)")
STATUS_RE = re.compile(r"^\s*node\s+([0-9a-fA-F]+)\s+(\S+)\s+(ALIVE|DEAD.*?)\s*$")

# The transfer test's array: N bytes with a[i] == i % PERIOD. The period is
# prime so that chunks moved to a wrong power-of-two offset do not match.
N_BYTES = 500 * 1000 * 1000
PERIOD = 251
SLICE = (123_456_789, 1 << 20)


# --------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------


@dataclass
class Cluster:
    """The running three-host cluster: namespaces, head address and token."""

    net: nc.NetnsCluster
    address: str
    token: str

    def env(self) -> Dict[str, str]:
        """Extra environment of drivers and CLI calls: the cluster token."""
        return {"FLEET_CLUSTER_TOKEN": self.token}

    def driver(self, script: str, *args: str, timeout: float) -> Dict[str, Any]:
        """Runs `script` as a driver in flhost1 (argv[1] is the head address,
        then `args`) and returns the JSON of its ``RESULT`` line."""
        try:
            res = self.net.run_in(
                HEAD, [sys.executable, "-c", script, self.address, *args],
                env=self.env(), timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(
                f"driver did not finish within {timeout} s\nstdout:\n{e.output}\n"
                f"stderr:\n{e.stderr}\n{logs_tail(self.net)}"
            )
        for line in reversed(res.stdout.splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        pytest.fail(
            f"driver printed no RESULT line (exit {res.returncode})\nstdout:\n{res.stdout}\n"
            f"stderr:\n{res.stderr}\n{logs_tail(self.net)}"
        )

    def node_status(self, timeout: float = 20.0) -> List[Tuple[str, str]]:
        """(ip, "ALIVE" or "DEAD (reason)") per node line of ``fleet status``
        run in flhost1; AssertionError if the command fails."""
        res = self.net.run_in(
            HEAD, nc.fleet_cli("status", "--address", self.address),
            env=self.env(), timeout=timeout,
        )
        assert res.returncode == 0, (
            f"fleet status failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}"
        )
        nodes = []
        for line in res.stdout.splitlines():
            m = STATUS_RE.match(line)
            if m:
                nodes.append((m.group(2), m.group(3)))
        return nodes


def logs_tail(net: nc.NetnsCluster, lines: int = 20) -> str:
    """The last lines of every daemon log of every host (for failure messages)."""
    out = []
    for ns in net.hosts:
        logs = os.path.join(nc.state_dir(ns), "session_latest", "logs")
        try:
            names = sorted(os.listdir(logs))
        except OSError:
            continue
        for name in names:
            if not name.startswith("fleet-"):
                continue
            try:
                with open(os.path.join(logs, name), errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"--- {ns}: {name}\n" + "\n".join(tail))
    return "\n".join(out)


def _wait_all_alive(cluster: Cluster, timeout: float) -> None:
    """Waits until ``fleet status`` shows the three hosts ALIVE."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            nodes = cluster.node_status(timeout=max(1.0, deadline - time.monotonic()))
            last = nodes
            if {ip for ip, st in nodes if st == "ALIVE"} >= set(IPS.values()):
                return
        except (AssertionError, subprocess.TimeoutExpired) as e:
            last = e
        time.sleep(0.2)
    pytest.fail(
        f"the three hosts did not all show ALIVE in `fleet status` within {timeout} s; "
        f"last: {last}\n{logs_tail(cluster.net)}"
    )


def _start_checked(net: nc.NetnsCluster, ns: str, args: List[str]) -> str:
    """Runs ``fleet start ARGS`` in `ns`; returns its stdout, fails on an error."""
    try:
        res = net.run_in(ns, nc.fleet_cli("start", *args), timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`fleet start` in {ns} did not return within 60 s:\n{e.output}\n{e.stderr}")
    assert res.returncode == 0, (
        f"`fleet start {' '.join(args)}` in {ns} failed (exit {res.returncode}):\n"
        f"{res.stdout}\n{res.stderr}\n{logs_tail(net)}"
    )
    return res.stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three namespaces with fleet started on them by the CLI; on teardown
    ``fleet stop`` on each host, then no fleet process of the hosts may remain."""
    left: List[nc.FleetProcess] = []
    stop_problems: List[str] = []
    with nc.NetnsCluster(3) as net:
        try:
            out = _start_checked(net, HEAD, [
                "--head", "--port", str(PORT), "--node-ip-address", HEAD_IP, "--num-cpus", "2",
            ])
            m = JOIN_RE.search(out)
            assert m, (
                f"`fleet start --head` printed no `fleet start --address ... --token` line:\n{out}"
            )
            assert m.group(1) == ADDRESS, f"join line names {m.group(1)}, expected {ADDRESS}"
            token = m.group(2)
            for ns in ("flhost2", "flhost3"):
                host = ns.replace("fl", "")
                _start_checked(net, ns, [
                    "--address", ADDRESS, "--token", token, "--node-ip-address", IPS[ns],
                    "--num-cpus", "2", "--resources", json.dumps({host: 1}),
                ])
            c = Cluster(net=net, address=ADDRESS, token=token)
            _wait_all_alive(c, timeout=30)
            yield c
        finally:
            # Joined nodes first, the head (control store) last.
            for ns in reversed(net.hosts):
                try:
                    res = net.run_in(ns, nc.fleet_cli("stop"), timeout=40)
                    if res.returncode != 0:
                        stop_problems.append(
                            f"{ns}: exit {res.returncode}: {res.stdout}{res.stderr}"
                        )
                except subprocess.TimeoutExpired:
                    stop_problems.append(f"{ns}: `fleet stop` did not return within 40 s")
            deadline = time.monotonic() + 10
            while True:
                left = nc.fleet_processes(nc.STATE_ROOT)
                if not left or time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
    # (NetnsCluster's exit has killed the leftovers and deleted the namespaces.)
    assert not stop_problems, f"fleet stop failed: {stop_problems}"
    assert not left, "fleet processes outlived `fleet stop`:\n" + "\n".join(
        f"  pid {p.pid} ({p.tmpdir}): {p.cmdline}" for p in left
    )


# --------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------

SPREAD_SCRIPT = r"""
import json, sys, time
import fleet

fleet.init(address=sys.argv[1])

@fleet.remote(scheduling_strategy="SPREAD")
def where():
    time.sleep(0.01)
    return fleet.util.get_node_ip_address()

ips = fleet.get([where.remote() for _ in range(300)], timeout=90)
counts = {}
for ip in ips:
    counts[ip] = counts.get(ip, 0) + 1
print("RESULT " + json.dumps({"n": len(ips), "counts": counts}), flush=True)
fleet.shutdown()
"""

TRANSFER_SCRIPT = r"""
import hashlib, json, sys, time
import numpy as np
import fleet

N, PERIOD, START, LEN = (int(a) for a in sys.argv[2:6])
fleet.init(address=sys.argv[1])

def pattern(n):
    return np.resize(np.arange(PERIOD, dtype=np.uint8), n)

def digest(a):
    return {
        "dtype": str(a.dtype),
        "nbytes": int(a.nbytes),
        "sum": int(a.sum(dtype=np.uint64)),
        "head": a[:16].tolist(),
        "tail": a[-16:].tolist(),
        "slice_sha256": hashlib.sha256(a[START:START + LEN].tobytes()).hexdigest(),
    }

@fleet.remote(resources={"host2": 0.01}, num_returns=2)
def produce(n):
    return pattern(n), fleet.util.get_node_ip_address()

@fleet.remote(resources={"host3": 0.01})
def check(a):
    ok = a.dtype == np.uint8 and a.size == N and bool(np.array_equal(a, pattern(N)))
    return ok, fleet.util.get_node_ip_address(), digest(a)

arr_ref, ip_ref = produce.remote(N)
producer_ip = fleet.get(ip_ref, timeout=120)
t0 = time.monotonic()
a = fleet.get(arr_ref, timeout=120)
get_s = time.monotonic() - t0
driver = digest(a)
driver_equal = bool(np.array_equal(a, pattern(N)))
del a
ok3, consumer_ip, consumer = fleet.get(check.remote(arr_ref), timeout=120)
print("RESULT " + json.dumps({
    "producer_ip": producer_ip, "get_s": get_s,
    "driver": driver, "driver_equal": driver_equal,
    "consumer_ok": ok3, "consumer_ip": consumer_ip, "consumer": consumer,
}), flush=True)
fleet.shutdown()
"""

DEFAULT_TASKS_SCRIPT = r"""
import json, sys
import fleet

fleet.init(address=sys.argv[1])

@fleet.remote
def where(i):
    return i, fleet.util.get_node_ip_address()

out = fleet.get([where.remote(i) for i in range(50)], timeout=60)
print("RESULT " + json.dumps({"results": out}), flush=True)
fleet.shutdown()
"""


def _expected_digest() -> Dict[str, Any]:
    """What TRANSFER_SCRIPT's digest() must report for the pattern array."""
    import numpy as np

    q, r = divmod(N_BYTES, PERIOD)
    start, length = SLICE
    sl = (np.arange(start, start + length, dtype=np.int64) % PERIOD).astype(np.uint8)
    return {
        "dtype": "uint8",
        "nbytes": N_BYTES,
        "sum": q * (PERIOD * (PERIOD - 1) // 2) + r * (r - 1) // 2,
        "head": [i % PERIOD for i in range(16)],
        "tail": [i % PERIOD for i in range(N_BYTES - 16, N_BYTES)],
        "slice_sha256": hashlib.sha256(sl.tobytes()).hexdigest(),
    }


# --------------------------------------------------------------------------
# Tests (in this order: the failure test kills flhost3 and must be last)
# --------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_spread_runs_on_every_host(cluster: Cluster) -> None:
    """300 SPREAD tasks from a driver on flhost1 run on all three hosts."""
    out = cluster.driver(SPREAD_SCRIPT, timeout=150)
    assert out["n"] == 300
    assert set(out["counts"]) == set(IPS.values()), (
        f"SPREAD tasks ran on {out['counts']}, expected all of {sorted(IPS.values())}"
    )


@pytest.mark.timeout(300)
def test_large_object_transfer_between_hosts(cluster: Cluster) -> None:
    """A 500 MB array made on flhost2 reaches the driver on flhost1 and a task
    on flhost3 intact."""
    pytest.importorskip("numpy")
    out = cluster.driver(
        TRANSFER_SCRIPT, str(N_BYTES), str(PERIOD), str(SLICE[0]), str(SLICE[1]), timeout=270
    )
    expected = _expected_digest()
    assert out["producer_ip"] == IPS["flhost2"]
    assert out["driver"] == expected
    assert out["driver_equal"] is True
    assert out["consumer_ip"] == IPS["flhost3"]
    assert out["consumer"] == expected
    assert out["consumer_ok"] is True
    print(f"500 MB flhost2 -> flhost1 get: {out['get_s']:.2f} s "
          f"({N_BYTES / out['get_s'] / 1e9:.2f} GB/s)")


@pytest.mark.timeout(240)
def test_node_failure_detected_and_work_continues(cluster: Cluster) -> None:
    """SIGKILL of every fleet process on flhost3: `fleet status` shows the
    node DEAD within 10 s, and new work completes on the other hosts."""
    dead_ip = IPS["flhost3"]
    before = dict(cluster.node_status())
    assert before.get(dead_ip) == "ALIVE", f"flhost3 not ALIVE before the kill: {before}"
    victims = nc.fleet_processes(nc.state_dir("flhost3"))
    assert any("fleet-node" in p.cmdline for p in victims), (
        f"no fleet-node process with FLEET_TMPDIR={nc.state_dir('flhost3')}: {victims}"
    )

    t_kill = time.monotonic()
    nc.kill_fleet_processes(nc.state_dir("flhost3"))
    assert not nc.fleet_processes(nc.state_dir("flhost3")), "flhost3's processes survived SIGKILL"

    detected_after = None
    last: Any = None
    while time.monotonic() - t_kill < 30:
        try:
            nodes = cluster.node_status(timeout=10)
            last = nodes
            if any(ip == dead_ip and st.startswith("DEAD") for ip, st in nodes):
                detected_after = time.monotonic() - t_kill
                break
        except (AssertionError, subprocess.TimeoutExpired) as e:
            last = e
        time.sleep(0.2)
    assert detected_after is not None, (
        f"`fleet status` did not show {dead_ip} DEAD within 30 s of the kill; last: {last}"
    )
    assert detected_after <= 10.0, (
        f"{dead_ip} was shown DEAD only {detected_after:.1f} s after the kill (limit 10 s)"
    )

    out = cluster.driver(DEFAULT_TASKS_SCRIPT, timeout=120)
    results = out["results"]
    assert sorted(i for i, _ in results) == list(range(50))
    ran_on = {ip for _, ip in results}
    assert ran_on <= {IPS["flhost1"], IPS["flhost2"]}, f"tasks ran on {ran_on}"
