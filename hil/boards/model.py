"""Typed, validated board definition (what :func:`hil.boards.load_board` returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IoMode = Literal["in", "out", "adc", "pwm"]
SleepMode = Literal["none", "light", "deep"]

CAPABILITY_NAMES: frozenset[str] = frozenset({"console", "uart", "gpio", "adc", "pwm", "ble", "deepsleep"})
"""Vocabulary of capabilities a board (and a HIL backend) can publish."""


@dataclass(frozen=True)
class IoPin:
    """One sensor or actuator connection.

    Attributes:
        name: role the firmware looks it up by (``pir``, ``light``, ``lamp``, ...).
        mode: ``in`` (digital input), ``out`` (digital output), ``adc`` or ``pwm``.
        pin: GPIO number.
        pull: ``up``, ``down`` or ``none`` (digital inputs).
        active: logic level meaning "active" (digital inputs/outputs).
        atten: ADC attenuation (``0db``, ``2.5db``, ``6db``, ``11db``).
        freq: PWM frequency in Hz.
    """

    name: str
    mode: IoMode
    pin: int
    pull: str = "none"
    active: int = 1
    atten: str = "11db"
    freq: int = 1000

    def to_device(self) -> dict[str, Any]:
        """Return the compact form written to ``/board.json``."""
        out: dict[str, Any] = {"mode": self.mode, "pin": self.pin}
        if self.mode == "in":
            out.update(pull=self.pull, active=self.active)
        elif self.mode == "out":
            out.update(active=self.active)
        elif self.mode == "adc":
            out.update(atten=self.atten)
        else:
            out.update(freq=self.freq)
        return out


@dataclass(frozen=True)
class UartLink:
    """UART data link to the gateway (not the console)."""

    id: int
    tx: int
    rx: int
    baud: int = 115200


@dataclass(frozen=True)
class BleLink:
    """BLE GATT peripheral link (docs/protocol.md section 5)."""

    mtu: int = 185
    adv_interval_ms: int = 500


@dataclass(frozen=True)
class SleepSettings:
    """How the board rests between readings.

    Attributes:
        mode: ``none`` (stays awake), ``light`` or ``deep`` (machine.deepsleep between readings).
        interval_s: seconds between readings.
        wake_pins: io names whose pins wake the board from deep sleep.
    """

    mode: SleepMode
    interval_s: int
    wake_pins: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoardDefinition:
    """A validated board: chip, pins, links, calibration, settings.

    Attributes:
        name: board name (file stem), e.g. ``streetlight-esp32``.
        title: human-readable title.
        chip: chip name (``esp32``, ``esp32c3``).
        kind: device kind from the privacy policy (``streetlight``, ``bin``).
        module: module / dev-kit description.
        source: file the definition was read from.
        io: sensors and actuators by role name.
        uart: UART data link, if any.
        ble: BLE link, if any.
        recovery_pin: GPIO that, held at ``recovery_level`` during boot, skips main.py.
        recovery_level: level of the recovery pin meaning "recovery".
        calibration: per-sensor calibration constants (integers, or integer tables).
        sleep: sleep settings.
        watchdog_ms: watchdog timeout.
        app: application settings of the kind (dimming schedule as minutes of the day, thresholds).
        warnings: what is valid but likely a mistake (a shipped board's name on a different
            definition); each is also logged at WARNING when the board is loaded.
    """

    name: str
    title: str
    chip: str
    kind: str
    module: str
    source: Path
    io: dict[str, IoPin]
    uart: UartLink | None
    ble: BleLink | None
    recovery_pin: int | None
    recovery_level: int
    calibration: dict[str, dict[str, Any]]
    sleep: SleepSettings
    watchdog_ms: int
    app: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def capabilities(self) -> frozenset[str]:
        """Capabilities this board offers (subset of :data:`CAPABILITY_NAMES`)."""
        caps = {"console"}
        modes = {p.mode for p in self.io.values()}
        if modes & {"in", "out"}:
            caps.add("gpio")
        if "adc" in modes:
            caps.add("adc")
        if "pwm" in modes:
            caps.add("pwm")
        if self.uart is not None:
            caps.add("uart")
        if self.ble is not None:
            caps.add("ble")
        if self.sleep.mode == "deep":
            caps.add("deepsleep")
        return frozenset(caps)

    @property
    def pins(self) -> dict[int, str]:
        """Every GPIO the board uses, mapped to the field that uses it."""
        used: dict[int, str] = {}
        if self.recovery_pin is not None:
            used[self.recovery_pin] = "recovery.pin"
        for io in self.io.values():
            used[io.pin] = f"io.{io.name}.pin"
        if self.uart is not None:
            used[self.uart.tx] = "links.uart.tx"
            used[self.uart.rx] = "links.uart.rx"
        return used

    def to_device_config(self) -> dict[str, Any]:
        """Return the JSON-ready dict written to ``/board.json`` on the device.

        Only plain JSON types; pins as integers; the dimming schedule as ``[minute_of_day, level]``
        pairs sorted by minute, so the firmware does no parsing.
        """
        links: dict[str, Any] = {}
        if self.uart is not None:
            links["uart"] = {"id": self.uart.id, "tx": self.uart.tx, "rx": self.uart.rx, "baud": self.uart.baud}
        if self.ble is not None:
            links["ble"] = {"mtu": self.ble.mtu, "adv_interval_ms": self.ble.adv_interval_ms}
        return {
            "schema": 1,
            "name": self.name,
            "chip": self.chip,
            "kind": self.kind,
            "recovery": None if self.recovery_pin is None else {"pin": self.recovery_pin, "level": self.recovery_level},
            "io": {name: io.to_device() for name, io in sorted(self.io.items())},
            "links": links,
            "cal": {k: dict(v) for k, v in sorted(self.calibration.items())},
            "sleep": {"mode": self.sleep.mode, "interval_s": self.sleep.interval_s, "wake": list(self.sleep.wake_pins)},
            "wdt_ms": self.watchdog_ms,
            "app": dict(self.app),
            "caps": sorted(self.capabilities),
        }
