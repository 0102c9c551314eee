"""QA: re-keying a board whose flash is full (``provision --force --discard-unsent``) registered the new
key, then failed to write /identity.json: the registry held a key the board did not have (its reports
refused from then on) and a 0-byte /identity.json.part stayed on the board. Provision now checks the
free flash before registering and, should the write still fail, puts the previous registration back
and removes the temp file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from gateway.registry import Registry
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(200), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


def _fill(flash: Path) -> None:
    """Leave no free block on the virtual flash (hil/sim/js/hostfs.mjs: 1024 blocks of 4 KB, files
    rounded up to whole blocks, one per directory)."""
    used = sum(1 if p.is_dir() else -(-p.stat().st_size // 4096) for p in flash.rglob("*"))
    (flash / "logs.bin").write_bytes(b"\0" * 4096 * (1024 - used))


def _registered_key(registry: Path, device_id: str) -> bytes | None:
    reg = Registry(registry)
    try:
        return reg.key(device_id) if reg.lookup(device_id) is not None else None
    finally:
        reg.close()


async def test_rekeying_a_board_without_free_flash_is_refused_before_registering(
        tmp_path: Path, civicedge_cli: CliRun) -> None:
    run = civicedge_cli
    registry = tmp_path / "registry"
    Registry(registry).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        prov = ["provision", "--port", port, "--zone", "centre", "--location", "52.37,4.89", "--registry",
                str(registry), "--board", "streetlight-esp32", "--skip-firmware-check"]
        rc, out = await run(*prov, "--id", "sl-0070")
        assert rc == 0, out
        on_board = (flash / "identity.json").read_bytes()
        key = bytes.fromhex(json.loads(on_board)["key"])
        assert _registered_key(registry, "sl-0070") == key
        _fill(flash)

        # Refused before the registry is touched.
        rc, out = await run(*prov, "--id", "sl-0070", "--force", "--discard-unsent")
        assert rc == 2, out
        assert "error: the board's filesystem is full (0 KB free, its new /identity.json needs 4 KB): nothing " \
               "was registered and the board's identity is unchanged" in out, out
        assert f"mpremote connect {port} fs ls :" in out and "--take-over" not in out, out
        assert _registered_key(registry, "sl-0070") == key
        assert (flash / "identity.json").read_bytes() == on_board
        assert not (flash / "identity.json.part").exists()
    finally:
        await board.stop()


@pytest.fixture
def small_flash(tmp_path: Path) -> Iterator[Path]:
    """A virtual board's flash directory on a 1 MB tmpfs (root only): the simulator limits what
    os.statvfs reports, not the writes themselves, so only a full host disk makes a write fail."""
    where = tmp_path / "flash"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def _fill_disk(directory: Path) -> None:
    """Write a filler file until the (small) disk under ``directory`` has no byte left."""
    with open(directory / "logs.bin", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 1024)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


async def test_a_failed_identity_write_puts_the_registration_back_and_removes_its_temp_file(
        tmp_path: Path, small_flash: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    run = civicedge_cli
    registry = tmp_path / "registry"
    Registry(registry).close()
    flash = small_flash
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        prov = ["provision", "--port", port, "--zone", "centre", "--location", "52.37,4.89", "--registry",
                str(registry), "--board", "streetlight-esp32", "--skip-firmware-check"]
        rc, out = await run(*prov, "--id", "sl-0070")
        assert rc == 0, out
        on_board = (flash / "identity.json").read_bytes()
        key = bytes.fromhex(json.loads(on_board)["key"])
        _fill_disk(flash)

        # As QA found it (the flash's disk full): refused before registering.
        rc, out = await run(*prov, "--id", "sl-0070", "--force", "--discard-unsent")
        assert rc == 2 and "error: the board's filesystem is full (0 KB free" in out, out
        assert _registered_key(registry, "sl-0070") == key

        # The board says it has room (as a board without os.statvfs) but its write fails: the
        # registration is put back.
        monkeypatch.setattr("hil.field.provision.check_identity_room", lambda *_a, **_k: None)
        rc, out = await run(*prov, "--id", "sl-0070", "--force", "--discard-unsent")
        assert rc == 2, out
        assert f"error: the board on {port} could not write /identity.json (OSError); check its free flash and " \
               "retry; the registry was restored (sl-0070 is registered with key " in out, out
        assert "as before) and the board's identity is unchanged" in out and "--take-over" not in out, out
        assert _registered_key(registry, "sl-0070") == key
        assert (flash / "identity.json").read_bytes() == on_board
        assert not (flash / "identity.json.part").exists()

        # A new id has no registration to put back: the existing advice (finish with --take-over) stands.
        rc, out = await run(*prov, "--id", "sl-0071", "--force", "--discard-unsent")
        assert rc == 2, out
        assert "the registry may already hold a new key for sl-0071 that the board does not have" in out, out
        assert "--force --take-over --discard-unsent" in out and "registry was restored" not in out, out
        assert _registered_key(registry, "sl-0070") == key
        assert (flash / "identity.json").read_bytes() == on_board
        assert not (flash / "identity.json.part").exists()
    finally:
        await board.stop()
