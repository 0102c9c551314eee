"""The ε each device spent, per field and UTC day: ``/opendata/privacy-budget.csv`` (QA M1).

``/transparency`` says what a release may spend (ε per release, the most per day); this is what was
spent, from the store's ``e`` maps: the stored releases and the repeat releases of a period a device
released again after losing its ledger (``window_duplicates``: their values are not published, their ε
was spent and went over the radio, docs/privacy.md §4). Integers only (milli-ε). The handler is in
:mod:`gateway.web.opendata` (its parameters, caching, errors and day-by-day reads are the readings CSV's);
the store is read through the fleet (``FleetSource.privacy_spend``); this module names and formats.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from gateway.policy_rules import people_fields
from gateway.web.views import DaySpend

PATH = "/opendata/privacy-budget.csv"
DAY_S = 86400
# Named in the export's ETag with the policy: a change of how rows are made of the store gives a past
# range a new ETag (as the readings CSV's format version does).
FORMAT_VERSION = 1
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


def noisy_fields(policy: Mapping[str, Any]) -> list[str]:
    """The fields of ``policy`` released as noisy counts (the only ones that spend ε), sorted: the
    people-related fields of every kind (:func:`gateway.policy_rules.people_fields`)."""
    return sorted({name for kspec in policy.get("kinds", {}).values() for name in people_fields(kspec)})


def day_range(since: int, until: int) -> tuple[int, int]:
    """The UTC days a range ``(since, until]`` (the readings CSV's, whole hours) holds: those that *end*
    after ``since`` and at or before ``until``, as ``[first day, end)`` (UTC midnights; empty when
    ``end <= first day``), so a day is never cut and consecutive ranges give every day once."""
    first = since // DAY_S * DAY_S
    end = until // DAY_S * DAY_S
    return first, max(first, end)


def _date(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def filename(first: int, end: int) -> str:
    """The export's file name after the days it holds: ``civicedge-privacy-budget-2026-11-20-2026-11-21.csv``
    (first day and the day after the last, as the readings CSV names its end)."""
    return f"civicedge-privacy-budget-{_date(first)}-{_date(end)}.csv"


def days(first: int, end: int) -> list[tuple[int, int]]:
    """The UTC days ``[first, end)`` (midnights) as ``(start, end)`` pairs: the export reads one at a time."""
    return [(day, day + DAY_S) for day in range(first, end, DAY_S)]


def rows_of(spend: Sequence[DaySpend]) -> list[dict[str, Any]]:
    """The CSV rows (:data:`COLUMNS`) of what was read."""
    return [{"day": _date(s.day), "device": s.device, "field": s.field, "eps_milli_spent": s.eps_milli,
             "releases": s.releases, "repeat_releases": s.repeat_releases} for s in spend]
