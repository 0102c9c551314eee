"""Load board definitions (``boards/*.toml``) into validated :class:`BoardDefinition` objects."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import tomllib
from pathlib import Path
from typing import Any

from gateway.policy_rules import people_fields
from gateway.resources import boards_dir, load_policy
from gateway.small_files import (
    CONFIG_MAX,
    FileTooLargeError,
    NestedTooDeeplyError,
    NotRegularFileError,
    loads_toml,
    read_limited,
)
from gateway.toml_text import TomlTextError, decode_toml_bytes
from hil.boards.chips import CHIPS, ChipSpec
from hil.boards.errors import (
    BoardFileNotFoundError,
    BoardError,
    BoardNotFoundError,
    BoardSyntaxError,
    FieldTypeError,
    InputOnlyPinError,
    InvalidValueError,
    NotAdcPinError,
    PinError,
    NotWakePinError,
    PinConflictError,
    PinNotOnChipError,
    ReservedPinError,
    UnknownChipError,
    UnknownFieldError,
)
from hil.boards.fields import Problems, Section, Table, type_name
from hil.boards.kinds import KindSpec, check_deep_sleep, kind_spec
from hil.boards.model import BleLink, BoardDefinition, IoPin, SleepSettings, UartLink
from hil.boards.search import SHIPPED, BoardDirectory, board_search_path, find_board_files

logger = logging.getLogger(__name__)

ATTENUATIONS = ("0db", "2.5db", "6db", "11db")
PULLS = ("none", "up", "down")
IO_MODES = ("in", "out", "adc", "pwm")
SLEEP_MODES = ("none", "light", "deep")
BOARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A board name: letters, digits, ``.``, ``_``, ``-`` (as scenario names), 1-64 characters."""


def looks_like_path(text: str) -> bool:
    """Whether a board argument is meant as a file path rather than a board name."""
    return "/" in text or text.endswith(".toml")


def list_boards(directory: Path | None = None) -> list[str]:
    """Return the board names in ``directory``; by default of the search path (``CIVICEDGE_BOARDS``
    directories and the shipped ``boards/``: :func:`hil.boards.search.board_search_path`)."""
    if directory is not None:
        return sorted(p.stem for p in directory.glob("*.toml"))
    return sorted(find_board_files())


def resolve_board_path(name_or_path: str | Path, directory: Path | None = None) -> Path:
    """Find a board file from a board name (``streetlight-esp32``) or a path to a ``.toml`` file.

    A name is looked up in ``directory``, else in the ``CIVICEDGE_BOARDS`` directories and then the
    shipped ``boards/`` (the first holding ``NAME.toml`` wins).

    Raises:
        BoardFileNotFoundError: a path (see :func:`looks_like_path`) that is not an existing file, nor
            (without a ``/``) a board file in ``directory``.
        BoardNotFoundError: no board of that name exists.
        BoardError: the path is a directory, or cannot be looked at (permissions).
    """
    return _resolve(name_or_path, directory)[0]


def _resolve(name_or_path: str | Path, directory: Path | None) -> tuple[Path, BoardDirectory | None]:
    """:func:`resolve_board_path`, with the directory a name was found in (None for a path)."""
    text = str(name_or_path)
    candidate = Path(text)
    try:
        if candidate.is_file():
            return candidate, None
        if candidate.is_dir() and looks_like_path(text):
            raise BoardError("is a directory, not a board definition file; pass a .toml file or a board name",
                             source=text)
        exists = candidate.exists()
    except OSError as exc:
        raise _unreadable(text, exc.strerror or type(exc).__name__) from None
    if "/" in text:  # a path: a wrong CIVICEDGE_BOARDS must not stop it, nor be what its error says
        available = sorted(find_board_files(_dirs_for_listing(directory)))
        if exists:  # not a file, not a directory (a device, a fifo)
            raise BoardNotFoundError(source=text, available=available)
        raise BoardFileNotFoundError(source=text, available=available)
    dirs = [BoardDirectory(directory, "directory")] if directory is not None else board_search_path()
    try:
        for folder in dirs:
            named = folder.path / (text if text.endswith(".toml") else f"{text}.toml")
            if named.is_file():
                return named, folder
        missing_file = looks_like_path(text) and not exists
    except OSError as exc:
        raise _unreadable(text, exc.strerror or type(exc).__name__) from None
    available = sorted(find_board_files(dirs))
    if missing_file:
        raise BoardFileNotFoundError(source=text, available=available)
    raise BoardNotFoundError(source=text, available=available)


