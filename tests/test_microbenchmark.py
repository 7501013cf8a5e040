"""`fleet microbenchmark` (fleet._private.microbenchmark): quick smoke tests.

The object-store group runs in a subprocess (bench/microbenchmark.py, as a
user runs it) with tiny sizes and very short trials, so that the test
neither allocates the 800 MB array nor takes long; it checks the group runs
end to end and reports what the comparison table and targets read.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from fleet._private import microbenchmark as mb
from fleet_test_utils import REPO, run_argv

pytestmark = pytest.mark.timeout(120)


def test_objects_flag_selects_only_the_object_group():
    cfg = mb.Config(objects_only=True)
    assert all(cfg.wants(n) for n in mb.OBJECT_METRICS)
    assert not any(cfg.wants(n) for n in (mb.TASKS_SYNC, mb.INIT_TIME, mb.ACTOR_SYNC))
    cfg = mb.Config(objects_only=True, only="gigabytes")
    assert [n for n in mb.OBJECT_METRICS if cfg.wants(n)] == [
        mb.PUT_GIGABYTES,
        mb.MULTI_PUT_GIGABYTES,
        mb.MEMCPY,
    ]
    assert mb.Config().wants(mb.GET_10K_REFS)  # in the default full run


def test_child_args_carry_the_object_settings():
    cfg = mb.Config(objects_only=True, object_store_mb=300, large_mb=4, multi_put_mb=2)
    args = mb.parse_args(mb.child_args(cfg, "ray"))
    assert args.child_api == "ray"
    assert (args.objects, args.object_store_mb, args.large_mb, args.multi_put_mb) == (
        True,
        300,
        4,
        2,
    )
    kw = mb.init_kwargs(cfg, objects=True)
    assert kw["object_store_memory"] == 300 * 1024 * 1024
    assert "object_store_memory" not in mb.init_kwargs(cfg)


def test_object_group_smoke(tmp_path):
    pytest.importorskip("numpy")
    out = tmp_path / "res.json"
    argv = [
        sys.executable,
        os.path.join(REPO, "bench", "microbenchmark.py"),
        "--objects",
        "--trials", "1",
        "--duration", "0.05",
        "--warmup", "0.05",
        "--large-mb", "4",
        "--multi-put-mb", "1",
        "--object-store-mb", "128",
        "--json", str(out),
    ]  # fmt: skip
    res = run_argv(argv, timeout=100)
    assert res.returncode == 0, res.stdout + res.stderr
    fleet_res = json.loads(out.read_text())["fleet"]
    for name in mb.OBJECT_METRICS:
        if name not in (mb.GET_LARGE, mb.MEMCPY):
            assert fleet_res["metrics"][name]["mean"] > 0, name
    assert mb.TASKS_SYNC not in fleet_res["metrics"]
    objects = fleet_res["objects"]
    assert objects["size_mb"] == 4
    assert objects["memcpy_gbps"] > 0 and objects["put_vs_memcpy"] > 0
    assert objects["get_view"], "get of a large array must return a read-only view"
    assert objects["get_ms_median"] > 0
    assert "== object store targets (fleet) ==" in res.stdout
