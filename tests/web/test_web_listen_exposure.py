"""A start-up WARNING when ``[http] listen`` is reachable from other machines, with or without an admin token.

QA finding (test fails before): a gateway on ``listen = "0.0.0.0"`` without an admin token served the
operators' data (/api/devices with last_seen and link addresses, per-device readings, /metrics) to
anyone on the network and said nothing; the only warning was about the token, so it came only with one.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .support import ADMIN_TOKEN, pty_gateway_config
from gateway.config import parse_config
from gateway.service import Gateway
from gateway.web.exposure import ADMIN_PREFIX, OPERATOR_PAGES, OPERATOR_READS, PUBLIC, loopback_only

pytestmark = pytest.mark.timeout(60)
NO_TOKEN_START = "HTTP on "
TOKEN_START = "the admin API is served over plain HTTP on "


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def _config(tmp_path: Path, slave: int, listen: str, *, admin: bool) -> Any:
    base = pty_gateway_config(tmp_path, "gw-exposed", slave, admin=admin)
    http: dict[str, Any] = {"listen": listen, "port": 0}
    if admin:
        http["admin_token_file"] = str(tmp_path / "admin.token")
    return parse_config({"gateway": {"id": "gw-exposed", "data_dir": str(tmp_path / "data")},
                         "serial": [{"port": base.serial[0].port}], "http": http}, source=None)


async def _start(tmp_path: Path, listen: str, caplog: pytest.LogCaptureFixture, *, admin: bool,
                 while_running: Any = None) -> list[str]:
    """Start and stop a gateway on ``listen``; the WARNING lines of gateway.service about its listener."""
    master, slave = os.openpty()
    caplog.clear()
    try:
        gw = Gateway(_config(tmp_path, slave, listen, admin=admin))
        with caplog.at_level(logging.WARNING, logger="gateway.service"):
            await gw.start()
            try:
                if while_running is not None:
                    await while_running(gw)
            finally:
                await gw.stop()
    finally:
        os.close(master)
        os.close(slave)
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith((NO_TOKEN_START, TOKEN_START))]


async def test_every_interface_without_a_token_is_warned_about_naming_what_anyone_reads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    served: dict[str, int] = {}

    async def read_without_token(gw: Gateway) -> None:
        import asyncio

        def get(path: str) -> int:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (gw.http_port, path), timeout=10) as answer:
                return int(answer.status)

        for path in ("/api/devices", "/metrics"):
            served[path] = await asyncio.to_thread(get, path)

    lines = await _start(tmp_path, "0.0.0.0", caplog, admin=False, while_running=read_without_token)
    assert served == {"/api/devices": 200, "/metrics": 200}  # what the warning says: no token asked
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("HTTP on 0.0.0.0:") and "can be reached from other machines" in line
    for path in (*OPERATOR_READS, "/metrics", "/healthz", "/openapi.json"):
        assert path in line
    assert "last_seen" in line and "link addresses" in line
    assert "listen on 127.0.0.1 behind a TLS reverse proxy that forwards only /opendata" in line
    assert "admin API is off" in line


@pytest.mark.parametrize("listen", ["127.0.0.1", "localhost", "::1"])
@pytest.mark.parametrize("admin", [False, True])
async def test_loopback_listeners_are_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       listen: str, admin: bool) -> None:
    if listen == "::1" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    assert await _start(tmp_path, listen, caplog, admin=admin) == []


async def test_with_a_token_the_warning_says_the_token_guards_the_admin_api_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = await _start(tmp_path, "0.0.0.0", caplog, admin=True)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(TOKEN_START + "0.0.0.0:")
    assert "the token guards only /api/admin/" in line and "/api/devices" in line and "/metrics" in line
    assert ADMIN_TOKEN not in line


@pytest.mark.parametrize(("listen", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.7", False), ("fe80::1%1", False), ("::ffff:192.0.2.7", False),
    ("no-such-host.invalid", False),
])
def test_loopback_only(listen: str, loopback: bool) -> None:
    assert loopback_only(listen) is loopback


async def test_the_named_paths_are_every_route_the_app_serves_without_a_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A route added later is either public, admin or named in the warning (else the warning is untrue)."""
    found: list[str] = []

    async def routes(gw: Gateway) -> None:
        runner = gw._web
        assert runner is not None
        for resource in runner.app.router.resources():
            found.append(re.sub(r"\{[^}]*\}", "{id}", resource.canonical))  # /api/devices/{device_id}

    await _start(tmp_path, "127.0.0.1", caplog, admin=False, while_running=routes)
    named = set(OPERATOR_READS) | set(OPERATOR_PAGES) | {"/favicon.ico"}  # the icon tells nothing
    unnamed = [path for path in found if not (path.startswith(("/opendata", ADMIN_PREFIX)) or path in PUBLIC
                                              or path in named or path + "/" in named)]
    assert found and unnamed == [], unnamed
