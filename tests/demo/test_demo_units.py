"""Fast checks of the demo's parts: work directory, pace and health watches, summary."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
import subprocess
import sys
import time
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aiohttp.test_utils import TestServer

from gateway.health import Problem
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import IngestService, Link
from gateway.pipeline.verify import Verifier
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.web.app import create_app
from hil.children import spawn_child, stop_gateway
from hil.cli import demo_cmd
from hil.pace import PaceWatch
from hil.demo.runner import write_token_file
from hil.demo.summary import read_summary
from hil.workdir import WorkdirError, recreate_workdir, workdir_problem


def test_recreate_empties_the_directory_and_keeps_it(tmp_path: Path) -> None:
    """A mount point cannot be removed ("busy"): its contents are, the directory stays."""
    wd = tmp_path / "wd"
    wd.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (wd / ".m").write_text("")
    (wd / "sub").mkdir()
    (wd / "sub" / "f").write_text("x")
    (wd / "link").symlink_to(outside)
    inode = wd.stat().st_ino
    recreate_workdir(wd, marker=".m", note="n")
    assert wd.stat().st_ino == inode
    assert sorted(p.name for p in wd.iterdir()) == [".m"]
    assert (outside / "keep").exists()  # a symlink is removed, never followed


def test_an_empty_directory_is_used_and_a_foreign_one_still_refused(tmp_path: Path) -> None:
    empty = tmp_path / "mnt"
    empty.mkdir()
    assert workdir_problem(empty, marker=".m", what="demo dir") is None
    recreate_workdir(empty, marker=".m", note="n")
    assert (empty / ".m").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    assert "is not a demo dir" in (workdir_problem(foreign, marker=".m", what="demo dir") or "")


def test_a_removal_that_fails_half_way_keeps_the_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding: the marker was deleted first, so a removal failing after it left a directory
    every later run refused as foreign."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / ".m").write_text("")
    for name in ("a", "b", "c"):
        (wd / name).write_text("x")
    real_unlink = Path.unlink

    def unlink(self: Path, *a: Any, **k: Any) -> None:
        if self.name == "b":
            raise OSError(errno.EACCES, "Permission denied")
        real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(WorkdirError, match="Permission denied"):
        recreate_workdir(wd, marker=".m", note="n")
    assert (wd / ".m").exists()
    assert workdir_problem(wd, marker=".m", what="demo dir") is None


def test_a_file_system_mounted_inside_is_refused_before_anything_is_removed(tmp_path: Path) -> None:
    """Review finding: rmtree went into a mount under the work directory and deleted what it held."""
    import subprocess

    wd = tmp_path / "wd"
    (wd / "sub").mkdir(parents=True)
    (wd / ".m").write_text("")
    (wd / "other").write_text("x")
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(wd / "sub")], capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        (wd / "sub" / "precious").write_text("keep")
        with pytest.raises(WorkdirError, match="another file system mounted inside it"):
            recreate_workdir(wd, marker=".m", note="n")
        assert (wd / "sub" / "precious").read_text() == "keep" and (wd / "other").exists() and (wd / ".m").exists()
    finally:
        subprocess.run(["umount", str(wd / "sub")], check=True)


def test_a_read_only_directory_is_called_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wd = tmp_path / "ro"
    wd.mkdir()

    def refuse(self: Path, *a: Any, **k: Any) -> int:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(WorkdirError) as info:
        recreate_workdir(wd, marker=".m", note="n")
    assert "read-only" in str(info.value) and "busy" not in str(info.value)


def test_stop_gateway_terms_then_kills_the_whole_session() -> None:
    """The demo's and the scenario run's stop: SIGTERM, and after the timeout SIGKILL to the session."""
    polite = spawn_child([sys.executable, "-c", "import time; time.sleep(60)"])
    assert asyncio.run(stop_gateway(polite, timeout=10)) == -signal.SIGTERM
    assert asyncio.run(stop_gateway(polite)) == -signal.SIGTERM  # already stopped: only its status
    # Ignores SIGTERM and has a child of its own (as the gateway could): both are killed.
    stubborn = spawn_child([sys.executable, "-c", (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(p.pid, flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout is not None
    grandchild = int(stubborn.stdout.readline())
    t0 = time.monotonic()
    assert asyncio.run(stop_gateway(stubborn, timeout=0.5)) == -signal.SIGKILL
    assert time.monotonic() - t0 < 5
    deadline = time.monotonic() + 5
    while not _gone(grandchild):
        assert time.monotonic() < deadline, f"the gateway's child {grandchild} outlived the SIGKILL of its session"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """No such process, or killed and not yet reaped by init (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_pace_watch_tells_a_slow_machine_after_the_window() -> None:
    pace = PaceWatch(600)
    assert pace.check(0, 0) is None
    assert pace.check(10, 10 * 400_000) is None  # slow, but not for 30 s yet
    achieved = pace.check(30, 30 * 400_000)
    assert achieved == pytest.approx(400)
    ok = PaceWatch(600)
    assert all(ok.check(t, t * 590_000) is None for t in range(0, 61, 5))


class _NotMetrics(BaseHTTPRequestHandler):
    """A server whose /metrics is not the exposition format (no gateway answers so)."""

    def do_GET(self) -> None:  # noqa: N802
        data = b"civicedge_store_commit_failures_total{ oops\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


async def test_health_watch_warns_once_per_change_and_remembers_store_failures(tmp_path: Path) -> None:
    """Against the real gateway web app (/healthz, /metrics) with the metrics of a real ingest whose store's
    commits fail (its WAL deleted under it): the reason and the commit-failure count are the gateway's own.
    The app reads another, sound store: its own probe of a store without its WAL would say so too."""
    key = bytes(range(32))
    registry = Registry(tmp_path / "registry")
    registry.enroll("bin-1", kind="bin", zone="north", lat="52.37", lon="4.89", key=key)
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw")
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=store, verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=10)
    await ingest.start()
    ReportStore(tmp_path / "web.sqlite", gateway_id="gw").close()
    queries = ReportQueries(tmp_path / "web.sqlite")
    acks: list[bytes] = []

    async def send(frame: bytes) -> None:
        acks.append(frame)
    shown: list[Problem] = []  # what the gateway's health check says now (the app asks at each /healthz)
    server = TestServer(create_app(store=queries, registry=registry, policy=load_policy(),
                                   metrics_registry=metrics.registry, admin_token=None, health_checks=[lambda: shown]),
                        host="127.0.0.1", port=0)
    await server.start_server()
    other = HTTPServer(("127.0.0.1", 0), _NotMetrics)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    failures = "civicedge_store_commit_failures_total"
    w = int(time.time()) // 900 * 900 - 900

    async def feed(seq: int) -> None:
        body = {"t": "win", "k": "bin", "w": w - 900 * seq, "l": 900, "m": {"temp": 12, "tilt": 0, "bat": 80}}
        ingest.feed(build_frame(FRAME_REPORT, "bin-1", seq, body, key), Link(name="serial:x", kind="serial", send=send))

    async def until(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    try:
        await feed(1)
        await until(lambda: len(acks) == 1, "the first report stored and acknowledged")
        (tmp_path / "reports.sqlite-wal").unlink()  # it held that commit: the next ones fail
        for seq in (2, 3, 4):  # one batch each
            await feed(seq)
            await until(lambda: metrics.value(failures) == seq - 1, "commit failure %d" % (seq - 1))
        failing = ingest.store_problem
        assert failing is not None and failing.startswith("report store commits failing (3 in a row")
        assert len(acks) == 1  # none of the failed ones acknowledged

        demo = SimpleNamespace(dashboard_url=f"http://127.0.0.1:{server.port}/")
        watch = demo_cmd._Watch(demo, 30.0)  # type: ignore[arg-type]

        async def poll() -> str | None:
            watch.next_health = 0.0
            return await watch.health_line()

        assert await poll() is None  # healthy (nothing shown yet)
        shown[:] = [Problem("commits_failing", failing)]  # what gateway.service's health check says for it
        line = await poll()
        assert line is not None and "gateway degraded: report store commits failing (3 in a row" in line, line
        assert await poll() is None  # once per change
        shown.clear()
        assert await poll() == "gateway healthy again"
        # a slow answer of the store to /healthz is no failure (review: it made a run exit 1)
        shown[:] = [Problem("store_not_answering", "store not answering")]
        assert await poll() is not None
        assert watch.store_failures == [failing]
        # the final look counts failed commits from /metrics, however briefly they failed
        assert await asyncio.to_thread(demo_cmd._commit_failures, demo.dashboard_url + "metrics") == 3
        assert await asyncio.to_thread(demo_cmd._commit_failures, "http://127.0.0.1:9/metrics") is None  # no answer
        not_metrics = f"http://127.0.0.1:{other.server_port}/metrics"  # not the exposition format: unknown
        assert await asyncio.to_thread(demo_cmd._commit_failures, not_metrics) is None
    finally:
        other.shutdown()
        other.server_close()
        await server.close()
        await ingest.stop()
        ingest.close()
        queries.close()
        registry.close()


def test_latest_values_take_each_field_from_its_newest_report(tmp_path: Path) -> None:
    # a '#' in the work directory ended a hand-built file: URI's file name there
    (tmp_path / "demo#1").mkdir()
    db = tmp_path / "demo#1" / "r.sqlite"
    # the fill level leaves every 6 h in its own "win" report (w the period start, before the newest
    # 15-minute windows'): it is shown all the same, the newest of two such releases
    rows = [("bin-001", "day", 0, 86400, {"lid": 4}), ("bin-001", "hour", 3600, 3600, {"wh": 12}),
            ("bin-001", "win", 0, 21600, {"fill": 10}), ("bin-001", "win", 21600, 21600, {"fill": 20}),
            ("bin-001", "win", 36000, 900, {"temp": 9}), ("bin-001", "win", 36900, 900, {"temp": 11}),
            ("bin-001", "alarm", 4500, 60, {})]
    store = ReportStore(db, gateway_id="gw")  # the gateway's own schema
    try:
        store.insert_batch([ReportRecord(dev, seq, "bin", "north", typ, w, l, m, {}, ["tilt"] if typ == "alarm" else [],
                                         "1.0", 1.0, "serial:x", "%064x" % seq)
                            for seq, (dev, typ, w, l, m) in enumerate(rows, 1)])
    finally:
        store.close()
    board = SimpleNamespace(device_id="bin-001", name="bin-esp32c3", config={"kind": "bin"}, data_path=None)
    summary = read_summary(db, boards=[board])
    assert summary.rows[0].latest == {"lid": 4, "wh": 12, "fill": 20, "temp": 11}
    assert summary.total_alarms == 1


def test_plural() -> None:
    assert demo_cmd._plural(1, "alarm") == "1 alarm" and demo_cmd._plural(2, "alarm") == "2 alarms"


def test_admin_token_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    old = os.umask(0)  # the file must not depend on the umask to be private
    try:
        new = tmp_path / "admin.token"
        write_token_file(new, "t1")
        assert stat.S_IMODE(new.stat().st_mode) == 0o600
        existing = tmp_path / "old.token"
        existing.write_text("t0\n")
        existing.chmod(0o644)  # a token file left readable by an earlier run is made private
        write_token_file(existing, "t2")
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600
        assert existing.read_text() == "t2\n"
    finally:
        os.umask(old)
