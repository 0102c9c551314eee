"""Admin API: bearer token, revocation, key rotation, retention, body limits and timeouts."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from yarl import URL
from aiohttp.test_utils import TestClient, TestServer

from .support import ADMIN_TOKEN, NOW, Fleet, admin_headers
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http

ADMIN_CALLS = [
    ("GET", "/api/admin/devices"),
    ("PUT", "/api/admin/devices/sl-09"),
    ("POST", "/api/admin/devices/sl-01/revoke"),
    ("POST", "/api/admin/devices/sl-01/rotate-key"),
    ("GET", "/api/admin/retention"),
    ("PUT", "/api/admin/retention"),
]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer wrong-token-wrong-token-0000"}, "wrong_token"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, "wrong_token"),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, "missing_token"),
        ({"Authorization": "Bearer"}, "missing_token"),
    ],
)
async def test_admin_without_the_right_token_is_401(
    client: TestClient, fleet: Fleet, headers: dict[str, str], code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for method, path in ADMIN_CALLS:
        resp = await client.request(method, path, headers=headers, json={"kind": "bin", "field": "bat", "days": 5})
        assert resp.status == 401, (method, path)
        assert (await resp.json())["error"]["code"] == code
        # RFC 6750 §3: a 401 names the scheme to use; a token that was presented and wrong is invalid_token.
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer realm=")
        assert ('error="invalid_token"' in challenge) == (code == "wrong_token"), challenge
        # The right token in between: more than FREE_WRONG_TOKENS wrong ones in a row are answered 429 unchecked
        # (tests/web/test_web_admin_throttle.py); a read-only call, so nothing below can have been changed by it.
        assert (await client.get("/api/admin/retention", headers=admin_headers())).status == 200
    # Nothing changed behind a refused call.
    assert fleet.registry.lookup("sl-09") is None
    assert not fleet.registry.get("sl-01").revoked
    assert fleet.registry.get("sl-01").key_version == 1
    assert fleet.retention.effective()[("bin", "bat")] == 90
    # Neither the real token nor what was presented reaches a log line.
    assert ADMIN_TOKEN not in caplog.text and "wrong-token" not in caplog.text


async def test_a_token_that_is_not_utf8_is_401_not_500(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Header bytes that are not UTF-8 (a token file in Latin-1: "é" as 0xE9) reached the comparison
    as surrogates and raised UnicodeEncodeError: a 500 with a traceback, for anyone, unauthenticated."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET /api/admin/devices HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \xe9\xe9\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b'"wrong_token"' in answer
    assert "Traceback" not in caplog.text and "UnicodeEncodeError" not in caplog.text


async def test_admin_disabled_without_configured_token(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=None, admin_token=None, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/api/admin/devices", headers=admin_headers())
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "admin_disabled"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_short_admin_token_is_refused_at_startup(fleet: Fleet) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                   metrics_registry=None, admin_token="short")


async def test_admin_device_list_has_no_key_material(client: TestClient, fleet: Fleet) -> None:
    resp = await client.get("/api/admin/devices", headers=admin_headers())
    assert resp.status == 200
    text = await resp.text()
    assert json.loads(text)["count"] == 6
    for dev in ("sl-01", "bin-01", "bin-03"):
        assert fleet.registry.key(dev).hex() not in text


async def test_revoke_then_reports_are_rejected_and_second_revoke_conflicts(client: TestClient, fleet: Fleet) -> None:
    resp = await client.post("/api/admin/devices/sl-01/revoke", headers=admin_headers())
    answer = await resp.json()
    assert resp.status == 200 and (answer["device"], answer["revoked"]) == ("sl-01", True)
    assert fleet.registry.get("sl-01").revoked
    stored = fleet.queries.count_reports()
    fleet.feed("sl-01", {"t": "win", "k": "streetlight", "w": NOW, "l": 900, "m": {"lux": 10}})
    await fleet.settle(stored=stored, rejected=1)
    assert fleet.metrics.value("civicedge_rejections_total", {"reason": "revoked"}) == 1
    assert fleet.queries.count_reports() == stored
    resp = await client.post("/api/admin/devices/sl-01/revoke", headers=admin_headers())
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "already_revoked"
    version = fleet.registry.get("sl-01").key_version
    resp = await client.post("/api/admin/devices/sl-01/rotate-key", headers=admin_headers())
    assert resp.status == 409 and (await resp.json())["error"] == {
        "code": "revoked", "param": "device_id",
        "message": "device 'sl-01' is revoked; its key is not rotated (provision the board under a new id)"}
    assert fleet.registry.get("sl-01").key_version == version
    devices = await (await client.get("/api/devices")).json()
    assert {d["id"]: d["status"] for d in devices["devices"]}["sl-01"] == "revoked"


async def test_unknown_and_malformed_device_ids(client: TestClient) -> None:
    for action in ("revoke", "rotate-key"):
        resp = await client.post(f"/api/admin/devices/ghost/{action}", headers=admin_headers())
        assert resp.status == 404 and (await resp.json()) == {"error": {
            "code": "unknown_device", "message": "no device 'ghost'", "param": "device_id"}}
    resp = await client.post("/api/admin/devices/bad%20id!/rotate-key", headers=admin_headers())
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "device_id"


async def test_revoke_and_rotate_need_only_the_registry(fleet: Fleet) -> None:
    """The registry says whether a device exists: an unreadable report store does not stop a revocation."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=None, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    fleet.queries.close()  # every store read fails from now on
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.post("/api/admin/devices/bin-01/rotate-key", headers=admin_headers())
        assert resp.status == 200 and (await resp.json())["key_version"] == 2
        resp = await c.post("/api/admin/devices/sl-01/revoke", headers=admin_headers())
        assert resp.status == 200 and fleet.registry.get("sl-01").revoked
        resp = await c.post("/api/admin/devices/ghost/revoke", headers=admin_headers())
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_device"


