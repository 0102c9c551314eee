"""OpenAPI 3.1 description of the web surface, written by hand and kept in sync by a test
(tests/web/test_web_openapi.py checks every mounted route is described and vice versa)."""

from __future__ import annotations

from typing import Any, Mapping

from gateway import health
from gateway.resources import load_policy
from gateway.routes.parsing import MIN_CAPACITY_L
from gateway.web import ngsi

_ERROR = {"$ref": "#/components/schemas/Error"}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _p(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _ok(description: str, media: str = "application/json", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


def _retirement(retired: bool) -> dict[str, Any]:
    """The answer of ``/retire`` (``retired`` true) and ``/reinstate`` (false)."""
    return {"type": "object", "required": ["device", "retired", "open_data"], "properties": {
        "device": {"type": "string"}, "retired": {"type": "boolean", "enum": [retired]},
        "open_data": {"type": "string", "description": "what becomes of the device's public data: its entity "
                      + ("leaves the open-data listings, its past rows stay in the CSV until their retention ends"
                         if retired else "is back in the open-data listings")},
        **({} if retired else {"warning": {"type": "string", "description": "only when the device has no usable "
                                           "key (a removal cut off after deleting its key file): none of its "
                                           "frames can be verified; what to do"}})}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_TIME = {"oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}]}
_FROM = _q("from", "start, unix seconds or ISO 8601 (default: `to` minus 24 h, not before 2000-01-01T00:00:00Z;"
                   " a value given outside 2000..2100 is 400)", _TIME)
_TO = _q("to", "end (exclusive), unix seconds or ISO 8601 (default: now)", _TIME)
_FIELD = _q("field", "comma-separated field names from the privacy policy (e.g. `mot,wh`); an unknown field or "
                    "an empty item (`mot,`, `mot,,wh`) is 400 `bad_parameter`")
_ZONE = _q("zone", "zone name, one of the registered devices' zones, case-sensitive; another one is 400 "
                   "`bad_parameter` naming the known zones")
# The CSV's zone: a public answer names only the zones of devices whose data it publishes.
_CSV_ZONE = _q("zone", "zone name, one of the zones of the devices that have published data (stored a report), "
                       "case-sensitive; another one is 400 `bad_parameter` naming those zones")
_BAD = _err("bad parameter (code `bad_parameter`, `param` names it)")
# readings.csv's own bounds: whole UTC hours, rows selected by the end of their period (not the shared
# "start"/"end (exclusive)" of the /api ranges).
_CSV_FROM = _q("from", "unix seconds or ISO 8601, rounded down to the whole UTC hour; rows whose period ends after "
                       "it (`(from, to]`); not in the future (400) (default: 24 h before `to`, once a later `to` "
                       "is cut: a future `to` alone gives the last 24 complete hours)", _TIME)
_CSV_TO = _q("to", "unix seconds or ISO 8601, rounded down to the whole UTC hour; rows whose period ends at or "
                   "before it; at most 31 days after `from` (default: now minus 5 minutes, the ingest lag, "
                   "rounded down, so the last hour's reports have arrived); a later `to` (in the future, or "
                   "within the ingest lag of the last hour) is taken as the default one: the hour in progress is "
                   "never given", _TIME)


def _hdr(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


# Headers of every open-data answer (200 and 304).
_OD_HEADERS = {
    "ETag": _hdr("validator: send it back in If-None-Match for a 304; changes with the content, the media type, the"
                 " headers describing it (Content-Language, the licence Link) and the content coding (the gzip form's has `-gzip` inside the quotes, and a 304 answers only the ETag"
                 " of the form asked for); the content is made of the reports received before the last publication"
                 " mark (NGSI-LD, GeoJSON: the last quarter hour; CSV: the last hh:05), so it changes only at marks"),
    "Content-Encoding": _hdr("200 only: `gzip` for a body of 1 KB or more (and every CSV) when Accept-Encoding"
                             " allows gzip"),
    "Cache-Control": _hdr("`public, max-age=60` (`no-cache` for the catalogue while the store cannot be read)"),
    "Vary": _hdr("`Accept, Accept-Encoding`: the media type follows the Accept header, the content coding"
                 " Accept-Encoding"),
    "Last-Modified": _hdr("NGSI-LD, GeoJSON: the newest time the body shows (a value's period end, the start of"
                          " the mark step (15 minutes, or the longest window) holding an open alarm that decides a"
                          " status, never its minute; a lamp change); CSV: the hh:05"
                          " mark that published the newest report whose values the rows hold; rounded down to the minute, never"
                          " after Date (absent when there is none)"),
    "Link": _hdr("`<licence URL>; rel=\"license\"` when `[opendata] licence` is set and has a URL (the SPDX page of an "
                 "SPDX id, the URL given, or `[opendata] licence_url`; none for a `LicenseRef-` id without it)"),
}
_CSV_DISPOSITION = _hdr('`inline; filename="civicedge-readings-<from>-<to>.csv"`: the range the export holds, in '
                        'whole UTC hours (a `to` after the default one is the default one), e.g. '
                        '`civicedge-readings-2026-12-05T00-2026-12-06T00.csv`')
# Headers of /policy.json (200 and 304).
_POLICY_HEADERS = {
    "ETag": _hdr("the file's SHA-256 in lower-case hex, in quotes (what `sha256sum` prints): send it back in"
                 " If-None-Match for a 304"),
    "Cache-Control": _hdr("`no-cache`: revalidate (the file changes with a gateway upgrade)"),
}
_OD_304 = {"description": "not modified: If-None-Match names the current ETag (no body)", "headers": _OD_HEADERS}
_OD_406 = _err("the Accept header allows none of the answer's media types (code `not_acceptable`)")


def _od_ok(description: str, media: str, schema: dict[str, Any] | None = None,
           also: tuple[str, ...] = ()) -> dict[str, Any]:
    """200 of an open-data path: its media types (the first is the default) and the caching headers."""
    ok = _ok(description, media, schema)
    for other in also:
        ok["content"][other] = ok["content"][media]
    ok["headers"] = _OD_HEADERS
    return ok
_AUTH = _err("missing or wrong bearer token")
# Every admin operation: wrong tokens are throttled before the token is compared (gateway.web.admin_throttle).
_THROTTLED = {**_err("too many wrong admin tokens from this client, or from all clients in the last second (code "
                     "`admin_throttled`); the token was not checked"),
              "headers": {"Retry-After": _hdr("seconds until this client's token is compared again")}}
_STORE = _err("the store cannot be read right now (code `backend_unavailable`) or did not answer within 60 s "
              "(`store_timeout`)")
_ADMIN: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_DEVICE = _p("device_id", "device id (1..32 of `[A-Za-z0-9._-]`)")
_COORDINATE = {"oneOf": [{"type": "string", "pattern": r"^-?[0-9]{1,3}(\.[0-9]{1,9})?$"}, {"type": "number"}],
               "description": "decimal degrees: a string is stored as written (`\"52.3702\"`, keeping trailing "
                              "zeros); a number is stored in its shortest decimal form (`52.37`)",
               "examples": ["52.3702", 52.3702]}


def openapi_document(policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the OpenAPI document served at ``/openapi.json``.

    Args:
        policy: the privacy policy the gateway runs with: its kinds and the entity types they are
            published as are the document's enumerations. None: the firmware's policy file.
    """
    doc = _document(policy if policy is not None else load_policy())
    schemas = doc["components"]["schemas"]
    # The admin list is the public device with the registry's own lat/lon strings (what PUT takes).
    where = {"type": ["string", "null"], "description": "decimal degrees as registered, e.g. \"4.80\" (null "
                                                        "without a registry)"}
    schemas["AdminDevice"] = {**schemas["Device"],
                              "properties": {**schemas["Device"]["properties"], "lat": where, "lon": where}}
    return doc


def _entities_summary(etypes: list[str]) -> str:
    """``NGSI-LD Streetlight and WasteContainer entities (FIWARE Smart Data Models)``, for the types published."""
    models = [t for t in etypes if t in ngsi.CONTEXT_BY_TYPE]
    others = [t for t in etypes if t not in ngsi.CONTEXT_BY_TYPE]
    text = "NGSI-LD %s entities (FIWARE Smart Data Models)" % " and ".join(models)
    if others:
        text += "; %s entities (no Smart Data Model: the released fields as attributes)" % ", ".join(others)
    return text


def _document(policy: Mapping[str, Any]) -> dict[str, Any]:
    kinds = list(policy.get("kinds", {}))
    etypes = ngsi.plan(policy).entity_types()
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Dashboard page (HTML)", "tags": ["pages"],
                      "responses": {"200": _ok("HTML page", "text/html", {"type": "string"})}}},
        "/transparency": {"get": {"summary": "What is collected and why, generated from the privacy policy",
                                  "tags": ["pages"],
                                  "responses": {"200": _ok("HTML page", "text/html", {"type": "string"})}}},
        "/transparency.json": {"get": {"summary": "Transparency page content as JSON", "tags": ["pages"],
                                       "responses": {"200": _ok("per kind: fields, ε, k, retention, recipients;"
                                                                " not_covered, policy_sha256 (null when the"
                                                                " policy file cannot be served), publisher,"
                                                                " contact (docs/api.md)"),
                                                     "400": _BAD}}},
        "/policy.json": {"get": {"summary": "The privacy policy file the gateway runs with, byte for byte (its SHA-256"
                                            " is /transparency's policy_sha256); public",
                                 "tags": ["pages"],
                                 "responses": {
                                     "200": {**_ok("the file's bytes, never compressed"),
                                             "headers": _POLICY_HEADERS},
                                     "304": {"description": "not modified: If-None-Match names the ETag (no body)",
                                             "headers": _POLICY_HEADERS},
                                     "400": _BAD,
                                     "503": _err("the policy in force was not read from the policy file (an app"
                                                 " given another policy by its caller; code `policy_file_changed`);"
                                                 " a file changed since the start is not this: the bytes read at"
                                                 " start are served until a restart")}}},
        "/favicon.ico": {"get": {"summary": "No icon (204): browsers ask it on every page; the query string is ignored", "tags": ["meta"],
                                 "responses": {"204": {"description": "no icon"}, "400": _BAD}}},
        "/openapi.json": {"get": {"summary": "This document", "tags": ["meta"],
                                  "responses": {"200": _ok("OpenAPI 3.1 document"), "400": _BAD}}},
        "/metrics": {"get": {"summary": "Prometheus metrics: ingest, store, links, outbox, retention, process, and"
                                        " the fleet at scrape time (civicedge_devices{kind,status},"
                                        " civicedge_open_alarms{kind,code}, civicedge_devices_dated_ahead{kind},"
                                        " civicedge_devices_values_ahead{kind},"
                                        " with civicedge_fleet_view_up and"
                                        " civicedge_fleet_view_age_seconds; docs/gateway.md, Metrics)",
                             "tags": ["operations"],
                             "responses": {"200": _ok("Prometheus text format 0.0.4", "text/plain", {"type": "string"}),
                                           "400": _BAD, "503": _err("no metrics registry attached")}}},
        "/healthz": {"get": {"summary": "Health: ok or degraded with reasons", "tags": ["operations"],
                             "responses": {"200": _ok("ok", schema={"$ref": "#/components/schemas/Health"}),
                                           "400": _BAD,
                                           "503": _ok("degraded", schema={"$ref": "#/components/schemas/Health"})}}},
        "/api/devices": {"get": {
            "summary": "Devices with status, last seen, link and latest released values", "tags": ["read"],
            "parameters": [_q("kind", "device kind", {"type": "string", "enum": kinds}), _ZONE],
            "responses": {"200": _ok("device list"), "400": _BAD, "503": _STORE}}},
        "/api/devices/{device_id}": {"get": {
            "summary": "One device", "tags": ["read"], "parameters": [_DEVICE],
            "responses": {"200": _ok("device", schema={"$ref": "#/components/schemas/Device"}),
                          "400": _BAD, "404": _err("unknown device"), "503": _STORE}}},
        "/api/readings": {"get": {
            "summary": "Released values in a time range, one page at a time", "tags": ["read"],
            "description": "Ordered by (start, device, report, field). When `truncated`, pass `next` as `after`, "
                           "with the same other parameters, for the following page: pages neither repeat nor "
                           "skip a reading, however many share a start.",
            "parameters": [_FROM, _TO, _q("device", "device id: a registered one (revoked or retired too) or one with stored reports; another"
                                          " is 400 `bad_parameter` `unknown device` (close ids named)"), _FIELD,
                           _q("limit", "maximum rows (1..10000, default 1000)", {"type": "integer"}),
                           _q("after", "page cursor: the `next` of the previous page, unchanged (opaque)")],
            "responses": {"200": _ok("a page of readings", schema={"$ref": "#/components/schemas/ReadingsPage"}),
                          "400": _BAD, "503": _STORE}}},
        "/api/aggregates/hourly": {"get": {
            "summary": "Per zone, UTC hour and field: count, sum, mean, min, max", "tags": ["read"],
            "parameters": [_FROM, _TO, _ZONE, _FIELD],
            "responses": {"200": _ok("aggregates"), "400": _BAD, "503": _STORE}}},
        "/api/alarms": {"get": {"summary": "Open safety alarms, newest first", "tags": ["read"],
                                "responses": {"200": _ok("alarms"), "400": _BAD, "503": _STORE}}},
        "/api/dashboard": {"get": {
            "summary": "Fleet, alarms and hourly series for the dashboard", "tags": ["read"],
            "parameters": [_q("hours", "hours of series (1..336, default 24)", {"type": "integer"})],
            "responses": {"200": _ok("dashboard data"), "400": _BAD, "503": _STORE}}},
        "/api/admin/devices": {"get": {
            "summary": "All devices, including revoked ones (never keys)", "tags": ["admin"], "security": _ADMIN,
            "description": "As `/api/devices`, except `lat`/`lon`: the registry's decimal strings as stored "
                           "(`\"4.80\"`), the form `PUT /api/admin/devices/{device_id}` takes, so a device read "
                           "here and written back is `unchanged`.",
            "responses": {"200": _ok("device list", schema={
                "type": "object", "required": ["devices", "count"],
                "properties": {"devices": {"type": "array", "items": {"$ref": "#/components/schemas/AdminDevice"}},
                               "count": {"type": "integer"}}}),
                          "400": _BAD, "401": _AUTH, "429": _THROTTLED, "503": _STORE}}},
        "/api/admin/devices/{device_id}/revoke": {"post": {
            "summary": "Revoke a device's key", "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
            "responses": {"200": _ok("revoked"), "400": _BAD, "401": _AUTH, "429": _THROTTLED, "404": _err("unknown device"),
                          "409": _err("already revoked"), "503": _err("no registry attached")}}},
        "/api/admin/devices/{device_id}/retire": {"post": {
            "summary": "Retire a device whose board left this gateway (moved to another gateway, or taken out of "
                       "service); not a revocation",
            "description": "Its key and past reports are kept; its status becomes `retired` (never `stale`); its "
                           "frames are refused (rejection reason `retired`) and never acknowledged, so the board "
                           "keeps its reports for the gateway that serves it now. Its entity leaves the open-data "
                           "listings (NGSI-LD entities, devices.geojson), its past rows stay in "
                           "/opendata/readings.csv until their retention ends: `open_data` says so. `/reinstate` "
                           "takes it back. A revoked device is not retired (409 `revoked`).",
            "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
            "responses": {"200": _ok("retired", schema=_retirement(True)), "400": _BAD, "401": _AUTH, "429": _THROTTLED, "404": _err("unknown device"),
                          "409": _err("already retired (`already_retired`) or revoked (`revoked`)"),
                          "503": _err("no registry attached")}}},
        "/api/admin/devices/{device_id}/reinstate": {"post": {
            "summary": "Take a retired device back: its frames are accepted again, under the key it kept, and its "
                       "entity is back in the open-data listings",
            "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
            "responses": {"200": _ok("reinstated", schema=_retirement(False)), "400": _BAD, "401": _AUTH, "429": _THROTTLED, "404": _err("unknown device"),
                          "409": _err("not retired (`not_retired`) or revoked (`revoked`)"),
                          "503": _err("no registry attached")}}},
        "/api/admin/devices/{device_id}": {"put": {
            "summary": "Register a device with the key its provisioning tool generated (idempotent; never "
                       "echoes the key)",
            "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["kind", "zone", "lat", "lon", "key"], "additionalProperties": False,
                "properties": {"kind": {"type": "string"}, "zone": {"type": "string"},
                               "lat": _COORDINATE, "lon": _COORDINATE,
                               "key": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$",
                                       "description": "the 32-byte device key, hex"},
                               "replace": {"type": "boolean", "default": False,
                                           "description": "replace a registration with another key"},
                               "expect_key_sha256": {
                                   "type": ["string", "null"], "pattern": "^[0-9a-fA-F]{64}$",
                                   "description": "with replace: compare-and-swap, replace only while the device "
                                                  "holds the key of this SHA-256 (hex), else 409 `conflict`; an id "
                                                  "not registered is 404 `unknown_device`, never added"}}}}}},
            "responses": {"201": _ok("added"), "200": _ok("unchanged or replaced"), "400": _BAD, "401": _AUTH, "429": _THROTTLED,
                          "404": _err("with expect_key_sha256: the id is not registered (`unknown_device`)"),
                          "408": _err("body not received in time"),
                          "409": _err("registered with another key (without replace, or not the one "
                                      "expect_key_sha256 names: `conflict`), elsewhere, revoked or retired"),
                          "413": _err("body too large"), "503": _err("no registry attached")}},
            "delete": {
                "summary": "Remove a device registered by mistake and never heard from: its registry row and key "
                           "file",
                "description": "Only a device the report store holds nothing of (no report, ACK floor, replay "
                               "protection or provenance entry); one heard from is 409 `heard_from` (retire or "
                               "revoke it), a revoked one 409 `revoked`, and nothing changes. The device is retired "
                               "first, the gateway's ingest is waited for until every report of it accepted "
                               "before is committed (at most 30 s: else 503 `not_settled`, put back as it was), "
                               "then the store is checked again: a report stored meanwhile puts the registration "
                               "back (409 `heard_from`); reinstated, retired or changed meanwhile by another "
                               "request or process: 409 `reinstated`, `retired` (the retire stands, also after a "
                               "reinstate) or `changed` (moved or key rotated: put back; reinstated and retired "
                               "for another removal: that removal's mark stays). "
                               "Its frames are then refused as from an unknown device; `PUT` "
                               "registers the id again.",
                "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
                "responses": {"200": _ok("removed", schema={
                    "type": "object", "required": ["device", "removed", "kind", "zone"],
                    "properties": {"device": {"type": "string"}, "removed": {"type": "boolean", "enum": [True]},
                                   "kind": {"type": "string"}, "zone": {"type": "string"}}}),
                              "400": _BAD, "401": _AUTH, "429": _THROTTLED, "404": _err("unknown device"),
                              "409": _err("heard from (`heard_from`: the store holds rows of it), revoked "
                                          "(`revoked`), or reinstated, retired or changed during the removal "
                                          "(`reinstated`, `retired`, `changed`)"),
                              "503": _err("no registry or store attached (`no_registry`, `no_store`), the store "
                                          "could not be read (`backend_unavailable`), the registry failed or a "
                                          "key file could not be deleted (`registry`), the ingest did not "
                                          "commit the device's accepted reports within 30 s or the app's loop "
                                          "stopped meanwhile (`not_settled`: put back, try again later), or the "
                                          "device is left retired (`storage_partial`: the message says what to do)")}}},
        "/api/admin/devices/{device_id}/move": {"post": {
            "summary": "Correct or change a device's location (and zone); never its key",
            "description": "The explicit move that `PUT` refuses (409 `moved`). Only the registry row changes: "
                           "stored reports keep the zone they were stored with; maps and open-data entities "
                           "show the new location.",
            "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["lat", "lon"], "additionalProperties": False,
                "properties": {"lat": _COORDINATE, "lon": _COORDINATE,
                               "zone": {"type": "string", "description": "new zone (default: unchanged)"}}}}}},
            "responses": {"200": _ok("moved or unchanged, with the new and the previous place"), "400": _BAD,
                          "401": _AUTH, "429": _THROTTLED, "404": _err("unknown device"), "408": _err("body not received in time"),
                          "409": _err("the device is revoked"), "413": _err("body too large"),
                          "503": _err("no registry attached")}}},
        "/api/admin/devices/{device_id}/seq": {"get": {
            "summary": "The highest report seq stored or acknowledged under a registered id (0 when none)",
            "description": "Stored reports, releases recorded as window duplicates, the seqs report retention "
                           "removed and the ACK floor: a board taking the id over must count above it, else its reports are refused "
                           "as `seq_reused` (`civicedge provision --gateway` raises the board's counter above it).",
            "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
            "responses": {"200": _ok("the highest seq stored or acknowledged", schema={
                "type": "object", "required": ["device", "highest_seq"],
                "properties": {"device": {"type": "string"},
                               "highest_seq": {"type": "integer", "minimum": 0, "maximum": 4294967295}}}),
                          "400": _BAD, "401": _AUTH, "429": _THROTTLED, "404": _err("unknown device (code `unknown_device`)"),
                          "503": _err("no registry attached, or the store did not answer in time "
                                      "(`store_timeout`)")}}},
        "/api/admin/devices/{device_id}/rotate-key": {"post": {
            "summary": "Generate a new device key; the answer says where it was written, never the key",
            "tags": ["admin"], "security": _ADMIN, "parameters": [_DEVICE],
            "responses": {"200": _ok("rotated"), "400": _BAD, "401": _AUTH, "429": _THROTTLED, "404": _err("unknown device"),
                          "409": _err("the device is revoked"), "503": _err("no registry attached")}}},
        "/api/admin/retention": {
            "get": {"summary": "Effective retention per kind and field, and the policy maximum",
                    "tags": ["admin"], "security": _ADMIN,
                    "responses": {"200": _ok("retention"), "400": _BAD, "401": _AUTH, "429": _THROTTLED,
                                  "503": _err("no registry attached")}},
            "put": {"summary": "Set the retention of one field (1..policy maximum days)",
                    "tags": ["admin"], "security": _ADMIN,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["kind", "field", "days"], "additionalProperties": False,
                        "properties": {"kind": {"type": "string"}, "field": {"type": "string"},
                                       "days": {"type": "integer", "minimum": 1}}}}}},
                    "responses": {"200": _ok("updated retention: kind, field, days, retention_days, and "
                                             "`warning` when days is shorter than [retention] interval_s (its "
                                             "values outlive it by up to the interval)"), "400": _BAD, "401": _AUTH, "429": _THROTTLED,
                                  "408": _err("body not received in time"), "413": _err("body too large"),
                                  "503": _err("no registry attached")}}},
        "/opendata": {"get": {"summary": "Open-data catalogue: title, description, publisher, contact, keywords, "
                                         "language ([opendata] language; also as Content-Language), licence, coverage, update frequency, the formats' absolute URLs, the data "
                                         "dictionary and the field-to-model mapping (docs/open-data.md, Catalogue)",
                              "tags": ["open data"],
                              "responses": {"200": {**_od_ok("index", "application/json"),
                                                    "content": {"application/json": {"schema": {"type": "object"}},
                                                                "text/html": {"schema": {"type": "string"}}},
                                                    "description": "index as JSON; a browser (text/html rated above "
                                                                   "JSON in Accept) gets it as a page for people"},
                                            "304": _OD_304,
                                            "400": _BAD, "406": _OD_406}}},
        "/opendata/catalog.jsonld": {"get": {
            "summary": "The open-data catalogue as DCAT-AP JSON-LD (dcat:Catalog, one dcat:Dataset, a "
                       "dcat:Distribution per format), for open-data portals' harvesters",
            "tags": ["open data"],
            "responses": {"200": _od_ok("DCAT-AP catalogue", "application/ld+json", also=("application/json",)),
                          "304": _OD_304, "400": _BAD, "406": _OD_406}}},
        "/opendata/ngsi-ld/v1/entities": {"get": {
            "summary": _entities_summary(etypes),
            "tags": ["open data"],
            "parameters": [{**_q("type", "entity type, or a comma list of them: entities of any listed type "
                                     f"(`type={','.join(etypes)}`)",
                                 {"type": "array", "minItems": 1,
                                  "items": {"type": "string", "enum": etypes}}),
                            "style": "form", "explode": False},
                           _q("options", "representation", {"type": "string",
                                                            "enum": ["normalized", "keyValues", "simplified"]})],
            "responses": {"200": _od_ok("entities", "application/ld+json", {"type": "array", "items": {"type": "object"}},
                                        ("application/json",)),
                          "304": _OD_304, "400": _BAD, "406": _OD_406, "503": _STORE}}},
        "/opendata/ngsi-ld/v1/entities/{entity_id}": {"get": {
            "summary": "One NGSI-LD entity", "tags": ["open data"],
            "parameters": [_p("entity_id", f"URN, e.g. urn:ngsi-ld:{(etypes or ['Streetlight'])[0]}:sl-001"),
                           _q("options", "representation", {"type": "string",
                                                            "enum": ["normalized", "keyValues", "simplified"]})],
            "responses": {"200": _od_ok("entity", "application/ld+json", also=("application/json",)), "304": _OD_304,
                          "400": _BAD, "404": _err("no such published entity (code `unknown_entity`)"),
                          "406": _OD_406, "503": _STORE}}},
        "/opendata/readings.csv": {"get": {
            "summary": "Released values as CSV, one row per device, stored zone, UTC hour and field, for the rows "
                       "whose period ends in (from, to] (at most 31 days per request, longer ranges 400; streamed "
                       "one UTC day at a time)",
            "tags": ["open data"],
            "parameters": [_CSV_FROM, _CSV_TO, _FIELD, _CSV_ZONE,
                           _q("withheld", "`omit` (default) or `include`: also a row per withheld noisy count "
                                          "(below k) with an empty `value`, and a trailing `status` column "
                                          "(`released` or `withheld`)",
                              {"type": "string", "enum": ["omit", "include"], "default": "omit"})],
            "responses": {"200": {**_od_ok("CSV with header hour,device,kind,zone,field,unit,aggregate,value,values,"
                                           "until (with withheld=include: ...,until,status)", "text/csv",
                                           {"type": "string"}),
                                  "headers": {**_OD_HEADERS,
                                              "Content-Disposition": _CSV_DISPOSITION}},
                          "304": _OD_304, "400": _BAD, "406": _OD_406,
                          "503": _err("the store cannot be read (code `backend_unavailable` or `store_timeout`) "
                                      "before the first row is sent; later the transfer is cut off instead")}}},
        "/opendata/privacy-budget.csv": {"get": {
            "summary": "Privacy budget spent: milli-ε per device, people-related field and UTC day (the day a "
                       "release's period ends), repeat releases (a period released again after a lost ledger) "
                       "included, for the UTC days that end in (from, to] (default: the last complete day); what "
                       "retention removed is not counted",
            "tags": ["open data"],
            "parameters": [_CSV_FROM, _CSV_TO,
                           _q("field", "comma-separated people-related (noisy count) fields of the privacy policy; "
                                       "another field or an empty item is 400 `bad_parameter`"),
                           _CSV_ZONE],
            "responses": {"200": {**_od_ok("CSV with header day,device,field,eps_milli_spent,releases,"
                                           "repeat_releases", "text/csv", {"type": "string"}),
                                  "headers": {**_OD_HEADERS, "Content-Disposition": _hdr(
                                      "`inline; filename=\"civicedge-privacy-budget-<first day>-<day after the "
                                      "last>.csv\"`")}},
                          "304": _OD_304, "400": _BAD, "406": _OD_406, "503": _err("the store cannot be read (code `backend_unavailable` or `store_timeout`) "
                                      "before the first row is sent; later the transfer is cut off instead")}}},
        "/opendata/devices.geojson": {"get": {
            "summary": "Published devices as GeoJSON Points with latest public values", "tags": ["open data"],
            "responses": {"200": _od_ok("FeatureCollection", "application/geo+json", also=("application/json",)),
                          "304": _OD_304, "400": _BAD, "406": _OD_406, "503": _STORE}}},
        "/api/routes/plan": {"get": {
            "summary": "Collection plan for a day: due bins, vehicles, order (mounted when gateway.routes is "
                       "available; see docs/routes.md). Overrides default to the [routes] table of gateway.toml; "
                       "other parameters are refused. Plans are cached per query for 5 minutes",
            "tags": ["read"],
            "parameters": [
                _q("date", "collection date, 2000-01-01 to 2099-12-31 (default today in the configured zone)",
                   {"oneOf": [{"type": "string", "format": "date"},
                              {"type": "string", "enum": ["today", "tomorrow"]}]}),
                _q("format", "answer format (default json)",
                   {"type": "string", "enum": ["json", "geojson", "csv"], "default": "json"}),
                _q("depot", "depot as LAT,LON in decimal degrees, e.g. 52.3700,4.8900 (required when gateway.toml "
                            "configures none)",
                   {"type": "string", "pattern": r"^\s*[-+]?\d+(\.\d+)?\s*,\s*[-+]?\d+(\.\d+)?\s*$"}),
                _q("vehicles", "number of vehicles", {"type": "integer", "minimum": 1, "maximum": 200}),
                _q("capacity", "capacity of each vehicle in litres of bin contents",
                   {"type": "number", "minimum": MIN_CAPACITY_L, "maximum": 1000000}),
                _q("threshold", "fill at or above which a bin is due: a fraction in (0, 1] such as 0.8, or a "
                                "percentage such as 80%", {"type": "string", "examples": ["0.8", "80%"]}),
            ],
            "responses": {
                "200": {"description": "the plan (routes, unserved, skipped, warnings); no bins due is an empty "
                                       "plan with a `notice`. Stops and unserved bins carry `reading_at` and "
                                       "`reading_age_h` (their latest fill reading), stops an estimated `eta`, routes "
                                       "`start`, `end`, `duration_min` and `return_leg_m` (times from [routes] "
                                       "speed_kmh and service_s). CSV rows have a `kind`: start, stop, return, "
                                       "unserved, skipped, warning, or one none row when nothing is due (errors are "
                                       "answered as JSON, not as an error row)",
                        "content": {"application/json": {"schema": {"type": "object"}},
                                    "application/geo+json": {"schema": {"type": "object"}},
                                    "text/csv": {"schema": {"type": "string"}}}},
                "400": _err("bad input (code `bad_input`, `param` names it) or unusable distance matrix "
                            "(code `matrix`)"),
                "422": _err("a vehicle's capacity is smaller than one bin's expected load (code `capacity`)"),
                "500": _err("the solver found no solution (code `solver`) or planning failed unexpectedly "
                            "(code `internal`)"),
                "429": {**_err("this client already has an uncached plan in flight, or started 10 in the last 10 "
                               "minutes (code `too_many_plans`); cached answers and joining the same query do not "
                               "count"),
                        "headers": {"Retry-After": _hdr("seconds until this client may start another plan")}},
                "503": {**_err("bin data unreadable: report store or registry (code `bin_data`); the planner is "
                               "busy with a plan and a full queue (code `busy`); the plan ran past its time limit + "
                               "60 s and its worker was replaced (code `planning_timeout`); the worker died (code "
                               "`planner_restarted`); the gateway is stopping (code `planner_stopped`); the route solver's package "
                               "(ortools) cannot be imported on this machine (code `solver_unavailable`)"),
                        "headers": {"Retry-After": _hdr("except with `bin_data` and `solver_unavailable`: seconds "
                                                        "until a retry is likely to be served")}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "civicedge gateway", "version": "1",
                 "description": "Devices, released readings, aggregates, open data and administration of a "
                                "civicedge gateway. Errors are JSON: {\"error\": {\"code\", \"message\", \"param\"}}. "
                                "Each operation lists the statuses it answers; besides those, any path answers 400 "
                                "host_not_allowed for a Host that names no gateway, 404 not_found, 405 "
                                "method_not_allowed (with Allow), 413 body_too_large for a body above the limit, "
                                "415 unsupported_encoding for a body in a Content-Encoding other than gzip, deflate "
                                "or identity (with Accept-Encoding), and 500 internal on a defect; an admin path "
                                "answers these body errors only after its token check."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "param": {"type": "string"}}}}},
                "Health": {"type": "object", "required": ["status", "reasons"], "properties": {
                    "status": {"type": "string", "enum": ["ok", "degraded"]},
                    "reasons": {"type": "array", "items": {"type": "string"}}, "checks": {"type": "object"},
                    "severity": {"type": "string", "enum": [health.OK, health.WARNING, health.CRITICAL],
                                 "description": "the worst of the problems' severities; ok without problems"},
                    "problems": {"type": "array", "items": {
                        "type": "object", "required": ["code", "severity", "message"], "properties": {
                            "code": {"type": "string", "enum": sorted(health.SEVERITIES),
                                     "description": "stable code (docs/api.md, Health problem codes)"},
                            "severity": {"type": "string", "enum": [health.WARNING, health.CRITICAL]},
                            "message": {"type": "string", "description": "the reason, for people"},
                            "subject": {"type": "string", "description": "the link it is about, if any"}}}}}},
                "ReadingsPage": {"type": "object", "required": ["from", "to", "readings", "count", "truncated", "next"],
                                 "properties": {
                    "from": {"type": "integer"}, "to": {"type": "integer"},
                    "readings": {"type": "array", "items": {"type": "object", "properties": {
                        "device": {"type": "string"}, "kind": {"type": "string"}, "zone": {"type": "string"},
                        "field": {"type": "string"}, "start": {"type": "integer"}, "length": {"type": "integer"},
                        "value": {"type": "integer"}}}},
                    "count": {"type": "integer"},
                    "truncated": {"type": "boolean", "description": "more readings follow this page"},
                    "next": {"type": ["string", "null"],
                             "description": "cursor of the following page (pass as `after`); null on the last page"}}},
                "Device": {"type": "object", "required": ["id", "kind", "zone", "lat", "lon", "status"], "properties": {
                    "id": {"type": "string"}, "kind": {"type": "string", "enum": kinds},
                    "zone": {"type": "string"}, "lat": {"type": "number"}, "lon": {"type": "number"},
                    "revoked": {"type": "boolean"},
                    "retired": {"type": "boolean",
                                "description": "its board left this gateway (moved or taken out of service)"},
                    "status": {"type": "string", "enum": ["ok", "alarm", "stale", "never", "revoked", "retired"]},
                    "last_seen": {"type": ["integer", "null"]}, "link": {"type": ["string", "null"]},
                    "fw": {"type": ["string", "null"],
                           "description": "firmware version its last stored report names (null: none named)"},
                    "latest": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "latest_at": {"type": "object", "additionalProperties": {"type": "integer"},
                                  "description": "per field of latest: unix seconds at the end of its period"},
                    "last_end": {"type": ["integer", "null"],
                                 "description": "unix seconds at the end of the period of its last stored report, by "
                                                "the device's clock (later than last_seen: its clock runs ahead)"},
                    "alarms": {"type": "array", "items": {"type": "object"}}}},
            },
        },
    }
