"""Stimuli and faults: named sensor values turned into simulated-hardware operations, and the
stimuli file format (TOML) with timelines.

Names (value types): ``pir`` (0/1 or ``"pulse 2s"``), ``light`` (lux), ``distance`` (mm, or
``"none"``: no echo),
``temperature`` (deg C), ``tilt`` (0/1), ``lid`` (0/1 or ``"pulse 5s"``), ``battery`` (%),
``lamp_current`` (mA, or ``"auto"``: follows the lamp's PWM), ``lamp_failed`` (0/1),
``pin:N`` (level), ``adc:N`` (microvolts). Faults: see :func:`parse_fault`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.small_files import NestedTooDeeplyError, loads_toml
from gateway.toml_text import TomlTextError, read_toml_doc
from hil.sim.errors import StimulusError

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(text: str | int | float) -> int:
    """``"90s"``, ``"500ms"``, ``"10m"``, ``"2h"``, ``"1d"`` or a number of seconds -> milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text * 1000)
    m = _DURATION.match(str(text))
    if not m:
        raise StimulusError(f"not a duration: {text!r} (use e.g. 90s, 500ms, 10m, 2h)", value=text)
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse_at_ms(text: str | int, start_ms: int) -> int:
    """A timeline time -> unix ms: ``"22:00"`` (next time of day, UTC, at/after start),
    ``"+90s"`` (after start), or an ISO 8601 timestamp."""
    s = str(text).strip()
    if s.startswith("+"):
        return start_ms + parse_duration_ms(s[1:])
    m = re.match(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$", s)
    if m:
        start = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
        try:
            t = start.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=int(m.group(3) or 0), microsecond=0)
        except ValueError as exc:
            raise StimulusError(f"not a time of day: {text!r}", value=text) from exc
        if t.timestamp() * 1000 < start_ms:
            t += dt.timedelta(days=1)
        return int(t.timestamp() * 1000)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as exc:
        raise StimulusError(f"not a time: {text!r} (use 22:00, +90s or an ISO timestamp)", value=text) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


STIMULI_KEYS: tuple[str, ...] = ("start", "set", "at")
"""Top-level keys of a stimuli file."""

@dataclass
class BoardIo:
    """What the stimulus layer needs to know about a board (from its device config)."""

    config: dict[str, Any]

    def pin(self, role: str, name: str) -> int:
        io = self.config.get("io", {}).get(role)
        if io is None:
            raise StimulusError(f"board {self.config.get('name')} has no {role!r} for stimulus {name!r}",
                                name=name, board=self.config.get("name"))
        return int(io["pin"])

    def active(self, role: str) -> int:
        return int(self.config.get("io", {}).get(role, {}).get("active", 1))

    def cal(self, section: str, key: str, default: Any = None) -> Any:
        value = self.config.get("cal", {}).get(section, {}).get(key, default)
        if value is None:
            raise StimulusError(f"board {self.config.get('name')} has no calibration {section}.{key}",
                                name=section, board=self.config.get("name"))
        return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StimulusError(f"stimulus {name!r} needs a number, got {value!r}", name=name, value=value)
    return float(value)


# Physically sensible ranges of the named stimuli where the board definition states none (docs/simulator.md,
# "Stimuli and faults"): a value outside is a wrong unit (battery = 3700: millivolts, not %) or a typo.
LIGHT_MAX_LUX = 150_000       # direct summer sunlight is ~100 000 lux
# Air a sensor can meet: an arctic winter (-60) .. flames in a burning bin (~1000). The thermistor's
# table covers less; beyond its ends the reading saturates there, as the real divider's does.
TEMPERATURE_C = (-60.0, 1000.0)
NO_ECHO = "none"              # distance = "none": no echo comes back (nothing in range, a blocked sensor)
NO_ECHO_US = 1_000_000_000    # an echo pulse longer than any timeout: time_pulse_us() times out (negative)
SUPPLY_UV = 3_300_000         # an ESP32 pin takes 0..3.3 V; the ADC reads at most 3.1 V (11 dB)
ADC_FULL_UV = 3_100_000
SOUND_MM_PER_US = 0.343       # speed of sound, 343 m/s
UNITS = {"light": "lux", "distance": "mm", "temperature": "°C", "battery": "%", "lamp_current": "mA"}


