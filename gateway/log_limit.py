"""At most one log line per interval for events that come in bursts (overload, failing commits, floods)."""

from __future__ import annotations

import logging
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


class CountedWarning:
    """A warning about events that come in bursts: a line at most once per interval that counts the
    events since the last one, and a closing line at :meth:`flush` for the events the limit held back.

    Args:
        every_s: minimum time between two lines.
        clock: monotonic time source.
        held_back: the closing line, a ``%d`` format for the number of events held back.
        logger: where the closing line goes.
    """

    def __init__(self, every_s: float, clock: Callable[[], float], held_back: str, logger: logging.Logger) -> None:
        self.limit = LogLimiter(every_s, clock)  # its every_s may be changed later
        self._held_back = held_back
        self._log = logger
        self.unlogged = 0  # events since the last line about them

    def count(self, n: int = 1) -> tuple[int, int] | None:
        """Count ``n`` events. None while the limit holds; otherwise ``(events, calls)`` since the last
        line, these included: the caller logs a line about them now."""
        self.unlogged += n
        skipped = self.limit.allow()
        if skipped is None:
            return None
        events, self.unlogged = self.unlogged, 0
        return events, skipped + 1

    def flush(self) -> None:
        """Log the events held back since the last line (the burst is over, or the service stops), and
        let the next event be logged at once."""
        if self.unlogged:
            self._log.warning(self._held_back, self.unlogged)
            self.unlogged = 0
        self.limit.reset()
