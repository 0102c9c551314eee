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