def _in_range(io: BoardIo, name: str, value: Any, lo: float, hi: float, why: str = "") -> float:
    """``value`` as a number within ``lo..hi`` (the stimulus's unit), else a StimulusError saying the
    range, the unit and where the range comes from."""
    x = _number(name, value)
    if not lo <= x <= hi:
        unit = UNITS.get(name, "")
        raise StimulusError(f"stimulus {name!r} = {value!r} is outside {lo:g}..{hi:g} {unit}{why}", name=name,
                            value=value, board=io.config.get("name"))
    return x


def _pins_text(io: BoardIo, modes: tuple[str, ...] | None) -> str:
    pins = _defined_pins(io, modes)
    return ", ".join(f"{pin} ({role})" for pin, role in sorted(pins.items())) or "none"


def _defined_pins(io: BoardIo, modes: tuple[str, ...] | None) -> dict[int, str]:
    """GPIO -> role of the board's io pins (of ``modes``; all when None), and its recovery (BOOT) pin."""
    out = {int(spec["pin"]): role for role, spec in io.config.get("io", {}).items()
           if modes is None or spec.get("mode") in modes}
    recovery = io.config.get("recovery") or {}
    if modes is None and "pin" in recovery:
        out.setdefault(int(recovery["pin"]), "recovery")
    return out


def _level_or_pulse(io: BoardIo, role: str, name: str, value: Any) -> dict[str, Any]:
    pin = io.pin(role, name)
    active = io.active(role)
    if isinstance(value, str) and value.strip().startswith("pulse"):
        rest = value.strip()[5:].strip() or "1s"
        return {"kind": "pulse", "pin": pin, "level": active, "ms": parse_duration_ms(rest)}
    if value not in (0, 1, True, False):
        raise StimulusError(f"stimulus {name!r} takes 0/1 or 'pulse <duration>', got {value!r}", name=name, value=value)
    return {"kind": "pin", "pin": pin, "level": active if value else 1 - active}


def _ntc_uv(table: list[list[int]], celsius: float) -> int:
    pts = sorted((int(c), int(uv)) for uv, c in table)
    if celsius <= pts[0][0]:
        return pts[0][1]
    if celsius >= pts[-1][0]:
        return pts[-1][1]
    for (c0, u0), (c1, u1) in zip(pts, pts[1:]):
        if c0 <= celsius <= c1:
            return int(u0 + (u1 - u0) * (celsius - c0) / (c1 - c0))
    raise StimulusError(f"temperature {celsius} outside the thermistor table", name="temperature", value=celsius)


def _raw_pin(io: BoardIo, name: str, modes: tuple[str, ...] | None, what: str) -> int:
    """The GPIO of ``pin:N``/``adc:N``, refused when the board does not define it (naming the ones it has)."""
    if not name[4:].isdigit():
        raise StimulusError(f"stimulus {name!r}: a raw {what} is {name[:3]}:<GPIO number>, e.g. {name[:3]}:27",
                            name=name)
    gpio = int(name[4:])
    if gpio not in _defined_pins(io, modes):
        raise StimulusError(f"stimulus {name!r}: board {io.config.get('name')} defines no {what} on GPIO {gpio} "
                            f"(its {what}s: {_pins_text(io, modes)})", name=name, board=io.config.get("name"))
    return gpio


