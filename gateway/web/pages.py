"""Pages and operations endpoints: dashboard, transparency, OpenAPI, /metrics, /healthz."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.health import Problem, as_json, classify, overall
from gateway.version import gateway_version
from gateway.web import params
from gateway.web.context import WebContext, ctx_of, etag_matches, json_response
from gateway.web.fleet_metrics import fleet_exposition, fleet_view
from gateway.web.openapi import openapi_document
from gateway.web.catalogue import meta_of, transparency_of
from gateway.web.errors import Unavailable
from gateway.web.policy_file import policy_file
from gateway.web.transparency import render_transparency_html, with_publication

logger = logging.getLogger(__name__)
ROUTES = web.RouteTableDef()
STATIC_DIR = Path(__file__).resolve().parent / "static"
# What the city publishes through its reverse proxy (docs/gateway.md, "Publishing open data"): the open
# data under /opendata, the transparency page with its JSON form, and the policy file the page is made
# from. Everything else (dashboard, /api, /static, /openapi.json, /metrics, /healthz) is for the city's operators.
PUBLIC_PATHS = ("/opendata", "/opendata/", "/transparency", "/transparency.json", "/policy.json")
# The transparency page is public, /static is not: the page inlines the stylesheet and allows that one
# <style> element by its hash (the app's policy allows no inline style), so it is styled wherever it is
# published. No script, no other resource.
PAGE_STYLE = (STATIC_DIR / "style.css").read_text(encoding="utf-8")
TRANSPARENCY_CSP = ("default-src 'none'; style-src 'sha256-%s'; img-src data:; base-uri 'none'; form-action 'none';"
                    " frame-ancestors 'none'"
                    % base64.b64encode(hashlib.sha256(PAGE_STYLE.encode("utf-8")).digest()).decode("ascii"))
# The HTML pages ignore their query string (a link shared with ?utm_source=... still opens), also a
# parameter given twice, which every other endpoint refuses (gateway.web.app).
QUERY_IGNORED_PATHS = frozenset({"/", "/transparency"})
# Static files (the dashboard's script and styles under /static/, and /favicon.ico) ignore their query
# string too: a cache-busting ``?v=3`` is how a page asks for a newer copy, and a file has no parameter
# a typo could widen (QA LOW: docs/api.md said only / and /transparency ignore one).
STATIC_PREFIX = "/static/"
FAVICON_PATH = "/favicon.ico"


def query_ignored(path: str) -> bool:
    """Whether the answer at ``path`` ignores the query string, a parameter given twice included: the HTML
    pages (:data:`QUERY_IGNORED_PATHS`) and the static files (``/static/...``, ``/favicon.ico``)."""
    return path in QUERY_IGNORED_PATHS or path == FAVICON_PATH or path.startswith(STATIC_PREFIX)


@ROUTES.get("/")
async def dashboard(request: web.Request) -> web.FileResponse:
    """The dashboard page (static HTML; data comes from /api/dashboard)."""
    return web.FileResponse(STATIC_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})


@ROUTES.get(FAVICON_PATH)
async def favicon(request: web.Request) -> web.Response:
    """No icon, said as 204: a browser asks every page's /favicon.ico (the JSON pages too), and a 404
    showed as an error in its console."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


def _transparency(request: web.Request) -> dict[str, Any]:
    """The transparency document with the policy file's fingerprint and ``[opendata]`` publisher and contact."""
    ctx = ctx_of(request)
    meta = meta_of(request)
    served = policy_file(ctx.policy)
    return with_publication(transparency_of(ctx), policy_sha256=served.sha256 if served else None,
                            publisher=meta.publisher, contact=meta.contact)


@ROUTES.get("/transparency")
async def transparency_html(request: web.Request) -> web.Response:
    """What is collected and why, generated from the privacy policy (and shortened retention)."""
    doc = _transparency(request)
    return web.Response(text=render_transparency_html(doc, stylesheet=PAGE_STYLE), content_type="text/html",
                        charset="utf-8", headers={"Content-Security-Policy": TRANSPARENCY_CSP})


@ROUTES.get("/transparency.json")
async def transparency_json(request: web.Request) -> web.Response:
    """The transparency page's content as JSON."""
    params.reject_unknown(request.query, ())
    return json_response(_transparency(request))


@ROUTES.get("/policy.json")
async def policy_json(request: web.Request) -> web.Response:
    """The privacy policy file the gateway runs with, byte for byte (its SHA-256 is the ETag and the
    ``policy_sha256`` of /transparency), so a citizen can hash it and compare with a release's. Never
    compressed: the bytes on the wire are the file's. They are the bytes read at start, also when the file
    was changed since (the operator is warned; a restart applies it). 503 ``policy_file_changed`` only when
    the policy in force was not read from the policy file (an app given another policy by its caller)."""
    params.reject_unknown(request.query, ())
    served = policy_file(ctx_of(request).policy)
    if served is None:
        raise Unavailable("the privacy policy the gateway runs with was not read from its policy file, so there "
                          "are no policy file bytes to serve", code="policy_file_changed")
    etag = '"%s"' % served.sha256
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag_matches(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=served.body, content_type="application/json", charset="utf-8", headers=headers)


