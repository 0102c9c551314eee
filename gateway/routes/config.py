"""Plan defaults: built-in, or from the ``[routes]`` table of gateway.toml.

```toml
[routes]
depot = "52.3700,4.8900"     # LAT,LON
vehicles = 3
capacity_l = 60000           # litres of bin contents per vehicle
threshold = 0.8              # or "80%"
bin_volume_l = 240           # bins not in bin_volumes
bin_volumes = "bin-volumes.csv"  # optional: id,volume_l per bin (relative to the config file)
start = "06:00"              # local time rounds start
tz = "Europe/Amsterdam"
days_to_next_round = 1
time_limit_s = 5
speed_kmh = 25               # average speed for the estimated times (eta)
service_s = 60               # seconds to empty one bin, for the estimated times
max_route_km = 80            # longest route; bins beyond it are unserved (default: no limit)
far_bin_km = 200             # due bins farther from both the middle of the registered bins and the depot are not planned (0: off)
matrix = "roads.csv"         # relative to the config file; or instead of matrix:
# osrm = "http://osrm.city.local:5000"
# osrm_timeout_s = 10        # only with osrm
```

Every key is optional; a wrong one raises :class:`InvalidInputError` with ``field`` ``routes.<key>``.
Numbers are bounded (``gateway.routes.parsing``): vehicles <= 200, capacity_l 100 to 1 000 000,
bin_volume_l 10 to 100 000, days_to_next_round <= 366, time_limit_s and osrm_timeout_s <= 300,
speed_kmh <= 130, service_s <= 3600 (0 allowed), max_route_km <= 2000, far_bin_km <= 20100 (0: off).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

from gateway.routes.csv_text import CsvTextError, csv_table, decode_csv_bytes, number_text
from gateway.routes.distances import CsvMatrix, DistanceProvider, GreatCircle, OsrmTable
from gateway.routes.errors import BinDataError, InvalidInputError
from gateway.routes.model import Depot
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
    parse_depot,
    parse_litres,
    parse_positive,
    parse_threshold,
    parse_timezone,
    separator_hint,
)
from gateway.routes.outputs import MAX_SERVICE_S, MAX_SPEED_KMH
from gateway.routes.planner import MAX_FAR_BIN_KM, MAX_ROUTE_KM, PlanParameters, PlanSettings
from gateway.toml_text import TomlTextError, read_toml_doc

# The keys of a gateway config's [routes] table (the config loader names unknown ones with it).
ROUTES_KEYS = ("depot", "vehicles", "capacity_l", "threshold", "bin_volume_l", "bin_volumes", "start", "tz",
               "days_to_next_round", "time_limit_s", "matrix", "osrm", "osrm_timeout_s", "speed_kmh", "service_s",
               "max_route_km", "far_bin_km")


@dataclass(frozen=True, kw_only=True)
class PlanDefaults(PlanParameters):
    """Plan parameters that do not depend on the day; requests and flags may override some of them.

    Attributes:
        depot: Default depot (None: every plan must be given one).
        cache_s: How long the HTTP endpoint serves a plan from cache for the same query (real seconds, also
            under ``[sim_clock]``).
        (the rest: :class:`gateway.routes.planner.PlanParameters`)
    """

    depot: Depot | None = None
    cache_s: float = 300.0

    def settings_for(self, day: date, *, depot: Depot | None = None, vehicles: int | None = None,
                     capacity_l: float | None = None, threshold: float | None = None) -> PlanSettings:
        """Return the settings of the plan of ``day``, with optional overrides.

        Raises:
            InvalidInputError: No depot given and none configured.
        """
        chosen = depot or self.depot
        if chosen is None:
            raise InvalidInputError("depot", "", "none given and none configured; pass LAT,LON "
                                    "(--depot, depot=, or [routes] depot in gateway.toml)")
        shared = {f.name: getattr(self, f.name) for f in fields(PlanParameters)}
        given = {"vehicles": vehicles, "capacity_l": capacity_l, "threshold": threshold}
        shared.update({k: v for k, v in given.items() if v is not None})
        return PlanSettings(day=day, depot=chosen, **shared)


def _typed(key: str, value: Any, kinds: tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InvalidInputError(f"routes.{key}", value, f"must be {what}")
    return value


def parse_plan_defaults(table: dict[str, Any], *, base: Path) -> PlanDefaults:
    """Validate a ``[routes]`` table; relative ``matrix`` paths are resolved against ``base``."""
    if not isinstance(table, dict):
        raise InvalidInputError("routes", table, "must be a table")
    unknown = sorted(set(table) - set(ROUTES_KEYS))
    if unknown:
        raise InvalidInputError(f"routes.{unknown[0]}", table[unknown[0]], "unknown key; allowed: " + ", ".join(ROUTES_KEYS))
    if "matrix" in table and "osrm" in table:
        raise InvalidInputError("routes.osrm", table["osrm"], "set either matrix or osrm, not both")
    if "osrm_timeout_s" in table and "osrm" not in table:
        raise InvalidInputError("routes.osrm_timeout_s", table["osrm_timeout_s"],
                                "applies only with routes.osrm (set the OSRM URL, or drop the timeout)")
    num = (int, float)
    out: dict[str, Any] = {}
    if "depot" in table:
        out["depot"] = parse_depot(_typed("depot", table["depot"], (str,), 'a string "LAT,LON"'),
                                   field="routes.depot")
    if "vehicles" in table:
        out["vehicles"] = int(parse_positive("routes.vehicles", _typed("vehicles", table["vehicles"], (int,),
                                                                         "a whole number"), integer=True,
                                             maximum=MAX_VEHICLES))
    if "capacity_l" in table:
        out["capacity_l"] = parse_litres("routes.capacity_l",
                                         _typed("capacity_l", table["capacity_l"], num, "a number"),
                                         minimum=MIN_CAPACITY_L, maximum=MAX_CAPACITY_L)
    if "threshold" in table:
        out["threshold"] = parse_threshold(_typed("threshold", table["threshold"], (int, float, str),
                                                  "0.8 or \"80%\""), field="routes.threshold")
    if "bin_volume_l" in table:
        out["bin_volume_l"] = parse_litres("routes.bin_volume_l",
                                           _typed("bin_volume_l", table["bin_volume_l"], num, "a number"),
                                           minimum=MIN_BIN_VOLUME_L, maximum=MAX_BIN_VOLUME_L)
    if "bin_volumes" in table:
        path = Path(_typed("bin_volumes", table["bin_volumes"], (str,), "a file path"))
        out["bin_volumes_l"] = load_bin_volumes(path if path.is_absolute() else base / path,
                                                field="routes.bin_volumes")
    if "start" in table:
        out["start"] = parse_clock(_typed("start", table["start"], (str,), 'a string "HH:MM"'), field="routes.start")
    if "tz" in table:
        out["tz"] = parse_timezone(_typed("tz", table["tz"], (str,), "an IANA zone name"), field="routes.tz")
    if "days_to_next_round" in table:
        out["days_to_next_round"] = int(parse_positive("routes.days_to_next_round", _typed(
            "days_to_next_round", table["days_to_next_round"], (int,), "a whole number"), integer=True,
            maximum=MAX_DAYS_TO_NEXT_ROUND))
    if "time_limit_s" in table:
        out["time_limit_s"] = parse_positive("routes.time_limit_s", _typed(
            "time_limit_s", table["time_limit_s"], num, "a number"), allow_zero=True, maximum=MAX_TIME_LIMIT_S)
    if "speed_kmh" in table:
        out["speed_kmh"] = parse_positive("routes.speed_kmh", _typed("speed_kmh", table["speed_kmh"], num, "a number"),
                                          maximum=MAX_SPEED_KMH)
    if "service_s" in table:
        out["service_s"] = parse_positive("routes.service_s", _typed("service_s", table["service_s"], num, "a number"),
                                          allow_zero=True, maximum=MAX_SERVICE_S)
    if "max_route_km" in table:
        out["max_route_km"] = parse_positive("routes.max_route_km", _typed("max_route_km", table["max_route_km"], num,
                                                                           "a number"), maximum=MAX_ROUTE_KM)
    if "far_bin_km" in table:
        out["far_bin_km"] = parse_positive("routes.far_bin_km", _typed("far_bin_km", table["far_bin_km"], num,
                                                                       "a number"), allow_zero=True,
                                           maximum=MAX_FAR_BIN_KM)
    if "matrix" in table:
        path = Path(_typed("matrix", table["matrix"], (str,), "a file path"))
        out["distances"] = CsvMatrix(path if path.is_absolute() else base / path)
    if "osrm" in table:
        timeout = parse_positive("routes.osrm_timeout_s", _typed(
            "osrm_timeout_s", table.get("osrm_timeout_s", 10.0), num, "a number"), maximum=MAX_OSRM_TIMEOUT_S)
        out["distances"] = OsrmTable(_typed("osrm", table["osrm"], (str,), "a URL"), timeout_s=timeout)
    return PlanDefaults(**out)


def load_bin_volumes(path: Path, *, field: str = "bin volumes") -> dict[str, float]:
    """Read a bin-volumes CSV: header ``id,volume_l``, then one bin per row (litres, ASCII digits).

    UTF-8, with or without a byte order mark; cells separated by commas, or by ``;`` when the header
    is ``id;volume_l`` (then ``240,5`` is 240.5 L), as German Excel saves it. Volumes are 10 to
    100 000 L; ``1.100`` (a thousands separator) is refused, not read as 1.1 L.

    Args:
        path: The CSV file.
        field: What errors name (``bin volumes`` for ``--bin-volumes``, ``routes.bin_volumes`` for the config).

    Raises:
        InvalidInputError: Unreadable file, wrong header, bad or duplicate row (``field`` is ``field``;
            the problem names the line).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(field, str(path), f"cannot read ({exc})") from exc
    try:
        rows, sep = csv_table(decode_csv_bytes(data))
    except CsvTextError as exc:
        raise InvalidInputError(field, str(path), str(exc)) from None
    if not rows or [c.strip() for c in rows[0]] != ["id", "volume_l"]:
        hint = separator_hint(rows[0]) if rows else ""
        raise InvalidInputError(field, str(path), f"first row must be the header id,volume_l or id;volume_l{hint}")
    volumes: dict[str, float] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip():
            raise InvalidInputError(field, str(path), f"line {lineno}: expected id{sep}volume_l")
        bin_id = row[0].strip()
        if bin_id in volumes:
            raise InvalidInputError(field, str(path), f"line {lineno}: duplicate id {bin_id!r}")
        try:
            volumes[bin_id] = parse_litres("volume_l", number_text(row[1], sep), minimum=MIN_BIN_VOLUME_L,
                                           maximum=MAX_BIN_VOLUME_L)
        except InvalidInputError as exc:
            raise InvalidInputError(field, str(path), f"line {lineno}: volume_l {row[1]!r} of {bin_id!r}: "
                                    f"{exc.problem}") from None
    return volumes


def load_plan_defaults(config_path: Path) -> PlanDefaults:
    """Read the ``[routes]`` table of a gateway.toml (absent table: built-in defaults).

    Raises:
        BinDataError: The file cannot be read or is not TOML.
        InvalidInputError: A ``[routes]`` key is wrong.
    """
    path = Path(config_path)
    try:
        data = read_toml_doc(path, what="config")
    except TomlTextError as exc:
        raise BinDataError(str(path), str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise BinDataError(str(path), f"not valid TOML ({exc})") from exc
    return parse_plan_defaults(data.get("routes", {}), base=path.resolve().parent)
