"""Actors: what ``@fleet.remote`` makes of a class, and handles to them.

``Cls.remote(...)`` registers the actor with the control store (which places
it on a worker) and returns an :class:`ActorHandle` at once. Method calls go
from the caller straight to the actor's worker, in the order the caller made
them. The handle made by ``.remote()`` owns the actor: once it (and every
copy of it in this process) is gone and it was never passed to another
process, the actor exits after the calls already made. Named actors live
until their job ends, detached ones until ``fleet.kill``.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, List, Optional, Tuple

from fleet import _core
from fleet._private import options as opts_mod
from fleet._private import serialization, state, task_context
from fleet._private.generator import refs_for
from fleet._private.label_utils import selectors_of
from fleet._private.session import _ensure_initialized
from fleet.exceptions import PendingCallsLimitExceeded
from fleet.object_ref import ObjectRef

# Method table entry: num_returns ("streaming" for generators),
# concurrency_group, max_task_retries (None: the actor's).
_MethodMeta = Dict[str, Any]


def method(*args: Any, **kwargs: Any) -> Callable:
    """Options for one actor method: ``@fleet.method(num_returns=2)``.

    Accepts ``num_returns``, ``concurrency_group``, ``max_task_retries`` and
    ``retry_exceptions``.
    """
    if args:
        raise TypeError(
            "The @fleet.method decorator must be applied using keyword arguments only, "
            "for example '@fleet.method(num_returns=2)'."
        )
    opts_mod.validate(kwargs, "@fleet.method", opts_mod.METHOD_OPTIONS)

    def decorator(fn: Callable) -> Callable:
        fn.__fleet_method_options__ = dict(kwargs)  # type: ignore[attr-defined]
        return fn

    return decorator


def _method_table(cls: type) -> Dict[str, _MethodMeta]:
    import inspect

    table: Dict[str, _MethodMeta] = {}
    for name, member in inspect.getmembers(cls):
        if not callable(member) or (name.startswith("__") and name != "__call__"):
            continue
        fn = getattr(member, "__func__", member)
        o = dict(getattr(fn, "__fleet_method_options__", {}))
        is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        num_returns = o.get("num_returns", "streaming" if is_gen else 1)
        table[name] = {
            "num_returns": num_returns,
            "concurrency_group": o.get("concurrency_group") or "",
            "max_task_retries": o.get("max_task_retries"),
        }
    # Built in, as in Ray: __ray_ready__ answers once the actor is up;
    # __ray_terminate__ ends it after the calls made before.
    for name in ("__ray_ready__", "__ray_terminate__"):
        table[name] = {"num_returns": 1, "concurrency_group": "", "max_task_retries": 0}
    return table


def _is_async_class(cls: type) -> bool:
    import inspect

    return any(
        inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
        for _, m in inspect.getmembers(cls, predicate=inspect.isfunction)
    )


class ActorClass:
    """A class made remote by ``@fleet.remote``: create actors with ``.remote()``."""

    def __init__(self, cls: type, actor_options: Dict[str, Any]):
        opts_mod.validate(actor_options, f"actor class '{cls.__name__}'", opts_mod.ACTOR_OPTIONS)
        self._cls = cls
        self._name = cls.__qualname__
        self._options = dict(actor_options)
        self._pickled: Optional[bytes] = None
        self._key: Optional[str] = None
        self._exported_to: Any = None
        self._methods = _method_table(cls)
        self._is_async = _is_async_class(cls)
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self._name}()', "
            f"use '{self._name}.remote()'."
        )

    def __reduce__(self):
        return (ActorClass, (self._cls, self._options))

    def options(self, **actor_options: Any) -> ActorClass:
        """A copy of this actor class with `actor_options` overriding."""
        opts_mod.validate(actor_options, f"actor class '{self._name}'", opts_mod.ACTOR_OPTIONS)
        new = ActorClass.__new__(ActorClass)
        new.__dict__.update(self.__dict__)
        new._options = {**self._options, **actor_options}
        new._root = getattr(self, "_root", None) or self
        return new

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("fleet does not implement the DAG API (bind) yet")

    def _export(self, core: Any) -> str:
        root = getattr(self, "_root", None) or self
        return serialization.export(root, root._cls, core, "cls", "actor class", self._name)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Creates the actor; returns its handle at once (creation is asynchronous)."""
        core = state.core
        if core is None:
            core = _ensure_initialized()
        o = opts_mod.resolved(self._options, opts_mod.ACTOR_OPTIONS)
        resources, placement = _actor_resources(o)
        resources, strategy, affinity, soft, pg_id, _index, capture = opts_mod.placement(
            o, resources
        )
        if pg_id:
            placement = {}  # the bundle's resources say where it goes
        name = o["name"] or ""
        if o["get_if_exists"] and not name:
            raise ValueError("get_if_exists=True requires a name for the actor (options(name=...))")
        namespace = o["namespace"] if o["namespace"] is not None else state.namespace
        lifetime = o["lifetime"] if o["lifetime"] is not None else state.default_actor_lifetime
        detached = lifetime == "detached"
        max_task_retries = o["max_task_retries"]
        groups = dict(o["concurrency_groups"] or {})
        max_concurrency = o["max_concurrency"] or (1000 if self._is_async else 1)
        meta = {
            "class_name": self._name,
            "methods": self._methods,
            "max_task_retries": max_task_retries,
            "max_pending_calls": o["max_pending_calls"],
        }
        key = self._export(core)
        env = dict((state.job_runtime_env or {}).get("env_vars") or {})
        env.update(((o["runtime_env"] or {}).get("env_vars")) or {})
        if capture:
            env["FLEET_PLACEMENT_GROUP_CAPTURE"] = pg_id.hex()
        template = _core.TaskTemplate(
            key, f"{self._name}.__init__", 1, resources, b"", env, 0
        )
        if args or kwargs:
            blob, deps, nested = serialization.serialize_args(
                f"{self._name}.__init__", args, kwargs, ObjectRef
            )
            # The creation task runs after this call returns, so refs nested
            # in constructor arguments stay alive until shutdown (escaped).
            for ref_id in nested:
                core.mark_escaped(ref_id)
        else:
            blob, deps = b"", []
        actor_options = pickle.dumps(
            {
                "class_name": self._name,
                "name": name,
                "namespace": namespace,
                "max_concurrency": max_concurrency,
                "concurrency_groups": groups,
                "is_async": self._is_async,
            }
        )
        meta_blob = pickle.dumps(meta)
        actor_id = _core.random_id()
        actor_id, existed, existing_meta = core.register_actor(
            actor_id, name, namespace, self._name, o["max_restarts"], detached, meta_blob,
            resources, placement, bool(o["get_if_exists"]), strategy, affinity, soft,
            o["label_selector"] or {}, selectors_of(o["fallback_strategy"]),
        )
        if existed:
            return ActorHandle(actor_id, pickle.loads(existing_meta) if existing_meta else meta)
        core.create_actor(template, actor_id, blob, deps, actor_options)
        # Named and detached actors are looked up by name: not tied to this handle.
        owned = not name and not detached
        return ActorHandle(actor_id, meta, owner=_Ownership(core, actor_id) if owned else None)


