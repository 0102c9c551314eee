"""Each field-tool error, provoked for real: a silent pty, a busy port, a board with another
.mpy version than the compiler, a board that already has an identity."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import serial

from gateway.registry import Registry
from hil.field.cli import register as _register  # noqa: F401 - the CLI module must import cleanly
from hil.field.check import inspect_board
from hil.field.device import open_board, read_identity
from hil.field.errors import (
    BoardNotAnsweringError, GatewayRegistrationError, IdentityExistsError, MpyVersionMismatchError, NotProvisionedError,
    PortBusyError,
)
from hil.field.firmware_copy import copy_firmware, firmware_version, write_board_config
from hil.field.mpy_build import MpyVersion, mpy_cross_version
from hil.field.provision import provision_board
from hil.field.registration import Registration
from hil.sim.board import VirtualBoard
from hil.cli.main import main as civicedge_main

pytestmark = [pytest.mark.timeout(120)]


def test_silent_port_is_board_not_answering(silent_pty: str) -> None:
    with pytest.raises(BoardNotAnsweringError, match="no MicroPython REPL answered") as err:
        open_board(silent_pty, timeout_s=1.0)
    assert err.value.details["port"] == silent_pty
    assert "answers only while awake from deep sleep" in str(err.value)  # a sleeping bin is no wrong port


def test_cli_reports_silent_board_in_one_line(silent_pty: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["provision", "--port", silent_pty, "--id", "sl-1", "--zone", "centre",
                         "--location", "52.1,4.2", "--registry", str(tmp_path), "--board", "streetlight-esp32",
                         "--repl-timeout", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no MicroPython REPL answered") and "Traceback" not in err


def test_busy_port_is_refused_before_talking(silent_pty: str) -> None:
    holder = serial.Serial(silent_pty, exclusive=True)
    try:
        with pytest.raises(PortBusyError, match="busy"):
            open_board(silent_pty, timeout_s=1.0)
    finally:
        holder.close()


@pytest.mark.parametrize(("location", "match"), [("52.1", "LAT,LON"), ("abc,4", "LAT,LON"), ("95.0,4.0", "range")])
def test_bad_location_is_refused(location: str, match: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["provision", "--port", "/dev/null-civicedge", "--id", "sl-1", "--zone", "centre",
                         "--location", location, "--registry", str(tmp_path)])
    assert rc == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "match"), [
    (["--gateway", "http://127.0.0.1:9"], "--token-file FILE"),
    (["--gateway", "http://127.0.0.1:9", "--token-file", "/nonexistent/admin.token"], "cannot read the admin token"),
    (["--gateway", "ftp://gw", "--token-file", "{token}"], "must look like http(s)://HOST"),
    (["--registry", "/tmp", "--token-file", "{token}"], "--token-file goes with --gateway"),
])
def test_provision_through_the_gateway_needs_a_url_and_a_token_file(
        extra: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before the board is touched (the port here does not exist)."""
    token = tmp_path / "admin.token"
    token.write_text("t" * 32 + "\n")
    rc = civicedge_main(["provision", "--port", "/dev/null-civicedge", "--id", "sl-1", "--zone", "centre",
                         "--location", "52.1,4.2", *[a.format(token=token) for a in extra]])
    assert rc == 2
    assert match in capsys.readouterr().err


def test_check_needs_a_gateway_to_watch(capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["check", "--port", "/dev/null-civicedge"])
    assert rc == 2 and "--db PATH" in capsys.readouterr().err


@pytest.mark.slow
async def test_board_mpy_version_and_existing_identity(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       sim_available: None) -> None:
    caplog.set_level(logging.DEBUG)
    registry = tmp_path / "registry"
    Registry(registry).close()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        def on_board() -> tuple[int, list[str]]:
            dut = open_board(board.console_path, timeout_s=10)
            try:
                device = MpyVersion.from_sys_mpy(int(dut.eval("__import__('sys').implementation._mpy")))
                # The real value read from the board, against a compiler one major version off.
                other = MpyVersion(device.major + 1, 0)
                with pytest.raises(MpyVersionMismatchError, match="--source") as err:
                    copy_firmware(dut, board_config={"kind": "streetlight"}, compiler=other)
                assert err.value.details == {"device": str(device), "compiler": str(other)}
                assert device.major == mpy_cross_version().major  # the shipped pair does match

                assert read_identity(dut) is None
                with pytest.raises(NotProvisionedError, match="run civicedge provision"):
                    inspect_board(dut)
                config = {"kind": "streetlight", "name": "x"}
                assert write_board_config(dut, config) is True
                assert write_board_config(dut, config) is False  # same content: nothing written
                first = provision_board(dut, device_id="sl-a", kind="streetlight", zone="centre", lat="52.1",
                                        lon="4.2", registry_dir=registry)
                assert first.device_changed and first.registration is Registration.ADDED
                with pytest.raises(IdentityExistsError, match="already provisioned as sl-a") as exists:
                    provision_board(dut, device_id="sl-b", kind="streetlight", zone="centre", lat="52.1",
                                    lon="4.2", registry_dir=registry)
                assert exists.value.details == {"existing_id": "sl-a", "requested_id": "sl-b", "differs": ["id"]}
                forced = provision_board(dut, device_id="sl-b", kind="streetlight", zone="centre", lat="52.1",
                                         lon="4.2", registry_dir=registry, force=True)
                assert forced.device_changed and forced.identity.id == "sl-b"
                # Re-provisioning sl-a on top (its registration holds a key this board no longer has)
                # is a take-over: it gives it a new key; the registry follows.
                again = provision_board(dut, device_id="sl-a", kind="streetlight", zone="centre", lat="52.1",
                                        lon="4.2", registry_dir=registry, force=True, take_over=True)
                assert again.registration is Registration.REPLACED
                keys = [first.identity.key.hex(), forced.identity.key.hex(), again.identity.key.hex()]
                # Moving a registered device elsewhere is refused even with force.
                with pytest.raises(GatewayRegistrationError, match="cannot move"):
                    provision_board(dut, device_id="sl-a", kind="streetlight", zone="north", lat="52.1",
                                    lon="4.2", registry_dir=registry, force=True)
                return device.major, keys
            finally:
                dut.close()

        _major, keys = await asyncio.to_thread(on_board)
        assert json.loads((tmp_path / "flash" / "identity.json").read_text())["key"] == keys[2]
        assert json.loads((tmp_path / "flash" / "board.json").read_text()) == {"kind": "streetlight", "name": "x"}
        reg = Registry(registry)
        try:
            assert reg.key("sl-a").hex() == keys[2] and reg.key("sl-b").hex() == keys[1]
        finally:
            reg.close()
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert logged and not any(k in logged or k[:16] in logged for k in keys)
    finally:
        await board.stop()


