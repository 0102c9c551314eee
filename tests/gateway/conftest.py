"""Fixtures of the gateway suite."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from gateway.registry import Registry

sys.path.insert(0, str(Path(__file__).resolve().parent))

KEYS = {"bin-1": bytes(range(32)), "bin-2": bytes(range(1, 33)), "sl-1": bytes(range(2, 34))}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A real registry with bin-1, bin-2 (bins) and sl-1 (streetlight), fixed keys."""
    reg = Registry(tmp_path / "registry")
    for dev, key in KEYS.items():
        kind = "streetlight" if dev.startswith("sl") else "bin"
        reg.add(dev, kind=kind, zone="north" if dev != "bin-2" else "south", lat="52.37", lon="4.89", key=key)
    return reg


def make_env(tmp_path: Path, *, serial: tuple[str, ...] = (), mqtt_port: int | None = None, batch_ms: int = 20,
             extra: str = "", outbox_max_bytes: int | None = None) -> Path:
    """Write a gateway config (data under tmp_path/data, HTTP off) with the KEYS devices registered."""
    reg = Registry(tmp_path / "data" / "registry")
    for dev, key in KEYS.items():
        if reg.lookup(dev) is None:
            kind = "streetlight" if dev.startswith("sl") else "bin"
            reg.add(dev, kind=kind, zone="north", lat="52.37", lon="4.89", key=key)
    reg.close()
    lines = ['[gateway]', 'id = "gw-test"', 'data_dir = "data"', '[storage]', 'batch_ms = %d' % batch_ms,
             '[http]', 'enabled = false']
    for port in serial:
        lines += ['[[serial]]', 'port = "%s"' % port]
    if mqtt_port is not None:
        lines += ['[mqtt]', 'host = "127.0.0.1"', 'port = %d' % mqtt_port, 'topic_prefix = "city"',
                  'keepalive_s = 5']
        if outbox_max_bytes is not None:
            lines.append('outbox_max_bytes = %d' % outbox_max_bytes)
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real mosquitto on a free loopback port (skips where mosquitto is not installed)."""
    from procs import Mosquitto, mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (scripts/setup installs it)")
    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def radio() -> Iterator[str]:
    """A virtual BLE radio (the simulator's link relay); its ws:// URL."""
    import hil.sim.radio.relay as relay
    handle = relay.start_relay()
    yield handle.url
    handle.stop()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MQTT upstream retries after 0.05..0.2 s instead of 0.5..15 s."""
    from gateway.upstream import mqtt

    monkeypatch.setattr(mqtt, "BACKOFF_MIN_S", 0.05)
    monkeypatch.setattr(mqtt, "BACKOFF_MAX_S", 0.2)
