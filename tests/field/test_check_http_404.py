"""QA: ``check --gateway`` called any HTTP 404 "does not know device" (inviting a re-key of a healthy
board) when the URL had a path or pointed at another web server. Only the gateway's unknown_device is.

Against the real gateway web app (a real registry without the device, a real store) and, for "another
web server", Python's own HTTP server."""

from __future__ import annotations

import asyncio
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
from aiohttp.test_utils import TestServer

from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore
from gateway.web.app import create_app
from hil.field.check import HttpWatch
from hil.field.errors import FieldError

KNOWN = "sl-0001"  # enrolled in the gateway's registry
UNKNOWN = "sl-0100"  # not


@pytest.fixture
async def gateway_url(tmp_path: Path) -> AsyncIterator[str]:
    """The real gateway web app over a registry that knows only :data:`KNOWN` and an empty store."""
    registry = Registry(tmp_path / "registry")
    registry.enroll(KNOWN, kind="streetlight", zone="centre", lat="52.37", lon="4.89", key=bytes(range(32)))
    ReportStore(tmp_path / "reports.sqlite", gateway_id="gw").close()
    queries = ReportQueries(tmp_path / "reports.sqlite")
    server = TestServer(create_app(store=queries, registry=registry, policy=load_policy(), metrics_registry=None,
                                   admin_token=None), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
        queries.close()
        registry.close()


@pytest.fixture
def other_server_url(tmp_path: Path) -> Iterator[str]:
    """Another web server (Python's static file server over an empty directory): 404 for every path."""
    (tmp_path / "www").mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def mark(base_url: str, device: str) -> None:
    """``check``'s first look at the gateway (blocking urllib: off the loop the app runs on)."""
    await asyncio.to_thread(HttpWatch(base_url, device).mark)


async def test_unknown_device_and_a_wrong_path_are_told_apart(gateway_url: str) -> None:
    await mark(gateway_url, KNOWN)  # the gateway knows it: no error
    with pytest.raises(FieldError, match="does not know device %s" % UNKNOWN):
        await mark(gateway_url, UNKNOWN)
    for with_path in (f"{gateway_url}/api", f"{gateway_url}/gateway"):  # the gateway's 404 for a wrong path
        with pytest.raises(FieldError, match="does not look like a civicedge gateway, or the URL has a path") as info:
            await mark(with_path, UNKNOWN)
        assert "does not know device" not in str(info.value)


async def test_another_web_server_is_not_told_to_re_key_the_device(other_server_url: str) -> None:
    with pytest.raises(FieldError, match="does not look like a civicedge gateway, or the URL has a path") as info:
        await mark(other_server_url, UNKNOWN)
    assert "does not know device" not in str(info.value)
