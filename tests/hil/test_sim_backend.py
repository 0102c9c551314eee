"""The plugin's fixtures on the sim backend: real virtual boards, a real gateway process, SQLite.

These tests use the fixtures directly (the session runs with the default ``--hil-backend sim``);
on another backend they skip or run against that backend, as an integrator's tests would.
Without Node the plugin ERRORS sim tests (a broken install must not pass); this repo's suite
skips them first through ``sim_available``, like its other simulator tests.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from hil.backends.board import BoardHandle, BoardStateError
from hil.dut.errors import DeviceError
from hil.pytest_plugin.fixtures import Fleet
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.sim.errors import StimulusError

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("sim_available")]


@pytest.mark.sim(speed=200)
@pytest.mark.requires("uart")
def test_board_reports_through_a_real_gateway_into_sqlite(hil_board: BoardHandle,
                                                          hil_gateway: GatewayProcess) -> None:
    assert hil_board.state == "reporting"
    assert re.search(rf"civicedge: streetlight {hil_board.device_id} running", hil_board.extras["boot_console"])
    rows = hil_gateway.wait_for_reports(count=2, device_id=hil_board.device_id, timeout_s=120)
    assert {r["kind"] for r in rows} == {"streetlight"}
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert all(r["link"].startswith("serial:") for r in rows)
    # Nothing personal is stored raw: any motion count present is the noisy release.
    assert all(isinstance(r["m"], dict) and "pir_raw" not in r["m"] for r in rows)
    assert all(r["device"] == hil_board.device_id and isinstance(r["a"], list) for r in rows)


def test_console_dut_stops_and_restarts_the_firmware(hil_board: BoardHandle) -> None:
    dut = hil_board.dut
    assert dut.eval("len(open('/identity.json').read()) > 0") is True
    with pytest.raises(DeviceError) as err:
        dut.exec("import civic.nonexistent_module")
    assert err.value.exception_type == "ImportError"
    out = hil_board.restart_firmware()
    assert "soft reboot" in out and re.search(rf"civicedge: \S+ {hil_board.device_id} running", out)
    assert hil_board.state == "reporting"


@pytest.mark.sim(speed=30)
def test_restart_firmware_raises_when_the_firmware_does_not_come_back(hil_board: BoardHandle) -> None:
    """Before, restart_firmware returned the soft-reboot line and left state 'reporting' while the
    console said the firmware could not start."""
    dut = hil_board.dut
    config = dut.read_file("/board.json")
    dut.remove_file("/board.json")
    with pytest.raises(BoardStateError) as err:
        hil_board.restart_firmware(timeout_s=60)
    assert "firmware refused to start: cannot start: board.json: cannot read /board.json" in str(err.value)
    assert "civicedge: cannot start" in err.value.console
    assert hil_board.state == "provisioned"
    # Put the file back: the next restart waits for the running line and the board reports again.
    dut.write_file("/board.json", config)
    out = hil_board.restart_firmware(timeout_s=60)
    assert re.search(rf"civicedge: streetlight {hil_board.device_id} running", out)
    assert hil_board.state == "reporting"


@pytest.mark.fleet(**{"streetlight-esp32": 2})
def test_fleet_boards_share_one_simulator_process(hil_fleet: Fleet) -> None:
    assert len(hil_fleet) == 2 and all(b.state == "reporting" for b in hil_fleet)
    assert hil_fleet[0].device_id != hil_fleet[1].device_id
    assert hil_fleet[0].identity["key"] != hil_fleet[1].identity["key"]
    pids = {b.resource.host.pid for b in hil_fleet}
    assert len(pids) == 1 and None not in pids
    assert len({b.console_url for b in hil_fleet} | {b.data_url for b in hil_fleet}) == 4


@pytest.mark.sim(speed=30)
def test_sim_control_drives_stimuli(hil_board: BoardHandle) -> None:
    control = hil_board.control
    control.stimulus("light", 5)
    state = control.state()
    assert state["state"] == "running"
    with pytest.raises(StimulusError) as err:
        control.stimulus("no-such-sensor", 1)
    assert "no-such-sensor" in str(err.value)


@pytest.mark.board("bin-esp32c3")
def test_ble_only_board_joins_the_virtual_radio(hil_board: BoardHandle, hil_radio: Any) -> None:
    assert hil_board.data_url is None  # the bin board has no UART link: BLE is its way out
    assert hil_board.ble_address is not None
    assert hil_radio.url.startswith("ws://127.0.0.1:")
    assert hil_radio.room_size() >= 1


def test_hard_reset_boots_the_firmware_again(hil_board: BoardHandle) -> None:
    board = hil_board.resource
    boots = board.boots
    hil_board.hard_reset(timeout_s=60)
    assert board.boots == boots + 1
    assert hil_board.state == "reporting"
    assert board.console_text().count(f"{hil_board.device_id} running") == 2


def test_strategy_stops_at_states_and_reports_a_refusing_firmware(tmp_path: Any, sim_available: None) -> None:
    from hil.backends.board import BoardStateError, Strategy, make_identity
    from hil.backends.errors import BackendError
    from hil.backends.sim_driver import SimDriver
    from hil.boards import load_board

    definition = load_board("streetlight-esp32")
    identity = make_identity(definition)
    identity["key"] = "not-hex"  # a bad provisioning: the firmware must refuse, the strategy must say so
    strategy = Strategy(SimDriver(speed=10))
    handle = BoardHandle(backend="sim", definition=definition, identity=identity, workdir=tmp_path)
    try:
        strategy.transition(handle, "provisioned")
        assert handle.state == "provisioned" and handle.resource is None
        assert (tmp_path / "flash" / "lib" / "civic").is_dir()
        assert (tmp_path / "flash" / "identity.json").stat().st_mode & 0o777 == 0o600
        with pytest.raises(BoardStateError) as err:
            strategy.transition(handle, "reporting")
        assert err.value.state == "provisioned" and err.value.target == "reporting"
        assert "cannot start" in str(err.value) and "identity" in err.value.console
        with pytest.raises(BackendError):
            strategy.transition(handle, "dancing")
    finally:
        strategy.power_off(handle)
        strategy.close()
    assert handle.state == "off" and handle.resource is None
