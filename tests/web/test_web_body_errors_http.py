"""Every request-body failure is the API's JSON error, over real HTTP (aiohttp's test server on a loopback
port; raw sockets where a client library would fix the request up): a ``br`` or ``zstd`` body (was
aiohttp's plain-text 400, "Please install `Brotli`", before any gateway code ran), deflate and gzip
garbage, truncated or trailing bytes, oversize by header, by chunks and once decoded, on admin and public
paths alike; under ``/api/admin/`` the token is checked first, so a caller without it learns nothing of
the body handling. Also the method and path errors: 404, 405, HEAD and OPTIONS answer JSON."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from gateway.resources import load_policy
from gateway.web.app import create_app, start_http

from .support import ADMIN_TOKEN, NOW, Fleet, admin_headers

RETENTION = {"kind": "bin", "field": "temp", "days": 30}
# A zstd frame's magic number then junk, and bytes labelled br: the gateway decodes neither coding, and
# refuses them from the header, whatever the bytes.
ENCODED = {"br": b"\x8b\x03\x80garbage\x03", "zstd": b"\x28\xb5\x2f\xfdgarbage", "compress": b"\x1f\x9dxx"}
LIMIT = 4096  # max_body_bytes of the conftest's app


async def _raw(client: TestClient | tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as written on a fresh connection; status, headers (lower-case names) and body."""
    host, port = client if isinstance(client, tuple) else (client.host, client.port)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout=5)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


def _json_error(status: int, headers: dict[str, str], body: bytes, want_status: int, code: str) -> dict[str, str]:
    assert status == want_status, body
    assert headers["content-type"].startswith("application/json"), headers
    assert headers["x-content-type-options"] == "nosniff"  # the security headers of every answer
    error: dict[str, str] = json.loads(body)["error"]
    assert error["code"] == code, error
    return error


@pytest.mark.parametrize("coding", sorted(ENCODED))
async def test_a_body_in_a_coding_the_api_does_not_decode_is_415_json_on_admin_and_public_paths(
        client: TestClient, fleet: Fleet, coding: str) -> None:
    data = ENCODED[coding]
    for method, path, auth in [("PUT", "/api/admin/retention", True), ("POST", "/api/admin/devices/sl-01/revoke", True),
                               ("GET", "/api/admin/devices", True), ("GET", "/api/devices", False),
                               ("GET", "/opendata/ngsi-ld/v1/entities", False), ("GET", "/healthz", False)]:
        headers = {"Content-Encoding": coding, "Content-Type": "application/json",
                   **(admin_headers() if auth else {})}
        resp = await client.request(method, path, data=data, headers=headers)
        body = await resp.read()
        status, got = resp.status, {k.lower(): v for k, v in resp.headers.items()}
        error = _json_error(status, got, body, 415, "unsupported_encoding")
        assert error["param"] == "Content-Encoding" and f"'{coding}'" in error["message"], (path, error)
        assert resp.headers["Accept-Encoding"] == "gzip, deflate"
    assert fleet.retention.effective()[("bin", "temp")] == 90
    assert not fleet.registry.get("sl-01").revoked
    # The header alone, without a body, refuses nothing.
    resp = await client.get("/api/devices", headers={"Content-Encoding": coding})
    assert resp.status == 200


async def test_br_over_a_raw_connection_is_answered_by_the_gateway_not_the_parser(client: TestClient) -> None:
    """aiohttp's parser refused a br body with HTTP/1.0 400 text/plain "Can not decode content-encoding"."""
    token = admin_headers()["Authorization"].encode()
    status, headers, body = await _raw(client, b"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Authorization: " + token + b"\r\nContent-Encoding: br\r\n"
                                       b"Content-Length: 2\r\n\r\nxx")
    _json_error(status, headers, body, 415, "unsupported_encoding")
    assert b"install" not in body


