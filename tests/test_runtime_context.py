"""The runtime context is per call: concurrent calls of an async actor or a
threaded actor (max_concurrency > 1) each see their own task id and name,
however their execution interleaves.

Every test makes its calls overlap for real (an asyncio.Event set only once
all calls have started; a threading.Barrier all calls must reach), and reads
the context before and after the point where the others ran.
"""

import asyncio
import threading

import pytest

import fleet

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fleet_cluster")]

T = 30  # timeout (s) of every get in this module
N = 4  # calls that run at once


def _ids() -> dict:
    ctx = fleet.get_runtime_context()
    return {"task": ctx.get_task_id(), "name": ctx.get_task_name(), "actor": ctx.get_actor_id(),
            "job": ctx.get_job_id()}


@fleet.remote
class AsyncOverlap:
    """All calls wait for one event, set by the N-th call to start."""

    def __init__(self):
        self.started = 0
        self.event = None

    async def _meet(self):
        if self.event is None:
            self.event = asyncio.Event()
        self.started += 1
        if self.started == N:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), timeout=20)

    async def left(self):
        before = _ids()
        await self._meet()
        await asyncio.sleep(0)  # let the other calls run in between, too
        return before, _ids()

    async def right(self):
        before = _ids()
        await self._meet()
        await asyncio.sleep(0)
        return before, _ids()


@fleet.remote(max_concurrency=N)
class ThreadedOverlap:
    """All calls wait at one barrier: N of them must be inside at once."""

    def __init__(self):
        self.barrier = threading.Barrier(N, timeout=20)

    def call(self):
        before = _ids()
        self.barrier.wait()
        return before, _ids()

    def from_own_thread(self):
        """What a thread this call starts sees (no call of its own)."""
        out = {}
        t = threading.Thread(target=lambda: out.update(_ids()))
        t.start()
        t.join(timeout=20)
        return out


def _check(refs, results, names):
    actor = results[0][0]["actor"]
    assert actor is not None
    seen = []
    for ref, name, (before, after) in zip(refs, names, results):
        # Stable across the point where the other calls ran...
        assert before == after, (before, after)
        # ... and this call's own: the task that makes its ref.
        assert before["task"] == ref.task_id().hex()
        assert before["name"] == name
        assert before["actor"] == actor
        assert before["job"] == fleet.get_runtime_context().get_job_id()
        seen.append(before["task"])
    assert len(set(seen)) == len(seen), seen


def test_async_actor_calls_each_see_their_own_context():
    a = AsyncOverlap.remote()
    methods = [a.left, a.right] * (N // 2)
    refs = [m.remote() for m in methods]
    results = fleet.get(refs, timeout=T)
    names = ["AsyncOverlap.left", "AsyncOverlap.right"] * (N // 2)
    _check(refs, results, names)


def test_threaded_actor_calls_each_see_their_own_context():
    a = ThreadedOverlap.remote()
    refs = [a.call.remote() for _ in range(N)]
    results = fleet.get(refs, timeout=T)
    _check(refs, results, ["ThreadedOverlap.call"] * N)


def test_threaded_actor_thread_of_its_own_sees_the_actor_not_a_call():
    a = ThreadedOverlap.remote()
    seen = fleet.get(a.from_own_thread.remote(), timeout=T)
    assert seen["task"] is None  # no other call's id either
    assert seen["actor"] == a._actor_id.hex()


@fleet.remote
def task_with_a_thread():
    out = {}
    t = threading.Thread(target=lambda: out.update(_ids()))
    t.start()
    t.join(timeout=20)
    return _ids(), out


def test_thread_started_by_a_task_sees_the_task():
    ref = task_with_a_thread.remote()
    mine, threads = fleet.get(ref, timeout=T)
    assert mine["task"] == ref.task_id().hex()
    assert threads == mine


def test_driver_has_no_task():
    ids = _ids()
    assert ids["task"] is None and ids["actor"] is None and ids["name"] is None
