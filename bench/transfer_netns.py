"""Object transfer between two hosts against the raw TCP bandwidth of the link.

Usage (as root): ``python bench/transfer_netns.py [--tcp-gib 2] [--object-mb 500]
[--runs 3] [--tcp-only]``

Builds two "hosts" in Linux network namespaces (``tests/netns_cluster.py``:
flhost1 = 10.77.0.1 and flhost2 = 10.77.0.2 on a veth/bridge link), then:

1. veth TCP bandwidth: a receiver in flhost2 accepts one TCP connection and
   reads it with ``recv_into`` a 4 MiB buffer until EOF; a sender in flhost1
   sends ``--tcp-gib`` GiB from a preallocated buffer with ``sendall``.
   Bandwidth = bytes / (accept to EOF, seen by the receiver); median of runs.
2. fleet object transfer: ``fleet start --head`` in flhost1 and ``fleet start
   --address ... --token ...`` in flhost2 (with a custom resource ``src``);
   a driver in flhost1 has a task on flhost2 return a fresh ``--object-mb``
   MB numpy array, waits until it exists (``wait(fetch_local=False)``) and
   times the first ``fleet.get`` of it: one transfer. Median of runs.

Prints a table with both bandwidths, their ratio and the target (fleet
transfer >= 0.5 x the link's TCP bandwidth). A benchmark: exits 0 whatever
it measures, and says clearly what did not work. Takes well under 3 minutes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("fleet") is None:
    sys.path.insert(0, os.path.join(_REPO, "python"))
sys.path.insert(0, os.path.join(_REPO, "tests"))

import netns_cluster as nc  # noqa: E402

SRC, DST = "flhost1", "flhost2"  # the driver (and fleet head) / the object's producer
PORT = 6380
TCP_PORT = 5201
TARGET_RATIO = 0.5
JOIN_RE = re.compile(r"fleet start --address (\S+) --token ([0-9a-fA-F]+)")

RECEIVER = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(1)
srv.settimeout(60)
print("READY", flush=True)
conn, _ = srv.accept()
t0 = time.perf_counter()
conn.settimeout(60)
view = memoryview(bytearray(4 << 20))
total = 0
while True:
    n = conn.recv_into(view)
    if n == 0:
        break
    total += n
elapsed = time.perf_counter() - t0
conn.close()
srv.close()
print(f"RESULT {total} {elapsed}", flush=True)
"""

SENDER = r"""
import socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = 64 << 20
view = memoryview(bytearray(chunk))
s = socket.create_connection((host, port), timeout=60)
t0 = time.perf_counter()
sent = 0
while sent < total:
    n = min(chunk, total - sent)
    s.sendall(view[:n])
    sent += n
s.shutdown(socket.SHUT_WR)
s.recv(1)  # EOF once the receiver has read everything and closed
elapsed = time.perf_counter() - t0
s.close()
print(f"RESULT {sent} {elapsed}", flush=True)
"""

DRIVER = r"""
import json, sys, time
import numpy as np
import fleet

n, runs = int(sys.argv[2]), int(sys.argv[3])
fleet.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 30
while sum(1 for node in fleet.nodes() if node["Alive"]) < 2:
    if time.monotonic() > deadline:
        raise SystemExit("the second host's node did not join within 30 s")
    time.sleep(0.1)

@fleet.remote(resources={"src": 0.01})
def make(n, seed):
    return np.full(n, seed, dtype=np.uint8)

times = []
for i in range(runs):
    seed = 17 + i
    ref = make.remote(n, seed)
    ready, _ = fleet.wait([ref], num_returns=1, timeout=120, fetch_local=False)
    if not ready:
        raise SystemExit("the producer task did not finish within 120 s")
    t0 = time.perf_counter()
    a = fleet.get(ref, timeout=120)
    times.append(time.perf_counter() - t0)
    if a.nbytes != n or a[0] != seed or a[-1] != seed or a[n // 2] != seed:
        raise SystemExit(f"run {i}: wrong content ({a.nbytes} bytes, a[0]={a[0]})")
    del a, ref
print("RESULT " + json.dumps({"times": times}), flush=True)
fleet.shutdown()
"""


def _result_line(text: str) -> Optional[str]:
    """The payload of the last ``RESULT ...`` line of `text`, if any."""
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT "):
            return line[len("RESULT ") :]
    return None


def _wait_ready(proc: subprocess.Popen, timeout: float) -> None:
    """Waits for the receiver's READY line; RuntimeError if it does not come."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == "READY":
                return
            if not line:
                break
    raise RuntimeError("the TCP receiver did not start listening")


def measure_tcp(net: nc.NetnsCluster, nbytes: int, runs: int) -> List[float]:
    """GB/s of `runs` single-connection TCP transfers of `nbytes` SRC -> DST."""
    rates = []
    dst_ip = net.ip(DST)
    for _ in range(runs):
        recv = net.popen_in(
            DST, [sys.executable, "-c", RECEIVER, dst_ip, str(TCP_PORT)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            _wait_ready(recv, 30)
            send = net.run_in(
                SRC, [sys.executable, "-c", SENDER, dst_ip, str(TCP_PORT), str(nbytes)],
                timeout=120,
            )
            out, err = recv.communicate(timeout=60)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        got = _result_line(out)
        if send.returncode != 0 or got is None:
            raise RuntimeError(f"TCP run failed: sender {send.stderr.strip()} receiver {err}")
        total, seconds = got.split()
        if int(total) != nbytes:
            raise RuntimeError(f"receiver got {total} of {nbytes} bytes")
        rates.append(nbytes / float(seconds) / 1e9)
    return rates


def _fleet(net: nc.NetnsCluster, ns: str, args: List[str], env: Optional[Dict[str, str]] = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs the ``fleet`` CLI with `args` in `ns`."""
    return net.run_in(ns, nc.fleet_cli(*args), env=env, timeout=timeout)


