"""Process-wide state of the fleet Python layer (one per driver or worker).

Holds the connected core library handle and what the current process is.
Mutated only by init/shutdown and by the worker's execution loop. Imports
nothing of fleet: every layer may read it.
"""

from __future__ import annotations

from typing import Any, Dict

core: Any = None  # fleet._core.Core once connected
mode: str = ""  # "driver" | "worker" | ""
namespace: str = ""
session_dir: str = ""
gcs_address: str = ""
node_ip: str = "127.0.0.1"
node_id_hex: str = ""
job_runtime_env: Dict[str, Any] = {}
# JobConfig(default_actor_lifetime=...): the lifetime of actors created
# without a lifetime option ("detached" or "non_detached").
default_actor_lifetime: str = "non_detached"
cluster: Any = None  # LocalCluster when this driver started the cluster

# What a worker hosting an actor is (the call running now, with the
# actor's id, is per call: fleet._private.task_context).
actor_restarts: int = 0  # > 0: this actor instance is a restart
actor_name: str = ""
actor_meta: Dict[str, Any] = {}  # the actor's method table (for current_actor)
# Set in an actor's worker: exit_actor() calls it (True: an async actor).
actor_exit_hook: Any = None
actor_class: Any = None  # the user's class of the actor this worker hosts
# A worker's loaded remote functions, by function key (the executor's cache).
functions: Dict[str, Any] = {}
