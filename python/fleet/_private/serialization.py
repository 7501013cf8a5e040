"""Serialization of values, arguments and errors.

Values use pickle protocol 5; anything the standard pickler cannot handle, or
that refers to ``__main__`` (which a worker cannot import), goes through
cloudpickle, which pickles such functions and classes by value.

Buffers (numpy arrays, anything pickled as a ``PickleBuffer``) are taken out
of band: the C++ core writes them once, either framed beside the pickle bytes
in a small inline value or straight into the node's shared-memory object
store (layout in cpp/src/core/value_format.h). Reading a stored value hands
the unpickler views of shared memory, so a numpy array comes back as a
read-only view with no copy; the view keeps the object pinned while it lives.
"""

from __future__ import annotations

import pickle
import re
import struct
import threading
import traceback
from typing import Any, List, Optional, Tuple

from fleet import _core
from fleet._private import state
from fleet.exceptions import (
    ActorDiedError,
    GetTimeoutError,  # noqa: F401  (re-exported for api)
    ObjectLostError,
    OwnerDiedError,
    RaySystemError,
    RayTaskError,
    TaskCancelledError,
    TaskPlacementGroupRemoved,
    WorkerCrashedError,
    _ForceCancelledError,
)

FLAG_PICKLED_ERROR = _core.FLAG_PICKLED_ERROR
FLAG_IN_STORE = _core.FLAG_IN_STORE
ERROR_FLAGS = _core.ERROR_FLAGS
# Values (pickle bytes + buffers) up to this size travel inline.
INLINE_THRESHOLD = _core.INLINE_THRESHOLD
_FRAMED_MAGIC = b"FL5\x00"
_FRAMED_HEADER = struct.Struct("<4sIQQ")

_cloudpickle = None
_dumps = pickle.dumps

# While fleet serializes a value whose refs it tracks (a put, task
# arguments), refs pickled on this thread are collected here instead of
# being marked escaped (ObjectRef.__reduce__ reads `ids`); `borrows` is set
# when a ref deserialized on this thread was queued for registration with
# its owner.
_collecting = threading.local()


def collect_refs(into: Optional[List[bytes]]) -> Optional[List[bytes]]:
    """Starts (or, with None, stops) collecting the ids of refs pickled on
    this thread; returns the previous collector."""
    prev = getattr(_collecting, "ids", None)
    _collecting.ids = into
    return prev


def flush_borrows() -> None:
    """Registers the refs deserialized since the last flush with their
    owners (one round trip per owner); call before the value that carried
    them can be let go."""
    if getattr(_collecting, "borrows", False):
        _collecting.borrows = False
        core = state.core
        if core is not None:
            core.flush_borrows()


def _cp():
    global _cloudpickle
    if _cloudpickle is None:
        import cloudpickle

        _cloudpickle = cloudpickle
    return _cloudpickle


def _pickle(value: Any, buffers: Optional[list], nested: Optional[List[bytes]]) -> bytes:
    """Protocol 5 with the standard pickler, or cloudpickle for what it
    cannot handle or what refers to ``__main__``; out-of-band buffers go to
    `buffers` if given. Raises TypeError naming the type."""
    callback = buffers.append if buffers is not None else None
    try:
        data = _dumps(value, 5, buffer_callback=callback)
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    # The second attempt collects buffers and refs again.
    if buffers is not None:
        del buffers[:]
    if nested is not None:
        del nested[:]
    try:
        return _cp().dumps(value, protocol=5, buffer_callback=callback)
    except Exception as e:
        raise TypeError(
            f"Could not serialize the value {_short_repr(value)} of type "
            f"{type(value).__module__}.{type(value).__qualname__}: {e}"
        ) from e


def dumps(value: Any) -> bytes:
    """Pickles `value` in band; raises TypeError naming the type if it cannot be."""
    return _pickle(value, None, None)


def serialize(value: Any, nested: Optional[List[bytes]] = None) -> Tuple[bytes, list]:
    """Pickles `value` (protocol 5) with its buffers out of band: returns the
    pickle bytes and the buffers as contiguous memoryviews. With `nested`,
    the ids of the ObjectRefs inside the value are appended to it (the caller
    holds them for the receiver); without, such refs escape (kept until
    shutdown). Raises TypeError naming the type if it cannot be pickled."""
    if nested is not None:
        prev = getattr(_collecting, "ids", None)
        _collecting.ids = nested
    buffers: list = []
    try:
        data = _pickle(value, buffers, nested)
        return data, [b.raw() for b in buffers] if buffers else buffers
    finally:
        if nested is not None:
            _collecting.ids = prev


def is_inline(data: bytes, buffers: list) -> bool:
    """Whether a serialized value travels as plain pickle bytes."""
    return not buffers and len(data) <= INLINE_THRESHOLD


def loads_framed(buf: Any) -> Any:
    """Unpickles a framed value (inline bytes or a StoreBuffer of shared
    memory); its buffers become zero-copy views of `buf`."""
    mv = memoryview(buf)
    magic, nbuf, off, n = _FRAMED_HEADER.unpack_from(mv, 0)
    if magic != _FRAMED_MAGIC:
        raise RaySystemError("a stored value is damaged (bad header)")
    buffers: Any = ()
    if nbuf:
        spans = struct.unpack_from(f"<{2 * nbuf}Q", mv, _FRAMED_HEADER.size)
        buffers = [mv[spans[i] : spans[i] + spans[i + 1]] for i in range(0, 2 * nbuf, 2)]
    return pickle.loads(mv[off : off + n], buffers=buffers)