async def test_rotate_key_writes_a_new_key_and_never_returns_or_logs_it(
    client: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    old = fleet.registry.key("bin-01")
    caplog.set_level(logging.DEBUG)
    resp = await client.post("/api/admin/devices/bin-01/rotate-key", headers=admin_headers())
    assert resp.status == 200
    text = await resp.text()
    body = json.loads(text)
    new = fleet.registry.key("bin-01")
    assert new != old and len(new) == 32
    assert body["rotated"] is True and body["key_version"] == 2
    assert Path(body["key_file"]) == fleet.registry.key_path("bin-01")
    for secret in (new.hex(), old.hex(), ADMIN_TOKEN):
        assert secret not in text
        assert secret not in caplog.text
    assert "bin-01" in caplog.text  # the action itself is logged


def _enrollment(device_key: bytes, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"kind": "streetlight", "zone": "harbour", "lat": "52.3790", "lon": "4.9000",
                               "key": device_key.hex()}
    body.update(overrides)
    return body


async def test_enroll_adds_a_device_whose_reports_are_then_accepted_and_never_shows_the_key(
    client: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key, other = bytes(range(32)), bytes(range(1, 33))
    resp = await client.put("/api/admin/devices/sl-09", headers=admin_headers(), json=_enrollment(key))
    text = await resp.text()
    assert resp.status == 201, text
    assert json.loads(text) == {"device": "sl-09", "result": "added", "key_version": 1}
    assert fleet.registry.key("sl-09") == key
    stored = fleet.queries.count_reports()
    fleet.feed("sl-09", {"t": "win", "k": "streetlight", "w": NOW, "l": 900, "m": {"lux": 10}})
    await fleet.settle(stored=stored + 1)
    # Idempotent; another key conflicts unless replace is asked for; then the old key stops working.
    resp = await client.put("/api/admin/devices/sl-09", headers=admin_headers(), json=_enrollment(key))
    assert resp.status == 200 and (await resp.json())["result"] == "unchanged"
    resp = await client.put("/api/admin/devices/sl-09", headers=admin_headers(), json=_enrollment(other))
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "conflict"
    assert fleet.registry.key("sl-09") == key
    resp = await client.put("/api/admin/devices/sl-09", headers=admin_headers(),
                            json=_enrollment(other, replace=True))
    assert resp.status == 200 and await resp.json() == {"device": "sl-09", "result": "replaced", "key_version": 2}
    assert fleet.registry.key("sl-09") == other
    for secret in (key.hex(), other.hex(), ADMIN_TOKEN):
        assert secret not in caplog.text
    # Audit lines at WARNING (the gateway's default level keeps them), as for revoke/rotate/move.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Each names the caller's address, as a refused call's line does (never the token).
    assert ("admin API: added device sl-09 (streetlight, zone harbour at 52.3790,4.9000; key version 1)"
            " [from 127.0.0.1]" in warnings)
    assert ("admin API: replaced the key of device sl-09 (key version 2): the old key no longer works"
            " [from 127.0.0.1]"
            in warnings)
    # The refused one (another key without replace) leaves its own line (test_web_admin_refusal_audit.py).
    assert ("admin API: refused PUT /api/admin/devices/{device_id} (device sl-09; an enrollment): 409 conflict, "
            "param device_id [from 127.0.0.1]" in warnings)
    assert not any("sl-09" in w for w in warnings if not w.startswith(("admin API: added", "admin API: replaced",
                                                                        "admin API: refused")))  # unchanged: silent


async def test_enroll_refuses_moves_revoked_ids_and_bad_bodies_without_changing_anything(
    client: TestClient, fleet: Fleet
) -> None:
    key = bytes(range(32))
    where = {"kind": "streetlight", "zone": "north", "lat": "52.3702", "lon": "4.8952"}
    cases = [
        ("sl-01", _enrollment(key, zone="centre", lat="52.3702", lon="4.8952", kind="bin"), 409, "moved"),
        ("sl-01", _enrollment(key, zone="north", lat="52.3702", lon="4.8952"), 409, "moved"),
        ("bin-03", _enrollment(key, kind="bin", zone="north", lat="52.3795", lon="4.9020", replace=True), 409,
         "revoked"),
        ("sl-10", _enrollment(key, kind="lamp"), 400, "bad_parameter"),
        ("sl-10", _enrollment(key, lat="91.0"), 400, "bad_parameter"),
        ("sl-10", _enrollment(key, zone="a/b"), 400, "bad_parameter"),
        ("sl-10", _enrollment(key, key="00" * 31), 400, "bad_parameter"),
        ("sl-10", _enrollment(key, key="zz" * 32), 400, "bad_parameter"),
        ("sl-10", _enrollment(key, key=None), 400, "bad_parameter"),
        ("sl-10", _enrollment(key, replace="yes"), 400, "bad_parameter"),
        ("sl-10", _enrollment(key, extra=1), 400, "bad_parameter"),
        ("sl-10", {k: v for k, v in _enrollment(key).items() if k != "zone"}, 400, "bad_parameter"),
        ("sl-10", [where], 400, "bad_parameter"),
        ("bad%20id!", _enrollment(key), 400, "bad_parameter"),
    ]
    before = [(d.id, d.kind, d.zone, d.revoked, d.key_version) for d in fleet.registry.list()]
    keys = {d: fleet.registry.key(d) for d, *_ in before}
    for device, body, status, code in cases:
        resp = await client.put(f"/api/admin/devices/{device}", headers=admin_headers(), json=body)
        text = await resp.text()
        assert resp.status == status, (device, body, text)
        assert json.loads(text)["error"]["code"] == code, (device, body, text)
        assert key.hex() not in text
    assert [(d.id, d.kind, d.zone, d.revoked, d.key_version) for d in fleet.registry.list()] == before
    assert {d: fleet.registry.key(d) for d, *_ in before} == keys


async def test_retention_get_set_and_persist(client: TestClient, fleet: Fleet, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.web.admin_api"):
        resp = await client.put("/api/admin/retention", headers=admin_headers(),
                                json={"kind": "bin", "field": "temp", "days": 30})
    assert resp.status == 200, await resp.text()
    # an admin change the quiet gateway records (WARNING), as device changes are
    assert [r.getMessage() for r in caplog.records] == ["admin API: set the retention of bin.temp to 30 days [from 127.0.0.1]"]
    assert (await resp.json())["retention_days"]["bin"]["temp"] == 30
    assert fleet.retention.effective()[("bin", "temp")] == 30
    saved = json.loads((tmp_path / "gateway" / "retention.json").read_text())
    assert saved["overrides"] == [{"kind": "bin", "field": "temp", "days": 30}]
    got = await (await client.get("/api/admin/retention", headers=admin_headers())).json()
    assert got["retention_days"]["bin"]["temp"] == 30 and got["policy_max_days"]["bin"]["temp"] == 90
    # The gateway's store applies exactly what the settings say.
    removed = fleet.store.apply_retention(fleet.retention.effective(), now=NOW + 31 * 86400)
    assert removed > 0
    rows = fleet.queries.readings(field="temp", start=0, end=NOW + 86400)
    assert rows == []
    assert fleet.queries.readings(field="fill", start=0, end=NOW + 86400) != []


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"kind": "bin", "field": "temp", "days": 91}, "days", "between 1 and 90"),
        ({"kind": "bin", "field": "temp", "days": 0}, "days", "between 1 and 90"),
        ({"kind": "bin", "field": "temp", "days": "30"}, "days", "integer"),
        ({"kind": "bin", "field": "temp", "days": True}, "days", "integer"),
        ({"kind": "bin", "field": "mot", "days": 3}, "field", "for bin"),
        ({"kind": "car", "field": "temp", "days": 3}, "kind", "one of"),
        ({"kind": "bin", "field": "temp"}, "days", "lacks"),
        ({"kind": "bin", "field": "temp", "days": 3, "forever": True}, "forever", "unknown key"),
        ([1, 2], "body", "JSON object"),
    ],
)
async def test_retention_bad_bodies_are_400(client: TestClient, body: object, param: str, fragment: str) -> None:
    resp = await client.put("/api/admin/retention", headers=admin_headers(), json=body)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["param"] == param and fragment in err["message"]


