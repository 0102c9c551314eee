"""How long one statement of a report store's read connection may run (gateway.storage.queries).

A read holds the store's write-ahead log (no checkpoint copies past its snapshot) and a worker thread until
it ends; a statement past :data:`STATEMENT_LIMIT_S` is interrupted so that neither is held for ever.
"""

from __future__ import annotations

import time

#: The longest one statement of a read connection may run before it is interrupted (StorageError
#: ``read_timeout``): a read holds the store's write-ahead log (no checkpoint copies past its snapshot) and a
#: worker thread until it ends, and the web's 60 s ``store_timeout`` answers without stopping it. Twice that:
#: by then no request waits for the statement any more, while a large store's slow first reads on a small
#: board (the fleet snapshot's walk of years of reports) get room to finish.
STATEMENT_LIMIT_S = 120.0
#: SQLite VM steps between two looks at the clock (one Python call: microseconds per ~10,000 steps).
CLOCK_EVERY_STEPS = 10_000


class StatementClock:
    """When the running statement of one read connection started, and whether it was stopped for its time.

    A trace callback (SQLite calls it as each statement starts) restarts the clock; a progress handler
    (every :data:`CLOCK_EVERY_STEPS` VM steps) interrupts the statement once it ran past ``limit_s``.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.started = time.monotonic()
        self.stopped = False  # set by the handler; cleared when the connection is taken for a new read

    def restart(self, _sql: str) -> None:
        """A statement starts (the trace callback): its time counts from now."""
        self.started = time.monotonic()

    def over(self) -> int:
        """The progress handler: non-zero (interrupt) once the running statement ran past the limit."""
        if time.monotonic() - self.started > self.limit_s:
            self.stopped = True
            return 1
        return 0
