"""The collection-plan CSV neutralises spreadsheet formulas in its text cells, as the open-data CSV does."""

from __future__ import annotations

import csv
import io

from gateway.routes.model import Depot
from gateway.routes.outputs import plan_to_csv
from gateway.routes.planner import PlanSettings, plan_collection

from routes_helpers import DAY, make_bin


def test_bin_ids_and_zones_that_look_like_formulas_are_prefixed() -> None:
    bins = [make_bin("-rf", [95, 96], zone="-A1-A1", lat=-33.9, lon=-70.6),
            make_bin("=cmd", [95, 96], zone="@SUM(A1)", lat=-33.91, lon=-70.61),
            make_bin("plain", [95, 96], zone="north", lat=-33.92, lon=-70.62)]
    depot = Depot(-33.9, -70.6)
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=depot, vehicles=1, capacity_l=5000.0, time_limit_s=0))
    rows = {r["bin_id"]: r for r in csv.DictReader(io.StringIO(plan_to_csv(plan)))}
    assert rows["'-rf"]["zone"] == "'-A1-A1"
    assert rows["'=cmd"]["zone"] == "'@SUM(A1)"
    assert rows["plain"]["zone"] == "north"
    for r in rows.values():  # numbers stay numbers (a negative coordinate is no formula)
        assert r["lat"].startswith("-33.9") and r["lon"].startswith("-70.6")
