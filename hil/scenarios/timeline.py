"""Checks of a board's timeline (stimuli ``at`` entries and ``faults``) that the simulator's parser
(:func:`hil.sim.stimuli.load_stimuli`) does not make: entries that parse but cannot do what they
say within a scenario run.

Refused, each with a :class:`ScenarioError` naming the entry and why:

* ``until`` before ``time`` (a time of day such as ``01:00`` after ``22:00`` wraps to the next day);
* a fault before the start or after the end of the run (it would never fire);
* a repeat (``every``) shorter than 1 virtual second (the simulator would do nothing else), and for
  ``reset``/``power_loss``/``power_loss_write`` shorter than 10 s (a board needs time to boot);
* a repeat no longer than the event it repeats: ``pir = "pulse 2s"`` every 1 s, ``drop uart 10m``
  every 5 m, ``power_loss off 30s`` every 10 s (the next one starts before this one ends; a power
  loss also needs the 10 s to boot after its ``off`` time);
* a ``clock_skew`` beyond one year either way (see :data:`MAX_CLOCK_SKEW_MS`).
"""

from __future__ import annotations

import re
from typing import Any

from hil.scenarios.errors import ScenarioError
from hil.sim.errors import StimulusError
from hil.sim.stimuli import parse_at_ms, parse_duration_ms

# A board boots in about a wall second, i.e. `speed` virtual seconds: resets closer than this keep
# it booting (and a reset every few ms swamps the simulator host). Other faults and stimuli: once a
# virtual second at most.
RESET_FAULTS = {"reset", "power_loss", "power_loss_write"}
MIN_RESET_EVERY_MS = 10_000
MIN_FAULT_EVERY_MS = 1_000
MIN_STIMULUS_EVERY_MS = 1_000
# A clock_skew fault models a drifting or mis-set RTC, for which a year is plenty; a lost clock is
# power_loss. A skew of decades puts every report's window time where the gateway refuses it (w
# beyond 2**40 s, or before the firmware's 2024 "clock set" line), so a run would store nothing.
MAX_CLOCK_SKEW_MS = 365 * 86_400_000
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")
_TIMING_KEYS = ("time", "every", "until", "fault")


def _offset(ms: int) -> str:
    return f"{'+' if ms >= 0 else '-'}{abs(ms) / 60_000:g} min"


def _span(ms: int) -> str:
    """``90 s``, ``10 min``, ``1.5 h``: a readable duration."""
    if ms < 60_000:
        return f"{ms / 1000:g} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:g} min"
    return f"{ms / 3_600_000:g} h"


def _pulse_ms(value: Any) -> int | None:
    """The length of a ``"pulse 2s"`` stimulus value (``"pulse"`` alone is 1 s), else None."""
    if not isinstance(value, str) or not value.strip().startswith("pulse"):
        return None
    try:
        return parse_duration_ms(value.strip()[5:].strip() or "1s")
    except StimulusError:
        return None  # load_stimuli reported it already


def _check_until(where: str, entry: dict[str, Any], start_ms: int) -> None:
    if "until" not in entry or "time" not in entry or _TIME_OF_DAY.match(str(entry["until"])):
        return  # "22:00" .. "01:00" wraps to the next day on purpose; a relative or absolute until may not
    try:
        at, until = parse_at_ms(entry["time"], start_ms), parse_at_ms(entry["until"], start_ms)
    except StimulusError:
        return  # load_stimuli reported it already
    if until < at:
        raise ScenarioError(f"{where}: timeline entry {entry!r}: until {entry['until']!r} is before time "
                            f"{entry['time']!r}", key="until", value=str(entry["until"]), where=where)


def _check_stimulus_every(where: str, entry: dict[str, Any]) -> None:
    if "every" not in entry:
        return
    try:
        every = parse_duration_ms(entry["every"])
    except StimulusError:
        return  # load_stimuli reported it already
    for name, value in entry.items():
        if name in _TIMING_KEYS:
            continue
        line = f"timeline entry {name} = {value!r} every {entry['every']!r}"
        if every < MIN_STIMULUS_EVERY_MS:
            raise ScenarioError(f"{where}: {line} is too often: at least every {MIN_STIMULUS_EVERY_MS // 1000} s "
                                "(virtual; the simulator would do nothing else)", key="every",
                                value=str(entry["every"]), where=where)
        pulse = _pulse_ms(value)
        if pulse is not None and every <= pulse:
            raise ScenarioError(f"{where}: {line}: the pulse ({_span(pulse)}) is not shorter than its repeat "
                                f"interval ({_span(every)}), so the next one starts before it ends; repeat it less "
                                "often or shorten the pulse", key="every", value=str(entry["every"]), where=where)


