"""``fleet microbenchmark``: Ray's ``ray microbenchmark`` workloads, run on fleet.

The workloads and metric names are those of Ray's ``ray/_private/ray_perf.py``
(tasks, objects and actors), and the harness follows
Ray's ``timeit`` (``ray/_private/ray_microbenchmark_helpers.py``): warm up, then
several timed trials, reporting ``name per second MEAN +- STD``. Beside them it
measures ``init()`` time to ready, an idle worker's and an idle actor's
memory, a 100k-task submission with the driver's memory before and after, and
how fast 1,000 actors are created and answer a first call. The object-store
group (``--objects`` runs only it) runs on its own cluster with
``--object-store-mb`` of store: ray_perf.py's put/get workloads, plus the get
of an 800 MB array and this machine's single-thread memcpy beside "single
client put gigabytes", with their targets.

Every workload is written once against an ``api`` module (``fleet`` or
``ray``). ``--compare-ray`` runs this same file under Ray's interpreter in a
child process (``--_child-api ray``); the child prints its results as one JSON
line. ``--compare-stdlib`` runs the task workloads on
``concurrent.futures.ProcessPoolExecutor`` and ``multiprocessing.Pool``.

This module imports only the standard library at import time: fleet's workers
import it to run its remote functions, and Ray's interpreter runs it without
fleet installed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import importlib
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

# Metric names, exactly as ray_perf.py prints them.
GET_CALLS = "single client get calls (Plasma Store)"
PUT_CALLS = "single client put calls (Plasma Store)"
TASKS_AND_GET_BATCH = "single client tasks and get batch"
WAIT_1K_REFS = "single client wait 1k refs"
TASKS_SYNC = "single client tasks sync"
TASKS_ASYNC = "single client tasks async"
ACTOR_SYNC = "1:1 actor calls sync"
ACTOR_ASYNC = "1:1 actor calls async"
ACTOR_CONCURRENT = "1:1 actor calls concurrent"
ACTOR_1N_ASYNC = "1:n actor calls async"
ACTOR_NN_ASYNC = "n:n actor calls async"
ACTOR_NN_ARG_ASYNC = "n:n actor calls with arg async"
ASYNC_ACTOR_SYNC = "1:1 async-actor calls sync"
ASYNC_ACTOR_ASYNC = "1:1 async-actor calls async"
ASYNC_ACTOR_ARGS_ASYNC = "1:1 async-actor calls with args async"
MULTI_CLIENT_TASKS = "multi client tasks async"
ACTOR_METRICS = (
    ACTOR_SYNC, ACTOR_ASYNC, ACTOR_CONCURRENT, ACTOR_1N_ASYNC, ACTOR_NN_ASYNC,
    ACTOR_NN_ARG_ASYNC, ASYNC_ACTOR_SYNC, ASYNC_ACTOR_ASYNC, ASYNC_ACTOR_ARGS_ASYNC,
    MULTI_CLIENT_TASKS,
)
MULTI_PUT_CALLS = "multi client put calls (Plasma Store)"
PUT_GIGABYTES = "single client put gigabytes"
MULTI_PUT_GIGABYTES = "multi client put gigabytes"
GET_10K_REFS = "single client get object containing 10k refs"
# Not in ray_perf.py: a get of the large array, and this host's memcpy beside the put.
GET_LARGE = "single client get 800 MB array (ms)"
MEMCPY = "single thread memcpy gigabytes"
# The object-store group (--objects), run on its own cluster with
# --object-store-mb of store, in ray_perf.py's order.
OBJECT_METRICS = (
    GET_CALLS, PUT_CALLS, MULTI_PUT_CALLS, PUT_GIGABYTES, MULTI_PUT_GIGABYTES, GET_10K_REFS,
    GET_LARGE, MEMCPY,
)
# Targets printed beside the object-store results.
PUT_VS_MEMCPY_TARGET = 0.7  # put GB/s over this process's warm memcpy GB/s, at least
GET_LARGE_TARGET_MS = 1.0  # get of the large array (a view, not a copy), at most
VS_RAY_TARGETS = ((MULTI_PUT_GIGABYTES, 4.0), (GET_10K_REFS, 4.0))  # fleet/Ray, at least
ACTOR_CREATION = "actor creation"
ACTOR_RSS = "idle actor RSS"
# Names of the extra measurements (also matched by --only).
INIT_TIME = "init time to ready"
WORKER_RSS = "idle worker RSS"
MANY_TASKS = "100k tasks"

STDLIB_METRICS = (TASKS_AND_GET_BATCH, TASKS_SYNC, TASKS_ASYNC)
BATCH = 1000  # refs per op in the batch workloads, as in ray_perf.py
RESULT_MARKER = "__FLEET_MICROBENCHMARK_RESULT__ "
DEFAULT_RAY_PYTHON = "/opt/rayvenv/bin/python"

# How a child interpreter runs this file as __main__ (so that Ray pickles the
# workload functions by value instead of importing this module in its workers).
_CHILD_BOOT = (
    "import runpy, sys; path = sys.argv[1]; sys.argv = [path] + sys.argv[2:]; "
    "runpy.run_path(path, run_name='__main__')"
)

# (name, one op, tasks or calls per op; for the gigabytes metrics, GB per op)
Workload = Tuple[str, Callable[[], Any], float]


@dataclass
class Config:
    """What to run and for how long."""

    num_cpus: int = 2
    trials: int = 5
    duration: float = 2.0
    warmup: float = 1.0
    only: str = ""
    init_cycles: int = 5
    many_tasks: int = 100_000
    actors: int = 1000  # of the actor creation measure
    ray_actors: Optional[int] = None  # the same for Ray (None: as actors)
    clients: int = 4  # actors submitting in the multi-client workloads
    objects_only: bool = False  # --objects: only the object-store group
    object_store_mb: int = 2560  # object_store_memory of the object-store group's cluster
    large_mb: int = 800  # the array of put gigabytes, get 800 MB array and memcpy
    multi_put_mb: int = 80  # each put of multi client put gigabytes
    refs: int = 10_000  # refs in the object of "get object containing 10k refs"

    def wants(self, name: str) -> bool:
        """Whether the metric `name` passes the --only (and --objects) filter."""
        if self.objects_only and name not in OBJECT_METRICS:
            return False
        return self.only in name


@dataclass
class Stat:
    """Throughput of one metric over the timed trials (ops per second)."""

    name: str
    mean: float
    std: float
    median: float
    trials: List[float]
    multiplier: float


# ---------------------------------------------------------------------------
# Functions the workloads run remotely (module level, so every backend can
# pickle them).


def _small_value() -> bytes:
    """The trivial task of ray_perf.py."""
    return b"ok"


def _pid_after(seconds: float) -> int:
    """Holds a worker for `seconds` and returns its pid (to find the workers)."""
    time.sleep(seconds)
    return os.getpid()


class BenchActor:
    """The actor of ray_perf.py's actor workloads."""

    def small_value(self) -> bytes:
        return b"ok"

    def small_value_arg(self, x: Any) -> bytes:
        return b"ok"

    def pid(self) -> int:
        return os.getpid()


