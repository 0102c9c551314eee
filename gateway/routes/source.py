"""Bin status from the gateway's own data: the report store's read API and the device registry.

Only non-personal bin fields are read: ``fill`` (level, 10 % steps) and ``tilt`` (to clear a
tip-over alarm), plus the ``fire``/``tip`` alarm codes. The people-related ``lid`` count is never
queried (see :data:`FIELDS_USED`; a test checks these against firmware/policy.json).

Alarm rule: a ``fire`` or ``tip`` alarm raised within ``alarm_window_s`` before the round is
active unless a later report shows it handled: the bin was emptied afterwards (a fill level at the
end of a period ending after the alarm fell by at least ``empty_drop`` from the last level before
it), or, for ``tip``, a later window reported the bin upright (``tilt`` 0). A bin whose latest ``tilt`` (within
``history_s``) is 1 is in ``tip`` whatever its alarm's age: the alarm is sent once, the tilt every window. Fill is released as the
level at the end of each 6-hour period (firmware/policy.json ``release_every_s``; rows stored before
that are 15-minute windows): each reading is dated at its period's end.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from gateway.errors import GatewayError
from gateway.registry import Registry
from gateway.routes.errors import BinDataError
from gateway.routes.model import ALARM_CODES, BinStatus, FillReading
from gateway.storage import ReportQueries

logger = logging.getLogger(__name__)

#: Measurement fields of the ``bin`` kind this module reads. Never add a ``personal`` field.
FIELDS_USED: tuple[str, ...] = ("fill", "tilt")
BIN_KIND = "bin"
_NO_LIMIT = 1 << 40


class BinSource(Protocol):
    """Anything that can list the bins' status as known at a given time."""

    def load(self, as_of: datetime) -> list[BinStatus]:
        """Return the status of every bin from the data known at ``as_of``."""
        ...


@dataclass(frozen=True)
class StaticBinSource:
    """A fixed list of bins (tests, benchmarks, imports from another system)."""

    bins: tuple[BinStatus, ...]

    def load(self, as_of: datetime) -> list[BinStatus]:
        """Return the fixed bins (the planner ignores readings after ``as_of``)."""
        return list(self.bins)


