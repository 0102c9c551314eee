"""Capacitated vehicle routing with OR-Tools: which vehicle empties which bins, in which order.

Node 0 is the depot, node i (1..n) the i-th candidate. The model:

* capacity dimension: each bin's expected load in whole litres, each vehicle ``capacity_l``;
* every bin is a disjunction with a drop penalty far above any route length, so bins are only
  dropped when the fleet cannot carry them all (they are reported as unserved); alarms carry a
  penalty 100x higher, full bins 2x the predicted ones;
* alarm bins come first on their route, fires before tip-overs: arcs from a non-alarm bin to an
  alarm bin, and from a tip-over bin to a fire bin, are removed from the model. (A soft cost on
  the distance driven before each alarm, to also spread alarms over vehicles, was tried and
  dropped: it made the first solution ~10x slower on 700 bins.);
* when the total load exceeds the fleet, the least urgent bins are set aside before solving
  (:func:`triage`), so what is left unserved is chosen by urgency, not by the search;
* first solution by the savings heuristic (deterministic; it keeps the alarm chains feasible,
  where path-cheapest-arc strands them), improved by guided local search until the time limit.
  Should a first solution still leave out an alarm bin, the search is redone once from a
  parallel cheapest insertion.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

from gateway.routes.distances import MAX_GREAT_CIRCLE_M, checked_array
from gateway.routes.errors import CapacityError, InvalidInputError, MatrixError, RoutesError, SolverError
from gateway.routes.model import Candidate, Reason
from gateway.routes.parsing import MAX_CAPACITY_L, MAX_TIME_LIMIT_S, MAX_VEHICLES

logger = logging.getLogger(__name__)

#: Ceiling of any sum the solver forms (objective: route lengths plus drop penalties; cumul
#: variables), a quarter of the 64-bit range so OR-Tools' own intermediate sums keep headroom.
MAX_SOLVER_SUM = (2**63 - 1) // 4
#: Drop penalty of an alarm bin relative to the base penalty (full bins 2x, predicted 1x).
ALARM_PENALTY_FACTOR = 100
#: Default fixed cost of a vehicle used, in metres: a second truck must save more than 10 km of driving.
DEFAULT_VEHICLE_COST_M = 10_000
#: Largest fixed vehicle cost (1 000 km), so it stays well inside the solver's 64-bit sums.
MAX_VEHICLE_COST_M = 1_000_000
#: ``source`` of the :class:`MatrixError` the solver raises for distances it cannot take.
SOLVER_SOURCE = "given to the solver"
#: Memory the savings first-solution heuristic may use for its candidate arcs.
SAVINGS_MEMORY_BYTES = 300_000_000

#: First-solution strategies tried in turn (names of OR-Tools' ``FirstSolutionStrategy``).
_STRATEGIES = ("SAVINGS", "PARALLEL_CHEAPEST_INSERTION")
#: The package OR-Tools is installed as (named in :class:`SolverUnavailableError`).
ORTOOLS_PACKAGE = "ortools"


class SolverUnavailableError(RoutesError):
    """OR-Tools or numpy (the ``routes`` extra) cannot be imported (not installed, or no wheel for this
    platform, e.g. 32-bit ARM).

    OR-Tools is imported on the first plan, not with the gateway (~35 MB of memory and ~100 shared
    libraries a gateway that never plans has no use for), so a gateway without it still runs and
    only planning fails.

    Attributes:
        package: The missing package (``ortools``, or ``numpy``: checked first, by the distance matrix).
        problem: Why the import failed.
    """

    reason = "solver_unavailable"
    http_status = 503
    exit_code = 7

    def __init__(self, package: str, problem: str) -> None:
        super().__init__(f"route planning is unavailable: the {package} package cannot be imported ({problem}); "
                         f"install civicedge's routes extra (pip install 'civicedge[routes]') on a platform "
                         f"{package} has wheels for (64-bit Linux x86_64 or aarch64)", package=package, problem=problem)
        self.package = package
        self.problem = problem


def _ortools() -> tuple[ModuleType, ModuleType]:
    """OR-Tools' routing modules (``pywrapcp``, ``routing_enums_pb2``), imported on first use.

    Raises:
        SolverUnavailableError: OR-Tools cannot be imported.
    """
    try:
        from ortools.constraint_solver import pywrapcp as wrap, routing_enums_pb2 as enums
    except ImportError as exc:  # also a wheel whose shared library does not load on this system
        raise SolverUnavailableError(ORTOOLS_PACKAGE, str(exc) or type(exc).__name__) from exc
    return wrap, enums


@dataclass(frozen=True, slots=True)
class SolverSettings:
    """Fleet and search settings.

    Attributes:
        vehicles: Number of vehicles (1 .. ``MAX_VEHICLES``).
        capacity_l: Capacity of each vehicle in litres (> 0, at most ``MAX_CAPACITY_L``).
        time_limit_s: Search time (at most ``MAX_TIME_LIMIT_S``); 0 keeps the deterministic first
            solution without local search.
        max_route_m: Optional longest route in metres.
        vehicle_cost_m: Fixed cost of each vehicle that leaves the depot, in metres of driving: a
            further vehicle is sent only when it saves more than this much distance (a truck and its
            crew cost far more than a few hundred metres). 0 to :data:`MAX_VEHICLE_COST_M`.
    """

    vehicles: int = 2
    capacity_l: float = 10_000.0
    time_limit_s: float = 5.0
    max_route_m: int | None = None
    vehicle_cost_m: int = DEFAULT_VEHICLE_COST_M

    def __post_init__(self) -> None:
        if isinstance(self.vehicles, bool) or not isinstance(self.vehicles, int) or self.vehicles < 1:
            raise InvalidInputError("vehicles", self.vehicles, "must be a whole number >= 1")
        if self.vehicles > MAX_VEHICLES:
            raise InvalidInputError("vehicles", self.vehicles, f"must be at most {MAX_VEHICLES}")
        if not (0 < self.capacity_l <= MAX_CAPACITY_L):
            raise InvalidInputError("capacity", self.capacity_l,
                                    f"must be a positive number of litres, at most {MAX_CAPACITY_L:.0f}")
        if not (0 <= self.time_limit_s <= MAX_TIME_LIMIT_S):
            raise InvalidInputError("time limit", self.time_limit_s, f"must be 0 to {MAX_TIME_LIMIT_S:g} seconds")
        if isinstance(self.vehicle_cost_m, bool) or not isinstance(self.vehicle_cost_m, int) \
                or not 0 <= self.vehicle_cost_m <= MAX_VEHICLE_COST_M:
            raise InvalidInputError("vehicle cost", self.vehicle_cost_m,
                                    f"must be whole metres from 0 to {MAX_VEHICLE_COST_M}")
        if self.max_route_m is not None and not 0 < self.max_route_m <= MAX_SOLVER_SUM:
            raise InvalidInputError("max route", self.max_route_m,
                                    f"must be a positive number of metres, at most {MAX_SOLVER_SUM}")


@dataclass(frozen=True, slots=True)
class Solution:
    """Solver output: per vehicle the candidate indices in visiting order (0-based), and the dropped ones."""

    routes: tuple[tuple[int, ...], ...]
    dropped: tuple[int, ...]
    solver_s: float
    status: str


def demands_l(candidates: Sequence[Candidate]) -> list[int]:
    """Return each candidate's load as whole litres (rounded up, so capacity is never exceeded)."""
    return [math.ceil(c.load_l - 1e-9) for c in candidates]


