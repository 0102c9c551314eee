"""QA: re-keying a board whose flash is full (``provision --force --discard-unsent``) registered the new
key, then failed to write /identity.json: the registry held a key the board did not have (its reports
refused from then on) and a 0-byte /identity.json.part stayed on the board. Provision now checks the
free flash before registering and, should the write still fail, puts the previous registration back
(only while the registry still holds the new key) and removes the temp file (unless it is the only
copy of the new identity). The board's refusal is injected in ``Dut.write_file`` (no root, no tmpfs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry
from hil.dut import Dut
from hil.dut.errors import DeviceError, DeviceProtocolError
from hil.field.identity import new_identity
from hil.field.registration import register_device
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(200), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


def _fill(flash: Path, leave: int = 0) -> None:
    """Leave ``leave`` free blocks on the virtual flash (hil/sim/js/hostfs.mjs: 1024 blocks of 4 KB, files
    rounded up to whole blocks, one per directory)."""
    (flash / "logs.bin").unlink(missing_ok=True)
    used = sum(1 if p.is_dir() else -(-p.stat().st_size // 4096) for p in flash.rglob("*"))
    (flash / "logs.bin").write_bytes(b"\0" * 4096 * (1024 - used - leave))


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
        assert "error: the board's filesystem is full (0 KB free, its new /identity.json needs 12 KB with the " \
               "filesystem's own records): nothing was registered and the board's identity is unchanged" in out, out
        assert f"mpremote connect {port} fs ls :" in out and "--take-over" not in out, out
        assert _registered_key(registry, "sl-0070") == key
        assert (flash / "identity.json").read_bytes() == on_board
        assert not (flash / "identity.json.part").exists()

        # Room for the file's data but not for LittleFS's copy-on-write records: refused too (as flash).
        _fill(flash, leave=2)
        rc, out = await run(*prov, "--id", "sl-0070", "--force", "--discard-unsent")
        assert rc == 2 and "(8 KB free, its new /identity.json needs 12 KB" in out, out
        assert _registered_key(registry, "sl-0070") == key
        _fill(flash, leave=3)
        rc, out = await run(*prov, "--id", "sl-0070", "--force", "--discard-unsent")
        assert rc == 0, out
        now = bytes.fromhex(json.loads((flash / "identity.json").read_bytes())["key"])
        assert now != key and _registered_key(registry, "sl-0070") == now
    finally:
        await board.stop()


def _enospc(dut: Dut) -> DeviceError:
    return DeviceError(url=dut.url, traceback="Traceback (most recent call last):\nOSError: [Errno 28] ENOSPC\n",
                       stdout="", code="", secret=True)


def _refuse_identity(monkeypatch: pytest.MonkeyPatch, fault: Callable[[Dut, bytes], None]) -> None:
    """Every write of /identity.json goes to ``fault`` (which raises); other files are written."""
    real = Dut.write_file

    def write_file(self: Dut, path: str, data: bytes, **kw: Any) -> None:
        if path.lstrip("/") != "identity.json":
            return real(self, path, data, **kw)
        fault(self, data)

    monkeypatch.setattr(Dut, "write_file", write_file)


def _half_written(dut: Dut, data: bytes) -> None:
    """The board's flash filled up after the first bytes of the temp file: ENOSPC."""
    dut.exec(f"f = open('/identity.json.part', 'wb')\nf.write({data[:5]!r})\nf.close()\ndel f")
    raise _enospc(dut)


