"""``PUT /api/admin/devices/{id}`` with ``expect_key_sha256``: a compare-and-swap, the key is replaced only
while the device still holds the key of that SHA-256, checked by the registry under its write lock
(``civicedge provision --gateway`` puts a registration back so: review M2). Over the real registry."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from aiohttp.test_utils import TestClient

from .support import ADMIN_TOKEN, Fleet, admin_headers

KEY_A, KEY_B, KEY_C = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34))
WHERE = {"kind": "streetlight", "zone": "harbour", "lat": "52.3790", "lon": "4.9000"}


def _sha(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


async def _put(client: TestClient, device: str, body: object) -> tuple[int, dict[str, object]]:
    resp = await client.put(f"/api/admin/devices/{device}", headers=admin_headers(), json=body)
    return resp.status, json.loads(await resp.text())


async def test_the_key_is_replaced_only_while_the_expected_one_is_held(
        client: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await _put(client, "sl-09", {**WHERE, "key": KEY_A.hex()}))[0] == 201
    # Expecting a key it does not hold (B): 409 conflict, nothing changed.
    status, body = await _put(client, "sl-09", {**WHERE, "key": KEY_C.hex(), "replace": True,
                                                "expect_key_sha256": _sha(KEY_B)})
    assert status == 409 and body["error"]["code"] == "conflict", body  # type: ignore[index]
    assert "changed meanwhile" in body["error"]["message"], body  # type: ignore[index]
    assert fleet.registry.key("sl-09") == KEY_A and fleet.registry.get("sl-09").key_version == 1
    # Expecting the one it holds (A, upper-case hex too): replaced.
    status, body = await _put(client, "sl-09", {**WHERE, "key": KEY_B.hex(), "replace": True,
                                                "expect_key_sha256": _sha(KEY_A).upper()})
    assert (status, body) == (200, {"device": "sl-09", "result": "replaced", "key_version": 2})
    assert fleet.registry.key("sl-09") == KEY_B
    # The key it already holds again: unchanged (whatever it expected: nothing is replaced).
    status, body = await _put(client, "sl-09", {**WHERE, "key": KEY_B.hex(), "replace": True,
                                                "expect_key_sha256": _sha(KEY_C)})
    assert (status, body["result"]) == (200, "unchanged"), body
    # null is no expectation: a plain replace.
    status, body = await _put(client, "sl-09", {**WHERE, "key": KEY_C.hex(), "replace": True,
                                                "expect_key_sha256": None})
    assert (status, body["result"]) == (200, "replaced"), body
    for secret in (KEY_A.hex(), KEY_B.hex(), KEY_C.hex(), ADMIN_TOKEN):
        assert secret not in caplog.text


async def test_an_id_not_registered_is_never_added_and_revoked_or_retired_ids_keep_their_errors(
        client: TestClient, fleet: Fleet) -> None:
    status, body = await _put(client, "sl-10", {**WHERE, "key": KEY_A.hex(), "replace": True,
                                                "expect_key_sha256": _sha(KEY_B)})
    assert status == 404 and body["error"]["code"] == "unknown_device", body  # type: ignore[index]
    assert fleet.registry.lookup("sl-10") is None
    # bin-03 is revoked in the fleet; sl-03 is retired here. Each expects the key it holds.
    resp = await client.post("/api/admin/devices/sl-03/retire", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    for device, code in (("bin-03", "revoked"), ("sl-03", "retired")):
        rec = fleet.registry.get(device)
        held = fleet.registry.key(device)
        status, body = await _put(client, device, {"kind": rec.kind, "zone": rec.zone, "lat": rec.lat,
                                                   "lon": rec.lon, "key": KEY_C.hex(), "replace": True,
                                                   "expect_key_sha256": _sha(held)})
        assert status == 409 and body["error"]["code"] == code, body  # type: ignore[index]
        assert fleet.registry.key(device) == held and fleet.registry.get(device).key_version == rec.key_version


@pytest.mark.parametrize("change, message", [
    ({"expect_key_sha256": "ab" * 31, "replace": True}, "must be 64 hex characters"),
    ({"expect_key_sha256": "zz" * 32, "replace": True}, "must be 64 hex characters"),
    ({"expect_key_sha256": 12, "replace": True}, "must be 64 hex characters"),
    ({"expect_key_sha256": _sha(KEY_A)}, "only with '\"replace\": true'"),
    ({"expect_key_sha256": _sha(KEY_A), "replace": False}, "only with '\"replace\": true'"),
])
async def test_a_malformed_expectation_is_400_and_changes_nothing(
        client: TestClient, fleet: Fleet, change: dict[str, object], message: str) -> None:
    before = fleet.registry.key("sl-01"), fleet.registry.get("sl-01").key_version
    rec = fleet.registry.get("sl-01")
    body = {"kind": rec.kind, "zone": rec.zone, "lat": rec.lat, "lon": rec.lon, "key": KEY_C.hex(), **change}
    status, answer = await _put(client, "sl-01", body)
    assert status == 400, answer
    assert answer["error"]["param"] == "expect_key_sha256" and message in answer["error"]["message"], answer  # type: ignore[index]
    assert KEY_C.hex() not in json.dumps(answer)
    assert (fleet.registry.key("sl-01"), fleet.registry.get("sl-01").key_version) == before
