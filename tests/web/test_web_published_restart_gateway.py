"""A gateway restarted with its clock behind keeps what its open data published before the stop.

End to end: the gateway (real service, serial over a pty, [sim_clock]) stores a late window, runs past
the CSV's next hh:05 mark, which publishes it, and stops; restarted with its clock 80 minutes behind,
the CSV still has the window (the published mark is saved in the store's meta table by the store's
writer). Before, it was kept in memory only and the CSV went back to the mark before the window's
arrival. Fails before.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from pathlib import Path

import aiohttp

from gateway.protocol.cobs import cobs_encode
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.service import Gateway
from gateway.storage.queries import ReportQueries

from .support import pty_gateway_config

H = 3600


async def _csv_rows(port: int, start: int, end: int) -> list[dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/opendata/readings.csv?from={start}&to={end}") as r:
            assert r.status == 200, await r.text()
            return list(csv.DictReader(io.StringIO(await r.text())))


async def test_a_restart_with_the_clock_behind_keeps_the_csv_published_before_the_stop(tmp_path: Path) -> None:
    day = (int(time.time()) // 86400 + 3) * 86400
    late_w = day + 7 * H                                  # a window of 07:00, sent late
    master, slave = os.openpty()
    try:
        # Run 1 at 12:59:30 (virtual, 60x): the window arrives at once, the 13:05 mark publishes it.
        gw = Gateway(pty_gateway_config(tmp_path, "gw-pub", slave, sim_clock={
            "speed": 60.0, "virtual_at": float(day + 13 * H - 30), "wall_at": time.time()}))
        gw.registry.add("bin-7", kind="bin", zone="harbour", lat="51.9", lon="4.48")
        key = gw.registry.key("bin-7")
        await gw.start()
        try:
            frame = build_frame(FRAME_REPORT, "bin-7", 1, {"t": "win", "k": "bin", "w": late_w, "l": 900,
                                                             "m": {"temp": 30, "tilt": 0}}, key)
            os.write(master, cobs_encode(frame) + b"\x00")
            queries = ReportQueries(gw.config.storage.path)
            try:
                for _ in range(200):
                    if queries.last_report_id():
                        break
                    await asyncio.sleep(0.05)
                assert queries.last_report_id() == 1
            finally:
                queries.close()
            while gw.clock() < day + 13 * H + 5 * 60 + 10:  # past 13:05
                await asyncio.sleep(0.2)
            rows = await _csv_rows(gw.http_port or 0, day + 6 * H, day + 9 * H)
            assert [(r["device"], r["field"], r["hour"][11:13]) for r in rows if r["field"] == "temp"] == [
                ("bin-7", "temp", "07")]
        finally:
            await gw.stop()
        # Run 2 at 11:40 the same day: the clock is behind the stored window's arrival.
        gw = Gateway(pty_gateway_config(tmp_path, "gw-pub", slave, sim_clock={
            "speed": 1.0, "virtual_at": float(day + 11 * H + 40 * 60), "wall_at": time.time()}))
        await gw.start()
        try:
            again = await _csv_rows(gw.http_port or 0, day + 6 * H, day + 9 * H)
        finally:
            await gw.stop()
        assert again == rows
    finally:
        os.close(master)
        os.close(slave)
