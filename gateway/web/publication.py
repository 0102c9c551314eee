"""Publication marks: the times at which the public open data may change.

An answer that changes when a report is stored tells whoever polls it when the report arrived (its
``ETag``, its body, its ``Last-Modified``), and a bin's late reports are delivered at the wake of a
lid opening: a person's deposit. So every public answer (``/opendata/...``) is built only from the
reports received before the last publication mark, and changes only at marks:

* the NGSI-LD and GeoJSON entities: the last quarter hour (hh:00, :15, :30, :45), the window
  length, so an arrival is known no finer than the 15 minutes the data itself has;
* the CSV: the last hh:05 (its rows are whole hours and its default ``to`` moves at hh:05 already,
  see ``gateway.web.opendata.complete_until``), so a late report for a past range shows at the
  next hh:05, known to the hour.

A report received after a mark shows at the next one. Operator surfaces (``/api/*``, the dashboard,
MQTT, ``/metrics``) are not bounded. Marks follow the gateway's clock (simulated under
``[sim_clock]``), the clock that stamps ``received_at``.

What a kind of answer last published (its bound and mark) never goes back, even when the clock does;
it is kept in the store's ``meta`` table under :func:`published_key` (:func:`encode_published`), so a
restart with the clock behind resumes from it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from gateway.storage.meta_keys import PUBLISHED_META_PREFIX

# The entities' marks: a quarter hour, the window of every kind the shipped policy has. A policy with
# a longer window makes them that long (entity_mark_s): a mark finer than the data's window would
# date an arrival finer than the data itself.
ENTITY_MARK_S = 900
HOUR_S = 3600
# The CSV's marks are this far past the hour: its ingest lag (gateway.web.opendata.INGEST_LAG_S, the
# same value, a test holds them equal; not imported, as the open-data handlers import this module).
CSV_MARK_OFFSET_S = 300


def entity_mark_s(policy: Mapping[str, Any]) -> int:
    """The entities' mark interval under ``policy``: :data:`ENTITY_MARK_S`, or the longest window of its
    kinds (all published) when longer (review LOW6): a kind's ``window_s``, else the policy's default
    ``window_s``, as ``gateway.web.liveness.window_of`` reads it. Open alarms are dated in periods of
    this length too (``gateway.web.ngsi.alarm_period_s``)."""
    default = policy.get("defaults", {}).get("window_s", 0)
    windows = [int(kind.get("window_s", default) or 0) for kind in policy.get("kinds", {}).values()]
    return max([ENTITY_MARK_S, *windows])


def entity_mark(now: float, step: int = ENTITY_MARK_S) -> int:
    """The last mark at or before ``now`` (every ``step`` s, :func:`entity_mark_s`; a quarter hour by
    default): the entities show the reports received before it."""
    t = int(now)
    return t - t % step


def csv_mark(now: float) -> int:
    """The last hh:05 at or before ``now``: the CSV shows the reports received before it (its default
    ``to``, ``gateway.web.opendata.complete_until``, moves at the same time)."""
    t = int(now) - CSV_MARK_OFFSET_S
    return t - t % HOUR_S + CSV_MARK_OFFSET_S


def csv_published_at(received_at: float) -> int:
    """The first CSV mark after ``received_at``: when a report received then was first published (the
    CSV's ``Last-Modified``, so it dates an arrival to the hour only)."""
    return csv_mark(received_at) + HOUR_S


def csv_removal_mark(removed_at: float) -> int:
    """What a CSV range retention removed values from at ``removed_at`` is dated no earlier than (its
    ``Last-Modified``, before the ``Date`` bound): the minute after the removal's own minute, which is never
    earlier than the minute after the last CSV mark at or before it (hh:06). Later than any date the range had
    before the removal (a body served before it holds reports published at that mark at the latest, and was
    served, so dated, before ``removed_at``), and later than the date of a copy fetched after an earlier
    removal of the same hour (a pass every 10 minutes, or one pass's batches with requests served between
    them): dating every removal of an hour hh:06 let ``wget -N``/``curl -z`` keep the copy fetched between
    them (review H1). The minute is the gateway's retention schedule (its start, ``[retention] interval_s``
    and how many rows a pass goes through), not anyone's activity: retention removes values by their period's
    age alone."""
    t = int(removed_at)
    return max(csv_mark(t) + 60, t - t % 60 + 60)


# The store's ``meta`` key prefix of what each kind of public answer (``entities``, ``csv``) published last
# (gateway.storage.meta_keys: ReportStore.save_meta writes only keys with it, the web's writer only those).
PUBLISHED_KEY_PREFIX = PUBLISHED_META_PREFIX


def published_key(kind: str) -> str:
    """The ``meta`` key of what the public answers of ``kind`` (``entities`` or ``csv``) published last."""
    return PUBLISHED_KEY_PREFIX + kind


def micros(received_at: float) -> int:
    """A receive time in whole microseconds, as :func:`encode_published` saves it (the same float always
    gives the same number)."""
    return round(received_at * 1_000_000)


def encode_published(bound: int, mark: int, received_at: float) -> str:
    """The ``meta`` value of a published (bound, mark) and the receive time of report ``bound`` (what ties
    the value to its store): three decimal integers, the last in microseconds."""
    return "%d %d %d" % (bound, mark, micros(received_at))


def decode_published(text: str) -> tuple[int, int, int] | None:
    """The (bound, mark, receive time in µs) of a ``meta`` value written by :func:`encode_published`; None
    for anything else."""
    if re.fullmatch(r"[0-9]{1,18} [0-9]{1,18} [0-9]{1,18}", text) is None:
        return None
    bound, mark, received_us = text.split(" ")
    return int(bound), int(mark), int(received_us)
