"""Open-data endpoints: NGSI-LD entities (normalized / keyValues), CSV and GeoJSON."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from email.utils import formatdate
from typing import Any, Awaitable, Callable, Collection, Mapping, Sequence

from aiohttp import web

from gateway.errors import GatewayError, StorageError
from gateway.log_limit import LogLimiter, more_since
from gateway.web import catalogue, export, liveness, ngsi, opendata_budget, opendata_page, pages, params, publication
# The open data's metadata (``[opendata]``) lives with the catalogue; re-exported for the app and the gateway.
from gateway.web.accept import gzip_allowed, weighted
from gateway.web.catalogue import GEO_JSON, LD_JSON, NOT_SET, OPEN_DATA_META_KEY, OpenDataMeta, meta_of
from gateway.web.context import COMPRESS_MIN_BYTES, WebContext, ctx_of, etag_matches
from gateway.web.errors import BadParameter, NotFound, Unavailable, WebError
from gateway.web.views import DeviceView

__all__ = ["NOT_SET", "OPEN_DATA_META_KEY", "ROUTES", "OpenDataMeta", "meta_of"]
logger = logging.getLogger(__name__)
ROUTES = web.RouteTableDef()
CSV_MAX_RANGE_S = 31 * 86400
CSV_DEFAULT_RANGE_S = 86400
CSV_SLICE_S = 86400
HOUR_S = 3600
# Open data changes only at publication marks (module publication: quarter hours, the CSV at hh:05):
# a minute of caching spares the gateway a map that polls every few seconds, and delays a mark little.
CACHE_CONTROL = "public, max-age=60"
# The default 'to' of the CSV is this long before now: a row appears when its period ends, but the
# report completing it arrives a little after that (devices send at the window's end, then the radio
# and the batch writer). A row the default range shows is complete unless a report is later than this.
INGEST_LAG_S = 300
# A catalogue answered without the store (:func:`_catalogue`) is logged at most this often.
STORE_LOG_LIMIT = LogLimiter(10.0, time.monotonic)
HTML = "text/html"
# Every open-data answer varies with both: media type (Accept) and gzip or not (Accept-Encoding).
VARY = "Accept, Accept-Encoding"


class NotAcceptable(WebError):
    """406: the ``Accept`` header allows none of the endpoint's media types."""

    status = 406


def negotiate(request: web.Request, offered: Sequence[str]) -> str:
    """The media type to answer with: of ``offered``, the one the ``Accept`` header rates highest
    (by q, then an exact range over ``type/*`` over ``*/*``, then the order of ``offered``); the first
    when there is no ``Accept``. 406 ``not_acceptable`` when the header allows none of them."""
    header = request.headers.get("Accept", "").strip()
    if not header:
        return offered[0]
    ranges = weighted(header)
    candidates = []
    for i, media in enumerate(offered):
        # The most specific range that matches a type decides its q (RFC 9110 12.5.1): text/csv;q=0, */*
        # refuses CSV.
        matching = [(2 if rng == media else 1 if rng == media.split("/")[0] + "/*" else 0, q)
                    for rng, q in ranges if rng in (media, media.split("/")[0] + "/*", "*/*")]
        if matching:
            exactness, q = max(matching)
            if q > 0:
                candidates.append((q, exactness, -i, media))
    if not candidates:
        raise NotAcceptable(f"this resource is served as {' or '.join(offered)}; the Accept header allows none of"
                            " them", code="not_acceptable", param="Accept")
    return max(candidates)[3]


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def accepts_gzip(request: web.Request) -> bool:
    """``Accept-Encoding`` of ``request`` allows gzip (:func:`gateway.web.accept.gzip_allowed`: the same rule
    as the JSON answers)."""
    return gzip_allowed(request.headers.get("Accept-Encoding", ""))


def gzip_etag(etag: str) -> str:
    """The ETag of the gzip-encoded form of the representation ``etag`` names: ``"<hash>-gzip"``
    (``W/`` kept). A content coding makes another representation (RFC 9110 8.8.3): a cache that stored
    both must not answer a 304 for one with the other's body."""
    return etag[:-1] + '-gzip"'


def _licence_link(request: web.Request) -> dict[str, str]:
    """``Link: <licence URL>; rel="license"`` (RFC 8288, the IANA ``license`` relation) when a licence
    is configured: the place a licence has in formats without a metadata field (CSV, NGSI-LD)."""
    url = meta_of(request).licence_url()
    return {"Link": f'<{url}>; rel="license"'} if url is not None else {}


