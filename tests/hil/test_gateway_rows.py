"""hil_gateway's report rows: the store's reports table, its JSON columns decoded (docs/hil.md "Report rows")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.storage.schema import SCHEMA
from hil.pytest_plugin.gateway_process import GatewayProcess

ROW = ("sl-1", 7, "streetlight", "hil", "win", 1_796_513_400, 900, '{"lux":12,"mot":5}', '{"mot":500}', "[]", "0.1.0",
       1_796_514_152.5, "gw-hil", "serial:/dev/pts/3", "ab" * 32)


def test_stored_reports_decode_m_e_a(tmp_path: Path) -> None:
    gateway = GatewayProcess(workdir=tmp_path / "gw")
    gateway.workdir.mkdir()
    with sqlite3.connect(gateway.db_path) as conn:  # the gateway's own schema, as its store creates it
        conn.executescript(SCHEMA)
        conn.execute("INSERT INTO reports (device, seq, kind, zone, type, w, l, m, e, a, fw, received_at, gateway_id,"
                     " link, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ROW)
        conn.execute("INSERT INTO reports (device, seq, kind, zone, type, w, l, m, e, a, fw, received_at, gateway_id,"
                     " link, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     ("sl-1", 8, "streetlight", "hil", "alarm", 1_796_513_460, 60, "{}", "{}", '["lamp_fail"]', None,
                      1_796_514_153.0, "gw-hil", "serial:/dev/pts/3", "cd" * 32))
    rows = gateway.wait_for_reports(count=2, device_id="sl-1", timeout_s=1)
    assert [r["seq"] for r in rows] == [7, 8]
    first, alarm = rows
    assert first["m"] == {"lux": 12, "mot": 5} and first["e"] == {"mot": 500} and first["a"] == []
    assert alarm["m"] == {} and alarm["a"] == ["lamp_fail"] and alarm["fw"] is None
    assert set(first) == {"id", "device", "seq", "kind", "zone", "type", "w", "l", "m", "e", "a", "fw", "received_at",
                          "gateway_id", "link", "digest"}  # the keys docs/hil.md lists
    assert first["device"] == "sl-1" and first["received_at"] == 1_796_514_152.5
    assert gateway.stored_reports("sl-2") == []


def test_stored_reports_of_a_work_dir_with_hash_or_question_mark(tmp_path: Path) -> None:
    """A hand-built ``file:PATH?mode=ro`` URI ended the file name at '#' or '?' of pytest's tmp_path
    (a test named ``test_x[a#b]``), so no stored report was ever seen."""
    gateway = GatewayProcess(workdir=tmp_path / "gw#1?a")
    gateway.workdir.mkdir()
    with sqlite3.connect(gateway.db_path) as conn:
        conn.executescript(SCHEMA)
        conn.execute("INSERT INTO reports (device, seq, kind, zone, type, w, l, m, e, a, fw, received_at, gateway_id,"
                     " link, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ROW)
    assert [(r["device"], r["seq"]) for r in gateway.stored_reports()] == [("sl-1", 7)]
