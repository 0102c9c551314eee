"""While a one-shot read holds the store's .lock shared (export-log, routes plan), a gateway start, a restore and
a backup no longer quote the stale pid the lock file's last writer left ('in use by another gateway ... (pid N)',
'running gateway (pid unknown)'): the readers are named by pid and command line from /proc/locks, and a backup
shares their hold."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_env

from gateway.errors import StorageError
from gateway.storage import ReportRecord, ReportStore
from hil.cli.main import main

_STALE = "4000000"  # no such process: the pid text a gateway long gone left in the lock file
_READER = ("import sys, time\n"
           "from gateway.storage.sqlite_uri import ReadHold\n"
           "hold = ReadHold(sys.argv[1], hold_live=True)\n"  # as where the directory is not writable
           "print(hold.granted, flush=True)\n"
           "time.sleep(60)\n")


def _store(tmp_path: Path) -> tuple[Path, Path]:
    cfg = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    now = time.time()
    store.insert_batch([ReportRecord(device="bin-1", seq=s, kind="bin", zone="north", type="win",
                                     w=int(now) - 3600 * (30 - s), l=900, m={"fill": 95}, e={}, a=[], fw="1.0",
                                     received_at=float(now), link="serial:x", digest="%064x" % s)
                        for s in range(1, 6)])
    store.close()
    return cfg, db


def test_readers_are_named_not_a_stale_pid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, db = _store(tmp_path)
    assert main(["gateway", "backup", str(tmp_path / "bk"), "--config", str(cfg)]) == 0
    (tmp_path / "data" / "reports.sqlite.lock").write_text(_STALE + "\n")
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(db), "civicedge", "gateway", "export-log"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "True"
        with pytest.raises(StorageError) as err:
            ReportStore(db, gateway_id="gw-test")
        said = str(err.value)
        assert err.value.reason == "in_use"
        assert "is being read by another civicedge command (pid %d: " % reader.pid in said
        assert "export-log" in said and "start again when it ends" in said and _STALE not in said
        capsys.readouterr()
        assert main(["gateway", "restore", str(tmp_path / "bk"), "--config", str(cfg)]) != 0
        err_text = capsys.readouterr().err
        assert "error (in_use)" in err_text and "being read by another civicedge command (pid %d: " % reader.pid in err_text
        assert "restore again when it ends; nothing was changed" in err_text
        assert "pid unknown" not in err_text and "running gateway" not in err_text
        # a backup shares the readers' hold: a stopped store, not 'gateway running, pid <stale>'
        assert main(["gateway", "backup", str(tmp_path / "bk2"), "--config", str(cfg)]) == 0
        out = capsys.readouterr()
        assert "gateway running" not in out.out + out.err and _STALE not in out.out + out.err
        assert '"gateway_running_pid": null' in (tmp_path / "bk2" / "MANIFEST.json").read_text()
    finally:
        reader.kill()
        reader.wait()
    # the reader gone: the gateway starts, the restore goes ahead
    ReportStore(db, gateway_id="gw-test").close()
    assert main(["gateway", "restore", str(tmp_path / "bk"), "--config", str(cfg)]) == 0
