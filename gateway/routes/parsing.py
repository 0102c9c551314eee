"""Parsing of operator input (CLI flags, query parameters, config) into planner values."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.routes.errors import InvalidInputError
from gateway.routes.model import Depot

_DEPOT_RE = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*,\s*([-+]?\d+(?:\.\d+)?)\s*$")


def parse_depot(text: str) -> Depot:
    """Parse ``LAT,LON`` in decimal degrees (e.g. ``48.8566,2.3522``).

    Raises:
        InvalidInputError: Not two decimal numbers, or out of range.
    """
    match = _DEPOT_RE.match(text or "")
    if not match:
        raise InvalidInputError("depot", text, "expected LAT,LON in decimal degrees, e.g. 48.8566,2.3522")
    lat, lon = float(match.group(1)), float(match.group(2))
    if not -90.0 <= lat <= 90.0:
        raise InvalidInputError("depot", text, f"latitude {lat} is outside -90..90 (is it LAT,LON?)")
    if not -180.0 <= lon <= 180.0:
        raise InvalidInputError("depot", text, f"longitude {lon} is outside -180..180")
    return Depot(lat, lon)


def parse_timezone(name: str) -> tzinfo:
    """Return the IANA time zone ``name`` (e.g. ``Europe/Paris``, ``UTC``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError("timezone", name, "not an IANA time zone name such as Europe/Paris or UTC") from None


def parse_date(text: str, tz: tzinfo, *, now: datetime | None = None) -> date:
    """Parse a collection date: ``YYYY-MM-DD``, ``today`` or ``tomorrow`` (in ``tz``).

    Raises:
        InvalidInputError: Anything else, or an impossible date such as 2026-02-30.
    """
    word = (text or "").strip().lower()
    if word in ("today", "tomorrow"):
        today = (now or datetime.now(tz)).astimezone(tz).date()
        return today if word == "today" else today + timedelta(days=1)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", word):
        raise InvalidInputError("date", text, "expected YYYY-MM-DD, 'today' or 'tomorrow'")
    try:
        return date.fromisoformat(word)
    except ValueError as exc:
        raise InvalidInputError("date", text, f"not a calendar date ({exc})") from None


def parse_clock(text: str) -> time:
    """Parse a round start time ``HH:MM``."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text or "")
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise InvalidInputError("start", text, "expected HH:MM (24 h), e.g. 06:00")
    return time(int(match.group(1)), int(match.group(2)))


def parse_positive(name: str, text: str | float | int, *, integer: bool = False, allow_zero: bool = False) -> float:
    """Parse a positive (or, with ``allow_zero``, non-negative) finite number; a whole one when ``integer``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidInputError(name, text, "not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidInputError(name, text, "must be a number >= 0" if allow_zero else "must be a positive number")
    if integer and value != int(value):
        raise InvalidInputError(name, text, "must be a whole number")
    return value


def parse_threshold(text: str | float) -> float:
    """Parse a fill threshold: a fraction ``0.8`` or a percentage ``80%``."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InvalidInputError("threshold", text, "expected a fraction such as 0.8 or a percentage such as 80%") from None
    if not (0.0 < value <= 1.0):
        raise InvalidInputError("threshold", text, "must be in (0, 1] (or 1%..100%)")
    return value