def _cache_headers(etag: str, last_modified: float | None) -> dict[str, str]:
    """Cache-Control, ETag, Vary and Last-Modified of an open-data answer (200 and 304 alike).

    ``Vary: Accept, Accept-Encoding``: the answer's media type depends on Accept, and a shared cache must
    not give a client asking for CSV or JSON-LD what another got for ``application/json``; its content
    coding on Accept-Encoding (:func:`accepts_gzip`; each coding has its own ETag). ``Last-Modified`` is
    rounded down to the minute: a report's arrival to the second would date an alarm, sent at once,
    finer than the device's minute rounding. It is never later than the wall clock's now (the
    ``Date`` the answer carries; under a simulated clock, [sim_clock], times can be ahead of it)."""
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag, "Vary": VARY}
    if last_modified is not None:
        ts = int(min(last_modified, time.time()))
        headers["Last-Modified"] = _http_date(ts - ts % 60)
    return headers


def _last_modified(devices: Sequence[DeviceView], policy: Mapping[str, Any]) -> float | None:
    """The newest time the answer made of ``devices`` shows: the end of a value's period (its
    ``observedAt``), the public time of an open alarm that decides a ``status`` (as the entities date
    it, :func:`gateway.web.ngsi.status_alarm_time`: the start of the mark step holding it, never its
    minute) or a lamp change; None when there is none. An alarm no entity shows (a tip under a fire, a
    kind's alarm without a status) is not counted: it would date what the body hides. Not the arrival
    time of a report (a public arrival time dates an alarm to the second); taken from the fleet
    snapshot the answer is made of, so no store read."""
    times = [t for d in devices for t in d.latest_at.values()]
    period_s = ngsi.alarm_period_s(policy)
    times += [t for d in devices if (t := ngsi.status_alarm_time(d, period_s)) is not None]
    times += [d.lamp_changed_at for d in devices if d.lamp_changed_at is not None]
    return float(max(times)) if times else None


async def _json_answer(request: web.Request, data: Any, content_type: str, *,
                       last_modified: float | None = None, cache_control: str = CACHE_CONTROL,
                       headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer with caching headers (:func:`_answer`; ``headers``: more headers)."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _answer(request, body, content_type, last_modified=last_modified, cache_control=cache_control,
                   headers=headers)


def _answer(request: web.Request, body: bytes, content_type: str, *, last_modified: float | None = None,
            cache_control: str = CACHE_CONTROL, headers: Mapping[str, str] | None = None) -> web.Response:
    """An answer of ``body`` (UTF-8 text) with caching headers: its ``ETag`` is the hash of the body, the
    media type and the headers that describe it (``headers`` and the licence ``Link``), so it changes with
    any change of content, a new report or a registry change alike, the same body as ``application/json``
    and ``application/ld+json`` are two representations, and so are the same catalogue in ``de-DE`` and
    ``de-AT`` (one ``dct:language``, two ``Content-Language``); 304 when ``If-None-Match`` has it.
    ``headers``: more headers of the 200 (a page's CSP, the catalogue's Content-Language).

    A body of :data:`COMPRESS_MIN_BYTES` or more is sent gzip-encoded to a client that accepts it
    (:func:`accepts_gzip`), as the other JSON answers are, with its own ETag (:func:`gzip_etag`): the
    ETag a client got back is the one its ``If-None-Match`` is compared with, so each form gets its 304.
    """
    described = {**_licence_link(request), **(headers or {})}
    # One line per header before the body (sorted, so the ETag does not depend on the order they are given in).
    head = "".join("%s: %s\n" % (name, value) for name, value in sorted(described.items()))
    etag = '"%s"' % hashlib.sha256(content_type.encode() + b"\n" + head.encode() + b"\n" + body).hexdigest()[:32]
    gzipped = len(body) >= COMPRESS_MIN_BYTES and accepts_gzip(request)
    if gzipped:
        etag = gzip_etag(etag)
    cache = _cache_headers(etag, last_modified)
    cache["Cache-Control"] = cache_control
    cache.update(described)
    if etag_matches(request, etag):
        # The 304's headers replace the stored ones in a browser's cache: the page's CSP goes with it
        # (else the app's default CSP refuses the page's inline style after a revalidation).
        return web.Response(status=304, headers=cache)
    response = web.Response(body=body, content_type=content_type, charset="utf-8", headers=cache)
    if gzipped:
        # aiohttp compresses when the answer is prepared (a large body on its executor, not the loop).
        response.enable_compression(web.ContentCoding.gzip)
    return response


