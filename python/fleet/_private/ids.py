"""Ray's ID classes (JobID, TaskID, ActorID, NodeID, WorkerID, ...) over
fleet's binary ids.

Each class wraps the bytes fleet uses for that kind of id; the sizes are
fleet's (see cpp/src/common/ids.h), not Ray's: a JobID is the job's number
as 4 little-endian bytes, a TaskID 16 bytes whose first 4 are its job's,
an ObjectID (an ObjectRef) the TaskID plus a 4-byte index, node, worker and
actor ids 16 random bytes, a placement group's 14.

Invariants: an id holds exactly ``size()`` bytes (the constructor checks, as
Ray's ``check_id`` does: TypeError for non-bytes, ValueError for a wrong
length). Two ids are equal when they are of the same class and hold the same
bytes. The nil id is all 0xff bytes, as in Ray. Immutable, so thread-safe.
"""

from __future__ import annotations

import os
from typing import Any, Type, TypeVar

_T = TypeVar("_T", bound="BaseID")

UNIQUE_ID_SIZE = 16  # fleet's node, worker and actor ids (kUniqueIdSize)
JOB_ID_SIZE = 4
TASK_ID_SIZE = 16
OBJECT_ID_SIZE = 20  # kObjectIdSize: a TaskID and a 4-byte index
PLACEMENT_GROUP_ID_SIZE = 14


def check_id(b: Any, size: int) -> None:
    """Raises as Ray does for bytes that cannot be an id of `size` bytes."""
    if not isinstance(b, bytes):
        raise TypeError("Unsupported type: " + str(type(b)))
    if len(b) != size:
        raise ValueError(f"ID string needs to have length {size}, got {len(b)}")


class BaseID:
    """What every id class has: binary(), hex(), size(), is_nil(), nil(),
    from_binary(), from_hex(), equality by class and bytes, and hashing."""

    __slots__ = ()
    _SIZE = UNIQUE_ID_SIZE

    def binary(self) -> bytes:
        """The id as bytes."""
        return self._id  # type: ignore[attr-defined]

    def hex(self) -> str:
        """The id as a hex string."""
        return self._id.hex()  # type: ignore[attr-defined]

    @classmethod
    def size(cls) -> int:
        """How many bytes an id of this class has."""
        return cls._SIZE

    def is_nil(self) -> bool:
        """Whether this is the nil id (all bytes 0xff)."""
        return self.binary() == b"\xff" * self._SIZE

    @classmethod
    def nil(cls: Type[_T]) -> _T:
        """The nil id of this class."""
        return cls(b"\xff" * cls._SIZE)  # type: ignore[call-arg]

    @classmethod
    def from_binary(cls: Type[_T], id_bytes: bytes) -> _T:
        """The id whose bytes are `id_bytes`."""
        if not isinstance(id_bytes, bytes):
            raise TypeError("Expect bytes, got " + str(type(id_bytes)))
        return cls(id_bytes)  # type: ignore[call-arg]

    @classmethod
    def from_hex(cls: Type[_T], hex_id: Any) -> _T:
        """The id whose hex string is `hex_id`."""
        if isinstance(hex_id, bytes):
            hex_id = hex_id.decode()
        try:
            b = bytes.fromhex(hex_id)
        except (TypeError, ValueError):
            raise ValueError(f"{hex_id!r} is not a hex string") from None
        return cls.from_binary(b)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.binary() == other.binary()  # type: ignore

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.binary())

    def __bytes__(self) -> bytes:
        return self.binary()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        return type(self), (self.binary(),)


class _FixedID(BaseID):
    """An id that is just its bytes."""

    __slots__ = ("_id",)

    def __init__(self, id: bytes):  # noqa: A002  (Ray's argument name)
        check_id(id, self._SIZE)
        self._id = id


class UniqueID(_FixedID):
    """A random unique id (16 bytes in fleet)."""

    __slots__ = ()

    @classmethod
    def from_random(cls: Type[_T]) -> _T:
        """A fresh random id."""
        return cls(os.urandom(cls._SIZE))  # type: ignore[call-arg]


class NodeID(UniqueID):
    """The id of a node (``fleet.nodes()[i]["NodeID"]`` is its hex)."""

    __slots__ = ()


class WorkerID(UniqueID):
    """The id of a worker process (or driver)."""

    __slots__ = ()


class FunctionID(UniqueID):
    """The id of a remote function."""

    __slots__ = ()


class ActorClassID(UniqueID):
    """The id of an actor class."""

    __slots__ = ()


class ClusterID(UniqueID):
    """The id of a cluster."""

    __slots__ = ()


class JobID(_FixedID):
    """The id of a job: its number, as 4 little-endian bytes."""

    __slots__ = ()
    _SIZE = JOB_ID_SIZE

    @classmethod
    def from_int(cls, value: int) -> JobID:
        """The JobID of job number `value`."""
        return cls(int(value).to_bytes(JOB_ID_SIZE, "little"))

    def int(self) -> int:
        """The job's number."""
        return int.from_bytes(self._id, "little")


class ActorID(UniqueID):
    """The id of an actor (``handle._actor_id``): 12 unique bytes, then the
    creating job's id (as Ray lays it out)."""

    __slots__ = ()

    @property
    def job_id(self) -> JobID:
        """The job that created the actor."""
        return JobID(self._id[-JOB_ID_SIZE:])


class TaskID(_FixedID):
    """The id of a task: its job's 4 bytes, then 12 unique bytes."""

    __slots__ = ()
    _SIZE = TASK_ID_SIZE

    @classmethod
    def from_random(cls) -> TaskID:
        """A fresh random task id."""
        return cls(os.urandom(TASK_ID_SIZE))

    def job_id(self) -> JobID:
        """The job this task belongs to."""
        return JobID(self._id[:JOB_ID_SIZE])


class PlacementGroupID(UniqueID):
    """The id of a placement group."""

    __slots__ = ()
    _SIZE = PLACEMENT_GROUP_ID_SIZE


__all__ = [
    "ActorClassID",
    "ActorID",
    "BaseID",
    "ClusterID",
    "FunctionID",
    "JobID",
    "NodeID",
    "PlacementGroupID",
    "TaskID",
    "UniqueID",
    "WorkerID",
    "check_id",
]
