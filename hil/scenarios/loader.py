"""Read and validate scenario files (TOML). Every mistake raises a specific :class:`ScenarioError`.

Format (see docs/scenarios.md)::

    name = "link-outage"
    description = "..."
    start = "2026-11-21T18:00:00Z"   # virtual start (ISO, UTC); default: today 18:00 UTC
    duration = "2h"                  # virtual time to run
    speed = 240                      # virtual seconds per wall second
    seed = 7                         # privacy noise of the virtual boards (simulation only)

    [[boards]]
    board = "streetlight-esp32"      # boards/<name>.toml or a path
    count = 2                        # or ids = ["sl-1", "sl-2"]
    link = "uart"                    # uart | ble
    zone = "centre"
    lat = "52.3702"
    lon = "4.8952"
    stimuli = "night.toml"           # a stimuli file (relative to the scenario), or an inline table
    faults = [{ time = "+30m", fault = "drop uart 10m" }]

    [expect]
    reports_min = 8
    no_loss = true
    alarms = ["fire"]
    alarms_within = "+4h"
    eps_per_day_max = true           # or a list of fields
    [[expect.fields]]
    field = "fill"
    op = ">="
    value = 80
    by = "+6h"
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NoReturn

from gateway.small_files import CONFIG_MAX, NestedTooDeeplyError, loads_toml, read_limited
from gateway.toml_text import TomlTextError, decode_toml_bytes
from hil.boards import BoardError, BoardNotFoundError, load_board, suggest_board
from hil.scenarios.errors import (BadDurationError, ScenarioError, ScenarioErrors, UnknownBoardError,
                                  UnknownExpectationError, UnknownKeyError)
from hil.scenarios.model import OPS, BoardGroup, Expectations, FieldExpectation, Scenario
from hil.scenarios.stimuli_doc import check_fault_entry, check_keys, check_stimuli_doc
from hil.scenarios.timeline import check_timeline
from hil.sim.errors import StimulusError
from hil.sim.stimuli import (
    BoardIo,
    load_stimuli,
    parse_at_ms,
    parse_duration_ms,
    parse_fault,
    stimulus_op,
    timeline_entry,
)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# Speeds a scenario (and `hil run --speed`) may ask for: the gateway's [sim_clock] takes >= 0.001
# (gateway/config/loader.py); 3600 (an hour a second) is the scenario format's upper bound.
MIN_SPEED = 0.001
MAX_SPEED = 3600.0
TOP_KEYS = {"name", "description", "start", "duration", "speed", "seed", "boards", "expect"}
BOARD_KEYS = {"board", "count", "ids", "link", "zone", "lat", "lon", "stimuli", "faults", "sleep"}
EXPECT_KEYS = {"reports_min", "no_loss", "alarms", "alarms_within", "fields", "eps_per_day_max"}
FIELD_KEYS = {"field", "op", "value", "by", "device"}
MAX_BOARDS = 50
# Durations in a scenario file carry their unit; a bare number (600: seconds? minutes?) is refused.
_WITH_UNIT = re.compile(r"^\+?\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)$")
_BARE_NUMBER = re.compile(r"^\+?\s*[0-9]+(\.[0-9]+)?$")
# Virtual time a scenario may run: a week shows every release period of the policy (6-hourly counts,
# daily budgets) several times; longer runs take hours of wall time even at high speeds.
MAX_DURATION_MS = 7 * 86_400_000
# The firmware's clock is "never set" before 2024-01-01 (VALID_AFTER in firmware/lib/civic/hal/clock.py)
# and it takes no ACK time from 2100 on (TIME_MAX in civic/uplink/session.py).
EARLIEST_START_MS = 1_704_067_200_000
LATEST_END_MS = 4_102_444_800_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
SCENARIO_ID = _ID
"""What a scenario ``name`` (and a device id) must match."""


class _Errors:
    """Collects the independent mistakes of a scenario file, so one pass reports them all."""

    def __init__(self) -> None:
        self.errors: list[ScenarioError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        """Run the block; a :class:`ScenarioError` it raises is recorded (a group's members one by one)."""
        try:
            yield
        except ScenarioErrors as exc:
            self.errors.extend(exc.errors)
        except ScenarioError as exc:
            self.errors.append(exc)

    def raise_any(self) -> None:
        """Raise the one error recorded, or :class:`ScenarioErrors` for several."""
        if self.errors:
            self.fail(None)

    def fail(self, error: ScenarioError | None) -> NoReturn:
        """Record ``error`` (a mistake that stops the check of its part), then raise all recorded."""
        if error is not None:
            self.errors.append(error)
        raise self.errors[0] if len(self.errors) == 1 else ScenarioErrors(self.errors)


def list_examples() -> list[Path]:
    """The shipped example scenarios."""
    return sorted(EXAMPLES_DIR.glob("*.toml"))


def find_scenario(name_or_path: str | Path) -> Path:
    """A path as given, or the shipped example with that name (``link-outage``).

    Raises:
        ScenarioError: neither a file nor a shipped example.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ScenarioError(f"{str(name_or_path)!r} is a directory, not a scenario file (give the .toml file(s), "
                            "e.g. DIR/*.toml)", path=str(name_or_path))
    example = EXAMPLES_DIR / f"{Path(str(name_or_path)).stem}.toml"
    if example.is_file() and path.suffix in ("", ".toml") and len(path.parts) == 1:
        return example
    names = ", ".join(p.stem for p in list_examples())
    raise ScenarioError(f"no scenario file {str(name_or_path)!r} (shipped examples: {names})", path=str(name_or_path))


def read_toml_text(path: Path, *, what: str) -> str:
    """The text of a TOML file: UTF-8, a leading UTF-8 byte-order mark (as some Windows editors write)
    skipped.

    Only a regular file of at most :data:`CONFIG_MAX` bytes is read (one swapped for a FIFO is refused,
    not waited on; a huge one is refused, not read into memory).

    Raises:
        ScenarioError: cannot be read (a directory, no permission, not a regular file, too large) or
            not UTF-8 text (a UTF-16 file is named as such), naming the file and the first bad byte.
    """
    try:
        data = read_limited(path, CONFIG_MAX)
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory, not a {what}", path=str(path)) from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the {what}: {exc.strerror or type(exc).__name__}",
                            path=str(path)) from None
    try:
        return decode_toml_bytes(data, what=what)
    except TomlTextError as exc:
        raise ScenarioError(f"{path}: {exc}", path=str(path)) from None


def _loads(text: str, path: Path, what: str) -> dict[str, Any]:
    """``text`` parsed as TOML; a document nested too deeply (a RecursionError before) is a ScenarioError.

    Raises:
        tomllib.TOMLDecodeError: not TOML.
        ScenarioError: nested too deeply.
    """
    try:
        return loads_toml(text)
    except NestedTooDeeplyError as exc:
        raise ScenarioError(f"{path}: {what} is not usable TOML: {exc}", path=str(path)) from None


def _duration(value: Any, key: str, path: Path | None) -> int:
    """A duration string with its unit (``90s``, ``40m``, ``+30m``) -> ms; a bare number is refused
    (seconds or minutes? the file must say)."""
    where = str(path) if path else None
    text = str(value).strip()
    if isinstance(value, bool) or not isinstance(value, str) or not _WITH_UNIT.match(text):
        if isinstance(value, (int, float)) and not isinstance(value, bool) or _BARE_NUMBER.match(text):
            raise BadDurationError(f"{key}: {value!r} has no unit: write it as a string with one, e.g. "
                                   f"\"{text.lstrip('+')}s\" or \"{text.lstrip('+')}m\" (units ms, s, m, h, d)",
                                   path=where, key=key, value=value)
        raise BadDurationError(f"{key}: not a duration: {value!r} (use e.g. 90s, 10m, 6h, 1d)", path=where, key=key,
                               value=value)
    try:
        ms = parse_duration_ms(text[1:] if text.startswith("+") else text)
    except StimulusError as exc:
        raise BadDurationError(f"{key}: not a duration: {value!r} (use e.g. 90s, 10m, 6h, 1d)",
                               path=where, key=key, value=value) from exc
    if ms <= 0:
        raise BadDurationError(f"{key}: must be positive, got {value!r}", path=str(path) if path else None,
                               key=key, value=value)
    return ms


def _start_ms(value: Any, path: Path | None) -> int:
    if value is None:
        today = dt.datetime.now(dt.timezone.utc).replace(hour=18, minute=0, second=0, microsecond=0)
        return int(today.timestamp() * 1000)
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    try:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadDurationError(f"start: not an ISO time: {value!r} (e.g. 2026-11-21T18:00:00Z)",
                               path=str(path) if path else None, key="start", value=str(value)) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    ms = int(t.timestamp() * 1000)
    if not EARLIEST_START_MS <= ms < LATEST_END_MS:
        raise BadDurationError(f"start: {value!r} is outside 2024-01-01 .. 2100-01-01 UTC: the firmware treats a clock "
                               "before 2024-01-01 as never set (it would not release or time-stamp readings) and "
                               "takes no time from 2100 on", path=str(path) if path else None, key="start",
                               value=str(value))
    return ms


def toml_text(doc: dict[str, Any]) -> str:
    """Write a stimuli document (``start``/``[set]``/``[[at]]`` of scalars and string lists) as TOML.

    Raises:
        ScenarioError: the document does not have that shape (see
            :func:`hil.scenarios.stimuli_doc.check_stimuli_doc`).
    """
    check_stimuli_doc(doc, "stimuli", None)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (dt.datetime, dt.date, dt.time)):
            return json.dumps(v.isoformat())  # what the simulator reads from an unquoted TOML time
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise ScenarioError(f"stimuli value {v!r} is not a number, string or list", value=repr(v))

    lines: list[str] = [f"start = {value(doc['start'])}"] if "start" in doc else []
    lines.append("[set]")
    lines += [f"{json.dumps(k)} = {value(v)}" for k, v in doc.get("set", {}).items()]
    for entry in doc.get("at", []):
        lines.append("[[at]]")
        lines += [f"{json.dumps(k)} = {value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def _stimuli_doc(raw: Any, where: str, base: Path, path: Path | None) -> dict[str, Any]:
    """The board's stimuli document (inline table or file), its shape checked.

    Raises:
        ScenarioError: missing file, not TOML, or a wrong shape / unknown key naming the file and
            the dotted key (``boards[1].stimuli.at[2]``, ``night.toml: set``).
    """
    if raw is None:
        return {}
    if isinstance(raw, dict):
        check_stimuli_doc(raw, f"{where}.stimuli", str(path) if path else None)
        return dict(raw)
    if isinstance(raw, str):
        file = (base / raw) if not Path(raw).is_absolute() else Path(raw)
        if file.is_dir():
            raise ScenarioError(f"{where}: stimuli {raw!r} is a directory ({file}), not a stimuli file", key="stimuli",
                                value=raw, path=str(file))
        if not file.is_file():
            raise ScenarioError(f"{where}: stimuli file {raw!r} not found (looked at {file})", key="stimuli",
                                value=raw, path=str(file))
        try:
            doc = _loads(read_toml_text(file, what="stimuli file"), file, "stimuli file")
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{where}: stimuli file {file} is not TOML: {exc}", key="stimuli", path=str(file)) from exc
        except ScenarioError as exc:
            raise ScenarioError(f"{where}: stimuli: {exc}", key="stimuli", value=raw, path=str(file)) from None
        check_stimuli_doc(doc, f"{where}.stimuli (file {file})", str(file))
        return doc
    raise ScenarioError(f"{where}: stimuli must be a file name or a table, got {raw!r}", key="stimuli", value=raw)


def _board_group(i: int, raw: Any, scenario_start: int, scenario_end: int, base: Path, path: Path | None,
                 taken: set[str], *, timed: bool = True) -> BoardGroup:
    """One ``[[boards]]`` entry, every independent mistake in it reported (see :class:`_Errors`).

    Args:
        timed: the scenario's start and duration are valid: only then is the timeline checked
            against them (a bad ``duration`` must not also make every fault "after the end").
    """
    where = f"boards[{i + 1}]"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be a table", key="boards")
    errors = _Errors()
    with errors.check():
        check_keys(raw, BOARD_KEYS, where, path)
    name = raw.get("board")
    if not isinstance(name, str) or not name:
        errors.fail(ScenarioError(f"{where}: 'board' (a board name such as streetlight-esp32) is required",
                                  key="board"))
    board_ref = str(base / name) if name.endswith(".toml") and not Path(name).is_absolute() else name
    try:
        definition = load_board(board_ref)
    except BoardNotFoundError as exc:
        # The lookup's own suggestion; a .toml name looked up next to the scenario has none (a path).
        close = exc.suggestion or suggest_board(Path(name).name, exc.available)
        hint = f"did you mean {close!r}? " if close else ""
        looked = f"; looked at {board_ref}" if board_ref != name else ""
        errors.fail(UnknownBoardError(
            f"{where}: unknown board {name!r} ({hint}boards: {', '.join(exc.available) or 'none'}{looked})",
            key="board", value=name, path=str(path) if path else None))
    except BoardError as exc:  # the file exists: say what is wrong with it (not UTF-8, not TOML, a bad field)
        errors.fail(ScenarioError(f"{where}: board {name!r}: {exc}", key="board", value=name,
                                  path=str(path) if path else None))
    config = definition.to_device_config()
    kind = str(config.get("kind"))
    links = sorted(config.get("links", {}))
    link = raw.get("link", links[0] if len(links) == 1 else "uart")
    with errors.check():
        if link not in ("uart", "ble") or link not in links:
            raise ScenarioError(f"{where}: link {link!r} not available on {name} (it has: {', '.join(links)})",
                                key="link", value=link)
    ids: list[str] = []
    with errors.check():
        ids = _group_ids(where, raw, kind, taken)
    sleep = raw.get("sleep", "awake")
    with errors.check():
        if sleep not in ("awake", "deep"):
            raise ScenarioError(f"{where}: sleep must be 'awake' or 'deep', got {sleep!r}", key="sleep", value=sleep)
    doc: dict[str, Any] = {}
    text = ""
    with errors.check():
        doc, text = _timeline(where, raw, config, link, scenario_start, scenario_end, base, path, timed=timed)
    place = dict(raw)
    bad_place: set[str] = set()
    for key in ("lat", "lon"):  # a TOML number (lat = 52.37) is taken as the decimal degrees it says
        if isinstance(place.get(key), (int, float)) and not isinstance(place[key], bool):
            try:
                place[key] = decimal_degrees_text(place[key], where=f"{where}: {key}")
            except ScenarioError as exc:
                errors.errors.append(exc)
                bad_place.add(key)
    for key, form in (("zone", 'a zone name, e.g. zone = "centre"'),
                      ("lat", 'decimal degrees, e.g. lat = "52.3702" or lat = 52.3702'),
                      ("lon", 'decimal degrees, e.g. lon = "4.8952" or lon = 4.8952')):
        if key in place and not isinstance(place[key], str) and key not in bad_place:
            errors.errors.append(ScenarioError(f"{where}: {key} must be {form}, got {place[key]!r}", key=key,
                                               value=place[key]))
            bad_place.add(key)
    zone, lat, lon = place.get("zone", "sim"), place.get("lat", "52.3702"), place.get("lon", "4.8952")
    if isinstance(zone, str):  # NFC, as the registry stores it: "Su\u0308dstadt" and "Südstadt" are one zone
        from gateway.registry.zones import normalize_zone
        zone = normalize_zone(zone)
    if not bad_place:  # the registry's rules need the three as text
        with errors.check():
            _check_registry_fields(where, ids, kind=kind, zone=zone, lat=lat, lon=lon)
    errors.raise_any()
    return BoardGroup(board=board_ref, ids=tuple(ids), link=link, kind=kind, zone=zone, lat=lat, lon=lon,
                      stimuli_toml=text, stimuli_doc=doc, sleep=sleep)


def _group_ids(where: str, raw: dict[str, Any], kind: str, taken: set[str]) -> list[str]:
    """The device ids of a board group (``ids``, or ``count`` of them numbered after those ``taken``),
    added to ``taken``.

    Raises:
        ScenarioError: both or bad ``ids``/``count``, or an id used twice.
    """
    if "ids" in raw and "count" in raw:
        raise ScenarioError(f"{where}: give either 'ids' or 'count', not both", key="ids")
    if "ids" in raw:
        ids = raw["ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(d, str) and _ID.match(d) for d in ids):
            raise ScenarioError(f"{where}: ids must be a non-empty list of ids (ASCII letters, digits, . _ -; max 32)",
                                key="ids", value=ids)
    else:
        count = raw.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BOARDS:
            raise ScenarioError(f"{where}: count must be an integer 1..{MAX_BOARDS}, got {count!r}", key="count",
                                value=count)
        prefix = "sl" if kind == "streetlight" else kind
        ids = [f"{prefix}-{len(taken) + n + 1:03d}" for n in range(count)]
    dup = sorted(set(ids) & taken | {d for d in ids if ids.count(d) > 1})
    if dup:
        raise ScenarioError(f"{where}: device id(s) used twice: {', '.join(dup)}", key="ids", value=dup)
    taken.update(ids)
    return list(ids)


def _timeline(where: str, raw: dict[str, Any], config: dict[str, Any], link: str, scenario_start: int,
              scenario_end: int, base: Path, path: Path | None, *, timed: bool) -> tuple[dict[str, Any], str]:
    """A board group's stimuli document with its ``faults`` merged into ``at``, and its TOML text.

    Each ``set`` value, ``at`` entry and ``faults`` entry is checked on its own, so every mistake is
    reported, each named by its dotted key (``boards[1].stimuli.set.light``, ``boards[1].stimuli.at[2]``,
    ``boards[1].faults[3]``).

    Raises:
        ScenarioError: a bad stimuli document or fault entry (several: :class:`ScenarioErrors`), a
            fault the group's link makes do nothing, a timeline that cannot do what it says.
    """
    errors = _Errors()
    doc: dict[str, Any] = {}
    with errors.check():
        doc = _stimuli_doc(raw.get("stimuli"), where, base, path)
        if "start" in doc:
            raise ScenarioError(f"{where}: stimuli may not set 'start' (the scenario's start is used)", key="stimuli",
                                where=f"{where}.stimuli")
    faults = raw.get("faults", [])
    if not isinstance(faults, list):
        errors.errors.append(ScenarioError(
            f"{where}.faults: must be an array of tables such as [{{ time = \"+5m\", fault = \"reset\" }}], got "
            f"{type(faults).__name__} {faults!r}", key="faults", value=repr(faults), where=f"{where}.faults"))
        faults = []
    at = list(doc.get("at", []))
    # Each timeline entry in order: its label, key and the errors of its shape check. A faults entry
    # that fails that check is left out of `at` (and so of the text the simulator reads below), so
    # the others are still checked, each under its own label, and the board's errors stay in order.
    entries: list[tuple[str, str, list[ScenarioError]]] = [
        (f"{where}.stimuli.at[{i + 1}]", "stimuli", []) for i in range(len(at))]
    for j, f in enumerate(faults):
        label = f"{where}.faults[{j + 1}]"
        shape = _Errors()
        with shape.check(), _located(label):
            check_fault_entry(f, label, str(path) if path else None)
            at.append(dict(f))
        entries.append((label, "faults", shape.errors))
    doc = {**doc, "at": at}
    text = toml_text(doc)
    # the entries as the simulator reads them from `text` (an unquoted TOML time becomes its ISO text)
    parsed = tomllib.loads(text)
    io = BoardIo(config)
    for name, value in parsed.get("set", {}).items():
        with errors.check():
            try:
                stimulus_op(io, name, value)
            except StimulusError as exc:
                raise _timeline_error(f"{where}.stimuli.set.{name}", "stimuli", exc, path) from exc
    checked = iter(list(zip(parsed.get("at", []), at, strict=True)))  # one parsed entry per `at` entry
    for label, key, refused in entries:
        if refused:
            errors.errors.extend(refused)
            continue
        entry, raw_entry = next(checked)
        with errors.check(), _located(label):
            try:
                _, entry_faults = timeline_entry(entry, io, scenario_start, where=label)
            except StimulusError as exc:
                raise _timeline_error(label, key, exc, path) from exc
            _check_fault_links(label, [raw_entry], link)
            if timed:
                check_timeline(label, [raw_entry], entry_faults, scenario_start, scenario_end)
    errors.raise_any()
    try:  # the whole text as the run will load it (each part passed above)
        load_stimuli(text, io, scenario_start)
    except StimulusError as exc:
        raise _timeline_error(f"{where}.stimuli", "stimuli", exc, path) from exc
    return doc, text


@contextmanager
def _located(label: str) -> Iterator[None]:
    """Run the block; a :class:`ScenarioError` it raises (each member of a :class:`ScenarioErrors`)
    that names no place gets ``label`` as its ``details['where']``, then goes on up."""
    try:
        yield
    except ScenarioError as exc:
        for error in [exc, *exc.errors] if isinstance(exc, ScenarioErrors) else [exc]:
            if not error.details.get("where"):
                error.details["where"] = label
        raise


def _timeline_error(label: str, key: str, exc: StimulusError, path: Path | None) -> ScenarioError:
    """The scenario error for a stimulus or fault the simulator refuses, named by its dotted ``label``.

    A typo in a timeline entry (``tme = "+1m"``) is an :class:`UnknownKeyError`, as in a ``faults`` entry.
    """
    error = UnknownKeyError if "unknown_key" in exc.details else ScenarioError
    message = str(exc) if str(exc).startswith(label) else f"{label}: {exc}"
    details = {**exc.details, "key": key, "where": label, "path": str(path) if path else None}
    if "unknown_key" in exc.details:
        details["key"] = exc.details["unknown_key"]
    return error(message, **details)


def _check_fault_links(where: str, entries: list[Any], link: str) -> None:
    """Refuse faults that act on a link the group's boards do not report over (``link = "ble"`` with
    ``drop uart`` or ``corrupt``, ``link = "uart"`` with ``drop ble`` or ``ble_disconnect``): they would
    do nothing, and a scenario expecting their effect would test nothing. (The simulator refuses a
    fault on a link the board lacks; a streetlight has both, but a run wires only the group's ``link``.)

    Raises:
        ScenarioError: naming the fault line, its time and the group's link.
    """
    for entry in entries:
        lines = entry.get("fault", []) if isinstance(entry, dict) else []
        for line in [lines] if isinstance(lines, str) else lines:
            fault = parse_fault(line)
            acts_on = {"drop": fault.get("link"), "corrupt": "uart", "ble_disconnect": "ble"}.get(fault["kind"])
            if acts_on in ("uart", "ble") and acts_on != link:
                use = f" (use drop {link} or drop all)" if fault["kind"] == "drop" else ""
                raise ScenarioError(f"{where}: fault {line!r} at {entry.get('time')!r} would do nothing: it acts on the "
                                    f"{acts_on} link, and the group's boards report over {link} (link = \"{link}\"){use}",
                                    key="faults", value=line, link=link, where=where)


def decimal_degrees_text(value: int | float, *, where: str) -> str:
    """A TOML number as the plain decimal text the registry takes (the registry's ``decimal_text``,
    as the admin API writes a JSON number): 52.37 is "52.37", -1e-05 is "-0.00001", -0.0 is "0.0".

    Raises:
        ScenarioError: ``value`` is nan or inf, or has more digits than the registry stores.
    """
    from gateway.registry import decimal_text

    try:
        return decimal_text(value)
    except ValueError as exc:
        raise ScenarioError(f"{where} {exc}", value=value) from None


def _check_registry_fields(where: str, ids: list[str], *, kind: str, zone: str, lat: str, lon: str) -> None:
    """Refuse what the gateway registry would refuse when the run registers the boards.

    The registry's own validation is called (not a copy of its rules), one value at a time so the
    error names the key at fault.

    Raises:
        ScenarioError: with ``key`` = ``ids``, ``kind``, ``zone``, ``lat`` or ``lon``.
    """
    from gateway.errors import RegistryError
    from gateway.registry import validate_device

    ok = {"kind": kind, "zone": "sim", "lat": "0", "lon": "0"}
    for dev in ids:
        for key, value in (("ids", dev), ("kind", kind), ("zone", zone), ("lat", lat), ("lon", lon)):
            args = dict(ok, **({key: value} if key != "ids" else {}))
            try:
                validate_device(dev if key == "ids" else "sim-check", **args)
            except RegistryError as exc:
                raise ScenarioError(f"{where}: {key}: {exc} (the gateway registry refuses it)", key=key,
                                    value=value) from exc


def _policy_names() -> tuple[set[str], set[str]]:
    """Alarm codes and released fields the policy (firmware/policy.json) defines, over all kinds.

    All kinds, not only the scenario's: expecting a bin's alarm from a streetlight is a valid
    expectation that fails; a code no board can send is a typo.
    """
    from gateway.resources import load_policy

    kinds = load_policy().get("kinds", {}).values()
    return {a for k in kinds for a in k.get("alarms", {})}, {f for k in kinds for f in k.get("fields", {})}


def _expectations(raw: Any, path: Path | None, device_ids: set[str] | None) -> Expectations:
    """``[expect]``, every independent mistake in it reported (see :class:`_Errors`).

    Args:
        device_ids: the scenario's boards, for ``device`` of a field expectation; None when a board
            group was invalid (its ids are unknown, so ``device`` is not checked).
    """
    if not isinstance(raw, dict) or not raw:
        raise ScenarioError("[expect] is required and must name at least one expectation "
                            f"({', '.join(sorted(EXPECT_KEYS))})", key="expect", path=str(path) if path else None)
    errors = _Errors()
    with errors.check():
        check_keys(raw, EXPECT_KEYS, "[expect]", path, error=UnknownExpectationError)
    reports_min = raw.get("reports_min")
    with errors.check():
        if reports_min is not None and (isinstance(reports_min, bool) or not isinstance(reports_min, int)
                                        or reports_min < 0):
            raise ScenarioError(f"expect.reports_min must be an integer >= 0, got {reports_min!r}", key="reports_min")
    no_loss = raw.get("no_loss", False)
    with errors.check():
        if not isinstance(no_loss, bool):
            raise ScenarioError(f"expect.no_loss must be true or false, got {no_loss!r}", key="no_loss")
    known_alarms, known_fields = _policy_names()
    alarms = raw.get("alarms", [])
    with errors.check():
        if not isinstance(alarms, list) or not all(isinstance(a, str) and a for a in alarms):
            raise ScenarioError(f"expect.alarms must be a list of alarm codes, got {alarms!r}", key="alarms")
        bad = [a for a in alarms if a not in known_alarms]
        if bad:
            raise ScenarioError(f"expect.alarms: unknown alarm code(s) {', '.join(map(repr, bad))} (the policy "
                                f"defines: {', '.join(sorted(known_alarms))})", key="alarms", value=bad[0])
    within = raw.get("alarms_within")
    within_ms = None
    with errors.check():
        if within is not None and not alarms:
            raise ScenarioError("expect.alarms_within needs expect.alarms (the codes to wait for)", key="alarms_within")
        within_ms = None if within is None else _duration(within, "expect.alarms_within", path)
    eps = raw.get("eps_per_day_max", [])
    with errors.check():
        if not (isinstance(eps, bool) or isinstance(eps, list) and all(isinstance(f, str) for f in eps)):
            raise ScenarioError(f"expect.eps_per_day_max must be true or a list of fields, got {eps!r}",
                                key="eps_per_day_max")
        bad = [f for f in (eps if isinstance(eps, list) else []) if f not in known_fields]
        if bad:
            raise ScenarioError(f"expect.eps_per_day_max: unknown field(s) {', '.join(map(repr, bad))} (the policy "
                                f"defines: {', '.join(sorted(known_fields))})", key="eps_per_day_max", value=bad[0])
    fields_raw = raw.get("fields", [])
    if not isinstance(fields_raw, list):
        errors.errors.append(ScenarioError(
            "expect.fields: must be an array of tables ([[expect.fields]] sections, or fields = "
            f"[{{ field = ..., op = ..., value = ..., by = ... }}]), got {type(fields_raw).__name__} {fields_raw!r}",
            key="fields", value=repr(fields_raw)))
        fields_raw = []
    fields = []
    for i, f in enumerate(fields_raw):
        with errors.check():
            fields.append(_field_expectation(f"expect.fields[{i + 1}]", f, path, device_ids, known_fields))
    errors.raise_any()
    return Expectations(reports_min=reports_min, no_loss=no_loss, alarms=tuple(alarms), alarms_within_ms=within_ms,
                        alarms_within_text=None if within is None else str(within), fields=tuple(fields),
                        eps_per_day_max=(True if eps else ()) if isinstance(eps, bool) else tuple(eps))


def _field_expectation(where: str, f: Any, path: Path | None, device_ids: set[str] | None,
                       known_fields: set[str]) -> FieldExpectation:
    """One ``[[expect.fields]]`` entry; unknown keys reported with the entry's other mistakes."""
    if not isinstance(f, dict):
        raise ScenarioError(f"{where}: must be a table {{ field = ..., op = ..., value = ..., by = ... }}, got "
                            f"{f!r}", key="fields", value=repr(f))
    errors = _Errors()
    with errors.check():
        check_keys(f, FIELD_KEYS, where, path)
    missing = [k for k in ("field", "op", "value", "by") if k not in f]
    if missing:
        errors.errors.append(ScenarioError(f"{where}: missing {', '.join(missing)}", key=missing[0]))
    if "op" in f and f["op"] not in OPS:
        errors.errors.append(ScenarioError(f"{where}: op must be one of {' '.join(OPS)}, got {f['op']!r}", key="op",
                                           value=f["op"]))
    if "value" in f and (isinstance(f["value"], bool) or not isinstance(f["value"], int)):
        errors.errors.append(ScenarioError(f"{where}: value must be an integer (released values are integers)",
                                           key="value"))
    device = f.get("device")
    if device is not None and device_ids is not None and device not in device_ids:
        errors.errors.append(ScenarioError(f"{where}: device {device!r} is not one of the scenario's boards",
                                           key="device", value=device))
    if "field" in f and f["field"] not in known_fields:
        errors.errors.append(ScenarioError(f"{where}: unknown field {f['field']!r} (the policy defines: "
                                           f"{', '.join(sorted(known_fields))})", key="field", value=f["field"]))
    by_ms = 0
    if "by" in f:
        with errors.check():
            by_ms = _duration(f["by"], f"{where}.by", path)
    errors.raise_any()
    return FieldExpectation(field=str(f["field"]), op=f["op"], value=f["value"], by_ms=by_ms, by_text=str(f["by"]),
                            device=device)


def parse_scenario(doc: dict[str, Any], *, path: Path | None = None, base: Path | None = None) -> Scenario:
    """Validate a parsed scenario document.

    Every independent mistake is found in one pass: top-level keys and values, each board group,
    each expectation. (A mistake another depends on hides that one: a bad ``duration`` leaves the
    faults' times unchecked, an unknown board that board's links and stimuli.)

    Raises:
        ScenarioError: (or a subclass) naming the key at fault; :class:`ScenarioErrors` listing
            them all when there are several.
    """
    errors = _Errors()
    with errors.check():
        check_keys(doc, TOP_KEYS, "scenario", path)
    name = doc.get("name", path.stem if path else None)
    with errors.check():
        _check_name(name, doc, path)
    duration_ms: int | None = None
    with errors.check():
        duration_ms = _scenario_duration(doc, path)
    speed = doc.get("speed", 60)
    with errors.check():
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not MIN_SPEED <= speed <= MAX_SPEED:
            raise ScenarioError(f"scenario: speed must be a number in [{MIN_SPEED:g}, {MAX_SPEED:g}], got {speed!r}",
                                key="speed", value=speed)
    seed = doc.get("seed", 7)
    with errors.check():
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ScenarioError(f"scenario: seed must be an integer, got {seed!r}", key="seed", value=seed)
    start_ms: int | None = None
    with errors.check():
        start_ms = _start_ms(doc.get("start"), path)
    timed = start_ms is not None and duration_ms is not None
    if start_ms is not None and duration_ms is not None and start_ms + duration_ms > LATEST_END_MS:
        timed = False
        errors.errors.append(BadDurationError("scenario: start + duration runs past 2100-01-01 UTC (the firmware takes "
                                              "no time from then on)", key="duration", value=str(doc["duration"]),
                                              path=str(path) if path else None))
    boards_raw: list[Any] = []
    with errors.check():
        boards_raw = _boards_list(doc.get("boards"))
    taken: set[str] = set()
    base = base or (path.parent if path else Path.cwd())
    first = start_ms if start_ms is not None else _start_ms(None, path)
    last = first + (duration_ms if duration_ms is not None else MAX_DURATION_MS)
    groups: list[BoardGroup] = []
    for i, b in enumerate(boards_raw):
        with errors.check():
            groups.append(_board_group(i, b, first, last, base, path, taken, timed=timed))
    if len(taken) > MAX_BOARDS:
        errors.errors.append(ScenarioError(f"scenario: at most {MAX_BOARDS} boards, got {len(taken)}", key="boards"))
    expect: Expectations | None = None
    with errors.check():
        expect = _expectations(doc.get("expect"), path, taken if len(groups) == len(boards_raw) else None)
    description = doc.get("description", "")
    if not isinstance(description, str):
        errors.errors.append(ScenarioError("scenario: description must be a string", key="description"))
    errors.raise_any()
    # Else raise_any raised.
    assert isinstance(name, str) and expect is not None and duration_ms is not None and start_ms is not None
    return Scenario(name=name, description=description, path=path, start_ms=start_ms, duration_ms=duration_ms,
                    duration_text=str(doc["duration"]), speed=float(speed), seed=seed, boards=tuple(groups),
                    expect=expect)


def _check_name(name: Any, doc: dict[str, Any], path: Path | None) -> None:
    if not isinstance(name, str) or not _ID.match(name):
        if "name" not in doc and path is not None:
            raise ScenarioError(f"scenario: no 'name' key, and the file name {path.name!r} gives {name!r}, which is not "
                                "a short id (ASCII letters, digits, . _ -; max 32): set name = \"...\" in the file",
                                key="name", value=name)
        raise ScenarioError(f"scenario: name must be a short id (ASCII letters, digits, . _ -), got {name!r}", key="name")


def _scenario_duration(doc: dict[str, Any], path: Path | None) -> int:
    if "duration" not in doc:
        raise BadDurationError("scenario: 'duration' (virtual time to run, e.g. 6h) is required", key="duration")
    duration_ms = _duration(doc["duration"], "duration", path)
    if duration_ms > MAX_DURATION_MS:
        raise BadDurationError(f"duration: {doc['duration']!r} is longer than the {MAX_DURATION_MS // 86_400_000} d "
                               "a scenario may run (virtual time)", key="duration", value=doc["duration"],
                               path=str(path) if path else None)
    return duration_ms


def _boards_list(boards_raw: Any) -> list[Any]:
    if isinstance(boards_raw, dict):
        raise ScenarioError("scenario: [boards] is one table; write [[boards]] (double brackets: one entry per "
                            "board group, and [boards.stimuli] stays as it is)", key="boards", value="table")
    if boards_raw is not None and not isinstance(boards_raw, list):
        raise ScenarioError(f"scenario: boards must be a list of [[boards]] tables, got {type(boards_raw).__name__} "
                            f"{boards_raw!r}", key="boards", value=repr(boards_raw))
    if not boards_raw:
        raise ScenarioError("scenario: at least one [[boards]] entry is required", key="boards")
    return list(boards_raw)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Read and validate a scenario file (a path or a shipped example's name).

    Raises:
        ScenarioError: (or a subclass: UnknownKeyError, BadDurationError, UnknownBoardError,
            UnknownExpectationError) with ``details`` naming the key and value at fault.
    """
    path = find_scenario(name_or_path)
    text = read_toml_text(path, what="scenario file")
    try:
        doc = _loads(text, path, "scenario file")
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not TOML: {exc}", path=str(path)) from exc
    try:
        return parse_scenario(doc, path=path)
    except ScenarioError as exc:
        if "path" not in exc.details or exc.details["path"] is None:
            exc.details["path"] = str(path)
        raise


__all__ = ["EXAMPLES_DIR", "find_scenario", "list_examples", "load_scenario", "parse_scenario", "parse_at_ms",
           "toml_text"]