def _actor_resources(o: Dict[str, Any]) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(held while alive, needed to be placed) for an actor's resolved options."""
    held = opts_mod.resource_request(o, default_cpus=0)
    # Ray's default: an actor needs 1 CPU to be placed but holds none.
    placement = {"CPU": 1.0} if o["num_cpus"] is None and not held else {}
    return held, placement


class _Ownership:
    """Held by the handle ``.remote()`` returned: when the last reference to
    it goes, the actor exits (unless the handle was sent to another process)."""

    __slots__ = ("core", "actor_id", "escaped")

    def __init__(self, core: Any, actor_id: bytes):
        self.core = core
        self.actor_id = actor_id
        self.escaped = False

    def __del__(self) -> None:
        if self.escaped or state.core is not self.core:
            return
        try:
            self.core.release_actor(self.actor_id)
        except Exception:  # interpreter shutdown
            pass


class ActorID:
    """The id of an actor (``handle._actor_id``)."""

    __slots__ = ("_id",)

    def __init__(self, actor_id: bytes):
        self._id = actor_id

    def binary(self) -> bytes:
        """The id as bytes."""
        return self._id

    def hex(self) -> str:
        """The id as a hex string."""
        return self._id.hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorID) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ActorID({self._id.hex()})"


class ActorHandle:
    """A handle to an actor: call methods with ``handle.method.remote(...)``.

    Handles can be passed to tasks and other actors, and stored in objects.
    """

    def __init__(self, actor_id: bytes, meta: Dict[str, Any], owner: Optional[_Ownership] = None):
        self._fleet_actor_id = actor_id
        self._fleet_meta = meta
        self._fleet_owner = owner
        self._fleet_methods: Dict[str, ActorMethod] = {}

    @property
    def _actor_id(self) -> ActorID:
        return ActorID(self._fleet_actor_id)

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_fleet_"):
            raise AttributeError(name)
        methods = self._fleet_methods
        m = methods.get(name)
        if m is not None:
            return m
        meta = self._fleet_meta["methods"].get(name)
        if meta is None:
            raise AttributeError(
                f"'{self._fleet_meta['class_name']}' actor has no method '{name}'"
            )
        m = ActorMethod(self, name, meta, {})
        methods[name] = m
        return m

    def __reduce__(self):
        # Sent elsewhere: this process can no longer know when the last handle
        # is gone, so the actor lives until its job ends (or fleet.kill).
        if self._fleet_owner is not None:
            self._fleet_owner.escaped = True
        return (_rebuild_handle, (self._fleet_actor_id, self._fleet_meta))

    def __repr__(self) -> str:
        return f"Actor({self._fleet_meta['class_name']}, {self._fleet_actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._fleet_actor_id == self._fleet_actor_id

    def __hash__(self) -> int:
        return hash(self._fleet_actor_id)


