"""provision on a virtual board: taking over another board's id needs --take-over, and the same
location written with other decimals is the same location."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.field.device import open_board
from hil.field.errors import GatewayRegistrationError, IdentityExistsError
from hil.field.provision import provision_board
from hil.field.registration import Registration
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def test_take_over_and_location_decimals(tmp_path: Path, sim_available: None) -> None:
    registry = tmp_path / "registry"
    Registry(registry).close()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        def on_board() -> bytes:
            dut = open_board(board.console_path, timeout_s=10)
            try:
                def prov(device_id: str, location: tuple[str, str] = ("52.37", "4.89"), **kw: bool) -> Registration:
                    return provision_board(dut, device_id=device_id, kind="streetlight", zone="centre",
                                           lat=location[0], lon=location[1], registry_dir=registry, **kw).registration

                assert prov("sl-0031") is Registration.ADDED
                # Same place, other decimals: nothing to do, with or without --force.
                assert prov("sl-0031", ("52.370", "4.890")) is Registration.UNCHANGED
                assert prov("sl-0031", ("52.370", "4.890"), force=True) is Registration.REPLACED  # own id: re-keyed
                with pytest.raises(IdentityExistsError, match="differs in location") as differs:
                    prov("sl-0031", ("52.38", "4.89"))
                assert differs.value.details["differs"] == ["location"]

                # sl-0099 belongs to another board (registered with a key this board never held).
                other = prov("sl-0099", force=True)
                assert other is Registration.ADDED
                prov("sl-0031", force=True, take_over=True)  # this board now holds sl-0031 again
                reg = Registry(registry)
                try:
                    other_key = reg.key("sl-0099")
                finally:
                    reg.close()
                with pytest.raises(GatewayRegistrationError, match="--take-over") as taken:
                    prov("sl-0099", force=True)
                assert taken.value.details["reason"] == "conflict"
                assert prov("sl-0099", force=True, take_over=True) is Registration.REPLACED
                return other_key
            finally:
                dut.close()

        other_key = await asyncio.to_thread(on_board)
        reg = Registry(registry)
        try:
            assert reg.key("sl-0099") != other_key
            record = reg.lookup("sl-0031")
            assert record is not None and (record.lat, record.lon) == ("52.37", "4.89")
        finally:
            reg.close()
    finally:
        await board.stop()


@pytest.mark.parametrize("stop", ["failure", "ctrl-c"])
async def test_provision_stopped_after_registering_says_so_and_its_advice_repairs_it(
        tmp_path: Path, sim_available: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        stop: str) -> None:
    # QA: provision registers first, then writes the board; stopped in between, the registry held a
    # key the board did not have, a plain retry was refused, and Ctrl-C printed nothing at all.
    import json

    from hil.cli.main import main as civicedge_main
    from hil.field import provision as provision_module
    from hil.field.errors import DeviceIOError

    registry = tmp_path / "registry"
    Registry(registry).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        cmd = ["provision", "--port", board.console_path, "--id", "sl-0031", "--zone", "centre",
               "--location", "52.37,4.89", "--registry", str(registry), "--board", "streetlight-esp32",
               "--skip-firmware-check"]
        assert await asyncio.to_thread(civicedge_main, cmd) == 0
        old_key = json.loads((flash / "identity.json").read_text())["key"]
        capsys.readouterr()

        def broken(dut: object, ident: object) -> None:
            if stop == "ctrl-c":
                raise KeyboardInterrupt
            raise DeviceIOError("writing /identity.json failed: the link dropped", link_lost=True)

        with monkeypatch.context() as patch:
            patch.setattr(provision_module, "write_identity", broken)
            rc = await asyncio.to_thread(civicedge_main, [*cmd, "--force"])
        err = " ".join(capsys.readouterr().err.split())
        assert rc == (130 if stop == "ctrl-c" else 2), err
        assert ("interrupted: " if stop == "ctrl-c" else "error: writing /identity.json failed") in err
        assert "the registry may already hold a new key for sl-0031 that the board does not have" in err
        advice = err.split("finish it with: ")[1]
        assert advice.endswith("--force --take-over"), err
        reg = Registry(registry)
        try:
            assert reg.key("sl-0031").hex() != old_key  # the orphan registration QA found
            assert old_key not in err and reg.key("sl-0031").hex() not in err
        finally:
            reg.close()
        assert json.loads((flash / "identity.json").read_text())["key"] == old_key

        assert await asyncio.to_thread(civicedge_main, advice.split()[1:]) == 0
        new_key = json.loads((flash / "identity.json").read_text())["key"]
        reg = Registry(registry)
        try:
            assert reg.key("sl-0031").hex() == new_key != old_key
        finally:
            reg.close()
    finally:
        await board.stop()


async def test_provision_interrupted_before_registering_says_nothing_changed(
        tmp_path: Path, sim_available: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli.main import main as civicedge_main

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    registry = tmp_path / "registry"
    Registry(registry).close()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        monkeypatch.setattr("hil.field.provision.read_identity", interrupted)
        rc = await asyncio.to_thread(civicedge_main, [
            "provision", "--port", board.console_path, "--id", "sl-0031", "--zone", "centre",
            "--location", "52.37,4.89", "--registry", str(registry), "--board", "streetlight-esp32",
            "--skip-firmware-check"])
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 130
        assert ("interrupted: nothing was registered and the board's identity is unchanged; re-run: civicedge "
                f"provision --port {board.console_path} --id sl-0031") in err
    finally:
        await board.stop()
