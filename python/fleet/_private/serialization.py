"""Serialization of values, arguments and errors.

Values use pickle protocol 5; anything the standard pickler cannot handle, or
that refers to ``__main__`` (which a worker cannot import), goes through
cloudpickle, which pickles such functions and classes by value.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, List, Tuple

from fleet import _core
from fleet.exceptions import (
    GetTimeoutError,  # noqa: F401  (re-exported for api)
    ObjectLostError,
    OwnerDiedError,
    RaySystemError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)

FLAG_PICKLED_ERROR = _core.FLAG_PICKLED_ERROR
ERROR_FLAGS = _core.ERROR_FLAGS

_cloudpickle = None


def _cp():
    global _cloudpickle
    if _cloudpickle is None:
        import cloudpickle

        _cloudpickle = cloudpickle
    return _cloudpickle


def dumps(value: Any) -> bytes:
    """Pickles `value`; raises TypeError naming the type if it cannot be."""
    try:
        data = pickle.dumps(value, protocol=5)
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    try:
        return _cp().dumps(value, protocol=5)
    except Exception as e:
        raise TypeError(
            f"Could not serialize the value {_short_repr(value)} of type "
            f"{type(value).__module__}.{type(value).__qualname__}: {e}"
        ) from e


# Values travel inline in one wire frame (limit 1 GiB) until the shared-memory
# object store exists; leave room for the rest of the message.
MAX_INLINE_BYTES = (1 << 30) - (1 << 20)


def export(root: Any, obj: Any, core: Any, prefix: str, what: str, name: str) -> str:
    """Stores `obj` (a remote function or an actor class), pickled by value
    with cloudpickle, in the control store's KV once per core (job), and
    returns its key. `root` caches the pickle and the key (_pickled,
    _exported_to, _key) for every copy made by ``.options()``."""
    if root._exported_to is not core:
        if root._pickled is None:
            try:
                root._pickled = _cp().dumps(obj, protocol=5)
            except Exception as e:
                raise TypeError(
                    f"Could not serialize the {what} '{name}': {e}. It must be picklable "
                    "by cloudpickle (check what it captures)."
                ) from e
        key = f"{prefix}:{core.job_id}:{_core.random_id().hex()[:16]}:{name}"
        core.kv_put(key, root._pickled, True)
        root._key = key
        root._exported_to = core
    return root._key


def check_inline_size(data: bytes, what: str) -> None:
    """Raises ValueError if `data` cannot travel inline in a message."""
    if len(data) > MAX_INLINE_BYTES:
        raise ValueError(
            f"{what} is {len(data):,} bytes serialized; fleet sends values inline in one "
            f"message of at most {MAX_INLINE_BYTES:,} bytes until its shared-memory object "
            "store is implemented. Split the value into smaller pieces."
        )


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def _short_repr(value: Any) -> str:
    try:
        r = repr(value)
    except Exception:
        r = f"<{type(value).__name__} object>"
    return r if len(r) <= 80 else r[:77] + "..."


def serialize_args(function_name: str, args: tuple, kwargs: dict, ref_type: type):
    """Returns (blob, dep_ids). Top-level ObjectRefs become dependencies."""
    positions: List[Tuple[int, Any]] = []
    deps: List[bytes] = []
    if args:
        for i, a in enumerate(args):
            if type(a) is ref_type:
                positions.append((0, i))
                deps.append(a._id)
    if kwargs:
        for k, v in kwargs.items():
            if type(v) is ref_type:
                positions.append((1, k))
                deps.append(v._id)
    if not args and not kwargs:
        return b"", deps
    if positions:
        args = list(args)
        kwargs = dict(kwargs)
        for kind, where in positions:
            if kind == 0:
                args[where] = None
            else:
                kwargs[where] = None
        payload: Any = (tuple(args), kwargs, positions)
    else:
        payload = (args, kwargs)
    try:
        blob = dumps(payload)
    except TypeError:
        # Name the argument that failed.
        for i, a in enumerate(args):
            _check_arg(function_name, f"argument {i}", a)
        for k, v in kwargs.items():
            _check_arg(function_name, f"keyword argument '{k}'", v)
        raise
    check_inline_size(blob, f"The arguments of '{function_name}'")
    return blob, deps


def _check_arg(function_name: str, which: str, value: Any) -> None:
    try:
        dumps(value)
    except TypeError as e:
        raise TypeError(
            f"Could not serialize {which} of remote function '{function_name}': "
            f"{_short_repr(value)} of type {type(value).__qualname__} cannot be pickled "
            f"({e.__cause__ or e})"
        ) from None


def deserialize_args(blob: bytes, deps: list) -> Tuple[tuple, dict]:
    """Inverse of serialize_args; `deps` are (data, flags) of the resolved refs."""
    if not blob:
        return (), {}
    payload = pickle.loads(blob)
    if len(payload) == 2:
        return payload
    args, kwargs, positions = payload
    args = list(args)
    for (kind, where), (data, flags) in zip(positions, deps):
        value = value_from(data, flags)
        if kind == 0:
            args[where] = value
        else:
            kwargs[where] = value
    return tuple(args), kwargs


def value_from(data: bytes, flags: int) -> Any:
    """Deserializes an object; raises the stored error if it is one."""
    if flags & ERROR_FLAGS:
        raise error_from(data, flags)
    return pickle.loads(data)


def error_from(data: bytes, flags: int) -> BaseException:
    if flags & _core.FLAG_ACTOR_DIED:
        return _actor_died(data, flags)
    if flags & FLAG_PICKLED_ERROR:
        try:
            err = pickle.loads(data)
        except Exception as e:  # the cause's class is not importable here
            return RaySystemError(f"could not deserialize a task's error: {e}")
        if isinstance(err, RayTaskError):
            return err.as_instanceof_cause()
        return err
    message = data.decode("utf-8", "replace")
    if flags & _core.FLAG_TASK_CANCELLED:
        if flags & _core.FLAG_WORKER_CRASHED:
            from fleet.exceptions import _ForceCancelledError

            return _ForceCancelledError(message)
        return TaskCancelledError(message)
    if flags & _core.FLAG_WORKER_CRASHED:
        return WorkerCrashedError(message)
    if flags & _core.FLAG_OWNER_DIED:
        return OwnerDiedError(message)
    if flags & _core.FLAG_OBJECT_LOST:
        return ObjectLostError(message)

    return RaySystemError(message)


def _actor_died(data: bytes, flags: int) -> BaseException:
    from fleet.exceptions import ActorDiedError

    if not flags & FLAG_PICKLED_ERROR:
        return ActorDiedError(data.decode("utf-8", "replace"))
    try:  # the constructor's error
        cause = pickle.loads(data)
    except Exception as e:
        return ActorDiedError(f"The actor died because of an error raised in its constructor "
                              f"(which could not be deserialized here: {e}).")
    text = getattr(cause, "traceback_str", None) or str(cause)
    return ActorDiedError(
        "The actor died because of an error raised in its creation task (its constructor), "
        f"so it cannot run this call:\n{text}",
        cause=cause.as_instanceof_cause() if isinstance(cause, RayTaskError) else cause,
    )


_WORKER_FILES = ("worker_main.py", "serialization.py")


def serialize_task_error(
    function_name: str, exc: BaseException, pid: int, ip: str, node_id: str
) -> bytes:
    """Pickles a RayTaskError for `exc`, keeping the cause when it pickles."""
    if isinstance(exc, RayTaskError):
        cause = exc.cause
    else:
        cause = exc
    frames = exc.__traceback__
    # Hide fleet's own frames (the worker loop) above the user's function.
    while frames is not None and frames.tb_frame.f_code.co_filename.endswith(_WORKER_FILES):
        frames = frames.tb_next
    tb = "".join(traceback.format_exception(type(exc), exc, frames))
    err = RayTaskError(function_name, tb, cause, pid=pid, ip=ip, node_id=node_id)
    try:
        return dumps(err)
    except TypeError:
        err = RayTaskError(
            function_name,
            tb,
            RuntimeError(f"{type(cause).__name__}: {cause} (the exception could not be pickled)"),
            pid=pid,
            ip=ip,
            node_id=node_id,
        )
        return dumps(err)
