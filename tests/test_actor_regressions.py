"""Regression tests for races found in review of the actor/generator/cancel runtime.

Each test is the smallest workload that reproduced the bug; they share one
2-CPU cluster (conftest.fleet_cluster).
"""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest

import fleet
from fleet._private import state
from fleet.exceptions import ActorDiedError, TaskCancelledError, WorkerCrashedError
from fleet.util.state import get_actor as actor_state
from fleet_test_utils import wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 20


@fleet.remote(max_retries=0)
def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return 1


def test_cancel_racing_with_the_end_of_a_task_hangs_nothing_and_hits_no_other_task():
    # A cancel's SIGINT that lands just after the task finished must not drop
    # its reply, interrupt the next task, or kill the worker. The delay
    # between submitting and cancelling follows a staircase (longer after a
    # cancelled task, shorter after one that finished), so the cancels keep
    # landing around the end of the task, on both sides of it; the test
    # requires that both sides were hit, i.e. that the race was run.
    fleet.get([spin.remote(0) for _ in range(4)], timeout=T)
    outcomes = {"ok": 0, "cancelled": 0}
    delay, step = 0.0, 0.0005
    for _ in range(150):
        r, r2 = spin.remote(0.002), spin.remote(0.002)
        time.sleep(delay)
        fleet.cancel(r)
        try:
            fleet.get(r, timeout=T)
            outcomes["ok"] += 1
            delay = max(0.0, delay - step)
        except TaskCancelledError:
            outcomes["cancelled"] += 1
            delay = min(0.05, delay + step)
        assert fleet.get(r2, timeout=T) == 1, "a task nobody cancelled must succeed"
    assert sum(outcomes.values()) == 150
    # Cancels landed before the end of a task and after it: the window between
    # (the race) was crossed again and again.
    assert outcomes["ok"] >= 10 and outcomes["cancelled"] >= 10, outcomes


@fleet.remote
def numbers(n):
    start = time.perf_counter()
    for i in range(n):
        while time.perf_counter() < start + i * 0.0002:
            pass
        yield i


def test_polling_a_generator_with_wait_loses_no_item():
    g = numbers.remote(1500)
    got = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _ = fleet.wait([g], timeout=0)
        if not ready:
            continue
        try:
            got.append(fleet.get(next(g), timeout=T))
        except StopIteration:
            break
    assert got == list(range(1500))


def test_dropped_generators_free_their_unread_items():
    core = state.core
    gc.collect()
    base = core.num_objects()
    for _ in range(10):
        g = numbers.remote(50)
        fleet.get(g.completed(), timeout=T)
        assert fleet.get(next(g), timeout=T) == 0
        del g
    gc.collect()
    assert wait_until(lambda: core.num_objects() <= base, 5), (base, core.num_objects())


class Svc:
    def __init__(self, x=None):
        self.x = x

    def ping(self):
        return 1


def test_a_failed_named_creation_does_not_keep_the_name():
    svc = fleet.remote(Svc)
    with pytest.raises(TypeError):
        svc.options(name="regress-svc").remote(threading.Lock())  # unpicklable argument
    a = svc.options(name="regress-svc").remote(1)
    assert fleet.get(fleet.get_actor("regress-svc").ping.remote(), timeout=T) == 1
    fleet.kill(a)


@fleet.remote(max_concurrency=4)
class Stopper:
    def stop(self):
        time.sleep(0.2)
        fleet.actor.exit_actor()


def test_two_concurrent_exit_actor_calls_end_the_actor():
    a = Stopper.remote()
    fleet.get(a.__ray_ready__.remote(), timeout=T)
    refs = [a.stop.remote(), a.stop.remote()]
    for r in refs:
        with pytest.raises(ActorDiedError):
            fleet.get(r, timeout=T)
    hexid = a._actor_id.hex()
    assert wait_until(lambda: actor_state(hexid).state == "DEAD", 10)


@fleet.remote(max_restarts=1)
class Crasher:
    def crash(self):
        time.sleep(0.3)
        os._exit(1)


def test_an_actor_whose_last_handle_went_away_still_leaves_after_a_restart():
    a = Crasher.remote()
    fleet.get(a.__ray_ready__.remote(), timeout=T)
    hexid = a._actor_id.hex()
    a.crash.remote()
    del a  # the exit is queued behind crash(), which kills the process first
    gc.collect()
    assert wait_until(lambda: actor_state(hexid).state == "DEAD", 15), actor_state(hexid)


def test_force_cancel_does_not_fail_the_tasks_pipelined_behind():
    @fleet.remote(max_retries=0)
    def nap(seconds):
        time.sleep(seconds)
        return seconds

    for _ in range(3):  # learned as short: several pipelined per worker
        fleet.get([nap.remote(0) for _ in range(200)], timeout=T)
    long = nap.remote(3.0)
    rest = [nap.remote(0) for _ in range(20)]
    time.sleep(0.3)
    fleet.cancel(long, force=True)
    with pytest.raises((TaskCancelledError, WorkerCrashedError)):
        fleet.get(long, timeout=T)
    assert fleet.get(rest, timeout=T) == [0] * 20


def test_a_threaded_actors_queued_call_that_is_cancelled_never_runs(tmp_path):
    @fleet.remote(max_concurrency=2)
    class Busy:
        def slow(self, seconds, mark=None):
            time.sleep(seconds)
            if mark:
                open(mark, "w").close()
            return "ran"

    a = Busy.remote()
    fleet.get(a.slow.remote(0), timeout=T)
    mark = str(tmp_path / "ran")
    busy = [a.slow.remote(1.0), a.slow.remote(1.0)]
    queued = a.slow.remote(0, mark)
    time.sleep(0.3)
    fleet.cancel(queued)
    with pytest.raises(TaskCancelledError):
        fleet.get(queued, timeout=T)
    assert fleet.get(busy, timeout=T) == ["ran", "ran"]
    assert not os.path.exists(mark)


def test_recursive_cancel_reaches_the_actor_calls_a_task_made(tmp_path):
    @fleet.remote
    class Slow:
        def wait(self, seconds, log):
            with open(log, "a") as f:
                f.write("started\n")
            time.sleep(seconds)
            return "done"

    @fleet.remote(max_retries=0)
    def caller(actor, log):
        refs = [actor.wait.remote(1, log) for _ in range(3)]
        return fleet.get(refs, timeout=60)

    log = str(tmp_path / "log")
    a = Slow.remote()
    fleet.get(a.__ray_ready__.remote(), timeout=T)
    r = caller.remote(a, log)
    assert wait_until(lambda: os.path.exists(log), 10)
    fleet.cancel(r, recursive=True)
    with pytest.raises(TaskCancelledError):
        fleet.get(r, timeout=T)
    # The call that was running finishes (actor calls are not interrupted);
    # the two queued behind it were cancelled with their parent task.
    assert fleet.get(a.wait.remote(0, log), timeout=T) == "done"
    with open(log) as f:
        assert f.read().split() == ["started", "started"], "queued child calls still ran"
