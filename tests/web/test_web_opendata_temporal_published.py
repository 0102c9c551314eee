"""The catalogue's temporal start counts only the reports the open data publishes.

A board whose clock was never set (first boot, a streetlight after a mains cut) sends a ``boot``
report whose period starts near the epoch (2000-01-01 on MicroPython, 1970 on the unix port): counted,
it moved ``temporal.start`` back to now less the longest retention (five years) on every demo. Only
the value reports (``win``, ``hour``, ``day``) of the devices the entities list (not revoked) count.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.storage.queries import _MAX_ID, _OLDEST_W_SQL, ReportQueries
from gateway.storage.sqlite_uri import read_only_uri
from gateway.storage.store import ReportRecord, ReportStore
from gateway.web.app import create_app

from .support import ADMIN_TOKEN, NOW, Fleet

DAY = 86400
YESTERDAY = NOW - NOW % DAY - DAY  # the fixture's oldest report: bin-01's daily lid count of yesterday
MICROPYTHON_EPOCH = 946684800  # 2000-01-01


def record(device: str, kind: str, seq: int, type_: str, w: int, l: int, m: dict[str, Any],  # noqa: E741
           a: list[str] | None = None) -> ReportRecord:
    """A report received at 11:58, before the entities' 12:00 mark."""
    return ReportRecord(device=device, seq=seq, kind=kind, zone="centre", type=type_, w=w, l=l, m=m, e={},
                        a=a or [], fw=None, received_at=NOW - 120, link="serial:/dev/pts/9",
                        digest="%064x" % (seq + len(device)))


async def _start(fleet: Fleet) -> str:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        return str((await (await c.get("/opendata")).json())["temporal"]["start"])


def _iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_boot_reports_of_a_clock_never_set_do_not_move_the_start(fleet: Fleet) -> None:
    """Fails before: the start was now less 1825 days (2021-11-22)."""
    fleet.store.insert_batch([record("sl-01", "streetlight", 90_000, "boot", MICROPYTHON_EPOCH + 120, 60, {}),
                              record("sl-02", "streetlight", 90_000, "boot", 60, 60, {})])
    assert await _start(fleet) == _iso(YESTERDAY)


async def test_alarms_and_a_revoked_devices_reports_do_not_move_the_start(fleet: Fleet) -> None:
    """The entities list no revoked device (bin-03, revoked after it reported) and publish no past alarm."""
    fleet.store.insert_batch([
        record("bin-03", "bin", 90_001, "win", YESTERDAY - 3 * DAY, 900, {"temp": 9, "tilt": 0, "bat": 60}),
        record("bin-01", "bin", 90_002, "alarm", YESTERDAY - 2 * DAY, 60, {"temp": 80}, a=["fire"])])
    assert await _start(fleet) == _iso(YESTERDAY)
    # A window of a listed device of the same day does.
    fleet.store.insert_batch([record("bin-02", "bin", 90_003, "win", YESTERDAY - 3 * DAY, 900,
                                     {"temp": 9, "tilt": 0, "bat": 60})])
    assert await _start(fleet) == _iso(YESTERDAY - 3 * DAY)


def test_the_lookup_stays_one_seek_on_a_large_store_full_of_boot_reports(tmp_path: Path) -> None:
    """Boot reports near the epoch (60,000: a fleet's streetlights booting on a mains cut every day for
    months) and a revoked device's long history before the retention cutoff: the lookup seeks past them
    in the period index (``since``) and reads one row."""
    path = tmp_path / "reports.sqlite"
    store = ReportStore(path, gateway_id="gw-big")
    queries = ReportQueries(path)
    try:
        boots = [record("sl-%03d" % (i % 500), "streetlight", 1000 + i, "boot", MICROPYTHON_EPOCH + i, 60, {})
                 for i in range(60_000)]
        old = [record("sl-999", "streetlight", 500_000 + i, "win", NOW - 3000 * DAY + i * 900, 900, {"lux": 10})
               for i in range(30_000)]
        recent = [record("sl-000", "streetlight", 900_000 + i, "win", NOW - 100 * DAY + i * 900, 900, {"lux": 10})
                  for i in range(10)]
        for i in range(0, len(boots), 20_000):
            store.insert_batch(boots[i:i + 20_000])
        for i in range(0, len(old), 20_000):
            store.insert_batch(old[i:i + 20_000])
        store.insert_batch(recent)
        since = NOW - 1900 * DAY
        assert queries.oldest_period_start(since=since) == NOW - 100 * DAY
        assert queries.oldest_period_start(since=0, excluded=["sl-999"]) == NOW - 100 * DAY
        assert queries.oldest_period_start(since=0) == NOW - 3000 * DAY
        # One seek to ``since`` in the period index, read in its order (no sort of what it finds): the
        # boot reports and sl-999's history before ``since`` are never visited. SQLite's plan says so;
        # a timing would depend on the machine.
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            plan = [str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + _OLDEST_W_SQL,
                                                    (since, _MAX_ID, json.dumps(["sl-999"])))]
        finally:
            conn.close()
        assert "SEARCH reports USING INDEX reports_w (w>?)" in plan, plan
        assert not [step for step in plan if "TEMP B-TREE" in step], plan
    finally:
        queries.close()
        store.close()
