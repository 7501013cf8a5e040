"""Utilities on top of the core API, with Ray's names.

- ``fleet.util.ActorPool``: spread work over a fixed set of actors.
- ``fleet.util.queue.Queue``: a FIFO queue shared by tasks and actors.
- ``fleet.util.multiprocessing.Pool``: ``multiprocessing.Pool`` on actors.
- ``fleet.util.scheduling_strategies``: where tasks run.
- ``fleet.util.state``: what the cluster runs (``list_actors``).
- ``fleet.util.placement_group``: reserve bundles of resources across nodes.
- ``fleet.util.get_node_ip_address()``: this node's IP.

The submodules load on first use, so ``import fleet`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fleet.util import scheduling_strategies

# Imported eagerly: `fleet.util.placement_group` must stay the function (as
# in Ray), which a later lazy import of the submodule would replace.
from fleet.util.placement_group import (  # noqa: E402
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

if TYPE_CHECKING:  # pragma: no cover
    from fleet.util import multiprocessing, queue, state
    from fleet.util.actor_pool import ActorPool
    from fleet.util.state import list_named_actors

_LAZY_ATTRS = {"ActorPool": "fleet.util.actor_pool", "list_named_actors": "fleet.util.state"}
_LAZY_MODULES = ("actor_pool", "multiprocessing", "queue", "state")


def get_node_ip_address() -> str:
    """This process's node IP address (as ``ray.util.get_node_ip_address``)."""
    from fleet._private import state as _state

    return _state.node_ip


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"fleet.util.{name}")
    else:
        raise AttributeError(f"module 'fleet.util' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY_ATTRS) | set(_LAZY_MODULES))


__all__ = [
    "ActorPool",
    "PlacementGroup",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
    "list_named_actors",
    "multiprocessing",
    "queue",
    "scheduling_strategies",
    "state",
]
