"""The gateway's BLE link survives its radio: unreachable at start, lost and back (the relay restarted).

Real parts: the virtual radio relay as its own process (``python -m hil.sim.radio --port P``, killed
and started again on the same port), a BLE device process on it (Bumble peripheral), and the
gateway process (bleak over the virtual backend), its log and ``/healthz``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import make_env
from procs import REPO, GatewayProcess, free_port, stop_process
from test_ble_transport import BleDevice, ble_section

pytestmark = pytest.mark.timeout(150)

UNREACHABLE = "cannot reach the BLE radio/adapter"


class Relay:
    """``python -m hil.sim.radio --port P`` as a subprocess (stopped as an operator would: SIGTERM)."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hil.sim.radio", "--port", str(port)], cwd=REPO,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ws://"), "relay did not start (exit %s)" % self.proc.poll()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # closes every radio client with 1001 (going away)
        stop_process(self.proc)


def gateway_config(tmp_path: Path, radio: str, http_port: int) -> Path:
    cfg = make_env(tmp_path, extra=ble_section(radio))
    cfg.write_text(cfg.read_text().replace("[http]\nenabled = false", "[http]\nport = %d" % http_port))
    return cfg


def healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5) as resp:
            body: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:  # 503 degraded
        body = json.load(exc)
    return body


def wait_health(port: int, ok: bool, timeout: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        health = healthz(port)
        if (health["status"] == "ok") == ok:
            return health
        assert time.monotonic() < end, "healthz never %s: %r" % ("ok" if ok else "degraded", health)
        time.sleep(0.2)


def wait_for(pred: Any, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, what
        time.sleep(0.1)


def third_party_debug(log: str) -> list[str]:
    """DEBUG lines of loggers that are not civicedge's (websockets frames, Bumble HCI dumps...)."""
    return [line for line in log.splitlines()
            if " DEBUG " in line and not re.search(r" DEBUG (gateway|hil|bench|__main__)[.:]", line)]


def test_ble_waits_for_a_radio_it_cannot_reach_and_serves_once_it_is_up(tmp_path: Path) -> None:
    """Was: RadioConnectError ended the BLE task silently, never retried; /healthz down for good."""
    radio_port, http_port = free_port(), free_port()
    radio = "ws://127.0.0.1:%d/civicedge" % radio_port
    gw = GatewayProcess(gateway_config(tmp_path, radio, http_port), tmp_path / "gw.log", verbose=2)
    relay: Relay | None = None
    device: BleDevice | None = None
    try:
        gw.start()
        gw.wait_log(UNREACHABLE)
        assert " WARNING gateway.transports.ble_link: BLE: " + UNREACHABLE in gw.logs()
        health = wait_health(http_port, ok=False)
        assert any(r.startswith("ble is down: " + UNREACHABLE) for r in health["reasons"]), health
        time.sleep(4.0)  # retried (1 s, 2 s ...), warned once: the others at DEBUG
        log = gw.logs()
        assert sum(1 for line in log.splitlines() if " WARNING " in line and UNREACHABLE in line) == 1, log
        assert sum(1 for line in log.splitlines() if " DEBUG " in line and UNREACHABLE in line) >= 1, log
        relay = Relay(radio_port)
        device = BleDevice(radio, "bin-1", send=(1, 3))
        device.wait(lambda e: e["event"] == "ack" and e["seq"] == 3, 60)
        gw.wait_log("the radio/adapter works again")
        health = wait_health(http_port, ok=True)
        assert health["checks"]["links"]["ble"] == 1.0
        assert gw.terminate() == 0
    finally:
        gw.kill()
        if device is not None:
            device.close()
        if relay is not None:
            relay.stop()
    log = gw.logs()
    # -vv is the gateway's debug: no websockets frames or Bumble HCI dumps (with ANSI colours)
    assert " DEBUG gateway." in log
    assert third_party_debug(log) == [], third_party_debug(log)[:5]
    assert "\x1b[" not in log
    assert "ended with" not in log and "ERROR" not in log


def test_ble_comes_back_after_the_radio_relay_restarts(tmp_path: Path) -> None:
    """Was: relay restarted -> a scan's HCI command timed out, the BLE task ended, /healthz ok for ever."""
    radio_port, http_port = free_port(), free_port()
    radio = "ws://127.0.0.1:%d/civicedge" % radio_port
    relay = Relay(radio_port)
    device = BleDevice(radio, "bin-1", send=(1, 3))
    gw = GatewayProcess(gateway_config(tmp_path, radio, http_port), tmp_path / "gw.log")
    try:
        gw.start()
        device.wait(lambda e: e["event"] == "ack" and e["seq"] == 3, 40)
        wait_health(http_port, ok=True)
        relay.stop()
        device.close()
        gw.wait_log(UNREACHABLE, 30)
        health = wait_health(http_port, ok=False)
        assert any("ble is down" in r for r in health["reasons"]), health
        relay = Relay(radio_port)
        device = BleDevice(radio, "bin-1", send=(4, 6))  # the board restarts, with new reports
        device.wait(lambda e: e["event"] == "ack" and e["seq"] == 6, 60)
        gw.wait_log("the radio/adapter works again")
        wait_health(http_port, ok=True)
        assert gw.terminate() == 0
    finally:
        gw.kill()
        device.close()
        relay.stop()
    log = gw.logs()
    # Default level: warnings only, and no Bumble tracebacks (ERROR) for the relay closing the socket
    assert "Traceback" not in log and " ERROR " not in log, log
    assert "received notification with no subscriber" not in log
    assert "ended with" not in log
