"""Open data as NGSI-LD entities following the FIWARE Smart Data Models.

``Streetlight`` (dataModel.Streetlighting) and ``WasteContainer`` (dataModel.WasteManagement),
in both NGSI-LD representations: *normalized* (every attribute a ``Property``/``GeoProperty``
object with ``value`` and ``observedAt``) and *keyValues* (attribute -> plain value). Only
released values appear (device integers scaled to the model's units); never keys, never
anything a device did not release. See docs/open-data.md for the mapping and its sources.

Every other kind of the privacy policy is published too, without code: as an entity type of its
own named after the kind (``air`` -> ``Air``, ``air_quality`` -> ``AirQuality``), whose attributes
are its released fields by their policy names and units (:func:`plan`; docs/open-data.md, "Kinds
without a Smart Data Model").
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Collection, Iterable, Mapping

from gateway.web.publication import ENTITY_MARK_S, entity_mark_s
from gateway.web.views import DeviceView

logger = logging.getLogger(__name__)

NGSI_LD_CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
STREETLIGHT_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld"
WASTE_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.WasteManagement/master/context.jsonld"

# The kinds with a Smart Data Model mapping (below); every other kind gets a type of its own (generic_type).
ENTITY_TYPE_BY_KIND = {"streetlight": "Streetlight", "bin": "WasteContainer"}
CONTEXT_BY_TYPE = {"Streetlight": STREETLIGHT_CONTEXT, "WasteContainer": WASTE_CONTEXT}
# What a type made of a kind's name must look like: an NGSI-LD short name that is safe in a URN and a
# URL path, and a query's comma list (``type=A,B``).
GENERIC_TYPE_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# An attribute a policy field becomes (generic kinds): a plain JSON-LD term, no ``:`` (a compact IRI).
ATTRIBUTE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Names a field cannot take as an attribute: NGSI-LD's reserved members, the members every entity here
# has, and the properties the GeoJSON adds to a feature (gateway.web.export.devices_geojson).
RESERVED_ATTRIBUTES = frozenset({
    "id", "type", "scope", "location", "observationSpace", "operationSpace", "createdAt", "modifiedAt",
    "deletedAt", "observedAt", "unitCode", "datasetId", "value", "object", "areaServed", "observationDateTime",
    "entityId", "device", "kind", "zone",
})
# A unit code a policy field gives itself (``"unit_code": "GQ"``): a UN/CEFACT common code's shape.
UNIT_CODE_RE = re.compile(r"^[A-Z0-9]{2,3}$")


def iso_utc(unix_s: int) -> str:
    """Format unix seconds as an ISO 8601 UTC date-time (``2026-01-02T03:04:05Z``)."""
    return datetime.fromtimestamp(unix_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def entity_id(entity_type: str, device_id: str) -> str:
    """Return the NGSI-LD URN of a device's entity (``urn:ngsi-ld:Streetlight:sl-01``)."""
    return f"urn:ngsi-ld:{entity_type}:{device_id}"


# UN/CEFACT Recommendation 20 common codes (the NGSI-LD ``unitCode`` of a Property) by unit symbol:
# the units of the published attributes and of the policy's fields (the open-data dictionary). "1"
# is a plain number or a share ("one"): illuminanceLevel and fillingLevel are published 0..1, not %.
UNIT_CODES = {"W": "WTT", "Wh": "WHR", "°C": "CEL", "%": "P1", "lx": "LUX", "1": "C62", "count": "C62",
              "µg/m³": "GQ"}
# The table by NFKC form, so the micro sign (U+00B5) and the Greek mu (U+03BC) find the same code.
_UNIT_CODES_NFKC = {unicodedata.normalize("NFKC", unit): code for unit, code in UNIT_CODES.items()}
# Units that are no unit: a 0/1 state has neither a code nor a unit text.
NO_UNIT = frozenset({"", "state"})
# The unit of each numeric attribute as published (the device integer scaled to the model's unit).
ATTRIBUTE_UNITS = {"illuminanceLevel": "1", "powerConsumption": "W", "fillingLevel": "1", "temperature": "°C"}


def generic_type(kind: str) -> str:
    """The entity type of a kind without a Smart Data Model mapping: the kind's name in CamelCase
    (``air`` -> ``Air``, ``air_quality`` or ``air-quality`` -> ``AirQuality``)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", kind) if part)


def entity_type(kind: str) -> str:
    """The NGSI-LD entity type of ``kind``'s devices: its Smart Data Model, else :func:`generic_type`."""
    return ENTITY_TYPE_BY_KIND.get(kind) or generic_type(kind)