def check_capacity(candidates: Sequence[Candidate], capacity_l: float) -> None:
    """Raise :class:`CapacityError` for the largest bin load that does not fit one vehicle."""
    cap = math.floor(capacity_l + 1e-9)
    too_big = [(d, c) for d, c in zip(demands_l(candidates), candidates) if d > cap]
    if too_big:
        load, cand = max(too_big, key=lambda x: x[0])
        raise CapacityError(capacity_l, cand.bin.id, cand.load_l)


def triage(candidates: Sequence[Candidate], settings: SolverSettings,
           matrix: Sequence[Sequence[int]] | np.ndarray | None = None) -> tuple[list[int], list[int]]:
    """Split candidate indices into (kept, left over) so the kept loads fit the fleet's total capacity.

    Candidates are taken in urgency order (alarms, full, predicted; then fuller first), so when the
    fleet is too small the least urgent bins are left, not whatever the search happens to drop.
    Among equally urgent bins the nearer to the depot (round trip, ``matrix`` node 0) are kept: the
    farthest cost the most driving (before, ties went by bin id: bin-0833..bin-0999 were left).
    """
    fleet = settings.vehicles * math.floor(settings.capacity_l + 1e-9)
    demands = demands_l(candidates)
    # from and to the depot as Python ints (an array's own scalars would make the sort slow)
    out_row = [int(v) for v in matrix[0]] if matrix is not None else None
    in_col = [int(row[0]) for row in matrix] if matrix is not None else None

    def round_trip(i: int) -> int:
        return 0 if out_row is None or in_col is None else out_row[i + 1] + in_col[i + 1]

    order = sorted(range(len(candidates)), key=lambda i: (
        not candidates[i].is_alarm, Reason.FULL not in candidates[i].reasons, -candidates[i].expected_fill,
        round_trip(i), i))
    kept: list[int] = []
    left: list[int] = []
    total = 0
    for i in order:
        if total + demands[i] <= fleet or candidates[i].is_alarm:
            kept.append(i)
            total += demands[i]
        else:
            left.append(i)
    return sorted(kept), sorted(left)


