"""What the web layer reads: small immutable views, and the protocols of its data sources.

The web layer never touches SQL: it reads through :class:`FleetSource` (implemented over the
gateway's storage read API by :mod:`gateway.web.source`, whose reads run on worker threads, so
its methods are coroutines) and changes the registry through :class:`FleetAdmin`. Values are the integers the devices released (protocol §2); scaling to
open-data units happens in :mod:`gateway.web.ngsi` and :mod:`gateway.web.export`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

# Re-exported: frozen rows, no SQL.
from gateway.storage.queries import DaySpend as DaySpend
from gateway.storage.queries import DeviceHourAggregate as DeviceHourAggregate
from gateway.storage.queries import HourlyAggregate as HourlyAggregate
from gateway.storage.queries import ReadingKey as ReadingKey


@dataclass(frozen=True)
class AlarmView:
    """A safety alarm a device raised.

    Attributes:
        device: device id.
        code: alarm code from the policy (``lamp_fail``, ``fire``, ``tip``).
        at: unix seconds (rounded down to the minute by the device).
        kind: device kind.
        zone: device zone.
    """

    device: str
    code: str
    at: int
    kind: str = ""
    zone: str = ""


@dataclass(frozen=True)
class DeviceView:
    """One registered device and what it released last.

    Attributes:
        id: device id.
        kind: a kind of the privacy policy (``streetlight``, ``bin``, ...).
        zone: zone name from the registry.
        lat: latitude in degrees (WGS84).
        lon: longitude in degrees (WGS84).
        revoked: the registry revoked its key.
        last_seen: unix seconds of the last stored report, or None.
        link: link of the last stored report (``serial``, ``ble``...), or None.
        latest: field -> latest released integer value.
        latest_at: field -> unix seconds at the END of the period of that value.
        alarms: open alarms of this device.
        lamp_changed_at: unix seconds when a failed lamp was last seen working again, or None.
        fw: firmware version its last stored report names (``civic.VERSION``), or None.
        last_end: unix seconds at the end of the period of its last stored report (by the device's
            clock), or None.
        retired: the registry retired it (its board moved to another gateway or was taken out of
            service): not silent, its frames refused.
    """

    id: str
    kind: str
    zone: str
    lat: float
    lon: float
    revoked: bool = False
    last_seen: int | None = None
    link: str | None = None
    latest: Mapping[str, int] = field(default_factory=dict)
    latest_at: Mapping[str, int] = field(default_factory=dict)
    alarms: tuple[AlarmView, ...] = ()
    lamp_changed_at: int | None = None
    fw: str | None = None
    last_end: int | None = None
    retired: bool = False


@dataclass(frozen=True)
class ReadingView:
    """One released value: field ``field`` of device ``device`` over ``[start, start + length)``,
    from the stored report ``report_id``."""

    device: str
    kind: str
    zone: str
    field: str
    start: int
    length: int
    value: int
    report_id: int = 0

    @property
    def key(self) -> ReadingKey:
        """Its position in the readings order (start, device, report id, field): a page cursor."""
        return (self.start, self.device, self.report_id, self.field)


class FleetSource(Protocol):
    """Read access the web layer needs (see :mod:`gateway.web.source` for the storage adapter).

    Coroutines: an implementation over a store reads on worker threads, never on the event loop.
    """

    async def devices(self, *, published: bool = False) -> Sequence[DeviceView]:
        """All registered devices, sorted by id; their reporting state as of now, or when
        ``published`` as the open-data entities show it: made of the reports received before the
        last quarter-hour mark (:func:`gateway.web.publication.entity_mark`), as of that mark."""
        ...

    async def device_count(self) -> int:
        """How many devices there are; a cheap probe that raises when the store cannot be read."""
        ...

    async def device_known(self, device: str) -> bool:
        """Whether ``device`` is registered (revoked or retired too) or has stored reports."""
        ...

    async def similar_devices(self, device: str) -> list[str]:
        """Known device ids close to ``device`` (a did-you-mean), closest first, at most a few."""
        ...

    async def readings(
        self, *, since: int, until: int, device: str | None, fields: Sequence[str] | None, limit: int,
        after: ReadingKey | None = None,
    ) -> Sequence[ReadingView]:
        """Released values whose period starts in ``[since, until)``, ordered by (start, device,
        report id, field), beginning after the position ``after``; at most ``limit``."""
        ...

    async def hourly(
        self, *, since: int, until: int, zone: str | None, fields: Sequence[str] | None
    ) -> Sequence[HourlyAggregate]:
        """Per zone, hour and field aggregates of values starting in ``[since, until)``."""
        ...

    async def device_hours(
        self, *, since: int, until: int, devices: Sequence[str], fields: Sequence[str] | None, zone: str | None,
        received_before: int | None = None,
    ) -> Sequence[DeviceHourAggregate]:
        """Per device, UTC hour, stored zone and field: count, sum and end of the values of ``devices``,
        for the rows whose period (the hour, or the longer period of its values) ends in
        ``(since, until]``, ordered by hour, device, zone, field; made of the reports received before
        ``received_before`` only, when given (a publication mark)."""
        ...

    async def rows_stamp(
        self, *, since: int, until: int, devices: Sequence[str], zone: str | None, received_before: int,
    ) -> tuple[int, int, int, float | None]:
        """(data version, newest report id, report count, the CSV mark that first published the newest or
        None) of the reports published at the CSV mark ``received_before`` whose values the
        :meth:`device_hours` rows for ``(since, until]`` of ``devices`` (and ``zone``) hold: changes
        whenever those rows may, and not for a report of another range."""
        ...

    async def spend_stamp(
        self, *, first: int, end: int, devices: Sequence[str], zone: str | None, received_before: int,
    ) -> tuple[int, int, int, float | None]:
        """As :meth:`rows_stamp`, of the stored releases :meth:`privacy_spend` counts for the days
        ``[first, end)`` (those whose period ends in them)."""
        ...

    async def repeats_bound(self, *, received_before: int) -> int:
        """The highest ``window_duplicates`` rowid of the repeat releases published at the CSV mark
        ``received_before`` (0: none); never lower than at an earlier mark, whatever the clock does."""
        ...

    async def privacy_spend(self, *, day: int, devices: Sequence[str], fields: Sequence[str], zone: str | None,
                            received_before: int) -> Sequence[DaySpend]:
        """The milli-ε ``devices`` spent on ``fields`` on the UTC day starting at ``day`` (the day the
        releases' periods end), per device and field, ordered by device and field: of the reports and
        repeat releases published at the CSV mark ``received_before``; of zone ``zone`` only, when given."""
        ...

    async def latest_stored(self) -> tuple[int, float] | None:
        """Id and receive time (unix seconds) of the most recently stored report, None when none is."""
        ...

    async def highest_seq(self, device: str) -> int:
        """The highest seq stored under ``device`` (reports, window duplicates, seqs report retention
        removed), 0 when none: a board taking the id over must count above it."""
        ...

    def published_mark(self) -> int:
        """The mark the last published entities are as of (0 before any); held while the clock is
        behind the stored reports, so a device's silence is judged at it."""
        ...

    async def reported(self, devices: Sequence[str], *, received_before: int) -> frozenset[str]:
        """Those of ``devices`` with a report received before ``received_before`` (a CSV mark)."""
        ...

    async def oldest_published(self, *, since: int = 0) -> int | None:
        """The earliest period start, at or after ``since``, of the value reports the entities publish
        (received before their last mark, of the devices not revoked; not a board's ``boot`` report nor
        an alarm), None when there is none: where the published data can begin (the catalogue's
        ``temporal``)."""
        ...


class FleetAdmin(Protocol):
    """Administrative changes behind the admin token."""

    def locations(self) -> Mapping[str, tuple[str, str]]:
        """Registered ``(lat, lon)`` per device id as the registry stores them: decimal strings keeping
        the digits they were given ("4.80"), the form the admin API reads and writes."""
        ...

    def require_registered(self, device_id: str) -> None:
        """Return when the registry holds ``device_id`` (revoked or not); else raise NotFound
        ``unknown_device`` (param ``device_id``)."""
        ...

    def revoke(self, device_id: str) -> None:
        """Revoke a device's key; its reports are rejected from now on. Raises NotFound
        ``unknown_device`` (param ``device_id``) for a device not registered."""
        ...

    def retire(self, device_id: str) -> None:
        """Retire a device (its board left this gateway): its frames are refused, its key and reports kept.
        Raises NotFound ``unknown_device``, Conflict ``already_retired`` or ``revoked`` (param ``device_id``)."""
        ...

    def reinstate(self, device_id: str) -> str | None:
        """Take a retired device back: its frames are accepted again. Returns a warning (what to do) when its
        key is not usable, else None. Raises NotFound ``unknown_device``, Conflict ``not_retired`` or
        ``revoked`` (param ``device_id``)."""
        ...

    def remove(self, device_id: str, *,
               ended: Callable[[Mapping[str, str] | None, BaseException | None], None] | None = None
               ) -> Mapping[str, str]:
        """Delete a device registered by mistake and never heard from (the report store holds nothing of it):
        its registry row and key file; return its ``kind`` and ``zone``. Blocking (the device is retired, the
        gateway's ingest is waited for until it committed what it accepted of it, then the store is checked
        again): call it on a worker thread. Raises NotFound ``unknown_device``, Conflict ``heard_from``,
        ``revoked``, ``reinstated``, ``retired`` or ``changed`` (param ``device_id``; nothing removed),
        Unavailable ``no_store``, ``backend_unavailable``, ``not_settled`` (put back), ``storage_partial``
        (left retired) or ``registry``. ``ended``: called on that thread with the result or the error once the
        removal ended, before the gateway's stop stops waiting for it (the admin API audits a removal whose
        request was cancelled there)."""
        ...

    def rotate_key(self, device_id: str) -> Mapping[str, Any]:
        """Generate a new key; return where it was written (never the key itself). Raises NotFound
        ``unknown_device`` (param ``device_id``) for a device not registered."""
        ...

    def enroll(self, device_id: str, *, kind: str, zone: str, lat: str, lon: str, key: bytes,
               replace: bool, expect_key_sha256: bytes | None = None) -> Mapping[str, Any]:
        """Register a device with the key its provisioning tool generated; idempotent. Returns
        ``{"result": "added" | "unchanged" | "replaced", "key_version": n}`` (never the key). With
        ``expect_key_sha256`` (and ``replace``) only while the device holds the key of that SHA-256 digest:
        Conflict ``conflict`` otherwise, NotFound ``unknown_device`` for an id not registered."""
        ...

    def move(self, device_id: str, *, lat: str, lon: str, zone: str | None) -> Mapping[str, Any]:
        """Set a registered device's location (and zone, when given); never its key. Returns
        ``{"result": "moved" | "unchanged", "zone", "lat", "lon", "was": {"zone", "lat", "lon"}}``."""
        ...

    def retention(self) -> Mapping[str, Mapping[str, int]]:
        """Effective retention in days: kind -> field -> days."""
        ...

    def set_retention(self, kind: str, field: str, days: int) -> str | None:
        """Override the retention of one field of a kind (never longer than the policy allows); return the
        warning when it is shorter than the retention interval (its values outlive it by up to that), else None."""
        ...
