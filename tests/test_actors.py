"""Actors: declaring, calling, handles, names and namespaces, lifetime,
resources, runtime_env, and concurrency (async, threaded, concurrency groups).

Ray docs: https://docs.ray.io/en/latest/ray-core/actors.html,
.../actors/named-actors.html, .../actors/terminating-actors.html,
.../actors/task-orders.html, .../actors/async_api.html,
.../actors/concurrency_group_api.html, .../namespaces.html and the API
reference of ray.remote / ray.method / ray.get_actor / ray.kill.
"""

import asyncio
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import pytest

import fleet
from fleet.exceptions import ActorDiedError, RayActorError, RayTaskError
from fleet_test_utils import Proc, fleet_env, run_argv, run_python, wait_dead, wait_until

# One shared cluster per module (conftest.fleet_cluster): 2 CPUs.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every get/wait in this module


def cpus() -> float:
    return fleet.available_resources().get("CPU", 0.0)


def wait_cpus(amount: float, timeout: float = 10.0) -> bool:
    """available_resources is eventually consistent: poll with a deadline."""
    return wait_until(lambda: cpus() == amount, timeout)


# ---------------------------------------------------------------- classes


@fleet.remote
class Counter:
    def __init__(self, start=0, step=1):
        self.value = start
        self.step = step

    def inc(self):
        self.value += self.step
        return self.value

    def get(self):
        return self.value

    def add(self, x, y=0):
        return x + y

    def pid(self):
        return os.getpid()

    def fail(self, msg):
        raise ValueError(msg)

    def actor_id(self):
        return fleet.get_runtime_context().get_actor_id()

    def env(self, key):
        return os.environ.get(key)

    def sleep(self, t):
        time.sleep(t)
        return t

    def quit(self):
        fleet.actor.exit_actor()


@fleet.remote(num_cpus=1, max_restarts=0)
class WithOptions:
    def hello(self):
        return "hello"


class Plain:
    def __init__(self, x):
        self.x = x

    def get(self):
        return self.x


@fleet.remote
def pid_task():
    return os.getpid()


# ---------------------------------------------------------------- declaring


def test_decorator_without_options():
    c = Counter.remote()
    assert isinstance(c, fleet.ActorHandle)
    ref = c.inc.remote()
    assert isinstance(ref, fleet.ObjectRef)
    assert fleet.get(ref, timeout=T) == 1


def test_decorator_with_options():
    assert wait_cpus(2.0), cpus()
    a = WithOptions.remote()
    assert fleet.get(a.hello.remote(), timeout=T) == "hello"
    assert wait_cpus(1.0), cpus()  # num_cpus=1 from the decorator
    fleet.kill(a)
    assert wait_cpus(2.0), cpus()


def test_remote_called_on_a_class():
    P = fleet.remote(Plain)
    assert isinstance(P, fleet.ActorClass)
    p = P.remote(7)
    assert fleet.get(p.get.remote(), timeout=T) == 7
    P2 = fleet.remote(num_cpus=0)(Plain)
    assert fleet.get(P2.remote("x").get.remote(), timeout=T) == "x"


def test_calling_the_class_directly_raises_type_error():
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        Counter()
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        Counter(5)


def test_calling_a_method_directly_raises_type_error():
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"inc\.remote\(\)"):
        c.inc()
    # The actor is not affected.
    assert fleet.get(c.inc.remote(), timeout=T) == 1


def test_unknown_method_raises_attribute_error():
    c = Counter.remote()
    with pytest.raises(AttributeError, match="no_such_method"):
        c.no_such_method.remote()
    with pytest.raises(AttributeError):
        c.no_such_method  # noqa: B018
    assert not hasattr(c, "also_missing")


def test_constructor_args_kwargs_and_refs():
    start = fleet.put(10)
    c = Counter.remote(start, step=5)  # a top-level ref argument is resolved
    assert fleet.get(c.inc.remote(), timeout=T) == 15
    c2 = Counter.remote(start=pid_task.remote(), step=0)
    assert fleet.get(c2.get.remote(), timeout=T) > 0


def test_options_returns_a_new_class_and_leaves_the_original():
    named = Counter.options(name="options-copy-test")
    assert named is not Counter
    a = named.remote()
    b = Counter.remote()  # the original is not named: no name clash
    c = Counter.remote()
    assert fleet.get([a.inc.remote(), b.inc.remote(), c.inc.remote()], timeout=T) == [1, 1, 1]
    assert fleet.get_actor("options-copy-test") == a
    fleet.kill(a)


@pytest.mark.parametrize(
    "opts",
    [
        {"not_an_option": 1},
        {"num_cpus": -1},
        {"max_concurrency": 0},
        {"max_task_retries": -2},
        {"lifetime": "forever"},
        {"resources": {"CPU": 1}},
        {"concurrency_groups": {"io": 0}},
    ],
    ids=lambda o: next(iter(o)),
)
@pytest.mark.parametrize("where", ["decorator", "options"])
def test_invalid_actor_options_raise_value_error(where, opts):
    key = next(iter(opts))
    with pytest.raises(ValueError, match=key):
        if where == "decorator":
            fleet.remote(**opts)(Plain)
        else:
            Counter.options(**opts)


