"""How the plugin's boards reach the radio and the gateway: a UART+BLE board joins the virtual radio when the
test asks for BLE, hil_gateway refuses the qemu backend at once, and its log starts without a licence WARNING."""

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


def test_hil_gateway_on_the_qemu_backend_errors_at_once_in_one_line(pytester: pytest.Pytester) -> None:
    """The gateway cannot open QEMU's socket:// data UART; it used to start and retry forever, so the test only
    timed out. Now the test errors before any image is built or QEMU looked for."""
    image = pytester.path / "ESP32_GENERIC-test.bin"
    image.write_bytes(b"not used")
    pytester.makepyfile(test_qemu_gw="""
def test_gateway(hil_board, hil_gateway):
    raise AssertionError("must not run")
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--hil-backend", "qemu", "--hil-qemu-image", str(image))
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "ERROR at setup of test_gateway" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("=", "_")))
    shown = [line for line in lines[start + 1:end] if line.strip()]
    assert shown == [
        "hil_gateway: the qemu backend's data UART (streetlight-esp32) is a TCP socket (socket://127.0.0.1:PORT), "
        "which the gateway's serial transport cannot open (it opens device paths such as ptys and /dev/ttyUSB0), so "
        "no report could arrive; run gateway tests on --hil-backend sim, or serial with --hil-data-port"], out
