"""Make a collection plan: select due bins, get distances, solve, assemble routes."""

from __future__ import annotations

import logging
import math
import statistics
import threading
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Hashable, Iterable, Mapping

if TYPE_CHECKING:  # numpy (the routes extra) is imported by distances/solver where they compute
    import numpy as np

from gateway.routes.distances import DEPOT_ID, DistanceProvider, GreatCircle, Place, haversine_m, matrix_array
from gateway.routes.errors import InvalidInputError, NoBinsDueError
from gateway.routes.model import BinStatus, Candidate, Depot, Plan, Route, Stop
from gateway.routes.outputs import DEFAULT_SERVICE_S, DEFAULT_SPEED_KMH, Timing
from gateway.routes.parsing import MAX_DAYS_TO_NEXT_ROUND, check_date
from gateway.routes.selection import SelectionSettings, select_bins
from gateway.routes.solver import SolverSettings, check_capacity, solve

logger = logging.getLogger(__name__)

#: Longest ``max_route_km`` accepted (a day's round is tens of km; the solver bounds its sums).
MAX_ROUTE_KM = 2000.0
#: Default ``far_bin_km``: a due bin farther than this from the middle of the registered bins is left out.
DEFAULT_FAR_BIN_KM = 200.0
#: Largest ``far_bin_km`` (half the Earth's circumference: any larger is the same as 0, off).
MAX_FAR_BIN_KM = 20_100.0


@dataclass(frozen=True, kw_only=True)
class PlanParameters:
    """What shapes every plan besides its day, its depot and the bins (shared by :class:`PlanSettings`
    and the configured defaults, ``gateway.routes.config.PlanDefaults``).

    Attributes:
        vehicles: Number of vehicles.
        capacity_l: Capacity of each vehicle in litres.
        threshold: Fill fraction at or above which a bin is due.
        bin_volume_l: Volume of bins whose status carries none and that are not in ``bin_volumes_l``.
        bin_volumes_l: Volume per bin id in litres.
        start: Local time the round starts; fills are projected to it, later readings ignored.
        tz: Time zone of the day and ``start``.
        days_to_next_round: Days until the next round (the prediction horizon), 1 .. 366.
        time_limit_s: Solver time limit in seconds, 0 .. 300.
        distances: Source of distances (great-circle by default).
        speed_kmh: Average driving speed for the outputs' estimated times, 1 .. 130 km/h.
        service_s: Time to empty one bin for the estimated times, 0 .. 3600 s.
        max_route_km: Longest route in km (None: no limit); bins beyond it are unserved.
        far_bin_km: A due bin farther than this from the middle of the registered bins (median latitude
            and longitude) is not planned, as a likely location typo; 0 turns the check off.
    """

    vehicles: int = 2
    capacity_l: float = 10_000.0
    threshold: float = 0.8
    bin_volume_l: float = 240.0
    bin_volumes_l: Mapping[str, float] = field(default_factory=dict)
    start: time = time(6, 0)
    tz: tzinfo = timezone.utc
    days_to_next_round: int = 1
    time_limit_s: float = 5.0
    distances: DistanceProvider = field(default_factory=GreatCircle)
    speed_kmh: float = DEFAULT_SPEED_KMH
    service_s: float = DEFAULT_SERVICE_S
    max_route_km: float | None = None
    far_bin_km: float = DEFAULT_FAR_BIN_KM

    def timing(self) -> Timing:
        """The estimated-times settings of the outputs.

        Raises:
            InvalidInputError: Speed or service time out of range.
        """
        return Timing(speed_kmh=self.speed_kmh, service_s=self.service_s)


