"""The Gateway service in-process: web surface mounted (/metrics, /healthz), retention task, provenance CLI."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import KEYS, make_env
from helpers import FILL_PERIOD, fill_release, report_frame
from procs import PtyDevice

from gateway.config import load_config
from gateway.protocol import FRAME_REPORT, build_frame
from gateway.service import Gateway
from gateway.storage import ReportQueries
from hil.cli.main import main

pytestmark = pytest.mark.timeout(60)


async def pump_until(dev: PtyDevice, device: str, seq: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while dev.acks.get(device, 0) < seq:
        assert time.monotonic() < end, "no ACK %s %d: %r" % (device, seq, dev.acks)
        await asyncio.to_thread(dev.pump, 0.05)


async def test_metrics_health_and_retention(tmp_path: Path) -> None:
    dev = PtyDevice(KEYS)
    (tmp_path / "admin.token").write_text("4424e6724442dd8679c6bbe6a9001824\n")
    (tmp_path / "admin.token").chmod(0o600)
    cfg_path = make_env(tmp_path, serial=(dev.path,))
    text = cfg_path.read_text().replace("[http]\nenabled = false", "[http]\nport = 0\nadmin_token_file = \"admin.token\"\n"
                                                      "allowed_hosts = [\"data.city.example\"]")
    cfg_path.write_text(text + "[retention]\ninterval_s = 1\n")
    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        assert gw.http_port
        while gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) != 1:
            await asyncio.sleep(0.05)
        old_w = (int(time.time()) - 100 * 86400) // 900 * 900
        old_fill = build_frame(FRAME_REPORT, "bin-1", 3, fill_release(0, 30, w=old_w - old_w % FILL_PERIOD),
                               KEYS["bin-1"])  # a bin's 6-hourly fill level, 100 days old
        dev.send([report_frame("bin-1", 1, KEYS["bin-1"], w=old_w), report_frame("bin-1", 2, KEYS["bin-1"]),
                  report_frame("bin-1", 3, KEYS["bin-2"]), old_fill])
        await pump_until(dev, "bin-1", 3)
        base = "http://127.0.0.1:%d" % gw.http_port
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/metrics") as resp:
                assert resp.status == 200
                metrics = await resp.text()
            async with http.get(base + "/healthz") as resp:
                health = await resp.json()
            # [http] allowed_hosts reaches the web app: the configured name is served, others refused.
            async with http.get(base + "/api/devices", headers={"Host": "data.city.example"}) as resp:
                assert resp.status == 200
            async with http.get(base + "/api/devices", headers={"Host": "evil.example"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["code"] == "host_not_allowed"
        assert 'civicedge_reports_in_total{link_type="serial"} 4.0' in metrics
        assert 'civicedge_rejections_total{reason="hmac"} 1.0' in metrics
        assert 'civicedge_reports_stored_total 3.0' in metrics
        assert 'civicedge_link_state{link="serial:%s"} 1.0' % dev.path in metrics
        assert "civicedge_ble_connected 0.0" in metrics and "civicedge_outbox_depth 0.0" in metrics
        assert health["status"] == "ok", health
        # retention: temp and bat (90 days) of the 100-day-old window go, its fill level (730 days) stays
        q = ReportQueries(gw.config.storage.path)
        end = time.monotonic() + 10
        while q.reports(device="bin-1")[0].m != {}:
            assert time.monotonic() < end, q.reports(device="bin-1")[0]
            await asyncio.sleep(0.1)
        assert [r.m for r in q.reports(device="bin-1")[1:]] == [{"bat": 20, "temp": 12}, {"fill": 30}]
        assert "4424e6724442dd8679c6bbe6a9001824" not in metrics
    finally:
        await gw.stop()
        dev.close()


def test_export_and_verify_log_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = PtyDevice(KEYS)
    cfg_path = make_env(tmp_path, serial=(dev.path,))

    async def ingest() -> None:
        gw = Gateway(load_config(cfg_path))
        await gw.start()
        try:
            while gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) != 1:
                await asyncio.sleep(0.05)
            dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 6)])
            await pump_until(dev, "bin-1", 5)
        finally:
            await gw.stop()

    try:
        asyncio.run(ingest())
    finally:
        dev.close()
    out = tmp_path / "chain.jsonl"
    assert main(["gateway", "export-log", "--config", str(cfg_path), "-o", str(out)]) == 0
    assert main(["gateway", "verify-log", str(out)]) == 0
    assert "OK: 5 entries" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["digest"] = "0" * 64  # someone rewrites what report 4 was
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines[:3] + [json.dumps(entry)] + lines[4:]) + "\n")
    assert main(["gateway", "verify-log", str(tampered)]) == 1
    assert "BROKEN at line 4 (hash_mismatch)" in capsys.readouterr().out
    removed = tmp_path / "removed.jsonl"
    removed.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert main(["gateway", "verify-log", str(removed)]) == 1
    assert "BROKEN at line 2 (prev_mismatch)" in capsys.readouterr().out
    assert main(["gateway", "verify-log", str(tmp_path / "missing.jsonl")]) == 1


async def test_serial_port_is_held_exclusively() -> None:
    """A second gateway (here: a second transport) cannot open a port in use; it takes over when freed."""
    from gateway.transports import SerialTransport

    dev = PtyDevice(KEYS)
    first, second = SerialTransport(dev.path, reopen_s=0.1), SerialTransport(dev.path, reopen_s=0.1)
    t1 = asyncio.create_task(first.run(lambda item, link: None))
    try:
        while first.opens == 0:
            await asyncio.sleep(0.02)
        t2 = asyncio.create_task(second.run(lambda item, link: None))
        await asyncio.sleep(0.5)
        assert second.opens == 0
        t1.cancel()
        await asyncio.gather(t1, return_exceptions=True)
        end = time.monotonic() + 5
        while second.opens == 0:
            assert time.monotonic() < end
            await asyncio.sleep(0.05)
        t2.cancel()
        await asyncio.gather(t2, return_exceptions=True)
    finally:
        t1.cancel()
        await first.close()
        await second.close()
        dev.close()


async def test_serial_reads_pause_while_the_ingest_has_no_room() -> None:
    """Backpressure: with the flow event clear the transport leaves bytes in the OS buffer (the
    sender blocks once it is full); when the event is set again it reads them all, nothing lost."""
    from gateway.protocol import encode_serial
    from gateway.transports import SerialTransport

    dev = PtyDevice(KEYS)
    flow = asyncio.Event()
    flow.set()
    got: list[object] = []

    def sink(item: object, link: object) -> None:
        got.append(item)
        flow.clear()  # the first frame fills the backlog

    transport = SerialTransport(dev.path, reopen_s=0.1, flow=flow)
    task = asyncio.create_task(transport.run(sink))
    try:
        while transport.opens == 0:
            await asyncio.sleep(0.02)
        dev.send_raw(encode_serial(report_frame("bin-1", 1, KEYS["bin-1"])))
        end = time.monotonic() + 5
        while not got:
            assert time.monotonic() < end
            await asyncio.sleep(0.02)
        dev.send_raw(b"".join(encode_serial(report_frame("bin-1", s, KEYS["bin-1"])) for s in range(2, 6)))
        await asyncio.sleep(0.3)
        assert len(got) == 1 and transport.pauses == 1      # paused: frames 2..5 wait in the pty
        while len(got) < 5:  # each frame clears the event again: set it until all are read
            assert time.monotonic() < end
            flow.set()
            await asyncio.sleep(0.02)
        assert all(isinstance(f, bytes) for f in got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.close()
        dev.close()


def test_http_port_in_use_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = make_env(tmp_path)
        cfg.write_text(cfg.read_text().replace("[http]\nenabled = false", "[http]\nport = %d" % port))
        assert main(["gateway", "run", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error (open_failed)" in err and "cannot serve HTTP" in err


async def test_a_task_that_ignores_cancellation_does_not_hold_up_the_stop(monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Each stop step is bounded: a link task stuck in a radio stack is named in the log and left behind."""
    from gateway import service

    monkeypatch.setattr(service, "STOP_STEP_S", 0.2)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # swallows the cancel, as a hung stack can

    async def polite() -> None:
        await asyncio.sleep(10)

    tasks = [asyncio.create_task(stubborn(), name="ble"), asyncio.create_task(polite(), name="serial:/dev/x")]
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="gateway.service"):
        await service._cancel(tasks, "links")
    assert time.monotonic() - started < 2.0
    assert tasks[1].cancelled() and not tasks[0].done()
    assert "stopping links: ble did not finish" in caplog.text
    release.set()
    tasks[0].cancel()
    await asyncio.wait(tasks, timeout=1)


