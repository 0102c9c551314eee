"""QA of the collection plan as a waste-operations manager reads it: far bins, quiet sensors, tipped bins."""

from __future__ import annotations

from gateway.routes.planner import PlanSettings, plan_collection

from routes_helpers import DAY, DEPOT, make_bin


def settings(**kw: object) -> PlanSettings:
    base: dict[str, object] = {"day": DAY, "depot": DEPOT, "vehicles": 1, "capacity_l": 5000.0, "time_limit_s": 0}
    base.update(kw)
    return PlanSettings(**base)  # type: ignore[arg-type]


def test_a_bin_registered_thousands_of_km_away_is_skipped_and_named_not_routed() -> None:
    """A location typo (25.365 for 52.365) made a 3 001 km leg in a plan that said nothing."""
    bins = [make_bin("b-near", [90, 90], lat=52.375), make_bin("b-typo", [90, 90], lat=25.365, lon=4.88)]
    plan = plan_collection(bins, settings())
    assert [s.candidate.bin.id for r in plan.routes for s in r.stops] == ["b-near"]
    assert plan.total_distance_m < 10_000
    (skipped_id, why), = plan.skipped
    assert skipped_id == "b-typo" and "3,003 km from the depot" in why
    assert "civicedge gateway devices move b-typo --location LAT,LON" in why
    far = [w for w in plan.warnings if "b-typo" in w]
    assert len(far) == 1 and "3,003 km" in far[0] and "devices move b-typo" in far[0]


def test_when_every_due_bin_is_far_the_depot_is_the_suspect_and_no_bin_is_skipped() -> None:
    bins = [make_bin("b-1", [90, 90], lat=52.375), make_bin("b-2", [90, 90], lat=52.38)]
    plan = plan_collection(bins, settings(depot=type(DEPOT)(4.89, 52.37)))
    assert plan.stop_count == 2 and plan.skipped == ()
    assert any("look swapped" in w for w in plan.warnings)
