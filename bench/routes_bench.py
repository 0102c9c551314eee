"""Collection routes: planning from bin reports vs. emptying every bin on a fixed round.

A seeded city of bins (clustered in zones around a depot, fill rates from quiet side streets
to market squares, 240 L and 1100 L bins, rare fire and tip-over alarms) is simulated day by
day. Each bin's sensor reports its fill every 15 minutes in 10 % steps, as the firmware does.

* planned: every morning ``plan_collection`` picks the due bins (full, predicted full before the
  next round, alarms) and OR-Tools routes them;
* fixed round (the floor, measured in the same run): every bin is emptied every morning, routed
  by the same solver with the same fleet and time limit, so the difference is the selection.

Printed per day and in total: stops, distance, overflows (bins that reached 100 % before their
next collection), solver time; and the ratios planned / fixed.

    .venv/bin/python bench/routes_bench.py            # 1000 bins, 7 days
    .venv/bin/python bench/routes_bench.py --short    # CI: 500 bins, 2 days, seconds
    .venv/bin/python bench/routes_bench.py --bins 4000 --days 1 --time-limit 0   # a big city's peak RSS
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from gateway.routes import BinStatus, Depot, FillReading, NoBinsDueError, PlanSettings, plan_collection
from gateway.routes.distances import GreatCircle

WINDOW_S = 900
DEPOT = Depot(52.3700, 4.8900)


@dataclass
class SimBin:
    """One bin of the simulated city with its true (continuous) fill."""

    id: str
    zone: str
    lat: float
    lon: float
    volume_l: float
    rate_per_day: float
    fill: float
    readings: list[FillReading] = field(default_factory=list)


def make_city(n: int, seed: int) -> list[SimBin]:
    """``n`` bins in 12 zones within ~6 km of the depot; a few busy zones fill fast."""
    rng = random.Random(seed)
    zones = []
    for z in range(12):
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.01, 0.05)
        busy = rng.random() < 0.25
        zones.append((f"zone-{z:02d}", DEPOT.lat + dist * math.sin(angle), DEPOT.lon + 1.6 * dist * math.cos(angle),
                      busy))
    bins = []
    for i in range(n):
        name, zlat, zlon, busy = zones[rng.randrange(len(zones))]
        rate = rng.lognormvariate(math.log(0.45 if busy else 0.18), 0.5)
        bins.append(SimBin(
            id=f"bin-{i:04d}", zone=name, lat=zlat + rng.gauss(0, 0.004), lon=zlon + rng.gauss(0, 0.006),
            volume_l=1100.0 if rng.random() < 0.15 else 240.0, rate_per_day=min(rate, 1.5),
            fill=rng.uniform(0.0, 0.7),
        ))
    return bins


def advance(bins: list[SimBin], start: int, rng: random.Random, *, record: bool) -> int:
    """Let a day pass from ``start``; returns the number of bins that reached 100 % (overflows)."""
    overflows = 0
    for b in bins:
        day_rate = b.rate_per_day * rng.uniform(0.6, 1.4)
        full_before = b.fill >= 1.0
        for k in range(1, 86400 // WINDOW_S + 1):
            b.fill = min(1.0, b.fill + day_rate * WINDOW_S / 86400)
            if record:
                # the device reports the window's level quantised to 10 % (policy quantum)
                b.readings.append(FillReading(start + k * WINDOW_S, min(100, 10 * round(b.fill * 10)) / 100))
        if b.fill >= 1.0 and not full_before:
            overflows += 1
        if record:
            del b.readings[:-2 * 86400 // WINDOW_S]  # the gateway source reads about two days back
    return overflows


def statuses(bins: list[SimBin], alarms: dict[str, str]) -> list[BinStatus]:
    """What the gateway knows: reported fills and alarms (no true fill, no people signal)."""
    return [BinStatus(b.id, b.zone, b.lat, b.lon, tuple(b.readings),
                      frozenset({alarms[b.id]}) if b.id in alarms else frozenset(), b.volume_l) for b in bins]


@dataclass
class Tally:
    """Totals of one strategy over the simulated days."""

    stops: int = 0
    distance_m: int = 0
    overflows: int = 0
    unserved: int = 0
    solver_s: list[float] = field(default_factory=list)


def run(n_bins: int, days: int, seed: int, vehicles: int, capacity_l: float, time_limit_s: float) -> int:
    """Simulate and print the comparison; return 0 if planning beats the fixed round on distance."""
    rng = random.Random(seed + 1)
    smart_city = make_city(n_bins, seed)
    fixed_city = make_city(n_bins, seed)
    first_day = date(2026, 11, 23)
    start0 = int(datetime.combine(first_day, datetime.min.time(), tzinfo=timezone.utc).timestamp()) + 6 * 3600
    # two days of history before the first round, identical for both strategies
    for city in (smart_city, fixed_city):
        warm = random.Random(seed + 2)
        advance(city, start0 - 2 * 86400, warm, record=True)
        advance(city, start0 - 86400, warm, record=True)
    smart, fixed = Tally(), Tally()
    print(f"city: {n_bins} bins, {days} days, fleet {vehicles} x {capacity_l:g} L, solver limit {time_limit_s:g} s, "
          f"seed {seed}")
    print(f"{'day':<12}{'planned stops':>14}{'km':>9}{'solver s':>10}   {'fixed stops':>12}{'km':>9}{'solver s':>10}")
    for d in range(days):
        day = first_day + timedelta(days=d)
        start = start0 + d * 86400
        alarms = {b.id: rng.choice(("fire", "tip")) for b in smart_city if rng.random() < 0.002}
        settings = PlanSettings(day=day, depot=DEPOT, vehicles=vehicles, capacity_l=capacity_l,
                                time_limit_s=time_limit_s, distances=GreatCircle())
        try:
            plan = plan_collection(statuses(smart_city, alarms), settings)
            served = {s.candidate.bin.id for r in plan.routes for s in r.stops}
            smart.stops += plan.stop_count
            smart.distance_m += plan.total_distance_m
            smart.unserved += len(plan.unserved)
            smart.solver_s.append(plan.solver_s)
            p_row = (plan.stop_count, plan.total_distance_m, plan.solver_s)
        except NoBinsDueError:
            served, p_row = set(), (0, 0, 0.0)
        # fixed round: every bin is due (threshold just above empty), same fleet and solver
        fixed_settings = PlanSettings(day=day, depot=DEPOT, vehicles=vehicles, capacity_l=capacity_l,
                                      time_limit_s=time_limit_s, threshold=1e-6)
        fixed_status = [BinStatus(b.id, b.zone, b.lat, b.lon, (FillReading(start, max(b.fill, 1e-3)),),
                                  frozenset(), b.volume_l) for b in fixed_city]
        fplan = plan_collection(fixed_status, fixed_settings)
        fserved = {s.candidate.bin.id for r in fplan.routes for s in r.stops}
        fixed.stops += fplan.stop_count
        fixed.distance_m += fplan.total_distance_m
        fixed.unserved += len(fplan.unserved)
        fixed.solver_s.append(fplan.solver_s)
        for city, emptied in ((smart_city, served), (fixed_city, fserved)):
            for b in city:
                if b.id in emptied:
                    b.fill = 0.0
                    b.readings.append(FillReading(start + WINDOW_S, 0.0))
        smart.overflows += advance(smart_city, start, random.Random(seed * 1000 + d), record=True)
        fixed.overflows += advance(fixed_city, start, random.Random(seed * 1000 + d), record=False)
        print(f"{day.isoformat():<12}{p_row[0]:>14}{p_row[1] / 1000:>9.1f}{p_row[2]:>10.2f}   "
              f"{fplan.stop_count:>12}{fplan.total_distance_m / 1000:>9.1f}{fplan.solver_s:>10.2f}")
    print()
    print(f"{'total':<12}{smart.stops:>14}{smart.distance_m / 1000:>9.1f}{sum(smart.solver_s):>10.2f}   "
          f"{fixed.stops:>12}{fixed.distance_m / 1000:>9.1f}{sum(fixed.solver_s):>10.2f}")
    print(f"overflows (bins reaching 100 % before collection): planned {smart.overflows}, fixed {fixed.overflows}")
    print(f"unserved for lack of capacity: planned {smart.unserved}, fixed {fixed.unserved}")
    stop_ratio = smart.stops / fixed.stops if fixed.stops else float("nan")
    dist_ratio = smart.distance_m / fixed.distance_m if fixed.distance_m else float("nan")
    print(f"stops saved: {fixed.stops - smart.stops} ({1 - stop_ratio:.0%}); planned/fixed stops ratio {stop_ratio:.2f}")
    print(f"distance saved: {(fixed.distance_m - smart.distance_m) / 1000:.1f} km ({1 - dist_ratio:.0%}); "
          f"planned/fixed distance ratio {dist_ratio:.2f}")
    print(f"solver time per plan: planned max {max(smart.solver_s, default=0):.2f} s, "
          f"fixed round max {max(fixed.solver_s):.2f} s")
    return 0 if dist_ratio < 1.0 else 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--short", action="store_true", help="CI mode: 500 bins, 2 days, 1 s solver limit")
    ap.add_argument("--bins", type=int, help="number of bins (>= 500 for the issue's city; default 1000)")
    ap.add_argument("--days", type=int, help="days to simulate (default 7)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--vehicles", type=int, help="fleet size (default: one vehicle per 125 bins)")
    ap.add_argument("--capacity", type=float, default=60000.0,
                    help="litres of bin contents per vehicle (before compaction; default 60000)")
    ap.add_argument("--time-limit", type=float, help="solver seconds per plan (default 10, short 1)")
    args = ap.parse_args(argv)
    n_bins = args.bins or (500 if args.short else 1000)
    days = args.days or (2 if args.short else 7)
    limit = args.time_limit if args.time_limit is not None else (1.0 if args.short else 10.0)
    if n_bins < 1 or days < 1:
        ap.error("--bins and --days must be >= 1")
    started = time.perf_counter()
    vehicles = args.vehicles or max(1, math.ceil(n_bins / 125))
    code = run(n_bins, days, args.seed, vehicles, args.capacity, limit)
    print(f"wall time {time.perf_counter() - started:.1f} s")
    # planning runs in this process: its peak is the planner's (ru_maxrss is in KiB on Linux)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")
    return code


if __name__ == "__main__":
    sys.exit(main())
