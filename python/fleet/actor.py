"""Actors: what ``@fleet.remote`` makes of a class, and handles to them.

``Cls.remote(...)`` registers the actor with the control store (which places
it on a worker) and returns an :class:`ActorHandle` at once. Method calls go
from the caller straight to the actor's worker, in the order the caller made
them. A non-detached actor (named or not) lives while a handle to it exists
anywhere: the handle ``.remote()`` returns, and its copies sent to other
processes (task arguments, return values, objects, actor state), which
borrow it from the creator (the owner) like an ``ObjectRef``. When the last
is gone the actor exits after the calls already made; it also dies with its
owner. Handles looked up by name (``get_actor``) or from inside the actor
(``current_actor``) do not keep it alive. Detached actors live until
``fleet.kill``.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, List, Optional, Tuple

from fleet import _core
from fleet._private import options as opts_mod
from fleet._private import serialization, signature, state, task_context
from fleet._private.generator import refs_for
from fleet._private.ids import ActorID
from fleet._private.label_utils import selectors_of
from fleet._private.session import _ensure_initialized
from fleet.exceptions import ActorAlreadyExistsError, AsyncioActorExit, PendingCallsLimitExceeded
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
        num_returns = o.get("num_returns")
        if num_returns is None:  # as Ray: a generator method streams its values
            num_returns = "streaming" if is_gen else 1
        table[name] = {
            "num_returns": num_returns,
            "concurrency_group": o.get("concurrency_group") or "",
            "max_task_retries": o.get("max_task_retries"),
            # Checked by callers at .remote() (None: any arguments).
            "signature": signature.for_method(cls, name),
        }
    # Built in, as in Ray: __ray_ready__ answers once the actor is up;
    # __ray_terminate__ ends it after the calls made before; __ray_call__(fn,
    # *args) runs fn(actor, *args) on the actor.
    for name in ("__ray_ready__", "__ray_terminate__", "__ray_call__"):
        table[name] = {"num_returns": 1, "concurrency_group": "", "max_task_retries": 0}
    return table


def _is_async_class(cls: type) -> bool:
    import inspect

    return any(
        inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
        for _, m in inspect.getmembers(cls, predicate=inspect.isfunction)
    )


class ActorClassInheritanceException(TypeError):
    """A class statement tried to inherit from an actor class."""


class ActorClass:
    """A class made remote by ``@fleet.remote``: create actors with ``.remote()``.

    The user class's class attributes, static methods and classmethods are
    reachable through it (``Cls.X``, ``Cls.static()``), as in Ray.
    """

    def __init__(self, cls: Any, actor_options: Any, attrs: Any = None):
        if attrs is not None:
            # `class Derived(SomeActorClass)`: Python asks the base's type
            # (this class) to make the new class, with (name, bases, attrs).
            base = next((b for b in actor_options if isinstance(b, ActorClass)), None)
            raise ActorClassInheritanceException(
                f"Attempted to define subclass '{cls}' of actor class "
                f"'{base._name if base is not None else '?'}'. Inheriting from actor "
                "classes is not currently supported. You can instead inherit from a "
                "non-actor base class and make the derived class an actor class (with "
                "@fleet.remote)."
            )
        opts_mod.validate(actor_options, f"actor class '{cls.__name__}'", opts_mod.ACTOR_OPTIONS)
        self._cls = cls
        self._name = cls.__qualname__
        self._options = dict(actor_options)
        self._pickled: Optional[bytes] = None
        self._key: Optional[str] = None
        self._exported_to: Any = None
        self._methods = _method_table(cls)
        self._init_signature = signature.for_method(cls, "__init__")
        self._is_async = _is_async_class(cls)
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self._name}()', "
            f"use '{self._name}.remote()'."
        )

    def __dir__(self) -> List[str]:
        # What completes after "Cls.": the user class's names and ours.
        cls = self.__dict__.get("_cls")
        return sorted(set(dir(type(self))) | (set(dir(cls)) if cls is not None else set()))

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this object lacks: the user class's own
        # (class attributes, static methods, classmethods bound to it).
        cls = self.__dict__.get("_cls")
        if cls is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(
                f"'ActorClass({self._name})' has no attribute '{name}'"
            ) from None

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

    def _remote(self, args: Any = None, kwargs: Any = None, **actor_options: Any) -> ActorHandle:
        """Ray's lower-level form: ``Cls._remote(args, kwargs, **options)``."""
        target = self.options(**actor_options) if actor_options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def _export(self, core: Any) -> str:
        root = getattr(self, "_root", None) or self
        return serialization.export(root, root._cls, core, "cls", "actor class", self._name)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Creates the actor; returns its handle at once (creation is asynchronous)."""
        core = state.core
        if core is None:
            core = _ensure_initialized()
        sig = self._init_signature
        if sig is not None:
            sig.check(args, kwargs)
        o = opts_mod.resolved(self._options, opts_mod.ACTOR_OPTIONS)
        _check_name(o["name"], o["namespace"])
        resources, placement = _actor_resources(o)
        resources, strategy, affinity, soft, pg_id, _index, capture = opts_mod.placement(
            o, resources, placement, f"actor {self._name}"
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
            key, f"{self._cls.__name__}.__init__", 1, resources, b"", env, 0
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
        # As Ray's: unique bytes, then the creating job's id (ActorID.job_id).
        actor_id = _core.random_id()[:-4] + int(core.job_id).to_bytes(4, "little")
        try:
            actor_id, existed, existing_meta = core.register_actor(
                actor_id, name, namespace, self._name, o["max_restarts"], detached, meta_blob,
                resources, placement, bool(o["get_if_exists"]), strategy, affinity, soft,
                o["label_selector"] or {}, selectors_of(o["fallback_strategy"]),
            )
        except ValueError as e:  # (the only refusal: the name is taken)
            raise ActorAlreadyExistsError(str(e)) from None
        if existed:  # as a handle looked up by name (counts only in the owner)
            return ActorHandle(actor_id, pickle.loads(existing_meta) if existing_meta else meta,
                               core.hold_owned_actor_handle(actor_id))
        # A non-detached actor lives while handles to it do: this handle holds
        # the actor's handle object, owned here and borrowed by the processes
        # its copies are sent to.
        ref = None if detached else core.own_actor_handle(actor_id)
        core.create_actor(template, actor_id, blob, deps, actor_options)
        return ActorHandle(actor_id, meta, ref)


def _check_name(name: Any, namespace: Any) -> None:
    """Ray's checks of an actor's name and namespace (types come checked)."""
    if name == "":
        raise ValueError("Actor name cannot be an empty string.")
    if namespace == "":
        raise ValueError('"" is not a valid namespace. Pass None to not specify a namespace.')


def _actor_resources(o: Dict[str, Any]) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(held while alive, needed to be placed) for an actor's resolved options."""
    held = opts_mod.resource_request(o, default_cpus=0)
    if o["num_cpus"] is not None:
        return held, {}
    if set(held) - {"memory", "object_store_memory"}:
        # Ray's default once any resource is named (GPUs, custom ones): the
        # actor holds 1 CPU for its life as well.
        held["CPU"] = 1.0
        return held, {}
    # Ray's default with no resources named: it needs 1 CPU to be placed but
    # holds none.
    return held, {"CPU": 1.0}




