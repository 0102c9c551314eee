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
        assert payload["m"] == {"fill": 10, "temp": 12} and payload["v"] == 1

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
