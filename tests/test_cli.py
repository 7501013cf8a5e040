"""The command line: `fleet start --head`, `fleet status`, `fleet stop`.

Ray's equivalents: `ray start --head` (prints how to connect; drivers on the
machine then join with ray.init(address="auto")), `ray status` (nodes and
resources), `ray stop` (ends the processes started by `ray start`).

The CLI runs as `python -m fleet.scripts ...`, with FLEET_TMPDIR pointing at
a private directory (so the test neither sees nor disturbs other clusters on
the machine) and a free control-store port.
"""

import json
import os
import re
import shutil
import socket
import sys
import tempfile

import pytest

from fleet_test_utils import Proc, fleet_env, kill_leftovers, run_argv, run_python, wait_dead

pytest.importorskip("fleet.scripts")

pytestmark = pytest.mark.timeout(90)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(env, *args, timeout=30):
    res = run_argv([sys.executable, "-m", "fleet.scripts", *args], timeout, env)
    return res.returncode, res.stdout, res.stderr


def _daemons_of(port):
    """fleet-gcs / fleet-node processes whose command line names `port`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in args if a]
        if not argv:
            continue
        exe = os.path.basename(argv[0])
        if exe == "fleet-gcs" and str(port) in argv:
            found.append(Proc(int(entry), "fleet-gcs"))
        elif exe == "fleet-node" and any(a.endswith(f":{port}") for a in argv):
            found.append(Proc(int(entry), "fleet-node"))
    return [p for p in found if p.alive()]


DRIVER = """
import json, os
import fleet
fleet.init(address="auto")

@fleet.remote
def f(x):
    return x * x, os.getpid()

