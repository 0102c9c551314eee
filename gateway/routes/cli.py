"""``civicedge routes plan``: the day's collection plan from the gateway's bin data.

Exit codes (also in docs/routes.md):
    0 plan written; 2 invalid input (date, depot, number, format, matrix file);
    3 no bins due; 4 vehicle capacity smaller than one bin's load; 5 bin data unreadable
    (store or registry); 6 solver found no solution; 7 the solver's package (ortools) cannot be imported.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import stat
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NoReturn

from gateway.errors import ConfigError
from gateway.output_guard import GatewayFiles, OutputRefused, check_output
from gateway.routes.config import PlanDefaults, load_bin_volumes, load_plan_defaults
from gateway.routes.distances import CsvMatrix, OsrmTable
from gateway.routes.errors import BinDataError, InvalidInputError, RoutesError, counted
from gateway.routes.outputs import (
    CSV_COLUMNS,
    DEFAULT_SERVICE_S,
    DEFAULT_SPEED_KMH,
    FORMATS,
    MAX_SERVICE_S,
    MAX_SPEED_KMH,
    render,
    render_failure,
)
from gateway.routes.parsing import (
    MAX_BIN_VOLUME_L,
    MAX_CAPACITY_L,
    MAX_DAYS_TO_NEXT_ROUND,
    MAX_OSRM_TIMEOUT_S,
    MAX_TIME_LIMIT_S,
    MAX_VEHICLES,
    MIN_BIN_VOLUME_L,
    MIN_CAPACITY_L,
    parse_clock,
    parse_date,
    parse_depot,
    parse_litres,
    parse_positive,
    parse_threshold,
    parse_timezone,
)
from gateway.routes.planner import DEFAULT_FAR_BIN_KM, MAX_FAR_BIN_KM, MAX_ROUTE_KM, PlanSettings
from gateway.routes.worker import plan_or_notice
from gateway.routes.source import GatewayBinSource
from gateway.stdout_data import write_utf8

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NO_BINS_DUE = 3


class ConfigFileError(BinDataError):
    """The ``--config`` file cannot be read or is not a valid gateway.toml (exit 5, as unreadable bin data:
    the store and registry paths come from it). Its message names the config file, not "bin data", and its
    code (in the ``--out`` file and on stderr) is ``config``."""

    reason = "config"

    def __init__(self, path: str, problem: str) -> None:
        RoutesError.__init__(self, f"cannot read the config file {path}: {problem}", source=path, problem=problem)
        self.source = path
        self.problem = problem


@contextlib.contextmanager
def _reading_config(path: Path) -> Iterator[None]:
    """Inside, a :class:`BinDataError` about the config file becomes a :class:`ConfigFileError`."""
    try:
        yield
    except ConfigFileError:
        raise
    except BinDataError as exc:
        raise ConfigFileError(str(path), exc.problem) from exc


class _PlanParser(argparse.ArgumentParser):
    """The ``routes plan`` parser: its usage error for ``--depot -33.9,-70.6`` says how to write it.

    argparse takes a value that starts with ``-`` (and is not a plain number) for an option, so a
    southern or western depot given after a space leaves ``--depot`` without its value.
    """

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument --depot:") and "expected one argument" in message:
            message += " (a depot starting with '-' is written with '=': --depot=-33.9,-70.6)"
        super().error(message)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``routes`` command group (``routes plan``)."""
    routes = subparsers.add_parser(
        "routes", help="waste collection routes from smart-bin reports",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Plan waste collection rounds from the fill levels and alarms the bins report to the\n"
                    "gateway: which bins are due and, per vehicle, in which order to empty them.\n"
                    "Reads the gateway's report store and registry. See docs/routes.md.\n"
                    "\n"
                    "example:\n"
                    "  civicedge routes plan --config gateway.toml --date tomorrow --format geojson")
    sub = routes.add_subparsers(dest="routes_command", metavar="SUBCOMMAND", parser_class=_PlanParser)
    routes.set_defaults(func=lambda args: (routes.print_help(), 2)[1])
    p = sub.add_parser(
        "plan",
        help="plan a collection round: due bins, vehicles, order",
        description="Select the bins to empty (full, predicted full before the next round, fire or "
                    "tip-over alarm first) and solve the capacitated vehicle routing problem. "
                    "Exit codes: 0 ok, 2 invalid input, 3 no bins due, 4 capacity smaller than one bin, "
                    "5 bin data unreadable, 6 no solution, 7 solver packages missing (the 'routes' extra: ortools, numpy).",
    )
    p.add_argument("--date", default="today", help="collection date YYYY-MM-DD (2000-01-01 to 2099-12-31), "
                                                   "'today' or 'tomorrow' (default today; by the simulated "
                                                   "clock under the --config's [sim_clock], as the gateway)")
    p.add_argument("--depot", help="depot as LAT,LON in decimal degrees, --depot=LAT,LON when it starts with '-' "
                                   "(default: [routes] depot in gateway.toml; one of them is required)")
    p.add_argument("--vehicles", help=f"number of vehicles, at most {MAX_VEHICLES} (default: [routes] vehicles of --config, else 2)")
    p.add_argument("--capacity",
                   help=f"capacity of each vehicle in litres, {MIN_CAPACITY_L:.0f} to {MAX_CAPACITY_L:.0f}, no thousands separator (default: [routes] capacity_l of --config, else 10000)")
    p.add_argument("--threshold", help="fill at or above which a bin is due: 0.8 or 80%% (default: [routes] threshold of --config, else 0.8)")
    p.add_argument("--bin-volume", help=f"volume of a bin in litres, {MIN_BIN_VOLUME_L:.0f} to {MAX_BIN_VOLUME_L:.0f}, no thousands separator (default: [routes] bin_volume_l of --config, else 240)")
    p.add_argument("--bin-volumes", type=Path, help="CSV id,volume_l giving some bins their own volume (default: [routes] bin_volumes of --config)")
    p.add_argument("--start", help="local time the round starts, HH:MM (default: [routes] start of --config, else 06:00)")
    p.add_argument("--tz", help="IANA time zone of --date and --start (default: [routes] tz of --config, else UTC)")
    p.add_argument("--days-to-next", help="days until the next round, the prediction horizon, "
                                          f"at most {MAX_DAYS_TO_NEXT_ROUND} (default: [routes] days_to_next_round of --config, else 1)")
    p.add_argument("--time-limit", help=f"seconds the solver improves the routes, at most {MAX_TIME_LIMIT_S:g}; the "
                   "whole limit is always used (no early stop), 0 keeps the first solution without improving it "
                   "(default: [routes] time_limit_s of --config, else 5)")
    p.add_argument("--speed", help=f"average driving speed in km/h for the estimated times (eta), at most "
                                   f"{MAX_SPEED_KMH:g} (default: [routes] speed_kmh of --config, else "
                                   f"{DEFAULT_SPEED_KMH:g})")
    p.add_argument("--service-time", help=f"seconds to empty one bin, for the estimated times, at most "
                                          f"{MAX_SERVICE_S:g} (default: [routes] service_s of --config, else "
                                          f"{DEFAULT_SERVICE_S:g})")
    p.add_argument("--max-route-km", help=f"longest route a vehicle may drive, km, at most {MAX_ROUTE_KM:g}; bins "
                                          "beyond it are unserved (default: [routes] max_route_km of --config, "
                                          "else no limit)")
    p.add_argument("--far-bin-km", help="due bins farther than this from both the middle of the registered bins "
                                        "and the depot are not planned (a location typo?), km, 0 turns the check "
                                        f"off, at most {MAX_FAR_BIN_KM:g} (default: [routes] far_bin_km of --config, "
                                        f"else {DEFAULT_FAR_BIN_KM:g})")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--db", type=Path,
                      help="the gateway's report store (SQLite; default: the store of a gateway run without "
                           "--config)")
    data.add_argument("--config", type=Path,
                      help="gateway.toml: its [storage] and [registry] paths, and [routes] defaults, are used")
    p.add_argument("--registry", type=Path,
                   help="device registry directory (default: 'registry' next to --db, or --db's directory when it "
                        "holds devices.sqlite, as a backup does; or the --config's)")
    dist = p.add_mutually_exclusive_group()
    dist.add_argument("--matrix", type=Path,
                      help="road distance matrix CSV (metres; see docs/routes.md; default: great-circle distances, "
                           "or [routes] in gateway.toml)")
    dist.add_argument("--osrm", help="OSRM-compatible base URL, e.g. http://osrm.city.local:5000")
    p.add_argument("--osrm-timeout",
                   help=f"seconds to wait for the OSRM endpoint, at most {MAX_OSRM_TIMEOUT_S:g} (default: [routes] "
                        "osrm_timeout_s of --config, else 10); only with --osrm or [routes] osrm")
    p.add_argument("--format", default="json", choices=sorted(FORMATS), help="output format (default json)")
    p.add_argument("--out", type=Path, help="write the plan to this file (default stdout), replacing it atomically; "
                                            "a day with nothing due (its empty plan) or an error (the date and the "
                                            "error) replaces it too, so yesterday's plan never stays; a FIFO or "
                                            "device is written, not replaced; a symlink's target is replaced. "
                                            "An existing file is replaced only if it is empty or an earlier "
                                            "plan (JSON, GeoJSON or CSV) unless --force; the gateway's own files "
                                            "and SQLite databases are always refused")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out file that is not an earlier plan (never a gateway file or a "
                        "database)")
    p.set_defaults(func=run_plan)


