"""Review: a registry change whose COMMIT failed (``database is locked``: another process held a read
transaction past busy_timeout) rolled the row back but left the new key file in place, so the gateway
switched keys while the board kept the old one, and the raw sqlite3 error ended ``provision`` in a
traceback. The write lock is now taken up front, the key file is put back when anything after its
replacement fails, and the error is a ``RegistryError`` (``storage``)."""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry, devices
from hil.field import provision_cmd
from hil.field.errors import FieldError, GatewayRegistrationError
from hil.field.identity import new_identity
from hil.field.registration import register_device

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
PLACE = {"kind": "streetlight", "zone": "centre", "lat": "52.37", "lon": "4.89"}


class _CommitFails:
    """A connection whose COMMIT fails as a locked database makes it fail."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "COMMIT":
            raise sqlite3.OperationalError("database is locked")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _leftovers(reg: Registry) -> list[str]:
    return sorted(p.name for p in reg.keys_dir.iterdir() if p.name.endswith(".tmp"))


def test_add_failing_at_commit_leaves_no_row_and_no_key_file(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    real = reg._conn
    try:
        reg._conn = _CommitFails(real)  # type: ignore[assignment]
        with pytest.raises(RegistryError, match="database is locked") as failed:
            reg.add("sl-1", key=KEY_A, **PLACE)
        assert failed.value.reason == "storage"
        reg._conn = real
        assert reg.lookup("sl-1") is None
        assert not reg.key_path("sl-1").exists() and _leftovers(reg) == []
        assert reg.enroll("sl-1", key=KEY_A, **PLACE) == "added"  # a plain re-run works
        assert reg.key("sl-1") == KEY_A
    finally:
        real.close()


def test_rotate_failing_at_commit_keeps_the_old_key_file(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    real = reg._conn
    try:
        reg.enroll("sl-1", key=KEY_A, **PLACE)
        reg._conn = _CommitFails(real)  # type: ignore[assignment]
        with pytest.raises(RegistryError) as failed:
            reg.enroll("sl-1", key=KEY_B, replace=True, **PLACE)
        assert failed.value.reason == "storage"
        with pytest.raises(RegistryError) as failed:
            reg.rotate_key("sl-1")
        assert failed.value.reason == "storage"
        reg._conn = real
        assert reg.key("sl-1") == KEY_A and reg.get("sl-1").key_version == 1
        assert _leftovers(reg) == []
    finally:
        real.close()


def test_a_reader_holding_the_registry_fails_the_change_before_the_key_file(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reader = sqlite3.connect(str(tmp_path / "reg" / "devices.sqlite"), isolation_level=None)
    try:
        reg.enroll("sl-1", key=KEY_A, **PLACE)
        reg._conn.execute("PRAGMA busy_timeout=100")
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM devices").fetchall()  # a SHARED lock, held
        with pytest.raises(RegistryError, match="locked") as failed:
            reg.rotate_key("sl-1", key=KEY_B)
        assert failed.value.reason == "storage"
        assert reg.key_path("sl-1").read_text().strip() == KEY_A.hex()
        reader.execute("ROLLBACK")
        assert reg.key("sl-1") == KEY_A and reg.get("sl-1").key_version == 1
    finally:
        reader.close()
        reg.close()


def test_a_key_file_that_cannot_be_put_back_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "reg")
    real = reg._conn
    try:
        reg.enroll("sl-1", key=KEY_A, **PLACE)
        reg._conn = _CommitFails(real)  # type: ignore[assignment]
        write = devices._write_private
        calls: list[Path] = []

        def second_write_fails(path: Path, data: bytes) -> None:
            calls.append(path)
            if len(calls) > 1:
                raise OSError(28, "No space left on device")
            write(path, data)

        monkeypatch.setattr(devices, "_write_private", second_write_fails)
        with pytest.raises(RegistryError, match="could not be put back") as failed:
            reg.rotate_key("sl-1", key=KEY_B)
        assert failed.value.reason == "storage_partial"
    finally:
        real.close()


def test_write_private_removes_its_temp_file_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_replace(*_a: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError):
        devices._write_private(tmp_path / "x.key", b"data")
    assert list(tmp_path.iterdir()) == []


def test_write_private_syncs_the_directory_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    monkeypatch.setattr(devices, "fsync_dir", lambda d: synced.append(str(d)))
    devices._write_private(tmp_path / "x.key", b"data")
    assert synced == [str(tmp_path)] and (tmp_path / "x.key").read_bytes() == b"data"


def test_provision_prints_one_error_and_the_re_run_when_the_registry_is_locked(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reg_dir = tmp_path / "reg"
    Registry(reg_dir).close()

    def locked(self: Registry, *_a: object, **_k: object) -> None:
        raise RegistryError("cannot register device sl-1 in registry %s: database is locked" % reg_dir,
                            reason="storage")

    monkeypatch.setattr(Registry, "_commit_with_key", locked)
    ident = new_identity(device_id="sl-1", **PLACE)
    with pytest.raises(GatewayRegistrationError, match="could not register sl-1.*locked") as failed:
        register_device(reg_dir, ident)
    args = argparse.Namespace(port="/dev/ttyUSB0", device_id="sl-1", zone="centre", location="52.37,4.89",
                              board=None, registry=reg_dir, gateway=None, token_file=None, force=False,
                              take_over=False, discard_unsent=False, skip_firmware_check=False)
    with pytest.raises(FieldError, match="nothing was registered.*re-run when the registry is free: civicedge "
                                         "provision --port /dev/ttyUSB0 --id sl-1") as said:
        provision_cmd._provision_stopped(args, True, failed.value)
    assert "--take-over" not in str(said.value)
