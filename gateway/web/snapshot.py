"""What the report store says about each device, followed incrementally.

The dashboard, ``/api/devices``, the alarms and the open-data entities all need, per device, the
last stored report, the newest value of each released field, the newest window report and the
open alarms. Computing that from scratch reads the whole store (seconds on a million reports),
and a gateway commits every 50 ms, so :class:`FleetState` reads the store once and then only the
reports stored since (report ids only grow): a refresh costs what was stored since the previous
one. Rows already held are read again by id once a minute, so fields that retention removed from
them disappear here too.

:meth:`FleetState.refresh` blocks on SQLite: call it from a worker thread
(:class:`gateway.web.reads.StoreReads`), never on the event loop.

The public open data reads a second :class:`FleetState` that is only ever refreshed up to the
reports received before a publication mark (``upto``, see :mod:`gateway.web.publication`), as of
that mark: it holds the fleet as published, while the operators' one follows every commit.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Mapping

from gateway.storage.queries import AlarmRecord, ReleasedValue, ReportQueries, StoredReport
from gateway.web.views import AlarmView

ALARM_OPEN_S = 86400
LAMP_HISTORY_S = 7 * 86400
RECHECK_S = 60
# An alarm closes when a later window report shows the condition gone (field value 0).
_ALARM_CLEARED_BY = {"lamp_fail": "lamp", "tip": "tilt"}


@dataclass(frozen=True)
class DeviceState:
    """A device as the store knows it (only devices that reported have one).

    Attributes:
        kind: kind recorded with its last stored report.
        zone: zone recorded with its last stored report.
        last_seen: unix seconds when its last stored report was received.
        link: link its last stored report came on.
        latest: field -> latest released value: per field, the value of the newest period (by
            start, then seq) of the ``win``/``hour``/``day`` reports that released it, so a field
            released in its own report (a 6-hourly count) or missing from the newest one shows too.
        latest_at: field -> end of the period of that value.
        alarms: open alarms.
        lamp_changed_at: when a failed lamp was first seen working again, or None.
        fw: the firmware version its last stored report names, or None when it named none.
        last_end: end of the period of its last stored report (``w + l``), by its clock.
    """

    kind: str
    zone: str
    last_seen: int
    link: str
    latest: Mapping[str, int] = field(default_factory=dict)
    latest_at: Mapping[str, int] = field(default_factory=dict)
    alarms: tuple[AlarmView, ...] = ()
    lamp_changed_at: int | None = None
    fw: str | None = None
    last_end: int | None = None


@dataclass(frozen=True)
class FleetData:
    """One consistent view of the fleet: ``devices`` maps a device id to its :class:`DeviceState`;
    ``watermark`` is the highest report id it includes."""

    watermark: int
    devices: Mapping[str, DeviceState]


class FleetState:
    """Per-device state of a report store, kept up to date by :meth:`refresh`.

    Args:
        store: the storage read API (one connection per thread).
        recheck_s: how often rows already held are read again (retention removes fields).
        bounded: the state is refreshed with ``upto`` (a publication's bound): then its alarm and
            lamp reads, too, see only the reports up to its watermark.
    """

    def __init__(self, store: ReportQueries, *, recheck_s: int = RECHECK_S, bounded: bool = False) -> None:
        self._store = store
        self._bounded = bounded
        self._recheck_s = max(1, recheck_s)
        self._lock = threading.Lock()
        self._watermark = 0
        self._latest: dict[tuple[str, str], tuple[int, StoredReport]] = {}  # (device, "win")
        self._released: dict[tuple[str, str], ReleasedValue] = {}
        self._last: dict[str, tuple[int, StoredReport]] = {}
        self._checked_slot: int | None = None
        self._data: FleetData | None = None
        self._data_key: tuple[int, int] | None = None

    def fork(self) -> FleetState:
        """An unbounded state holding what this one has read (every field; its containers copied): its
        next :meth:`refresh` reads only the reports stored after this one's watermark, and derives the
        fleet anew (alarms and lamp history unbounded, as of the time it is given). The result is what a
        fresh unbounded state reading the whole store would give: every merge is by report id or
        (period start, seq), whatever the split. How the public fleet (bounded, at a publication mark)
        becomes the operators' one without reading the store twice."""
        with self._lock:
            other = copy.copy(self)
            for name, value in vars(self).items():
                if isinstance(value, (dict, list, set)):
                    setattr(other, name, copy.copy(value))
        other._lock = threading.Lock()
        other._bounded = False
        other._data = other._data_key = None  # derived anew, unbounded, at its first refresh
        return other

    @property
    def loaded(self) -> bool:
        """True once the store was read in full (later refreshes read only new reports)."""
        return self._data is not None

    def refresh(self, now: int, *, upto: int | None = None) -> FleetData:
        """Read what was stored since the last refresh and return the fleet as of ``now``.

        ``upto``: read only the reports with an id up to it (a publication mark's bound; a bound
        below what the state holds leaves it as it is: it never goes back).

        Blocks on SQLite (the first call reads the whole store once). Raises
        :class:`gateway.errors.StorageError` when the store cannot be read.
        """
        with self._lock:
            self._read(upto)
            slot = now // self._recheck_s
            if self._checked_slot is not None and slot != self._checked_slot and not self._recheck():
                # A held row is gone (report-row retention removes emptied rows past their kind's
                # retention: a device silent that long). What replaces it (the device's newest row
                # left, or none) is known only to a read of the whole store, as at a cold start.
                self._latest.clear()
                self._released.clear()
                self._last.clear()
                self._watermark = 0
                self._read(upto)
                self._data_key = None
            self._checked_slot = slot
            # Open alarms depend on the time too: derive again on new reports or a new minute.
            data_key = (self._watermark, now // 60)
            if self._data is None or data_key != self._data_key:
                self._data = FleetData(watermark=self._watermark, devices=self._derive(now))
                self._data_key = data_key
            return self._data

    def _read(self, upto: int | None) -> None:
        """Merge what was stored after the watermark (up to ``upto``)."""
        changes = self._store.changes_since(self._watermark, upto=upto)
        for key, (rid, rep) in changes.latest.items():
            if key[1] != "win":
                continue  # only the newest window is needed (alarms it clears)
            held = self._latest.get(key)
            if held is None or (rep.w, rep.seq) > (held[1].w, held[1].seq):
                self._latest[key] = (rid, rep)
        for fkey, value in changes.released.items():
            held_value = self._released.get(fkey)
            if held_value is None or value.order > held_value.order:
                self._released[fkey] = value
        self._last.update(changes.last)  # ids only grow: a new report is the last one stored
        self._watermark = changes.watermark

    def _recheck(self) -> bool:
        """Read the held rows again: retention may have removed fields from them since. Return
        False when a held row is gone altogether (the caller reads the store again).

        A released value whose field its row no longer holds is dropped: retention removes a
        field from every row whose period ended before its cutoff, so the older periods of that
        field (one release period per field) lost it too.
        """
        held = ([rid for rid, _ in self._latest.values()] + [rid for rid, _ in self._last.values()]
                + [v.report_id for v in self._released.values()])
        fresh = self._store.reports_by_id(held)
        if any(rid not in fresh for rid in held):
            return False
        for key, (rid, _) in list(self._latest.items()):
            if rid in fresh:
                self._latest[key] = (rid, fresh[rid])
        for (device, fname), value in list(self._released.items()):
            row = fresh.get(value.report_id)
            if row is not None and fname not in row.m:
                del self._released[(device, fname)]
        for device, (rid, _) in list(self._last.items()):
            if rid in fresh:
                self._last[device] = (rid, fresh[rid])
        self._data_key = None
        return True

    def _derive(self, now: int) -> dict[str, DeviceState]:
        latest: dict[str, dict[str, int]] = {}
        latest_at: dict[str, dict[str, int]] = {}
        for (device, fname), value in sorted(self._released.items()):
            latest.setdefault(device, {})[fname] = value.value
            latest_at.setdefault(device, {})[fname] = value.w + value.l
        last_win = {device: rep for (device, _type), (_rid, rep) in self._latest.items()}
        # one read for both: the lamp history's 7 days hold the 24 h of open alarms
        max_id = self._watermark if self._bounded else None
        recent = self._store.alarms(start=now - LAMP_HISTORY_S, end=now + 1, max_id=max_id)
        alarms = self._open_alarms(now, last_win, recent)
        lamp_changes = self._lamp_changes(now, recent, max_id)
        return {
            device: DeviceState(
                kind=rep.kind, zone=rep.zone, last_seen=int(rep.received_at), link=rep.link,
                latest=latest.get(device, {}), latest_at=latest_at.get(device, {}),
                alarms=tuple(alarms.get(device, ())), lamp_changed_at=lamp_changes.get(device), fw=rep.fw,
                last_end=rep.w + rep.l,
            )
            for device, (_, rep) in sorted(self._last.items())
        }

    def _open_alarms(self, now: int, last_win: Mapping[str, StoredReport],
                     recent: list[AlarmRecord]) -> dict[str, list[AlarmView]]:
        newest: dict[tuple[str, str], AlarmView] = {}
        for rec in recent:
            if rec.w < now - ALARM_OPEN_S:
                continue
            clear_field = _ALARM_CLEARED_BY.get(rec.code)
            win = last_win.get(rec.device)
            if clear_field and win is not None and win.w > rec.w and win.m.get(clear_field) == 0:
                continue
            newest[(rec.device, rec.code)] = AlarmView(rec.device, rec.code, rec.w, rec.kind, rec.zone)
        by_device: dict[str, list[AlarmView]] = {}
        for alarm in newest.values():
            by_device.setdefault(alarm.device, []).append(alarm)
        return by_device

    def _lamp_changes(self, now: int, recent: list[AlarmRecord], max_id: int | None) -> dict[str, int]:
        """When a lamp that raised ``lamp_fail`` was first seen working again (lamp changed or repaired).

        Only devices with a ``lamp_fail`` alarm in the last 7 days are read back, so the cost
        follows the number of failures, not the size of the store.
        """
        last_fail: dict[str, int] = {}
        for rec in recent:
            if rec.code == "lamp_fail":
                last_fail[rec.device] = max(rec.w, last_fail.get(rec.device, rec.w))
        changed: dict[str, int] = {}
        for device, since in last_fail.items():
            failed = True
            for r in self._store.readings(field="lamp", start=since, end=now + 1, device=device, max_id=max_id):
                if r.value == 1:
                    failed = True
                elif failed:
                    changed[device] = r.w
                    failed = False
        return changed
