"""RuntimeContext: who and where the current process is (Ray's names).

The task, actor, job and resources are those of the call this code runs in
(fleet._private.task_context): concurrent calls of a threaded or async actor
each see their own. The ``get_*`` methods return ids as hex strings; the
deprecated properties (``job_id``, ``node_id``, ``task_id``, ``actor_id``,
``current_placement_group_id``) return id objects and warn, as Ray's do.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any, Dict, List, Optional

from fleet._private import state, task_context
from fleet._private.ids import (
    PLACEMENT_GROUP_ID_SIZE,
    ActorID,
    JobID,
    NodeID,
    PlacementGroupID,
    TaskID,
)
from fleet._private.session import _ensure_initialized
from fleet.actor import ActorHandle


def _deprecated(new: str) -> None:
    warnings.warn(
        f"Use {new}() instead", DeprecationWarning, stacklevel=3
    )


class RuntimeContext:
    """Returned by :func:`fleet.get_runtime_context`."""

    # ---- job, node, worker -------------------------------------------------------

    def get_job_id(self) -> str:
        """The job id as a hex string."""
        _core()
        return _job_bytes().hex()

    @property
    def job_id(self) -> JobID:
        """Deprecated: the JobID (use get_job_id())."""
        _deprecated("get_job_id")
        _core()
        return JobID(_job_bytes())

    def get_node_id(self) -> str:
        """The id of the node this process runs on, as hex."""
        return _core().node_id.hex()

    @property
    def node_id(self) -> NodeID:
        """Deprecated: the NodeID (use get_node_id())."""
        _deprecated("get_node_id")
        return NodeID(_core().node_id)

    def get_worker_id(self) -> str:
        """The id of this worker (or driver) process, as hex."""
        return _core().worker_id.hex()

    @property
    def namespace(self) -> str:
        return state.namespace

    @property
    def gcs_address(self) -> str:
        return state.gcs_address

    # ---- task --------------------------------------------------------------------

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
    def task_id(self) -> Optional[TaskID]:
        """Deprecated: the TaskID (use get_task_id())."""
        _deprecated("get_task_id")
        ctx = task_context.current()
        if ctx is None or ctx.task_id is None:
            return None
        return TaskID(ctx.task_id)

    def get_task_name(self) -> Optional[str]:
        """The current task's name: the ``name=`` option, else its function's
        name, "Class.method" for an actor call; None outside a task."""
        ctx = task_context.current()
        if ctx is None or ctx.task_id is None:
            return None
        return ctx.function_name

    def get_task_function_name(self) -> Optional[str]:
        """The current task's function with its module, as Ray names it
        ("module.function", "module.Class.method"); None outside a task."""
        ctx = task_context.current()
        if ctx is None or ctx.task_id is None:
            return None
        if ctx.actor_id is not None:
            cls = state.actor_class
            if cls is None:
                return ctx.function_name
            method = getattr(cls, ctx.function or "__init__", None)
            import inspect

            if method is not None and (
                inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)
            ):
                # As Ray: an async method is named by its qualified name.
                return f"{cls.__module__}.{method.__qualname__}"
            return f"{cls.__module__}.{cls.__name__}.{ctx.function}"
        fn = state.functions.get(ctx.function)
        if fn is None:
            return ctx.function_name
        fn = getattr(fn, "_function", fn)
        return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', ctx.function_name)}"

    def is_canceled(self) -> bool:
        """Whether fleet.cancel() was called on the current (actor) task."""
        ctx = task_context.current()
        if ctx is None or ctx.task_id is None:
            raise RuntimeError("is_canceled() can only be called inside a task or actor")
        return task_context.is_canceled(ctx.task_id)

    # ---- actor -------------------------------------------------------------------

    def get_actor_id(self) -> Optional[str]:
        """The current actor's id as hex; None outside an actor."""
        ctx = task_context.current()
        if ctx is None or ctx.actor_id is None:
            return None
        return ctx.actor_id.hex()

    @property
    def actor_id(self) -> Optional[ActorID]:
        """Deprecated: the ActorID (use get_actor_id())."""
        _deprecated("get_actor_id")
        ctx = task_context.current()
        if ctx is None or ctx.actor_id is None:
            return None
        return ActorID(ctx.actor_id)

    def get_actor_name(self) -> Optional[str]:
        """The current actor's name ("" if it has none); None outside an actor."""
        ctx = task_context.current()
        if ctx is None or ctx.actor_id is None:
            return None
        return state.actor_name

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this code runs in."""
        ctx = task_context.current()
        if ctx is None or ctx.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor")
        return ActorHandle(ctx.actor_id, state.actor_meta)

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether this actor instance is a restart (False outside an actor)."""
        return state.actor_restarts > 0

    # ---- placement group ---------------------------------------------------------

    def get_placement_group_id(self) -> Optional[str]:
        """The placement group the current task or actor runs in, as hex; None
        if none (and in the driver)."""
        pg = _current_group()
        return pg.hex() if pg else None

    @property
    def current_placement_group_id(self) -> PlacementGroupID:
        """Deprecated: the PlacementGroupID (nil if none; use get_placement_group_id())."""
        _deprecated("get_placement_group_id")
        pg = _current_group()
        return PlacementGroupID(pg) if pg else PlacementGroupID.nil()

    @property
    def should_capture_child_tasks_in_placement_group(self) -> bool:
        """Whether tasks submitted here go into the current placement group."""
        ctx = task_context.current()
        return ctx is not None and ctx.capture_group is not None

    # ---- resources ---------------------------------------------------------------

    def get_assigned_resources(self) -> Dict[str, float]:
        """Resources of the current task, e.g. {"CPU": 1.0} (in a placement group
        by their plain names); empty in the driver."""
        ctx = task_context.current()
        if ctx is None:
            return {}
        return _plain_resource_names(ctx.assigned_resources())

    def get_accelerator_ids(self) -> Dict[str, List[str]]:
        """Accelerator ids assigned to the current task, by resource name."""
        ctx = task_context.current()
        return {"GPU": [str(g) for g in ctx.gpu_ids] if ctx is not None else []}

    # ---- environment -------------------------------------------------------------

    def get_runtime_env_string(self) -> str:
        return json.dumps(state.job_runtime_env or {})

    @property
    def runtime_env(self) -> Dict[str, Any]:
        return dict(state.job_runtime_env or {})

    def get(self) -> Dict[str, Any]:
        """Ray's dict: job_id, node_id and namespace; in a worker also task_id
        (and actor_id in an actor), as id objects."""
        core = _core()
        out: Dict[str, Any] = {
            "job_id": JobID(_job_bytes()),
            "node_id": NodeID(core.node_id),
            "namespace": state.namespace,
        }
        if state.mode == "worker":
            ctx = task_context.current()
            if ctx is not None and ctx.task_id is not None:
                out["task_id"] = TaskID(ctx.task_id)
            if ctx is not None and ctx.actor_id is not None:
                out["actor_id"] = ActorID(ctx.actor_id)
        return out


