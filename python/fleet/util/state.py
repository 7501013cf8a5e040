"""State API (Ray's ``ray.util.state``): what the cluster runs, as records.

Today: :func:`list_actors` and :func:`get_actor` (by id), from the control
store's actor directory, and :func:`list_objects`, from the node's
shared-memory object store.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from fleet._private import state as _state


class ActorState(dict):
    """One actor: a dict that also reads as attributes (``a.state``).

    Fields (Ray's names): actor_id, class_name, state (PENDING_CREATION,
    ALIVE, RESTARTING, DEAD), name, ray_namespace, pid, node_id, job_id,
    num_restarts, is_detached, death_cause, required_resources.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _record(raw: Dict[str, Any]) -> ActorState:
    return ActorState(
        actor_id=raw["actor_id"].hex(),
        class_name=raw["class_name"],
        state=raw["state"],
        name=raw["name"],
        ray_namespace=raw["namespace"],
        pid=raw["pid"],
        node_id=raw["node_id"],
        job_id=int(raw["job_id"]).to_bytes(4, "little").hex(),
        num_restarts=raw["num_restarts"],
        is_detached=raw["detached"],
        death_cause=raw["death_reason"] or None,
        required_resources=dict(raw["resources"]),
    )


def _matches(record: ActorState, filters: Iterable[Tuple[str, str, Any]]) -> bool:
    for key, op, value in filters:
        if key not in record:
            raise ValueError(f"unknown field '{key}' in filters; fields: {sorted(record)}")
        have = record[key]
        if op == "=":
            ok = str(have) == str(value)
        elif op == "!=":
            ok = str(have) != str(value)
        else:
            raise ValueError(f"unsupported filter operator {op!r} (use '=' or '!=')")
        if not ok:
            return False
    return True


def list_actors(
    filters: Optional[List[Tuple[str, str, Any]]] = None,
    limit: int = 10_000,
    detail: bool = False,
    **_: Any,
) -> List[ActorState]:
    """Every actor the cluster knows (dead ones too), optionally filtered by
    ``(field, "=" | "!=", value)`` tuples, e.g. ``[("state", "=", "ALIVE")]``."""
    core = _state.core
    if core is None:
        raise RuntimeError("fleet is not initialized; call fleet.init() first")
    records = [_record(a) for a in core.list_actors()]
    out = [r for r in records if _matches(r, filters or [])]
    return out[:limit]


def list_named_actors(all_namespaces: bool = False) -> List[Any]:
    """Names of the live named actors (``fleet.util.list_named_actors``): in
    the current namespace, or with ``all_namespaces=True`` as dicts with
    ``name`` and ``namespace``."""
    live = [a for a in list_actors() if a.name and a.state != "DEAD"]
    if all_namespaces:
        return [{"name": a.name, "namespace": a.ray_namespace} for a in live]
    return [a.name for a in live if a.ray_namespace == _state.namespace]


def get_actor(id: str, **_: Any) -> Optional[ActorState]:  # noqa: A002 (Ray's name)
    """The actor with this hex id, or None."""
    for r in list_actors():
        if r["actor_id"] == id:
            return r
    return None


class ObjectState(ActorState):
    """One object in the node's shared-memory store (values small enough to
    travel inline live in their owner's process and are not listed).

    Fields: object_id (hex), object_size (bytes), owner (the owning process's
    address), call_site ("file:line in function" of the put or remote call
    that created it), where ("memory", "spilled", "spilling", "restoring",
    "creating" or "lost"), pinned (a reader holds a view of it), pins,
    freed (its owner let go; it goes once unpinned).
    """


def list_objects(
    filters: Optional[List[Tuple[str, str, Any]]] = None,
    limit: int = 10_000,
    detail: bool = False,
    **_: Any,
) -> List[ObjectState]:
    """The objects in this node's shared-memory object store, largest first,
    optionally filtered by ``(field, "=" | "!=", value)`` tuples."""
    core = _state.core
    if core is None:
        raise RuntimeError("fleet is not initialized; call fleet.init() first")
    records = [
        ObjectState(
            object_id=o["object_id"],
            object_size=o["size"],
            owner=o["owner"],
            call_site=o["call_site"] or "(unknown)",
            where=o["where"],
            pinned=o["pins"] > 0,
            pins=o["pins"],
            freed=o["freed"],
        )
        for o in core.store_list()["objects"]
    ]
    records.sort(key=lambda r: -r["object_size"])
    return [r for r in records if _matches(r, filters or [])][:limit]


def memory_summary() -> str:
    """A table of the node's object store (what ``fleet memory`` prints):
    usage, spilling totals, and one line per object."""
    core = _state.core
    if core is None:
        raise RuntimeError("fleet is not initialized; call fleet.init() first")
    info = core.store_list()
    objs = list_objects()
    mib = 1024 * 1024
    lines = [
        f"Object store: {info['used'] / mib:.1f} MiB used of {info['capacity'] / mib:.1f} MiB; "
        f"{info['spilled_bytes'] / mib:.1f} MiB spilled to {info['spill_dir']} "
        f"({info['spilled_total']} spilled, {info['restored_total']} restored since start)",
        f"{len(objs)} objects",
        "",
        f"{'OBJECT ID':<42}{'SIZE':>12}  {'WHERE':<10}{'PINNED':<8}OWNER / CALL SITE",
    ]
    for o in objs:
        pinned = f"yes({o['pins']})" if o["pinned"] else "no"
        owner = o["owner"].rsplit("/", 1)[-1]
        lines.append(
            f"{o['object_id']:<42}{o['object_size']:>12,}  {o['where']:<10}{pinned:<8}"
            f"{owner}  {o['call_site']}" + ("  [freed]" if o["freed"] else "")
        )
    return "\n".join(lines)


__all__ = [
    "ActorState",
    "ObjectState",
    "get_actor",
    "list_actors",
    "list_named_actors",
    "list_objects",
    "memory_summary",
]
