"""The gateway's clock under ``[sim_clock]``: fixed speed, or following a file a simulation rewrites.

A fixed ``[sim_clock]`` (``speed``, ``virtual_at``, ``wall_at``) assumes the boards run at exactly
``speed``; a loaded machine runs them slower and the gateway's clock runs ahead of them. With
``follow_file``, the simulation (``civicedge demo``) rewrites a small JSON file
``{"virtual_at": .., "wall_at": .., "speed": ..}`` from where its boards actually are and how fast
they actually run, and the clock re-reads it when it changes (looking at most every
:data:`CHECK_EVERY_S` wall seconds, not at every call) and extrapolates in between, for at most
:data:`FOLLOW_EXTRAPOLATE_WALL_S` past the file's ``wall_at``: a writer that stops (a stalled or busy
machine, a hung simulator) stops the clock rather than letting it run ahead of the boards.

The gateway also uses this clock as its monotonic clock (the ACK gap hold), so it does not go
backwards for the small lags of following: when an update puts virtual time behind what was already
returned, the clock holds there until the simulation catches up. A file behind by more than
:func:`step_back_bound` (a clock that was wrong, e.g. a bad write since corrected) is not held to:
the clock steps back to it, with a warning, rather than staying wrong until a restart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

from gateway.config.model import SimClockConfig
from gateway.small_files import STATE_MAX, NestedTooDeeplyError, loads_json, read_limited

log = logging.getLogger(__name__)

FOLLOW_KEYS = ("virtual_at", "wall_at", "speed")
MAX_SPEED = 1e6  # as [sim_clock] speed; 0 (the boards stand still) is allowed in the file
MAX_UNIX_S = 253402300799  # 9999-12-31T23:59:59Z: a larger time is not seconds (ms, µs) or not a time
CHECK_EVERY_S = 0.2
# How far past the follow file's wall_at the clock extrapolates (wall s); beyond it the clock waits for the
# next update. The demo rewrites the file every 0.25 s and we look every CHECK_EVERY_S, so a live writer
# is seen before the cap (give or take a loaded machine's delays: the clock then pauses briefly, behind
# the boards, which is harmless). A stalled writer or host stops the clock instead of running it ahead of
# the boards: an overshoot is held, and ACK time sync then sets the boards back (by more than the
# firmware's 300 s tolerance, they report their windows again). At speed s it bounds the overshoot to
# 0.5 * s virtual s (500 at 1000x, 150 at 300x).
FOLLOW_EXTRAPOLATE_WALL_S = 0.5
# How far behind the time already returned the file's clock may be and still be held to (see
# step_back_bound): the writer's lag (it updates about once a wall second from a pace measured over
# a few seconds) plus our own CHECK_EVERY_S, at the clock's speed; never less than STEP_BACK_MIN_S.
HOLD_WALL_S = 5.0
STEP_BACK_MIN_S = 60.0


def step_back_bound(speed: float) -> float:
    """Virtual seconds the file's clock may lag the time already returned before the clock steps back.

    ``(CHECK_EVERY_S + HOLD_WALL_S) * speed``: what the clock runs in that much wall time, so a hold
    lasts a few wall seconds at most while the simulation runs; at least :data:`STEP_BACK_MIN_S`.
    """
    return max(STEP_BACK_MIN_S, (CHECK_EVERY_S + HOLD_WALL_S) * speed)


class FollowFileError(ValueError):
    """A follow file that cannot be used. ``reason``: ``bad_path`` (unreadable) or ``bad_value``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_follow_file(path: Path) -> tuple[float, float, float]:
    """Read a follow file: ``(speed, virtual_at, wall_at)``.

    Raises:
        FollowFileError: unreadable, or its content cannot be used (:func:`parse_follow_file`).
    """
    try:
        raw = read_limited(path, STATE_MAX)
    except OSError as exc:
        raise FollowFileError(f"cannot read {path}: {exc.strerror or exc}", "bad_path") from exc
    return parse_follow_file(raw, path)


