"""Task options, defined once: validation and defaults for ``@remote``,
``.options()`` and ``.remote()`` all come from OPTIONS below."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from fleet.util.scheduling_strategies import (
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
        return None

    return check


def _int(name: str, minimum: int) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            return f"{name} must be an integer >= {minimum}, got {v!r}"
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
    if v in ("streaming", "dynamic"):
        return f"num_returns={v!r} (generators) is not implemented yet in fleet"
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return f"num_returns must be a non-negative integer, got {v!r}"
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
    "runtime_env": Option(None, _runtime_env),
    "max_calls": Option(0, _int("max_calls", 0)),
    "label_selector": Option(None, _any),
    "_metadata": Option(None, _any),
}


def validate(options: Dict[str, Any], where: str) -> None:
    """Raises ValueError naming the first unknown or invalid option."""
    for key, value in options.items():
        opt = TASK_OPTIONS.get(key)
        if opt is None:
            raise ValueError(
                f"Invalid option keyword {key} for {where}. "
                f"Valid ones are {sorted(k for k in TASK_OPTIONS if not k.startswith('_'))}."
            )
        err = opt.check(value)
        if err:
            raise ValueError(f"Invalid value for option '{key}' of {where}: {err}")


def resolved(options: Dict[str, Any]) -> Dict[str, Any]:
    """Options with defaults filled in."""
    out = {k: o.default for k, o in TASK_OPTIONS.items()}
    out.update(options)
    return out


def resource_request(opts: Dict[str, Any]) -> Dict[str, float]:
    """The resource shape of a task from its resolved options."""
    req: Dict[str, float] = {}
    cpus = opts["num_cpus"] if opts["num_cpus"] is not None else 1
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
    return req
