"""Open-data endpoints: NGSI-LD entities (normalized / keyValues), CSV and GeoJSON."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.errors import GatewayError
from gateway.web import export, ngsi, params
from gateway.web.context import ctx_of, json_response
from gateway.web.errors import NotFound

logger = logging.getLogger(__name__)
ROUTES = web.RouteTableDef()
LD_JSON = "application/ld+json"
GEO_JSON = "application/geo+json"
ENTITY_TYPES = ("Streetlight", "WasteContainer")
CSV_MAX_RANGE_S = 31 * 86400
CSV_SLICE_S = 86400


def _options(request: web.Request) -> bool:
    """True for keyValues (NGSI-LD ``options=keyValues``; ``simplified`` is its alias)."""
    opt = params.parse_choice(request.query, "options", ("normalized", "keyValues", "simplified"), default="normalized")
    return opt in ("keyValues", "simplified")


@ROUTES.get("/opendata")
async def index(request: web.Request) -> web.Response:
    """What is published, where, and how device fields map onto the Smart Data Models."""
    params.reject_unknown(request.query, ())
    return json_response({
        # Where each format is: every URL is literal and answers as is (a placeholder such as ``to=``
        # would be refused with 400); the query parameters, all optional, are in "parameters".
        # NGSI-LD's type list is comma-separated.
        "formats": {
            "ngsi-ld": "/opendata/ngsi-ld/v1/entities?type=Streetlight,WasteContainer&options=keyValues",
            "csv": "/opendata/readings.csv",
            "geojson": "/opendata/devices.geojson",
        },
        "parameters": {
            "ngsi-ld": {
                "type": "Streetlight, WasteContainer, or a comma list of them: entities of any listed type"
                        " (default: all)",
                "options": "normalized (default), keyValues, or simplified (= keyValues)",
            },
            "csv": {
                "from": "start, unix seconds or ISO 8601 (default: 24 h before to)",
                "to": "end, exclusive (default: now); at most 31 days after from",
                "field": "comma list of field names (default: all)",
                "zone": "zone name (default: all)",
            },
        },
        "models": {
            "Streetlight": "https://github.com/smart-data-models/dataModel.Streetlighting/tree/master/Streetlight",
            "WasteContainer": "https://github.com/smart-data-models/dataModel.WasteManagement/tree/master/WasteContainer",
        },
        "mapping": ngsi.describe_mapping(),
        "transparency": "/transparency",
    })


@ROUTES.get("/opendata/ngsi-ld/v1/entities")
async def entities(request: web.Request) -> web.Response:
    """NGSI-LD entities of all publishable devices; ``type`` filters (one type or a comma list: any of
    them, as NGSI-LD queries); ``options=keyValues``."""
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("type", "options"))
    etypes = params.parse_choice_list(q, "type", ENTITY_TYPES)
    items = ngsi.entities(await ctx.fleet.devices(), key_values=_options(request), entity_types=etypes)
    return json_response(items, content_type=LD_JSON)


@ROUTES.get("/opendata/ngsi-ld/v1/entities/{entity_id}")
async def entity(request: web.Request) -> web.Response:
    """One NGSI-LD entity by its URN (``urn:ngsi-ld:Streetlight:<device>``)."""
    ctx = ctx_of(request)
    params.reject_unknown(request.query, ("options",))
    wanted = request.match_info["entity_id"]
    for dev in ngsi.publishable(await ctx.fleet.devices()):
        if ngsi.entity_id(ngsi.ENTITY_TYPE_BY_KIND[dev.kind], dev.id) == wanted:
            return json_response(ngsi.device_entity(dev, key_values=_options(request)), content_type=LD_JSON)
    raise NotFound(f"no published entity '{wanted}'", code="unknown_entity", param="entity_id")


def day_slices(since: int, until: int) -> list[tuple[int, int]]:
    """``[since, until)`` cut at UTC midnights: the slices a CSV export reads one at a time."""
    edges = [since] + list(range(since - since % CSV_SLICE_S + CSV_SLICE_S, until, CSV_SLICE_S)) + [until]
    return list(zip(edges[:-1], edges[1:]))


def _client_gone(request: web.Request) -> bool:
    """True once the client's connection is closed or closing (nothing more can reach it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


@ROUTES.get("/opendata/readings.csv")
async def readings_csv(request: web.Request) -> web.StreamResponse:
    """Released values per device, UTC hour and field as CSV (default: the last 24 h, at most 31 days).

    The store is read one UTC day at a time on a worker thread, aggregated there, and each day's
    rows are sent before the next day is read: a request's work and memory are bounded by one day,
    and a client that reads slowly holds back only its own export. A client that goes away
    (``curl ... | head``) ends the export quietly at the next day; HEAD gets the headers only.
    """
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("from", "to", "field", "zone"))
    since, until = params.parse_range(q, now=ctx.now(), default_s=86400, max_s=CSV_MAX_RANGE_S)
    fields = params.parse_fields(q, ctx.known_fields())
    zone = params.parse_zone(q)
    response = web.StreamResponse(headers={"Content-Disposition": 'inline; filename="civicedge-readings.csv"'})
    response.content_type = "text/csv"
    response.charset = "utf-8"
    if request.method == "HEAD":
        return response  # aiohttp sends the headers; a HEAD answer has no body, so nothing is read
    published = [d.id for d in ngsi.publishable(await ctx.fleet.devices())]
    header = True
    try:
        for lo, hi in day_slices(since, until):
            if _client_gone(request):
                logger.debug("readings.csv: client went away before %s; export ended", lo)
                return response
            try:
                groups = await ctx.fleet.device_hours(since=lo, until=hi, devices=published, fields=fields,
                                                      zone=zone)
                text = export.rows_to_csv(export.device_hour_rows(groups, ctx.policy), header=header)
            except Exception as exc:
                if not response.prepared:
                    raise  # nothing sent yet: the client gets the JSON error
                # Rows were sent already: end the connection without the closing chunk, so the client
                # sees a cut-off transfer rather than a complete-looking CSV with days missing.
                if isinstance(exc, GatewayError):
                    logger.error("readings.csv cut off at %s: %s (%s)", lo, type(exc).__name__, exc.reason)
                else:
                    logger.exception("readings.csv cut off at %s by an unexpected error", lo)
                raise ConnectionAbortedError("CSV export failed after rows were sent") from None
            header = False
            if not response.prepared:
                await response.prepare(request)
            await response.write(text.encode("utf-8"))
        await response.write_eof()
    except ConnectionResetError:
        # The client hung up mid-export (aiohttp's ClientConnectionResetError): an everyday event on a
        # public endpoint, not a server error; aiohttp ends the response without logging it.
        logger.debug("readings.csv: client went away during the export")
    return response


@ROUTES.get("/opendata/devices.geojson")
async def devices_geojson(request: web.Request) -> web.Response:
    """Publishable devices as a GeoJSON FeatureCollection with their latest public values."""
    params.reject_unknown(request.query, ())
    return json_response(export.devices_geojson(await ctx_of(request).fleet.devices()), content_type=GEO_JSON)
