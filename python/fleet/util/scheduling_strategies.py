"""Scheduling strategies, with Ray's names.

- ``"DEFAULT"``: the submitting node while it has the resources free, then
  the least loaded node that has them.
- ``"SPREAD"``: round robin over the nodes that can run the task.
- ``NodeAffinitySchedulingStrategy(node_id, soft)``: that node; if it is dead
  (or could never run the task), an error when ``soft=False``, the default
  policy when ``soft=True``.
- ``PlacementGroupSchedulingStrategy(pg, bundle_index)``: inside a bundle of a
  placement group (``fleet.util.placement_group``).

(Defined in fleet._private.scheduling_strategies, below the option checks
that use them.)
"""

from __future__ import annotations

from fleet._private.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
