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
from fleet._private.generator import DynamicObjectRefGenerator, ObjectRefGenerator
from fleet._private.ids import (
    ActorClassID,
    ActorID,
    ClusterID,
    FunctionID,
    JobID,
    NodeID,
    PlacementGroupID,
    TaskID,
    UniqueID,
    WorkerID,
)
from fleet._private.version import __version__
from fleet.actor import ActorClass, ActorHandle, method
from fleet.object_ref import ObjectRef
from fleet.remote_function import RemoteFunction, remote
from fleet.runtime_context import get_runtime_context

# As in Ray, `import fleet` makes fleet.util available (it sits above the
# core API, below this package).
from fleet import util as util  # isort: skip
from fleet import types as types  # isort: skip
from fleet import _raylet as _raylet  # isort: skip
from fleet import job_config as job_config  # isort: skip  (fleet.job_config.JobConfig, as Ray)

# Ray's older name for ObjectRef.
ObjectID = ObjectRef

__all__ = [
    "ActorClass",
    "ActorClassID",
    "ActorID",
    "ClusterID",
    "FunctionID",
    "JobID",
    "NodeID",
    "ObjectID",
    "PlacementGroupID",
    "TaskID",
    "UniqueID",
    "WorkerID",
    "ActorHandle",
    "DynamicObjectRefGenerator",
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
