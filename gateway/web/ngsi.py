"""Open data as NGSI-LD entities following the FIWARE Smart Data Models.

``Streetlight`` (dataModel.Streetlighting) and ``WasteContainer`` (dataModel.WasteManagement),
in both NGSI-LD representations: *normalized* (every attribute a ``Property``/``GeoProperty``
object with ``value`` and ``observedAt``) and *keyValues* (attribute -> plain value). Only
released values appear (device integers scaled to the model's units); never keys, never
anything a device did not release. See docs/open-data.md for the mapping and its sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Collection, Iterable, Mapping

from gateway.web.views import DeviceView

NGSI_LD_CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
STREETLIGHT_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld"
WASTE_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.WasteManagement/master/context.jsonld"

ENTITY_TYPE_BY_KIND = {"streetlight": "Streetlight", "bin": "WasteContainer"}
CONTEXT_BY_TYPE = {"Streetlight": STREETLIGHT_CONTEXT, "WasteContainer": WASTE_CONTEXT}


def iso_utc(unix_s: int) -> str:
    """Format unix seconds as an ISO 8601 UTC date-time (``2026-01-02T03:04:05Z``)."""
    return datetime.fromtimestamp(unix_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def entity_id(entity_type: str, device_id: str) -> str:
    """Return the NGSI-LD URN of a device's entity (``urn:ngsi-ld:Streetlight:sl-01``)."""
    return f"urn:ngsi-ld:{entity_type}:{device_id}"


# UN/CEFACT Recommendation 20 common codes (the NGSI-LD ``unitCode`` of a Property) by unit symbol:
# the units of the published attributes and of the policy's fields (the open-data dictionary). "1"
# is a plain number or a share ("one"): illuminanceLevel and fillingLevel are published 0..1, not %.
UNIT_CODES = {"W": "WTT", "Wh": "WHR", "°C": "CEL", "%": "P1", "lx": "LUX", "1": "C62", "count": "C62"}
# The unit of each numeric attribute as published (the device integer scaled to the model's unit).
ATTRIBUTE_UNITS = {"illuminanceLevel": "1", "powerConsumption": "W", "fillingLevel": "1", "temperature": "°C"}


@dataclass(frozen=True)
class _Attr:
    """One attribute of an entity: its value, when it was observed (unix s, the end of the value's
    period or an alarm's minute; None for a date-time that is itself the time), whether the value is
    a date-time, and the unit of a number."""

    value: Any
    observed_at: int | None = None
    is_datetime: bool = False
    unit: str | None = None


def _observed(dev: DeviceView, *fields: str, alarms: Collection[str] = ()) -> int | None:
    """The newest time among the periods of ``fields`` and the open alarms with a code in ``alarms``."""
    times = [dev.latest_at[f] for f in fields if f in dev.latest_at]
    times += [a.at for a in dev.alarms if a.code in alarms]
    return max(times) if times else None


def _number(name: str, value: float, at: int | None) -> _Attr:
    return _Attr(value, at, unit=ATTRIBUTE_UNITS[name])


