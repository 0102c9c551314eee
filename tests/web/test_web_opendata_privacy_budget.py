"""``/opendata/privacy-budget.csv``: the ε each device spent, per field and UTC day (QA M1, journalist's audit).

/transparency said what a release may spend, nowhere what was spent. The export sums the stored ``e``
maps (milli-ε), the repeat releases a device made after losing its ledger (``window_duplicates``: not
published as values, but spent and sent) included. The oracle below reads the store file itself.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from collections import defaultdict

from gateway.storage.store import ReportRecord

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client

PATH = "/opendata/privacy-budget.csv"
H = 3600
DAY = 86400
# 2026-11-22 00:10, 2026-11-23 00:10 UTC: past the hh:05 mark that publishes the fixture's reports.
NEXT_DAY = NOW + 12 * H + 600
TWO_DAYS = NEXT_DAY + DAY
COLUMNS = ["day", "device", "field", "eps_milli_spent", "releases", "repeat_releases"]


def _release(seq: int, w: int, l: int, m: dict[str, int], received_at: float) -> ReportRecord:  # noqa: E741
    return ReportRecord(device="sl-01", seq=seq, kind="streetlight", zone="centre", type="win", w=w, l=l, m=m,
                        e={"mot": 500}, a=[], fw=None, received_at=received_at, link="serial:/dev/pts/9",
                        digest="%064x" % seq)


def _add_releases(fleet: Fleet) -> None:
    """sl-01 releases the morning's count again (a lost ledger: a window duplicate), then 12-18 h
    (withheld: e only) and 18-24 h (its period ends at midnight: the device's ledger charges the next
    day)."""
    got = fleet.store.insert_batch([
        _release(50_000, NOW - 6 * H, 6 * H, {"mot": 77}, NOW + 60),
        _release(50_001, NOW, 6 * H, {}, NOW + 6 * H + 60),
        _release(50_002, NOW + 6 * H, 6 * H, {"mot": 40}, NOW + 12 * H + 60),
    ])
    assert len(got.window_duplicates) == 1


def _oracle(fleet: Fleet, days: set[str]) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """Sum of every stored e entry by (UTC day of the period's end, device, field), from the file."""
    conn = sqlite3.connect(fleet.queries.db_path)
    try:
        rows = [(w, l, dev, e, 0) for w, l, dev, e in conn.execute("SELECT w, l, device, e FROM reports")]
        rows += [(w, l, dev, e, 1) for w, l, dev, e in conn.execute("SELECT w, l, device, e FROM window_duplicates")]
    finally:
        conn.close()
    out: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for w, l, dev, e, repeat in rows:  # noqa: E741
        day = time.strftime("%Y-%m-%d", time.gmtime(w + l))
        for fname, milli in json.loads(e).items():
            if day in days:
                acc = out[(day, dev, fname)]
                acc[0] += milli
                acc[1] += 1
                acc[2] += repeat
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def _table(text: str) -> tuple[list[str], dict[tuple[str, str, str], tuple[int, int, int]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return header, {(r[0], r[1], r[2]): (int(r[3]), int(r[4]), int(r[5])) for r in reader}


async def test_the_spend_per_device_field_and_day_is_the_stored_e_repeat_releases_included(fleet: Fleet) -> None:
    _add_releases(fleet)
    async with app_client(fleet, clock=lambda: float(NEXT_DAY)) as c:
        resp = await c.get(PATH)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/csv"
        assert 'filename="civicedge-privacy-budget-2026-11-21-2026-11-22.csv"' in resp.headers["Content-Disposition"]
        header, got = _table(await resp.text())
    assert header == COLUMNS
    assert got == _oracle(fleet, {"2026-11-21"})
    # By hand: the morning's release, the withheld 12-18 h one and the repeat of the morning; the
    # 18-24 h release ends at midnight and counts on the 22nd. The other devices' single releases.
    assert got[("2026-11-21", "sl-01", "mot")] == (1500, 3, 1)
    assert got[("2026-11-21", "sl-02", "mot")] == (500, 1, 0)
    assert got[("2026-11-21", "bin-01", "lid")] == (500, 1, 0)
    assert len(got) == 3
    async with app_client(fleet, clock=lambda: float(TWO_DAYS)) as c:
        resp = await c.get(PATH, params={"from": "2026-11-21T00:00:00Z"})
        assert resp.status == 200
        _header, both = _table(await resp.text())
    assert both == _oracle(fleet, {"2026-11-21", "2026-11-22"})
    assert both[("2026-11-22", "sl-01", "mot")] == (500, 1, 0)


async def test_a_repeat_release_counts_though_its_value_is_not_published(fleet: Fleet) -> None:
    async with app_client(fleet, clock=lambda: float(NEXT_DAY)) as c:
        before = _table(await (await c.get(PATH)).text())[1][("2026-11-21", "sl-01", "mot")]
    got = fleet.store.insert_batch([_release(50_000, NOW - 6 * H, 6 * H, {"mot": 77}, NOW + 60)])
    assert got.inserted == [] and len(got.window_duplicates) == 1
    async with app_client(fleet, clock=lambda: float(NEXT_DAY)) as c:
        after = _table(await (await c.get(PATH)).text())[1][("2026-11-21", "sl-01", "mot")]
        readings = await (await c.get("/opendata/readings.csv", params={"from": "2026-11-21T00:00:00Z",
                                                                         "field": "mot"})).text()
    assert before == (500, 1, 0) and after == (1000, 2, 1)
    assert ",77," not in readings  # the repeat's value stays unpublished


async def test_only_the_documented_columns_no_report_identity(fleet: Fleet) -> None:
    async with app_client(fleet, clock=lambda: float(NEXT_DAY)) as c:
        text = await (await c.get(PATH)).text()
    header = text.splitlines()[0].split(",")
    assert header == COLUMNS
    assert not {"seq", "digest", "received_at", "kept_seq", "gateway_id", "link"} & set(header)


async def test_filters_and_caching_are_the_readings_csvs(fleet: Fleet) -> None:
    _add_releases(fleet)
    async with app_client(fleet, clock=lambda: float(NEXT_DAY)) as c:
        everything = _table(await (await c.get(PATH)).text())[1]
        assert _table(await (await c.get(PATH, params={"zone": "centre"})).text())[1] == everything
        assert _table(await (await c.get(PATH, params={"zone": "north"})).text())[1] == {}
        lid = _table(await (await c.get(PATH, params={"field": "lid"})).text())[1]
        assert lid == {k: v for k, v in everything.items() if k[2] == "lid"}
        # A range inside one day holds no day (days are never cut), as the CSV's rows are never cut hours.
        within = await c.get(PATH, params={"from": "2026-11-21T01:00:00Z", "to": "2026-11-21T23:00:00Z"})
        assert within.status == 200 and _table(await within.text())[1] == {}
        resp = await c.get(PATH)
        assert resp.headers["Cache-Control"] == "public, max-age=60" and resp.headers["Vary"] == "Accept, Accept-Encoding"
        assert resp.headers["Last-Modified"]
        again = await c.get(PATH, headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
        for bad, param in (({"limit": "5"}, "limit"), ({"field": "lux"}, "field"), ({"field": "mot,"}, "field"),
                           ({"zone": "nowhere"}, "zone"), ({"from": str(NEXT_DAY + DAY)}, "from"),
                           ({"from": "2026-10-01T00:00:00Z", "to": "2026-11-21T00:00:00Z"}, "to"), ({"to": ""}, "to")):
            resp = await c.get(PATH, params=bad)
            assert resp.status == 400, bad
            body = await resp.json()
            assert body["error"]["code"] == "bad_parameter" and body["error"]["param"] == param, (bad, body)
        assert (await c.get(PATH, headers={"Accept": "application/json"})).status == 406


async def test_the_catalogue_and_the_page_list_it(fleet: Fleet) -> None:
    async with app_client(fleet, clock=lambda: float(NEXT_DAY)) as c:
        dcat = await (await c.get("/opendata/catalog.jsonld")).json(content_type=None)
        urls = [d["dcat:accessURL"]["@id"] for d in dcat["dcat:dataset"][0]["dcat:distribution"]]
        assert [u for u in urls if u.endswith(PATH)]
        index = await (await c.get("/opendata")).json()
        assert index["formats"]["privacy-budget"].endswith(PATH)
        assert set(index["parameters"]["privacy-budget"]) == {"from", "to", "field", "zone"}
        assert list(index["dataDictionary"]["privacyBudgetColumns"]) == COLUMNS
        page = await (await c.get("/opendata", headers={"Accept": "text/html"})).text()
        assert 'href="opendata/privacy-budget.csv"' in page
