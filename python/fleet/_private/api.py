"""The core API: get, put, wait, actors by name, kill, cancel and cluster
introspection; init and shutdown come from fleet._private.session. The top
of the core layers: it may import any of them; only the package fleet (and
what sits above it) imports it."""

from __future__ import annotations

import pickle
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from fleet._private import serialization, state, task_context
from fleet._private.generator import ObjectRefGenerator
from fleet._private.session import (  # noqa: F401  (re-exported: fleet's API)
    FleetContext,
    _ensure_initialized,
    init,
    is_initialized,
    shutdown,
)
from fleet._private.waits import interruptible as _interruptible
from fleet._private.waits import timeout_ms as _timeout_ms
from fleet.actor import ActorHandle
from fleet.exceptions import GetTimeoutError, ObjectLostError
from fleet.object_ref import ObjectRef, flush_borrows


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Stores `value` and returns an ObjectRef to it."""
    if isinstance(value, ObjectRef):
        raise TypeError(
            "Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
            "you can wrap the ObjectRef in a list and call 'put' on it."
        )
    core = state.core or _ensure_initialized()
    nested: List[bytes] = []
    try:
        data, buffers = serialization.serialize(value, nested)
    except TypeError as e:
        raise TypeError(f"fleet.put could not serialize the value: {e}") from None
    if serialization.is_inline(data, buffers):
        ref = ObjectRef(core.put(data, 0), "", False)  # put's id comes with its ref
        if nested:
            core.set_contains(ref._id, nested)
        return ref
    return put_serialized(data, buffers, serialization.call_site(), nested)


def put_serialized(
    data: bytes, buffers: list, call_site: str, nested: Optional[List[bytes]] = None
) -> ObjectRef:
    """put() of a value already serialized (pickle bytes + out-of-band
    buffers, `nested` the ids of the refs inside): inline if small, else
    into the node's object store. The new object holds the nested refs."""
    core = state.core or _ensure_initialized()
    ref = ObjectRef(core.put_value(data, buffers, call_site), "", False)
    if nested:
        core.set_contains(ref._id, nested)
    return ref


def get(
    object_refs: Union[ObjectRef, Sequence[ObjectRef]], *, timeout: Optional[float] = None
) -> Any:
    """Returns the value(s) of one ObjectRef or a list of them, waiting as needed.

    Raises GetTimeoutError if `timeout` (seconds) passes first, and re-raises a
    task's exception (as RayTaskError that is also the original class).
    """
    core = state.core
    if core is None:
        raise RuntimeError("fleet.get called before fleet.init()")
    ms = _timeout_ms(timeout)
    if type(object_refs) is ObjectRef:
        try:
            data, flags = core.get([object_refs._id], ms, _interruptible())[0]
        except TimeoutError:
            raise GetTimeoutError(
                f"Get timed out: the object was not ready within {timeout} s."
            ) from None
        except RuntimeError as e:
            raise _lost(e) from None
        try:
            return serialization.value_from(data, flags) if flags else serialization.loads(data)
        finally:
            flush_borrows()  # refs inside: registered with their owners first (even on error)
    if type(object_refs) is ObjectRefGenerator:
        return object_refs  # as Ray: a generator is its own value (iterate it for the refs)
    if not isinstance(object_refs, list):
        raise ValueError(
            f"Invalid type of object refs, {type(object_refs)}, is given. 'object_refs' must "
            "either be an ObjectRef or a list of ObjectRefs."
        )
    ids = []
    for r in object_refs:
        if type(r) is not ObjectRef:
            raise TypeError(
                f"Attempting to call `get` on the value {r!r}, which is not an ObjectRef."
            )
        ids.append(r._id)
    try:
        results = core.get(ids, ms, _interruptible())
    except TimeoutError:
        raise GetTimeoutError(
            f"Get timed out: some of the {len(ids)} objects were not ready within {timeout} s."
        ) from None
    except RuntimeError as e:
        raise _lost(e) from None
    loads = serialization.loads
    value_from = serialization.value_from
    try:
        return [value_from(data, flags) if flags else loads(data) for data, flags in results]
    finally:
        flush_borrows()  # refs inside: registered with their owners first (even on error)