async def test_retention_non_json_body_is_400(client: TestClient) -> None:
    resp = await client.put("/api/admin/retention", headers=admin_headers(), data=b"days=3")
    assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]["message"]
    resp = await client.put("/api/admin/retention", headers=admin_headers(), data=b"")
    assert resp.status == 400 and "empty" in (await resp.json())["error"]["message"]


async def test_oversized_body_is_413(client: TestClient, fleet: Fleet) -> None:
    big = {"kind": "bin", "field": "temp", "days": 3, "pad": "x" * 10000}
    resp = await client.put("/api/admin/retention", headers=admin_headers(), json=big)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "body_too_large"
    assert fleet.retention.effective()[("bin", "temp")] == 90


async def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    async def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b"x" * 1000

    resp = await client.put("/api/admin/retention", headers=admin_headers(), data=chunks())
    assert resp.status == 413


@pytest.mark.timeout(30)
async def test_slow_client_body_times_out_with_408(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW), body_timeout_s=0.5)
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 408")
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()


async def test_enroll_names_the_value_at_fault_and_takes_the_same_place_written_differently(
    client: TestClient, fleet: Fleet
) -> None:
    key = bytes(range(32))
    for body, param in ((_enrollment(key, lat="952.1"), "lat"), (_enrollment(key, lon="abc"), "lon"),
                        (_enrollment(key, kind="lamp"), "kind"), (_enrollment(key, zone="a/b"), "zone"),
                        (_enrollment(bytes(32)), "key")):
        resp = await client.put("/api/admin/devices/sl-20", headers=admin_headers(), json=body)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "bad_parameter" and error["param"] == param, error
    resp = await client.put(URL("/api/admin/devices/%2E%2E", encoded=True), headers=admin_headers(),
                            json=_enrollment(key))  # "..", escaped so the client does not resolve it
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "device_id"
    resp = await client.put("/api/admin/devices/sl-20", headers=admin_headers(), json=_enrollment(key))
    assert resp.status == 201
    again = _enrollment(key, lat="52.379", lon="4.90000")  # the same point, typed another way
    resp = await client.put("/api/admin/devices/sl-20", headers=admin_headers(), json=again)
    assert resp.status == 200 and (await resp.json())["result"] == "unchanged"
    assert fleet.registry.get("sl-20").lat == "52.3790"  # as first registered