@pytest.mark.parametrize(
    "opts",
    [{"max_restarts": "x"}, {"name": 5}, {"get_if_exists": "yes"}, {"num_cpus": "two"}],
    ids=lambda o: next(iter(o)),
)
@pytest.mark.parametrize("where", ["decorator", "options"])
def test_actor_options_of_the_wrong_type_are_rejected(where, opts):
    # (Ray raises TypeError for a wrong type; fleet's options raise ValueError.)
    key = next(iter(opts))
    with pytest.raises((TypeError, ValueError), match=key):
        if where == "decorator":
            fleet.remote(**opts)(Plain)
        else:
            Counter.options(**opts)


def test_get_if_exists_without_a_name_raises_value_error():
    with pytest.raises(ValueError, match="name"):
        Counter.options(get_if_exists=True).remote()


def test_method_decorator_bad_input():
    with pytest.raises((TypeError, ValueError, AssertionError)):
        fleet.method(2)
    with pytest.raises(ValueError, match="not_an_option"):
        fleet.method(not_an_option=1)
    with pytest.raises(ValueError, match="num_returns"):
        fleet.method(num_returns=-1)
    c = Counter.remote()
    with pytest.raises(ValueError, match="not_an_option"):
        c.inc.options(not_an_option=1)
    with pytest.raises((TypeError, ValueError), match="num_returns"):
        c.inc.options(num_returns="many")


def test_handle_equality_and_repr():
    # Handles hash and compare by actor: a second handle object to the same
    # actor (looked up by name) equals the first.
    name = f"handle-eq-{os.getpid()}-{time.monotonic_ns()}"
    c = Counter.options(name=name).remote()
    try:
        same = fleet.get_actor(name)
        assert same is not c
        assert same == c and hash(same) == hash(c)
        assert c != Counter.remote()
        assert len({c, same}) == 1
        assert "Counter" in repr(c)
    finally:
        fleet.kill(c)


# ---------------------------------------------------------------- calling


def test_state_is_kept_across_calls():
    c = Counter.remote(100, step=2)
    refs = [c.inc.remote() for _ in range(5)]
    assert fleet.get(refs, timeout=T) == [102, 104, 106, 108, 110]
    assert fleet.get(c.get.remote(), timeout=T) == 110
    # Two actors of one class have separate state.
    d = Counter.remote()
    assert fleet.get(d.get.remote(), timeout=T) == 0


@fleet.remote
class Recorder:
    def __init__(self):
        self.items = []

    def record(self, x):
        self.items.append(x)
        return len(self.items)

    def items_(self):
        return self.items


def test_thousand_calls_from_one_caller_run_in_order():
    r = Recorder.remote()
    refs = [r.record.remote(i) for i in range(1000)]
    assert fleet.get(refs, timeout=T) == list(range(1, 1001))
    assert fleet.get(r.items_.remote(), timeout=T) == list(range(1000))


@fleet.remote
def slow_value(x, delay):
    time.sleep(delay)
    return x


def test_order_is_kept_when_an_earlier_call_waits_for_its_argument():
    # A call does not run before the calls the same caller submitted earlier,
    # even when its own arguments are ready first.
    r = Recorder.remote()
    fleet.get(r.record.remote("warm-up"), timeout=T)
    first = r.record.remote(slow_value.remote("first", 0.5))
    second = r.record.remote("second")
    assert fleet.get([first, second], timeout=T) == [2, 3]
    assert fleet.get(r.items_.remote(), timeout=T) == ["warm-up", "first", "second"]


def test_ref_arguments_top_level_resolved_nested_kept():
    @fleet.remote
    class Inspect:
        def kinds(self, a, b, c=None):
            return (
                type(a).__name__,
                isinstance(b[0], fleet.ObjectRef),
                fleet.get(b[0], timeout=T),
                c,
            )

    i = Inspect.remote()
    out = fleet.get(
        i.kinds.remote(fleet.put(1), [fleet.put("nested")], c=slow_value.remote(3, 0)),
        timeout=T,
    )
    assert out == ("int", True, "nested", 3)


@fleet.remote
class Multi:
    @fleet.method(num_returns=2)
    def two(self):
        return "a", "b"

    def three(self):
        return 1, 2, 3

    @fleet.method(num_returns=0)
    def nothing(self):
        return None


def test_method_decorator_num_returns():
    m = Multi.remote()
    refs = m.two.remote()
    assert isinstance(refs, list) and len(refs) == 2
    assert all(isinstance(r, fleet.ObjectRef) for r in refs)
    assert fleet.get(refs, timeout=T) == ["a", "b"]
    a, b = m.two.remote()
    assert fleet.get(b, timeout=T) == "b"
    assert m.nothing.remote() is None


def test_method_options_num_returns():
    m = Multi.remote()
    refs = m.three.options(num_returns=3).remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert fleet.get(refs, timeout=T) == [1, 2, 3]
    # options() does not change the method itself.
    single = m.three.remote()
    assert isinstance(single, fleet.ObjectRef)
    assert fleet.get(single, timeout=T) == (1, 2, 3)
    # options override the decorator.
    one = m.two.options(num_returns=1).remote()
    assert isinstance(one, fleet.ObjectRef)
    assert fleet.get(one, timeout=T) == ("a", "b")


def test_method_num_returns_mismatch_is_an_error():
    m = Multi.remote()
    refs = m.three.options(num_returns=2).remote()
    with pytest.raises(ValueError):
        fleet.get(refs[0], timeout=T)
    # The actor lives on.
    assert fleet.get(m.two.remote()[0], timeout=T) == "a"


