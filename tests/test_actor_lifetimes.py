"""Actor lifetimes and exits, as in Ray.

Lifetimes: a non-detached actor (named or not) lives while a handle to it
exists anywhere, counting the copies sent to other processes (task
arguments, return values, objects, other actors' state); handles looked up by
name or from inside the actor do not count; the actor dies with the process
that created it (its owner); detached actors outlive both.

Exits: ``exit_actor()``, ``__ray_terminate__`` and the last handle going run
the actor's ``__ray_shutdown__``, ``__del__`` and ``atexit`` handlers;
``fleet.kill`` does not. Catching ``exit_actor()``'s exception does not stop
the exit; the calls behind it fail with ``ActorDiedError``.

Ray docs: .../actors/terminating-actors.html, .../actors/named-actors.html,
.../ray-core/fault_tolerance/actors.html (owner fate sharing).
"""

import atexit
import os
import signal
import time

import pytest

import fleet
from fleet.actor import exit_actor
from fleet.exceptions import ActorDiedError, AsyncioActorExit, RayActorError
from fleet_test_utils import run_python, wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every get in this module


def pid_gone(pid: int, timeout: float = 15.0) -> bool:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (not reaped yet) has exited too.
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] == "Z"
        except OSError:
            return True

    return wait_until(gone, timeout)


def pid_alive_for(pid: int, seconds: float) -> bool:
    return not pid_gone(pid, seconds)


@fleet.remote
class Target:
    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> str:
        return "pong"


def dead(handle) -> bool:
    try:
        fleet.get(handle.ping.remote(), timeout=T)
        return False
    except RayActorError:
        return True


# ------------------------------------------------------------------ handle counting


def test_last_handle_gone_ends_the_actor():
    a = Target.remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    del a
    assert pid_gone(pid)


def test_handle_passed_to_a_pending_task_keeps_the_actor():
    @fleet.remote
    def use_later(h, delay):
        time.sleep(delay)
        return fleet.get(h.ping.remote(), timeout=T)

    a = Target.remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    ref = use_later.remote(a, 1.0)
    del a
    assert fleet.get(ref, timeout=T) == "pong"
    assert pid_gone(pid)


def test_handle_kept_by_another_actor_keeps_the_actor_until_dropped():
    @fleet.remote
    class Keeper:
        def keep(self, boxed):
            self.h = boxed[0]

        def call(self):
            return fleet.get(self.h.ping.remote(), timeout=T)

        def drop(self):
            self.h = None

    a = Target.remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    k = Keeper.remote()
    fleet.get(k.keep.remote([a]), timeout=T)
    del a
    assert pid_alive_for(pid, 1.0)
    assert fleet.get(k.call.remote(), timeout=T) == "pong"
    fleet.get(k.drop.remote(), timeout=T)
    assert pid_gone(pid)


def test_handle_inside_a_put_object_keeps_the_actor():
    a = Target.remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    box = fleet.put({"h": a})
    del a
    assert pid_alive_for(pid, 1.0)
    h = fleet.get(box, timeout=T)["h"]
    assert fleet.get(h.ping.remote(), timeout=T) == "pong"
    del h, box
    assert pid_gone(pid)


def test_actor_created_in_a_task_and_returned_lives_while_the_caller_holds_it():
    @fleet.remote
    def make():
        return Target.remote()

    h = fleet.get(make.remote(), timeout=T)
    assert pid_alive_for(fleet.get(h.pid.remote(), timeout=T), 1.0)
    pid = fleet.get(h.pid.remote(), timeout=T)
    del h
    assert pid_gone(pid)


def test_actor_created_in_a_task_and_dropped_answers_the_calls_made():
    @fleet.remote
    def make_and_call():
        t = Target.remote()
        return [t.ping.remote()]

    ref = fleet.get(make_and_call.remote(), timeout=T)[0]
    assert fleet.get(ref, timeout=T) == "pong"


def test_temporary_handle_call_is_answered():
    assert fleet.get(Target.remote().ping.remote(), timeout=T) == "pong"


def test_named_actor_is_counted_like_any_other():
    # Ray: "the actor will still be garbage-collected if no handles to it exist".
    a = Target.options(name="life-named").remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    del a
    assert pid_gone(pid)
    with pytest.raises(ValueError):
        fleet.get_actor("life-named")


