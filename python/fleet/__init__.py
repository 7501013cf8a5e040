"""fleet: run Python code on many computers at once.

The API is Ray's core API, name for name: ``import fleet as ray`` runs Ray
programs. The runtime underneath is C++ (see docs/architecture.md).
"""

from fleet import exceptions
from fleet._private.api import (
    FleetContext,
    available_resources,
    cluster_resources,
    get,
    get_gpu_ids,
    init,
    is_initialized,
    nodes,
    put,
    shutdown,
    wait,
)
from fleet.object_ref import ObjectRef
from fleet.remote_function import RemoteFunction, remote
from fleet.runtime_context import get_runtime_context

__version__ = "0.1.0"


def method(*args, **kwargs):
    """Actor method options (actors are not implemented yet)."""
    raise NotImplementedError("actors (and @fleet.method) are not implemented in fleet yet")


def get_actor(name: str, namespace: str = None):
    """Looks up a named actor (actors are not implemented yet)."""
    raise NotImplementedError("actors (fleet.get_actor) are not implemented in fleet yet")


def kill(actor, *, no_restart: bool = True):
    """Kills an actor (actors are not implemented yet)."""
    raise NotImplementedError("actors (fleet.kill) are not implemented in fleet yet")


def cancel(object_ref, *, force: bool = False, recursive: bool = True):
    """Cancels a task (cancellation is not implemented yet)."""
    raise NotImplementedError("fleet.cancel is not implemented in fleet yet")


__all__ = [
    "FleetContext",
    "ObjectRef",
    "RemoteFunction",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "wait",
    "__version__",
]
