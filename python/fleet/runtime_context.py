"""RuntimeContext: who and where the current process is (Ray's names).

The task, actor, job and resources are those of the call this code runs in
(fleet._private.task_context): concurrent calls of a threaded or async actor
each see their own.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from fleet._private import state, task_context
from fleet.actor import ActorHandle


class RuntimeContext:
    """Returned by :func:`fleet.get_runtime_context`."""

    def get_job_id(self) -> str:
        """The job id as a hex string."""
        _core()
        return int(task_context.current_job_id()).to_bytes(4, "little").hex()

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    def get_node_id(self) -> str:
        """The id of the node this process runs on, as hex."""
        return _core().node_id.hex()

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    def get_node_labels(self) -> Dict[str, str]:
        """The labels of the node this process runs on (the user's and Ray's
        defaults, such as ``ray.io/node-id``)."""
        core = _core()
        me = core.node_id.hex()
        for n in core.nodes():
            if n["node_id"] == me:
                return dict(n.get("labels") or {})
        return {}

    def get_task_id(self) -> Optional[str]:
        """The current task's id as hex; None in the driver."""
        ctx = task_context.current()
        if ctx is None or ctx.task_id is None:
            return None
        return ctx.task_id.hex()

    @property
    def task_id(self) -> Optional[str]:
        return self.get_task_id()

    def get_worker_id(self) -> str:
        return _core().worker_id.hex()

    def get_actor_id(self) -> Optional[str]:
        """The current actor's id as hex; None outside an actor."""
        ctx = task_context.current()
        if ctx is None or ctx.actor_id is None:
            return None
        return ctx.actor_id.hex()

    @property
    def actor_id(self) -> Optional[str]:
        return self.get_actor_id()

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this code runs in."""
        ctx = task_context.current()
        if ctx is None or ctx.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor")
        return ActorHandle(ctx.actor_id, state.actor_meta)

    def get_actor_name(self) -> Optional[str]:
        """The current actor's name, if it has one."""
        ctx = task_context.current()
        if ctx is None or ctx.actor_id is None:
            return None
        return state.actor_name or None

    def is_canceled(self) -> bool:
        """Whether fleet.cancel() was called on the current (actor) task."""
        ctx = task_context.current()
        if ctx is None or ctx.task_id is None:
            raise RuntimeError("is_canceled() can only be called inside a task or actor")
        return task_context.is_canceled(ctx.task_id)

    @property
    def namespace(self) -> str:
        return state.namespace

    def get_task_name(self) -> Optional[str]:
        """The current task's name (its function's, or the ``name=`` option); None
        outside a task."""
        ctx = task_context.current()
        if ctx is None or ctx.task_id is None:
            return None
        return ctx.function_name

    def get_assigned_resources(self) -> Dict[str, float]:
        """Resources of the current task, e.g. {"CPU": 1.0}; empty in the driver."""
        ctx = task_context.current()
        return ctx.assigned_resources() if ctx is not None else {}

    def get_accelerator_ids(self) -> Dict[str, List[str]]:
        ctx = task_context.current()
        return {"GPU": [str(g) for g in ctx.gpu_ids] if ctx is not None else []}

    def get_runtime_env_string(self) -> str:
        return json.dumps(state.job_runtime_env or {})

    @property
    def gcs_address(self) -> str:
        return state.gcs_address

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return state.actor_restarts > 0

    def get(self) -> Dict[str, Any]:
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "task_id": self.get_task_id(), "namespace": self.namespace}


def _core() -> Any:
    if state.core is None:
        raise RuntimeError("fleet is not initialized; call fleet.init() first")
    return state.core


def get_runtime_context() -> RuntimeContext:
    """Information about the current driver or worker."""
    return RuntimeContext()
