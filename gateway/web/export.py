"""Open data as CSV and GeoJSON: released values aggregated per device and hour.

The public receives what the policy's ``recipients`` promise: released fields aggregated per
device and hour (counts and energy summed, levels averaged); noisy counts only, never keys.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Collection, Iterable, Mapping, Sequence

from gateway.csv_cells import neutral_cell
from gateway.web.ngsi import ENTITY_TYPE_BY_KIND, device_entity, iso_utc, publishable
from gateway.web.views import DeviceHourAggregate, DeviceView

CSV_COLUMNS = ("hour", "device", "kind", "zone", "field", "unit", "aggregate", "value", "values", "until")
# With ``withheld=include``: one more, trailing column, so readers of the ten columns by position or
# name are not disturbed; its rows of withheld values have an empty ``value``.
CSV_STATUS_COLUMNS = (*CSV_COLUMNS, "status")
SUMMED_UNITS = frozenset({"count", "Wh"})
# The CSV's output format: part of its ETag (gateway.web.opendata), which is made of what the export
# is read from rather than of its streamed bytes. Bump it with ANY change to what a row says for the
# same stored reports (columns, values, labels, aggregates, rounding, which reports count), or a
# harvester revalidating a past range keeps its old copy (304) for ever.
CSV_FORMAT_VERSION = 2


def aggregate_of(kind: str, field: str, unit: str, level_periods: Mapping[tuple[str, str], int], *,
                 count: int | None = None, span_s: int | None = None) -> str:
    """How the CSV combines released values of ``field`` of ``kind``: ``sum`` for counts and energy
    (:data:`SUMMED_UNITS`), ``last`` for a level released once per period as its value at the end
    (``level_periods``: :func:`level_release_periods`), else ``mean``.

    For one row, give its ``count`` of values and ``span_s`` (``until - hour``): it is ``last`` only
    when it holds that one value over exactly the release period, so fill rows of 15-minute windows
    stored before 2026-12-05 stay ``mean``. Without them: what the field's rows say by rule (the data
    dictionary)."""
    if unit in SUMMED_UNITS:
        return "sum"
    period = level_periods.get((kind, field))
    if period is not None and (count is None or (count == 1 and span_s == period)):
        return "last"  # not a mean over [hour, until): the level at its end
    return "mean"


def field_units(policy: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """Map (kind, field) -> unit from the privacy policy."""
    return {
        (kind, name): str(spec.get("unit", ""))
        for kind, kspec in policy.get("kinds", {}).items()
        for name, spec in kspec.get("fields", {}).items()
    }


def level_release_periods(policy: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """Map (kind, field) -> release period (s) of the levels a device releases once per period, as
    the level at its end (a bin's ``fill``: ``release_every_s`` of a non-counted field)."""
    return {
        (kind, name): int(spec["release_every_s"])
        for kind, kspec in policy.get("kinds", {}).items()
        for name, spec in kspec.get("fields", {}).items()
        if spec.get("release_every_s") and spec.get("release") != "noisy_count"
        and str(spec.get("unit", "")) not in SUMMED_UNITS
    }


def device_hour_rows(groups: Iterable[DeviceHourAggregate], policy: Mapping[str, Any], *,
                     withheld: bool = False) -> list[dict[str, Any]]:
    """CSV rows (keys of :data:`CSV_STATUS_COLUMNS`) from per device, UTC hour and field aggregates,
    in their order.

    Counts and energy are summed over the hour (``sum``); levels (%, lx, °C, state) are averaged and
    rounded to one decimal (``mean``), except a level released once per period as the level at its
    end (a bin's 6-hourly ``fill``): that row's one value is the level at ``until`` (``last``).
    Values whose period is longer than an hour (6-hour passes, daily counts) stay in the hour their
    period starts; ``until`` says where the row's values end, so such a row is not read as one hour's
    worth.

    A group of withheld values only (``count`` 0: noisy counts below k) is left out, or, with
    ``withheld``, is a row with an empty ``value``, ``values`` 0 and ``status`` ``withheld`` (the
    others: ``released``).
    """
    units = field_units(policy)
    level_periods = level_release_periods(policy)
    rows = []
    for g in groups:
        if g.count == 0 and not withheld:
            continue
        unit = units.get((g.kind, g.field), "")
        aggregate = aggregate_of(g.kind, g.field, unit, level_periods, count=g.count, span_s=g.until - g.hour)
        value: float | int | str
        if g.count == 0:
            value = ""
        else:
            value = g.total if aggregate == "sum" else round(g.total / g.count, 1)
        rows.append({
            "hour": iso_utc(g.hour), "device": g.device, "kind": g.kind, "zone": g.zone,
            "field": g.field, "unit": unit, "aggregate": aggregate,
            "value": value, "values": g.count, "until": iso_utc(g.until),
            "status": "released" if g.count else "withheld",
        })
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, Any]], *, header: bool = True,
                columns: Sequence[str] = CSV_COLUMNS) -> str:
    """Render rows from :func:`device_hour_rows` as CSV text (RFC 4180 quoting), with a header line
    unless ``header`` is False (the later parts of a streamed export); ``columns``:
    :data:`CSV_COLUMNS`, or :data:`CSV_STATUS_COLUMNS` for an export with withheld rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\r\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: neutral_cell(row[k]) for k in columns})
    return buf.getvalue()


def devices_geojson(devices: Iterable[DeviceView], *, stale: Collection[str] = ()) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (RFC 7946) with one Point per publishable device.

    Each feature's properties are the device's keyValues NGSI-LD attributes (model units) plus
    ``kind`` and ``zone``; coordinates are ``[lon, lat]``. ``stale``: ids of the silent devices,
    whose current state is not claimed (:func:`gateway.web.ngsi.device_entity`).
    """
    features = []
    for dev in publishable(devices):
        entity = device_entity(dev, key_values=True, with_context=False, stale=dev.id in stale)
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


__all__ = ["CSV_COLUMNS", "CSV_STATUS_COLUMNS", "ENTITY_TYPE_BY_KIND", "device_hour_rows", "devices_geojson", "field_units",
           "level_release_periods", "rows_to_csv"]