def _image(tmp_path: Path) -> Path:
    image = tmp_path / "micropython.bin"
    header = bytearray(b"\xe9\x03\x02\x20" + b"\0" * 20)  # chip id 0 (ESP32) at byte 12
    image.write_bytes(bytes(header) + b"\xff" * (4096 - len(header)))
    return image


def test_flash_without_image_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["flash", "--board", "streetlight-esp32", "--port", "/dev/ttyUSB-civicedge-missing"])
    assert rc == 2 and "--micropython IMAGE.bin is required" in capsys.readouterr().err


def test_flash_to_missing_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["flash", "--board", "streetlight-esp32", "--port", "/dev/ttyUSB-civicedge-missing",
                         "--micropython", str(_image(tmp_path))])
    assert rc == 2 and "does not exist; is the board plugged in?" in capsys.readouterr().err


def test_flash_to_busy_port(tmp_path: Path, silent_pty: str, capsys: pytest.CaptureFixture[str]) -> None:
    holder = serial.Serial(silent_pty, exclusive=True)
    try:
        rc = civicedge_main(["flash", "--board", "streetlight-esp32", "--port", silent_pty,
                             "--micropython", str(_image(tmp_path)), "--no-erase"])
    finally:
        holder.close()
    assert rc == 2 and "is busy" in capsys.readouterr().err


def test_flash_unknown_board(capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["flash", "--board", "no-such-board", "--port", "/dev/x", "--firmware-only"])
    assert rc == 2 and "no-such-board" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_flash_to_a_port_without_bootloader(tmp_path: Path, silent_pty: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["flash", "--board", "streetlight-esp32", "--port", silent_pty,
                         "--micropython", str(_image(tmp_path))])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: no ESP bootloader answered" in err and "Hold BOOT" in err


@pytest.mark.slow
async def test_switching_between_source_and_mpy_leaves_no_shadowing_modules(tmp_path: Path, sim_available: None) -> None:
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        def on_board() -> tuple[str, str, list[str]]:
            dut = open_board(board.console_path, timeout_s=10)
            try:
                src = copy_firmware(dut, board_config={"kind": "streetlight"}, source_only=True)
                assert (flash / "lib" / "civic" / "report.py").is_file()
                compiled = copy_firmware(dut, board_config={"kind": "streetlight"})
                assert not (flash / "lib" / "civic" / "report.py").exists()
                # The compiled modules really load on the board's MicroPython.
                version = dut.eval("__import__('civic').VERSION")
                return src.mode, compiled.mode, [version, *compiled.copied]
            finally:
                dut.close()

        src_mode, mpy_mode, rest = await asyncio.to_thread(on_board)
        assert (src_mode, mpy_mode) == ("source", "mpy")
        assert rest[0] == firmware_version() and "/lib/civic/report.mpy" in rest[1:]
        assert "/board.json" not in rest[1:]  # unchanged config is not rewritten
    finally:
        await board.stop()


def test_the_admin_token_file_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Review of 192b6ca: the gateway drops a Notepad BOM from its admin_token_file; provision sent it as part
    of the token (refused as 'a line break or control character')."""
    from hil.field.provision_cmd import _admin_token

    token = tmp_path / "admin.token"
    token.write_bytes(b"\xef\xbb\xbf" + b"k3Jd9sLq0ZxV7mPa4RtY2wEe\r\n")
    token.chmod(0o600)
    assert _admin_token(token) == "k3Jd9sLq0ZxV7mPa4RtY2wEe"