def drop_penalty(m: int, max_d: int, vehicles: int, vehicle_cost_m: int = 0) -> int:
    """Base penalty for leaving one of ``m`` bins out, above any set of routes over them (and the fixed
    cost of every vehicle, so no bin is dropped to save a vehicle).

    The solver sums route lengths and penalties in signed 64-bit integers: with ``m`` bins every
    penalty paid (at most ``ALARM_PENALTY_FACTOR`` x base each) plus every arc driven (at most
    ``m + vehicles`` arcs of ``max_d``) plus the vehicles' fixed costs must stay below :data:`MAX_SOLVER_SUM`.

    Raises:
        MatrixError: The distances (0 .. ``MAX_GREAT_CIRCLE_M``) or the number of bins would
            overflow that bound (not reached by a city's bins with real distances); code ``matrix``
            (exit 2, API 400), since no query parameter is at fault.
    """
    if not 0 <= max_d <= MAX_GREAT_CIRCLE_M:
        raise MatrixError(SOLVER_SOURCE, f"distances must be 0 to {MAX_GREAT_CIRCLE_M} m, got {max_d}")
    base = (m + 1) * (max_d + 1) + vehicles * vehicle_cost_m + 1
    worst = m * ALARM_PENALTY_FACTOR * base + (m + vehicles) * max_d + vehicles * vehicle_cost_m
    if worst > MAX_SOLVER_SUM:
        raise MatrixError(SOLVER_SOURCE, f"too many bins ({m}) to plan at distances up to {max_d} m within the "
                                         "solver's 64-bit bounds; plan fewer bins at once")
    return base


def _rows(matrix: np.ndarray) -> list[list[int]]:
    """``matrix`` as the list of lists OR-Tools takes, one int object per distinct distance shared by
    every cell holding it: 8 bytes a cell instead of ~40 for ``tolist()`` (4,000 bins: ~130 MB, not ~640)."""
    import numpy as np  # here, not at module level: the gateway imports routes, only the planner computes

    top = int(matrix.max()) if matrix.size else 0
    if top >= matrix.size:  # more possible values than cells (far-apart places): one int per cell anyway
        return matrix.tolist()  # type: ignore[no-any-return]
    ints = np.arange(top + 1).astype(object)  # Python ints 0..top
    return [ints[row].tolist() for row in matrix]


def _search(
    candidates: Sequence[Candidate],
    kept: list[int],
    matrix: np.ndarray,
    settings: SolverSettings,
    strategy: str,
) -> tuple[list[tuple[int, ...]], str]:
    """Build the routing model over the ``kept`` candidates and search; return routes of original indices."""
    pywrapcp, routing_enums_pb2 = _ortools()  # first: it names the missing package (numpy comes with it)
    import numpy as np  # here, not at module level: the gateway imports routes, only the planner computes

    # Local node k (1..m) is candidate kept[k - 1]; node 0 is the depot.
    nodes = [0] + [i + 1 for i in kept]
    # every bin kept: the checked matrix itself, no copy
    sub = matrix if len(nodes) == len(matrix) else matrix[np.ix_(nodes, nodes)]
    max_d = int(sub.max())
    all_demands = demands_l(candidates)
    demands = [0] + [all_demands[i] for i in kept]
    m = len(kept)
    manager = pywrapcp.RoutingIndexManager(m + 1, settings.vehicles, 0)
    routing = pywrapcp.RoutingModel(manager)

    # Native matrix/vector evaluators (by node): no Python callback per arc, ~10x faster on 1000 bins.
    # OR-Tools takes only a list of lists, and copies it: the list lives for this call alone.
    transit = routing.RegisterTransitMatrix(_rows(sub))
    del sub
    routing.SetArcCostEvaluatorOfAllVehicles(transit)
    if settings.max_route_m is not None:
        routing.AddDimension(transit, 0, settings.max_route_m, True, "distance")
    demand_idx = routing.RegisterUnaryTransitVector(demands)
    cap = math.floor(settings.capacity_l + 1e-9)
    routing.AddDimensionWithVehicleCapacity(demand_idx, 0, [cap] * settings.vehicles, True, "load")

    # Dropping any bin must cost more than any detour it could save.
    base_penalty = drop_penalty(m, max_d, settings.vehicles, settings.vehicle_cost_m)
    routing.SetFixedCostOfAllVehicles(settings.vehicle_cost_m)
    fire_indices: list[int] = []
    tip_indices: list[int] = []
    other_indices: list[int] = []
    for k in range(1, m + 1):
        cand = candidates[kept[k - 1]]
        index = manager.NodeToIndex(k)
        if cand.is_alarm:
            (fire_indices if cand.reason is Reason.FIRE else tip_indices).append(index)
            penalty = ALARM_PENALTY_FACTOR * base_penalty
        else:
            other_indices.append(index)
            penalty = base_penalty * (2 if Reason.FULL in cand.reasons else 1)
        routing.AddDisjunction([index], penalty)
    for index in other_indices:
        if fire_indices or tip_indices:
            routing.NextVar(index).RemoveValues(fire_indices + tip_indices)
    for index in tip_indices:
        if fire_indices:
            routing.NextVar(index).RemoveValues(fire_indices)

    # Phase 1: the first solution alone, never cut short by the time limit (it is polynomial).
    first_params = pywrapcp.DefaultRoutingSearchParameters()
    first_params.first_solution_strategy = getattr(routing_enums_pb2.FirstSolutionStrategy, strategy)
    first_params.solution_limit = 1
    # The savings heuristic keeps its candidate arcs within this budget (OR-Tools' default is 6 GB: ~1.1 GB
    # of a 4,000-bin plan's 1.5 GB peak). Same routes on five seeded 3,000-4,000-bin cities; the bench's
    # fixed-round plan came out 0.8 % shorter.
    first_params.savings_parameters.max_memory_usage_bytes = SAVINGS_MEMORY_BYTES
    assignment = routing.SolveWithParameters(first_params)
    if assignment is None:
        raise SolverError(str(routing.status()))
    # Phase 2: guided local search from it until the time limit.
    if settings.time_limit_s > 0:
        params = pywrapcp.DefaultRoutingSearchParameters()
        params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
        params.time_limit.FromMilliseconds(max(1, round(settings.time_limit_s * 1000)))
        improved = routing.SolveFromAssignmentWithParameters(assignment, params)
        if improved is not None:
            assignment = improved
    status = str(routing.status())
    routes: list[tuple[int, ...]] = []
    for vehicle in range(settings.vehicles):
        order: list[int] = []
        index = assignment.Value(routing.NextVar(routing.Start(vehicle)))
        while not routing.IsEnd(index):
            order.append(kept[manager.IndexToNode(index) - 1])
            index = assignment.Value(routing.NextVar(index))
        routes.append(tuple(order))
    return routes, status


