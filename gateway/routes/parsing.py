"""Parsing of operator input (CLI flags, query parameters, config) into planner values."""

from __future__ import annotations

import functools
import math
import re
import zoneinfo
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.routes.errors import InvalidInputError
from gateway.routes.model import Depot

# Upper bounds of operator-given values (CLI flags, [routes] keys, query parameters). A wrong value
# is refused as invalid input instead of exhausting memory (OR-Tools keeps state per vehicle:
# 100 000 vehicles took 23 GB) or overflowing dates and the solver's 64-bit integers.
#: Vehicles in one plan.
MAX_VEHICLES = 200
#: Solver time limit in seconds: a plan is made while an operator or the dashboard waits.
MAX_TIME_LIMIT_S = 300.0
#: Litres of bin contents per vehicle (a large compacting truck carries about 60 000).
MAX_CAPACITY_L = 1_000_000.0
#: Litres per bin (the largest underground containers hold about 5 000).
MAX_BIN_VOLUME_L = 100_000.0
# Lower bounds of the litre values: a German "1.100" (1 100 L written with a thousands separator)
# reads as 1.1 L and planned every stop with a load of 0 L, without a word.
#: Litres per bin at least (the smallest kerbside caddies hold about 10; wheeled bins 40 and more).
MIN_BIN_VOLUME_L = 10.0
#: Litres of bin contents per vehicle at least (less than one 120 L wheeled bin is no vehicle).
MIN_CAPACITY_L = 100.0
#: Days until the next round (the prediction horizon).
MAX_DAYS_TO_NEXT_ROUND = 366
#: Seconds to wait for an OSRM endpoint.
MAX_OSRM_TIMEOUT_S = 300.0
#: Collection dates that can be planned (the web API's time range, 2000 up to 2100).
FIRST_DATE = date(2000, 1, 1)
LAST_DATE = date(2099, 12, 31)

# Operator input is ASCII, as everywhere in the API (docs/api.md): ``\d``, ``\s``, ``float()`` and ``int()``
# also take other scripts' digits and spaces ("１" is 1, "٢٠٢٦" is 2026) and ``float()`` takes "1_000".
_DEPOT_RE = re.compile(r"([-+]?[0-9]+(?:\.[0-9]+)?)[ \t]*,[ \t]*([-+]?[0-9]+(?:\.[0-9]+)?)\Z")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_CLOCK_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})\Z")
_DECIMAL_RE = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
#: A number with ``.`` between groups of three digits: ``1.100`` is 1 100 in German, not 1.1.
THOUSANDS_RE = re.compile(r"\+?[1-9][0-9]{0,2}(?:\.[0-9]{3})+\Z")  # "+" too (a "-" is refused as negative first); 0.500 is a decimal
_SPECIAL_FLOATS = frozenset({"inf", "infinity", "nan"})  # read, then refused as "not finite" by the callers
#: White space around a value that is ignored (ASCII only: ``str.strip()`` also drops U+3000).
SPACE = " \t\r\n\f\v"


def ascii_float(text: str) -> float:
    """``float(text)`` for decimal notation in ASCII only (``1``, ``-2.5``, ``1e3``, ``inf``).

    Unlike ``float()``, refuses other scripts' digits (``１``), ``_`` separators (``1_000``) and
    non-ASCII white space.

    Raises:
        ValueError: Not such a number.
    """
    word = text.strip(SPACE)
    if not (_DECIMAL_RE.match(word) or word.lstrip("+-").lower() in _SPECIAL_FLOATS):
        raise ValueError(f"not a decimal number in ASCII: {text!r}")
    return float(word)


