"""Exceptions raised by fleet, with Ray's class names and behaviour.

A task that raises returns a :class:`RayTaskError` to whoever gets its result;
``get`` re-raises it as an instance of both ``RayTaskError`` and the user's own
exception class, so ``except ValueError`` still works for a remote
``ValueError``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional


class RayError(Exception):
    """Base class of every error fleet raises."""


class RaySystemError(RayError):
    """An internal error of the fleet runtime."""

    def __init__(self, client_exc: Any, traceback_str: Optional[str] = None):
        super().__init__(client_exc)
        self.client_exc = client_exc
        self.traceback_str = traceback_str

    def __str__(self) -> str:
        s = f"System error: {self.client_exc}"
        if self.traceback_str:
            s += f"\ntraceback: {self.traceback_str}"
        return s


class RayTaskError(RayError):
    """A task raised an exception; carries the remote traceback and the cause."""

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: Optional[BaseException],
        proctitle: Optional[str] = None,
        pid: Optional[int] = None,
        ip: Optional[str] = None,
        actor_repr: Optional[str] = None,
        actor_id: Optional[str] = None,
        node_id: Optional[str] = None,
    ):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"fleet::{function_name}"
        self.pid = pid if pid is not None else os.getpid()
        self.ip = ip
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        self.node_id = node_id
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"pid={self.pid}, ip={self.ip}"
        if self.node_id:
            where += f", node={self.node_id[:12]}"
        lines = self.traceback_str.rstrip("\n")
        return f"{self.proctitle}() ({where})\n{lines}"

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):
        return (
            _rebuild_task_error,
            (
                self.function_name,
                self.traceback_str,
                self.cause,
                self.proctitle,
                self.pid,
                self.ip,
                self.actor_repr,
                self.actor_id,
                self.node_id,
            ),
        )

    def make_dual_exception_instance(self) -> RayTaskError:
        """An instance of a class that is both RayTaskError and the cause's
        class (``RayTaskError(ValueError)``), carrying this error's fields.
        Raises TypeError if the cause's class cannot be subclassed."""
        cause_cls = type(self.cause)
        return _dual_class(cause_cls)(self)

    def as_instanceof_cause(self) -> RayTaskError:
        """Returns an exception that is both a RayTaskError and the cause's
        class; this error itself if there is no such class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(RayTaskError, cause_cls):
            return self
        if isinstance(self.cause, RayTaskError):
            return self.cause.as_instanceof_cause()
        try:
            return self.make_dual_exception_instance()
        except TypeError as e:  # a cause class that cannot be subclassed
            logging.getLogger(__name__).warning(
                "User exception type %s in RayTaskError can't be subclassed (%s). This "
                "exception is raised as RayTaskError only. You can use "
                "`ray_task_error.cause` to access the user exception.",
                cause_cls, e,
            )
            return self


def _rebuild_task_error(*args: Any) -> RayTaskError:
    return RayTaskError(*args)


def _rebuild_dual_task_error(*args: Any) -> RayTaskError:
    return RayTaskError(*args).make_dual_exception_instance()


_DUAL_CLASSES: dict = {}


def _dual_class(cause_cls: type) -> type:
    cls = _DUAL_CLASSES.get(cause_cls)
    if cls is not None:
        return cls

    def __init__(self, err: RayTaskError) -> None:  # noqa: N807
        self.__dict__.update(err.__dict__)
        self.args = (err.cause,)

    def __getattr__(self, name: str) -> Any:  # noqa: N807
        return getattr(self.__dict__["cause"], name)

    def __str__(self) -> str:  # noqa: N807
        return RayTaskError._message(self)

    def __reduce__(self):  # noqa: N807
        # Rebuilt as the same dual class (both RayTaskError and the cause's).
        return (_rebuild_dual_task_error, RayTaskError.__reduce__(self)[1])

    name = f"RayTaskError({cause_cls.__name__})"
    cls = type(
        name,
        (RayTaskError, cause_cls),
        {
            "__init__": __init__,
            "__getattr__": __getattr__,
            "__str__": __str__,
            "__reduce__": __reduce__,
            "__module__": "fleet.exceptions",
        },
    )
    _DUAL_CLASSES[cause_cls] = cls
    return cls


class WorkerCrashedError(RayError):
    """The worker running the task died unexpectedly (after all retries)."""

    def __init__(self, message: str = "The worker died unexpectedly while executing this task."):
        super().__init__(message)


class TaskCancelledError(RayError):
    """The task was cancelled. Ray's form ``TaskCancelledError(task_id,
    error_message)``; ``TaskCancelledError(message)`` gives the message alone."""

    def __init__(self, task_id: Any = None, error_message: Optional[str] = None):
        if isinstance(task_id, str) and error_message is None:
            task_id, error_message = None, task_id
        self.task_id = task_id
        self.error_message = error_message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.error_message:
            return self.error_message
        if self.task_id is None:
            return "This task or its dependency was cancelled."
        return f"Task: {self.task_id} was cancelled."

    def __reduce__(self):
        return (type(self), (self.task_id, self.error_message))


class GetTimeoutError(RayError, TimeoutError):
    """``get`` did not finish within its timeout."""


class ObjectLostError(RayError):
    """The object's value was lost and cannot be recovered.

    Ray's form ``ObjectLostError(object_ref_hex, owner_address, call_site)``;
    ``ObjectLostError(message)`` gives the message alone."""

    def __init__(self, object_ref_hex: str = "", owner_address: str = "",
                 call_site: str = "", *, message: Optional[str] = None):
        if message is None and not owner_address and not call_site and (
            not object_ref_hex or not _is_hex(object_ref_hex)
        ):
            message, object_ref_hex = object_ref_hex or "The object was lost.", ""
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        self._message = message or (
            f"Failed to retrieve object {object_ref_hex}. The object was lost."
            + (f" It was created at: {call_site}" if call_site else "")
        )
        super().__init__(self._message)

    def __str__(self) -> str:
        return self._message

    def __reduce__(self):
        return (_rebuild_lost, (type(self), self.object_ref_hex, self.owner_address,
                                self.call_site, self._message))


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _rebuild_lost(cls: type, object_ref_hex: str, owner_address: str, call_site: str,
                  message: str) -> ObjectLostError:
    return cls(object_ref_hex, owner_address, call_site, message=message)


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died, so the object is lost."""


