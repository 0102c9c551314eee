"""Fixtures of the web tests: a real registry and SQLite store fed through the gateway's ingest
service (frames built and HMAC-tagged like a device does, verified, batched, committed and
ACKed), and the web app served by aiohttp's test server on a free loopback port.

This folder is a package (``__init__.py``) so this conftest never shadows another folder's
``conftest`` module; tests import shared pieces from ``.support``."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import IngestService
from gateway.pipeline.verify import Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore
from gateway.web.app import create_app
from gateway.web.retention import RetentionSettings

from .support import ADMIN_TOKEN, DEVICES, NOW, RECEIVED_AT, Fleet, feed_morning


async def _open_fleet(root: Path, seqs: dict[str, int]) -> Fleet:
    policy = load_policy()
    registry = Registry(root / "registry")
    store = ReportStore(root / "reports.sqlite", gateway_id="gw-test")
    metrics = GatewayMetrics("gw-test")
    ingest = IngestService(store=store, verifier=Verifier(registry, policy), metrics=metrics, batch_ms=5,
                           clock=lambda: float(RECEIVED_AT))
    await ingest.start()
    return Fleet(registry=registry, store=store, ingest=ingest, queries=ReportQueries(root / "reports.sqlite"),
                 metrics=metrics, retention=RetentionSettings(policy, path=root / "retention.json"), seqs=dict(seqs))


async def _close_fleet(fl: Fleet) -> None:
    await fl.ingest.stop()
    fl.ingest.close()
    fl.queries.close()
    fl.store.close()
    fl.registry.close()


async def _build_template(root: Path) -> dict[str, int]:
    registry = Registry(root / "registry")
    for dev, kind, zone, lat, lon in DEVICES:
        registry.add(dev, kind=kind, zone=zone, lat=lat, lon=lon)
    registry.revoke("bin-03")
    registry.close()
    fl = await _open_fleet(root, {})
    try:
        await fl.settle(stored=feed_morning(fl))
        return dict(fl.seqs)
    finally:
        await _close_fleet(fl)


@pytest.fixture(scope="session")
def fleet_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """The ingested morning, built once per session (registry + store files, device seqs)."""
    root = tmp_path_factory.mktemp("fleet-template")
    seqs = asyncio.run(_build_template(root))
    return root, seqs


@pytest.fixture
async def fleet(tmp_path: Path, fleet_template: tuple[Path, dict[str, int]]) -> AsyncIterator[Fleet]:
    """Registry with 6 devices (sl-03 and bin-03 never report; bin-03 revoked), a morning ingested
    through the gateway's ingest service; each test gets its own copy of the files."""
    template, seqs = fleet_template
    root = tmp_path / "gateway"
    shutil.copytree(template, root)
    fl = await _open_fleet(root, seqs)
    try:
        yield fl
    finally:
        await _close_fleet(fl)


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[TestClient]:
    """A test client against the app over the fed fleet, clock fixed at NOW."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN,
                     retention=fleet.retention, clock=lambda: float(NOW), max_body_bytes=4096,
                     body_timeout_s=1.0)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c