def _streetlight_attrs(dev: DeviceView, stale: bool) -> dict[str, _Attr]:
    """The attributes of a streetlight's entity.

    A silent (``stale``) lamp has no ``powerState`` or ``illuminanceLevel``: both say how it is set
    now, which nobody knows. Its ``status`` stays what the last evidence says (the model's enum has
    no "unknown", and silence is no evidence of a fault); ``observationDateTime`` tells how old it is.
    """
    codes = {a.code for a in dev.alarms}
    latest = dev.latest
    lamp_failed = latest.get("lamp") == 1 or "lamp_fail" in codes
    attrs: dict[str, _Attr] = {
        # The published enum has no "unknown": a lamp we have no failure evidence for is "ok".
        "status": _Attr("defectiveLamp" if lamp_failed else "ok", _observed(dev, "lamp", alarms=("lamp_fail",))),
    }
    if "lvl" in latest and not stale:
        lvl = max(0, min(100, latest["lvl"]))
        state = "off" if lvl == 0 else "on" if lvl >= 100 else "low"
        attrs["powerState"] = _Attr(state, _observed(dev, "lvl"))
        attrs["illuminanceLevel"] = _number("illuminanceLevel", round(lvl / 100, 2), _observed(dev, "lvl"))
    if "wh" in latest:
        # Energy over one hour in Wh is the mean power over that hour in W.
        attrs["powerConsumption"] = _number("powerConsumption", float(max(0, latest["wh"])), _observed(dev, "wh"))
    if dev.lamp_changed_at is not None:
        attrs["dateLastLampChange"] = _Attr(iso_utc(dev.lamp_changed_at), is_datetime=True)
    seen = _observed(dev, *latest.keys())
    if seen is not None:
        attrs["observationDateTime"] = _Attr(iso_utc(seen), is_datetime=True)
    return attrs


def _container_attrs(dev: DeviceView, stale: bool) -> dict[str, _Attr]:
    """As :func:`_streetlight_attrs`. A silent (``stale``) bin is ``unknown`` unless an open alarm
    says otherwise (an alarm stays open for 24 h, as on the dashboard, where it outranks "stale")."""
    codes = {a.code for a in dev.alarms}
    latest = dev.latest
    # The status and what it was observed from: an alarm's minute, or the period of the values read.
    if "fire" in codes:
        status = _Attr("burning", _observed(dev, alarms=("fire",)))
    elif "tip" in codes:
        status = _Attr("dropped", _observed(dev, alarms=("tip",)))
    elif stale:
        status = _Attr("unknown")
    elif latest.get("tilt") == 1:
        status = _Attr("dropped", _observed(dev, "tilt"))
    elif "tilt" in latest or "fill" in latest:
        status = _Attr("ok", _observed(dev, "tilt", "fill"))
    else:
        status = _Attr("unknown")
    attrs: dict[str, _Attr] = {"status": status}
    if "fill" in latest:
        fill = max(0, min(100, latest["fill"]))
        at = _observed(dev, "fill")
        attrs["fillingLevel"] = _number("fillingLevel", round(fill / 100, 2), at)
        if at is not None:
            attrs["binLoggedTime"] = _Attr(iso_utc(at), is_datetime=True)
    if "temp" in latest:
        attrs["temperature"] = _number("temperature", float(latest["temp"]), _observed(dev, "temp"))
    return attrs


def device_entity(dev: DeviceView, *, key_values: bool, with_context: bool = True,
                  stale: bool = False) -> dict[str, Any]:
    """Build the NGSI-LD entity of one device.

    In the normalized form each Property carries its own ``observedAt`` (the end of the period of the
    value it shows, or the minute of the alarm that decides a ``status``) and a number its
    ``unitCode`` (UN/CEFACT, :data:`UNIT_CODES`); keyValues has the values only.

    Args:
        dev: the device and its latest released values.
        key_values: True for the keyValues (simplified) form, False for normalized.
        with_context: include ``@context`` (omit when the caller wraps entities itself).
        stale: the device has been silent for a while (:func:`gateway.web.liveness.is_stale`, the
            rule ``/api/devices`` calls "stale"): its current state is not claimed.

    Returns:
        The entity as a JSON-serialisable dict.

    Raises:
        KeyError: the device kind has no Smart Data Model here.
    """
    etype = ENTITY_TYPE_BY_KIND[dev.kind]
    attrs = _streetlight_attrs(dev, stale) if etype == "Streetlight" else _container_attrs(dev, stale)
    point = {"type": "Point", "coordinates": [dev.lon, dev.lat]}
    entity: dict[str, Any] = {"id": entity_id(etype, dev.id), "type": etype}
    if key_values:
        entity["location"] = point
        entity["areaServed"] = dev.zone
        entity.update({name: attr.value for name, attr in attrs.items()})
    else:
        entity["location"] = {"type": "GeoProperty", "value": point}
        entity["areaServed"] = {"type": "Property", "value": dev.zone}
        for name, attr in attrs.items():
            prop: dict[str, Any] = {"type": "Property"}
            prop["value"] = {"@type": "DateTime", "@value": attr.value} if attr.is_datetime else attr.value
            if attr.observed_at is not None:
                prop["observedAt"] = iso_utc(attr.observed_at)
            if attr.unit is not None:
                prop["unitCode"] = UNIT_CODES[attr.unit]
            entity[name] = prop
    if with_context:
        entity["@context"] = [CONTEXT_BY_TYPE[etype], NGSI_LD_CORE_CONTEXT]
    return entity