def solve(candidates: Sequence[Candidate], matrix: Sequence[Sequence[float]] | np.ndarray,
          settings: SolverSettings) -> Solution:
    """Assign candidates to vehicles and order them.

    Args:
        candidates: Bins to visit; candidate i is matrix node i + 1.
        matrix: (n + 1) x (n + 1) distances in metres, node 0 the depot (rows, or an integer array such
            as :func:`gateway.routes.distances.matrix_array`'s, which is the smallest to hold).
        settings: Fleet and search settings.

    Returns:
        Routes per vehicle (candidate indices in visiting order) and the dropped candidates.

    Raises:
        CapacityError: One bin's load exceeds a vehicle's capacity.
        MatrixError: ``matrix`` is not (n + 1) x (n + 1) whole metres (ints, or whole floats such as
            1500.0) from 0 to ``MAX_GREAT_CIRCLE_M``.
        SolverError: OR-Tools found no solution in the time limit.
        SolverUnavailableError: OR-Tools cannot be imported (only raised when there is a route to search).
    """
    n = len(candidates)
    # whole metres within bounds: OR-Tools takes int64 and sums them (see drop_penalty)
    ints = checked_array(matrix, SOLVER_SOURCE, n + 1)
    check_capacity(candidates, settings.capacity_l)
    kept, _ = triage(candidates, settings, ints)
    if not kept:
        return Solution(tuple(() for _ in range(settings.vehicles)), tuple(range(n)), 0.0, "EMPTY")
    started = time.perf_counter()
    alarms_kept = sum(1 for i in kept if candidates[i].is_alarm)
    fleet_fits_alarms = sum(demands_l([candidates[i] for i in kept if candidates[i].is_alarm])) <= \
        settings.vehicles * math.floor(settings.capacity_l + 1e-9)
    routes, status = _search(candidates, kept, ints, settings, _STRATEGIES[0])
    for strategy in _STRATEGIES[1:]:
        served_alarms = sum(1 for r in routes for i in r if candidates[i].is_alarm)
        if served_alarms == alarms_kept or not fleet_fits_alarms:
            break
        logger.info("first solution left out %s alarm bins; retrying from another first solution",
                    alarms_kept - served_alarms)
        routes, status = _search(candidates, kept, ints, settings, strategy)
    elapsed = time.perf_counter() - started
    visited = {i for r in routes for i in r}
    dropped = tuple(i for i in range(n) if i not in visited)
    logger.info("solved %s stops on %s vehicles in %.2fs (%s dropped, status %s)",
                n, settings.vehicles, elapsed, len(dropped), status)
    return Solution(tuple(routes), dropped, elapsed, status)