class Base:
    def __init__(self):
        self.base = "base"

    def from_base(self):
        return self.base

    def overridden(self):
        return "base"


@fleet.remote
class Derived(Base):
    def overridden(self):
        return "derived"


def test_inherited_methods():
    d = Derived.remote()
    assert fleet.get([d.from_base.remote(), d.overridden.remote()], timeout=T) == [
        "base",
        "derived",
    ]


def test_exception_in_a_method_leaves_the_actor_alive():
    c = Counter.remote()
    assert fleet.get(c.inc.remote(), timeout=T) == 1
    with pytest.raises(ValueError, match="bad call") as info:
        fleet.get(c.fail.remote("bad call"), timeout=T)
    err = info.value
    assert isinstance(err, RayTaskError)
    assert not isinstance(err, RayActorError)
    assert isinstance(err.cause, ValueError)
    assert "fail" in str(err)  # the remote traceback names the method
    # The actor, and its state, survive.
    assert fleet.get(c.inc.remote(), timeout=T) == 2


@fleet.remote(max_retries=0)
def failing_task():
    raise KeyError("argument failed")


def test_failed_argument_fails_only_that_call():
    c = Counter.remote()
    ref = c.add.remote(failing_task.remote())
    with pytest.raises(KeyError):
        fleet.get(ref, timeout=T)
    assert fleet.get(c.add.remote(1, 2), timeout=T) == 3


# ---------------------------------------------------------------- handles


@fleet.remote
def call_through_handle(handle, x):
    return fleet.get(handle.add.remote(x, 1), timeout=T)


@fleet.remote
def call_through_handles(handles):
    return [fleet.get(h.inc.remote(), timeout=T) for h in handles]


@fleet.remote
def make_counter(start):
    c = Counter.remote(start)
    fleet.get(c.inc.remote(), timeout=T)
    return c


@fleet.remote
class Caller:
    def __init__(self, handle):
        self.handle = handle

    def call(self, x):
        return fleet.get(self.handle.add.remote(x, 100), timeout=T)

    def call_given(self, handle):
        return fleet.get(handle.inc.remote(), timeout=T)


def test_handle_passed_to_a_task():
    c = Counter.remote()
    assert fleet.get(call_through_handle.remote(c, 41), timeout=T) == 42
    # Handles nested in a list; calls from the task change the same actor.
    assert fleet.get(call_through_handles.remote([c, c]), timeout=T) == [1, 2]
    assert fleet.get(c.get.remote(), timeout=T) == 2


def test_handle_passed_to_another_actor():
    c = Counter.remote()
    caller = Caller.remote(c)
    assert fleet.get(caller.call.remote(1), timeout=T) == 101
    assert fleet.get(caller.call_given.remote(c), timeout=T) == 1
    assert fleet.get(c.inc.remote(), timeout=T) == 2


def test_handle_returned_from_a_task():
    handle = fleet.get(make_counter.remote(10), timeout=T)
    assert isinstance(handle, fleet.ActorHandle)
    # The actor made in the task already ran one call there.
    assert fleet.get(handle.inc.remote(), timeout=T) == 12


def test_runtime_context_actor_id():
    c = Counter.remote()
    inside = fleet.get(c.actor_id.remote(), timeout=T)
    assert isinstance(inside, str) and inside
    assert inside == c._actor_id.hex()
    other = Counter.remote()
    assert fleet.get(other.actor_id.remote(), timeout=T) != inside
    # Not in an actor: None.
    assert fleet.get_runtime_context().get_actor_id() is None

    @fleet.remote
    def in_task():
        return fleet.get_runtime_context().get_actor_id()

    assert fleet.get(in_task.remote(), timeout=T) is None


def test_runtime_context_actor_name():
    @fleet.remote
    class Named:
        def name(self):
            return fleet.get_runtime_context().get_actor_name()

    n = Named.options(name="ctx-name").remote()
    assert fleet.get(n.name.remote(), timeout=T) == "ctx-name"
    assert fleet.get(Named.remote().name.remote(), timeout=T) in (None, "")
    fleet.kill(n)


def test_large_values_to_and_from_an_actor():
    c = Counter.remote()
    blob = os.urandom(3_000_000)
    assert fleet.get(c.add.remote(blob, b"!"), timeout=T) == blob + b"!"
    ref = fleet.put(blob)
    assert fleet.get(c.add.remote(ref, b""), timeout=T) == blob
    big = Counter.remote(start=blob, step=b"")
    assert fleet.get(big.get.remote(), timeout=T) == blob


def test_unpicklable_actor_class_raises_type_error():
    class Unpicklable:
        lock = threading.Lock()

        def f(self):
            return 1

    with pytest.raises(TypeError, match="Unpicklable"):
        fleet.remote(Unpicklable).remote()


# ---------------------------------------------------------------- named actors


def test_named_actor_and_get_actor():
    c = Counter.options(name="named-1").remote(5)
    assert fleet.get(c.inc.remote(), timeout=T) == 6
    h = fleet.get_actor("named-1")
    assert isinstance(h, fleet.ActorHandle)
    assert h == c
    assert fleet.get(h.inc.remote(), timeout=T) == 7
    assert fleet.get(c.get.remote(), timeout=T) == 7
    fleet.kill(c)


