"""The body-less admin POSTs (revoke, retire, reinstate, rotate-key) take ``{}`` and ``null`` as no body:
generic clients send them for "no data" (``requests.post(url, json={})``, axios), and were refused with 400
``takes no request body``. Anything else is still refused before acting. Real registry and app over HTTP."""

from __future__ import annotations

import gzip

import pytest
from aiohttp.test_utils import TestClient

from .support import Fleet, admin_headers

JSON = {**admin_headers(), "Content-Type": "application/json"}


def _state(fleet: Fleet) -> tuple[bool, bool, int]:
    dev = fleet.registry.get("sl-01")
    return dev.revoked, dev.retired, dev.key_version


@pytest.mark.parametrize("data", [b"{}", b"null", b" {  }\r\n", b"\tnull\n", b"{\n}"])
async def test_an_empty_json_object_or_null_is_no_body(client: TestClient, fleet: Fleet, data: bytes) -> None:
    resp = await client.post("/api/admin/devices/sl-01/rotate-key", data=data, headers=JSON)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/admin/devices/sl-01/retire", data=data, headers=JSON)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/admin/devices/sl-01/reinstate", data=data, headers=JSON)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/admin/devices/sl-01/revoke", data=data, headers=JSON)
    assert resp.status == 200, await resp.text()
    assert _state(fleet) == (True, False, 2)


async def test_requests_style_json_and_a_gzip_empty_object(client: TestClient, fleet: Fleet) -> None:
    resp = await client.post("/api/admin/devices/sl-01/rotate-key", json={}, headers=admin_headers())
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/admin/devices/sl-01/retire", data=gzip.compress(b"{}"),
                             headers={**JSON, "Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()
    assert _state(fleet) == (False, True, 2)


@pytest.mark.parametrize("data", [b'{"dry_run": true}', b"[]", b'""', b"{}{}", b"null null", b"nul", b"0",
                                  b"false", b"{ ", b"\xef\xbb\xbf{}"])
async def test_anything_else_is_still_refused_before_acting(client: TestClient, fleet: Fleet, data: bytes) -> None:
    before = _state(fleet)
    for action in ("revoke", "retire", "rotate-key"):
        resp = await client.post(f"/api/admin/devices/sl-01/{action}", data=data, headers=JSON)
        body = await resp.json()
        assert resp.status == 400, body
        assert body["error"]["param"] == "body" and "takes no request body" in body["error"]["message"]
        assert "send none, {} or null" in body["error"]["message"]
    assert _state(fleet) == before
