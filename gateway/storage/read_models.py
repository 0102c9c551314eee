"""What the report store's read API (:class:`gateway.storage.queries.ReportQueries`) returns, and the
constants of the stored data its statements are written with.

Frozen dataclasses only, no I/O: the web layer and the routes planner hold these after the read ended.
All times are unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field

# Report types whose ``m`` holds the values released for a period (alarm and boot reports do not).
VALUE_REPORT_TYPES = ("win", "hour", "day")
# The same, as the list of an SQL ``IN (...)``.
VALUE_TYPES_SQL = ", ".join("'%s'" % t for t in VALUE_REPORT_TYPES)
# The ``counters`` row gateway.storage.store increments whenever retention removed stored values.
DATA_VERSION_COUNTER = "data_version"
# No bound on the report id (SQLite's largest integer).
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class StoredReport:
    """One stored report as read back (``m``/``e`` may lack fields removed by retention)."""

    device: str
    seq: int
    kind: str
    zone: str
    type: str
    w: int
    l: int  # noqa: E741 - protocol field name
    m: dict[str, int]
    e: dict[str, int]
    a: list[str]
    fw: str | None
    received_at: float
    gateway_id: str
    link: str


@dataclass(frozen=True)
class Reading:
    """One released measurement of one device for one period."""

    device: str
    zone: str
    kind: str
    field: str
    w: int
    l: int  # noqa: E741 - protocol field name
    value: int
    report_id: int = 0


# Position of a reading in the order of :meth:`gateway.storage.queries.ReportQueries.readings_page`:
# (period start w, device, report id, field).
ReadingKey = tuple[int, str, int, str]


@dataclass(frozen=True)
class DeviceHourAggregate:
    """Released values of one device, stored zone and field whose period starts in one UTC hour.

    Attributes:
        hour: unix seconds of the start of the hour.
        device: device id.
        kind: device kind.
        zone: zone name.
        field: field name.
        count: number of released values.
        total: sum of the values.
        until: where the last of the values' periods ends (unix seconds).
        withheld: releases of the field in the row's periods whose value was withheld (``e`` names
            the field, ``m`` does not: a noisy count below k); not in ``count``.
    """

    hour: int
    device: str
    kind: str
    zone: str
    field: str
    count: int
    total: int
    until: int
    withheld: int = 0


@dataclass(frozen=True)
class ReleasedValue:
    """One released value of one field of a device, with the report it came in.

    Attributes:
        report_id: id of the report that released it.
        w: start of the report's period (unix seconds).
        l: length of the report's period (seconds).
        seq: the report's seq (orders two reports of one period start).
        value: the released integer.
    """

    report_id: int
    w: int
    l: int  # noqa: E741 - protocol field name
    seq: int
    value: int

    @property
    def order(self) -> tuple[int, int]:
        """What "newest" compares: period start, then seq."""
        return (self.w, self.seq)


@dataclass(frozen=True)
class ReportChanges:
    """Reports stored after a report id (see :meth:`gateway.storage.queries.ReportQueries.changes_since`).

    Attributes:
        watermark: the highest report id in the store (pass it back as ``after_id`` next time).
        latest: ``(device, type) -> (report id, report)``: the newest (by period start, then seq)
            of the new reports of that device and type.
        last: ``device -> (report id, report)``: the device's most recently stored new report.
        released: ``(device, field) -> value``: per field, the newest (by period start, then seq)
            value the new ``win``/``hour``/``day`` reports of that device released (a field
            released in its own report, such as a 6-hourly ``win`` count, or absent from the
            newest report, keeps its own newest value).
    """

    watermark: int
    latest: dict[tuple[str, str], tuple[int, StoredReport]]
    last: dict[str, tuple[int, StoredReport]]
    released: dict[tuple[str, str], ReleasedValue] = dataclass_field(default_factory=dict)


@dataclass(frozen=True)
class HourlyAggregate:
    """Readings of one field in one zone, grouped by the UTC hour their period starts in.

    Attributes:
        zone: zone name.
        hour: unix seconds of the start of the hour.
        field: field name.
        count: number of released values that fell in the hour.
        total: sum of the values.
        minimum: smallest value.
        maximum: largest value.
        devices: number of distinct devices contributing.
    """

    zone: str
    hour: int
    field: str
    count: int
    total: int
    minimum: int
    maximum: int
    devices: int

    @property
    def mean(self) -> float:
        """Mean value in the hour (presentation only; stored values stay integers)."""
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True)
class DeviceActivity:
    """What the store knows about a device's reporting."""

    device: str
    kind: str
    zone: str
    last_seq: int
    last_w: int
    last_received_at: float
    last_link: str
    reports: int


@dataclass(frozen=True)
class AlarmRecord:
    """One alarm code raised by a device."""

    device: str
    zone: str
    kind: str
    code: str
    w: int
    seq: int



@dataclass(frozen=True)
class RangeStamp:
    """What the content of a range of periods changes with (see
    :meth:`gateway.storage.queries.ReportQueries.range_stamp`).

    Attributes:
        data_version: removals of stored values so far (retention runs that removed any).
        newest_id: the highest report id with a period start in the range (0: none).
        newest_at: that report's ``received_at`` (None: none).
    """

    data_version: int
    newest_id: int
    newest_at: float | None


@dataclass(frozen=True)
class RowsStamp:
    """What an open-data CSV export's body is made of, as far as its ``ETag`` tells (see
    :meth:`gateway.storage.queries.ReportQueries.csv_rows_stamp` and :meth:`ReportQueries.spend_stamp`).

    Attributes:
        data_version: removals of stored values so far (retention runs that removed any).
        newest_id: the highest id of the reports the body holds (0: none).
        count: how many reports the body holds (their values' rows are in the range).
        newest_at: the ``received_at`` of the newest (None: none).
        removed_at: when retention last removed values from a report the body may hold (unix seconds, the
            gateway's clock, ``RetentionStore.removal_clock``: virtual under ``[sim_clock]``, as the publication
            marks; None: never recorded), :mod:`gateway.storage.retention_removals`.
    """

    data_version: int
    newest_id: int
    count: int
    newest_at: float | None
    removed_at: int | None = None


@dataclass(frozen=True)
class DaySpend:
    """The ε one device spent on one field on one UTC day, as the store holds it.

    Attributes:
        day: unix seconds of the UTC midnight the day starts at: the day of the end of the released
            periods (a device releases a period at its end, and its ledger charges the day its clock
            shows then).
        device: device id.
        field: the released (people-related) field.
        eps_milli: the milli-ε of every release counted, summed.
        releases: how many releases spent it: stored reports naming the field in ``e`` (a withheld
            count too) and repeat releases.
        repeat_releases: of those, the releases of a period released already (``window_duplicates``:
            a device whose ledger was lost released it again; its value is not stored, its ε was spent).
    """

    day: int
    device: str
    field: str
    eps_milli: int
    releases: int
    repeat_releases: int