def test_handle_from_get_actor_keeps_method_options():
    m = Multi.options(name="named-multi").remote()
    h = fleet.get_actor("named-multi")
    refs = h.two.remote()  # @fleet.method(num_returns=2)
    assert isinstance(refs, list) and fleet.get(refs, timeout=T) == ["a", "b"]
    assert h.nothing.remote() is None
    fleet.kill(m)


def test_duplicate_name_raises_value_error():
    c = Counter.options(name="named-dup").remote()
    fleet.get(c.inc.remote(), timeout=T)
    with pytest.raises(ValueError, match="named-dup"):
        Counter.options(name="named-dup").remote()
    # The first actor is untouched.
    assert fleet.get(c.inc.remote(), timeout=T) == 2
    # Another class cannot take the name either.
    with pytest.raises(ValueError):
        Recorder.options(name="named-dup").remote()
    fleet.kill(c)


def test_get_if_exists_returns_the_same_actor():
    a = Counter.options(name="named-gie", get_if_exists=True).remote(1)
    assert fleet.get(a.inc.remote(), timeout=T) == 2
    # Constructor arguments of the second call are not used: it is the same actor.
    b = Counter.options(name="named-gie", get_if_exists=True).remote(1000)
    assert b == a
    assert fleet.get(b.inc.remote(), timeout=T) == 3
    assert fleet.get(a.get.remote(), timeout=T) == 3
    fleet.kill(a)


def test_get_actor_of_unknown_name_raises_value_error():
    with pytest.raises(ValueError, match="no-such-actor"):
        fleet.get_actor("no-such-actor")
    with pytest.raises(ValueError):
        fleet.get_actor("")


def test_name_is_freed_when_the_actor_dies():
    c = Counter.options(name="named-reuse").remote()
    fleet.get(c.inc.remote(), timeout=T)
    fleet.kill(c)

    def gone():
        try:
            fleet.get_actor("named-reuse")
        except ValueError:
            return True
        return False

    assert wait_until(gone, 10), "the killed actor's name is still registered"
    d = Counter.options(name="named-reuse").remote(50)
    assert fleet.get(fleet.get_actor("named-reuse").inc.remote(), timeout=T) == 51
    fleet.kill(d)


def test_namespace_option_within_one_driver():
    a = Counter.options(name="ns-actor", namespace="other-ns").remote(1)
    assert fleet.get(a.inc.remote(), timeout=T) == 2
    # Not in this driver's namespace...
    with pytest.raises(ValueError):
        fleet.get_actor("ns-actor")
    # ...but found in its own.
    h = fleet.get_actor("ns-actor", namespace="other-ns")
    assert fleet.get(h.inc.remote(), timeout=T) == 3
    # The same name in another namespace is a different actor.
    b = Counter.options(name="ns-actor").remote(100)
    assert fleet.get(fleet.get_actor("ns-actor").inc.remote(), timeout=T) == 101
    fleet.kill(a)
    fleet.kill(b)


@fleet.remote
def lookup_and_call(name):
    return fleet.get(fleet.get_actor(name).inc.remote(), timeout=T)


def test_named_actor_found_from_a_task():
    # Tasks run in their job's namespace.
    c = Counter.options(name="named-from-task").remote()
    assert fleet.get(lookup_and_call.remote("named-from-task"), timeout=T) == 1
    assert fleet.get(c.get.remote(), timeout=T) == 1
    fleet.kill(c)


NS_CREATE = """
import fleet
fleet.init(address="auto", namespace="ns1")

@fleet.remote
class Counter:
    def __init__(self):
        self.n = 0
    def inc(self):
        self.n += 1
        return self.n

d = Counter.options(name="shared", lifetime="detached").remote()
o = Counter.options(name="owned").remote()
print("CREATED", fleet.get([d.inc.remote(), o.inc.remote()], timeout=30))
"""

NS_SAME = """
import time
import fleet
fleet.init(address="auto", namespace="ns1")
assert fleet.get_runtime_context().namespace == "ns1"
print("SHARED", fleet.get(fleet.get_actor("shared").inc.remote(), timeout=30))
# A non-detached actor ends with the driver that made it.
deadline = time.monotonic() + 10
while True:
    try:
        fleet.get_actor("owned")
    except ValueError:
        print("OWNED-GONE")
        break
    if time.monotonic() > deadline:
        print("OWNED-STILL-THERE")
        break
    time.sleep(0.05)
"""

NS_OTHER = """
import fleet
fleet.init(address="auto", namespace="ns2")
try:
    fleet.get_actor("shared")
    print("VISIBLE")
except ValueError:
    print("NOT-VISIBLE")
h = fleet.get_actor("shared", namespace="ns1")
print("EXPLICIT", fleet.get(h.inc.remote(), timeout=30))
"""

NS_ANONYMOUS = """
import fleet
fleet.init(address="auto")
try:
    fleet.get_actor("shared")
    print("VISIBLE")
except ValueError:
    print("NOT-VISIBLE")
h = fleet.get_actor("shared", namespace="ns1")
fleet.kill(h)
print("KILLED")
"""


