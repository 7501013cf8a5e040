"""``ray.experimental.state.api``: Ray's older name for ``ray.util.state``;
the same functions."""

from fleet.util.state import (
    get_actor,
    list_actors,
    list_named_actors,
    list_objects,
    memory_summary,
)

__all__ = ["get_actor", "list_actors", "list_named_actors", "list_objects", "memory_summary"]