def stimulus_op(io: BoardIo, name: str, value: Any) -> dict[str, Any]:
    """Turn a named stimulus into the host's hardware operation.

    Raises:
        StimulusError: unknown name, a value of the wrong type or outside the stimulus's range (see
            docs/simulator.md), or the board lacks that sensor / pin.
    """
    board = io.config.get("name")
    if name.startswith("pin:"):
        pin = _raw_pin(io, name, None, "pin")
        if value not in (0, 1, True, False):
            raise StimulusError(f"stimulus {name!r} takes a level, 0 or 1, got {value!r}", name=name, value=value)
        return {"kind": "pin", "pin": pin, "level": 1 if value else 0}
    if name.startswith("adc:"):
        pin = _raw_pin(io, name, ("adc",), "ADC pin")
        uv = _number(name, value)
        if not 0 <= uv <= SUPPLY_UV:
            raise StimulusError(f"stimulus {name!r} = {value!r} is outside 0..{SUPPLY_UV} µV (the unit of adc:N is "
                                "microvolts; a pin takes 0..3.3 V)", name=name, value=value, board=board)
        return {"kind": "adc", "pin": pin, "uv": int(uv)}
    if name in ("pir", "tilt", "lid"):
        return _level_or_pulse(io, name, name, value)
    if name == "light":
        pin = io.pin("light", name)
        lux = _in_range(io, name, value, 0, LIGHT_MAX_LUX, " (darkness .. direct sunlight)")
        # The phototransistor's output cannot rise above the supply: brighter light than the board's
        # lux_per_volt x 3.3 V (990 lux on streetlight-esp32) holds the pin at 3.3 V, as a real one does.
        return {"kind": "adc", "pin": pin,
                "uv": min(SUPPLY_UV, int(lux * 1_000_000 / io.cal("light", "lux_per_volt")))}
    if name == "lamp_current":
        pin = io.pin("lamp_current", name)
        if value == "auto":
            return {"kind": "adc_auto", "pin": pin}
        per_volt = io.cal("lamp", "ma_per_volt")
        full_ma = (ADC_FULL_UV - io.cal("lamp", "offset_uv", 0)) * per_volt / 1_000_000
        ma = _in_range(io, name, value, 0, full_ma, f" ({board}'s current sense reads up to {full_ma:g} mA)")
        uv = io.cal("lamp", "offset_uv", 0) + ma * 1_000_000 / per_volt
        return {"kind": "adc", "pin": pin, "uv": int(uv)}
    if name == "lamp_failed":
        io.pin("lamp_current", name)
        return {"kind": "lamp_failed", "value": 1 if value else 0}
    if name == "distance":
        pin = io.pin("echo", name)
        timeout_us = io.config.get("cal", {}).get("fill", {}).get("timeout_us")
        hi = float("inf") if timeout_us is None else int(timeout_us) * SOUND_MM_PER_US / 2
        if value == NO_ECHO:
            return {"kind": "echo", "pin": pin, "us": NO_ECHO_US}
        why = "" if timeout_us is None else f" (farther than {hi:g} mm the echo arrives after {board}'s " \
                                            f"{timeout_us} µs timeout; distance = \"{NO_ECHO}\" for no echo)"
        if isinstance(value, str):
            raise StimulusError(f"stimulus {name!r} takes millimetres or \"{NO_ECHO}\" (no echo), got {value!r}",
                                name=name, value=value)
        mm = _in_range(io, name, value, 0, hi, why)
        # Round trip of sound at 343 m/s: 2 * mm / 0.343 microseconds.
        return {"kind": "echo", "pin": pin, "us": int(mm * 2000 / 343)}
    if name == "temperature":
        pin = io.pin("temp", name)
        table = io.cal("temp", "table")
        celsius = _in_range(io, name, value, *TEMPERATURE_C, " (arctic cold .. a fire's flames)")
        return {"kind": "adc", "pin": pin, "uv": _ntc_uv(table, celsius)}  # saturates at the table's ends
    if name == "battery":
        pin = io.pin("battery", name)
        pct = _in_range(io, name, value, 0, 100, " (state of charge; a cell voltage in mV is not a percentage)")
        empty, full = io.cal("battery", "empty_mv"), io.cal("battery", "full_mv")
        mv = empty + (full - empty) * pct / 100
        uv = mv * 1000 * io.cal("battery", "divider_den") / io.cal("battery", "divider_num")
        return {"kind": "adc", "pin": pin, "uv": int(uv)}
    close = difflib.get_close_matches(name, STIMULUS_NAMES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise StimulusError(f"unknown stimulus {name!r} ({hint}stimuli: {', '.join(STIMULUS_NAMES)}, pin:N, adc:N)",
                        name=name, value=value)


FAULT_KINDS = ("drop", "corrupt", "reset", "power_loss", "power_loss_write", "clock_skew", "ble_disconnect")
FAULT_LINKS: dict[str, tuple[str, ...]] = {"drop": ("uart", "ble", "all"), "corrupt": ("uart", "all")}
"""The links each link fault takes (its optional first argument; default ``all``)."""
# Why corrupt takes no `ble`: the simulator flips bits in UART bytes only. On air, BLE's link layer checks
# every packet's CRC and resends a bad one, so a flipped bit is a delay, never bad data reaching the firmware.
_CORRUPT_BLE = ("corrupt acts on UART bytes only (link uart or all), not ble: BLE's link layer checks every packet's "
                "CRC and resends a bad one, so a flipped bit never reaches the firmware; use drop ble or ble_disconnect")


def _is_word(token: str) -> bool:
    """A token that reads as a name (``uarts``, ``BLE``), not a number or a duration (``60s``, ``0.01``)."""
    return token[:1].isalpha() and not _DURATION.match(token)


def _fault_link(kind: str, args: list[str], line: str) -> str:
    """Pop the link argument of a ``drop``/``corrupt`` line from ``args`` (default ``all``).

    A word where the link goes that is no link of ``kind`` is named as such (with the closest link), not
    reported as a missing duration or rate; a lone word that is not close to any link is named as neither.

    Raises:
        StimulusError: a link ``kind`` does not take.
    """
    links = FAULT_LINKS[kind]
    if args and args[0] in links:
        return args.pop(0)
    if not args or not _is_word(args[0]):
        return "all"
    word = args[0]
    if kind == "corrupt" and word.lower() == "ble":
        raise StimulusError(f"{_CORRUPT_BLE}: {line!r}", value=line, link=word)
    close = difflib.get_close_matches(word.lower(), links, n=1)
    what = "a duration (e.g. 60s)" if kind == "drop" else "a rate 0..1 (e.g. 0.01)"
    if len(args) == 1 and not close:  # `drop ten`: a bad duration as much as a bad link
        raise StimulusError(f"{kind}: {word!r} is neither a link ({', '.join(links)}) nor {what}: {line!r}",
                            value=line, link=word)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise StimulusError(f"unknown link {word!r} for {kind} ({hint}links: {', '.join(links)}): {line!r}", value=line,
                        link=word)


def parse_fault(line: str) -> dict[str, Any]:
    """One fault line -> host operation.

    ``drop [uart|ble|all] 60s`` · ``corrupt [uart|all] 0.01 [for 60s]`` · ``reset`` ·
    ``power_loss [off 2s]`` · ``power_loss_write [PATH-SUBSTRING]`` · ``clock_skew +30s|-2m`` ·
    ``ble_disconnect``.

    Raises:
        StimulusError: unknown fault (with the closest kind), a link the fault does not take (``drop
            uarts``, ``corrupt ble``; ``details['link']``), or a bad argument.
    """
    parts = line.split()
    if not parts or parts[0] not in FAULT_KINDS:
        close = difflib.get_close_matches(parts[0].lower(), FAULT_KINDS, n=1) if parts else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise StimulusError(f"unknown fault {line!r} ({hint}one of {', '.join(FAULT_KINDS)})", value=line)
    kind, args = parts[0], parts[1:]
    if kind == "drop":
        link = _fault_link(kind, args, line)
        if len(args) != 1:
            raise StimulusError(f"drop needs one duration: drop [uart|ble|all] DURATION, e.g. drop uart 60s: {line!r}",
                                value=line)
        return {"kind": "drop", "link": link, "ms": parse_duration_ms(args[0])}
    if kind == "corrupt":
        link = _fault_link(kind, args, line)
        try:
            rate = float(args[0])
        except (IndexError, ValueError) as exc:
            raise StimulusError(f"corrupt needs a rate 0..1: {line!r}", value=line) from exc
        if not 0 <= rate <= 1:
            raise StimulusError(f"corrupt rate must be within 0..1: {line!r}", value=line)
        out: dict[str, Any] = {"kind": "corrupt", "link": link, "rate": rate}
        if len(args) == 3 and args[1] == "for":
            out["ms"] = parse_duration_ms(args[2])
        elif len(args) != 1:
            raise StimulusError(f"corrupt syntax: corrupt [uart|all] RATE [for DURATION]: {line!r}", value=line)
        return out
    if kind == "power_loss":
        if args[:1] == ["off"] and len(args) == 2:
            return {"kind": "power_loss", "off_ms": parse_duration_ms(args[1])}
        if args:
            raise StimulusError(f"power_loss syntax: power_loss [off DURATION]: {line!r}", value=line)
        return {"kind": "power_loss"}
    if kind == "power_loss_write":
        return {"kind": "power_loss_write", "match": args[0] if args else None}
    if kind == "clock_skew":
        if len(args) != 1:
            raise StimulusError(f"clock_skew needs +/-DURATION: {line!r}", value=line)
        sign = -1 if args[0].startswith("-") else 1
        try:
            return {"kind": "clock_skew", "ms": sign * parse_duration_ms(args[0].lstrip("+-"))}
        except StimulusError as exc:
            raise StimulusError(f"clock_skew needs +/-DURATION (e.g. +30s, -2m), got {args[0]!r}: {line!r}",
                                value=line) from exc
    if args:
        raise StimulusError(f"{kind} takes no arguments: {line!r}", value=line)
    return {"kind": kind}


def check_fault_link(io: BoardIo, line: str, fault: dict[str, Any]) -> dict[str, Any]:
    """``fault`` (parsed from ``line``) when the board has the link it acts on.

    ``drop uart``/``drop ble``, ``corrupt`` (UART bytes) and ``ble_disconnect`` on a board without
    that link would do nothing: a scenario that expects their effect would test nothing.

    Raises:
        StimulusError: naming the links the board has.
    """
    links = sorted(io.config.get("links", {}))
    kind = fault["kind"]
    need = {"drop": fault.get("link"), "corrupt": "uart", "ble_disconnect": "ble"}.get(kind)
    if need in ("uart", "ble") and need not in links:
        raise StimulusError(f"fault {line!r}: board {io.config.get('name')} has no {need} link (its links: "
                            f"{', '.join(links) or 'none'})", value=line, board=io.config.get("name"))
    return fault


@dataclass
class StimuliPlan:
    """A parsed stimuli file: start time, initial values, timed stimuli and faults (host ops)."""

    start_ms: int | None = None
    initial: list[dict[str, Any]] = field(default_factory=list)
    stimuli: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)


