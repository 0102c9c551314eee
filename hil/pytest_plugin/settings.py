"""The HIL options of one pytest session, parsed once (``config.stash[settings_key]``)."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hil.backends.capabilities import CapabilityManifest, manifest_for
from hil.backends.errors import BackendError
from hil.boards import (BoardDefinition, BoardError, BoardNotFoundError, board_search_path, list_boards, load_board,
                        suggest_board)
from hil.pytest_plugin.ports import PortRange

DEFAULT_BOARD = "streetlight-esp32"


@dataclass
class HilSettings:
    """Parsed ``--hil-*`` options.

    Attributes:
        backend: ``sim``, ``qemu`` or ``serial``.
        board_name: ``--hil-board`` (None: the default board, or none at all for ``serial``).
        port: ``--hil-port`` selector (serial backend).
        data_port: ``--hil-data-port``: the board's data UART (serial backend), or None.
        qemu_image: ``--hil-qemu-image FILE`` (qemu backend): the release image for boards of any chip
            without one of their own in ``qemu_images``.
        qemu_images: ``--hil-qemu-image CHIP=FILE``: release images by chip (``esp32``, ``esp32c3``, ``esp32s3``).
        qemu_image_problem: what is wrong with the ``--hil-qemu-image`` values (a usage error at session start).
        lease_dir: directory of board leases (serial backend).
        lease_wait_s: how long to wait for a board held by another run.
        sim_speed: virtual seconds per wall second for virtual boards (0 = as fast as possible).
        port_range: ``--hil-port-range``: the ports the gateway's HTTP server, the virtual radio and
            QEMU's console, data UART and QMP sockets listen on (None: any free port).
        reprovision: ``--hil-reprovision``: the serial backend may replace an identity the board
            already has (saved and put back at teardown); without it such a board is refused.
    """

    backend: str
    board_name: str | None
    port: str | None
    qemu_image: Path | None
    lease_dir: Path
    lease_wait_s: float = 30.0
    sim_speed: float | None = 1.0
    data_port: str | None = None
    port_range: PortRange | None = None
    reprovision: bool = False
    qemu_images: dict[str, Path] = field(default_factory=dict)
    qemu_image_problem: str | None = None
    _manifest: CapabilityManifest | None = field(default=None, repr=False)
    _boards: dict[str, BoardDefinition] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: pytest.Config) -> "HilSettings":
        """Read the options from a pytest config."""
        image_problem: str | None = None
        try:
            plain, by_chip = qemu_image_options(config.getoption("--hil-qemu-image", default=None) or [])
        except pytest.UsageError as exc:  # raised at session start: --help must still work
            plain, by_chip, image_problem = None, {}, str(exc)
        lease_dir = config.getoption("--hil-lease-dir", default=None)
        return cls(
            backend=str(config.getoption("--hil-backend", default="sim")),
            board_name=config.getoption("--hil-board", default=None),
            port=config.getoption("--hil-port", default=None),
            qemu_image=plain,
            qemu_images=by_chip,
            qemu_image_problem=image_problem,
            lease_dir=Path(lease_dir) if lease_dir else default_lease_dir(),
            lease_wait_s=float(config.getoption("--hil-lease-wait", default=30.0) or 0.0),
            sim_speed=float(config.getoption("--hil-sim-speed", default=1.0) or 0.0),
            data_port=config.getoption("--hil-data-port", default=None) or None,
            port_range=config.getoption("--hil-port-range", default=None),
            reprovision=bool(config.getoption("--hil-reprovision", default=False)),
        )

    def board(self, name: str | None = None, *, test_file: Path | None = None) -> BoardDefinition:
        """Load (once) the board definition ``name``, ``--hil-board``, or the default board (not on the
        serial backend: a real board's definition is never assumed, :meth:`no_definition_reason`).

        Args:
            name: a board name or path from a marker (None: ``--hil-board``, else the default).
            test_file: the test file of that marker: a path ``name`` is relative to its directory
                (:func:`marker_board_ref`). ``--hil-board`` paths are relative to the current directory.

        Raises:
            hil.boards.BoardError: unknown or invalid board.
            BackendError: the serial backend, and neither ``name`` nor ``--hil-board``.
        """
        if not name:
            missing = self.no_definition_reason()
            if missing is not None:
                raise BackendError(missing, backend=self.backend)
        key = marker_board_ref(name, test_file) if name and test_file is not None else name
        key = key or self.board_name or DEFAULT_BOARD
        if key not in self._boards:
            self._boards[key] = load_board(key)
        return self._boards[key]

    def qemu_image_for(self, chip: str) -> Path | None:
        """The release image for boards of ``chip``: ``--hil-qemu-image CHIP=FILE``, else the plain
        ``--hil-qemu-image FILE``, else None (tests of that chip are skipped)."""
        return self.qemu_images.get(chip, self.qemu_image)

    def no_definition_reason(self) -> str | None:
        """Why the session has no board definition (the serial backend without ``--hil-board``), else None.

        A real board's definition is never assumed: another board's /board.json on it (pins of another
        board, another chip) keeps its firmware from starting.
        """
        if self.backend != "serial" or self.board_name is not None:
            return None
        problem = self.board_search_problem()
        try:
            names = (", ".join(list_boards()) or "none") if problem is None else f"cannot be listed: {problem}"
        except OSError:  # only the hint's list is lost
            names = "see boards/"
        return (f"no board definition for the board on --hil-port {self.port}: the serial backend assumes none; "
                "name the one it was flashed with (civicedge flash --board NAME) with --hil-board NAME or "
                f"@pytest.mark.board(NAME) (boards: {names})")

    def board_search_problem(self) -> str | None:
        """What is wrong with ``CIVICEDGE_BOARDS`` (an entry that is not a directory), else None.

        Every board-name lookup fails while it is wrong; the plugin says so once, as a usage error
        (:func:`hil.pytest_plugin.pytest_collection_modifyitems`), not as a traceback in each test.
        """
        try:
            board_search_path()
        except BoardError as exc:
            return f"{exc} (fix or unset it)"
        return None

    def manifest(self) -> CapabilityManifest:
        """The backend's capability manifest for the session's board (computed once)."""
        if self._manifest is None:
            if self.backend == "serial" and self.board_name is None:
                self._manifest = manifest_for("serial", None)
            else:
                self._manifest = manifest_for(self.backend, self.board())
        return self._manifest


def qemu_image_options(values: list[str]) -> tuple[Path | None, dict[str, Path]]:
    """``--hil-qemu-image`` values (repeatable) as (the plain ``FILE``, ``{chip: FILE}`` of ``CHIP=FILE``).

    A value is ``CHIP=FILE`` when the text before its first ``=`` has no ``/`` and the whole value is not
    an existing file (a file name with ``=`` in it stays a file).

    Raises:
        pytest.UsageError: an unknown chip, a chip or the plain form given twice.
    """
    from hil.backends.qemu.launcher import QEMU_TARGETS

    plain: Path | None = None
    by_chip: dict[str, Path] = {}
    for value in values:
        chip, sep, file = value.partition("=")
        if sep and "/" not in chip and not Path(value).is_file():
            key = chip.strip().lower()
            if key not in QEMU_TARGETS:
                raise pytest.UsageError(f"--hil-qemu-image {value}: unknown chip {chip!r}; chips: "
                                        f"{', '.join(sorted(QEMU_TARGETS))} (or give just FILE)")
            if key in by_chip:
                raise pytest.UsageError(f"--hil-qemu-image {value}: an image for {key} is given twice")
            by_chip[key] = Path(file)
        elif plain is not None:
            raise pytest.UsageError(f"--hil-qemu-image {value}: a second image without a chip; give the images "
                                    f"as CHIP=FILE (chips: {', '.join(sorted(QEMU_TARGETS))})")
        else:
            plain = Path(value)
    return plain, by_chip


def marker_board_ref(name: str, test_file: Path) -> str:
    """What ``load_board`` gets for the board a ``board(...)``/``fleet(...)`` marker names.

    A name with a ``/`` is a path, relative to the directory of the test file (as board paths in
    scenario files are relative to the scenario file), never to the current directory: a test finds
    its board file wherever pytest is started from. A bare ``x.toml`` is the file next to the test
    when there is one, else (as ``load_board`` resolves it) a file ``x.toml`` in the current directory
    when there is one, else the board ``x`` of ``boards/``. Anything else is a board name (or, like
    ``load_board`` takes it, a file of that name in the current directory).
    """
    path = Path(name)
    if "/" in name or os.sep in name:
        return str(path if path.is_absolute() else test_file.parent / path)
    if name.endswith(".toml") and (test_file.parent / name).is_file():
        return str(test_file.parent / name)
    return name


def board_error_suffix(name: str, exc: BoardError, test_file: Path | None = None) -> str:
    """What to add to the first problem ``exc`` of the board ``name`` (``--hil-board``, or a marker of the
    test in ``test_file``) says: how many more the file has, as ``civicedge boards list`` says it (`` (and 3
    more: civicedge boards check FILE)``); for a board name not found, that ``./boards/NAME.toml`` exists in
    the current directory but is not where names are looked up, and the path to pass instead: relative to
    the current directory for ``--hil-board``, relative to the test file's directory for a marker (a path
    in a marker is: :func:`marker_board_ref`)."""
    more = len(exc.problems) - 1
    if more > 0:
        return f" (and {more} more: civicedge boards check {exc.source})"
    if isinstance(exc, BoardNotFoundError) and "/" not in name and os.sep not in name:
        local = Path("boards") / (name if name.endswith(".toml") else f"{name}.toml")
        if local.is_file():
            return (f"; {local} exists in the current directory, but board names are looked up in the "
                    f"CIVICEDGE_BOARDS directories and the boards/ shipped inside civicedge only: "
                    f"{_pass_path_advice(local, test_file)} or add ./boards to CIVICEDGE_BOARDS")
    return ""


def _pass_path_advice(local: Path, test_file: Path | None) -> str:
    """How to name the board file ``local`` (relative to the current directory) by its path instead."""
    target = Path.cwd() / local
    if test_file is None or test_file.parent.resolve() == Path.cwd().resolve():
        return f"pass its path ({local})"  # a marker's path is relative to the test's directory: here the same
    # Resolved both: the OS resolves test_dir/../boards through a symlinked test directory.
    relative = Path(os.path.relpath(target.resolve(), test_file.parent.resolve())).as_posix()
    if "/" not in relative:  # x.toml next to the test: a bare name is looked up as a board name first
        relative = f"./{relative}"
    return f"pass its path, relative to the test file's directory as paths in markers are ({relative}, or absolute: {target}),"


def board_problem(name: str, test_file: Path | None, exc: BoardError) -> str:
    """One line saying what is wrong with the board ``name`` a marker gives, with a did-you-mean for a
    mistyped board name (``streetlite-esp32``, ``streetlight``) and :func:`board_error_suffix`."""
    return _board_problem(name, test_file, exc) + board_error_suffix(name, exc, test_file)


def _board_problem(name: str, test_file: Path | None, exc: BoardError) -> str:
    if not isinstance(exc, BoardNotFoundError):
        return str(exc)
    available = ", ".join(exc.available) or "none"
    ref = marker_board_ref(name, test_file) if test_file is not None else name
    if test_file is not None and ref == name and "/" not in name and name.endswith(".toml"):
        # A bare x.toml is looked for next to the test (marker_board_ref), then by load_board in the
        # current directory and the board directories (CIVICEDGE_BOARDS's, boards/): say where.
        places = ", ".join([f"{test_file.parent / name} next to the test", f"{Path.cwd() / name} in the current "
                            "directory"] + [str(folder.path / name) for folder in board_search_path()])
        return f"no board file {name} (looked for {places}); boards by name: {available}"
    if ref != name or "/" in name:
        where = " (a path in a marker is relative to the test file's directory)" if test_file is not None else ""
        return f"no board file {ref}{where}; boards by name: {available}"
    # One did-you-mean for the whole project: the loader's (a file-not-found error carries none).
    suggestion = exc.suggestion if exc.suggestion is not None else suggest_board(name, exc.available)
    hint = f"did you mean {suggestion!r}? " if suggestion else ""
    return f"no such board {name!r} ({hint}boards: {available})"


def default_lease_dir() -> Path:
    """Where leases live unless ``--hil-lease-dir`` says otherwise (shared by the host's runs)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / "civicedge-leases"


def _non_negative(text: str, *, what: str, zero_means: str) -> float:
    """``text`` as a finite number >= 0, or argparse's usage error naming ``what`` it counts."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number of {what}, got {text!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0{' seconds' if what == 'seconds' else ''} "
                                         f"(0 = {zero_means}), got {text!r}")
    return value


def sim_speed_option(text: str) -> float:
    """``--hil-sim-speed`` as a number >= 0 (argparse type: a bad value is a usage error)."""
    return _non_negative(text, what="virtual seconds per wall second", zero_means="as fast as possible")


def lease_wait_option(text: str) -> float:
    """``--hil-lease-wait`` as a number of seconds >= 0 (argparse type: a bad value is a usage error)."""
    return _non_negative(text, what="seconds", zero_means="do not wait")


def port_range_option(text: str) -> PortRange:
    """``--hil-port-range LOW-HIGH`` (argparse type: a bad value is a usage error)."""
    import argparse

    try:
        return PortRange.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sim_marker_options(item: pytest.Item) -> tuple[float | None, int | None]:
    """``(speed, seed)`` of the item's closest ``sim`` marker (None where not given); its ``start=`` is
    :func:`sim_marker_start_ms`.

    Raises:
        pytest.UsageError: positional arguments, unknown keys, a speed that is not a number >= 0, a seed
            that is not an integer, or a bad ``start=``.
    """
    import math

    mark = item.get_closest_marker("sim")
    if mark is None:
        return None, None
    opts = dict(mark.kwargs)
    unknown = set(opts) - {"speed", "seed", "start"}
    if unknown or mark.args:
        raise pytest.UsageError(f"{item.nodeid}: sim(...) takes speed=, seed= and start= only")
    speed = opts.get("speed")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed < 0):
        raise pytest.UsageError(f"{item.nodeid}: sim(speed=...) must be a number >= 0 (0 = as fast as possible), "
                                f"got {speed!r}")
    seed = opts.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise pytest.UsageError(f"{item.nodeid}: sim(seed=...) must be an integer, got {seed!r}")
    sim_marker_start_ms(item)
    return (None if speed is None else float(speed)), seed


# The firmware takes a clock before 2024 for one that was never set and reports nothing (clock.VALID_AFTER).
SIM_EARLIEST_START = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
SIM_LATEST_START = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


def sim_marker_start_ms(item: pytest.Item) -> int | None:
    """The virtual clock's start (unix ms) from the item's closest ``sim(start=...)`` marker: an ISO 8601
    time with its offset (``"2026-12-21T22:00:00Z"``) or an aware :class:`datetime.datetime`; None: the
    wall clock now (no marker or no ``start=``).

    Raises:
        pytest.UsageError: not a time, a time without an offset (whose zone would be the test host's),
            or outside 2024-01-02 .. 2100.
    """
    mark = item.get_closest_marker("sim")
    if mark is None or mark.kwargs.get("start") is None:
        return None
    value = mark.kwargs["start"]
    where = f"{item.nodeid}: sim(start=...)"
    if isinstance(value, str):
        try:
            start = dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise pytest.UsageError(f"{where} must be an ISO 8601 time such as \"2026-12-21T22:00:00Z\", "
                                    f"got {value!r}") from None
    elif isinstance(value, dt.datetime):
        start = value
    else:
        raise pytest.UsageError(f"{where} must be an ISO 8601 string or a datetime, got {value!r}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise pytest.UsageError(f"{where} {value!r} has no UTC offset (add Z or +HH:MM): the board's clock is UTC, "
                                "and a local time would depend on the machine running the test")
    if not SIM_EARLIEST_START <= start < SIM_LATEST_START:
        raise pytest.UsageError(f"{where} must be from {SIM_EARLIEST_START:%Y-%m-%d} to {SIM_LATEST_START:%Y} "
                                f"(the firmware takes an earlier clock for one never set), got {value!r}")
    return int(start.timestamp() * 1000)


settings_key = pytest.StashKey[HilSettings]()
