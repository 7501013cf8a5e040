"""Ray's API surface, as fleet gives it: the ID classes, the runtime context's
answers, validation of options and arguments at ``.remote()``, what an actor
class exposes, exception fields, init's keywords, worker process titles and
multiprocessing's imap with failing items.

The tests that need no cluster come first; the others share one module
cluster (2 CPUs); the init and auto-init tests start their own.
"""

from __future__ import annotations

import os
import pickle
import warnings

import pytest

import fleet
from fleet.util.placement_group import PlacementGroup

pytestmark = pytest.mark.timeout(120)

T = 30  # timeout (s) of every get in this module

ID_CLASSES = [fleet.JobID, fleet.TaskID, fleet.ActorID, fleet.NodeID, fleet.WorkerID,
              fleet.PlacementGroupID, fleet.UniqueID, fleet.FunctionID, fleet.ActorClassID]


# ----------------------------------------------------------- ids (no cluster)


@pytest.mark.parametrize("cls", ID_CLASSES)
def test_id_class_round_trips(cls):
    raw = os.urandom(cls.size())
    a = cls(raw)
    assert a.binary() == raw and a.hex() == raw.hex() and a.size() == len(raw)
    assert cls.from_hex(a.hex()) == a and cls.from_binary(raw) == a
    assert hash(cls(raw)) == hash(a) and {a: 1}[cls(raw)] == 1
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a) == f"{cls.__name__}({raw.hex()})"
    assert not a.is_nil() and cls.nil().is_nil() and cls.nil() != a


def test_ids_of_different_classes_never_equal():
    raw = os.urandom(16)
    assert fleet.NodeID(raw) != fleet.WorkerID(raw)
    assert fleet.ActorID(raw) != fleet.TaskID(raw)


@pytest.mark.parametrize("bad, exc", [("ab" * 8, TypeError), (b"short", ValueError)])
def test_id_rejects_wrong_type_or_length(bad, exc):
    with pytest.raises(exc):
        fleet.NodeID(bad)


def test_from_random_and_job_id_numbers():
    assert fleet.NodeID.from_random() != fleet.NodeID.from_random()
    assert fleet.JobID.from_int(7).int() == 7
    assert fleet.JobID.from_int(1).hex() == "01000000"
    t = fleet.TaskID(fleet.JobID.from_int(3).binary() + os.urandom(12))
    assert t.job_id() == fleet.JobID.from_int(3)


def test_ray_module_aliases():
    import fleet._raylet as raylet
    import fleet.types

    assert fleet.ObjectID is fleet.ObjectRef is fleet.types.ObjectRef is raylet.ObjectRef
    assert raylet.NodeID is fleet.NodeID and raylet.PlacementGroupID is fleet.PlacementGroupID
    assert raylet.ObjectRefGenerator is fleet.ObjectRefGenerator
    assert issubclass(raylet.ObjectRefStreamEndOfStreamError, fleet.exceptions.RayError)
    assert fleet.ObjectRef[int] is not None  # usable in annotations


def test_object_ref_nil_and_from_hex_need_no_cluster():
    nil = fleet.ObjectRef.nil()
    assert nil.is_nil() and nil.size() == fleet.ObjectRef.size()
    r = fleet.ObjectRef.from_hex(nil.hex())
    assert r == nil and isinstance(r, fleet.ObjectRef)


def test_placement_group_handle_dict_round_trip():
    pg = PlacementGroup(fleet.PlacementGroupID.from_random(), [{"CPU": 2}])
    back = PlacementGroup.from_dict(pg.to_dict())
    assert back.id == pg.id and back.bundle_cache == [{"CPU": 2}]
    assert isinstance(back.id, fleet.PlacementGroupID)
    assert PlacementGroup.empty().is_empty()


# ------------------------------------------------------ validation (no cluster)


def test_option_of_wrong_type_is_type_error_and_bad_value_value_error():
    @fleet.remote
    def f():
        return 1

    with pytest.raises(TypeError, match="The type of keyword 'num_cpus' must be"):
        f.options(num_cpus="2")
    with pytest.raises(TypeError, match="'max_retries'"):
        fleet.remote(max_retries="3")(lambda: 1)
    with pytest.raises(ValueError):
        f.options(num_cpus=-1)

    @fleet.remote
    class A:
        pass

    with pytest.raises(TypeError, match="'name'"):
        A.options(name=1)
    with pytest.raises(TypeError, match="'get_if_exists'"):
        A.options(get_if_exists=1)
    with pytest.raises(ValueError):
        A.options(max_restarts=-5)


