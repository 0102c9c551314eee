"""The whole field flow on a virtual board: flash firmware, provision, first report, check.

The board runs real MicroPython (wasm) behind a real pty; the CLI runs as a real process;
the gateway is a real ``civicedge gateway run`` process reading the board's data pty.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from field_cli import civicedge

from gateway.registry import Registry
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(170)]

BOARD = "streetlight-esp32"


@pytest.mark.slow
async def test_empty_board_to_first_accepted_report(tmp_path: Path, sim_available: None) -> None:
    board = VirtualBoard(BOARD, flash_dir=tmp_path / "flash", install=False, speed=100)
    await board.start()
    gw = GatewayProcess(workdir=tmp_path / "gw", serial_ports=[], http=True, admin_token="19838cffb344f08240115aa532e608ce")
    try:
        assert not (tmp_path / "flash" / "main.py").exists()
        port = board.console_path
        rc, out = await civicedge("flash", "--firmware-only", "--board", BOARD, "--port", port)
        assert rc == 0, out
        assert "firmware as mpy" in out and "verified by hash" in out
        flash = tmp_path / "flash"
        assert (flash / "lib" / "civic" / "__init__.mpy").is_file()
        assert not (flash / "lib" / "civic" / "__init__.py").exists()
        assert json.loads((flash / "board.json").read_text())["kind"] == "streetlight"
        manifest = json.loads((flash / "firmware.json").read_text())
        assert manifest["mode"] == "mpy" and "/lib/civic/report.mpy" in manifest["files"]

        # Flashing again copies nothing (hash-based).
        rc, out = await civicedge("flash", "--firmware-only", "--board", BOARD, "--port", port)
        assert rc == 0 and " 0 files copied" in out, out

        assert board.data_path is not None
        gw.serial_ports.append(board.data_path)
        gw.start()
        before = len(board.console_log)
        rc, out = await civicedge("-vv", "provision", "--port", port, "--id", "sl-field-1", "--zone", "centre",
                                  "--location", "52.3702,4.8952", "--registry", str(gw.registry_dir))
        assert rc == 0, out
        # It restarts the firmware, which runs with the new identity (a street light left dark at the
        # REPL until its watchdog fires was the old behaviour).
        assert "firmware restarted" in out, out
        await board.wait_console("streetlight sl-field-1 running", since=before, timeout_s=30)
        identity = json.loads((flash / "identity.json").read_text())
        assert identity["id"] == "sl-field-1" and identity["kind"] == "streetlight"
        key = identity["key"]
        assert len(bytes.fromhex(key)) == 32
        reg = Registry(gw.registry_dir)
        try:
            assert reg.key("sl-field-1").hex() == key
        finally:
            reg.close()
        assert "LABEL: sl-field-1 | zone centre | key " in out
        assert key not in out and key[:16] not in out

        # Provisioning again with the same id changes nothing, through the registry directory or
        # through the running gateway's admin API alike.
        rc, again = await civicedge("provision", "--port", port, "--id", "sl-field-1", "--zone", "centre",
                                    "--location", "52.3702,4.8952", "--registry", str(gw.registry_dir),
                                    "--board", BOARD)
        assert rc == 0 and "unchanged" in again, again
        url = f"http://127.0.0.1:{gw.http_port}"
        rc, again = await civicedge("provision", "--port", port, "--id", "sl-field-1", "--zone", "centre",
                                    "--location", "52.3702,4.8952", "--gateway", url,
                                    "--token-file", str(gw.admin_token_path))
        assert rc == 0 and "registry: unchanged" in again, again
        assert "plain HTTP" not in again  # loopback: no warning
        assert json.loads((flash / "identity.json").read_text())["key"] == key

        # check restarts the firmware (soft reset), then waits for the gateway to accept a report.
        rc, out = await civicedge("-vv", "check", "--port", port, "--db", str(gw.db_path), "--timeout", "60",
                                  "--registry", str(gw.registry_dir), timeout_s=120)
        assert rc == 0, out + gw.output
        assert "registry: registered with this key" in out
        assert "hashes match" in out and "gateway accepted a report from sl-field-1" in out
        assert key not in out
        rows = gw.stored_reports("sl-field-1")
        assert rows and rows[0]["kind"] == "streetlight"
        assert "streetlight sl-field-1 running" in board.console_text()
        assert key not in gw.output

        # The same check through the gateway's HTTP read API.
        rc, out = await civicedge("check", "--port", port, "--gateway", url, "--timeout", "30")
        assert rc == 0 and "gateway accepted a report from sl-field-1" in out, out

        # An older release that runs and reports: exit 1, saying why and how to update it.
        manifest = (flash / "firmware.json").read_bytes()
        older = json.loads(manifest)
        older["version"] = "0.0.1"
        (flash / "firmware.json").write_text(json.dumps(older))
        rc, out = await civicedge("check", "--port", port, "--gateway", url, "--timeout", "60", timeout_s=120)
        assert rc == 1 and "gateway accepted a report from sl-field-1" in out, out
        assert "the board runs firmware 0.0.1, not this host's release" in out, out
        assert "to update it run civicedge flash --firmware-only --board" in " ".join(out.split()), out
        (flash / "firmware.json").write_bytes(manifest)

        # A file changed behind our back: check says which one and exits 1.
        policy = (flash / "policy.json").read_bytes()
        with (flash / "policy.json").open("a") as fh:
            fh.write("\n")
        rc, out = await civicedge("check", "--port", port, "--db", str(gw.db_path), "--timeout", "30")
        assert rc == 1 and "CHANGED: /policy.json" in out, out
        (flash / "policy.json").write_bytes(policy)

        # Re-provisioned under a new id through the admin API only: the running gateway learns the
        # device and its new key, and accepts its reports. A wrong token changes nothing.
        new_id = ["--id", "sl-field-2", "--zone", "centre", "--location", "52.3702,4.8952", "--force"]
        bad_token = tmp_path / "wrong.token"
        bad_token.write_text("not-the-admin-token-000000\n")
        rc, out = await civicedge("provision", "--port", port, *new_id, "--gateway", url, "--token-file",
                                  str(bad_token))
        assert rc == 2 and "refused the admin token" in out, out
        assert json.loads((flash / "identity.json").read_text())["id"] == "sl-field-1"
        rc, out = await civicedge("provision", "--port", port, *new_id, "--gateway", url, "--token-file",
                                  str(gw.admin_token_path))
        assert rc == 0 and "registry: added" in out, out
        key2 = json.loads((flash / "identity.json").read_text())["key"]
        assert key2 != key and key2 not in out and key2 not in gw.output
        rc, out = await civicedge("check", "--port", port, "--gateway", url, "--timeout", "60", timeout_s=120)
        assert rc == 0 and "gateway accepted a report from sl-field-2" in out, out + gw.output
    finally:
        gw.stop()
        await board.stop()
