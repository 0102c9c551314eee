"""Which vehicles are used and which bins are left when the fleet is short (QA LOW x2)."""

from __future__ import annotations

import random
from typing import Sequence

from gateway.routes.distances import Place
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.solver import DEFAULT_VEHICLE_COST_M, SolverSettings, solve

from routes_helpers import DAY, DEPOT, make_bin


class HubMatrix:
    """Depot 1 km from every bin; bins of one cluster 100 m apart, of different clusters 2.5 km (a river
    between them: not a metric, as road matrices often are not). One truck per cluster drives 4.4 km,
    one truck for both 4.9 km."""

    description = "hub test matrix"

    def matrix(self, places: Sequence[Place]) -> list[list[int]]:
        def d(a: Place, b: Place) -> int:
            if a.id == b.id:
                return 0
            if "depot" in (a.id, b.id):
                return 1000
            return 100 if a.id[0] == b.id[0] else 2500
        return [[d(a, b) for b in places] for a in places]


def test_a_second_truck_is_not_sent_to_save_500_m() -> None:
    """Before: 2 trucks for 6 bins to save 500 m. Test fails before."""
    bins = [make_bin(f"{side}{i}", [90, 90, 90]) for side in "ew" for i in range(3)]
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, vehicles=2, capacity_l=60000,
                                              time_limit_s=1, distances=HubMatrix()))
    assert len(plan.routes) == 1 and plan.stop_count == 6 and plan.total_distance_m == 4900


def test_the_vehicle_cost_is_a_setting_and_zero_keeps_the_shortest_distance() -> None:
    bins = [make_bin(f"{side}{i}", [90, 90, 90]) for side in "ew" for i in range(3)]
    settings = PlanSettings(day=DAY, depot=DEPOT, vehicles=2, capacity_l=60000, time_limit_s=0)
    from gateway.routes.selection import select_bins

    candidates, _ = select_bins(bins, settings.selection())
    places = [Place("depot", DEPOT.lat, DEPOT.lon)] + [Place(c.bin.id, c.bin.lat, c.bin.lon) for c in candidates]
    matrix = HubMatrix().matrix(places)
    two = solve(candidates, matrix, SolverSettings(vehicles=2, capacity_l=60000, time_limit_s=1, vehicle_cost_m=0))
    one = solve(candidates, matrix, SolverSettings(vehicles=2, capacity_l=60000, time_limit_s=1))
    assert sum(1 for r in two.routes if r) == 2 and sum(1 for r in one.routes if r) == 1
    assert SolverSettings().vehicle_cost_m == DEFAULT_VEHICLE_COST_M == 10_000


def test_a_short_fleet_leaves_the_bins_farthest_from_the_depot_not_the_highest_ids() -> None:
    """All bins equally full; a fleet for 30 of 40: the 10 left are the farthest from the depot (ids are
    shuffled against distance). Before, the highest ids were left (bin-0833..bin-0999). Test fails before."""
    rng = random.Random(4)
    ids = [f"bin-{i:02d}" for i in range(40)]
    rng.shuffle(ids)
    bins = [make_bin(bin_id, [90, 90, 90], lat=DEPOT.lat + 0.001 * (k + 1), lon=DEPOT.lon)
            for k, bin_id in enumerate(ids)]  # k-th id is k + 1 hundred-odd metres north of the depot
    load = 0.9 * 240
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, vehicles=3, capacity_l=10 * load + 1,
                                              time_limit_s=0))
    assert sorted(c.bin.id for c in plan.unserved) == sorted(ids[30:])
