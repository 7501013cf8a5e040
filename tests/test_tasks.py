"""Remote functions: declaring, options, calling, arguments, nesting, scale.

Ray docs: https://docs.ray.io/en/latest/ray-core/tasks.html and the API
reference of ray.remote / RemoteFunction.options.
"""

import os
import time

import pytest

import fleet
from fleet import ObjectRef
from fleet.exceptions import WorkerCrashedError
from fleet_test_utils import wait_until

# One shared cluster per module (conftest.fleet_cluster).
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every get/wait in this module


# ---------------------------------------------------------------- declaring


@fleet.remote
def square(x):
    return x * x


@fleet.remote(num_cpus=1, max_retries=0)
def add(a, b):
    return a + b


def plain_mul(a, b):
    return a * b


@fleet.remote(num_returns=2)
def two():
    return 1, 2


@fleet.remote
def three_values():
    return "a", "b", "c"


@fleet.remote
def task_name():
    return fleet.get_runtime_context().get_task_name()


@fleet.remote
def pid():
    return os.getpid()


@fleet.remote(num_cpus=1, max_retries=0)
def observed(gate=None):
    """What the task sees of its own options; with `gate`, first waits (up to
    20 s) for that file to exist."""
    deadline = time.monotonic() + 20
    while gate is not None and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    ctx = fleet.get_runtime_context()
    return ctx.get_assigned_resources(), ctx.get_task_name()