def attribute_ok(name: str) -> bool:
    """A field of that name can be an attribute of a generic entity (and a GeoJSON property)."""
    return ATTRIBUTE_RE.fullmatch(name) is not None and name not in RESERVED_ATTRIBUTES


def unit_code(unit: str, spec: Mapping[str, Any] | None = None) -> str | None:
    """The UN/CEFACT common code of a field's ``unit``: the policy field's own ``unit_code`` when it
    gives a well-formed one, else :data:`UNIT_CODES`' (None when it has none)."""
    given = spec.get("unit_code") if spec is not None else None
    if isinstance(given, str) and UNIT_CODE_RE.fullmatch(given):
        return given
    return _UNIT_CODES_NFKC.get(unicodedata.normalize("NFKC", unit))


@dataclass(frozen=True)
class Plan:
    """What the entities publish under a privacy policy (:func:`plan`).

    Attributes:
        types: kind -> entity type, in the policy's order, of the kinds whose devices are entities.
        fields: generic kind -> its fields published as attributes, in the policy's order.
        specs: (kind, field) -> the policy's field spec, of every kind in ``types``.
        problems: kind -> why (part of) it is not in the entities, one sentence per kind.
    """

    types: Mapping[str, str]
    fields: Mapping[str, tuple[str, ...]]
    specs: Mapping[tuple[str, str], Mapping[str, Any]]
    problems: Mapping[str, str]

    def entity_types(self) -> list[str]:
        """The published entity types, in the policy's order of their kinds."""
        return list(self.types.values())


def plan(policy: Mapping[str, Any]) -> Plan:
    """What the entities publish of each kind of ``policy``.

    A kind with a Smart Data Model mapping (:data:`ENTITY_TYPE_BY_KIND`) as that model; any other as
    :func:`generic_type`, with each released field an attribute. What cannot be published: a kind
    whose name makes no valid type, or the type of another kind (its devices are in the CSV only),
    and a field whose name cannot be an attribute (:func:`attribute_ok`; in the CSV only).
    """
    kinds: Mapping[str, Any] = policy.get("kinds", {})
    owner = {etype: kind for kind, etype in ENTITY_TYPE_BY_KIND.items()}  # reserved, in the policy or not
    types: dict[str, str] = {}
    fields: dict[str, tuple[str, ...]] = {}
    specs: dict[tuple[str, str], Mapping[str, Any]] = {}
    problems: dict[str, str] = {}
    for kind, kspec in kinds.items():
        fspecs: Mapping[str, Any] = kspec.get("fields", {}) if isinstance(kspec, Mapping) else {}
        etype = entity_type(kind)
        if kind not in ENTITY_TYPE_BY_KIND:
            if not GENERIC_TYPE_RE.fullmatch(etype):
                problems[kind] = (f"no NGSI-LD entity type can be made of the kind's name ({etype!r} is not a"
                                  f" letter followed by letters and digits): its devices are not in the"
                                  f" NGSI-LD entities or GeoJSON, only in the CSV")
                continue
            if etype in owner:
                problems[kind] = (f"its entity type {etype} would be that of kind {owner[etype]!r}: its devices"
                                  f" are not in the NGSI-LD entities or GeoJSON, only in the CSV; rename the kind")
                continue
            owner[etype] = kind
            left_out = [f for f in fspecs if not attribute_ok(f)]
            fields[kind] = tuple(f for f in fspecs if attribute_ok(f))
            if left_out:
                problems[kind] = (f"field(s) {', '.join(left_out)} cannot be entity attributes (a name NGSI-LD or"
                                  f" this gateway reserves, or not a letter followed by letters, digits and _):"
                                  f" not in the NGSI-LD entities or GeoJSON, only in the CSV")
        types[kind] = etype
        specs.update({(kind, f): spec for f, spec in fspecs.items() if isinstance(spec, Mapping)})
        bad_codes = [f for f, spec in fspecs.items() if isinstance(spec, Mapping) and "unit_code" in spec
                     and not (isinstance(spec["unit_code"], str) and UNIT_CODE_RE.fullmatch(spec["unit_code"]))]
        if bad_codes:
            note = (f"the unit_code of field(s) {', '.join(bad_codes)} is not a UN/CEFACT common code (2 or 3"
                    f" capital letters or digits): ignored, the unit is published as text")
            problems[kind] = problems[kind] + "; " + note if kind in problems else note
    return Plan(types=types, fields=fields, specs=specs, problems=problems)


