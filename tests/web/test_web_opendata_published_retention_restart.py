"""A saved publication bound whose row retention removed is read back at a restart, without a warning.

What the public answers published is saved in the store's ``meta`` (``published:<kind>``: the bound, its
mark and the bound row's receive time) and read back at start; a value is used only if the store can
have saved it. The check looked the bound's row up: a row retention removed between the save and the
next mark (a new report or repeat release has become the newest, so the bound's row may go) made the
restart log "ignoring meta published:... : not what this store's publication saved", which reads like
tampering, and publication resumed as on a store without the value (with the clock behind, from a later
mark than the one published). Such a bound, below the table's newest row (ids are never reused and the
newest row is never removed: gateway/storage/row_retention.py), is now taken as saved; a bound the
store cannot have given still warns.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.resources import load_policy
from gateway.storage.store import ReportRecord
from gateway.web import publication
from gateway.web.publication import csv_mark, entity_mark

from .support import NOW, Fleet
from .test_web_opendata_privacy_budget import NEXT_DAY, PATH, _release, _saving_client, _spend
from .test_web_opendata_published_restart import _published, _source
from .test_web_opendata_repeats_retention import SINCE_OLD, _old_releases

H = 3600
DAY = 86400
RUN_UNTIL = NOW + H + 1200    # 13:20: the entities' mark 13:15, the CSV's 13:05
RESTART_AT = NOW - 1200       # 11:40: behind the newest report, so what was published is held
IGNORED = "ignoring meta"


def _one_day_retention() -> dict[tuple[str, str], int]:
    """Every field of the policy kept one day (a city's shortened retention): a pass a day later removes
    the values, then the rows, of what is older."""
    return {(kind, name): 1 for kind, spec in load_policy()["kinds"].items() for name in spec["fields"]}


def _report(device: str, seq: int, received_at: float) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north" if device == "bin-02" else "centre",
                        type="win", w=NOW - 5 * H, l=900, m={"temp": 9, "tilt": 0, "bat": 60}, e={}, a=[], fw=None,
                        received_at=received_at, link="serial:/dev/pts/9", digest="%064x" % seq)


def _ignored(caplog: pytest.LogCaptureFixture) -> list[str]:
    return sorted(r.getMessage().split(" = ")[0] for r in caplog.records
                  if IGNORED in r.getMessage() and r.levelno >= logging.WARNING)


async def _publish_then_remove_the_bound_row(fleet: Fleet) -> tuple[int, dict[str, str]]:
    """bin-02's late window (received 12:50) is the bound the entities (13:15) and the CSV (13:05) publish
    and save; bin-01's report received 13:50 becomes the newest; a retention pass two days later removes
    the late window's row. Returns the removed bound and the saved meta."""
    late = _report("bin-02", 70_000, NOW + 3000)
    assert fleet.store.insert_batch([late], {"bin-02": 70_000}).inserted
    running = _source(fleet, RUN_UNTIL)
    try:
        await _published(running, RUN_UNTIL)
    finally:
        await running.aclose()
    bound, bound_at = fleet.queries.last_report_stamp() or (0, 0.0)
    saved = fleet.queries.meta_values(publication.PUBLISHED_KEY_PREFIX)
    assert saved == {"published:entities": publication.encode_published(bound, entity_mark(RUN_UNTIL), bound_at),
                     "published:csv": publication.encode_published(bound, csv_mark(RUN_UNTIL), bound_at)}
    assert fleet.store.insert_batch([_report("bin-01", 70_001, NOW + H + 3000)], {"bin-01": 70_001}).inserted
    fleet.store.apply_retention(_one_day_retention(), now=NOW + 2 * DAY)
    assert fleet.queries.reports_by_id([bound]) == {}           # retention removed the bound's row ...
    assert fleet.queries.last_report_id() == bound + 1          # ... not the newest
    return bound, saved


async def test_a_restart_reads_back_a_report_bound_retention_removed(fleet: Fleet,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Fails before: both keys were ignored with a WARNING, and with the clock behind the entities resumed
    at 13:45 (the mark of the newest report, received after the last save) instead of the 13:15 published."""
    _bound, saved = await _publish_then_remove_the_bound_row(fleet)
    restarted = _source(fleet, RESTART_AT)
    try:
        with caplog.at_level(logging.DEBUG, logger="gateway.web.published_marks"):
            await _published(restarted, RESTART_AT)
            assert restarted.published_mark() == entity_mark(RUN_UNTIL)
    finally:
        await restarted.aclose()
    assert _ignored(caplog) == []
    assert fleet.queries.meta_values(publication.PUBLISHED_KEY_PREFIX) == saved  # held, nothing new published


@pytest.mark.parametrize("case", ["received after the newest row", "above the newest row"])
async def test_a_bound_the_store_cannot_have_given_still_warns(fleet: Fleet, caplog: pytest.LogCaptureFixture,
                                                               case: str) -> None:
    """Another store's value (its bound a row id this store removed, with a receive time after this
    store's newest report) or one above the newest row is ignored with a WARNING, as before."""
    bound, _saved = await _publish_then_remove_the_bound_row(fleet)
    newest, newest_at = fleet.queries.last_report_stamp() or (0, 0.0)
    value: dict[str, Any] = {"received after the newest row": (bound, NOW + 9 * H, newest_at + 4 * H),
                             "above the newest row": (newest + 7, NOW + 9 * H, newest_at - 60)}
    fleet.store.save_meta(publication.published_key("entities"), publication.encode_published(*value[case]))
    restarted = _source(fleet, RESTART_AT)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.web.published_marks"):
            await _published(restarted, RESTART_AT)
            # As on a store without the value: the mark of the newest report's receive time (13:50).
            assert restarted.published_mark() == entity_mark(newest_at)
    finally:
        await restarted.aclose()
    assert _ignored(caplog) == ["open data: ignoring meta published:entities"]


async def test_a_restart_reads_back_a_repeats_bound_retention_removed(fleet: Fleet,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The privacy-budget CSV published repeat releases up to rowid 3 at 00:05; a new repeat release
    (rowid 4, 00:09:55) became the newest, and a retention pass removed rowids 1-3 with their stored
    release. Fails before: the restart ignored ``published:repeats`` with a WARNING."""
    _old_releases(fleet)
    now = [float(NEXT_DAY)]  # 00:10 on the 22nd: the 00:05 mark
    async with _saving_client(fleet, lambda: now[0]) as c:
        resp = await c.get(PATH, params=SINCE_OLD)
        assert resp.status == 200
    # (saved in the background; the app's stop waits for it)
    assert fleet.queries.meta_values("published:repeats")["published:repeats"].startswith("3 ")
    got = fleet.store.insert_batch([_release(50_000, NOW - 6 * H, 6 * H, {"mot": 77}, NEXT_DAY - 5)])
    assert len(got.window_duplicates) == 1
    fleet.store.apply_retention(_one_day_retention(), now=NEXT_DAY)  # what is older than the 21st, 00:10
    assert fleet.queries.repeat_received_at(3) is None and fleet.queries.repeat_received_at(4) is not None
    with caplog.at_level(logging.DEBUG, logger="gateway.web.published_marks"):
        async with _saving_client(fleet, lambda: now[0]) as c:
            resp = await c.get(PATH, params=SINCE_OLD)
            assert resp.status == 200
            before = _spend(await resp.text())
            now[0] = NEXT_DAY + H  # the 01:05 mark publishes rowid 4
            after = _spend(await (await c.get(PATH, params=SINCE_OLD)).text())
    assert _ignored(caplog) == []
    assert before[("2026-11-21", "sl-01", "mot")][2] == 0 and after[("2026-11-21", "sl-01", "mot")][2] == 1
