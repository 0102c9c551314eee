"""What an operator monitors through a real gateway: process metrics, the last commit, the store's
size and free disk in /metrics (parsed with the Prometheus parser), and /healthz with BLE off."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import pty_gateway_config
from gateway.protocol.cobs import cobs_encode
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.service import Gateway

pytestmark = pytest.mark.timeout(60)


def _samples(text: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


async def test_metrics_show_the_process_the_last_commit_and_the_store(tmp_path: Path) -> None:
    master, slave = os.openpty()
    gw = Gateway(pty_gateway_config(tmp_path, "gw-mon", slave))
    gw.registry.add("bin-7", kind="bin", zone="harbour", lat="51.9", lon="4.48")
    key = gw.registry.key("bin-7")
    await gw.start()
    try:
        base = f"http://127.0.0.1:{gw.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/metrics") as r:
                before = _samples(await r.text())
            assert before["civicedge_last_commit_timestamp_seconds"] == 0  # nothing committed yet
            sent_at = time.time()
            now = int(sent_at)
            frame = build_frame(FRAME_REPORT, "bin-7", 1, {"t": "win", "k": "bin", "w": now - now % 900 - 900,
                                                            "l": 900, "m": {"temp": 20, "bat": 80}}, key)
            for _ in range(100):
                os.write(master, cobs_encode(frame) + b"\x00")  # re-sent until the link is open, as a device does
                await asyncio.sleep(0.1)
                if gw.metrics.value("civicedge_reports_stored_total") >= 1:
                    break
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
                got = _samples(await r.text())  # the parser refuses an invalid exposition
            async with http.get(base + "/healthz") as r:
                health = await r.json()
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)
    assert got["civicedge_reports_stored_total"] == 1
    assert sent_at - 1 <= got["civicedge_last_commit_timestamp_seconds"] <= time.time()
    # Process metrics from /proc/self.
    assert got["process_resident_memory_bytes"] > 10_000_000  # a Python process with aiohttp loaded
    assert got["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert 5 < got["process_open_fds"] < got["process_max_fds"]
    assert got["process_cpu_seconds_total"] > 0
    assert time.time() - 3600 < got["process_start_time_seconds"] <= time.time()
    # The store's files and their file system, read at the scrape.
    store = tmp_path / "data" / "reports.sqlite"
    assert got["civicedge_store_size_bytes"] >= store.stat().st_size > 0
    st = os.statvfs(store.parent)
    assert abs(got["civicedge_store_disk_free_bytes"] - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024
    # [ble] enabled = false (the default): no connection count that could only say 0.
    assert health["checks"]["ble"] == "disabled" and "ble_connected" not in health["checks"], health


@pytest.mark.parametrize(("ble_enabled", "shown"), [(True, {"ble_connected": 2.0}), (None, {"ble_connected": 2.0}),
                                                    (False, {"ble": "disabled"})])
async def test_healthz_counts_ble_connections_only_where_ble_runs(fleet, ble_enabled, shown) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.resources import load_policy
    from gateway.web.app import create_app

    fleet.metrics.ble_connected.set(2)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, ble_enabled=ble_enabled)
    async with TestClient(TestServer(app)) as c:
        checks = (await (await c.get("/healthz")).json())["checks"]
    assert {k: v for k, v in checks.items() if k.startswith("ble")} == shown


def test_a_symlinked_store_path_counts_the_real_file_and_its_wal(tmp_path: Path) -> None:
    """[storage] path may be a symlink: the -wal lies beside the real file (the store's own rule), and
    that file's file system is the one that fills up (review: the link's directory was measured)."""
    from gateway.metrics import GatewayMetrics

    real_dir = tmp_path / "disk"
    real_dir.mkdir()
    (real_dir / "reports.sqlite").write_bytes(b"x" * 4096)
    (real_dir / "reports.sqlite-wal").write_bytes(b"w" * 1000)
    link = tmp_path / "reports.sqlite"
    link.symlink_to(real_dir / "reports.sqlite")
    metrics = GatewayMetrics("gw")
    metrics.watch_store(link)
    assert metrics.value("civicedge_store_size_bytes") == 5096