def test_counting_option_values_use_rays_words():
    f = fleet.remote(lambda: 1)
    with pytest.raises(ValueError, match="The keyword 'max_calls' only accepts None, 0 or a"):
        fleet.remote(max_calls=-1)(lambda: 1)
    with pytest.raises(ValueError, match="The keyword 'num_returns' only accepts None, a non-ne"):
        f.options(num_returns=-1)
    with pytest.raises(TypeError, match=r"must be \(<class 'int'>, <class 'NoneType'>\), but"):
        fleet.remote(max_calls=0.5)(lambda: 1)


def test_resource_amounts_finer_than_a_ten_thousandth_are_refused():
    with pytest.raises(ValueError, match="resource num_gpus cannot go beyond 0.0001"):
        fleet.remote(num_gpus=0.0000001)(lambda: 1)
    with pytest.raises(ValueError, match="resource custom cannot go beyond 0.0001"):
        fleet.remote(resources={"custom": 0.0000001})(lambda: 1)
    fleet.remote(num_gpus=0.0001, resources={"custom": 0.5})(lambda: 1)


def test_num_returns_none_is_accepted():
    fleet.remote(num_returns=None)(lambda: 1)

    @fleet.remote
    class A:
        @fleet.method(num_returns=None)
        def m(self):
            return 1


def test_inheriting_from_an_actor_class_is_refused():
    @fleet.remote
    class Base:
        pass

    with pytest.raises(TypeError, match="Inheriting from actor classes is not currently"):
        class Derived(Base):  # noqa: F841
            pass
    with pytest.raises(fleet.actor.ActorClassInheritanceException, match="'Other'"):
        class Other(Base):  # noqa: F841
            pass


def test_actor_class_exposes_class_attributes_static_and_class_methods():
    class Grand:
        G = 1

    @fleet.remote
    class A(Grand):
        X = 3

        @staticmethod
        def s(v):
            return v + 1

        @classmethod
        def c(cls):
            return cls.X * 2

    assert A.X == 3 and A.G == 1 and A.s(1) == 2 and A.c() == 6
    with pytest.raises(AttributeError):
        A.missing  # noqa: B018


def test_reserved_bundle_resource_is_refused():
    with pytest.raises(ValueError, match="bundle is a system reserved resource"):
        fleet.util.placement_group([{"bundle": 1}])


def test_exception_fields_and_constructors():
    e = fleet.exceptions.ActorDiedError("gone", actor_id="ab" * 8)
    assert e.actor_id == "ab" * 8 and e.error_msg == "gone" and not e.actor_init_failed
    assert pickle.loads(pickle.dumps(e)).actor_id == "ab" * 8
    assert fleet.exceptions.RayActorError().actor_id is None
    c = fleet.exceptions.TaskCancelledError(fleet.TaskID.nil())
    assert c.task_id == fleet.TaskID.nil() and "was cancelled" in str(c)
    assert str(fleet.exceptions.TaskCancelledError("why")) == "why"
    lost = fleet.exceptions.ObjectLostError("ab" * 10, "owner", "site")
    assert lost.object_ref_hex == "ab" * 10 and lost.call_site == "site"
    assert "ab" * 10 in str(pickle.loads(pickle.dumps(lost)))
    assert "has been removed" in str(fleet.exceptions.TaskPlacementGroupRemoved())
    assert "has been removed" in str(fleet.exceptions.ActorPlacementGroupRemoved())
    err = fleet.exceptions.RayTaskError("f", "tb", KeyError("k"))
    dual = err.make_dual_exception_instance()
    assert isinstance(dual, KeyError) and isinstance(dual, fleet.exceptions.RayTaskError)


# ------------------------------------------------------------ init / auto-init


def test_runtime_context_starts_fleet(fresh):
    assert not fresh.is_initialized()
    ctx = fresh.get_runtime_context()
    assert fresh.is_initialized()
    assert ctx.get_job_id() == fresh.get_runtime_context().get_job_id()


def test_init_accepts_rays_keywords_and_refuses_unknown_ones(fresh):
    with pytest.raises(RuntimeError, match="Unknown keyword argument"):
        fresh.init(num_cpus=1, not_a_ray_keyword=True)
    assert not fresh.is_initialized()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fresh.init(num_cpus=1, dashboard_port=None, include_dashboard=False,
                   _enable_object_reconstruction=True)
    assert any("_enable_object_reconstruction" in str(x.message) for x in w)
    assert fresh.get(fresh.put(1), timeout=T) == 1


