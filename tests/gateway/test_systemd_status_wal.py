"""``STATUS=`` says ``store_wal_unchecked`` as ``/healthz`` does: the web's reads ran without the over-limit ``-wal``
being checkpointed (gateway/web/wal_gate.py), and back to ``running`` once it is.

Before, ``/healthz`` had the warning and ``systemctl status`` said ``running``: the code came from the web's store
reads (``StoreFleetSource.store_problems``), which ``/healthz`` asks and ``Gateway.health`` did not.

The real gateway service with its web surface on a real port, a real SQLite store (a reader outside it holds a
snapshot, the gateway's writer commits), the real ``StatusReporter`` and a real ``NOTIFY_SOCKET``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import make_env
from tests.gateway.test_systemd_status import _next, notify_socket  # noqa: F401 (notify_socket: a fixture)

from gateway.config import load_config
from gateway.notify_status import StatusReporter
from gateway.service import Gateway
from gateway.storage.store_files import real_store_path
from gateway.web import wal_gate

pytestmark = pytest.mark.timeout(90)

LIMIT = 64 * 1024
CODE = "store_wal_unchecked"


def _port() -> int:
    """A free loopback port in this test's range."""
    for port in range(42200, 42300):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 42200-42299")


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503: degraded
        return exc.code, json.loads(exc.read())


def _sql(db: Path, *statements: tuple[str, tuple[Any, ...]]) -> Any:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return [conn.execute(sql, args).fetchone() for sql, args in statements]
    finally:
        conn.close()


async def test_status_says_store_wal_unchecked_and_back_to_running(
        tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(wal_gate, "WAL_LIMIT_BYTES", LIMIT)
    monkeypatch.setattr(wal_gate, "WAL_WAIT_S", 0.3)
    port = _port()
    cfg = make_env(tmp_path)
    cfg.write_text(cfg.read_text().replace("[http]\nenabled = false\n",
                                           '[http]\nenabled = true\nlisten = "127.0.0.1"\nport = %d\n' % port))
    gw = Gateway(load_config(cfg))
    await gw.start()
    db = real_store_path(gw.config.storage.path)
    base = "http://127.0.0.1:%d" % port
    reporter = asyncio.create_task(StatusReporter("gw-test", "running", gw.health, every_s=0.1).run())
    reader = sqlite3.connect("file:%s?mode=ro" % db, uri=True, isolation_level=None, check_same_thread=False)
    try:
        # A reader holding a snapshot: no checkpoint can copy the frames committed after it.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM reports").fetchone()
        for i in range(40):  # commits of the gateway's own writer (another program's would stop its writes)
            await gw.ingest.run_in_store(gw.store.save_meta, "published:walcap:%d" % i, "x" * 6000)
        assert db.with_name(db.name + "-wal").stat().st_size > LIMIT
        await asyncio.sleep(wal_gate.WAL_LOOK_EVERY_S)  # the gate looks at the -wal's size at most every 1 s
        now = int(time.time())
        status, _ = await asyncio.to_thread(_get, "%s/api/readings?from=%d&to=%d&field=temp" % (base, now - 3600, now))
        assert status == 200  # the read waited, then ran anyway: the log is unchecked
        assert await _next(notify_socket) == {"STATUS": "gateway gw-test degraded (warning): %s" % CODE}
        status, health = await asyncio.to_thread(_get, base + "/healthz")
        assert status == 503 and [p["code"] for p in health["problems"]] == [CODE], health  # once, not twice
    finally:
        reader.execute("COMMIT")
        reader.close()
    try:
        assert (await asyncio.to_thread(_sql, db, ("PRAGMA wal_checkpoint(TRUNCATE)", ())))[0][0] == 0
        assert await _next(notify_socket) == {"STATUS": "running"}
    finally:
        reporter.cancel()
        await asyncio.wait([reporter])
        await gw.stop()