def parse_depot(text: str, *, field: str = "depot") -> Depot:
    """Parse ``LAT,LON`` in decimal degrees (e.g. ``48.8566,2.3522``); ``field`` names it in errors.

    Raises:
        InvalidInputError: Not two decimal numbers, or out of range.
    """
    match = _DEPOT_RE.match((text or "").strip(SPACE))
    if not match:
        raise InvalidInputError(field, text, "expected LAT,LON in decimal degrees, e.g. 48.8566,2.3522")
    lat, lon = float(match.group(1)), float(match.group(2))
    if not -90.0 <= lat <= 90.0:
        raise InvalidInputError(field, text, f"latitude {lat} is outside -90..90 (is it LAT,LON?)")
    if not -180.0 <= lon <= 180.0:
        raise InvalidInputError(field, text, f"longitude {lon} is outside -180..180")
    return Depot(lat, lon)


#: Keys zoneinfo opens that are no IANA zone: this machine's own setting (``localtime``, a copy or link of
#: /etc/localtime's zone), tzdata's placeholder without any offset (``Factory``) and its POSIX default rules.
_HOST_KEYS = frozenset({"localtime", "factory", "posixrules"})


@functools.lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    """The zone names zoneinfo offers (the tzdata package and the system's database): no ``posix/`` or
    ``right/`` copies, nor path-like keys."""
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(name: str, *, field: str = "timezone") -> tzinfo:
    """Return the IANA time zone ``name`` (e.g. ``Europe/Amsterdam``, ``UTC``); ``field`` names it in errors.

    Refuses what zoneinfo would also open but that ties a plan to the machine it runs on or is no zone
    (``localtime``, ``Factory``, ``posixrules``, ``posix/...``, ``right/...``): moved to another
    host, or after its ``/etc/localtime`` changed, the same config would plan other round starts.

    Raises:
        InvalidInputError: Not such a name.
    """
    if name.lower() in _HOST_KEYS or name not in _iana_names():
        why = ("names this machine's settings, not a time zone" if name.lower() in _HOST_KEYS
               else "not an IANA time zone name")
        raise InvalidInputError(field, name, f"{why}: give an IANA name such as Europe/Amsterdam or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(field, name, "not an IANA time zone name such as Europe/Amsterdam or UTC") from None


def parse_date(text: str, tz: tzinfo, *, now: datetime | None = None) -> date:
    """Parse a collection date: ``YYYY-MM-DD``, ``today`` or ``tomorrow`` (in ``tz``).

    Raises:
        InvalidInputError: Anything else, an impossible date such as 2026-02-30, or a date outside
            :data:`FIRST_DATE` .. :data:`LAST_DATE`.
    """
    word = (text or "").strip(SPACE).lower()
    if word in ("today", "tomorrow"):
        today = (now or datetime.now(tz)).astimezone(tz).date()
        check_date(today, text)  # a simulated clock may run past the range; checked first, "tomorrow" cannot overflow
        day = today if word == "today" else today + timedelta(days=1)
    elif not _DATE_RE.match(word):
        raise InvalidInputError("date", text, "expected YYYY-MM-DD, 'today' or 'tomorrow'")
    else:
        try:
            day = date.fromisoformat(word)
        except ValueError as exc:
            raise InvalidInputError("date", text, f"not a calendar date ({exc})") from None
    check_date(day, text)
    return day


def check_date(day: date, given: object = None) -> None:
    """Refuse a collection date outside :data:`FIRST_DATE` .. :data:`LAST_DATE` (``given``: as the user wrote it).

    Raises:
        InvalidInputError: The date is out of range.
    """
    if not FIRST_DATE <= day <= LAST_DATE:
        shown = day.isoformat()
        given = shown if given is None else given
        which = "" if str(given).strip() == shown else f" ({shown})"
        raise InvalidInputError("date", given, f"must be between {FIRST_DATE.isoformat()} and "
                                f"{LAST_DATE.isoformat()}{which}")


def parse_clock(text: str, *, field: str = "start") -> time:
    """Parse a round start time ``HH:MM`` (ASCII digits); ``field`` names it in errors."""
    match = _CLOCK_RE.match((text or "").strip(SPACE))
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise InvalidInputError(field, text, "expected HH:MM (24 h), e.g. 06:00")
    return time(int(match.group(1)), int(match.group(2)))


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def parse_positive(name: str, text: str | float | int, *, integer: bool = False, allow_zero: bool = False,
                   maximum: float | None = None) -> float:
    """Parse a positive (or, with ``allow_zero``, non-negative) finite number; a whole one when ``integer``.

    Text must be ASCII decimal notation (:func:`ascii_float`); ints and floats (from TOML) are taken as they are.

    Raises:
        InvalidInputError: Not a number (other scripts' digits and ``_`` included), out of range
            (including above ``maximum``), or not whole.
    """
    try:
        value = ascii_float(text) if isinstance(text, str) else float(text)
    except (TypeError, ValueError):
        raise InvalidInputError(name, text, "not a number (ASCII digits, e.g. 3 or 2.5)") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidInputError(name, text, "must be a number >= 0" if allow_zero else "must be a positive number")
    if maximum is not None and value > maximum:
        raise InvalidInputError(name, text, f"must be at most {_number(maximum)}")
    if integer and value != int(value):
        raise InvalidInputError(name, text, "must be a whole number")
    return value


def thousands_problem(text: str) -> str | None:
    """The problem to report when ``text`` looks like a number with thousands separators (``1.100``), else None."""
    word = text.strip(SPACE)
    if not THOUSANDS_RE.match(word):
        return None
    whole = word.replace(".", "").lstrip("+")
    return f"{word} looks like {whole} written with a thousands separator; write {whole}"


def parse_litres(name: str, text: str | float | int, *, minimum: float, maximum: float) -> float:
    """Parse a volume in litres between ``minimum`` and ``maximum`` (:func:`parse_positive`, with a floor).

    Text that looks like a number with thousands separators (``1.100``, ``60.000``) is refused
    whatever its value: read as a decimal it is 1.1 or 60, which nobody means in litres. A float
    (from TOML, which reads ``1.100`` as 1.1) below ``minimum`` is refused with that guess named.

    Raises:
        InvalidInputError: Not a number, out of range, or thousands separators.
    """
    if isinstance(text, str):
        problem = thousands_problem(text)
        if problem is not None:
            raise InvalidInputError(name, text, problem)
    value = parse_positive(name, text, maximum=maximum)
    if value < minimum:
        problem = f"{_number(value)} L is below the minimum of {_number(minimum)} L"
        thousand = value * 1000
        if isinstance(text, float) and abs(thousand - round(thousand)) < 1e-6 and thousand <= maximum:
            problem += f" (a thousands separator? write {round(thousand)})"
        raise InvalidInputError(name, text, problem)
    return value


def parse_threshold(text: str | float, *, field: str = "threshold") -> float:
    """Parse a fill threshold: a fraction ``0.8`` or a percentage ``80%`` (ASCII digits).

    ``field`` names it in errors (``routes.threshold`` for the config).
    """
    raw = str(text).strip(SPACE)
    try:
        value = ascii_float(raw[:-1]) / 100.0 if raw.endswith("%") else ascii_float(raw)
    except ValueError:
        raise InvalidInputError(field, text, "expected a fraction such as 0.8 or a percentage such as 80%") from None
    if not (0.0 < value <= 1.0):
        raise InvalidInputError(field, text, "must be in (0, 1] as a fraction, or in (0%, 100%] as a percentage")
    return value


def separator_hint(first_row: list[str]) -> str:
    """What to add to a "wrong header" error of a comma-separated file read with :mod:`csv`.

    A ``;``-separated file is read as such when its header's first cell is ``id``
    (:func:`gateway.routes.csv_text.csv_table`); otherwise, or with a tab between cells, the header
    arrives as one cell: the hint names that separator. Empty when the row does not look like that.
    """
    if len(first_row) == 1:
        if ";" in first_row[0]:
            return " (this file separates cells with ';' (semicolon): its first cell must then be id)"
        if "\t" in first_row[0]:
            return " (this file separates cells with a tab: save it as CSV, with ',' or ';' between cells)"
    return ""
