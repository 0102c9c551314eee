"""QA of the collection plan as a waste-operations manager reads it: far bins, quiet sensors, tipped bins."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from gateway.routes.outputs import plan_to_dict, plan_to_geojson, render
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.source import GatewayBinSource

from routes_helpers import DAY, DEPOT, HOUR, ROUND_START, T0, make_bin
from routes_store import CityData

P = 6 * HOUR  # a bin releases its fill every 6 hours


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


def test_a_quiet_bin_is_listed_and_every_stop_says_how_old_its_reading_is(tmp_path: Path) -> None:
    """QA: b-stalehalf, last heard 80 h before the round at 70 % rising 40 %/day, was neither a stop nor skipped."""
    city = CityData(tmp_path)
    for dev in ("b-full", "b-stale", "b-stalehalf"):
        city.add_device(dev, lat="52.375")
    city.fill_releases("b-full", T0 - 5 * P, [50, 60, 70, 80, 90])
    city.fill_releases("b-stale", T0 - 84 * HOUR - 2 * P, [80, 90])
    city.fill_releases("b-stalehalf", T0 - 80 * HOUR - 2 * P, [60, 70])
    bins = GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)
    city.close()
    plan = plan_collection(bins, settings())
    assert plan.skipped == (("b-stalehalf", "no fill reading for 80 h before the round start (last 70 % at "
                                            "2026-11-19T22:00+00:00): too old to predict its fill; check the sensor, "
                                            "or look at the bin"),)
    doc = plan_to_dict(plan)
    stops = {s["bin_id"]: s for s in doc["routes"][0]["stops"]}
    assert set(stops) == {"b-full", "b-stale"}
    assert stops["b-stale"]["reading_at"] == "2026-11-19T18:00+00:00" and stops["b-stale"]["reading_age_h"] == 84.0
    assert stops["b-full"]["reading_age_h"] == 0.0
    rows = {r["bin_id"]: r for r in csv.DictReader(io.StringIO(render(plan, "csv")))}
    assert rows["b-stale"]["reading_at"] == "2026-11-19T18:00+00:00" and rows["b-stale"]["reading_age_h"] == "84.0"
    geo = plan_to_geojson(plan)
    props = [f["properties"] for f in geo["features"] if f["properties"]["kind"] == "stop"]
    assert {p["bin_id"]: p["reading_age_h"] for p in props} == {"b-full": 0.0, "b-stale": 84.0}


def test_a_bin_still_on_its_side_stays_a_tip_stop_after_the_alarm_window(tmp_path: Path) -> None:
    """QA: the tip alarm is sent once; a bin still reporting tilt=1 dropped out 24 h after it."""
    city = CityData(tmp_path)
    city.add_device("b-down")
    city.add_device("b-up")
    for dev in ("b-down", "b-up"):
        city.alarm(dev, T0 - 30 * HOUR, "tip")
        city.windows(dev, T0 - 30 * HOUR, [20] * 4, tilt=1)
    city.windows("b-down", T0 - 2 * HOUR, [20] * 4, tilt=1)  # still down in the latest windows
    city.windows("b-up", T0 - 2 * HOUR, [20] * 4, tilt=0)  # set upright (the alarm is over a day old anyway)
    bins = {b.id: b for b in GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)}
    city.close()
    assert bins["b-down"].alarms == frozenset({"tip"}) and bins["b-up"].alarms == frozenset()
    plan = plan_collection(list(bins.values()), settings())
    assert [(s.candidate.bin.id, s.candidate.reason.value) for r in plan.routes for s in r.stops] == [("b-down", "tip")]


def test_a_bin_expected_full_by_the_round_is_full_not_predicted() -> None:
    """QA: 70 % six hours before the round, rising 40 %/6 h, was 'predicted' and ranked below an 80 % bin."""
    from gateway.routes.selection import select_bins

    rising = make_bin("b-rising", [30, 70], step_s=6 * HOUR)
    rising = type(rising)(rising.id, rising.zone, rising.lat, rising.lon,
                          tuple(type(r)(r.t - 6 * HOUR, r.fill) for r in rising.readings))
    cands, _ = select_bins([rising, make_bin("b-80", [80, 80])], settings().selection())
    by_id = {c.bin.id: c for c in cands}
    assert by_id["b-rising"].fill_now == 0.7 and by_id["b-rising"].expected_fill == 1.0
    assert by_id["b-rising"].reason.value == "full"
    assert [c.bin.id for c in cands] == ["b-rising", "b-80"]  # fuller first among the full
