"""Register a provisioned device with the gateway: through its registry directory (on the
gateway host, or a copy synced to it) or through its admin HTTP API (``PUT /api/admin/devices/{id}``).

Both end in :meth:`gateway.registry.Registry.enroll`, so they accept and refuse the same things.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import shlex
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from gateway.errors import RegistryError
from gateway.registry import Registry, same_decimal
from hil.field.errors import GatewayRegistrationError
from hil.field.identity import Identity

log = logging.getLogger(__name__)


class Registration(Enum):
    """What registering did."""

    ADDED = "added"
    UNCHANGED = "unchanged"
    REPLACED = "replaced"


@dataclass(frozen=True)
class Registered:
    """A device as the registry directory holds it (``repr`` hides the key)."""

    kind: str
    zone: str
    lat: str
    lon: str
    revoked: bool
    key: bytes | None = field(repr=False)
    key_problem: str | None = None  # why ``key`` is None: e.g. "no key file at .../keys/ID.key"
    retired: bool = False  # left this gateway (moved to another one, taken out of service): reports refused


def registered_device(registry_dir: Path, device_id: str) -> Registered | None:
    """The registration of ``device_id`` in the registry directory, or None.

    A registration whose key file is missing or unreadable (an interrupted registration of an older
    version, a file removed by hand) has ``key`` None and says why in ``key_problem``.
    """
    reg = _open(registry_dir)
    try:
        rec = reg.lookup(device_id)
        if rec is None:
            return None
        problem = reg.key_problem(device_id)
        key = reg.key(device_id) if problem is None else None
        return Registered(rec.kind, rec.zone, rec.lat, rec.lon, bool(rec.revoked), key, problem, bool(rec.retired))
    except RegistryError as exc:
        raise GatewayRegistrationError(f"cannot read registry {registry_dir}: {exc}",
                                       registry=str(registry_dir)) from exc
    finally:
        reg.close()


def registry_problem(registry_dir: Path, identity: Identity, *, port: str, unsent: int = 0) -> tuple[str, str | None]:
    """How the registry holds the board's identity: a status line, and the problem with its next step.

    The problem is None when the id is registered with exactly this identity and key. Otherwise it
    says why the gateway refuses (or misfiles) the board's reports and which command repairs it:
    ``provision --force`` alone is refused for a key the board does not hold, ``--take-over`` too.
    ``unsent``: the reports in the board's outbox. Re-keying drops them, so a ``--force`` command gets
    ``--discard-unsent`` where the gateway can never accept them (a key it does not hold, a revoked
    id; always, as the running firmware keeps adding to them) and a note where it could (they are sent
    once the registration matches).
    """
    # The gateway refuses every report of the board: check has just restarted its firmware, so the outbox
    # refills after this count; the repair drops them whatever the count (they can never be delivered).
    lost = "" if not unsent else (f" (its {unsent} un-sent report(s) are framed under a key the gateway refuses: "
                                  "they can never be delivered)")
    rec = registered_device(registry_dir, identity.id)

    def provision(device_id: str, zone: str, lat: str, lon: str, *flags: str) -> str:
        # Every echoed argument is shell-quoted: a zone may hold spaces ("old town"), a path anything.
        return shlex.join(["civicedge", "provision", "--port", port, "--id", device_id, "--zone", zone,
                           "--location", f"{lat},{lon}", "--registry", str(registry_dir), *flags])

    same_place = (identity.id, identity.zone, identity.lat, identity.lon)
    if rec is None:
        return ("registry: NOT REGISTERED",
                f"{identity.id} is not in the registry {registry_dir}: the gateway refuses its reports; run "
                f"{provision(*same_place)} (registers the key the board holds)")
    if rec.revoked:
        return ("registry: REVOKED",
                f"{identity.id} is revoked in the registry: the gateway refuses its reports and a revoked id stays "
                f"revoked; provision the board under a new id: "
                f"{provision('NEW-ID', identity.zone, identity.lat, identity.lon, '--force', '--discard-unsent')}"
                f"{lost}")
    if rec.retired:
        # Reinstated first: a registration of a retired id is refused, so no provision command helps until then.
        reinstate = shlex.join(["civicedge", "gateway", "devices", "reinstate", identity.id,
                                "--registry", str(registry_dir)])
        # A board re-keyed elsewhere meanwhile: reinstating alone leaves it refused (hmac), so say so now.
        if rec.key is None:
            rekey = f"; and the registry holds it without a usable key ({rec.key_problem})"
        elif not hmac.compare_digest(rec.key, identity.key):
            rekey = "; and it holds another key than the board's"
        else:
            rekey = ""
        if rekey:
            rekey += (f": once reinstated, give the board a new key and register it: "
                      f"{provision(*same_place, '--force', '--take-over', '--discard-unsent')}{lost}")
        return ("registry: RETIRED",
                f"{identity.id} is retired at this gateway (moved to another gateway or taken out of service): its "
                f"reports are refused and not acknowledged; if the board is back here: {reinstate}{rekey}")
    same_meta = (rec.kind, rec.zone) == (identity.kind, identity.zone) and same_decimal(
        rec.lat, identity.lat) and same_decimal(rec.lon, identity.lon)
    if not same_meta:
        return ("registry: REGISTERED AS ANOTHER KIND, ZONE OR LOCATION",
                f"the registry holds {identity.id} as a {rec.kind} in zone {rec.zone!r} at {rec.lat},{rec.lon}, the "
                f"board says a {identity.kind} in zone {identity.zone!r} at {identity.lat},{identity.lon}; "
                f"re-provision the board with the registered values "
                f"({provision(identity.id, rec.zone, rec.lat, rec.lon, '--force')}) or under a new id"
                + ("" if not unsent else f"; the board holds {unsent} un-sent report(s) that re-keying drops: "
                   "provision refuses until they are sent, --discard-unsent drops them"))
    if rec.key is None:
        return ("registry: REGISTERED WITHOUT A USABLE KEY",
                f"the registry holds {identity.id} without a usable key ({rec.key_problem}; an interrupted "
                f"provision?): the gateway refuses its reports; give the board a new key and register it: "
                f"{provision(*same_place, '--force', '--take-over', '--discard-unsent')}{lost}")
    if not hmac.compare_digest(rec.key, identity.key):
        return ("registry: REGISTERED WITH ANOTHER KEY",
                f"the registry holds {identity.id} with another key than the board's: the gateway refuses its "
                f"reports; give the board a new key and move the id to it: "
                f"{provision(*same_place, '--force', '--take-over', '--discard-unsent')}{lost} (a board holding "
                "the old key is refused from then on)")
    return ("registry: registered with this key", None)


class OldId(Enum):
    """How the registry holds the id a re-provisioned board had before."""

    GHOST = "ghost"  # registered, not revoked, with the key the board held: no board holds it now
    ABSENT = "absent"  # not in this registry
    REVOKED = "revoked"
    OTHER_KEY = "other_key"  # registered with another key (taken over by another board): not this board's


def old_id_status(registry_dir: Path, old: Identity) -> OldId:
    """How ``registry_dir`` holds ``old`` (the identity a board held before it was re-provisioned)."""
    rec = registered_device(registry_dir, old.id)
    if rec is None:
        return OldId.ABSENT
    if rec.revoked:
        return OldId.REVOKED
    if rec.key is None or not hmac.compare_digest(rec.key, old.key):
        return OldId.OTHER_KEY
    return OldId.GHOST


def revoke_device(registry_dir: Path, device_id: str) -> None:
    """Revoke ``device_id`` in the registry directory (its frames are refused from then on).

    Raises:
        GatewayRegistrationError: the registry cannot be opened or written, or refuses it.
    """
    reg = _open(registry_dir)
    try:
        reg.revoke(device_id)
    except RegistryError as exc:
        raise GatewayRegistrationError(f"could not revoke {device_id} in {registry_dir}: {exc}",
                                       device_id=device_id, reason=exc.reason) from exc
    finally:
        reg.close()


def register_device(registry_dir: Path, identity: Identity, *, force: bool = False) -> Registration:
    """Add ``identity`` to the registry; idempotent for the same identity and key.

    Args:
        registry_dir: the gateway's registry directory.
        identity: the device identity, key included.
        force: replace a different registration of the same id (new key, new metadata).

    Raises:
        GatewayRegistrationError: the id is registered differently and ``force`` is not set,
            or the registry refuses the values.
    """
    reg = _open(registry_dir)
    try:
        outcome = reg.enroll(identity.id, kind=identity.kind, zone=identity.zone, lat=identity.lat,
                             lon=identity.lon, key=identity.key, replace=force)
    except RegistryError as exc:
        raise _refused(identity.id, exc.reason, str(exc)) from exc
    finally:
        reg.close()
    if outcome != "unchanged":
        log.info("registered %s in %s (%s)", identity.id, registry_dir, outcome)
    return Registration(outcome)


def _refused(device_id: str, reason: str | None, message: str) -> GatewayRegistrationError:
    """The error a technician sees when the registry (local or behind the admin API) refuses a device."""
    if reason == "conflict" and "no usable key" in message:
        return GatewayRegistrationError(
            f"device {device_id} is registered without a usable key (an interrupted provision, or its key file "
            "was removed); pass --force --take-over to give it this board's new key", device_id=device_id,
            reason=reason)
    if reason == "conflict":
        return GatewayRegistrationError(
            f"device {device_id} is already registered with another key (another board, an earlier "
            "provisioning of this one, or city IT added the id beforehand with `gateway devices add`); pass "
            "--take-over to move the id to this board (a board holding the old key is refused from then on), "
            "or pick another id", device_id=device_id,
            reason=reason)
    if reason in ("storage", "storage_partial"):
        # Not a refusal: the registry could not be written (locked by another process, disk error).
        return GatewayRegistrationError(f"could not register {device_id}: {message}", device_id=device_id,
                                        reason=reason)
    return GatewayRegistrationError(f"the registry refused {device_id}: {message}", device_id=device_id,
                                    reason=reason)


# The answers of a compare-and-swap enroll that are not errors of the call: the registration changed
# meanwhile, or (400 naming expect_key_sha256) the gateway is older than the field.
_SWAP_REFUSALS = {(409, "conflict"), (404, "unknown_device"), (409, "revoked"), (409, "retired"),
                  (400, "bad_parameter")}


# A gateway throttling admin calls (429 admin_throttled, gateway.web.admin_throttle) is asked again after its
# Retry-After at most this many times, waiting at most this long in all (its pauses grow to 60 s).
THROTTLED_RETRIES = 3
THROTTLED_WAIT_S = 75.0


def _say(line: str) -> None:
    """Progress for the person at the terminal (stderr), as the provision command's other lines."""
    from hil.field.cli_common import say  # here: cli_common pulls in the console library

    say(line)