@pytest.fixture
def cli_cluster():
    """A cluster started with `fleet start --head` in a private FLEET_TMPDIR."""
    tmpdir = tempfile.mkdtemp(prefix="flact", dir="/tmp")  # short: unix socket paths
    env = fleet_env({"FLEET_TMPDIR": tmpdir})
    cli = [sys.executable, "-m", "fleet.scripts"]
    res = run_argv(cli + ["start", "--head", "--num-cpus", "2", "--port", "0"], 30, env)
    assert res.returncode == 0, res.stdout + res.stderr
    with open(os.path.join(tmpdir, "cluster.json")) as f:
        daemons = [Proc(pid, "daemon") for pid in json.load(f)["pids"]]
    try:
        yield env
    finally:
        run_argv(cli + ["stop"], 30, env)
        left = wait_dead(daemons, 10)
        for p in left:
            os.kill(p.pid, 9)
        shutil.rmtree(tmpdir, ignore_errors=True)
        assert not left, left


def _run_driver(code, env):
    res = run_python(code, timeout=45, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_namespaces_across_drivers(cli_cluster):
    env = cli_cluster
    out = _run_driver(NS_CREATE, env)
    assert "CREATED [1, 1]" in out, out
    # A second driver in the same namespace sees the detached actor, with its state.
    out = _run_driver(NS_SAME, env)
    assert "SHARED 2" in out, out
    assert "OWNED-GONE" in out, out
    # A driver in another namespace sees it only when it names the namespace.
    out = _run_driver(NS_OTHER, env)
    assert "NOT-VISIBLE" in out and "EXPLICIT 3" in out, out
    out = _run_driver(NS_ANONYMOUS, env)
    assert "NOT-VISIBLE" in out and "KILLED" in out, out
    out = run_python(
        "import fleet\nfleet.init(address='auto', namespace='ns1')\nfleet.get_actor('shared')\n",
        timeout=45,
        env=env,
    )
    assert out.returncode != 0 and "ValueError" in out.stderr, out.stdout + out.stderr


ORPHAN_DRIVER = """
import json, os, sys
import fleet
fleet.init(num_cpus=2)

@fleet.remote
class A:
    def pid(self):
        return os.getpid()

@fleet.remote
class B:
    async def pid(self):
        return os.getpid()

actors = [A.remote(), A.options(num_cpus=1).remote(), A.options(max_concurrency=3).remote(),
          B.remote(), A.options(name="n", lifetime="detached").remote()]
pids = fleet.get([a.pid.remote() for a in actors], timeout=30)
print("PIDS " + json.dumps(pids), flush=True)
if sys.argv[1] == "os_exit":
    os._exit(0)
"""


@pytest.mark.parametrize("mode", ["exit", "os_exit"])
def test_actor_processes_end_with_their_driver(mode):
    res = run_argv([sys.executable, "-c", ORPHAN_DRIVER, mode], timeout=45)
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("PIDS "))
    procs = [Proc(pid, "actor") for pid in json.loads(line[len("PIDS ") :])]
    assert len({p.pid for p in procs}) == 5
    left = wait_dead(procs, 10)
    for p in left:
        os.kill(p.pid, 9)
    assert not left, [(p, p.cmdline()) for p in left]


# ---------------------------------------------------------------- kill and exit


def test_kill_then_calls_raise_actor_died_error():
    c = Counter.remote()
    assert fleet.get(c.inc.remote(), timeout=T) == 1
    fleet.kill(c)
    with pytest.raises(RayActorError) as info:
        fleet.get(c.inc.remote(), timeout=T)
    assert isinstance(info.value, ActorDiedError)
    # Every later call too; calls submitted in a batch as well.
    refs = [c.inc.remote() for _ in range(3)]
    for r in refs:
        with pytest.raises(ActorDiedError):
            fleet.get(r, timeout=T)


def test_kill_interrupts_a_running_call_and_ends_the_process():
    c = Counter.remote()
    pid = fleet.get(c.pid.remote(), timeout=T)
    running = c.sleep.remote(30)
    time.sleep(0.2)
    t0 = time.monotonic()
    fleet.kill(c)
    with pytest.raises(RayActorError):
        fleet.get(running, timeout=T)
    assert time.monotonic() - t0 < 10
    assert not wait_dead([Proc(pid, "actor")], 10), "the killed actor's process lives on"


@fleet.remote
def kill_from_task(handle):
    fleet.kill(handle)
    return "killed"


def test_kill_from_a_task():
    c = Counter.remote()
    pid = fleet.get(c.pid.remote(), timeout=T)
    assert fleet.get(kill_from_task.remote(c), timeout=T) == "killed"
    assert not wait_dead([Proc(pid, "actor")], 10)
    with pytest.raises(ActorDiedError):
        fleet.get(c.inc.remote(), timeout=T)


def test_kill_bad_input():
    with pytest.raises(ValueError, match="actor"):
        fleet.kill("not an actor")
    with pytest.raises(ValueError):
        fleet.kill(fleet.put(1))


def test_exit_actor_inside_a_method():
    c = Counter.remote()
    pid = fleet.get(c.pid.remote(), timeout=T)
    quitting = c.quit.remote()
    after = c.inc.remote()  # queued behind the exit
    with pytest.raises(RayActorError):
        fleet.get(quitting, timeout=T)
    with pytest.raises(RayActorError):
        fleet.get(after, timeout=T)
    with pytest.raises(RayActorError):
        fleet.get(c.inc.remote(), timeout=T)
    assert not wait_dead([Proc(pid, "actor")], 10), "the exited actor's process lives on"


