"""hil_gateway serves boards on the qemu backend: their data UART (``socket://127.0.0.1:PORT``, QEMU's
``-serial tcp:…,server``) is one of the gateway's serial ports.

No Espressif QEMU here: a TCP server in the test plays QEMU's data UART (a board sending REPORT frames and
reading ACKs) behind a qemu BoardHandle, through the plugin's own wiring (gateway_for) and a real gateway
process; the plugin run on the qemu backend skips for the missing QEMU instead of erroring.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.protocol import FRAME_ACK, FRAME_REPORT, SerialDeframer, build_frame, encode_serial, parse_frame, verify_tag
from hil.backends.board import BoardHandle, make_identity
from hil.boards import load_board
from hil.pytest_plugin.gateway_process import gateway_for
from tests.hil.test_qemu_image import fake_release_image

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)

DATA_PORT = 22840  # this helper's range (22800-22899)


class QemuDataUart:
    """QEMU's data UART server: the board behind it re-sends each second what was not acknowledged."""

    def __init__(self, port: int, device: str, key: bytes, count: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.key = key
        now_window = int(time.time()) // 900 * 900
        body = {"t": "win", "k": "streetlight", "l": 900, "m": {"lux": 120, "lvl": 40, "lamp": 0}, "fw": "0.1.0"}
        self.frames = {seq: build_frame(FRAME_REPORT, device, seq, {**body, "w": now_window - 900 * (count + 1 - seq)},
                                        key) for seq in range(1, count + 1)}
        self.acked = 0
        self.bad: list[object] = []  # corrupt or unverifiable frames from the gateway
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        deframer = SerialDeframer()
        conn.settimeout(0.05)
        next_send = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_send and self.acked < len(self.frames):
                conn.sendall(b"".join(encode_serial(f) for s, f in self.frames.items() if s > self.acked))
                next_send = time.monotonic() + 1.0
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            if not data:
                return
            for item in deframer.feed(data):
                frame = parse_frame(item) if isinstance(item, bytes) else None
                if frame is None or frame.type != FRAME_ACK or not verify_tag(frame, self.key):
                    self.bad.append(item)
                    continue
                self.acked = max(self.acked, frame.seq)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


def test_hil_gateway_reads_a_qemu_boards_socket_data_uart(tmp_path: Path) -> None:
    definition = load_board("streetlight-esp32")
    identity = make_identity(definition, device_id="sl-qemu-1")
    board = BoardHandle(backend="qemu", definition=definition, identity=identity, workdir=tmp_path / "board",
                        state="reporting", console_url="socket://127.0.0.1:1",
                        data_url=f"socket://127.0.0.1:{DATA_PORT}")
    uart = QemuDataUart(DATA_PORT, identity["id"], board.key, count=3)
    gateway = gateway_for([board], workdir=tmp_path / "gateway", radio_url=None)
    gateway.http = False
    try:
        assert gateway.serial_ports == [f"socket://127.0.0.1:{DATA_PORT}"]
        gateway.start()
        rows = gateway.wait_for_reports(count=3, device_id=identity["id"], timeout_s=30)
        assert sorted(r["seq"] for r in rows) == [1, 2, 3]
        assert all(r["link"] == f"serial:socket://127.0.0.1:{DATA_PORT}" for r in rows), rows
        end = time.monotonic() + 10
        while uart.acked < 3:
            assert time.monotonic() < end, (uart.acked, gateway.output)
            time.sleep(0.05)
        assert not uart.bad, uart.bad
    finally:
        gateway.stop()
        uart.close()
    assert f'port = "socket://127.0.0.1:{DATA_PORT}"' in gateway.config_path.read_text()


STANDIN = """#!{python}
# Stands in for an upstream qemu-system-xtensa: it has no esp32 machine, so the backend finds no Espressif QEMU.
import sys
if sys.argv[1:3] == ["-machine", "help"]:
    print("Supported machines are:")
    print("sim                  xtensa simulator")
    sys.exit(0)
sys.exit(1)
"""


def test_hil_gateway_on_the_qemu_backend_without_espressif_qemu_skips(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to error at once (the gateway could not open socket://); now it waits for the board, whose
    fixture skips where Espressif QEMU cannot run, with the reason."""
    bindir = pytester.path / "bin"
    bindir.mkdir()
    exe = bindir / "qemu-system-xtensa"
    exe.write_text(STANDIN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    image = pytester.path / "ESP32_GENERIC-stand-in.bin"
    image.write_bytes(fake_release_image(0x1000))
    pytester.makepyfile(test_qemu_gw="""
def test_gateway(hil_board, hil_gateway):
    raise AssertionError("must not run")
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--hil-backend", "qemu", "--hil-qemu-image",
                                str(image))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*qemu backend unavailable*"])
    assert "hil_gateway:" not in result.stdout.str()
