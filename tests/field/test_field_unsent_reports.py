"""QA: provision --force on a board with un-sent reports in /outbox discarded them silently (framed
under the old key, the firmware drops them at its next boot). It now refuses, names the count and
the ways out; --discard-unsent proceeds. check shows the count, and the recovery commands add the flag."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.field.errors import DeviceIOError
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


async def test_force_refuses_to_drop_unsent_reports_unless_told(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    run = civicedge_cli

    registry = tmp_path / "registry"
    Registry(registry).close()
    db = tmp_path / "store.db"
    sqlite3.connect(db).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        prov = ["provision", "--port", port, "--id", "sl-0071", "--zone", "centre", "--location", "52.37,4.89",
                "--registry", str(registry), "--board", "streetlight-esp32", "--skip-firmware-check",
                "--stay-at-repl"]
        assert (await run(*prov))[0] == 0
        key = json.loads((flash / "identity.json").read_text())["key"]
        outbox = flash / "outbox"
        outbox.mkdir()
        for name in ("00000001.r", "00000002.a", "owner", "dropped"):
            (outbox / name).write_bytes(b"\0" * 8)

        rc, out = await run(*prov, "--force")
        assert rc == 2, out
        assert f"the board on {port} holds 2 un-sent report(s) in its outbox" in out, out
        assert f"civicedge check --port {port}" in out and "--force --discard-unsent" in out, out
        assert json.loads((flash / "identity.json").read_text())["key"] == key
        reg = Registry(registry)
        try:
            assert reg.key("sl-0071").hex() == key
        finally:
            reg.close()

        rc, out = await run("check", "--port", port, "--db", str(db), "--registry", str(registry), "--timeout", "5")
        assert "outbox: 2 un-sent report(s)" in out, out

        # Interrupted after registering: the printed repair drops the reports explicitly, and says so.
        def broken(dut: object, ident: object) -> None:
            raise DeviceIOError("writing /identity.json failed: the link dropped", link_lost=True)

        with monkeypatch.context() as patch:
            patch.setattr("hil.field.provision.write_identity", broken)
            rc, out = await run(*prov, "--force", "--discard-unsent")
        assert rc == 2, out
        assert "--force --take-over --discard-unsent" in out and "2 un-sent report(s)" in out, out

        rc, out = await run(*prov, "--force", "--take-over", "--discard-unsent")
        assert rc == 0, out
        assert json.loads((flash / "identity.json").read_text())["key"] != key
    finally:
        await board.stop()