def measure_fleet(net: nc.NetnsCluster, nbytes: int, runs: int) -> List[float]:
    """GB/s of `runs` first-``get``s of fresh `nbytes` arrays made on DST, by a
    driver on SRC; the cluster is started with the CLI and stopped after."""
    head_ip = net.ip(SRC)
    try:
        res = _fleet(net, SRC, ["start", "--head", "--port", str(PORT),
                                "--node-ip-address", head_ip, "--num-cpus", "2"])
        if res.returncode != 0:
            raise RuntimeError(f"fleet start --head failed: {res.stderr.strip()}")
        m = JOIN_RE.search(res.stdout)
        if not m:
            raise RuntimeError("`fleet start --head` printed no `fleet start --address ... "
                               "--token ...` line (multi-node support missing?)")
        address, token = m.group(1), m.group(2)
        res = _fleet(net, DST, ["start", "--address", address, "--token", token,
                                "--node-ip-address", net.ip(DST), "--num-cpus", "2",
                                "--resources", json.dumps({"src": 1})])
        if res.returncode != 0:
            raise RuntimeError(f"fleet start --address failed: {res.stderr.strip()}")
        try:
            drv = net.run_in(SRC, [sys.executable, "-c", DRIVER, address, str(nbytes), str(runs)],
                             env={"FLEET_CLUSTER_TOKEN": token}, timeout=150)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"the transfer driver did not finish within 150 s: {e.stderr}")
        got = _result_line(drv.stdout)
        if drv.returncode != 0 or got is None:
            tail = "\n".join(drv.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"the transfer driver failed (exit {drv.returncode}):\n{tail}")
        return [nbytes / t / 1e9 for t in json.loads(got)["times"]]
    finally:
        for ns in (DST, SRC):
            try:
                _fleet(net, ns, ["stop"], timeout=30)
            except subprocess.TimeoutExpired:
                print(f"warning: `fleet stop` in {ns} did not return within 30 s", file=sys.stderr)


def _fmt(rates: Optional[List[float]]) -> Tuple[str, str]:
    """(median, all runs) of `rates` as text; n/a when missing."""
    if not rates:
        return "n/a", ""
    return f"{statistics.median(rates):.2f} GB/s", ", ".join(f"{r:.2f}" for r in rates)


def report(tcp: Optional[List[float]], fl: Optional[List[float]], args: argparse.Namespace,
           errors: List[str]) -> None:
    """Prints the results table (and what failed)."""
    tcp_med, tcp_runs = _fmt(tcp)
    fl_med, fl_runs = _fmt(fl)
    ratio: Any = None
    if tcp and fl:
        ratio = statistics.median(fl) / statistics.median(tcp)
    rows = [
        (f"veth TCP, {args.tcp_gib:g} GiB, 1 conn", tcp_med, tcp_runs),
        (f"fleet get, {args.object_mb} MB numpy", fl_med, fl_runs),
        ("ratio fleet / TCP", "n/a" if ratio is None else f"{ratio:.2f}", ""),
        ("target", f">= {TARGET_RATIO:.2f}", ""),
    ]
    print()
    print(f"== transfer between network namespaces ({SRC} <- {DST}), median of {args.runs} runs")
    print(f"{'metric':36} {'median':>12}   runs (GB/s)")
    for name, value, runs in rows:
        print(f"{name:36} {value:>12}   {runs}")
    if ratio is None:
        verdict = "NOT MEASURED"
    elif ratio >= TARGET_RATIO:
        verdict = f"MET ({ratio:.2f} >= {TARGET_RATIO})"
    else:
        verdict = f"NOT MET ({ratio:.2f} < {TARGET_RATIO})"
    print(f"result: {verdict}")
    for e in errors:
        print(f"error: {e}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; always returns 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tcp-gib", type=float, default=2.0, help="GiB per TCP run (default 2)")
    p.add_argument("--object-mb", type=int, default=500, help="MB per object (default 500)")
    p.add_argument("--runs", type=int, default=3, help="runs of each measurement (default 3)")
    p.add_argument("--tcp-only", action="store_true", help="measure only the TCP bandwidth")
    args = p.parse_args(argv)

    ok, why = nc.netns_supported()
    if not ok:
        print(f"transfer_netns: not run: {why}")
        return 0
    tcp: Optional[List[float]] = None
    fl: Optional[List[float]] = None
    errors: List[str] = []
    t0 = time.monotonic()
    try:
        with nc.NetnsCluster(2) as net:
            try:
                tcp = measure_tcp(net, int(args.tcp_gib * (1 << 30)), args.runs)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                errors.append(f"TCP measurement: {e}")
            if args.tcp_only:
                errors.append("fleet transfer not measured (--tcp-only)")
            else:
                try:
                    fl = measure_fleet(net, args.object_mb * 1000 * 1000, args.runs)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    errors.append(f"fleet transfer: {e}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        errors.append(f"namespace setup: {e}")
    report(tcp, fl, args, errors)
    print(f"(took {time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
