"""RuntimeContext: who and where the current process is (Ray's names)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from fleet._private import state


class RuntimeContext:
    """Returned by :func:`fleet.get_runtime_context`."""

    def get_job_id(self) -> str:
        """The job id as a hex string."""
        core = _core()
        job = state.current_job_id if state.mode == "worker" else core.job_id
        return int(job).to_bytes(4, "little").hex()

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    def get_node_id(self) -> str:
        """The id of the node this process runs on, as hex."""
        return _core().node_id.hex()

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    def get_task_id(self) -> Optional[str]:
        """The current task's id as hex; None in the driver."""
        if state.mode != "worker" or state.current_task_id is None:
            return None
        return state.current_task_id.hex()

    @property
    def task_id(self) -> Optional[str]:
        return self.get_task_id()

    def get_worker_id(self) -> str:
        return _core().worker_id.hex()

    def get_actor_id(self) -> Optional[str]:
        """The current actor's id as hex; None outside an actor."""
        if state.mode != "worker" or state.current_actor_id is None:
            return None
        return state.current_actor_id.hex()

    @property
    def actor_id(self) -> Optional[str]:
        return self.get_actor_id()

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this code runs in."""
        if state.mode != "worker" or state.current_actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor")
        from fleet.actor import ActorHandle

        return ActorHandle(state.current_actor_id, state.actor_meta)

    def get_actor_name(self) -> Optional[str]:
        """The current actor's name, if it has one."""
        if state.mode != "worker" or state.current_actor_id is None:
            return None
        return state.actor_name or None

    def is_canceled(self) -> bool:
        """Whether fleet.cancel() was called on the current (actor) task."""
        if state.mode != "worker" or state.current_task_id is None:
            raise RuntimeError("is_canceled() can only be called inside a task or actor")
        from fleet._private import worker_main

        return worker_main.is_canceled(state.current_task_id)

    @property
    def namespace(self) -> str:
        return state.namespace

    def get_task_name(self) -> Optional[str]:
        return state.current_function if state.mode == "worker" else None

    def get_assigned_resources(self) -> Dict[str, float]:
        """Resources of the current task, e.g. {"CPU": 1.0}; empty in the driver."""
        if state.mode != "worker" or not state.current_resources:
            return {}
        out: Dict[str, float] = {}
        for item in state.current_resources.split(";"):
            name, _, amount = item.rpartition("=")
            out[name] = float(amount)
        return out

    def get_accelerator_ids(self) -> Dict[str, List[str]]:
        return {"GPU": [str(g) for g in state.current_gpu_ids] if state.mode == "worker" else []}

    def get_runtime_env_string(self) -> str:
        import json

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