def _fault_length_ms(fault: dict[str, Any]) -> int | None:
    """How long a fault lasts (``drop``/``corrupt ... for``: the duration, ``power_loss off``: the
    off time), None for instantaneous ones."""
    for key in ("ms", "off_ms"):
        if key in fault and fault["kind"] != "clock_skew":
            return int(fault[key])
    return None


def _check_fault(where: str, fault: dict[str, Any], start_ms: int, end_ms: int) -> None:
    at, kind = int(fault["at"]), str(fault.get("kind"))
    line = f"fault {kind} at {_offset(at - start_ms)}"
    if at < start_ms:
        raise ScenarioError(f"{where}: {line} is before the scenario's start", key="faults", value=kind, where=where)
    if at > end_ms:
        raise ScenarioError(f"{where}: {line} is after the scenario's end ({_offset(end_ms - start_ms)}): it never "
                            "fires", key="faults", value=kind, where=where)
    if kind == "clock_skew" and abs(int(fault["ms"])) > MAX_CLOCK_SKEW_MS:
        raise ScenarioError(f"{where}: {line}: a skew of {abs(int(fault['ms'])) / 86_400_000:g} d is beyond the "
                            f"{MAX_CLOCK_SKEW_MS // 86_400_000} d either way a clock_skew may jump (an RTC drifts by "
                            "seconds to minutes; a lost clock is power_loss; a skew of decades only makes the gateway "
                            "refuse every report)", key="faults", value=kind, where=where)
    every = fault.get("every")
    if every is None:
        return
    least = MIN_RESET_EVERY_MS if kind in RESET_FAULTS else MIN_FAULT_EVERY_MS
    if every < least:
        why = ("a board needs time to boot after a reset" if kind in RESET_FAULTS
               else "the simulator would do nothing else")
        raise ScenarioError(f"{where}: {line} every {_span(every)} is too often: at least every "
                            f"{least // 1000} s ({why})", key="every", value=every, where=where)
    length = _fault_length_ms(fault)
    if length is None:
        return
    if kind == "power_loss" and every < length + MIN_RESET_EVERY_MS:
        raise ScenarioError(f"{where}: {line}: power off for {_span(length)} every {_span(every)}: the board would "
                            f"hardly be on; repeat it no more often than every {_span(length + MIN_RESET_EVERY_MS)} (the off time "
                            f"plus {MIN_RESET_EVERY_MS // 1000} s to boot)", key="every", value=every, where=where)
    if every <= length:
        raise ScenarioError(f"{where}: {line}: it lasts {_span(length)}, not less than its repeat interval "
                            f"({_span(every)}), so the next one starts before it ends; use one longer fault or "
                            "repeat it less often", key="every", value=every, where=where)


def check_timeline(where: str, entries: list[Any], faults: list[dict[str, Any]], start_ms: int,
                   end_ms: int) -> None:
    """Refuse timeline entries that cannot do what they say (see the module docstring).

    Args:
        where: dotted location for messages and each error's ``details['where']``, e.g. ``boards[1].faults[2]``.
        entries: the board's raw timeline entries (stimuli ``at`` and ``faults``, merged).
        faults: the parsed faults (:attr:`hil.sim.stimuli.StimuliPlan.faults`: ``at``, ``every``, ``kind``, ...).
        start_ms, end_ms: the scenario's virtual start and end (unix ms).

    Raises:
        ScenarioError: naming the entry.
    """
    for entry in entries:
        if isinstance(entry, dict):
            _check_until(where, entry, start_ms)
            _check_stimulus_every(where, entry)
    for fault in faults:
        _check_fault(where, fault, start_ms, end_ms)


__all__ = ["MAX_CLOCK_SKEW_MS", "MIN_FAULT_EVERY_MS", "MIN_RESET_EVERY_MS", "MIN_STIMULUS_EVERY_MS", "RESET_FAULTS",
           "check_timeline"]
