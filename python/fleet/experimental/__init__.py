"""Experimental APIs, with Ray's names (``ray.experimental``)."""

from __future__ import annotations

from typing import Any, Dict, List

from fleet._private import state
from fleet._private.session import _ensure_initialized
from fleet.object_ref import ObjectRef


def get_object_locations(obj_refs: List[Any], timeout_ms: int = -1) -> Dict[Any, Dict[str, Any]]:
    """Where each object lives: ``{ref: {"node_ids": [hex, ...], "object_size": bytes}}``.

    The first node id holds the primary copy; the others pulled a copy (a
    task there read it). Objects whose lookup fails (freed, owner gone) are
    left out, as in Ray. A small object lives in its owner's memory: its
    owner's node."""
    if not isinstance(obj_refs, list) or not all(isinstance(r, ObjectRef) for r in obj_refs):
        raise TypeError("get_object_locations expects a list of ObjectRefs")
    core = state.core or _ensure_initialized()
    found = core.object_locations([r.binary() for r in obj_refs], int(timeout_ms))
    return {ref: loc for ref, loc in zip(obj_refs, found) if loc is not None}


__all__ = ["get_object_locations"]
