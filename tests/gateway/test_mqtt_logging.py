"""What a default (WARNING-level) run says about the MQTT broker: its first failure and each loss,
rate-limited, and the reconnection that ends a warned outage (docs/mqtt.md, "Logs"). Against a real
mosquitto behind a TCP gate the test opens (forwarding), closes (connections refused by the kernel) and
makes drop connections, with the real upstream and a real report store."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from mqtt_support import Running, until, upstream
from procs import Mosquitto, Subscriber, free_port

from gateway.storage.store import ReportRecord, ReportStore
from gateway.upstream import mqtt
from gateway.upstream.mqtt import encode_report

LOGGER = "gateway.upstream.mqtt"

# MQTT control packet types (the high nibble of a packet's first byte)
CONNACK, PUBLISH = 2, 3


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for lvl, m in records(caplog) if lvl >= logging.WARNING]


def count(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """Log lines of the upstream (any level) that contain ``text``."""
    return sum(text in m for _, m in records(caplog))


def record(seq: int) -> ReportRecord:
    return ReportRecord("bin-1", seq, "bin", "north", "win", 900 * seq, 900, {"fill": 10}, {}, [], None, 1.0,
                        "serial:x", "00" * 32)


def store_at(tmp_path: Path) -> ReportStore:
    return ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"))


class Gate:
    """A TCP proxy on its own loopback port in front of a real broker. Closed (the start), nothing listens
    on the port: the gateway's connects are refused by the kernel. Open, each connection is forwarded to the
    broker; the next ``drops`` of them are closed by the gate once ``on`` passes: the broker's CONNACK (an
    established connection lost) or the gateway's first PUBLISH (not forwarded). With ``then_close`` the
    gate stops listening at the last such drop, before closing it: the reconnects are refused again."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.port = free_port()
        self.server: asyncio.AbstractServer | None = None
        self.connections = 0  # connections accepted
        self.dropped = 0  # connections the gate closed
        self._drops = 0
        self._on = CONNACK
        self._then_close = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def open(self, drops: int = 0, on: int = CONNACK, then_close: bool = False) -> None:
        self._drops, self._on, self._then_close = drops, on, then_close
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def close(self) -> None:
        """Stop listening (connections made stay up)."""
        if self.server is not None:
            self.server.close()
            self.server = None

    async def aclose(self) -> None:
        """Stop listening, close the connections and wait for their handlers to end."""
        self.close()
        for w in list(self._writers):
            w.close()
        await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), 10)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        drop = self._drops > 0
        if drop:
            self._drops -= 1
        last = drop and self._drops == 0
        br, bw = await asyncio.open_connection("127.0.0.1", self.broker.port)
        self._writers.update((cw, bw))
        done = asyncio.Event()
        pipes = [asyncio.create_task(self._pipe(cr, bw, PUBLISH if drop and self._on == PUBLISH else None, done)),
                 asyncio.create_task(self._pipe(br, cw, CONNACK if drop and self._on == CONNACK else None, done))]
        await done.wait()  # one side closed, or the packet to drop on passed
        if drop:
            if self._on == CONNACK:
                await asyncio.sleep(0.05)  # connected for a moment, as a broker that closes it soon after
            if last and self._then_close:
                self.close()
            self.dropped += 1
        for p in pipes:
            p.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        for w in (cw, bw):
            w.close()
            self._writers.discard(w)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop_at: int | None,
                    done: asyncio.Event) -> None:
        """Copy ``reader`` to ``writer``; set ``done`` at EOF, or at a chunk starting with a ``stop_at``
        packet (a CONNACK is forwarded first, a PUBLISH is not)."""
        try:
            while data := await reader.read(65536):
                if stop_at == PUBLISH and data[0] >> 4 == PUBLISH:
                    break
                writer.write(data)
                await writer.drain()
                if stop_at == CONNACK and data[0] >> 4 == CONNACK:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            done.set()


async def test_broker_unreachable_from_the_start_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                fast_backoff: None) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = store_at(tmp_path)
    try:
        async with Running(upstream(store, free_port())):  # nothing listens there: refused at once
            # on events, not a fixed time: CI machines are slow and shared
            await until(lambda: count(caplog, "still unreachable") >= 3, 20, "three retries")
    finally:
        store.close()
    warned = warnings(caplog)
    assert len(warned) == 1 and "unreachable" in warned[0] and "127.0.0.1" in warned[0]
    assert sum("still unreachable" in m for lvl, m in records(caplog) if lvl == logging.INFO) >= 3


