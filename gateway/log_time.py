"""Log line timestamps that name one moment: local time with its UTC offset."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class IsoTimeFormatter(logging.Formatter):
    """Stamps each line with its local time and UTC offset, ISO 8601 to the millisecond
    (``2026-10-25T02:30:00.123+02:00``): the hour the clocks go back repeats, and a time without its
    offset named two moments (journalctl ``-o short-iso`` shows the offset too)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``record.created`` in the machine's zone (``TZ``), with its offset."""
        return datetime.fromtimestamp(record.created, timezone.utc).astimezone().isoformat(timespec="milliseconds")