def _dirs_for_listing(directory: Path | None) -> list[BoardDirectory]:
    """The directories whose boards an error lists: the search path, or only the shipped one when
    ``CIVICEDGE_BOARDS`` is wrong (the error is about something else)."""
    if directory is not None:
        return [BoardDirectory(directory, "directory")]
    try:
        return board_search_path()
    except BoardError:
        return [BoardDirectory(boards_dir(), SHIPPED)]


def _unreadable(source: str, strerror: str) -> BoardError:
    """The error for a board file that exists but may not be read (or looked at)."""
    return BoardError(f"cannot read the board definition ({strerror}); make it readable by this user (or pass a "
                      "board name)", source=source, cause=strerror)


def load_board(name_or_path: str | Path, *, directory: Path | None = None) -> BoardDefinition:
    """Load and validate a board definition.

    Args:
        name_or_path: board name (file stem in ``boards/``) or path of a TOML file.
        directory: where to look board names up (default: the project's ``boards/``).

    Returns:
        The validated board.

    Raises:
        BoardError: (a subclass) naming the field and what is wrong with it.
    """
    path, folder = _resolve(name_or_path, directory)
    source = str(path)
    try:
        data = loads_toml(_board_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise BoardSyntaxError(source=source, reason=str(exc)) from exc
    except NestedTooDeeplyError as exc:  # was a RecursionError traceback (and ended `boards list`)
        raise BoardSyntaxError(source=source, reason=str(exc)) from None
    except TomlTextError as exc:  # no permission, the file vanished / turned into a directory meanwhile, not UTF-8
        if exc.strerror:
            raise _unreadable(source, exc.strerror) from None
        raise BoardError(str(exc), source=source) from None
    board = parse_board(data, source=source, path=path)
    warning = _file_name_differs(board, path, folder if folder is not None else _search_folder(path))
    if warning is not None:
        board = _with_warning(board, warning)
    logger.debug("loaded board %s (%s, %s) from %s", board.name, board.chip, board.kind, path)
    return board


def _board_text(path: Path) -> str:
    """The text of the board file ``path``: a regular file of at most :data:`CONFIG_MAX` bytes (one swapped
    for a FIFO after it was found is refused, not waited on), decoded as every TOML file is.

    Raises:
        TomlTextError: a directory, unreadable, not a regular file, too large or not UTF-8.
    """
    what = "board definition"
    try:
        data = read_limited(path, CONFIG_MAX)
    except IsADirectoryError:
        raise TomlTextError(f"is a directory, not a {what}", reason="directory") from None
    except (NotRegularFileError, FileTooLargeError) as exc:  # no permission problem: not "make it readable"
        raise TomlTextError(f"cannot read the {what}: {exc.strerror}", reason="unreadable") from None
    except OSError as exc:
        strerror = exc.strerror or type(exc).__name__
        raise TomlTextError(f"cannot read the {what}: {strerror}", reason="unreadable", strerror=strerror) from None
    return decode_toml_bytes(data, what=what)


def parse_board(data: dict[str, Any], *, source: str, path: Path) -> BoardDefinition:
    """Validate a parsed TOML document (see :func:`load_board`).

    Validation goes on after a problem wherever what follows does not depend on it, so the error
    raised (the first problem found) carries every problem of the file in ``problems``.
    """
    problems = Problems()
    root = Table(data, "", source, problems).expect(_ROOT_KEYS)
    with Section(problems):
        root.integer("schema", 1, low=1, high=1)
    name = title = module = chip_name = kind = ""
    with Section(problems):
        name = root.string("name")
        if not BOARD_NAME.fullmatch(name):
            problems.add(InvalidValueError(
                source=source, field="name", value=name,
                reason="must be ASCII letters, digits, '.', '_' or '-' (up to 64, starting with a letter or digit): it is "
                       "the board's name in /board.json, `boards list` and --board"))
    with Section(problems):
        title = root.string("title", name)
    chip: ChipSpec | None = None
    with Section(problems):
        chip_name = root.string("chip")
        chip = CHIPS.get(chip_name)
        if chip is None:  # pins are not checked then: they would all be wrong
            problems.add(UnknownChipError(source=source, chip=chip_name, known=sorted(CHIPS)))
    policy_kinds = load_policy()["kinds"]
    spec: KindSpec | None = None
    with Section(problems):
        kind = root.string("kind", choices=tuple(sorted(policy_kinds)))
        spec = kind_spec(kind, source=source)
    with Section(problems):
        module = root.string("module", "")

    pins = _PinLedger(chip, source, planned=_pins_named(data), problems=problems)
    recovery_pin: int | None = None
    recovery_level = 0
    with Section(problems):
        recovery = root.table("recovery", required=False)
        if recovery is not None:
            recovery.expect(("pin", "level"))
            recovery_pin = pins.claim(recovery.integer("pin"), recovery.where("pin"), need="in-pull")
            if chip is not None and recovery_pin in chip.no_pull:  # boot.py reads it with the internal pull enabled
                problems.add(InvalidValueError(
                    source=source, field=recovery.where("pin"), value=recovery_pin,
                    reason=f"GPIO{recovery_pin} on {chip.name} has no internal pull resistor; "
                           f"{pins.hint('in-pull', recovery.where('pin'))}"))
            recovery_level = recovery.integer("level", 0, low=0, high=1)
            recovery.finish()

    io: dict[str, IoPin] = {}
    broken_io: set[str] = set()  # io roles with a problem: what refers to them is not checked again
    uart: UartLink | None = None
    ble: BleLink | None = None
    calibration: dict[str, dict[str, Any]] = {}
    app: dict[str, Any] = {}
    raw_io = data.get("io")
    if spec is None:  # io roles, calibration and app settings are the kind's: not checked
        root.skip("io", "calibration", "app")
        broken_io = set(raw_io) if isinstance(raw_io, dict) else set()
    else:
        with Section(problems) as part:
            io, broken_io = _parse_io(_required_table(root, "io"), spec, pins)
        if part.failed:
            broken_io = set(raw_io) if isinstance(raw_io, dict) else set()
    with Section(problems):
        # The kind's noisy counts are released only with noise: they need the BLE radio's entropy.
        noisy = people_fields(policy_kinds[kind]) if spec is not None else []
        uart, ble = _parse_links(_required_table(root, "links"), chip, pins, kind, noisy)
    if spec is not None:
        with Section(problems):
            calibration = _parse_calibration(_required_table(root, "calibration"), spec)
    sleep = SleepSettings(mode="none", interval_s=1)
    with Section(problems):
        sleep = _parse_sleep(_required_table(root, "sleep"), io, broken_io, pins, source)
        if sleep.mode == "deep" and spec is not None:
            check_deep_sleep(spec, kind, sleep.wake_pins, source=source)
    watchdog_ms = 0
    with Section(problems):
        watchdog = _required_table(root, "watchdog").expect(("timeout_ms",))
        watchdog_ms = watchdog.integer("timeout_ms", low=1000, high=3_600_000)
        watchdog.finish()
    if spec is not None:
        with Section(problems):
            app = _parse_app(_required_table(root, "app"), spec)
    root.finish()
    problems.raise_if_any()
    board = BoardDefinition(
        name=name, title=title, chip=chip_name, kind=kind, module=module, source=path, io=io, uart=uart, ble=ble,
        recovery_pin=recovery_pin, recovery_level=recovery_level, calibration=calibration, sleep=sleep,
        watchdog_ms=watchdog_ms, app=app,
    )
    warning = _shipped_name_reused(board)
    return board if warning is None else _with_warning(board, warning)


_WARNED: set[tuple[str, str]] = set()


def _with_warning(board: BoardDefinition, warning: str) -> BoardDefinition:
    """``board`` carrying ``warning``, which is logged once per file and process (a fleet loads one
    file many times)."""
    source = str(board.source)
    if (source, warning) not in _WARNED:
        _WARNED.add((source, warning))
        logger.warning("board %s: %s", source, warning)
    return dataclasses.replace(board, warnings=(*board.warnings, warning))


def _search_folder(path: Path) -> BoardDirectory | None:
    """The search-path directory holding ``path`` (a site file checked by path), or None."""
    try:
        parent = path.parent.resolve()
        return next((d for d in board_search_path() if d.path.resolve() == parent), None)
    except (OSError, BoardError):  # a wrong CIVICEDGE_BOARDS does not concern a load by path
        return None


def _file_name_differs(board: BoardDefinition, path: Path, folder: BoardDirectory | None) -> str | None:
    """A warning when a file of the search path (or ``directory``) is not named after its board.

    Names are looked up as file names, so such a file answers to its file name, under which it
    calls itself something else, and in a ``CIVICEDGE_BOARDS`` directory with a shipped board's
    file name it hides that shipped board from every name lookup and from ``boards list``.
    """
    stem = path.stem
    if folder is None or stem == board.name:
        return None
    hides = folder.origin != SHIPPED and (boards_dir() / path.name).is_file()
    instead = f" instead of the shipped board {stem!r}, which this file hides" if hides else ""
    return (f"file {path.name} holds board {board.name!r}: names are looked up as file names, so --board {stem} "
            f"loads {board.name!r}{instead}, and --board {board.name} does not find it; rename the file "
            f"{board.name}.toml")


def _shipped_name_reused(board: BoardDefinition) -> str | None:
    """A warning when ``board`` is not the shipped board of its name but differs from it.

    A warning, not an error: the file is valid, and refusing it would break site files and test
    variants that loaded before this check (in the simulator the name misleads no one; the
    project's own kept-awake bin has a name of its own, ``bin-esp32c3-awake``). On a device in the
    field the name misleads, so every command that loads the file shows it (``boards check``,
    ``flash``, ``provision``, ``sim up``).
    """
    shipped = boards_dir() / f"{board.name}.toml"
    try:
        if not shipped.is_file() or shipped.resolve() == board.source.resolve():
            return None
        original = load_board(shipped)
    except (OSError, BoardError):
        return None  # a damaged shipped file is reported when it is loaded itself
    ours, theirs = board.to_device_config(), original.to_device_config()
    differs = sorted({k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)})
    if not differs:
        return None
    return (f"name {board.name!r} is a shipped board's, but this definition differs from it (in {', '.join(differs)}); "
            f"a board flashed from it would call itself {board.name!r} with other pins or settings: give it a name "
            f"of its own (name = \"{board.name}-yoursite\")")