class ActorHandle:
    """A handle to an actor: call methods with ``handle.method.remote(...)``.

    Handles can be passed to tasks and other actors, and stored in objects.
    """

    def __init__(self, actor_id: bytes, meta: Dict[str, Any], ref: Optional[bytes] = None,
                 owner: str = ""):
        self._fleet_actor_id = actor_id
        self._fleet_meta = meta
        # The actor's handle object this handle holds one local ref on (None:
        # a handle that does not keep the actor alive), and its owner's
        # address ("" when this process owns it).
        self._fleet_ref = ref
        self._fleet_owner = owner
        self._fleet_core = state.core if ref is not None else None
        self._fleet_methods: Dict[str, ActorMethod] = {}

    def __del__(self) -> None:
        core = self._fleet_core
        if core is None or state.core is not core:
            return
        try:  # let go once this process's calls to the actor have finished
            core.release_actor_handle(self._fleet_actor_id, self._fleet_ref)
        except Exception:  # interpreter shutdown
            pass

    @property
    def _actor_id(self) -> ActorID:
        return ActorID(self._fleet_actor_id)

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_fleet_"):
            raise AttributeError(name)
        methods = self._fleet_methods
        m = methods.get(name)
        if m is not None:
            # Held until the method's next .remote() has submitted (then let
            # go, so that the cache makes no lasting cycle and the handle dies
            # when the user's last reference does): `A.remote().f.remote()` works.
            m._handle = self
            return m
        meta = self._fleet_meta["methods"].get(name)
        if meta is None:
            raise AttributeError(
                f"'{self._fleet_meta['class_name']}' actor has no method '{name}'"
            )
        m = ActorMethod(self, name, meta, {})
        methods[name] = m
        return m

    def __dir__(self) -> List[str]:
        # As Ray's: the actor's methods (with the built-in __ray_*__ ones and
        # __init__), what can be called through the handle.
        return sorted(set(self._fleet_meta["methods"]) | {"__init__"})

    def __reduce__(self):
        # The handle object travels as an ObjectRef: the receiver borrows it
        # from the owner (pickled outside fleet's serialization, it escapes:
        # the actor then lives as long as its owner).
        if self._fleet_ref is None:
            return (_rebuild_handle, (self._fleet_actor_id, self._fleet_meta))
        ref = ObjectRef(self._fleet_ref, self._fleet_owner)
        return (_rebuild_handle, (self._fleet_actor_id, self._fleet_meta, ref))

    def __repr__(self) -> str:
        return f"Actor({self._fleet_meta['class_name']}, {self._fleet_actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._fleet_actor_id == self._fleet_actor_id

    def __hash__(self) -> int:
        return hash(self._fleet_actor_id)


