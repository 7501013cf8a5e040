"""Task errors, retries and bad input.

Ray docs: https://docs.ray.io/en/latest/ray-core/fault_tolerance/tasks.html
and https://docs.ray.io/en/latest/ray-core/api/exceptions.html.
"""

import os
import threading
import time

import pytest

import fleet
from fleet.exceptions import RayError, RayTaskError, WorkerCrashedError

# One shared cluster per module (conftest.fleet_cluster).
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 30


class CustomError(Exception):
    def __init__(self, code):
        super().__init__(f"custom failure code {code}")
        self.code = code


class PlainCustomError(Exception):
    pass


@fleet.remote(max_retries=0)
def raise_value_error(x):
    raise ValueError(f"boom-{x}")


@fleet.remote
def raise_custom(code):
    raise CustomError(code)


@fleet.remote
def raise_plain_custom():
    raise PlainCustomError("plain")


@fleet.remote
def plus_one(x):
    return x + 1


@fleet.remote
def ok():
    return "ok"


# ---------------------------------------------------------------- application errors


def test_task_error_is_ray_task_error_and_value_error():
    ref = raise_value_error.remote(1)
    with pytest.raises(ValueError) as info:
        fleet.get(ref, timeout=T)
    e = info.value
    assert isinstance(e, RayTaskError)
    assert isinstance(e, fleet.exceptions.RayTaskError)
    assert isinstance(e, RayError)
    assert isinstance(e, ValueError)
    assert isinstance(e.cause, ValueError)
    assert str(e.cause) == "boom-1"
    text = str(e)
    assert "raise_value_error" in text
    assert "pid=" in text
    assert "Traceback" in text
    assert 'raise ValueError(f"boom-{x}")' in text  # the remote source line
    assert "boom-1" in text


def test_task_error_caught_as_ray_task_error():
    with pytest.raises(RayTaskError):
        fleet.get(raise_value_error.remote(2), timeout=T)


def test_task_error_in_list_get():
    refs = [plus_one.remote(1), raise_value_error.remote(3)]
    with pytest.raises(ValueError):
        fleet.get(refs, timeout=T)
    # The good one is still fine.
    assert fleet.get(refs[0], timeout=T) == 2


def test_error_every_time_get_is_called():
    ref = raise_value_error.remote(4)
    for _ in range(2):
        with pytest.raises(ValueError):
            fleet.get(ref, timeout=T)


def test_failed_dependency_fails_dependents_with_original_type():
    bad = raise_value_error.remote(5)
    dependent = plus_one.remote(bad)
    second = plus_one.remote(dependent)
    for ref in (dependent, second):
        with pytest.raises(ValueError) as info:
            fleet.get(ref, timeout=T)
        assert isinstance(info.value, RayTaskError)
        assert "boom-5" in str(info.value)


@fleet.remote(max_retries=0)
def child_error(x):
    raise ValueError(f"boom-{x}")


@fleet.remote
def get_child_error():
    # (child_error is only ever submitted from inside a task.)
    return fleet.get(child_error.remote(6), timeout=T)


def test_error_in_nested_task_propagates():
    with pytest.raises(ValueError) as info:
        fleet.get(get_child_error.remote(), timeout=T)
    assert isinstance(info.value, RayTaskError)
    assert "boom-6" in str(info.value)


def test_custom_exception_class():
    with pytest.raises(CustomError) as info:
        fleet.get(raise_custom.remote(7), timeout=T)
    e = info.value
    assert isinstance(e, RayTaskError)
    assert isinstance(e.cause, CustomError)
    assert e.cause.code == 7
    assert "custom failure code 7" in str(e)

    with pytest.raises(PlainCustomError) as info2:
        fleet.get(raise_plain_custom.remote(), timeout=T)
    assert isinstance(info2.value, RayTaskError)


def test_error_with_multiple_returns():
    @fleet.remote(num_returns=2, max_retries=0)
    def two_fail():
        raise KeyError("k")

    a, b = two_fail.remote()
    for r in (a, b):
        with pytest.raises(KeyError):
            fleet.get(r, timeout=T)


class UnpicklableError(Exception):
    def __init__(self):
        super().__init__("has a lock")
        self.lock = threading.Lock()


