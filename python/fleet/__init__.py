"""fleet: run Python code on many computers at once.

The API is Ray's core API, name for name: ``import fleet as ray`` runs Ray
programs. The runtime underneath is C++ (see docs/architecture.md).
"""

from fleet import actor, exceptions, experimental
from fleet._private.api import (
    FleetContext,
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_gpu_ids,
    init,
    is_initialized,
    kill,
    nodes,
    put,
    shutdown,
    wait,
)
from fleet._private.generator import ObjectRefGenerator
from fleet._private.version import __version__
from fleet.actor import ActorClass, ActorHandle, method
from fleet.object_ref import ObjectRef
from fleet.remote_function import RemoteFunction, remote
from fleet.runtime_context import get_runtime_context

# As in Ray, `import fleet` makes fleet.util available (it sits above the
# core API, below this package).
from fleet import util as util  # isort: skip
from fleet import job_config as job_config  # isort: skip  (fleet.job_config.JobConfig, as Ray)

__all__ = [
    "ActorClass",
    "ActorHandle",
    "FleetContext",
    "ObjectRefGenerator",
    "actor",
    "ObjectRef",
    "RemoteFunction",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "experimental",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "job_config",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "wait",
    "__version__",
]
