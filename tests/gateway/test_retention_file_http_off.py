"""A retention shortened through the admin API (``retention.json``) is applied with ``[http]`` off too.

Found by the second review of the retention warning (storefix): the gateway built its retention settings with the
web surface, so with ``[http] enabled = false`` (or aiohttp missing) the retention task removed by the config's
retention only, while ``run`` and ``run --check`` said the shorter one from ``retention.json`` was in effect.

Real SQLite files, the real store and the real gateway service (its retention task).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import make_env
from helpers import until

from gateway.config import load_config
from gateway.errors import StorageError
from gateway.service import Gateway
from gateway.storage import ReportRecord

pytestmark = pytest.mark.timeout(60)

DAY = 86400


def _temps(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [int(r[0]) for r in conn.execute(
            "SELECT w FROM reports WHERE json_type(m, '$.temp') IS NOT NULL ORDER BY w").fetchall()]
    finally:
        conn.close()


async def test_retention_json_shortens_removal_with_http_off(tmp_path: Path) -> None:
    """bin.temp: 90 days in the policy, 30 in the config, 5 in retention.json. Values 10 days old go, 2 days old
    stay. Fails before (the task removed by the config's 30 days: nothing went)."""
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n[retention.bin]\ntemp = 30\n")
    (tmp_path / "data" / "retention.json").write_text(
        json.dumps({"overrides": [{"kind": "bin", "field": "temp", "days": 5}]}))
    config = load_config(cfg)
    assert config.http is None
    now = time.time()
    t = int(now) - int(now) % 900
    gw = Gateway(config)
    assert gw.retention()[("bin", "temp")] == 5
    old, recent = t - 10 * DAY, t - 2 * DAY
    gw.store.insert_batch([ReportRecord(
        device="bin-1", seq=s, kind="bin", zone="north", type="win", w=w + 900 * s, l=900, m={"temp": 12}, e={},
        a=[], fw="1.0", received_at=now - 60, link="serial:x", digest="%064x" % s)
        for s, w in enumerate([old] * 5 + [recent] * 5, 1)])
    await gw.start()
    try:
        await until(lambda: gw.metrics.value("civicedge_retention_removed_total") >= 5, "nothing was removed")
        assert gw.http_port is None
        assert _temps(gw.config.storage.path) == [recent + 900 * s for s in range(6, 11)]
        assert gw.metrics.value("civicedge_retention_removed_total") == 5
    finally:
        await gw.stop()


def test_a_broken_retention_json_is_refused_with_http_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Ignored with HTTP off before; now read, it is refused as with HTTP on, in the words of `run --check`."""
    cfg = make_env(tmp_path)
    (tmp_path / "data" / "retention.json").write_text('{"overrides": [{"kind": "bin", "field": "temp", "days": "x"}]}')
    with pytest.raises(StorageError) as info:
        Gateway(load_config(cfg))
    assert info.value.reason == "bad_retention_file"
    assert 'entry 1 (bin.temp): days is "x", not a whole number of days' in str(info.value)


def test_a_longer_retention_json_is_capped_by_the_config_and_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """retention.json keeps bin.temp 60 days, the config caps it at 30: the config wins, and the gateway says so."""
    caplog.set_level(logging.WARNING)
    cfg = make_env(tmp_path, extra="[retention.bin]\ntemp = 30\n")
    (tmp_path / "data" / "retention.json").write_text(
        json.dumps({"overrides": [{"kind": "bin", "field": "temp", "days": 60}]}))
    gw = Gateway(load_config(cfg))
    try:
        assert gw.retention()[("bin", "temp")] == 30
        said = [r.getMessage() for r in caplog.records if "longer than the gateway config's 30" in r.getMessage()]
        assert len(said) == 1, said
    finally:
        gw.store.close()


def test_run_check_prints_a_capped_retention_json_value_once_as_a_warning_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --check` printed the capped value as a log line (the warning of a second RetentionSettings) and `run`
    logged it twice (that one and the gateway's). Now --check prints it as its other warnings and logs nothing;
    `run` leaves it to the gateway (once: test above). Fails before (a log record, no "warning:" line)."""
    from hil.cli.main import main

    caplog.set_level(logging.WARNING)
    cfg = make_env(tmp_path, extra="[retention.bin]\ntemp = 3\n")
    (tmp_path / "data" / "retention.json").write_text(
        json.dumps({"overrides": [{"kind": "bin", "field": "temp", "days": 5}]}))
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0
    words = "keeps bin.temp for 5 days, longer than the gateway config's 3: using 3"
    assert [r.getMessage() for r in caplog.records if words in r.getMessage()] == []
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if words in line]
    assert line.startswith("warning: %s" % (tmp_path / "data" / "retention.json")), line


def test_run_check_refuses_a_broken_retention_json_with_http_off(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --check` checked retention.json only with HTTP on, so with HTTP off it said the config was fine and
    `run` then refused to start on the same file (9636f0d reads it either way). Fails before (exit 0)."""
    from hil.cli.main import main

    cfg = make_env(tmp_path)
    (tmp_path / "data" / "retention.json").write_text('{"overrides": [{"kind": "bin", "field": "temp", "days": "x"}]}')
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) != 0
    out = capsys.readouterr()
    assert 'days is "x", not a whole number of days' in out.out + out.err
