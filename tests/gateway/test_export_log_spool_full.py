"""export-log's spool on a full file system, for real: a small tmpfs mounted as TMPDIR in a private mount namespace
(root and `unshare -m` needed; skipped otherwise). The export ends in `error (write_failed)` with the advice and no
traceback, wherever the spool's write fails; `export-log > FILE` does not spool at all (review MEDIUM 1 and 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.storage import ReportRecord, ReportStore
from gateway.storage.provenance import verify_export_summary

REPO = Path(__file__).resolve().parents[2]
PAGE = 4096
TMPFS_PAGES = 256  # 1 MiB


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount(), reason="needs root and unshare -m to mount a small tmpfs")


def _store(tmp_path: Path, rows: int) -> Path:
    db = tmp_path / "data" / "reports.sqlite"
    db.parent.mkdir()
    now = int(time.time()) // 3600 * 3600
    store = ReportStore(db, gateway_id="gw-test")
    try:
        for start in range(1, rows + 1, 500):
            store.insert_batch([
                ReportRecord(device="bin-1", seq=s, kind="bin", zone="north", type="win", w=now - 900 * (100000 - s),
                             l=900, m={"fill": 50 + s % 40}, e={}, a=[], fw="1.0", received_at=float(now),
                             link="serial:x", digest="%064x" % (s * 7919))
                for s in range(start, min(rows + 1, start + 500))])
    finally:
        store.close()
    return db


def _export_with_tmpdir_free(tmp_path: Path, db: Path, free: int, redirect: Path | None = None
                             ) -> subprocess.CompletedProcess[bytes]:
    """Run export-log with TMPDIR a 1 MiB tmpfs of which ``free`` bytes (a multiple of a page) are left; stdout a
    pipe, or ``redirect`` (a regular file outside the tmpfs)."""
    mnt = tmp_path / "tmpdir"
    mnt.mkdir(exist_ok=True)
    filler_pages = TMPFS_PAGES - free // PAGE
    out = " > %s" % redirect if redirect is not None else ""
    script = ('set -e; mount -t tmpfs -o size=%d tmpfs "%s"; '
              'dd if=/dev/zero of="%s/filler" bs=%d count=%d status=none; '
              'TMPDIR="%s" "%s" -m hil.cli.main gateway export-log --db "%s"%s'
              % (TMPFS_PAGES * PAGE, mnt, mnt, PAGE, filler_pages, mnt, sys.executable, db, out))
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, cwd=REPO, timeout=120)


def _export_size(tmp_path: Path, db: Path) -> int:
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "export-log", "--db", str(db)],
                          capture_output=True, cwd=REPO, timeout=120, check=True)
    return len(proc.stdout)


def test_a_spool_that_fills_its_file_system_is_a_clear_error(tmp_path: Path) -> None:
    db = _store(tmp_path, 3000)  # ~850 kB: the size the reviewer's repro hit both failures with
    size = _export_size(tmp_path, db)
    assert size % PAGE and size < TMPFS_PAGES * PAGE
    # Room for a few pages (the failure mid-export) and for all but the last page (the failure when the
    # spool's last buffered write is flushed before the copy).
    for free in (2 * PAGE, size // PAGE * PAGE, size // PAGE * PAGE - PAGE, size // PAGE * PAGE - 2 * PAGE):
        proc = _export_with_tmpdir_free(tmp_path, db, free)
        err = proc.stderr.decode()
        assert proc.returncode == 1, (free, err)
        assert "Traceback" not in err, (free, err)
        assert "error (write_failed): cannot write the export to a temporary file in %s" % (tmp_path / "tmpdir") in err
        assert "set TMPDIR to a directory with room, or give -o FILE" in err
        assert "No space left on device" in err
        assert proc.stdout == b""  # nothing half-copied


def test_export_redirected_to_a_file_needs_no_spool(tmp_path: Path) -> None:
    db = _store(tmp_path, 500)
    target = tmp_path / "export.jsonl"
    proc = _export_with_tmpdir_free(tmp_path, db, 0, redirect=target)  # TMPDIR full: a spool would fail
    assert proc.returncode == 0, proc.stderr.decode()
    with target.open(encoding="utf-8") as fh:
        summary = verify_export_summary(fh)
    assert summary.count == 500
    assert ("exported 500 entries, head %s" % summary.head) in proc.stderr.decode()
