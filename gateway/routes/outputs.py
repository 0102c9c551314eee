"""Plan renderings: JSON (API, archive), CSV (crews), GeoJSON (dashboard map, GIS tools)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from gateway.csv_cells import neutral_cell
from gateway.routes.errors import InvalidInputError
from gateway.routes.model import Candidate, Plan, Stop

#: Output formats and their media types.
FORMATS: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv",
    "geojson": "application/geo+json",
}

CSV_COLUMNS: tuple[str, ...] = (
    "vehicle", "stop", "bin_id", "zone", "lat", "lon", "reason", "expected_fill_pct",
    "fill_now_pct", "load_l", "leg_m", "cumulative_m", "route_distance_m", "reading_at", "reading_age_h",
    "kind", "note", "date", "round_start",
)

#: ``kind`` of a CSV row: a stop; ``none`` (nothing to collect that day) or ``error`` (planning failed),
#: the only row of a file written for a day without a plan (its ``note`` says why).
CSV_KINDS: tuple[str, ...] = ("stop", "none", "error")


def _pct(x: float) -> int:
    return round(x * 100)


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


def _stop_dict(seq: int, s: Stop, start: datetime) -> dict[str, Any]:
    d: dict[str, Any] = {"seq": seq}
    d.update(_candidate_dict(s.candidate, start))
    d["leg_m"] = s.leg_m
    d["cumulative_m"] = s.cumulative_m
    return d


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """Return the plan as JSON-ready data (the ``json`` format and the API's answer)."""
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
        "routes": [
            {
                "vehicle": r.vehicle,
                "distance_m": r.distance_m,
                "load_l": round(r.load_l, 1),
                "stops": [_stop_dict(i, s, plan.start) for i, s in enumerate(r.stops, start=1)],
            }
            for r in plan.routes
        ],
        "unserved": [_candidate_dict(c, plan.start) for c in plan.unserved],
        "skipped": [{"bin_id": b, "reason": why} for b, why in plan.skipped],
        "warnings": list(plan.warnings),
    }


def plan_to_json(plan: Plan, notice: str | None = None) -> str:
    """Return the plan as indented JSON text (with ``notice``, e.g. why it has no routes, when given)."""
    doc = plan_to_dict(plan)
    if notice is not None:
        doc["notice"] = notice
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def plan_to_csv(plan: Plan, notice: str | None = None) -> str:
    """Return one CSV row per stop, in route order, for crews (header in :data:`CSV_COLUMNS`).

    Every row carries the plan's ``date`` and ``round_start``, so a file is never taken for another
    day's. A plan without stops has one row of ``kind`` ``none`` whose ``note`` is ``notice``.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    day = [plan.date, plan.start.isoformat()]
    if not plan.routes:
        writer.writerow([""] * 15 + ["none", neutral_cell(notice or "no bins due"), *day])
    for r in plan.routes:
        for seq, s in enumerate(r.stops, start=1):
            c = s.candidate
            reading_at, age_h = _reading(c, plan.start)
            # Every text cell neutralised as in the open-data CSV (a bin id "-rf" or a zone "=A1" would
            # be a formula); a negative coordinate is a number and stays one.
            writer.writerow([
                r.vehicle, seq, neutral_cell(c.bin.id), neutral_cell(c.bin.zone), f"{c.bin.lat:.6f}",
                f"{c.bin.lon:.6f}", neutral_cell("+".join(x.value for x in c.reasons)), _pct(c.expected_fill),
                "" if c.fill_now is None else _pct(c.fill_now),  # empty: no reading (load assumed full)
                round(c.load_l), s.leg_m, s.cumulative_m, r.distance_m,
                reading_at or "", "" if age_h is None else age_h, "stop", "", *day,
            ])
    return buf.getvalue()


def plan_to_geojson(plan: Plan) -> dict[str, Any]:
    """Return an RFC 7946 FeatureCollection: a LineString per route, a Point per stop and the depot.

    Coordinates are ``[lon, lat]``; every feature has a ``kind`` property (route, stop, depot).
    """
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
                           "stops": len(r.stops), "load_l": round(r.load_l, 1)},
        })
        for seq, s in enumerate(r.stops, start=1):
            props = _stop_dict(seq, s, plan.start)
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
                           "total_distance_m": plan.total_distance_m, "distance_source": plan.distance_source}}


def render(plan: Plan, fmt: str, notice: str | None = None) -> str:
    """Render the plan as ``json``, ``csv`` or ``geojson`` text.

    Args:
        plan: The plan (an empty one for a day with nothing to collect).
        fmt: ``json``, ``csv`` or ``geojson``.
        notice: Why the plan has no routes (JSON ``notice``, GeoJSON property, the CSV's ``none`` row).

    Raises:
        InvalidInputError: Unknown format.
    """
    if fmt == "json":
        return plan_to_json(plan, notice)
    if fmt == "csv":
        return plan_to_csv(plan, notice)
    if fmt == "geojson":
        doc = plan_to_geojson(plan)
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
        writer.writerow([""] * 15 + ["error", neutral_cell(f"no plan: {error['message']}"), day or "",
                                     round_start or ""])
        return buf.getvalue()
    head = {"date": day, "round_start": round_start}
    if fmt == "geojson":
        return json.dumps({"type": "FeatureCollection", "features": [],
                           "properties": {**head, "error": error}}, ensure_ascii=False) + "\n"
    return json.dumps({**head, "error": error}, indent=2, ensure_ascii=False) + "\n"
