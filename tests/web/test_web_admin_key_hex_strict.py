"""``key`` and ``expect_key_sha256`` are exactly 64 hex characters: whitespace, which ``bytes.fromhex`` would skip
(``"  " + "ab" * 31`` is 64 characters but 31 bytes), is refused as a 400 naming the field, before the registry
sees it (review LOW 3); nothing is enrolled or replaced."""

from __future__ import annotations

import hashlib
import json

import pytest
from aiohttp.test_utils import TestClient

from .support import Fleet, admin_headers

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))
WHERE = {"kind": "streetlight", "zone": "harbour", "lat": "52.3790", "lon": "4.9000"}
SPACED = ["  " + "ab" * 31, "ab" * 31 + " \n", "ab" * 15 + "  " + "ab" * 16, "\t" + "ab" * 31 + "\n"]


async def _put(client: TestClient, device: str, body: object) -> tuple[int, dict[str, object]]:
    resp = await client.put(f"/api/admin/devices/{device}", headers=admin_headers(), json=body)
    return resp.status, json.loads(await resp.text())


@pytest.mark.parametrize("key", SPACED)
async def test_a_key_with_whitespace_is_400_naming_key(client: TestClient, fleet: Fleet, key: str) -> None:
    assert len(key) == 64
    status, body = await _put(client, "sl-09", {**WHERE, "key": key})
    error = body["error"]
    assert status == 400 and error["code"] == "bad_parameter" and error["param"] == "key", body  # type: ignore[index]
    assert "64 hex characters" in error["message"] and key.strip() not in error["message"]  # type: ignore[index]
    assert fleet.registry.lookup("sl-09") is None


@pytest.mark.parametrize("expected", SPACED)
async def test_an_expected_sha_with_whitespace_is_400_and_the_key_stays(client: TestClient, fleet: Fleet,
                                                                        expected: str) -> None:
    assert (await _put(client, "sl-09", {**WHERE, "key": KEY_A.hex()}))[0] == 201
    status, body = await _put(client, "sl-09", {**WHERE, "key": KEY_B.hex(), "replace": True,
                                                "expect_key_sha256": expected})
    error = body["error"]
    assert status == 400 and error["param"] == "expect_key_sha256", body  # type: ignore[index]
    assert fleet.registry.key("sl-09") == KEY_A and fleet.registry.get("sl-09").key_version == 1
    # The same SHA without the whitespace is taken (mixed case too).
    status, body = await _put(client, "sl-09", {**WHERE, "key": KEY_B.hex(), "replace": True,
                                                "expect_key_sha256": hashlib.sha256(KEY_A).hexdigest().upper()})
    assert status == 200, body
    assert fleet.registry.key("sl-09") == KEY_B