def warn_unpublished(policy: Mapping[str, Any]) -> ngsi.Plan:
    """What the entities publish of each kind of ``policy`` (:func:`gateway.web.ngsi.plan`), with one
    WARNING per kind that is not fully published, logged once per process. Meant for the app's start;
    every open-data answer made of the plan calls it too, so the warning is logged at the latest with
    the first of them."""
    return ngsi.warn_unpublished(policy)


def _stale(request: web.Request, devices: Sequence[DeviceView]) -> frozenset[str]:
    """The silent devices among ``devices`` (as published) at the entities' last publication mark, by
    the rule ``/api/devices`` calls "stale": judged now, a device would turn stale its last report's
    arrival plus three windows later, to the second (module publication)."""
    ctx = ctx_of(request)
    # The mark the published devices are as of, held while the clock is behind the stored reports.
    mark = publication.entity_mark(ctx.now(), step=publication.entity_mark_s(ctx.policy))
    now = max(mark, ctx.fleet.published_mark())
    return liveness.stale_ids(devices, now=now, policy=ctx.policy)


def _options(request: web.Request) -> bool:
    """True for keyValues (NGSI-LD ``options=keyValues``; ``simplified`` is its alias)."""
    opt = params.parse_choice(request.query, "options", ("normalized", "keyValues", "simplified"), default="normalized")
    return opt in ("keyValues", "simplified")


async def _catalogue(request: web.Request) -> catalogue.Catalogue:
    """What the catalogue says now: from ``[opendata]``, the policy and retention in force, the
    published devices (the fleet snapshot the entities are made of, as of their last publication
    mark, so no store read and no change between marks) and where the reports published at that
    mark begin (one index lookup per mark).

    A report store that cannot be read (damaged, gone, timed out) leaves the catalogue without what
    is made of the published data (``modified``, ``spatial``, ``temporal``), said in its ``unavailable``
    (:meth:`gateway.web.catalogue.Catalogue.unavailable_note`), rather than a 503: a portal harvesting
    the catalogue nightly drops the datasets of a catalogue it cannot read (docs/open-data.md)."""
    ctx = ctx_of(request)
    meta = meta_of(request)
    warn_unpublished(ctx.policy)
    transparency, now = catalogue.transparency_of(ctx), ctx.now()
    base = catalogue.base_of(request, meta)
    try:
        shown = ngsi.publishable(await ctx.fleet.devices(published=True), ctx.policy)
        oldest = await ctx.fleet.oldest_published(since=catalogue.coverage_since(transparency, now))
    except (StorageError, Unavailable) as err:  # Unavailable: store_timeout (gateway.web.reads)
        reason = err.reason or "read_failed"
        skipped = STORE_LOG_LIMIT.allow()
        if skipped is not None:
            logger.warning("%s %s answered without the store's part: %s (%s)%s", request.method,
                           request.path, type(err).__name__, reason, more_since(skipped, "such answers"))
        return catalogue.Catalogue(meta=meta, base=base, policy=ctx.policy, transparency=transparency, devices=(),
                                   modified=None, now=now, unavailable=reason)
    return catalogue.Catalogue(meta=meta, base=base, policy=ctx.policy,
                               transparency=transparency, devices=shown,
                               modified=_last_modified(shown, ctx.policy), now=now, oldest=oldest)


def _catalogue_cache_control(cat: catalogue.Catalogue) -> str:
    """:data:`CACHE_CONTROL`, or ``no-cache`` for a catalogue without the store's part: a cache asks
    again each time, so the whole catalogue is served as soon as the store can be read."""
    return CACHE_CONTROL if cat.unavailable is None else "no-cache"


