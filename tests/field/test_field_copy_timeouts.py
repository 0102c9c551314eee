"""flash: a board that resets mid-copy is noticed within seconds (QA: every chunk waited 120 s, the
copy stalled two minutes without progress) and the retry finishes the copy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from hil.boards import load_board
from hil.dut import Dut
from hil.dut.errors import DutError
from hil.field.device import open_board
from hil.field.firmware_copy import CHUNK_TIMEOUT_FLOOR_S, chunk_timeout_s, copy_firmware
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow]


def test_chunk_timeout_is_proportional_with_a_floor() -> None:
    assert chunk_timeout_s(10) == CHUNK_TIMEOUT_FLOOR_S
    assert chunk_timeout_s(2048) <= 10
    assert chunk_timeout_s(300_000) == pytest.approx(200)


async def test_copy_writes_chunks_with_a_short_timeout_and_retries_after_a_reset(
        tmp_path: Path, sim_available: None, monkeypatch: pytest.MonkeyPatch) -> None:
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    real_write = Dut.write_file
    timeouts: list[float] = []

    def write_file(self: Dut, path: str, data: bytes, *, timeout_s: float = 30.0) -> Any:
        timeouts.append(timeout_s)
        if len(timeouts) == 2:
            raise DutError("the board reset mid-copy")  # what a timed-out chunk raises, without the wait
        return real_write(self, path, data, timeout_s=timeout_s)

    monkeypatch.setattr(Dut, "write_file", write_file)
    try:
        def on_board() -> Any:
            dut = open_board(board.console_path, timeout_s=10)
            try:
                return copy_firmware(dut, board_config=load_board("streetlight-esp32").to_device_config(),
                                     source_only=True)
            finally:
                dut.close()

        started = time.monotonic()
        result = await asyncio.to_thread(on_board)
        assert result.copied and time.monotonic() - started < 120
        assert timeouts and max(timeouts) <= 10, timeouts
    finally:
        await board.stop()