@dataclass(frozen=True, kw_only=True)
class PlanSettings(PlanParameters):
    """Everything that shapes one plan besides the bins: the shared parameters, plus

    Attributes:
        day: Collection date (2000-01-01 .. 2099-12-31).
        depot: Where vehicles start and end.
    """

    day: date
    depot: Depot

    def __post_init__(self) -> None:
        if isinstance(self.days_to_next_round, bool) or not isinstance(self.days_to_next_round, int) \
                or not 1 <= self.days_to_next_round <= MAX_DAYS_TO_NEXT_ROUND:
            raise InvalidInputError("days to next round", self.days_to_next_round,
                                    f"must be a whole number from 1 to {MAX_DAYS_TO_NEXT_ROUND}")
        check_date(self.day)  # so the round start, the next round and the history read stay representable
        self.selection()  # the derived settings validate the rest (fleet, volumes, threshold) up front
        self.solver()
        self.timing()
        if self.max_route_km is not None and not 0 < self.max_route_km <= MAX_ROUTE_KM:
            raise InvalidInputError("max route", self.max_route_km, f"must be more than 0 and at most {MAX_ROUTE_KM:g} km")
        if isinstance(self.far_bin_km, bool) or not 0 <= self.far_bin_km <= MAX_FAR_BIN_KM:
            raise InvalidInputError("far bin", self.far_bin_km, f"must be 0 (off) to {MAX_FAR_BIN_KM:g} km")

    @property
    def round_start(self) -> datetime:
        """Start of this round, timezone-aware, as the wall clock shows it (:func:`resolve_local`)."""
        return resolve_local(self.day, self.start, self.tz)[0]

    def start_warnings(self) -> list[str]:
        """A warning when ``start`` falls in the hour skipped or repeated by a daylight-saving change that
        day (:func:`resolve_local`); empty otherwise."""
        return resolve_local(self.day, self.start, self.tz)[1]

    def selection(self) -> SelectionSettings:
        """Selection settings derived from these settings."""
        start = self.round_start
        return SelectionSettings(
            round_start=start,
            # the next round's own start o'clock (not this start + n days: after a skipped hour that was
            # an hour late, and the longer look-ahead could add stops)
            next_round=resolve_local(self.day + timedelta(days=self.days_to_next_round), self.start, self.tz)[0],
            threshold=self.threshold,
            default_volume_l=self.bin_volume_l,
            volumes_l=self.bin_volumes_l,
        )

    def solver(self) -> SolverSettings:
        """Solver settings derived from these settings."""
        return SolverSettings(vehicles=self.vehicles, capacity_l=self.capacity_l, time_limit_s=self.time_limit_s,
                              max_route_m=None if self.max_route_km is None else round(self.max_route_km * 1000))


def _zone_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)


def resolve_local(day: date, start: time, tz: tzinfo) -> tuple[datetime, list[str]]:
    """The instant ``start`` o'clock on ``day`` in ``tz``, and a warning when that wall-clock time is ambiguous.

    In the gap the clocks skip (spring forward) the time does not exist: the round starts the length of the
    gap later on the clock, the instant the old offset gives (02:30 in Europe/Amsterdam on 2027-03-28 is
    03:30+02:00; 02:15 in Australia/Lord_Howe, whose clocks skip 30 minutes, is 02:45). In the hour the clocks repeat (fall back) the time
    exists twice: the first occurrence (before the change) is used. The returned datetime always shows
    a local time that exists, so no output prints 02:30+01:00 for a day without it.
    """
    naive = datetime.combine(day, start)
    first = naive.replace(tzinfo=tz)  # fold=0: the offset in force before a change
    resolved = datetime.fromtimestamp(first.timestamp(), tz=tz)  # as the wall clock shows that instant
    second = naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return resolved, []
    clock, zone = start.strftime("%H:%M"), _zone_name(tz)
    if resolved.replace(tzinfo=None) != naive:  # the clocks skipped it
        shown = resolved.isoformat(timespec="minutes")
        return resolved, [f"round start {clock} does not exist on {day.isoformat()} in {zone} (the clocks go "
                          f"forward that night): the round starts at {shown}, the time the clock shows then"]
    later = datetime.fromtimestamp(second.timestamp(), tz=tz)
    utc = later.astimezone(timezone.utc)
    return resolved, [f"round start {clock} occurs twice on {day.isoformat()} in {zone} (the clocks go back "
                      f"that night): the first, {resolved.isoformat(timespec='minutes')}, is used; for the "
                      f"second, {later.isoformat(timespec='minutes')}, plan that day in UTC (civicedge routes plan --tz UTC "
                      f"--date {utc.date().isoformat()} --start {utc.strftime('%H:%M')}; times are then shown in UTC)"]


