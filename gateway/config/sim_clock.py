"""The gateway's clock under ``[sim_clock]``: fixed speed, or following a file a simulation rewrites.

A fixed ``[sim_clock]`` (``speed``, ``virtual_at``, ``wall_at``) assumes the boards run at exactly
``speed``; a loaded machine runs them slower and the gateway's clock runs ahead of them. With
``follow_file``, the simulation (``civicedge demo``) rewrites a small JSON file
``{"virtual_at": .., "wall_at": .., "speed": ..}`` from where its boards actually are and how fast
they actually run, and the clock re-reads it when it changes (looking at most every
:data:`CHECK_EVERY_S` wall seconds, not at every call) and extrapolates in between.

The gateway also uses this clock as its monotonic clock (the ACK gap hold), so it never goes
backwards: when an update puts virtual time behind what was already returned, the clock holds there
until the simulation catches up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from gateway.config.model import SimClockConfig

log = logging.getLogger(__name__)

FOLLOW_KEYS = ("virtual_at", "wall_at", "speed")
MAX_SPEED = 1e6  # as [sim_clock] speed; 0 (the boards stand still) is allowed in the file
CHECK_EVERY_S = 0.2


class FollowFileError(ValueError):
    """A follow file that cannot be used. ``reason``: ``bad_path`` (unreadable) or ``bad_value``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_follow_file(path: Path) -> tuple[float, float, float]:
    """Read a follow file: ``(speed, virtual_at, wall_at)``.

    Raises:
        FollowFileError: unreadable, not JSON, not an object, a key missing or unknown, a value not
            a finite number, or speed outside 0..1e6; the message says which.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FollowFileError(f"cannot read {path}: {exc.strerror or exc}", "bad_path") from exc
    try:
        data: Any = json.loads(raw)
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
    values: dict[str, float] = {}
    for key in FOLLOW_KEYS:
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise FollowFileError(f"{path}: {key} must be a finite number, not {value!r}", "bad_value")
        values[key] = float(value)
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
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime ns, size) last read
        self._missing = False
        self._last = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Virtual unix time now; never less than a time returned before."""
        with self._lock:
            if self.follow_file is not None:
                mono = self._monotonic()
                if mono >= self._next_check:
                    self._next_check = mono + CHECK_EVERY_S
                    self._look(self.follow_file)
            now = self._virtual_at + (self._wall() - self._wall_at) * self._speed
            if now < self._last:  # an update put the simulation behind what we said: hold, never step back
                now = self._last
            self._last = now
            return now

    def _look(self, path: Path) -> None:
        """Re-read the follow file if it was replaced or changed; keep the last clock when it cannot be used."""
        try:
            st = os.stat(path)
        except OSError as exc:
            if not self._missing:
                self._missing = True
                log.warning("sim_clock.follow_file %s: %s; keeping the last clock (speed %g) until it is back",
                            path, exc.strerror or exc, self._speed)
            return
        if self._missing:
            self._missing = False
            log.info("sim_clock.follow_file %s is back: following it again", path)
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self._speed, self._virtual_at, self._wall_at = read_follow_file(path)
        except FollowFileError as exc:  # once per change of the file: the next write may fix it
            log.warning("sim_clock.follow_file: %s; keeping the last clock", exc)
