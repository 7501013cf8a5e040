"""Task, actor and actor-method options, defined once: validation and
defaults for ``@remote``, ``.options()``, ``@method`` and ``.remote()`` all
come from the tables below (TASK_OPTIONS, ACTOR_OPTIONS, METHOD_OPTIONS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from fleet._private import task_context
from fleet._private.label_utils import fallback_strategy_error, label_selector_error
from fleet._private.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)


@dataclass(frozen=True)
class Option:
    default: Any
    check: Callable[[Any], Optional[str]]  # returns an error text or None


def _number(name: str, allow_none: bool = True) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            return f"{name} must be a non-negative number, got {v!r}"
        return _precision(name, v)

    return check


# Resource amounts are kept in units of 1/10000 (as Ray's).
_RESOURCE_UNIT_SCALING = 10000


def _precision(name: str, v: Any) -> Optional[str]:
    if isinstance(v, float) and v != 0.0 and int(v * _RESOURCE_UNIT_SCALING) == 0:
        return (
            f"The precision of the fractional quantity of resource {name} cannot go "
            "beyond 0.0001"
        )
    return None


def _int(name: str, minimum: int) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            if minimum == 0:  # Ray's text for its counting options
                return f"The keyword '{name}' only accepts None, 0 or a positive integer; got {v!r}"
            return f"The keyword '{name}' must be an integer >= {minimum}; got {v!r}"
        return None

    return check


def _max_retries(v: Any) -> Optional[str]:
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= -1):
        return None
    return (
        "The keyword 'max_retries' only accepts None, 0, -1 or a positive integer, "
        f"where -1 represents infinity; got {v!r}"
    )


def _resources(v: Any) -> Optional[str]:
    if v is None:
        return None
    if not isinstance(v, dict):
        return f"resources must be a dict of name to amount, got {type(v).__name__}"
    for k, amount in v.items():
        if k in ("CPU", "GPU"):
            return (
                "Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' "
                "in 'resources' keyword"
            )
        if not isinstance(k, str):
            return f"resource names must be strings, got {k!r}"
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            return f"resource '{k}' must be a non-negative number, got {amount!r}"
        err = _precision(k, amount)
        if err:
            return err
    return None


def _retry_exceptions(v: Any) -> Optional[str]:
    if isinstance(v, bool):
        return None
    if isinstance(v, (list, tuple)) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in v
    ):
        return None
    return f"retry_exceptions must be a bool or a list of exception types, got {v!r}"


def _num_returns(v: Any) -> Optional[str]:
    # None: Ray's default (a generator function streams, others return one).
    if v is None or v == "streaming" or v == "dynamic":
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return (
            "The keyword 'num_returns' only accepts None, a non-negative integer, or "
            f'"dynamic" (for generators; "streaming" too); got {v!r}'
        )
    return None


def _strategy(v: Any) -> Optional[str]:
    if v is None or v in ("DEFAULT", "SPREAD"):
        return None
    if isinstance(v, (NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy)):
        return None
    return (
        "scheduling_strategy must be 'DEFAULT', 'SPREAD', a NodeAffinitySchedulingStrategy "
        f"or a PlacementGroupSchedulingStrategy, got {v!r}"
    )


def _placement_group(v: Any) -> Optional[str]:
    if v is None or v == "default" or hasattr(type(v), "bundle_specs"):
        return None
    return f"placement_group must be a PlacementGroup, got {v!r}"


def _bundle_index(v: Any) -> Optional[str]:
    if isinstance(v, int) and not isinstance(v, bool) and v >= -1:
        return None
    return f"placement_group_bundle_index must be an integer >= -1, got {v!r}"


def _optional_bool(v: Any) -> Optional[str]:
    return None if v is None or isinstance(v, bool) else f"expected a bool, got {v!r}"


def _runtime_env(v: Any) -> Optional[str]:
    if v is None:
        return None
    if not isinstance(v, dict):
        return f"runtime_env must be a dict, got {type(v).__name__}"
    for k in v:
        if k not in ("env_vars",):
            return (
                f"runtime_env field '{k}' is not supported by fleet yet "
                "(only 'env_vars' is)"
            )
    env = v.get("env_vars") or {}
    if not isinstance(env, dict) or not all(
        isinstance(a, str) and isinstance(b, str) for a, b in env.items()
    ):
        return "runtime_env['env_vars'] must be a dict of str to str"
    return None


def _str_or_none(name: str) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if v is not None and not isinstance(v, str):
            return f"{name} must be a string, got {v!r}"
        return None

    return check


def _any(_: Any) -> Optional[str]:
    return None


def _not_implemented(what: str) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None
        return f"{what} is not implemented in fleet yet; leave it unset"

    return check


def _backpressure(v: Any) -> Optional[str]:
    # Ray: a generator pauses while this many items are not taken by its
    # reader; None or -1 (any value <= 0): never.
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return None
    return f"_generator_backpressure_num_objects must be an integer, got {v!r}"


TASK_OPTIONS: Dict[str, Option] = {
    "num_cpus": Option(1, _number("num_cpus")),
    "num_gpus": Option(0, _number("num_gpus")),
    "resources": Option(None, _resources),
    "memory": Option(None, _number("memory")),
    "accelerator_type": Option(None, _str_or_none("accelerator_type")),
    "max_retries": Option(3, _max_retries),
    "retry_exceptions": Option(False, _retry_exceptions),
    "num_returns": Option(1, _num_returns),
    "name": Option(None, _str_or_none("name")),
    "scheduling_strategy": Option(None, _strategy),
    # Ray's older spelling of PlacementGroupSchedulingStrategy.
    "placement_group": Option("default", _placement_group),
    "placement_group_bundle_index": Option(-1, _bundle_index),
    "placement_group_capture_child_tasks": Option(None, _optional_bool),
    "runtime_env": Option(None, _runtime_env),
    "max_calls": Option(0, _int("max_calls", 0)),
    "_generator_backpressure_num_objects": Option(None, _backpressure),
    "label_selector": Option(None, label_selector_error),
    "_metadata": Option(None, _any),
}


def _restarts(name: str, allow_none: bool = False) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < -1:
            return (
                f"The keyword '{name}' only accepts None, 0, -1 or a positive integer, "
                f"where -1 represents infinity; got {v!r}"
            )
        return None

    return check


def _lifetime(v: Any) -> Optional[str]:
    if v in (None, "detached", "non_detached"):
        return None
    return f"lifetime must be None, 'detached' or 'non_detached', got {v!r}"


def _max_concurrency(v: Any) -> Optional[str]:
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return None
    return f"The keyword 'max_concurrency' only accepts None or a positive integer; got {v!r}"


def _concurrency_groups(v: Any) -> Optional[str]:
    if v is None:
        return None
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 1
        for k, n in v.items()
    ):
        return f"concurrency_groups must be a dict of group name to an integer >= 1, got {v!r}"
    return None


def _max_pending_calls(v: Any) -> Optional[str]:
    if isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v > 0):
        return None
    return f"max_pending_calls must be -1 (no limit) or a positive integer, got {v!r}"


def _bool(name: str) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if not isinstance(v, bool):
            return f"{name} must be True or False, got {v!r}"
        return None

    return check


ACTOR_OPTIONS: Dict[str, Option] = {
    # None: the actor needs a CPU to be placed but holds none while it lives (as Ray).
    "num_cpus": Option(None, _number("num_cpus")),
    "num_gpus": Option(0, _number("num_gpus")),
    "resources": Option(None, _resources),
    "memory": Option(None, _number("memory")),
    "object_store_memory": Option(None, _number("object_store_memory")),
    "accelerator_type": Option(None, _str_or_none("accelerator_type")),
    "max_restarts": Option(0, _restarts("max_restarts")),
    "max_task_retries": Option(0, _restarts("max_task_retries")),
    "max_pending_calls": Option(-1, _max_pending_calls),
    "max_concurrency": Option(None, _max_concurrency),
    "concurrency_groups": Option(None, _concurrency_groups),
    "name": Option(None, _str_or_none("name")),
    "namespace": Option(None, _str_or_none("namespace")),
    "lifetime": Option(None, _lifetime),
    "get_if_exists": Option(False, _bool("get_if_exists")),
    "scheduling_strategy": Option(None, _strategy),
    # Ray's older spelling of PlacementGroupSchedulingStrategy.
    "placement_group": Option("default", _placement_group),
    "placement_group_bundle_index": Option(-1, _bundle_index),
    "placement_group_capture_child_tasks": Option(None, _optional_bool),
    "runtime_env": Option(None, _runtime_env),
    "label_selector": Option(None, label_selector_error),
    "fallback_strategy": Option(None, fallback_strategy_error),
    "_metadata": Option(None, _any),
}

METHOD_OPTIONS: Dict[str, Option] = {
    "num_returns": Option(1, _num_returns),
    "concurrency_group": Option(None, _str_or_none("concurrency_group")),
    "max_task_retries": Option(None, _restarts("max_task_retries", allow_none=True)),
    "retry_exceptions": Option(False, _retry_exceptions),
    "name": Option(None, _str_or_none("name")),
    "_generator_backpressure_num_objects": Option(None, _backpressure),
    "_metadata": Option(None, _any),
}


_NONE = type(None)
_NUMBER = (float, int, _NONE)
_INT = (int, _NONE)


def _is_placement_group(v: Any) -> bool:
    return v is None or isinstance(v, str) or hasattr(type(v), "bundle_specs")


# The type each option's value must have, as Ray checks it (before its
# value): a wrong type is a TypeError, a wrong value of the right type a
# ValueError. A callable stands for a class this layer cannot import.
TYPES: Dict[str, Any] = {
    "num_cpus": _NUMBER,
    "num_gpus": _NUMBER,
    "memory": _NUMBER,
    "object_store_memory": _INT,
    "resources": (dict, _NONE),
    "accelerator_type": (str, _NONE),
    "max_retries": _INT,
    "max_calls": _INT,
    "retry_exceptions": (bool, list, tuple),
    "num_returns": (int, str, _NONE),
    "name": (str, _NONE),
    "scheduling_strategy": (
        _NONE, str, PlacementGroupSchedulingStrategy, NodeAffinitySchedulingStrategy,
    ),
    "placement_group": (_is_placement_group, "(NoneType, str, PlacementGroup)"),
    "placement_group_bundle_index": int,
    "placement_group_capture_child_tasks": (bool, _NONE),
    "runtime_env": (dict, _NONE),
    "label_selector": (dict, _NONE),
    "_metadata": (dict, _NONE),
    "max_restarts": _INT,
    "max_task_retries": _INT,
    "max_pending_calls": _INT,
    "max_concurrency": _INT,
    "concurrency_groups": (list, dict, _NONE),
    "concurrency_group": (str, _NONE),
    "namespace": (str, _NONE),
    "lifetime": (str, _NONE),
    "get_if_exists": bool,
}


def _check_type(key: str, value: Any) -> None:
    t = TYPES.get(key)
    if t is None:
        return
    if isinstance(t, tuple) and callable(t[0]) and not isinstance(t[0], type):
        ok, shown = t[0](value), t[1]
    else:
        ok, shown = isinstance(value, t), t
    if not ok:
        raise TypeError(
            f"The type of keyword '{key}' must be {shown}, but received type {type(value)}"
        )


def validate(
    options: Dict[str, Any], where: str, table: Optional[Dict[str, Option]] = None
) -> None:
    """Raises ValueError naming the first unknown option or invalid value,
    TypeError for a value of the wrong type (as Ray)."""
    table = TASK_OPTIONS if table is None else table
    for key, value in options.items():
        opt = table.get(key)
        if opt is None:
            raise ValueError(
                f"Invalid option keyword {key} for {where}. "
                f"Valid ones are {sorted(k for k in table if not k.startswith('_'))}."
            )
        _check_type(key, value)
        err = opt.check(value)
        if err:
            raise ValueError(f"Invalid value for option '{key}' of {where}: {err}")
    _warn_deprecated(options, table)


def _warn_deprecated(options: Dict[str, Any], table: Dict[str, Option]) -> None:
    """Ray's deprecation warnings for options that still work."""
    import warnings

    if options.get("placement_group", "default") not in ("default", None):
        warnings.warn(
            "placement_group parameter is deprecated. Use "
            "scheduling_strategy=PlacementGroupSchedulingStrategy(...) instead.",
            DeprecationWarning, stacklevel=4,
        )
    if table is ACTOR_OPTIONS and options.get("object_store_memory") is not None:
        warnings.warn(
            "Setting 'object_store_memory' for actors is deprecated since it doesn't actually "
            "reserve the required object store memory. Objects spill to disk when the store "
            "is full, which bypasses the store's size limit.",
            DeprecationWarning, stacklevel=4,
        )


