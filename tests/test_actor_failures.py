"""Actor failures: constructor errors, process death, restarts, call retries,
fleet.kill with and without restart, and the resources of dead actors.

Ray docs: https://docs.ray.io/en/latest/ray-core/fault_tolerance/actors.html,
.../actors/terminating-actors.html and the API reference of ray.kill and
ray.exceptions (RayActorError, ActorDiedError).
"""

import os
import re
import time

import pytest

import fleet
from fleet.exceptions import ActorDiedError, RayActorError, RayTaskError
from fleet_test_utils import Proc, wait_dead, wait_until

# One shared cluster per module (conftest.fleet_cluster): 2 CPUs.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) for every get/wait in this module


def cpus() -> float:
    return fleet.available_resources().get("CPU", 0.0)


def wait_cpus(amount: float, timeout: float = 10.0) -> bool:
    """available_resources is eventually consistent: poll with a deadline."""
    return wait_until(lambda: cpus() == amount, timeout)


class CtorError(Exception):
    pass


@fleet.remote
class BadCtor:
    def __init__(self, marker=None):
        if marker:
            with open(marker, "a") as f:
                f.write("x")
        raise CtorError("constructor failed: quux-42")

    def f(self):
        return "never"


@fleet.remote
class Crashy:
    def __init__(self, marker=None):
        self.n = 0
        if marker:
            with open(marker, "a") as f:
                f.write("c")

    def inc(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()

    def restarted(self):
        return fleet.get_runtime_context().was_current_actor_reconstructed

    def die(self, code=1):
        os._exit(code)

    def die_after(self, delay, code=1):
        time.sleep(delay)
        os._exit(code)

    def die_once(self, marker):
        """Dies on the first execution (no marker yet), returns on a retry."""
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return "retried"

    def sleep(self, t):
        time.sleep(t)
        return t


def _died_error(ref) -> RayActorError:
    with pytest.raises(RayActorError) as info:
        fleet.get(ref, timeout=T)
    return info.value


# ---------------------------------------------------------------- constructor errors


def test_constructor_error_fails_every_call():
    b = BadCtor.remote()
    refs = [b.f.remote() for _ in range(3)]  # submitted before the constructor ran
    for r in refs:
        err = _died_error(r)
        assert isinstance(err, ActorDiedError)
        assert not isinstance(err, RayTaskError)
        # The message names the original error.
        assert "CtorError" in str(err) and "quux-42" in str(err), str(err)
    # Calls made later, after the death is known, fail the same way.
    time.sleep(0.2)
    err = _died_error(b.f.remote())
    assert isinstance(err, ActorDiedError)
    assert "quux-42" in str(err), str(err)


def test_constructor_error_is_not_retried_as_a_crash(tmp_path):
    marker = str(tmp_path / "ctor")
    b = BadCtor.options(max_restarts=2).remote(marker)
    err = _died_error(b.f.remote())
    assert "quux-42" in str(err), str(err)
    time.sleep(0.5)
    # The constructor ran once: an application error in it is not a process death.
    with open(marker) as f:
        assert f.read() == "x"


def test_constructor_error_releases_the_actors_cpu():
    assert wait_cpus(2.0), cpus()
    b = BadCtor.options(num_cpus=1).remote()
    _died_error(b.f.remote())
    assert wait_cpus(2.0), cpus()


def test_process_death_in_constructor_is_restarted(tmp_path):
    marker = str(tmp_path / "ctor-crash")

    @fleet.remote(max_restarts=1)
    class DiesInCtorOnce:
        def __init__(self):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            self.ok = "constructed"

        def get(self):
            return self.ok

    a = DiesInCtorOnce.remote()
    assert fleet.get(a.get.remote(), timeout=T) == "constructed"


@fleet.remote(max_retries=0)
def failing_arg():
    raise KeyError("argument task failed")


def test_constructor_argument_failure_kills_the_actor():
    @fleet.remote
    class Takes:
        def __init__(self, x):
            self.x = x

        def get(self):
            return self.x

    a = Takes.remote(failing_arg.remote())
    err = _died_error(a.get.remote())
    assert isinstance(err, ActorDiedError)
    err = _died_error(a.get.remote())
    assert isinstance(err, ActorDiedError)


# ---------------------------------------------------------------- process death and restarts


def test_process_death_restarts_the_actor(tmp_path):
    marker = str(tmp_path / "ctor-runs")
    a = Crashy.options(max_restarts=1).remote(marker)
    assert fleet.get([a.inc.remote(), a.inc.remote()], timeout=T) == [1, 2]
    pid1 = fleet.get(a.pid.remote(), timeout=T)
    assert fleet.get(a.restarted.remote(), timeout=T) is False

    # The call that killed the process fails (at-most-once by default)...
    err = _died_error(a.die.remote())
    assert isinstance(err, RayActorError)

    # ...and the restarted actor ran its constructor again: fresh state.
    assert fleet.get(a.inc.remote(), timeout=T) == 1
    pid2 = fleet.get(a.pid.remote(), timeout=T)
    assert pid2 != pid1
    assert not wait_dead([Proc(pid1, "old actor")], 10)
    assert fleet.get(a.restarted.remote(), timeout=T) is True
    with open(marker) as f:
        assert f.read() == "cc"

    # The last restart is used up: the next death is final.
    _died_error(a.die.remote(3))
    for _ in range(2):
        err = _died_error(a.inc.remote())
        assert isinstance(err, ActorDiedError)
        # The reason: the process exited with code 3.
        assert re.search(r"code\D{0,3}3\b", str(err)), str(err)
    assert not wait_dead([Proc(pid2, "actor")], 10)


def test_restarted_named_actor_keeps_its_name():
    a = Crashy.options(name="crashy-named", max_restarts=1).remote()
    pid1 = fleet.get(a.pid.remote(), timeout=T)
    _died_error(a.die.remote())
    h = fleet.get_actor("crashy-named")
    assert fleet.get(h.pid.remote(), timeout=T) != pid1
    assert fleet.get(h.inc.remote(), timeout=T) == 1
    fleet.kill(a)


def test_process_death_without_restarts_is_final():
    a = Crashy.remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    first = _died_error(a.die.remote(7))
    assert isinstance(first, ActorDiedError)
    err = _died_error(a.inc.remote())
    assert isinstance(err, ActorDiedError)
    assert re.search(r"code\D{0,3}7\b", str(err)), str(err)
    assert not wait_dead([Proc(pid, "actor")], 10)


def test_unlimited_restarts():
    a = Crashy.options(max_restarts=-1).remote()
    pids = set()
    for _ in range(3):
        pids.add(fleet.get(a.pid.remote(), timeout=T))
        _died_error(a.die.remote())
    assert fleet.get(a.inc.remote(), timeout=T) == 1
    pids.add(fleet.get(a.pid.remote(), timeout=T))
    assert len(pids) == 4


def test_calls_in_flight_fail_without_task_retries():
    a = Crashy.options(max_restarts=1).remote()
    fleet.get(a.inc.remote(), timeout=T)
    dying = a.die_after.remote(0.5)
    # Submitted while the actor is alive; they never get to run on that process.
    queued = [a.inc.remote(), a.inc.remote()]
    _died_error(dying)
    for r in queued:
        _died_error(r)
    # The actor was restarted: new calls work, on fresh state.
    assert fleet.get(a.inc.remote(), timeout=T) == 1


@pytest.mark.parametrize("where", ["actor", "method"])
def test_calls_in_flight_are_retried_with_max_task_retries(tmp_path, where):
    marker = str(tmp_path / "died")
    if where == "actor":
        a = Crashy.options(max_restarts=1, max_task_retries=2).remote()
        die_once = a.die_once
        inc = a.inc
    else:
        a = Crashy.options(max_restarts=1).remote()
        die_once = a.die_once.options(max_task_retries=1)
        inc = a.inc.options(max_task_retries=1)
    pid1 = fleet.get(a.pid.remote(), timeout=T)
    first = die_once.remote(marker)
    later = [inc.remote(), inc.remote()]
    # The call that crashed the process ran again on the restarted actor...
    assert fleet.get(first, timeout=T) == "retried"
    # ...and so did the calls behind it, on the new (fresh) state.
    assert sorted(fleet.get(later, timeout=T)) == [1, 2]
    assert fleet.get(a.pid.remote(), timeout=T) != pid1


def test_task_retries_do_not_outlive_max_restarts(tmp_path):
    # Retrying a call needs a restarted actor: with no restarts left it fails.
    a = Crashy.options(max_restarts=0, max_task_retries=3).remote()
    err = _died_error(a.die_once.remote(str(tmp_path / "m")))
    assert isinstance(err, ActorDiedError)


# ---------------------------------------------------------------- fleet.kill


def _wait_new_pid(handle, old_pid, timeout=15.0):
    """Calls pid() until the restarted actor answers (calls made while the
    restart is under way may fail with RayActorError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = fleet.get(handle.pid.remote(), timeout=T)
        except RayActorError:
            time.sleep(0.05)
            continue
        if pid != old_pid:
            return pid
        time.sleep(0.05)
    raise AssertionError("the actor was not restarted")


def test_kill_with_no_restart_false_restarts_the_actor():
    a = Crashy.options(max_restarts=1).remote()
    assert fleet.get([a.inc.remote(), a.inc.remote()], timeout=T) == [1, 2]
    pid1 = fleet.get(a.pid.remote(), timeout=T)
    fleet.kill(a, no_restart=False)
    pid2 = _wait_new_pid(a, pid1)
    assert not wait_dead([Proc(pid1, "killed actor")], 10)
    assert fleet.get(a.inc.remote(), timeout=T) == 1  # state reset by the constructor
    # No restarts left: the next kill is final, whatever no_restart says.
    fleet.kill(a, no_restart=False)
    assert not wait_dead([Proc(pid2, "actor")], 10)
    assert wait_until(lambda: _call_fails(a), 10)
    with pytest.raises(ActorDiedError):
        fleet.get(a.inc.remote(), timeout=T)


def _call_fails(handle) -> bool:
    try:
        fleet.get(handle.inc.remote(), timeout=T)
    except ActorDiedError:
        return True
    return False


def test_kill_default_does_not_restart_a_restartable_actor():
    a = Crashy.options(max_restarts=5).remote()
    pid = fleet.get(a.pid.remote(), timeout=T)
    fleet.kill(a)
    with pytest.raises(ActorDiedError):
        fleet.get(a.inc.remote(), timeout=T)
    assert not wait_dead([Proc(pid, "actor")], 10)
    time.sleep(0.5)
    with pytest.raises(ActorDiedError, match="kill"):
        fleet.get(a.inc.remote(), timeout=T)


def test_kill_fails_running_and_queued_calls():
    a = Crashy.options(max_restarts=1).remote()
    fleet.get(a.inc.remote(), timeout=T)
    running = a.sleep.remote(30)
    queued = a.inc.remote()
    time.sleep(0.2)
    t0 = time.monotonic()
    fleet.kill(a)
    _died_error(running)
    _died_error(queued)
    assert time.monotonic() - t0 < 10


def test_kill_a_pending_actor():
    assert wait_cpus(2.0), cpus()
    holders = [Crashy.options(num_cpus=1).remote() for _ in range(2)]
    try:
        fleet.get([h.inc.remote() for h in holders], timeout=T)
        pending = Crashy.options(num_cpus=1).remote()
        ref = pending.inc.remote()
        assert fleet.wait([ref], timeout=0.5)[0] == []
        fleet.kill(pending)
        with pytest.raises(ActorDiedError):
            fleet.get(ref, timeout=T)
        # Once a CPU frees up, the killed actor does not take it.
        fleet.kill(holders[0])
        assert wait_cpus(1.0), cpus()
        time.sleep(0.6)
        assert cpus() == 1.0
    finally:
        for h in holders:
            fleet.kill(h)
    assert wait_cpus(2.0), cpus()


# ---------------------------------------------------------------- resources


def test_resources_of_a_crashed_actor_are_released():
    assert wait_cpus(2.0), cpus()
    a = Crashy.options(num_cpus=1).remote()
    fleet.get(a.inc.remote(), timeout=T)
    assert wait_cpus(1.0), cpus()
    _died_error(a.die.remote())
    assert wait_cpus(2.0), cpus()


def test_restarted_actor_holds_its_cpu_again():
    assert wait_cpus(2.0), cpus()
    a = Crashy.options(num_cpus=1, max_restarts=1).remote()
    fleet.get(a.inc.remote(), timeout=T)
    assert wait_cpus(1.0), cpus()
    _died_error(a.die.remote())
    assert fleet.get(a.inc.remote(), timeout=T) == 1
    # Held once (not leaked twice, not lost).
    assert wait_cpus(1.0), cpus()
    time.sleep(0.6)
    assert cpus() == 1.0
    _died_error(a.die.remote())
    assert wait_cpus(2.0), cpus()


def test_cluster_still_works_after_actor_failures():
    @fleet.remote
    def square(x):
        return x * x

    assert fleet.get([square.remote(i) for i in range(20)], timeout=T) == [
        i * i for i in range(20)
    ]
    a = Crashy.remote()
    assert fleet.get(a.inc.remote(), timeout=T) == 1