async def test_enroll_refuses_non_ascii_digits_and_letters_naming_the_value(client: TestClient, fleet: Fleet) -> None:
    """``float()`` reads "５２.３７９０" (full-width digits) as 52.379: lat/lon are ASCII only. A zone takes
    letters of any script ("hárbour" is tests/web/test_web_unicode_zone.py's), not invisible ones."""
    key = bytes(range(32))
    before = [d.id for d in fleet.registry.list()]
    for body, param in ((_enrollment(key, lat="５２.３７９０"), "lat"), (_enrollment(key, lat="52.379٠"), "lat"),
                        (_enrollment(key, lon="٤.٩"), "lon"), (_enrollment(key, zone="hár\u200bbour"), "zone"),
                        (_enrollment(key, zone="harbour\u00a0１"), "zone")):
        resp = await client.put("/api/admin/devices/sl-21", headers=admin_headers(), json=body)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "bad_parameter" and error["param"] == param, (body, error)
    resp = await client.put("/api/admin/devices/sl-%EF%BC%92%EF%BC%91", headers=admin_headers(),  # "sl-２１"
                            json=_enrollment(key))
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "device_id"
    assert [d.id for d in fleet.registry.list()] == before


async def test_enroll_does_not_hold_up_the_event_loop(client: TestClient, fleet: Fleet,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Enrolling reads every other device's key file; the gateway keeps serving (and ingesting)
    meanwhile. Here the comparison waits until a request made after it started was answered."""
    import asyncio
    import threading

    answered = threading.Event()
    real = type(fleet.registry)._refuse_shared_key

    def slow_compare(self: object, device_id: str, key: bytes) -> None:
        assert answered.wait(10), "no request was served while the enroll was comparing keys"
        real(self, device_id, key)  # type: ignore[arg-type]

    monkeypatch.setattr(type(fleet.registry), "_refuse_shared_key", slow_compare)
    enroll = asyncio.ensure_future(client.put("/api/admin/devices/sl-30", headers=admin_headers(),
                                              json=_enrollment(bytes(range(32)))))
    await asyncio.sleep(0.05)
    resp = await client.get("/api/devices")
    assert resp.status == 200
    answered.set()
    assert (await enroll).status == 201


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_admin_calls_refuse_unknown_query_parameters_and_change_nothing(
    client: TestClient, fleet: Fleet, method: str, path: str
) -> None:
    """``?dry_run=1`` is no dry run: an admin write refuses it (like every GET) before it does anything."""
    body = (_enrollment(bytes(range(32))) if path == "/api/admin/devices/sl-09"
            else {"kind": "bin", "field": "bat", "days": 5})
    resp = await client.request(method, f"{path}?dry_run=1", headers=admin_headers(), json=body)
    assert resp.status == 400, (method, path, await resp.text())
    assert (await resp.json())["error"] == {"code": "bad_parameter", "message": "unknown parameter(s): dry_run",
                                            "param": "dry_run"}
    assert fleet.registry.lookup("sl-09") is None
    assert not fleet.registry.get("sl-01").revoked
    assert fleet.registry.get("sl-01").key_version == 1
    assert fleet.retention.effective()[("bin", "bat")] == 90
    # The token is still checked first: without it the answer is 401, whatever the query says.
    resp = await client.request(method, f"{path}?dry_run=1", json=body)
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "missing_token"


@pytest.mark.parametrize("path", ["/api/admin/retention", "/api/admin/devices/sl-09"])
async def test_a_deeply_nested_body_under_the_size_cap_is_400(
    fleet: Fleet, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """40 KB of brackets is under the 64 KiB cap but deeper than the JSON parser recurses: 400, no traceback."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))  # the default body limit
    body = "[" * 20000 + "]" * 20000
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.put(path, headers={**admin_headers(), "Content-Type": "application/json"}, data=body)
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "bad_parameter" and error["param"] == "body", error
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert fleet.registry.lookup("sl-09") is None


async def test_admin_device_list_gives_lat_lon_as_registered_and_they_write_back_unchanged(
    client: TestClient, fleet: Fleet
) -> None:
    fleet.registry.add("sl-q4", kind="streetlight", zone="harbour", lat="52.37", lon="4.80")
    resp = await client.get("/api/admin/devices", headers=admin_headers())
    listed = {d["id"]: d for d in (await resp.json())["devices"]}
    assert (listed["sl-q4"]["lat"], listed["sl-q4"]["lon"]) == ("52.37", "4.80")  # the digits given, as the CLI
    assert (listed["sl-01"]["lat"], listed["sl-01"]["lon"]) == ("52.3702", "4.8952")
    key = fleet.registry.key("sl-q4")
    dev = listed["sl-q4"]
    # Read and written back, as strings or (a client that converted them) as numbers: the same registration.
    for lat, lon in ((dev["lat"], dev["lon"]), (float(dev["lat"]), float(dev["lon"]))):
        resp = await client.put("/api/admin/devices/sl-q4", headers=admin_headers(),
                                json=_enrollment(key, zone=dev["zone"], lat=lat, lon=lon))
        assert resp.status == 200 and (await resp.json())["result"] == "unchanged", await resp.text()
    public = await (await client.get("/api/devices/sl-q4")).json()
    assert (public["lat"], public["lon"]) == (52.37, 4.8)  # the public read API keeps numbers


async def test_enroll_takes_json_numbers_written_without_float_noise(client: TestClient, fleet: Fleet) -> None:
    key = bytes(range(32))
    resp = await client.put("/api/admin/devices/sl-11", headers=admin_headers(),
                            json=_enrollment(key, lat=52.37, lon=4))
    assert resp.status == 201, await resp.text()
    rec = fleet.registry.get("sl-11")
    assert (rec.lat, rec.lon) == ("52.37", "4")
    resp = await client.put("/api/admin/devices/sl-12", headers=admin_headers(),
                            data=json.dumps(_enrollment(bytes(range(2, 34)), lat=0.00001, lon=-4.5e-3)))
    assert resp.status == 201, await resp.text()
    rec = fleet.registry.get("sl-12")
    assert (rec.lat, rec.lon) == ("0.00001", "-0.0045")
    for value, fragment in ((True, "decimal number"), (None, "decimal number"), ([52], "decimal number"),
                            (91.5, "within ±90"), (52.370000000000005, "decimal number")):
        resp = await client.put("/api/admin/devices/sl-13", headers=admin_headers(),
                                json=_enrollment(bytes(range(3, 35)), lat=value))
        body = await resp.json()
        assert resp.status == 400 and body["error"]["param"] == "lat" and fragment in body["error"]["message"], body
    resp = await client.put("/api/admin/devices/sl-13", headers=admin_headers(),
                            data=json.dumps(_enrollment(bytes(range(3, 35)))).replace('"52.3790"', "NaN"))
    body = await resp.json()
    assert resp.status == 400 and body["error"]["param"] == "lat", body
    assert fleet.registry.lookup("sl-13") is None


async def test_admin_revocations_and_rotations_leave_a_warning_audit_line(
    client: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway logs warnings only by default: a change made over the network is recorded there,
    though the registry itself logs it at INFO."""
    caplog.set_level(logging.DEBUG)
    assert (await client.post("/api/admin/devices/bin-01/rotate-key", headers=admin_headers())).status == 200
    assert (await client.post("/api/admin/devices/sl-02/revoke", headers=admin_headers())).status == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "admin API: rotated the key of device bin-01 (key version 2) [from 127.0.0.1]" in warnings
    assert any(w.startswith("admin API: revoked device sl-02 (open data: ") and w.endswith(" [from 127.0.0.1]")
               for w in warnings), warnings
    registry = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gateway.registry.devices"]
    assert registry == [("INFO", "rotated the key of device bin-01"), ("INFO", "revoked device sl-02")]


async def test_move_changes_the_registry_row_only_and_enrolling_keeps_refusing_silent_moves(
    client: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key, version = fleet.registry.key("sl-01"), fleet.registry.get("sl-01").key_version
    stored = fleet.queries.count_reports()
    fleet.feed("sl-01", {"t": "win", "k": "streetlight", "w": NOW - 1800, "l": 900, "m": {"lux": 110}})
    await fleet.settle(stored=stored + 1)
    centre_before = fleet.queries.readings(field="lux", start=0, end=NOW + 1, device="sl-01")
    assert {r.zone for r in centre_before} == {"centre"}
    resp = await client.post("/api/admin/devices/sl-01/move", headers=admin_headers(),
                             json={"lat": "52.3750", "lon": 4.9, "zone": "harbour"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {"device": "sl-01", "result": "moved", "zone": "harbour", "lat": "52.3750", "lon": "4.9",
                    "was": {"zone": "centre", "lat": "52.3702", "lon": "4.8952"}}
    rec = fleet.registry.get("sl-01")
    assert (rec.zone, rec.lat, rec.lon, rec.key_version) == ("harbour", "52.3750", "4.9", version)
    assert fleet.registry.key("sl-01") == key  # never the key
    assert ("admin API: moved device sl-01 from zone centre at 52.3702,4.8952 to zone harbour at 52.3750,4.9"
            " [from 127.0.0.1]") in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The same place again: nothing to do. Zone left out: kept.
    resp = await client.post("/api/admin/devices/sl-01/move", headers=admin_headers(),
                             json={"lat": "52.375", "lon": "4.90"})
    assert resp.status == 200 and (await resp.json())["result"] == "unchanged"
    # Reports stored before keep their zone; the next ones carry the new one (the verifier follows the change).
    fleet.feed("sl-01", {"t": "win", "k": "streetlight", "w": NOW - 900, "l": 900, "m": {"lux": 120}})
    await fleet.settle(stored=stored + 2)
    lux = fleet.queries.readings(field="lux", start=0, end=NOW + 1, device="sl-01")
    assert [r.w for r in lux if r.zone == "harbour"] == [NOW - 900]
    assert len([r for r in lux if r.zone == "centre"]) == len(centre_before) and centre_before
    listed = {d["id"]: d for d in (await (await client.get("/api/admin/devices", headers=admin_headers())).json())[
        "devices"]}
    assert (listed["sl-01"]["zone"], listed["sl-01"]["lat"], listed["sl-01"]["lon"]) == ("harbour", "52.3750", "4.9")
    # A re-enrolment with the old place is still refused (409 moved); with the new one it is unchanged.
    old = _enrollment(key, zone="centre", lat="52.3702", lon="4.8952")
    resp = await client.put("/api/admin/devices/sl-01", headers=admin_headers(), json=old)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "moved"
    new = _enrollment(key, zone="harbour", lat="52.375", lon="4.9")
    resp = await client.put("/api/admin/devices/sl-01", headers=admin_headers(), json=new)
    assert resp.status == 200 and (await resp.json())["result"] == "unchanged"


@pytest.mark.parametrize(("device", "body", "status", "code", "param"), [
    ("sl-01", {"lat": "91", "lon": "4.9"}, 400, "bad_parameter", "lat"),
    ("sl-01", {"lat": "52.1", "lon": "4.9", "zone": "a/b"}, 400, "bad_parameter", "zone"),
    ("sl-01", {"lat": "52.1", "lon": "4.9", "zone": 7}, 400, "bad_parameter", "zone"),
    ("sl-01", {"lat": "52.1"}, 400, "bad_parameter", "lon"),
    ("sl-01", {"lat": "52.1", "lon": "4.9", "kind": "bin"}, 400, "bad_parameter", "kind"),
    ("sl-01", {"lat": "52.1", "lon": "4.9", "key": "00" * 32}, 400, "bad_parameter", "key"),
    ("ghost", {"lat": "52.1", "lon": "4.9"}, 404, "unknown_device", "device_id"),
    ("bin-03", {"lat": "52.1", "lon": "4.9"}, 409, "revoked", "device_id"),
])
async def test_move_refusals_change_nothing(client: TestClient, fleet: Fleet, device: str, body: dict[str, object],
                                            status: int, code: str, param: str) -> None:
    before = fleet.registry.list()
    resp = await client.post(f"/api/admin/devices/{device}/move", headers=admin_headers(), json=body)
    answer = await resp.json()
    assert resp.status == status and answer["error"]["code"] == code and answer["error"]["param"] == param, answer
    assert fleet.registry.list() == before


async def test_coordinates_are_capped_negative_zero_loses_its_sign_and_long_values_are_not_echoed(
    client: TestClient, fleet: Fleet
) -> None:
    """1e308 and 1e-300 became ~300-digit strings, a value of thousands of characters was quoted back whole in
    the 400 and "-0" was stored with its sign."""
    key = bytes(range(4, 36))
    for value in (1e308, 1e-300, 10 ** 400, 52.1234567891, "5" * 3500, "1." + "0" * 40):
        resp = await client.put("/api/admin/devices/sl-20", headers=admin_headers(),
                                data=json.dumps(_enrollment(key, lat=value)))
        body = await resp.json()
        assert resp.status == 400 and body["error"]["param"] == "lat", body
        assert "decimal number" in body["error"]["message"] and len(body["error"]["message"]) < 200, body
    for change in ({"zone": "a/" * 1700}, {"kind": "k" * 3500}, {"x" * 3500: 1}):
        resp = await client.put("/api/admin/devices/sl-20", headers=admin_headers(),
                                data=json.dumps(_enrollment(key, **change)))
        body = await resp.json()
        assert resp.status == 400 and len(json.dumps(body)) < 400, body
    assert fleet.registry.lookup("sl-20") is None
    # Nine digits after the point (the registry's limit, ~0.1 mm) are taken, from a string or a number.
    resp = await client.put("/api/admin/devices/sl-20", headers=admin_headers(),
                            json=_enrollment(key, lat="-0", lon=4.123456789))
    assert resp.status == 201, await resp.text()
    assert (fleet.registry.get("sl-20").lat, fleet.registry.get("sl-20").lon) == ("0", "4.123456789")
    resp = await client.post("/api/admin/devices/sl-20/move", headers=admin_headers(),
                             json={"lat": -0.0, "lon": "-0.000"})
    body = await resp.json()
    assert resp.status == 200 and (body["lat"], body["lon"]) == ("0.0", "0.000"), body


async def test_the_admin_device_list_reads_the_registry_off_the_event_loop(
    client: TestClient, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from gateway.web.source import RegistryAdmin

    threads: list[threading.Thread] = []
    real = RegistryAdmin.locations

    def recording(self: RegistryAdmin) -> object:
        threads.append(threading.current_thread())
        return real(self)

    monkeypatch.setattr(RegistryAdmin, "locations", recording)
    resp = await client.get("/api/admin/devices", headers=admin_headers())
    assert resp.status == 200 and (await resp.json())["count"] > 0
    assert threads and threading.main_thread() not in threads