class ObjectStoreFullError(RayError):
    """The object store is full."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching the object from another node timed out."""


class ObjectFreedError(ObjectLostError):
    """The object was freed (``fleet.internal.free``) before it was read."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """The object was deleted while a reference to it still existed (a
    reference-counting bug)."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object was lost and rebuilding it by re-running its task failed."""


class OutOfDiskError(RayError):
    """The node ran out of disk space for the object store's spill files."""


class OutOfMemoryError(RayError):
    """The task's worker was killed because its node ran out of memory."""

    def __init__(self, message: str = "The node ran out of memory."):
        self.message = message
        super().__init__(message)


class NodeDiedError(RayError):
    """The node the task or actor ran on died."""

    def __init__(self, message: str = "The node died."):
        self.message = message
        super().__init__(message)


class LocalRayletDiedError(RayError):
    """This process's node daemon (fleet-node) died."""


class PlasmaObjectNotAvailable(RayError):
    """The object is not in the object store yet."""


class TaskUnschedulableError(RayError):
    """The task can never be scheduled (e.g. its node affinity names a dead node)."""

    def __init__(self, error_message: str = "The task cannot be scheduled."):
        self.error_message = error_message
        super().__init__(error_message)


class ActorUnschedulableError(RayError):
    """The actor can never be scheduled (e.g. its node affinity names a dead node)."""

    def __init__(self, error_message: str = "The actor cannot be scheduled."):
        self.error_message = error_message
        super().__init__(error_message)


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor with this name already exists in the namespace."""

    def __init__(self, error_message: str):
        self.error_message = error_message
        super().__init__(error_message)


class ActorHandleNotFoundError(ValueError, RayError):
    """No actor handle was found for the given id."""

    def __init__(self, error_message: str):
        self.error_message = error_message
        super().__init__(error_message)


class UnserializableException(RayError):
    """A task raised an exception that could not be pickled; this carries its
    traceback as text instead."""

    def __init__(self, original_stack_trace: str):
        self.original_stack_trace = original_stack_trace
        super().__init__(original_stack_trace)

    def __str__(self) -> str:
        return (
            "The original cause of the RayTaskError (the exception the task raised) "
            "is not serializable. Its stack trace:\n" + self.original_stack_trace
        )


class UserCodeException(RayError):
    """Wraps an exception raised by user code inside the framework."""


class OufOfBandObjectRefSerializationException(RayError):
    """An ObjectRef was pickled outside fleet's serialization (and Ray's
    ``RAY_allow_out_of_band_object_ref_serialization`` forbids it)."""


class CrossLanguageError(RayError):
    """An error raised by another language's worker."""

    def __init__(self, ray_exception: Any):
        super().__init__(f"An exception was raised from a different language: {ray_exception}")


