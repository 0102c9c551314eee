"""Which bins must be emptied: full, predicted full before the next round, or in alarm.

The fill rate is a Theil–Sen slope (median of pairwise slopes) over the readings since the
bin was last emptied: robust to the odd wrong echo of an ultrasonic sensor and to the 10 %
quantisation of reported fill. Only fill levels and alarms are used, never the ``lid`` count.
A bin releases its fill as the level at the end of each 6 hours (firmware/policy.json
``release_every_s``), so a rate rests on few points (up to 12 over the 3-day lookback); each
reading is dated at the end of its period (docs/routes.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping, Sequence

from gateway.routes.errors import InvalidInputError
from gateway.routes.model import ALARM_CODES, BinStatus, Candidate, FillReading, Reason
from gateway.routes.parsing import MAX_BIN_VOLUME_L

logger = logging.getLogger(__name__)

_EPS = 1e-9
_DAY_S = 86400


@dataclass(frozen=True, slots=True)
class SelectionSettings:
    """How bins are selected.

    Attributes:
        round_start: When today's round starts (fills are projected to this time).
        next_round: When the next round after this one starts (the prediction horizon).
        threshold: Fill fraction at or above which a bin is due (0 < threshold <= 1).
        default_volume_l: Volume of bins whose status carries none and that are not in ``volumes_l``.
        volumes_l: Volume per bin id (litres), e.g. from a bin-volumes CSV.
        lookback_s: Only readings this recent (before the last one) feed the fill rate.
        min_span_s: Fewer seconds of history than this give no rate (rate 0).
        stale_after_s: A bin silent for longer is not extrapolated (rate 0), only its last fill counts.
        empty_drop: A fall in fill of at least this fraction marks an emptying.
        max_points: Readings kept for the slope (evenly thinned), bounding the O(n²) estimator.
    """

    round_start: datetime
    next_round: datetime
    threshold: float = 0.8
    default_volume_l: float = 240.0
    lookback_s: int = 3 * _DAY_S
    min_span_s: int = 3600
    stale_after_s: int = 3 * _DAY_S
    empty_drop: float = 0.25
    max_points: int = 48
    volumes_l: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (0.0 < self.threshold <= 1.0) or math.isnan(self.threshold):
            raise InvalidInputError("threshold", self.threshold, "must be a fraction in (0, 1], e.g. 0.8")
        if not (0 < self.default_volume_l <= MAX_BIN_VOLUME_L):
            raise InvalidInputError("bin volume", self.default_volume_l,
                                    f"must be a positive number of litres, at most {MAX_BIN_VOLUME_L:.0f}")
        for bin_id, volume in self.volumes_l.items():
            if not (0 < volume <= MAX_BIN_VOLUME_L):
                raise InvalidInputError(f"bin volume of {bin_id}", volume,
                                        f"must be a positive number of litres, at most {MAX_BIN_VOLUME_L:.0f}")
        if self.round_start.tzinfo is None or self.next_round.tzinfo is None:
            raise InvalidInputError("round start", self.round_start, "must be timezone-aware")
        if self.next_round <= self.round_start:
            raise InvalidInputError("next round", self.next_round, "must be after the round start")


def theil_sen_slope(points: Sequence[tuple[float, float]]) -> float:
    """Return the median of the pairwise slopes dy/dx (0.0 with fewer than two distinct x).

    Args:
        points: (x, y) pairs.
    """
    slopes: list[float] = []
    n = len(points)
    for i in range(n):
        xi, yi = points[i]
        for j in range(i + 1, n):
            xj, yj = points[j]
            if xj != xi:
                slopes.append((yj - yi) / (xj - xi))
    if not slopes:
        return 0.0
    slopes.sort()
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2.0


def since_last_emptying(readings: Sequence[FillReading], empty_drop: float) -> list[FillReading]:
    """Return the time-sorted readings after the last emptying (a fall of at least ``empty_drop``)."""
    ordered = sorted(readings, key=lambda r: r.t)
    start = 0
    for i in range(1, len(ordered)):
        if ordered[i].fill <= ordered[i - 1].fill - empty_drop + _EPS:
            start = i
    return ordered[start:]


def _thin(readings: list[FillReading], max_points: int) -> list[FillReading]:
    """Keep at most ``max_points`` evenly spaced readings, always the first and the last."""
    n = len(readings)
    if n <= max_points:
        return readings
    step = (n - 1) / (max_points - 1)
    return [readings[round(k * step)] for k in range(max_points)]


def fill_rate_per_day(readings: Sequence[FillReading], settings: SelectionSettings) -> float:
    """Return the bin's fill rate in fraction per day (never negative).

    Uses the readings since the last emptying within ``lookback_s`` of the latest one; a history
    shorter than ``min_span_s`` or a stale bin gives 0 (no extrapolation without evidence).
    """
    segment = since_last_emptying(readings, settings.empty_drop)
    if not segment:
        return 0.0
    last_t = segment[-1].t
    if settings.round_start.timestamp() - last_t > settings.stale_after_s:
        return 0.0
    recent = [r for r in segment if r.t >= last_t - settings.lookback_s]
    if recent[-1].t - recent[0].t < settings.min_span_s:
        return 0.0
    thinned = _thin(recent, max(2, settings.max_points))
    slope_per_s = theil_sen_slope([(float(r.t - last_t), r.fill) for r in thinned])
    return max(0.0, slope_per_s * _DAY_S)


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def evaluate_bin(status: BinStatus, settings: SelectionSettings) -> Candidate | None:
    """Return the bin as a collection candidate, or None if it need not be emptied on this round.

    A bin in alarm with no fill reading is assumed full for its load (conservative for capacity);
    its ``fill_now`` is None: there is no reading to report.
    """
    alarms = [Reason(code) for code in ALARM_CODES if code in status.alarms]
    volume = status.volume_l if status.volume_l is not None else \
        settings.volumes_l.get(status.id, settings.default_volume_l)
    if not status.readings:
        if not alarms:
            return None
        return Candidate(status, tuple(alarms), None, 1.0, 1.0, 0.0, volume)
    last = max(status.readings, key=lambda r: r.t)
    fill_now = _clip01(last.fill)
    rate = fill_rate_per_day(status.readings, settings)
    start_s = settings.round_start.timestamp()
    next_s = settings.next_round.timestamp()
    expected = _clip01(fill_now + rate * max(0.0, start_s - last.t) / _DAY_S)
    predicted_next = _clip01(fill_now + rate * max(0.0, next_s - last.t) / _DAY_S)
    reasons = list(alarms)
    # Full when the truck comes: the latest level, or the level expected at the round start (70 % six hours
    # before, rising fast, is full then and ranks with the full bins, not below them as "predicted").
    if max(fill_now, expected) >= settings.threshold - _EPS:
        reasons.append(Reason.FULL)
    elif predicted_next >= settings.threshold - _EPS:
        reasons.append(Reason.PREDICTED)
    if not reasons:
        return None
    return Candidate(status, tuple(reasons), fill_now, expected, predicted_next, rate, expected * volume)


def quiet_reason(status: BinStatus, settings: SelectionSettings) -> str | None:
    """Why a bin that is not due cannot be trusted to stay so, or None.

    A bin silent for more than ``stale_after_s`` before the round gets no fill rate (no extrapolation
    without evidence), so it is judged on its last level alone: 70 % three days ago, rising 40 % a day,
    is likely overflowing now. It is listed (skipped, with this reason), never silently left out.
    """
    last = max(status.readings, key=lambda r: r.t)
    age_s = settings.round_start.timestamp() - last.t
    if age_s <= settings.stale_after_s:
        return None
    at = datetime.fromtimestamp(last.t, tz=settings.round_start.tzinfo).isoformat(timespec="minutes")
    return (f"no fill reading for {age_s / 3600:.0f} h before the round start (last {round(last.fill * 100)} % "
            f"at {at}): too old to predict its fill; check the sensor, or look at the bin")


def _has_location(status: BinStatus) -> bool:
    return (
        math.isfinite(status.lat)
        and math.isfinite(status.lon)
        and -90.0 <= status.lat <= 90.0
        and -180.0 <= status.lon <= 180.0
    )


def select_bins(
    bins: Iterable[BinStatus], settings: SelectionSettings
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Select the bins to empty on this round.

    Args:
        bins: Every bin the gateway knows.
        settings: Threshold, round times and estimator settings.

    Returns:
        (candidates, skipped): candidates with alarms first (fire, then tip), then by expected
        fill descending, then id; skipped bins as (id, reason) for bins that cannot be planned.

    Raises:
        InvalidInputError: Two statuses have the same bin id.
    """
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for status in bins:
        if status.id in seen:
            raise InvalidInputError("bin id", status.id, "appears more than once in the bin list")
        seen.add(status.id)
        if not _has_location(status):
            skipped.append((status.id, "no valid location (lat/lon) in the registry"))
            continue
        if not status.readings and not status.alarms:
            skipped.append((status.id, status.no_reading_reason or "no fill reading yet"))
            continue
        cand = evaluate_bin(status, settings)
        if cand is not None:
            candidates.append(cand)
        elif status.readings:
            quiet = quiet_reason(status, settings)
            if quiet is not None:
                skipped.append((status.id, quiet))
    order = {r: i for i, r in enumerate(Reason)}
    candidates.sort(key=lambda c: (order[c.reason], -c.expected_fill, c.bin.id))
    logger.info("selected %s bins (%s in alarm), skipped %s", len(candidates),
                sum(1 for c in candidates if c.is_alarm), len(skipped))
    return candidates, skipped
