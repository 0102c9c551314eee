"""MQTT upstream: drains the SQLite outbox to the broker with QoS 1, oldest first.

Messages are queued in the outbox in the same transaction as the report, so a stored report
is always eventually forwarded (unless dropped at the outbox cap, which is counted). A message
leaves the outbox only after the broker's PUBACK. While the broker is down the gateway keeps
ingesting; on reconnect the backlog drains oldest first. Topics and payloads: docs/mqtt.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import ssl
import time
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config.model import MqttConfig
from gateway.errors import TransportError
from gateway.log_limit import CountedWarning, LogLimiter, more_since
from gateway.metrics import GatewayMetrics
from gateway.small_files import MIB, open_regular, read_fd_limited
from gateway.storage.store import OutboxMessage, ReportRecord, ReportStore
from gateway.upstream.aiomqtt_fd import guard_write_registration

T = TypeVar("T")

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 1
DRAIN_CHUNK = 50
PUBLISH_TIMEOUT_S = 10.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 15.0
# At most one outage warning per this interval (a flapping broker is not one warning per reconnect);
# an outage that outlasts it is warned about even if its start was not.
OUTAGE_WARN_INTERVAL_S = 60.0
# aiomqtt warns ("There are N pending publish calls.") for each call above its threshold (10 by default):
# a whole chunk in flight is the designed concurrency, not a sign of trouble, so the threshold is the chunk.
PENDING_CALLS_WARN_ABOVE = DRAIN_CHUNK
IDLE_POLL_S = 1.0
# Messages the MQTT client refuses before sending (a topic it cannot encode): one WARNING per interval.
REFUSED_LOG_EVERY_S = 60.0
# Failures that are not the broker's (the outbox unreadable, a bug): one ERROR per interval.
FAILURE_LOG_EVERY_S = 60.0
# CONNACK refusals meaning the credentials (MQTT 3.1.1 codes 4 and 5, as MQTT 5 reason codes 134, 135).
_AUTH_CODES = frozenset({4, 5, 134, 135})
# After a connection loss (or PUBACK timeout) with messages unacknowledged, those are sent one at a time:
# the broker may have taken the messages before one it closes the connection on without their PUBACKs
# reaching the gateway, and in a chunk they would go out again at every try. No message is ever dropped
# for what the broker does (a frozen or crashing broker, or an ACL that disconnects, looks the same as a
# message too large for it): one the broker closed the connection on this many times in a row, alone in
# flight (PUBACK timeouts never count), stalls the outbox with a WARNING and a /healthz reason until the
# broker takes it (its message size limit raised).
STALL_LOSSES = 5
# At most one such WARNING per this interval (a new episode within it is INFO).
STALL_WARN_INTERVAL_S = 600.0
# /healthz phrases: fixed words only; the details (paths, TLS errors) are in the log.
HEALTH_FAILING = "mqtt upstream failing (see the log)"
HEALTH_CREDENTIALS = "mqtt broker refused the credentials"
HEALTH_UNREACHABLE = "mqtt broker unreachable"
HEALTH_TLS = "mqtt broker TLS handshake failed"
HEALTH_REFUSED = "mqtt broker refused the connection (see the log)"
HEALTH_STALLED = "mqtt upstream stalled on one message (see the log)"


class _LibraryLog(logging.Filter):
    """Keeps paho/aiomqtt's own WARNING and ERROR lines out of the log (the upstream's rate-limited
    lines say what failed; QA saw one ``failed to receive on socket`` ERROR per retry) and remembers
    the last one, which tells a broker that closed the connection from a socket error. Shown at ``-vv``."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:  # socket errors; not aiomqtt's "pending publish calls" warning
            self.last = record.getMessage()
        # -vv, or the library's own logger set to DEBUG (CIVICEDGE_LOG_DEBUG=mqtt, gateway/cli/verbosity.py)
        return log.isEnabledFor(logging.DEBUG) or logging.getLogger("mqtt").level == logging.DEBUG


_LIBRARY_LOG = _LibraryLog()
logging.getLogger("mqtt").addFilter(_LIBRARY_LOG)  # aiomqtt's default logger, which it hands to paho


def topic_for(prefix: str, gateway_id: str, rec: ReportRecord) -> str:
    """Return ``<prefix>/<gateway>/<kind>/<device>/<type>``."""
    return "%s/%s/%s/%s/%s" % (prefix, gateway_id, rec.kind, rec.device, rec.type)


