"""Ray's test fixtures (names, parameters and defaults of Ray's tests/conftest.py),
written over fleet's public API, so Ray's core test files run unchanged.

Fixtures that need Ray internals (error pub/sub, external Redis, the Ray
client, TLS) are not provided: a test asking for one errors at setup.
"""

import subprocess
import sys
from contextlib import contextmanager

import pytest

import fleet as ray
from fleet.cluster_utils import Cluster


def get_default_fixure_system_config():
    return {"object_timeout_milliseconds": 200, "object_store_full_delay_ms": 100}


def get_default_fixture_ray_kwargs():
    return {
        "num_cpus": 1,
        "object_store_memory": 150 * 1024 * 1024,
        "dashboard_port": None,
        "namespace": "default_test_namespace",
        "_system_config": get_default_fixure_system_config(),
    }


@contextmanager
def _ray_start(**kwargs):
    init_kwargs = get_default_fixture_ray_kwargs()
    init_kwargs.update(kwargs)
    info = ray.init(**init_kwargs)
    try:
        yield info
    finally:
        ray.shutdown()


@contextmanager
def _ray_start_cluster(**kwargs):
    init_kwargs = get_default_fixture_ray_kwargs()
    num_nodes = kwargs.pop("num_nodes", 0)
    do_init = kwargs.pop("do_init", num_nodes > 0)
    init_kwargs.update(kwargs)
    init_kwargs.pop("namespace", None)
    init_kwargs.pop("dashboard_port", None)
    cluster = Cluster()
    try:
        for i in range(num_nodes):
            if i > 0:
                init_kwargs.pop("_system_config", None)
            cluster.add_node(**init_kwargs)
        if do_init:
            ray.init(address=cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _param(request):
    return dict(getattr(request, "param", {}) or {})


@pytest.fixture
def shutdown_only():
    yield None
    ray.shutdown()


@pytest.fixture
def ray_start_regular(request):
    with _ray_start(**_param(request)) as res:
        yield res


@pytest.fixture(scope="module")
def ray_start_regular_shared(request):
    with _ray_start(**_param(request)) as res:
        yield res


@pytest.fixture(scope="module")
def ray_start_regular_shared_2_cpus(request):
    with _ray_start(**{"num_cpus": 2, **_param(request)}) as res:
        yield res


@pytest.fixture
def ray_start_no_cpu(request):
    with _ray_start(**{"num_cpus": 0, **_param(request)}) as res:
        yield res


@pytest.fixture
def ray_start_2_cpus(request):
    with _ray_start(**{"num_cpus": 2, **_param(request)}) as res:
        yield res


@pytest.fixture
def ray_start_10_cpus(request):
    with _ray_start(**{"num_cpus": 10, **_param(request)}) as res:
        yield res


@pytest.fixture
def ray_start_object_store_memory(request):
    with _ray_start(num_cpus=1, object_store_memory=request.param) as res:
        yield res


@pytest.fixture
def ray_start_cluster(request):
    with _ray_start_cluster(**_param(request)) as res:
        yield res


@pytest.fixture
def ray_start_cluster_enabled(request):
    with _ray_start_cluster(**_param(request)) as res:
        yield res


@pytest.fixture
def ray_start_cluster_init(request):
    with _ray_start_cluster(**{"do_init": True, **_param(request)}) as res:
        yield res


@pytest.fixture
def ray_start_cluster_head(request):
    with _ray_start_cluster(**{"num_nodes": 1, "do_init": True, **_param(request)}) as res:
        yield res


@pytest.fixture
def ray_start_cluster_2_nodes(request):
    with _ray_start_cluster(**{"num_nodes": 2, "do_init": True, **_param(request)}) as res:
        yield res


@pytest.fixture
def ray_start_cluster_head_with_env_vars(request, monkeypatch):
    param = _param(request)
    for k, v in param.pop("env_vars", {}).items():
        monkeypatch.setenv(k, v)
    with _ray_start_cluster(**{"num_nodes": 1, "do_init": True, **param}) as res:
        yield res


def _fleet_cli(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "fleet.scripts", *args],
        capture_output=True, text=True, check=check, timeout=120,
    )


@pytest.fixture
def call_ray_start(request):
    param = getattr(request, "param", "ray start --head --num-cpus=1")
    argv = param.split()[2:]
    out = _fleet_cli("start", *argv).stdout
    address = None
    for line in out.splitlines():
        if "address=" in line:
            address = line.split("address=")[1].split()[0].strip("'\"")
    try:
        yield address or "auto"
    finally:
        ray.shutdown()
        _fleet_cli("stop", "--force", check=False)


@pytest.fixture
def call_ray_stop_only():
    yield
    _fleet_cli("stop", "--force", check=False)


@pytest.fixture
def set_enable_auto_connect(request, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", str(int(getattr(request, "param", True))))
    yield


@pytest.fixture
def propagate_logs():
    yield
