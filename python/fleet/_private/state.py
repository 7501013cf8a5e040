"""Process-wide state of the fleet Python layer (one per driver or worker).

Holds the connected core library handle and what the current process is
running. Mutated only by init/shutdown and by the worker's execution loop.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

core: Any = None  # fleet._core.Core once connected
mode: str = ""  # "driver" | "worker" | ""
namespace: str = ""
session_dir: str = ""
gcs_address: str = ""
node_ip: str = "127.0.0.1"
node_id_hex: str = ""
job_runtime_env: Dict[str, Any] = {}
cluster: Any = None  # LocalCluster when this driver started the cluster

# What a worker is running now.
current_task_id: Optional[bytes] = None
current_function: str = ""
current_gpu_ids: List[int] = []
current_resources: str = ""  # "CPU=1;GPU=0.5" as the task carries it
current_job_id: int = 0

# What a worker hosting an actor is.
current_actor_id: Optional[bytes] = None
actor_restarts: int = 0  # > 0: this actor instance is a restart
actor_name: str = ""
actor_meta: Dict[str, Any] = {}  # the actor's method table (for current_actor)


def current_placement_group() -> Any:
    """The placement group whose tasks capture their children (set in the
    environment of a task that runs in one with capture_child_tasks), or None."""
    import os

    hex_id = os.environ.get("FLEET_PLACEMENT_GROUP_CAPTURE")
    if not hex_id or mode != "worker":
        return None
    from fleet.util.placement_group import PlacementGroup

    return PlacementGroup(bytes.fromhex(hex_id))
