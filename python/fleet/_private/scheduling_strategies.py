"""The scheduling strategy classes (public as fleet.util.scheduling_strategies,
which documents them); here, below the option checks that use them, so the
core layers need not import fleet.util. Imports nothing of fleet."""

from __future__ import annotations

from typing import Any, Optional


class NodeAffinitySchedulingStrategy:
    """Run on the node with `node_id` (hex); if `soft`, elsewhere when it cannot."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False):
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    """Run inside a placement group's bundle (-1: any bundle); with
    capture_child_tasks the tasks it submits run in the group too."""

    def __init__(
        self,
        placement_group: Any,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: Optional[bool] = None,
    ):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