@ROUTES.get("/opendata")
async def index(request: web.Request) -> web.Response:
    """What is published, where, by whom under which licence, what each field means (a data dictionary)
    and how device fields map onto the Smart Data Models: a DCAT-style catalogue entry (``title``,
    ``description``, ``publisher``, ``contactPoint``, ``keywords``, ``license``, ``modified``, ``spatial``,
    ``temporal``, ``accrualPeriodicity``), with absolute URLs. The DCAT-AP form is
    ``/opendata/catalog.jsonld``. Answered while the report store cannot be read, its ``unavailable``
    then naming the fields it cannot tell (:func:`_catalogue`). A browser (``text/html`` rated above JSON)
    gets the catalogue as a page instead (:mod:`gateway.web.opendata_page`)."""
    # A browser (text/html first) gets the catalogue as a page; any other client the JSON, as before
    # (no Accept, */*: the first offered).
    media = negotiate(request, ("application/json", HTML))
    if media != HTML:
        # A page ignores a query (a shared link's ?utm_source=..., as /transparency does); a program's
        # mistyped parameter is refused rather than silently meaning nothing.
        params.reject_unknown(request.query, ())
    cat = await _catalogue(request)
    if media == HTML:
        page = opendata_page.render_opendata_html(
            cat, catalogue.data_dictionary(cat.transparency, cat.policy), stylesheet=pages.PAGE_STYLE)
        return _answer(request, page.encode("utf-8"), HTML, last_modified=cat.modified,
                       cache_control=_catalogue_cache_control(cat),
                       headers={"Content-Security-Policy": pages.TRANSPARENCY_CSP,
                                "Content-Language": cat.content_language()})
    formats = cat.formats()
    return await _json_answer(request, {
        **cat.index_head(),
        # Where each format is: every URL is literal and answers as is (a placeholder such as ``to=``
        # would be refused with 400); the query parameters, all optional, are in "parameters".
        # NGSI-LD's type list is comma-separated.
        "formats": {key: cat.url(path) for key, path, _media, _title, _type in formats},
        "mediaTypes": {key: media_type for key, _path, media_type, _title, _type in formats},
        "parameters": {
            "ngsi-ld": {
                "type": f"{', '.join(cat.entity_types())}, or a comma list of them: entities of any listed type"
                        " (default: all)",
                "options": "normalized (default), keyValues, or simplified (= keyValues)",
            },
            "csv": {
                "from": "start, unix seconds or ISO 8601, rounded down to the whole UTC hour; not in the"
                        " future (default: 24 h before to, after a later to is cut)",
                "to": "end, unix seconds or ISO 8601, rounded down to the whole UTC hour (default: now minus"
                      " 5 minutes, the ingest lag, rounded down; a later to is taken as that); at most 31 days"
                      " after from; the rows whose period ends after from and at or before to",
                "field": "comma list of field names (default: all)",
                "zone": "zone name (default: all)",
                "withheld": "omit (default) or include: also a row per withheld noisy count (below k), with an"
                            " empty value, and a trailing status column (released or withheld)",
            },
            "privacy-budget": {
                "from": "as csv; the export holds the UTC days that end after from (default: the last complete"
                        " UTC day)",
                "to": "as csv; the days that end at or before to",
                "field": "comma list of the people-related (noisy count) fields (default: all)",
                "zone": "as csv: the releases stored with that zone",
            },
        },
        "models": cat.models(),
        "mapping": ngsi.describe_mapping(cat.policy),
        "dataDictionary": catalogue.data_dictionary(cat.transparency, cat.policy),
        "catalog": cat.url(catalogue.CATALOG_PATH),
        "transparency": cat.url("/transparency"),
    }, media, last_modified=cat.modified, cache_control=_catalogue_cache_control(cat),
        headers={"Content-Language": cat.content_language()})


@ROUTES.get(catalogue.CATALOG_PATH)
async def catalog_jsonld(request: web.Request) -> web.Response:
    """The catalogue as DCAT-AP JSON-LD (``dcat:Catalog``, one ``dcat:Dataset``, a ``dcat:Distribution``
    per format), for harvesters of open-data portals (CKAN's DCAT extension, data.europa.eu)."""
    params.reject_unknown(request.query, ())
    media = negotiate(request, (LD_JSON, "application/json"))
    cat = await _catalogue(request)
    return await _json_answer(request, cat.dcat(), media, last_modified=cat.modified,
                              cache_control=_catalogue_cache_control(cat),
                              headers={"Content-Language": cat.content_language()})


def _ld_content_type(request: web.Request) -> str:
    """NGSI-LD answers ``application/ld+json``, or ``application/json`` to a client asking for that."""
    return negotiate(request, (LD_JSON, "application/json"))


@ROUTES.get("/opendata/ngsi-ld/v1/entities")
async def entities(request: web.Request) -> web.Response:
    """NGSI-LD entities of all publishable devices; ``type`` filters (one type or a comma list: any of
    them, as NGSI-LD queries); ``options=keyValues``."""
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("type", "options"))
    etypes = params.parse_choice_list(q, "type", warn_unpublished(ctx.policy).entity_types())
    media = _ld_content_type(request)
    devices = await ctx.fleet.devices(published=True)
    shown = ngsi.published(devices, etypes, ctx.policy)
    items = ngsi.entities(shown, key_values=_options(request), stale=_stale(request, shown), policy=ctx.policy)
    return await _json_answer(request, items, media, last_modified=_last_modified(shown, ctx.policy))