def _rebuild_handle(actor_id: bytes, meta: Dict[str, Any],
                    ref: Optional[ObjectRef] = None) -> ActorHandle:
    core = state.core
    if ref is None or core is None:
        return ActorHandle(actor_id, meta)
    core.add_ref(ref._id)  # the handle's own; `ref` (registered with the owner) goes
    return ActorHandle(actor_id, meta, ref._id, ref._owner)


class ActorMethod:
    """One method of an actor handle: ``.remote(...)`` calls it."""

    def __init__(self, handle: ActorHandle, name: str, meta: _MethodMeta, options: Dict[str, Any]):
        self._handle: Optional[ActorHandle] = handle  # keeps the actor alive, see remote()
        self._actor_id = handle._fleet_actor_id
        self._actor_meta = handle._fleet_meta
        self._cached = not options  # the handle's own (ActorHandle.__getattr__)
        self._name = name
        self._meta = meta
        self._options = options
        self._template: Any = None
        self._core: Any = None
        self._num_returns: Any = None  # resolved by _prepare
        self._signature = meta.get("signature")
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
        m = ActorMethod.__new__(ActorMethod)
        m.__dict__.update(self.__dict__)
        m._options = merged
        m._cached = False
        m._template = m._core = None
        return m

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("fleet does not implement the DAG API (bind) yet")

    def _remote(self, args: Any = None, kwargs: Any = None, **method_options: Any) -> Any:
        """Ray's lower-level form: ``handle.method._remote(args, kwargs, **options)``."""
        target = self.options(**method_options) if method_options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def _prepare(self, core: Any) -> Any:
        meta = self._actor_meta
        num_returns = self._options.get("num_returns")
        if num_returns is None:
            num_returns = self._meta["num_returns"]
        group = self._options.get("concurrency_group") or self._meta["concurrency_group"]
        retries = self._options.get("max_task_retries")
        if retries is None:
            retries = self._meta.get("max_task_retries")
        if retries is None:
            retries = meta.get("max_task_retries") or 0
        streaming = num_returns == "streaming"
        dynamic = num_returns == "dynamic"
        self._num_returns = num_returns
        self._pending_limit = meta.get("max_pending_calls", -1)
        # The task's name, as Ray: the name= option, else "Class.method".
        task_name = self._options.get("name") or (
            f"{meta['class_name'].rpartition('.')[2]}.{self._name}"
        )
        self._template = _core.ActorCallTemplate(
            self._actor_id,
            self._name,
            task_name,
            1 if streaming or dynamic else num_returns,
            group or "",
            streaming,
            retries,
            dynamic,
            max(0, self._options.get("_generator_backpressure_num_objects") or 0),
        )
        self._core = core
        return self._template

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the method on the actor; returns ObjectRef(s) (or a generator)."""
        core = state.core
        if core is None:
            raise RuntimeError("fleet is not initialized: call fleet.init() first")
        template = self._template if self._core is core else self._prepare(core)
        sig = self._signature
        if sig is not None:
            sig.check(args, kwargs)
        if args or kwargs:
            blob, deps, nested = serialization.serialize_args(
                self._name, args, kwargs, ObjectRef
            )
        else:
            blob, deps, nested = b"", [], []
        limit = self._pending_limit
        if limit > 0 and core.actor_pending_calls(self._actor_id) >= limit:
            raise PendingCallsLimitExceeded(
                f"The actor {self._actor_meta['class_name']} already has {limit} calls "
                f"from this process waiting or running (max_pending_calls={limit}); wait for "
                "some to finish before calling it again."
            )
        if state.mode == "worker":  # nested: the parent is this call (recursive cancel)
            ids = core.submit_actor_task(template, blob, deps, nested, task_context.parent_id())
        else:
            ids = core.submit_actor_task(template, blob, deps, nested)
        if self._cached:
            # Submitted: the handle may go now (its release waits for the call).
            self._handle = None
        if self._num_returns == 1:
            return ObjectRef(ids, "", False)
        return refs_for(ids, self._num_returns)


def make_actor_class(cls: type, actor_options: Dict[str, Any]) -> ActorClass:
    """``@fleet.remote`` on a class."""
    return ActorClass(cls, actor_options)


class _ActorExit(SystemExit):
    """Raised by exit_actor() in a plain or threaded actor (a SystemExit, so a
    user's ``except Exception`` does not stop it)."""


def exit_actor() -> None:
    """Intentionally ends the current actor.

    The calling method's caller and the calls not yet started get an
    ``ActorDiedError``; ``__ray_shutdown__``, ``__del__`` and the ``atexit``
    handlers run first. Catching the raised exception does not stop the exit.

    Raises:
        TypeError: when not called inside an actor.
    """
    hook = state.actor_exit_hook
    ctx = task_context.current()
    if hook is None or ctx is None or ctx.actor_id is None:
        raise TypeError(
            f"exit_actor API is called on a non-actor worker, {state.mode or 'driver'} mode. "
            "Call this API inside an actor method if you'd like to exit the actor gracefully."
        )
    if hook():  # True: an async actor (it exits once the running calls are done)
        raise AsyncioActorExit()
    e = _ActorExit(0)
    e.ray_terminate_msg = "exit_actor() is called."  # type: ignore[attr-defined]
    raise e


__all__: List[str] = ["ActorClass", "ActorClassInheritanceException", "ActorHandle",
                      "ActorMethod", "ActorID", "exit_actor", "method"]