def publishable(devices: Iterable[DeviceView]) -> list[DeviceView]:
    """Devices that belong in open data: known kind, not revoked, and have released something."""
    return [d for d in devices if d.kind in ENTITY_TYPE_BY_KIND and not d.revoked and d.latest]


def entities(
    devices: Iterable[DeviceView], *, key_values: bool, entity_types: Collection[str] | None = None,
    stale: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Build the entities of all publishable devices, optionally of the listed NGSI-LD types only.

    Args:
        devices: the fleet.
        key_values: True for the keyValues (simplified) form, False for normalized.
        entity_types: keep entities of any of these types (an NGSI-LD ``type=A,B`` query); None keeps all.
        stale: ids of the silent devices (:func:`gateway.web.liveness.stale_ids`).
    """
    return [device_entity(dev, key_values=key_values, stale=dev.id in stale)
            for dev in published(devices, entity_types)]


def published(devices: Iterable[DeviceView], entity_types: Collection[str] | None = None) -> list[DeviceView]:
    """The publishable devices whose entities are of any of ``entity_types`` (None: all): the devices
    :func:`entities` shows, for what else a response says about them (its ``Last-Modified``)."""
    return [d for d in publishable(devices) if entity_types is None or ENTITY_TYPE_BY_KIND[d.kind] in entity_types]


def context_for(types: Iterable[str]) -> list[str]:
    """The ``@context`` list for a response holding entities of ``types``."""
    ctx = [CONTEXT_BY_TYPE[t] for t in sorted(set(types)) if t in CONTEXT_BY_TYPE]
    return ctx + [NGSI_LD_CORE_CONTEXT]


def describe_mapping() -> Mapping[str, Mapping[str, str]]:
    """Which device field feeds which model attribute (served with the open-data index).

    Each text is the "from" column of the attribute's row in docs/open-data.md without the
    Markdown backticks (a test compares them), and says what the code above computes.
    """
    return {
        "Streetlight": {
            "status": "latest lamp = 1 or an open lamp_fail alarm → defectiveLamp, else ok",
            "powerState": "lvl (mean scheduled lamp level %, motion boosts excluded): 0 → off, 100 → on, else low;"
                          " left out while the device is silent (stale)",
            "illuminanceLevel": "lvl / 100; left out while the device is silent (stale)",
            "powerConsumption": "wh (lamp energy over the past hour at the scheduled level, Wh) = mean power over"
                                " that hour in W",
            "dateLastLampChange": "start of the last window in which the lamp worked again (lamp = 0 right after"
                                  " the latest lamp_fail alarm or after a window with lamp = 1); only for a"
                                  " lamp_fail alarm raised in the last 7 days",
            "observationDateTime": "end of the latest released period",
        },
        "WasteContainer": {
            "fillingLevel": "fill (%, quantised to 10 % on the device: the level at the end of its latest 6-hour period) / 100",
            "temperature": "temp (°C, 1 °C steps)",
            "status": "open fire alarm → burning; open tip alarm → dropped; silent (stale) → unknown; latest"
                      " tilt = 1 → dropped; ok when fill or tilt was reported; else unknown",
            "binLoggedTime": "end of the period of the latest fill",
        },
    }