def test_get_actor_handle_counts_in_the_owner_only():
    @fleet.remote
    class Finder:
        def find(self, name):
            self.h = fleet.get_actor(name)  # not the owner: does not keep it alive
            return fleet.get(self.h.ping.remote(), timeout=T)

        def call(self):
            return fleet.get(self.h.ping.remote(), timeout=T)

    a = Target.options(name="life-found").remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    # In the owner (this driver), a handle looked up by name keeps it alive.
    b = fleet.get_actor("life-found")
    del a
    assert pid_alive_for(pid, 1.0)
    assert fleet.get(b.ping.remote(), timeout=T) == "pong"
    f = Finder.remote()
    assert fleet.get(f.find.remote("life-found"), timeout=T) == "pong"
    del b
    assert pid_gone(pid)
    with pytest.raises(RayActorError):
        fleet.get(f.call.remote(), timeout=T)


def test_detached_actor_outlives_its_handles():
    a = Target.options(name="life-detached", lifetime="detached").remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    del a
    assert pid_alive_for(pid, 1.0)
    b = fleet.get_actor("life-detached")
    fleet.kill(b)
    assert pid_gone(pid)


# ------------------------------------------------------------------ owner fate sharing


@fleet.remote
class Parent:
    def make(self, lifetime=None):
        opts = {"lifetime": lifetime} if lifetime else {}
        self.child = Target.options(**opts).remote()
        fleet.get(self.child.ping.remote(), timeout=T)
        return self.child

    def pid(self) -> int:
        return os.getpid()


def test_child_actor_dies_with_its_owner_even_if_the_driver_holds_it():
    p = Parent.remote()
    child = fleet.get(p.make.remote(), timeout=T)
    assert fleet.get(child.ping.remote(), timeout=T) == "pong"
    os.kill(fleet.get(p.pid.remote(), timeout=T), signal.SIGKILL)
    assert wait_until(lambda: dead(child), 15)
    with pytest.raises(ActorDiedError, match="owner"):
        fleet.get(child.ping.remote(), timeout=T)


def test_detached_child_outlives_its_owner():
    p = Parent.remote()
    child = fleet.get(p.make.remote("detached"), timeout=T)
    os.kill(fleet.get(p.pid.remote(), timeout=T), signal.SIGKILL)
    time.sleep(1.5)
    assert fleet.get(child.ping.remote(), timeout=T) == "pong"
    fleet.kill(child)


# ------------------------------------------------------------------ exits


def marker_actor(tmp_path):
    """An actor class recording its cleanup hooks as files in tmp_path."""

    @fleet.remote
    class Recorder:
        def __init__(self, tag: str):
            self.tag = tag
            atexit.register(lambda: self._mark("atexit"))

        def _mark(self, what: str) -> None:
            with open(tmp_path / f"{self.tag}.{what}", "a") as f:
                f.write(f"{time.monotonic()}\n")

        def __ray_shutdown__(self):
            self._mark("shutdown")

        def __del__(self):
            self._mark("del")

        def pid(self) -> int:
            return os.getpid()

        def exit(self, catch: bool = False):
            try:
                exit_actor()
            except Exception:  # SystemExit is not an Exception: not swallowed
                self._mark("swallowed")
            except BaseException:
                if not catch:
                    raise
            self._mark("after")

        def ping(self) -> str:
            return "pong"

    return Recorder


def hooks(tmp_path, tag):
    return {p.name.split(".", 1)[1] for p in tmp_path.iterdir() if p.name.startswith(tag + ".")}


@pytest.mark.parametrize("how", ["exit_actor", "exit_actor_caught", "terminate", "out_of_scope"])
def test_graceful_exits_run_shutdown_del_and_atexit(tmp_path, how):
    Recorder = marker_actor(tmp_path)
    a = Recorder.remote(how)
    pid = fleet.get(a.pid.remote(), timeout=T)
    if how.startswith("exit_actor"):
        with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
            fleet.get(a.exit.remote(catch=how.endswith("caught")), timeout=T)
        with pytest.raises(ActorDiedError):
            fleet.get(a.ping.remote(), timeout=T)
    elif how == "terminate":
        a.__ray_terminate__.remote()
    else:
        del a
    assert pid_gone(pid)
    # Code after an uncaught exit_actor() does not run; a caught one goes on,
    # and the actor exits when the method returns.
    expected = {"shutdown", "del", "atexit"} | ({"after"} if how.endswith("caught") else set())
    assert hooks(tmp_path, how) == expected
    # __ray_shutdown__ runs before the atexit handlers.
    shutdown = float((tmp_path / f"{how}.shutdown").read_text())
    at_exit = float((tmp_path / f"{how}.atexit").read_text())
    assert shutdown <= at_exit


def test_kill_runs_no_cleanup(tmp_path):
    Recorder = marker_actor(tmp_path)
    a = Recorder.remote("kill")
    pid = fleet.get(a.pid.remote(), timeout=T)
    fleet.kill(a)
    assert pid_gone(pid)
    time.sleep(0.3)
    assert hooks(tmp_path, "kill") == set()