class AuthenticationError(RayError):
    """The cluster refused this process's credentials (the cluster token)."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class RpcError(RayError):
    """A remote call to a cluster process failed."""

    def __init__(self, message: str, rpc_code: Optional[int] = None):
        self.rpc_code = rpc_code
        super().__init__(message)


class RayChannelError(RaySystemError):
    """An error on a compiled graph's channel (fleet has no compiled graphs)."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled graph's channel operation timed out."""


class RayCgraphCapacityExceeded(RaySystemError):
    """A compiled graph has too many executions in flight."""


class RayDirectTransportError(RaySystemError):
    """A direct (device-to-device) object transfer failed."""


class StreamingGeneratorReplayInconsistentError(RaySystemError):
    """A retried streaming generator yielded a different number of items."""


class RayActorError(RayError):
    """An actor died or could not be created (or died while running the call).

    ``actor_id`` is the actor's id as hex (None if unknown), ``error_msg``
    the message, ``actor_init_failed`` whether its constructor raised
    (``cause``: that error)."""

    def __init__(self, message: str = "The actor died unexpectedly before finishing this task.",
                 cause: Optional[BaseException] = None, actor_id: Optional[str] = None):
        if isinstance(message, BaseException) and cause is None:  # Ray's RayActorError(cause)
            message, cause = f"{message}", message
        super().__init__(message)
        self.error_msg = message
        self.cause = cause
        self.actor_init_failed = cause is not None
        if actor_id is None and cause is not None:
            actor_id = getattr(cause, "actor_id", None)
        self.actor_id = actor_id
        self._preempted = False

    @property
    def preempted(self) -> bool:
        """Whether the actor died because its node was preempted (never, in fleet)."""
        return self._preempted

    def __reduce__(self):
        return (type(self), (self.error_msg, self.cause, self.actor_id))


class ActorDiedError(RayActorError):
    """The actor is dead: its constructor raised (``.cause``), it was killed,
    it exited, or its process died after its last restart."""


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable (restarting)."""


class AsyncioActorExit(RayError):
    """Raised by ``exit_actor()`` inside an async actor: the actor exits once
    the raising call unwinds (catching it does not stop the exit)."""


class _ForceCancelledError(TaskCancelledError, WorkerCrashedError):
    """fleet.cancel(force=True): the task was cancelled by killing its worker
    (both TaskCancelledError and, as Ray reports it, WorkerCrashedError)."""

    def __init__(self, message: str = "The task was cancelled and its worker killed."):
        TaskCancelledError.__init__(self, None, message)

    def __reduce__(self):
        return (type(self), (self.error_message,))


class TaskPlacementGroupRemoved(RayError):
    """The task's placement group was removed before the task could run."""

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.error_message = message

    def __str__(self) -> str:
        return "The placement group corresponding to this task has been removed." + (
            f" ({self.error_message})" if self.error_message else ""
        )


class ActorPlacementGroupRemoved(RayError):
    """The actor's placement group was removed."""

    def __str__(self) -> str:
        return "The placement group corresponding to this Actor has been removed."


class ObjectRefStreamEndOfStreamError(RayError):
    """The stream of a generator task has no more items."""


class RuntimeEnvSetupError(RayError):
    """A runtime environment could not be set up."""


class PendingCallsLimitExceeded(RayError):
    """Too many calls are queued on an actor."""


__all__ = [
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "WorkerCrashedError",
    "TaskCancelledError",
    "GetTimeoutError",
    "ObjectLostError",
    "OwnerDiedError",
    "ObjectStoreFullError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ReferenceCountingAssertionError",
    "ObjectReconstructionFailedError",
    "OutOfDiskError",
    "OutOfMemoryError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "PlasmaObjectNotAvailable",
    "TaskUnschedulableError",
    "ActorUnschedulableError",
    "ActorAlreadyExistsError",
    "ActorHandleNotFoundError",
    "UnserializableException",
    "UserCodeException",
    "OufOfBandObjectRefSerializationException",
    "CrossLanguageError",
    "AuthenticationError",
    "RpcError",
    "RayChannelError",
    "RayChannelTimeoutError",
    "RayCgraphCapacityExceeded",
    "RayDirectTransportError",
    "StreamingGeneratorReplayInconsistentError",
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "AsyncioActorExit",
    "ObjectRefStreamEndOfStreamError",
    "TaskPlacementGroupRemoved",
    "ActorPlacementGroupRemoved",
    "RuntimeEnvSetupError",
    "PendingCallsLimitExceeded",
]
