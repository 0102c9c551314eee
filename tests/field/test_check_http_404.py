"""QA: ``check --gateway`` called any HTTP 404 "does not know device" (inviting a re-key of a healthy
board) when the URL had a path or pointed at another web server. Only the gateway's unknown_device is."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from hil.field.check import HttpWatch
from hil.field.errors import FieldError


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        # Like the gateway: its JSON error for /api/devices/ID; anything else a plain 404 page.
        body = (b'{"error": {"code": "unknown_device", "message": "no device"}}'
                if self.path.startswith("/api/devices/") else b"<h1>Not Found</h1>")
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_device_and_a_wrong_path_are_told_apart(server_url: str) -> None:
    with pytest.raises(FieldError, match="does not know device sl-0100"):
        HttpWatch(server_url, "sl-0100").mark()
    with pytest.raises(FieldError, match="does not look like a civicedge gateway, or the URL has a path") as info:
        HttpWatch(f"{server_url}/api", "sl-0100").mark()
    assert "does not know device" not in str(info.value)