def test_no_auto_connect_when_turned_off(fresh, monkeypatch):
    monkeypatch.setenv("FLEET_ENABLE_AUTO_CONNECT", "0")
    with pytest.raises(RuntimeError, match="not initialized"):
        fresh.put(1)
    assert not fresh.is_initialized()


# ------------------------------------------------------ with a module cluster


@pytest.fixture(scope="module")
def cluster(fleet_cluster):
    return fleet_cluster


def _ctx_info():
    ctx = fleet.get_runtime_context()
    d = ctx.get()
    return {
        "keys": sorted(d),
        "task_matches": "task_id" in d and d["task_id"].hex() == ctx.get_task_id(),
        "actor_matches": "actor_id" not in d or d["actor_id"].hex() == ctx.get_actor_id(),
        "job": d["job_id"].hex(),
        "node": d["node_id"].hex(),
        "name": ctx.get_task_name(),
        "function": ctx.get_task_function_name(),
        "actor_name": ctx.get_actor_name(),
        "resources": ctx.get_assigned_resources(),
        "pg": ctx.get_placement_group_id(),
        "comm": open(f"/proc/{os.getpid()}/comm").read().strip(),
    }


@fleet.remote
def ctx_task():
    return _ctx_info()


@fleet.remote
class CtxActor:
    def info(self):
        return _ctx_info()

    async def ainfo(self):
        return _ctx_info()


def test_driver_context(cluster):
    ctx = fleet.get_runtime_context()
    d = ctx.get()
    assert sorted(d) == ["job_id", "namespace", "node_id"]
    assert isinstance(d["job_id"], fleet.JobID) and d["job_id"].hex() == ctx.get_job_id()
    assert isinstance(d["node_id"], fleet.NodeID) and d["node_id"].hex() == ctx.get_node_id()
    assert ctx.get_task_id() is None and ctx.get_actor_id() is None
    assert ctx.get_actor_name() is None and ctx.get_placement_group_id() is None
    assert ctx.get_task_name() is None and ctx.get_task_function_name() is None
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert ctx.node_id.hex() == ctx.get_node_id()
        assert ctx.job_id.hex() == ctx.get_job_id()
    assert any("Use get_node_id() instead" in str(x.message) for x in w)
    assert isinstance(ctx.get_worker_id(), str)


def test_task_context(cluster):
    info = fleet.get(ctx_task.remote(), timeout=T)
    assert info["keys"] == ["job_id", "namespace", "node_id", "task_id"]
    assert info["task_matches"]
    assert info["job"] == fleet.get_runtime_context().get_job_id()
    assert info["name"] == "ctx_task" and info["function"] == f"{__name__}.ctx_task"
    assert info["actor_name"] is None and info["pg"] is None
    assert info["resources"] == {"CPU": 1.0}
    assert info["comm"] == "fleet::ctx_task"
    named = fleet.get(ctx_task.options(name="renamed").remote(), timeout=T)
    assert named["name"] == "renamed" and named["comm"] == "fleet::renamed"


def test_actor_context(cluster):
    a = CtxActor.remote()
    info = fleet.get(a.info.remote(), timeout=T)
    assert info["keys"] == ["actor_id", "job_id", "namespace", "node_id", "task_id"]
    assert info["task_matches"] and info["actor_matches"]
    assert info["name"] == "CtxActor.info"
    assert info["function"] == f"{__name__}.CtxActor.info"
    assert info["actor_name"] == ""  # an actor without a name
    assert info["comm"].startswith("fleet::CtxActor")
    ainfo = fleet.get(a.ainfo.remote(), timeout=T)
    assert ainfo["name"] == "CtxActor.ainfo" and ainfo["function"].endswith("CtxActor.ainfo")
    assert fleet.get(a.info.options(name="custom").remote(), timeout=T)["name"] == "custom"
    named = CtxActor.options(name="api_compat_named").remote()
    assert fleet.get(named.info.remote(), timeout=T)["actor_name"] == "api_compat_named"
    fleet.kill(named)


def test_context_in_a_placement_group(cluster):
    from fleet.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = fleet.util.placement_group([{"CPU": 1}])
    assert isinstance(pg.id, fleet.PlacementGroupID)
    fleet.get(pg.ready(), timeout=T)
    try:
        s = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
        info = fleet.get(ctx_task.options(scheduling_strategy=s).remote(), timeout=T)
        assert info["pg"] == pg.id.hex()
        assert info["resources"] == {"CPU": 1.0}  # plain names, as Ray gives them
    finally:
        fleet.util.remove_placement_group(pg)


