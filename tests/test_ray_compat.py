"""`import fleet as ray` runs Ray programs: the README program, a typical Ray
core program run as a script (functions defined in __main__), and Ray's
public names.
"""

import os
import re

import pytest

import fleet
from fleet_test_utils import REPO, run_python

pytestmark = pytest.mark.timeout(90)

SQUARE_PROGRAM = """\
import fleet

fleet.init(num_cpus=2)

@fleet.remote
def square(x):
    return x * x

print(sum(fleet.get([square.remote(i) for i in range(1000)])))
fleet.shutdown()
"""


def _as_ray(program: str) -> str:
    program = re.sub(r"^import fleet\b.*$", "import fleet as ray", program, flags=re.M)
    return re.sub(r"\bfleet\.", "ray.", program)


def _run_file(tmp_path, name, program, timeout=60):
    path = tmp_path / name
    path.write_text(program)
    return run_python(
        f"import runpy, sys; sys.argv = [{str(path)!r}]; sys.path.insert(0, {str(tmp_path)!r}); "
        f"runpy.run_path({str(path)!r}, run_name='__main__')",
        timeout=timeout,
        cwd=str(tmp_path),
    )


@pytest.mark.parametrize("flavour", ["fleet", "ray"])
def test_square_program(tmp_path, flavour):
    program = SQUARE_PROGRAM if flavour == "fleet" else _as_ray(SQUARE_PROGRAM)
    if flavour == "ray":
        assert "import fleet as ray" in program and "ray.remote" in program
    res = _run_file(tmp_path, "square.py", program)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "332833500", res.stdout


def _readme_program():
    path = os.path.join(REPO, "README.md")
    if not os.path.exists(path):
        pytest.skip("no README.md")
    text = open(path).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    for b in blocks:
        if "332833500" in b or "square" in b:
            return b
    pytest.skip("README.md has no square program")


@pytest.mark.parametrize("flavour", ["fleet", "ray"])
def test_readme_program(tmp_path, flavour):
    program = _readme_program()
    if flavour == "ray":
        program = _as_ray(program)
        assert "import fleet as ray" in program
    res = _run_file(tmp_path, "readme.py", program)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "332833500" in res.stdout, res.stdout


RAY_PROGRAM = """\
import os
import time
import fleet as ray

ray.init(num_cpus=2, ignore_reinit_error=True)

@ray.remote
def f(x):
    return x * x

@ray.remote(num_returns=2)
def split(xs):
    return xs[: len(xs) // 2], xs[len(xs) // 2 :]

@ray.remote
def g(ref_list):
    return sum(ray.get(ref_list, timeout=30))

@ray.remote
def leaf(x):
    return x * x

@ray.remote
def outer(n):
    return ray.get([leaf.remote(i) for i in range(n)], timeout=30)

class MyError(Exception):
    pass

@ray.remote
def bad():
    raise MyError("nope")

refs = [f.remote(i) for i in range(10)]
pending, results = list(refs), []
while pending:
    ready, pending = ray.wait(pending, num_returns=1, timeout=30)
    results.extend(ray.get(ready, timeout=30))
assert sorted(results) == [i * i for i in range(10)], results

left, right = split.remote(list(range(10)))
assert ray.get(left, timeout=30) == [0, 1, 2, 3, 4]
assert ray.get(right, timeout=30) == [5, 6, 7, 8, 9]

assert ray.get(g.remote([ray.put(1), ray.put(2)]), timeout=30) == 3
assert ray.get(outer.remote(5), timeout=30) == [0, 1, 4, 9, 16]

try:
    ray.get(bad.remote(), timeout=30)
except MyError as e:
    assert isinstance(e, ray.exceptions.RayTaskError)
    print("caught", type(e.cause).__name__)
else:
    raise AssertionError("no error")

@ray.remote
def slow():
    time.sleep(1)
    return os.getpid()

try:
    ray.get(slow.remote(), timeout=0.05)
except ray.exceptions.GetTimeoutError:
    pass
else:
    raise AssertionError("no timeout")
assert isinstance(ray.get_runtime_context().get_job_id(), str)
assert ray.cluster_resources()["CPU"] == 2
assert isinstance(refs[0], ray.ObjectRef)
ray.shutdown()
assert not ray.is_initialized()
print("RAY PROGRAM OK")
"""


def test_typical_ray_program_as_script(tmp_path):
    res = _run_file(tmp_path, "prog.py", RAY_PROGRAM)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "caught MyError" in res.stdout
    assert "RAY PROGRAM OK" in res.stdout


RAY_CORE_NAMES = [
    "init",
    "shutdown",
    "is_initialized",
    "remote",
    "get",
    "put",
    "wait",
    "method",
    "get_actor",
    "kill",
    "cancel",
    "get_gpu_ids",
    "cluster_resources",
    "available_resources",
    "nodes",
    "get_runtime_context",
    "ObjectRef",
    "exceptions",
]

RAY_EXCEPTIONS = [
    "RayError",
    "RayTaskError",
    "RaySystemError",
    "WorkerCrashedError",
    "TaskCancelledError",
    "GetTimeoutError",
    "ObjectLostError",
    "OwnerDiedError",
    "RayActorError",
    "ActorDiedError",
    "ObjectStoreFullError",
    "RuntimeEnvSetupError",
]


@pytest.mark.parametrize("name", RAY_CORE_NAMES)
def test_ray_core_names_exist(name):
    assert hasattr(fleet, name), name


@pytest.mark.parametrize("name", RAY_EXCEPTIONS)
def test_ray_exception_names_exist(name):
    cls = getattr(fleet.exceptions, name)
    assert issubclass(cls, Exception)
    assert issubclass(cls, fleet.exceptions.RayError) or name == "RayError"


def test_exception_hierarchy():
    ex = fleet.exceptions
    assert issubclass(ex.GetTimeoutError, TimeoutError)
    assert issubclass(ex.OwnerDiedError, ex.ObjectLostError)
    assert issubclass(ex.ActorDiedError, ex.RayActorError)


def test_runtime_context_api_names():
    ctx_cls = type(fleet.get_runtime_context())
    for name in (
        "get_job_id",
        "get_node_id",
        "get_task_id",
        "get_worker_id",
        "namespace",
        "get_assigned_resources",
        "get_accelerator_ids",
    ):
        assert hasattr(ctx_cls, name), name
