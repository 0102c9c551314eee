"""JSON answers are compressed when large and the client accepts it (QA: /api/dashboard for 600
devices was ~196 KB of uncompressed text every 30 s)."""

from __future__ import annotations

import json
import zlib

from aiohttp.test_utils import TestClient

from gateway.web.context import COMPRESS_MIN_BYTES


async def test_a_large_json_answer_is_compressed_for_a_client_that_accepts_it(client: TestClient) -> None:
    plain = await client.get("/api/dashboard", headers={"Accept-Encoding": "identity"})
    assert plain.status == 200
    text = await plain.read()
    assert len(text) >= COMPRESS_MIN_BYTES  # the fixture's six devices are enough to be worth it
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"

    packed = await client.get("/api/dashboard", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert packed.status == 200
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert packed.headers["Content-Type"] == "application/json; charset=utf-8"
    raw = await packed.read()
    assert len(raw) < len(text) / 2
    body = json.loads(zlib.decompress(raw, wbits=31))  # gzip framing
    assert body["devices"] == json.loads(text)["devices"]


async def test_a_small_json_answer_is_sent_as_it_is(client: TestClient) -> None:
    resp = await client.get("/api/alarms", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    raw = await resp.read()
    assert len(raw) < COMPRESS_MIN_BYTES
    assert "Content-Encoding" not in resp.headers
    assert json.loads(raw)["alarms"]
    # An error answer is JSON too, and small.
    missing = await client.get("/api/devices/nope-1", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert missing.status == 404 and "Content-Encoding" not in missing.headers
    assert json.loads(await missing.read())["error"]["code"] == "unknown_device"


async def test_gzip_refused_by_q_0_is_not_sent(client: TestClient) -> None:
    """aiohttp's own choice looked for the substring "gzip", so ``gzip;q=0`` still got gzip (review M5)."""
    for refused in ("gzip;q=0", "gzip;q=0, identity", "x-gzip;q=0.000", "gzip;q=0, *"):
        resp = await client.get("/api/dashboard", headers={"Accept-Encoding": refused}, auto_decompress=False)
        assert resp.status == 200 and "Content-Encoding" not in resp.headers, refused
        assert json.loads(await resp.read())["devices"], refused
        assert resp.headers["Vary"] == "Accept-Encoding"
    for allowed in ("gzip;q=0.5", "*", "deflate;q=0, gzip", "br, x-gzip"):
        resp = await client.get("/api/dashboard", headers={"Accept-Encoding": allowed}, auto_decompress=False)
        assert resp.headers.get("Content-Encoding") == "gzip", allowed
        assert json.loads(zlib.decompress(await resp.read(), wbits=31))["devices"], allowed
