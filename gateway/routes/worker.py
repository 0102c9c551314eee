"""Plans solved in a separate process, so the gateway keeps serving while OR-Tools searches.

OR-Tools' ``SolveWithParameters`` holds the GIL for the whole search: in a thread of the gateway
it froze ingest, ACKs and every HTTP answer (``/healthz`` too) for the solver's time limit. The
worker is a ``spawn``-started process (not ``fork``: the gateway runs threads and an event loop),
started on first use, one per gateway process, one plan at a time. A plan that runs past its time
limit plus a margin, or a worker that dies, costs that request only: the worker is killed and a new
one started for the next plan. The worker is a daemon process (stopped when the gateway exits) and
also exits on its own when the gateway process is gone.

The command line plans in its own process and calls :func:`plan_or_notice` directly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Sequence

from gateway.routes.errors import NoBinsDueError, RoutesError
from gateway.routes.model import BinStatus, Plan
from gateway.routes.planner import PlanSettings, plan_collection, volume_warnings

__all__ = ["PlannerStopped", "PlannerTimeout", "SolverProcess", "empty_plan", "plan_or_notice", "shared_solver"]

logger = logging.getLogger(__name__)

#: Seconds a plan may take beyond its solver time limit (reading distances, the first solution,
#: which is never cut short, and moving bins and plan between the processes) before it is abandoned.
DEFAULT_MARGIN_S = 60.0
_PARENT_CHECK_S = 2.0


class PlannerTimeout(Exception):
    """The worker did not answer within the plan's time limit plus the margin; it was killed."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the plan took longer than {limit_s:g} s; it was stopped")
        self.limit_s = limit_s


class PlannerStopped(Exception):
    """The worker died (killed, out of memory) or was closed while planning."""


def empty_plan(settings: PlanSettings, considered: int, skipped: tuple[tuple[str, str], ...] = (),
               warnings: tuple[str, ...] = ()) -> Plan:
    """The plan of a round without due bins (the API answers it with a ``notice``)."""
    return Plan(date=settings.day.isoformat(), start=settings.round_start, depot=settings.depot,
                vehicles=settings.vehicles, capacity_l=settings.capacity_l, threshold=settings.threshold,
                distance_source=settings.distances.description, routes=(), considered=considered,
                skipped=skipped, warnings=warnings)


def plan_or_notice(bins: Sequence[BinStatus], settings: PlanSettings) -> tuple[Plan, str | None]:
    """Plan ``bins``; no bins due gives an empty plan and the notice saying so (not an error).

    Raises:
        RoutesError: Any other planning error (capacity, matrix, solver, input).
    """
    try:
        return plan_collection(bins, settings), None
    except NoBinsDueError as exc:  # the empty plan still carries the warnings about its input
        warnings = tuple(settings.start_warnings() + volume_warnings(bins, settings))
        return empty_plan(settings, exc.considered, exc.skipped, warnings), exc.message


_FORMATTER = logging.Formatter()


