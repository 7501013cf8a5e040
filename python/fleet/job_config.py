"""JobConfig: settings of a job (one driver), given to ``fleet.init(job_config=...)``.

fleet uses ``default_actor_lifetime`` (what ``lifetime`` an actor created
in this job gets when it names none), ``ray_namespace`` and ``runtime_env``;
the Java and client settings are kept for compatibility and otherwise unused.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

_LIFETIMES = ("detached", "non_detached")


class JobConfig:
    """A job's configuration (Ray's ``ray.job_config.JobConfig``)."""

    def __init__(
        self,
        jvm_options: Optional[List[str]] = None,
        code_search_path: Optional[List[str]] = None,
        runtime_env: Optional[Dict[str, Any]] = None,
        client_job: bool = False,
        metadata: Optional[Dict[str, str]] = None,
        ray_namespace: Optional[str] = None,
        default_actor_lifetime: str = "non_detached",
        _py_driver_sys_path: Optional[List[str]] = None,
    ):
        self.jvm_options = jvm_options or []
        self.code_search_path = code_search_path or []
        self.client_job = client_job
        self.metadata = metadata or {}
        self.ray_namespace = ray_namespace
        self.runtime_env: Dict[str, Any] = {}
        self.set_runtime_env(runtime_env)
        self.default_actor_lifetime = "non_detached"
        self.set_default_actor_lifetime(default_actor_lifetime)
        self._py_driver_sys_path = _py_driver_sys_path or []

    def set_metadata(self, key: str, value: str) -> None:
        """Adds a key-value pair to the job's metadata."""
        self.metadata[key] = value

    def set_runtime_env(
        self, runtime_env: Optional[Dict[str, Any]], validate: bool = False
    ) -> None:
        """Sets the job's runtime environment."""
        self.runtime_env = dict(runtime_env or {})

    def set_ray_namespace(self, ray_namespace: str) -> None:
        """Sets the job's namespace."""
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        """Sets the lifetime of the job's actors that name none: "detached"
        or "non_detached"."""
        if default_actor_lifetime not in _LIFETIMES:
            raise ValueError(
                f"Default actor lifetime must be one of {list(_LIFETIMES)}, "
                f"but got {default_actor_lifetime!r}"
            )
        self.default_actor_lifetime = default_actor_lifetime

    def _validate_runtime_env(self) -> Dict[str, Any]:
        return self.runtime_env


__all__ = ["JobConfig"]
