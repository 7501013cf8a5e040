"""Placement groups are checked as Ray checks them, before anything is
reserved: bundles, strategy and lifetime (ValueError with Ray's wording), a
task or actor that could never fit any bundle of its group (ValueError at
``.remote()``), and Ray's deprecation warnings for the older options.
"""

import warnings

import pytest

import fleet
from fleet.util.placement_group import (
    VALID_PLACEMENT_GROUP_STRATEGIES,
    _validate_bundles,
    placement_group,
    remove_placement_group,
    validate_placement_group,
)
from fleet.util.scheduling_strategies import PlacementGroupSchedulingStrategy

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "bundles, match",
    [
        ("not a list", "must be a list"),
        ([], "must be a non-empty list"),
        ([{"CPU": 1}, "not a dict"], "resource dictionaries"),
        ([{8: 7}], "resource dictionaries"),
        ([{"CPU": "6"}], "resource dictionaries"),
        ([{"CPU": 0, "GPU": 0}], "only 0 values"),
        ([{}], "only 0 values"),
        ([{"bundle": 1}], "system reserved resource"),
        ([{"CPU": -1}], ">= 0"),
    ],
)
def test_bad_bundles_are_refused_with_rays_wording(bundles, match):
    with pytest.raises(ValueError, match=match):
        _validate_bundles(bundles)


def test_good_bundles_drop_zero_amounts():
    assert _validate_bundles([{"CPU": 1, "custom-resource": 2.2}, {"GPU": 0.75, "CPU": 0}]) == [
        {"CPU": 1.0, "custom-resource": 2.2},
        {"GPU": 0.75},
    ]


def test_strategy_and_lifetime_are_checked():
    assert VALID_PLACEMENT_GROUP_STRATEGIES == {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"}
    for strategy in VALID_PLACEMENT_GROUP_STRATEGIES:
        assert validate_placement_group([{"CPU": 1}], strategy=strategy)
    with pytest.raises(ValueError, match="Invalid placement group strategy"):
        validate_placement_group([{"CPU": 1}], strategy="invalid")
    with pytest.raises(ValueError, match="lifetime"):
        validate_placement_group([{"CPU": 1}], lifetime="forever")
    with pytest.raises(ValueError, match="STRICT_PACK"):
        validate_placement_group([{"CPU": 1}], strategy="PACK", _soft_target_node_id="ab")


def test_work_that_fits_no_bundle_is_refused_at_remote(fresh):
    fleet.init(num_cpus=2, resources={"a": 1})
    pg = placement_group([{"a": 1}])
    assert pg.wait(30)

    @fleet.remote
    class A:
        def ready(self):
            return "ready"

    @fleet.remote(num_cpus=1)
    def needs_a_cpu():
        return 1

    in_pg = PlacementGroupSchedulingStrategy(placement_group=pg)
    # An actor needs 1 CPU to be placed by default, and the group has none.
    with pytest.raises(ValueError, match="requires 1.0 CPU for creation"):
        A.options(scheduling_strategy=in_pg).remote()
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        A.options(num_cpus=1, scheduling_strategy=in_pg).remote()
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        needs_a_cpu.options(scheduling_strategy=in_pg).remote()
    # What fits runs.
    a = A.options(num_cpus=0, scheduling_strategy=in_pg).remote()
    assert fleet.get(a.ready.remote(), timeout=60) == "ready"
    fleet.kill(a)
    remove_placement_group(pg)


def test_deprecated_placement_group_option_warns(fresh):
    fleet.init(num_cpus=2)
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)

    @fleet.remote
    def f():
        return 1

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ref = f.options(placement_group=pg, placement_group_bundle_index=0).remote()
    assert any("placement_group parameter is deprecated" in str(x.message) for x in w)
    assert fleet.get(ref, timeout=60) == 1
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ref = f.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)
        ).remote()
    assert not [x for x in w if "deprecated" in str(x.message)]
    assert fleet.get(ref, timeout=60) == 1
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")

        @fleet.remote(object_store_memory=1)
        class Actor:
            pass

    assert any("'object_store_memory' for actors is deprecated" in str(x.message) for x in w)
    remove_placement_group(pg)