class _Collect(logging.Handler):
    """Keeps the worker's log records of one plan, to be logged by the gateway with its handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg = record.getMessage()  # args may not pickle; the text is what is logged
        record.args = None
        if record.exc_info:  # the traceback only: the gateway's formatter puts the message before it
            if record.exc_text is None:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _trim_memory() -> None:
    """Give the last plan's memory back to the system: a 4000-bin plan left the idle worker at ~900 MB
    (its matrix as 16 million Python ints, freed but kept by glibc's allocator) until the next plan."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(_PARENT_CHECK_S)
        if os.getppid() != parent_pid:  # the gateway is gone (killed): nothing will ask again
            os._exit(0)


def _serve(conn: Connection, parent_pid: int) -> None:
    """The worker's loop: read (bins, settings, log level), answer (outcome, log records), until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the gateway's terminal: the gateway stops us
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    collect = _Collect()
    root = logging.getLogger()
    root.handlers[:] = [collect]
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        collect.records = []
        answer = _answer(data, root, collect)
        del data
        conn.send_bytes(answer)
        del answer
        collect.records = []
        _trim_memory()


def _answer(data: bytes, root: logging.Logger, collect: _Collect) -> bytes:
    """Plan one request; its pickled (outcome, log records). A function of its own, so the bins, the
    matrix and the plan are gone when it returns and :func:`_trim_memory` can give their memory back."""
    outcome: tuple[str, Any]
    try:
        bins, settings, level = pickle.loads(data)
        root.setLevel(level)  # the gateway's level now: what it would log, it gets
        outcome = ("ok", plan_or_notice(bins, settings))
    except RoutesError as exc:
        outcome = ("routes_error", (type(exc), exc.args, exc.__dict__))
    except Exception:
        outcome = ("defect", traceback.format_exc())
    try:
        return pickle.dumps((outcome, collect.records))
    except Exception:  # an error field that does not pickle: still an answer
        return pickle.dumps((("defect", traceback.format_exc()), []))


def _stopped(code: int | None, closed: bool) -> str:
    """Why the worker stopped answering, from its exit code (negative: the signal that ended it)."""
    if closed:
        return "the planning worker was closed"
    if code is None:
        return "the planning worker stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the planning worker was killed ({name}; out of memory?)" if name == "SIGKILL" \
            else f"the planning worker was killed ({name})"
    return f"the planning worker exited with code {code}"


def _log_level() -> int:
    """The lowest level any planning logger of this process logs at: the worker sends records from it up."""
    names = ["gateway.routes"] + [n for n in logging.root.manager.loggerDict if n.startswith("gateway.routes.")]
    return min(logging.getLogger(n).getEffectiveLevel() for n in names)


def _rebuild(cls: type[RoutesError], args: tuple[Any, ...], state: dict[str, Any]) -> RoutesError:
    """The worker's planning error as the same class with the same fields (their __init__ differ from
    ``Exception``'s, so they do not unpickle by themselves)."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class SolverProcess:
    """One planning worker process, started on first use; one plan at a time (callers queue on a lock).

    :meth:`plan` blocks: call it from a thread (``asyncio.to_thread``), never on the event loop.
    """

    def __init__(self, *, margin_s: float = DEFAULT_MARGIN_S) -> None:
        self.margin_s = margin_s
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # one plan at a time
        self._state = threading.Lock()  # guards the process handle (close() may come from another thread)
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self.started = 0  # workers started so far (a killed or dead one is replaced)
        self.closed = False  # set by close(): no worker is started again

    @property
    def pid(self) -> int | None:
        """Process id of the running worker, if any."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def _ensure(self) -> Connection:
        with self._state:
            if self.closed:  # a plan that was still reading its bins when close() came: no new worker
                raise PlannerStopped("the planning worker was closed")
            if self._proc is not None and self._proc.is_alive() and self._conn is not None:
                return self._conn
            self._discard()
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(target=_serve, args=(child, os.getpid()), name="civicedge-planner",
                                     daemon=True)
            proc.start()
            child.close()
            self._proc, self._conn = proc, parent
            self.started += 1
            logger.info("route planning worker started (pid %s)", proc.pid)
            return parent

    def _discard(self) -> None:
        """Kill and forget the worker (caller holds ``_state``)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            if proc.exitcode is not None:
                proc.close()
        if conn is not None:
            conn.close()

    def plan(self, bins: Sequence[BinStatus], settings: PlanSettings, *,
             margin_s: float | None = None) -> tuple[Plan, str | None]:
        """Plan in the worker, as :func:`plan_or_notice` would in this process.

        Args:
            bins: The bins, as the data source gave them.
            settings: The plan's settings (sent to the worker with the bins).
            margin_s: Seconds allowed beyond ``settings.time_limit_s`` (default: this worker's ``margin_s``).

        Raises:
            RoutesError: The planning error the worker met (same class and fields).
            PlannerTimeout: No answer within the time limit plus the margin; the worker was killed.
            PlannerStopped: The worker died or was closed.
            RuntimeError: The worker failed unexpectedly (its traceback is the message).
        """
        payload = pickle.dumps((list(bins), settings, _log_level()))
        limit = settings.time_limit_s + (self.margin_s if margin_s is None else margin_s)
        with self._lock:
            conn = self._ensure()
            try:
                conn.send_bytes(payload)
                ready = conn.poll(limit)
                if not ready:
                    with self._state:
                        pid = self._proc.pid if self._proc is not None else None
                        self._discard()
                    logger.warning("route planning worker (pid %s) did not answer within %.0f s; killed it",
                                   pid, limit)
                    raise PlannerTimeout(limit)
                data = conn.recv_bytes()
            except (EOFError, OSError) as exc:
                with self._state:
                    proc = self._proc
                    if proc is not None:
                        proc.join(1)  # its exit code says why (killed, out of memory)
                    code = proc.exitcode if proc is not None else None
                    self._discard()
                raise PlannerStopped(_stopped(code, self.closed)) from exc
        (kind, value), records = pickle.loads(data)
        for record in records:
            target = logging.getLogger(record.name)
            if target.isEnabledFor(record.levelno):
                target.handle(record)
        if kind == "ok":
            plan, notice = value
            return plan, notice
        if kind == "routes_error":
            raise _rebuild(*value)
        raise RuntimeError(f"planning failed in the worker:\n{value}")

    def close(self) -> None:
        """Stop the worker for good: a plan in progress, and any later one, ends with :class:`PlannerStopped`
        (:func:`shared_solver` hands out a new one after the shared one was closed)."""
        with self._state:
            self.closed = True
            proc = self._proc
            if proc is None:
                return
            logger.info("route planning worker (pid %s) stopped", proc.pid)
            if proc.is_alive():
                proc.kill()  # a plan waiting on the pipe sees it closed and cleans up itself
            if self._lock.acquire(blocking=False):  # no plan in progress: clean up here
                try:
                    self._discard()
                finally:
                    self._lock.release()


_SHARED: SolverProcess | None = None
_SHARED_LOCK = threading.Lock()


def shared_solver() -> SolverProcess:
    """The process-wide planning worker (one per gateway process, however many endpoints are mounted)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED.closed:  # an app closed it (its cleanup); a new app gets a new one
            _SHARED = SolverProcess()
        return _SHARED
