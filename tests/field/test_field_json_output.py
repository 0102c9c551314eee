"""provision --json and check --json: exactly one JSON object on stdout (id, port, fingerprint,
result), for batch scripts; the progress and messages go to stderr."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.registry import Registry, key_fingerprint
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]


async def _run(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hil.cli.main", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 90)
    out = out_b.decode()
    lines = out.splitlines()
    assert len(lines) == 1, out  # one object, nothing else on stdout
    assert proc.returncode is not None
    return proc.returncode, json.loads(lines[0]), err_b.decode()


async def test_provision_and_check_json(tmp_path: Path, sim_available: None) -> None:
    registry = tmp_path / "registry"
    Registry(registry).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        prov = ["provision", "--port", port, "--id", "sl-json-1", "--zone", "centre", "--location", "52.1,4.2",
                "--registry", str(registry), "--board", "streetlight-esp32", "--skip-firmware-check",
                "--stay-at-repl", "--json"]
        rc, doc, err = await _run(*prov)
        key = bytes.fromhex(json.loads((flash / "identity.json").read_text())["key"])
        assert rc == 0, err
        assert doc["id"] == "sl-json-1" and doc["port"] == port and doc["result"] == "provisioned", doc
        assert doc["fingerprint"] == key_fingerprint(key) and doc["registry"] == "added", doc
        assert "LABEL: sl-json-1" in err and key.hex() not in json.dumps(doc) + err
        rc, doc, err = await _run(*prov)
        assert rc == 0 and doc["result"] == "unchanged", doc

        # No /firmware.json (never flashed with civicedge flash): check finds a problem at once.
        store = tmp_path / "reports.sqlite"
        store.write_bytes(b"")
        rc, doc, err = await _run("check", "--port", port, "--db", str(store), "--json")
        assert rc == 1, err
        assert doc["id"] == "sl-json-1" and doc["fingerprint"] == key_fingerprint(key), doc
        assert doc["result"] == "problem" and any("incomplete or damaged" in p for p in doc["problems"]), doc

        # An error is an object too.
        rc, doc, err = await _run("check", "--port", str(tmp_path / "ttyUSB9"), "--db", str(store), "--json")
        assert rc == 2 and doc["result"] == "error" and "does not exist" in doc["error"], doc
    finally:
        await board.stop()


async def test_json_usage_errors_still_give_one_object(tmp_path: Path) -> None:
    """A usage error found by argparse (a missing --zone) or while running (--revoke-old without --force)
    still gives one JSON object with the exit code (review: stdout was empty, or the record had no error)."""
    rc, record, err = await _run("provision", "--json", "--port", "/dev/null", "--id", "sl-1")
    assert rc == 2 and record["result"] == "error" and record["exit"] == 2 and record["error"], record
    assert "usage:" in err
    rc, record, err = await _run("provision", "--json", "--port", "/dev/null", "--id", "sl-1", "--zone", "west",
                                 "--location", "52.1,4.3", "--registry", str(tmp_path / "reg"), "--revoke-old")
    assert rc == 2 and record["result"] == "error" and record["exit"] == 2 and record["error"], (record, err)
