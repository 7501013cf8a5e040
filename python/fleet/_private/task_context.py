"""What the code running now belongs to: its task, actor, job, resources and
the placement group that captures its children, kept per call.

Invariants: a worker's executor enters a TaskContext for every call it runs
(``entered``); code of that call, and every asyncio task or pool thread the
executor starts for it, sees that context and no other. Threading: the
context lives in a ``contextvars.ContextVar``, so concurrent calls of a
threaded actor (each runs inside its own copied context) and of an async
actor (each asyncio task copies the context it was created in) each see
their own. A thread that user code starts itself gets a fresh context; it
sees the process's context instead: the running call in a worker that runs
one call at a time, the actor (no task) in a concurrent actor, None in a
driver. Cost: one small object and a ContextVar set/reset per call.
"""

from __future__ import annotations

import contextvars
import re
from operator import itemgetter
from typing import Dict, List, Optional

from fleet._private import state

_new = tuple.__new__


class TaskContext(tuple):
    """The ids and resources of one call (read-only): a tuple, so that
    making one per call costs one allocation (it is on every task's path)."""

    __slots__ = ()

    def __new__(cls, task_id: Optional[bytes], job_id: int, function_name: str,
                actor_id: Optional[bytes], resources: str, gpu_ids: List[int],
                capture_group: Optional[bytes], function: str = "") -> TaskContext:
        return _new(cls, (task_id, job_id, function_name, actor_id, resources, gpu_ids,
                          capture_group, function))

    # None: not in a call (an actor between calls).
    task_id = property(itemgetter(0))
    job_id = property(itemgetter(1))
    function_name = property(itemgetter(2))
    # None outside an actor.
    actor_id = property(itemgetter(3))
    # "CPU=1;GPU=0.5", as the task carries it.
    resources = property(itemgetter(4))
    gpu_ids = property(itemgetter(5))
    # The placement group whose tasks capture their children (their tasks
    # without a strategy of their own run in it too), or None.
    capture_group = property(itemgetter(6))
    # What runs: a task's function key (state.functions), an actor call's
    # method name ("" for an actor between calls).
    function = property(itemgetter(7))

    def for_call(self, task_id: bytes, job_id: int, function_name: str,
                 method: str = "") -> TaskContext:
        """A call of the actor this context describes."""
        return _new(TaskContext, (task_id, job_id, function_name, self[3], self[4], self[5],
                                  self[6], method))

    def assigned_resources(self) -> Dict[str, float]:
        """The call's resources by the names the user asked for: in a
        placement group "CPU_group_0_<pg>" is "CPU" (as Ray shows it), and the
        internal "bundle_group_..." share is left out."""
        out: Dict[str, float] = {}
        if self.resources:
            for item in self.resources.split(";"):
                name, _, amount = item.rpartition("=")
                base, sep, rest = name.partition("_group_")
                if sep and _GROUP_SUFFIX.fullmatch(rest):
                    if base == "bundle":
                        continue
                    name = base
                out[name] = out.get(name, 0.0) + float(amount)
        return out


# "<index>_<pg hex>" or "<pg hex>" after "_group_" in a placement group's resource names.
_GROUP_SUFFIX = re.compile(r"(?:\d+_)?[0-9a-f]{16,}")

_current: contextvars.ContextVar[Optional[TaskContext]] = contextvars.ContextVar(
    "fleet_task_context", default=None
)
# What threads started by user code see (see the module comment).
_process: Optional[TaskContext] = None


def current() -> Optional[TaskContext]:
    """The context of the call running here, or None (a driver, a worker
    between tasks)."""
    return _current.get() or _process


def parent_id() -> bytes:
    """The task id of the call running here (the parent of what it submits,
    for recursive cancel), or b"" outside a call."""
    ctx = _current.get() or _process
    return (ctx.task_id or b"") if ctx is not None else b""


def enter(ctx: TaskContext) -> contextvars.Token:
    """Makes `ctx` current (until ``leave``) in this thread's context."""
    return _current.set(ctx)


def leave(token: contextvars.Token) -> None:
    _current.reset(token)


def set_process_context(ctx: Optional[TaskContext]) -> None:
    """What threads that user code starts see from now on."""
    global _process
    _process = ctx


def current_job_id() -> int:
    """The job of the running call; the driver's job in a driver."""
    ctx = current()
    if ctx is not None:
        return ctx.job_id
    core = state.core
    return int(core.job_id) if core is not None else 0


# Calls of a concurrent actor that fleet.cancel() was asked for (their
# cancel notices arrive through the task queue).
canceled: set = set()


def is_canceled(task_id: bytes) -> bool:
    """Whether a cancel arrived for `task_id` (an actor call keeps running)."""
    core = state.core
    return task_id in canceled or bool(core and core.take_cancel_request(task_id, True))


__all__: List[str] = ["TaskContext", "current", "current_job_id", "enter", "is_canceled",
                      "leave", "set_process_context"]