@ROUTES.get("/opendata/ngsi-ld/v1/entities/{entity_id}")
async def entity(request: web.Request) -> web.Response:
    """One NGSI-LD entity by its URN (``urn:ngsi-ld:Streetlight:<device>``)."""
    ctx = ctx_of(request)
    params.reject_unknown(request.query, ("options",))
    media = _ld_content_type(request)
    wanted = request.match_info["entity_id"]
    devices = await ctx.fleet.devices(published=True)
    for dev in ngsi.publishable(devices, ctx.policy):
        if ngsi.entity_id(ngsi.entity_type(dev.kind), dev.id) == wanted:
            entity = ngsi.device_entity(dev, key_values=_options(request), stale=dev.id in _stale(request, [dev]),
                                        policy=ctx.policy)
            return await _json_answer(request, entity, media, last_modified=_last_modified([dev], ctx.policy))
    raise NotFound(f"no published entity '{wanted}'", code="unknown_entity", param="entity_id")


def day_slices(since: int, until: int) -> list[tuple[int, int]]:
    """``(since, until]`` cut at UTC midnights: the slices of row ends a CSV export reads one at a time."""
    edges = [since] + list(range(since - since % CSV_SLICE_S + CSV_SLICE_S, until, CSV_SLICE_S)) + [until]
    return list(zip(edges[:-1], edges[1:]))


def _time(query: Mapping[str, str], name: str) -> int:
    """A ``from``/``to`` value: unix seconds or ISO 8601 as written, without white space in it (a ``+``
    in a URL is a space: ``from=+1796498100`` is refused rather than read as a positive sign, and
    ``...T12:00:00+02:00`` sent unencoded arrives as ``...T12:00:00 02:00``)."""
    raw = query[name]
    if any(c in params.SPACE for c in raw):
        raise BadParameter(f"'{name}' must be unix seconds or an ISO 8601 date-time without spaces"
                           f" (a '+' in a URL is a space; write %2B), got {raw!r}", param=name)
    return params.parse_time(raw, name)


def complete_until(now: int) -> int:
    """The end of the last complete hour at ``now``: now - :data:`INGEST_LAG_S`, rounded down to the
    whole UTC hour. The default ``to`` of a CSV export, and the latest any ``to`` reaches."""
    return (now - INGEST_LAG_S) // HOUR_S * HOUR_S


def csv_range(query: Mapping[str, str], *, now: int) -> tuple[int, int]:
    """``(since, until)`` of a CSV export: ``from``/``to`` rounded down to whole UTC hours (defaults:
    ``to`` = :func:`complete_until`, ``from`` = 24 h before the ``to`` in force, after the cut below, and
    not before 2000-01-01T00:00Z: :func:`gateway.web.params.default_since`), checked as given; the export holds the rows whose period ends in ``(since, until]``, so no row is
    ever a cut hour.
    ``since == until`` (both in one hour) is an empty export.

    Future bounds: ``from`` after now is refused (no value starts in the future), whether or not
    ``to`` is given; a ``to`` after :func:`complete_until` (in the future, or within the hour in
    progress and its ingest lag) is taken as it, before the default ``from`` is counted back (a
    future ``to`` alone gives the last complete 24 h, named so): a row whose reports may still be on
    their way is never given, whichever ``to`` asked for it. A ``from`` at or after that bound (and not
    in the future) is an empty export."""
    given_to = _time(query, "to") if "to" in query else None
    given_from = _time(query, "from") if "from" in query else None
    if given_from is not None and given_from > now:
        raise BadParameter(f"'from' ({given_from}) is in the future (now is {now}); no value starts after now",
                           param="from")
    if given_from is not None and given_to is not None and given_from >= given_to:
        raise BadParameter(f"'from' ({given_from}) must be before 'to' ({given_to})", param="from")
    complete = complete_until(now)
    asked_until = given_to // HOUR_S * HOUR_S if given_to is not None else complete
    # The rows that exist of an hour in progress (or ended within the ingest lag) are not all its rows:
    # no range reaches past where the default one ends. Cut before the default 'from' is counted back
    # from it, so a 'to' ahead of that bound gives the same 24 h as no 'to'.
    until = min(asked_until, complete)
    if given_from is None:
        # Clamped to 2000-01-01T00:00Z (a whole hour), as on every endpoint: only a 'from' given is refused there.
        since = params.default_since(until, CSV_DEFAULT_RANGE_S)
    else:
        since = given_from // HOUR_S * HOUR_S
    # The 31-day limit counts the range as asked (from 'from' to 'to'), so it does not move with the
    # clock; a 'to' alone always gives 24 h.
    if given_from is not None and asked_until - since > CSV_MAX_RANGE_S:
        raise BadParameter(f"time range longer than {CSV_MAX_RANGE_S // 86400} days",
                           param="to" if "to" in query else "from")
    until = max(until, since)  # a 'from' past that bound: nothing yet
    return since, until


