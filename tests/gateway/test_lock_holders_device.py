"""/proc/locks entries are matched to a lock file by device (major:minor, hex) and inode, not by inode alone, which
every other file system reuses (review LOW 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.storage import lock_holders


def test_proc_locks_lines_are_matched_by_device_and_inode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = lock_holders.parse_flock("7: FLOCK  ADVISORY  READ 4321 fd:1a:123456 0 EOF")
    assert parsed == lock_holders.Flock("4321", False, 123456, 0xFD, 0x1A)
    assert lock_holders.parse_flock("7: -> FLOCK  ADVISORY  WRITE 4321 fd:1a:123456 0 EOF") is None  # a waiter
    assert lock_holders.parse_flock("8: POSIX  ADVISORY  WRITE 4321 fd:1a:123456 0 EOF") is None
    assert lock_holders.parse_flock("9: FLOCK  ADVISORY  WRITE 4321 zz:1a:123456 0 EOF") is None
    lock = tmp_path / "reports.sqlite.lock"
    lock.write_text("")
    st = os.stat(lock)
    here = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    elsewhere = "%02x:%02x:%d" % (os.major(st.st_dev) + 1, os.minor(st.st_dev), st.st_ino)  # same inode, other disk
    lines = ["1: FLOCK  ADVISORY  WRITE 111 %s 0 EOF" % elsewhere, "2: FLOCK  ADVISORY  READ 222 %s 0 EOF" % here]
    monkeypatch.setattr(lock_holders, "flocks", lambda: [f for f in map(lock_holders.parse_flock, lines) if f])
    assert lock_holders.flock_pids(lock) == ["222"]
    assert lock_holders.flock_pids(lock, write=True) == []
