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
