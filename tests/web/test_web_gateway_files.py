"""What a running gateway leaves on disk: one writer per store, private files, a checkpointed
database after a clean stop, and retention the config caps."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

import aiohttp
import pytest

from .support import pty_gateway_config
from gateway.errors import StorageError
from gateway.protocol.cobs import cobs_encode
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.service import Gateway
from gateway.storage.store import ReportRecord, ReportStore
from gateway.storage.store_files import store_writer
from gateway.web.errors import BadParameter
from gateway.web.retention import RetentionSettings
from gateway.resources import load_policy


def test_a_second_writer_on_the_same_store_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    db = tmp_path / "data" / "reports.sqlite"
    assert store_writer(db) is None
    first = ReportStore(db, gateway_id="gw-a")
    assert store_writer(db) == str(os.getpid())
    with pytest.raises(StorageError, match=r"in use by another gateway or a running civicedge gateway backup \(pid %d\)" % os.getpid()) as info:
        ReportStore(db, gateway_id="gw-b")
    assert info.value.reason == "in_use"
    first.close()
    assert store_writer(db) is None
    ReportStore(db, gateway_id="gw-b").close()  # released at close (and by the kernel on a crash)


def test_the_store_is_private_to_the_gateway_user(tmp_path: Path) -> None:
    db = tmp_path / "new-dir" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw")
    assert stat.S_IMODE(db.with_name("reports.sqlite-wal").stat().st_mode) == 0o600  # SQLite copies the db's mode
    store.close()
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    os.chmod(db, 0o644)  # a store from before this rule, or restored from a backup
    ReportStore(db, gateway_id="gw").close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


async def test_after_a_clean_stop_the_database_file_alone_holds_every_report(tmp_path: Path) -> None:
    """The web's read connection used to keep SQLite from checkpointing at close: the reports were
    in ``reports.sqlite-wal`` only, and a backup of ``reports.sqlite`` missed them."""
    master, slave = os.openpty()
    config = pty_gateway_config(tmp_path, "gw-files", slave, admin=True)
    gw = Gateway(config)
    gw.registry.add("sl-9", kind="streetlight", zone="harbour", lat="51.9", lon="4.48")
    key = gw.registry.key("sl-9")
    await gw.start()
    try:
        w = int(time.time()) // 900 * 900 - 900 * 10
        for seq in range(1, 6):
            frame = build_frame(FRAME_REPORT, "sl-9", seq, {"t": "win", "k": "streetlight", "w": w + 900 * seq,
                                                            "l": 900, "m": {"lux": 10 * seq, "lvl": 0, "lamp": 0}}, key)
            os.write(master, cobs_encode(frame) + b"\x00")
        async with aiohttp.ClientSession() as http:
            for _ in range(200):  # the web's read connection is in use, as in any running gateway
                async with http.get(f"http://127.0.0.1:{gw.http_port}/api/devices/sl-9") as r:
                    assert r.status == 200
                if gw.metrics.value("civicedge_reports_stored_total") == 5:
                    break
                await asyncio.sleep(0.05)
        assert gw.metrics.value("civicedge_reports_stored_total") == 5
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)
    db = config.storage.path
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    backup = tmp_path / "backup.sqlite"
    backup.write_bytes(db.read_bytes())  # what a file-level backup copies
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 5
    ReportStore(db, gateway_id="gw-files").close()  # and the lock went with the gateway


def test_the_config_caps_what_the_admin_api_may_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = load_policy()
    path = tmp_path / "retention.json"
    settings = RetentionSettings(policy, path=path, overrides={("bin", "temp"): 20})
    assert settings.effective()[("bin", "temp")] == 20
    with pytest.raises(BadParameter, match=r"at most 20 days.*\[retention.bin\] temp = 20") as info:
        settings.set("bin", "temp", 85)
    assert info.value.param == "days" and settings.effective()[("bin", "temp")] == 20
    settings.set("bin", "temp", 10)  # shorter than the config: allowed, persisted, owner-only
    assert settings.effective()[("bin", "temp")] == 10
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Config without a cap: the API sets 60 days; then the operator caps the field at 20 in the
    # config. At the next start the config wins, and the log says so.
    RetentionSettings(policy, path=path).set("bin", "temp", 60)
    caplog.set_level(logging.WARNING, logger="gateway.web.retention")
    restarted = RetentionSettings(policy, path=path, overrides={("bin", "temp"): 20})
    assert restarted.effective()[("bin", "temp")] == 20
    assert any("60 days, longer than the gateway config's 20" in r.getMessage() for r in caplog.records)


def test_a_reader_at_close_leaves_the_wal_and_the_log_says_so(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint blocked by a reader does not raise: it answers busy. The close used to wait the
    whole busy timeout (5 s) and stay silent, while the docs promised a complete database file."""
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([ReportRecord("bin-1", 1, "bin", "north", "win", 900, 900, {"fill": 10}, {}, [], None, 1.0,
                                     "serial:x", "00" * 32)])
    reader = sqlite3.connect(db)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM reports").fetchone() == (1,)  # holds its snapshot
    caplog.set_level(logging.WARNING, logger="gateway.storage.store")
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 3.0
    assert any("another process was reading it at close" in r.getMessage() for r in caplog.records)
    reader.close()
    with sqlite3.connect(db) as conn:  # nothing lost: the WAL is replayed
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone() == (1,)
