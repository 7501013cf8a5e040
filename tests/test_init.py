"""init / shutdown and their options; each test starts its own cluster.

Ray docs: the API reference of ray.init, ray.shutdown, ray.is_initialized,
https://docs.ray.io/en/latest/ray-core/handling-dependencies.html (runtime_env
env_vars) and https://docs.ray.io/en/latest/ray-core/namespaces.html.
"""

import os
import time

import pytest

from fleet_test_utils import FdRecorder, fleet_env, run_python, wait_until

pytestmark = pytest.mark.timeout(60)

T = 30


def _env_reader(fleet):
    @fleet.remote
    def read_env(*names):
        return {n: os.environ.get(n) for n in names}

    return read_env


def test_is_initialized_before_and_after(fresh):
    fleet = fresh
    assert fleet.is_initialized() is False
    fleet.init(num_cpus=1)
    assert fleet.is_initialized() is True
    fleet.shutdown()
    assert fleet.is_initialized() is False


def test_shutdown_is_idempotent(fresh):
    fleet = fresh
    fleet.shutdown()  # not initialized: no error
    fleet.init(num_cpus=1)
    fleet.shutdown()
    fleet.shutdown()
    assert not fleet.is_initialized()


def test_remote_before_init_starts_a_local_cluster(fresh):
    fleet = fresh

    @fleet.remote
    def f():
        return 1

    assert not fleet.is_initialized()
    ref = f.remote()
    assert fleet.is_initialized()
    assert fleet.get(ref, timeout=T) == 1


def test_put_before_init_starts_a_local_cluster(fresh):
    fleet = fresh
    assert not fleet.is_initialized()
    ref = fleet.put("v")
    assert fleet.is_initialized()
    assert fleet.get(ref, timeout=T) == "v"


@pytest.mark.parametrize("n", [1, 3])
def test_num_cpus(fresh, n):
    fleet = fresh
    fleet.init(num_cpus=n)
    assert fleet.cluster_resources()["CPU"] == n
    assert fleet.nodes()[0]["Resources"]["CPU"] == n


def test_many_declared_cpus_start_at_once(fresh):
    # A node may declare more CPUs than the machine has cores (Ray's tests use
    # num_cpus=1000): it starts no more workers up front than it has cores, so
    # it serves at once, and the rest start on demand.
    fleet = fresh
    fleet.init(num_cpus=1000)  # (before, fleet-node forked 1000 workers and timed out)
    assert fleet.cluster_resources()["CPU"] == 1000

    @fleet.remote
    def f(x):
        return x + 1

    assert fleet.get([f.remote(i) for i in range(20)], timeout=60) == list(range(1, 21))


def test_custom_resources(fresh):
    fleet = fresh
    fleet.init(num_cpus=1, resources={"foo": 2})
    assert fleet.cluster_resources()["foo"] == 2

    @fleet.remote(resources={"foo": 1})
    def uses_foo():
        return fleet.get_runtime_context().get_assigned_resources()

    assigned = fleet.get(uses_foo.remote(), timeout=T)
    assert assigned.get("foo") == 1
    assert fleet.get(uses_foo.options(resources={"foo": 2}).remote(), timeout=T)["foo"] == 2


def test_init_resources_cpu_key_rejected(fresh):
    with pytest.raises(ValueError):
        fresh.init(resources={"CPU": 2})
    assert not fresh.is_initialized()


def test_namespace(fresh):
    fleet = fresh
    fleet.init(num_cpus=1, namespace="my-namespace")
    assert fleet.get_runtime_context().namespace == "my-namespace"


def test_anonymous_namespace(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)
    ns = fleet.get_runtime_context().namespace
    assert isinstance(ns, str) and ns


def test_second_init_raises_runtime_error(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)
    with pytest.raises(RuntimeError):
        fleet.init(num_cpus=1)
    assert fleet.is_initialized()


def test_ignore_reinit_error(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)
    ctx = fleet.init(num_cpus=1, ignore_reinit_error=True)
    assert ctx is not None
    assert fleet.is_initialized()
    assert fleet.get(fleet.put(1), timeout=T) == 1


def test_unknown_init_argument_raises(fresh):
    # Ray: RuntimeError("Unknown keyword argument(s): ..."); a TypeError naming
    # the argument is as good.
    with pytest.raises((TypeError, RuntimeError), match="not_an_argument"):
        fresh.init(num_cpus=1, not_an_argument=True)
    assert not fresh.is_initialized()