_warned: set[tuple[str, str]] = set()


def warn_unpublished(policy: Mapping[str, Any]) -> Plan:
    """:func:`plan`, logging each kind's problem as one WARNING, once per process (at start, and
    again only when a changed policy has a new one)."""
    p = plan(policy)
    for kind, why in p.problems.items():
        if (kind, why) not in _warned:
            _warned.add((kind, why))
            logger.warning("open data: kind %r is not fully published: %s", kind, why)
    return p


@dataclass(frozen=True)
class _Attr:
    """One attribute of an entity: its value, when it was observed (unix s, the end of the value's
    period or an alarm's :func:`public_alarm_time`; None for a date-time that is itself the time),
    whether the value is a date-time, and the unit of a number."""

    value: Any
    observed_at: int | None = None
    is_datetime: bool = False
    unit: str | None = None


# The finest period an alarm's public time is ever given in (15 minutes): the docs promise no finer.
ALARM_TIME_MIN_S = 900


def alarm_period_s(policy: Mapping[str, Any] | None) -> int:
    """The period an open alarm's public time is given in under ``policy`` (None: the shipped 15
    minutes), for every kind alike: the entities' mark step (:func:`gateway.web.publication.entity_mark_s`,
    at least 15 minutes and at least every kind's window).

    Why the mark step and not the kind's window: an alarm is sent at once, so the mark at which it
    first shows says when it arrived to one mark step. Its public time must cover that whole step, else
    the two together date it finer: with marks every 20 minutes (a 20-minute streetlight window) and a
    bin's tip dated to its quarter hour, a tip first shown at 00:20 and dated 00:15 fell in 00:15-00:20.
    Periods of the mark step start at the marks themselves, so the mark adds nothing to the public time.
    """
    return max(entity_mark_s(policy) if policy is not None else ENTITY_MARK_S, ALARM_TIME_MIN_S)


def public_alarm_time(at: int, period_s: int = ENTITY_MARK_S) -> int:
    """When the open data says an alarm raised at ``at`` (unix s, the device's minute) happened: the
    start of the period of ``period_s`` (:func:`alarm_period_s`; never under :data:`ALARM_TIME_MIN_S`)
    that holds it. A tipped bin is mostly a person, a fire often a cigarette: the minute would date that
    person's act finer than the window values already published (a tilt in that window) do, and no
    policy may make it finer than the documented quarter hour. The operators' ``/api`` keeps the minute."""
    period = max(period_s, ALARM_TIME_MIN_S)
    return at - at % period


def status_alarms(dev: DeviceView) -> tuple[str, ...]:
    """The codes of ``dev``'s open alarms that decide its entity's ``status`` (and so are shown, dated
    by :func:`public_alarm_time`): a streetlight's ``lamp_fail``; a bin's ``fire``, else its ``tip``
    (a tip under a fire is not shown). No other alarm is shown anywhere in the open data, so nothing
    else (its ``Last-Modified`` included) may be dated by one."""
    codes = {a.code for a in dev.alarms}
    if dev.kind == "streetlight":
        return ("lamp_fail",) if "lamp_fail" in codes else ()
    if dev.kind == "bin":
        return ("fire",) if "fire" in codes else ("tip",) if "tip" in codes else ()
    return ()


def status_alarm_time(dev: DeviceView, period_s: int = ENTITY_MARK_S) -> int | None:
    """The public time of the newest alarm that decides ``dev``'s ``status`` (:func:`status_alarms`,
    :func:`public_alarm_time` in periods of ``period_s``); None when none does."""
    shown = status_alarms(dev)
    times = [public_alarm_time(a.at, period_s) for a in dev.alarms if a.code in shown]
    return max(times) if times else None


def _observed(dev: DeviceView, *fields: str, alarm_period_s: int | None = None) -> int | None:
    """The newest time among the periods of ``fields`` and, given ``alarm_period_s``, the alarms that
    decide the status (:func:`status_alarm_time`)."""
    times = [dev.latest_at[f] for f in fields if f in dev.latest_at]
    alarm = status_alarm_time(dev, alarm_period_s) if alarm_period_s is not None else None
    if alarm is not None:
        times.append(alarm)
    return max(times) if times else None


def _number(name: str, value: float, at: int | None) -> _Attr:
    return _Attr(value, at, unit=ATTRIBUTE_UNITS[name])