vals = fleet.get([f.remote(i) for i in range(20)], timeout=30)
from fleet._private import state
print("RESULT " + json.dumps({
    "sum": sum(v for v, _ in vals),
    "cpus": fleet.cluster_resources().get("CPU"),
    "node_id": fleet.get_runtime_context().get_node_id(),
    "workers": list(state.core.node_stats()["worker_pids"]),
}))
fleet.shutdown()
"""


@pytest.fixture
def cli_env():
    tmpdir = tempfile.mkdtemp(prefix="flcli", dir="/tmp")  # short: unix socket paths
    env = fleet_env({"FLEET_TMPDIR": tmpdir})
    port = _free_port()
    try:
        yield env, port
    finally:
        procs = _daemons_of(port)
        if procs:
            _cli(env, "stop")
            left = wait_dead(procs, 5)
            kill_leftovers(left)
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_start_status_stop(cli_env):
    env, port = cli_env
    rc, out, err = _cli(env, "start", "--head", "--num-cpus", "2", "--port", str(port))
    assert rc == 0, out + err
    # An address line: host:port of the control store.
    addresses = re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}:\d+\b", out)
    assert addresses, out
    assert any(a.endswith(f":{port}") for a in addresses), out
    daemons = _daemons_of(port)
    assert {p.what for p in daemons} == {"fleet-gcs", "fleet-node"}, daemons

    # A driver on this machine joins with address="auto" and runs tasks.
    res = run_python(DRIVER, timeout=60, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    info = json.loads(line[len("RESULT ") :])
    assert info["sum"] == sum(i * i for i in range(20))
    assert info["cpus"] == 2
    workers = [Proc(pid, "worker") for pid in info["workers"]]

    # The cluster outlives the driver.
    assert all(p.alive() for p in daemons)

    rc, out, err = _cli(env, "status")
    assert rc == 0, out + err
    assert "CPU" in out, out
    assert info["node_id"][:12] in out or "127.0.0.1" in out, out
    assert "Object store (this node)" in out and "MiB used of" in out, out

    rc, out, err = _cli(env, "stop")
    assert rc == 0, out + err
    left = wait_dead(daemons + workers, 10)
    kill_leftovers(left)
    assert not left, [(p, p.cmdline()) for p in left]
    assert _daemons_of(port) == []


def test_second_start_fails_while_running(cli_env):
    env, port = cli_env
    rc, out, err = _cli(env, "start", "--head", "--num-cpus", "1", "--port", str(port))
    assert rc == 0, out + err
    rc2, out2, err2 = _cli(env, "start", "--head", "--num-cpus", "1", "--port", str(_free_port()))
    assert rc2 != 0, out2 + err2
    rc, out, err = _cli(env, "stop")
    assert rc == 0


def test_stop_and_status_without_a_cluster(cli_env):
    env, _ = cli_env
    rc, out, err = _cli(env, "stop")
    assert rc == 0, out + err
    rc, out, err = _cli(env, "status")
    assert rc != 0 or "No fleet cluster" in out


def test_driver_with_another_version_is_refused_naming_both(cli_env):
    # Ray users hit version skew at join time with cryptic errors; fleet
    # refuses the handshake and says which versions differ.
    env, port = cli_env
    rc, out, err = _cli(env, "start", "--head", "--num-cpus", "1", "--object-store-memory",
                        str(100_000_000), "--port", str(port))
    assert rc == 0, out + err
    script = (
        "import fleet\n"
        "try:\n"
        "    fleet.init(address='auto')\n"
        "    print('CONNECTED')\n"
        "except Exception as e:\n"
        "    print('REFUSED', type(e).__name__, e)\n"
    )
    other = dict(env, FLEET_VERSION_TAG="fleet 0.0.1, Python 3.0.0")
    res = run_argv([sys.executable, "-c", script], 60, other)
    assert "REFUSED" in res.stdout, res.stdout + res.stderr
    assert "fleet 0.0.1, Python 3.0.0" in res.stdout, res.stdout
    from fleet._private.version import version_tag

    assert version_tag() in res.stdout, res.stdout  # the cluster's own version, named too
    # The cluster is unharmed: a driver of the same version still works.
    res = run_argv([sys.executable, "-c", script], 60, env)
    assert "CONNECTED" in res.stdout, res.stdout + res.stderr
    rc, out, err = _cli(env, "stop")
    assert rc == 0, out + err


JOIN_RE = re.compile(r"fleet start --address (\S+) --token ([0-9a-f]+)")


def _status_nodes(env, address, token):
    """(ip, state) per node line of `fleet status`."""
    rc, out, err = _cli(dict(env, FLEET_CLUSTER_TOKEN=token), "status", "--address", address)
    assert rc == 0, out + err
    return re.findall(r"^\s*node [0-9a-f]+\s+(\S+)\s+(ALIVE|DEAD)", out, re.M), out


def test_join_with_the_printed_command(cli_env):
    # `fleet start --head` prints the exact join command with the token; a
    # second node (here: another FLEET_TMPDIR on this machine) joins with it.
    # A missing or wrong token, or another version, is refused with a clear
    # message; `fleet stop` on the joined machine stops only its node.
    env, port = cli_env
    rc, out, err = _cli(env, "start", "--head", "--num-cpus", "1", "--object-store-memory",
                        str(100_000_000), "--port", str(port))
    assert rc == 0, out + err
    m = JOIN_RE.search(out)
    assert m, out
    address, token = m.group(1), m.group(2)
    assert address.endswith(f":{port}"), out

    other_dir = tempfile.mkdtemp(prefix="flcl2", dir="/tmp")
    other = dict(env, FLEET_TMPDIR=other_dir)
    other.pop("FLEET_CLUSTER_TOKEN", None)
    try:
        common = ["start", "--address", address, "--num-cpus", "1",
                  "--object-store-memory", str(100_000_000)]
        rc, out, err = _cli(other, *common)
        assert rc == 2 and "token" in err, out + err
        rc, out, err = _cli(other, *common, "--token", "0" * 32)
        assert rc == 1 and "cannot join" in err, out + err
        skewed = dict(other, FLEET_VERSION_TAG="fleet 0.0.1, Python 3.0.0")
        rc, out, err = _cli(skewed, *common, "--token", token)
        assert rc == 1 and "fleet 0.0.1, Python 3.0.0" in err, out + err
        from fleet._private.version import version_tag

        assert version_tag() in err, err
        assert len(_status_nodes(env, address, token)[0]) == 1  # nothing joined

        token_file = os.path.join(other_dir, "token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        rc, out, err = _cli(other, *common, "--token-file", token_file)
        assert rc == 0, out + err
        nodes, text = _status_nodes(env, address, token)
        assert [s for _, s in nodes] == ["ALIVE", "ALIVE"], text
        assert "2/2 CPU" not in text and "CPU" in text, text

        rc, out, err = _cli(other, "stop")
        assert rc == 0, out + err
        nodes, text = _status_nodes(env, address, token)
        assert sorted(s for _, s in nodes) == ["ALIVE", "DEAD"], text
    finally:
        _cli(other, "stop")
        shutil.rmtree(other_dir, ignore_errors=True)
    rc, out, err = _cli(env, "stop")
    assert rc == 0, out + err