class BenchAsyncActor:
    """The async actor of ray_perf.py's async-actor workloads."""

    async def small_value(self) -> bytes:
        return b"ok"

    async def small_value_with_arg(self, x: Any) -> bytes:
        return b"ok"


class BenchClient:
    """Calls its servers (actors) in batches, from inside an actor."""

    def __init__(self, servers: Any):
        if not isinstance(servers, list):
            servers = [servers]
        self.servers = servers

    def small_value_batch(self, n: int) -> None:
        import importlib

        api = importlib.import_module(self.api_name())
        api.get([self.servers[i % len(self.servers)].small_value.remote() for i in range(n)])

    def small_value_batch_arg(self, n: int) -> None:
        import importlib

        api = importlib.import_module(self.api_name())
        x = api.put(0)
        api.get(
            [self.servers[i % len(self.servers)].small_value_arg.remote(x) for i in range(n)]
        )

    @staticmethod
    def api_name() -> str:
        return "ray" if "ray" in sys.modules and "fleet" not in sys.modules else "fleet"


class BenchTaskClient:
    """Submits batches of tasks from inside an actor (multi client tasks)."""

    def small_value_batch(self, n: int) -> None:
        api = importlib.import_module(BenchClient.api_name())
        f = api.remote(_small_value)
        api.get([f.remote() for _ in range(n)])


def _put_small_many(n: int) -> None:
    """Puts a small value `n` times, dropping each ref (multi client put calls)."""
    api = importlib.import_module(BenchClient.api_name())
    for _ in range(n):
        api.put(0)


def _put_zeros_many(n: int, elems: int) -> None:
    """Puts `n` fresh int64 arrays of `elems` zeros, dropping each ref at once
    (multi client put gigabytes): nothing accumulates in the store."""
    import numpy as np

    api = importlib.import_module(BenchClient.api_name())
    for _ in range(n):
        api.put(np.zeros(elems, dtype=np.int64))


def _make_refs(n: int) -> List[Any]:
    """Returns a list of `n` refs to small objects this task put."""
    api = importlib.import_module(BenchClient.api_name())
    return [api.put(i) for i in range(n)]


# ---------------------------------------------------------------------------
# Harness.


def timeit(name: str, fn: Callable[[], Any], multiplier: float, cfg: Config) -> Stat:
    """Times `fn` like Ray's ``timeit`` and prints ``name per second MEAN +- STD``.

    Warms up for ``cfg.warmup`` seconds (at least one call), then runs
    ``cfg.trials`` trials of about ``cfg.duration`` seconds each, calling `fn`
    in steps of a tenth of the warm-up count. Each trial yields
    ``multiplier * calls / elapsed``.
    """
    start = time.perf_counter()
    count = 0
    while True:
        fn()
        count += 1
        if time.perf_counter() - start >= cfg.warmup:
            break
    step = count // 10 + 1
    trials = []
    for _ in range(cfg.trials):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < cfg.duration:
            for _ in range(step):
                fn()
            count += step
        trials.append(multiplier * count / (time.perf_counter() - start))
    stat = Stat(
        name=name,
        mean=statistics.fmean(trials),
        std=statistics.pstdev(trials),  # numpy.std, as Ray prints
        median=statistics.median(trials),
        trials=trials,
        multiplier=multiplier,
    )
    print(
        f"{name} per second {round(stat.mean, 2)} +- {round(stat.std, 2)} "
        f"(median {round(stat.median, 2)})",
        flush=True,
    )
    return stat


def run_workloads(workloads: List[Workload], cfg: Config) -> Dict[str, Stat]:
    """Times each workload that passes the --only filter."""
    return {
        name: timeit(name, fn, multiplier, cfg)
        for name, fn, multiplier in workloads
        if cfg.wants(name)
    }


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of process `pid`, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def pss_mb(pid: int) -> Optional[float]:
    """Proportional set size of process `pid` in MB (shared pages split), if readable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------
# The suite, written once against `api` (fleet or ray).


def init_kwargs(cfg: Config, objects: bool = False) -> Dict[str, Any]:
    """Arguments of ``api.init`` (the same for fleet and Ray); `objects`: for
    the object-store group's cluster, with ``cfg.object_store_mb`` of store."""
    kw: Dict[str, Any] = {"num_cpus": cfg.num_cpus, "include_dashboard": False}
    if objects and cfg.object_store_mb > 0:
        kw["object_store_memory"] = cfg.object_store_mb * 1024 * 1024
    return kw


