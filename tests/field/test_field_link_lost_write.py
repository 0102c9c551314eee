"""The cable pulled while provision writes the identity: the message says the link was lost, in
plain words, and to check the cable and re-run (not an exception class, not "check free flash")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hil.field.device import open_board, write_identity
from hil.field.errors import DeviceIOError
from hil.field.identity import new_identity
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def test_link_lost_during_identity_write(tmp_path: Path, sim_available: None) -> None:
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    stopped = False
    try:
        dut = await asyncio.to_thread(open_board, board.console_path, timeout_s=10)
        try:
            await board.stop()  # the board is gone: the pty's far end closed, as a pulled USB cable
            stopped = True
            ident = new_identity(device_id="sl-pull", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
            with pytest.raises(DeviceIOError) as failed:
                await asyncio.to_thread(write_identity, dut, ident)
        finally:
            dut.close()
    finally:
        if not stopped:
            await board.stop()
    text = str(failed.value)
    assert "connection to the board" in text and "was lost" in text and "check the cable" in text, text
    assert "re-run" in text and "previous identity or the new one" in text, text
    assert "Error" not in text and "free flash" not in text, text
    assert ident.key.hex() not in text
