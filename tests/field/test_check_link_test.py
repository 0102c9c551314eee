"""check's link test: a board whose clock is set answers in seconds, not at its next report window.

check writes the one-shot request ``/linktest`` just before its restart; the firmware removes it and
sends a boot report at once. Here a virtual board (real MicroPython) with a set clock, a real gateway
process reading its data pty, and the real CLI: check returns ok with the boot report stored, long
before the window would have closed. A firmware without the link test gets no request and is waited
for as before (its window report).
"""

from __future__ import annotations

import re
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.registry import Registry
from gateway.resources import firmware_dir
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.sim.board import VirtualBoard
from hil.sim.flash import install_firmware

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]

WINDOW_S = 900  # the streetlight's report window (firmware/policy.json)


async def _check(*args: str, timeout_s: float = 120.0) -> tuple[int, dict[str, Any], str]:
    """``civicedge check ... --json`` in a process: exit code, its JSON record, its stderr."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hil.cli.main", "check", *args, "--json",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, json.loads(out_b.decode()), " ".join(err_b.decode().split())


def _window_start_behind() -> int:
    """A board clock 30 s into the first report window of an hour, behind the gateway's (a drifted RTC): its
    window closes 14.5 minutes after it starts, and the gateway's time sync later only steps it forward.
    The first window of an hour: a window closing on the hour has the hour's energy report sent before
    its own, and the next hour is 59.5 board minutes (36 s at 100x) away, time for a loaded host."""
    now = int(time.time())
    start = now // 3600 * 3600 + 30
    return start if start <= now else start - 3600


def _register(gw: GatewayProcess, board: VirtualBoard) -> None:
    ident = json.loads(board.identity_path.read_text())
    reg = Registry(gw.registry_dir)
    try:
        reg.add(ident["id"], kind=ident["kind"], zone=ident["zone"], lat=ident["lat"], lon=ident["lon"],
                key=bytes.fromhex(ident["key"]))
    finally:
        reg.close()


async def test_check_of_a_board_with_a_set_clock_gets_the_boot_report_in_seconds(tmp_path: Path) -> None:
    start = _window_start_behind()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", device_id="sl-link-1", flash_dir=flash, speed=1,
                         start_ms=start * 1000)
    await board.start()
    gw = GatewayProcess(workdir=tmp_path / "gw", serial_ports=[], http=True)
    try:
        await board.wait_console("streetlight sl-link-1 running", timeout_s=30)
        assert board.data_path is not None
        gw.serial_ports.append(board.data_path)
        _register(gw, board)
        gw.start()
        port = board.console_path

        rc, doc, err = await _check("--port", port, "--db", str(gw.db_path))
        assert rc == 0, err + gw.output
        assert doc["result"] == "ok" and doc["link_test"] == "answered", doc
        assert "next report due: a boot report at once (link test); else its window closes at" in err, err
        # The report check waited for is the boot report of its restart (nothing was stored before), with
        # no measurement; it came long before the window (14 minutes away) could close.
        rows = gw.stored_reports("sl-link-1")
        first = min(rows, key=lambda r: r["id"])
        assert first["type"] == "boot" and first["m"] == {} and first["e"] == {}, rows
        assert doc["report_after_s"] < WINDOW_S / 3, doc
        assert not (flash / "linktest").exists()  # taken by the firmware at the restart
        assert "link test: boot report queued" in board.console_text()

        # The same through the gateway's HTTP read API (its last_seen).
        url = f"http://127.0.0.1:{gw.http_port}"
        rc, doc, err = await _check("--port", port, "--gateway", url)
        assert rc == 0 and doc["link_test"] == "answered", err + gw.output
        assert doc["report_after_s"] < WINDOW_S / 3, doc
        boots = [r for r in gw.stored_reports("sl-link-1") if r["type"] == "boot"]
        assert len(boots) == 2, boots  # one per check: a request counts for one restart
    finally:
        gw.stop()
        await board.stop()


def _firmware_without_link_test(dest: Path) -> Path:
    """This release's firmware as the previous one was: no civic.LINK_TEST, a main.py that takes no request."""
    shutil.copytree(firmware_dir(), dest, ignore=shutil.ignore_patterns("__pycache__"))
    init = dest / "lib" / "civic" / "__init__.py"
    text = init.read_text()
    assert 'LINK_TEST = "linktest"' in text
    older = re.sub(r'^VERSION = "[^"]+"', 'VERSION = "0.0.9"', text.split("\nLINK_TEST = ")[0], count=1, flags=re.M)
    assert 'VERSION = "0.0.9"' in older
    init.write_text(older + "\n")
    main = dest / "main.py"
    text = main.read_text()
    assert "link_test = bootstate.take_link_test(machine)" in text
    main.write_text(text.replace("link_test = bootstate.take_link_test(machine)", "link_test = False"))
    return dest


async def test_a_firmware_without_the_link_test_is_waited_for_until_its_window_and_gets_no_request(
        tmp_path: Path) -> None:
    start = _window_start_behind()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", device_id="sl-link-2", flash_dir=flash, speed=100,
                         start_ms=start * 1000, install=False)
    install_firmware(flash, board.config, source=_firmware_without_link_test(tmp_path / "old-firmware"))
    await board.start()
    gw = GatewayProcess(workdir=tmp_path / "gw", serial_ports=[], http=False)
    try:
        await board.wait_console("streetlight sl-link-2 running", timeout_s=30)
        assert board.data_path is not None
        gw.serial_ports.append(board.data_path)
        _register(gw, board)
        gw.start()

        rc, doc, err = await _check("--port", board.console_path, "--db", str(gw.db_path))
        # It reports (its window, 14.5 virtual minutes at 100x), but it is not this release: exit 1.
        assert rc == 1 and "gateway accepted a report from sl-link-2" in err, err + gw.output
        assert "the board runs firmware 0.0.9, not this host's release" in err, err
        assert doc["link_test"] == "unsupported", doc
        assert "next report due: its window closes at" in err, err
        assert "link test: the board's firmware has none (older than this release)" in err, err
        assert "civicedge flash --firmware-only --board streetlight-esp32" in err, err
        first = min(gw.stored_reports("sl-link-2"), key=lambda r: r["id"])
        assert first["type"] == "win", first
        # No request was left for a later firmware to find at an unrelated start.
        assert not (flash / "linktest").exists()
    finally:
        gw.stop()
        await board.stop()