def task_workloads(api: ModuleType) -> List[Workload]:
    """The ray_perf.py workloads that use tasks, in ray_perf.py's order."""
    small_value = api.remote(_small_value)

    def small_value_batch() -> int:
        submitted = [small_value.remote() for _ in range(BATCH)]
        api.get(submitted)
        return 0

    def wait_multiple_refs() -> None:
        num_objs = BATCH
        not_ready = [small_value.remote() for _ in range(num_objs)]
        # As ray_perf.py: fetch_local only on the first wait.
        fetch_local = True
        for _ in range(num_objs):
            _ready, not_ready = api.wait(not_ready, fetch_local=fetch_local)
            if fetch_local:
                fetch_local = False

    def small_task() -> None:
        api.get(small_value.remote())

    def small_task_async() -> None:
        api.get([small_value.remote() for _ in range(BATCH)])

    return [
        (TASKS_AND_GET_BATCH, small_value_batch, 1),
        (WAIT_1K_REFS, wait_multiple_refs, 1),
        (TASKS_SYNC, small_task, 1),
        (TASKS_ASYNC, small_task_async, BATCH),
    ]


def object_workloads(api: ModuleType, cfg: Config) -> List[Workload]:
    """ray_perf.py's object-store workloads but put gigabytes (see measure_large_objects).

    As in ray_perf.py: the multi client puts are 10 tasks of 100 small puts,
    and 10 tasks of 10 puts of a fresh ``np.zeros`` int64 array (80 MB, or
    ``cfg.multi_put_mb``), each ref dropped at once; the 10k refs object is
    the list of refs a task returns, put there one by one.
    """
    value = api.put(0)
    put_small_many = api.remote(_put_small_many)
    put_zeros_many = api.remote(_put_zeros_many)
    ntasks, nputs = 10, 10
    elems = cfg.multi_put_mb * 1024 * 1024 // 8
    containing_refs = api.remote(_make_refs).remote(cfg.refs) if cfg.wants(GET_10K_REFS) else None

    def get_small() -> None:
        api.get(value)

    def put_small() -> None:
        api.put(0)

    def put_multi_small() -> None:
        api.get([put_small_many.remote(100) for _ in range(10)])

    def put_multi_large() -> None:
        api.get([put_zeros_many.remote(nputs, elems) for _ in range(ntasks)])

    def get_containing_refs() -> None:
        api.get(containing_refs)

    # Ray's units: an array of 800 MiB counts as 0.8 GB.
    return [
        (GET_CALLS, get_small, 1),
        (PUT_CALLS, put_small, 1),
        (MULTI_PUT_CALLS, put_multi_small, 1000),
        (MULTI_PUT_GIGABYTES, put_multi_large, ntasks * nputs * cfg.multi_put_mb / 1000),
        (GET_10K_REFS, get_containing_refs, 1),
    ]