def call_site(skip: int = 2) -> str:
    """'file:line in function' of the user's code that called into fleet."""
    import sys

    f = sys._getframe(skip)
    while f is not None and "/fleet/" in f.f_code.co_filename:
        if "/tests/" in f.f_code.co_filename:
            break
        f = f.f_back
    if f is None:
        return ""
    return f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


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


def loads(data: bytes) -> Any:
    """Unpickles an inline value (plain pickle bytes, or framed)."""
    if data[:4] == _FRAMED_MAGIC:
        return loads_framed(data)
    return pickle.loads(data)


def _short_repr(value: Any) -> str:
    try:
        r = repr(value)
    except Exception:
        r = f"<{type(value).__name__} object>"
    return r if len(r) <= 80 else r[:77] + "..."


def serialize_args(function_name: str, args: tuple, kwargs: dict, ref_type: type):
    """Returns (blob, dep_ids, nested_ids). Top-level ObjectRefs become
    dependencies (resolved and inlined before the task runs); refs nested
    inside arguments are returned in nested_ids, for the submitter to hold
    until the task finishes."""
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
        return b"", deps, []
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
    nested: List[bytes] = []
    try:
        blob, buffers = serialize(payload, nested)
    except TypeError:
        # Name the argument that failed.
        for i, a in enumerate(args):
            _check_arg(function_name, f"argument {i}", a)
        for k, v in kwargs.items():
            _check_arg(function_name, f"keyword argument '{k}'", v)
        raise
    if not buffers and len(blob) <= INLINE_THRESHOLD:
        return blob, deps, nested
    if len(blob) + sum(b.nbytes for b in buffers) <= INLINE_THRESHOLD:
        return _core.frame(blob, buffers), deps, nested
    return _args_via_store(function_name, args, kwargs, positions, deps, ref_type)


class _Deps(list):
    """Dependency ids that also keep alive the refs of arguments put in the
    object store for this call, until the caller has submitted it."""

    __slots__ = ("refs",)


def _args_via_store(function_name, args, kwargs, positions, deps, ref_type):
    """Large arguments go to the object store (as in Ray: those over the
    inline threshold); the task gets them as ObjectRef dependencies."""
    core = state.core
    args = list(args)
    kwargs = dict(kwargs)
    positions = list(positions)
    out = _Deps(deps)
    out.refs = []
    taken = set(positions)
    site = call_site(3)
    for kind, where, value in [(0, i, a) for i, a in enumerate(args)] + [
        (1, k, v) for k, v in kwargs.items()
    ]:
        if (kind, where) in taken:
            continue
        inner: List[bytes] = []
        data, bufs = serialize(value, inner)
        if len(data) + sum(b.nbytes for b in bufs) <= INLINE_THRESHOLD // 4:
            continue  # small: stays in the inline blob
        ref = ref_type(core.put_value(data, bufs, site), "", False)  # (a put: its ref)
        if inner:
            core.set_contains(ref._id, inner)
        out.refs.append(ref)
        positions.append((kind, where))
        out.append(ref._id)
        if kind == 0:
            args[where] = None
        else:
            kwargs[where] = None
    nested: List[bytes] = []
    blob, buffers = serialize((tuple(args), kwargs, positions), nested)
    if buffers or len(blob) > INLINE_THRESHOLD:
        blob = _core.frame(blob, buffers)
        if len(blob) > INLINE_THRESHOLD * 16:
            raise ValueError(
                f"The arguments of '{function_name}' are {len(blob):,} bytes serialized even "
                "after moving each large argument to the object store; pass fewer or smaller "
                "arguments (or put() parts of them yourself)."
            )
    return blob, out, nested


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
    """Inverse of serialize_args; `deps` are (data, flags) of the resolved refs.
    Refs found inside are registered with their owners before it returns."""
    if not blob:
        return (), {}
    try:
        payload = loads(blob)
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
    finally:
        flush_borrows()  # even on error: a queued registration must not linger


def value_from(data: Any, flags: int) -> Any:
    """Deserializes an object (bytes, or a StoreBuffer with FLAG_IN_STORE);
    raises the stored error if it is one."""
    if flags & ERROR_FLAGS:
        raise error_from(data, flags)
    if flags & FLAG_IN_STORE:
        return loads_framed(data)
    return loads(data)


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
            return _ForceCancelledError(message)
        return TaskCancelledError(message)
    if flags & _core.FLAG_WORKER_CRASHED:
        return WorkerCrashedError(message)
    if flags & _core.FLAG_OWNER_DIED:
        return OwnerDiedError(message)
    if flags & _core.FLAG_OBJECT_LOST:
        return ObjectLostError(message)
    if _PG_REMOVED in message:
        return TaskPlacementGroupRemoved(message)
    return RaySystemError(message)


# What fleet-node answers a lease request whose placement group bundle was
# removed (cpp/src/node/lease_manager.cc); the task fails with it.
_PG_REMOVED = "its placement group bundle was removed"
# Actor death messages name the actor: "The actor C (id <hex>) ..."
# (cpp/src/core/actor_submitter.cc).
_ACTOR_ID_IN_TEXT = re.compile(r"\(id ([0-9a-f]+)\)")


def _actor_id_in(text: str) -> Optional[str]:
    m = _ACTOR_ID_IN_TEXT.search(text)
    return m.group(1) if m else None


def _actor_died(data: bytes, flags: int) -> BaseException:
    if not flags & FLAG_PICKLED_ERROR:
        text = data.decode("utf-8", "replace")
        return ActorDiedError(text, actor_id=_actor_id_in(text))
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
    function_name: str, exc: BaseException, pid: int, ip: str, node_id: str,
    actor_id: Optional[str] = None,
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
    err = RayTaskError(function_name, tb, cause, pid=pid, ip=ip, node_id=node_id,
                       actor_id=actor_id)
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
            actor_id=actor_id,
        )
        return dumps(err)
