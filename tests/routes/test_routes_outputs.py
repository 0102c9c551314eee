"""Plan renderings: JSON, CSV for crews, GeoJSON for maps."""

from __future__ import annotations

import csv
import io
import json

import pytest

from gateway.routes.errors import InvalidInputError
from gateway.routes.model import Plan
from gateway.routes.outputs import CSV_COLUMNS, plan_to_csv, plan_to_dict, plan_to_geojson, render
from gateway.routes.planner import PlanSettings, plan_collection

from routes_helpers import DAY, DEPOT, make_bin, scattered_bins


@pytest.fixture(scope="module")
def plan() -> Plan:
    bins = scattered_bins(30, seed=8, alarm_every=10)
    bins.append(make_bin("huge", [100, 100], volume_l=4000.0, lat=DEPOT.lat + 0.01))
    return plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, vehicles=2, capacity_l=5000.0, time_limit_s=0))


def test_json_has_routes_with_ordered_stops(plan: Plan) -> None:
    doc = json.loads(render(plan, "json"))
    assert doc["date"] == "2026-11-23" and doc["round_start"] == "2026-11-23T06:00:00+00:00"
    assert doc["distance_source"] == "great-circle"
    assert doc["total_distance_m"] == sum(r["distance_m"] for r in doc["routes"]) > 0
    assert doc["stops"] == sum(len(r["stops"]) for r in doc["routes"])
    for r in doc["routes"]:
        assert [s["seq"] for s in r["stops"]] == list(range(1, len(r["stops"]) + 1))
        cumulative = 0
        for s in r["stops"]:
            cumulative += s["leg_m"]
            assert s["cumulative_m"] == cumulative
            assert set(s) >= {"bin_id", "zone", "expected_fill", "reason", "load_l", "lat", "lon"}
            assert 0.0 <= s["expected_fill"] <= 1.0
            assert s["reason"] in ("fire", "tip", "full", "predicted")
    assert doc["unserved"] == plan_to_dict(plan)["unserved"]


def test_csv_one_row_per_stop(plan: Plan) -> None:
    every = list(csv.DictReader(io.StringIO(plan_to_csv(plan))))
    assert tuple(every[0].keys()) == CSV_COLUMNS
    rows = [r for r in every if r["kind"] == "stop"]  # besides: each route's depot start and return rows
    assert len(rows) == plan.stop_count
    first = plan.routes[0].stops[0]
    assert rows[0]["vehicle"] == "1" and rows[0]["stop"] == "1"
    assert rows[0]["bin_id"] == first.candidate.bin.id
    assert rows[0]["expected_fill_pct"] == str(round(first.candidate.expected_fill * 100))
    assert rows[0]["route_distance_m"] == str(plan.routes[0].distance_m)
    assert {r["reason"].split("+")[0] for r in rows} <= {"fire", "tip", "full", "predicted"}


def test_geojson_lines_and_points(plan: Plan) -> None:
    fc = json.loads(render(plan, "geojson"))
    assert fc == plan_to_geojson(plan)
    assert fc["type"] == "FeatureCollection"
    kinds = [f["properties"]["kind"] for f in fc["features"]]
    assert kinds.count("depot") == 1
    assert kinds.count("route") == len(plan.routes)
    assert kinds.count("stop") == plan.stop_count
    assert kinds.count("unserved") == len(plan.unserved)
    depot = [round(DEPOT.lon, 6), round(DEPOT.lat, 6)]
    for f in fc["features"]:
        if f["properties"]["kind"] == "route":
            line = f["geometry"]["coordinates"]
            assert f["geometry"]["type"] == "LineString"
            assert line[0] == depot and line[-1] == depot  # lon, lat order (RFC 7946)
            assert len(line) == f["properties"]["stops"] + 2
        elif f["properties"]["kind"] == "stop":
            lon, lat = f["geometry"]["coordinates"]
            assert -180 <= lon <= 180 and 52 < lat < 53
            assert {"bin_id", "zone", "expected_fill", "reason", "seq", "vehicle"} <= set(f["properties"])


def test_unknown_format(plan: Plan) -> None:
    with pytest.raises(InvalidInputError) as info:
        render(plan, "xml")
    assert info.value.field == "format"


@pytest.mark.parametrize(("start", "zone"), [
    ("2026-10-25T02:30:00+02:00", "Europe/Amsterdam"),  # clocks go back at 03:00 CEST during the round
    ("2027-03-28T01:30:00+01:00", "Europe/Amsterdam"),  # clocks go forward at 02:00 CET during the round
    ("2026-10-04T01:00:00+10:30", "Australia/Lord_Howe"),  # a half-hour DST step
])
def test_times_across_a_dst_change_are_the_start_plus_the_real_time_elapsed(plan: Plan, start: str, zone: str) -> None:
    """DST QA: an aware datetime plus a timedelta is clock-face arithmetic in Python, so every eta and end after
    a DST change during the round was an hour (Lord Howe: 30 min) off, and duration_min agreed with the wrong
    end. Test fails before."""
    from dataclasses import replace
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from gateway.routes.outputs import Timing

    begin = datetime.fromisoformat(start).astimezone(ZoneInfo(zone))
    shifted = replace(plan, start=begin)
    timing = Timing()
    doc = plan_to_dict(shifted, timing)
    for r, route in zip(plan.routes, doc["routes"]):
        real = timing.after(begin.astimezone(timezone.utc), r.distance_m, len(r.stops))  # in UTC: no DST
        end = datetime.fromisoformat(route["end"])
        assert 0 <= (real - end).total_seconds() < 60, (route["end"], real)  # printed to the minute
        assert end.utcoffset() == real.astimezone(ZoneInfo(zone)).utcoffset(), (route["end"], real)
        assert route["duration_min"] == round((real - begin).total_seconds() / 60)
        for s, stop in zip(r.stops, route["stops"]):
            eta = datetime.fromisoformat(stop["eta"])
            assert abs((eta - timing.after(begin.astimezone(timezone.utc), s.cumulative_m,
                                           stop["seq"] - 1)).total_seconds()) < 60, stop["eta"]
