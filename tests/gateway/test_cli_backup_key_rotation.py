"""`gateway backup` copies the device registry and the key files as of one moment: a key rotation racing
the copy lands wholly before it or wholly after it, never as a copied row of one key version with the key
file of another.

Was: the registry was copied in one read transaction, and its key files after that transaction had ended;
a rotation in between left a backup whose row said key version 1 beside the key file of version 2 (the
restored gateway would verify the board with a key the row does not record, or the reverse)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import KEYS, make_env

from gateway.cli import backup_cmd
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
    real_copy = backup_cmd._copy_file

    def copy_racing_a_rotation(src: Path, dst: Path) -> None:
        # The hook: at the first key file copied (the registry's rows are copied by then), a rotation
        # starts; it is given a second, ample for one rotation, before the copy goes on.
        if dst.parent.name == "keys" and not rotation.is_alive() and not rotated:
            rotation.start()
            rotation.join(1.0)
        real_copy(src, dst)

    monkeypatch.setattr(backup_cmd, "_copy_file", copy_racing_a_rotation)
    config = backup_cmd.config_from(backup_cmd.argparse.Namespace(config=cfg), read_only=True)
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
