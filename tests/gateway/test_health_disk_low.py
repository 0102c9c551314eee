"""Free space below `[storage] min_free_mb` is a health problem of its own, the warning `disk_low` (its
subject the store's directory), before it becomes the critical `disk_critical` below an eighth of it, so
monitoring opens a ticket while there is still time and pages when commits are minutes from failing.

Was: between min_free_mb / 8 and min_free_mb the gateway only logged a WARNING; /healthz said ok and
systemd's STATUS= said running, so a monitor saw nothing until disk_critical."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import make_env
from gateway.config import load_config
from gateway.health import CRITICAL, WARNING, as_json
from gateway.notify_status import status_text
from gateway.service import Gateway
from gateway.storage.disk_space import CRITICAL_SHARE, MIB, DiskSpace, free_bytes


def _config(tmp_path: Path, min_free_mb: int) -> Path:
    cfg = make_env(tmp_path)
    cfg.write_text(cfg.read_text().replace("batch_ms = 20\n", "batch_ms = 20\nmin_free_mb = %d\n" % min_free_mb))
    return cfg


@pytest.mark.timeout(60)
async def test_below_min_free_mb_is_the_warning_disk_low_naming_the_store_directory(tmp_path: Path) -> None:
    free = free_bytes(tmp_path / "data" / "reports.sqlite")
    assert free is not None and free > 64 * MIB, "this test needs a disk with some room: %s" % free
    # Twice what is free: below min_free_mb, four times above its eighth (room for other writers meanwhile).
    gw = Gateway(load_config(_config(tmp_path, math.ceil(2 * free / MIB))))
    await gw.start()
    try:
        [problem] = [p for p in gw.health() if p.code.startswith("disk_")]
        assert (problem.code, problem.severity, problem.subject) == ("disk_low", WARNING, str(tmp_path / "data"))
        assert problem.startswith("report store disk low: ") and "below [storage] min_free_mb" in problem
        assert as_json(problem)["subject"] == str(tmp_path / "data")
        assert status_text("gw-test", "running", gw.health()) == (
            "gateway gw-test degraded (warning): disk_low %s" % (tmp_path / "data"))
    finally:
        await gw.stop()


@pytest.mark.timeout(60)
async def test_below_an_eighth_of_it_is_disk_critical_alone_with_the_same_subject(tmp_path: Path) -> None:
    """Was: disk_critical had no subject, so a monitor keyed on it lost the directory disk_low named."""
    gw = Gateway(load_config(_config(tmp_path, 10_000_000)))  # 10 TB: far more than an eighth is free
    await gw.start()
    try:
        assert [(p.code, p.severity, p.subject) for p in gw.health()] == [
            ("disk_critical", CRITICAL, str(tmp_path / "data"))]
    finally:
        await gw.stop()


def test_the_subject_is_the_directory_whose_free_space_is_measured(tmp_path: Path) -> None:
    """Was: disk_low named the store's directory as given (abspath) while free space is measured where its
    symlinks lead: a data directory linked to another disk named the link, not the disk that is full."""
    real = tmp_path / "disk" / "civicedge"
    real.mkdir(parents=True)
    (tmp_path / "data").symlink_to(real)
    store = tmp_path / "data" / "reports.sqlite"
    for free in (256 * MIB - 1, 0):  # disk_low, disk_critical
        problem = DiskSpace(store, free, 256).problem
        assert problem is not None and problem.subject == str(real), (free, problem)


def test_the_thresholds_are_min_free_mb_and_its_eighth(tmp_path: Path) -> None:
    store = tmp_path / "data" / "reports.sqlite"
    limit = 256 * MIB
    cases = [(limit, None), (limit - 1, "disk_low"), (limit // CRITICAL_SHARE, "disk_low"),
             (limit // CRITICAL_SHARE - 1, "disk_critical"), (0, "disk_critical")]
    for free, code in cases:
        problem = DiskSpace(store, free, 256).problem
        assert (problem.code if problem is not None else None) == code, free
    assert DiskSpace(store, 0, 0).problem is None  # min_free_mb = 0: off
    assert DiskSpace(store, None, 256).problem is None  # free space unreadable: said by the metric (NaN)
