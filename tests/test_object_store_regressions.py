"""Regressions for bugs a reviewer found in the object store and reference
counting, one test each (see the commit that fixed them).

Each test observes the store through the public API (``list_objects``,
``store_list``) and fails on the build before the fix.
"""

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

from fleet_test_utils import (  # isort: skip
    Proc,
    fleet_env,
    fresh_cluster,
    kill_leftovers,
    run_argv,
    wait_dead,
    wait_until,
)

import fleet  # isort: skip
from fleet._private import state as _state  # isort: skip
from fleet.util.state import list_objects  # isort: skip

pytestmark = pytest.mark.timeout(90)
T = 30


@pytest.fixture(scope="module")
def cluster():
    with fresh_cluster(num_cpus=2, object_store_memory=200 * 2**20) as ctx:
        yield ctx


def _used() -> int:
    return _state.core.store_list()["used"]


def test_long_chain_of_nested_puts_is_freed_without_a_stack_overflow(cluster):
    # Freeing the head freed each link recursively: 100k links overflowed the stack.
    before = _state.core.num_objects()
    ref = fleet.put(0)
    for _ in range(100_000):
        ref = fleet.put([ref])
    del ref
    gc.collect()
    assert wait_until(lambda: _state.core.num_objects() == before, 10)
    assert fleet.get(fleet.put("still alive"), timeout=T) == "still alive"


@fleet.remote(num_returns=2, max_retries=0)
def _array_then_unpicklable():
    return np.ones(1_000_000), threading.Lock()


def test_store_return_before_a_failed_return_is_freed(cluster):
    # Return 0 went to the store, return 1 failed to pickle: the task fails
    # and return 0's store copy must not stay behind, owned by nobody.
    before = _used()
    a, b = _array_then_unpicklable.remote()
    with pytest.raises(TypeError):
        fleet.get(a, timeout=T)
    del a, b
    gc.collect()
    assert wait_until(lambda: _used() == before, 10), _state.core.store_list()


@fleet.remote
def _slow_array():
    time.sleep(1.0)
    return np.ones(1_000_000)


@fleet.remote
class _Caller:
    def start(self):
        self.ref = _slow_array.remote()
        return True


def test_return_written_after_its_owner_died_is_freed(cluster):
    # The caller (owner) dies while its task runs; the return written later
    # used to stay in the store for the node's life.
    caller = _Caller.remote()
    assert fleet.get(caller.start.remote(), timeout=T)
    fleet.kill(caller)
    time.sleep(2.0)  # the task finishes and writes its return
    assert wait_until(lambda: not [o for o in list_objects() if o["object_size"] >= 8_000_000],
                      10), list_objects()


@fleet.remote
class _Reader:
    def get_both(self, refs):
        try:
            fleet.get(refs, timeout=T)
        except Exception as e:  # the second ref is an error: the get raises
            return type(e).__name__
        return "no error"

    def ping(self):
        return True


@fleet.remote(max_retries=0)
def _fails():
    raise ValueError("bad")


def test_get_that_raises_still_registers_the_refs_it_unpickled(cluster):
    # get([outer, bad]): outer's inner ref was unpickled, then the get raised.
    # Its registration with the owner used to stay queued, sent later, after
    # the reader had already released it: the owner then kept it for ever.
    reader = _Reader.remote()
    try:
        inner = fleet.put(np.ones(1_000_000))
        h = inner.hex()
        outer = fleet.put([inner])
        bad = _fails.remote()
        assert fleet.get(reader.get_both.remote([outer, bad]), timeout=T) in (
            "ValueError", "RayTaskError(ValueError)")
        assert fleet.get(reader.ping.remote(), timeout=T)  # a later flush, if any
        del inner, outer
        gc.collect()
        assert wait_until(lambda: h not in {o["object_id"] for o in list_objects()}, 10), \
            list_objects()
    finally:
        fleet.kill(reader)


VIEW_DRIVER = """\
import numpy as np
import fleet
fleet.init(address="auto")
a = fleet.get(fleet.put(np.zeros(2_000_000)))
fleet.shutdown()
fleet.init(address="auto")
refs = [fleet.put(np.full(2_000_000, 7.0)) for _ in range(3)]
del refs
refs = [fleet.put(np.full(2_000_000, 7.0)) for _ in range(3)]
print("SUM", float(a.sum()), flush=True)
"""


def test_views_from_get_stay_intact_after_shutdown(tmp_path):
    # A numpy view kept past shutdown() must keep its pin on a cluster that
    # lives on (fleet start): the node used to reuse its memory at once.
    if fleet.is_initialized():
        fleet.shutdown()
    root = tempfile.mkdtemp(prefix="flview", dir="/tmp")  # short: unix socket paths
    env = fleet_env({"FLEET_TMPDIR": root})
    script = tmp_path / "driver.py"
    script.write_text(VIEW_DRIVER)
    daemons = []
    cli = [sys.executable, "-m", "fleet.scripts"]
    try:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        res = run_argv([*cli, "start", "--head", "--num-cpus", "1", "--object-store-memory",
                        str(60_000_000), "--port", str(port)], 30, env)
        assert res.returncode == 0, res.stdout + res.stderr
        with open(os.path.join(root, "cluster.json")) as f:
            daemons = [Proc(p, "daemon") for p in json.load(f)["pids"]]
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             env=env, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUM 0.0" in out.stdout, out.stdout + out.stderr
    finally:
        run_argv([*cli, "stop"], 30, env)
        left = wait_dead(daemons, 10)
        kill_leftovers(left)
        shutil.rmtree(root, ignore_errors=True)
