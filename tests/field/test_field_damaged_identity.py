"""A damaged /identity.json on the board (QA: truncated JSON, a key that is not 64 hex characters)
blocked every tool, --force included, with no advice: provision --force replaces it, the other tools
name the provision command that does."""

from __future__ import annotations

import asyncio
import json
import shlex
import sqlite3
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow]

TRUNCATED = b'{"id": "sl-0050", "key": "abc'
BAD_KEY = json.dumps({"id": "sl-0050", "kind": "streetlight", "zone": "centre", "lat": "52.37", "lon": "4.89",
                      "key": "abcd"}).encode()


async def test_damaged_identity_is_replaced_by_provision_force_and_the_other_tools_say_so(
        tmp_path: Path, sim_available: None, civicedge_cli: CliRun) -> None:
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
        prov = ["provision", "--port", port, "--zone", "centre", "--location", "52.37,4.89",
                "--registry", str(registry), "--board", "streetlight-esp32", "--skip-firmware-check"]
        assert (await run(*prov, "--id", "sl-0050"))[0] == 0
        reg = Registry(registry)
        try:
            old_key = reg.key("sl-0050")
        finally:
            reg.close()

        # The second time through a port path with a space and a quote: the hint pastes into a shell as it is.
        odd = tmp_path / "rig port 'A'"
        odd.symlink_to(port)
        for damaged, reason, via in ((TRUNCATED, "is not valid JSON", port),
                                     (BAD_KEY, "key is not 64 hex characters", str(odd))):
            (flash / "identity.json").write_bytes(damaged)
            rc, out = await run("check", "--port", via, "--db", str(db), "--timeout", "5")
            assert rc == 2, out
            assert f"error: the board on {via} has a damaged /identity.json ({reason}); give it a new identity: " \
                   f"civicedge provision --port {shlex.quote(via)} --id ID" in out and "--force" in out, out
            assert "abcd" not in out
        rc, out = await run("flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        assert rc == 2 and "damaged /identity.json" in out and "civicedge provision --port" in out, out

        (flash / "identity.json").write_bytes(TRUNCATED)
        rc, out = await run(*prov, "--id", "sl-0051")
        assert rc == 2, out
        assert out.endswith(f"has a damaged /identity.json (is not valid JSON); replace it with: civicedge "
                            f"provision --port {port} --id sl-0051 --zone centre --location 52.37,4.89 --board "
                            f"streetlight-esp32 --registry {registry} --skip-firmware-check --force"), out
        assert (flash / "identity.json").read_bytes() == TRUNCATED

        rc, out = await run(*prov, "--id", "sl-0051", "--force")
        assert rc == 0, out
        new = json.loads((flash / "identity.json").read_text())
        assert new["id"] == "sl-0051"
        reg = Registry(registry)
        try:
            assert reg.key("sl-0051").hex() == new["key"]
            assert reg.key("sl-0050") == old_key  # the unreadable old id's registration is left alone
        finally:
            reg.close()

        # Its own old id again: registered with a key the board no longer holds, so --take-over as usual.
        (flash / "identity.json").write_bytes(TRUNCATED)
        rc, out = await run(*prov, "--id", "sl-0050", "--force")
        assert rc == 2 and "--take-over" in out, out
        assert (await run(*prov, "--id", "sl-0050", "--force", "--take-over"))[0] == 0
        assert json.loads((flash / "identity.json").read_text())["id"] == "sl-0050"
    finally:
        await board.stop()
