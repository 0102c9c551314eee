"""A local HTTP server speaking OSRM's table API (``/table/v1/{profile}/{lon,lat;...}``).

Answers road distances as 1.3 x great-circle, enforces a maximum table size like OSRM's
``--max-table-size`` (answering ``TooBig``), and can be told to answer ``null`` for one pair, or a
given value (e.g. ``1e300``) for every pair between two different places.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.routes.distances import haversine_m

DETOUR = 1.3


@dataclass
class FakeOsrm:
    """State and handler of the fake server."""

    max_table: int = 100
    null_pair: tuple[tuple[float, float], tuple[float, float]] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    off_diagonal: float | int | None = None

    async def table(self, request: web.Request) -> web.Response:
        coords = [tuple(float(x) for x in c.split(",")) for c in request.match_info["coords"].split(";")]
        if request.query.get("annotations") != "distance":
            return web.json_response({"code": "InvalidOptions", "message": "no distances asked"}, status=400)
        sources = [int(i) for i in request.query.get("sources", ";".join(map(str, range(len(coords))))).split(";")]
        dests = [int(i) for i in request.query.get("destinations", ";".join(map(str, range(len(coords))))).split(";")]
        self.requests.append({"profile": request.match_info["profile"], "n": len(coords),
                              "sources": sources, "destinations": dests})
        if len(sources) * len(dests) > self.max_table ** 2:
            return web.json_response({"code": "TooBig", "message": "Too many table coordinates"}, status=400)
        rows: list[list[float | None]] = []
        for s in sources:
            row: list[float | None] = []
            for d in dests:
                (lon1, lat1), (lon2, lat2) = coords[s], coords[d]
                if self.null_pair == ((lon1, lat1), (lon2, lat2)):
                    row.append(None)
                elif self.off_diagonal is not None and (lon1, lat1) != (lon2, lat2):
                    row.append(self.off_diagonal)
                else:
                    row.append(round(DETOUR * haversine_m(lat1, lon1, lat2, lon2), 1))
            rows.append(row)
        return web.json_response({"code": "Ok", "distances": rows})


async def _not_json(request: web.Request) -> web.Response:
    return web.Response(text="<html>oops</html>")


async def start_fake_osrm(fake: FakeOsrm) -> tuple[web.AppRunner, str]:
    """Start the server on a free local port; return its runner and base URL."""
    app = web.Application()
    app.router.add_get("/table/v1/{profile}/{coords}", fake.table)
    app.router.add_get("/broken/table/v1/{profile}/{coords}", _not_json)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def closed_port() -> int:
    """A local port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