async def test_the_gateways_own_server_answers_br_and_zstd_with_json_too(fleet: Fleet) -> None:
    """start_http (the gateway's server: AppRunner, CappedSite), not the test server: the app's
    handler_args turn aiohttp's decoding off there too."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: float(NOW), max_body_bytes=LIMIT)
    server = await start_http(app, host="127.0.0.1", port=0)
    try:
        for coding, method, path in [("br", "PUT", "/api/admin/retention"), ("zstd", "GET", "/api/devices")]:
            status, headers, body = await _raw(
                (server.host, server.port),
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                f"Content-Encoding: {coding}\r\nContent-Length: {len(ENCODED[coding])}\r\n\r\n".encode()
                + ENCODED[coding])
            _json_error(status, headers, body, 415, "unsupported_encoding")
    finally:
        await server.stop()
    assert fleet.retention.effective()[("bin", "temp")] == 90


@pytest.mark.parametrize("request_head", [
    "Content-Encoding: br\r\nContent-Length: 2",
    "Content-Encoding: zstd\r\nContent-Length: 2",
    "Content-Encoding: gzip\r\nContent-Length: 2",
    "Content-Encoding: bogus, gzip\r\nContent-Length: 2",
    f"Content-Length: {LIMIT * 10}",
    "Transfer-Encoding: chunked",
])
async def test_without_the_token_an_admin_call_learns_nothing_of_its_body(client: TestClient, fleet: Fleet,
                                                                          request_head: str) -> None:
    """The token is checked before the body's coding or size: the same 401 as a call without a body."""
    bare = await _raw(client, b"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
    _json_error(*bare, 401, "missing_token")
    body = b"2\r\nxx\r\n0\r\n\r\n" if "chunked" in request_head else b"xx"
    status, headers, answer = await _raw(client, b"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                         + request_head.encode() + b"\r\n\r\n" + body)
    _json_error(status, headers, answer, 401, "missing_token")
    assert answer == bare[2] and headers["www-authenticate"] == bare[1]["www-authenticate"]
    # A wrong token likewise: wrong_token, never body_too_large or unsupported_encoding.
    status, headers, answer = await _raw(client, b"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                         b"Authorization: Bearer not-the-token-0123456789\r\n"
                                         + request_head.encode() + b"\r\n\r\n" + body)
    _json_error(status, headers, answer, 401, "wrong_token")
    assert fleet.retention.effective()[("bin", "temp")] == 90


@pytest.mark.parametrize(("coding", "data", "words"), [
    ("deflate", b"\x78\x9cgarbage-not-deflate", "not valid deflate"),
    ("deflate", b"garbage", "not valid deflate"),  # bare deflate data is read too: garbage either way
    ("gzip", gzip.compress(json.dumps(RETENTION).encode(), mtime=0)[:-6], "ends before the compressed data does"),
    ("gzip", gzip.compress(json.dumps(RETENTION).encode(), mtime=0) + b"trailing", "8 bytes follow the compressed data"),
    ("deflate", zlib.compress(json.dumps(RETENTION).encode()) + b"x", "1 bytes follow the compressed data"),
], ids=["zlib-garbage", "bare-garbage", "gzip-truncated", "gzip-trailing", "deflate-trailing"])
async def test_a_compressed_body_that_does_not_decode_is_400_json(client: TestClient, fleet: Fleet, coding: str,
                                                                  data: bytes, words: str) -> None:
    resp = await client.put("/api/admin/retention", data=data,
                            headers={**admin_headers(), "Content-Encoding": coding})
    error = _json_error(resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read(), 400,
                        "bad_parameter")
    assert error["param"] == "body" and words in error["message"], error
    assert fleet.retention.effective()[("bin", "temp")] == 90


async def test_gzip_members_one_after_another_are_one_body_and_bare_deflate_is_read(client: TestClient,
                                                                                   fleet: Fleet) -> None:
    raw = json.dumps(RETENTION).encode()
    resp = await client.put("/api/admin/retention", data=gzip.compress(raw[:10]) + gzip.compress(raw[10:]),
                            headers={**admin_headers(), "Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()
    assert fleet.retention.effective()[("bin", "temp")] == 30
    bare = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    packed = bare.compress(json.dumps({**RETENTION, "days": 20}).encode()) + bare.flush()
    resp = await client.put("/api/admin/retention", data=packed,
                            headers={**admin_headers(), "Content-Encoding": "deflate"})
    assert resp.status == 200, await resp.text()
    assert fleet.retention.effective()[("bin", "temp")] == 20


async def test_oversize_is_413_json_by_header_by_chunks_and_once_decoded(client: TestClient, fleet: Fleet) -> None:
    big = json.dumps({**RETENTION, "pad": " " * LIMIT * 4}).encode()
    # By Content-Length, on a public path too, before a byte is read.
    for method, path, auth in [("PUT", "/api/admin/retention", True), ("GET", "/api/devices", False),
                               ("GET", "/metrics", False)]:
        status, headers, body = await _raw(client, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                                           + (b"Authorization: " + admin_headers()["Authorization"].encode() + b"\r\n"
                                              if auth else b"")
                                           + f"Content-Length: {len(big)}\r\n\r\n".encode())
        error = _json_error(status, headers, body, 413, "body_too_large")
        assert f"limit of {LIMIT}" in error["message"], (path, error)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    resp = await client.put("/api/admin/retention", data=chunks(), headers=admin_headers())
    _json_error(resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read(), 413, "body_too_large")
    # Small on the wire, large once decoded: deflate as gzip (the gzip case: test_web_admin_bodies.py).
    packed = zlib.compress(big, 9)
    assert len(packed) < LIMIT
    resp = await client.put("/api/admin/retention", data=packed,
                            headers={**admin_headers(), "Content-Encoding": "deflate"})
    error = _json_error(resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read(), 413,
                        "body_too_large")
    assert "once decoded from deflate" in error["message"]
    assert fleet.retention.effective()[("bin", "temp")] == 90


async def test_method_and_path_errors_are_json_everywhere(client: TestClient) -> None:
    for method, path, status, code in [
            ("GET", "/api/nope", 404, "not_found"), ("GET", "/api/admin/nope", 404, "not_found"),
            ("DELETE", "/api/devices", 405, "method_not_allowed"), ("OPTIONS", "/api/devices", 405, "method_not_allowed"),
            ("TRACE", "/healthz", 405, "method_not_allowed"), ("PATCH", "/api/admin/retention", 405, "method_not_allowed"),
            ("POST", "/", 405, "method_not_allowed")]:
        resp = await client.request(method, path)
        error = _json_error(resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read(), status,
                            code)
        if status == 405:
            assert resp.headers["Allow"].startswith("GET, HEAD"), (path, resp.headers)
            assert f"'{method}' is not allowed" in error["message"] and resp.headers["Allow"] in error["message"]
        else:
            assert "/openapi.json" in error["message"]
    # Routing answers first, as on admin paths: a path nothing serves is 404 whatever its body or query.
    status, headers, body = await _raw(client, b"PUT /api/nope?a=1&a=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Content-Encoding: br\r\nContent-Length: 100000\r\n\r\n")
    _json_error(status, headers, body, 404, "not_found")
    status, headers, body = await _raw(client, b"DELETE /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Content-Encoding: zstd\r\nContent-Length: 2\r\n\r\nxx")
    _json_error(status, headers, body, 405, "method_not_allowed")
    # HEAD: the status and the JSON content type of the GET, no body.
    for path, status in [("/api/nope", 404), ("/api/devices/nope-9", 404), ("/api/admin/devices", 401)]:
        resp = await client.head(path)
        assert resp.status == status and resp.headers["Content-Type"].startswith("application/json"), path
        assert await resp.read() == b""


async def _expect(client: TestClient, head: bytes) -> tuple[bytes, int, dict[str, str], bytes]:
    """Send ``head`` (ending with an Expect header) and no body; the first line the gateway answers,
    then (when it was 100 Continue, after sending a 2-byte body) the final answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head + b"\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
        if b" 100 " in first:
            await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)  # the blank line after 100 Continue
            writer.write(b"{}")
            await writer.drain()
            first = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
            interim = b"100"
        else:
            interim = b""
        rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        lines = (first + rest).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout=5)
        return interim, int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


async def test_expect_100_continue_only_when_the_body_will_be_read_and_other_expectations_are_json(
        client: TestClient, fleet: Fleet) -> None:
    """aiohttp sent 100 Continue to anyone, token or not, and a text/plain 417 to ``Expect: foo``."""
    token = admin_headers()["Authorization"].encode()
    put = b"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    # Without the token: the final 401 at once, no 100 Continue (the body is never asked for).
    interim, status, headers, body = await _expect(client, put + b"Content-Length: 2\r\nExpect: 100-continue\r\n")
    assert interim == b""
    _json_error(status, headers, body, 401, "missing_token")
    assert headers.get("connection", "").lower() == "close"  # the unsent body would be read as the next request
    # A body the headers refuse: the 415 at once.
    interim, status, headers, body = await _expect(client, put + b"Authorization: " + token + b"\r\n"
                                                   b"Content-Encoding: br\r\nContent-Length: 2\r\nExpect: 100-continue\r\n")
    assert interim == b""
    _json_error(status, headers, body, 415, "unsupported_encoding")
    assert headers.get("connection", "").lower() == "close"
    # With the token: 100 Continue, then the body is read ({} is not a retention change: 400 naming it).
    interim, status, headers, body = await _expect(client, put + b"Authorization: " + token + b"\r\n"
                                                   b"Content-Length: 2\r\nExpect: 100-continue\r\n")
    assert interim == b"100"
    assert headers.get("connection", "").lower() != "close"  # the body was read: the connection stays usable
    assert _json_error(status, headers, body, 400, "bad_parameter")["param"] == "kind"
    # An expectation other than 100-continue is ignored: the answer is the one without it, JSON.
    interim, status, headers, body = await _expect(client, b"GET /api/devices/nope-9 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                   b"Expect: foo\r\n")
    assert interim == b""
    _json_error(status, headers, body, 404, "unknown_device")
    interim, status, headers, body = await _expect(client, put + b"Expect: foo\r\nContent-Length: 0\r\n")
    _json_error(status, headers, body, 401, "missing_token")
    assert fleet.retention.effective()[("bin", "temp")] == 90


async def test_an_answer_without_100_continue_closes_the_connection_so_a_next_request_is_not_read_as_the_body(
        client: TestClient) -> None:
    """Review: the 401 sent instead of 100 Continue kept the connection; the next request on it was read as
    the withheld body (aiohttp's plain-text 400 'Invalid method' naming its version)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 401 ")
        assert b"\r\nconnection: close\r\n" in head.lower()
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
        await asyncio.wait_for(reader.readexactly(length), timeout=5)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), timeout=5)  # closed by the server: nothing more is answered
        assert rest == b""
    finally:
        writer.close()