@fleet.remote(max_retries=0)
def crash_and_count(path):
    """Appends a line to `path` per run, then kills its worker."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    os._exit(1)


def _runs(path):
    with open(path) as f:
        return len(f.read().splitlines())


def test_decorator_without_options():
    assert fleet.get(square.remote(7), timeout=T) == 49


def test_decorator_with_options():
    assert fleet.get(add.remote(2, 3), timeout=T) == 5
    # The options themselves: the task holds 1 CPU ...
    resources, _name = fleet.get(observed.remote(), timeout=T)
    assert resources == {"CPU": 1.0}


def test_max_retries_zero_runs_a_crashed_task_once(tmp_path):
    path = str(tmp_path / "runs")
    with pytest.raises(WorkerCrashedError):
        fleet.get(crash_and_count.remote(path), timeout=T)
    assert _runs(path) == 1  # not retried
    # The same task with one retry runs twice: the count is the option's doing.
    path2 = str(tmp_path / "runs2")
    with pytest.raises(WorkerCrashedError):
        fleet.get(crash_and_count.options(max_retries=1).remote(path2), timeout=T)
    assert _runs(path2) == 2


def test_remote_called_as_function():
    mul = fleet.remote(plain_mul)
    assert fleet.get(mul.remote(6, 7), timeout=T) == 42
    mul2 = fleet.remote(num_cpus=1)(plain_mul)
    assert fleet.get(mul2.remote(3, 3), timeout=T) == 9


def test_readme_program():
    assert sum(fleet.get([square.remote(i) for i in range(1000)], timeout=60)) == 332833500


def test_remote_returns_object_ref():
    ref = square.remote(2)
    assert isinstance(ref, ObjectRef)
    assert fleet.get(ref, timeout=T) == 4


def test_lambda_and_closure():
    k = 10
    f = fleet.remote(lambda x: x + k)
    assert fleet.get(f.remote(1), timeout=T) == 11


def test_options_returns_new_handle_and_leaves_original():
    sq2 = square.options(num_returns=2)
    assert sq2 is not square
    # The original still has one return value.
    ref = square.remote(3)
    assert isinstance(ref, ObjectRef)
    assert fleet.get(ref, timeout=T) == 9

    f = fleet.remote(lambda: (1, 2))
    f2 = f.options(num_returns=2)
    refs = f2.remote()
    assert isinstance(refs, list) and len(refs) == 2
    assert fleet.get(refs, timeout=T) == [1, 2]
    single = f.remote()
    assert isinstance(single, ObjectRef)
    assert fleet.get(single, timeout=T) == (1, 2)


def test_options_chain_and_override(tmp_path):
    g = observed.options(num_cpus=0.5).options(name="renamed")
    # Both options reach the task: its resources and its name ...
    gate = str(tmp_path / "gate")
    ref = g.remote(gate)
    # ... and the node: half a CPU is taken while it runs (of 2).
    seen = []
    ok = wait_until(lambda: seen.append(fleet.available_resources().get("CPU")) or
                    seen[-1] == 1.5, 10)
    open(gate, "w").close()
    assert ok, seen
    assert fleet.get(ref, timeout=T) == ({"CPU": 0.5}, "renamed")
    # The original keeps its own options.
    resources, name = fleet.get(observed.remote(), timeout=T)
    assert resources == {"CPU": 1.0} and name.endswith("observed") and name != "renamed"


def test_num_returns_two():
    refs = two.remote()
    assert isinstance(refs, list)
    assert len(refs) == 2
    assert all(isinstance(r, ObjectRef) for r in refs)
    assert refs[0] != refs[1]
    assert fleet.get(refs, timeout=T) == [1, 2]
    a, b = two.remote()
    assert fleet.get(a, timeout=T) == 1 and fleet.get(b, timeout=T) == 2


def test_num_returns_three_via_options():
    refs = three_values.options(num_returns=3).remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert fleet.get(refs, timeout=T) == ["a", "b", "c"]


def test_num_returns_mismatch_is_an_error():
    refs = three_values.options(num_returns=2).remote()
    assert len(refs) == 2
    with pytest.raises(ValueError):  # raised in the task (a RayTaskError)
        fleet.get(refs[0], timeout=T)


def test_name_option():
    assert fleet.get(task_name.options(name="my-task").remote(), timeout=T) == "my-task"
    # The default task name is the function's name.
    assert "task_name" in fleet.get(task_name.remote(), timeout=T)


def test_calling_directly_raises_type_error():
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        square(3)


@pytest.mark.parametrize("where", ["decorator", "options"])
def test_unknown_option_raises_value_error(where):
    with pytest.raises(ValueError, match="not_an_option"):
        if where == "decorator":
            fleet.remote(not_an_option=1)(plain_mul)
        else:
            square.options(not_an_option=1)


@pytest.mark.parametrize(
    "opts",
    [
        {"num_cpus": -1},
        {"num_returns": "x"},
        {"resources": {"CPU": 1}},
        {"num_gpus": -1},
        {"max_retries": -2},
    ],
    ids=["num_cpus=-1", "num_returns=x", "resources-CPU", "num_gpus=-1", "max_retries=-2"],
)
@pytest.mark.parametrize("where", ["decorator", "options"])
def test_invalid_option_values_raise_value_error(where, opts):
    with pytest.raises(ValueError):
        if where == "decorator":
            fleet.remote(**opts)(plain_mul)
        else:
            square.options(**opts)


@pytest.mark.parametrize("where", ["decorator", "options"])
def test_option_of_the_wrong_type_raises_type_error(where):
    # As Ray: the type is checked before the value.
    with pytest.raises(TypeError, match="max_retries"):
        if where == "decorator":
            fleet.remote(max_retries="x")(plain_mul)
        else:
            square.options(max_retries="x")


def test_decorator_with_positional_args_is_an_error():
    # (Ray asserts; any of these error types documents the misuse.)
    with pytest.raises((TypeError, ValueError, AssertionError)):
        fleet.remote(1, 2)


def test_num_returns_zero_returns_none():
    @fleet.remote(num_returns=0)
    def nothing():
        return None

    assert nothing.remote() is None


def test_same_ref_passed_twice():
    r = fleet.put(21)
    assert fleet.get(add.remote(r, r), timeout=T) == 42


# ---------------------------------------------------------------- arguments


@fleet.remote
def describe(x):
    return type(x).__name__, x if not isinstance(x, ObjectRef) else None


@fleet.remote
def get_nested(lst):
    assert all(isinstance(r, ObjectRef) for r in lst), [type(r) for r in lst]
    return sum(fleet.get(lst, timeout=T))


@fleet.remote
def kw(a, b=0, *, c=0):
    return a + 10 * b + 100 * c


def test_top_level_ref_argument_is_resolved():
    ref = fleet.put(41)
    assert fleet.get(describe.remote(ref), timeout=T) == ("int", 41)
    # The result of another task as argument.
    assert fleet.get(square.remote(square.remote(3)), timeout=T) == 81


def test_refs_nested_in_list_are_passed_as_refs():
    refs = [fleet.put(i) for i in range(5)] + [square.remote(3)]
    assert fleet.get(get_nested.remote(refs), timeout=T) == 10 + 9


def test_ref_nested_in_dict_arrives_as_ref():
    @fleet.remote
    def f(d):
        return isinstance(d["r"], ObjectRef), fleet.get(d["r"], timeout=T)

    assert fleet.get(f.remote({"r": fleet.put("v")}), timeout=T) == (True, "v")


def test_kwargs_with_refs():
    a, b, c = fleet.put(1), square.remote(2), fleet.put(3)
    assert fleet.get(kw.remote(a, b=b, c=c), timeout=T) == 1 + 40 + 300
    assert fleet.get(kw.remote(a=a), timeout=T) == 1


def test_many_args_and_large_arg():
    import numpy as np

    arr = np.arange(1_000_000, dtype=np.int64)

    @fleet.remote
    def total(*xs):
        return sum(int(x.sum()) if hasattr(x, "sum") else x for x in xs)

    assert fleet.get(total.remote(arr, 1, 2, 3), timeout=T) == int(arr.sum()) + 6


# ---------------------------------------------------------------- nesting


@fleet.remote
def level3(x):
    return x + 1


@fleet.remote
def level2(x):
    return fleet.get(level3.remote(x), timeout=T) * 2


@fleet.remote
def level1(x):
    return fleet.get(level2.remote(x), timeout=T) + 100


def test_task_submits_tasks_nested_three_levels():
    assert fleet.get(level1.remote(1), timeout=T) == 104
    # Several at once: more blocked parents than CPUs.
    refs = [level1.remote(i) for i in range(6)]
    assert fleet.get(refs, timeout=60) == [(i + 1) * 2 + 100 for i in range(6)]


@fleet.remote
def fan_leaf(x):
    return x * x


@fleet.remote
def fan_out(n):
    return sum(fleet.get([fan_leaf.remote(i) for i in range(n)], timeout=T))


def test_task_fans_out():
    assert fleet.get(fan_out.remote(50), timeout=T) == sum(i * i for i in range(50))


@fleet.remote
def used_by_driver_too(x):
    return x + 1


@fleet.remote
def calls_used_by_driver_too(x):
    return fleet.get(used_by_driver_too.remote(x), timeout=T)


def test_task_calls_remote_function_the_driver_already_called():
    # Ray's "nested remote functions" pattern, where the inner remote function
    # was also called from the driver before the outer one is first submitted.
    assert fleet.get(used_by_driver_too.remote(1), timeout=T) == 2
    assert fleet.get(calls_used_by_driver_too.remote(5), timeout=T) == 6


@fleet.remote
def returns_ref():
    return fleet.put("inner")


def test_task_returns_object_ref():
    inner = fleet.get(returns_ref.remote(), timeout=T)
    assert isinstance(inner, ObjectRef)
    assert fleet.get(inner, timeout=T) == "inner"


# ---------------------------------------------------------------- workers


def test_workers_are_reused():
    pids = [fleet.get(pid.remote(), timeout=T) for _ in range(30)]
    # Sequential tasks run on a small pool of prestarted, reused workers.
    assert len(set(pids)) <= 2 + 2, set(pids)
    assert os.getpid() not in pids


@fleet.remote
def rendezvous(directory, me, other, wait_s):
    """Returns True if task `other` was running at the same time as this one."""
    open(os.path.join(directory, me), "w").close()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(directory, other)):
            time.sleep(0.2)  # let the other one see our marker too
            return True
        time.sleep(0.02)
    return False


def test_tasks_run_in_parallel(tmp_path):
    # Two 1-CPU tasks on a 2-CPU node run at the same time (each waits, up to
    # 6 s, for the other to start).
    d = str(tmp_path)
    refs = [rendezvous.remote(d, "a", "b", 6.0), rendezvous.remote(d, "b", "a", 6.0)]
    assert fleet.get(refs, timeout=T) == [True, True]


def test_batch_of_tasks_uses_all_cpus():
    @fleet.remote
    def sleeper():
        time.sleep(0.5)
        return os.getpid()

    fleet.get(sleeper.remote(), timeout=T)  # warm up
    t0 = time.monotonic()
    pids = fleet.get([sleeper.remote() for _ in range(6)], timeout=T)
    elapsed = time.monotonic() - t0
    # 6 x 0.5 s on 2 CPUs is 1.5 s; serial execution would take 3 s.
    assert elapsed < 2.6, (elapsed, pids)
    assert len(set(pids)) >= 2, pids


# ---------------------------------------------------------------- scale


@fleet.remote
def ident(i):
    return i


def test_twenty_thousand_tasks():
    n = 20_000
    t0 = time.monotonic()
    refs = [ident.remote(i) for i in range(n)]
    out = fleet.get(refs, timeout=80)
    elapsed = time.monotonic() - t0
    assert out == list(range(n))
    print(f"{n} tasks in {elapsed:.2f} s")
