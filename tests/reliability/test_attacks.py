"""Guarantee 3: attacks refused, against the real verifier + ingest + SQLite and the real HTTP server.

Replay of old frames, spoofed device ids, revoked and rotated keys, downgraded protocol versions and
non-allowlisted fields (raw events, MAC addresses) are refused, counted by reason, never stored and
never acknowledged. Slow HTTP clients (slowloris-style, loopback only, bounded) do not starve the
web surface. Admin token and oversized-body refusals are covered in tests/web/test_web_admin.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.pipeline.ingest import REPLAY_WINDOW
from gateway.protocol import FRAME_REPORT, build_frame, compute_tag
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore
from gateway.web.app import create_app, start_http

from .support import KEYS, AckLink, body_for, report, settle

ADMIN_TOKEN = "7befa5ca97403001561e416672a8c800"


class Gateway:
    """In-process ingest over a real registry and SQLite store, with metric and row helpers."""

    def __init__(self, registry: Registry, db: Path) -> None:
        self.registry = registry
        self.db = db
        self.metrics = GatewayMetrics("gw-attack")
        self.link = AckLink()
        self.ingest: IngestService | None = None

    async def start(self) -> None:
        self.ingest = IngestService(store=ReportStore(self.db, gateway_id="gw-attack"),
                                    verifier=Verifier(self.registry, load_policy()), metrics=self.metrics,
                                    batch_ms=5, gap_hold_s=0.0)
        await self.ingest.start()

    async def stop(self) -> None:
        assert self.ingest is not None
        await self.ingest.stop()
        self.ingest.close()
        self.ingest.store.close()

    async def feed(self, *frames: bytes) -> None:
        assert self.ingest is not None
        for f in frames:
            self.ingest.feed(f, self.link.link)
        await settle(self.ingest)

    def rejected(self, reason: str) -> int:
        return int(self.metrics.value("civicedge_rejections_total", {"reason": reason}))

    def rows(self, device: str) -> list[int]:
        q = ReportQueries(self.db)
        try:
            return [r.seq for r in q.reports(device=device)]
        finally:
            q.close()


@pytest.fixture
async def gw(registry: Registry, tmp_path: Path):  # type: ignore[no-untyped-def]
    g = Gateway(registry, tmp_path / "reports.sqlite")
    await g.start()
    yield g
    if g.ingest is not None and g.ingest._writer is not None and not g.ingest._writer.done():
        await g.stop()


async def test_replayed_old_frames_are_never_stored_again(gw: Gateway) -> None:
    # The attacker records seq 1..5 off the air and suppresses 6..10 (the device's own later retries
    # are suppressed too); the device goes on far past the replay window.
    captured = {s: report("bin-1", s) for s in range(1, 11)}
    await gw.feed(*(captured[s] for s in range(1, 6)))
    latest = 10 + REPLAY_WINDOW + 5
    await gw.feed(report("bin-1", latest))
    # Replay everything: stored ones are re-acknowledged only, never-stored stale ones are refused.
    await gw.feed(*captured.values())
    assert gw.rows("bin-1") == [1, 2, 3, 4, 5, latest]
    assert gw.rejected("replay") == 5
    assert gw.metrics.value("civicedge_reports_duplicate_total") == 5
    # Across a gateway restart the window is rebuilt from SQLite: the same replay is still refused.
    await gw.stop()
    await gw.start()
    await gw.feed(*captured.values())
    assert gw.rejected("replay") == 10
    assert gw.rows("bin-1") == [1, 2, 3, 4, 5, latest]
    assert all(s <= 5 or s == latest for d, s in gw.link.acks if d == "bin-1")
    await gw.stop()


async def test_spoofed_device_ids_are_refused(gw: Gateway) -> None:
    genuine = report("bin-2", 1)
    own_key_claims_other = build_frame(FRAME_REPORT, "bin-1", 1, body_for("bin", 1), KEYS["bin-2"])
    # Header rewritten to another device, original tag kept.
    rewritten = genuine[:2] + bytes([5]) + b"bin-1" + genuine[3 + 5:]
    unknown = build_frame(FRAME_REPORT, "bin-9", 1, body_for("bin", 1), KEYS["bin-1"])
    wrong_kind = report("bin-1", 2, k="streetlight")  # authentic but claims to be another kind of device
    await gw.feed(own_key_claims_other, rewritten, unknown, wrong_kind)
    assert gw.rejected("hmac") == 2 and gw.rejected("unknown_device") == 1 and gw.rejected("kind") == 1
    assert gw.rows("bin-1") == [] and gw.rows("bin-9") == []
    assert not any(d == "bin-1" and s > 0 for d, s in gw.link.acks)
    await gw.stop()


async def test_revoked_and_rotated_keys_are_refused(gw: Gateway, registry: Registry) -> None:
    await gw.feed(report("bin-2", 1), report("sl-1", 1))
    registry.revoke("bin-2")
    await gw.feed(report("bin-2", 2), report("bin-2", 1))  # new report and a retransmission
    assert gw.rejected("revoked") == 2
    registry.rotate_key("sl-1")
    await gw.feed(report("sl-1", 2))  # signed with the old key
    assert gw.rejected("hmac") == 1
    new_key = registry.key("sl-1")
    await gw.feed(build_frame(FRAME_REPORT, "sl-1", 3, body_for("streetlight", 3), new_key))
    assert gw.rows("bin-2") == [1] and gw.rows("sl-1") == [1, 3]
    await gw.stop()


async def test_downgraded_protocol_versions_are_refused(gw: Gateway) -> None:
    good = report("bin-1", 1)
    flipped = []
    for version in (0x00, 0x03, 0xFF):
        signed = bytes([version]) + good[1:-16]
        flipped.append(signed + good[-16:])  # version byte changed in transit
        flipped.append(signed + compute_tag(KEYS["bin-1"], signed))  # re-signed (a compromised device)
    await gw.feed(*flipped)
    assert gw.rejected("version") == 6 and gw.rows("bin-1") == []
    # down to v1 (whose reports get the timed gap hold) in transit: the tag covers the version byte
    await gw.feed(b"\x01" + good[1:])
    assert gw.rejected("hmac") == 1 and gw.rows("bin-1") == []
    await gw.feed(good)
    assert gw.rows("bin-1") == [1]
    await gw.stop()


@pytest.mark.parametrize(
    "over",
    [
        {"ev": [[1790000100, "aa:bb:cc:dd:ee:ff"], [1790000160, "11:22:33:44:55:66"]]},  # raw events
        {"mac": "aa:bb:cc:dd:ee:ff"},  # a MAC address at top level
        {"m": {"temp": 10, "mac": 0xAABBCCDDEEFF}},  # a MAC smuggled as a measurement
        {"m": {"temp": 10, "macs": 3}},  # a field the bin's policy does not list
        {"e": {"devices": 500}},  # accounting for a non-allowlisted field
        {"m": {"temp": 10, "mot": 4}},  # a streetlight field on a bin
        {"t": "alarm", "l": 60, "m": {}, "a": ["tracking"]},  # an alarm code not in the policy
        {"t": "alarm", "l": 60, "m": {"temp": 80, "fill": 90}, "a": ["fire"]},  # fill by alarm
    ],
)
async def test_non_allowlisted_fields_are_refused(gw: Gateway, over: dict[str, object]) -> None:
    await gw.feed(report("bin-1", 1, **over))
    assert gw.rejected("policy") == 1
    assert gw.rows("bin-1") == []
    await gw.stop()


async def test_fill_in_a_15_minute_window_is_dropped_and_the_rest_kept(gw: Gateway) -> None:
    """fill every window would date the deposits (it is 6-hourly only): it is never stored, but the
    window's temp (fire detection) is, so a bin on older firmware is not silenced."""
    await gw.feed(report("bin-1", 1, m={"fill": 10, "temp": 12}))
    assert gw.rejected("policy") == 0 and gw.rows("bin-1") == [1]
    q = ReportQueries(gw.db)
    try:
        assert [r.m for r in q.reports(device="bin-1")] == [{"temp": 12}]
    finally:
        q.close()
    assert gw.metrics.value("civicedge_fields_dropped_total", {"reason": "release_period"}) == 1
    await gw.stop()