def _known_at(bins: Iterable[BinStatus], cutoff: int) -> list[BinStatus]:
    """Drop readings after ``cutoff``: a plan uses what was known when its round starts."""
    out = []
    for b in bins:
        if any(r.t > cutoff for r in b.readings):
            b = replace(b, readings=tuple(r for r in b.readings if r.t <= cutoff))
        out.append(b)
    return out


def _assemble(candidates: list[Candidate], matrix: np.ndarray, order: tuple[int, ...], vehicle: int) -> Route:
    stops: list[Stop] = []
    prev = 0
    total = 0
    for i in order:
        leg = int(matrix[prev, i + 1])
        total += leg
        stops.append(Stop(candidates[i], leg, total))
        prev = i + 1
    total += int(matrix[prev, 0])
    return Route(vehicle, tuple(stops), total, sum(candidates[i].load_l for i in order))


def _unknown_volume_ids(bins: Iterable[BinStatus], settings: PlanSettings) -> list[str]:
    """Ids of ``settings.bin_volumes_l`` that name none of ``bins``, sorted."""
    if not settings.bin_volumes_l:
        return []
    return sorted(set(settings.bin_volumes_l) - {b.id for b in bins})


def volume_warnings(bins: Iterable[BinStatus], settings: PlanSettings) -> list[str]:
    """Warnings about ``settings.bin_volumes_l`` entries that name none of ``bins``.

    A mistyped id in a bin-volumes CSV would otherwise go unnoticed: the bin it meant gets the
    default volume. Not an error: the file may list bins that are not installed yet or were revoked or retired.
    """
    unknown = _unknown_volume_ids(bins, settings)
    if not unknown:
        return []
    shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    return [f"bin volumes name {len(unknown)} id(s) that are not registered bins (or are revoked or retired), "
            f"their volume is not used: {shown}"]


# Warnings about the settings already logged at WARNING by this process, by what they are about
# (the set of unknown bin-volume ids; a far depot). The gateway plans on every uncached
# /api/routes/plan request (the dashboard asks every few minutes, for today and the next round),
# always with the same settings: one WARNING per distinct subject, INFO after that (the answer's
# ``warnings`` still carry them every time). A command-line run plans once, so it always warns.
_WARNED: set[Hashable] = set()
_WARNED_LOCK = threading.Lock()
_MAX_WARNED = 256  # bounded: forgotten (and warned again) after this many distinct subjects


def _first_time(key: Hashable) -> bool:
    """True the first time this process sees ``key`` (then remembers it)."""
    with _WARNED_LOCK:
        if key in _WARNED:
            return False
        if len(_WARNED) >= _MAX_WARNED:
            _WARNED.clear()
        _WARNED.add(key)
        return True


#: A depot farther than this from every due bin gets a warning (a round drives from it and back).
DEPOT_PLAUSIBLE_M = 200_000.0


