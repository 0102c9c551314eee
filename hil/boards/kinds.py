"""What each device kind needs from its board file: io roles, calibration and app settings.

The firmware app of a kind looks its sensors up by these role names, so the loader rejects a
board that lacks one (``MissingFieldError``) before it reaches a device.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindSpec:
    """Board-file requirements of one device kind.

    Attributes:
        io: required io role -> allowed modes.
        calibration: calibration table -> integer constant names (``table`` marks an integer table).
        app_ints: integer app settings -> (low, high) bounds.
        needs_schedule: whether ``app.schedule`` (dimming schedule) is required.
    """

    io: dict[str, tuple[str, ...]]
    calibration: dict[str, tuple[str, ...]]
    app_ints: dict[str, tuple[int, int]]
    needs_schedule: bool


KINDS: dict[str, KindSpec] = {
    "streetlight": KindSpec(
        io={"pir": ("in",), "light": ("adc",), "lamp": ("pwm",), "lamp_current": ("adc",)},
        calibration={
            "light": ("lux_per_volt",),
            "lamp": ("watts", "mains_v", "ma_full", "ma_per_volt", "offset_uv", "tolerance_pct", "min_level"),
        },
        app_ints={
            "tz_offset_min": (-720, 840),
            "on_lux": (0, 100000),
            "off_lux": (0, 100000),
            "boost_level": (0, 100),
            "courtesy_s": (0, 3600),
        },
        needs_schedule=True,
    ),
    "bin": KindSpec(
        io={"trig": ("out",), "echo": ("in",), "temp": ("adc",), "battery": ("adc",), "tilt": ("in",), "lid": ("in",)},
        calibration={
            "fill": ("empty_mm", "full_mm", "pings", "outlier_mm", "timeout_us"),
            "temp": ("table",),
            "battery": ("divider_num", "divider_den", "empty_mv", "full_mv"),
        },
        app_ints={"fire_c": (20, 200), "fire_rise_c_per_min": (1, 100)},
        needs_schedule=False,
    ),
}
"""Requirements by device kind (the kinds of ``firmware/policy.json``)."""
