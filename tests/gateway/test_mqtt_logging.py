"""What a default (WARNING-level) run says about the MQTT broker: its first failure and each loss,
rate-limited, and the reconnection that ends a warned outage (docs/mqtt.md, "Logs")."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import SimpleNamespace
from typing import Any, Callable

import aiomqtt
import pytest

from gateway.config.model import MqttConfig
from gateway.metrics import GatewayMetrics
from gateway.upstream import mqtt
from gateway.upstream.mqtt import MqttUpstream

LOGGER = "gateway.upstream.mqtt"


def upstream(port: int = 1883) -> MqttUpstream:
    store: Any = SimpleNamespace(outbox_depth=7, outbox_bytes=700)
    return MqttUpstream(MqttConfig(host="127.0.0.1", port=port), store=store, run_in_store=lambda *a: None,
                        stored=asyncio.Event(), metrics=GatewayMetrics("gw"), gateway_id="gw")


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for lvl, m in records(caplog) if lvl >= logging.WARNING]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait for ``condition`` (polled), failing after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in %.0f s" % timeout_s
        await asyncio.sleep(0.01)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt, "BACKOFF_MIN_S", 0.01)
    monkeypatch.setattr(mqtt, "BACKOFF_MAX_S", 0.02)


async def test_broker_unreachable_from_the_start_is_one_warning(caplog: pytest.LogCaptureFixture,
                                                                fast_backoff: None) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    task = asyncio.create_task(upstream(free_port()).run())  # nothing listens there: refused at once

    def retries() -> int:
        return sum("still unreachable" in m for lvl, m in records(caplog) if lvl == logging.INFO)

    await until(lambda: retries() >= 3)  # on events, not a fixed time: CI machines are slow and shared
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    warned = warnings(caplog)
    assert len(warned) == 1 and "unreachable" in warned[0] and "127.0.0.1" in warned[0]
    assert sum("still unreachable" in m for lvl, m in records(caplog) if lvl == logging.INFO) >= 3


class ScriptedClient:
    """Stands in for aiomqtt.Client: each connect does the next step of ``script``.

    ``refuse``: the connect fails; ``drop``: it succeeds and the connection is lost at once;
    ``hold``: it succeeds and stays up.
    """

    script: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.step = ScriptedClient.script.pop(0) if ScriptedClient.script else "hold"

    async def __aenter__(self) -> ScriptedClient:
        if self.step == "refuse":
            raise aiomqtt.MqttError("[Errno 111] Connection refused")
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def run_script(script: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiomqtt, "Client", ScriptedClient)
    monkeypatch.setattr(ScriptedClient, "script", list(script))
    up = upstream()

    async def drain(client: ScriptedClient) -> None:
        if client.step == "drop":
            raise aiomqtt.MqttError("Disconnected during message iteration")
        await asyncio.Event().wait()

    monkeypatch.setattr(up, "_drain_forever", drain)
    task = asyncio.create_task(up.run())
    await until(lambda: not ScriptedClient.script and up.connected)  # every step done, held up at the end
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_each_loss_and_reconnection_is_a_warning(caplog: pytest.LogCaptureFixture, fast_backoff: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt, "OUTAGE_WARN_INTERVAL_S", 0.0)  # no rate limit
    caplog.set_level(logging.INFO, logger=LOGGER)
    await run_script(["refuse", "refuse", "drop", "refuse", "refuse", "hold"], monkeypatch)
    warned = warnings(caplog)
    assert len(warned) == 4, warned
    assert "unreachable" in warned[0] and "outbox keeps 7" in warned[0]
    assert warned[1].startswith("connected to MQTT broker 127.0.0.1:1883 after")
    assert " lost " in warned[2]
    assert warned[3].startswith("connected to MQTT broker 127.0.0.1:1883 after")


async def test_flapping_broker_is_not_a_warning_per_reconnect(caplog: pytest.LogCaptureFixture, fast_backoff: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    await run_script(["drop"] * 10, monkeypatch)
    warned = warnings(caplog)
    assert len(warned) == 2 and " lost " in warned[0] and "connected" in warned[1], warned
    assert sum(" lost " in m for _, m in records(caplog)) == 10


def test_outage_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(mqtt, "time", SimpleNamespace(monotonic=lambda: now[0]))
    caplog.set_level(logging.INFO, logger=LOGGER)
    up = upstream()
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