def test_unpicklable_exception_still_reported():
    @fleet.remote(max_retries=0)
    def raise_unpicklable():
        raise UnpicklableError()

    with pytest.raises(RayError) as info:
        fleet.get(raise_unpicklable.remote(), timeout=T)
    assert "has a lock" in str(info.value) or "UnpicklableError" in str(info.value)
    assert fleet.get(ok.remote(), timeout=T) == "ok"


# ---------------------------------------------------------------- retries


def _attempt(directory):
    """Records an attempt; returns how many attempts (this one included) ran."""
    path = os.path.join(directory, f"attempt-{time.monotonic_ns()}-{os.getpid()}")
    open(path, "w").close()
    return len([f for f in os.listdir(directory) if f.startswith("attempt-")])


def _attempts(directory):
    return len([f for f in os.listdir(directory) if f.startswith("attempt-")])


@fleet.remote
def crash_first_time(directory):
    if _attempt(directory) == 1:
        os._exit(1)
    return "survived"


@fleet.remote
def always_crash(directory):
    _attempt(directory)
    os._exit(1)


def test_worker_crash_is_retried(tmp_path):
    assert fleet.get(crash_first_time.remote(str(tmp_path)), timeout=T) == "survived"
    assert _attempts(str(tmp_path)) == 2


def test_worker_crash_after_max_retries_raises_worker_crashed(tmp_path):
    ref = always_crash.options(max_retries=1).remote(str(tmp_path))
    with pytest.raises(WorkerCrashedError):
        fleet.get(ref, timeout=T)
    assert _attempts(str(tmp_path)) == 2
    assert fleet.get(ok.remote(), timeout=T) == "ok"


def test_max_retries_zero_fails_at_once(tmp_path):
    ref = crash_first_time.options(max_retries=0).remote(str(tmp_path))
    with pytest.raises(WorkerCrashedError) as info:
        fleet.get(ref, timeout=T)
    assert isinstance(info.value, RayError)
    assert _attempts(str(tmp_path)) == 1


@fleet.remote(max_retries=3)
def fail_twice(directory, exc_name):
    n = _attempt(directory)
    if n <= 2:
        raise {"ValueError": ValueError, "KeyError": KeyError}[exc_name](f"attempt {n}")
    return n


def test_application_errors_not_retried_by_default(tmp_path):
    with pytest.raises(ValueError):
        fleet.get(fail_twice.remote(str(tmp_path), "ValueError"), timeout=T)
    assert _attempts(str(tmp_path)) == 1


def test_retry_exceptions_true(tmp_path):
    ref = fail_twice.options(retry_exceptions=True).remote(str(tmp_path), "ValueError")
    assert fleet.get(ref, timeout=T) == 3
    assert _attempts(str(tmp_path)) == 3


def test_retry_exceptions_true_gives_up_after_max_retries(tmp_path):
    ref = fail_twice.options(retry_exceptions=True, max_retries=1).remote(
        str(tmp_path), "ValueError"
    )
    with pytest.raises(ValueError) as info:
        fleet.get(ref, timeout=T)
    assert "attempt 2" in str(info.value)
    assert _attempts(str(tmp_path)) == 2


def test_retry_exceptions_list_retries_listed_type(tmp_path):
    ref = fail_twice.options(retry_exceptions=[ValueError]).remote(str(tmp_path), "ValueError")
    assert fleet.get(ref, timeout=T) == 3
    assert _attempts(str(tmp_path)) == 3


def test_retry_exceptions_list_does_not_retry_other_types(tmp_path):
    ref = fail_twice.options(retry_exceptions=[ValueError]).remote(str(tmp_path), "KeyError")
    with pytest.raises(KeyError):
        fleet.get(ref, timeout=T)
    assert _attempts(str(tmp_path)) == 1


def test_retry_exceptions_invalid_value():
    with pytest.raises((ValueError, TypeError)):
        ok.options(retry_exceptions="yes")


# ---------------------------------------------------------------- bad input


def test_unpicklable_argument_raises_type_error_at_remote():
    lock = threading.Lock()
    with pytest.raises(TypeError, match="lock"):
        plus_one.remote(lock)
    with pytest.raises(TypeError, match="lock"):
        plus_one.remote(x=lock)
    assert fleet.get(plus_one.remote(1), timeout=T) == 2


