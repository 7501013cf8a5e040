"""Placement groups, with Ray's names: reserve bundles of resources across
nodes, all or nothing, then run tasks and actors inside them.

    import fleet
    from fleet.util.placement_group import placement_group, remove_placement_group
    from fleet.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    fleet.get(pg.ready(), timeout=10)

    @fleet.remote(num_cpus=1)
    def where():
        return fleet.get_runtime_context().get_node_id()

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    fleet.get(where.options(scheduling_strategy=strategy).remote())
    remove_placement_group(pg)

fleet-gcs plans a node per bundle (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD)
and reserves them in two phases; a group that does not fit stays PENDING
(``fleet status`` shows it) until nodes with room join.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional

from fleet import _core as core_mod
from fleet._private import state, task_context
from fleet._private.ids import PlacementGroupID
from fleet._private.scheduling_strategies import PlacementGroupSchedulingStrategy
from fleet._private.session import _ensure_initialized
from fleet.remote_function import remote

VALID_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
VALID_PLACEMENT_GROUP_STRATEGIES = set(VALID_STRATEGIES)  # (Ray's name)
# Resource name the system gives every bundle ("bundle_group_<pg>"): not
# for users' bundles.
BUNDLE_RESOURCE_LABEL = "bundle"

# Bundles never change: looked up once per group and process.
_bundle_specs: Dict[bytes, List[Dict[str, float]]] = {}


def _core() -> Any:
    if state.core is None:
        return _ensure_initialized()
    return state.core


class PlacementGroup:
    """A handle to a placement group (picklable: pass it to tasks). ``id`` is
    its PlacementGroupID."""

    def __init__(self, id: Any, bundle_cache: Optional[List[Dict[str, float]]] = None):
        if isinstance(id, bytes):
            id = PlacementGroupID(id) if id else PlacementGroupID.nil()
        if not isinstance(id, PlacementGroupID):
            raise TypeError(f"a placement group's id must be a PlacementGroupID, got {id!r}")
        self.id = id
        self._bundle_cache = bundle_cache

    @property
    def _bin(self) -> bytes:
        return self.id.binary()

    @staticmethod
    def empty() -> PlacementGroup:
        """The null group (Ray's ``PlacementGroup.empty()``)."""
        return PlacementGroup(PlacementGroupID.nil())

    def is_empty(self) -> bool:
        """Whether this is the null group."""
        return self.id.is_nil()

    @property
    def bundle_cache(self) -> Optional[List[Dict[str, float]]]:
        """The bundles as far as this handle knows them (None: not fetched)."""
        return self._bundle_cache

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serializable form (Ray's): {"id": hex, "bundle_cache": ...}."""
        return {"id": self.id.hex(), "bundle_cache": self._bundle_cache}

    @staticmethod
    def from_dict(pg_dict: Dict[str, Any]) -> PlacementGroup:
        """The handle that ``to_dict`` described."""
        return PlacementGroup(PlacementGroupID.from_hex(pg_dict["id"]), pg_dict["bundle_cache"])

    @property
    def bundle_specs(self) -> List[Dict[str, float]]:
        """The bundles' resource maps, in order."""
        if self._bundle_cache is None:
            cached = _bundle_specs.get(self._bin)
            if cached is None:
                table = _table(self._bin)
                bundles = table["bundles"] if table else {}
                cached = [bundles[i] for i in sorted(bundles)]
                if cached:
                    _bundle_specs[self._bin] = cached
            self._bundle_cache = cached
        return self._bundle_cache

    @property
    def bundle_count(self) -> int:
        """How many bundles the group has."""
        return len(self.bundle_specs)

    def ready(self) -> Any:
        """An ObjectRef that resolves (to this group) once it is reserved,
        from a zero-CPU task run in the group's first bundle, as Ray does."""
        global _bundle_reservation_check
        if _bundle_reservation_check is None:
            _bundle_reservation_check = _make_check()
        strategy = PlacementGroupSchedulingStrategy(self, placement_group_bundle_index=0)
        return _bundle_reservation_check.options(scheduling_strategy=strategy).remote(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Waits up to `timeout_seconds` for the group to be reserved; True if it is."""
        if timeout_seconds is not None:
            ready, _error = _core().wait_placement_group(
                self._bin, max(0, int(timeout_seconds * 1000))
            )
            return bool(ready)
        while True:  # no limit: in slices, so no single call times out
            ready, error = _core().wait_placement_group(self._bin, 30_000)
            if ready or error:
                return bool(ready)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()})"

    def __reduce__(self) -> Any:
        return PlacementGroup, (self._bin, self._bundle_cache)


def _check(placement_group: PlacementGroup) -> PlacementGroup:
    """Runs in the group's first bundle: it is reserved (as Ray, returns the group)."""
    return placement_group


_bundle_reservation_check: Any = None


def _make_check() -> Any:
    return remote(num_cpus=0, max_retries=0)(_check)


def _validate_bundles(bundles: Any) -> List[Dict[str, float]]:
    """Ray's checks of a placement group's bundles (ValueError with Ray's
    wording); returns them as float maps without the zero amounts."""
    if not isinstance(bundles, list):
        raise ValueError(f"Placement group bundles must be a list, got {type(bundles)}.")
    example = 'For example: `[{"CPU": 1.0}, {"GPU": 1.0}]`.'
    if not bundles:
        raise ValueError(
            f"Bundles must be a non-empty list of resource dictionaries. {example} "
            "Got empty list instead."
        )
    clean: List[Dict[str, float]] = []
    for b in bundles:
        if not isinstance(b, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in b.items()
        ):
            raise ValueError(
                f"Bundles must be a non-empty list of resource dictionaries. {example}"
            )
        if BUNDLE_RESOURCE_LABEL in b:
            raise ValueError(
                f"{BUNDLE_RESOURCE_LABEL} is a system reserved resource, which is not "
                "allowed to be used."
            )
        for k, v in b.items():
            if v < 0:
                raise ValueError(f"Bundle resource amounts must be >= 0, got {k}={v!r} in {b}.")
        if not b or all(v == 0 for v in b.values()):
            raise ValueError(
                f"Bundles cannot be an empty dictionary or resources with only 0 values. "
                f"Bundles: {bundles}"
            )
        if "object_store_memory" in b:
            warnings.warn(
                "Setting 'object_store_memory' for bundles is deprecated since it doesn't "
                "actually reserve the required object store memory. Objects spill to disk "
                "when the store is full, which bypasses the store's size limit.",
                DeprecationWarning, stacklevel=3,
            )
        clean.append({k: float(v) for k, v in b.items() if v})
    return clean


def validate_placement_group(
    bundles: List[Dict[str, float]],
    strategy: str = "PACK",
    lifetime: Optional[str] = None,
    bundle_label_selector: Any = None,
    _soft_target_node_id: Optional[str] = None,
) -> bool:
    """Ray's checks of ``placement_group``'s arguments: ValueError (with
    Ray's wording) for a bad strategy, bundle or lifetime; True otherwise."""
    if _soft_target_node_id is not None and strategy != "STRICT_PACK":
        raise ValueError(
            "_soft_target_node_id currently only works with STRICT_PACK but got " + strategy
        )
    _validate_bundles(bundles)
    if strategy not in VALID_PLACEMENT_GROUP_STRATEGIES:
        raise ValueError(
            f"Invalid placement group strategy {strategy}. Supported strategies are: "
            f"{sorted(VALID_PLACEMENT_GROUP_STRATEGIES)}."
        )
    if lifetime not in (None, "detached"):
        raise ValueError(
            "Placement group `lifetime` argument must be either `None` or "
            f"'detached'. Got {lifetime}."
        )
    return True


def placement_group(
    bundles: List[Dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: Optional[str] = None,
    _soft_target_node_id: Optional[str] = None,
    bundle_label_selector: Any = None,
) -> PlacementGroup:
    """Reserves `bundles` (resource maps) with `strategy`; returns at once.
    Use ``pg.ready()`` or ``pg.wait()`` to wait for the reservation."""
    validate_placement_group(bundles, strategy, lifetime, bundle_label_selector,
                             _soft_target_node_id)
    clean = _validate_bundles(bundles)
    core = _core()
    pg_id = core_mod.random_id()[:14]
    core.create_placement_group(
        pg_id, name or "", state.namespace, strategy, clean, lifetime == "detached",
        task_context.current_job_id(),
    )
    return PlacementGroup(pg_id, clean)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Removes the group: its bundles are released, and the tasks and actors
    still running in it are killed."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"expected a PlacementGroup, got {type(placement_group).__name__}")
    _core().remove_placement_group(placement_group._bin)


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live group named `placement_group_name` in this job's namespace."""
    groups = _core().placement_groups(b"", placement_group_name, state.namespace)
    if not groups:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    return PlacementGroup(bytes.fromhex(groups[0]["placement_group_id"]))


def _table(pg_id: bytes) -> Optional[Dict[str, Any]]:
    groups = _core().placement_groups(pg_id, "", "")
    return groups[0] if groups else None


def placement_group_table(placement_group: Optional[PlacementGroup] = None) -> Dict[str, Any]:
    """State of one group (a dict), or of all groups keyed by id (Ray's layout:
    placement_group_id, name, bundles, bundles_to_node_id, strategy, state)."""
    if placement_group is not None:
        return _table(placement_group._bin) or {}
    return {g["placement_group_id"]: g for g in _core().placement_groups(b"", "", "")}


def get_current_placement_group() -> Optional[PlacementGroup]:
    """The group the current task or actor runs in, or None (and None in a driver)."""
    ctx = task_context.current()
    if ctx is None:
        return None
    for item in ctx.resources.split(";"):
        name = item.split("=", 1)[0]
        if name.startswith("bundle_group_"):
            return PlacementGroup(bytes.fromhex(name.rsplit("_", 1)[1]))
    return None


__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
