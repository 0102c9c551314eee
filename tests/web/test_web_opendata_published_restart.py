"""What the public open data published never goes back across a restart with the clock behind.

The bound of each kind of public answer (entities, CSV) was kept in memory only: after a restart with
the clock behind, publication resumed at the mark before the newest stored report's receive time, so
a report published at a later mark (the gateway had run past it) disappeared from the answers until
the clock passed that mark again. :class:`StoreFleetSource` now saves what it published in the
store's ``meta`` table (through ``save_meta``: the web layer reads the store read-only, the store's
writer writes, ``ReportStore.save_meta``) and reads it back at start.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest

from gateway.resources import load_policy
from gateway.storage.store import ReportRecord
from gateway.web import publication
from gateway.web.publication import csv_mark, entity_mark
from gateway.web.source import StoreFleetSource

from .support import NOW, Fleet

H = 3600
RUN_UNTIL = NOW + H + 1200    # 13:20: the entities' mark 13:15, the CSV's 13:05
RESTART_AT = NOW - 1200       # 11:40, behind the newest report (12:50)
PAST = (NOW - 6 * H, NOW - 3 * H)


def _source(fleet: Fleet, now: float, *, saving: bool = True) -> StoreFleetSource:
    async def save_meta(key: str, value: str) -> None:  # what the gateway service passes
        await fleet.ingest.run_in_store(fleet.store.save_meta, key, value)

    return StoreFleetSource(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                            clock=lambda: now, save_meta=save_meta if saving else None)


async def _published(source: StoreFleetSource, now: float) -> tuple[Any, ...]:
    """What the public answers are made of at ``now``: the CSV's rows of a past range, the entities'
    fleet, and the mark the entities are as of."""
    rows = await source.device_hours(since=PAST[0], until=PAST[1], devices=["bin-01", "bin-02"], fields=None,
                                     zone=None, received_before=csv_mark(now))
    entities = await source.devices(published=True)
    return tuple(rows), tuple(entities), source.published_mark()


async def test_a_restart_with_the_clock_behind_keeps_what_was_published_at_later_marks(fleet: Fleet) -> None:
    # A late window of bin-02 for 07:00 received at 12:50: in the CSV's 06:00-09:00 rows from 13:05 on.
    fleet.store.insert_batch([ReportRecord(
        device="bin-02", seq=70_000, kind="bin", zone="north", type="win", w=NOW - 5 * H, l=900,
        m={"temp": 9, "tilt": 0, "bat": 60}, e={}, a=[], fw=None, received_at=NOW + 3000,
        link="serial:/dev/pts/9", digest="%064x" % 70_000)])
    running = _source(fleet, RUN_UNTIL)
    try:
        published = await _published(running, RUN_UNTIL)
    finally:
        await running.aclose()
    assert published[2] == entity_mark(RUN_UNTIL) == NOW + H + 900
    assert any(r.device == "bin-02" and r.count == 5 for r in published[0])  # 4 windows of the hour + the late one
    saved = fleet.queries.meta_values(publication.PUBLISHED_KEY_PREFIX)
    newest, newest_at = fleet.queries.last_report_stamp() or (0, 0.0)
    assert saved == {"published:entities": publication.encode_published(newest, NOW + H + 900, newest_at),
                     "published:csv": publication.encode_published(newest, csv_mark(RUN_UNTIL), newest_at)}

    restarted = _source(fleet, RESTART_AT)
    try:
        assert await _published(restarted, RESTART_AT) == published
    finally:
        await restarted.aclose()

    # Without the saved marks (a store last run without save_meta) the CSV went back to the 12:05 mark,
    # before the late window arrived, and the entities' mark to 12:45: what this change fixes.
    for kind in ("entities", "csv"):
        conn = sqlite3.connect(str(fleet.store.path), isolation_level=None)
        conn.execute("DELETE FROM meta WHERE key = ?", (publication.published_key(kind),))
        conn.close()
    unsaved = _source(fleet, RESTART_AT, saving=False)
    try:
        before = await _published(unsaved, RESTART_AT)
    finally:
        await unsaved.aclose()
    assert before[2] == NOW + 2700 and before[0] != published[0]
    assert not any(r.device == "bin-02" and r.count == 5 for r in before[0])


async def test_a_saved_bound_above_the_newest_report_is_ignored(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """A bound the store cannot have given (above its newest report) would publish the reports stored
    later at once, whatever their arrival: it is ignored, with a WARNING naming the key."""
    newest, newest_at = fleet.queries.last_report_stamp() or (0, 0.0)
    fleet.store.save_meta(publication.published_key("entities"),
                          publication.encode_published(newest + 50, NOW + 4 * H, newest_at))
    fleet.store.save_meta(publication.published_key("csv"), "not a bound")
    source = _source(fleet, NOW + 600)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.web.published_marks"):
            await source.devices(published=True)
        assert source.published_mark() == NOW  # 12:00, the clock's own mark
    finally:
        await source.aclose()
    ignored = sorted(r.getMessage().split(" = ")[0] for r in caplog.records if "ignoring meta" in r.getMessage())
    assert ignored == ["open data: ignoring meta published:csv", "open data: ignoring meta published:entities"]
    # Overwritten with what was published now.
    assert fleet.queries.meta_values("published:entities") == {
        "published:entities": publication.encode_published(newest, NOW, newest_at)}


def test_published_values_round_trip_and_anything_else_is_refused() -> None:
    assert publication.decode_published(publication.encode_published(123, NOW, NOW - 0.25)) == (
        123, NOW, NOW * 1_000_000 - 250_000)
    for bad in ("", "1", "1 2", "1 2 3 4", "-1 5 6", "1  2 3", "١ ٢ ٣", "1 2 3\n", "x y z"):
        assert publication.decode_published(bad) is None, bad
