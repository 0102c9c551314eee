"""Opening an older (pre-0.2.0) registry from two processes at once, and instances opened before another
process upgraded it: the column upgrade runs once under the write lock, the other process finds it done;
a lock held past the busy timeout is ``storage`` (retry), not ``permissions``; an instance opened before
the upgrade sees the retirements made after it."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Empty

import pytest
from test_cli_devices_retire import KEY_A, columns, old_registry

from gateway.errors import RegistryError
from gateway.registry import Registry

CTX = mp.get_context("fork")


def _open(path: str, barrier: Barrier, out: "mp.Queue[str]") -> None:
    barrier.wait()
    try:
        Registry(Path(path)).close()
        out.put("ok")
    except RegistryError as exc:
        out.put("%s: %s" % (exc.reason, exc))


def _open_together(path: Path, hold_lock_s: float = 0.0) -> list[str]:
    """Open ``path`` with create from two processes released by one barrier; with ``hold_lock_s`` the
    test holds the write lock that long after the release, so both have read the old columns and wait
    for it before either can add one (the interleaving that failed)."""
    barrier = CTX.Barrier(3 if hold_lock_s else 2)
    out: "mp.Queue[str]" = CTX.Queue()
    procs = [CTX.Process(target=_open, args=(str(path), barrier, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    # Opened after the fork: a child must not inherit SQLite's in-process lock state of this connection.
    lock = sqlite3.connect(path / "devices.sqlite", isolation_level=None) if hold_lock_s else None
    try:
        if lock is not None:
            lock.execute("BEGIN IMMEDIATE")
            barrier.wait()
            time.sleep(hold_lock_s)
            lock.execute("ROLLBACK")
        results = []
        for _ in procs:
            try:
                results.append(out.get(timeout=30))
            except Empty:
                results.append("no answer")
    finally:
        if lock is not None:
            lock.close()
        for proc in procs:
            proc.join(30)
    return results


def test_two_processes_upgrading_an_older_registry_at_once_both_open_it(tmp_path: Path) -> None:
    # Before: the second one's ALTER TABLE failed "duplicate column name", told as reason permissions.
    path = old_registry(tmp_path / "registry")
    assert _open_together(path, hold_lock_s=1.0) == ["ok", "ok"]
    assert "retired" in columns(path)
    reg = Registry(path, create=False)
    assert [(r.id, r.revoked, r.retired) for r in reg.list()] == [("b1", False, False), ("b2", True, False)]
    assert reg.key("b1") == KEY_A


def test_repeated_unsynchronised_opens_of_older_registries_all_succeed(tmp_path: Path) -> None:
    # The reviewer's race_upgrade.py: about one run in two failed before.
    for run in range(12):
        path = old_registry(tmp_path / str(run))
        assert _open_together(path) == ["ok", "ok"], run


def test_a_lock_held_past_the_busy_timeout_is_storage_and_changes_nothing(tmp_path: Path) -> None:
    path = old_registry(tmp_path / "registry")
    lock = sqlite3.connect(path / "devices.sqlite", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(RegistryError) as caught:
            Registry(path)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert caught.value.reason == "storage"  # was: permissions
    assert "another process holds it; retry" in str(caught.value)
    assert "retired" not in columns(path)
    Registry(path).close()  # the lock gone, the upgrade runs
    assert "retired" in columns(path)


def test_an_instance_opened_before_another_process_upgraded_sees_its_retirements(tmp_path: Path) -> None:
    # Before: it kept its old column list, read b1 as not retired and refused reinstate as not_retired.
    path = old_registry(tmp_path / "registry")
    held = Registry(path, create=False)
    assert not held.get("b1").retired
    Registry(path).close()  # a 0.2.0 gateway's open upgrades it
    Registry(path, create=False).retire("b1")  # a devices retire in another process
    assert held.get("b1").retired
    assert [r.id for r in held.list() if r.retired] == ["b1"]
    assert not held.reinstate("b1").retired
    assert not Registry(path, create=False).get("b1").retired


def test_retire_through_an_instance_opened_before_the_upgrade_does_not_add_the_column_twice(
        tmp_path: Path) -> None:
    path = old_registry(tmp_path / "registry")
    held = Registry(path, create=False)
    Registry(path).close()
    assert held.retire("b1").retired