_ROOT_KEYS = ("schema", "name", "title", "chip", "kind", "module", "recovery", "io", "links", "calibration", "sleep",
              "watchdog", "app")
_ROLE_KEYS = ("mode", "pin", "pull", "active", "atten", "freq")


def _required_table(parent: Table, key: str) -> Table:
    table = parent.table(key)
    assert table is not None  # required=True raises instead of returning None
    return table


def _pins_named(data: dict[str, Any]) -> dict[str, int]:
    """Every integer pin the document names (field -> pin), before any is checked: for free-pin hints."""
    named: dict[str, int] = {}

    def add(field: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool):
            named[field] = value

    for role, entry in (data.get("io") or {}).items() if isinstance(data.get("io"), dict) else ():
        if isinstance(entry, dict):
            add(f"io.{role}.pin", entry.get("pin"))
    links = data.get("links")
    uart = links.get("uart") if isinstance(links, dict) else None
    if isinstance(uart, dict):
        add("links.uart.tx", uart.get("tx"))
        add("links.uart.rx", uart.get("rx"))
    recovery = data.get("recovery")
    if isinstance(recovery, dict):
        add("recovery.pin", recovery.get("pin"))
    return named


class _PinLedger:
    """Checks each pin against the chip and records who uses it (to catch double use).

    ``planned`` is every pin the file names (field -> pin), so a hint never offers a pin that a
    field checked later takes.
    """

    def __init__(self, chip: ChipSpec | None, source: str, planned: dict[str, int] | None = None,
                 problems: Problems | None = None) -> None:
        self.chip = chip
        self.source = source
        self.used: dict[int, str] = {}
        self.planned = planned or {}
        self.problems = problems

    def claim(self, pin: int, use: str, *, need: str) -> int:
        """Check ``pin`` for ``use`` (a problem is recorded, or raised without a collector) and return it.

        With an unknown chip (None) only double use is checked.
        """
        error = self._problem(pin, use, need)
        if error is None:
            self.used[pin] = use
        elif self.problems is None:
            raise error
        else:
            self.problems.add(error)
        return pin

    def hint(self, need: str, use: str) -> str:
        """The GPIOs that can do ``need`` for the field ``use`` and that no other field of the file uses."""
        assert self.chip is not None
        return self.chip.free_hint(need, set(self.used) | {p for f, p in self.planned.items() if f != use})

    def _problem(self, pin: int, use: str, need: str) -> PinError | None:
        chip, src = self.chip, self.source
        if chip is None:
            if pin in self.used:
                return PinConflictError(source=src, pin=pin, use=use, chip="an unknown chip", first_use=self.used[pin])
            return None
        hint = self.hint(need, use)
        if pin not in chip.gpios:
            return PinNotOnChipError(source=src, pin=pin, use=use, chip=chip.name, hint=hint)
        if pin in chip.reserved:
            return ReservedPinError(source=src, pin=pin, use=use, chip=chip.name, reason=chip.reserved[pin], hint=hint)
        if need == "adc" and pin not in chip.adc_pins:
            return NotAdcPinError(source=src, pin=pin, use=use, chip=chip.name, adc_pins=sorted(chip.usable("adc")),
                                  hint=hint)
        if need == "out" and pin in chip.input_only:
            return InputOnlyPinError(source=src, pin=pin, use=use, chip=chip.name, hint=hint)
        if pin in chip.console_pins:
            return ReservedPinError(source=src, pin=pin, use=use, chip=chip.name, hint=hint,
                                    reason="UART0, the civicedge console (docs/boards.md, \"Chips\")")
        if pin in self.used:
            return PinConflictError(source=src, pin=pin, use=use, chip=chip.name, first_use=self.used[pin], hint=hint)
        return None


