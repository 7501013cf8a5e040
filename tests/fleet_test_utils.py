"""Helpers shared by the test modules (processes, subprocess drivers, polling)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fleet_importable() -> bool:
    spec = importlib.util.find_spec("fleet")
    # (a bare "fleet" directory, e.g. /tmp/fleet, would be a namespace package)
    return spec is not None and spec.origin is not None


# Use an installed fleet (or one on PYTHONPATH); otherwise this checkout's python/.
if not _fleet_importable():
    sys.path.insert(0, os.path.join(REPO, "python"))


def fleet_package_parent() -> str:
    """The directory holding the fleet package the tests import."""
    import fleet

    return os.path.dirname(os.path.dirname(os.path.abspath(fleet.__file__)))


# --------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------


def _proc_stat(pid: int) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces; it is enclosed in parentheses.
    rest = data[data.rfind(")") + 2 :].split()
    return rest  # rest[0] is the state (field 3); rest[19] the start time (field 22)


def proc_start_time(pid: int) -> Optional[str]:
    st = _proc_stat(pid)
    return st[19] if st else None


class Proc:
    """A process remembered with its start time, so pid reuse is not mistaken for it."""

    def __init__(self, pid: int, what: str = ""):
        self.pid = pid
        self.what = what
        self.start = proc_start_time(pid)

    def alive(self) -> bool:
        st = _proc_stat(self.pid)
        if st is None:
            return False
        if st[0] in ("Z", "X"):  # a zombie has exited (nobody reaped it yet)
            return False
        return self.start is None or st[19] == self.start

    def cmdline(self) -> str:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"Proc({self.pid}, {self.what!r})"


def cluster_procs() -> List[Proc]:
    """The processes of the cluster this driver started: daemons and workers."""
    from fleet._private import state

    procs = []
    if state.cluster is not None:
        names = ["fleet-gcs", "fleet-node"]
        for i, pid in enumerate(state.cluster.pids):
            procs.append(Proc(pid, names[i] if i < len(names) else "daemon"))
    stats = state.core.node_stats()
    for pid in stats["worker_pids"]:
        procs.append(Proc(pid, "worker"))
    if stats.get("zygote_pid"):
        procs.append(Proc(stats["zygote_pid"], "worker zygote"))
    return procs


def wait_until(cond: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_dead(procs: Iterable[Proc], timeout: float) -> List[Proc]:
    """Waits up to `timeout` for all `procs` to exit; returns those still alive."""
    procs = list(procs)
    wait_until(lambda: not any(p.alive() for p in procs), timeout)
    return [p for p in procs if p.alive()]


def shutdown_checked(timeout: float = 10.0) -> List[Proc]:
    """fleet.shutdown(), then waits for the cluster's processes to exit;
    kills and returns those that outlived it (the caller fails or warns)."""
    import fleet

    try:
        procs = cluster_procs() if fleet.is_initialized() else []
    except Exception:
        procs = []
    fleet.shutdown()
    left = wait_dead(procs, timeout)
    if left:
        kill_leftovers(left)
    return left


@contextlib.contextmanager
def fresh_cluster(**init_kwargs: Any) -> Iterator[Any]:
    """A new local cluster (`fleet.init(**init_kwargs)`) for a fixture; fails
    the test if any of its processes outlive the shutdown afterwards."""
    import pytest

    import fleet

    if fleet.is_initialized():
        fleet.shutdown()
    ctx = fleet.init(**init_kwargs)
    try:
        yield ctx
    finally:
        left = shutdown_checked(10.0)
        if left:
            pytest.fail(f"processes of the cluster outlived shutdown: {left}")


def kill_leftovers(procs: Iterable[Proc]) -> None:
    """Last-resort cleanup so a failing test does not leave processes behind."""
    import signal

    for p in procs:
        if p.alive():
            try:
                os.kill(p.pid, signal.SIGKILL)
            except OSError:
                pass


class FdRecorder:
    """Records what this process writes to fds 1 and 2, from any thread.

    For output that fleet's core writes straight to the driver's fds from its
    C++ io thread (worker output with its "(pid=N)" prefix, warnings), at a
    moment the test does not control. pytest's ``capfd`` loses such writes:
    ``readouterr()`` does seek(0), read(), seek(0), truncate() on the file
    behind the fd, so a write from another thread that lands inside that
    sequence is thrown away, and a test polling ``readouterr()`` until a line
    shows up then waits for it in vain. Here the fds point to files opened
    with O_APPEND, read back through a separate descriptor and never
    truncated, so nothing written can be lost. Leaving the ``with`` block
    restores the fds and passes the recorded text on to them (pytest's
    capture, or the terminal with -s); ``out``/``err`` stay readable.

    Use it inside the test function, not in a fixture: pytest re-points fds 1
    and 2 at its own capture files between the setup, call and teardown phases.
    """

    def __init__(self, directory):
        self._saved: Dict[int, int] = {}
        self._paths: Dict[int, str] = {}
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            path = os.path.join(directory, f"fd{fd}.txt")
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._saved[fd] = os.dup(fd)
            os.dup2(f, fd)
            os.close(f)
            self._paths[fd] = path

    def _read(self, fd: int) -> str:
        with open(self._paths[fd], "rb") as f:
            return f.read().decode(errors="replace")

    @property
    def out(self) -> str:
        """Everything written to fd 1 since the recorder started."""
        return self._read(1)

    @property
    def err(self) -> str:
        """Everything written to fd 2 since the recorder started."""
        return self._read(2)

    def __enter__(self) -> FdRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
            data = self._read(fd).encode()
            while data:
                try:
                    n = os.write(fd, data)
                except OSError:
                    break
                data = data[n:]
        self._saved.clear()


def fleet_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a subprocess that imports fleet from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = fleet_package_parent() + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("FLEET_ADDRESS", None)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_python(
    code: str, timeout: float = 60, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; raises AssertionError on timeout."""
    return run_argv([sys.executable, "-c", code], timeout, env, cwd)


def run_argv(
    argv: List[str],
    timeout: float = 60,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[str] = None,
) -> subprocess.CompletedProcess:
    """Runs `argv` (stdout/stderr to files, never pipes that a detached
    grandchild could keep open); raises AssertionError on timeout."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(
            argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env or fleet_env(), cwd=cwd
        )
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
        out.seek(0)
        err.seek(0)
        res = subprocess.CompletedProcess(
            p.args, rc, out.read().decode(errors="replace"), err.read().decode(errors="replace")
        )
    if rc is None:
        raise AssertionError(
            f"`{' '.join(argv)}` timed out after {timeout} s\n"
            f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        )
    return res


def read_json_line(text: str, prefix: str) -> dict:
    for line in text.splitlines():
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    raise AssertionError(f"no line starting with {prefix!r} in:\n{text}")