@pytest.mark.timeout(60)
async def test_slow_clients_do_not_starve_the_web_surface(registry: Registry, tmp_path: Path) -> None:
    """64 slowloris connections dribbling headers and bodies: normal requests are still served promptly,
    the slow body senders are cut off after the body timeout (408), the header dribblers disconnected."""
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    queries = ReportQueries(tmp_path / "r.sqlite")
    app = create_app(store=queries, registry=registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, body_timeout_s=1.0, keepalive_timeout_s=1.0)
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=0.5)
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for i in range(64):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            if i % 2:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
            else:
                writer.write(("PUT /api/admin/retention HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                              "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{" % ADMIN_TOKEN).encode())
            await writer.drain()
            slow.append((reader, writer))
        end = time.monotonic() + 3.0
        latencies = []
        while time.monotonic() < end:  # bounded: at most ~3 s of dribbling and probing
            for i, (reader, writer) in enumerate(slow):
                if not (writer.is_closing() or reader.at_eof()):
                    try:
                        writer.write(b"X-a: b\r\n" if i % 2 else b" ")
                    except OSError:
                        pass  # the server already cut this one off
            t0 = time.monotonic()
            r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
            w2.write(b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = await asyncio.wait_for(r2.readuntil(b"\r\n"), timeout=5)
            latencies.append(time.monotonic() - t0)
            assert head.startswith(b"HTTP/1.1 200"), head
            w2.close()
            await asyncio.sleep(0.2)
        assert max(latencies) < 1.0, latencies
        # Every slow body sender got 408 (never a 5xx, never a hang).
        for reader, _ in slow[::2]:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 408"), head
        # The header dribblers were disconnected by the server (EOF, no 2xx ever sent).
        for reader, _ in slow[1::2]:
            rest = await asyncio.wait_for(reader.read(), timeout=5)
            assert not rest.startswith(b"HTTP/1.1 2"), rest
            assert reader.at_eof()
    finally:
        for _, writer in slow:
            writer.close()
        await server.stop()
        queries.close()
        store.close()


async def test_the_firmwares_motion_release_is_accepted(gw: Gateway) -> None:
    """Not an attack: the body the streetlight firmware builds for its 6-hourly noisy motion release
    (civic.apps.streetlight: t="win", l=release_every_s, w the period start, e={"mot": 500}) is stored
    (ed48735 refused it, the device then dropped it after the ACK; fixed in 87b7e2e)."""
    every = int(load_policy()["kinds"]["streetlight"]["fields"]["mot"]["release_every_s"])
    w = (1767225600 // every) * every
    await gw.feed(report("sl-1", 1, t="win", w=w, l=every, m={"mot": 7}, e={"mot": 500}))
    assert gw.rows("sl-1") == [1]
    await gw.stop()
