"""SQLite storage of verified reports: schema, batched writer, provenance chain, read API.

Other layers read through :class:`gateway.storage.queries.ReportQueries` (see docs/gateway.md).
"""

from gateway.storage.queries import (
    AlarmRecord,
    DeviceActivity,
    HourlyAggregate,
    Reading,
    ReportQueries,
    StoredReport,
)
from gateway.storage.store import ReportRecord, ReportStore

__all__ = [
    "AlarmRecord", "DeviceActivity", "HourlyAggregate", "Reading", "ReportQueries", "ReportRecord",
    "ReportStore", "StoredReport",
]
