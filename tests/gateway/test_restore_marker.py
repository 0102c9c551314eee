"""A restore cut off in its swap (SIGKILL, power cut) leaves ``<data_dir>/restore-in-progress``: ``run``,
``run --check`` and ``backup`` refuse that directory (its files may be half old, half restored), naming the
backup and the folder of replaced files; without the marker they go on as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_backup import gateway_dir

from gateway.config import load_config
from gateway.errors import StorageError
from gateway.service import Gateway
from gateway.storage.restore_marker import MARKER, check_no_restore_marker
from hil.cli.main import main


def _cut_off_restore(data: Path) -> Path:
    marker = data / MARKER
    marker.write_text(json.dumps({"backup": "/backups/gw/20261206", "aside": str(data / "replaced-20261206T2300Z"),
                                  "pid": "999999999", "started": "2026-12-06T23:00:00Z"}))
    return marker


def test_run_check_and_backup_refuse_a_cut_off_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_dir(tmp_path)
    marker = _cut_off_restore(tmp_path / "data")
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) != 0
    err = capsys.readouterr().err
    assert "restore_in_progress" in err and str(marker) in err and "cut off" in err, err
    assert "civicedge gateway restore /backups/gw/20261206" in err and "replaced-20261206T2300Z" in err, err
    assert main(["gateway", "backup", "--config", str(cfg), str(tmp_path / "bk")]) != 0
    assert "restore_in_progress" in capsys.readouterr().err
    assert not (tmp_path / "bk").exists()
    marker.unlink()  # the operator finished it by hand
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0


def test_the_gateway_does_not_start_on_a_cut_off_restore(tmp_path: Path) -> None:
    cfg = gateway_dir(tmp_path)
    _cut_off_restore(tmp_path / "data")
    with pytest.raises(StorageError) as err:
        Gateway(load_config(cfg))
    assert err.value.reason == "restore_in_progress"
    assert not (tmp_path / "data" / "reports.sqlite-wal").exists()  # the store was not opened


def test_a_running_restore_is_waited_for_not_called_cut_off(tmp_path: Path) -> None:
    import os

    (tmp_path / MARKER).write_text(json.dumps({"pid": str(os.getpid())}))
    with pytest.raises(StorageError, match="is swapping files here: wait for it to finish"):
        check_no_restore_marker(tmp_path)
    (tmp_path / MARKER).write_text("not json")
    with pytest.raises(StorageError, match="cut off"):
        check_no_restore_marker(tmp_path)
    (tmp_path / MARKER).unlink()
    check_no_restore_marker(tmp_path)
