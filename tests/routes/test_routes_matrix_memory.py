"""The planner holds its distance matrix as an int32 array, not a list of Python ints (a 4,000-bin plan's
worker peaked at ~2 GB, ~600 MB of it that list through the whole search), and gives OR-Tools a list
whose cells share one int object per distance. Plans stay the same."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from gateway.routes.distances import (
    MAX_GREAT_CIRCLE_M,
    CsvMatrix,
    GreatCircle,
    Place,
    build_matrix,
    checked_array,
    matrix_array,
)
from gateway.routes.errors import MatrixError
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.selection import SelectionSettings, select_bins
from gateway.routes.solver import SolverSettings, _rows, solve

from routes_helpers import DAY, DEPOT, ROUND_START, make_bin, scattered_bins


def _places(n: int, seed: int = 3) -> list[Place]:
    rng = random.Random(seed)
    return [Place("depot", DEPOT.lat, DEPOT.lon)] + [
        Place(f"p{i}", DEPOT.lat + rng.uniform(-0.05, 0.05), DEPOT.lon + rng.uniform(-0.08, 0.08)) for i in range(n)]


def test_the_great_circle_array_holds_the_same_distances_as_the_list() -> None:
    places = _places(300)
    array, source, warnings = matrix_array(GreatCircle(), places)
    rows, _, _ = build_matrix(GreatCircle(), places)
    assert array.dtype == np.int32 and array.shape == (301, 301)
    assert array.tolist() == rows and source == "great-circle" and warnings == []


def test_another_providers_list_becomes_the_same_array() -> None:
    class Doubled(GreatCircle):  # a subclass overriding matrix(): its own values, not the built-in ones
        def matrix(self, places: Sequence[Place]) -> list[list[int]]:
            return [[2 * v for v in row] for row in super().matrix(places)]

    places = _places(20)
    array, _, _ = matrix_array(Doubled(), places)
    assert array.tolist() == [[2 * v for v in row] for row in GreatCircle().matrix(places)]


def test_a_csv_matrix_as_an_array(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("from,depot,b1\ndepot,0,12\nb1,21,0\n")
    array, source, _ = matrix_array(CsvMatrix(path), [Place("depot", 52.37, 4.89), Place("b1", 52.38, 4.89)])
    assert array.tolist() == [[0, 12], [21, 0]] and array.dtype == np.int32 and "m.csv" in source


def test_an_integer_array_is_checked_whole_with_the_lists_message() -> None:
    good = np.array([[0, 5], [7, 0]], dtype=np.int64)
    assert checked_array(good, "test", 2).tolist() == [[0, 5], [7, 0]]
    for bad_value in (-1, MAX_GREAT_CIRCLE_M + 1):
        bad = np.array([[0, 5], [bad_value, 0]], dtype=np.int64)
        with pytest.raises(MatrixError, match=rf"distance \[1\]\[0\] = {bad_value} is not whole metres from 0 to "
                                              rf"{MAX_GREAT_CIRCLE_M}"):
            checked_array(bad, "test", 2)
    with pytest.raises(MatrixError, match="must be 3x3"):
        checked_array(good, "test", 3)
    with pytest.raises(MatrixError, match=r"distance \[0\]\[1\] = 5.5 is not whole metres"):
        checked_array(np.array([[0, 5.5], [7, 0]]), "test", 2)
    with pytest.raises(MatrixError, match=r"distance \[0\]\[0\] = False is not whole metres"):
        checked_array(np.array([[False, True], [True, False]]), "test", 2)


def test_the_rows_for_ortools_share_one_int_per_distance() -> None:
    array, _, _ = matrix_array(GreatCircle(), _places(200))
    rows = _rows(array)
    assert rows == array.tolist() and all(type(v) is int for v in rows[7])
    value = rows[3][4]
    assert all(v is value for row in rows for v in row if v == value)  # one object, not one per cell
    far = np.array([[0, MAX_GREAT_CIRCLE_M], [MAX_GREAT_CIRCLE_M, 0]], dtype=np.int32)
    assert _rows(far) == far.tolist()  # more possible values than cells: plain tolist()
    assert _rows(np.zeros((0, 0), dtype=np.int32)) == []


def test_the_solver_gives_the_same_routes_for_an_array_and_for_lists() -> None:
    bins = scattered_bins(120, seed=9, full_share=0.8, alarm_every=17)
    sel = SelectionSettings(round_start=ROUND_START, next_round=ROUND_START.replace(day=24))
    cands, _ = select_bins(bins, sel)
    places = [Place("depot", DEPOT.lat, DEPOT.lon)] + [Place(c.bin.id, c.bin.lat, c.bin.lon) for c in cands]
    rows = GreatCircle().matrix(places)
    # a small fleet: some bins are triaged out, so the solver works on a sub-matrix
    fleet = SolverSettings(vehicles=2, capacity_l=8_000, time_limit_s=0)
    from_rows = solve(cands, rows, fleet)
    from_array = solve(cands, np.array(rows, dtype=np.int32), fleet)
    assert from_array.dropped and from_array.routes == from_rows.routes and from_array.dropped == from_rows.dropped


def test_a_plans_legs_are_python_ints_from_the_array() -> None:
    rng = random.Random(4)
    bins = [make_bin(f"b{i}", [95] * 3, lat=DEPOT.lat + rng.uniform(-0.02, 0.02), lon=DEPOT.lon + rng.uniform(-0.03, 0.03))
            for i in range(40)]
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, vehicles=2, time_limit_s=0))
    legs = [s.leg_m for r in plan.routes for s in r.stops] + [r.distance_m for r in plan.routes]
    assert legs and all(type(v) is int for v in legs)  # numpy scalars would not serialise to JSON
    assert plan.total_distance_m == sum(r.distance_m for r in plan.routes) > 0