def publish_topic(prefix: str, msg: OutboxMessage) -> str:
    """The topic ``msg`` is published to: under the CURRENT ``prefix``, from its payload's gateway, kind,
    device and type (what :func:`topic_for` used when it was queued), so a changed ``topic_prefix``
    applies to the backlog too; the topic stored with it when the payload does not name them."""
    try:
        body = json.loads(msg.payload)
        parts = [body["gateway"], body["kind"], body["device"], body["type"]]
    except (ValueError, KeyError, TypeError):
        return msg.topic
    if not all(isinstance(part, str) and part for part in parts):
        return msg.topic
    return "/".join([prefix, *parts])


def encode_report(prefix: str, gateway_id: str) -> Callable[[ReportRecord], tuple[str, bytes]]:
    """Return the outbox encoder: report -> (topic, JSON payload). See docs/mqtt.md."""

    def encode(rec: ReportRecord) -> tuple[str, bytes]:
        payload = {
            "v": PAYLOAD_VERSION, "gateway": gateway_id, "device": rec.device, "seq": rec.seq, "kind": rec.kind,
            "zone": rec.zone, "type": rec.type, "w": rec.w, "l": rec.l, "m": rec.m, "e": rec.e, "a": rec.a,
            "fw": rec.fw, "received_at": round(rec.received_at, 3), "link": rec.link.split(":", 1)[0],
            # the frame's digest, as stored: across gateways (each de-duplicates only its own store) it
            # tells a re-delivery of a report from another report under a reused (device, seq)
            "digest": rec.digest,
        }
        return topic_for(prefix, gateway_id, rec), json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    return encode


# A CA bundle (the system's has ~150 certificates, ~200 KiB), a certificate chain or a key: far less.
TLS_FILE_MAX = 4 * MIB
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?-----END \1-----", re.DOTALL)


class TlsFileError(ValueError):
    """One of the ``[mqtt]`` TLS files cannot be used; the message names it (``ca_file /etc/..: why``)."""


def _read_tls_file(key: str, path: Path) -> tuple[int, bytes]:
    """An open descriptor on the regular file ``path`` and its bytes (at most :data:`TLS_FILE_MAX`), opened
    without blocking: a FIFO there is an error, not a gateway stuck in ``open()``."""
    try:
        fd = open_regular(path)
    except OSError as exc:
        raise TlsFileError("%s %s: %s" % (key, path, exc.strerror or exc)) from exc
    try:
        return fd, read_fd_limited(fd, TLS_FILE_MAX)
    except OSError as exc:
        os.close(fd)
        raise TlsFileError("%s %s: %s" % (key, path, exc.strerror or exc)) from exc