def _kinds(policy: Mapping[str, Any] | None) -> Collection[str]:
    """The kinds the CSV publishes: every kind of the privacy policy (None: the two with a Smart Data
    Model, for a caller without one)."""
    return policy.get("kinds", {}).keys() if policy is not None else ngsi.ENTITY_TYPE_BY_KIND.keys()


def csv_zones(devices: Sequence[DeviceView], reported: Collection[str] | None = None, *,
              policy: Mapping[str, Any] | None = None) -> list[str]:
    """The zones a public answer may name (a refused ``zone`` lists them): those of the CSV's devices
    (of a kind of ``policy``) that have stored a report (``reported``: the devices with a report
    received before the CSV's mark; None: any stored report). A registered device that never reported
    published nothing, so its zone is not public (review L2: ``zone=x`` listed every registered
    device's zone)."""
    kinds = _kinds(policy)
    return [d.zone for d in devices if d.kind in kinds
            and (d.last_seen is not None if reported is None else d.id in reported)]


def policy_digest(policy: Mapping[str, Any]) -> str:
    """A stable hash of the privacy policy (key order does not count): what the CSV's rows are made by."""
    return hashlib.sha256(json.dumps(policy, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def csv_devices(devices: Sequence[DeviceView], reported: Collection[str] | None = None, *,
                policy: Mapping[str, Any] | None = None) -> list[str]:
    """The devices whose stored rows the CSV publishes: every device of a kind of ``policy``, revoked,
    retired or not (the entities list only devices neither revoked nor retired); of ``reported`` only, when
    given (the devices with a report received before the CSV's mark: the others have no row it may show)."""
    kinds = _kinds(policy)
    return [d.id for d in devices if d.kind in kinds and (reported is None or d.id in reported)]


async def _csv_reported(ctx: WebContext, devices: Sequence[DeviceView], mark: int) -> frozenset[str]:
    """The devices with a report received before the CSV's ``mark``. The devices listed are the
    entities' (their later mark): without this, a device's first report changed the CSV's ETag and
    zones at a quarter hour (review LOW4)."""
    kinds = _kinds(ctx.policy)
    ids = [d.id for d in devices if d.kind in kinds]
    return frozenset(await ctx.fleet.reported(ids, received_before=mark))


def csv_filename(since: int, until: int) -> str:
    """The export's file name, after the range it holds (whole UTC hours, as the rows are selected):
    ``civicedge-readings-2026-12-05T00-2026-12-06T00.csv``, no ``:`` (not allowed in Windows names)."""
    def hour(ts: int) -> str:
        return time.strftime("%Y-%m-%dT%H", time.gmtime(ts))

    return f"civicedge-readings-{hour(since)}-{hour(until)}.csv"


def _client_gone(request: web.Request) -> bool:
    """True once the client's connection is closed or closing (nothing more can reach it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


@ROUTES.get("/opendata/readings.csv")
async def readings_csv(request: web.Request) -> web.StreamResponse:
    """Released values per device, UTC hour, stored zone and field as CSV, for the rows whose period
    ends in the requested range of whole hours (default: the last 24 h, at most 31 days).

    The store is read one UTC day at a time on a worker thread, aggregated there, and each day's
    rows are sent before the next day is read: a request's work and memory are bounded by one day,
    and a client that reads slowly holds back only its own export. A client that goes away
    (``curl ... | head``) ends the export quietly at the next day; HEAD gets the headers only.
    """
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("from", "to", "field", "zone", "withheld"))
    now = ctx.now()
    since, until = csv_range(q, now=now)
    # Made of the reports received before the last hh:05 (module publication): the answer changes
    # only then, a late report's arrival too.
    mark = publication.csv_mark(now)
    fields = params.parse_fields(q, ctx.known_fields())
    devices = await ctx.fleet.devices(published=True)
    reported = await _csv_reported(ctx, devices, mark)
    zone = params.parse_zone(q, csv_zones(devices, reported, policy=ctx.policy))
    # Rows of withheld values (a noisy count below k) only when asked for: their empty value and the
    # trailing status column would surprise a reader of the ten columns that parses every value.
    withheld = params.parse_choice(q, "withheld", ("omit", "include"), default="omit") == "include"
    columns = export.CSV_STATUS_COLUMNS if withheld else export.CSV_COLUMNS
    media = negotiate(request, ("text/csv",))
    # Revoked devices included (QA M2: dropping them changed published totals after the fact): the
    # gateway refuses a revoked device's frames, so every row the store holds of one was received
    # before its revocation. (The registry keeps no revocation time of its own, and a wall-clock time
    # could not be compared with period starts from the devices' clocks, e.g. under [sim_clock].)
    published = csv_devices(devices, reported, policy=ctx.policy)
    version, newest_id, count, published_at = await ctx.fleet.rows_stamp(
        since=since, until=until, devices=published, zone=zone, received_before=mark)
    # The export is streamed, so its ETag names what it is made of rather than hashing its bytes: the
    # store's data version (retention removals), the newest report whose values its rows hold and how many
    # they hold (a report for another range leaves both unchanged, so a past range gets 304), the devices read
    # (a device added), the normalised request, the media type and the licence of the Link; and how the
    # rows are made of the stored values: the CSV's format version and the policy (labels, units, periods
    # and the aggregate follow from it), so a past range answered differently is not a 304 (review M2).
    basis = json.dumps([version, newest_id, count, published, since, until, sorted(set(fields)) if fields else None, zone,
                        withheld, media, meta_of(request).licence, export.CSV_FORMAT_VERSION,
                        policy_digest(ctx.policy)])
    etag = 'W/"%s"' % hashlib.sha256(basis.encode()).hexdigest()[:32]

    async def day_text(lo: int, hi: int, header: bool) -> str:
        groups = await ctx.fleet.device_hours(since=lo, until=hi, devices=published, fields=fields,
                                              zone=zone, received_before=mark)
        return export.rows_to_csv(export.device_hour_rows(groups, ctx.policy, withheld=withheld),
                                  header=header, columns=columns)

    return await _stream_csv(request, etag=etag, published_at=published_at, filename=csv_filename(since, until),
                             slices=day_slices(since, until) if since < until else [],
                             empty=export.rows_to_csv([], header=True, columns=columns), day_text=day_text)


async def _stream_csv(request: web.Request, *, etag: str, published_at: float | None, filename: str,
                      slices: Sequence[tuple[int, int]], empty: str,
                      day_text: Callable[[int, int, bool], Awaitable[str]]) -> web.StreamResponse:
    """Answer a CSV export read a day at a time: 304 when ``If-None-Match`` names ``etag`` (a weak ETag
    made of what the export is made of, so nothing is read for it), else the rows of each of ``slices``
    (``day_text(lo, hi, header)``: that day's CSV text, the header with the first), or ``empty`` (the
    header alone) when there is none; HEAD gets the headers only."""
    # Streamed, so its size is not known beforehand: gzip whenever accepted (a day of rows is kilobytes
    # of repetitive text), with its own ETag as the JSON answers.
    gzipped = accepts_gzip(request)
    if gzipped:
        etag = gzip_etag(etag)
    headers = {**_cache_headers(etag, published_at), **_licence_link(request)}  # 304 too, as the JSON answers
    if etag_matches(request, etag):
        return web.Response(status=304, headers=headers)
    response = web.StreamResponse(headers={**headers, "Content-Disposition": f'inline; filename="{filename}"'})
    response.content_type = "text/csv"
    response.charset = "utf-8"
    if request.method == "HEAD":
        if gzipped:
            # Named only: a compressor would write gzip's empty-stream bytes after the head, into the
            # connection's next answer.
            response.headers["Content-Encoding"] = "gzip"
        return response  # aiohttp sends the headers; a HEAD answer has no body, so nothing is read
    if gzipped:
        response.enable_compression(web.ContentCoding.gzip)
    name = request.path.rsplit("/", 1)[-1]
    header = True
    try:
        if not slices:
            await response.prepare(request)
            await response.write(empty.encode("utf-8"))
        for lo, hi in slices:
            if _client_gone(request):
                logger.debug("%s: client went away before %s; export ended", name, lo)
                return response
            try:
                text = await day_text(lo, hi, header)
            except Exception as exc:
                if not response.prepared:
                    raise  # nothing sent yet: the client gets the JSON error
                # Rows were sent already: end the connection without the closing chunk, so the client
                # sees a cut-off transfer rather than a complete-looking CSV with days missing.
                if isinstance(exc, GatewayError):
                    logger.error("%s cut off at %s: %s (%s)", name, lo, type(exc).__name__, exc.reason)
                else:
                    logger.exception("%s cut off at %s by an unexpected error", name, lo)
                raise ConnectionAbortedError("CSV export failed after rows were sent") from None
            header = False
            if not response.prepared:
                await response.prepare(request)
            await response.write(text.encode("utf-8"))
        await response.write_eof()
    except ConnectionResetError:
        # The client hung up mid-export (aiohttp's ClientConnectionResetError): an everyday event on a
        # public endpoint, not a server error; aiohttp ends the response without logging it.
        logger.debug("%s: client went away during the export", name)
    return response


@ROUTES.get(opendata_budget.PATH)
async def privacy_budget_csv(request: web.Request) -> web.StreamResponse:
    """The ε each device spent per people-related field and UTC day, in milli-ε, repeat releases
    included (:mod:`gateway.web.opendata_budget`); the days that end in the readings CSV's range
    (``from``/``to`` as there, at most 31 days; default: the last complete UTC day), of its devices
    (revoked and retired ones too), ``field`` and ``zone`` as there. Made of the reports and repeat
    releases published at the CSV's last hh:05 mark; read a day at a time and cached as the readings
    CSV (a weak ``ETag`` of what it is made of, so a 304 reads no row)."""
    ctx = ctx_of(request)
    q = request.query
    params.reject_unknown(q, ("from", "to", "field", "zone"))
    now = ctx.now()
    since, until = csv_range(q, now=now)
    first, end = opendata_budget.day_range(since, until)
    known = opendata_budget.noisy_fields(ctx.policy)
    fields = params.parse_fields(q, known) or known
    mark = publication.csv_mark(now)
    devices = await ctx.fleet.devices(published=True)
    reported = await _csv_reported(ctx, devices, mark)
    zone = params.parse_zone(q, csv_zones(devices, reported, policy=ctx.policy))
    media = negotiate(request, ("text/csv",))
    published = csv_devices(devices, reported, policy=ctx.policy)
    # As the readings CSV's: the store's data version (retention removals), the newest of the stored releases
    # published at the mark whose period ends in the days and how many there are (a report for other days
    # leaves both unchanged), the repeat releases' bound at the mark (a rowid: a new one anywhere changes
    # it, they are few), the devices, the normalised request, media type, licence, format and policy.
    # Last-Modified: the mark that first published that newest release (repeat releases left out: when one
    # arrived is not published, docs/privacy.md "Who gets arrival times").
    version, newest_id, count, published_at = await ctx.fleet.spend_stamp(
        first=first, end=end, devices=published, zone=zone, received_before=mark)
    repeats = await ctx.fleet.repeats_bound(received_before=mark)
    basis = json.dumps([version, newest_id, count, repeats, published, first, end, sorted(set(fields)), zone, media,
                        meta_of(request).licence, opendata_budget.FORMAT_VERSION, policy_digest(ctx.policy)])
    etag = 'W/"%s"' % hashlib.sha256(basis.encode()).hexdigest()[:32]

    async def day_text(lo: int, _hi: int, header: bool) -> str:
        spend = await ctx.fleet.privacy_spend(day=lo, devices=published, fields=fields, zone=zone,
                                              received_before=mark)
        return export.rows_to_csv(opendata_budget.rows_of(spend), header=header, columns=opendata_budget.COLUMNS)

    return await _stream_csv(request, etag=etag, published_at=published_at, filename=opendata_budget.filename(first, end),
                             slices=opendata_budget.days(first, end),
                             empty=export.rows_to_csv([], header=True, columns=opendata_budget.COLUMNS),
                             day_text=day_text)


@ROUTES.get("/opendata/devices.geojson")
async def devices_geojson(request: web.Request) -> web.Response:
    """Publishable devices as a GeoJSON FeatureCollection with their latest public values; the licence
    and publisher as foreign members of the collection (RFC 7946 section 6.1)."""
    params.reject_unknown(request.query, ())
    media = negotiate(request, (GEO_JSON, "application/json"))
    ctx = ctx_of(request)
    # Filtered by the policy's plan here: export.devices_geojson keeps what it is given (keyValues
    # carry no unit, so it needs no policy).
    warn_unpublished(ctx.policy)
    shown = ngsi.publishable(await ctx.fleet.devices(published=True), ctx.policy)
    doc = export.devices_geojson(shown, stale=_stale(request, shown))
    doc.update(meta_of(request).as_json())
    return await _json_answer(request, doc, media, last_modified=_last_modified(shown, ctx.policy))