def test_the_gateway_process_exits_past_a_task_that_ignores_cancellation(tmp_path: Path) -> None:
    """`civicedge gateway run` exits after its stop even if a task would keep asyncio.run waiting."""
    import subprocess

    from stuck_gateway import StuckGateway, command

    proc = subprocess.run(command(StuckGateway), capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**os.environ, "XDG_DATA_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "stopped" in proc.stdout
    assert "exiting past 1 task(s) that ignored cancellation: stuck-radio" in proc.stderr


async def test_transports_that_fail_or_hang_on_close_do_not_keep_the_store_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Transports close together under one bound; a failing or hanging one is named and the stop goes on."""
    import sqlite3

    from gateway import service

    monkeypatch.setattr(service, "STOP_STEP_S", 0.3)
    closed: list[str] = []

    class FailingClose:
        name = "serial:/dev/fail"

        async def run(self, feed: object) -> None:
            await asyncio.Event().wait()

        async def close(self) -> None:
            raise OSError("port vanished")

    class HangingClose(FailingClose):
        name = "ble"

        async def close(self) -> None:
            await asyncio.sleep(30)

    class PoliteClose(FailingClose):
        name = "serial:/dev/ok"

        async def close(self) -> None:
            await asyncio.sleep(0.1)
            closed.append(self.name)

    gw = Gateway(load_config(make_env(tmp_path)))
    gw.transports.extend([FailingClose(), HangingClose(), PoliteClose()])  # type: ignore[list-item]
    await gw.start()
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="gateway.service"):
        await gw.stop()
    # one bound for all three (not one per transport), the polite one closed, the store closed
    assert time.monotonic() - started < 3 * service.STOP_STEP_S + 1.0
    assert closed == ["serial:/dev/ok"]
    assert "stopping transports: FailingClose ended with OSError('port vanished')" in caplog.text
    assert "stopping transports: HangingClose did not finish" in caplog.text
    with pytest.raises(sqlite3.ProgrammingError):
        gw.store._conn.execute("SELECT 1")  # noqa: SLF001 - closed


def test_the_ble_transport_gets_the_registry_and_the_auth_timeout(tmp_path: Path) -> None:
    # Without the registry the BLE transport connects any advertiser of the service UUID (a keyless
    # peripheral named like nothing registered could take a slot); the timeout comes from [ble].
    from gateway.transports.ble_link import BleTransport

    extra = '[ble]\nenabled = true\nbackend = "virtual"\nradio = "ws://127.0.0.1:1"\nauth_timeout_s = 33\n'
    gw = Gateway(load_config(make_env(tmp_path, extra=extra)))
    try:
        [ble] = [t for t in gw.transports if isinstance(t, BleTransport)]
        assert ble._registry is gw.registry  # noqa: SLF001 - the wiring under test
        assert ble.auth_timeout_s == 33.0
    finally:
        gw.store.close()
        gw.registry.close()


async def test_the_route_planning_worker_stops_with_the_gateway(tmp_path: Path) -> None:
    """The worker process OR-Tools plans in (gateway.routes.worker) is stopped by the gateway's stop,
    not left to the interpreter's exit (a gateway embedded in a longer-lived process kept it)."""
    from gateway.routes.web import PlanRoutes

    cfg_path = make_env(tmp_path)
    cfg_path.write_text(cfg_path.read_text().replace("[http]\nenabled = false", "[http]\nport = 0"))
    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        closers = [c for c in gw._web.app.on_shutdown if isinstance(getattr(c, "__self__", None), PlanRoutes)]
        assert len(closers) == 1
        solver = closers[0].__self__._endpoint.solver
        await asyncio.to_thread(solver._ensure)  # as the first plan starts it
        pid = solver.pid
        assert pid is not None
    finally:
        await gw.stop()
    assert solver.pid is None
    with pytest.raises(ProcessLookupError):  # killed and reaped, not only forgotten
        os.kill(pid, 0)
