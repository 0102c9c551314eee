"""`gateway backup` copies the device registry and the key files as of one moment: a key rotation racing
the copy lands wholly before it or wholly after it, never as a copied row of one key version with the key
file of another.

Was: the registry was copied in one read transaction, and its key files after that transaction had ended;
a rotation in between left a backup whose row said key version 1 beside the key file of version 2 (the
restored gateway would verify the board with a key the row does not record, or the reverse)."""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import KEYS, make_env

from gateway.cli import backup_cmd
from gateway.cli.common import config_from
from gateway.registry import Registry
from gateway.storage import ReportStore

DEVICE = "bin-1"


def _backup_pair(backup: Path, key_name: str) -> tuple[int, bytes]:
    conn = sqlite3.connect((backup / "devices.sqlite").as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        [(version,)] = conn.execute("SELECT key_version FROM devices WHERE id = ?", (DEVICE,)).fetchall()
    finally:
        conn.close()
    return int(version), bytes.fromhex((backup / "keys" / key_name).read_text().strip())


def test_a_rotation_during_the_key_copy_waits_for_the_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_env(tmp_path)  # bin-1, bin-2, sl-1 with their KEYS
    ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test").close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "data"\n[http]\nenabled = false\n')
    registry_dir = tmp_path / "data" / "registry"
    live = Registry(registry_dir)
    before = live.get(DEVICE).key_version
    key_name = live.key_path(DEVICE).name
    rotated: list[object] = []

    def rotate() -> None:  # another process's `devices rotate-key`: its own connection
        other = Registry(registry_dir)
        try:
            rotated.append(other.rotate_key(DEVICE))
        except Exception as exc:  # noqa: BLE001 - looked at below
            rotated.append(exc)
        finally:
            other.close()

    rotation = threading.Thread(target=rotate)
    real_read = backup_cmd._read_key

    def read_racing_a_rotation(path: Path) -> bytes:
        # The hook: at the first key file read (the registry's rows are read by then), a rotation
        # starts; it is given a second, ample for one rotation, before the read goes on.
        if not rotation.is_alive() and not rotated:
            rotation.start()
            rotation.join(1.0)
        return real_read(path)

    monkeypatch.setattr(backup_cmd, "_read_key", read_racing_a_rotation)
    config = config_from(argparse.Namespace(config=cfg), read_only=True)
    backup_cmd.make_backup(config, tmp_path / "b")
    rotation.join(10)
    assert not rotation.is_alive() and len(rotated) == 1 and isinstance(rotated[0], Path), rotated  # it went on
    after = live.get(DEVICE).key_version
    assert after == before + 1
    pair = _backup_pair(tmp_path / "b", key_name)
    # The backup is of one moment: the old row with the old key, or the new row with the new key.
    assert pair in {(before, KEYS[DEVICE]), (after, live.key(DEVICE))}, (pair, before, after)
    assert pair == (before, KEYS[DEVICE])  # the rotation waited for the backup (it held the registry's lock)
    live.close()


def test_nothing_is_written_to_the_backup_while_the_registry_is_locked(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: the read transaction lasted through the integrity check and every key file's write and fsync on
    the backup's disk (seconds on a slow USB or network disk for many keys), so a key change waited and failed
    after the registry's 5 s busy timeout, and the running gateway's registry lookups queued behind it."""
    make_env(tmp_path)
    ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test").close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "data"\n[http]\nenabled = false\n')
    registry_dir = tmp_path / "data" / "registry"
    live = Registry(registry_dir)
    for i in range(40):  # many keys: one write and fsync each on the backup's disk
        live.add("bin-x%d" % i, kind="bin", zone="north", lat="52.37", lon="4.89", key=hashlib.sha256(b"key %d" % i).digest())
    before = live.get(DEVICE).key_version
    locked_during: list[str] = []
    rotated: list[object] = []

    def registry_locked() -> bool:  # a writer's own attempt, not waiting: does the backup hold the registry?
        probe = sqlite3.connect(registry_dir / "devices.sqlite", timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN EXCLUSIVE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc), exc
            return True
        finally:
            probe.close()

    def rotate() -> None:  # `devices rotate-key` from another process, with the registry's 5 s busy timeout
        other = Registry(registry_dir)
        try:
            rotated.append(other.rotate_key(DEVICE))
        except Exception as exc:  # noqa: BLE001 - looked at below
            rotated.append(exc)
        finally:
            other.close()

    class SlowCreated(backup_cmd._created):
        """Every file written into the backup: the registry's lock is looked at, then the write is slow."""

        def __enter__(self) -> Any:
            if registry_locked():
                locked_during.append(str(self.path))
            if self.path.parent.name == "keys" and not rotated:
                # A rotation starts while the key files are written; it must be done well within 5 s.
                rotation = threading.Thread(target=rotate)
                rotation.start()
                rotation.join(2.0)
                assert not rotation.is_alive(), "the rotation waited for the backup's writes"
            else:
                time.sleep(0.01)  # a slow backup disk
            return super().__enter__()

    real_backup = backup_cmd._backup

    def database_copy(src: sqlite3.Connection, dst_path: Path, **kw: Any) -> None:
        if registry_locked():
            locked_during.append(str(dst_path))
        real_backup(src, dst_path, **kw)

    monkeypatch.setattr(backup_cmd, "_created", SlowCreated)
    monkeypatch.setattr(backup_cmd, "_backup", database_copy)
    result = backup_cmd.make_backup(config_from(argparse.Namespace(config=cfg), read_only=True), tmp_path / "b")
    assert locked_during == []
    assert len(rotated) == 1 and isinstance(rotated[0], Path), rotated
    assert live.get(DEVICE).key_version == before + 1
    assert sum(1 for c in result.files if c.what == "device key") == 43
    # Read before the rotation: the old row with the old key (the rotation came after the registry was read).
    assert _backup_pair(tmp_path / "b", live.key_path(DEVICE).name) == (before, KEYS[DEVICE])
    live.close()
