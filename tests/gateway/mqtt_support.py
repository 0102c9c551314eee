"""Shared helpers of the MQTT upstream tests (test_mqtt_hardening.py, test_mqtt_review.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pytest
from procs import Mosquitto, mosquitto_binary

from gateway.config import load_config
from gateway.config.model import MqttConfig
from gateway.metrics import GatewayMetrics
from gateway.storage.store import ReportStore
from gateway.upstream.mqtt import MqttUpstream


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "%s: not within %.0f s" % (what, timeout_s)
        await asyncio.sleep(0.05)


def upstream(store: ReportStore, port: int, **over: Any) -> MqttUpstream:
    """An upstream to a loopback broker on ``port``, topic prefix ``city``, ``over`` any other [mqtt] value."""
    cfg = MqttConfig(**{"host": "127.0.0.1", "port": port, "topic_prefix": "city", **over})
    return MqttUpstream(cfg, store=store, run_in_store=lambda fn, *a: asyncio.sleep(0, fn(*a)),
                        stored=asyncio.Event(), metrics=GatewayMetrics("gw"), gateway_id="gw")


class Running:
    """An upstream task, cancelled on exit."""

    def __init__(self, up: MqttUpstream) -> None:
        self.up = up
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttUpstream:
        self.task = asyncio.create_task(self.up.run())
        return self.up

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def load_mqtt(tmp_path: Path, body: str) -> MqttConfig:
    """The ``[mqtt]`` section of a gateway config whose [mqtt] is ``host = "127.0.0.1"`` plus ``body``."""
    path = tmp_path / "gw.toml"
    path.write_text('[gateway]\nid = "gw"\ndata_dir = "data"\n[http]\nenabled = false\n[mqtt]\nhost = "127.0.0.1"\n'
                    + body)
    cfg = load_config(path)
    assert cfg.mqtt is not None
    return cfg.mqtt


def mosquitto(workdir: Path, settings: str = "", *, anonymous: bool = True, start: bool = False) -> Mosquitto:
    """A real mosquitto (:class:`procs.Mosquitto`) with these extra settings, started when ``start``;
    skips where mosquitto is not installed."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (scripts/setup installs it)")
    b = Mosquitto(workdir, settings, anonymous=anonymous)
    if start:
        b.start()
    return b
