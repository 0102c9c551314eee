"""A refused admin write leaves one WARNING audit line, as a change does: who (the caller's address), what
(method, route, device id, what the body asked for) and why (status, code, the API's parameter at fault); never
a key, the token or the body. Over the real registry and web app served on a loopback port (tests/web fixtures).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .support import ADMIN_TOKEN, Fleet, admin_headers

# Distinctive key material: no window of its written forms can turn up in a log line by chance.
KEY_HELD = hashlib.sha256(b"gw-audit: the key sl-09 holds").digest()
KEY_NEW = hashlib.sha256(b"gw-audit: the key a caller tries to put in").digest()
KEY_GUESS = hashlib.sha256(b"gw-audit: the key the caller wrongly expects").digest()
WRONG_TOKEN = "Zm9vYmFyLXdyb25nLXRva2VuLTk4NzY1NDMyMTA"
WHERE = {"kind": "streetlight", "zone": "harbour", "lat": "52.3790", "lon": "4.9000"}
ROUTE = "/api/admin/devices/{device_id}"


def _forms(secret: bytes | str) -> list[str]:
    """The ways a secret could be written into a log: as given, hex both cases, base64 (both alphabets)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    forms = [raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    return forms + ([secret] if isinstance(secret, str) else [])


def _assert_no_secret(text: str) -> None:
    """No 12-character window of any written form of a key, of the token or of the wrong token is in ``text``
    (a message cut to 40 characters would still carry a key's first 40 hex digits)."""
    for secret in (KEY_HELD, KEY_NEW, KEY_GUESS, ADMIN_TOKEN, WRONG_TOKEN):
        for form in _forms(secret):
            for i in range(len(form) - 11):
                assert form[i:i + 12] not in text, (form, i)


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.web.admin_api" and "refused" in r.getMessage()]


@pytest.fixture
async def enrolled(client: TestClient, caplog: pytest.LogCaptureFixture) -> TestClient:
    """sl-09 registered with KEY_HELD; every log record from here on captured (all loggers, DEBUG)."""
    resp = await client.put("/api/admin/devices/sl-09", headers=admin_headers(), json={**WHERE, "key": KEY_HELD.hex()})
    assert resp.status == 201, await resp.text()
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    return client


# (method, path, body, status, code, what the line names, the parameter it names or None)
REFUSED: list[tuple[str, str, Any, int, str, str, str | None]] = [
    # The compare-and-swap: sl-09 holds KEY_HELD, the caller expects KEY_GUESS.
    ("PUT", "/api/admin/devices/sl-09",
     {**WHERE, "key": KEY_NEW.hex(), "replace": True, "expect_key_sha256": hashlib.sha256(KEY_GUESS).hexdigest()},
     409, "conflict", f"PUT {ROUTE} (device sl-09; a key replacement expecting a key SHA-256)", "device_id"),
    # ... on an id not registered: never added.
    ("PUT", "/api/admin/devices/sl-77",
     {**WHERE, "key": KEY_NEW.hex(), "replace": True, "expect_key_sha256": hashlib.sha256(KEY_HELD).hexdigest()},
     404, "unknown_device", f"PUT {ROUTE} (device sl-77; a key replacement expecting a key SHA-256)", "device_id"),
    # Another key without replace.
    ("PUT", "/api/admin/devices/sl-09", {**WHERE, "key": KEY_NEW.hex()},
     409, "conflict", f"PUT {ROUTE} (device sl-09; an enrollment)", "device_id"),
    # Bad bodies: the key base64-encoded, a key sent as a body key's name (an error message quotes 40 characters
    # of it: the line names no parameter then), not JSON.
    ("PUT", "/api/admin/devices/sl-09", {**WHERE, "key": base64.b64encode(KEY_NEW).decode()},
     400, "bad_parameter", f"PUT {ROUTE} (device sl-09)", "key"),
    ("PUT", "/api/admin/devices/sl-09", {**WHERE, "key": KEY_NEW.hex(), KEY_NEW.hex(): True},
     400, "bad_parameter", f"PUT {ROUTE} (device sl-09)", "(not one of the API's)"),
    ("PUT", "/api/admin/devices/sl-09", "key=" + KEY_NEW.hex(),
     400, "bad_parameter", f"PUT {ROUTE} (device sl-09)", "body"),
    # A device id that is none (it is the caller's text: not quoted).
    ("PUT", "/api/admin/devices/" + "x" * 40, {**WHERE, "key": KEY_NEW.hex()},
     400, "bad_parameter", f"PUT {ROUTE} (an invalid device id)", "device_id"),
    # A key in a query parameter's name.
    ("POST", f"/api/admin/devices/sl-09/rotate-key?{KEY_NEW.hex()}=1", None,
     400, "bad_parameter", "POST /api/admin/devices/{device_id}/rotate-key (device sl-09)", "(not one of the API's)"),
    # The other writes: revoke (unknown, already revoked, with a body), retire, reinstate, move, retention.
    ("POST", "/api/admin/devices/sl-77/revoke", None,
     404, "unknown_device", "POST /api/admin/devices/{device_id}/revoke (device sl-77)", "device_id"),
    ("POST", "/api/admin/devices/bin-03/revoke", None,
     409, "already_revoked", "POST /api/admin/devices/{device_id}/revoke (device bin-03)", "device_id"),
    ("POST", "/api/admin/devices/sl-09/revoke", {"key": KEY_NEW.hex()},
     400, "bad_parameter", "POST /api/admin/devices/{device_id}/revoke (device sl-09)", "body"),
    ("POST", "/api/admin/devices/sl-09/reinstate", None,
     409, "not_retired", "POST /api/admin/devices/{device_id}/reinstate (device sl-09)", "device_id"),
    ("POST", "/api/admin/devices/sl-77/retire", None,
     404, "unknown_device", "POST /api/admin/devices/{device_id}/retire (device sl-77)", "device_id"),
    ("POST", "/api/admin/devices/sl-09/move", {"lat": "52.1"},
     400, "bad_parameter", "POST /api/admin/devices/{device_id}/move (device sl-09)", "lon"),
    ("POST", "/api/admin/devices/sl-77/rotate-key", None,
     404, "unknown_device", "POST /api/admin/devices/{device_id}/rotate-key (device sl-77)", "device_id"),
    ("PUT", "/api/admin/retention", {"kind": "streetlight", "field": "lux", "days": 0},
     400, "bad_parameter", "PUT /api/admin/retention", "days"),
    # Too large for the test app's 4096-byte limit (413, from the headers, before a byte is read).
    ("PUT", "/api/admin/devices/sl-09", {**WHERE, "key": KEY_NEW.hex(), "pad": "k" * 5000},
     413, "body_too_large", f"PUT {ROUTE} (device sl-09)", None),
]


async def _send(client: TestClient, method: str, path: str, body: Any,
                headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    if isinstance(body, str):
        resp = await client.request(method, path, headers={**headers, "Content-Type": "application/json"},
                                    data=body.encode())
    elif body is None:
        resp = await client.request(method, path, headers=headers)
    else:
        resp = await client.request(method, path, headers=headers, json=body)
    return resp.status, json.loads(await resp.text())


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "what", "param"), REFUSED,
                         ids=[f"{r[3]}-{r[4]}-{i}" for i, r in enumerate(REFUSED)])
