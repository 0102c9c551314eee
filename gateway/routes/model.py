"""Data model of collection planning: what the planner reads and what it produces.

The planner's input is deliberately small: per bin its identity and place, a history of
quantised fill levels with their times, and the active safety alarms. Nothing people-related
(the bin's ``lid`` count) is part of it, so no plan can be influenced by how people use a bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

#: Alarm codes of the ``bin`` kind (firmware/policy.json) that make a bin a must-visit stop.
ALARM_CODES: tuple[str, ...] = ("fire", "tip")


class Reason(str, Enum):
    """Why a bin is a stop, in priority order (alarms first)."""

    FIRE = "fire"
    TIP = "tip"
    FULL = "full"
    PREDICTED = "predicted"

    @property
    def is_alarm(self) -> bool:
        """True for safety alarms, which are served before any other stop of a route."""
        return self in (Reason.FIRE, Reason.TIP)


@dataclass(frozen=True, slots=True)
class FillReading:
    """One fill report: unix time of the window start and fill as a fraction 0..1."""

    t: int
    fill: float


@dataclass(frozen=True, slots=True)
class BinStatus:
    """What the gateway knows about one bin, as input to the planner.

    Attributes:
        id: Device id of the bin's sensor.
        zone: Zone from the gateway's registry (free text, used by crews).
        lat: Latitude in degrees (WGS84).
        lon: Longitude in degrees (WGS84).
        readings: Fill history, any order; fractions 0..1 (the device reports 10 % steps).
        alarms: Active alarm codes among :data:`ALARM_CODES`.
        volume_l: Bin volume in litres, or None to use the planner's default.
        no_reading_reason: Why ``readings`` is empty, when the source knows better than "no fill
            reading yet" (e.g. it reads a limited history: "no fill reading in the 4 days before the round start ...").
    """

    id: str
    zone: str
    lat: float
    lon: float
    readings: tuple[FillReading, ...] = ()
    alarms: frozenset[str] = frozenset()
    volume_l: float | None = None
    no_reading_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A bin selected for collection, with its expected load at collection time.

    ``fill_now`` is the latest reported fill, or None for a bin in alarm that has no fill reading
    (its load is then assumed full: ``expected_fill`` 1.0, ``load_assumed`` True).
    """

    bin: BinStatus
    reasons: tuple[Reason, ...]
    fill_now: float | None
    expected_fill: float
    predicted_next: float
    rate_per_day: float
    load_l: float

    @property
    def load_assumed(self) -> bool:
        """True when the load is not from a reading but assumed full (a bin in alarm without fill data)."""
        return self.fill_now is None

    @property
    def reason(self) -> Reason:
        """The most urgent reason (reasons are kept in priority order)."""
        return self.reasons[0]

    @property
    def is_alarm(self) -> bool:
        """True when the bin is in a fire or tip-over alarm."""
        return self.reason.is_alarm


@dataclass(frozen=True, slots=True)
class Stop:
    """One visit of a route."""

    candidate: Candidate
    leg_m: int
    cumulative_m: int


@dataclass(frozen=True, slots=True)
class Route:
    """The ordered stops of one vehicle, starting and ending at the depot."""

    vehicle: int
    stops: tuple[Stop, ...]
    distance_m: int
    load_l: float


@dataclass(frozen=True, slots=True)
class Depot:
    """Where the vehicles start and end."""

    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A collection plan for one day.

    Attributes:
        date: Collection date (ISO ``YYYY-MM-DD``).
        start: When the round starts (timezone-aware); fills are projected to this time.
        depot: Start and end of every route.
        vehicles: Number of vehicles available.
        capacity_l: Capacity of each vehicle in litres.
        threshold: Fill fraction at or above which a bin is due.
        distance_source: Where distances come from (great-circle, CSV matrix, OSRM URL).
        routes: Non-empty routes, by vehicle number.
        unserved: Due bins the vehicles could not take (capacity); must be planned otherwise.
        considered: Number of bins that were looked at.
        skipped: Bins without usable data, with the reason.
        warnings: Things the operator should know (e.g. a fallback to great-circle).
        solver_s: Wall time spent in the solver.
    """

    date: str
    start: datetime
    depot: Depot
    vehicles: int
    capacity_l: float
    threshold: float
    distance_source: str
    routes: tuple[Route, ...]
    unserved: tuple[Candidate, ...] = ()
    considered: int = 0
    skipped: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default=())
    solver_s: float = 0.0

    @property
    def total_distance_m(self) -> int:
        """Sum of the routes' distances in metres."""
        return sum(r.distance_m for r in self.routes)

    @property
    def stop_count(self) -> int:
        """Number of bins visited by all routes."""
        return sum(len(r.stops) for r in self.routes)