def test_init_returns_context_usable_as_context_manager(fresh):
    fleet = fresh
    with fleet.init(num_cpus=1) as ctx:
        assert fleet.is_initialized()
        info = ctx.address_info
        for key in ("node_ip_address", "session_dir", "gcs_address", "address", "node_id"):
            assert key in info, key
        assert ctx["node_ip_address"] == info["node_ip_address"]

        @fleet.remote
        def f():
            return 5

        assert fleet.get(f.remote(), timeout=T) == 5
    assert not fleet.is_initialized()


def test_reinit_after_shutdown_reuses_remote_functions(fresh):
    fleet = fresh

    @fleet.remote
    def f(x):
        return x * 2

    fleet.init(num_cpus=1)
    assert fleet.get(f.remote(1), timeout=T) == 2
    fleet.shutdown()
    fleet.init(num_cpus=1)
    assert fleet.get(f.remote(2), timeout=T) == 4
    assert fleet.get(f.options(num_cpus=0.5).remote(3), timeout=T) == 6


def test_runtime_env_env_vars(fresh):
    fleet = fresh
    fleet.init(num_cpus=1, runtime_env={"env_vars": {"FLEET_TEST_X": "1", "FLEET_TEST_Y": "y"}})
    read_env = _env_reader(fleet)
    assert fleet.get(read_env.remote("FLEET_TEST_X", "FLEET_TEST_Y"), timeout=T) == {
        "FLEET_TEST_X": "1",
        "FLEET_TEST_Y": "y",
    }
    # A task's runtime_env env_vars override the job's, and merge with them.
    over = read_env.options(runtime_env={"env_vars": {"FLEET_TEST_X": "2", "FLEET_TEST_Z": "z"}})
    assert fleet.get(over.remote("FLEET_TEST_X", "FLEET_TEST_Y", "FLEET_TEST_Z"), timeout=T) == {
        "FLEET_TEST_X": "2",
        "FLEET_TEST_Y": "y",
        "FLEET_TEST_Z": "z",
    }
    # ... only for that task: the next one sees the job's environment again.
    assert fleet.get(read_env.remote("FLEET_TEST_X", "FLEET_TEST_Z"), timeout=T) == {
        "FLEET_TEST_X": "1",
        "FLEET_TEST_Z": None,
    }
    # The driver's own environment is not changed.
    assert "FLEET_TEST_X" not in os.environ


def test_task_runtime_env_without_job_runtime_env(fresh):
    fleet = fresh
    fleet.init(num_cpus=1)
    read_env = _env_reader(fleet)

    @fleet.remote(runtime_env={"env_vars": {"FLEET_TEST_W": "w"}})
    def decorated():
        return os.environ.get("FLEET_TEST_W")

    assert fleet.get(decorated.remote(), timeout=T) == "w"
    assert fleet.get(read_env.remote("FLEET_TEST_W"), timeout=T) == {"FLEET_TEST_W": None}


def test_invalid_runtime_env_raises(fresh):
    with pytest.raises((ValueError, TypeError)):
        fresh.init(num_cpus=1, runtime_env={"env_vars": {"A": 1}})
    assert not fresh.is_initialized()


def test_log_to_driver_false_suppresses_worker_output(fresh, tmp_path):
    fleet = fresh
    fleet.init(num_cpus=1, log_to_driver=False)
    token = f"quiet-{time.monotonic_ns()}"

    @fleet.remote
    def noisy():
        print(token, flush=True)
        return 1

    with FdRecorder(tmp_path) as rec:
        assert fleet.get(noisy.remote(), timeout=T) == 1

        def found():
            return token in rec.out + rec.err

        assert not wait_until(found, 1.5, 0.1), rec.out + rec.err


def test_log_to_driver_true_by_default(fresh, tmp_path):
    fleet = fresh
    fleet.init(num_cpus=1)
    token = f"loud-{time.monotonic_ns()}"

    @fleet.remote
    def noisy():
        print(token, flush=True)
        return 1

    with FdRecorder(tmp_path) as rec:
        assert fleet.get(noisy.remote(), timeout=T) == 1
        assert wait_until(lambda: token in rec.out, 5, 0.1), rec.out


def test_address_auto_without_a_cluster_raises_connection_error(tmp_path):
    # An empty FLEET_TMPDIR: no cluster started by `fleet start` can be found.
    code = (
        "import fleet\n"
        "try:\n"
        "    fleet.init(address='auto')\n"
        "except ConnectionError as e:\n"
        "    print('CONNECTION_ERROR', e)\n"
    )
    res = run_python(code, timeout=30, env=fleet_env({"FLEET_TMPDIR": str(tmp_path)}))
    assert "CONNECTION_ERROR" in res.stdout, (res.stdout, res.stderr)
