"""RemoteFunction: what ``@fleet.remote`` makes of a function."""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

from fleet import _core
from fleet._private import options as opts_mod
from fleet._private import serialization, signature, state, task_context
from fleet._private.generator import refs_for
from fleet._private.session import _ensure_initialized
from fleet.actor import make_actor_class
from fleet.object_ref import ObjectRef


class RemoteFunction:
    """A function that runs as a task in the cluster via ``.remote()``."""

    def __init__(self, function: Callable, task_options: Dict[str, Any]):
        opts_mod.validate(task_options, f"remote function '{_name(function)}'")
        self._function = function
        self._name = _name(function)
        self._options = dict(task_options)
        self._pickled: Optional[bytes] = None
        self._key: Optional[str] = None
        self._exported_to: Any = None  # the core we exported through
        self._prepared: Any = None  # cached per-options submission arguments
        # Arguments are checked against it at .remote() (None: any pass).
        self._signature = signature.extract(function)
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        where = f"{getattr(self._function, '__module__', '')}.{self._name}".lstrip(".")
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running "
            f"'{where}()', try '{where}.remote()'."
        )

    def __reduce__(self):
        # A remote function captured by a task travels as its function and
        # options; the process that receives it exports it through its own core.
        return (RemoteFunction, (self._function, self._options))

    def options(self, **task_options: Any) -> RemoteFunction:
        """A copy of this remote function with `task_options` overriding."""
        opts_mod.validate(task_options, f"remote function '{self._name}'")
        merged = dict(self._options)
        merged.update(task_options)
        new = RemoteFunction.__new__(RemoteFunction)
        new.__dict__.update(self.__dict__)
        new._options = merged
        new._prepared = None
        new._parent = getattr(self, "_parent", None) or self
        return new

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("fleet does not implement the DAG API (bind) yet")

    def _remote(self, args: Any = None, kwargs: Any = None, **task_options: Any) -> Any:
        """Ray's lower-level form: ``f._remote(args, kwargs, **options)``."""
        target = self.options(**task_options) if task_options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def _export(self, core: Any) -> str:
        root = getattr(self, "_parent", None) or self
        return serialization.export(root, root._function, core, "fn", "remote function",
                                    self._name)

    def _prepare(self, core: Any, cache: bool = True):
        o = opts_mod.resolved(self._options)
        resources = opts_mod.resource_request(o)
        retry = o["retry_exceptions"]
        if retry is True:
            retry_blob = b"1"
        elif retry:
            retry_blob = serialization.dumps(tuple(retry))
        else:
            retry_blob = b""
        env = dict((state.job_runtime_env or {}).get("env_vars") or {})
        env.update(((o["runtime_env"] or {}).get("env_vars")) or {})
        name = o["name"] or self._name
        num_returns = o["num_returns"]
        import inspect

        if num_returns is None or "num_returns" not in self._options:
            # As Ray: a generator function streams its values, others return one.
            num_returns = "streaming" if inspect.isgeneratorfunction(self._function) else (
                1 if num_returns is None else num_returns)
        streaming = num_returns == "streaming"
        dynamic = num_returns == "dynamic"
        max_retries = o["max_retries"]
        if max_retries is None:
            max_retries = 3
        if max_retries < 0:
            max_retries = 1 << 30
        resources, strategy, node, soft, pg_id, index, capture = opts_mod.placement(
            o, resources, None, f"task {self._name}"
        )
        if capture:  # the tasks it submits run in the group too
            env["FLEET_PLACEMENT_GROUP_CAPTURE"] = pg_id.hex()
        key = self._key if self._exported_to is core else self._export(core)
        template = _core.TaskTemplate(
            key, name, 1 if streaming or dynamic else num_returns, resources, retry_blob, env,
            o["max_calls"] or 0, streaming, dynamic,
            max(0, o["_generator_backpressure_num_objects"] or 0),
        )
        if strategy or pg_id:
            template.set_strategy(strategy, node, soft, pg_id, index, capture)
        if o["label_selector"]:
            template.set_label_selector(o["label_selector"])
        prepared = (core, template, name, num_returns, max_retries)
        if cache:
            self._prepared = prepared
        return prepared

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submits the task; returns an ObjectRef (or a list for num_returns > 1)."""
        core = state.core
        if core is None:
            core = _ensure_initialized()
        p = self._prepared
        if state.mode == "worker" and _captures():
            p = self._prepare(core, cache=False)  # this task's group: not for later tasks
        elif p is None or p[0] is not core:
            p = self._prepare(core)
        _, template, name, num_returns, max_retries = p
        sig = self._signature
        if sig is not None:
            sig.check(args, kwargs)
        if args or kwargs:
            blob, deps, nested = serialization.serialize_args(name, args, kwargs, ObjectRef)
        else:
            blob, deps, nested = b"", [], []
        if state.mode == "worker":  # nested: the parent is this call (recursive cancel)
            ids = core.submit(template, max_retries, blob, deps, nested, task_context.parent_id())
        else:
            ids = core.submit(template, max_retries, blob, deps, nested)
        # Return ids come with one local ref each, which the ObjectRefs take over.
        if num_returns == 1:
            return ObjectRef(ids, "", False)
        return refs_for(ids, num_returns)


def _captures() -> bool:
    # Inside a placement group that captures child tasks, tasks without a
    # strategy of their own go into the group: not the cached template.
    ctx = task_context.current()
    return ctx is not None and ctx.capture_group is not None


def _name(function: Callable) -> str:
    return getattr(function, "__qualname__", None) or getattr(function, "__name__", "function")


def make_remote(target: Any, task_options: Dict[str, Any]) -> Any:
    if isinstance(target, type):
        return make_actor_class(target, task_options)
    if not callable(target):
        raise TypeError(f"@fleet.remote must decorate a function, got {type(target).__name__}")
    return RemoteFunction(target, task_options)


def remote(*args: Any, **kwargs: Any) -> Any:
    """Makes a function a remote function; usable as ``@remote`` or ``@remote(**options)``."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return make_remote(args[0], {})
    if args or not kwargs:  # (Ray refuses ``@remote()`` too)
        raise TypeError(
            "The @fleet.remote decorator must be applied either with no arguments and no "
            "parentheses, for example '@fleet.remote', or it must be applied using only "
            "keyword arguments, for example '@fleet.remote(num_cpus=1)'."
        )
    def decorator(target: Any) -> Any:
        return make_remote(target, kwargs)

    return decorator