def test_exit_actor_in_the_constructor():
    @fleet.remote
    class QuitsAtOnce:
        def __init__(self):
            fleet.actor.exit_actor()

        def f(self):
            return 1

    q = QuitsAtOnce.remote()
    with pytest.raises(ActorDiedError):
        fleet.get(q.f.remote(), timeout=T)


@fleet.remote
class AsyncQuitter:
    async def ping(self):
        return "pong"

    async def quit(self):
        fleet.actor.exit_actor()


def test_exit_actor_in_an_async_actor():
    a = AsyncQuitter.remote()
    assert fleet.get(a.ping.remote(), timeout=T) == "pong"
    with pytest.raises(RayActorError):
        fleet.get(a.quit.remote(), timeout=T)
    with pytest.raises(RayActorError):
        fleet.get(a.ping.remote(), timeout=T)


def test_exit_actor_outside_an_actor_raises_type_error():
    with pytest.raises(TypeError):
        fleet.actor.exit_actor()

    @fleet.remote(max_retries=0)
    def in_task():
        fleet.actor.exit_actor()

    with pytest.raises(TypeError):
        fleet.get(in_task.remote(), timeout=T)
    # The worker survives a misplaced exit_actor(): tasks still run.
    assert fleet.get(pid_task.remote(), timeout=T) > 0


@fleet.remote(max_concurrency=2)
class ThreadedQuitter:
    def slow(self, t):
        time.sleep(t)
        return "finished"

    def quit(self):
        fleet.actor.exit_actor()


@fleet.remote
class AsyncSlowQuitter:
    async def slow(self, t):
        await asyncio.sleep(t)
        return "finished"

    async def quit(self):
        fleet.actor.exit_actor()


@pytest.mark.parametrize("cls", [ThreadedQuitter, AsyncSlowQuitter], ids=["threaded", "async"])
def test_exit_actor_lets_running_calls_of_a_concurrent_actor_finish(cls):
    # Ray: "For concurrent and async actors, tasks currently executing will run
    # to completion before the actor exits."
    a = cls.remote()
    running = a.slow.remote(0.6)
    time.sleep(0.2)
    quitting = a.quit.remote()
    with pytest.raises(RayActorError):
        fleet.get(quitting, timeout=T)
    assert fleet.get(running, timeout=T) == "finished"
    with pytest.raises(RayActorError):
        fleet.get(a.slow.remote(0), timeout=T)


def test_ray_terminate_ends_the_actor_after_earlier_calls():
    c = Counter.remote()
    assert fleet.get(c.__ray_ready__.remote(), timeout=T) is True
    pid = fleet.get(c.pid.remote(), timeout=T)
    before = [c.sleep.remote(0.3), c.inc.remote()]
    terminating = c.__ray_terminate__.remote()
    after = c.inc.remote()
    assert fleet.get(before, timeout=T) == [0.3, 1]
    with pytest.raises(RayActorError):
        fleet.get(terminating, timeout=T)
    with pytest.raises(RayActorError):
        fleet.get(after, timeout=T)
    assert not wait_dead([Proc(pid, "actor")], 10)


# ---------------------------------------------------------------- resources and lifetime


def test_actor_holds_its_cpu_until_killed():
    assert wait_cpus(2.0), cpus()
    c = Counter.options(num_cpus=1).remote()
    fleet.get(c.inc.remote(), timeout=T)
    assert wait_cpus(1.0), cpus()
    # Held while alive, not only at creation.
    time.sleep(0.6)
    assert cpus() == 1.0
    fleet.kill(c)
    assert wait_cpus(2.0), cpus()


def test_default_actors_hold_no_cpu():
    assert wait_cpus(2.0), cpus()
    actors = [Counter.remote() for _ in range(5)]
    pids = fleet.get([a.pid.remote() for a in actors], timeout=T)
    assert len(set(pids)) == 5  # five processes, all alive at once on 2 CPUs
    assert wait_cpus(2.0), cpus()
    # Tasks still get both CPUs.
    assert len(fleet.get([pid_task.remote() for _ in range(4)], timeout=T)) == 4
    for a in actors:
        fleet.kill(a)


def test_actor_waits_for_a_free_cpu():
    assert wait_cpus(2.0), cpus()
    a = Counter.options(num_cpus=1).remote()
    b = Counter.options(num_cpus=1).remote()
    try:
        assert fleet.get([a.inc.remote(), b.inc.remote()], timeout=T) == [1, 1]
        c = Counter.options(num_cpus=1).remote()
        pending = c.inc.remote()
        ready, _ = fleet.wait([pending], timeout=1.0)
        assert ready == [], "a third 1-CPU actor was placed on a 2-CPU node"
        fleet.kill(a)
        assert fleet.get(pending, timeout=T) == 1
        fleet.kill(c)
    finally:
        fleet.kill(a)
        fleet.kill(b)
    assert wait_cpus(2.0), cpus()


def test_actor_exits_when_its_last_handle_goes():
    assert wait_cpus(2.0), cpus()
    c = Counter.options(num_cpus=1).remote()
    pid = fleet.get(c.pid.remote(), timeout=T)
    assert wait_cpus(1.0), cpus()
    proc = Proc(pid, "actor")
    assert proc.alive()
    del c
    gc.collect()
    assert not wait_dead([proc], 10), "the actor outlived its last handle"
    assert wait_cpus(2.0), cpus()


