"""The gateway as a process on real ptys: ingest, ACK, reconnect, SIGTERM drain, SIGKILL restart safety."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import GatewayProcess, PtyDevice

from gateway.protocol import FRAME_REPORT, build_frame
from gateway.storage import ReportQueries
from gateway.storage.provenance import export_chain, verify_export

pytestmark = pytest.mark.timeout(120)


def stored(db: Path, device: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM reports WHERE device=? ORDER BY seq", (device,))]
    finally:
        conn.close()


def test_two_ports_ingest_ack_and_sigterm(tmp_path: Path) -> None:
    a, b = PtyDevice(KEYS), PtyDevice(KEYS)
    gw = GatewayProcess(make_env(tmp_path, serial=(a.path, b.path)), tmp_path / "gw.log", verbose=2)
    try:
        gw.start()
        gw.wait_log("opened %s" % a.path)
        gw.wait_log("opened %s" % b.path)
        a.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 21)])
        b.send([report_frame("sl-1", s, KEYS["sl-1"], kind="streetlight") for s in range(1, 11)])
        a.send_raw(b"\x13garbage\x00\x00")  # resync after garbage
        a.send([report_frame("bin-1", 21, KEYS["sl-1"]),  # forged: wrong key
                report_frame("bin-1", 22, KEYS["bin-1"], m={"fill": 10, "mac": 1}),  # not on the allowlist
                report_frame("bin-1", 5, KEYS["bin-1"]),  # retransmission
                report_frame("bin-1", 23, KEYS["bin-1"]),
                report_frame("bin-1", 21, KEYS["bin-1"])])  # the authentic 21, re-sent
        a.wait_ack("bin-1", 23)
        b.wait_ack("sl-1", 10)
        assert gw.terminate() == 0
    finally:
        gw.kill()
        a.close()
        b.close()
    db = tmp_path / "data" / "reports.sqlite"
    assert stored(db, "bin-1") == list(range(1, 22)) + [23]
    assert stored(db, "sl-1") == list(range(1, 11))
    logs = gw.logs()
    assert "reason=hmac" in logs and "reason=policy" in logs and "reason=cobs" in logs and "stopped" in logs
    for key in KEYS.values():
        assert key.hex() not in logs.lower()
    lat = {r.device: r.link for r in ReportQueries(db).latest_per_device()}
    assert lat["bin-1"] == "serial:%s" % a.path


def test_port_disappears_and_returns(tmp_path: Path) -> None:
    link = tmp_path / "ttyBOARD"
    dev = PtyDevice(KEYS, link=link)
    gw = GatewayProcess(make_env(tmp_path, serial=(str(link),)), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("opened %s" % link)
        dev.send([report_frame("bin-2", 1, KEYS["bin-2"])])
        dev.wait_ack("bin-2", 1)
        dev.close()  # unplugged: the pty vanishes
        time.sleep(1.0)
        dev = PtyDevice(KEYS, link=link)  # plugged back (a new pty behind the same name)
        deadline = time.monotonic() + 20
        while dev.acks.get("bin-2", 0) < 2 and time.monotonic() < deadline:
            dev.send([report_frame("bin-2", 2, KEYS["bin-2"])])  # a device resends until acknowledged
            dev.pump(1.0)
        assert dev.acks.get("bin-2") == 2, gw.logs()
        assert gw.terminate() == 0
    finally:
        gw.kill()
        dev.close()
    assert "went away" in gw.logs()
    assert stored(tmp_path / "data" / "reports.sqlite", "bin-2") == [1, 2]


def test_sigkill_during_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    dev = PtyDevice(KEYS)
    total = 400
    frames = {s: report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, total + 1)}
    db = tmp_path / "data" / "reports.sqlite"
    gw = GatewayProcess(make_env(tmp_path, serial=(dev.path,), batch_ms=30), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("opened %s" % dev.path)
        dev.send([frames[s] for s in range(1, 101)])
        dev.wait_ack("bin-1", 60)
        dev.send([frames[s] for s in range(101, 201)])  # more in flight while the gateway dies
        time.sleep(0.03)
        gw.proc.kill()  # type: ignore[union-attr]  # SIGKILL mid-ingest
        gw.proc.wait(10)  # type: ignore[union-attr]
        dev.pump(0.2)
        acked = dev.acks.get("bin-1", 0)
        assert acked >= 60
        after_kill = stored(db, "bin-1")
        assert set(range(1, acked + 1)) <= set(after_kill), "an acknowledged report was lost"
        gw.kill()
        gw.start()
        gw.wait_log("opened %s" % dev.path)
        # The device resends everything not acknowledged (its outbox), plus an old one again.
        while dev.acks.get("bin-1", 0) < total:
            first = dev.acks.get("bin-1", 0) + 1
            dev.send([frames[s] for s in range(first, min(first + 50, total + 1))] + [frames[1]])
            dev.pump(0.3)
        assert gw.terminate() == 0
    finally:
        gw.kill()
        dev.close()
    assert stored(db, "bin-1") == list(range(1, total + 1))
    with (tmp_path / "log.jsonl").open("w") as fh:
        assert export_chain(db, fh) == total  # one chain entry per report: nothing stored twice
    assert verify_export((tmp_path / "log.jsonl").read_text().splitlines()) == total


def test_unknown_version_and_oversize_over_serial(tmp_path: Path) -> None:
    dev = PtyDevice(KEYS)
    gw = GatewayProcess(make_env(tmp_path, serial=(dev.path,)), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("opened %s" % dev.path)
        good = build_frame(FRAME_REPORT, "bin-1", 1, {"t": "win", "k": "bin", "w": 0, "l": 900, "m": {}}, KEYS["bin-1"])
        dev.send([b"\x07" + good[1:], bytes([1]) * 1100, good])
        dev.wait_ack("bin-1", 1)
        assert gw.terminate() == 0
    finally:
        gw.kill()
        dev.close()
    logs = gw.logs()
    assert "reason=version" in logs and "reason=oversize" in logs


def test_sigterm_commits_and_acknowledges_everything_in_flight(tmp_path: Path) -> None:
    dev = PtyDevice(KEYS)
    gw = GatewayProcess(make_env(tmp_path, serial=(dev.path,), batch_ms=200), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("opened %s" % dev.path)
        dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 151)])
        time.sleep(0.1)  # frames are being verified / waiting for the 200 ms batch commit
        assert gw.proc is not None
        gw.proc.send_signal(15)
        end = time.monotonic() + 20
        while gw.proc.poll() is None and time.monotonic() < end:
            dev.pump(0.05)
        dev.pump(0.2)
        assert gw.proc.returncode == 0
    finally:
        gw.kill()
        dev.close()
    got = stored(tmp_path / "data" / "reports.sqlite", "bin-1")
    assert got and got == list(range(1, len(got) + 1))
    assert dev.acks.get("bin-1") == len(got), "a committed report was left unacknowledged at shutdown"


def test_logs_are_quiet_by_default(tmp_path: Path) -> None:
    dev = PtyDevice(KEYS)
    gw = GatewayProcess(make_env(tmp_path, serial=(dev.path,)), tmp_path / "gw.log", verbose=0)
    try:
        gw.start()
        deadline = time.monotonic() + 15
        while not dev.acks and time.monotonic() < deadline:  # the port may open a moment after "ready"
            # seq 0 is refused (malformed: INFO); a frame failing its HMAC check is a WARNING since a board
            # left on an old key loses all its data (test_hmac_warning.py)
            dev.send([report_frame("bin-1", 1, KEYS["bin-1"]), report_frame("bin-1", 0, KEYS["bin-1"])])
            dev.pump(0.3)
        assert dev.acks.get("bin-1") == 1
        assert gw.terminate() == 0
    finally:
        gw.kill()
        dev.close()
    assert gw.logs() == ""  # a normal run with a rejected frame prints nothing but the ready line
