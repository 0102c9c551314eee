"""The OR-Tools model: capacities, all due bins served, alarms first, triage, bad capacity."""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from gateway.routes.distances import GreatCircle, Place
from gateway.routes.errors import CapacityError, InvalidInputError, MatrixError, NoBinsDueError
from gateway.routes.model import Reason
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.solver import SolverSettings, solve

from routes_helpers import DAY, DEPOT, MAX_EXAMPLES, make_bin, scattered_bins


def settings(**kw: object) -> PlanSettings:
    base: dict[str, object] = {"day": DAY, "depot": DEPOT, "vehicles": 3, "capacity_l": 5000.0, "time_limit_s": 0.5}
    base.update(kw)
    return PlanSettings(**base)  # type: ignore[arg-type]


def test_every_due_bin_served_once_within_capacity() -> None:
    bins = scattered_bins(60, seed=3)
    plan = plan_collection(bins, settings())
    due = {b.id for b in bins if b.readings[-1].fill >= 0.8}
    served = [s.candidate.bin.id for r in plan.routes for s in r.stops]
    assert sorted(served) == sorted(due)  # each due bin exactly once, no other
    assert plan.unserved == ()
    for r in plan.routes:
        assert r.load_l <= 5000.0
        assert sum(math.ceil(s.candidate.load_l) for s in r.stops) <= 5000
        # distances add up: legs + return to depot
        last = r.stops[-1].candidate.bin
        back = GreatCircle().matrix([Place("x", last.lat, last.lon), Place("d", DEPOT.lat, DEPOT.lon)])[0][1]
        assert r.distance_m == r.stops[-1].cumulative_m + back
    assert plan.total_distance_m == sum(r.distance_m for r in plan.routes)
    assert plan.considered == 60


def test_capacity_splits_work_across_vehicles() -> None:
    bins = [make_bin(f"b{i}", [100, 100], lat=DEPOT.lat + 0.001 * i) for i in range(10)]  # 240 L each
    plan = plan_collection(bins, settings(vehicles=3, capacity_l=1000.0))
    assert [len(r.stops) for r in plan.routes] and all(len(r.stops) <= 4 for r in plan.routes)
    assert plan.stop_count == 10


RANK = {Reason.FIRE: 0, Reason.TIP: 1, Reason.FULL: 2, Reason.PREDICTED: 2}


def test_alarm_bins_come_first_on_their_route_fires_before_tips() -> None:
    bins = scattered_bins(80, seed=5, alarm_every=9)
    bins = [dataclasses.replace(b, alarms=frozenset({"tip"})) if b.alarms and i % 2 else b for i, b in enumerate(bins)]
    plan = plan_collection(bins, settings(vehicles=3, capacity_l=8000.0, time_limit_s=1.0))
    alarm_ids = {b.id for b in bins if b.alarms}
    served_alarms = set()
    for r in plan.routes:
        ranks = [RANK[s.candidate.reason] for s in r.stops]
        assert ranks == sorted(ranks), f"route {r.vehicle}: {ranks}"
        served_alarms |= {s.candidate.bin.id for s in r.stops if s.candidate.is_alarm}
    assert served_alarms == alarm_ids
    assert {s.candidate.reason for r in plan.routes for s in r.stops if s.candidate.is_alarm} == {Reason.FIRE, Reason.TIP}


def test_fleet_too_small_leaves_least_urgent_bins_unserved() -> None:
    bins = [make_bin(f"full{i}", [100, 100], lat=DEPOT.lat + 0.002 * i) for i in range(6)]
    bins += [make_bin(f"pred{i}", [50, 60, 70, 80 if i == 0 else 70], lon=DEPOT.lon + 0.002 * i, step_s=3600 * 3)
             for i in range(4)]
    bins += [make_bin("fire", [5, 5], lat=DEPOT.lat - 0.01, alarms=["fire"])]
    plan = plan_collection(bins, settings(vehicles=1, capacity_l=1000.0))
    served = {s.candidate.bin.id for r in plan.routes for s in r.stops}
    assert "fire" in served
    assert plan.unserved and all(Reason.FULL in c.reasons or c.reason is Reason.PREDICTED for c in plan.unserved)
    assert sum(s.candidate.load_l for r in plan.routes for s in r.stops) <= 1000.0
    # the most urgent are served first: no full bin left while a merely predicted one is served
    served_pred = [i for i in served if i.startswith("pred") and i != "pred0"]
    unserved_full = [c.bin.id for c in plan.unserved if Reason.FULL in c.reasons]
    assert not (served_pred and unserved_full)
    assert any("do not fit" in w for w in plan.warnings)


def test_capacity_smaller_than_one_bin() -> None:
    bins = [make_bin("small", [90, 90], volume_l=100.0), make_bin("big", [90, 90], volume_l=3000.0)]
    with pytest.raises(CapacityError) as info:
        plan_collection(bins, settings(capacity_l=1000.0))
    assert info.value.bin_id == "big"
    assert info.value.capacity_l == 1000.0
    assert info.value.load_l == pytest.approx(2700.0)
    assert info.value.exit_code == 4