def test_out_of_scope_actor_finishes_calls_already_made():
    c = Counter.remote()
    pid = fleet.get(c.pid.remote(), timeout=T)
    refs = [c.sleep.remote(0.3), c.inc.remote()]
    del c
    gc.collect()
    assert fleet.get(refs, timeout=T) == [0.3, 1]
    assert not wait_dead([Proc(pid, "actor")], 10)


def test_named_actor_is_still_garbage_collected_without_handles():
    # Ray: "the actor will still be garbage-collected if no handles to it
    # exist" (named-actors.html); a handle from get_actor does not count.
    c = Counter.options(name="named-no-owner").remote()
    fleet.get(c.inc.remote(), timeout=T)
    pid = fleet.get(c.pid.remote(), timeout=T)
    del c
    gc.collect()
    assert not wait_dead([Proc(pid, "actor")], 10)
    assert wait_until(lambda: _no_actor_named("named-no-owner"), 10)


def _no_actor_named(name):
    try:
        fleet.get_actor(name)
        return False
    except ValueError:
        return True


class EnvReader:
    def read(self, key):
        return os.environ.get(key)


def test_runtime_env_env_vars_reach_the_actor():
    c = Counter.options(
        runtime_env={"env_vars": {"FLEET_TEST_ACTOR_VAR": "actor-value"}}
    ).remote()
    assert fleet.get(c.env.remote("FLEET_TEST_ACTOR_VAR"), timeout=T) == "actor-value"

    # And only the actor: plain tasks do not see it.
    @fleet.remote
    def env_in_task():
        return os.environ.get("FLEET_TEST_ACTOR_VAR")

    assert fleet.get([env_in_task.remote() for _ in range(4)], timeout=T) == [None] * 4
    # Set in the decorator; options() replaces it per actor.
    EnvActor = fleet.remote(runtime_env={"env_vars": {"FLEET_TEST_DECO": "deco"}})(EnvReader)
    assert fleet.get(EnvActor.remote().read.remote("FLEET_TEST_DECO"), timeout=T) == "deco"
    other = EnvActor.options(runtime_env={"env_vars": {"FLEET_TEST_DECO": "opt"}}).remote()
    assert fleet.get(other.read.remote("FLEET_TEST_DECO"), timeout=T) == "opt"


def test_runtime_env_bad_input():
    with pytest.raises((TypeError, ValueError)):
        Counter.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises((TypeError, ValueError)):
        Counter.options(runtime_env="not a dict")


# ---------------------------------------------------------------- concurrency


