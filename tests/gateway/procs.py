"""Real peers for gateway tests: pty "devices", a gateway subprocess, a mosquitto broker."""

from __future__ import annotations

import getpass
import json
import threading
import os
import select
import signal
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt

from gateway.protocol import FRAME_ACK, SerialDeframer, encode_serial, parse_frame, verify_tag
from gateway.protocol.frame import decode_body

REPO = Path(__file__).resolve().parents[2]


def stop_process(proc: "subprocess.Popen[Any]") -> None:
    """Terminate ``proc`` if it still runs; kill it if it has not exited 10 s later."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class EventProcess:
    """A helper script as a subprocess that prints one JSON event per line; the events are collected."""

    def __init__(self, args: list[str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def close(self) -> None:
        stop_process(self.proc)


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PtyDevice:
    """The board end of a real pty pair: writes COBS frames, reads and verifies ACKs.

    The gateway opens ``path`` (the slave) with pyserial exactly as it opens a USB serial port.
    """

    def __init__(self, keys: dict[str, bytes], link: Path | None = None) -> None:
        self.keys = keys
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo/line discipline before the gateway configures the port
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.link = link
        if link is not None:
            if link.is_symlink():
                link.unlink()
            link.symlink_to(self.path)
        self._deframer = SerialDeframer()
        self.acks: dict[str, int] = {}
        self.ack_bodies: list[tuple[str, int, dict[str, Any]]] = []  # (device, seq, body) of every ACK read

    def send(self, frames: list[bytes]) -> None:
        data = b"".join(encode_serial(f) for f in frames)
        while data:
            select.select([], [self.master], [], 5)
            try:
                n = os.write(self.master, data)
            except BlockingIOError:
                continue
            data = data[n:]

    def send_raw(self, data: bytes) -> None:
        os.write(self.master, data)

    def pump(self, seconds: float) -> None:
        """Read ACKs for ``seconds``."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([self.master], [], [], min(left, 0.05))
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                continue
            for item in self._deframer.feed(data):
                assert isinstance(item, bytes), "gateway sent a corrupt frame: %r" % item
                frame = parse_frame(item)
                assert frame.type == FRAME_ACK
                assert verify_tag(frame, self.keys[frame.device_id]), "ACK tag does not verify"
                self.acks[frame.device_id] = max(self.acks.get(frame.device_id, 0), frame.seq)
                self.ack_bodies.append((frame.device_id, frame.seq, decode_body(frame.body)))

    def wait_ack(self, device: str, seq: int, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while self.acks.get(device, 0) < seq:
            if time.monotonic() > end:
                raise AssertionError("no ACK for %s seq %d (have %r)" % (device, seq, self.acks))
            self.pump(0.05)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class GatewayProcess:
    """``civicedge gateway run`` as a subprocess (stdout: the ready line; stderr: logs in a file)."""

    def __init__(self, config: Path, log_path: Path, *, verbose: int = 0) -> None:
        self.config = config
        self.log_path = log_path
        self.verbose = verbose
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._log = self.log_path.open("a")
        args = [sys.executable, "-m", "hil.cli.main"] + ["-v"] * self.verbose + ["gateway", "run", "--config",
                                                                                 str(self.config)]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline()
                if "ready" in line:
                    return
                if not line and self.proc.poll() is not None:
                    break
        self.kill()
        raise AssertionError("gateway did not start:\n" + self.log_path.read_text())

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        """Wait until ``text`` appears in the gateway's log (needs verbose >= 1 for INFO lines)."""
        end = time.monotonic() + timeout
        while text not in self.logs():
            if time.monotonic() > end or (self.proc is not None and self.proc.poll() is not None):
                raise AssertionError("%r not in gateway log:\n%s" % (text, self.logs()))
            time.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def mosquitto_binary() -> str | None:
    """The mosquitto executable (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    import shutil

    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


class Mosquitto:
    """A real mosquitto broker on a free loopback port, with persistence so sessions survive restarts.

    Args:
        workdir: its config, log and persistence file.
        settings: extra config lines after the listener (TLS files, ``password_file``, ``max_packet_size``).
        anonymous: ``allow_anonymous``.
    """

    def __init__(self, workdir: Path, settings: str = "", *, anonymous: bool = True) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.anonymous = anonymous
        self.conf = workdir / "mosquitto.conf"
        self._write_conf(settings)
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_conf(self, settings: str) -> None:
        self.conf.write_text(
            "per_listener_settings false\nlistener %d 127.0.0.1\nallow_anonymous %s\npersistence true\n"
            "persistence_location %s/\nautosave_interval 1\nmax_queued_messages 100000\n%s"
            # as root mosquitto would switch to user "mosquitto", who cannot write our temp dir
            "user %s\n" % (self.port, "true" if self.anonymous else "false", self.workdir, settings, getpass.getuser())
        )

    def start(self, timeout: float = 10.0, *, settings: str | None = None) -> None:
        """Start (again, on the same port); ``settings`` replaces the extra config lines."""
        if settings is not None:
            self._write_conf(settings)
        with self.log.open("ab") as log:
            binary = mosquitto_binary()
            assert binary is not None, "mosquitto is not installed"
            self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=log, stderr=log)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start: %s" % self.log.read_text())

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash (nothing saved since the last autosave)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Subscriber:
    """A persistent-session QoS 1 subscriber (survives broker restarts with queued messages)."""

    def __init__(self, port: int, topic: str = "city/#") -> None:
        self.messages: list[tuple[str, dict[str, object]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub", clean_session=False)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not self.subscribed.is_set():
            assert time.monotonic() < end, "subscription not acknowledged"
            time.sleep(0.02)

    def seqs(self, device: str) -> list[int]:
        with self._lock:
            return [int(p["seq"]) for _, p in self.messages if p["device"] == device]  # type: ignore[call-overload]

    def wait(self, device: str, count: int, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while len(set(self.seqs(device))) < count:
            if time.monotonic() > end:
                raise AssertionError("got %d/%d messages: %r" % (len(set(self.seqs(device))), count, self.seqs(device)))
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