def _lost(e: Exception) -> Exception:
    return ObjectLostError(str(e))


def wait(
    object_refs: List[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: Optional[float] = None,
    fetch_local: bool = True,
) -> Tuple[List[ObjectRef], List[ObjectRef]]:
    """Waits until `num_returns` of the refs are ready or `timeout` passes.

    Returns (ready, not_ready), each in the order of `object_refs`.
    """
    core = state.core
    if core is None:
        raise RuntimeError("fleet.wait called before fleet.init()")
    if isinstance(object_refs, (ObjectRef, ObjectRefGenerator)):
        raise TypeError(
            "wait() expected a list of ray.ObjectRef or ray.ObjectRefGenerator, got a single "
            f"ray.ObjectRef or ray.ObjectRefGenerator {object_refs!r}"
        )
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs)}")
    if any(type(r) is ObjectRefGenerator for r in object_refs):
        return _wait_with_generators(list(object_refs), num_returns, timeout)
    ids = []
    for r in object_refs:
        if type(r) is not ObjectRef:
            raise TypeError(f"wait() expected a list of ObjectRef, got a list containing {type(r)}")
        ids.append(r._id)
    if len(set(ids)) != len(ids):
        raise ValueError("Wait requires a list of unique object refs.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}.")
    ms = _timeout_ms(timeout, negative_ok=False)
    if not ids:
        return [], []
    if num_returns > len(ids):
        raise ValueError(
            f"num_returns cannot be greater than the number of objects provided to wait: "
            f"{num_returns} > {len(ids)}"
        )
    flags = core.wait(ids, num_returns, ms, fetch_local, _interruptible())
    return _split_ready(object_refs, flags, num_returns)


def _split_ready(items: Sequence[Any], flags: Sequence[bool], num_returns: int) -> Tuple[
    List[Any], List[Any]
]:
    """(ready, not_ready) in the order of `items`, at most num_returns ready."""
    ready: List[Any] = []
    not_ready: List[Any] = []
    for r, ok in zip(items, flags):
        if ok and len(ready) < num_returns:
            ready.append(r)
        else:
            not_ready.append(r)
    return ready, not_ready


def _wait_with_generators(
    items: List[Any], num_returns: int, timeout: Optional[float]
) -> Tuple[List[Any], List[Any]]:
    """wait() over refs and ObjectRefGenerators: a generator is ready when its
    next item (or its end) is."""
    import time

    for r in items:
        if type(r) not in (ObjectRef, ObjectRefGenerator):
            raise TypeError(
                f"wait() expected a list of ObjectRef or ObjectRefGenerator, got {type(r)}"
            )
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}.")
    if num_returns > len(items):
        raise ValueError(
            f"num_returns cannot be greater than the number of objects provided to wait: "
            f"{num_returns} > {len(items)}"
        )
    ms = _timeout_ms(timeout, negative_ok=False)
    deadline = None if ms < 0 else time.monotonic() + ms / 1000
    core = state.core
    while True:
        ready_flags = []
        for r in items:
            if type(r) is ObjectRefGenerator:
                ready_flags.append(r._next_item_ready())
            else:
                ready_flags.append(core.wait([r._id], 1, 0, True, False)[0])
        expired = deadline is not None and time.monotonic() >= deadline
        if sum(ready_flags) >= num_returns or expired:
            break
        time.sleep(0.005)
    return _split_ready(items, ready_flags, num_returns)