def _parse_io(table: Table, spec: KindSpec, pins: _PinLedger) -> tuple[dict[str, IoPin], set[str]]:
    """The io roles of the kind, and the roles that have a problem (recorded; raised without a collector)."""
    io: dict[str, IoPin] = {}
    broken: set[str] = set()
    table.expect(spec.io)
    for role in table.keys():
        if role not in spec.io:
            table.soft(UnknownFieldError(source=table.source, field=table.where(role), allowed=sorted(spec.io)), None)
            table.skip(role)
    for role, modes in spec.io.items():
        before = len(table.problems.errors) if table.problems is not None else 0
        with _section_of(table) as part:
            io[role] = _parse_role(_required_table(table, role).expect(_ROLE_KEYS), role, modes, pins)
        if part.failed or (table.problems is not None and len(table.problems.errors) > before):
            broken.add(role)
    table.finish(sorted(spec.io))
    return io, broken


def _section_of(table: Table) -> Any:
    """A :class:`Section` when collecting; without a collector, nothing is caught."""
    return Section(table.problems) if table.problems is not None else contextlib.nullcontext(_NoSection())


class _NoSection:
    failed = False


def _parse_role(entry: Table, role: str, modes: tuple[str, ...], pins: _PinLedger) -> IoPin:
    mode = entry.string("mode", choices=modes)
    need = {"in": "in", "adc": "adc", "out": "out", "pwm": "out"}[mode]
    if mode == "in" and entry.data.get("pull") in ("up", "down"):  # a hint offers pins with pull resistors
        need = "in-pull"
    pin = pins.claim(entry.integer("pin"), entry.where("pin"), need=need)
    chip = pins.chip
    if mode == "in":
        pull = entry.string("pull", "none", choices=PULLS)
        if pull != "none" and chip is not None and pin in chip.no_pull:
            entry.soft(InvalidValueError(source=entry.source, field=entry.where("pull"), value=pull,
                                         reason=f"GPIO{pin} on {chip.name} has no internal pull resistors; "
                                                f"use an external one and pull = \"none\", or another pin "
                                                f"({pins.hint('in-pull', entry.where('pin'))})"), None)
        item = IoPin(role, "in", pin, pull=pull, active=entry.integer("active", 1, low=0, high=1))
    elif mode == "out":
        item = IoPin(role, "out", pin, active=entry.integer("active", 1, low=0, high=1))
    elif mode == "adc":
        item = IoPin(role, "adc", pin, atten=entry.string("atten", "11db", choices=ATTENUATIONS))
    else:
        item = IoPin(role, "pwm", pin, freq=entry.integer("freq", 1000, low=1, high=40_000_000))
    entry.finish()
    return item