def _rebuild_handle(actor_id: bytes, meta: Dict[str, Any]) -> ActorHandle:
    return ActorHandle(actor_id, meta)


class ActorMethod:
    """One method of an actor handle: ``.remote(...)`` calls it."""

    def __init__(self, handle: ActorHandle, name: str, meta: _MethodMeta, options: Dict[str, Any]):
        self._handle = handle
        self._name = name
        self._meta = meta
        self._options = options
        self._template: Any = None
        self._core: Any = None
        self._num_returns: Any = None  # resolved by _prepare
        self._pending_limit = -1  # max_pending_calls, resolved by _prepare

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actor methods cannot be called directly. Instead of running "
            f"'object.{self._name}()', try 'object.{self._name}.remote()'."
        )

    def options(self, **method_options: Any) -> ActorMethod:
        """This method with call options (num_returns, concurrency_group, ...)."""
        opts_mod.validate(method_options, f"actor method '{self._name}'", opts_mod.METHOD_OPTIONS)
        merged = {**self._options, **method_options}
        return ActorMethod(self._handle, self._name, self._meta, merged)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("fleet does not implement the DAG API (bind) yet")

    def _prepare(self, core: Any) -> Any:
        h = self._handle
        meta = h._fleet_meta
        num_returns = self._options.get("num_returns", self._meta["num_returns"])
        group = self._options.get("concurrency_group") or self._meta["concurrency_group"]
        retries = self._options.get("max_task_retries")
        if retries is None:
            retries = self._meta.get("max_task_retries")
        if retries is None:
            retries = meta.get("max_task_retries") or 0
        streaming = num_returns == "streaming"
        self._num_returns = num_returns
        self._pending_limit = meta.get("max_pending_calls", -1)
        self._template = _core.ActorCallTemplate(
            h._fleet_actor_id,
            self._name,
            f"{meta['class_name']}.{self._name}",
            1 if streaming else num_returns,
            group or "",
            streaming,
            retries,
        )
        self._core = core
        return self._template

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the method on the actor; returns ObjectRef(s) (or a generator)."""
        core = state.core
        if core is None:
            raise RuntimeError("fleet is not initialized: call fleet.init() first")
        template = self._template if self._core is core else self._prepare(core)
        if args or kwargs:
            blob, deps, nested = serialization.serialize_args(
                self._name, args, kwargs, ObjectRef
            )
        else:
            blob, deps, nested = b"", [], []
        limit = self._pending_limit
        if limit > 0 and core.actor_pending_calls(self._handle._fleet_actor_id) >= limit:
            raise PendingCallsLimitExceeded(
                f"The actor {self._handle._fleet_meta['class_name']} already has {limit} calls "
                f"from this process waiting or running (max_pending_calls={limit}); wait for "
                "some to finish before calling it again."
            )
        if state.mode == "worker":  # nested: the parent is this call (recursive cancel)
            ids = core.submit_actor_task(template, blob, deps, nested, task_context.parent_id())
        else:
            ids = core.submit_actor_task(template, blob, deps, nested)
        if self._num_returns == 1:
            return ObjectRef(ids, "", False)
        return refs_for(ids, self._num_returns)


def make_actor_class(cls: type, actor_options: Dict[str, Any]) -> ActorClass:
    """``@fleet.remote`` on a class."""
    return ActorClass(cls, actor_options)


class _ActorExit(SystemExit):
    """Raised by exit_actor(); the worker ends the actor when it sees it."""


def exit_actor() -> None:
    """Ends the current actor: the calling method's caller sees the actor's
    death (RayActorError), and calls not yet started fail the same way."""
    ctx = task_context.current()
    if ctx is None or ctx.actor_id is None:
        raise TypeError("exit_actor() can only be called inside an actor")
    raise _ActorExit(0)


__all__: List[str] = ["ActorClass", "ActorHandle", "ActorMethod", "ActorID", "exit_actor", "method"]
