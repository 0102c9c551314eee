"""Adapters from the gateway's storage read API and registry to the web layer's views.

:class:`StoreFleetSource` joins the registry (kind, zone, location, revoked) with the report
store (last seen, link, latest released values, alarms); :class:`RegistryAdmin` performs admin
changes on the registry and the retention settings.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Sequence

from gateway.errors import RegistryError
from gateway.storage.queries import ReportQueries, StoredReport
from gateway.web.errors import BadParameter, Conflict, NotFound, Unavailable
from gateway.web.retention import RetentionSettings
from gateway.web.views import AlarmView, DeviceView, HourlyAggregate, ReadingView

logger = logging.getLogger(__name__)

ALARM_OPEN_S = 86400
LAMP_HISTORY_S = 7 * 86400
# An alarm closes when a later window report shows the condition gone (field value 0).
_ALARM_CLEARED_BY = {"lamp_fail": "lamp", "tip": "tilt"}
_REPORT_TYPES = ("win", "hour", "day")


class StoreFleetSource:
    """Read views over ``gateway.storage.ReportQueries`` and ``gateway.registry.Registry``.

    Args:
        store: the storage read API.
        registry: the device registry (source of location and revocation), or None: then only
            devices that reported are listed, without a location (lat = lon = 0).
        policy: the privacy policy (fields per kind).
        clock: unix-seconds clock.
    """

    def __init__(self, *, store: ReportQueries, registry: Any | None, policy: Mapping[str, Any],
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._registry = registry
        self._policy = policy
        self._clock = clock
        self._cache_key: tuple[Any, ...] | None = None
        self._cache: list[DeviceView] = []

    def _fields(self) -> list[str]:
        return sorted({f for k in self._policy.get("kinds", {}).values() for f in k.get("fields", {})})

    def devices(self) -> Sequence[DeviceView]:
        """All devices, registry first; reporting state from the store.

        The snapshot is reused while nothing changed: same number of stored reports, same
        registry rows, same minute (alarms expire and retention runs on the minute scale).
        """
        now = int(self._clock())
        if self._registry is not None:
            base = [(r.id, r.kind, r.zone, float(r.lat), float(r.lon), bool(r.revoked)) for r in self._registry.list()]
        else:
            base = [(a.device, a.kind, a.zone, 0.0, 0.0, False) for a in self._store.devices()]
        key = (self._store.count_reports(), tuple(base), now // 60)
        if key != self._cache_key:
            self._cache = self._snapshot(now, base)
            self._cache_key = key
        return list(self._cache)

    def _snapshot(self, now: int, base: list[tuple[str, str, str, float, float, bool]]) -> list[DeviceView]:
        activity = {a.device: a for a in self._store.devices()}
        latest: dict[str, dict[str, int]] = {}
        latest_at: dict[str, dict[str, int]] = {}
        last_win: dict[str, StoredReport] = {}
        for rtype in _REPORT_TYPES:
            for rep in self._store.latest_per_device(type=rtype):
                if rtype == "win":
                    last_win[rep.device] = rep
                for fname, value in rep.m.items():
                    latest.setdefault(rep.device, {})[fname] = int(value)
                    latest_at.setdefault(rep.device, {})[fname] = rep.w + rep.l
        alarms = self._open_alarms(now, last_win)
        lamp_changes = self._lamp_changes(now)
        out = []
        for dev_id, kind, zone, lat, lon, revoked in base:
            act = activity.get(dev_id)
            out.append(DeviceView(
                id=dev_id, kind=kind, zone=zone, lat=lat, lon=lon, revoked=revoked,
                last_seen=int(act.last_received_at) if act else None, link=act.last_link if act else None,
                latest=latest.get(dev_id, {}), latest_at=latest_at.get(dev_id, {}),
                alarms=tuple(alarms.get(dev_id, ())), lamp_changed_at=lamp_changes.get(dev_id),
            ))
        return sorted(out, key=lambda d: d.id)

    def _open_alarms(self, now: int, last_win: Mapping[str, StoredReport]) -> dict[str, list[AlarmView]]:
        newest: dict[tuple[str, str], AlarmView] = {}
        for rec in self._store.alarms(start=now - ALARM_OPEN_S, end=now + 1):
            clear_field = _ALARM_CLEARED_BY.get(rec.code)
            win = last_win.get(rec.device)
            if clear_field and win is not None and win.w > rec.w and win.m.get(clear_field) == 0:
                continue
            newest[(rec.device, rec.code)] = AlarmView(rec.device, rec.code, rec.w, rec.kind, rec.zone)
        by_device: dict[str, list[AlarmView]] = {}
        for alarm in newest.values():
            by_device.setdefault(alarm.device, []).append(alarm)
        return by_device

    def _lamp_changes(self, now: int) -> dict[str, int]:
        """When a lamp that raised ``lamp_fail`` was first seen working again (lamp changed or repaired).

        Only devices with a ``lamp_fail`` alarm in the last 7 days are read back, so the cost
        follows the number of failures, not the size of the store.
        """
        last_fail: dict[str, int] = {}
        for rec in self._store.alarms(start=now - LAMP_HISTORY_S, end=now + 1):
            if rec.code == "lamp_fail":
                last_fail[rec.device] = max(rec.w, last_fail.get(rec.device, rec.w))
        changed: dict[str, int] = {}
        for device, since in last_fail.items():
            failed = True
            for r in self._store.readings(field="lamp", start=since, end=now + 1, device=device):
                if r.value == 1:
                    failed = True
                elif failed:
                    changed[device] = r.w
                    failed = False
        return changed

    def readings(self, *, since: int, until: int, device: str | None, fields: Sequence[str] | None,
                 limit: int) -> Sequence[ReadingView]:
        """Released values starting in ``[since, until)``, oldest first, at most ``limit``."""
        rows: list[ReadingView] = []
        for fname in fields or self._fields():
            rows.extend(
                ReadingView(r.device, r.kind, r.zone, r.field, r.w, r.l, r.value)
                for r in self._store.readings(field=fname, start=since, end=until, device=device, limit=limit)
            )
        rows.sort(key=lambda r: (r.start, r.device, r.field))
        return rows[:limit]

    def hourly(self, *, since: int, until: int, zone: str | None,
               fields: Sequence[str] | None) -> Sequence[HourlyAggregate]:
        """Per zone/hour/field aggregates of values starting in ``[since, until)``."""
        out: list[HourlyAggregate] = []
        for fname in fields or self._fields():
            out.extend(self._store.hourly_aggregates(field=fname, start=since, end=until, zone=zone))
        out.sort(key=lambda a: (a.hour, a.zone, a.field))
        return out


class RegistryAdmin:
    """Admin operations on ``gateway.registry.Registry`` and :class:`RetentionSettings`.

    Args:
        registry: the device registry.
        policy: the privacy policy (retention maxima).
        retention: retention settings shared with the gateway's retention task; a private
            in-memory one when None.
    """

    def __init__(self, *, registry: Any, policy: Mapping[str, Any],
                 retention: RetentionSettings | None = None) -> None:
        self._registry = registry
        self._retention = retention if retention is not None else RetentionSettings(policy)

    def _record(self, device_id: str) -> Any:
        try:
            return self._registry.get(device_id)
        except RegistryError as exc:
            if exc.reason == "unknown_device":
                raise NotFound(f"no device '{device_id}'", code="unknown_device", param="device_id") from None
            raise Unavailable(f"registry error ({exc.reason})", code="registry") from None

    def revoke(self, device_id: str) -> None:
        """Revoke; 409 when already revoked."""
        if self._record(device_id).revoked:
            raise Conflict(f"device '{device_id}' is already revoked", code="already_revoked", param="device_id")
        self._registry.revoke(device_id)

    def rotate_key(self, device_id: str) -> Mapping[str, Any]:
        """New key written to the registry's key file; returns its path and key version (409 when revoked)."""
        if self._record(device_id).revoked:
            raise Conflict(f"device '{device_id}' is revoked; its key is not rotated (provision the board under "
                           "a new id)", code="revoked", param="device_id")
        path = self._registry.rotate_key(device_id)
        return {"key_file": str(path), "key_version": int(self._registry.get(device_id).key_version)}

    def enroll(self, device_id: str, *, kind: str, zone: str, lat: str, lon: str, key: bytes,
               replace: bool) -> Mapping[str, Any]:
        """Register (or confirm) a device; 400 for bad values, 409 when registered differently."""
        try:
            result = self._registry.enroll(device_id, kind=kind, zone=zone, lat=lat, lon=lon, key=key,
                                           replace=replace)
        except RegistryError as exc:
            reason = exc.reason or "registry"
            if reason in ("bad_value", "bad_key"):
                raise BadParameter(str(exc), param=exc.field or "body") from None
            if reason in ("conflict", "moved", "revoked", "exists"):
                raise Conflict(str(exc), code=reason, param="device_id") from None
            raise Unavailable(f"registry error ({reason})", code="registry") from None
        return {"result": result, "key_version": int(self._registry.get(device_id).key_version)}

    def retention(self) -> Mapping[str, Mapping[str, int]]:
        """Effective retention ``kind -> field -> days``."""
        return self._retention.as_json()

    def set_retention(self, kind: str, field: str, days: int) -> None:
        """Shorten one field's retention (validated against the policy)."""
        self._retention.set(kind, field, days)