def _number(path: Path, key: str, value: Any) -> float:
    """``value`` as a finite float; FollowFileError (bad_value) otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FollowFileError(f"{path}: {key} must be a finite number, not {value!r}", "bad_value")
    try:
        number = float(value)  # an int too large for a float raises OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):  # also JSON's NaN, Infinity, which Python's json accepts
        shown = repr(value) if isinstance(value, float) else f"an integer of {len(str(abs(value)))} digits"
        raise FollowFileError(f"{path}: {key} must be a finite number, not {shown}", "bad_value")
    return number


def parse_follow_file(raw: bytes, path: Path) -> tuple[float, float, float]:
    """The content of a follow file (``path`` is for messages): ``(speed, virtual_at, wall_at)``.

    Raises:
        FollowFileError: not JSON, not an object, a key missing or unknown, a value not a finite
            number, virtual_at or wall_at outside 0..:data:`MAX_UNIX_S`, or speed outside
            0..1e6; the message says which (``bad_value``).
    """
    try:
        data: Any = loads_json(raw)
    except NestedTooDeeplyError as exc:
        raise FollowFileError(f"{path} is not a follow file: {exc}", "bad_value") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FollowFileError(f"{path} is not valid JSON: {exc}", "bad_value") from exc
    if not isinstance(data, dict):
        raise FollowFileError(f"{path} must hold a JSON object with {', '.join(FOLLOW_KEYS)}, not "
                              f"{type(data).__name__}", "bad_value")
    missing = [k for k in FOLLOW_KEYS if k not in data]
    if missing:
        raise FollowFileError(f"{path} lacks {', '.join(repr(k) for k in missing)} "
                              f"(it needs {', '.join(FOLLOW_KEYS)})", "bad_value")
    unknown = sorted(k for k in data if k not in FOLLOW_KEYS)
    if unknown:
        raise FollowFileError(f"{path} has unknown key(s) {', '.join(repr(k) for k in unknown)} "
                              f"(allowed: {', '.join(FOLLOW_KEYS)})", "bad_value")
    values = {key: _number(path, key, data[key]) for key in FOLLOW_KEYS}
    for key in ("virtual_at", "wall_at"):
        if not 0 <= values[key] <= MAX_UNIX_S:
            raise FollowFileError(f"{path}: {key} = {values[key]!r} is outside 0..{MAX_UNIX_S} "
                                  "(unix time in seconds, up to the year 9999)", "bad_value")
    if not 0 <= values["speed"] <= MAX_SPEED:
        raise FollowFileError(f"{path}: speed = {values['speed']!r} is outside 0..{MAX_SPEED:g}", "bad_value")
    return values["speed"], values["virtual_at"], values["wall_at"]


class SimClock:
    """The gateway's unix-time clock under ``[sim_clock]`` (see module docstring). Call it for "now".

    Thread-safe: the web surface may ask from worker threads.

    Args:
        config: the ``[sim_clock]`` section; its values are the clock until the follow file says otherwise.
        wall: the wall clock (unix s).
        monotonic: a monotonic wall clock, for how often the follow file is looked at.
    """

    def __init__(self, config: SimClockConfig, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.follow_file = config.follow_file
        self._speed, self._virtual_at, self._wall_at = config.speed, config.virtual_at, config.wall_at
        self._wall = wall
        self._monotonic = monotonic
        self._next_check = float("-inf")
        self._seen: bytes | None = None  # the file's content last read (None: not read, or unreadable)
        self._warned = False  # the file is unreadable or unusable and that was said: quiet until it is good
        self._last = float("-inf")
        self._last_speed = config.speed
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Virtual unix time now; never less than a time returned before, unless the follow file's
        clock is behind it by more than :func:`step_back_bound` (then the file's, with a warning)."""
        with self._lock:
            if self.follow_file is not None:
                mono = self._monotonic()
                if mono >= self._next_check:
                    self._next_check = mono + CHECK_EVERY_S
                    self._look(self.follow_file)
            elapsed = self._wall() - self._wall_at
            if self.follow_file is not None:  # waits for the writer's next update (see FOLLOW_EXTRAPOLATE_WALL_S)
                elapsed = min(elapsed, FOLLOW_EXTRAPOLATE_WALL_S)
            now = self._virtual_at + elapsed * self._speed
            if now < self._last:
                bound = step_back_bound(max(self._speed, self._last_speed))
                if self.follow_file is None or self._last - now <= bound:
                    now = self._last  # following's lag (or the wall clock set back): hold until passed
                else:  # the clock was wrong (a bad write since corrected): holding would keep it wrong
                    log.warning("sim_clock.follow_file %s: the simulation's clock is %.0f virtual s behind the "
                                "gateway's, more than the %.0f s it holds for: stepping back to it",
                                self.follow_file, self._last - now, bound)
            if now > self._last:  # while holding, the bound keeps the pace the clock ran at before the hold
                self._last_speed = self._speed
            self._last = now
            return now

    def _look(self, path: Path) -> None:
        """Re-read the follow file if its content changed; keep the last clock when it cannot be used.

        The file is tiny: its bytes are compared, not its inode/mtime/size (an atomic replace may
        reuse the inode, mtimes are coarse, and two JSON floats often have the same length).
        """
        try:  # never blocks (a FIFO put there hung the gateway: the clock is read on its event loop)
            raw = read_limited(path, STATE_MAX)
        except OSError as exc:
            self._seen = None  # read again once it is back, even with the same content
            self._unusable(f"cannot read {path}: {exc.strerror or exc}")
            return
        if raw == self._seen:
            return
        self._seen = raw
        try:
            self._speed, self._virtual_at, self._wall_at = parse_follow_file(raw, path)
        except FollowFileError as exc:
            self._unusable(str(exc))
            return
        if self._warned:
            self._warned = False
            log.info("sim_clock.follow_file %s is usable again: following it", path)

    def _unusable(self, why: str) -> None:
        """One warning until the file is good again (a writer retrying would otherwise flood the log)."""
        if not self._warned:
            self._warned = True
            log.warning("sim_clock.follow_file: %s; keeping the last clock (speed %g) until it is usable again",
                        why, self._speed)