def _retry_after(exc: urllib.error.HTTPError) -> int | None:
    """The whole seconds of a ``Retry-After`` header (None: absent, or an HTTP date: no gateway sends one)."""
    value = (exc.headers.get("Retry-After") or "").strip() if exc.headers is not None else ""
    return int(value) if value.isdigit() and len(value) <= 6 else None


class _Changed(Exception):
    """Internal: a compare-and-swap enroll refused (``args``: the gateway's code and message)."""


class AdminApiRegistrar:
    """Registers devices through a gateway's admin API (``PUT /api/admin/devices/{id}``).

    Args:
        base_url: the gateway's HTTP address, e.g. ``http://gateway.local:8080``.
        token: the admin bearer token.
        timeout_s: per-request timeout.
        progress: where a line saying the gateway throttles admin calls, and when the call is tried again,
            goes (default: stderr).
        sleep: waits that many seconds (tests pass a fake).

    A call answered 429 (the gateway's ``admin_throttled``: too many wrong admin tokens) is tried again after
    its ``Retry-After``, at most :data:`THROTTLED_RETRIES` times and :data:`THROTTLED_WAIT_S` in all; then
    GatewayRegistrationError (``reason`` ``admin_throttled``) says why the gateway may be throttling. The
    gateway answers such a call before it compares the token or changes anything, so asking again is safe.

    Raises:
        GatewayRegistrationError: the URL is not http(s).
    """

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0,
                 progress: Callable[[str], None] = _say, sleep: Callable[[float], None] = time.sleep) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise GatewayRegistrationError(f"gateway URL {base_url!r} must look like http(s)://HOST[:PORT]",
                                           gateway=base_url)
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._progress = progress
        self._sleep = sleep
        self.plain_http_remote = url.scheme == "http" and not _is_loopback(url.hostname)

    def __call__(self, identity: Identity, force: bool) -> Registration:
        """Register ``identity`` (see :func:`register_device` for the meaning of ``force``)."""
        return self._enroll(identity, {"replace": force})

    def replace_expecting(self, identity: Identity, expected: Identity) -> Registration:
        """Register ``identity`` in place of ``expected``, only while the gateway still holds ``expected``'s
        key: one request, compared under the registry's write lock (``expect_key_sha256``, the SHA-256 of
        that key: never the key itself), so a take-over or key rotation made meanwhile is kept.

        Raises:
            GatewayRegistrationError: ``reason`` ``conflict`` (another key is held now), ``unknown_device``
                (no longer registered), ``revoked``/``retired`` (meanwhile); ``no_compare_and_swap`` (a
                gateway older than ``expect_key_sha256``: it refuses the field, nothing changed); or as
                :meth:`__call__`.
        """
        expect = hashlib.sha256(expected.key).hexdigest()
        try:
            return self._enroll(identity, {"replace": True, "expect_key_sha256": expect}, swap=True)
        except _Changed as changed:
            code, message = changed.args
            if code == "bad_parameter" and not ("unknown key" in message and "expect_key_sha256" in message):
                raise _refused(identity.id, code, message) from None
            if code == "bad_parameter":
                raise GatewayRegistrationError(
                    f"the gateway at {self.base_url} cannot replace a key only while it holds another (no "
                    "expect_key_sha256: an older version); nothing was changed there", gateway=self.base_url,
                    device_id=identity.id, reason="no_compare_and_swap") from None
            raise GatewayRegistrationError(f"the gateway at {self.base_url} did not replace the key of {identity.id} "
                                           f"({code}): {message}", gateway=self.base_url, device_id=identity.id,
                                           reason=code) from None

    def _enroll(self, identity: Identity, extra: dict[str, Any], *, swap: bool = False) -> Registration:
        url = f"{self.base_url}/api/admin/devices/{urllib.parse.quote(identity.id, safe='')}"
        body = json.dumps({"kind": identity.kind, "zone": identity.zone, "lat": identity.lat, "lon": identity.lon,
                           "key": identity.key.hex(), **extra}).encode()
        try:
            answer = self._send(url, body=body, method="PUT")
        except urllib.error.HTTPError as exc:
            code, message = gateway_error(exc)
            if swap and (exc.code, code) in _SWAP_REFUSALS:
                raise _Changed(code, message) from None
            raise self._refusal(identity.id, exc, code=code, message=message) from None
        try:
            outcome = Registration(answer.get("result"))
        except (AttributeError, ValueError):
            raise GatewayRegistrationError(f"unexpected answer from {url}: {answer!r}", gateway=self.base_url) from None
        if outcome is not Registration.UNCHANGED:
            log.info("registered %s at %s (%s)", identity.id, self.base_url, outcome.value)
        return outcome

    def highest_seq(self, device_id: str) -> int | None:
        """The highest report seq the gateway stored under ``device_id`` (``GET /api/admin/devices/{id}/seq``):
        a board taking the id over must count above it. None when the id is not registered there (the
        gateway stores no report of an id it has no key for).

        Raises:
            GatewayRegistrationError: refused or unanswered; ``reason`` ``no_seq_endpoint`` when the gateway
                is older than the endpoint (HTTP 404 on the route itself, not ``unknown_device``).
        """
        url = f"{self.base_url}/api/admin/devices/{urllib.parse.quote(device_id, safe='')}/seq"
        try:
            answer = self._send(url)
        except urllib.error.HTTPError as exc:
            code, message = gateway_error(exc)
            if exc.code == 404 and code == "unknown_device":
                return None
            if exc.code in (404, 405) and code:
                # The gateway's JSON 404 for a path it has no route for: a version before the endpoint.
                raise GatewayRegistrationError(
                    f"the gateway at {self.base_url} cannot say the highest report seq it stored under {device_id} "
                    f"(HTTP {exc.code} on GET /api/admin/devices/{{id}}/seq): gateway too old; pass --seq-start "
                    "N (N: above the highest seq its seq_reused log line names, or its store's with --db PATH)",
                    gateway=self.base_url, reason="no_seq_endpoint") from None
            if exc.code == 403:
                # Not the gateway's own answer (it says 401): a proxy in front of it refused the call.
                raise GatewayRegistrationError(
                    f"{self.base_url} refused the admin call (HTTP 403{': ' + code if code else ''}; a proxy in "
                    "front of the gateway?); pass the gateway's own address with --gateway and the file of its "
                    "[http] admin_token_file with --token-file", gateway=self.base_url,
                    reason=code or "forbidden") from None
            if exc.code == 503 and code == "store_timeout":
                raise GatewayRegistrationError(
                    f"the gateway at {self.base_url} did not read its store in time for the highest report seq "
                    f"of {device_id} ({message}); retry, or pass --seq-start N", gateway=self.base_url,
                    reason=code) from None
            raise self._refusal(device_id, exc, code=code, message=message) from None
        seq = answer.get("highest_seq") if isinstance(answer, dict) else None
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise GatewayRegistrationError(f"unexpected answer from {url}: {answer!r}", gateway=self.base_url)
        return seq

    def _send(self, url: str, *, body: bytes | None = None, method: str = "GET") -> Any:
        """One admin call: the JSON answer. HTTP errors are raised as ``urllib.error.HTTPError`` for the
        caller to read; anything else as GatewayRegistrationError, a 429 once retries are used up
        (:class:`AdminApiRegistrar`)."""
        waited = 0
        for attempt in range(THROTTLED_RETRIES + 1):
            try:
                return self._send_once(url, body=body, method=method)
            except urllib.error.HTTPError as exc:
                if exc.code != 429:
                    raise
                code, message = gateway_error(exc)
                wait = _retry_after(exc)
                wait = 1 if wait is None else max(1, wait)
                if attempt == THROTTLED_RETRIES or waited + wait > THROTTLED_WAIT_S:
                    raise self._throttled(code, message, attempt + 1, waited) from None
                self._progress(f"the gateway at {self.base_url} is throttling admin calls (HTTP 429 "
                               f"{code or 'too many requests'}); trying again in {wait} s "
                               f"({attempt + 2} of at most {THROTTLED_RETRIES + 1} tries)")
                self._sleep(wait)
                waited += wait
        raise AssertionError("unreachable")  # the last try returns or raises

    def _throttled(self, code: str, message: str, tries: int, waited: int) -> GatewayRegistrationError:
        """The error of a call still answered 429 after ``tries`` tries and ``waited`` seconds."""
        gave_up = f"{tries} tries over {waited} s"
        if code != "admin_throttled":
            # Not the gateway's own answer: a proxy in front of it limits requests.
            return GatewayRegistrationError(
                f"{self.base_url} answered HTTP 429 (too many requests{': ' + code if code else ''}) to "
                f"{gave_up}; a proxy in front of the gateway limits requests: retry later, or pass the gateway's "
                "own address with --gateway", gateway=self.base_url, reason=code or "too_many_requests")
        return GatewayRegistrationError(
            f"the gateway at {self.base_url} is throttling admin calls (429 admin_throttled, {gave_up}; it did "
            f"not check the token): {message or 'too many wrong admin tokens'}. It does so after 5 wrong admin "
            "tokens in a row from one client (this machine's address, or one it shares: a NAT, an IPv6 /64, a "
            "reverse proxy not in the gateway's [http] trusted_proxies, so another machine's wrong tokens count "
            "as this one's), or past 10 wrong tokens a second from all clients (someone may be guessing the "
            "token). Check that --token-file is the gateway's current [http] admin_token_file, look for "
            "'admin_throttled' in the gateway's log, and retry later; a machine in the gateway's [http] "
            "admin_networks is not held by the second limit", gateway=self.base_url, reason="admin_throttled")

    def _send_once(self, url: str, *, body: bytes | None = None, method: str = "GET") -> Any:
        """One HTTP request of :meth:`_send`."""
        headers = {"Authorization": f"Bearer {self._token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            req = urllib.request.Request(url, data=body, method=method, headers=headers)
            with urllib.request.urlopen(req, timeout=self._timeout_s) as resp:  # noqa: S310 - the URL the user gave
                raw = resp.read()
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as exc:
            raise GatewayRegistrationError(f"cannot reach the gateway at {self.base_url}: {unreachable_reason(exc)}",
                                           gateway=self.base_url) from None
        except ValueError:  # http.client: "Invalid header value" (a token with a line break): nothing was sent
            raise GatewayRegistrationError(
                "the admin token cannot be sent (it holds a line break or control character); put only the token "
                "on the first line of the --token-file", gateway=self.base_url) from None
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            raise GatewayRegistrationError(f"the gateway at {self.base_url} answered something that is not JSON",
                                           gateway=self.base_url) from None

    def _refusal(self, device_id: str, exc: urllib.error.HTTPError, *, code: str | None = None,
                 message: str = "") -> GatewayRegistrationError:
        if code is None:
            code, message = gateway_error(exc)
        if exc.code == 401 and code == "admin_disabled":
            return GatewayRegistrationError(
                f"the gateway at {self.base_url} has its admin API switched off (no admin token configured); set "
                "[http] admin_token_file in the gateway config, restart it and pass that file with --token-file "
                "(or register with --registry DIR on the gateway host)", gateway=self.base_url, reason=code)
        if exc.code == 401:
            return GatewayRegistrationError(
                f"the gateway refused the admin token ({code or 'unauthorized'}); pass the file of its "
                "[http] admin_token_file with --token-file", gateway=self.base_url, reason=code or "unauthorized")
        if exc.code in (404, 405) and not code:
            # Not the gateway's JSON error body: some other web server (wrong host, port or path prefix).
            return GatewayRegistrationError(
                f"{self.base_url} answered HTTP {exc.code} and does not look like a civicedge gateway; pass the "
                "gateway's HTTP address with --gateway (e.g. http://gateway.local:8080)", gateway=self.base_url)
        if exc.code in (404, 405):
            return GatewayRegistrationError(
                f"the gateway at {self.base_url} has no device enrollment endpoint (HTTP {exc.code}; an older "
                "version?); register with --registry DIR instead", gateway=self.base_url)
        if exc.code in (400, 409):
            return _refused(device_id, code, message or f"HTTP {exc.code}")
        return GatewayRegistrationError(f"the gateway answered HTTP {exc.code}: {message or exc.reason}",
                                        gateway=self.base_url, reason=code or None)


def unreachable_reason(exc: BaseException) -> str:
    """Why a gateway could not be reached, in words ("Connection refused", "timed out"), not
    urllib's ``<urlopen error [Errno 111] Connection refused>``."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError):
        return reason.strerror or str(reason) or type(reason).__name__
    return str(reason)


def gateway_error(exc: urllib.error.HTTPError) -> tuple[str, str]:
    """The ``code`` and ``message`` of a civicedge gateway's JSON error body (``{"error": {...}}``);
    empty strings when the body is not one (another web server, or a wrong path on it)."""
    try:
        err = json.loads(exc.read() or b"{}").get("error", {})
        return str(err.get("code", "")), str(err.get("message", ""))
    except (ValueError, AttributeError, OSError):
        return "", ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _open(registry_dir: Path) -> Registry:
    if not registry_dir.is_dir():
        what = "is not a directory" if registry_dir.exists() else "does not exist"
        raise GatewayRegistrationError(
            f"registry directory {registry_dir} {what}; pass the gateway's [registry] path (a directory)",
            registry=str(registry_dir))
    try:
        # Never a new one: an empty directory (an unmounted share, a typo) would take the registration
        # and the gateway would refuse the board's reports. The gateway creates its registry itself.
        return Registry(registry_dir, create=False)
    except RegistryError as exc:
        # The registry's message already names the registry ("cannot open registry X: ...").
        text = str(exc)
        raise GatewayRegistrationError(text if str(registry_dir) in text else f"cannot open registry {registry_dir}: "
                                       f"{text}", registry=str(registry_dir)) from exc