def get_actor(name: str, namespace: Optional[str] = None) -> Any:
    """A handle to the named actor (in `namespace`, default: the current one).

    Raises ValueError if no live actor has that name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() needs a non-empty actor name, got {name!r}")
    core = state.core or _ensure_initialized()
    ns = namespace if namespace is not None else state.namespace
    info = core.get_named_actor(name, ns)
    if info is None or info["state"] == "DEAD":
        raise ValueError(
            f"Failed to look up actor with name '{name}' in namespace '{ns}'. This could "
            "be because 1. You are trying to look up a named actor you didn't create. "
            "2. The named actor died. 3. You did not use a namespace matching the "
            "namespace of the actor."
        )
    actor_id = info["actor_id"]
    # In the actor's owner, the handle counts like the one .remote() returned
    # (as in Ray); elsewhere it does not keep the actor alive.
    return ActorHandle(actor_id, pickle.loads(info["handle_meta"]),
                       core.hold_owned_actor_handle(actor_id))


def kill(actor: Any, *, no_restart: bool = True) -> None:
    """Kills an actor at once (running and queued calls fail with RayActorError).

    With no_restart=False the actor is restarted if its max_restarts allows.
    """
    if not isinstance(actor, ActorHandle):
        raise ValueError(
            f"fleet.kill() only supported for actors. For tasks, try fleet.cancel(). "
            f"Got: {type(actor).__name__}."
        )
    core = state.core
    if core is None:
        raise RuntimeError("fleet.kill called before fleet.init()")
    core.kill_actor(
        actor._fleet_actor_id,
        bool(no_restart),
        "it was killed by `ray.kill` (fleet.kill)" + ("" if no_restart else " (no_restart=False)"),
    )


def cancel(object_ref: Any, *, force: bool = False, recursive: bool = True) -> None:
    """Cancels the task (or actor call) that makes `object_ref`.

    A task not started yet never runs; a running task gets KeyboardInterrupt
    (force=True: its worker is killed). A running actor call is not
    interrupted (an async actor's is cancelled as an asyncio task). ``get``
    then raises TaskCancelledError. Finished tasks are left alone.
    """
    if isinstance(object_ref, ObjectRefGenerator):
        object_ref = object_ref.completed()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(
            "fleet.cancel() only supported for object refs. For actors, try fleet.kill(). "
            f"Got: {type(object_ref).__name__}."
        )
    core = state.core
    if core is None:
        raise RuntimeError("fleet.cancel called before fleet.init()")
    task_id = object_ref._id[:16]  # its task's id
    if force and core.actor_call_pending(task_id):
        raise ValueError("force=True is not supported for actor tasks.")
    # A ref borrowed from another task is cancelled by its owner (forwarded).
    core.cancel(task_id, bool(force), bool(recursive), object_ref._id)


def _nodes_raw() -> List[Dict[str, Any]]:
    core = state.core
    if core is None:
        raise RuntimeError("fleet is not initialized; call fleet.init() first")
    return core.nodes()


def nodes() -> List[Dict[str, Any]]:
    """The cluster's nodes, in Ray's format."""
    out = []
    for n in _nodes_raw():
        out.append(
            {
                "NodeID": n["node_id"],
                "Alive": n["alive"],
                "alive": n["alive"],
                "NodeManagerAddress": n["node_ip"],
                "NodeManagerHostname": n["hostname"],
                "NodeManagerPort": 0,
                "ObjectManagerPort": 0,
                "ObjectStoreSocketName": "",
                "RayletSocketName": n["unix_socket"],
                "MetricsExportPort": 0,
                "NodeName": n["node_ip"],
                "Resources": dict(n["total"]) if n["alive"] else {},
                "Labels": dict(n.get("labels") or {}),
                "DeathReason": n["death_reason"],
                "DeathReasonMessage": n["death_reason"],
            }
        )
    return out


def cluster_resources() -> Dict[str, float]:
    """Total resources of the alive nodes."""
    total: Dict[str, float] = {}
    for n in _nodes_raw():
        if n["alive"]:
            for k, v in n["total"].items():
                total[k] = total.get(k, 0.0) + v
    return total


def available_resources() -> Dict[str, float]:
    """Resources not in use right now (eventually consistent, like Ray's)."""
    avail: Dict[str, float] = {}
    for n in _nodes_raw():
        if n["alive"]:
            for k, v in n["available"].items():
                if v > 0:
                    avail[k] = avail.get(k, 0.0) + v
    return avail


def get_gpu_ids() -> List[int]:
    """GPU ids assigned to the current task (empty in the driver)."""
    ctx = task_context.current()
    return list(ctx.gpu_ids) if ctx is not None else []
