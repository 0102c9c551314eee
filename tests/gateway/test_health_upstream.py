"""The gateway's health names an upstream stalled behind one message, not only a disconnected one."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config
from gateway.service import Gateway
from gateway.upstream.mqtt import HEALTH_STALLED


async def test_a_stalled_upstream_is_a_health_reason_while_connected(tmp_path: Path) -> None:
    """Review: while the broker kept closing the connection on one message, the upstream was
    connected between the closes and /healthz then said nothing about the stall."""
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nid = "gw-t"\ndata_dir = "{tmp_path / "data"}"\n[http]\nenabled = false\n'
                      '[mqtt]\nhost = "127.0.0.1"\nport = 9\n')
    gw = Gateway(load_config(config))
    await gw.start()
    try:
        assert gw.upstream is not None
        assert gw._health() == ["mqtt broker not connected yet (outbox depth 0)"]
        gw.upstream.connected, gw.upstream.problem = True, HEALTH_STALLED  # between two of the broker's closes
        assert gw._health() == [HEALTH_STALLED + " (outbox depth 0)"]
        gw.upstream.problem = None  # delivering again
        assert gw._health() == []
    finally:
        await gw.stop()
