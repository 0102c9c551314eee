"""The MQTT payload's frame digest, through a real mosquitto with two gateways publishing to it: a report
heard by both carries one digest, a different report under a reused (device, seq) another (docs/mqtt.md)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import GatewayProcess, Mosquitto, PtyDevice, Subscriber

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]


def _gateway(tmp_path: Path, name: str, dev: PtyDevice, port: int) -> GatewayProcess:
    """A gateway ``gw-<name>`` under tmp_path/name, its own store and registry (the KEYS devices)."""
    home = tmp_path / name
    home.mkdir()
    cfg = make_env(home, serial=(dev.path,), mqtt_port=port)
    cfg.write_text(cfg.read_text().replace('id = "gw-test"', 'id = "gw-%s"' % name))
    return GatewayProcess(cfg, home / "gw.log", verbose=1)


def _stored(tmp_path: Path, name: str) -> dict[int, str]:
    conn = sqlite3.connect(tmp_path / name / "data" / "reports.sqlite")
    try:
        return {int(s): str(d) for s, d in conn.execute("SELECT seq, digest FROM reports WHERE device='bin-1'")}
    finally:
        conn.close()


def test_two_gateways_publish_the_frame_digest(tmp_path: Path, broker: Mosquitto) -> None:
    sub = Subscriber(broker.port)
    sub.wait_subscribed()
    north_dev, south_dev = PtyDevice(KEYS), PtyDevice(KEYS)
    north = _gateway(tmp_path, "north", north_dev, broker.port)
    south = _gateway(tmp_path, "south", south_dev, broker.port)
    heard = [report_frame("bin-1", s, KEYS["bin-1"]) for s in (1, 2, 3)]  # one board, both gateways in reach
    # seq 4 at the south gateway: another report under the seq north stored (a counter that restarted)
    north4 = report_frame("bin-1", 4, KEYS["bin-1"])
    south4 = report_frame("bin-1", 4, KEYS["bin-1"], m={"bat": 40, "temp": 3})
    try:
        for gw, dev in ((north, north_dev), (south, south_dev)):
            gw.start()
            gw.wait_log("opened %s" % dev.path)
            gw.wait_log("connected to MQTT broker")
        north_dev.send(heard + [north4])
        south_dev.send(heard + [south4])
        north_dev.wait_ack("bin-1", 4)
        south_dev.wait_ack("bin-1", 4)
        end = time.monotonic() + 20
        while len({(p["gateway"], p["seq"]) for _, p in list(sub.messages)}) < 8:  # 4 from each gateway
            assert time.monotonic() < end, sub.messages
            time.sleep(0.05)
        assert north.terminate() == 0 and south.terminate() == 0
    finally:
        north.kill()
        south.kill()
        north_dev.close()
        south_dev.close()
        sub.close()
    by = {(str(p["gateway"]), int(p["seq"])): str(p["digest"])  # type: ignore[call-overload]
          for _, p in sub.messages if p["device"] == "bin-1"}
    assert sorted(by) == sorted((g, s) for g in ("gw-north", "gw-south") for s in (1, 2, 3, 4)), by
    # the digest is the stored one, the SHA-256 of the authenticated frame
    assert {s: by["gw-north", s] for s in (1, 2, 3, 4)} == _stored(tmp_path, "north")
    assert {s: by["gw-south", s] for s in (1, 2, 3, 4)} == _stored(tmp_path, "south")
    for seq, frame in zip((1, 2, 3), heard):
        assert by["gw-north", seq] == by["gw-south", seq] == hashlib.sha256(frame).hexdigest()
    assert by["gw-north", 4] == hashlib.sha256(north4).hexdigest()
    assert by["gw-south", 4] == hashlib.sha256(south4).hexdigest() != by["gw-north", 4]
