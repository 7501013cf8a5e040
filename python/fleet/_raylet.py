"""The public classes that Ray programs import from ``ray._raylet``: object
refs and their generators, the end-of-stream error and the ID classes.
Each name is fleet's own class (the same object as ``fleet.ObjectRef``,
``fleet.NodeID``, ...), so isinstance checks agree across both imports."""

from fleet._private.generator import ObjectRefGenerator
from fleet._private.ids import (
    ActorClassID,
    ActorID,
    BaseID,
    ClusterID,
    FunctionID,
    JobID,
    NodeID,
    PlacementGroupID,
    TaskID,
    UniqueID,
    WorkerID,
)
from fleet.exceptions import ObjectRefStreamEndOfStreamError
from fleet.object_ref import ObjectRef

# Ray's older names for the same classes.
ObjectID = ObjectRef
StreamingObjectRefGenerator = ObjectRefGenerator

__all__ = [
    "ActorClassID",
    "ActorID",
    "BaseID",
    "ClusterID",
    "FunctionID",
    "JobID",
    "NodeID",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "ObjectRefStreamEndOfStreamError",
    "PlacementGroupID",
    "StreamingObjectRefGenerator",
    "TaskID",
    "UniqueID",
    "WorkerID",
]