def _fd_path(fd: int, path: Path) -> str:
    """A name for the file open as ``fd`` that OpenSSL can open: Linux's ``/proc/self/fd/N`` reopens that very
    (regular, already checked) file, whatever was renamed into ``path`` since; elsewhere ``path`` itself."""
    proc = "/proc/self/fd/%d" % fd
    return proc if os.path.exists(proc) else str(path)


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The TLS context for ``config``, read from the files now: the broker verified against ``ca_file``
    (the system's CAs without one), its host name checked; the client certificate when configured.

    Each file is read as a regular file only (a FIFO or device is refused at once, never waited on), at
    most :data:`TLS_FILE_MAX` bytes. Blocking file I/O all the same: call it off the event loop.

    Raises:
        TlsFileError: (a ValueError) naming the file that cannot be used and why: not a regular file,
            unreadable, too large, no PEM certificate in it, no private key, key not the certificate's.
    """
    if config.ca_file is None:
        ctx = ssl.create_default_context()  # the system's CAs
    else:
        fd, data = _read_tls_file("ca_file", config.ca_file)
        os.close(fd)
        # the certificates alone: OpenSSL's cadata wants ASCII PEM, text around them (Bag Attributes with
        # a non-ASCII friendly name) is not theirs
        pem = "\n".join(m.group(0).decode("ascii") for m in _PEM_BLOCK.finditer(data)
                        if m.group(1) in (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE"))
        if not pem:
            raise TlsFileError("ca_file %s: holds no PEM certificate (-----BEGIN CERTIFICATE-----)" % config.ca_file)
        try:
            ctx = ssl.create_default_context(cadata=pem)  # these CAs only, not the system's too
        except (ssl.SSLError, ValueError) as exc:
            raise TlsFileError("ca_file %s: not usable as CA certificates: %s" % (config.ca_file, exc)) from exc
    if config.cert_file is not None:
        cert_fd, cert = _read_tls_file("cert_file", config.cert_file)
        key_fd = None
        try:
            if config.key_file is None and b"PRIVATE KEY-----" not in cert:
                # OpenSSL would only say "[SSL] PEM lib"
                raise TlsFileError("mqtt.cert_file %s holds no private key: name the key with mqtt.key_file"
                                   % config.cert_file)
            if b"CERTIFICATE-----" not in cert:
                raise TlsFileError("cert_file %s: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                                   % config.cert_file)
            key_path = None
            if config.key_file is not None:
                key_fd, key = _read_tls_file("key_file", config.key_file)
                if b"PRIVATE KEY-----" not in key:
                    raise TlsFileError("key_file %s: holds no PEM private key" % config.key_file)
                key_path = _fd_path(key_fd, config.key_file)
            try:
                ctx.load_cert_chain(_fd_path(cert_fd, config.cert_file), key_path)
            except (ssl.SSLError, OSError) as exc:
                raise TlsFileError(_cert_chain_problem(config, exc)) from exc
        finally:
            os.close(cert_fd)
            if key_fd is not None:
                os.close(key_fd)
    return ctx


def _cert_chain_problem(config: MqttConfig, exc: BaseException) -> str:
    """Which of ``cert_file`` and ``key_file`` OpenSSL refused, as far as its error tells."""
    text = str(exc)
    if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
        return "key_file %s is not the key of cert_file %s: %s" % (config.key_file or config.cert_file,
                                                                   config.cert_file, text)
    if config.key_file is None:
        return "cert_file %s (certificate and key): %s" % (config.cert_file, text)
    return "cert_file %s or its key_file %s: %s" % (config.cert_file, config.key_file, text)


def _tls_hint(exc: BaseException, text: str) -> str:
    """What to check for a failed TLS handshake, from the certificate verification's own result
    (aiomqtt raises its MqttError ``from None``: the ssl error is still its ``__context__``)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return " (is [mqtt] ca_file the CA that signed the broker's certificate?)" if "CERTIFICATE" in text else ""
    why = (cause.verify_message or "").lower()
    # OpenSSL X509_V_ERR_HOSTNAME_MISMATCH (62), _IP_ADDRESS_MISMATCH (64), _CERT_HAS_EXPIRED (10)
    if cause.verify_code in (62, 64) or "mismatch" in why:
        return " (the broker's certificate is not for [mqtt] host: connect by a name or address it names)"
    if cause.verify_code == 10 or "expired" in why:
        return " (the broker's certificate has expired: renew it on the broker)"
    return " (is [mqtt] ca_file the CA that signed the broker's certificate?)"


def _shown_topic(topic: str) -> str:
    """``topic`` for a log line: cut to its start, with its size, when longer than 120 characters."""
    return topic if len(topic) <= 120 else "%s... (%d bytes)" % (topic[:80], len(topic.encode()))


def _closed(exc: BaseException) -> bool:
    """Whether a lost connection was closed (by the broker, or the network), not a PUBACK timeout or an
    unanswered keepalive (a frozen broker), which are no evidence against the message in flight."""
    if isinstance(exc, asyncio.TimeoutError):
        return False
    text = str(exc)
    return not ("timed out" in text or "[code:141]" in text or "Keep alive" in text)


class MqttUpstream:
    """Publishes outbox messages to one broker.

    Args:
        config: the ``[mqtt]`` section.
        store: the report store holding the outbox.
        run_in_store: runs a store method on the store's thread (``IngestService.run_in_store``).
        stored: event set whenever new reports (and outbox messages) were committed.
        metrics: ``outbox_depth``, ``outbox_bytes`` (read at each scrape), ``outbox_max_bytes``,
            ``mqtt_published``, ``link_state{link="mqtt"}`` and ``link_disconnects{link="mqtt"}``.
        gateway_id: default MQTT client id.
    """

    def __init__(self, config: MqttConfig, *, store: ReportStore,
                 run_in_store: Callable[..., "asyncio.Future[object] | object"], stored: asyncio.Event,
                 metrics: GatewayMetrics, gateway_id: str) -> None:
        self._config = config
        self._store = store
        self._run = run_in_store
        self._stored = stored
        self._metrics = metrics
        # read when /metrics is scraped (an int the store's thread keeps), so it is never stale
        metrics.outbox_bytes.set_function(lambda: float(store.outbox_bytes))
        metrics.outbox_max_bytes.set(config.outbox_max_bytes)
        self._client_id = config.client_id or "civicedge-%s" % gateway_id
        self.connected = False
        self._down_since: float | None = None  # monotonic start of the current outage
        self._down_warned = False  # the current outage was logged at WARNING
        self._last_warning = -math.inf
        self._unwarned = 0  # outages since the last warning that were logged at INFO only
        # Why the upstream is not delivering, for /healthz ("mqtt broker unreachable", "... refused the
        # credentials", ...); None while connected.
        self.problem: str | None = "mqtt broker not connected yet"
        self._backoff = BACKOFF_MIN_S
        self._refused_warning = CountedWarning(
            REFUSED_LOG_EVERY_S, time.monotonic, "MQTT client refused %d more message(s) since the last such line: "
            "dropped them, the reports stay stored", log)
        self.refused = 0  # messages refused by the client and dropped since start
        self._failure_log = LogLimiter(FAILURE_LOG_EVERY_S, time.monotonic)
        # The oldest outbox message unacknowledged at the last connection loss, and how many consecutive
        # connection closes it was alone in flight at; messages up to _careful_until are sent one at a time.
        self._suspect: int | None = None
        self._suspect_losses = 0
        self._careful_until: int | None = None
        # The message the outbox waits behind (STALL_LOSSES), since when, and whether that was warned about.
        self._stalled: OutboxMessage | None = None
        self._stalled_since = 0.0
        self._stall_warned = False
        self._last_stall_warning = -math.inf

    def check_tls(self) -> None:
        """Load the TLS files once (at start), so unusable ones stop ``run`` instead of being retried forever.

        Raises:
            TransportError: reason ``open_failed``, link ``mqtt``: a file cannot be used (not PEM, no key,
                key not the certificate's), as ``gateway run --check`` says.
        """
        try:
            self._tls_context()
        except RuntimeError as exc:
            raise TransportError(str(exc), reason="open_failed", link="mqtt") from exc.__cause__

    def _tls_context(self) -> ssl.SSLContext | None:
        """See :func:`tls_context`, read at each connect attempt (renewed files are used without a restart);
        an unusable file raises RuntimeError (not taken for a broker failure)."""
        if not self._config.tls:
            return None
        try:
            return tls_context(self._config)
        except (OSError, ValueError) as exc:
            raise RuntimeError("cannot use the TLS files of [mqtt]: %s" % exc) from exc

    def _client(self, tls: ssl.SSLContext | None) -> aiomqtt.Client:
        cfg = self._config
        # paho's keepalive (PINGREQ when idle, connection dropped when unanswered) finds a broker that
        # went silent; a closed socket is seen at once. Either way aiomqtt ends its messages iterator.
        client = aiomqtt.Client(cfg.host, cfg.port, identifier=self._client_id, keepalive=cfg.keepalive_s,
                                timeout=PUBLISH_TIMEOUT_S, username=cfg.username, password=cfg.password,
                                tls_context=tls)
        client.pending_calls_threshold = PENDING_CALLS_WARN_ABOVE
        # no asyncio "Bad file descriptor" ERROR (nor another socket's fd taken) when the broker drops
        guard_write_registration(client)
        return client

    async def _peek(self) -> list[OutboxMessage]:
        if self._careful_until is not None:  # after a loss: one at a time up to the last one then in flight
            msgs = await self._run(self._store.outbox_peek, 1)  # type: ignore[misc]
            assert isinstance(msgs, list)
            if msgs and msgs[0].id <= self._careful_until:
                return msgs
            self._careful_until = None
        msgs = await self._run(self._store.outbox_peek, DRAIN_CHUNK)  # type: ignore[misc]
        assert isinstance(msgs, list)
        return msgs

    async def run(self) -> None:
        """Connect, drain, wait for more; reconnect with backoff while the broker is down.

        The backoff (:data:`BACKOFF_MIN_S` doubling to :data:`BACKOFF_MAX_S`) starts over only once
        messages are delivered or the outbox is empty, not at each connection: a broker that accepts
        the connection and then fails every publish is retried with backoff too.
        """
        self._metrics.set_link("mqtt", False)
        while True:
            try:
                # off the event loop: file reads (a slow or hung mount must not stop ingest and /healthz)
                tls = await asyncio.to_thread(self._tls_context)
                _LIBRARY_LOG.last = None
                async with self._client(tls) as client:
                    # connected, but still waiting behind the message the broker keeps closing on
                    self.connected, self.problem = True, HEALTH_STALLED if self._stalled is not None else None
                    self._metrics.set_link("mqtt", True)
                    self._log_connected()
                    await self._drain_forever(client)
            except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
                problem, why = self._diagnose(exc)
                if not self.connected:
                    # the broker is down, not refusing a message: the losses before do not count against it
                    self._suspect_losses = 0
                self._log_down(why, lost=self.connected, retry_s=self._backoff)
                if self.connected and self._stalled is not None:
                    problem = HEALTH_STALLED  # the broker closed on that message again (the log says which)
                self.connected, self.problem = False, problem
                self._metrics.set_link("mqtt", False)
                await self._pause()
            except Exception as exc:  # noqa: BLE001 - e.g. the outbox unreadable for a moment
                # Not the broker: without this the task would end, the outbox would grow unseen and
                # /healthz would call the broker unreachable. Say what failed and start over.
                skipped = self._failure_log.allow()
                if skipped is not None:
                    log.error("MQTT upstream failed (%s: %s); starting over in %.1f s, the outbox keeps its messages%s",
                              type(exc).__name__, exc, self._backoff, more_since(skipped, "failure(s)"),
                              exc_info=log.isEnabledFor(logging.DEBUG))
                else:
                    log.info("MQTT upstream failed again (%s: %s); starting over in %.1f s", type(exc).__name__, exc,
                             self._backoff)
                self.connected = False
                self.problem = HEALTH_FAILING  # /healthz shows no paths or exception text; the log has them
                self._metrics.set_link("mqtt", False)
                await self._pause()

    async def _pause(self) -> None:
        """Wait out the backoff and double it (up to :data:`BACKOFF_MAX_S`)."""
        await asyncio.sleep(self._backoff)
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)

    def _diagnose(self, exc: BaseException) -> tuple[str, str]:
        """``(/healthz reason, log text)`` for a failed connect or a lost connection."""
        cfg = self._config
        if isinstance(exc, MqttConnectError):
            rc = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
            if rc in _AUTH_CODES:
                who = ("user %r" % cfg.username) if cfg.username else "no user name ([mqtt] username is not set)"
                return (HEALTH_CREDENTIALS,
                        "the broker refused the credentials (%s, %s); check [mqtt] username and password_file"
                        % (exc, who))
            return HEALTH_REFUSED, "the broker refused the connection (%s)" % exc
        text = str(exc)
        if cfg.tls and ("SSL" in text or "certificate" in text.lower() or isinstance(exc, ssl.SSLError)):
            return HEALTH_TLS, "TLS handshake failed: %s%s" % (text, _tls_hint(exc, text))
        socket_error = _LIBRARY_LOG.last
        if not self.connected and "timed out" in text and socket_error and "receive on socket" in socket_error:
            # A TLS-only listener resets a client that speaks plain MQTT; the connect then only times out.
            hint = "" if cfg.tls else "; if the broker's listener is TLS-only, set [mqtt] tls = true"
            return ("mqtt broker unreachable (connection reset before CONNACK)",
                    "connection reset before the broker answered (%s)%s" % (socket_error, hint))
        if self.connected and isinstance(exc, aiomqtt.MqttError) and ("[code:128]" in text or "[code:7]" in text) \
                and socket_error is None:
            # paho reports a socket closed at EOF (a clean broker shutdown) as "Unspecified error" too;
            # a socket error would have been logged (and recorded) first.
            return "mqtt broker unreachable (it closed the connection)", "the broker closed the connection"
        return HEALTH_UNREACHABLE, text

    def _where(self) -> str:
        return "%s:%d" % (self._config.host, self._config.port)

    def _log_down(self, exc: object, *, lost: bool, retry_s: float) -> None:
        """Log a failed connect or a lost connection.

        The start of an outage (first failed connect, or each loss) is a WARNING, at most one per
        :data:`OUTAGE_WARN_INTERVAL_S`; failed retries are INFO, except that an outage the limit kept
        at INFO is warned about at its first retry the limit allows.
        """
        now = time.monotonic()
        depth = self._store.outbox_depth
        if self._down_since is not None and not lost:
            if self._down_warned or now - self._last_warning < OUTAGE_WARN_INTERVAL_S:
                log.info("MQTT broker %s still unreachable (%s); retrying in %.1f s", self._where(), exc, retry_s)
                return
            self._unwarned -= 1  # this outage, counted when it began, is warned about now
            left_out = self._warned(now)
            log.warning("MQTT broker %s unreachable for %.0f s (%s); retrying with backoff, outbox keeps %d"
                        " message(s)%s", self._where(), now - self._down_since, exc, depth, left_out)
            return
        self._down_since = now
        what = "lost" if lost else "unreachable"
        if now - self._last_warning < OUTAGE_WARN_INTERVAL_S:
            self._down_warned = False
            self._unwarned += 1
            log.info("MQTT broker %s %s (%s); retrying in %.1f s, outbox keeps %d message(s)", self._where(), what,
                     exc, retry_s, depth)
            return
        left_out = self._warned(now)
        log.warning("MQTT broker %s %s (%s); retrying with backoff, outbox keeps %d message(s)%s", self._where(),
                    what, exc, depth, left_out)

    def _warned(self, now: float) -> str:
        """Record an outage warning; return the note on outages left out since the previous one."""
        note = "" if not self._unwarned else " (%d more outage(s) since the last warning)" % self._unwarned
        self._down_warned, self._last_warning, self._unwarned = True, now, 0
        return note

    def _log_connected(self) -> None:
        """Log a connection: INFO, or WARNING when it ends an outage that was logged as a warning."""
        if self._down_since is None:
            log.info("connected to MQTT broker %s", self._where())
            return
        level = logging.WARNING if self._down_warned else logging.INFO
        log.log(level, "connected to MQTT broker %s after %.1f s down; draining %d queued message(s)",
                self._where(), time.monotonic() - self._down_since, self._store.outbox_depth)
        self._down_since, self._down_warned = None, False

    async def _drain_forever(self, client: aiomqtt.Client) -> None:
        """Publish the outbox in chunks, wait for more; raise :class:`aiomqtt.MqttError` once the connection
        is lost, also while idle (it used to be noticed only at the next publish), and
        :class:`asyncio.TimeoutError` when a chunk is not acknowledged within :data:`PUBLISH_TIMEOUT_S`.

        A message the client refuses before sending (a permanent error: its topic cannot be encoded) is
        dropped and counted (:meth:`_refuse`); it neither blocks the messages behind it nor makes the
        delivered ones of its chunk be published again. On a loss, a timeout or a failed publish the
        messages of the chunk already PUBACKed leave the outbox first (the retry is not a duplicate) and the
        others are sent one at a time (:meth:`_note_loss`). Nothing is dropped for what the broker does."""
        lost = asyncio.ensure_future(self._until_lost(client))
        try:
            while True:
                self._stored.clear()
                msgs = await self._peek()
                if not msgs:
                    self._backoff = BACKOFF_MIN_S  # all delivered: the next failure starts a new backoff
                    await self._unless_lost(self._stored.wait(), lost, IDLE_POLL_S)
                    continue
                # paho sends in call order; each message leaves the outbox once PUBACKed.
                settled: dict[int, bool] = {}  # filled by _publish_chunk, also when it is cancelled
                try:
                    done, outcome = await self._unless_lost(self._publish_chunk(client, msgs, settled), lost,
                                                            PUBLISH_TIMEOUT_S)
                    if not done or outcome is None:
                        raise asyncio.TimeoutError("no PUBACK for %d message(s) within %.0f s"
                                                   % (len(msgs) - len(settled), PUBLISH_TIMEOUT_S))
                except (aiomqtt.MqttError, asyncio.TimeoutError) as exc:
                    # what was PUBACKed leaves now: a retry makes progress and sends no duplicates
                    await self._delivered([i for i, ok in settled.items() if ok])
                    # settled False: the publish raised (not PUBACKed either)
                    self._note_loss(msgs, [m for m in msgs if not settled.get(m.id)], closed=_closed(exc))
                    raise
                delivered, refused, failure = outcome
                if refused:
                    await self._refuse(refused)
                await self._delivered(delivered)
                if failure is not None:
                    # a publish failed on the connection (not connected any more, no PUBACK in time): the
                    # others go one at a time as after a loss, not as a chunk again
                    gone = set(delivered) | {m.id for m, _, _ in refused}
                    self._note_loss(msgs, [m for m in msgs if m.id not in gone], closed=False)
                    raise failure
                self._suspect, self._suspect_losses = None, 0
                if self._stalled is not None:
                    self._end_stall(self._stalled.id in delivered)
        finally:
            lost.cancel()
            await asyncio.gather(lost, return_exceptions=True)

    async def _delivered(self, ids: list[int]) -> None:
        """Delete PUBACKed messages from the outbox."""
        if ids:
            await self._run(self._store.outbox_delete, ids)  # type: ignore[misc]
            self._metrics.mqtt_published.inc(len(ids))
            self._backoff = BACKOFF_MIN_S
        self._metrics.outbox_depth.set(self._store.outbox_depth)

    def _note_loss(self, sent: list[OutboxMessage], pending: list[OutboxMessage], *, closed: bool) -> None:
        """Note a lost connection (``closed``: the broker closed it) or a PUBACK timeout after publishing
        ``sent``, with ``pending`` of them unacknowledged (oldest first): they are sent one at a time next.
        The oldest closed on :data:`STALL_LOSSES` times in a row while alone in flight stalls the outbox
        (:meth:`_stall`); a timeout is no evidence against a message (a frozen broker) and starts the count over."""
        if not pending:
            return
        self._careful_until = max(self._careful_until or 0, pending[-1].id)
        head = pending[0]
        if head.id != self._suspect:
            self._suspect, self._suspect_losses = head.id, 0
            if self._stalled is not None and self._stalled.id != head.id:
                self._end_stall(False)  # it left the outbox otherwise (dropped at the outbox cap)
        if not closed:
            self._suspect_losses = 0
        elif len(sent) == 1:
            self._suspect_losses += 1
            if self._suspect_losses >= STALL_LOSSES:
                self._stall(head)

    def _stall(self, msg: OutboxMessage) -> None:
        """The broker closed the connection :data:`STALL_LOSSES` times in a row with only ``msg`` in flight:
        the outbox waits behind it (it is retried with backoff, never dropped). A WARNING at most once per
        :data:`STALL_WARN_INTERVAL_S` (INFO otherwise); /healthz says :data:`HEALTH_STALLED` while it lasts."""
        now = time.monotonic()
        if self._stalled is None or self._stalled.id != msg.id:
            self._stalled, self._stalled_since, self._stall_warned = msg, now, False
        elif self._stall_warned:
            return
        topic = publish_topic(self._config.topic_prefix, msg)
        shown = _shown_topic(topic)
        # PUBLISH QoS 1: topic length and packet id (4) and the payload, plus a fixed header of 2..5 bytes
        body = 4 + len(topic.encode()) + len(msg.payload)
        size = body + 1 + max(1, math.ceil(body.bit_length() / 7))
        level = logging.INFO
        if now - self._last_stall_warning >= STALL_WARN_INTERVAL_S:
            level, self._stall_warned, self._last_stall_warning = logging.WARNING, True, now
        log.log(level, "MQTT broker %s closed the connection %d times in a row with only outbox message %d in"
                " flight (%d bytes of payload, a %d-byte MQTT packet, topic %r): the broker closes the connection"
                " while only this message is in flight: if it is larger than the broker's message size limit"
                " (mosquitto max_packet_size, AWS IoT 128 KB), raise the limit; the outbox waits behind it"
                " (nothing is dropped), %d message(s) queued", self._where(), self._suspect_losses, msg.id,
                len(msg.payload), size, shown, self._store.outbox_depth)

    def _end_stall(self, delivered: bool) -> None:
        """The outbox no longer waits behind the stalled message: it was ``delivered`` (or left otherwise)."""
        assert self._stalled is not None
        level = logging.WARNING if self._stall_warned else logging.INFO
        log.log(level, "MQTT outbox message %d %s after the outbox waited %.0f s behind it; draining %d queued"
                " message(s)", self._stalled.id, "delivered" if delivered else "left the outbox",
                time.monotonic() - self._stalled_since, self._store.outbox_depth)
        self._stalled, self._stall_warned = None, False
        if self.connected:
            self.problem = None

    async def _refuse(self, refused: list[tuple[OutboxMessage, str, str]]) -> None:
        """Drop messages the client refused (counted in the store's ``outbox_refused``), with a WARNING at
        most once per :data:`REFUSED_LOG_EVERY_S` naming why."""
        await self._run(self._store.outbox_refuse, [m.id for m, _, _ in refused])  # type: ignore[misc]
        self.refused += len(refused)
        self._metrics.outbox_refused.inc(len(refused))
        counted = self._refused_warning.count(len(refused))
        if counted is None:
            return
        _, topic, why = refused[-1]
        shown = _shown_topic(topic)
        log.warning("MQTT client refused %d message(s) it cannot send (%s; topic %r): dropped them, the reports stay"
                    " stored; check [mqtt] topic_prefix", counted[0], why, shown)

    def flush_logs(self) -> None:
        """Log the refused messages a rate limit held back (called when the gateway stops)."""
        self._refused_warning.flush()

    async def _publish_chunk(self, client: aiomqtt.Client, msgs: list[OutboxMessage], settled: dict[int, bool]
                             ) -> tuple[list[int], list[tuple[OutboxMessage, str, str]], BaseException | None]:
        """Publish ``msgs`` (QoS 1) and wait for every PUBACK.

        Returns:
            the ids delivered, the messages the client refused locally ``(message, topic, why)``, and the
            first other failure (the connection), or None. When this is cancelled, the publishes are too.
            ``settled`` gets each message whose publish ended, cancelled or not: id -> it was PUBACKed.
        """
        prefix = self._config.topic_prefix
        topics = [publish_topic(prefix, m) for m in msgs]
        tasks = [asyncio.ensure_future(client.publish(t, m.payload, qos=1)) for t, m in zip(topics, msgs)]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            settled.update((m.id, t.exception() is None) for m, t in zip(msgs, tasks) if not t.cancelled())
        delivered: list[int] = []
        refused: list[tuple[OutboxMessage, str, str]] = []
        failure: BaseException | None = None
        for msg, topic, task in zip(msgs, topics, tasks):
            exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
            if exc is None:
                delivered.append(msg.id)
            elif isinstance(exc, (ValueError, TypeError)):
                # paho checks topic and payload before sending ("Publish topic is too long.", ...):
                # the same message would be refused at every retry.
                refused.append((msg, topic, str(exc) or type(exc).__name__))
            elif failure is None:
                failure = exc
        return delivered, refused, failure

    @staticmethod
    async def _until_lost(client: aiomqtt.Client) -> None:
        """Never return; raise :class:`aiomqtt.MqttError` when the connection is lost.

        The gateway subscribes to nothing, so the messages iterator yields nothing: it only ends, with
        the error, when aiomqtt learns of a disconnect (its public way to tell one).
        """
        try:
            async for _ in client.messages:
                pass
        except aiomqtt.MqttError as exc:
            # say why (connection closed by the broker, keepalive unanswered, ...), not just "disconnected"
            raise aiomqtt.MqttError(str(exc.__cause__ or exc)) from exc
        raise aiomqtt.MqttError("disconnected")

    @staticmethod
    async def _unless_lost(aw: Awaitable[T], lost: "asyncio.Future[None]", timeout_s: float) -> tuple[bool, T | None]:
        """Await ``aw`` for up to ``timeout_s`` unless the connection is lost first.

        Returns:
            ``(True, result)`` when ``aw`` completed, ``(False, None)`` on the timeout (``aw`` is then cancelled).

        Raises:
            aiomqtt.MqttError: the connection was lost (``aw`` is cancelled).
            Exception: whatever ``aw`` raised.
        """
        task = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait((task, lost), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task in done and task.exception() is None:
            return True, task.result()  # done (a chunk PUBACKed just before a loss still leaves the outbox)
        if lost in done:
            lost.result()
        if task in done:
            task.result()
        return False, None
