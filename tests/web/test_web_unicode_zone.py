"""A zone named in the city's own script ("Südstadt") goes from ``civicedge gateway devices add`` through
the ingest into the read API, the aggregates filter and every open-data format, intact and in NFC (i18n QA:
zones were ASCII only, so the city published ``areaServed: "Suedstadt"``).

The device is registered with the zone in NFD ("Su" + U+0308 COMBINING DIAERESIS + "dstadt", what a macOS
file name or some keyboards give): it is stored, shown and filtered as the one NFC zone "Südstadt"."""

from __future__ import annotations

import csv
import io
import sqlite3
import unicodedata
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from hil.cli.main import main as civicedge_main

from .support import NOW, Fleet, admin_headers
from .test_web_opendata_publishing import app_client

NFC = "Südstadt"
NFD = unicodedata.normalize("NFD", NFC)


async def get(client: TestClient, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    return await resp.json() if resp.content_type.endswith("json") else await resp.text()


@pytest.fixture
async def sud(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> Fleet:
    """The fleet with sl-sud registered in zone NFD "Südstadt" by the CLI, and an hour of its windows."""
    assert NFD != NFC and len(NFD) == len(NFC) + 1
    rc = civicedge_main(["gateway", "devices", "add", "--registry", str(fleet.registry.path), "--id", "sl-sud",
                         "--kind", "streetlight", "--zone", NFD, "--location", "52.3600,4.8800"])
    assert rc == 0, capsys.readouterr().err
    assert f"zone {NFC})" in capsys.readouterr().out
    start = NOW - 2 * 3600
    for i in range(4):
        await fleet.report("sl-sud", {"t": "win", "k": "streetlight", "w": start + i * 900, "l": 900,
                                      "m": {"lux": 5 + i, "lvl": 70, "lamp": 0}})
    return fleet


async def test_the_registry_and_the_store_hold_the_nfc_zone(sud: Fleet) -> None:
    assert sud.registry.get("sl-sud").zone == NFC
    db = sqlite3.connect(sud.store.path)
    try:
        zones = {z for (z,) in db.execute("SELECT DISTINCT zone FROM reports WHERE device = 'sl-sud'")}
    finally:
        db.close()
    assert zones == {NFC}


async def test_read_api_lists_and_filters_the_zone_nfc_or_nfd(sud: Fleet) -> None:
    async with app_client(sud) as client:
        devices = (await get(client, "/api/devices"))["devices"]
        assert [d["zone"] for d in devices if d["id"] == "sl-sud"] == [NFC]
        for spelled in (NFC, NFD):  # percent-encoded UTF-8, either normal form
            only = (await get(client, "/api/devices?zone=" + quote(spelled)))["devices"]
            assert [d["id"] for d in only] == ["sl-sud"]
            hourly = await get(client, f"/api/aggregates/hourly?from={NOW - 3 * 3600}&to={NOW}&zone="
                                       + quote(spelled))
            assert hourly["aggregates"] and {a["zone"] for a in hourly["aggregates"]} == {NFC}
        dashboard = await get(client, "/api/dashboard")
        assert NFC in str(dashboard) and NFD not in str(dashboard)
        bad = await get(client, "/api/devices?zone=" + quote("Süd\u200bstadt"), status=400)
        assert "U+200B ZERO WIDTH SPACE is an invisible format character" in str(bad)


async def test_open_data_publishes_the_zone_as_written(sud: Fleet) -> None:
    async with app_client(sud) as client:
        entities = await get(client, "/opendata/ngsi-ld/v1/entities?type=Streetlight&options=keyValues")
        served = [e["areaServed"] for e in entities if e["id"].endswith(":sl-sud")]
        assert served == [NFC]
        normalized = await get(client, "/opendata/ngsi-ld/v1/entities?type=Streetlight")
        assert [e["areaServed"]["value"] for e in normalized if e["id"].endswith(":sl-sud")] == [NFC]
        geo = await get(client, "/opendata/devices.geojson")
        assert [f["properties"]["zone"] for f in geo["features"] if f["id"] == "sl-sud"] == [NFC]
    async with app_client(sud, clock=lambda: float(NOW + 600)) as client:  # past the CSV's hh:05 mark
        resp = await client.get("/opendata/readings.csv?zone=" + quote(NFD))
        assert resp.status == 200, await resp.text()
        assert resp.charset in ("utf-8", None)
        body = (await resp.read()).decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))
        assert rows and {(r["device"], r["zone"]) for r in rows} == {("sl-sud", NFC)}


async def test_the_admin_api_enrols_and_moves_into_the_nfc_zone(fleet: Fleet,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    key = bytes(range(1, 33))
    body = {"kind": "streetlight", "zone": NFD, "lat": "52.3600", "lon": "4.8800", "key": key.hex()}
    async with app_client(fleet) as client:
        resp = await client.put("/api/admin/devices/sl-adm", headers=admin_headers(), json=body)
        assert resp.status == 201, await resp.text()
        assert fleet.registry.get("sl-adm").zone == NFC
        # review: the audit line named the zone as sent (decomposed); a grep for the stored name missed it
        added = [r.getMessage() for r in caplog.records if "added device sl-adm" in r.getMessage()]
        assert len(added) == 1 and f"zone {NFC} at" in added[0], added
        resp = await client.put("/api/admin/devices/sl-adm", headers=admin_headers(), json=dict(body, zone=NFC))
        assert resp.status == 200 and (await resp.json())["result"] == "unchanged"  # one zone, not a move
        moved = {"lat": "52.3600", "lon": "4.8800", "zone": unicodedata.normalize("NFD", "Śródmieście")}
        resp = await client.post("/api/admin/devices/sl-adm/move", headers=admin_headers(), json=moved)
        answer = await resp.json()
        assert resp.status == 200 and (answer["result"], answer["zone"]) == ("moved", "Śródmieście"), answer
        resp = await client.post("/api/admin/devices/sl-adm/move", headers=admin_headers(),
                                 json=dict(moved, zone="Süd\u2029stadt"))
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["param"] == "zone" and "PARAGRAPH SEPARATOR" in error["message"], error
