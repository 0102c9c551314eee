"""The catalogue's temporal coverage starts where the published data does.

``temporal.start`` (``dct:temporal`` / ``dcat:startDate`` in the DCAT-AP form) was now less the longest
retention in force whatever the store held: a gateway started yesterday claimed five years of data.
It is the UTC day of the oldest published report's period, or now less the longest retention when
that is later (retention removes values, never reports), and absent while nothing is published
(DCAT-AP's temporal coverage is optional, and a period of time with no start and no end says nothing).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.storage import queries as queries_module
from gateway.storage.queries import ReportQueries
from gateway.storage.store import ReportRecord, ReportStore
from gateway.web.app import create_app

from .support import ADMIN_TOKEN, NOW, Fleet

DAY = 86400
YESTERDAY = NOW - NOW % DAY - DAY  # the fixture's oldest report: bin-01's daily lid count of yesterday


def old_report(w: int, *, received_at: float = NOW - 100, seq: int = 80_000) -> ReportRecord:
    """A window of sl-01 starting at ``w`` (a late re-send), received before the 12:00 mark by default."""
    return ReportRecord(device="sl-01", seq=seq, kind="streetlight", zone="centre", type="win", w=w, l=900,
                        m={"lux": 10, "lvl": 50, "lamp": 0}, e={}, a=[], fw=None, received_at=received_at,
                        link="serial:/dev/pts/9", digest="%064x" % seq)


def _iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _client(store: ReportQueries, fleet: Fleet | None, clock: list[float]) -> TestClient:
    app = create_app(store=store, registry=fleet.registry if fleet else None, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry if fleet else None, admin_token=ADMIN_TOKEN,
                     retention=fleet.retention if fleet else None, clock=lambda: clock[0])
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


async def _coverage(client: TestClient) -> tuple[Any, Any]:
    """``temporal`` of /opendata and ``dct:temporal`` of the DCAT-AP form (None when absent)."""
    index = await client.get("/opendata")
    dcat = await client.get("/opendata/catalog.jsonld")
    assert index.status == dcat.status == 200
    dataset = (await dcat.json(content_type=None))["dcat:dataset"][0]
    return (await index.json())["temporal"], dataset.get("dct:temporal")


def _longest_retention_days() -> int:
    return max(int(f["retention_days"]) for k in load_policy()["kinds"].values() for f in k["fields"].values())


async def test_the_coverage_starts_on_the_day_of_the_oldest_published_report(fleet: Fleet) -> None:
    """Fails before: the start was NOW less the longest retention (1825 days), five years before the
    fixture's oldest report."""
    clock = [float(NOW)]
    async with _client(fleet.queries, fleet, clock) as c:
        temporal, dct = await _coverage(c)
        assert temporal == {"start": _iso(YESTERDAY), "end": None}
        assert dct == {"@type": "dct:PeriodOfTime", "dcat:startDate": {"@value": _iso(YESTERDAY),
                                                                       "@type": "xsd:dateTime"}}
        # A late re-send of a window three days old, received after the 12:00 mark: it is published,
        # and moves the start, at the next mark only (as every public answer).
        fleet.store.insert_batch([old_report(YESTERDAY - 2 * DAY + 3600, received_at=NOW + 60)])
        clock[0] = float(NOW + 899)
        assert (await _coverage(c))[0]["start"] == _iso(YESTERDAY)
        clock[0] = float(NOW + 900)
        temporal, dct = await _coverage(c)
        assert temporal["start"] == dct["dcat:startDate"]["@value"] == _iso(YESTERDAY - 2 * DAY)


async def test_a_retired_devices_reports_leave_the_coverage_as_its_entity_leaves_the_listings(fleet: Fleet) -> None:
    """The coverage starts where the entities' data does: a retired device's entity is not listed, so its
    oldest report no longer sets the start (before: only revoked devices were left out, and the start was
    cached against the revoked ones only, so a retirement never moved it); reinstated, it does again."""
    fleet.store.insert_batch([old_report(YESTERDAY - 2 * DAY + 3600)])  # sl-01's, received before the mark
    async with _client(fleet.queries, fleet, [float(NOW)]) as c:
        assert (await _coverage(c))[0]["start"] == _iso(YESTERDAY - 2 * DAY)
        fleet.registry.retire("sl-01")
        assert (await _coverage(c))[0]["start"] == _iso(YESTERDAY)
        fleet.registry.reinstate("sl-01")
        assert (await _coverage(c))[0]["start"] == _iso(YESTERDAY - 2 * DAY)


