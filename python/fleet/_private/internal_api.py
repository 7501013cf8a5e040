"""Ray's ``ray._private.internal_api`` calls that users reach for."""

from __future__ import annotations

from typing import Any


def memory_summary(*_: Any, **__: Any) -> str:
    """The node's object store as a table (``fleet memory``); see
    :func:`fleet.util.state.memory_summary`."""
    from fleet.util.state import memory_summary as summary

    return summary()


__all__ = ["memory_summary"]
