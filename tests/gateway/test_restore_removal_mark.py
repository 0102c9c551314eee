"""Restore and a removal's temporary mark (``retired`` = 2, fifth review L3): a mark in the backup is restored as
not retired (unless the live device is retired for good), and a live mark is not carried over as a retire."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import retired_column
from gateway.cli.restore_registry import carry_over, read_current
from gateway.registry import Registry
from gateway.registry import removal
from gateway.registry.records import RETIRED


def _backup(live: Registry, tmp_path: Path) -> Path:
    """A copy of the live registry as it is now (its database and key files)."""
    dest = tmp_path / "backup-registry"
    shutil.copytree(live.path, dest)
    return dest


def _carry(backup: Path, live: Registry) -> tuple[Registry, list[str], list[str]]:
    current, why = read_current(live.path)
    assert current is not None, why
    restored = Registry(backup, create=False)
    carried, warnings = carry_over(restored, current)
    return restored, carried, warnings


def test_a_backup_taken_during_a_removals_wait_restores_the_device_not_retired(
        registry: Registry, tmp_path: Path) -> None:
    """Before, the live row (put back, its updated_at back to before the mark) looked older than the backup's:
    the backup's mark was kept with a warning, and the restored gateway refused the device's frames."""
    mark = removal.mark_removing(registry.path, registry._conn, "bin-2")
    backup = _backup(registry, tmp_path)
    removal.put_back(registry.path, registry._conn, "bin-2", mark, why="test")
    restored, carried, warnings = _carry(backup, registry)
    try:
        assert retired_column(restored.path, "bin-2") == 0 and not restored.get("bin-2").retired
        assert "device bin-2: retired for a removal in the backup (a removal's temporary mark): restored as not " \
            "retired" in carried
        assert not [w for w in warnings if "bin-2" in w], warnings
    finally:
        restored.close()


def test_a_live_removal_mark_is_not_carried_over_as_a_retire(registry: Registry, tmp_path: Path) -> None:
    """Before, a cut-off removal's mark became a retire for good (1) in the restored registry."""
    backup = _backup(registry, tmp_path)
    removal.mark_removing(registry.path, registry._conn, "bin-2")
    restored, carried, warnings = _carry(backup, registry)
    try:
        assert retired_column(restored.path, "bin-2") == 0
        assert not [c for c in carried if "bin-2" in c] and not [w for w in warnings if "bin-2" in w]
    finally:
        restored.close()


def test_a_backup_mark_with_the_live_device_retired_for_good_restores_it_retired(
        registry: Registry, tmp_path: Path) -> None:
    removal.mark_removing(registry.path, registry._conn, "bin-2")
    backup = _backup(registry, tmp_path)
    registry.retire("bin-2")  # the operator's retire during the wait: 1, for good
    restored, carried, _ = _carry(backup, registry)
    try:
        assert retired_column(restored.path, "bin-2") == RETIRED
        assert "device bin-2: retired for a removal in the backup, retired now: kept retired" in carried
    finally:
        restored.close()


def test_a_device_only_in_the_backup_with_a_removal_mark_is_restored_not_retired(
        registry: Registry, tmp_path: Path) -> None:
    removal.mark_removing(registry.path, registry._conn, "bin-1")
    backup = _backup(registry, tmp_path)
    registry.remove("bin-1", traces=lambda device: [])  # the removal ended after the backup
    restored, _, warnings = _carry(backup, registry)
    try:
        assert retired_column(restored.path, "bin-1") == 0
        assert [w for w in warnings if w.startswith("device bin-1 is in the backup but not in the current registry: "
                                                    "restored from the backup, not retired")], warnings
    finally:
        restored.close()
