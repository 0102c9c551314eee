"""Read endpoints: devices, readings, hourly aggregates per zone, open alarms, dashboard summary."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Mapping

from aiohttp import web

from gateway.web import params
from gateway.web.context import ctx_of, json_response
from gateway.web.errors import BadParameter, NotFound
from gateway.web.liveness import is_stale
from gateway.web.ngsi import iso_utc
from gateway.web.views import AlarmView, DeviceView, HourlyAggregate, ReadingView

ROUTES = web.RouteTableDef()
DAY_S = 86400
MAX_READINGS = 10000


def device_status(dev: DeviceView, *, now: int, policy: Mapping[str, Any]) -> str:
    """One word for the dashboard: revoked, retired (its board left this gateway: never stale), never (no
    report yet), alarm, stale (silent, the open data's rule: :func:`gateway.web.liveness.is_stale`) or ok."""
    if dev.revoked:
        return "revoked"
    if dev.retired:
        return "retired"
    if dev.last_seen is None:
        return "never"
    if dev.alarms:
        return "alarm"
    if is_stale(dev, now=now, policy=policy):
        return "stale"
    return "ok"


def alarm_json(a: AlarmView) -> dict[str, Any]:
    """JSON form of an alarm."""
    return {"device": a.device, "kind": a.kind, "zone": a.zone, "code": a.code, "at": a.at, "at_iso": iso_utc(a.at)}


def device_json(dev: DeviceView, *, now: int, policy: Mapping[str, Any]) -> dict[str, Any]:
    """JSON form of a device: registry data, status, last seen, link and latest released values."""
    return {
        "id": dev.id, "kind": dev.kind, "zone": dev.zone, "lat": dev.lat, "lon": dev.lon,
        "revoked": dev.revoked,
        "retired": dev.retired,
        "status": device_status(dev, now=now, policy=policy),
        "last_seen": dev.last_seen,
        "last_seen_iso": iso_utc(dev.last_seen) if dev.last_seen is not None else None,
        "link": dev.link,
        # which release the board runs: what an upgrade's reflash is checked by (docs/upgrading.md)
        "fw": dev.fw,
        "latest": dict(dev.latest),
        # a field keeps its last released value: say how old each one is (end of its period)
        "latest_at": dict(dev.latest_at),
        # its last stored report's period end, by its own clock: later than last_seen = its clock runs ahead
        "last_end": dev.last_end,
        "alarms": [alarm_json(a) for a in dev.alarms],
    }


def reading_json(r: ReadingView) -> dict[str, Any]:
    """JSON form of one released value."""
    return {"device": r.device, "kind": r.kind, "zone": r.zone, "field": r.field,
            "start": r.start, "length": r.length, "value": r.value}


def aggregate_json(a: HourlyAggregate) -> dict[str, Any]:
    """JSON form of one zone/hour/field aggregate."""
    return {"zone": a.zone, "hour": a.hour, "hour_iso": iso_utc(a.hour), "field": a.field, "count": a.count,
            "sum": a.total, "mean": round(a.mean, 2), "min": a.minimum, "max": a.maximum, "devices": a.devices}


async def _find_device(request: web.Request, device_id: str) -> DeviceView:
    for dev in await ctx_of(request).fleet.devices():
        if dev.id == device_id:
            return dev
    raise NotFound(f"no device '{device_id}'", code="unknown_device", param="device_id")


@ROUTES.get("/api/devices")
async def list_devices(request: web.Request) -> web.Response:
    """All devices with status, last seen, link and latest values; filters: kind, zone."""
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("kind", "zone"))
    kind = params.parse_choice(q, "kind", sorted(ctx.policy.get("kinds", {})), default=None)
    fleet = await ctx.fleet.devices()
    zone = params.parse_zone(q, (d.zone for d in fleet))
    now = ctx.now()
    devices = [
        device_json(d, now=now, policy=ctx.policy) for d in fleet
        if (kind is None or d.kind == kind) and (zone is None or d.zone == zone)
    ]
    return json_response({"devices": devices, "count": len(devices)})


@ROUTES.get("/api/devices/{device_id}")
async def get_device(request: web.Request) -> web.Response:
    """One device."""
    ctx = ctx_of(request)
    params.reject_unknown(request.query, ())
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    return json_response(device_json(await _find_device(request, device_id), now=ctx.now(), policy=ctx.policy))


