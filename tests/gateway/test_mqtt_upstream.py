"""Upstream through a real mosquitto: QoS 1 delivery, broker outage (keep ingesting, drain in order), cap."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import GatewayProcess, Mosquitto, PtyDevice, Subscriber

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]


def test_delivery_outage_and_ordered_drain(tmp_path: Path, broker: Mosquitto) -> None:
    sub = Subscriber(broker.port)
    sub.wait_subscribed()
    dev = PtyDevice(KEYS)
    gw = GatewayProcess(make_env(tmp_path, serial=(dev.path,), mqtt_port=broker.port), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("opened %s" % dev.path)
        gw.wait_log("connected to MQTT broker")
        dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 21)])
        dev.wait_ack("bin-1", 20)
        sub.wait("bin-1", 20)
        topic, payload = sub.messages[0]
        assert topic == "city/gw-test/bin/bin-1/win"
        assert payload["device"] == "bin-1" and payload["gateway"] == "gw-test" and payload["zone"] == "north"
        assert payload["m"] == {"bat": 10, "temp": 12} and payload["v"] == 1

        broker.stop()  # outage: the gateway keeps ingesting and acknowledging
        dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(21, 61)])
        dev.wait_ack("bin-1", 60)
        time.sleep(0.5)
        assert sub.seqs("bin-1") and max(sub.seqs("bin-1")) <= 20
        broker.start()  # back: the outbox drains, oldest first
        sub.wait("bin-1", 60, timeout=40)
        seqs = sub.seqs("bin-1")
        first = [seqs.index(s) for s in range(21, 61)]
        assert first == sorted(first), "backlog not drained in order: %r" % seqs
        assert gw.terminate() == 0
    finally:
        gw.kill()
        dev.close()
        sub.close()
    conn = sqlite3.connect(tmp_path / "data" / "reports.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 60
    assert "lost" in gw.logs()


def test_outbox_cap_drops_oldest_and_counts(tmp_path: Path, broker: Mosquitto) -> None:
    sub = Subscriber(broker.port)  # persistent session first, so queued messages reach it later
    sub.wait_subscribed()
    broker.stop()  # upstream down from the start
    dev = PtyDevice(KEYS)
    cfg = make_env(tmp_path, serial=(dev.path,), mqtt_port=broker.port, outbox_max_bytes=4096)
    gw = GatewayProcess(cfg, tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("opened %s" % dev.path)
        dev.send([report_frame("bin-2", s, KEYS["bin-2"]) for s in range(1, 101)])
        dev.wait_ack("bin-2", 100)  # every report stored and acknowledged although upstream is full
        broker.start()
        end = time.monotonic() + 30
        conn = sqlite3.connect(tmp_path / "data" / "reports.sqlite")
        while conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(1.0)
        seqs = sub.seqs("bin-2")
        assert gw.terminate() == 0
    finally:
        gw.kill()
        dev.close()
        sub.close()
    conn = sqlite3.connect(tmp_path / "data" / "reports.sqlite")
    dropped = conn.execute("SELECT value FROM counters WHERE name='outbox_dropped'").fetchone()[0]
    assert dropped > 0 and conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 100
    # drop_oldest: what reached the broker is the newest tail, complete and in order
    assert seqs == list(range(101 - len(seqs), 101)) and len(seqs) + dropped == 100
    assert "dropped" in gw.logs()


async def test_an_outbox_read_failure_does_not_end_the_upstream(tmp_path: Path, broker: Mosquitto,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A failure that is not the broker's (here: the outbox cannot be read once) used to end the
    upstream task silently; the outbox then grew with nothing forwarded until a restart."""
    import asyncio
    import logging

    from gateway.config.model import MqttConfig
    from gateway.errors import StorageError
    from gateway.metrics import GatewayMetrics
    from gateway.storage.store import ReportRecord, ReportStore
    from gateway.upstream import mqtt
    from gateway.upstream.mqtt import MqttUpstream, encode_report

    monkeypatch.setattr(mqtt, "BACKOFF_MIN_S", 0.05)
    sub = Subscriber(broker.port)
    sub.wait_subscribed()
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"))
    real_peek, failures = store.outbox_peek, []

    def peek_failing_once(limit: int) -> list[object]:
        if not failures:
            failures.append(1)
            raise StorageError("database is locked", reason="read_failed")
        return real_peek(limit)  # type: ignore[return-value]

    monkeypatch.setattr(store, "outbox_peek", peek_failing_once)
    store.insert_batch([ReportRecord("bin-1", 1, "bin", "north", "win", 900, 900, {"fill": 10}, {}, [], None, 1.0,
                                     "serial:x", "00" * 32)])
    up = MqttUpstream(MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="city"), store=store,
                      run_in_store=lambda fn, *a: asyncio.sleep(0, fn(*a)), stored=asyncio.Event(),
                      metrics=GatewayMetrics("gw"), gateway_id="gw")
    caplog.set_level(logging.WARNING, logger="gateway.upstream.mqtt")
    task = asyncio.create_task(up.run())
    try:
        for _ in range(200):
            if sub.seqs("bin-1"):
                break
            await asyncio.sleep(0.05)
        assert sub.seqs("bin-1") == [1] and not task.done()
        assert store.outbox_depth == 0
        assert any("MQTT upstream failed (StorageError: database is locked)" in r.getMessage()
                   for r in caplog.records)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
        sub.close()
