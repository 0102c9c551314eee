"""A data directory on a read-only mount is named as such, not as a permission problem.

City IT QA: with ``data_dir`` on ``mount -o ro -t tmpfs``, ``run --check`` (as root) said "... is not
writable by this user", sending the operator to chmod/chown. access(W_OK) fails there with EROFS for
everyone; statvfs's ST_RDONLY says why. The mount is emulated (no test needs mount): access() answers
as on it, statvfs reports the flag.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import path_checks
from hil.cli.main import main


def read_only_mount(monkeypatch: pytest.MonkeyPatch, mount: Path, *, flagged: bool = True) -> None:
    """Everything under ``mount`` answers access(W_OK) False; statvfs says ST_RDONLY when ``flagged``."""
    real_access, real_statvfs = os.access, os.statvfs

    def inside(p: "str | os.PathLike[str]") -> bool:
        return Path(p) == mount or mount in Path(p).parents

    def access(p: "str | os.PathLike[str]", mode: int, **kw: object) -> bool:
        return real_access(p, mode) and not (inside(p) and mode & os.W_OK)

    def statvfs(p: "str | os.PathLike[str]") -> os.statvfs_result:
        st = real_statvfs(p)
        if not (flagged and inside(p)):
            return st
        fields = list(st)
        fields[8] = st.f_flag | os.ST_RDONLY  # f_flag
        return os.statvfs_result(fields)

    monkeypatch.setattr(path_checks.os, "access", access)
    monkeypatch.setattr(path_checks.os, "statvfs", statvfs)


@pytest.mark.parametrize(("data_dir", "said"), [
    ("ro", "gateway.data_dir: {ro} is on a read-only file system"),
    ("ro/sub/data", "gateway.data_dir: {ro}/sub/data cannot be created ({ro} is on a read-only file system)"),
])
def test_a_data_directory_on_a_read_only_mount_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: str,
                                                       said: str, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw1"\ndata_dir = "%s"\n[http]\nenabled = false\n' % data_dir)
    read_only_mount(monkeypatch, ro)
    assert main(["gateway", "run", "--check", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error (bad_path) [gateway.data_dir]" in err and said.format(ro=ro) in err, err
    assert "not writable by this user" not in err


def test_a_permission_problem_is_still_named_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw1"\ndata_dir = "data"\n[http]\nenabled = false\n')
    read_only_mount(monkeypatch, data, flagged=False)  # access() refuses, the file system is writable
    assert main(["gateway", "run", "--check", "-c", str(cfg)]) == 1
    assert "gateway.data_dir: %s is not writable by this user" % data in capsys.readouterr().err