def _gateway_config(path: Path) -> GatewayConfig:
    from gateway.config import load_config

    try:
        return load_config(path, read_only=True)  # planning only reads the store and registry
    except ConfigError as exc:
        raise ConfigFileError(str(path), str(exc)) from exc


def _now(args: argparse.Namespace) -> float:
    """Unix time of "now" for ``today``/``tomorrow``: the gateway's clock, simulated under the --config's
    ``[sim_clock]`` as ``civicedge gateway run`` has it (a demo's day is not the machine's)."""
    if args.config is not None:
        sim = _gateway_config(args.config).sim_clock
        if sim is not None:
            from gateway.config.sim_clock import SimClock

            return SimClock(sim)()
    return time.time()


def db_registry(db: Path) -> Path:
    """The registry directory read with ``--db`` alone: ``registry`` next to the store (a data directory),
    or the store's own directory when that holds ``devices.sqlite`` and no ``registry`` (a backup made by
    ``civicedge gateway backup``)."""
    beside = db.parent / "registry"
    if not beside.exists() and (db.parent / "devices.sqlite").is_file():
        return db.parent
    return beside


def _data_source(args: argparse.Namespace) -> GatewayBinSource:
    if args.config is not None:
        cfg = _gateway_config(args.config)
        return GatewayBinSource(cfg.storage.path, args.registry or cfg.registry_dir)
    if args.db is not None:
        return GatewayBinSource(args.db, args.registry or db_registry(args.db))
    from gateway.config import default_config

    cfg = default_config(read_only=True)
    return GatewayBinSource(cfg.storage.path, args.registry or cfg.registry_dir)


