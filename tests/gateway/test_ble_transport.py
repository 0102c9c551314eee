"""The gateway's BLE transport over the virtual radio (real Bumble stack), through bleak's public API."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import KEYS, make_env
from procs import EventProcess, GatewayProcess

pytestmark = pytest.mark.timeout(150)
APP = Path(__file__).resolve().parent / "ble_device_app.py"


class BleDevice(EventProcess):
    """ble_device_app.py as a subprocess; collects its JSON events."""

    def __init__(self, radio: str, dev_id: str, *, kind: str = "bin", mtu: int = 247, send: tuple[int, int],
                 replay: bool = False) -> None:
        super().__init__([str(APP), radio, "--id", dev_id, "--key", KEYS[dev_id].hex(), "--kind", kind,
                          "--mtu", str(mtu), "--send", str(send[0]), str(send[1]), *(["--replay"] if replay else [])])
        self.wait(lambda e: e["event"] == "ready", 60)  # a Python + bumble start-up: 20 s was short at load 20

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not any(pred(e) for e in list(self.events)):
            if time.monotonic() > end:
                raise AssertionError("device events: %r" % self.events)
            time.sleep(0.05)

    def acked(self) -> int:
        return max([e["seq"] for e in list(self.events) if e["event"] == "ack"], default=0)

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()


def ble_section(radio: str, max_connections: int = 4) -> str:
    return ('[ble]\nenabled = true\nbackend = "virtual"\nradio = "%s"\nscan_interval_s = 0.5\n'
            'max_connections = %d\nconnect_timeout_s = 5.0\n' % (radio, max_connections))


def stored(db: Path, device: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM reports WHERE device=? ORDER BY seq", (device,))]
    finally:
        conn.close()


def test_ble_ingest_at_mtu_23_and_247_with_reconnect(tmp_path: Path, radio: str) -> None:
    small = BleDevice(radio, "bin-1", mtu=23, send=(1, 8))
    big = BleDevice(radio, "sl-1", kind="streetlight", mtu=247, send=(1, 8))
    gw = GatewayProcess(make_env(tmp_path, extra=ble_section(radio)), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        small.wait(lambda e: e["event"] == "ack" and e["seq"] == 8)
        big.wait(lambda e: e["event"] == "ack" and e["seq"] == 8)
        big.command("garble")
        gw.wait_log("reason=fragment")
        small.command("drop")  # BLE disconnect fault: the gateway reconnects with backoff
        small.wait(lambda e: e["event"] == "disconnect")
        small.command("send 9 12")
        small.wait(lambda e: e["event"] == "ack" and e["seq"] == 12, 40)
        assert gw.terminate() == 0
    finally:
        gw.kill()
        small.close()
        big.close()
    db = tmp_path / "data" / "reports.sqlite"
    assert stored(db, "bin-1") == list(range(1, 13))
    assert stored(db, "sl-1") == list(range(1, 9))
    links = {r[0] for r in sqlite3.connect(db).execute("SELECT DISTINCT link FROM reports")}
    assert all(link.startswith("ble:") for link in links) and len(links) == 2
    assert sum(1 for e in small.events if e["event"] == "connect") >= 2


def test_connection_cap(tmp_path: Path, radio: str) -> None:
    first = BleDevice(radio, "bin-1", send=(1, 3))
    second = BleDevice(radio, "bin-2", send=(1, 3))
    gw = GatewayProcess(make_env(tmp_path, extra=ble_section(radio, max_connections=1)), tmp_path / "gw.log",
                        verbose=1)
    try:
        gw.start()
        end = time.monotonic() + 30
        while not (first.acked() or second.acked()) and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(2.0)
        served, waiting = (first, second) if first.acked() else (second, first)
        assert served.acked() == 3 and waiting.acked() == 0  # one slot: the other is not connected
        assert not any(e["event"] == "connect" for e in waiting.events)
        served.close()  # the board goes away: its slot frees up
        waiting.wait(lambda e: e["event"] == "ack" and e["seq"] == 3, 40)
        assert gw.terminate() == 0
    finally:
        gw.kill()
        first.close()
        second.close()


@pytest.mark.parametrize("radio", [None, "http://x", "ws://"])
def test_a_virtual_backend_without_a_usable_radio_url_is_a_transport_error(radio: str | None) -> None:
    """The config loader refuses these; a BleConfig built in code gets a clear error, not a traceback."""
    from gateway.config.model import BleConfig
    from gateway.errors import TransportError
    from gateway.transports.ble_link import resolve_backends

    with pytest.raises(TransportError, match=r"radio") as info:
        resolve_backends(BleConfig(enabled=True, backend="virtual", radio=radio))
    assert info.value.reason == "open_failed"
