"""``civicedge check`` and ``flash`` with the device copy of the policy (hil.field.device_policy), on a
virtual board running the shipped firmware (real MicroPython behind a real pty).

A board an older flash wrote holds this release's full policy.json byte for byte: check does not call
it another policy, and a flash replaces it by the device copy once (then copies nothing). A board on
another policy (another k, in full or as a device copy) is still told apart, and so is a full file
whose rules match but whose documentation (retention, purpose, valid range) was edited: it states to
an auditor reading the board what the gateway does not do. A board holding a device copy made before
the policy's text for people (statement, not_collected, recipients) was left out of it is told to
re-flash once; after that a change of that text's wording asks for no flash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from gateway.resources import firmware_dir, policy_path
from hil.field import firmware_copy
from hil.field.check import BoardState, inspect_board
from hil.field.device import open_board
from hil.field.device_policy import device_policy, device_policy_bytes, doc_only_keys, doc_only_top_keys
from hil.field.firmware_copy import CopyResult, copy_firmware
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


def _put_policy(flash: Path, data: bytes) -> None:
    """Write ``/policy.json`` and its hash into the manifest, as a flash that wrote ``data`` left them."""
    (flash / "policy.json").write_bytes(data)
    manifest = json.loads((flash / "firmware.json").read_text())
    manifest["files"]["/policy.json"] = hashlib.sha256(data).hexdigest()
    (flash / "firmware.json").write_text(json.dumps(manifest, sort_keys=True))


async def test_check_tells_the_full_copy_of_the_same_policy_from_another_policy(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", device_id="sl-pol-1", flash_dir=flash, speed=10)
    await board.start()
    full = policy_path().read_bytes()
    stricter = json.loads(full)
    stricter["kinds"]["streetlight"]["fields"]["mot"]["k"] = 7
    doctored = json.loads(full)
    fields = doctored["kinds"]["streetlight"]["fields"]
    fields["mot"]["retention_days"] = 3650
    fields["mot"]["purpose"] = "profile who walks past the lamp"
    fields["lux"]["valid_range"] = [0, 10]  # on the quantum: a policy the gateway loads
    assert device_policy_bytes(json.dumps(doctored)) == device_policy_bytes(full)  # the same rules

    def inspect() -> BoardState:
        dut = open_board(board.console_path, timeout_s=20)
        try:
            return inspect_board(dut)
        finally:
            dut.close()

    def reflash() -> CopyResult:
        dut = open_board(board.console_path, timeout_s=20)
        try:
            return copy_firmware(dut, board_config=board.config, source_only=True)
        finally:
            dut.close()

    try:
        await board.wait_console("streetlight sl-pol-1 running", timeout_s=60)
        assert (flash / "policy.json").read_bytes() == device_policy_bytes(full)
        state = await asyncio.to_thread(inspect)
        assert state.ok and state.outdated == [] and state.changed == [], state

        # an older flash: the full file, same rules
        _put_policy(flash, full)
        state = await asyncio.to_thread(inspect)
        assert state.ok and state.outdated == [] and state.changed == [], state

        # another policy, in full or as a device copy; the same rules under an edited retention, purpose
        # and valid range; the same full file laid out again (not what a flash wrote)
        relaid = json.dumps(json.loads(full), indent=1).encode()
        assert relaid != full
        for other in (json.dumps(stricter).encode(), device_policy_bytes(json.dumps(stricter)),
                      json.dumps(doctored, indent=2).encode(), relaid):
            _put_policy(flash, other)
            state = await asyncio.to_thread(inspect)
            assert state.outdated == ["/policy.json"] and state.changed == [] and not state.ok, state

        # a flash writes the device copy (only that file), a second one nothing
        _put_policy(flash, full)
        first = await asyncio.to_thread(reflash)
        assert first.copied == ("/policy.json",), first
        assert (flash / "policy.json").read_bytes() == device_policy_bytes(full)
        again = await asyncio.to_thread(reflash)
        assert again.copied == () and "/policy.json" in again.unchanged, again
        state = await asyncio.to_thread(inspect)
        assert state.ok, state
    finally:
        await board.stop()


async def test_a_copy_with_the_text_for_people_is_replaced_once_then_its_wording_asks_no_flash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3d0099d re-worded the MQTT recipient line, and check asked for every board to be re-flashed for
    a text the firmware never reads."""
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", device_id="sl-pol-2", flash_dir=flash, speed=10)
    await board.start()
    full = policy_path().read_bytes()
    # the device copy as flash wrote it before the top-level text was left out (field keys only)
    older = json.dumps(device_policy(json.loads(full), doc_only_keys()), ensure_ascii=False,
                       separators=(",", ":")).encode("utf-8")
    assert older != device_policy_bytes(full) and b'"recipients"' in older
    assert not set(doc_only_top_keys()) & set(json.loads(device_policy_bytes(full)))

    def inspect() -> BoardState:
        dut = open_board(board.console_path, timeout_s=20)
        try:
            return inspect_board(dut)
        finally:
            dut.close()

    def reflash() -> CopyResult:
        dut = open_board(board.console_path, timeout_s=20)
        try:
            return copy_firmware(dut, board_config=board.config, source_only=True)
        finally:
            dut.close()

    try:
        await board.wait_console("streetlight sl-pol-2 running", timeout_s=60)
        _put_policy(flash, older)
        state = await asyncio.to_thread(inspect)
        assert state.outdated == ["/policy.json"] and state.changed == [] and not state.ok, state
        first = await asyncio.to_thread(reflash)
        assert first.copied == ("/policy.json",), first
        assert (flash / "policy.json").read_bytes() == device_policy_bytes(full)

        # a release that only re-words the recipients (a firmware tree like this one but for that text)
        reworded_tree = tmp_path / "firmware"
        shutil.copytree(firmware_dir(), reworded_tree, ignore=shutil.ignore_patterns("__pycache__"))
        reworded = json.loads(full)
        for r in reworded["recipients"]:
            r["gets"] = "re-worded: " + r["gets"]
        (reworded_tree / "policy.json").write_text(json.dumps(reworded, indent=2, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")
        monkeypatch.setattr(firmware_copy, "firmware_dir", lambda: reworded_tree)
        state = await asyncio.to_thread(inspect)
        assert state.ok and state.outdated == [] and state.changed == [], state
        again = await asyncio.to_thread(reflash)
        assert again.copied == () and "/policy.json" in again.unchanged, again
    finally:
        await board.stop()
