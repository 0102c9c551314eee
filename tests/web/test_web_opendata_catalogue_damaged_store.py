"""A damaged report store leaves the open-data catalogue without its store's part, not without the
catalogue (maintainer note: /opendata answered 503, so a portal harvesting it nightly dropped the
datasets, although their descriptions, licence, formats and data dictionary come from the
configuration and the policy).

The store is the fed fleet's (tests/web/conftest.py), damaged the way a disk damages it: the pages of
its ``reports`` table overwritten while nothing has it open; SQLite then reports it malformed."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries
from gateway.web.app import create_app
from gateway.web.catalogue import STORE_FIELDS, OpenDataMeta
from gateway.web.opendata import STORE_LOG_LIMIT
from gateway.web.retention import RetentionSettings

from .support import ADMIN_TOKEN, NOW

PAGE = 4096


def damage_reports_table(db: Path) -> None:
    """Overwrite every page of the ``reports`` table (its root and leaves); the schema and the other
    tables stay readable, so the store opens and the first read of a report finds the damage."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE
        pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'reports'")]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to find the pages of the reports table")
    finally:
        conn.close()
    assert pages
    with db.open("r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * PAGE)
            fh.write(b"\xa5" * PAGE)


async def _client(root: Path) -> AsyncIterator[TestClient]:
    policy = load_policy()
    registry = Registry(root / "registry")
    queries = ReportQueries(root / "reports.sqlite")
    app = create_app(store=queries, registry=registry, policy=policy, metrics_registry=None,
                     admin_token=ADMIN_TOKEN, retention=RetentionSettings(policy, path=root / "retention.json"),
                     clock=lambda: float(NOW), open_data=OpenDataMeta(base_url="https://data.city.example"))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            yield client
    finally:
        queries.close()
        registry.close()


@pytest.fixture
async def sound(tmp_path: Path, fleet_template: tuple[Path, dict[str, int]]) -> AsyncIterator[TestClient]:
    root = tmp_path / "sound"
    shutil.copytree(fleet_template[0], root)
    async for client in _client(root):
        yield client


@pytest.fixture
async def damaged(tmp_path: Path, fleet_template: tuple[Path, dict[str, int]]) -> AsyncIterator[TestClient]:
    root = tmp_path / "damaged"
    shutil.copytree(fleet_template[0], root)
    for leftover in ("reports.sqlite-wal", "reports.sqlite-shm"):
        assert not (root / leftover).exists()  # the template was closed cleanly: all its pages are in the file
    damage_reports_table(root / "reports.sqlite")
    async for client in _client(root):
        yield client


async def _json(client: TestClient, path: str, status: int = 200) -> tuple[Any, Any]:
    resp = await client.get(path)
    assert resp.status == status, (path, resp.status, await resp.text())
    return await resp.json(content_type=None), resp.headers


async def test_the_catalogue_stands_without_the_store_and_says_what_is_unknown(
        sound: TestClient, damaged: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    STORE_LOG_LIMIT.reset()  # one limit per process: another test's line may be less than 10 s old
    # The data itself is not available: the store is damaged, and says so.
    body, _ = await _json(damaged, "/opendata/ngsi-ld/v1/entities", 503)
    assert body["error"]["message"] == "gateway backend unavailable (corrupt)"

    whole, whole_headers = await _json(sound, "/opendata")
    index, headers = await _json(damaged, "/opendata")
    assert whole["unavailable"] is None
    assert whole["modified"] and whole["spatial"] and whole["temporal"]  # known with a readable store
    note = index["unavailable"]
    assert note["code"] == "store_unavailable" and note["reason"] == "corrupt"
    assert note["fields"] == ["modified", "spatial", "temporal"] == list(STORE_FIELDS)
    assert note["formats"] == ["ngsi-ld", "csv", "geojson", "privacy-budget"] == list(whole["formats"])
    assert "corrupt" in note["message"] and "503" in note["message"]
    for name in STORE_FIELDS:
        assert index[name] is None, name
    # Everything else is the same as with the store: from the configuration and the policy.
    rest = {k for k in whole if k not in (*STORE_FIELDS, "unavailable")}
    assert rest >= {"title", "description", "license", "formats", "dataDictionary", "mapping", "models"}
    assert {k: index[k] for k in rest} == {k: whole[k] for k in rest}
    # Not kept by caches: the whole catalogue is served as soon as the store can be read again.
    assert headers["Cache-Control"] == "no-cache" and "Last-Modified" not in headers
    assert whole_headers["Cache-Control"] == "public, max-age=60"
    revalidated = await damaged.get("/opendata", headers={"If-None-Match": headers["ETag"]})
    assert revalidated.status == 304 and revalidated.headers["Cache-Control"] == "no-cache"
    assert any(r.levelno == logging.WARNING and "without the store's part" in r.getMessage() and "corrupt" in
               r.getMessage() for r in caplog.records)


async def test_the_dcat_catalogue_keeps_its_dataset_and_distributions_without_the_store(
        sound: TestClient, damaged: TestClient) -> None:
    whole, _ = await _json(sound, "/opendata/catalog.jsonld")
    doc, headers = await _json(damaged, "/opendata/catalog.jsonld")
    [dataset], [whole_dataset] = doc["dcat:dataset"], whole["dcat:dataset"]
    # DCAT-AP's optional properties made of the data are left out, not guessed.
    for prop in ("dct:modified", "dct:temporal", "dct:spatial"):
        assert prop in whole_dataset and prop not in dataset, prop
    # What a harvester needs to keep the dataset on the portal is all there.
    assert dataset["dct:title"] == whole_dataset["dct:title"] and dataset["dct:description"]
    assert len(dataset["dcat:distribution"]) == len(whole_dataset["dcat:distribution"]) == 4
    assert [d["dct:title"] for d in dataset["dcat:distribution"]] == [
        d["dct:title"] for d in whole_dataset["dcat:distribution"]]
    assert headers["Cache-Control"] == "no-cache"


async def test_the_page_for_people_says_the_data_cannot_be_read_now(sound: TestClient, damaged: TestClient) -> None:
    notice = "The data cannot be read at the moment."
    whole = await sound.get("/opendata", headers={"Accept": "text/html"})
    page = await damaged.get("/opendata", headers={"Accept": "text/html"})
    assert whole.status == page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    assert notice in text and notice not in await whole.text()
    assert 'href="opendata/readings.csv"' in text  # the downloads are still listed
    assert page.headers["Cache-Control"] == "no-cache"


async def test_a_store_read_that_times_out_leaves_the_catalogue_standing_too(fleet: Any) -> None:
    """Review: a read that timed out (``store_timeout``, an Unavailable rather than a StorageError) still
    made the catalogue 503, though the docs name timed-out reads among the cases it stands through."""
    from .test_web_event_loop import DELAY_S, SlowQueries

    STORE_LOG_LIMIT.reset()
    store = SlowQueries(fleet.store.path, slow=("latest_per_device", "changes_since", "devices", "reports_by_id",
                                                 "last_report_id", "device_ids"))
    app = create_app(store=store, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, retention=fleet.retention, clock=lambda: float(NOW))
    from gateway.web.context import CONTEXT_KEY

    app[CONTEXT_KEY].fleet._reads.timeout_s = DELAY_S / 10  # every store read times out
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        for path in ("/opendata", "/opendata/catalog.jsonld"):
            resp = await client.get(path)
            assert resp.status == 200, (path, await resp.text())
            assert resp.headers["Cache-Control"] == "no-cache"
        index = await (await client.get("/opendata")).json()
        assert index["unavailable"]["code"] == "store_unavailable" and index["unavailable"]["reason"] == "store_timeout"
        assert index["title"] and index["dataDictionary"]  # the store-free parts, as with a damaged store
