"""What the device-removal tests share: the app wired as the gateway wires it (the ingest's ``settled``
given), and reads of the store and the registry as committed, through connections of their own."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from .support import ADMIN_TOKEN, Fleet
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.web.app import create_app

WIN = {"t": "win", "k": "streetlight", "w": 1795260600, "l": 900, "m": {"lux": 10}}
PATH = "/api/admin/devices/%s"


@pytest.fixture
async def gateway_client(fleet: Fleet) -> AsyncIterator[TestClient]:
    """The app as the gateway wires it: the ingest's ``settled`` given (on the running loop)."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     ingest_settled=fleet.ingest.settled)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


def stored(fleet: Fleet, device: str) -> int:
    """Reports of ``device`` in the store (its own read-only connection)."""
    conn = sqlite3.connect("file:%s?mode=ro" % fleet.queries.db_path, uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM reports WHERE device=?", (device,)).fetchone()[0])
    finally:
        conn.close()


def retired(fleet: Fleet, device: str) -> bool:
    """Whether the registry holds ``device`` retired, as committed (read through a connection of its own)."""
    other = Registry(fleet.registry.path, create=False)
    try:
        rec = other.lookup(device)
        return rec is not None and bool(rec.retired)
    finally:
        other.close()


def registered(fleet: Fleet, device: str) -> bool:
    """Whether the registry holds ``device`` as committed (read through a connection of its own)."""
    other = Registry(fleet.registry.path, create=False)
    try:
        return other.lookup(device) is not None
    finally:
        other.close()


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait (polling) until ``check()``; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.005)