class _Board:
    """A provisioned virtual board and its registry, for one rollback case."""

    def __init__(self, tmp_path: Path, run: CliRun) -> None:
        self.registry = tmp_path / "registry"
        Registry(self.registry).close()
        self.flash = tmp_path / "flash"
        self.board = VirtualBoard("streetlight-esp32", flash_dir=self.flash, install=False, speed=10)
        self.run = run

    async def __aenter__(self) -> "_Board":
        await self.board.start()
        self.port = self.board.console_path
        self.prov = ["provision", "--port", self.port, "--zone", "centre", "--location", "52.37,4.89", "--registry",
                     str(self.registry), "--board", "streetlight-esp32", "--skip-firmware-check"]
        rc, out = await self.run(*self.prov, "--id", "sl-0070")
        assert rc == 0, out
        self.on_board = (self.flash / "identity.json").read_bytes()
        self.key = bytes.fromhex(json.loads(self.on_board)["key"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.board.stop()

    async def rekey(self, device_id: str = "sl-0070") -> tuple[int, str]:
        return await self.run(*self.prov, "--id", device_id, "--force", "--discard-unsent")


async def test_a_refused_identity_write_puts_the_registration_back_and_removes_its_temp_file(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _Board(tmp_path, civicedge_cli) as b:
        _refuse_identity(monkeypatch, _half_written)
        rc, out = await b.rekey()
        assert rc == 2, out
        assert f"error: the board on {b.port} could not write /identity.json (OSError); check its free flash and " \
               "retry; the registry was restored (sl-0070 is registered with key " in out, out
        assert "as before) and the board's identity is unchanged" in out and "--take-over" not in out, out
        assert _registered_key(b.registry, "sl-0070") == b.key
        assert (b.flash / "identity.json").read_bytes() == b.on_board
        assert not (b.flash / "identity.json.part").exists()

        # A new id has no registration to put back: the existing advice (finish with --take-over) stands.
        rc, out = await b.rekey("sl-0071")
        assert rc == 2, out
        assert "the registry may already hold a new key for sl-0071 that the board does not have" in out, out
        assert "--force --take-over --discard-unsent" in out and "registry was restored" not in out, out
        assert _registered_key(b.registry, "sl-0070") == b.key
        assert (b.flash / "identity.json").read_bytes() == b.on_board
        assert not (b.flash / "identity.json.part").exists()


async def test_a_garbled_answer_to_a_write_that_did_not_happen_puts_the_registration_back(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _Board(tmp_path, civicedge_cli) as b:
        def garbled(dut: Dut, data: bytes) -> None:
            raise DeviceProtocolError(url=dut.url, operation="exec", received=b"\x00garbage", secret=True)

        _refuse_identity(monkeypatch, garbled)
        rc, out = await b.rekey()
        assert rc == 2, out
        assert "the board's answer was garbled" in out and "the registry was restored" in out, out
        assert _registered_key(b.registry, "sl-0070") == b.key
        assert (b.flash / "identity.json").read_bytes() == b.on_board


async def test_a_board_holding_its_new_identity_despite_the_error_is_provisioned(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _Board(tmp_path, civicedge_cli) as b:
        real = Dut.write_file

        def written_then_garbled(dut: Dut, data: bytes) -> None:
            real(dut, "/identity.json", data, secret=True)
            raise DeviceProtocolError(url=dut.url, operation="exec", received=b"\x00", secret=True)

        _refuse_identity(monkeypatch, written_then_garbled)
        rc, out = await b.rekey()
        assert rc == 0, out
        now = bytes.fromhex(json.loads((b.flash / "identity.json").read_bytes())["key"])
        assert now != b.key and _registered_key(b.registry, "sl-0070") == now  # no restore over the new key
        assert "identity written; registry: replaced" in out, out


async def test_the_temp_file_holding_the_only_copy_of_the_new_identity_is_kept(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _Board(tmp_path, civicedge_cli) as b:
        real = Dut.write_file

        def second_rename_failed(dut: Dut, data: bytes) -> None:
            # Dut.write_file's fallback: the target removed, then the rename of the .part failed.
            real(dut, "/identity.json.part", data, secret=True)
            dut.exec("import os\nos.remove('/identity.json')")
            raise _enospc(dut)

        _refuse_identity(monkeypatch, second_rename_failed)
        rc, out = await b.rekey()
        assert rc == 2, out
        part = (b.flash / "identity.json.part").read_bytes()
        new_key = bytes.fromhex(json.loads(part)["key"])
        assert not (b.flash / "identity.json").exists()
        assert "its new identity (key " in out and "is only in /identity.json.part, which was kept" in out, out
        assert "the registry was restored" not in out and "--force --take-over" in out, out
        assert _registered_key(b.registry, "sl-0070") == new_key


async def test_a_take_over_made_meanwhile_is_not_overwritten_by_the_rollback(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _Board(tmp_path, civicedge_cli) as b:
        other = new_identity(device_id="sl-0070", kind="streetlight", zone="centre", lat="52.37", lon="4.89")

        def taken_over_meanwhile(dut: Dut, data: bytes) -> None:
            register_device(b.registry, other, force=True)  # another technician's --take-over
            _half_written(dut, data)

        _refuse_identity(monkeypatch, taken_over_meanwhile)
        rc, out = await b.rekey()
        assert rc == 2, out
        assert "the registry was not put back: sl-0070 was changed meanwhile (another take-over" in out, out
        assert "if sl-0070 is still meant for this board (ask who registered it)" in out, out
        assert _registered_key(b.registry, "sl-0070") == other.key
        assert (b.flash / "identity.json").read_bytes() == b.on_board
        assert not (b.flash / "identity.json.part").exists()


async def test_a_registry_that_cannot_be_written_during_the_rollback_says_how_to_finish(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _Board(tmp_path, civicedge_cli) as b:
        real_enroll = Registry.enroll

        def enroll(self: Registry, device_id: str, **kw: Any) -> str:
            if kw.get("expect_key") is not None:  # only the rollback's
                raise RegistryError("cannot rotate the key in registry: database is locked", reason="storage")
            return real_enroll(self, device_id, **kw)

        monkeypatch.setattr(Registry, "enroll", enroll)
        _refuse_identity(monkeypatch, _half_written)
        rc, out = await b.rekey()
        assert rc == 2, out
        assert "putting the previous registration of sl-0070 back failed (cannot rotate the key in registry: " \
               "database is locked)" in out, out
        assert "the registry may already hold a new key for sl-0070" in out and "--force --take-over" in out, out
        assert _registered_key(b.registry, "sl-0070") not in (None, b.key)
        assert (b.flash / "identity.json").read_bytes() == b.on_board