def _parse_links(table: Table, chip: ChipSpec | None, pins: _PinLedger, kind: str,
                 noisy: list[str]) -> tuple[UartLink | None, BleLink | None]:
    """The data links; ``noisy`` names the kind's noisy_count fields (they need the BLE radio)."""
    uart: UartLink | None = None
    ble: BleLink | None = None
    u = table.expect(("ble", "uart")).table("uart", required=False)
    if u is not None:
        uart_id = u.expect(("id", "tx", "rx", "baud")).integer("id")
        if chip is not None and uart_id not in chip.uart_ids:
            u.soft(InvalidValueError(source=u.source, field=u.where("id"), value=uart_id,
                                     reason=f"{chip.name} data UARTs are {sorted(chip.uart_ids)} (UART0 is the console)"),
                   None)
        tx = pins.claim(u.integer("tx"), u.where("tx"), need="out")
        rx = pins.claim(u.integer("rx"), u.where("rx"), need="in")
        uart = UartLink(id=uart_id, tx=tx, rx=rx, baud=u.integer("baud", 115200, low=1200, high=5_000_000))
        u.finish()
    b = table.table("ble", required=False)
    if b is not None:
        ble = BleLink(mtu=b.integer("mtu", 185, low=23, high=517),
                      adv_interval_ms=b.integer("adv_interval_ms", 500, low=20, high=10_240))
        b.finish()
    table.finish(["ble", "uart"])
    if uart is None and ble is None:
        raise InvalidValueError(source=table.source, field="links", value={}, reason="a board needs a uart or ble link")
    if ble is None and noisy:
        # The firmware draws noise only while the radio is on (the ESP32 RNG is truly random only
        # then); without one it would hold these counts forever and never release them.
        raise InvalidValueError(source=table.source, field="links.ble", value=None,
                                reason=f"a board of kind {kind!r} needs [links.ble]: its noisy counts ({', '.join(noisy)}) "
                                       "are released only while the BLE radio is on, the source of entropy "
                                       "for their noise (docs/privacy.md section 5)")
    return uart, ble


