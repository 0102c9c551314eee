"""Admin endpoints behind the bearer token: devices (list, enroll, move, revoke, retire, reinstate, rotate key,
remove, highest stored seq), retention.

Every change leaves a WARNING audit line, and so does every refused write of a caller holding the token
(:func:`_audited`); a caller without it is logged by :class:`gateway.web.auth.AdminToken`."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from typing import Any, Awaitable, Callable, Mapping, NamedTuple

from aiohttp import web

from gateway.errors import GatewayError
from gateway.registry import decimal_text, unsigned_zero
from gateway.registry.zones import normalize_zone
from gateway.web import params
from gateway.web.bodies import check_body_headers, read_json_body, require_no_body
from gateway.web.context import ctx_of, json_response
from gateway.web.errors import BadParameter, WebError
from gateway.web.forwarded import client_label
from gateway.web.read_api import device_json
from gateway.web.retention import policy_retention
from gateway.web.revocation import REINSTATED_OPEN_DATA, RETIRED_OPEN_DATA, REVOKED_OPEN_DATA

logger = logging.getLogger(__name__)
ROUTES = web.RouteTableDef()
MAX_RETENTION_DAYS = 36500


def _authorize(request: web.Request) -> None:
    """Check the bearer token, then refuse any query parameter: no admin endpoint takes one, and a
    write must never run when the caller meant something else (``?dry_run=1`` is not a dry run); then
    the body's headers (413 too large, 415 a coding not decoded). In that order: a caller without the
    token learns nothing of the query or body handling (gateway.web.app leaves /api/admin/ to this)."""
    ctx = ctx_of(request)
    ctx.token.check(request)
    request[_AUTHORIZED] = True  # from here on a refused write is this module's audit line (see _audited)
    params.reject_unknown(request.query, ())
    check_body_headers(request, ctx.max_body_bytes)


def _audit(request: web.Request, message: str, *args: Any) -> None:
    """Log an admin change, or a refused admin write (:func:`_audited`), as a WARNING audit line: the quiet
    gateway (warnings only by default) keeps it.

    The line ends with the caller's address (``[from 192.0.2.7]``), as a refused call's line names it;
    behind a proxy of ``[http] trusted_proxies`` the client's (``[from 192.0.2.7 via proxy 127.0.0.1]``,
    gateway.web.forwarded), behind any other the proxy's. Never the token nor a key.
    """
    logger.warning("admin API: " + message + " [from %s]", *args, client_label(request))


# Set by _authorize once the token matched: a refusal before that is AdminToken's (rate-limited) line, one after
# it :func:`_audited`'s (so each refused call is logged once, and a caller without the token cannot flood the log).
_AUTHORIZED = web.RequestKey("civicedge.admin_authorized", bool)
# What a write was about to do, named once its body was read (``_audited`` adds it to a refusal's line).
_ATTEMPT = web.RequestKey("civicedge.admin_attempt", str)
# Body and parameter names a refusal's line may name (``param`` of the error). Any other ``param`` is the
# caller's own text (an unknown body key or query parameter; a key could be sent as one): never logged.
_LOGGED_PARAMS = frozenset(("body", "device_id", "kind", "zone", "lat", "lon", "key", "replace",
                            "expect_key_sha256", "field", "days"))
_Handler = Callable[[web.Request], Awaitable[web.Response]]


def _audited(handler: _Handler) -> _Handler:
    """Wrap an admin write so that a refused one leaves a WARNING audit line, as a change does.

    Once the token matched (a refusal before that is logged by :class:`gateway.web.auth.AdminToken`, at most
    one line per 10 s counting the others), every error answer (400 bad body, 404, 409 such as a
    compare-and-swap ``conflict``, 413, 415, 408, 503) and a backend failure leave one line::

        admin API: refused PUT /api/admin/devices/{device_id} (device sl-09; a key replacement expecting
        a key SHA-256): 409 conflict, param device_id [from 192.0.2.7]

    Who (the caller's address, as :func:`_audit`), what (method, the route's path template, the device id when
    it is a valid one, what the body asked for once read) and why (status, error code, the parameter at fault
    when it is one of the API's own names). Never the error's message, a body value, the token nor a key: a
    message may quote the caller's text (an unknown body key, 40 characters of it), and the caller's text may
    be key material.
    """
    @functools.wraps(handler)
    async def audited(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except WebError as err:
            if request.get(_AUTHORIZED):
                _audit_refusal(request, "%d %s" % (err.status, err.code), err.param)
            raise
        except GatewayError as err:  # gateway.web.app answers 503 backend_unavailable (and logs the error)
            if request.get(_AUTHORIZED):
                _audit_refusal(request, "503 backend_unavailable (%s)" % type(err).__name__, None)
            raise
    return audited


def _audit_refusal(request: web.Request, why: str, param: str | None) -> None:
    """The line of :func:`_audited` (see there)."""
    route = request.match_info.route.resource
    path = route.canonical if route is not None else "?"
    what = []
    if "device_id" in request.match_info:
        shown = request.match_info["device_id"]
        what.append("device %s" % shown if params.DEVICE_ID_RE.fullmatch(shown) else "an invalid device id")
    if _ATTEMPT in request:
        what.append(request[_ATTEMPT])
    at_fault = "" if param is None else ", param %s" % (param if param in _LOGGED_PARAMS else "(not one of the API's)")
    _audit(request, "refused %s %s%s: %s%s", request.method, path, " (%s)" % "; ".join(what) if what else "",
           why, at_fault)


def _shown(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters for an error message (a body may be 64 KB)."""
    return text if len(text) <= limit else text[:limit] + "..."


def _unknown_keys(unknown: list[str]) -> BadParameter:
    """400 naming the first few unknown body keys, each cut short."""
    names = ", ".join(_shown(k) for k in unknown[:3])
    if len(unknown) > 3:
        names += " and %d more" % (len(unknown) - 3)
    return BadParameter(f"unknown key(s) in body: {names}", param=_shown(unknown[0]))


@ROUTES.get("/api/admin/devices")
async def admin_devices(request: web.Request) -> web.Response:
    """All devices including revoked ones (never keys).

    ``lat``/``lon`` are the registry's decimal strings, as ``PUT`` takes them and ``devices list --json``
    prints them ("4.80", not the public API's number 4.8): a device read here and written back is the
    same registration (``unchanged``). Without a registry no location is known: null.
    """
    _authorize(request)
    ctx = ctx_of(request)
    now = ctx.now()
    fleet = await ctx.fleet.devices()
    # Off the event loop as enroll/move: it reads every registry row.
    places = await asyncio.to_thread(ctx.admin.locations) if ctx.admin is not None else {}
    devices = []
    for d in fleet:
        item = device_json(d, now=now, policy=ctx.policy)
        item["lat"], item["lon"] = places.get(d.id, (None, None))
        devices.append(item)
    return json_response({"devices": devices, "count": len(devices)})


ENROLL_KEYS = ("kind", "zone", "lat", "lon", "key", "replace", "expect_key_sha256")


class Enrollment(NamedTuple):
    """A ``PUT /api/admin/devices/{id}`` body, checked for types and shape."""

    kind: str
    zone: str
    lat: str
    lon: str
    key: bytes
    replace: bool
    expect_key_sha256: bytes | None


def _validate_enrollment(body: Any) -> Enrollment:
    """Types and shape only (the registry checks the values); never echoes the key."""
    if not isinstance(body, dict):
        raise BadParameter('body must be a JSON object {"kind", "zone", "lat", "lon", "key"[, "replace"]'
                           '[, "expect_key_sha256"]}', param="body")
    unknown = sorted(set(body) - set(ENROLL_KEYS))
    if unknown:
        raise _unknown_keys(unknown)
    for name in ENROLL_KEYS[:5]:
        if name not in body:
            raise BadParameter(f"body lacks '{name}'", param=name)
        if name in ("lat", "lon"):
            continue
        if not isinstance(body[name], str):
            raise BadParameter(f"'{name}' must be a string", param=name)
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise BadParameter("'replace' must be true or false", param="replace")
    key = _hex32(body["key"])
    if key is None:
        raise BadParameter("'key' must be 64 hex characters (the 32-byte device key)", param="key")
    expected = None
    if body.get("expect_key_sha256") is not None:
        expected = _hex32(body["expect_key_sha256"])
        if expected is None:
            raise BadParameter("'expect_key_sha256' must be 64 hex characters (the SHA-256 of the key the device "
                               "must still hold)", param="expect_key_sha256")
        if not replace:
            # Without replace another key is refused anyway: an expectation there is a caller's mistake.
            raise BadParameter("'expect_key_sha256' replaces a key only with '\"replace\": true'",
                               param="expect_key_sha256")
    return Enrollment(body["kind"], body["zone"], coordinate(body, "lat"), coordinate(body, "lon"), key, replace,
                      expected)


def _hex32(value: Any) -> bytes | None:
    """The 32 bytes written as 64 hex characters in ``value``, else None (never quoted back).

    Matched whole before decoding: ``bytes.fromhex`` skips whitespace, so ``"  " + "ab" * 31`` would pass the length
    check as 31 bytes and the registry refuse it later with a less clear message."""
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        return None
    return bytes.fromhex(value)


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


MAX_COORDINATE_CHARS = 32
"""Longest ``lat``/``lon`` string taken: -180.123456789 is 14 characters; anything longer is refused
before it is parsed or quoted back (a body may be 64 KB)."""


def coordinate(body: Mapping[str, Any], name: str) -> str:
    """``lat``/``lon`` of a body as the registry's decimal string.

    A string is taken as written (it keeps the surveyor's digits: "4.80"), up to
    :data:`MAX_COORDINATE_CHARS` characters; a JSON number is written out in plain decimal without
    float noise by the registry's ``decimal_text`` (the trailing zeros of 4.80 are gone once parsed,
    so send a string to keep them), and refused when it has more than 3 digits before the point or 9
    after it (``1e308``, ``1e-300``: 1e-9 degree is ~0.1 mm, finer than any survey). A negative zero
    ("-0", "-0.0", -0.0) is stored without its sign. The registry checks the digits and the range.
    """
    value = body[name]
    if isinstance(value, str):
        if len(value) > MAX_COORDINATE_CHARS:
            raise BadParameter(f"'{name}' is {len(value)} characters long: a coordinate is a decimal number of at "
                               f"most {MAX_COORDINATE_CHARS} characters (\"52.3702\")", param=name)
        return unsigned_zero(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadParameter(f"'{name}' must be a decimal number, as a string (\"52.3702\") or a JSON number",
                           param=name)
    try:
        return decimal_text(value)
    except ValueError as exc:
        raise BadParameter(f"'{name}' {exc}", param=name) from None


@ROUTES.put("/api/admin/devices/{device_id}")
@_audited
async def enroll_device(request: web.Request) -> web.Response:
    """Register a device with the key its provisioning tool generated (``civicedge provision --gateway``).

    Idempotent: the same identity and key again answers 200 ``unchanged``; a new device 201 ``added``;
    another key for a registered device 409 unless ``replace`` is true (then 200 ``replaced``, the old key
    stops working). Enrolling never moves a device (other kind, zone or location: 409 ``moved``; ``/move``
    does it explicitly), a revoked id stays revoked (409) and a retired one is not taken back (409
    ``retired``: ``/reinstate`` does it). The key is never logged nor echoed.

    ``expect_key_sha256`` (with ``replace``): a compare-and-swap, the key is replaced only while the
    device holds the key of that SHA-256 (checked under the registry's write lock): 409 ``conflict``
    when it holds another (a take-over or key rotation made meanwhile is kept), 404 ``unknown_device``
    when the id is not registered (never added). ``civicedge provision`` puts a registration back so.
    """
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    admin = ctx.require_admin()
    body = _validate_enrollment(await read_json_body(request))
    request[_ATTEMPT] = ("a key replacement expecting a key SHA-256" if body.expect_key_sha256 is not None
                         else "an enrollment with replace" if body.replace else "an enrollment")
    # Off the event loop: enrolling compares the key with every other device's key file, which on a
    # large registry would pause ingest and ACKs (the registry's SQLite connection is serialized).
    result = dict(await asyncio.to_thread(admin.enroll, device_id, kind=body.kind, zone=body.zone, lat=body.lat,
                                          lon=body.lon, key=body.key, replace=body.replace,
                                          expect_key_sha256=body.expect_key_sha256))
    kind, zone, lat, lon = body.kind, body.zone, body.lat, body.lon
    # WARNING, as revoke/rotate/move: a device added, or a key replaced, over the network is an admin
    # change the quiet gateway (warnings only by default) must still record. Never the key itself.
    if result["result"] == "added":
        _audit(request, "added device %s (%s, zone %s at %s,%s; key version %s)", device_id, kind,
               normalize_zone(zone), lat, lon, result["key_version"])  # as stored (NFC), so a grep finds it
    elif result["result"] == "replaced":
        _audit(request, "replaced the key of device %s (key version %s): the old key no longer works", device_id,
               result["key_version"])
    return json_response({"device": device_id, **result}, status=201 if result["result"] == "added" else 200)


@ROUTES.delete("/api/admin/devices/{device_id}")
@_audited
async def remove_device(request: web.Request) -> web.Response:
    """Delete a device registered by mistake and never heard from (a typo'd id, a board never installed): its
    registry row and key file, together; the twin of ``civicedge gateway devices remove`` (one path:
    :meth:`gateway.registry.devices.Registry.remove`). ``DELETE`` on the resource that ``PUT`` creates: the
    registration goes, not a state of it (``/revoke``, ``/retire`` keep the row).

    Only a device the report store holds nothing of (no report, ACK floor, replay protection or provenance
    entry) is removed: 409 ``heard_from`` otherwise (the message names the API's retire and revoke), 409
    ``revoked`` for a revoked one (its row keeps the id refused), 404 ``unknown_device``; nothing changes then.
    The writer may hold a report of the device accepted just before: the device is retired for its removal (its
    frames refused from then on), the gateway's ingest waited for until it committed every report of the device
    it accepted (on a worker thread; no wait when none is in flight, at most 30 s: 503 ``not_settled``, put
    back; the gateway's stop waits for it, at most 3 s: ``RegistryAdmin.close``), the store checked again, and a
    report stored meanwhile puts the device back as it was (409 ``heard_from``). Changed by another request or
    process during the wait: 409 ``reinstated``, ``retired`` (a retire meanwhile stands, also after a reinstate:
    the device stays retired) or ``changed`` (moved or key rotated: put back; reinstated and retired for another
    removal: that removal's mark stays). 503 ``registry`` naming the key file when it could not be deleted
    (nothing removed), ``storage_partial`` when the device is left retired (the message says what to do). The
    key is never read into the answer nor a log.
    """
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    await require_no_body(request)  # 400 for any body: it takes none, and a removal is irreversible
    admin = ctx.require_admin()
    # Off the event loop: it checks the store, retires the device, waits for the ingest's commits, checks the
    # store again and deletes. Its worker thread goes on when this handler is cancelled (the gateway's stop
    # waits for it): the audit line is then written where the removal ends (_RemovalAudit).
    audit = _RemovalAudit(request, device_id)
    try:
        result = dict(await asyncio.to_thread(admin.remove, device_id, ended=audit.ended))
    except asyncio.CancelledError:
        audit.abandoned()
        raise
    _audit_removed(request, device_id, result)
    return json_response({"device": device_id, "removed": True, **result})


def _audit_removed(request: web.Request, device_id: str, result: Mapping[str, str]) -> None:
    """The audit line of a device removed over the admin API."""
    _audit(request, "removed device %s (%s, zone %s; never heard from: its registry row and key file are deleted, "
           "its frames are refused as from an unknown device)", device_id, result["kind"], result["zone"])


class _RemovalAudit:
    """The audit of a removal whose handler is cancelled before the removal ended (the web surface's shutdown at
    the gateway's stop, which then waits for the removal): its line, removed or refused, as the handler and
    :func:`_audited` write it, is written by whichever of the two sides comes last, exactly once: the worker
    thread when it ends after the cancel, else the cancelled handler with the outcome the worker left."""

    def __init__(self, request: web.Request, device_id: str) -> None:
        self._request = request
        self._device_id = device_id
        self._lock = threading.Lock()
        self._gone = False  # the handler was cancelled: it writes no line itself
        self._outcome: tuple[Mapping[str, str] | None, BaseException | None] | None = None

    def ended(self, result: Mapping[str, str] | None, error: BaseException | None) -> None:
        """On the removal's worker thread, as it ends (before the gateway's stop stops waiting for it)."""
        with self._lock:
            self._outcome = (result, error)
            gone = self._gone
        if gone:
            self._write(result, error)

    def abandoned(self) -> None:
        """In the handler, cancelled: the line is written now if the removal already ended, else as it ends."""
        with self._lock:
            self._gone = True
            outcome = self._outcome
        if outcome is not None:
            self._write(*outcome)

    def _write(self, result: Mapping[str, str] | None, error: BaseException | None) -> None:
        if not self._request.get(_AUTHORIZED):
            return
        if result is not None:
            _audit_removed(self._request, self._device_id, result)
        elif isinstance(error, WebError):
            _audit_refusal(self._request, "%d %s" % (error.status, error.code), error.param)
        elif isinstance(error, GatewayError):
            _audit_refusal(self._request, "503 backend_unavailable (%s)" % type(error).__name__, None)
        else:
            _audit_refusal(self._request, "ended by %s" % type(error).__name__, None)


@ROUTES.get("/api/admin/devices/{device_id}/seq")
async def device_seq(request: web.Request) -> web.Response:
    """The highest report seq the gateway stored under a registered id (0 when none): where a board
    taking the id over must start (``civicedge provision --gateway`` raises the board's counter above
    it); else the gateway refuses its reports as ``seq_reused``. 404 ``unknown_device`` for an id not in
    the registry. Counts stored reports, window duplicates and the seqs report retention removed."""
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    admin = ctx.require_admin()
    # Off the event loop, as every admin read of the registry; the store on its read thread.
    await asyncio.to_thread(admin.require_registered, device_id)
    highest = await ctx.fleet.highest_seq(device_id)
    return json_response({"device": device_id, "highest_seq": highest})


@ROUTES.post("/api/admin/devices/{device_id}/revoke")
@_audited
async def revoke_device(request: web.Request) -> web.Response:
    """Revoke a device's key: its reports are rejected from now on. The answer's ``open_data`` says what
    happens to its public data (:data:`gateway.web.revocation.REVOKED_OPEN_DATA`)."""
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    await require_no_body(request)  # 400 for any body: it takes none, and acting anyway may be irreversible
    admin = ctx.require_admin()
    await asyncio.to_thread(admin.revoke, device_id)  # 404 unknown_device, 409 already_revoked
    # WARNING: the gateway logs warnings only by default, and a device cut off over the network must
    # leave an audit line there (the registry logs the change itself at INFO).
    _audit(request, "revoked device %s (open data: %s)", device_id, REVOKED_OPEN_DATA)
    return json_response({"device": device_id, "revoked": True, "open_data": REVOKED_OPEN_DATA})


@ROUTES.post("/api/admin/devices/{device_id}/retire")
@_audited
async def retire_device(request: web.Request) -> web.Response:
    """Retire a device whose board left this gateway (moved to another gateway, or taken out of service).
    Not a revocation: its key and past reports are kept, it is no longer counted silent (status ``retired``),
    and its frames are refused (rejection reason ``retired``) and never acknowledged. Its entity leaves the
    open-data listings, its past rows stay in the CSV: the answer's ``open_data`` says so
    (:data:`gateway.web.revocation.RETIRED_OPEN_DATA`). ``/reinstate`` takes it back."""
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    await require_no_body(request)  # 400 for any body: it takes none, and acting anyway may be irreversible
    admin = ctx.require_admin()
    await asyncio.to_thread(admin.retire, device_id)  # 404 unknown_device, 409 already_retired / revoked
    _audit(request, "retired device %s (frames refused until it is reinstated; key and reports kept; open data: %s)",
           device_id, RETIRED_OPEN_DATA)
    return json_response({"device": device_id, "retired": True, "open_data": RETIRED_OPEN_DATA})


@ROUTES.post("/api/admin/devices/{device_id}/reinstate")
@_audited
async def reinstate_device(request: web.Request) -> web.Response:
    """Take a retired device back: its frames are accepted (and acknowledged) again, under the key it kept, and
    its entity is back in the open-data listings (``open_data``: :data:`gateway.web.revocation.REINSTATED_OPEN_DATA`).
    ``warning`` (only then): its key is not usable (a removal cut off after deleting its key file, a key file
    lost): none of its frames can be verified; it says what to do (never the key)."""
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    await require_no_body(request)  # 400 for any body: it takes none, and acting anyway may be irreversible
    admin = ctx.require_admin()
    # 404 unknown_device, 409 not_retired / revoked; a warning when its key is not usable (a removal cut off)
    warning = await asyncio.to_thread(admin.reinstate, device_id)
    _audit(request, "reinstated device %s (its frames are accepted again; open data: %s)%s", device_id,
           REINSTATED_OPEN_DATA, "" if warning is None else "; but %s" % warning)
    answer = {"device": device_id, "retired": False, "open_data": REINSTATED_OPEN_DATA}
    if warning is not None:
        answer["warning"] = warning
    return json_response(answer)


MOVE_KEYS = ("lat", "lon", "zone")


def _validate_move(body: Any) -> tuple[str, str, str | None]:
    """Types and shape of a move body (the registry checks the values)."""
    if not isinstance(body, dict):
        raise BadParameter('body must be a JSON object {"lat", "lon"[, "zone"]}', param="body")
    unknown = sorted(set(body) - set(MOVE_KEYS))
    if unknown:
        raise _unknown_keys(unknown)
    for name in ("lat", "lon"):
        if name not in body:
            raise BadParameter(f"body lacks '{name}'", param=name)
    zone = body.get("zone")
    if zone is not None and not isinstance(zone, str):
        raise BadParameter("'zone' must be a string", param="zone")
    return coordinate(body, "lat"), coordinate(body, "lon"), zone


@ROUTES.post("/api/admin/devices/{device_id}/move")
@_audited
async def move_device(request: web.Request) -> web.Response:
    """Correct or change a device's location (and zone): the explicit move that enrolling refuses
    (409 ``moved``). Only the registry row changes; the key stays, stored reports keep their zone."""
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    admin = ctx.require_admin()
    lat, lon, zone = _validate_move(await read_json_body(request))
    result = dict(await asyncio.to_thread(admin.move, device_id, lat=lat, lon=lon, zone=zone))
    if result["result"] == "moved":
        was = result["was"]
        _audit(request, "moved device %s from zone %s at %s,%s to zone %s at %s,%s", device_id, was["zone"],
               was["lat"], was["lon"], result["zone"], result["lat"], result["lon"])
    return json_response({"device": device_id, **result})


@ROUTES.post("/api/admin/devices/{device_id}/rotate-key")
@_audited
async def rotate_key(request: web.Request) -> web.Response:
    """Generate a new key for a device; the answer says where it was written, never the key."""
    _authorize(request)
    ctx = ctx_of(request)
    device_id = params.parse_device_id(request.match_info["device_id"], "device_id")
    await require_no_body(request)  # 400 for any body: it takes none, and acting anyway may be irreversible
    admin = ctx.require_admin()
    # Off the event loop like enrolling: it writes and syncs a key file and the registry database.
    result = dict(await asyncio.to_thread(admin.rotate_key, device_id))  # 404 unknown_device, 409 revoked
    _audit(request, "rotated the key of device %s (key version %s)", device_id, result["key_version"])
    return json_response({"device": device_id, "rotated": True, **result})


def _policy_retention(policy: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """:func:`policy_retention` as JSON: ``{kind: {field: days}}``, every kind of the policy."""
    by_kind: dict[str, dict[str, int]] = {kind: {} for kind in policy.get("kinds", {})}
    for (kind, name), days in policy_retention(policy).items():
        by_kind[kind][name] = days
    return by_kind


@ROUTES.get("/api/admin/retention")
async def get_retention(request: web.Request) -> web.Response:
    """Effective retention per kind and field, next to the policy's maximum."""
    _authorize(request)
    ctx = ctx_of(request)
    admin = ctx.require_admin()
    return json_response({"retention_days": admin.retention(), "policy_max_days": _policy_retention(ctx.policy)})


def _validate_retention(body: Any, policy: Mapping[str, Any]) -> tuple[str, str, int]:
    if not isinstance(body, dict):
        raise BadParameter("body must be a JSON object {\"kind\", \"field\", \"days\"}", param="body")
    unknown = sorted(set(body) - {"kind", "field", "days"})
    if unknown:
        raise _unknown_keys(unknown)
    for key in ("kind", "field", "days"):
        if key not in body:
            raise BadParameter(f"body lacks '{key}'", param=key)
    kind, fname, days = body["kind"], body["field"], body["days"]
    maxima = _policy_retention(policy)
    if not isinstance(kind, str) or kind not in maxima:
        raise BadParameter(f"'kind' must be one of {', '.join(sorted(maxima))}", param="kind")
    if not isinstance(fname, str) or fname not in maxima[kind]:
        raise BadParameter(f"'field' must be one of {', '.join(sorted(maxima[kind]))} for {kind}", param="field")
    if isinstance(days, bool) or not isinstance(days, int):
        raise BadParameter("'days' must be an integer", param="days")
    if not 1 <= days <= maxima[kind][fname]:
        raise BadParameter(
            f"'days' must be between 1 and {maxima[kind][fname]} (the policy's maximum for {kind}.{fname})",
            param="days",
        )
    return kind, fname, days


@ROUTES.put("/api/admin/retention")
@_audited
async def set_retention(request: web.Request) -> web.Response:
    """Shorten the retention of one field of a kind (never beyond the privacy policy)."""
    _authorize(request)
    ctx = ctx_of(request)
    admin = ctx.require_admin()
    kind, fname, days = _validate_retention(await read_json_body(request), ctx.policy)
    warning = admin.set_retention(kind, fname, days)
    # An audit line the quiet gateway keeps (WARNING, as every admin change): stored readings go sooner.
    _audit(request, "set the retention of %s.%s to %s days", kind, fname, days)
    answer: dict[str, Any] = {"kind": kind, "field": fname, "days": days, "retention_days": admin.retention()}
    if warning is not None:  # shorter than [retention] interval_s: the caller should know, not only the log
        answer["warning"] = warning
    return json_response(answer)