async def test_reports_older_than_every_retention_start_it_at_the_retention(fleet: Fleet) -> None:
    """Retention removes a report's values but keeps the report: the oldest report no longer says where
    values begin; the longest retention in force does. (A report starting more than a week before the
    longest retention, the longest period a report covers, holds no value: it is not looked for.)"""
    fleet.store.insert_batch([old_report(NOW - (_longest_retention_days() + 5) * DAY)])
    start = NOW - _longest_retention_days() * DAY
    async with _client(fleet.queries, fleet, [float(NOW)]) as c:
        temporal, dct = await _coverage(c)
    assert temporal["start"] == dct["dcat:startDate"]["@value"] == _iso(start - start % DAY)


async def test_an_empty_store_publishes_no_temporal_coverage(tmp_path: Path) -> None:
    path = tmp_path / "reports.sqlite"
    store = ReportStore(path, gateway_id="gw-empty")
    queries = ReportQueries(path)
    clock = [float(NOW)]
    try:
        async with _client(queries, None, clock) as c:
            assert await _coverage(c) == (None, None)
            # Received after the 12:00 mark: still nothing published at 12:10, the day at 12:15.
            store.insert_batch([old_report(NOW - 900, received_at=NOW + 30, seq=1)])
            clock[0] = float(NOW + 600)
            assert await _coverage(c) == (None, None)
            clock[0] = float(NOW + 900)
            assert (await _coverage(c))[0] == {"start": _iso(NOW - NOW % DAY), "end": None}
    finally:
        queries.close()
        store.close()


def test_the_oldest_period_start_is_one_walk_of_the_period_index(tmp_path: Path) -> None:
    path = tmp_path / "reports.sqlite"
    store = ReportStore(path, gateway_id="gw-q")
    queries = ReportQueries(path)
    try:
        assert queries.oldest_period_start() is None and queries.oldest_period_start(max_id=10) is None
        store.insert_batch([old_report(NOW, seq=1), old_report(NOW + 900, seq=2),
                            old_report(NOW - 5 * DAY, seq=3)])  # id 3: the oldest period, stored last
        assert queries.oldest_period_start() == NOW - 5 * DAY
        assert queries.oldest_period_start(max_id=2) == NOW          # id 3 is above the bound
        assert queries.oldest_period_start(max_id=0) is None
        plan = [str(r[3]) for r in queries._rows(  # noqa: SLF001 - the statement's plan
            "EXPLAIN QUERY PLAN " + queries_module._OLDEST_W_SQL, (0, 2, "[]"))]  # noqa: SLF001
        # A seek in the period index (to ``since``), walked in order: no sort; the excluded devices' list
        # is read once.
        assert plan[0] == "SEARCH reports USING INDEX reports_w (w>?)", plan
        assert not any("TEMP B-TREE" in step or step.startswith("SCAN reports") for step in plan), plan
    finally:
        queries.close()
        store.close()


async def test_a_store_holding_only_reports_older_than_every_retention_still_has_a_start(tmp_path: Path) -> None:
    """Their values are still published while retention is held or skipped: the coverage starts at the
    longest retention's day, not nowhere. Fails before (temporal was null while entities were published)."""
    path = tmp_path / "reports.sqlite"
    store = ReportStore(path, gateway_id="gw-old")
    queries = ReportQueries(path)
    try:
        store.insert_batch([old_report(NOW - (_longest_retention_days() + 30) * DAY, received_at=NOW - 600, seq=1)])
        start = NOW - _longest_retention_days() * DAY
        async with _client(queries, None, [float(NOW)]) as c:
            temporal, dct = await _coverage(c)
        assert temporal == {"start": _iso(start - start % DAY), "end": None}
        assert dct["dcat:startDate"]["@value"] == _iso(start - start % DAY)
    finally:
        queries.close()
        store.close()
