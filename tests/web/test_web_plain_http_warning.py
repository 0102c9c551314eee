"""A start-up WARNING when the admin API is served over plain HTTP on an address other machines reach."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from .support import ADMIN_TOKEN, pty_gateway_config
from gateway.config import parse_config
from gateway.service import Gateway

pytestmark = pytest.mark.timeout(60)
WARNING_START = "the admin API is served over plain HTTP on "


def _config(tmp_path: Path, slave: int, listen: str, *, admin: bool) -> Any:
    base = pty_gateway_config(tmp_path, "gw-bind", slave, admin=admin)
    http: dict[str, Any] = {"listen": listen, "port": 0}
    if admin:
        http["admin_token_file"] = str(tmp_path / "admin.token")
    return parse_config({"gateway": {"id": "gw-bind", "data_dir": str(tmp_path / "data")},
                         "serial": [{"port": base.serial[0].port}], "http": http}, source=None)


async def _start_stop(config: Any, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    gw = Gateway(config)
    with caplog.at_level(logging.WARNING, logger="gateway.service"):
        await gw.start()
        await gw.stop()
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(WARNING_START)]


@pytest.mark.parametrize(("listen", "admin", "warned"), [
    ("0.0.0.0", True, True),
    ("127.0.0.1", True, False),
    ("localhost", True, False),
    ("0.0.0.0", False, False),  # no admin API: nothing secret on the wire
])
async def test_warned_once_when_the_admin_api_listens_beyond_loopback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, listen: str, admin: bool, warned: bool
) -> None:
    master, slave = os.openpty()
    try:
        lines = await _start_stop(_config(tmp_path, slave, listen, admin=admin), caplog)
    finally:
        os.close(master)
        os.close(slave)
    if warned:
        assert len(lines) == 1, lines
        assert "0.0.0.0:" in lines[0] and "TLS reverse proxy" in lines[0]
        assert ADMIN_TOKEN not in lines[0]
    else:
        assert lines == []
