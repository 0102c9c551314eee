"""flash / provision / check against what is really on a board (a virtual board, real MicroPython):
the chip and kind on the board, a report sent after the restart (not one stored before), and
firmware that is incomplete or cannot start."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from field_cli import civicedge

from gateway.registry import Registry
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(170)]


def old_report_store(path: Path, device: str) -> None:
    """A gateway store that already holds a report of ``device`` (sent long before this check)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE reports (id INTEGER PRIMARY KEY, device TEXT, seq INTEGER, received_at REAL)")
    conn.execute("INSERT INTO reports (device, seq, received_at) VALUES (?, 7, 1700000000.0)", (device,))
    conn.commit()
    conn.close()


def rewrite_in_manifest(flash: Path, name: str, data: bytes) -> None:
    """Change a device file and its manifest entry alike (an intact-looking but different firmware)."""
    (flash / name).write_bytes(data)
    manifest = json.loads((flash / "firmware.json").read_text())
    manifest["files"]["/" + name] = hashlib.sha256(data).hexdigest()
    (flash / "firmware.json").write_text(json.dumps(manifest))


@pytest.mark.slow
async def test_flash_provision_and_check_look_at_the_board(tmp_path: Path, sim_available: None) -> None:
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=100)
    await board.start()
    registry = tmp_path / "registry"
    Registry(registry).close()
    try:
        port = board.console_path
        rc, out = await civicedge("flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        assert rc == 0, out

        # Another chip's definition over this board: refused before anything is written.
        rc, out = await civicedge("flash", "--firmware-only", "--board", "bin-esp32c3", "--port", port)
        assert rc == 2 and "is an ESP32 " in out and "bin-esp32c3 needs ESP32-C3" in out, out
        assert json.loads((flash / "board.json").read_text())["chip"] == "esp32"

        prov = ["provision", "--port", port, "--id", "sl-0031", "--zone", "centre", "--location", "52.37,4.89",
                "--registry", str(registry)]
        rc, out = await civicedge(*prov, "--stay-at-repl")
        assert rc == 0 and "firmware restarted" not in out and "next: reset the board" in out, out
        key = json.loads((flash / "identity.json").read_text())["key"]
        rc, out = await civicedge(*prov, "--board", "bin-esp32c3", "--force")
        assert rc == 2 and "needs ESP32-C3" in out, out
        assert json.loads((flash / "identity.json").read_text())["key"] == key
        assert json.loads((flash / "board.json").read_text())["kind"] == "streetlight"
        reg = Registry(registry)
        try:
            record = reg.lookup("sl-0031")
            assert record is not None and record.kind == "streetlight" and reg.key("sl-0031").hex() == key
        finally:
            reg.close()

        # A report stored before the restart does not count: no gateway runs, so nothing new comes.
        store = tmp_path / "reports.sqlite"
        old_report_store(store, "sl-0031")

        # check stops the firmware to read the board; an error before its restart (here a mistyped
        # --registry) must not leave the board stopped.
        before = len(board.console_log)
        rc, out = await civicedge("check", "--port", port, "--db", str(store), "--registry",
                                  str(tmp_path / "registy"), "--timeout", "3")
        assert rc != 0 and "registy" in out and "Traceback" not in out, out
        await board.wait_console("streetlight sl-0031 running", since=before, timeout_s=30)
        rc, out = await civicedge("check", "--port", port, "--db", str(store), "--registry", str(registry),
                                  "--timeout", "3")
        assert rc == 2 and "accepted no report from sl-0031 within 3 s" in out, out
        assert "gateway accepted a report" not in out

        # The registry holds another key (QA: check waited a whole window, then blamed the link):
        # exit 1 at once, with the command that works in that state, which then repairs it.
        reg = Registry(registry)
        try:
            reg.rotate_key("sl-0031")
        finally:
            reg.close()
        rc, out = await civicedge("check", "--port", port, "--db", str(store), "--registry", str(registry),
                                  "--timeout", "600", timeout_s=30)
        assert rc == 1 and "registry: REGISTERED WITH ANOTHER KEY" in out, out
        assert "accepted no report" not in out and "waiting up to" not in out
        advice = " ".join(out.split()).split("give the board a new key and move the id to it: ")[1].split(" (")[0]
        # The running firmware's reports pile up in its outbox (the gateway refuses them, and check has
        # restarted it): the advice always drops them, as they can never be delivered under the replaced key.
        assert advice.endswith("--force --take-over --discard-unsent"), out
        rc, out = await civicedge(*advice.split()[1:])
        assert rc == 0, out
        key = json.loads((flash / "identity.json").read_text())["key"]
        reg = Registry(registry)
        try:
            assert reg.key("sl-0031").hex() == key
        finally:
            reg.close()

        # Firmware with a config of another kind (firmware cannot start): exit 1 at once, saying why.
        config = (flash / "board.json").read_bytes()
        bin_config = json.loads(config)
        bin_config["kind"] = "bin"
        rewrite_in_manifest(flash, "board.json", json.dumps(bin_config).encode())
        rc, out = await civicedge("check", "--port", port, "--db", str(store), "--timeout", "60", timeout_s=30)
        assert rc == 1 and "provisioned as a streetlight but its /board.json is for a bin" in out, out
        rewrite_in_manifest(flash, "board.json", config)

        # An interrupted flash left files missing: exit 1 at once, naming the fix.
        (flash / "lib" / "civic" / "report.mpy").unlink()
        rc, out = await civicedge("check", "--port", port, "--db", str(store), "--timeout", "60", timeout_s=30)
        assert rc == 1 and "CHANGED: /lib/civic/report.mpy" in out, out
        assert "run civicedge flash --firmware-only --board streetlight-esp32" in out
        assert "accepted no report" not in out
    finally:
        await board.stop()
