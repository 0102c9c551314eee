"""At most one log line per interval for events that come in bursts (overload, failing commits, floods)."""

from __future__ import annotations

from typing import Callable


class LogLimiter:
    """Decides whether a bursty event may be logged now, and how many were left out since the last line.

    Args:
        every_s: minimum time between two lines (the attribute of that name may be changed later).
        clock: monotonic time source.
    """

    def __init__(self, every_s: float, clock: Callable[[], float]) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._skipped = 0

    def allow(self) -> int | None:
        """None while a line was logged less than ``every_s`` ago (the event is counted); otherwise
        the number of events left out since the last line (the caller logs now)."""
        now = self._clock()
        if self._last is not None and now - self._last < self.every_s:
            self._skipped += 1
            return None
        skipped, self._skipped, self._last = self._skipped, 0, now
        return skipped

    def reset(self) -> None:
        """Forget the last line: the next event is logged at once (the burst is over)."""
        self._last, self._skipped = None, 0


def more_since(skipped: int, what: str) -> str:
    """`` (N more <what> since the last such line)``, or an empty string for none."""
    return " (%d more %s since the last such line)" % (skipped, what) if skipped else ""