@fleet.remote
class Gauge:
    """Counts how many calls run at the same time (threaded actors)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def work(self, t):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(t)
        with self.lock:
            self.active -= 1
        return threading.get_ident()

    def peak_(self):
        return self.peak


def test_plain_actor_runs_one_call_at_a_time():
    g = Gauge.remote()
    fleet.get([g.work.remote(0.05) for _ in range(6)], timeout=T)
    assert fleet.get(g.peak_.remote(), timeout=T) == 1


def test_threaded_actor_runs_max_concurrency_calls_at_once():
    g = Gauge.options(max_concurrency=4).remote()
    idents = fleet.get([g.work.remote(0.3) for _ in range(8)], timeout=T)
    assert fleet.get(g.peak_.remote(), timeout=T) == 4
    assert len(set(idents)) >= 2


@fleet.remote
class AsyncGauge:
    def __init__(self):
        self.active = 0
        self.peak = 0

    async def work(self, t):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(t)
        self.active -= 1
        return t

    async def peak_(self):
        return self.peak

    def sync_method(self):
        return "sync in async actor"


def test_async_actor_runs_calls_concurrently():
    a = AsyncGauge.remote()
    fleet.get(a.peak_.remote(), timeout=T)  # created
    t0 = time.monotonic()
    out = fleet.get([a.work.remote(0.5) for _ in range(20)], timeout=T)
    elapsed = time.monotonic() - t0
    assert out == [0.5] * 20
    assert elapsed < 5, elapsed  # serially: 10 s
    assert fleet.get(a.peak_.remote(), timeout=T) == 20
    # A sync method of an async actor works too.
    assert fleet.get(a.sync_method.remote(), timeout=T) == "sync in async actor"


def test_async_actor_max_concurrency():
    a = AsyncGauge.options(max_concurrency=3).remote()
    fleet.get([a.work.remote(0.1) for _ in range(9)], timeout=T)
    assert fleet.get(a.peak_.remote(), timeout=T) == 3


@fleet.remote(concurrency_groups={"io": 1, "compute": 2})
class Grouped:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = {}
        self.peak = {}
        self.event = threading.Event()

    def _work(self, group, t):
        with self.lock:
            self.active[group] = self.active.get(group, 0) + 1
            self.peak[group] = max(self.peak.get(group, 0), self.active[group])
        time.sleep(t)
        with self.lock:
            self.active[group] -= 1
        return threading.get_ident()

    @fleet.method(concurrency_group="io")
    def io(self, t=0.0):
        return self._work("io", t)

    @fleet.method(concurrency_group="compute")
    def compute(self, t=0.0):
        return self._work("compute", t)

    def default(self, t=0.0):
        return self._work("default", t)

    @fleet.method(concurrency_group="io")
    def wait_event(self, timeout):
        return self.event.wait(timeout)

    def set_event(self):
        self.event.set()
        return True

    def peaks(self):
        return self.peak


def test_concurrency_groups_run_on_their_own_threads():
    g = Grouped.remote()
    # The io group's only thread waits for an event that a default-group call sets:
    # only possible if the groups run concurrently.
    waiting = g.wait_event.remote(10)
    time.sleep(0.2)
    assert fleet.get(g.set_event.remote(), timeout=T) is True
    assert fleet.get(waiting, timeout=T) is True
    io_ids = set(fleet.get([g.io.remote() for _ in range(3)], timeout=T))
    default_ids = set(fleet.get([g.default.remote() for _ in range(3)], timeout=T))
    assert len(io_ids) == 1  # "io": 1 thread
    assert io_ids.isdisjoint(default_ids)
    # options(concurrency_group=...) moves a call into that group.
    moved = fleet.get(g.default.options(concurrency_group="io").remote(), timeout=T)
    assert moved in io_ids
    moved = fleet.get(g.io.options(concurrency_group="compute").remote(), timeout=T)
    assert moved not in io_ids


def test_concurrency_group_limits():
    g = Grouped.remote()
    refs = [g.io.remote(0.2) for _ in range(3)]
    refs += [g.compute.remote(0.2) for _ in range(4)]
    refs += [g.default.remote(0.2) for _ in range(2)]
    fleet.get(refs, timeout=T)
    assert fleet.get(g.peaks.remote(), timeout=T) == {"io": 1, "compute": 2, "default": 1}


@fleet.remote(concurrency_groups={"io": 2})
class AsyncGrouped:
    def __init__(self):
        self.active = {}
        self.peak = {}

    async def _work(self, group, t):
        self.active[group] = self.active.get(group, 0) + 1
        self.peak[group] = max(self.peak.get(group, 0), self.active[group])
        await asyncio.sleep(t)
        self.active[group] -= 1

    @fleet.method(concurrency_group="io")
    async def io(self, t):
        await self._work("io", t)

    async def default(self, t):
        await self._work("default", t)

    async def peaks(self):
        return self.peak


def test_concurrency_groups_in_an_async_actor():
    a = AsyncGrouped.remote()
    refs = [a.io.remote(0.2) for _ in range(5)] + [a.default.remote(0.2) for _ in range(5)]
    fleet.get(refs, timeout=T)
    # "io" is limited to 2; the default group of an async actor allows many.
    assert fleet.get(a.peaks.remote(), timeout=T) == {"io": 2, "default": 5}


def test_unknown_concurrency_group_is_a_clear_error():
    g = Grouped.remote()
    with pytest.raises(ValueError, match="no-such-group"):
        fleet.get(g.default.options(concurrency_group="no-such-group").remote(), timeout=T)
    # The actor is fine afterwards.
    assert fleet.get(g.set_event.remote(), timeout=T) is True

    with pytest.raises(ValueError, match="undeclared"):

        @fleet.remote
        class NoGroups:
            @fleet.method(concurrency_group="undeclared")
            def f(self):
                return 1

        fleet.get(NoGroups.remote().f.remote(), timeout=T)


def test_state_api_lists_actors_with_their_state():
    from fleet.util.state import get_actor, list_actors

    c = Counter.options(name="listed").remote()
    fleet.get(c.inc.remote(), timeout=T)
    hexid = c._actor_id.hex()
    mine = [a for a in list_actors() if a.actor_id == hexid]
    assert len(mine) == 1 and mine[0].state == "ALIVE" and mine[0]["name"] == "listed"
    assert mine[0].class_name == "Counter" and mine[0].pid > 0
    assert any(a.actor_id == hexid for a in list_actors(filters=[("state", "=", "ALIVE")]))
    fleet.kill(c)
    assert wait_until(lambda: get_actor(hexid).state == "DEAD", 10)
    assert "fleet.kill" in get_actor(hexid).death_cause
    with pytest.raises(ValueError, match="unknown field"):
        list_actors(filters=[("no_such_field", "=", 1)])


def test_actor_output_reaches_the_driver_labelled_with_its_class():
    code = """
import time, fleet
fleet.init(num_cpus=1)

@fleet.remote
class Greeter:
    def hi(self):
        print("hello from the greeter", flush=True)
        return 1

@fleet.remote
def task():
    print("hello from a task", flush=True)
    return 1

g = Greeter.remote()
assert fleet.get([g.hi.remote(), task.remote()], timeout=30) == [1, 1]
time.sleep(0.5)  # log lines travel on their own
fleet.shutdown()
"""
    res = run_python(code, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    greeter = [ln for ln in lines if "hello from the greeter" in ln]
    assert greeter and greeter[0].startswith("(Greeter pid="), lines
    assert any(ln.startswith("(pid=") and "hello from a task" in ln for ln in lines), lines


def test_list_named_actors():
    from fleet.util import list_named_actors

    a = Counter.options(name="listed-by-name").remote()
    fleet.get(a.inc.remote(), timeout=T)
    assert "listed-by-name" in list_named_actors()
    assert {"name": "listed-by-name", "namespace": fleet.get_runtime_context().namespace} in (
        list_named_actors(all_namespaces=True)
    )
    fleet.kill(a)
    assert wait_until(lambda: "listed-by-name" not in list_named_actors(), 10)