def resolved(options: Dict[str, Any], table: Optional[Dict[str, Option]] = None) -> Dict[str, Any]:
    """Options with defaults filled in."""
    table = TASK_OPTIONS if table is None else table
    out = {k: o.default for k, o in table.items()}
    out.update(options)
    return out


def resource_request(opts: Dict[str, Any], default_cpus: float = 1) -> Dict[str, float]:
    """The resource shape of a task (or an actor) from its resolved options."""
    req: Dict[str, float] = {}
    cpus = opts["num_cpus"] if opts["num_cpus"] is not None else default_cpus
    if cpus:
        req["CPU"] = float(cpus)
    gpus = opts["num_gpus"] or 0
    if gpus:
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"num_gpus must be an integer when greater than 1, got {gpus}")
        req["GPU"] = float(gpus)
    if opts["memory"]:
        req["memory"] = float(opts["memory"])
    for k, v in (opts["resources"] or {}).items():
        if v:
            req[k] = float(v)
    if opts.get("accelerator_type"):  # as Ray: a sliver of the node's accelerator_type:X
        req[f"accelerator_type:{opts['accelerator_type']}"] = 0.001
    return req


def _in_group(
    resources: Dict[str, float], pg_id: bytes, index: int, capture: bool
) -> tuple[Dict[str, float], str, bytes, bool, bytes, int, bool]:
    hex_id = pg_id.hex()
    suffix = f"_{index}_{hex_id}" if index >= 0 else f"_{hex_id}"
    out = {f"{k}_group{suffix}": v for k, v in resources.items() if v}
    out[f"bundle_group{suffix}"] = 0.001
    return out, "", b"", False, pg_id, index, capture


