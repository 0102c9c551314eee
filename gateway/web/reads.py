"""Worker threads for the web layer's store reads: a slow query never runs on the event loop.

The gateway's event loop also reads the serial ports, commits batches and sends the ACKs, so a
query on it stalls ingest for as long as the query takes. Every store read of the web layer goes
through a :class:`StoreReads`:

* ``quick`` — one thread for the cheap reads that answer operators and probes (the fleet
  snapshot's incremental refresh, the ``/healthz`` store probe);
* ``bulk`` — a few threads for reads whose cost follows a requested range (readings, aggregates,
  the open-data CSV), so a long export never queues in front of ``/healthz``.

Each thread reads through its own SQLite connection (:class:`gateway.storage.ReportQueries` opens
one per thread). A read that does not finish within its timeout answers 503 ``store_timeout``, and so
does a read whose statement ran past the connections' statement limit
(:data:`gateway.storage.statement_clock.STATEMENT_LIMIT_S`): SQLite stopped it, so its snapshot no longer holds
the ``-wal`` and its thread is free for the next read.

Given the store's path, a :class:`gateway.web.wal_gate.WalGate` holds new reads back (a few seconds at
most) while the store's ``-wal`` is over its limit and reads running keep it from being checkpointed, so
overlapping reads cannot make it grow without limit. Only bulk reads pass it: a quick read holds its snapshot
for microseconds, and the ``/healthz`` probe must answer within its own timeout. Each read holds its snapshot for its own statements
only: the read connections run in autocommit, a ``BEGIN`` of :class:`gateway.storage.ReportQueries`
ends in the same call.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from gateway.errors import StorageError
from gateway.web.errors import Unavailable
from gateway.web.wal_gate import WalGate

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BULK_THREADS = 2
DEFAULT_READ_TIMEOUT_S = 60.0


class StoreReads:
    """Runs blocking store reads on worker threads and awaits them from the event loop.

    Args:
        bulk_threads: threads for range reads (readings, aggregates, exports).
        timeout_s: how long a read may take before the request answers 503 ``store_timeout``
            (the worker finishes its query in the background).
        store_path: the report store's file: reads wait for its ``-wal`` to be checkpointed when it grew
            over the limit (:class:`gateway.web.wal_gate.WalGate`); None: they never wait.
        wal_gate: that gate, built by the caller (tests); ``store_path`` is then ignored.

    Attributes:
        wal_gate: the gate reads pass (None: none).
    """

    def __init__(self, *, bulk_threads: int = DEFAULT_BULK_THREADS,
                 timeout_s: float = DEFAULT_READ_TIMEOUT_S, store_path: Path | None = None,
                 wal_gate: WalGate | None = None) -> None:
        self._quick = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-read")
        self._bulk = ThreadPoolExecutor(max_workers=bulk_threads, thread_name_prefix="web-bulk")
        self.timeout_s = timeout_s
        self.wal_gate = wal_gate if wal_gate is not None else (None if store_path is None else WalGate(store_path))

    async def quick(self, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """Run ``fn()`` (a cheap read) on the quick thread; it never waits at the WAL gate."""
        return await self._run(self._quick, fn, timeout_s, gated=False)

    async def bulk(self, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """Run ``fn()`` (a read whose cost follows a requested range) on a bulk thread."""
        return await self._run(self._bulk, fn, timeout_s, gated=True)

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T], timeout_s: float | None, *,
                   gated: bool) -> T:
        limit = self.timeout_s if timeout_s is None else timeout_s
        if gated and self.wal_gate is not None:
            await self.wal_gate.admit()  # bounded: runs anyway after wal_gate.wait_s
        future = asyncio.get_running_loop().run_in_executor(pool, fn)
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            logger.warning("store read %s did not finish within %.1f s", _name(fn), limit)
            raise Unavailable(f"the store did not answer within {limit:g} s", code="store_timeout") from None
        except StorageError as exc:
            if exc.reason != "read_timeout":
                raise
            # The statement limit stopped it: the same answer as a read the client waited too long for.
            logger.warning("store read %s was stopped: %s", _name(fn), exc)
            raise Unavailable(f"the store did not answer in time ({exc})", code="store_timeout") from None

    def close(self) -> None:
        """Stop the threads once their current read ends; queued reads are dropped."""
        self._quick.shutdown(wait=False, cancel_futures=True)
        self._bulk.shutdown(wait=False, cancel_futures=True)



def _name(fn: Callable[[], object]) -> str:
    """A read's function name for the log (a ``functools.partial``'s function's)."""
    return str(getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "read"))