def test_no_bins_due() -> None:
    with pytest.raises(NoBinsDueError) as info:
        plan_collection([make_bin("a", [10, 10]), make_bin("b", [20, 20])], settings())
    assert info.value.considered == 2 and info.value.exit_code == 3
    assert "no bins due" in str(info.value)


def test_first_solution_is_deterministic_without_local_search() -> None:
    bins = scattered_bins(40, seed=11)
    a = plan_collection(bins, settings(time_limit_s=0))
    b = plan_collection(list(reversed(bins)), settings(time_limit_s=0))
    a_routes = sorted(tuple(s.candidate.bin.id for s in r.stops) for r in a.routes)
    b_routes = sorted(tuple(s.candidate.bin.id for s in r.stops) for r in b.routes)
    assert a.total_distance_m == b.total_distance_m
    assert a_routes == b_routes


def test_local_search_does_not_make_it_worse() -> None:
    bins = scattered_bins(80, seed=2)
    first = plan_collection(bins, settings(time_limit_s=0))
    improved = plan_collection(bins, settings(time_limit_s=1.0))
    assert improved.total_distance_m <= first.total_distance_m


@pytest.mark.parametrize("kw", [{"vehicles": 0}, {"vehicles": 1.5}, {"capacity_l": 0.0},
                                {"capacity_l": float("inf")}, {"time_limit_s": -1.0},
                                {"vehicles": 201}, {"capacity_l": 1e308}, {"capacity_l": float("nan")},
                                {"time_limit_s": 1e10}])
def test_bad_solver_settings(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        SolverSettings(**kw)  # type: ignore[arg-type]


def test_largest_allowed_fleet_and_time_limit_accepted() -> None:
    assert SolverSettings(vehicles=200, capacity_l=1_000_000.0, time_limit_s=300.0).vehicles == 200


@pytest.mark.parametrize(("kw", "field"), [
    ({"day": date(9999, 12, 31)}, "date"),
    ({"day": date(1, 1, 1)}, "date"),
    ({"days_to_next_round": 100_000_000}, "days to next round"),
    ({"vehicles": 100_000}, "vehicles"),
    ({"capacity_l": 1e308}, "capacity"),
    ({"bin_volume_l": 1e308}, "bin volume"),
])
def test_out_of_range_plan_settings_refused_when_made(kw: dict[str, object], field: str) -> None:
    """Refused as invalid input up front, not an OverflowError (or 23 GB) while planning."""
    with pytest.raises(InvalidInputError) as info:
        settings(**kw)
    assert info.value.field == field


def test_matrix_shape_checked() -> None:
    with pytest.raises(MatrixError, match=r"must be 1x1 \(depot \+ bins\)"):
        solve([], [[0, 1], [1, 0]], SolverSettings())


@hsettings(max_examples=MAX_EXAMPLES, deadline=None)
@given(
    levels=st.lists(st.tuples(st.integers(0, 10), st.sampled_from(["", "", "", "fire", "tip"]),
                              st.floats(-0.05, 0.05), st.floats(-0.05, 0.05), st.sampled_from([120.0, 240.0, 1100.0])),
                    min_size=1, max_size=25),
    vehicles=st.integers(1, 4),
    capacity=st.sampled_from([1100.0, 1500.0, 3000.0, 20000.0]),
)
def test_plan_invariants(levels: list[tuple[int, str, float, float, float]], vehicles: int, capacity: float) -> None:
    bins = [make_bin(f"b{i}", [10 * lvl] * 2, alarms=[alarm] if alarm else [], lat=DEPOT.lat + dlat,
                     lon=DEPOT.lon + dlon, volume_l=vol)
            for i, (lvl, alarm, dlat, dlon, vol) in enumerate(levels)]
    try:
        plan = plan_collection(bins, settings(vehicles=vehicles, capacity_l=capacity, time_limit_s=0))
    except NoBinsDueError:
        assert all(lvl < 8 and not alarm for lvl, alarm, *_ in levels)
        return
    due = {f"b{i}" for i, (lvl, alarm, *_) in enumerate(levels) if lvl >= 8 or alarm}
    served = [s.candidate.bin.id for r in plan.routes for s in r.stops]
    unserved = [c.bin.id for c in plan.unserved]
    assert len(served) == len(set(served))
    assert set(served) | set(unserved) == due and not set(served) & set(unserved)
    for r in plan.routes:
        assert sum(math.ceil(s.candidate.load_l - 1e-9) for s in r.stops) <= capacity
        ranks = [RANK[s.candidate.reason] for s in r.stops]
        assert ranks == sorted(ranks)
    # an alarm bin is only left unserved when no vehicle has room left for it
    free = [capacity - sum(math.ceil(s.candidate.load_l - 1e-9) for s in r.stops) for r in plan.routes]
    free += [capacity] * (vehicles - len(plan.routes))
    for c in plan.unserved:
        if c.is_alarm:
            assert all(math.ceil(c.load_l - 1e-9) > room for room in free), c.bin.id


def test_bin_named_depot_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        plan_collection([make_bin("depot", [90, 90])], settings())
    assert "reserved for the depot" in str(info.value)