def test_unpicklable_return_value_raises_at_get():
    @fleet.remote(max_retries=0)
    def returns_lock():
        return threading.Lock()

    with pytest.raises(Exception) as info:
        fleet.get(returns_lock.remote(), timeout=T)
    assert "lock" in str(info.value)
    assert fleet.get(ok.remote(), timeout=T) == "ok"


def test_function_capturing_unpicklable_object_raises_type_error():
    lock = threading.Lock()

    @fleet.remote
    def uses_lock():
        return lock.locked()

    with pytest.raises(TypeError):
        uses_lock.remote()
    # Still an error the second time, and nothing is left hanging.
    with pytest.raises(TypeError):
        uses_lock.remote()
    assert fleet.get(ok.remote(), timeout=T) == "ok"


def _fail_to_unpickle():
    raise RuntimeError("cannot be rebuilt on the worker")


class FailsOnWorker:
    def __reduce__(self):
        return (_fail_to_unpickle, ())


def test_argument_failing_to_deserialize_on_worker():
    with pytest.raises(Exception) as info:
        fleet.get(plus_one.options(max_retries=0).remote(FailsOnWorker()), timeout=T)
    assert "cannot be rebuilt" in str(info.value)
    assert fleet.get(ok.remote(), timeout=T) == "ok"


# Ray's exception classes, with Ray's bases: code that catches them by name
# (or a test's pytest.raises) works unchanged.
RAY_EXCEPTION_BASES = {
    "ObjectFetchTimedOutError": ("ObjectLostError",),
    "ObjectFreedError": ("ObjectLostError",),
    "ReferenceCountingAssertionError": ("ObjectLostError", "AssertionError"),
    "ObjectReconstructionFailedError": ("ObjectLostError",),
    "OutOfMemoryError": ("RayError",),
    "NodeDiedError": ("RayError",),
    "TaskUnschedulableError": ("RayError",),
    "ActorUnschedulableError": ("RayError",),
    "ActorAlreadyExistsError": ("ValueError", "RayError"),
    "UnserializableException": ("RayError",),
    "RayChannelTimeoutError": ("RaySystemError", "TimeoutError"),
}


@pytest.mark.parametrize("name", sorted(RAY_EXCEPTION_BASES))
def test_ray_exception_classes_have_rays_bases(name):
    import builtins

    cls = getattr(fleet.exceptions, name)
    for base in RAY_EXCEPTION_BASES[name]:
        expected = getattr(fleet.exceptions, base, None) or getattr(builtins, base)
        assert issubclass(cls, expected), (name, base)
    assert name in fleet.exceptions.__all__


def test_taken_actor_name_raises_actor_already_exists_error():
    @fleet.remote
    class Named:
        def ping(self):
            return 1

    first = Named.options(name="errors-taken-name").remote()
    assert fleet.get(first.ping.remote(), timeout=30) == 1
    with pytest.raises(fleet.exceptions.ActorAlreadyExistsError, match="already taken") as info:
        Named.options(name="errors-taken-name").remote()
    assert isinstance(info.value, ValueError)  # (older code catches ValueError)
    fleet.kill(first)


class _TwoArgError(Exception):
    def __init__(self, one, two):
        super().__init__(one, two)
        self.one, self.two = one, two

    def __reduce__(self):
        return self.__class__, (self.one, self.two)


def test_dual_exception_instance_pickles_as_both_classes():
    import pickle

    err = RayTaskError(function_name="f", traceback_str="tb", cause=_TwoArgError(1, 2))
    back = pickle.loads(pickle.dumps(err.make_dual_exception_instance()))
    assert isinstance(back, RayTaskError) and isinstance(back, _TwoArgError)
    assert (back.one, back.two) == (1, 2)


def test_final_user_exception_is_raised_as_ray_task_error_only(caplog):
    class FinalError(Exception):
        def __init_subclass__(cls, /, *args, **kwargs):
            raise TypeError("this class cannot be subclassed")

    @fleet.remote
    def raise_final():
        raise FinalError("from the task")

    with caplog.at_level("WARNING"):
        with pytest.raises(RayTaskError) as info:
            fleet.get(raise_final.remote(), timeout=60)
    assert isinstance(info.value.cause, FinalError)
    assert str(info.value.cause) == "from the task"
    assert "You can use `ray_task_error.cause` to access the user exception" in caplog.text
