"""The privacy-budget CSV's repeat releases stay bounded by their publication mark after retention removed the
old ones (review H1 of round 2).

The CSV publishes ``window_duplicates`` up to a rowid per mark (``published:repeats``). The table has no
AUTOINCREMENT: once retention removed every row, a new repeat release took rowid 1 again, at or below the
published bound, and showed before its mark under an unchanged ETag; the saved bound named a removed row, so
the next start ignored it with a warning that reads like tampering. Retention keeps the newest row, as it
keeps the newest report.
"""

from __future__ import annotations

import logging
import sqlite3

import pytest

from gateway.storage import row_retention

from .support import NOW, Fleet
from .test_web_opendata_privacy_budget import DAY, H, NEXT_DAY, PATH, _release, _saving_client, _spend

# The repeats' period: 2026-11-19 06:00-12:00 UTC, released (and stored) then, released again three times.
OLD_W = NOW - 2 * DAY - 6 * H
OLD_DAY = "2026-11-19"
SINCE_OLD = {"from": OLD_DAY + "T00:00:00Z"}


def _old_releases(fleet: Fleet) -> None:
    """sl-01's release of the 19th's morning, stored, then released again three times (rowids 1 to 3); then
    the release of the 21st's first six hours (the newest report, which retention keeps)."""
    assert fleet.store.insert_batch([_release(40_000, OLD_W, 6 * H, {"mot": 5}, OLD_W + 6 * H + 60)]).inserted
    for n, seq in enumerate((40_010, 40_020, 40_030)):
        got = fleet.store.insert_batch([_release(seq, OLD_W, 6 * H, {"mot": 6 + n}, OLD_W + 7 * H + n)],
                                       {"sl-01": seq})
        assert len(got.window_duplicates) == 1
    assert fleet.store.insert_batch([_release(49_000, NOW - 12 * H, 6 * H, {"mot": 9}, NOW - 6 * H + 60)]).inserted


def _retention_removes_the_old_releases(fleet: Fleet) -> list[int]:
    """What a pass does once their retention is past: row retention removes the stored release (done here by
    hand, as its data version moves), then ``remove_window_duplicates`` the repeats of it. The rowids left."""
    # through the store's own connection: a running store refuses writes after another connection wrote it
    conn = fleet.store._conn  # noqa: SLF001
    conn.execute("BEGIN IMMEDIATE")
    try:
        assert conn.execute("DELETE FROM reports WHERE device = 'sl-01' AND seq = 40000").rowcount == 1
        conn.execute("INSERT INTO counters (name, value) VALUES ('data_version', 1) ON CONFLICT (name)"
                     " DO UPDATE SET value = value + 1")
        row_retention.remove_window_duplicates(conn, "streetlight", NEXT_DAY)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return [int(r) for (r,) in conn.execute("SELECT rowid FROM window_duplicates ORDER BY rowid")]


async def test_a_repeat_release_after_retention_waits_for_its_mark(fleet: Fleet,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Fails before: retention removed rowids 1-3, the new repeat release took rowid 1 (below the published 3)
    and showed at once, with the ETag of the answer before it; at the restart the saved bound was ignored."""
    _old_releases(fleet)
    now = [float(NEXT_DAY)]  # 00:10 on the 22nd: the 00:05 mark
    async with _saving_client(fleet, lambda: now[0]) as c:
        first = _spend(await (await c.get(PATH, params=SINCE_OLD)).text())
        assert first[(OLD_DAY, "sl-01", "mot")] == (2000, 4, 3)
        assert _retention_removes_the_old_releases(fleet) == [3]  # the newest stays (counted nowhere)
        resp = await c.get(PATH, params=SINCE_OLD)
        published, etag = _spend(await resp.text()), resp.headers["ETag"]
        assert (OLD_DAY, "sl-01", "mot") not in published
        assert published[("2026-11-21", "sl-01", "mot")] == (1000, 2, 0)
        # At 00:09:55, after the 00:05 mark: sl-01 releases the 21st's morning again.
        got = fleet.store.insert_batch([_release(50_000, NOW - 6 * H, 6 * H, {"mot": 77}, NEXT_DAY - 5)])
        assert len(got.window_duplicates) == 1
        conn = sqlite3.connect(fleet.queries.db_path)
        try:
            assert [r for (r,) in conn.execute("SELECT rowid FROM window_duplicates ORDER BY rowid")] == [3, 4]
        finally:
            conn.close()
        assert (await c.get(PATH, params=SINCE_OLD, headers={"If-None-Match": etag})).status == 304
        assert _spend(await (await c.get(PATH, params=SINCE_OLD)).text()) == published
    # A restart reads back the bound it saved (rowid 3, still stored): no warning, nothing new published.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.web.published_marks"):
        async with _saving_client(fleet, lambda: now[0]) as c:
            resp = await c.get(PATH, params=SINCE_OLD)
            assert resp.headers["ETag"] == etag and _spend(await resp.text()) == published
            now[0] = NEXT_DAY + H  # the 01:05 mark publishes it
            resp = await c.get(PATH, params=SINCE_OLD, headers={"If-None-Match": etag})
            assert resp.status == 200 and resp.headers["ETag"] != etag
            after = _spend(await resp.text())
    assert not [r for r in caplog.records if "ignoring meta" in r.getMessage()]
    assert after[("2026-11-21", "sl-01", "mot")] == (1500, 3, 1)
