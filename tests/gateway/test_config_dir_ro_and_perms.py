"""A data directory both on a read-only mount and without r/x for this user is reported with both problems
(review L6): remounting read-write alone would still leave the gateway unable to use it. access() and statvfs
are emulated, as in test_config_read_only_fs.py (root passes every mode check)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import path_checks
from hil.cli.main import main


def _emulate(monkeypatch: pytest.MonkeyPatch, place: Path, *, read_only: bool, denied: int) -> None:
    real_access, real_statvfs = os.access, os.statvfs

    def inside(p: "str | os.PathLike[str]") -> bool:
        return Path(p) == place or place in Path(p).parents

    def access(p: "str | os.PathLike[str]", mode: int, **kw: object) -> bool:
        if Path(p) == place and mode & denied:
            return False
        return real_access(p, mode) and not (read_only and inside(p) and mode & os.W_OK)

    def statvfs(p: "str | os.PathLike[str]") -> os.statvfs_result:
        st = real_statvfs(p)
        if not (read_only and inside(p)):
            return st
        fields = list(st)
        fields[8] = st.f_flag | os.ST_RDONLY
        return os.statvfs_result(fields)

    monkeypatch.setattr(path_checks.os, "access", access)
    monkeypatch.setattr(path_checks.os, "statvfs", statvfs)


@pytest.mark.parametrize(("read_only", "denied", "said"), [
    (True, os.R_OK | os.X_OK, "{d} is on a read-only file system, and is not readable or searchable (x) by this "
                              "user either"),
    (True, os.X_OK, "{d} is on a read-only file system, and is not searchable (x) by this user either"),
    (True, 0, "{d} is on a read-only file system"),
    (False, os.R_OK | os.X_OK, "{d} is not readable or searchable (x) by this user"),
    (False, os.W_OK | os.X_OK, "{d} is not writable or searchable (x) by this user"),
    (False, os.W_OK, "{d} is not writable by this user"),
])
def test_every_problem_of_the_data_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], read_only: bool,
                                                      denied: int, said: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw1"\ndata_dir = "data"\n[http]\nenabled = false\n')
    _emulate(monkeypatch, data, read_only=read_only, denied=denied)
    assert main(["gateway", "run", "--check", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error (bad_path) [gateway.data_dir]" in err and "gateway.data_dir: " + said.format(d=data) in err, err