def _streetlight_attrs(dev: DeviceView, stale: bool, period_s: int = ENTITY_MARK_S) -> dict[str, _Attr]:
    """The attributes of a streetlight's entity.

    A silent (``stale``) lamp has no ``powerState`` or ``illuminanceLevel``: both say how it is set
    now, which nobody knows. Its ``status`` stays what the last evidence says (the model's enum has
    no "unknown", and silence is no evidence of a fault); ``observationDateTime`` tells how old it is.
    """
    latest = dev.latest
    lamp_failed = latest.get("lamp") == 1 or "lamp_fail" in status_alarms(dev)
    attrs: dict[str, _Attr] = {
        # The published enum has no "unknown": a lamp we have no failure evidence for is "ok".
        "status": _Attr("defectiveLamp" if lamp_failed else "ok", _observed(dev, "lamp", alarm_period_s=period_s)),
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


def _container_attrs(dev: DeviceView, stale: bool, period_s: int = ENTITY_MARK_S) -> dict[str, _Attr]:
    """As :func:`_streetlight_attrs`. A silent (``stale``) bin is ``unknown`` unless an open alarm
    says otherwise (an alarm stays open for 24 h, as on the dashboard, where it outranks "stale")."""
    deciding = status_alarms(dev)
    latest = dev.latest
    # The status and what it was observed from: an alarm's public time, or the period of the values read.
    if deciding:
        status = _Attr("burning" if deciding == ("fire",) else "dropped", status_alarm_time(dev, period_s))
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


def _generic_attrs(dev: DeviceView, specs: Mapping[tuple[str, str], Mapping[str, Any]] | None) -> dict[str, _Attr]:
    """The attributes of a device of a kind without a Smart Data Model: each released field by its
    policy name, the value as the device released it, in the policy's unit (none for a 0/1 state);
    a field whose name cannot be an attribute is left out (:func:`attribute_ok`). A silent device
    keeps them: they are measurements, whose ``observedAt`` says how old they are."""
    attrs: dict[str, _Attr] = {}
    for name, value in dev.latest.items():
        if not attribute_ok(name):
            continue
        spec = specs.get((dev.kind, name), {}) if specs is not None else {}
        unit = str(spec.get("unit", ""))
        attrs[name] = _Attr(value, _observed(dev, name), unit=None if unit in NO_UNIT else unit)
    seen = _observed(dev, *dev.latest.keys())
    if seen is not None:
        attrs["observationDateTime"] = _Attr(iso_utc(seen), is_datetime=True)
    return attrs


def _unit_members(unit: str, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """A number's unit in the normalized form: ``unitCode`` when the unit has a UN/CEFACT code, else
    the unit as text in a ``unitText`` sub-property (schema.org's name for it), never a null code."""
    code = unit_code(unit, spec)
    if code is not None:
        return {"unitCode": code}
    return {"unitText": {"type": "Property", "value": unit}}


def device_entity(dev: DeviceView, *, key_values: bool, with_context: bool = True,
                  stale: bool = False, policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the NGSI-LD entity of one device.

    In the normalized form each Property carries its own ``observedAt`` (the end of the period of the
    value it shows, or the start of the period holding the alarm that decides a ``status``,
    :func:`public_alarm_time` in periods of :func:`alarm_period_s`) and a number its
    ``unitCode`` (UN/CEFACT, :data:`UNIT_CODES`); keyValues has the values only.

    Args:
        dev: the device and its latest released values.
        key_values: True for the keyValues (simplified) form, False for normalized.
        with_context: include ``@context`` (omit when the caller wraps entities itself).
        stale: the device has been silent for a while (:func:`gateway.web.liveness.is_stale`, the
            rule ``/api/devices`` calls "stale"): its current state is not claimed.
        policy: the privacy policy: the units of a generic kind's fields (the normalized form's
            ``unitCode`` or ``unitText``; None gives them no unit, keyValues has none anyway) and the
            period an alarm's time is published in (:func:`alarm_period_s`: the entities' mark step,
            never finer than 15 minutes; None: 15 minutes).

    Returns:
        The entity as a JSON-serialisable dict (of type :func:`entity_type`; check that the kind is
        published with :func:`publishable` first).
    """
    etype = entity_type(dev.kind)
    specs = plan(policy).specs if policy is not None and dev.kind not in ENTITY_TYPE_BY_KIND else None
    # An alarm's time is published as the start of the mark step holding it (alarm_period_s).
    period_s = alarm_period_s(policy)
    if dev.kind == "streetlight":
        attrs = _streetlight_attrs(dev, stale, period_s)
    elif dev.kind == "bin":
        attrs = _container_attrs(dev, stale, period_s)
    else:
        attrs = _generic_attrs(dev, specs)
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
                if dev.kind in ENTITY_TYPE_BY_KIND:
                    prop["unitCode"] = UNIT_CODES[attr.unit]
                else:
                    prop.update(_unit_members(attr.unit, (specs or {}).get((dev.kind, name))))
            entity[name] = prop
    if with_context:
        entity["@context"] = context_for([etype])
    return entity


def _has_type(kind: str) -> bool:
    """Without a policy: ``kind`` has a Smart Data Model, or its name makes a type of its own that is
    not one of theirs."""
    return kind in ENTITY_TYPE_BY_KIND or (GENERIC_TYPE_RE.fullmatch(generic_type(kind)) is not None
                                           and generic_type(kind) not in CONTEXT_BY_TYPE)


def publishable(devices: Iterable[DeviceView], policy: Mapping[str, Any] | None = None) -> list[DeviceView]:
    """Devices that belong in the entities: of a kind that has an entity type (one :func:`plan` of
    ``policy`` gives it; without a policy, see :func:`_has_type`), neither revoked nor retired (a retired
    board left this gateway: moved to another one, whose entity speaks for it now, or taken off the street),
    and have released something."""
    kinds = plan(policy).types if policy is not None else None
    return [d for d in devices if (d.kind in kinds if kinds is not None else _has_type(d.kind))
            and not (d.revoked or d.retired) and d.latest]


def entities(
    devices: Iterable[DeviceView], *, key_values: bool, entity_types: Collection[str] | None = None,
    stale: Collection[str] = (), policy: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Build the entities of all publishable devices, optionally of the listed NGSI-LD types only.

    Args:
        devices: the fleet.
        key_values: True for the keyValues (simplified) form, False for normalized.
        entity_types: keep entities of any of these types (an NGSI-LD ``type=A,B`` query); None keeps all.
        stale: ids of the silent devices (:func:`gateway.web.liveness.stale_ids`).
        policy: the privacy policy (which kinds are published, the units of generic kinds' fields).
    """
    return [device_entity(dev, key_values=key_values, stale=dev.id in stale, policy=policy)
            for dev in published(devices, entity_types, policy)]


def published(devices: Iterable[DeviceView], entity_types: Collection[str] | None = None,
              policy: Mapping[str, Any] | None = None) -> list[DeviceView]:
    """The publishable devices whose entities are of any of ``entity_types`` (None: all): the devices
    :func:`entities` shows, for what else a response says about them (its ``Last-Modified``)."""
    return [d for d in publishable(devices, policy)
            if entity_types is None or entity_type(d.kind) in entity_types]


def context_for(types: Iterable[str]) -> list[str]:
    """The ``@context`` list for a response holding entities of ``types``: their Smart Data Models'
    contexts and the core context (a generic type's terms expand by the core context's default
    vocabulary)."""
    ctx = [CONTEXT_BY_TYPE[t] for t in sorted(set(types)) if t in CONTEXT_BY_TYPE]
    return ctx + [NGSI_LD_CORE_CONTEXT]


def describe_mapping(policy: Mapping[str, Any] | None = None) -> Mapping[str, Mapping[str, str]]:
    """Which device field feeds which model attribute (served with the open-data index), per
    published entity type of ``policy`` (None: the two Smart Data Models only).

    Each text of the Smart Data Models is the "from" column of the attribute's row in
    docs/open-data.md without the Markdown backticks (a test compares them), and says what the code
    above computes; a generic kind's say which field each attribute is (docs/open-data.md, "Kinds
    without a Smart Data Model").
    """
    models = _model_mapping()
    if policy is None:
        return models
    p = plan(policy)
    out: dict[str, Mapping[str, str]] = {}
    for kind, etype in p.types.items():
        if kind in ENTITY_TYPE_BY_KIND:
            out[etype] = models[etype]
            continue
        attrs: dict[str, str] = {}
        for name in p.fields[kind]:
            spec = p.specs.get((kind, name), {})
            unit = str(spec.get("unit", ""))
            what = "the latest noisy count" if spec.get("release") == "noisy_count" else "the latest value"
            attrs[name] = f"{name} ({what} as released{'' if unit in NO_UNIT else ', in ' + unit})"
        attrs["observationDateTime"] = "end of the latest released period"
        out[etype] = attrs
    return out


def _model_mapping() -> dict[str, Mapping[str, str]]:
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
