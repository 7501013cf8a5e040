"""Ray's single-node scalability envelope, fleet and Ray 2.60 side by side.

The dimensions are those of Ray's single-node envelope (many queued tasks, one
task with many ObjectRef arguments, one task with many returns, one get of
many objects, one large numpy object, many actors), sized for this 2-core,
24 GiB machine. Each (row, backend) runs in a fresh process on a fresh local
cluster, so one row's leftovers never weigh on the next; the time excludes
init. "plain Python s" is the same Python work done in one process without
any framework (building, pickling and unpickling the values, or copying the
array into fresh shared pages): where fleet is near it, the row is bound by
work every runtime must do. "peak MB" is the machine's memory in use at the
row's peak (from /proc/meminfo's MemAvailable, sampled every 20 ms) less what
was in use just after init: it counts every process of the cluster and
shared memory once, but a short peak can fall between samples. "Σ RSS
peaks" adds up each cluster process's own peak (VmHWM) less its RSS at the
start of the row: it misses no peak, but counts shared pages in every
process that touched them, and peaks that did not coincide.

Ray runs in its own virtualenv (RAY_PYTHON, default /opt/rayvenv/bin/python).
Where Ray would need more than 10 minutes for a row (or more memory than this
machine has), pass a smaller --ray-scale for it; the table shows the count
each backend ran and the time per item.

    python bench/scalability.py                     # every row, both backends
    python bench/scalability.py --rows queued_tasks --ray-scale queued_tasks=0.1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

RAY_PYTHON = os.environ.get("RAY_PYTHON", "/opt/rayvenv/bin/python")
GIB = 1 << 30

# row -> (what it measures, full count, unit of the count)
ROWS = {
    "queued_tasks": ("tasks queued on one node, then all got", 1_000_000, "tasks"),
    "many_args": ("one task with N ObjectRef arguments", 10_000, "args"),
    "many_returns": ("one task with N returns (10k-int lists)", 3_000, "returns"),
    "get_many": ("get of N refs at once (lists, then numpy)", 10_000, "refs"),
    "large_object": ("one numpy object put, read by a task", 8 * GIB, "bytes"),
    "many_actors": ("actors created (num_cpus=0), each called once", 1_000, "actors"),
}


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


class _PeakMemory:
    """Samples MemAvailable in a thread; `peak` is the largest drop from the start."""

    def __init__(self) -> None:
        self.base = _available_bytes()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.base - _available_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._t.join(timeout=5)
        self.peak = max(self.peak, self.base - _available_bytes())
        return self.peak


def _descendants_status() -> dict:
    """pid -> {field: kB} of /proc/PID/status for this process and every
    process under it (the local cluster: daemons, zygote, workers)."""
    parent, status = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        parent[int(d)] = int(fields.get("PPid", "0"))
        status[int(d)] = {k: int(v.split()[0]) for k, v in fields.items()
                          if k in ("VmHWM", "VmRSS")}
    me, out = os.getpid(), {}
    for pid in status:
        p = pid
        while p and p != me:
            p = parent.get(p, 0)
        if p == me:
            out[pid] = status[pid]
    return out


def _row(lib, row: str, n: int) -> None:
    """Runs one row with count n on an initialised `lib` (fleet or ray)."""
    import numpy as np

    if row == "queued_tasks":

        @lib.remote(num_cpus=1)
        def noop():
            return None

        refs = [noop.remote() for _ in range(n)]
        for i in range(0, n, 10_000):
            assert all(v is None for v in lib.get(refs[i : i + 10_000], timeout=3600))
    elif row == "many_args":

        @lib.remote
        def total(*args):
            return sum(len(a) for a in args)

        refs = [lib.put([1] * 1000) for _ in range(n)]
        assert lib.get(total.remote(*refs), timeout=3600) == 1000 * n
    elif row == "many_returns":

        @lib.remote(num_returns=n)
        def many():
            return tuple(list(range(10_000)) for _ in range(n))

        refs = many.remote()
        assert len(refs) == n
        for ref in refs:
            assert lib.get(ref, timeout=3600)[-1] == 9_999
    elif row == "get_many":
        refs = [lib.put(list(range(10_000))) for _ in range(n)]
        values = lib.get(refs, timeout=3600)
        assert len(values) == n and all(v[-1] == 9_999 for v in values)
        del values
        refs = [lib.put(np.arange(10_000)) for _ in range(n)]
        arrays = lib.get(refs, timeout=3600)
        assert len(arrays) == n and all(int(a[-1]) == 9_999 for a in arrays)
    elif row == "large_object":

        @lib.remote
        def ends(a):
            return int(a[0]) + int(a[-1]) + len(a)

        a = np.zeros(n, dtype=np.int8)
        a[-1] = 1
        ref = lib.put(a)
        del a
        assert lib.get(ends.remote(ref), timeout=3600) == n + 1
        big = lib.get(ref, timeout=3600)
        assert int(big[-1]) == 1
    elif row == "many_actors":

        @lib.remote(num_cpus=0)
        class Member:
            def ping(self, i):
                return i

        actors = [Member.remote() for _ in range(n)]
        assert lib.get([a.ping.remote(i) for i, a in enumerate(actors)], timeout=3600) == list(
            range(n)
        )
    else:
        raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")


def _floor(row: str, n: int) -> None:
    """The same Python work without any framework, in one process: building
    and (un)pickling the values, or copying the array into fresh shared memory."""
    import mmap
    import pickle

    import numpy as np

    dumps, loads = pickle.dumps, pickle.loads
    # Each value lives as the row's own code keeps it: pickled once made (a
    # put, a return), unpickled where it is read.
    if row == "many_args":
        blobs = [dumps([1] * 1000, protocol=5) for _ in range(n)]
        assert sum(len(loads(b)) for b in blobs) == 1000 * n
    elif row == "many_returns":
        values = tuple(list(range(10_000)) for _ in range(n))  # the task's return value
        blobs = [dumps(v, protocol=5) for v in values]
        del values
        assert all(loads(b)[-1] == 9_999 for b in blobs)
    elif row == "get_many":
        blobs = [dumps(list(range(10_000)), protocol=5) for _ in range(n)]
        values = [loads(b) for b in blobs]
        assert all(v[-1] == 9_999 for v in values)
        del values, blobs
        blobs = [dumps(np.arange(10_000), protocol=5) for _ in range(n)]
        arrays = [loads(b) for b in blobs]
        assert all(int(a[-1]) == 9_999 for a in arrays)
    elif row == "large_object":
        a = np.zeros(n, dtype=np.int8)
        a[-1] = 1
        shm = mmap.mmap(-1, n)  # fresh shared pages, as an object store's
        np.frombuffer(shm, dtype=np.int8)[:] = a
        assert shm[n - 1] == 1
    else:
        raise ValueError(f"no floor for {row!r}")


# Rows with a plain-Python counterpart (see _floor).
FLOOR_ROWS = ("many_args", "many_returns", "get_many", "large_object")


def run_one(backend: str, row: str, n: int) -> dict:
    """Runs one row on a fresh cluster of `backend`; returns its measurements."""
    if backend == "floor":
        start = time.perf_counter()
        _floor(row, n)
        return {"backend": backend, "row": row, "n": n, "seconds": time.perf_counter() - start}
    if backend == "ray":
        import ray as lib
    else:
        import fleet as lib
    kwargs = {"num_cpus": 2}
    if row == "large_object":
        kwargs["object_store_memory"] = n + 2 * GIB
    lib.init(**kwargs)
    try:
        time.sleep(1.0)  # let prestarted workers settle before the baseline
        before = _descendants_status()
        mem = _PeakMemory()
        start = time.perf_counter()
        _row(lib, row, n)
        seconds = time.perf_counter() - start
        peak = mem.stop()
        after = _descendants_status()
    finally:
        lib.shutdown()
    # Each process's peak RSS during its life, less what it held at the
    # baseline (processes that ended during the row are not counted).
    rss_peaks = sum(
        max(0, st.get("VmHWM", 0) - before.get(pid, {}).get("VmRSS", 0))
        for pid, st in after.items()
    )
    return {"backend": backend, "row": row, "n": n, "seconds": seconds, "peak_bytes": peak,
            "rss_peak_bytes": rss_peaks * 1024}


def _spawn(backend: str, row: str, n: int, timeout: float) -> dict:
    python = RAY_PYTHON if backend == "ray" else sys.executable
    cmd = [python, os.path.abspath(__file__), "--one", backend, row, str(n)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "row": row, "n": n, "error": f"over {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    error = " | ".join(tail) or f"rc {p.returncode}"
    return {"backend": backend, "row": row, "n": n, "error": error}


def _fmt_count(n: int, unit: str) -> str:
    if unit == "bytes":
        return f"{n / GIB:.1f} GiB"
    return f"{n:,}"


def _cell(v: dict, key: str, factor: float, fmt: str) -> str:
    return fmt.format(v[key] * factor) if key in v else v.get("error", "-")


def _per_item(v: dict, unit: str) -> str:
    if "seconds" not in v or unit == "bytes":
        return ""
    return f"{v['seconds'] / v['n'] * 1e6:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
    p.add_argument("--backends", default="fleet,ray,floor",
                   help="fleet, ray, and floor (the same Python work without a framework)")
    p.add_argument("--scale", type=float, default=1.0, help="scale every count (quick runs)")
    p.add_argument("--ray-scale", action="append", default=[],
                   help="ROW=F: run Ray on F times the count for that row (say so in the table)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per (row, backend)")
    p.add_argument("--one", nargs=3, metavar=("BACKEND", "ROW", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        backend, row, n = args.one
        print(json.dumps(run_one(backend, row, int(n))), flush=True)
        return 0
    ray_scale = {}
    for item in args.ray_scale:
        row, _, f = item.partition("=")
        ray_scale[row] = float(f)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = {}
    for row in rows:
        desc, full, unit = ROWS[row]
        for backend in backends:
            if backend == "floor" and row not in FLOOR_ROWS:
                continue
            scale = args.scale * (ray_scale.get(row, 1.0) if backend == "ray" else 1.0)
            n = max(1, int(full * scale))
            r = _spawn(backend, row, n, args.timeout)
            results[(row, backend)] = r
            shown = f"{r['seconds']:.2f} s" if "seconds" in r else r["error"]
            print(f"  {row} {backend} n={n}: {shown}", file=sys.stderr, flush=True)
    print()
    print("| dimension | count (fleet / Ray) | fleet s | Ray s | fleet µs/item | Ray µs/item "
          "| speed-up | fleet peak MB | Ray peak MB | fleet Σ RSS peaks MB | Ray Σ RSS peaks MB "
          "| plain Python s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        desc, _, unit = ROWS[row]
        f = results.get((row, "fleet"), {})
        r = results.get((row, "ray"), {})
        fl = results.get((row, "floor"), {})
        print("| " + " | ".join([
            desc,
            " / ".join(_fmt_count(v["n"], unit) if "n" in v else "-" for v in (f, r)),
            _cell(f, "seconds", 1, "{:.2f}"),
            _cell(r, "seconds", 1, "{:.2f}"),
            _per_item(f, unit),
            _per_item(r, unit),
            # Compared per item when the counts differ (--ray-scale).
            f"{(r['seconds'] / r['n']) / (f['seconds'] / f['n']):.1f}x"
            if "seconds" in f and "seconds" in r else "n/a",
            _cell(f, "peak_bytes", 1e-6, "{:.0f}"),
            _cell(r, "peak_bytes", 1e-6, "{:.0f}"),
            _cell(f, "rss_peak_bytes", 1e-6, "{:.0f}"),
            _cell(r, "rss_peak_bytes", 1e-6, "{:.0f}"),
            _cell(fl, "seconds", 1, "{:.2f}") if fl else "",
        ]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
