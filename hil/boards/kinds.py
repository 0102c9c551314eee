"""What each device kind needs from its board file: io roles, calibration and app settings.

The firmware app of a kind looks its sensors up by these role names, so the loader rejects a
board that lacks one (``MissingFieldError``) before it reaches a device. A new kind needs an
entry here as well as in ``firmware/policy.json`` (docs/boards.md, "Adding a sensor kind").
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.boards.errors import InvalidValueError


@dataclass(frozen=True)
class KindSpec:
    """Board-file requirements of one device kind.

    Attributes:
        io: required io role -> allowed modes.
        calibration: calibration table -> integer constant names (``table`` marks an integer table).
        app_ints: integer app settings -> (low, high) bounds.
        needs_schedule: whether ``app.schedule`` (dimming schedule) is required.
        people_io: io roles that sense people (motion, a lid opened): when such an input fires
            tells when someone was there (docs/privacy.md).
        deep_sleep: the kind's firmware app has a deep-sleep cycle (``run_deep``), in which a wake
            by a ``people_io`` pin alone does not start the radio. A kind without one may not have
            ``sleep.mode = "deep"``: the firmware refuses to start such a board.
    """

    io: dict[str, tuple[str, ...]]
    calibration: dict[str, tuple[str, ...]]
    app_ints: dict[str, tuple[int, int]]
    needs_schedule: bool
    people_io: tuple[str, ...]
    deep_sleep: bool


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
        people_io=("pir",),
        deep_sleep=False,
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
        people_io=("lid",),
        deep_sleep=True,  # BinApp.run_deep: a wake by the lid alone only counts the opening
    ),
}
"""Requirements by device kind (the kinds of ``firmware/policy.json``)."""


def kind_spec(kind: str, *, source: str) -> KindSpec:
    """The requirements of ``kind`` (a kind of the policy) for the board file ``source``.

    Raises:
        InvalidValueError: the policy has the kind but this table does not (a kind added to
            ``firmware/policy.json`` only).
    """
    spec = KINDS.get(kind)
    if spec is None:
        raise InvalidValueError(
            source=source, field="kind", value=kind,
            reason=f"kind {kind!r} is in firmware/policy.json but hil/boards/kinds.py does not say what its boards "
                   f"need (io roles, calibration, app settings; known: {', '.join(sorted(KINDS))}); add it there "
                   "(docs/boards.md, \"Adding a sensor kind\")")
    return spec


def check_deep_sleep(spec: KindSpec, kind: str, wake_pins: tuple[str, ...], *, source: str) -> None:
    """Refuse ``sleep.mode = "deep"`` for a kind whose firmware app has no deep-sleep cycle.

    The firmware refuses to start such a board (``civic.apps.runtime``); an app deep-sleeping
    without the cycle's rule would start the radio at a wake by an input that senses people
    (``spec.people_io``), and its frame times would tell when someone passed (docs/privacy.md).

    Raises:
        InvalidValueError: on field ``sleep.mode``.
    """
    if spec.deep_sleep:
        return
    people = [name for name in wake_pins if name in spec.people_io]
    privacy = (f"; wake pins {', '.join(people)} sense people, and a wake by one must not start the radio "
               "(its frames would tell when someone passed: docs/privacy.md)" if people else "")
    raise InvalidValueError(
        source=source, field="sleep.mode", value="deep",
        reason=f"the firmware's {kind} app has no deep-sleep cycle (the firmware would refuse to start){privacy}. "
               "Use mode = \"none\"")
