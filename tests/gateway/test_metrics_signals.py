"""Metrics an SRE alerts on besides the plumbing: seqs given up (lost reports), the MQTT outbox in bytes and
its cap, link flaps between scrapes (disconnects), and no ``_created`` series."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import report_frame
from procs import Mosquitto, mosquitto_binary
from prometheus_client import generate_latest

from gateway.config.model import MqttConfig
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage.store import ReportRecord, ReportStore
from gateway.upstream import mqtt
from gateway.upstream.mqtt import MqttUpstream, encode_report

pytestmark = pytest.mark.timeout(60)
BROKER_PORT = 19061  # this suite's port range (a fixed one: the broker is restarted on it)


async def _until(condition: object, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "%s: not within %.0f s" % (what, timeout_s)
        await asyncio.sleep(0.02)


async def test_seqs_given_up_after_the_hold_are_counted(registry: Registry, tmp_path: Path) -> None:
    now = [1000.0]
    metrics = GatewayMetrics("gw")
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    ingest = IngestService(store=store, verifier=Verifier(registry, load_policy()), metrics=metrics,
                           batch_ms=10, gap_hold_s=15.0, monotonic=lambda: now[0])
    await ingest.start()
    acked: dict[str, int] = {}

    async def ack(frame: bytes) -> None:
        from gateway.protocol import parse_frame

        parsed = parse_frame(frame)
        acked[parsed.device_id] = max(acked.get(parsed.device_id, 0), parsed.seq)

    link = Link(name="serial:test", kind="serial", send=ack)

    async def send(dev: str, *seqs: int) -> None:
        for seq in seqs:
            ingest.feed(report_frame(dev, seq, KEYS[dev]), link)
        await _until(lambda: not ingest._tasks and ingest._queue.empty(), 5, "settled")  # noqa: SLF001
        await asyncio.sleep(0.05)

    try:
        await send("bin-1", 1, 10)
        await send("bin-2", 1, 5)
        assert metrics.value("civicedge_seqs_given_up_total") == 0  # still held for the gap
        now[0] += 16.0
        await send("bin-1", 10)
        await send("bin-2", 5)
        assert acked == {"bin-1": 10, "bin-2": 5}
        assert metrics.value("civicedge_seqs_given_up_total") == 8 + 3  # 2..9 and 2..4
        await send("bin-1", 20)  # a second gap of bin-1 within the log interval: not logged, still counted
        now[0] += 16.0
        await send("bin-1", 20)
        assert metrics.value("civicedge_seqs_given_up_total") == 11 + 9
    finally:
        await ingest.stop()
        ingest.close()
        store.close()


async def test_seqs_a_board_no_longer_holds_are_counted_apart(registry: Registry, tmp_path: Path) -> None:
    """A board that sends ``h`` has its not-held gaps (a reboot's skip, its own outbox cap's drop) passed
    at once: counted in civicedge_seqs_not_held_total, never in the timed hold's given-up count, so the
    alert on lost reports sees current boards too (review rev-obs M3)."""
    metrics = GatewayMetrics("gw")
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    ingest = IngestService(store=store, verifier=Verifier(registry, load_policy()), metrics=metrics,
                           batch_ms=10, gap_hold_s=15.0, monotonic=lambda: 1000.0)
    await ingest.start()
    acked: dict[str, int] = {}

    async def ack(frame: bytes) -> None:
        from gateway.protocol import parse_frame

        parsed = parse_frame(frame)
        acked[parsed.device_id] = max(acked.get(parsed.device_id, 0), parsed.seq)

    link = Link(name="serial:test", kind="serial", send=ack)

    async def send(seq: int, h: list[int]) -> None:
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], h=h), link)
        await _until(lambda: not ingest._tasks and ingest._queue.empty(), 5, "settled")  # noqa: SLF001
        await asyncio.sleep(0.05)

    try:
        await send(1, [])
        await send(36, [])  # a reboot skipped 2..35
        assert acked["bin-1"] == 36
        assert metrics.value("civicedge_seqs_not_held_total") == 34
        await send(39, [38, 38])  # 37 dropped at its cap, 38 held: only 37 passed
        assert acked["bin-1"] == 37
        assert metrics.value("civicedge_seqs_not_held_total") == 35
        assert metrics.value("civicedge_seqs_given_up_total") == 0
    finally:
        await ingest.stop()
        ingest.close()
        store.close()


def test_a_disconnect_is_counted_when_an_up_link_goes_down() -> None:
    metrics = GatewayMetrics("gw")
    metrics.set_link("serial:/dev/ttyUSB0", False)  # starting down is no disconnect
    assert metrics.value("civicedge_link_disconnects_total", {"link": "serial:/dev/ttyUSB0"}) == 0
    for up in (True, True, False, False, True, False):
        metrics.set_link("serial:/dev/ttyUSB0", up)
    assert metrics.value("civicedge_link_disconnects_total", {"link": "serial:/dev/ttyUSB0"}) == 2
    assert metrics.value("civicedge_link_state", {"link": "serial:/dev/ttyUSB0"}) == 0


def test_no_created_series() -> None:
    text = generate_latest(GatewayMetrics("gw").registry).decode()
    assert "civicedge_reports_stored_total 0.0" in text and "_created" not in text


def _record(seq: int) -> ReportRecord:
    return ReportRecord("bin-1", seq, "bin", "north", "win", 900 * seq, 900, {"fill": 10}, {}, [], None, 1.0,
                        "serial:x", "00" * 32)


async def test_mqtt_outbox_bytes_cap_and_a_broker_loss_are_exposed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (scripts/setup installs it)")
    monkeypatch.setattr(mqtt, "BACKOFF_MIN_S", 0.05)
    monkeypatch.setattr(mqtt, "BACKOFF_MAX_S", 0.2)
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.port = BROKER_PORT
    broker.start(settings="")  # writes its config again, on this port
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"),
                        outbox_max_bytes=4096)
    metrics = GatewayMetrics("gw")
    up = MqttUpstream(MqttConfig(host="127.0.0.1", port=BROKER_PORT, topic_prefix="city", outbox_max_bytes=4096),
                      store=store, run_in_store=lambda fn, *a: asyncio.sleep(0, fn(*a)), stored=asyncio.Event(),
                      metrics=metrics, gateway_id="gw")
    assert metrics.value("civicedge_outbox_max_bytes") == 4096
    task = asyncio.create_task(up.run())
    try:
        await _until(lambda: up.connected, 10, "connected")
        assert metrics.value("civicedge_link_disconnects_total", {"link": "mqtt"}) == 0
        assert broker.proc is not None
        broker.proc.kill()
        broker.proc.wait(5)
        await _until(lambda: not up.connected, 5, "broker loss seen")
        assert metrics.value("civicedge_link_disconnects_total", {"link": "mqtt"}) == 1
        store.insert_batch([_record(1), _record(2)])  # queued while the broker is down
        assert store.outbox_bytes > 0
        assert metrics.value("civicedge_outbox_bytes") == store.outbox_bytes  # read at the scrape
        broker.start()
        await _until(lambda: up.connected, 10, "reconnected")
        up._stored.set()  # noqa: SLF001 - what the ingest's commit does
        await _until(lambda: store.outbox_depth == 0, 10, "outbox drained")
        assert metrics.value("civicedge_outbox_bytes") == 0
        assert metrics.value("civicedge_link_disconnects_total", {"link": "mqtt"}) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
        broker.stop()