def _defaults(args: argparse.Namespace) -> PlanDefaults:
    """Built-in defaults, or the config's [routes] table, with the command line's flags on top."""
    if args.config is not None:
        with _reading_config(args.config):
            base = load_plan_defaults(args.config)
    else:
        base = PlanDefaults()
    changes: dict[str, Any] = {}
    timeout = None if args.osrm_timeout is None else \
        parse_positive("osrm timeout", args.osrm_timeout, maximum=MAX_OSRM_TIMEOUT_S)
    configured = base.distances if isinstance(base.distances, OsrmTable) else None  # [routes] osrm
    if timeout is not None and (args.matrix is not None or (args.osrm is None and configured is None)):
        # refused as [routes] osrm_timeout_s without osrm is: a timeout that applies to nothing is a mistake
        raise InvalidInputError("osrm timeout", args.osrm_timeout,
                                "applies only with --osrm or [routes] osrm (give the OSRM URL, or drop the timeout)")
    if args.matrix is not None:
        changes["distances"] = CsvMatrix(args.matrix)
    elif args.osrm is not None:
        default_s = configured.timeout_s if configured is not None else 10.0
        changes["distances"] = OsrmTable(args.osrm, timeout_s=default_s if timeout is None else timeout)
    elif timeout is not None and configured is not None:
        changes["distances"] = OsrmTable(configured.base_url, timeout_s=timeout)  # the flag wins over the key
    if args.bin_volume is not None:
        changes["bin_volume_l"] = parse_litres("bin volume", args.bin_volume, minimum=MIN_BIN_VOLUME_L,
                                               maximum=MAX_BIN_VOLUME_L)
    if args.bin_volumes is not None:
        changes["bin_volumes_l"] = load_bin_volumes(args.bin_volumes)
    if args.start is not None:
        changes["start"] = parse_clock(args.start)
    if args.tz is not None:
        changes["tz"] = parse_timezone(args.tz)
    if args.days_to_next is not None:
        changes["days_to_next_round"] = int(parse_positive("days to next round", args.days_to_next, integer=True,
                                                             maximum=MAX_DAYS_TO_NEXT_ROUND))
    if args.speed is not None:
        changes["speed_kmh"] = parse_positive("speed", args.speed, maximum=MAX_SPEED_KMH)
    if args.service_time is not None:
        changes["service_s"] = parse_positive("service time", args.service_time, allow_zero=True,
                                              maximum=MAX_SERVICE_S)
    if args.max_route_km is not None:
        changes["max_route_km"] = parse_positive("max route", args.max_route_km, maximum=MAX_ROUTE_KM)
    if args.far_bin_km is not None:
        changes["far_bin_km"] = parse_positive("far bin", args.far_bin_km, allow_zero=True, maximum=MAX_FAR_BIN_KM)
    if args.time_limit is not None:
        changes["time_limit_s"] = parse_positive("time limit", args.time_limit, allow_zero=True,
                                                  maximum=MAX_TIME_LIMIT_S)
    return replace(base, **changes)


