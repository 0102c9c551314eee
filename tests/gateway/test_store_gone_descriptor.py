"""What ``store_gone`` says comes from the store's open descriptor, not from a guess on its configured path.

Review findings: the hint for a store moved away compared the device number of its nearest directory with
the file's, and so said "the file system it is on is no longer mounted" for a file merely renamed on
overlayfs (whose directories and files report different devices; btrfs subvolumes do the same); and the
salvage copy of a deleted store went beside a ``[storage] path`` that is a symlink, not beside the file it
names (where its ``-wal`` and ``-shm`` are), so the recovery's ``mv`` replaced the link with the copy.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_gone import filled_store, seqs

from gateway.storage import ReportStore
from gateway.storage.store_files import NEW_STORE_ASIDE

@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Path]:
    """An overlayfs at tmp_path/m whose lower layer is a tmpfs, so its files report another device than its
    directories (skips where this process may not mount)."""
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "m"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    mounts = [["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(lower)],
              ["mount", "-t", "overlay", "overlay", "-o",
               "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work), str(merged)]]
    done: list[Path] = []
    for cmd in mounts:
        if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
            for where in reversed(done):
                subprocess.run(["umount", "-l", str(where)], capture_output=True)
            pytest.skip("cannot mount a tmpfs and an overlayfs here (needs root and mount permission)")
        done.append(Path(cmd[-1]))
    yield merged
    for where in reversed(done):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_store_moved_on_overlayfs_is_named_where_it_is_not_as_unmounted(overlay: Path) -> None:
    data = overlay / "data"
    data.mkdir()
    db = data / "reports.sqlite"
    with filled_store(db) as store:
        assert os.stat(db).st_dev != os.stat(overlay).st_dev  # what misled the guess
        data.rename(overlay / "data.old")
        problem = store.file_problem() or ""
        moved = overlay / "data.old" / "reports.sqlite"
        assert "was moved away" in problem and "no longer mounted" not in problem, problem
        assert "now %s, as its open descriptor says: nothing is lost" % moved in problem, problem
        assert "mv -T -n %s %s," % (overlay / "data.old", data) in problem, problem


def test_a_file_moved_aside_and_replaced_says_to_move_the_replacement_aside(tmp_path: Path) -> None:
    db = tmp_path / "reports.sqlite"
    with filled_store(db) as store:
        db.rename(tmp_path / "old.sqlite")
        db.write_bytes(b"")
        problem = store.file_problem() or ""
        assert "replaced by another file" in problem, problem
        assert "if %s exists %s, move it aside first; then mv -T -n %s %s" % (
            db, NEW_STORE_ASIDE, tmp_path / "old.sqlite", db) in problem, problem


def test_a_symlink_re_pointed_says_the_file_is_still_where_it_was(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    real = tmp_path / "a" / "reports.sqlite"
    link = tmp_path / "reports.sqlite"
    link.symlink_to(real)
    with filled_store(link) as store:
        link.unlink()
        problem = store.file_problem() or ""
        assert "the file it writes is still at %s, nothing is lost, but %s no longer leads to it" % (real, link) \
            in problem, problem


def test_a_deleted_store_behind_a_symlink_is_salvaged_beside_the_file_and_the_link_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    real = disk / "reports.sqlite"
    link = tmp_path / "etc" / "reports.sqlite"
    link.parent.mkdir()
    link.symlink_to(real)
    caplog.set_level(logging.INFO, logger="gateway")
    with filled_store(link, reports=10) as store:
        real.unlink()
        problem = store.check_file() or ""
        copy = disk / "reports.sqlite.salvaged"
        assert "to %s, beside %s, the file %s leads to (10 reports" % (copy, real, link) in problem, problem
        assert not list(link.parent.glob("*.salvaged*"))
        assert "(mv -T -n %s %s)" % (copy, real) in problem, problem
        assert "move aside anything left at %s %s, %s-wal and %s-shm" % (
            real, NEW_STORE_ASIDE, real, real) in problem, problem
        assert any(str(copy) in r.getMessage() and "leads to" in r.getMessage() for r in caplog.records)
    # the recovery as the message says it: the link still names the store, which holds every report
    for name in ("reports.sqlite-wal", "reports.sqlite-shm"):
        if (disk / name).exists():
            (disk / name).rename(disk / (name + ".aside"))
    subprocess.run(["mv", str(copy), str(real)], check=True)
    assert link.is_symlink()
    again = ReportStore(link, gateway_id="gw1")
    try:
        assert again.max_seqs() == {"b1": 10}
    finally:
        again.close()
    assert seqs(real) == list(range(1, 11))


def test_without_room_the_cp_commands_copy_beside_the_file_behind_a_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.storage import salvage

    monkeypatch.setattr(salvage, "free_bytes", lambda _path: 1_000)
    disk = tmp_path / "disk"
    disk.mkdir()
    real = disk / "reports.sqlite"
    link = tmp_path / "reports.sqlite"
    link.symlink_to(real)
    with filled_store(link) as store:
        real.unlink()
        problem = store.check_file() or ""
        targets = re.findall(r"/proc/\d+/fd/\d+ (\S+)", problem)
        assert targets and all(t.startswith(str(disk / "reports.sqlite.salvaged")) for t in targets), problem
        assert "move the copies into place as %s" % real in problem, problem
