"""Admin request bodies the API must refuse before acting: a gzip/deflate body that does not decode
(was 500 with tracebacks; br, zstd, oversize and the order against the token check:
test_web_body_errors_http.py), a Content-Encoding it does not decode, a body sent to an endpoint that takes
none (``/revoke`` with ``{"dry_run": true}`` revoked the device), and a JSON key given twice (the last
copy silently won). Real registry, store and app over HTTP."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib

import pytest
from aiohttp.test_utils import TestClient

from .support import Fleet, admin_headers

RETENTION = {"kind": "bin", "field": "temp", "days": 30}


def _registry_state(fleet: Fleet) -> list[tuple[object, ...]]:
    return [(d.id, d.kind, d.zone, d.revoked, d.retired, d.key_version, fleet.registry.key(d.id))
            for d in fleet.registry.list()]


def _encoded(coding: str) -> dict[str, str]:
    return {**admin_headers(), "Content-Encoding": coding, "Content-Type": "application/json"}


@pytest.mark.parametrize("coding", ["gzip", "deflate", "GZIP"])
async def test_a_body_that_does_not_decode_is_400_not_500(client: TestClient, fleet: Fleet, coding: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    resp = await client.put("/api/admin/retention", data=b"xx", headers=_encoded(coding))
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "bad_parameter" and body["error"]["param"] == "body"
    assert f"not valid {coding.lower()}" in body["error"]["message"]
    assert fleet.retention.effective()[("bin", "temp")] == 90
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    # The gateway decodes the body itself, once it is received whole: the connection stays usable.
    assert "close" not in resp.headers.get("Connection", "").lower()
    resp = await client.get("/api/admin/retention", headers=admin_headers())
    assert resp.status == 200


async def test_a_gzip_or_deflate_body_that_decodes_is_taken_within_the_size_limit(client: TestClient,
                                                                                   fleet: Fleet) -> None:
    raw = json.dumps(RETENTION).encode()
    resp = await client.put("/api/admin/retention", data=gzip.compress(raw), headers=_encoded("gzip"))
    assert resp.status == 200, await resp.text()
    assert fleet.retention.effective()[("bin", "temp")] == 30
    resp = await client.put("/api/admin/retention", data=zlib.compress(json.dumps({**RETENTION, "days": 20}).encode()),
                            headers=_encoded("deflate"))
    assert resp.status == 200, await resp.text()
    assert fleet.retention.effective()[("bin", "temp")] == 20
    # Small on the wire, above max_body_bytes (4096 here) once decoded: the limit counts the decoded body.
    bomb = gzip.compress(json.dumps({**RETENTION, "pad": " " * 100_000}).encode())
    assert len(bomb) < 4096
    resp = await client.put("/api/admin/retention", data=bomb, headers=_encoded("gzip"))
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "body_too_large"
    assert fleet.retention.effective()[("bin", "temp")] == 20


@pytest.mark.parametrize("coding", ["bogus", "gzip, gzip", "compress", "x-unknown"])
async def test_a_content_encoding_the_api_does_not_decode_is_415(client: TestClient, fleet: Fleet,
                                                                 coding: str) -> None:
    # Before, aiohttp passed the body through undecoded and it was parsed as plain JSON: taken.
    resp = await client.put("/api/admin/retention", data=json.dumps(RETENTION).encode(), headers=_encoded(coding))
    body = await resp.json()
    assert resp.status == 415, body
    assert body["error"]["code"] == "unsupported_encoding" and body["error"]["param"] == "Content-Encoding"
    assert resp.headers["Accept-Encoding"] == "gzip, deflate"
    assert fleet.retention.effective()[("bin", "temp")] == 90
    # identity is no coding at all: taken.
    resp = await client.put("/api/admin/retention", data=json.dumps(RETENTION).encode(), headers=_encoded("identity"))
    assert resp.status == 200


@pytest.mark.parametrize("action", ["revoke", "retire", "reinstate", "rotate-key"])
@pytest.mark.parametrize("data", [b'{"dry_run": true}', b"garbage", b"[]", b" "])
async def test_a_body_sent_to_an_endpoint_that_takes_none_is_400_and_nothing_changes(
        client: TestClient, fleet: Fleet, action: str, data: bytes) -> None:
    if action == "reinstate":  # so that reinstating would act
        fleet.registry.retire("sl-01")
    before = _registry_state(fleet)
    resp = await client.post(f"/api/admin/devices/sl-01/{action}", data=data, headers=admin_headers())
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "bad_parameter" and body["error"]["param"] == "body"
    assert "takes no request body" in body["error"]["message"]
    assert _registry_state(fleet) == before


async def test_an_empty_body_is_no_body(client: TestClient, fleet: Fleet) -> None:
    resp = await client.post("/api/admin/devices/sl-01/rotate-key", data=b"", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    assert fleet.registry.get("sl-01").key_version == 2

    async def nothing():  # chunked, no chunk: no body either
        return
        yield b""

    resp = await client.post("/api/admin/devices/sl-01/revoke", data=nothing(), headers=admin_headers())
    assert resp.status == 200, await resp.text()
    assert fleet.registry.get("sl-01").revoked


async def test_a_json_key_given_twice_is_400_naming_it(client: TestClient, fleet: Fleet) -> None:
    before = _registry_state(fleet)
    enroll = ('{"kind": "bin", "kind": "streetlight", "zone": "harbour", "lat": "52.379", "lon": "4.9", '
              '"key": "%s"}' % bytes(range(32)).hex())
    resp = await client.put("/api/admin/devices/sl-09", data=enroll.encode(), headers=admin_headers())
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "bad_parameter" and body["error"]["param"] == "kind"
    assert "'kind' more than once" in body["error"]["message"]
    assert _registry_state(fleet) == before and fleet.registry.lookup("sl-09") is None

    resp = await client.put("/api/admin/retention", headers=admin_headers(),
                            data=b'{"kind": "bin", "field": "temp", "days": 90, "days": 1}')
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "days"
    assert fleet.retention.effective()[("bin", "temp")] == 90
    long_key = "k" * 100
    resp = await client.put("/api/admin/retention", headers=admin_headers(),
                            data=('{"a": {"%s": 1, "%s": 2}}' % (long_key, long_key)).encode())
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["param"] == "k" * 40 + "..." and long_key not in error["message"]


async def test_the_connection_of_an_undecodable_body_carries_the_next_request(client: TestClient) -> None:
    """The body is received whole (its framing is sound) before the gateway decodes it, so a request
    pipelined behind it on the same connection is read and answered too (aiohttp used to decode as the
    bytes arrived, stopped reading the connection at the bad bytes, and the gateway had to close it)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    token = admin_headers()["Authorization"]
    writer.write(b"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + token.encode()
                 + b"\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx"
                 + b"GET /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: "
                 + token.encode() + b"\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)  # to EOF: closed after the second, as asked
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"request body is not valid gzip" in answer
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 200 " in answer and b'"retention_days"' in answer
