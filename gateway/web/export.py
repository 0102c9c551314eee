"""Open data as CSV and GeoJSON: released values aggregated per device and hour.

The public receives what the policy's ``recipients`` promise: released fields aggregated per
device and hour (counts and energy summed, levels averaged); noisy counts only, never keys.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from gateway.web.ngsi import ENTITY_TYPE_BY_KIND, device_entity, iso_utc, publishable
from gateway.web.views import DeviceView, ReadingView

CSV_COLUMNS = ("hour", "device", "kind", "zone", "field", "unit", "aggregate", "value", "values", "until")
_SUMMED_UNITS = frozenset({"count", "Wh"})


def field_units(policy: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """Map (kind, field) -> unit from the privacy policy."""
    return {
        (kind, name): str(spec.get("unit", ""))
        for kind, kspec in policy.get("kinds", {}).items()
        for name, spec in kspec.get("fields", {}).items()
    }


def hourly_rows(readings: Iterable[ReadingView], policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Aggregate released values per device, UTC hour and field.

    Counts and energy are summed over the hour; levels (%, lx, °C, state) are averaged and
    rounded to one decimal. Values whose period is longer than an hour (6-hour passes, daily
    counts) stay in the hour their period starts; ``until`` says where the row's values end, so
    such a row is not read as one hour's worth.

    Returns:
        Rows with the keys of :data:`CSV_COLUMNS`, sorted by hour, device, field.
    """
    units = field_units(policy)
    groups: dict[tuple[int, str, str], list[ReadingView]] = defaultdict(list)
    for r in readings:
        groups[(r.start - r.start % 3600, r.device, r.field)].append(r)
    rows = []
    for (hour, device, fname), items in sorted(groups.items()):
        first = items[0]
        unit = units.get((first.kind, fname), "")
        values = [r.value for r in items]
        summed = unit in _SUMMED_UNITS
        value: float | int = sum(values) if summed else round(sum(values) / len(values), 1)
        rows.append({
            "hour": iso_utc(hour), "device": device, "kind": first.kind, "zone": first.zone,
            "field": fname, "unit": unit, "aggregate": "sum" if summed else "mean",
            "value": value, "values": len(values), "until": iso_utc(max(r.start + r.length for r in items)),
        })
    return rows


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula (OWASP CSV injection guidance)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Render rows from :func:`hourly_rows` as CSV text with a header line (RFC 4180 quoting)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row[k]) for k in CSV_COLUMNS})
    return buf.getvalue()


def devices_geojson(devices: Iterable[DeviceView]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (RFC 7946) with one Point per publishable device.

    Each feature's properties are the device's keyValues NGSI-LD attributes (model units) plus
    ``kind`` and ``zone``; coordinates are ``[lon, lat]``.
    """
    features = []
    for dev in publishable(devices):
        entity = device_entity(dev, key_values=True, with_context=False)
        props = {k: v for k, v in entity.items() if k not in ("location", "id")}
        props["entityId"] = entity["id"]
        props["device"] = dev.id
        props["kind"] = dev.kind
        props["zone"] = dev.zone
        features.append({
            "type": "Feature",
            "id": dev.id,
            "geometry": entity["location"],
            "properties": props,
        })
    return {"type": "FeatureCollection", "features": features}


__all__ = ["CSV_COLUMNS", "ENTITY_TYPE_BY_KIND", "devices_geojson", "field_units", "hourly_rows", "rows_to_csv"]