def _parse_calibration(table: Table, spec: KindSpec) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    table.expect(spec.calibration)
    for name, consts in spec.calibration.items():
        with _section_of(table) as part:
            entry = _required_table(table, name).expect(consts)
            values: dict[str, Any] = {}
            for const in consts:
                if const == "table":
                    values[const] = _int_table(entry, const)
                else:
                    values[const] = entry.integer(const)
            entry.finish()
        if not part.failed:  # cross checks only with every constant of the table
            out[name] = values
    table.finish(sorted(spec.calibration))
    _check_calibration(table, out)
    return out


def _int_table(entry: Table, key: str) -> list[list[int]]:
    """An array of [x, y] integer pairs with strictly increasing x (piecewise-linear curve)."""
    rows = entry.array(key)
    where = entry.where(key)
    out: list[list[int]] = []
    for i, row in enumerate(rows):
        ok = isinstance(row, list) and len(row) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in row)
        if not ok:
            raise FieldTypeError(source=entry.source, field=f"{where}[{i}]", expected="an [integer, integer] pair",
                                 actual=type_name(row))
        if out and row[0] <= out[-1][0]:
            raise InvalidValueError(source=entry.source, field=f"{where}[{i}]", value=row,
                                    reason="x values must increase strictly")
        out.append([row[0], row[1]])
    if len(out) < 2:
        raise InvalidValueError(source=entry.source, field=where, value=rows, reason="needs at least two points")
    return out


def _check_calibration(table: Table, cal: dict[str, dict[str, Any]]) -> None:
    """Cross-field sanity checks that would otherwise divide by zero or invert a scale on the device."""
    src = table.source

    def bad(field: str, value: Any, reason: str) -> None:
        table.soft(InvalidValueError(source=src, field=f"calibration.{field}", value=value, reason=reason), None)

    if "fill" in cal:
        f = cal["fill"]
        if not 0 < f["full_mm"] < f["empty_mm"]:
            bad("fill.full_mm", f["full_mm"], "must be > 0 and below empty_mm")
        if not 1 <= f["pings"] <= 15:
            bad("fill.pings", f["pings"], "must be between 1 and 15")
    if "battery" in cal:
        b = cal["battery"]
        if b["divider_den"] <= 0 or b["divider_num"] <= 0:
            bad("battery.divider_den", b["divider_den"], "divider terms must be positive")
        if b["full_mv"] <= b["empty_mv"]:
            bad("battery.full_mv", b["full_mv"], "must be above empty_mv")
    if "lamp" in cal:
        lamp = cal["lamp"]
        for key in ("watts", "mains_v", "ma_full", "ma_per_volt"):
            if lamp[key] <= 0:
                bad(f"lamp.{key}", lamp[key], "must be positive")
        if not 0 <= lamp["tolerance_pct"] <= 100:
            bad("lamp.tolerance_pct", lamp["tolerance_pct"], "must be between 0 and 100")
        if not 0 <= lamp["min_level"] <= 100:
            bad("lamp.min_level", lamp["min_level"], "must be between 0 and 100")