@dataclass
class GatewayBinSource:
    """Reads bins from the gateway's report store and registry.

    Attributes:
        db_path: The report store (``[storage] path`` of gateway.toml).
        registry: The device registry (its directory, or an open :class:`Registry`) for zone and location.
        history_s: How far back fill readings are read.
        alarm_window_s: How long an unhandled alarm stays active.
        empty_drop: A fall in fill of at least this fraction counts as emptied.
    """

    db_path: Path
    registry: Registry | Path
    history_s: int = 4 * 86400
    alarm_window_s: int = 86400
    empty_drop: float = 0.25

    def _registry(self) -> tuple[Registry, bool]:
        if isinstance(self.registry, Registry):
            return self.registry, False
        reg_dir = Path(self.registry)
        if not (reg_dir / "devices.sqlite").is_file():
            raise BinDataError(str(reg_dir), "no device registry there (devices.sqlite missing); bin locations come from it")
        try:
            # create=False: planning only reads; it must not upgrade (write) a registry, which may be read-only
            return Registry(reg_dir, create=False), True
        except GatewayError as exc:
            raise BinDataError(str(reg_dir), str(exc)) from exc

    def load(self, as_of: datetime) -> list[BinStatus]:
        """Return every registered bin neither revoked nor retired with its fill history and active alarms.

        Raises:
            BinDataError: The store or the registry cannot be read.
        """
        end = int(as_of.timestamp()) + 1
        try:
            queries = ReportQueries(Path(self.db_path), one_shot=True)  # closed below: a backup's store left as it was
        except GatewayError as exc:
            raise BinDataError(str(self.db_path), str(exc)) from exc
        try:
            registry, owned = self._registry()
            try:
                devices = [d for d in registry.list() if d.kind == BIN_KIND]
            finally:
                if owned:
                    registry.close()
            # one snapshot of the store for the three reads: an ingest batch or a retention pass committed
            # between them would give a plan of two states (an alarm of a bin whose fills were removed)
            with queries.snapshot():
                fills = _fills(queries, end - self.history_s, end)
                # over the fill history, not only the alarm window: the latest tilt says whether the bin is still down
                tilts = _tilts(queries, [d.id for d in devices if not (d.revoked or d.retired)],
                               end - self.history_s, end)
                alarms = queries.alarms(start=end - self.alarm_window_s, end=end)
        except GatewayError as exc:
            raise BinDataError(str(self.db_path), str(exc)) from exc
        finally:
            queries.close()

        fill_by_dev: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # (w, l, percent)
        for device, w, length, value in fills:
            fill_by_dev[device].append((w, length, value))
        last_alarm: dict[tuple[str, str], int] = {}
        for a in alarms:
            if a.kind == BIN_KIND and a.code in ALARM_CODES:
                last_alarm[(a.device, a.code)] = max(a.w, last_alarm.get((a.device, a.code), a.w))

        out: list[BinStatus] = []
        for dev in devices:
            if dev.revoked or dev.retired:
                # retired: taken off the street or moved to another gateway's round; a crew sent to it finds nothing
                logger.info("bin %s is %s; left out of planning", dev.id, "revoked" if dev.revoked else "retired")
                continue
            series = sorted(fill_by_dev.get(dev.id, []))
            active = frozenset(
                code for code in ALARM_CODES
                if (dev.id, code) in last_alarm
                and not self._handled(code, last_alarm[(dev.id, code)], series, tilts.get(dev.id))
            )
            tilt = tilts.get(dev.id)
            if tilt is not None and tilt.value != 0:
                # still on its side: the tip alarm is sent once, the tilt every window; a bin lying there
                # for more than alarm_window_s after its alarm stays a tip stop until it reports upright
                active |= {"tip"}
            out.append(BinStatus(
                id=dev.id,
                zone=dev.zone,
                lat=_coord(dev.lat),
                lon=_coord(dev.lon),
                readings=tuple(FillReading(w + l, min(100, max(0, v)) / 100.0) for w, l, v in series),
                alarms=active,
                # only history_s is read: a sensor that went quiet longer ago may have been full; and
                # nothing after the round start (a plan made later in the day must not say "no reading"
                # of a bin that reported since without saying why)
                no_reading_reason=None if series else (
                    f"no fill reading in the {_days(self.history_s)} before the round start "
                    f"{as_of.isoformat(timespec='minutes')}"),
            ))
        logger.info("loaded %s bins (%s fill readings, %s alarms) from %s",
                    len(out), len(fills), len(alarms), self.db_path)
        return out

    def _handled(self, code: str, alarm_w: int, series: list[tuple[int, int, int]], tilt: _Tilt | None) -> bool:
        # A fill is the level at the end of its period (w + l): a 6-hourly fill of a period the alarm
        # fell in is the level after the alarm, so it can show the bin emptied since.
        if code == "tip" and tilt is not None and tilt.upright_w is not None and tilt.upright_w >= alarm_w:
            return True
        before = [v for w, length, v in series if w + length <= alarm_w]
        if not before:
            return False
        drop = round(self.empty_drop * 100)
        return any(v <= before[-1] - drop for w, length, v in series if w + length > alarm_w)


@dataclass(frozen=True, slots=True)
class _Tilt:
    """A bin's tilt over the history: its latest reading, and the period start of its latest upright one (0)."""

    w: int
    value: float
    upright_w: int | None


def _tilts(queries: ReportQueries, devices: list[str], start: int, end: int) -> dict[str, _Tilt]:
    """The tilt of each of ``devices`` from reports with period start in ``[start, end)``."""
    rows = queries.latest_field_values(BIN_KIND, "tilt", devices, start, end)
    return {device: _Tilt(w, value, zero_w) for device, w, value, zero_w in rows}


def _fills(queries: ReportQueries, start: int, end: int) -> list[tuple[str, int, int, int]]:
    """(device, w, l, percent) of every bin fill reading with period start in ``[start, end)``."""
    return [(device, w, length, int(value)) for device, w, length, value in
            queries.field_values(BIN_KIND, "fill", start, end)]


def _days(seconds: int) -> str:
    days = seconds / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")


def _coord(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
