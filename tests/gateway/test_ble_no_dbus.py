"""A gateway with ``[ble] backend = "bluez"`` on a host without the D-Bus system bus (a container, a minimal
image) said only ``BLE scan failed (FileNotFoundError: [Errno 2] No such file or directory)``: bleak's
D-Bus connect names no path (package-install QA). The real bleak BlueZ backend, pointed at a bus that is
not there (``DBUS_SYSTEM_BUS_ADDRESS``), now says what it could not reach."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import make_env
from helpers import first_problem

from gateway.config.model import BleConfig
from gateway.transports.ble_link import DEFAULT_SYSTEM_BUS, BleTransport, system_bus_address
from hil.cli.main import main

pytestmark = pytest.mark.timeout(30)


async def test_a_missing_system_bus_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = tmp_path / "no-such-dir" / "system_bus_socket"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={bus}")
    problem = await first_problem(BleTransport(BleConfig(enabled=True, scan_interval_s=0.05)))
    assert problem.startswith(f"cannot reach BlueZ: no D-Bus system bus at unix:path={bus} (FileNotFoundError")
    assert "is dbus running, and bluetoothd?" in problem


async def test_a_bus_socket_nobody_listens_on_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bus"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # bound, never listening: connect() is refused, as after dbus-daemon died
    try:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
        problem = await first_problem(BleTransport(BleConfig(enabled=True, scan_interval_s=0.05)))
    finally:
        dead.close()
    assert problem.startswith(f"cannot reach BlueZ: no D-Bus system bus at unix:path={path} (ConnectionRefusedError")


def test_the_default_bus_is_dbus_fasts(monkeypatch: pytest.MonkeyPatch) -> None:
    from dbus_fast._private.address import get_system_bus_address  # what bleak's BlueZ backend connects to

    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    assert system_bus_address() == DEFAULT_SYSTEM_BUS == get_system_bus_address()


def test_run_check_warns_of_a_missing_bus_only_for_bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bus = tmp_path / "gone" / "system_bus_socket"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={bus}")
    off = make_env(tmp_path / "off")
    assert main(["gateway", "run", "--config", str(off), "--check"]) == 0
    assert "D-Bus" not in capsys.readouterr().err  # BLE off: nothing to say
    on = make_env(tmp_path / "on", extra='[ble]\nenabled = true\n')
    assert main(["gateway", "run", "--config", str(on), "--check"]) == 0  # serial links still work: a warning
    out = capsys.readouterr()
    assert f"warning: [ble] enabled with the BlueZ backend, but there is no D-Bus system bus at unix:path={bus}" \
        in out.err and "config OK" in out.out
    bus.parent.mkdir()
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(bus))
    try:
        assert main(["gateway", "run", "--config", str(on), "--check"]) == 0
        assert "D-Bus" not in capsys.readouterr().err
    finally:
        live.close()
