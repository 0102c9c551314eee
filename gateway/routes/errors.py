"""Errors of collection planning, each with structured fields (never match on message text)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.errors import GatewayError


def percent(fraction: float) -> str:
    """A fill fraction as a percentage, in plain decimal notation to 6 significant digits: ``0.8`` is
    ``80%``, ``0.0001`` is ``0.01%`` (``:.0%`` made it ``0%``), ``1e-7`` is ``0.00001%`` (``:g`` made it
    ``1e-05%``)."""
    return f"{Decimal(f'{fraction * 100:.6g}'):f}%"


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless n is 1: ``1 stop``, ``0 stops``, ``6 stops`` (regular nouns only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class RoutesError(GatewayError):
    """Root of every collection-planning error (a :class:`gateway.errors.GatewayError`).

    Attributes:
        reason: Machine-readable reason (``bad_input``, ``no_bins_due``, ``capacity``, ...).
        details: The error's structured fields.
        exit_code: Exit status the ``civicedge routes`` command returns for this error.
        http_status: Status the ``/api/routes/plan`` endpoint answers with.
    """

    reason = "routes"
    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description: code (the reason), message and fields."""
        out: dict[str, Any] = {"code": self.reason, "message": self.message}
        out.update({k: v for k, v in self.details.items() if v is not None})
        return out


class InvalidInputError(RoutesError, ValueError):
    """An argument or setting is malformed (date, depot, number, format).

    Attributes:
        field: Name of the offending input (e.g. ``depot``, ``date``).
        value: The value as given.
    """

    reason = "bad_input"
    http_status = 400
    exit_code = 2

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(f"invalid {field} {value!r}: {problem}", field=field, value=str(value), problem=problem)
        self.field = field
        self.value = value
        self.problem = problem


class NoBinsDueError(RoutesError):
    """No bin is full, predicted full or in alarm: there is nothing to collect.

    Attributes:
        date: Collection date asked for.
        considered: Number of bins looked at.
        threshold: Fill threshold used.
        skipped: Bins that could not be judged, as (id, reason); the message names them, since a
            bin whose sensor went quiet may well be full.
    """

    reason = "no_bins_due"
    http_status = 200
    exit_code = 3

    def __init__(self, date: str, considered: int, threshold: float,
                 skipped: tuple[tuple[str, str], ...] = ()) -> None:
        judged = considered - len(skipped)
        if judged:
            text = (f"no bins due on {date}: none of {judged} bins with data is at or above {percent(threshold)}, "
                    f"predicted to reach it before the next round, or in alarm")
        else:  # "none of 0 bins with data is at or above 80%" read as if the bins had been judged
            text = f"no bins due on {date}: no bin has fill data to judge"
        if skipped:
            shown = "; ".join(f"{b}: {why}" for b, why in skipped[:10])
            more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            text += f"; {len(skipped)} of {considered} bins skipped ({shown}{more})"
        super().__init__(text, date=date, considered=considered, threshold=threshold,
                         skipped=[list(s) for s in skipped])
        self.date = date
        self.considered = considered
        self.threshold = threshold
        self.skipped = skipped


class CapacityError(RoutesError):
    """A vehicle cannot hold even one bin's expected load.

    Attributes:
        capacity_l: Vehicle capacity in litres.
        bin_id: The bin whose load does not fit.
        load_l: That bin's expected load in litres.
    """

    reason = "capacity"
    http_status = 422
    exit_code = 4

    def __init__(self, capacity_l: float, bin_id: str, load_l: float) -> None:
        super().__init__(
            f"vehicle capacity {capacity_l:g} L is smaller than bin {bin_id}'s expected load {load_l:.0f} L",
            capacity_l=capacity_l,
            bin_id=bin_id,
            load_l=load_l,
        )
        self.capacity_l = capacity_l
        self.bin_id = bin_id
        self.load_l = load_l


class BinDataError(RoutesError):
    """The bin data source cannot be read (missing database, unknown schema).

    Attributes:
        source: Path or description of the data source.
        problem: What is wrong with it.
    """

    reason = "bin_data"
    http_status = 503
    exit_code = 5

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"cannot read bin data from {source}: {problem}", source=source, problem=problem)
        self.source = source
        self.problem = problem


class MatrixError(RoutesError):
    """A configured distance matrix is unusable (malformed CSV, missing ids, bad OSRM answer).

    Attributes:
        source: Path or URL of the matrix.
        problem: What is wrong with it.
        missing: Ids the matrix lacks, if that is the problem.
    """

    reason = "matrix"
    http_status = 400
    exit_code = 2

    def __init__(self, source: str, problem: str, missing: tuple[str, ...] = ()) -> None:
        text = f"distance matrix {source}: {problem}"
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            text += f" (missing: {shown})"
        super().__init__(text, source=source, problem=problem, missing=list(missing) or None)
        self.source = source
        self.problem = problem
        self.missing = missing


class MatrixUnreachableError(MatrixError):
    """The OSRM endpoint did not answer; callers fall back to great-circle.

    Attributes:
        timed_out: True when it accepted the connection but did not answer in time, False when it
            could not be reached at all (refused, unknown host, network down).
    """

    reason = "matrix_unreachable"

    def __init__(self, source: str, problem: str, *, timed_out: bool) -> None:
        super().__init__(source, problem)
        self.timed_out = timed_out
        self.details["timed_out"] = timed_out


class SolverError(RoutesError):
    """The routing solver returned no solution.

    Attributes:
        status: OR-Tools routing status name.
    """

    reason = "solver"
    http_status = 500
    exit_code = 6

    def __init__(self, status: str) -> None:
        super().__init__(f"routing solver found no solution (status {status})", status=status)
        self.status = status
