"""Exceptions raised by fleet, with Ray's class names and behaviour.

A task that raises returns a :class:`RayTaskError` to whoever gets its result;
``get`` re-raises it as an instance of both ``RayTaskError`` and the user's own
exception class, so ``except ValueError`` still works for a remote
``ValueError``.
"""

from __future__ import annotations

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

    def as_instanceof_cause(self) -> RayTaskError:
        """Returns an exception that is both a RayTaskError and the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(RayTaskError, cause_cls):
            return self
        if isinstance(self.cause, RayTaskError):
            return self.cause.as_instanceof_cause()
        try:
            return _dual_class(cause_cls)(self)
        except TypeError:  # a cause class that cannot be subclassed
            return self


def _rebuild_task_error(*args: Any) -> RayTaskError:
    return RayTaskError(*args)


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
        return RayTaskError.__reduce__(self)

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
    """The task was cancelled."""

    def __init__(self, message: str = "This task or its dependency was cancelled."):
        super().__init__(message)


class GetTimeoutError(RayError, TimeoutError):
    """``get`` did not finish within its timeout."""


class ObjectLostError(RayError):
    """The object's value was lost and cannot be recovered."""

    def __init__(self, message: str = "The object was lost."):
        super().__init__(message)


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died, so the object is lost."""


class ObjectStoreFullError(RayError):
    """The object store is full."""


class RayActorError(RayError):
    """An actor died or could not be created (or died while running the call)."""

    def __init__(self, message: str = "The actor died unexpectedly before finishing this task.",
                 cause: Optional[BaseException] = None):
        super().__init__(message)
        self.error_msg = message
        self.cause = cause
        self.actor_init_failed = cause is not None

    def __reduce__(self):
        return (type(self), (self.error_msg, self.cause))


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
        TaskCancelledError.__init__(self, message)


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
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "AsyncioActorExit",
    "RuntimeEnvSetupError",
    "PendingCallsLimitExceeded",
]