def test_object_ref_ids(cluster):
    r = fleet.put(1)
    assert isinstance(r.task_id(), fleet.TaskID) and isinstance(r.job_id(), fleet.JobID)
    assert r.job_id().hex() == fleet.get_runtime_context().get_job_id()
    assert r.size() == len(r.binary()) == fleet.ObjectID.size()
    a = CtxActor.remote()
    assert isinstance(a._actor_id, fleet.ActorID)
    assert fleet.get(a.info.remote(), timeout=T)["actor_matches"]


def sum3(x, y, *rest):
    return x + y + sum(rest)


def test_arguments_are_checked_against_the_signature(cluster):
    f = fleet.remote(sum3)
    with pytest.raises(TypeError, match="missing a required argument"):
        f.remote()
    with pytest.raises(TypeError):
        f.remote(1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        f.remote(1, 2, z=3)
    assert fleet.get(f.remote(1, 2, 3), timeout=T) == 6
    assert fleet.get(f._remote(args=[1], kwargs={"y": 2}), timeout=T) == 3

    @fleet.remote
    class Sig:
        def __init__(self, a, b=2):
            self.a = a + b

        def m(self, k, *, flag):
            return self.a + k + flag

    with pytest.raises(TypeError):
        Sig.remote()
    with pytest.raises(TypeError):
        Sig.remote(1, 2, 3)
    s = Sig.remote(1)
    with pytest.raises(TypeError):
        s.m.remote(1)  # flag is keyword-only and required
    assert fleet.get(s.m.remote(1, flag=10), timeout=T) == 14
    assert fleet.get(s.m._remote(args=[1], kwargs={"flag": 1}, name="x"), timeout=T) == 5
    s2 = Sig._remote(args=[1], kwargs={"b": 0}, num_cpus=0)
    assert fleet.get(s2.m.remote(0, flag=0), timeout=T) == 1

    @fleet.remote
    class NoInit:
        pass

    with pytest.raises(TypeError):
        NoInit.remote(1)


def test_actor_name_and_namespace_values(cluster):
    with pytest.raises(ValueError, match="Actor name cannot be an empty string"):
        CtxActor._remote(lifetime="detached", name="")
    with pytest.raises(ValueError):
        CtxActor._remote(name="x", namespace="")
    with pytest.raises(TypeError):
        CtxActor._remote(name="x", namespace=2)


def test_ray_call_runs_a_function_on_the_actor(cluster):
    @fleet.remote
    class Holder:
        def __init__(self):
            self.v = 41

    h = Holder.remote()
    assert fleet.get(h.__ray_call__.remote(lambda self, k: self.v + k, 1), timeout=T) == 42


def test_actor_errors_carry_the_actor_id(cluster):
    @fleet.remote
    class Fails:
        def boom(self):
            raise KeyError("k")

    @fleet.remote
    class BadInit:
        def __init__(self):
            raise RuntimeError("ctor")

        def f(self):
            return 1

    a = Fails.remote()
    with pytest.raises(KeyError) as info:
        fleet.get(a.boom.remote(), timeout=T)
    assert info.value.actor_id == a._actor_id.hex()
    fleet.kill(a)
    with pytest.raises(fleet.exceptions.ActorDiedError) as died:
        fleet.get(a.boom.remote(), timeout=T)
    assert died.value.actor_id == a._actor_id.hex()
    b = BadInit.remote()
    with pytest.raises(fleet.exceptions.ActorDiedError) as init_failed:
        fleet.get(b.f.remote(), timeout=T)
    assert init_failed.value.actor_init_failed
    assert init_failed.value.actor_id == b._actor_id.hex()


def fail_on_odd(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_pool_imap_yields_failed_items(cluster):
    from fleet.util.multiprocessing import Pool

    pool = Pool(2)
    try:
        out = list(pool.imap(fail_on_odd, range(6), chunksize=3))
        assert [x for x in out if not isinstance(x, Exception)] == [0, 2, 4]
        assert [str(x) for x in out if isinstance(x, ValueError)] == ["odd 1", "odd 3", "odd 5"]
        assert out[1].__class__ is ValueError
        unordered = list(pool.imap_unordered(fail_on_odd, range(6), chunksize=2))
        assert sum(isinstance(x, ValueError) for x in unordered) == 3
        with pytest.raises(ValueError):
            pool.map(fail_on_odd, range(4))  # map still raises, as Ray's
    finally:
        pool.terminate()
        pool.join()


@fleet.remote(num_cpus=1)
def hold(seconds):
    import time

    time.sleep(seconds)


def test_task_waiting_in_a_removed_placement_group(cluster):
    from fleet.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = fleet.util.placement_group([{"CPU": 1}])
    fleet.get(pg.ready(), timeout=T)
    s = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    busy = hold.options(scheduling_strategy=s, max_retries=0).remote(20)
    fleet.wait([busy], timeout=1)
    waiting = hold.options(scheduling_strategy=s, max_retries=0).remote(0)  # no CPU left
    fleet.wait([waiting], timeout=1)
    fleet.util.remove_placement_group(pg)
    with pytest.raises(fleet.exceptions.TaskPlacementGroupRemoved, match="has been removed"):
        fleet.get(waiting, timeout=T)


def test_remote_with_empty_parentheses_is_refused():
    with pytest.raises(TypeError):
        fleet.remote()


def test_dir_lists_the_user_class_and_methods(cluster):
    @fleet.remote
    class Foo:
        def method_one(self):
            pass

    assert {n for n in dir(Foo) if not n.startswith("_")} == {
        "method_one", "options", "remote", "bind"}
    assert set(dir(Foo.remote())) == {
        "method_one", "__init__", "__ray_ready__", "__ray_call__", "__ray_terminate__"}


def test_instance_attribute_does_not_hide_a_method(cluster):
    @fleet.remote
    class Shadow:
        def __init__(self):
            self.collected = False

        def collected(self):  # noqa: F811  (the attribute above has its name)
            return "method"

    assert fleet.get(Shadow.remote().collected.remote(), timeout=T) == "method"


def test_actor_id_carries_its_job(fresh):
    fresh.init(num_cpus=1)

    @fresh.remote
    class A:
        def job(self):
            return fresh.get_runtime_context().get_job_id()

    a = A.remote()
    job_hex = fleet.get(a.job.remote(), timeout=60)
    assert a._actor_id.job_id == fleet.JobID.from_hex(job_hex)
    assert a._actor_id.job_id.hex() == fresh.get_runtime_context().get_job_id()


def test_wait_waits_the_whole_timeout(fresh):
    import time

    fresh.init(num_cpus=1)

    @fresh.remote
    def slow():
        time.sleep(30)

    ref = slow.remote()
    start = time.monotonic()
    ready, _ = fleet.wait([ref], timeout=0.25)
    # The wait never ends before its timeout (sliced waits rounded down did).
    assert not ready and time.monotonic() - start >= 0.25
    fleet.cancel(ref, force=True)


def test_system_config_is_refused_when_connecting(fresh):
    from fleet.cluster_utils import Cluster

    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1)
        with pytest.raises(ValueError, match="_system_config"):
            fleet.init(address=cluster.address, _system_config={"scheduler_spread_threshold": 1})
        assert not fleet.is_initialized()
    finally:
        cluster.shutdown()


def test_killed_actor_error_names_ray_kill(fresh):
    fresh.init(num_cpus=1)

    @fresh.remote
    class A:
        def ping(self):
            return 1

    a = A.remote()
    assert fleet.get(a.ping.remote(), timeout=60) == 1
    fleet.kill(a)
    with pytest.raises(fleet.exceptions.RayActorError, match="it was killed by `ray.kill"):
        fleet.get(a.ping.remote(), timeout=60)


def test_actor_naming_a_resource_holds_a_cpu_by_default(fresh):
    # Ray's defaults: an actor that names no resource holds no CPU (it needs
    # one to be placed); one that names any resource (a GPU, a custom one)
    # also holds 1 CPU for its life unless num_cpus says otherwise.
    fresh.init(num_cpus=3, resources={"a": 2})

    @fresh.remote
    class Plain:
        def ping(self):
            return 1

    @fresh.remote(resources={"a": 1})
    class Custom:
        def ping(self):
            return 1

    def free_cpus():
        return fleet.available_resources().get("CPU", 0)

    plain = Plain.remote()
    assert fleet.get(plain.ping.remote(), timeout=60) == 1
    from fleet_test_utils import wait_until

    assert wait_until(lambda: free_cpus() == 3, timeout=10)
    custom = Custom.remote()
    assert fleet.get(custom.ping.remote(), timeout=60) == 1
    assert wait_until(lambda: free_cpus() == 2, timeout=10), fleet.available_resources()
    no_cpu = Custom.options(num_cpus=0).remote()
    assert fleet.get(no_cpu.ping.remote(), timeout=60) == 1
    assert wait_until(lambda: fleet.available_resources().get("a", 0) == 0, timeout=10)
    assert free_cpus() == 2
