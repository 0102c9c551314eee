"""The ε each device spent, per field and UTC day: ``/opendata/privacy-budget.csv`` (QA M1).

``/transparency`` says what a release may spend (ε per release, the most per day); this is what was
spent, from the store's ``e`` maps: the stored releases and the repeat releases of a period a device
released again after losing its ledger (``window_duplicates``: their values are not published, their ε
was spent and went over the radio, docs/privacy.md §4). Integers only (milli-ε). The handler is in
:mod:`gateway.web.opendata` (its parameters, caching and errors are the readings CSV's); this module
reads and formats.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Mapping, Sequence

from aiohttp import web

from gateway.storage.queries import DaySpend, ReportQueries, SpendRead
from gateway.web.errors import Unavailable
from gateway.web.reads import StoreReads

PATH = "/opendata/privacy-budget.csv"
DAY_S = 86400
COLUMNS = ("day", "device", "field", "eps_milli_spent", "releases", "repeat_releases")
# What each column holds (the catalogue's data dictionary; keys: COLUMNS, in that order).
COLUMN_MEANINGS = {
    "day": "UTC date (ISO 8601) of the day the releases were made: the day their period ends, the day the "
           "device's ledger charges",
    "device": "device id",
    "field": "the people-related field (a noisy count) the ε was spent on",
    "eps_milli_spent": "the ε spent on that day, in milli-ε (1000 = ε 1), summed over every release counted",
    "releases": "how many releases spent it (a count withheld below k spent its ε too), repeat releases included",
    "repeat_releases": "of those, releases of a period the device had released already (its privacy ledger was "
                       "lost): their values are not published, their ε was spent",
}


class SpendReads:
    """Reads the ε spent on worker threads of its own (the store's read API is blocking).

    Args:
        store: the gateway's storage read API.
        reads: the worker threads; a private set (one bulk thread) when None, closed by :meth:`close`.
    """

    def __init__(self, store: ReportQueries, reads: StoreReads | None = None) -> None:
        self._store = store
        self._own = reads is None
        self._reads = reads if reads is not None else StoreReads(bulk_threads=1)

    async def spend(self, *, start: int, end: int, devices: Sequence[str], fields: Sequence[str],
                    max_period_s: int, max_id: int, repeats_received_before: float,
                    zone: str | None) -> SpendRead:
        """:meth:`gateway.storage.queries.ReportQueries.privacy_spend` on a bulk thread."""
        if not devices or not fields or end <= start:
            return SpendRead(rows=[], newest_repeat_at=None)
        read = functools.partial(self._store.privacy_spend, start=start, end=end, devices=list(devices),
                                 fields=list(fields), max_period_s=max_period_s, max_id=max_id,
                                 repeats_received_before=repeats_received_before, zone=zone)
        return await self._reads.bulk(read)

    def close(self) -> None:
        """Stop its threads (only those it made)."""
        if self._own:
            self._reads.close()


SPEND_READS_KEY = web.AppKey("civicedge_spend_reads", SpendReads)


def spend_reads_of(request: web.Request) -> SpendReads:
    """The app's :class:`SpendReads`; 503 ``no_store`` for an app built without a report store."""
    got = request.app.get(SPEND_READS_KEY)
    if got is None:
        raise Unavailable("this web app has no report store attached", code="no_store")
    return got


def noisy_fields(policy: Mapping[str, Any]) -> list[str]:
    """The fields of ``policy`` released as noisy counts (the only ones that spend ε), sorted."""
    return sorted({name for kspec in policy.get("kinds", {}).values() for name, spec in kspec.get("fields", {}).items()
                   if isinstance(spec, Mapping) and spec.get("release") == "noisy_count"})


def max_period_s(policy: Mapping[str, Any]) -> int:
    """The longest period a stored report may cover: a day (``day`` reports), or a longer window or
    release period of ``policy`` (the rule of the readings CSV's reads)."""
    periods = [DAY_S]
    for kspec in policy.get("kinds", {}).values():
        periods.append(int(kspec.get("window_s", 0) or 0))
        periods.extend(int(f.get("release_every_s", 0) or 0) for f in kspec.get("fields", {}).values())
    return max(periods)


def day_range(since: int, until: int) -> tuple[int, int]:
    """The UTC days a range ``(since, until]`` (the readings CSV's, whole hours) holds: those that *end*
    after ``since`` and at or before ``until``, as ``[first day, end)`` (UTC midnights; empty when
    ``end <= first day``), so a day is never cut and consecutive ranges give every day once."""
    first = (since // DAY_S + 1) * DAY_S - DAY_S
    end = until // DAY_S * DAY_S
    return first, max(first, end)


def _date(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def filename(first: int, end: int) -> str:
    """The export's file name after the days it holds: ``civicedge-privacy-budget-2026-11-20-2026-11-21.csv``
    (first day and the day after the last, as the readings CSV names its end)."""
    return f"civicedge-privacy-budget-{_date(first)}-{_date(end)}.csv"


def rows_of(spend: Sequence[DaySpend]) -> list[dict[str, Any]]:
    """The CSV rows (:data:`COLUMNS`) of what was read."""
    return [{"day": _date(s.day), "device": s.device, "field": s.field, "eps_milli_spent": s.eps_milli,
             "releases": s.releases, "repeat_releases": s.repeat_releases} for s in spend]
