"""Open-data answers are gzip-encoded like the other JSON answers of 1 KB or more, each encoding with its own
ETag and its own 304 (maintainer note: they were left uncompressed because their ETags would have to vary).

Over the real aiohttp app and the real SQLite store of the fed fleet (tests/web/conftest.py); the bodies
are read with ``auto_decompress=False`` and decoded here, so what is compared is what was sent."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from gateway.web.context import COMPRESS_MIN_BYTES

from gateway.web.opendata import INGEST_LAG_S

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client

H = 3600
GZIP = {"Accept-Encoding": "gzip, deflate"}
IDENTITY = {"Accept-Encoding": "identity"}
JSON_PATHS = ("/opendata", "/opendata/catalog.jsonld", "/opendata/ngsi-ld/v1/entities",
              "/opendata/devices.geojson")
CSV_PATH = f"/opendata/readings.csv?from={NOW - 3 * H}&to={NOW}"


async def _raw(client: TestClient, method: str, path: str,
               headers: dict[str, str]) -> tuple[int, CIMultiDict[str], bytes]:
    resp = await client.request(method, path, headers=headers, auto_decompress=False)
    return resp.status, CIMultiDict(resp.headers), await resp.read()


@pytest.mark.parametrize("path", JSON_PATHS)
async def test_a_large_open_data_answer_is_gzipped_with_its_own_etag_and_its_own_304(
        client: TestClient, path: str) -> None:
    status, plain_h, plain = await _raw(client, "GET", path, IDENTITY)
    assert status == 200 and "Content-Encoding" not in plain_h
    assert len(plain) >= COMPRESS_MIN_BYTES, (path, len(plain))  # the fixture's fleet makes every one large enough
    status, packed_h, packed = await _raw(client, "GET", path, GZIP)
    assert status == 200 and packed_h["Content-Encoding"] == "gzip"
    assert packed_h["Content-Type"] == plain_h["Content-Type"]
    assert len(packed) < len(plain)
    assert json.loads(gzip.decompress(packed)) == json.loads(plain)
    assert gzip.decompress(packed) == plain  # the same bytes, not only the same JSON
    # Two representations, two validators; the gzip one is the identity one with "-gzip" inside the quotes.
    assert packed_h["ETag"] != plain_h["ETag"] and packed_h["ETag"] == plain_h["ETag"][:-1] + '-gzip"'
    for headers in (plain_h, packed_h):
        assert headers["Vary"] == "Accept, Accept-Encoding"
    # Each form revalidates with its own ETag: a 304 carrying that ETag.
    for enc, etag in ((IDENTITY, plain_h["ETag"]), (GZIP, packed_h["ETag"])):
        status, again_h, body = await _raw(client, "GET", path, {**enc, "If-None-Match": etag})
        assert status == 304 and body == b"" and again_h["ETag"] == etag, (enc, etag)
        assert again_h["Vary"] == "Accept, Accept-Encoding"
    # The other form's ETag does not validate this one: the cache holds the other body.
    status, _, body = await _raw(client, "GET", path, {**IDENTITY, "If-None-Match": packed_h["ETag"]})
    assert status == 200 and json.loads(body) == json.loads(plain)
    status, crossed_h, body = await _raw(client, "GET", path, {**GZIP, "If-None-Match": plain_h["ETag"]})
    assert status == 200 and crossed_h["Content-Encoding"] == "gzip" and gzip.decompress(body) == plain
    # HEAD: the GET's headers, no body.
    status, head_h, body = await _raw(client, "HEAD", path, GZIP)
    assert status == 200 and body == b"" and head_h["ETag"] == packed_h["ETag"]
    assert head_h["Content-Encoding"] == "gzip"
    status, _, _ = await _raw(client, "HEAD", path, {**GZIP, "If-None-Match": packed_h["ETag"]})
    assert status == 304


@pytest.mark.parametrize("header", ["gzip;q=0", "gzip;q=0, *", "br", "identity, *;q=0", ""])
async def test_gzip_only_when_the_client_accepts_it(client: TestClient, header: str) -> None:
    status, headers, body = await _raw(client, "GET", "/opendata", {"Accept-Encoding": header})
    assert status == 200 and "Content-Encoding" not in headers and not headers["ETag"].endswith('-gzip"')
    assert json.loads(body)["title"]


@pytest.mark.parametrize("header", ["*", "GZIP", "x-gzip", "deflate;q=1, gzip;q=0.5", "br;q=1, *;q=0.1"])
async def test_gzip_when_the_header_allows_it_in_any_spelling(client: TestClient, header: str) -> None:
    status, headers, body = await _raw(client, "GET", "/opendata", {"Accept-Encoding": header})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["ETag"].endswith('-gzip"')
    assert json.loads(gzip.decompress(body))["title"]


async def test_a_small_entity_is_sent_as_it_is_with_the_identity_etag(client: TestClient) -> None:
    path = "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01?options=keyValues"
    status, headers, body = await _raw(client, "GET", path, GZIP)
    assert len(body) < COMPRESS_MIN_BYTES and status == 200
    assert "Content-Encoding" not in headers and not headers["ETag"].endswith('-gzip"')
    _, plain_h, _ = await _raw(client, "GET", path, IDENTITY)
    assert plain_h["ETag"] == headers["ETag"]  # one representation whatever the client accepts


async def test_the_csv_is_gzipped_with_its_own_weak_etag_and_its_own_304(fleet: Fleet) -> None:
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 11:00 hour complete
        await _csv_forms(client)


async def _csv_forms(client: TestClient) -> None:
    status, plain_h, plain = await _raw(client, "GET", CSV_PATH, IDENTITY)
    assert status == 200 and "Content-Encoding" not in plain_h
    rows = list(csv.DictReader(io.StringIO(plain.decode())))
    assert rows  # the fixture has released values in those hours
    status, packed_h, packed = await _raw(client, "GET", CSV_PATH, GZIP)
    assert status == 200 and packed_h["Content-Encoding"] == "gzip"
    assert packed_h["Content-Disposition"] == plain_h["Content-Disposition"]
    assert gzip.decompress(packed) == plain
    assert plain_h["ETag"].startswith('W/"') and packed_h["ETag"] == plain_h["ETag"][:-1] + '-gzip"'
    assert packed_h["Vary"] == plain_h["Vary"] == "Accept, Accept-Encoding"
    for enc, etag in ((IDENTITY, plain_h["ETag"]), (GZIP, packed_h["ETag"])):
        status, again_h, body = await _raw(client, "GET", CSV_PATH, {**enc, "If-None-Match": etag})
        assert status == 304 and body == b"" and again_h["ETag"] == etag
    status, head_h, body = await _raw(client, "HEAD", CSV_PATH, GZIP)
    assert status == 200 and body == b"" and head_h["ETag"] == packed_h["ETag"]