def _degrees(value: float) -> str:
    """``value`` with every digit it was given (shortest round-trip form, plain decimal): ``:g`` made
    52.370123 ``52.3701``, a depot 10 m away from the one typed."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def depot_warnings(depot: Depot, candidates: Iterable[Candidate]) -> list[str]:
    """A warning when ``depot`` is more than :data:`DEPOT_PLAUSIBLE_M` from every due bin.

    Latitude and longitude swapped (``4.89,52.37`` for ``52.37,4.89``) are both in range, so the
    parser cannot refuse them; the plan would drive thousands of kilometres. When the swapped
    depot is near the bins the warning says so. Not an error: a depot may really be far away.
    """
    cands = list(candidates)
    if not cands:
        return []

    def nearest(lat: float, lon: float) -> float:
        return min(haversine_m(lat, lon, c.bin.lat, c.bin.lon) for c in cands)

    gap = nearest(depot.lat, depot.lon)
    if gap <= DEPOT_PLAUSIBLE_M:
        return []
    lat, lon = _degrees(depot.lat), _degrees(depot.lon)
    text = (f"depot {lat},{lon} is {gap / 1000:,.0f} km from the nearest due bin "
            f"(more than {DEPOT_PLAUSIBLE_M / 1000:.0f} km); check the depot")
    if -90.0 <= depot.lon <= 90.0 and nearest(depot.lon, depot.lat) <= DEPOT_PLAUSIBLE_M:
        text += (f": latitude and longitude look swapped, did you mean {lon},{lat} "
                 f"(LAT,LON)?")
    return [text]


def _middle(bins: Iterable[BinStatus]) -> tuple[float, float] | None:
    """Median latitude and longitude of ``bins`` with a location: the middle of the city, which a few
    mistyped locations do not move (an average would)."""
    places = [(b.lat, b.lon) for b in bins if math.isfinite(b.lat) and math.isfinite(b.lon)]
    if not places:
        return None
    return statistics.median(p[0] for p in places), statistics.median(p[1] for p in places)


def far_bins(candidates: Iterable[Candidate], registered: Iterable[BinStatus], depot: Depot, far_bin_km: float,
             ) -> tuple[list[Candidate], list[tuple[Candidate, float, float, tuple[float, float]]]]:
    """Split due bins into (kept, far): a bin more than ``far_bin_km`` from the middle of all registered
    bins (:func:`_middle`, due or not) and from the depot is far, with its distances in metres from that
    middle and from the depot, and the middle. (The depot counts too: the middle of a city of two bins is halfway between.)

    Such a bin is a registry location typo far more often than a real stop (``--location 25.365,4.88``
    for ``52.365,4.88``): routing it would send a truck on a leg of thousands of kilometres, even when it
    is the only bin due that day. A real bin that far is planned with a larger ``far_bin_km`` (0: off).
    """
    cands = list(candidates)
    middle = _middle(registered) if far_bin_km > 0 else None
    if middle is None:
        return cands, []
    limit_m = far_bin_km * 1000
    kept: list[Candidate] = []
    far: list[tuple[Candidate, float, float, tuple[float, float]]] = []
    for c in cands:
        d = haversine_m(middle[0], middle[1], c.bin.lat, c.bin.lon)
        to_depot = haversine_m(depot.lat, depot.lon, c.bin.lat, c.bin.lon)
        if d > limit_m and to_depot > limit_m:
            far.append((c, d, to_depot, middle))
        else:
            kept.append(c)
    return kept, far


def far_bin_reason(c: Candidate, distance_m: float, depot_m: float, middle: tuple[float, float],
                   far_bin_km: float) -> str:
    """Why a far bin (:func:`far_bins`) is not planned, and how to fix its location (or plan it)."""
    return (f"registered at {_degrees(c.bin.lat)},{_degrees(c.bin.lon)}, {distance_m / 1000:,.0f} km from the "
            f"middle of the registered bins ({middle[0]:.4f},{middle[1]:.4f}) and {depot_m / 1000:,.0f} km from "
            f"the depot (more than far_bin_km {far_bin_km:g} km from both): not planned; a location typo? fix it "
            f"with 'civicedge gateway devices move {c.bin.id} --location LAT,LON', or raise [routes] far_bin_km "
            f"(0: off) for a real bin that far (it is due: {'+'.join(r.value for r in c.reasons)})")


def plan_collection(bins: Iterable[BinStatus], settings: PlanSettings) -> Plan:
    """Plan the collection round of ``settings.day``.

    Args:
        bins: Status of every bin (fill history and active alarms).
        settings: Date, depot, fleet, threshold, distances, solver limits.

    Returns:
        The plan; bins the fleet cannot carry are in ``unserved``.

    Raises:
        NoBinsDueError: Nothing is full, predicted full or in alarm.
        CapacityError: One bin's expected load exceeds a vehicle's capacity.
        MatrixError: A CSV matrix is unusable (an OSRM failure falls back with a warning).
        InvalidInputError: A setting is out of range.
    """
    selection = settings.selection()
    solver_settings = settings.solver()
    start = settings.round_start
    known = _known_at(bins, int(start.timestamp()))
    start_warnings = settings.start_warnings()
    for text in start_warnings:  # logged now, as the bin-volumes warning; once per day, start and zone
        first = _first_time(("round start", settings.day, settings.start, _zone_name(settings.tz)))
        logger.log(logging.WARNING if first else logging.INFO, "%s", text)
    input_warnings = volume_warnings(known, settings)
    if input_warnings:  # logged now: a NoBinsDueError below has no plan to carry it
        unknown = frozenset(_unknown_volume_ids(known, settings))
        level = logging.WARNING if _first_time(("bin volumes", unknown)) else logging.INFO
        for text in input_warnings:
            logger.log(level, "%s", text)
    candidates, skipped = select_bins(known, selection)
    if not candidates:
        raise NoBinsDueError(settings.day.isoformat(), len(known), settings.threshold, tuple(skipped))
    candidates, far = far_bins(candidates, known, settings.depot, settings.far_bin_km)
    far_reasons = [(c.bin.id, far_bin_reason(c, d, dd, mid, settings.far_bin_km)) for c, d, dd, mid in far]
    far_warnings = [f"bin {bin_id} {reason}" for bin_id, reason in far_reasons]
    skipped = skipped + far_reasons
    for text in far_warnings:  # per bin and location, as the depot warning (see _first_time)
        key = ("far bin", text)
        logger.log(logging.WARNING if _first_time(key) else logging.INFO, "%s", text)
    if not candidates:  # every due bin was far: nothing to plan (the skipped list says why)
        raise NoBinsDueError(settings.day.isoformat(), len(known), settings.threshold, tuple(skipped))
    check_capacity(candidates, settings.capacity_l)
    if any(c.bin.id == DEPOT_ID for c in candidates):
        # the CSV matrix and the outputs name the depot "depot"; a bin of that name would be ambiguous
        raise InvalidInputError("bin id", DEPOT_ID, "is reserved for the depot; rename the device")
    places = [Place(DEPOT_ID, settings.depot.lat, settings.depot.lon)]
    places += [Place(c.bin.id, c.bin.lat, c.bin.lon) for c in candidates]
    # an int32 array, not a list of Python ints: ~10x smaller through the search (see matrix_array)
    matrix, source, matrix_warnings = matrix_array(settings.distances, places)
    depot_warning = depot_warnings(settings.depot, candidates)
    if depot_warning:  # once per depot at WARNING, as the bin-volumes warning (see _first_time)
        level = logging.WARNING if _first_time(("depot", settings.depot.lat, settings.depot.lon)) else logging.INFO
        for text in depot_warning:
            logger.log(level, "%s", text)
    warnings = start_warnings + input_warnings + depot_warning + far_warnings + matrix_warnings
    solution = solve(candidates, matrix, solver_settings)
    routes = tuple(
        _assemble(candidates, matrix, order, vehicle)
        for vehicle, order in enumerate(solution.routes, start=1)
        if order
    )
    unserved = tuple(candidates[i] for i in solution.dropped)
    if unserved:
        n, k = len(unserved), settings.vehicles
        limit = "" if settings.max_route_km is None else f" (routes of at most {settings.max_route_km:g} km)"
        text = (f"{n} due {'bin does' if n == 1 else 'bins do'} not fit {k} {'vehicle' if k == 1 else 'vehicles'} "
                f"of {settings.capacity_l:g} L{limit}; plan {'it' if n == 1 else 'them'} on another vehicle or round")
        logger.warning("%s", text)
        warnings.append(text)
    return Plan(
        date=settings.day.isoformat(),
        start=start,
        depot=settings.depot,
        vehicles=settings.vehicles,
        capacity_l=settings.capacity_l,
        threshold=settings.threshold,
        distance_source=source,
        routes=routes,
        unserved=unserved,
        considered=len(known),
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        solver_s=solution.solver_s,
    )
