"""The store's directory gone while the gateway runs: its metrics say they cannot be read, and /healthz's
``store_gone`` says where the file can be found.

On-call QA drill: after ``umount -l`` of the data directory's mount, ``civicedge_store_disk_free_bytes``
reported the free space of ``/`` (the empty mount point left behind), so ``CivicedgeDiskFreeUnknown``
could not fire, and ``civicedge_store_size_bytes`` said 0; after ``mv data data.old`` the hint was
``find <data dir> -xdev -inum N``, a ``find`` that fails because that directory no longer exists.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.service import Gateway

pytestmark = pytest.mark.timeout(60)


def _nan(value: float) -> bool:
    return math.isnan(value)


async def test_a_moved_data_directory_makes_size_and_free_space_nan(tmp_path: Path) -> None:
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        assert gw.metrics.value("civicedge_store_size_bytes") > 0
        assert gw.metrics.value("civicedge_store_disk_free_bytes") > 0
        (tmp_path / "data").rename(tmp_path / "data.old")
        assert _nan(gw.metrics.value("civicedge_store_size_bytes"))
        assert _nan(gw.metrics.value("civicedge_store_disk_free_bytes"))
        # what `umount -l` leaves: an empty directory where the store's file system was mounted
        (tmp_path / "data").mkdir()
        assert _nan(gw.metrics.value("civicedge_store_size_bytes"))
        assert _nan(gw.metrics.value("civicedge_store_disk_free_bytes"))
        # and no disk_low/disk_critical from the free space of whatever file system is there now
        assert not [p for p in gw._health() if p.code.startswith("disk_")]
    finally:
        await gw.stop()


async def test_the_store_gone_hint_for_a_moved_directory_moves_that_directory_back(tmp_path: Path) -> None:
    """The open descriptor says where the file is now (readlink of /proc/self/fd/N): the hint names it and
    the ``mv`` of the directory that moved, not a ``find``."""
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        (tmp_path / "data").rename(tmp_path / "data.old")
        [gone] = [p for p in gw._health() if p.code == "store_gone"]
        moved = tmp_path / "data.old" / "reports.sqlite"
        assert "the file it writes is now %s, as its open descriptor says" % moved in str(gone), str(gone)
        assert "to put its directory back, stop the gateway; if %s exists" % (tmp_path / "data") in str(gone), str(gone)
        assert "then mv -T -n %s %s," % (tmp_path / "data.old", tmp_path / "data") \
            in str(gone), str(gone)
        assert "-inum" not in str(gone) and "no longer mounted" not in str(gone)
    finally:
        await gw.stop()


async def test_without_proc_the_hint_searches_from_a_directory_that_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``/proc`` (its descriptors cannot be listed: not Linux, or /proc not mounted) the hint is a
    ``find`` guessed from device numbers, as docs/gateway.md says; it gave no hint at all (review M4)."""
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        (tmp_path / "data").rename(tmp_path / "data.old")
        real_listdir = os.listdir

        def no_proc(path: str | os.PathLike[str] = ".") -> list[str]:
            if str(path).startswith("/proc"):
                raise FileNotFoundError(2, "No such file or directory", str(path))
            return real_listdir(path)

        monkeypatch.setattr(os, "listdir", no_proc)
        [gone] = [p for p in gw._health() if p.code == "store_gone"]
        monkeypatch.undo()
        moved = tmp_path / "data.old" / "reports.sqlite"
        assert "was moved or deleted" in str(gone), str(gone)
        assert "its directory %s is gone too" % (tmp_path / "data") in str(gone), str(gone)
        hint = str(gone).split("find it with find ", 1)[1]
        root, rest = hint.split(" -xdev -inum ", 1)
        assert int(rest.split()[0]) == moved.stat().st_ino
        assert os.path.isdir(root) and moved.is_relative_to(root), root
        assert os.stat(root).st_dev == moved.stat().st_dev
    finally:
        await gw.stop()


async def test_without_the_descriptors_name_the_hint_searches_from_a_directory_that_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /proc/self/fd gives no name (readlink fails), the hint is a ``find``."""
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        (tmp_path / "data").rename(tmp_path / "data.old")
        real_readlink = os.readlink

        def no_fd_names(path: str | os.PathLike[str], **kw: object) -> str:
            if str(path).startswith("/proc/self/fd/"):
                raise OSError(95, "not here")
            return real_readlink(path)

        monkeypatch.setattr(os, "readlink", no_fd_names)
        [gone] = [p for p in gw._health() if p.code == "store_gone"]
        monkeypatch.undo()
        moved = tmp_path / "data.old" / "reports.sqlite"
        assert "no longer mounted" not in str(gone), str(gone)
        assert "its directory %s is gone too" % (tmp_path / "data") in str(gone), str(gone)
        hint = str(gone).split("find it with find ", 1)[1]
        root, rest = hint.split(" -xdev -inum ", 1)
        assert int(rest.split()[0]) == moved.stat().st_ino
        assert os.path.isdir(root) and moved.is_relative_to(root), root
    finally:
        await gw.stop()


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A small tmpfs mounted at tmp_path/data (skips where this process may not mount)."""
    where = tmp_path / "data"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


async def test_a_lazily_unmounted_data_directory_is_nan_and_named_as_unmounted(tmp_path: Path, tmpfs: Path) -> None:
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        assert 0 < gw.metrics.value("civicedge_store_disk_free_bytes") <= 8 * 1024 * 1024
        subprocess.run(["umount", "-l", str(tmpfs)], check=True)
        assert _nan(gw.metrics.value("civicedge_store_disk_free_bytes"))
        assert _nan(gw.metrics.value("civicedge_store_size_bytes"))
        [gone] = [p for p in gw._health() if p.code == "store_gone"]
        assert "-inum" not in str(gone) and "no longer mounted" in str(gone), str(gone)
        assert "findmnt" in str(gone) and str(tmpfs) in str(gone)
    finally:
        await gw.stop()
