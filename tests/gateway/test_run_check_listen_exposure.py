"""`gateway run --check` says what start-up warns about an `[http] listen` other machines can reach.

QA finding (test fails before): `listen = "0.0.0.0"` without an admin token passed the check without a
word, while the operators' data (/api/devices, per-device readings, /metrics) answered anyone on the network.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import make_env

from hil.cli.main import main


def _check(tmp_path: Path, listen: str, capsys: pytest.CaptureFixture[str], *, token: bool = False) -> str:
    """The http line of `run --check` for a config listening on ``listen`` (port 0: nothing is bound)."""
    http = 'enabled = true\nlisten = "%s"\nport = 0' % listen
    if token:
        token_file = tmp_path / "admin.token"
        token_file.write_text("c0ffee-4ab1-9e27-d35f-88a1b2c3d4e5\n")
        token_file.chmod(0o600)
        http += '\nadmin_token_file = "%s"' % token_file
    config = make_env(tmp_path)
    config.write_text(config.read_text().replace("enabled = false", http))
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out
    return next(line for line in out.splitlines() if line.startswith("http "))


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])
def test_every_interface_without_a_token_is_a_warning_on_the_http_line(
        tmp_path: Path, listen: str, capsys: pytest.CaptureFixture[str]) -> None:
    if ":" in listen:
        try:
            socket.getaddrinfo(listen, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError:
            pytest.skip("no IPv6 on this host")
    line = _check(tmp_path, listen, capsys)
    assert "; warning: HTTP on " in line and "can be reached from other machines" in line
    assert "/api/devices" in line and "/api/readings" in line and "/metrics" in line
    assert "listen on 127.0.0.1 behind a TLS reverse proxy that forwards only /opendata" in line


def test_with_a_token_the_line_says_what_the_token_does_not_guard(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _check(tmp_path, "0.0.0.0", capsys, token=True)
    assert "; warning: the admin API is served over plain HTTP on 0.0.0.0:0" in line
    assert "the token guards only /api/admin/: /api/devices" in line
    assert "c0ffee" not in line


@pytest.mark.parametrize("listen", ["127.0.0.1", "::1", "localhost"])
def test_a_loopback_listen_is_no_warning(tmp_path: Path, listen: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = _check(tmp_path, listen, capsys, token=True)
    assert line.endswith(": any free port") and "warning" not in line