def measure_large_objects(api: ModuleType, cfg: Config) -> Dict[str, Any]:
    """Put and get of one large int64 array (800 MB, or ``cfg.large_mb``), beside memcpy.

    First this process's single-thread warm memcpy of the array
    (``np.copyto`` into a preallocated, already written destination; median
    of several copies), then the first put into the fresh store, then
    "single client put gigabytes" timed as ray_perf.py does (each put's ref
    dropped at once, so the store reuses the memory), then the median time
    of ``get`` of the array already in the store (a read-only view, not a
    copy). The array is ``np.zeros`` written once, so that neither the put
    nor the memcpy reads the kernel's shared zero page (which is much faster
    to read than memory). GB are Ray's: 800 MiB counts as 0.8 GB.
    """
    import numpy as np

    out: Dict[str, Any] = {"size_mb": cfg.large_mb}
    gb = cfg.large_mb / 1000
    arr = np.zeros(cfg.large_mb * 1024 * 1024 // 8, dtype=np.int64)
    arr.fill(0)  # fault the pages in
    size_txt = f"{cfg.large_mb} MB"
    memcpy = None
    if cfg.wants(MEMCPY) or cfg.wants(PUT_GIGABYTES):
        dst = np.empty_like(arr)
        np.copyto(dst, arr)  # warm: the destination's pages exist
        times = []
        for _ in range(max(5, cfg.trials)):
            t0 = time.perf_counter()
            np.copyto(dst, arr)
            times.append(time.perf_counter() - t0)
        del dst
        memcpy = gb / statistics.median(times)
        out["memcpy_gbps"] = memcpy
        out["memcpy_gbps_all"] = [gb / t for t in times]
        print(
            f"{MEMCPY} ({size_txt}, warm destination) per second {memcpy:.2f} (median of "
            f"{len(times)})",
            flush=True,
        )
    if cfg.wants(PUT_GIGABYTES):
        t0 = time.perf_counter()
        api.put(arr)
        out["first_put_s"] = time.perf_counter() - t0
        print(f"first put of the {size_txt} array (fresh store): {out['first_put_s']:.3f} s")

        def put_large() -> None:
            api.put(arr)

        stat = timeit(PUT_GIGABYTES, put_large, gb, cfg)
        out["put_stat"] = asdict(stat)
        if memcpy:
            ratio = stat.median / memcpy
            out["put_vs_memcpy"] = ratio
            print(
                f"{PUT_GIGABYTES}: median {stat.median:.2f} GB/s = {ratio:.2f} x memcpy "
                f"{memcpy:.2f} GB/s (target >= {PUT_VS_MEMCPY_TARGET}: "
                f"{'met' if ratio >= PUT_VS_MEMCPY_TARGET else 'MISSED'})",
                flush=True,
            )
    if cfg.wants(GET_LARGE):
        ref = api.put(arr)
        view = api.get(ref)
        out["get_read_only"] = not view.flags.writeable
        out["get_owns_data"] = bool(view.flags.owndata)
        out["get_view"] = out["get_read_only"] and not out["get_owns_data"]
        # Where the store put the data relative to the source, mod 4 KiB: memcpy
        # speed may depend on it.
        out["dst_minus_src_mod_4096"] = (view.ctypes.data - arr.ctypes.data) % 4096
        assert view.shape == arr.shape and int(view[-1]) == 0
        del view
        times = []
        for _ in range(max(20, cfg.trials)):
            t0 = time.perf_counter()
            view = api.get(ref)
            times.append(time.perf_counter() - t0)
            del view
        del ref
        ms = [1e3 * t for t in times]
        out["get_ms_median"] = statistics.median(ms)
        out["get_ms_all"] = ms
        med = out["get_ms_median"]
        print(
            f"{GET_LARGE}: median {med:.3f} ms over {len(ms)} gets (min {min(ms):.3f}, "
            f"max {max(ms):.3f}; array of {size_txt}; "
            f"{'a read-only view' if out['get_view'] else 'NOT a read-only view'}; "
            f"target <= {GET_LARGE_TARGET_MS} ms: "
            f"{'met' if med <= GET_LARGE_TARGET_MS else 'MISSED'})",
            flush=True,
        )
    return out


def actor_workloads(api: ModuleType, cfg: Config) -> List[Workload]:
    """ray_perf.py's actor workloads (names and shapes), n = the client count."""
    actor_cls = api.remote(BenchActor)
    async_cls = api.remote(BenchAsyncActor)
    client_cls = api.remote(BenchClient)
    task_client_cls = api.remote(BenchTaskClient)
    n = cfg.clients
    a = actor_cls.remote()
    conc = actor_cls.options(max_concurrency=16).remote()
    aa = async_cls.remote()
    servers = [actor_cls.remote() for _ in range(n)]
    one_client = client_cls.remote(servers)
    clients = [client_cls.remote(s) for s in servers]
    task_clients = [task_client_cls.remote() for _ in range(n)]
    batch = 1000
    api.get([x.pid.remote() for x in [a, conc, *servers]])

    def sync_call() -> None:
        api.get(a.small_value.remote())

    def async_calls() -> None:
        api.get([a.small_value.remote() for _ in range(batch)])

    def concurrent_calls() -> None:
        api.get([conc.small_value.remote() for _ in range(batch)])

    def one_to_n() -> None:
        api.get(one_client.small_value_batch.remote(batch))

    def n_to_n() -> None:
        api.get([c.small_value_batch.remote(batch) for c in clients])

    def n_to_n_arg() -> None:
        api.get([c.small_value_batch_arg.remote(batch) for c in clients])

    def async_sync() -> None:
        api.get(aa.small_value.remote())

    def async_async() -> None:
        api.get([aa.small_value.remote() for _ in range(batch)])

    def async_args() -> None:
        api.get([aa.small_value_with_arg.remote(i) for i in range(batch)])

    def multi_client_tasks() -> None:
        api.get([c.small_value_batch.remote(batch) for c in task_clients])

    return [
        (ACTOR_SYNC, sync_call, 1),
        (ACTOR_ASYNC, async_calls, batch),
        (ACTOR_CONCURRENT, concurrent_calls, batch),
        (ACTOR_1N_ASYNC, one_to_n, batch),
        (ACTOR_NN_ASYNC, n_to_n, batch * n),
        (ACTOR_NN_ARG_ASYNC, n_to_n_arg, batch * n),
        (ASYNC_ACTOR_SYNC, async_sync, 1),
        (ASYNC_ACTOR_ASYNC, async_async, batch),
        (ASYNC_ACTOR_ARGS_ASYNC, async_args, batch),
        (MULTI_CLIENT_TASKS, multi_client_tasks, batch * n),
    ]


def measure_actor_creation(api: ModuleType, cfg: Config) -> Dict[str, Any]:
    """Creates ``cfg.actors`` actors (num_cpus=0) and waits for each one's first answer."""
    actor_cls = api.remote(BenchActor).options(num_cpus=0)
    n = cfg.actors
    t0 = time.perf_counter()
    actors = [actor_cls.remote() for _ in range(n)]
    t1 = time.perf_counter()
    pids = api.get([a.pid.remote() for a in actors])
    t2 = time.perf_counter()
    assert len(set(pids)) == n, "every actor must run in its own process"
    out = {
        "actors": n,
        "create_calls_s": t1 - t0,
        "total_s": t2 - t0,
        "actors_per_s": n / (t2 - t0),
    }
    print(
        f"{ACTOR_CREATION}: {n} actors created and answering in {out['total_s']:.2f} s "
        f"({out['actors_per_s']:.1f} actors/s; the .remote() calls took "
        f"{out['create_calls_s']:.2f} s)",
        flush=True,
    )
    for a in actors:
        api.kill(a)
    return out


def measure_actor_rss(api: ModuleType, cfg: Config) -> Dict[str, Any]:
    """RSS (and PSS) of an idle actor one second after its last call."""
    a = api.remote(BenchActor).remote()
    pid = api.get(a.pid.remote())
    time.sleep(1.0)
    out = {"pid": pid, "rss_mb": rss_mb(pid), "pss_mb": pss_mb(pid)}
    pss_txt = f", PSS {out['pss_mb']:.1f} MB" if out["pss_mb"] is not None else ""
    print(f"{ACTOR_RSS}: {out['rss_mb']:.1f} MB{pss_txt}", flush=True)
    api.kill(a)
    return out


def measure_init(api: ModuleType, cfg: Config) -> Dict[str, Any]:
    """Times init/first task/shutdown cycles; "ready" is init plus a first task result."""
    init_s: List[float] = []
    ready_s: List[float] = []
    shutdown_s: List[float] = []
    for _ in range(cfg.init_cycles):
        gc.collect()
        small_value = api.remote(_small_value)
        t0 = time.perf_counter()
        api.init(**init_kwargs(cfg))
        t1 = time.perf_counter()
        try:
            api.get(small_value.remote())
            t2 = time.perf_counter()
        finally:
            api.shutdown()
        t3 = time.perf_counter()
        init_s.append(t1 - t0)
        ready_s.append(t2 - t0)
        shutdown_s.append(t3 - t2)
    out = {
        "cycles": cfg.init_cycles,
        "init_returns_s": statistics.median(init_s),
        "ready_s": statistics.median(ready_s),
        "shutdown_s": statistics.median(shutdown_s),
        "ready_s_all": ready_s,
    }
    print(
        f"{INIT_TIME}: median {out['ready_s']:.3f} s over {cfg.init_cycles} cycles "
        f"(init() returns in {out['init_returns_s']:.3f} s, then first task result; "
        f"shutdown {out['shutdown_s']:.3f} s)",
        flush=True,
    )
    return out


def worker_pids(api: ModuleType, cfg: Config) -> Tuple[List[int], int]:
    """Pids of the cluster's workers, and on how many distinct workers tasks just ran.

    Runs ``2 * num_cpus`` short sleeping tasks so that the workers have started
    and run something (used, now idle workers), then asks fleet's node for its
    worker pids, or, on a backend without that (Ray), uses the tasks' pids.
    """
    pid_after = api.remote(_pid_after)
    task_pids = set(api.get([pid_after.remote(0.2) for _ in range(2 * cfg.num_cpus)]))
    core = getattr(getattr(getattr(api, "_private", None), "state", None), "core", None)
    if core is not None and hasattr(core, "node_stats"):
        return sorted(core.node_stats()["worker_pids"]), len(task_pids)
    return sorted(task_pids), len(task_pids)


def measure_worker_rss(api: ModuleType, cfg: Config, label: str) -> Dict[str, Any]:
    """VmRSS (and PSS) of the idle workers, one second after they last ran a task."""
    pids, ran_on = worker_pids(api, cfg)
    time.sleep(1.0)
    pids = [p for p in pids if os.path.exists(f"/proc/{p}")]  # skip workers gone since
    rss = [rss_mb(p) for p in pids]
    pss = [v for v in (pss_mb(p) for p in pids) if v is not None]
    out = {
        "pids": pids,
        "tasks_ran_on_workers": ran_on,
        "rss_mb": rss,
        "pss_mb": pss,
        "rss_mb_median": statistics.median(rss) if rss else None,
        "pss_mb_median": statistics.median(pss) if pss else None,
    }
    if not rss:
        print(f"{WORKER_RSS} ({label}): no live worker found", flush=True)
        return out
    pss_txt = f", PSS {out['pss_mb_median']:.1f} MB" if pss else ""
    print(
        f"{WORKER_RSS} ({label}): {len(pids)} workers, median {out['rss_mb_median']:.1f} MB"
        f"{pss_txt} (each: {', '.join(f'{v:.1f}' for v in rss)} MB; "
        f"{2 * cfg.num_cpus} sleeping tasks ran on {ran_on} of them)",
        flush=True,
    )
    return out


def measure_many_tasks(api: ModuleType, cfg: Config) -> Dict[str, Any]:
    """Submits ``cfg.many_tasks`` trivial tasks in one loop, gets them all, drops the refs.

    Reports the driver's RSS at a baseline, with all refs and results held,
    and after dropping them and collecting garbage.
    """
    n = cfg.many_tasks
    small_value = api.remote(_small_value)
    api.get(small_value.remote())
    me = os.getpid()
    gc.collect()
    time.sleep(0.5)
    baseline = rss_mb(me)
    t0 = time.perf_counter()
    refs = [small_value.remote() for _ in range(n)]
    t1 = time.perf_counter()
    values = api.get(refs)
    t2 = time.perf_counter()
    held = rss_mb(me)
    assert len(values) == n and values[-1] == b"ok"
    del refs, values
    gc.collect()
    time.sleep(1.0)
    after = rss_mb(me)
    out = {
        "tasks": n,
        "submit_s": t1 - t0,
        "total_s": t2 - t0,
        "tasks_per_s": n / (t2 - t0),
        "driver_rss_mb_baseline": baseline,
        "driver_rss_mb_held": held,
        "driver_rss_mb_after": after,
        "driver_rss_mb_growth": after - baseline,
    }
    print(
        f"{MANY_TASKS}: {n} tasks submitted in {out['submit_s']:.2f} s, all results in "
        f"{out['total_s']:.2f} s ({out['tasks_per_s']:.0f} tasks/s); driver RSS "
        f"{baseline:.1f} MB baseline -> {held:.1f} MB with refs held -> {after:.1f} MB "
        f"after refs dropped ({after - baseline:+.1f} MB)",
        flush=True,
    )
    return out


def run_suite(api: ModuleType, cfg: Config) -> Dict[str, Any]:
    """Runs everything selected against `api`; every cluster it starts is shut down."""
    if api.__name__ == "fleet":
        # Ship the workload classes by value, as Ray's run (this file is its
        # __main__) does: otherwise every new actor would import this module
        # (argparse, subprocess...) and actor creation would measure that.
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    result: Dict[str, Any] = {
        "api": api.__name__,
        "version": getattr(api, "__version__", "?"),
        "metrics": {},
    }
    if cfg.wants(INIT_TIME) and cfg.init_cycles > 0:
        result["init"] = measure_init(api, cfg)
    if any(cfg.wants(n) for n in OBJECT_METRICS):
        # Its own cluster, with room for the large arrays; first, as in ray_perf.py.
        api.init(**init_kwargs(cfg, objects=True))
        try:
            stats = run_workloads(object_workloads(api, cfg), cfg)
            result["metrics"].update({name: asdict(s) for name, s in stats.items()})
            if any(cfg.wants(n) for n in (PUT_GIGABYTES, GET_LARGE, MEMCPY)):
                large = measure_large_objects(api, cfg)
                put_stat = large.pop("put_stat", None)
                if put_stat is not None:
                    result["metrics"][PUT_GIGABYTES] = put_stat
                result["objects"] = large
        finally:
            api.shutdown()
    names = [TASKS_AND_GET_BATCH, WAIT_1K_REFS, TASKS_SYNC, TASKS_ASYNC]
    extra = [WORKER_RSS, MANY_TASKS, *ACTOR_METRICS, ACTOR_CREATION, ACTOR_RSS]
    if not any(cfg.wants(n) for n in [*names, *extra]):
        return result
    api.init(**init_kwargs(cfg))
    try:
        if cfg.wants(WORKER_RSS):
            result["worker_rss"] = {"fresh": measure_worker_rss(api, cfg, "fresh")}
        stats = run_workloads(task_workloads(api), cfg)
        result["metrics"].update({name: asdict(s) for name, s in stats.items()})
        if cfg.wants(WORKER_RSS) and stats:
            result["worker_rss"]["after"] = measure_worker_rss(api, cfg, "after the benchmarks")
        if cfg.wants(MANY_TASKS) and cfg.many_tasks > 0:
            result["tasks_100k"] = measure_many_tasks(api, cfg)
        if any(cfg.wants(n) for n in ACTOR_METRICS):
            stats = run_workloads(actor_workloads(api, cfg), cfg)
            result["metrics"].update({name: asdict(s) for name, s in stats.items()})
        if cfg.wants(ACTOR_RSS):
            result["actor_rss"] = measure_actor_rss(api, cfg)
    finally:
        api.shutdown()
    if cfg.wants(ACTOR_CREATION) and cfg.actors > 0:
        api.init(**init_kwargs(cfg))  # a fresh cluster: creation from a cold start
        try:
            result["actor_creation"] = measure_actor_creation(api, cfg)
        finally:
            api.shutdown()
    return result


# ---------------------------------------------------------------------------
# Standard library baselines.


def pool_workloads(
    call_sync: Callable[[], Any],
    submit: Callable[[], Any],
    collect: Callable[[List[Any]], Any],
) -> List[Workload]:
    """The task workloads on a process pool: sync call, and submit BATCH then collect."""

    def tasks_sync() -> None:
        call_sync()

    def batch() -> None:
        collect([submit() for _ in range(BATCH)])

    return [
        (TASKS_AND_GET_BATCH, batch, 1),
        (TASKS_SYNC, tasks_sync, 1),
        (TASKS_ASYNC, batch, BATCH),
    ]


def run_stdlib(cfg: Config) -> Dict[str, Dict[str, Any]]:
    """Times the task workloads on ProcessPoolExecutor(n) and multiprocessing.Pool(n).

    Runs after fleet's cluster is shut down (the driver is single-threaded
    again), so the platform's default start method (fork on Linux) is safe.
    """
    out: Dict[str, Dict[str, Any]] = {}
    if not any(cfg.wants(n) for n in STDLIB_METRICS):
        return out
    n = cfg.num_cpus
    print(f"\n== concurrent.futures.ProcessPoolExecutor({n}) ==", flush=True)
    with concurrent.futures.ProcessPoolExecutor(n) as ex:
        workloads = pool_workloads(
            lambda: ex.submit(_small_value).result(),
            lambda: ex.submit(_small_value),
            lambda futs: [f.result() for f in futs],
        )
        out["ProcessPoolExecutor"] = {
            k: asdict(s) for k, s in run_workloads(workloads, cfg).items()
        }
    print(f"\n== multiprocessing.Pool({n}) ==", flush=True)
    with multiprocessing.Pool(n) as pool:
        workloads = pool_workloads(
            lambda: pool.apply(_small_value),
            lambda: pool.apply_async(_small_value),
            lambda results: [r.get() for r in results],
        )
        out["multiprocessing.Pool"] = {
            k: asdict(s) for k, s in run_workloads(workloads, cfg).items()
        }
    return out


# ---------------------------------------------------------------------------
# Ray, in a child interpreter running this same file.


def child_args(cfg: Config, api_name: str) -> List[str]:
    """Command-line arguments that make a child run `cfg` against `api_name`."""
    return [
        "--_child-api", api_name,
        "--num-cpus", str(cfg.num_cpus),
        "--trials", str(cfg.trials),
        "--duration", str(cfg.duration),
        "--warmup", str(cfg.warmup),
        "--only", cfg.only,
        "--init-cycles", str(cfg.init_cycles),
        "--many-tasks", str(cfg.many_tasks),
        "--actors", str(cfg.actors if cfg.ray_actors is None else cfg.ray_actors),
        "--clients", str(cfg.clients),
        "--object-store-mb", str(cfg.object_store_mb),
        "--large-mb", str(cfg.large_mb),
        "--multi-put-mb", str(cfg.multi_put_mb),
        *(["--objects"] if cfg.objects_only else []),
    ]  # fmt: skip


def run_ray_child(cfg: Config, ray_python: str, timeout: float) -> Dict[str, Any]:
    """Runs the suite under Ray with `ray_python`; returns its results or {"error": ...}.

    The child's printed lines are echoed with a ``[ray]`` prefix; its stderr
    (Ray's logging) is shown only if it fails. On timeout the child's whole
    process group (Ray's daemons included) is terminated.
    """
    if not os.path.exists(ray_python):
        return {"error": f"{ray_python} does not exist"}
    path = os.path.abspath(__file__)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cmd = [ray_python, "-c", _CHILD_BOOT, path, *child_args(cfg, "ray")]
    result: Optional[Dict[str, Any]] = None
    # An empty working directory: `-c` puts it first on sys.path, and a directory
    # such as /tmp holds Ray's own /tmp/ray, which would shadow the ray package.
    with tempfile.TemporaryFile(mode="w+") as err, tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _stop_group(proc)

        watchdog = threading.Timer(timeout, on_timeout)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(RESULT_MARKER):
                    result = json.loads(line[len(RESULT_MARKER) :])
                else:
                    print("  [ray] " + line, end="", flush=True)
            proc.wait()
        except KeyboardInterrupt:
            _stop_group(proc)
            raise
        finally:
            watchdog.cancel()
        if proc.returncode != 0 or result is None:
            err.seek(0)
            tail = "".join(err.readlines()[-15:])
            print(tail, file=sys.stderr)
            last = tail.strip().splitlines()[-1:] or ["no output"]
            why = f"timed out after {timeout:.0f} s" if timed_out.is_set() else last[0]
            return {"error": f"exit status {proc.returncode}: {why}"}
    return result


def _stop_group(proc: subprocess.Popen) -> None:
    """Stops the child and what it started: its process group (it leads its own session).

    Sends SIGTERM, gives the child 15 s to shut Ray down, then SIGKILLs whatever
    of the group is left.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(15.0)
        time.sleep(2.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------
# Reports.


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def _num(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _get(d: Dict[str, Any], *keys: str) -> Optional[float]:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d  # type: ignore[return-value]


def print_ray_table(fleet_res: Dict[str, Any], ray_res: Dict[str, Any]) -> None:
    """Prints fleet beside Ray: ops/s for the metrics, then the extra measurements."""
    print("\n== fleet vs Ray ==")
    if "error" in ray_res:
        print(f"Ray not available: {ray_res['error']}")
        return
    print(
        f"(Ray {ray_res.get('version')}; ratio > 1: fleet faster; per second: ops, "
        "or GB for the gigabytes metrics)"
    )
    w = 46
    print(f"{'metric':<{w}} {'fleet ops/s':>14} {'Ray ops/s':>14} {'fleet/Ray':>10}")
    for name, st in fleet_res["metrics"].items():
        f = st["mean"]
        r = _get(ray_res, "metrics", name, "mean")
        print(f"{name:<{w}} {_num(f):>14} {_num(r):>14} {_ratio(f, r):>10}")
    rows = [
        ("init time to ready, s (median)", ("init", "ready_s")),
        ("init() returns, s (median)", ("init", "init_returns_s")),
        ("idle worker RSS, MB (median)", ("worker_rss", "fresh", "rss_mb_median")),
        ("idle worker PSS, MB (median)", ("worker_rss", "fresh", "pss_mb_median")),
        ("worker RSS after benchmarks, MB", ("worker_rss", "after", "rss_mb_median")),
        ("100k tasks: tasks/s", ("tasks_100k", "tasks_per_s")),
        ("100k tasks: driver RSS held, MB", ("tasks_100k", "driver_rss_mb_held")),
        ("100k tasks: driver RSS growth, MB", ("tasks_100k", "driver_rss_mb_growth")),
        ("actor creation: actors/s", ("actor_creation", "actors_per_s")),
        ("actor creation: actors created", ("actor_creation", "actors")),
        ("idle actor RSS, MB", ("actor_rss", "rss_mb")),
        ("idle actor PSS, MB", ("actor_rss", "pss_mb")),
    ]
    rows = [
        (label, keys)
        for label, keys in rows
        if _get(fleet_res, *keys) is not None or _get(ray_res, *keys) is not None
    ]
    if rows:
        print(
            f"\n{'measure (lower is better except tasks/s)':<{w}} {'fleet':>14} {'Ray':>14} "
            f"{'fleet/Ray':>10}"
        )
    for label, keys in rows:
        f, r = _get(fleet_res, *keys), _get(ray_res, *keys)
        print(f"{label:<{w}} {_num(f):>14} {_num(r):>14} {_ratio(f, r):>10}")
    mb = _get(fleet_res, "objects", "size_mb") or _get(ray_res, "objects", "size_mb")
    object_rows = [
        (f"memcpy {mb} MB, GB/s (each process; higher)", ("objects", "memcpy_gbps")),
        ("put gigabytes / memcpy (higher is better)", ("objects", "put_vs_memcpy")),
        (f"first put {mb} MB, fresh store, s (lower)", ("objects", "first_put_s")),
        (f"get {mb} MB array, ms (median; lower)", ("objects", "get_ms_median")),
    ]
    if any(_get(fleet_res, *k) is not None for _, k in object_rows):
        print(f"\n{'object store, large array':<{w}} {'fleet':>14} {'Ray':>14} {'fleet/Ray':>10}")
        for label, keys in object_rows:
            f, r = _get(fleet_res, *keys), _get(ray_res, *keys)
            print(f"{label:<{w}} {_num(f):>14} {_num(r):>14} {_ratio(f, r):>10}")


def print_object_targets(fleet_res: Dict[str, Any], ray_res: Optional[Dict[str, Any]]) -> None:
    """Prints fleet's object-store results against their targets (those it ran)."""
    lines = []
    ratio = _get(fleet_res, "objects", "put_vs_memcpy")
    if ratio is not None:
        ok = ratio >= PUT_VS_MEMCPY_TARGET
        lines.append(
            f"{PUT_GIGABYTES} / memcpy >= {PUT_VS_MEMCPY_TARGET}: {ratio:.2f} "
            f"({'met' if ok else 'MISSED'})"
        )
    ms = _get(fleet_res, "objects", "get_ms_median")
    if ms is not None:
        ok = ms <= GET_LARGE_TARGET_MS and bool(_get(fleet_res, "objects", "get_view"))
        lines.append(
            f"{GET_LARGE} <= {GET_LARGE_TARGET_MS}, a view: {ms:.3f} ms "
            f"({'met' if ok else 'MISSED'})"
        )
    for name, factor in VS_RAY_TARGETS:
        f = _get(fleet_res, "metrics", name, "mean")
        if f is None:
            continue
        r = _get(ray_res or {}, "metrics", name, "mean")
        if not r:
            lines.append(f"{name} >= {factor:g}x Ray: no Ray result (--compare-ray)")
            continue
        ok = f / r >= factor
        lines.append(f"{name} >= {factor:g}x Ray: {f / r:.2f}x ({'met' if ok else 'MISSED'})")
    if lines:
        print("\n== object store targets (fleet) ==")
        for line in lines:
            print(line)


def print_stdlib_table(fleet_res: Dict[str, Any], std: Dict[str, Dict[str, Any]]) -> None:
    """Prints fleet's task workloads beside the standard library pools (ops/s)."""
    if not std:
        return
    print("\n== fleet vs standard library (ops/s; ratio > 1: fleet faster) ==")
    short = {"ProcessPoolExecutor": "PPE", "multiprocessing.Pool": "mp.Pool"}
    pools = list(std)
    w = 36
    head = f"{'metric':<{w}} {'fleet':>12}"
    for p in pools:
        label = short.get(p, p)
        head += f" {label:>12} {'fleet/' + label:>13}"
    print(head)
    for name in STDLIB_METRICS:
        f = _get(fleet_res, "metrics", name, "mean")
        if f is None and not any(name in std[p] for p in pools):
            continue
        line = f"{name:<{w}} {_num(f):>12}"
        for p in pools:
            v = _get(std[p], name, "mean")
            line += f" {_num(v):>12} {_ratio(f, v):>13}"
        print(line)
    print("(PPE: concurrent.futures.ProcessPoolExecutor; mp.Pool: multiprocessing.Pool)")


# ---------------------------------------------------------------------------
# Entry point.


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """The command line of ``fleet microbenchmark``."""
    p = argparse.ArgumentParser(
        prog="fleet microbenchmark",
        description="Ray's `ray microbenchmark` task workloads on fleet "
        "(optionally beside Ray and the standard library).",
    )
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the cluster (default 2)")
    p.add_argument("--trials", type=int, default=5, help="timed trials per metric (default 5)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per trial (default 2)")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up seconds per metric (default 1)"
    )
    p.add_argument(
        "--only",
        default="",
        metavar="SUBSTRING",
        help="run only the metrics whose name contains SUBSTRING",
    )
    p.add_argument(
        "--init-cycles",
        type=int,
        default=5,
        help="init/shutdown cycles for the init time (default 5; 0 skips)",
    )
    p.add_argument(
        "--many-tasks",
        type=int,
        default=100_000,
        help="tasks of the '100k tasks' check (default 100000; 0 skips)",
    )
    p.add_argument(
        "--actors",
        type=int,
        default=1000,
        help="actors of the actor creation measure (default 1000; 0 skips)",
    )
    p.add_argument(
        "--ray-actors",
        type=int,
        default=None,
        help="actors of Ray's actor creation measure (default: as --actors)",
    )
    p.add_argument(
        "--clients",
        type=int,
        default=4,
        help="client actors of the n:n and multi client workloads (default 4)",
    )
    p.add_argument(
        "--objects",
        action="store_true",
        help="run only the object-store group (put/get calls, put gigabytes, large get, "
        "10k refs, memcpy); --only still filters within it",
    )
    p.add_argument(
        "--object-store-mb",
        type=int,
        default=2560,
        help="object_store_memory of the object-store group's cluster, MiB (default 2560; "
        "0: the backend's default)",
    )
    p.add_argument(
        "--large-mb",
        type=int,
        default=800,
        help="size of the array of put gigabytes, the large get and memcpy, MiB (default 800)",
    )
    p.add_argument(
        "--multi-put-mb",
        type=int,
        default=80,
        help="size of each put of multi client put gigabytes (10 tasks x 10 puts), MiB "
        "(default 80)",
    )
    p.add_argument(
        "--compare-ray",
        action="store_true",
        help="also run the workloads under Ray, in a child process",
    )
    p.add_argument(
        "--ray-python",
        default=os.environ.get("FLEET_RAY_PYTHON", DEFAULT_RAY_PYTHON),
        help=f"interpreter with Ray installed (default $FLEET_RAY_PYTHON or {DEFAULT_RAY_PYTHON})",
    )
    p.add_argument(
        "--ray-timeout",
        type=float,
        default=1800.0,
        help="seconds before the Ray child is stopped (default 1800)",
    )
    p.add_argument(
        "--compare-stdlib",
        action="store_true",
        help="also run the task workloads on ProcessPoolExecutor and multiprocessing.Pool",
    )
    p.add_argument("--json", metavar="PATH", help="write all results to PATH as JSON")
    p.add_argument("--_child-api", dest="child_api", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns the process exit status."""
    args = parse_args(argv)
    cfg = Config(
        num_cpus=args.num_cpus,
        trials=args.trials,
        duration=args.duration,
        warmup=args.warmup,
        only=args.only,
        init_cycles=args.init_cycles,
        many_tasks=args.many_tasks,
        actors=args.actors,
        ray_actors=args.ray_actors,
        clients=args.clients,
        objects_only=args.objects,
        object_store_mb=args.object_store_mb,
        large_mb=args.large_mb,
        multi_put_mb=args.multi_put_mb,
    )
    if args.child_api:
        api = importlib.import_module(args.child_api)
        print(RESULT_MARKER + json.dumps(run_suite(api, cfg)), flush=True)
        return 0

    import fleet

    results: Dict[str, Any] = {
        "config": asdict(cfg),
        "host": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
        },
    }
    print(
        f"fleet {fleet.__version__} microbenchmark: num_cpus={cfg.num_cpus} "
        f"trials={cfg.trials} duration={cfg.duration}s warmup={cfg.warmup}s "
        f"(host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    print("\n== fleet ==", flush=True)
    results["fleet"] = run_suite(fleet, cfg)
    if args.compare_stdlib:
        results["stdlib"] = run_stdlib(cfg)
    if args.compare_ray:
        print(f"\n== Ray ({args.ray_python}) ==", flush=True)
        results["ray"] = run_ray_child(cfg, args.ray_python, args.ray_timeout)
        if "error" in results["ray"]:
            print(f"Ray not available: {results['ray']['error']}; continuing without it.")
    if args.compare_ray:
        print_ray_table(results["fleet"], results["ray"])
    if args.compare_stdlib:
        print_stdlib_table(results["fleet"], results["stdlib"])
    print_object_targets(results["fleet"], results.get("ray"))
    results["host"]["loadavg_end"] = os.getloadavg()
    print(f"\n(load average at the end: {os.getloadavg()[0]:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
