"""The Ray compatibility harness (scripts/ray_compat): `import ray` under the
shim gives fleet, a missing Ray name is a placeholder that fails when used
(saying whether it is internal), Ray's fixture names work, and the runner
records passes, failures and hangs per test (a hang costs one test, not the
file).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from fleet_test_utils import REPO, fleet_env

pytestmark = pytest.mark.timeout(240)

SHIM = os.path.join(REPO, "scripts", "ray_compat", "shim")
RUNNER = os.path.join(REPO, "scripts", "ray_compat", "run.py")

RAY_STYLE_TESTS = '''\
import time

import pytest

import ray
from ray.util.placement_group import placement_group
from ray._common.test_utils import SignalActor, wait_for_condition
from ray._private.ray_constants import made_up_flag


@pytest.mark.skipif(made_up_flag(), reason="a module-level use of an internal does not raise")
def test_after_module_level_internal():
    assert True


def test_uses_internal():
    made_up_flag()


def test_square(ray_start_regular_shared):
    @ray.remote
    def square(x):
        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]


def test_signal(ray_start_regular_shared):
    signal = SignalActor.remote()

    @ray.remote
    def waiter(s):
        ray.get(s.wait.remote())
        return "done"

    ref = waiter.remote(signal)
    wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 1)
    ray.get(signal.send.remote())
    assert ray.get(ref, timeout=30) == "done"


def test_function_and_module_share_a_name():
    assert callable(placement_group)
    assert callable(ray.util.placement_group)


def test_fails():
    assert 1 == 2


def test_hangs():
    time.sleep(1000)


def test_after_the_hang():
    assert ray.__name__ == "ray"
'''


def test_shim_imports_fleet_under_ray_names():
    code = (
        "import ray, fleet, ray.util.placement_group, ray.exceptions, ray_shim\n"
        "ray_shim.set_lenient(False)\n"
        "assert ray.init is fleet.init\n"
        "assert ray.exceptions.RayTaskError is fleet.exceptions.RayTaskError\n"
        "assert callable(ray.util.placement_group)\n"
        "import ray.no_such_module\n"
        "from ray._private.no_such_module import helper\n"
        "for use, kind in [(ray.no_such_module.f, 'public'), (helper, 'internal')]:\n"
        "    try:\n        use()\n    except NotImplementedError as e:\n"
        "        assert f'[{kind}]' in str(e) and 'not provided by fleet' in str(e), e\n"
        "    else:\n        raise SystemExit('a placeholder ran')\n"
        "print('ok')\n"
    )
    env = dict(fleet_env(), PYTHONPATH=SHIM)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_runner_records_pass_fail_and_hang(tmp_path):
    import tempfile

    src = tmp_path / "raysrc"
    src.mkdir()
    (src / "test_ray_style.py").write_text(RAY_STYLE_TESTS)
    out = tmp_path / "report.json"
    # (a short FLEET_TMPDIR: the cluster's Unix socket paths must fit in 108 bytes)
    fleet_tmp = tempfile.mkdtemp(prefix="fleet-shim-")
    env = dict(fleet_env(), FLEET_TMPDIR=fleet_tmp)
    try:
        res = subprocess.run(
            [sys.executable, RUNNER, str(src), "--timeout", "20", "--json", str(out)],
            env=env, capture_output=True, text=True, timeout=220,
        )
    finally:
        shutil.rmtree(fleet_tmp, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    rows = json.load(open(out))["test_ray_style.py"]
    outcome = {nid.split("::")[1]: row["outcome"] for nid, row in rows.items()}
    assert outcome == {
        "test_square": "passed",
        "test_signal": "passed",
        "test_function_and_module_share_a_name": "passed",
        "test_fails": "failed",
        "test_hangs": "hang",
        "test_after_the_hang": "passed",
        "test_after_module_level_internal": "passed",
        "test_uses_internal": "failed",
    }, res.stdout
    classes = {nid.split("::")[1]: row["class"] for nid, row in rows.items()}
    assert classes["test_uses_internal"] == "internal"
    assert classes["test_fails"] == "failed"
    assert "TOTAL" in res.stdout
