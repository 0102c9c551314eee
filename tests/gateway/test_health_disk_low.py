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
from gateway.storage.disk_space import CLEAR_SHARE, CRITICAL_SHARE, MIB, DiskHealth, DiskSpace, free_bytes


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


def test_a_code_is_cleared_only_once_free_space_is_back_above_its_threshold_by_a_sixteenth(tmp_path: Path) -> None:
    """Was: free space hovering at min_free_mb (a log rotating, retention removing) flapped /healthz between
    200 and 503 and STATUS= between running and degraded at each look."""
    store = tmp_path / "data" / "reports.sqlite"
    low_at = 256 * MIB
    critical_at = low_at // CRITICAL_SHARE
    health = DiskHealth()

    def code(free: int) -> str | None:
        problem = health.problem(DiskSpace(store, free, 256))
        return None if problem is None else problem.code

    assert code(low_at) is None
    assert code(low_at - 1) == "disk_low"
    assert code(low_at + 1) == "disk_low"  # back above the threshold, not by the margin: held
    held = health.problem(DiskSpace(store, low_at + 1, 256))
    assert held is not None and held.subject == str(tmp_path / "data")
    assert "not yet back above 272.0 MiB ([storage] min_free_mb = 256 MiB, plus 1/16 of it)" in held
    assert code(low_at + low_at // CLEAR_SHARE - 1) == "disk_low"
    assert code(low_at + low_at // CLEAR_SHARE) is None  # 272 MiB: cleared
    assert code(low_at) is None  # a reading at the threshold again does not raise it
    assert code(low_at - 1) == "disk_low"  # below it does, at once

    assert code(critical_at - 1) == "disk_critical"
    assert code(critical_at + 1) == "disk_critical"  # held, though only disk_low by this reading
    assert code(critical_at + critical_at // CLEAR_SHARE - 1) == "disk_critical"
    assert code(critical_at + critical_at // CLEAR_SHARE) == "disk_low"  # lowered, still below min_free_mb
    assert code(critical_at) == "disk_low"  # above the critical threshold: not critical again
    assert code(critical_at - 1) == "disk_critical"
    assert code(10 * low_at) is None  # far above: cleared at once
    assert code(critical_at - 1) == "disk_critical"
    assert health.problem(DiskSpace(store, critical_at, 0)) is None  # min_free_mb = 0: off, nothing held
    assert code(low_at + 1) is None