STIMULUS_NAMES: tuple[str, ...] = ("pir", "light", "lamp_current", "lamp_failed", "distance", "temperature", "tilt",
                                    "lid", "battery")
"""Named stimuli (besides ``pin:N`` and ``adc:N``), see :func:`stimulus_op`."""
TIMELINE_KEYS: tuple[str, ...] = ("time", "every", "until", "fault")
"""Keys of a timeline entry other than stimulus names."""
# The shortest repeat of a timeline entry: a "1ms" repeat without an `until` would be 86 million events
# a virtual day, each woken on the board's host; no sensor stimulus changes faster than this.
MIN_EVERY_MS = 100


def _check_entry_keys(entry: dict[str, Any], line: int, where: str | None = None) -> None:
    """Refuse a key of a timeline entry that is neither a timing key, ``fault`` nor a stimulus name
    (a typo such as ``tme`` is named as such, not reported as a missing ``time``)."""
    where = where or f"timeline entry {line}"
    for key in entry:
        if key in TIMELINE_KEYS or key in STIMULUS_NAMES or key.startswith(("pin:", "adc:")):
            continue
        close = difflib.get_close_matches(key, TIMELINE_KEYS + STIMULUS_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise StimulusError(f"{where}: unknown key {key!r} ({hint}an entry needs time and may have "
                            f"{', '.join(TIMELINE_KEYS[1:])} and stimuli: {', '.join(STIMULUS_NAMES)}, pin:N, adc:N)",
                            name=key, line=line, unknown_key=key)


def timeline_entry(entry: dict[str, Any], io: BoardIo, start_ms: int, *, line: int = 1,
                   where: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One ``[[at]]`` entry -> its stimuli and its faults (host operations, each with ``at`` and, when
    given, ``every``/``until``), checked against the board.

    Args:
        entry: the parsed entry (``time``, ``every``, ``until``, ``fault`` and stimulus names).
        start_ms: the virtual start (unix ms) that ``+90s`` and times of day count from.
        line: the entry's number in its file (``details['line']``).
        where: how messages name the entry (default ``timeline entry <line>``; a scenario passes its
            dotted key, ``boards[1].faults[2]``).

    Raises:
        StimulusError: as :func:`load_stimuli`, for this entry.
    """
    where = where or f"timeline entry {line}"
    if "time" not in entry:
        _check_entry_keys(entry, line, where)  # a typo (tme = ...) is named, not only the missing 'time'
        raise StimulusError(f"{where} needs 'time'", line=line)
    at = parse_at_ms(entry["time"], start_ms)
    timing: dict[str, Any] = {"at": at}
    if "every" in entry:
        timing["every"] = parse_duration_ms(entry["every"])
        if timing["every"] < MIN_EVERY_MS:
            raise StimulusError(f"{where}: every = {entry['every']!r} is too often: the shortest "
                                f"repeat is {MIN_EVERY_MS} ms (each repeat is an event the simulator "
                                f"runs; use e.g. every = \"1s\")", line=line, value=entry["every"])
    if "until" in entry:
        timing["until"] = parse_at_ms(entry["until"], start_ms)
        if timing["until"] < at:
            timing["until"] += 86_400_000
    stimuli: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    for name, value in entry.items():
        if name in ("time", "every", "until"):
            continue
        try:
            if name == "fault":
                for text in [value] if isinstance(value, str) else list(value):
                    faults.append({**timing, **check_fault_link(io, str(text), parse_fault(str(text)))})
            else:
                stimuli.append({**timing, **stimulus_op(io, name, value)})
        except StimulusError as exc:
            exc.details["line"] = line
            raise
    return stimuli, faults


def _excerpt(text: str, limit: int = 80) -> str:
    """The start of ``text`` for an error's details (a deeply nested text can be megabytes)."""
    return text if len(text) <= limit else text[:limit] + "..."


def load_stimuli(source: str | Path, io: BoardIo, start_ms: int) -> StimuliPlan:
    """Parse a stimuli file (a path, or TOML text).

    Format::

        start = "2026-03-01T18:00:00Z"      # optional virtual start time
        [set]                                # values at start
        light = 5
        [[at]]                               # timeline entries
        time = "22:00"                       # 22:00 | +90s | ISO timestamp
        every = "90s"                        # optional repeat ...
        until = "23:30"                      # ... until (optional)
        pir = "pulse 2s"                     # any stimuli
        fault = "drop uart 60s"              # and/or a fault line

    Raises:
        StimulusError: bad syntax, unknown names or values (``details['line']`` names the entry).
    """
    is_file = isinstance(source, Path) or "\n" not in str(source) and Path(str(source)).is_file()
    try:  # a file is read and parsed once; TOML text given inline is parsed here, its depth checked as a file's
        doc = (read_toml_doc(Path(source), what="stimuli file") if is_file
               else loads_toml(str(source).removeprefix("\ufeff")))
    except TomlTextError as exc:
        raise StimulusError(f"{source}: {exc}", value=str(source)) from None
    except NestedTooDeeplyError as exc:  # tomllib would recurse until a RecursionError
        raise StimulusError(f"stimuli text is not valid TOML: {exc}", value=_excerpt(str(source))) from None
    except tomllib.TOMLDecodeError as exc:
        raise StimulusError(f"stimuli file is not TOML: {exc}", value=str(source)) from exc
    plan = StimuliPlan()
    unknown = set(doc) - set(STIMULI_KEYS)
    if unknown:
        raise StimulusError(f"unknown sections in stimuli file: {sorted(unknown)}", value=sorted(unknown))
    # shapes first: a TOML typo must be a message, not an AttributeError
    if not isinstance(doc.get("set", {}), dict):
        raise StimulusError("[set] must be a table of stimulus = value, e.g. light = 5", value=doc["set"])
    entries = doc.get("at", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise StimulusError("'at' must be an array of tables ([[at]] entries with time = ...)", value=entries)
    if "start" in doc:
        plan.start_ms = parse_at_ms(str(doc["start"]), start_ms)
        start_ms = plan.start_ms
    for name, value in doc.get("set", {}).items():
        plan.initial.append(stimulus_op(io, name, value))
    for i, entry in enumerate(entries):
        stimuli, faults = timeline_entry(entry, io, start_ms, line=i + 1)
        plan.stimuli += stimuli
        plan.faults += faults
    return plan