def test_a_raising_ray_shutdown_does_not_stop_the_exit(tmp_path):
    @fleet.remote
    class Bad:
        def __ray_shutdown__(self):
            (tmp_path / "bad.started").write_text("x")
            raise ValueError("cleanup failed")

        def pid(self):
            return os.getpid()

    a = Bad.remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    a.__ray_terminate__.remote()
    assert pid_gone(pid)
    assert (tmp_path / "bad.started").exists()


def test_calls_queued_behind_exit_actor_fail():
    @fleet.remote
    class Q:
        def leave(self):
            time.sleep(0.3)
            exit_actor()

        def ping(self):
            return 1

    q = Q.remote()
    q.leave.remote()
    refs = [q.ping.remote() for _ in range(50)]
    with pytest.raises(ActorDiedError):
        fleet.get(refs, timeout=T)


def test_exit_actor_in_an_async_actor_even_if_caught(tmp_path):
    @fleet.remote
    class Async:
        async def leave(self):
            try:
                exit_actor()
            except AsyncioActorExit:
                pass

        async def touch(self):
            (tmp_path / "touched").write_text("x")

    a = Async.remote()
    fleet.get(a.__ray_ready__.remote(), timeout=T)
    with pytest.raises(ActorDiedError):
        fleet.get(a.leave.remote(), timeout=T)
    with pytest.raises(ActorDiedError):
        fleet.get(a.touch.remote(), timeout=T)
    assert not (tmp_path / "touched").exists()


def test_exit_actor_outside_an_actor_is_a_type_error():
    with pytest.raises(TypeError, match="exit_actor API is called on a non-actor worker"):
        exit_actor()

    @fleet.remote
    def task():
        exit_actor()

    with pytest.raises(TypeError, match="exit_actor API is called on a non-actor worker"):
        fleet.get(task.remote(), timeout=T)


def test_kill_without_no_restart_restarts_within_max_restarts():
    @fleet.remote(max_restarts=1)
    class R:
        def pid(self):
            return os.getpid()

    r = R.remote()
    first = fleet.get(r.pid.remote(), timeout=T)
    fleet.kill(r, no_restart=False)
    assert pid_gone(first)
    assert wait_until(lambda: _pid_or_none(r) not in (None, first), 15)
    second = fleet.get(r.pid.remote(), timeout=T)
    fleet.kill(r, no_restart=False)  # restarts used up: dead
    assert pid_gone(second)
    assert wait_until(lambda: dead_pid(r), 15)


def _pid_or_none(handle):
    try:
        return fleet.get(handle.pid.remote(), timeout=T)
    except RayActorError:
        return None


def dead_pid(handle) -> bool:
    try:
        fleet.get(handle.pid.remote(), timeout=T)
        return False
    except ActorDiedError:
        return True


def test_get_if_exists_in_the_owner_counts_like_get_actor():
    a = Target.options(name="life-gie").remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    b = Target.options(name="life-gie", get_if_exists=True).remote()
    del a
    assert pid_alive_for(pid, 1.0)
    assert fleet.get(b.ping.remote(), timeout=T) == "pong"
    del b
    assert pid_gone(pid)


def test_default_actor_lifetime_from_job_config():
    from fleet.job_config import JobConfig

    with pytest.raises(ValueError):
        JobConfig(default_actor_lifetime="forever")
    assert JobConfig(default_actor_lifetime="detached").default_actor_lifetime == "detached"


def test_job_config_default_lifetime_detached_outlives_the_owner():
    # A separate driver (its own cluster): the job's default applies to the
    # actors its workers create too.
    code = """
import os, signal, time
import fleet
from fleet.job_config import JobConfig
fleet.init(num_cpus=2, job_config=JobConfig(default_actor_lifetime="detached"))

@fleet.remote
class Child:
    def ping(self):
        return "ok"

@fleet.remote
class Parent:
    def make(self):
        self.c = Child.remote()
        fleet.get(self.c.ping.remote(), timeout=20)
        return self.c

    def pid(self):
        return os.getpid()

p = Parent.remote()
c = fleet.get(p.make.remote(), timeout=20)
os.kill(fleet.get(p.pid.remote(), timeout=20), signal.SIGKILL)
time.sleep(1.5)
print("CHILD", fleet.get(c.ping.remote(), timeout=20))
fleet.shutdown()
"""
    res = run_python(code, timeout=60)
    assert "CHILD ok" in res.stdout, res.stdout + res.stderr