def _job_bytes() -> bytes:
    return int(task_context.current_job_id()).to_bytes(4, "little")


def _current_group() -> Optional[bytes]:
    ctx = task_context.current()
    if ctx is None:
        return None
    for item in ctx.resources.split(";") if ctx.resources else ():
        name = item.split("=", 1)[0]
        if name.startswith("bundle_group_"):
            return bytes.fromhex(name.rsplit("_", 1)[1])
    return None


def _plain_resource_names(res: Dict[str, float]) -> Dict[str, float]:
    """Placement-group resource names ("CPU_group_0_<pg>", "CPU_group_<pg>")
    back to the plain ones, without the group's "bundle" marker (as Ray)."""
    out: Dict[str, float] = {}
    for name, amount in res.items():
        m = _PG_RESOURCE.match(name)
        if m:
            if m.group(1) == "bundle":
                continue
            name = m.group(1)
        out[name] = max(out.get(name, 0.0), amount)
    return out


_PG_HEX = 2 * PLACEMENT_GROUP_ID_SIZE
_PG_RESOURCE = re.compile(r"^(.+)_group_(?:\d+_)?[0-9a-f]{" + str(_PG_HEX) + "}$")


def _core() -> Any:
    if state.core is None:
        raise RuntimeError("fleet is not initialized; call fleet.init() first")
    return state.core


def get_runtime_context() -> RuntimeContext:
    """Information about the current driver or worker (connects this process
    to fleet first, as any call does)."""
    if state.core is None:
        _ensure_initialized()
    return RuntimeContext()
