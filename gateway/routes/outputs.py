"""Plan renderings: JSON (API, archive), CSV (crews), GeoJSON (dashboard map, GIS tools).

Estimated times (a stop's ``eta``, a route's ``end``) come from :class:`Timing`: the legs driven at an
average speed plus a fixed service time per bin, from the round start. They are estimates for crews,
not a schedule the solver keeps (it minimises distance).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.csv_cells import neutral_cell
from gateway.routes.errors import InvalidInputError
from gateway.routes.model import Candidate, Plan, Route, Stop

#: Output formats and their media types.
FORMATS: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv",
    "geojson": "application/geo+json",
}

CSV_COLUMNS: tuple[str, ...] = (
    "vehicle", "stop", "bin_id", "zone", "lat", "lon", "reason", "expected_fill_pct",
    "fill_now_pct", "load_l", "leg_m", "cumulative_m", "route_distance_m", "reading_at", "reading_age_h",
    "kind", "note", "date", "round_start", "eta",
)

#: ``kind`` of a CSV row, in the order rows come: per route its depot ``start``, its ``stop``s and its
#: ``return`` to the depot; then ``unserved`` bins, ``skipped`` bins and ``warning``s (``note`` says
#: why). A file for a day without a plan has a ``none`` (nothing due) or ``error`` row instead of routes.
CSV_KINDS: tuple[str, ...] = ("start", "stop", "return", "unserved", "skipped", "warning", "none", "error")

#: Default average speed of a collection vehicle between stops, km/h (urban, with traffic).
DEFAULT_SPEED_KMH = 25.0
#: Default time to empty one bin, seconds.
DEFAULT_SERVICE_S = 60.0
MAX_SPEED_KMH = 130.0
MAX_SERVICE_S = 3600.0


@dataclass(frozen=True, slots=True)
class Timing:
    """How the outputs estimate times.

    Attributes:
        speed_kmh: Average driving speed, more than 0, at most :data:`MAX_SPEED_KMH`.
        service_s: Time spent at each bin, 0 .. :data:`MAX_SERVICE_S`.
    """

    speed_kmh: float = DEFAULT_SPEED_KMH
    service_s: float = DEFAULT_SERVICE_S

    def __post_init__(self) -> None:
        if not (0 < self.speed_kmh <= MAX_SPEED_KMH) or math.isnan(self.speed_kmh):
            raise InvalidInputError("speed", self.speed_kmh, f"must be more than 0 and at most {MAX_SPEED_KMH:g} km/h")
        if not (0 <= self.service_s <= MAX_SERVICE_S) or math.isnan(self.service_s):
            raise InvalidInputError("service time", self.service_s, f"must be 0 to {MAX_SERVICE_S:g} seconds")

    def after(self, start: datetime, distance_m: float, bins: int) -> datetime:
        """When a vehicle leaving at ``start`` has driven ``distance_m`` and emptied ``bins`` bins, in ``start``'s
        zone. Added in UTC: an aware datetime plus a timedelta is clock-face arithmetic in Python, an hour off
        across a DST change during the round (and a local time that does not exist in the skipped hour)."""
        elapsed = timedelta(seconds=distance_m * 3.6 / self.speed_kmh + bins * self.service_s)
        if start.tzinfo is None:
            return start + elapsed
        return (start.astimezone(timezone.utc) + elapsed).astimezone(start.tzinfo)


def elapsed_s(start: datetime, end: datetime) -> float:
    """Real seconds from ``start`` to ``end`` (through UTC when aware: subtracting two datetimes of one zone is
    clock-face arithmetic too)."""
    if start.tzinfo is None or end.tzinfo is None:
        return (end - start).total_seconds()
    return (end.astimezone(timezone.utc) - start.astimezone(timezone.utc)).total_seconds()


def _pct(x: float) -> int:
    return round(x * 100)


def _minutes(t: datetime) -> str:
    return t.isoformat(timespec="minutes")


def _reading(c: Candidate, start: datetime) -> tuple[str | None, float | None]:
    """When the bin's latest fill reading was taken (ISO, the round's zone) and its age in hours at the
    round start; (None, None) for a bin without one (in alarm, load assumed)."""
    if not c.bin.readings:
        return None, None
    t = max(r.t for r in c.bin.readings)
    at = datetime.fromtimestamp(t, tz=start.tzinfo).isoformat(timespec="minutes")
    return at, round((start.timestamp() - t) / 3600, 1)


def _candidate_dict(c: Candidate, start: datetime) -> dict[str, Any]:
    reading_at, age_h = _reading(c, start)
    return {
        "bin_id": c.bin.id,
        "zone": c.bin.zone,
        "lat": round(c.bin.lat, 6),
        "lon": round(c.bin.lon, 6),
        "reason": c.reason.value,
        "reasons": [r.value for r in c.reasons],
        "expected_fill": round(c.expected_fill, 3),
        "fill_now": None if c.fill_now is None else round(c.fill_now, 3),  # None: no reading, load assumed full
        "fill_rate_per_day": round(c.rate_per_day, 4),
        "load_l": round(c.load_l, 1),
        "load_assumed": c.load_assumed,
        "reading_at": reading_at,  # the latest fill reading's time: an old one makes the prediction weak
        "reading_age_h": age_h,
    }


def _stop_dict(seq: int, s: Stop, start: datetime, timing: Timing) -> dict[str, Any]:
    d: dict[str, Any] = {"seq": seq}
    d.update(_candidate_dict(s.candidate, start))
    d["leg_m"] = s.leg_m
    d["cumulative_m"] = s.cumulative_m
    d["eta"] = _minutes(timing.after(start, s.cumulative_m, seq - 1))  # arrival: the bins before it emptied
    return d


def _return_leg_m(r: Route) -> int:
    return r.distance_m - (r.stops[-1].cumulative_m if r.stops else 0)


def _route_times(plan: Plan, r: Route, timing: Timing) -> dict[str, Any]:
    end = timing.after(plan.start, r.distance_m, len(r.stops))
    return {"start": _minutes(plan.start), "end": _minutes(end),
            "duration_min": round(elapsed_s(plan.start, end) / 60), "return_leg_m": _return_leg_m(r)}


def plan_to_dict(plan: Plan, timing: Timing | None = None) -> dict[str, Any]:
    """Return the plan as JSON-ready data (the ``json`` format and the API's answer).

    Args:
        plan: The plan.
        timing: How times are estimated (default :class:`Timing`'s defaults).
    """
    timing = timing or Timing()
    return {
        "date": plan.date,
        "round_start": plan.start.isoformat(),
        "depot": {"lat": plan.depot.lat, "lon": plan.depot.lon},
        "vehicles": plan.vehicles,
        "capacity_l": plan.capacity_l,
        "threshold": plan.threshold,
        "distance_source": plan.distance_source,
        "total_distance_m": plan.total_distance_m,
        "stops": plan.stop_count,
        "bins_considered": plan.considered,
        "solver_s": round(plan.solver_s, 3),
        "speed_kmh": timing.speed_kmh,
        "service_s": timing.service_s,
        "routes": [
            {
                "vehicle": r.vehicle,
                "distance_m": r.distance_m,
                "load_l": round(r.load_l, 1),
                **_route_times(plan, r, timing),
                "stops": [_stop_dict(i, s, plan.start, timing) for i, s in enumerate(r.stops, start=1)],
            }
            for r in plan.routes
        ],
        "unserved": [_candidate_dict(c, plan.start) for c in plan.unserved],
        "skipped": [{"bin_id": b, "reason": why} for b, why in plan.skipped],
        "warnings": list(plan.warnings),
    }


def plan_to_json(plan: Plan, notice: str | None = None, timing: Timing | None = None) -> str:
    """Return the plan as indented JSON text (with ``notice``, e.g. why it has no routes, when given)."""
    doc = plan_to_dict(plan, timing)
    if notice is not None:
        doc["notice"] = notice
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _csv_row(**cells: Any) -> list[Any]:
    return [cells.get(name, "") for name in CSV_COLUMNS]


def _candidate_cells(c: Candidate, start: datetime) -> dict[str, Any]:
    # Every text cell neutralised as in the open-data CSV (a bin id "-rf" or a zone "=A1" would be a
    # formula); a negative coordinate is a number and stays one.
    reading_at, age_h = _reading(c, start)
    return {
        "bin_id": neutral_cell(c.bin.id), "zone": neutral_cell(c.bin.zone), "lat": f"{c.bin.lat:.6f}",
        "lon": f"{c.bin.lon:.6f}", "reason": neutral_cell("+".join(x.value for x in c.reasons)),
        "expected_fill_pct": _pct(c.expected_fill),
        "fill_now_pct": "" if c.fill_now is None else _pct(c.fill_now),  # empty: no reading (load assumed full)
        "load_l": round(c.load_l), "reading_at": reading_at or "", "reading_age_h": "" if age_h is None else age_h,
    }


def plan_to_csv(plan: Plan, notice: str | None = None, timing: Timing | None = None) -> str:
    """Return the plan as CSV for crews (header :data:`CSV_COLUMNS`, row kinds :data:`CSV_KINDS`).

    Per route: the depot ``start`` row, one ``stop`` row per bin in order, the ``return`` row (its
    ``leg_m`` is the drive back, its ``eta`` the estimated end); then ``unserved`` and ``skipped``
    bins and ``warning``s with their ``note``, so a reader of the file sees what the plan leaves out.
    Every row carries the plan's ``date`` and ``round_start``, so a file is never taken for another
    day's. A plan without routes has a ``none`` row whose ``note`` is ``notice`` instead.
    """
    timing = timing or Timing()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    day = {"date": plan.date, "round_start": plan.start.isoformat()}
    depot = {"bin_id": "depot", "lat": f"{plan.depot.lat:.6f}", "lon": f"{plan.depot.lon:.6f}"}
    if not plan.routes:
        writer.writerow(_csv_row(kind="none", note=neutral_cell(notice or "no bins due"), **day))
    for r in plan.routes:
        route = {"vehicle": r.vehicle, "route_distance_m": r.distance_m}
        writer.writerow(_csv_row(stop=0, leg_m=0, cumulative_m=0, kind="start", eta=_minutes(plan.start),
                                 note="leave the depot", **route, **depot, **day))
        for seq, s in enumerate(r.stops, start=1):
            writer.writerow(_csv_row(stop=seq, leg_m=s.leg_m, cumulative_m=s.cumulative_m, kind="stop",
                                     eta=_minutes(timing.after(plan.start, s.cumulative_m, seq - 1)),
                                     **_candidate_cells(s.candidate, plan.start), **route, **day))
        writer.writerow(_csv_row(stop=len(r.stops) + 1, leg_m=_return_leg_m(r), cumulative_m=r.distance_m,
                                 kind="return", eta=_minutes(timing.after(plan.start, r.distance_m, len(r.stops))),
                                 note="back at the depot", load_l=round(r.load_l), **route, **depot, **day))
    for c in plan.unserved:
        writer.writerow(_csv_row(kind="unserved", note="due but not planned: the fleet cannot take it (see the warning)",
                                 **_candidate_cells(c, plan.start), **day))
    for bin_id, why in plan.skipped:
        writer.writerow(_csv_row(kind="skipped", bin_id=neutral_cell(bin_id), note=neutral_cell(why), **day))
    for text in plan.warnings:
        writer.writerow(_csv_row(kind="warning", note=neutral_cell(text), **day))
    return buf.getvalue()


def plan_to_geojson(plan: Plan, timing: Timing | None = None) -> dict[str, Any]:
    """Return an RFC 7946 FeatureCollection: a LineString per route, a Point per stop and the depot.

    Coordinates are ``[lon, lat]``; every feature has a ``kind`` property (route, stop, depot,
    unserved). The collection's properties carry the round, the ``warnings`` and the ``skipped`` bins
    (these have no feature: a skipped bin may have no usable location).
    """
    timing = timing or Timing()
    depot = [round(plan.depot.lon, 6), round(plan.depot.lat, 6)]
    features: list[dict[str, Any]] = [{
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": depot},
        "properties": {"kind": "depot", "date": plan.date},
    }]
    for r in plan.routes:
        line = [depot] + [[round(s.candidate.bin.lon, 6), round(s.candidate.bin.lat, 6)] for s in r.stops] + [depot]
        features.append({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": line},
            "properties": {"kind": "route", "vehicle": r.vehicle, "distance_m": r.distance_m,
                           "stops": len(r.stops), "load_l": round(r.load_l, 1), **_route_times(plan, r, timing)},
        })
        for seq, s in enumerate(r.stops, start=1):
            props = _stop_dict(seq, s, plan.start, timing)
            del props["lat"], props["lon"]
            props.update({"kind": "stop", "vehicle": r.vehicle})
            features.append({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [round(s.candidate.bin.lon, 6),
                                                              round(s.candidate.bin.lat, 6)]},
                "properties": props,
            })
    for c in plan.unserved:
        props = _candidate_dict(c, plan.start)
        del props["lat"], props["lon"]
        props["kind"] = "unserved"
        features.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(c.bin.lon, 6), round(c.bin.lat, 6)]},
            "properties": props,
        })
    return {"type": "FeatureCollection", "features": features,
            "properties": {"date": plan.date, "round_start": plan.start.isoformat(),
                           "total_distance_m": plan.total_distance_m, "distance_source": plan.distance_source,
                           "speed_kmh": timing.speed_kmh, "service_s": timing.service_s,
                           "unserved": len(plan.unserved),
                           "skipped": [{"bin_id": b, "reason": why} for b, why in plan.skipped],
                           "warnings": list(plan.warnings)}}


def render(plan: Plan, fmt: str, notice: str | None = None, timing: Timing | None = None) -> str:
    """Render the plan as ``json``, ``csv`` or ``geojson`` text.

    Args:
        plan: The plan (an empty one for a day with nothing to collect).
        fmt: ``json``, ``csv`` or ``geojson``.
        notice: Why the plan has no routes (JSON ``notice``, GeoJSON property, the CSV's ``none`` row).
        timing: How times are estimated (default :class:`Timing`'s defaults).

    Raises:
        InvalidInputError: Unknown format.
    """
    if fmt == "json":
        return plan_to_json(plan, notice, timing)
    if fmt == "csv":
        return plan_to_csv(plan, notice, timing)
    if fmt == "geojson":
        doc = plan_to_geojson(plan, timing)
        if notice is not None:
            doc["properties"]["notice"] = notice
        return json.dumps(doc, ensure_ascii=False) + "\n"
    raise InvalidInputError("format", fmt, "expected one of " + ", ".join(FORMATS))


def render_failure(fmt: str, error: dict[str, Any], day: str | None, round_start: str | None) -> str:
    """What ``--out`` holds after planning failed: the day (when known) and the error, no plan.

    A crew file must not keep yesterday's plan looking current: JSON ``{"date", "round_start", "error"}``
    (the API's error shape), a CSV of one ``error`` row, a GeoJSON FeatureCollection without features.

    Args:
        fmt: ``json``, ``csv`` or ``geojson``.
        error: ``{"code", "message", ...}`` (:meth:`gateway.routes.errors.RoutesError.to_dict`).
        day: The plan's date, None when the command line could not be read.
        round_start: The round start (ISO), None likewise.
    """
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerow(_csv_row(kind="error", note=neutral_cell(f"no plan: {error['message']}"), date=day or "",
                                 round_start=round_start or ""))
        return buf.getvalue()
    head = {"date": day, "round_start": round_start}
    if fmt == "geojson":
        return json.dumps({"type": "FeatureCollection", "features": [],
                           "properties": {**head, "error": error}}, ensure_ascii=False) + "\n"
    return json.dumps({**head, "error": error}, indent=2, ensure_ascii=False) + "\n"
