"""Distances between the depot and the stops: great-circle, a CSV matrix, or an OSRM table.

Great-circle works offline and is the default. A city that runs OSRM (or anything speaking its
``/table/v1/{profile}/`` API) or keeps a road matrix in a CSV file gets road distances. All
matrices are whole metres, ``matrix[i][j]`` = from point i to point j (may be asymmetric).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import numbers
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np

from gateway.routes.errors import MatrixError, MatrixUnreachableError, counted
from gateway.routes.csv_text import CsvTextError, csv_table, decode_csv_bytes, number_text
from gateway.routes.parsing import ascii_float, separator_hint, thousands_problem
from gateway.small_files import MIB, FileTooLargeError, read_limited

logger = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8
#: Id of the depot in a CSV matrix.
DEPOT_ID = "depot"
#: Longest distance between two places a CSV matrix or an OSRM table may give, in metres (1 000 km).
#: A collection leg is a few kilometres; a cell of 1e15 or 1e300 is a unit or export error, and the
#: solver adds distances and drop penalties up in 64-bit integers (see ``gateway.routes.solver``).
MAX_DISTANCE_M = 1_000_000
#: Longest great-circle distance (half the Earth's circumference, ~20 016 km, rounded up): any
#: matrix the planner hands the solver holds distances of at most this many metres.
MAX_GREAT_CIRCLE_M = 20_100_000
#: Largest CSV matrix file read. A plan of 4,000 bins (the largest docs/routes.md describes) needs a
#: matrix of 4,001 x 4,001 cells: about 100 MB with cells of 5 digits, 160 MB with 1 000 000.5 in
#: every cell; 256 MiB holds it with cells of up to 15 characters (and extra places the file may have).
MATRIX_MAX = 256 * MIB


def require_numpy() -> None:
    """Check that numpy (the ``routes`` extra, with OR-Tools) can be imported, before the planner uses it.

    numpy is imported by the functions that compute, not with this module: the gateway imports the
    routes package at start, and only the planning worker computes.

    Raises:
        SolverUnavailableError: numpy cannot be imported (the plan answers 503 ``solver_unavailable``,
            ``routes plan`` exits 7, as without OR-Tools).
    """
    try:
        import numpy  # noqa: F401
    except ImportError as exc:
        from gateway.routes.solver import SolverUnavailableError  # solver imports this module

        raise SolverUnavailableError("numpy", str(exc) or type(exc).__name__) from exc


@dataclass(frozen=True, slots=True)
class Place:
    """A point of the matrix: the depot (id ``depot``) or a bin (its device id)."""

    id: str
    lat: float
    lon: float


class DistanceProvider(Protocol):
    """Anything that turns places into a distance matrix in metres."""

    @property
    def description(self) -> str:
        """Human-readable source, shown in plans."""
        ...

    def matrix(self, places: Sequence[Place]) -> list[list[int]]:
        """Return the square matrix of distances in metres between ``places``."""
        ...


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance in metres between two WGS84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


_CHECKED = object()  # only this module's checks may make a CheckedMatrix


class CheckedMatrix(list[list[int]]):
    """A distance matrix known to be square whole metres from 0 to :data:`MAX_GREAT_CIRCLE_M`:
    :func:`check_matrix` passes it through unchecked, so the planner checks a matrix once, not again
    in the solver (on 4000 bins each check of the 16 million cells took seconds).

    Made only by :func:`check_matrix` and the great-circle provider (a private token): built from
    anything else, it would let unchecked cells past the bounds the solver's sums rely on.

    Raises:
        TypeError: Made outside this module.
    """

    def __init__(self, rows: Iterable[list[int]] = (), *, token: object = None) -> None:
        if token is not _CHECKED:
            raise TypeError("a CheckedMatrix is made by check_matrix() or build_matrix() only")
        super().__init__(rows)


def great_circle_m(lats: Sequence[float], lons: Sequence[float]) -> np.ndarray:
    """Haversine distances in metres between every pair of points, rounded to whole metres (int64).

    Vectorised: the pure-Python pairwise loop took ~20 s for 2500 bins, this about 1 s.

    Raises:
        MatrixError: A coordinate is NaN or infinite.
    """
    require_numpy()
    import numpy as np  # here, not at module level: the gateway imports routes, only the planner computes

    lat_deg, lon_deg = np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64)
    if not (np.isfinite(lat_deg).all() and np.isfinite(lon_deg).all()):  # cast to int64, NaN became INT64_MIN
        raise MatrixError("great-circle", "a place has no valid latitude/longitude (NaN or infinite)")
    half_lat = np.radians(lat_deg) / 2
    half_lon = np.radians(lon_deg) / 2
    # sin((x2 - x1) / 2) as sin x2 cos x1 - cos x2 sin x1 over half angles: outer products, no
    # trigonometry on the n x n cells but the final arcsin
    s_lat, c_lat = np.sin(half_lat), np.cos(half_lat)
    s_lon, c_lon = np.sin(half_lon), np.cos(half_lon)
    cos_lat = np.cos(2 * half_lat)
    a = np.multiply.outer(c_lat, s_lat)
    a -= np.multiply.outer(s_lat, c_lat)
    a *= a
    dl = np.multiply.outer(c_lon, s_lon)
    dl -= np.multiply.outer(s_lon, c_lon)
    dl *= dl
    dl *= np.multiply.outer(cos_lat, cos_lat)
    a += dl
    del dl
    np.sqrt(a, out=a)
    np.minimum(a, 1.0, out=a)
    np.arcsin(a, out=a)
    a *= 2 * EARTH_RADIUS_M
    metres: np.ndarray = np.rint(a).astype(np.int64)
    return metres


class GreatCircle:
    """Great-circle distances (offline, the default)."""

    description = "great-circle"

    def matrix(self, places: Sequence[Place]) -> list[list[int]]:
        """Return rounded haversine distances in metres (at most half the Earth's circumference, so
        already within the solver's bounds: a :class:`CheckedMatrix`)."""
        if not places:
            return CheckedMatrix(token=_CHECKED)
        d = great_circle_m([p.lat for p in places], [p.lon for p in places])
        return CheckedMatrix(d.tolist(), token=_CHECKED)


class CsvMatrix:
    """A road distance matrix from a CSV file.

    Format: the first row is ``id`` followed by place ids; each further row is a place id
    followed by the distances in metres from it to the header's places. The depot's id is
    ``depot``. Extra places are allowed; every planned place must be present. UTF-8, with or
    without a byte order mark; cells separated by commas, or by ``;`` when the header's first cell
    is ``id`` (German Excel): then a cell may have a decimal comma (``1500,5``), and ``1.500`` (a
    thousands separator) is refused rather than read as 1.5 m.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.description = f"CSV matrix {self.path}"
        self._rows = self._load()

    def _load(self) -> dict[str, dict[str, float]]:
        src = str(self.path)
        try:  # regular files only, bounded: a FIFO hung `routes plan --matrix` (and the gateway's [routes] matrix)
            data = read_limited(self.path, MATRIX_MAX)
        except FileTooLargeError as exc:
            raise MatrixError(src, f"cannot read file ({exc.strerror}: a matrix of 4,000 bins and the depot "
                                   "takes about 100 MB)") from exc
        except OSError as exc:
            raise MatrixError(src, f"cannot read file ({exc.strerror or exc})") from exc
        try:
            table, sep = csv_table(decode_csv_bytes(data))
        except CsvTextError as exc:
            raise MatrixError(src, str(exc)) from None
        del data
        if len(table) < 2:
            raise MatrixError(src, "needs a header row and at least one data row")
        header = [c.strip() for c in table[0][1:]]
        if not header:
            raise MatrixError(src, f"header row names no place ids{separator_hint(table[0])}")
        if len(set(header)) != len(header) or any(not h for h in header):
            raise MatrixError(src, "header has empty or duplicate place ids")
        rows: dict[str, dict[str, float]] = {}
        for lineno, row in enumerate(table[1:], start=2):
            rid = row[0].strip()
            if len(row) - 1 != len(header):
                raise MatrixError(src, f"line {lineno}: {len(row) - 1} distances for {len(header)} columns")
            if rid in rows:
                raise MatrixError(src, f"line {lineno}: duplicate row id {rid!r}")
            values: dict[str, float] = {}
            for col, cell in zip(header, row[1:]):
                if sep == ";" and (problem := thousands_problem(cell)) is not None:
                    raise MatrixError(src, f"line {lineno}, column {col!r}: {problem}")
                try:
                    value = ascii_float(number_text(cell, sep))  # ASCII digits only, as every number the planner reads
                except ValueError:
                    raise MatrixError(src, f"line {lineno}, column {col!r}: {cell!r} is not a number") from None
                if not math.isfinite(value) or value < 0:
                    raise MatrixError(src, f"line {lineno}, column {col!r}: {cell!r} is not a distance >= 0")
                if value > MAX_DISTANCE_M:
                    raise MatrixError(src, f"line {lineno}, column {col!r}: {cell!r} m is more than the "
                                           f"{MAX_DISTANCE_M // 1000:,} km a leg may be (metres, not millimetres?)")
                values[col] = value
            rows[rid] = values
        return rows

    def matrix(self, places: Sequence[Place]) -> list[list[int]]:
        """Return the sub-matrix for ``places``.

        Raises:
            MatrixError: A place is not in the file.
        """
        cols = set(next(iter(self._rows.values())).keys())
        missing = tuple(p.id for p in places if p.id not in self._rows or p.id not in cols)
        if missing:
            raise MatrixError(str(self.path), "places not in the matrix", missing)
        return [[round(self._rows[a.id][b.id]) for b in places] for a in places]


class OsrmTable:
    """Road distances from an OSRM-compatible ``/table/v1/{profile}/`` endpoint.

    Large tables are fetched in blocks of ``block`` sources × ``block`` destinations, each
    request carrying only the coordinates it needs (OSRM limits table size, 100 by default).
    """

    def __init__(self, base_url: str, *, profile: str = "driving", timeout_s: float = 10.0, block: int = 100) -> None:
        shape = "OSRM URL must be http(s)://host[:port][/prefix]"
        bad = next((c for c in base_url if c.isspace() or not c.isprintable()), None)
        if bad is not None:  # http.client refuses it only at the first request, after validation passed
            raise MatrixError(base_url, f"{shape}, without spaces or control characters (found {bad!r})")
        if "?" in base_url or "#" in base_url:  # the table path would land inside the query or fragment
            raise MatrixError(base_url, f"{shape}, without a query (?) or fragment (#)")
        try:  # urlparse and .port raise ValueError for a bad IPv6 host or port (http://[::1, http://h:99999)
            parsed = urllib.parse.urlparse(base_url)
            host, netloc, scheme = parsed.hostname, parsed.netloc, parsed.scheme
        except ValueError as exc:
            raise MatrixError(base_url, f"{shape} ({exc})") from None
        if scheme not in ("http", "https") or not netloc or not host:
            raise MatrixError(base_url, shape)
        try:
            port = parsed.port
        except ValueError:
            raise MatrixError(base_url, "OSRM URL has an invalid port (must be 1 to 65535)") from None
        if port == 0:
            raise MatrixError(base_url, "OSRM URL has an invalid port (must be 1 to 65535)")
        if block < 1:
            raise MatrixError(base_url, f"block size must be >= 1, got {block}")
        self.base_url = base_url.rstrip("/")
        self.profile = profile
        self.timeout_s = timeout_s
        self.block = block
        self.description = f"OSRM {self.base_url}"
        self.null_pairs = 0

    def _fetch(self, coords: list[Place], sources: list[int], destinations: list[int]) -> list[list[float | None]]:
        path = ";".join(f"{p.lon:.6f},{p.lat:.6f}" for p in coords)
        query = urllib.parse.urlencode({
            "sources": ";".join(map(str, sources)),
            "destinations": ";".join(map(str, destinations)),
            "annotations": "distance",
        })
        url = f"{self.base_url}/table/v1/{self.profile}/{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            raise MatrixError(self.base_url, f"HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            timed_out = isinstance(reason, (socket.timeout, TimeoutError))
            what = f"no answer within {self.timeout_s:g} s" if timed_out else "unreachable"
            raise MatrixUnreachableError(self.base_url, f"{what} ({reason})", timed_out=timed_out) from exc
        except (http.client.HTTPException, ValueError) as exc:
            # a URL the constructor let through but http.client refuses (InvalidURL), or an answer
            # that is not HTTP: a MatrixError, so the plan falls back to great-circle, not a 500
            raise MatrixError(self.base_url, f"request failed ({type(exc).__name__}: {exc})") from exc
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise MatrixError(self.base_url, "answer is not JSON") from exc
        if not isinstance(data, dict) or data.get("code") != "Ok":
            code = data.get("code") if isinstance(data, dict) else None
            raise MatrixError(self.base_url, f"answer code {code!r}, expected 'Ok'")
        table = data.get("distances")
        if (not isinstance(table, list) or len(table) != len(sources)
                or any(not isinstance(r, list) or len(r) != len(destinations) for r in table)):
            raise MatrixError(self.base_url, f"'distances' is not a {len(sources)}x{len(destinations)} table")
        for row in table:
            for v in row:
                if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
                                      or not math.isfinite(v)):
                    raise MatrixError(self.base_url, f"'distances' holds {v!r}, not a distance")
                if v is not None and v > MAX_DISTANCE_M:
                    raise MatrixError(self.base_url, f"'distances' holds {v!r} m, more than the "
                                                     f"{MAX_DISTANCE_M // 1000:,} km a leg may be")
        return table

    def matrix(self, places: Sequence[Place]) -> list[list[int]]:
        """Return road distances; pairs OSRM cannot route (null) get the great-circle distance.

        Raises:
            MatrixUnreachableError: The endpoint did not answer.
            MatrixError: The endpoint answered something unusable.
        """
        n = len(places)
        out = [[0] * n for _ in range(n)]
        self.null_pairs = 0
        blocks = [list(range(s, min(n, s + self.block))) for s in range(0, n, self.block)]
        for src in blocks:
            for dst in blocks:
                idx = sorted(set(src) | set(dst))
                local = {g: i for i, g in enumerate(idx)}
                table = self._fetch([places[g] for g in idx], [local[g] for g in src], [local[g] for g in dst])
                for si, g_src in enumerate(src):
                    for di, g_dst in enumerate(dst):
                        value = table[si][di]
                        if value is None:
                            self.null_pairs += 1
                            a, b = places[g_src], places[g_dst]
                            value = haversine_m(a.lat, a.lon, b.lat, b.lon)
                        out[g_src][g_dst] = round(value)
        if self.null_pairs:
            logger.warning("OSRM could not route %s; used great-circle for %s", counted(self.null_pairs, "pair"),
                           "it" if self.null_pairs == 1 else "them")
        return out


def build_matrix(provider: DistanceProvider, places: Sequence[Place]) -> tuple[list[list[int]], str, list[str]]:
    """Compute the matrix, falling back to great-circle when an OSRM endpoint fails.

    CSV problems are the operator's own file and stay errors; an OSRM endpoint is a remote
    service, so when it is down or answers garbage the plan is still made, with a warning.

    Returns:
        (matrix, description of the source actually used, warnings).

    Raises:
        MatrixError: A CSV matrix is unusable.
    """
    warnings: list[str] = []
    try:
        matrix = provider.matrix(places)
    except MatrixError as exc:
        if not isinstance(provider, OsrmTable):
            raise
        text = f"{exc.message}; falling back to great-circle distances"
        logger.warning("%s", text)
        warnings.append(text)
        return check_matrix(GreatCircle().matrix(places), "great-circle", len(places)), f"great-circle (fallback: {provider.description} failed)", warnings
    matrix = check_matrix(matrix, provider.description, len(places))
    if isinstance(provider, OsrmTable) and provider.null_pairs:
        n = provider.null_pairs
        warnings.append(f"OSRM could not route {counted(n, 'pair')}; great-circle used for {'it' if n == 1 else 'them'}")
    return matrix, provider.description, warnings


def matrix_array(provider: DistanceProvider, places: Sequence[Place]) -> tuple[np.ndarray, str, list[str]]:
    """As :func:`build_matrix`, as a checked n x n ``int32`` array (distances are at most
    :data:`MAX_GREAT_CIRCLE_M` < 2**31): 4 bytes a cell where a list of Python ints takes ~40, so a
    4,000-bin plan does not hold ~600 MB of ints while OR-Tools searches. Great-circle distances never
    become a list; other providers' lists are dropped once copied.

    Raises:
        MatrixError: A CSV matrix is unusable.
    """
    require_numpy()
    import numpy as np  # here, not at module level: the gateway imports routes, only the planner computes

    if type(provider) is GreatCircle and places:  # exactly the built-in one: a subclass may override matrix()
        metres = great_circle_m([p.lat for p in places], [p.lon for p in places])
        return metres.astype(np.int32), provider.description, []
    matrix, source, warnings = build_matrix(provider, places)
    n = len(places)
    return np.array(matrix, dtype=np.int32).reshape(n, n), source, warnings


def checked_array(matrix: Sequence[Sequence[object]] | np.ndarray, source: str, n: int) -> np.ndarray:
    """``matrix`` checked as :func:`check_matrix` does (the same errors), as an n x n ``int32`` array.

    An array of an integer dtype is checked whole (shape, range) without a list; any other input goes
    through :func:`check_matrix` (a bool or fractional array too, so its bad cell is named).

    Raises:
        MatrixError: Wrong shape, or a value that is not a whole number of metres in range.
    """
    require_numpy()
    import numpy as np  # here, not at module level: the gateway imports routes, only the planner computes

    if isinstance(matrix, np.ndarray) and matrix.dtype.kind in "iu" and matrix.ndim == 2:
        if matrix.shape != (n, n):
            raise MatrixError(source, f"must be {n}x{n} (depot + bins)")
        if matrix.size and (int(matrix.min()) < 0 or int(matrix.max()) > MAX_GREAT_CIRCLE_M):
            i, j = np.argwhere((matrix < 0) | (matrix > MAX_GREAT_CIRCLE_M))[0]
            raise MatrixError(source, f"distance [{i}][{j}] = {int(matrix[i, j])} is not whole metres from 0 to "
                                      f"{MAX_GREAT_CIRCLE_M}")
        return matrix.astype(np.int32, copy=False)
    rows = matrix.tolist() if isinstance(matrix, np.ndarray) else matrix
    return np.array(check_matrix(rows, source, n), dtype=np.int32).reshape(n, n)


def whole_metres(value: object) -> int | None:
    """``value`` as an int when it is a whole number of metres from 0 to :data:`MAX_GREAT_CIRCLE_M`
    (an int or other :class:`numbers.Integral` such as numpy's, or a whole float such as ``1500.0``),
    else None (a bool, a fraction of a metre, NaN, out of range, not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        whole = int(value)
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        whole = int(value)
    else:
        return None
    return whole if 0 <= whole <= MAX_GREAT_CIRCLE_M else None


def check_matrix(matrix: Sequence[Sequence[object]], source: str, n: int) -> list[list[int]]:
    """Check that ``matrix`` is n x n whole metres within 0 .. :data:`MAX_GREAT_CIRCLE_M`; return it as ints.

    The built-in providers bound their values where they read them; this guards any other
    :class:`DistanceProvider` so the solver's 64-bit sums cannot overflow. Whole floats (``1500.0``)
    and any integral type are accepted and returned as int. A :class:`CheckedMatrix` of the right
    size was checked before and is returned as it is; anything else is checked once and returned as
    a :class:`CheckedMatrix` (rows of plain ints are checked a row at a time, not cell by cell).

    Raises:
        MatrixError: Wrong shape, or a value that is not a whole number of metres in range.
    """
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise MatrixError(source, f"must be {n}x{n} (depot + bins)")
    if isinstance(matrix, CheckedMatrix):
        return matrix
    out = CheckedMatrix(token=_CHECKED)
    for i, row in enumerate(matrix):
        if isinstance(row, list) and set(map(type, row)) <= {int} and \
                (not row or (min(row) >= 0 and max(row) <= MAX_GREAT_CIRCLE_M)):
            out.append(row)  # plain ints in range: the common case, checked at C speed
            continue
        ints: list[int] = []
        for j, v in enumerate(row):
            whole = whole_metres(v)
            if whole is None:
                raise MatrixError(source, f"distance [{i}][{j}] = {v!r} is not whole metres from 0 to "
                                          f"{MAX_GREAT_CIRCLE_M}")
            ints.append(whole)
        out.append(ints)
    return out