def _parse_sleep(table: Table, io: dict[str, IoPin], broken_io: set[str], pins: _PinLedger,
                 source: str) -> SleepSettings:
    chip = pins.chip
    mode = table.expect(("mode", "interval_s", "wake_pins")).string("mode", choices=SLEEP_MODES)
    interval = table.integer("interval_s", low=1, high=86_400)
    wake_names = table.array("wake_pins", [])
    wake: list[str] = []
    for i, name in enumerate(wake_names):
        where = f"{table.where('wake_pins')}[{i}]"
        if not isinstance(name, str):
            table.soft(FieldTypeError(source=source, field=where, expected="an io name", actual=type_name(name)), None)
            continue
        if name in broken_io:  # its own problem is reported already
            wake.append(name)
            continue
        if name not in io or io[name].mode != "in":
            table.soft(InvalidValueError(source=source, field=where, value=name,
                                         reason="must name a digital input in [io]"), None)
            continue
        pin = io[name].pin
        if mode == "deep" and chip is not None and pin not in chip.wake_capable:
            need = "wake" if io[name].pull == "none" else "wake-pull"
            table.soft(NotWakePinError(source=source, pin=pin, use=where, chip=chip.name,
                                       wake_pins=sorted(chip.usable("wake")),
                                       hint=pins.hint(need, f"io.{name}.pin")), None)
        wake.append(name)
    table.finish()
    return SleepSettings(mode=mode, interval_s=interval, wake_pins=tuple(wake))  # type: ignore[arg-type]


def _parse_app(table: Table, spec: KindSpec) -> dict[str, Any]:
    app: dict[str, Any] = {}
    table.expect([*spec.app_ints, *(["schedule"] if spec.needs_schedule else [])])
    for key, (low, high) in spec.app_ints.items():
        app[key] = table.integer(key, low=low, high=high)
    if spec.needs_schedule:
        app["schedule"] = _schedule(table)
    table.finish()
    if "on_lux" in app and app["off_lux"] < app["on_lux"]:
        table.soft(InvalidValueError(source=table.source, field="app.off_lux", value=app["off_lux"],
                                     reason="must be >= on_lux (hysteresis)"), None)
    return app


def _schedule(table: Table) -> list[list[int]]:
    """``[["HH:MM", level], ...]`` -> ``[[minute_of_day, level], ...]`` sorted by minute."""
    rows = table.array("schedule")
    where = table.where("schedule")
    out: list[list[int]] = []
    for i, row in enumerate(rows):
        ok = (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
              and isinstance(row[1], int) and not isinstance(row[1], bool))
        if not ok:
            raise FieldTypeError(source=table.source, field=f"{where}[{i}]", expected='a ["HH:MM", level] pair',
                                 actual=type_name(row))
        minute = _minute_of_day(row[0])
        if minute is None:
            raise InvalidValueError(source=table.source, field=f"{where}[{i}]", value=row[0], reason="time must be HH:MM")
        if not 0 <= row[1] <= 100:
            raise InvalidValueError(source=table.source, field=f"{where}[{i}]", value=row[1], reason="level must be 0..100")
        out.append([minute, row[1]])
    if not out:
        raise InvalidValueError(source=table.source, field=where, value=rows, reason="needs at least one entry")
    minutes = [m for m, _ in out]
    if len(set(minutes)) != len(minutes):
        raise InvalidValueError(source=table.source, field=where, value=rows, reason="times must be distinct")
    return sorted(out)


def _minute_of_day(text: str) -> int | None:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        return None
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59:
        return None
    return hour * 60 + minute