def settings_from_args(args: argparse.Namespace) -> PlanSettings:
    """Validate the command line (and the config's [routes] table) into :class:`PlanSettings`.

    Raises:
        InvalidInputError: A value is malformed or no depot is known.
    """
    defaults = _defaults(args)
    return defaults.settings_for(
        parse_date(args.date, defaults.tz, now=datetime.fromtimestamp(_now(args), tz=defaults.tz)),
        depot=parse_depot(args.depot) if args.depot is not None else None,
        vehicles=int(parse_positive("vehicles", args.vehicles, integer=True, maximum=MAX_VEHICLES))
        if args.vehicles is not None else None,
        capacity_l=parse_litres("capacity", args.capacity, minimum=MIN_CAPACITY_L, maximum=MAX_CAPACITY_L)
        if args.capacity is not None else None,
        threshold=parse_threshold(args.threshold) if args.threshold is not None else None,
    )


class _PlanWarningsFilter(logging.Filter):
    """Holds back the planner's WARNING records: every one of them is also in ``plan.warnings``,
    which the command prints itself (the log handler printed each a second time)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            self.held.append(record)
            return False
        return True


_PLAN_LOGGERS = ("gateway.routes.distances", "gateway.routes.planner")


@contextlib.contextmanager
def _warnings_shown_by_the_plan() -> Iterator[None]:
    """Inside, the planner's warnings wait for the plan; if no plan comes (an error), they are logged."""
    flt = _PlanWarningsFilter()
    loggers = [logging.getLogger(name) for name in _PLAN_LOGGERS]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    except BaseException:
        for lg in loggers:
            lg.removeFilter(flt)
        for record in flt.held:  # e.g. "OSRM unreachable, great-circle distances" before the failure
            logging.getLogger(record.name).handle(record)
        raise
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in its directory and a rename, so a reader (a
    cron job handing the file to drivers) sees the old file or the new one, never a part. The file
    keeps the mode of the one it replaces (a new one: 0666 less the umask, as open() makes it).

    A symlink is followed (the file it points to is replaced, not the link); a FIFO, a device
    (``/dev/null``, ``/dev/stdout``) or any other file that is not a regular one is written directly,
    not replaced by a regular file.

    Raises:
        InvalidInputError: The file cannot be written (``field`` ``out``).
    """
    shown = str(path)
    path = Path(os.path.realpath(path))
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InvalidInputError("out", shown, exc.strerror or str(exc)) from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise InvalidInputError("out", shown, "is a directory")
        try:
            with path.open("w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        except OSError as exc:
            raise InvalidInputError("out", shown, exc.strerror or str(exc)) from exc
        return
    if st is not None:
        mode = st.st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InvalidInputError("out", shown, exc.strerror or str(exc)) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InvalidInputError("out", shown, exc.strerror or str(exc)) from exc


class _OutFailed(InvalidInputError):
    """``--out`` could not be written (nothing to replace it with either)."""


class _OutRefused(_OutFailed):
    """``--out`` names a file the plan must not replace (:func:`gateway.output_guard.check_output`)."""

    def __init__(self, out: Path, refused: OutputRefused) -> None:
        RoutesError.__init__(self, f"error ({refused.reason}): {refused.message}", field="out", value=str(out),
                             problem=refused.message)
        self.field = "out"
        self.value = str(out)
        self.problem = refused.message


def _protected(args: argparse.Namespace) -> GatewayFiles:
    """The gateway files ``--out`` must never replace: those of the data the plan reads from (and of the
    config), whether or not that data can be read."""
    files = GatewayFiles()
    if args.config is not None:
        files.add(args.config, "the gateway's config file")
        try:
            files.add_config(_gateway_config(args.config))
        except ConfigFileError:
            pass  # planning fails on it (exit 5); the SQLite header check still keeps a store
    elif args.db is not None:
        files.add_store(args.db)
        files.add_registry(db_registry(args.db))
        files.add_data_dir(args.db.parent)
    else:
        from gateway.config import default_config

        with contextlib.suppress(ConfigError):
            files.add_config(default_config(read_only=True))
    if args.registry is not None:
        files.add_registry(args.registry)
    return files


_CSV_HEAD_MIN = 3  # an earlier plan CSV starts with at least vehicle,stop,bin_id (columns are added at the end)
_MAX_PLAN_BYTES = 256 << 20  # a larger JSON file is not read whole to find out whether it is a plan


def _is_plan_output(path: Path) -> bool:
    """Whether ``path`` evidently holds what ``routes plan`` writes: a JSON plan or failure (``date`` and
    ``routes``, ``notice`` or ``error``), a GeoJSON FeatureCollection whose properties have the ``date``,
    or a CSV whose header is the plan's columns (those of an older version: a first part of them)."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(1 << 16).decode("utf-8-sig").rstrip("\r\n")
            header = next(csv.reader([first]), [])
            if len(header) >= _CSV_HEAD_MIN and tuple(header) == CSV_COLUMNS[:len(header)]:
                return True
            if path.stat().st_size > _MAX_PLAN_BYTES:
                return False
            fh.seek(0)
            doc = json.loads(fh.read().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return False
    if not isinstance(doc, dict):
        return False
    if doc.get("type") == "FeatureCollection":
        props = doc.get("properties")
        return isinstance(doc.get("features"), list) and isinstance(props, dict) and "date" in props
    return "date" in doc and any(key in doc for key in ("routes", "notice", "error"))


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an ``--out`` that must not be replaced, before anything is written.

    Raises:
        _OutRefused: The reason and what to do (exit 2, as other unusable ``--out`` files).
    """
    try:
        check_output(args.out, _protected(args), force=args.force, previous=_is_plan_output,
                     command="routes plan", kind="an earlier plan (JSON, GeoJSON or CSV)")
    except OutputRefused as exc:
        raise _OutRefused(args.out, exc) from exc


def _deliver(args: argparse.Namespace, text: str) -> None:
    if args.out is None:
        write_utf8(text)  # JSON, CSV and GeoJSON are UTF-8 whatever the terminal's locale
        return
    _check_out(args)  # again: planning took a while
    try:
        write_atomically(args.out, text)
    except InvalidInputError as exc:
        raise _OutFailed(exc.field, exc.value, exc.problem) from exc


def run_plan(args: argparse.Namespace) -> int:
    """Run ``civicedge routes plan``; returns the exit code documented in this module.

    With ``--out``, a day without a plan still replaces the file: nothing due writes the empty plan of
    that date with its notice (exit 3), an error writes the date (when known) and the error; the
    previous day's plan never stays looking current.
    """
    settings: PlanSettings | None = None
    try:
        if args.out is not None:
            _check_out(args)  # before planning, so nothing is written to a refused file
        settings = settings_from_args(args)
        bins = _data_source(args).load(settings.round_start)
        with _warnings_shown_by_the_plan():
            plan, notice = plan_or_notice(bins, settings)
        if notice is None or args.out is not None:  # no bins due: nothing on stdout, as before
            _deliver(args, render(plan, args.format, notice, settings.timing()))
    except RoutesError as exc:
        print(f"civicedge routes plan: {exc.message}", file=sys.stderr)
        if args.out is not None and not isinstance(exc, _OutFailed):
            day = None if settings is None else settings.day.isoformat()
            start = None if settings is None else settings.round_start.isoformat()
            try:
                _check_out(args)
                write_atomically(args.out, render_failure(args.format, exc.to_dict(), day, start))
                print(f"civicedge routes plan: {args.out} now says: no plan ({exc.reason})", file=sys.stderr)
            except InvalidInputError as write_exc:
                print(f"civicedge routes plan: {write_exc.message}", file=sys.stderr)
        return exc.exit_code
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if notice is not None:
        print(f"civicedge routes plan: {notice}"
              + (f"; the empty plan of {plan.date} written to {args.out}" if args.out is not None else ""),
              file=sys.stderr)
        return EXIT_NO_BINS_DUE
    print(
        f"{plan.date}: {counted(plan.stop_count, 'stop')} on {counted(len(plan.routes), 'route')}, "
        f"{plan.total_distance_m / 1000:.1f} km ({plan.distance_source}), "
        f"{len(plan.unserved)} unserved, {len(plan.skipped)} skipped, {counted(plan.considered, 'bin')} considered, "
        f"solver {plan.solver_s:.1f}s"
        + (f", written to {args.out}" if args.out is not None else ""),
        file=sys.stderr,
    )
    return EXIT_OK
