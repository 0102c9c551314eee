"""The raw REPL wait holds its timeout while the port keeps sending bytes that are not a REPL prompt (a
wrong baud rate, another program writing to the port). Before, mpremote's read_until checked its overall
timeout only when no byte waited: ``provision --port <a pty streaming garbage> --repl-timeout 3`` took
until the bytes stopped (38 s here), keeping every byte received. Real ptys (os.openpty), a thread
writing random bytes to the board's end. Tests fail before."""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from hil.dut.dut import Dut, ReplFloodError
from hil.dut.errors import DeviceTimeoutError
from hil.cli.main import main as civicedge_main

pytestmark = [pytest.mark.timeout(90)]
FEED_S = 38.0  # how long the far end streams (the old wait ended only then)


@pytest.fixture
def streaming_pty() -> Iterator[tuple[str, list[int]]]:
    """A pty whose far end writes random bytes for :data:`FEED_S` (or until the test ends) and reads
    whatever is written to it; yields the port and a one-item list counting the bytes sent."""
    master, slave = os.openpty()
    stop = threading.Event()
    sent = [0]

    def feed() -> None:
        end = time.monotonic() + FEED_S
        while not stop.is_set() and time.monotonic() < end:
            readable, writable, _ = select.select([master], [master], [], 0.05)
            try:
                if readable:
                    os.read(master, 4096)
                if writable:
                    sent[0] += os.write(master, os.urandom(512))
            except OSError:
                return
            time.sleep(0.001)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield os.ttyname(slave), sent
    finally:
        stop.set()
        feeder.join(5)
        os.close(master)
        os.close(slave)


def test_the_wait_for_the_raw_repl_ends_on_time_and_says_why(streaming_pty: tuple[str, list[int]]) -> None:
    port, sent = streaming_pty
    with Dut(port) as dut:
        started = time.monotonic()
        with pytest.raises(ReplFloodError) as info:
            dut.enter_raw_repl(timeout_s=3.0)
        took = time.monotonic() - started
    assert took < 8.0, took  # 3 s, the Ctrl-C/drain before the wait and a loaded machine; not the feeder's 38 s
    err = info.value
    assert isinstance(err, DeviceTimeoutError) and err.operation == "enter raw REPL" and err.timeout_s == 3.0
    assert "kept arriving without a REPL prompt: wrong baud rate? another program writing to the port?" in str(err)
    assert len(err.received) <= 8192 < err.total <= sent[0]  # only the tail is kept


def test_a_silent_port_is_a_plain_timeout(silent_pty: str) -> None:
    with Dut(silent_pty) as dut:
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError) as info:
            dut.enter_raw_repl(timeout_s=1.0)
    assert time.monotonic() - started < 4.0
    assert not isinstance(info.value, ReplFloodError) and "kept arriving" not in str(info.value)


def test_provision_gives_up_after_repl_timeout(streaming_pty: tuple[str, list[int]], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    port, _ = streaming_pty
    started = time.monotonic()
    rc = civicedge_main(["provision", "--port", port, "--id", "sl-1", "--zone", "centre", "--location", "52.1,4.2",
                         "--registry", str(tmp_path / "registry"), "--repl-timeout", "3"])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert rc != 0 and took < 15.0, (took, err)  # not the feeder's 38 s
    assert "no MicroPython REPL answered on %s within 3 s" % port in err, err
    assert "Traceback" not in err
    assert "bytes kept arriving without a REPL prompt: wrong baud rate?" in err, err  # not a silent board