def _fits_a_bundle(resources: Dict[str, float], bundles: List[Dict[str, float]]) -> bool:
    return any(
        all(b.get(k, 0) >= v for k, v in resources.items() if v) for b in bundles
    )


def check_fits_group(
    pg: Any, resources: Dict[str, float], placement_resources: Dict[str, float], what: str
) -> None:
    """Ray's check at ``.remote()``: a task or actor in a placement group must
    fit into one of its bundles (an actor also with what it needs to be
    placed, 1 CPU by default), else ValueError (it could never run)."""
    bundles = pg.bundle_specs
    if not _fits_a_bundle(resources, bundles):
        raise ValueError(
            f"Cannot schedule {what} with the placement group because the resource request "
            f"{resources} cannot fit into any bundles for the placement group, {bundles}."
        )
    if not _fits_a_bundle(placement_resources, bundles):
        raise ValueError(
            f"Cannot schedule {what} with the placement group because the actor requires "
            f"{placement_resources.get('CPU', 0)} CPU for creation, but it cannot fit into any "
            f"bundles for the placement group, {bundles}. Consider creating a placement group "
            "with CPU resources."
        )


def placement(
    opts: Dict[str, Any], resources: Dict[str, float],
    placement_resources: Optional[Dict[str, float]] = None, what: str = "the task",
) -> tuple[Dict[str, float], str, bytes, bool, bytes, int, bool]:
    """Where a task or actor runs, from its resolved options:
    (resources, strategy, affinity node id, soft, placement group id, bundle
    index, capture child tasks). In a placement group the resources become
    the bundle's, with Ray's names: "CPU_group_<i>_<pg>" for bundle i,
    "CPU_group_<pg>" for any bundle, plus a sliver of "bundle_group_..." so
    that a task asking for nothing still lands on a node of the group."""
    s = opts.get("scheduling_strategy")
    pg = opts.get("placement_group", "default")  # None: explicitly not in any group
    index = opts.get("placement_group_bundle_index", -1)
    capture = bool(opts.get("placement_group_capture_child_tasks"))
    if isinstance(s, PlacementGroupSchedulingStrategy):
        pg, index, capture = (
            s.placement_group, s.placement_group_bundle_index,
            bool(s.placement_group_capture_child_tasks),
        )
    if pg == "default" and s is None:
        ctx = task_context.current()
        if ctx is not None and ctx.capture_group is not None:
            # A child of a call that captures its children: any bundle of its group.
            return _in_group(resources, ctx.capture_group, -1, True)
    if pg is not None and pg != "default":
        if index is None:
            index = -1
        if index != -1 and (index >= len(pg.bundle_specs) or index < -1):
            raise ValueError(
                f"placement group bundle index {index} is invalid. Valid placement group "
                f"indexes: 0-{len(pg.bundle_specs)}"
            )
        check_fits_group(pg, resources, placement_resources or {}, what)
        return _in_group(resources, pg.id.binary(), index, capture)
    if isinstance(s, NodeAffinitySchedulingStrategy):
        try:
            node = bytes.fromhex(s.node_id)
        except (TypeError, ValueError):
            raise ValueError(
                f"NodeAffinitySchedulingStrategy: node_id must be a node id in hex, got "
                f"{s.node_id!r}"
            ) from None
        return resources, "NODE_AFFINITY", node, bool(s.soft), b"", -1, False
    if s == "SPREAD":
        return resources, "SPREAD", b"", False, b"", -1, False
    return resources, "", b"", False, b"", -1, False