@ROUTES.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """OpenAPI 3 description of this API."""
    params.reject_unknown(request.query, ())
    return json_response(openapi_document(ctx_of(request).policy))


@ROUTES.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the gateway's CollectorRegistry, then the fleet gauges computed for
    this scrape (:mod:`gateway.web.fleet_metrics`: the last counts read when the read takes longer than
    3 s; without samples when the store cannot be read)."""
    ctx = ctx_of(request)
    # Scrapers send no parameters by default; one configured (``name[]``, a filter some exporters
    # take) would be ignored here and serve everything, so it is refused like anywhere else.
    params.reject_unknown(request.query, ())
    if ctx.metrics_registry is None:
        raise Unavailable("no metrics registry attached", code="no_metrics")
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    counts, age_s = await fleet_view(ctx)
    body = generate_latest(ctx.metrics_registry) + fleet_exposition(counts, ctx.policy, age_s=age_s)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _metric_checks(ctx: WebContext) -> tuple[list[str], dict[str, Any]]:
    """Links that are down, and figures (links, outbox depth, BLE connections) from the metrics."""
    reasons: list[str] = []
    figures: dict[str, Any] = {}
    if ctx.metrics_registry is None:
        return reasons, figures
    links: dict[str, float] = {}
    for metric in ctx.metrics_registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("link_state"):
                name = sample.labels.get("link", "?")
                links[name] = sample.value
                if sample.value == 0:
                    reasons.append(name)
            elif sample.name.endswith("outbox_depth"):
                figures["outbox_depth"] = sample.value
            elif sample.name.endswith("ble_connected") and ctx.ble_enabled is not False:
                figures["ble_connected"] = sample.value
    if ctx.ble_enabled is False:
        figures["ble"] = "disabled"  # no BLE link runs: a count of 0 connections would say nothing
    if links:
        figures["links"] = links
    return reasons, figures


def _names_link(reason: str, link: str) -> bool:
    """True if a health probe's ``reason`` is about ``link``: it starts ``"<link> "`` or ``"link <link> "``."""
    return reason.startswith(link + " ") or reason.startswith("link %s " % link)


@ROUTES.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """``{"status": "ok"|"degraded", "severity": "ok"|"warning"|"critical", "reasons": [...], "problems": [...],
    "checks": {...}, "time": T, "version": V}``; 200 when ok, 503 when degraded (a warning too: what load
    balancers and existing monitors read; ``severity`` and the problems' codes tell page from ticket)."""
    ctx = ctx_of(request)
    params.reject_unknown(request.query, ())
    reasons: list[Problem] = []
    checks: dict[str, Any] = {}
    try:
        # One cheap store read on a worker thread (see device_count): never the fleet snapshot, whose first
        # computation reads the whole store.
        checks["devices"] = await ctx.fleet.device_count()
    except Unavailable as exc:
        logger.warning("healthz: store probe failed: %s", exc.code)
        if exc.code == "store_timeout":
            reasons.append(Problem("store_not_answering", "store not answering"))
        elif exc.code == "registry":  # the reports are readable: the registry's message names it
            reasons.append(Problem("store_unavailable", exc.message))
        else:
            reasons.append(Problem("store_unavailable", f"store unavailable ({exc.code})"))
    except Exception as exc:  # any storage failure is a health finding, not a crash
        logger.warning("healthz: store unreadable: %s", type(exc).__name__)
        reasons.append(Problem("store_unreadable", f"store unreadable ({type(exc).__name__})"))
    # The store reads' own findings (StoreFleetSource: a -wal they could not wait out); other sources have none.
    store_problems = getattr(ctx.fleet, "store_problems", None)
    if store_problems is not None:
        reasons.extend(store_problems())
    metric_reasons, figures = _metric_checks(ctx)
    checks.update(figures)
    probe_reasons: list[Problem] = []
    for check in ctx.health_checks:
        try:
            probe_reasons.extend(classify(reason) for reason in check())
        except Exception as exc:  # a failing probe degrades health, it must not hide the others
            probe_reasons.append(Problem("health_check_failed", f"health check failed ({type(exc).__name__})"))
    # A link the gateway's own probes already report is not reported twice. The probes name a link at
    # the start ("ble is down: ...", "link ble failed ..."): matched there, never anywhere in the text
    # ("ble" is in "mqtt broker unreachable"). When they report every link (links_in_health_checks),
    # none is taken from link_state, which is 0 also while BLE's first scan runs.
    for link in () if ctx.links_in_health_checks else metric_reasons:
        if not any(_names_link(p, link) for p in probe_reasons):
            reasons.append(Problem("ble_down" if link == "ble" else "link_down", f"link {link} is down", link))
    reasons.extend(probe_reasons)
    token_problem = ctx.token.problem  # a replaced admin token file that cannot be used (admin calls get 503)
    if token_problem is not None:
        reasons.append(Problem("admin_token_unusable", token_problem))
    return json_response(
        {"status": "degraded" if reasons else "ok", "severity": overall(reasons), "reasons": [str(p) for p in reasons],
         "problems": [as_json(p) for p in reasons], "checks": checks, "time": ctx.now(),
         "version": gateway_version()},
        status=503 if reasons else 200,
    )