async def test_a_refused_write_leaves_one_audit_line_without_key_material(
        enrolled: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture, method: str, path: str, body: Any,
        status: int, code: str, what: str, param: str | None) -> None:
    before = fleet.registry.key("sl-09"), fleet.registry.get("sl-09").key_version
    got, answer = await _send(enrolled, method, path, body, admin_headers())
    assert (got, answer["error"]["code"]) == (status, code), answer
    [record] = _refusals(caplog)
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    expected = f"admin API: refused {what}: {status} {code}" + ("" if param is None else f", param {param}")
    assert line == expected + " [from 127.0.0.1]", line
    assert (fleet.registry.key("sl-09"), fleet.registry.get("sl-09").key_version) == before  # nothing changed
    _assert_no_secret(caplog.text)


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {WRONG_TOKEN}"},
                                     {"Authorization": f"Basic {base64.b64encode(ADMIN_TOKEN.encode()).decode()}"}])
async def test_a_write_without_the_token_is_logged_once_by_the_token_check_not_again(
        enrolled: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture, headers: dict[str, str]) -> None:
    body = {**WHERE, "key": KEY_NEW.hex(), "replace": True, "expect_key_sha256": hashlib.sha256(KEY_HELD).hexdigest()}
    status, _ = await _send(enrolled, "PUT", "/api/admin/devices/sl-09", body, headers)
    assert status == 401
    assert fleet.registry.key("sl-09") == KEY_HELD
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, refused  # AdminToken's line, not a second one from the admin API
    [line] = refused
    assert "127.0.0.1" in line and "PUT '/api/admin/devices/sl-09'" in line, line
    _assert_no_secret(caplog.text)


async def test_every_admin_line_of_a_session_of_attempts_is_free_of_key_and_token_material(
        enrolled: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """Refusals and the changes between them, all loggers at DEBUG: the registry, the web app and aiohttp."""
    for method, path, body, status, *_ in REFUSED:
        assert (await _send(enrolled, method, path, body, admin_headers()))[0] == status
    # And a CAS that succeeds, then is retried (now a conflict: the key it expected was replaced).
    cas = {**WHERE, "key": KEY_NEW.hex(), "replace": True, "expect_key_sha256": hashlib.sha256(KEY_HELD).hexdigest()}
    assert (await _send(enrolled, "PUT", "/api/admin/devices/sl-09", cas, admin_headers()))[0] == 200
    again = {**cas, "key": KEY_GUESS.hex()}
    assert (await _send(enrolled, "PUT", "/api/admin/devices/sl-09", again, admin_headers()))[0] == 409
    assert fleet.registry.key("sl-09") == KEY_NEW
    assert len(_refusals(caplog)) == len(REFUSED) + 1
    assert any("replaced the key of device sl-09" in r.getMessage() for r in caplog.records)
    _assert_no_secret(caplog.text)
    # The sanity of the check itself: the forms looked for are the ones a leak would have.
    with pytest.raises(AssertionError):
        _assert_no_secret("x" + KEY_NEW.hex()[20:40] + "x")
    with pytest.raises(AssertionError):
        _assert_no_secret(base64.b64encode(ADMIN_TOKEN.encode()).decode())
