"""How the plugin's boards reach the radio and the gateway: a UART+BLE board joins the virtual radio when the
test asks for BLE, and hil_gateway's log starts without a licence WARNING (its qemu wiring:
test_plugin_gateway_qemu_socket.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hil.backends.board import BoardHandle
from hil.pytest_plugin.gateway_process import GatewayProcess

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(180)


@pytest.mark.usefixtures("sim_available")
@pytest.mark.requires("ble")
def test_a_uart_and_ble_board_joins_the_radio_when_the_test_requires_ble(hil_board: BoardHandle) -> None:
    """The default streetlight has both links; before, only BLE-only boards got the radio, so requires("ble")
    let this test run on a board with no ble_address."""
    assert "uart" in hil_board.definition.capabilities and hil_board.definition.ble is not None
    assert hil_board.data_url is not None
    assert hil_board.ble_address


@pytest.mark.usefixtures("sim_available")
def test_a_uart_and_ble_board_joins_the_radio_when_the_test_uses_it(hil_radio: Any, hil_board: BoardHandle) -> None:
    assert hil_board.ble_address
    assert hil_radio.room_size() >= 1


@pytest.mark.usefixtures("sim_available")
def test_a_uart_and_ble_board_stays_off_the_radio_otherwise(hil_board: BoardHandle) -> None:
    """No radio is started for a test that does not ask for BLE (the gateway reads the board's UART)."""
    assert hil_board.data_url is not None
    assert hil_board.ble_address is None


def test_the_test_gateway_logs_no_licence_warning(tmp_path: Path) -> None:
    """Every failed hil_gateway test's log began with "[opendata] licence is not set" from the fixture's own config."""
    gateway = GatewayProcess(workdir=tmp_path / "gateway", http=False)
    gateway.start()
    try:
        assert "ready" in gateway.output
    finally:
        gateway.stop()
    assert "[opendata]" in gateway.config_path.read_text()
    assert "licence" not in gateway.output.lower(), gateway.output

