"""ObjectRef: a reference to a value that lives (or will live) in the cluster."""

from __future__ import annotations

from typing import Any

from fleet._private import serialization, state
from fleet._private.ids import OBJECT_ID_SIZE, TASK_ID_SIZE, BaseID, JobID, TaskID
from fleet._private.serialization import _collecting, collect_refs, flush_borrows
from fleet.exceptions import ObjectLostError


class ObjectRef(BaseID):
    """A reference to a remote object, returned by ``.remote()`` and ``put``.

    Hashable and comparable by id, so refs work as dict keys and in sets. While
    any ``ObjectRef`` to an object lives in this process, the object is kept.
    Also Ray's ObjectID (``fleet.ObjectID`` is this class): an id of
    ``size()`` bytes, its task's id then a 4-byte index.
    """

    __slots__ = ("_id", "_owner", "_core", "__weakref__")
    _SIZE = OBJECT_ID_SIZE

    def __init__(self, object_id: bytes, owner: str = "", _add_ref: bool = True):
        self._id = object_id
        self._owner = owner
        core = state.core
        self._core = core
        if core is not None and _add_ref:
            core.add_ref(object_id)

    def __del__(self) -> None:
        core = self._core
        if core is not None:
            try:
                core.remove_ref(self._id)
            except Exception:  # interpreter shutdown, core gone
                pass

    def binary(self) -> bytes:
        """The id as bytes."""
        return self._id

    def hex(self) -> str:
        """The id as a hex string."""
        return self._id.hex()

    def task_id(self) -> TaskID:
        """Id of the task that creates this object (or of the put)."""
        return TaskID(self._id[:TASK_ID_SIZE])

    def job_id(self) -> JobID:
        """Id of the job the object belongs to."""
        return JobID(self._id[:4])

    @classmethod
    def from_binary(cls, id_bytes: bytes) -> ObjectRef:
        """A reference to the object whose id is `id_bytes` (does not keep the
        object alive: it is not a reference the owner counts)."""
        if not isinstance(id_bytes, bytes):
            raise TypeError("Expect bytes, got " + str(type(id_bytes)))
        _check_size(id_bytes)
        return _uncounted(cls, id_bytes)

    @classmethod
    def nil(cls) -> ObjectRef:
        """The nil object id."""
        return _uncounted(cls, b"\xff" * OBJECT_ID_SIZE)

    @classmethod
    def from_random(cls) -> ObjectRef:
        """A random object id (refers to no object)."""
        import os

        return _uncounted(cls, os.urandom(OBJECT_ID_SIZE))

    def __hash__(self) -> int:
        return hash(self._id)

    def __class_getitem__(cls, item: Any) -> Any:
        # ObjectRef[int] in annotations, as Ray's ObjectRef allows.
        import types

        return types.GenericAlias(cls, item)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        # Serialized into a value or argument: the receiver borrows it from us
        # (or from our owner) and registers as a borrower when it unpickles
        # it. Inside a put or task arguments the container holds it until
        # then; pickled anywhere else, it escapes: kept until shutdown.
        core = state.core
        owner = self._owner
        ids = getattr(_collecting, "ids", None)
        if ids is not None:
            ids.append(self._id)
            if not owner and core is not None:
                owner = core.address
        elif core is not None:
            if not owner:
                owner = core.address
            core.mark_escaped(self._id)
        return (_rebuild_ref, (self._id, owner))

    def future(self) -> Any:
        """A concurrent.futures.Future resolved with the value."""
        import concurrent.futures

        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(_value_of(self))
            except BaseException as e:  # delivered through the future
                fut.set_exception(e)

        import threading

        threading.Thread(target=run, daemon=True).start()
        return fut

    def __await__(self):
        import asyncio

        return asyncio.wrap_future(self.future()).__await__()


def _uncounted(cls: type, object_id: bytes) -> ObjectRef:
    """A ref made from an id alone: no reference the owner counts (its
    going away releases nothing)."""
    ref = cls(object_id, "", False)
    ref._core = None
    return ref


def _check_size(b: bytes) -> None:
    if len(b) != OBJECT_ID_SIZE:
        raise ValueError(f"ID string needs to have length {OBJECT_ID_SIZE}, got {len(b)}")


def _value_of(ref: ObjectRef) -> Any:
    """``fleet.get(ref)`` without a timeout, on a thread that Ctrl-C does not
    interrupt (what a future or an await waits for)."""
    core = state.core
    if core is None:
        raise RuntimeError("fleet.get called before fleet.init()")
    try:
        data, flags = core.get([ref._id], -1)[0]
    except RuntimeError as e:
        raise ObjectLostError(str(e)) from None
    try:
        if flags:
            return serialization.value_from(data, flags)
        return serialization.loads(data)
    finally:
        flush_borrows()  # refs inside: registered with their owners first (even on error)


def _rebuild_ref(object_id: bytes, owner: str) -> ObjectRef:
    core = state.core
    if core is not None and owner == core.address:
        return ObjectRef(object_id)
    if core is not None and core.register_borrowed(object_id, owner):
        _collecting.borrows = True
    return ObjectRef(object_id, owner)


__all__ = ["ObjectRef", "collect_refs", "flush_borrows"]