@ROUTES.get("/api/readings")
async def list_readings(request: web.Request) -> web.Response:
    """Released values in a time range (default: last 24 h), by device and fields, one page at a time.

    Ordered by (start, device, report, field); ``next`` is the cursor of the following page (pass it
    as ``after`` with the same other parameters), null on the last page.
    """
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("from", "to", "device", "field", "limit", "after"))
    since, until = params.parse_range(q, now=ctx.now(), default_s=DAY_S)
    device = params.parse_device_id(q["device"]) if "device" in q else None
    fields = params.parse_fields(q, ctx.known_fields())
    if device is not None and not await ctx.fleet.device_known(device):
        # As an unknown zone or field: a typo must not answer an empty page as if the device had no data.
        # Only close ids are named (a did-you-mean), never the whole fleet.
        near = await ctx.fleet.similar_devices(device)
        named = [repr(d) for d in near]
        listed = ", ".join(named[:-1]) + " or " + named[-1] if len(named) > 1 else "".join(named)
        hint = f" (did you mean {listed}?)" if named else ""
        raise BadParameter(f"unknown device {device!r}{hint}; GET /api/devices lists the devices", param="device")
    limit = params.parse_int(q, "limit", default=1000, low=1, high=MAX_READINGS)
    after = params.parse_cursor(q, "after")
    rows = await ctx.fleet.readings(since=since, until=until, device=device, fields=fields, limit=limit + 1,
                                    after=after)
    page = rows[:limit]
    truncated = len(rows) > limit
    return json_response({
        "from": since, "to": until, "readings": [reading_json(r) for r in page],
        "count": len(page), "truncated": truncated,
        "next": params.encode_cursor(page[-1].key) if truncated else None,
    })


@ROUTES.get("/api/aggregates/hourly")
async def hourly_aggregates(request: web.Request) -> web.Response:
    """Per zone, UTC hour and field: count, sum, mean, min, max of released values."""
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("from", "to", "zone", "field"))
    since, until = params.parse_range(q, now=ctx.now(), default_s=DAY_S)
    # The known zones come from the fleet snapshot: read only when a zone is asked for (an await in the
    # generator expression would run at once).
    zone = params.parse_zone(q, [d.zone for d in await ctx.fleet.devices()]) if "zone" in q else None
    fields = params.parse_fields(q, ctx.known_fields())
    rows = await ctx.fleet.hourly(since=since, until=until, zone=zone, fields=fields)
    return json_response({"from": since, "to": until, "aggregates": [aggregate_json(a) for a in rows]})


@ROUTES.get("/api/alarms")
async def open_alarms(request: web.Request) -> web.Response:
    """Open safety alarms of all devices, newest first."""
    ctx = ctx_of(request)
    params.reject_unknown(request.query, ())
    alarms = sorted((a for d in await ctx.fleet.devices() for a in d.alarms), key=lambda a: (-a.at, a.device))
    return json_response({"alarms": [alarm_json(a) for a in alarms]})


def fleet_series(rows: list[HourlyAggregate]) -> dict[str, list[dict[str, Any]]]:
    """Fleet-wide hourly series for the dashboard: counts and energy summed, levels averaged."""
    by_field: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for a in rows:
        acc = by_field[a.field][a.hour]
        acc[0] += a.total
        acc[1] += a.count
    series: dict[str, list[dict[str, Any]]] = {}
    for fname, hours in by_field.items():
        summed = fname in ("mot", "wh", "lid")
        series[fname] = [
            {"hour": h, "value": tot if summed else round(tot / cnt, 1)}
            for h, (tot, cnt) in sorted(hours.items()) if cnt
        ]
    return series


@ROUTES.get("/api/dashboard")
async def dashboard_data(request: web.Request) -> web.Response:
    """Everything the dashboard draws, in one call: fleet, alarms, and 24 h series."""
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("hours",))
    hours = params.parse_int(q, "hours", default=24, low=1, high=24 * 14)
    now = ctx.now()
    since = now - now % 3600 - (hours - 1) * 3600
    devices, hourly = await asyncio.gather(
        ctx.fleet.devices(), ctx.fleet.hourly(since=since, until=now + 1, zone=None, fields=["mot", "wh", "fill"]))
    rows = list(hourly)
    alarms = sorted((a for d in devices for a in d.alarms), key=lambda a: (-a.at, a.device))
    fleet = [device_json(d, now=now, policy=ctx.policy) for d in devices]
    counts: dict[str, int] = defaultdict(int)
    for d in fleet:
        counts[d["status"]] += 1
    return json_response({
        "generated_at": now, "generated_at_iso": iso_utc(now), "hours": hours,
        "devices": fleet, "status_counts": dict(counts), "alarms": [alarm_json(a) for a in alarms],
        "series": fleet_series(rows),
    })
