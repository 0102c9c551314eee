"""`civicedge gateway run` stops cleanly on every stop signal a service manager or terminal sends."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import GatewayProcess, PtyDevice


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_drains_checkpoints_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGHUP (a closed terminal or SSH session) killed the gateway with 129: no drain, WAL left behind."""
    dev = PtyDevice(KEYS)
    gw = GatewayProcess(make_env(tmp_path, serial=(dev.path,)), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        # "ready" can come before the transport has opened the pty (which drops what was written
        # before): re-send until acknowledged, as a device does
        for attempt in range(5):
            dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 4)])
            try:
                dev.wait_ack("bin-1", 3, timeout=3.0)
                break
            except AssertionError as exc:
                if attempt == 4:
                    raise AssertionError("%s; the gateway's log:\n%s" % (exc, gw.logs())) from None
        assert gw.proc is not None
        gw.proc.send_signal(sig)
        assert gw.proc.wait(20) == 0, gw.logs()
    finally:
        gw.kill()
        dev.close()
    assert "gateway gw-test stopped" in gw.logs()
    wal = tmp_path / "data" / "reports.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed into reports.sqlite at the stop