@pytest.mark.mqtt
@pytest.mark.timeout(60)
async def test_each_loss_and_reconnection_is_a_warning(tmp_path: Path, broker: Mosquitto,
                                                       caplog: pytest.LogCaptureFixture, fast_backoff: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused twice, connected, dropped on its publish, refused twice, connected: the first failure, the
    reconnection, the loss and the reconnection are the four warnings, with the outbox as it was."""
    monkeypatch.setattr(mqtt, "OUTAGE_WARN_INTERVAL_S", 0.0)  # no rate limit: each outage is warned about
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = store_at(tmp_path)
    store.insert_batch([record(s) for s in (1, 2, 3)])
    sub = Subscriber(broker.port)
    sub.wait_subscribed()
    gate = Gate(broker)
    try:
        async with Running(upstream(store, gate.port)) as up:
            await until(lambda: count(caplog, "unreachable") >= 2, 20, "refused twice")
            await gate.open(drops=1, on=PUBLISH, then_close=True)
            await until(lambda: gate.dropped == 1 and count(caplog, " lost ") == 1, 20, "connected, then lost")
            refused = count(caplog, "unreachable")
            await until(lambda: count(caplog, "unreachable") >= refused + 2, 20, "refused twice more")
            assert gate.connections == 1  # the gate was closed: those were refused, not connections
            await gate.open()
            await until(lambda: store.outbox_depth == 0, 20, "the outbox drained")
            await until(lambda: sorted(set(sub.seqs("bin-1"))) == [1, 2, 3], 10, "the reports received")
            assert up.connected and gate.connections == 2
    finally:
        await gate.aclose()
        sub.close()
        store.close()
    where = "127.0.0.1:%d" % gate.port
    warned = warnings(caplog)
    assert len(warned) == 4, warned
    assert warned[0].startswith("MQTT broker %s unreachable (" % where) and "outbox keeps 3 message(s)" in warned[0]
    assert warned[1].startswith("connected to MQTT broker %s after" % where), warned
    assert warned[1].endswith("s down; draining 3 queued message(s)"), warned
    assert warned[2].startswith("MQTT broker %s lost (the broker closed the connection)" % where) and "outbox keeps 3 message(s)" in warned[2]
    assert warned[3].startswith("connected to MQTT broker %s after" % where), warned
    assert warned[3].endswith("s down; draining 3 queued message(s)"), warned


@pytest.mark.mqtt
@pytest.mark.timeout(60)
async def test_flapping_broker_is_not_a_warning_per_reconnect(tmp_path: Path, broker: Mosquitto,
                                                              caplog: pytest.LogCaptureFixture,
                                                              fast_backoff: None) -> None:
    """Ten connections closed soon after the CONNACK, then one that holds: within the 60 s rate limit only
    the first loss and the reconnection that ends it are warnings; every loss is still logged (INFO)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = store_at(tmp_path)
    gate = Gate(broker)
    await gate.open(drops=10, on=CONNACK)
    try:
        async with Running(upstream(store, gate.port)) as up:
            await until(lambda: gate.dropped == 10 and gate.connections == 11, 30, "ten connections dropped")
            await until(lambda: up.connected and count(caplog, "connected to MQTT broker") == 11, 10,
                        "the eleventh held")
    finally:
        await gate.aclose()
        store.close()
    warned = warnings(caplog)
    assert len(warned) == 2, warned
    assert warned[0].startswith("MQTT broker 127.0.0.1:%d lost (the broker closed the connection)" % gate.port), warned
    assert warned[1].startswith("connected to MQTT broker 127.0.0.1:%d after" % gate.port), warned
    assert count(caplog, " lost ") == 10, records(caplog)


def test_outage_warnings_are_rate_limited(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(mqtt, "time", SimpleNamespace(monotonic=lambda: now[0]))
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = store_at(tmp_path)
    up = upstream(store, 1883)
    exc = OSError("refused")

    def at(t: float, event: str) -> tuple[int, str]:
        now[0] = t
        caplog.clear()
        if event == "up":
            up._log_connected()
        else:
            up._log_down(exc, lost=event == "lost", retry_s=1.0)
        (rec,) = records(caplog)
        return rec

    try:
        assert at(0, "down")[0] == logging.WARNING  # first failure to connect
        assert at(1, "down")[0] == logging.INFO  # its retries
        assert at(2, "up")[0] == logging.WARNING  # the end of a warned outage
        assert at(10, "lost")[0] == logging.INFO  # within the interval of the last warning
        assert at(11, "down")[0] == logging.INFO
        level, text = at(70, "down")  # that outage is warned about once the limit allows
        assert level == logging.WARNING and "unreachable for 60 s" in text and "more outage" not in text
        assert at(71, "up")[0] == logging.WARNING
        assert at(80, "lost")[0] == logging.INFO
        assert at(81, "up")[0] == logging.INFO  # the end of an outage logged at INFO
        level, text = at(200, "lost")
        assert level == logging.WARNING and "(1 more outage(s) since the last warning)" in text
    finally:
        store.close()
