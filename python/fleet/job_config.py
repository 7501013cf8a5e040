"""JobConfig: a driver's job settings, passed as ``init(job_config=...)``
(Ray's ``ray.job_config.JobConfig``).

What fleet honours: ``runtime_env`` (the job's default for its tasks and
actors; ``init(runtime_env=...)`` overrides it), ``metadata`` (kept with the
job in the control store's key-value store, ``job:<id>:config``), ``ray_namespace`` (the
job's namespace; ``init(namespace=...)`` overrides it),
``default_actor_lifetime`` (``"detached"``: actors created without a
``lifetime`` option outlive the driver) and ``code_search_path`` (added to
the workers' import path). ``jvm_options`` are refused: fleet runs Python
workers only.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional


class JobConfig:
    """The configuration of one job (one driver)."""

    def __init__(
        self,
        jvm_options: Optional[List[str]] = None,
        code_search_path: Optional[List[str]] = None,
        runtime_env: Optional[Dict[str, Any]] = None,
        _client_job: bool = False,
        metadata: Optional[Dict[str, str]] = None,
        ray_namespace: Optional[str] = None,
        default_actor_lifetime: str = "non_detached",
        _py_driver_sys_path: Optional[List[str]] = None,
    ):
        self.jvm_options = list(jvm_options or [])
        if not isinstance(code_search_path or [], (list, tuple)):
            raise TypeError(
                f"The type of code search path is incorrect: {type(code_search_path)}"
            )
        self.code_search_path = list(code_search_path or [])
        self.client_job = _client_job
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self._py_driver_sys_path = list(_py_driver_sys_path or [])
        self.runtime_env: Dict[str, Any] = {}
        self.set_runtime_env(runtime_env)
        self._default_actor_lifetime = "non_detached"
        self.set_default_actor_lifetime(default_actor_lifetime)

    def set_metadata(self, key: str, value: str) -> None:
        """Adds one metadata entry."""
        self.metadata[key] = value

    def set_runtime_env(
        self, runtime_env: Optional[Dict[str, Any]], validate: bool = False
    ) -> None:
        """Replaces the job's runtime environment (checked when ``validate``,
        and always by ``init``)."""
        self.runtime_env = dict(runtime_env) if runtime_env is not None else {}
        if validate:
            self._validate_runtime_env()

    def set_ray_namespace(self, ray_namespace: str) -> None:
        """Sets the job's namespace."""
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        """``"detached"`` or ``"non_detached"``: the lifetime of actors created
        without a ``lifetime`` option."""
        if default_actor_lifetime not in ("detached", "non_detached"):
            raise ValueError("Default actor lifetime must be one of `detached`, `non_detached`")
        self._default_actor_lifetime = default_actor_lifetime

    @property
    def default_actor_lifetime(self) -> str:
        return self._default_actor_lifetime

    def _validate_runtime_env(self) -> Dict[str, Any]:
        from fleet._private.options import _runtime_env

        err = _runtime_env(self.runtime_env)
        if err:
            raise ValueError(err)
        return self.runtime_env

    def _check_supported(self) -> None:
        """Raises for what fleet cannot do (``init`` calls it)."""
        if self.jvm_options:
            raise ValueError(
                "JobConfig(jvm_options=...) is not supported: fleet runs Python workers only"
            )
        for key, value in self.metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"JobConfig metadata must map str to str, got {key!r}: {value!r}")
        self._validate_runtime_env()

    def to_json(self) -> str:
        """The settings as JSON (what ``from_json`` reads)."""
        return json.dumps(
            {
                "jvm_options": self.jvm_options,
                "code_search_path": self.code_search_path,
                "runtime_env": self.runtime_env,
                "client_job": self.client_job,
                "metadata": self.metadata,
                "ray_namespace": self.ray_namespace,
                "default_actor_lifetime": self._default_actor_lifetime,
            }
        )

    @classmethod
    def from_json(cls, job_config_json: Any) -> JobConfig:
        """A JobConfig from a dict (or its JSON text)."""
        d = json.loads(job_config_json) if isinstance(job_config_json, str) else job_config_json
        return cls(
            jvm_options=d.get("jvm_options"),
            code_search_path=d.get("code_search_path"),
            runtime_env=d.get("runtime_env"),
            _client_job=d.get("client_job", False),
            metadata=d.get("metadata"),
            ray_namespace=d.get("ray_namespace"),
            default_actor_lifetime=d.get("default_actor_lifetime", "non_detached"),
        )

    def __repr__(self) -> str:
        return f"JobConfig({self.to_json()})"


__all__ = ["JobConfig"]
