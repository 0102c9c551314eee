"""MQTT upstream: drains the SQLite outbox to the broker with QoS 1, in order.

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
import ssl
import time
from typing import Awaitable, Callable, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config.model import MqttConfig
from gateway.log_limit import CountedWarning, LogLimiter, more_since
from gateway.metrics import GatewayMetrics
from gateway.storage.store import OutboxMessage, ReportRecord, ReportStore

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
        return log.isEnabledFor(logging.DEBUG)


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
        }
        return topic_for(prefix, gateway_id, rec), json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    return encode


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The TLS context for ``config``: the broker verified against ``ca_file`` (the system's CAs without
    one), its host name checked; the client certificate when configured.

    Raises:
        OSError: a file is unreadable (``ssl.SSLError``, an OSError too: not PEM, key not the certificate's).
    """
    ctx = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if config.cert_file is not None:
        ctx.load_cert_chain(str(config.cert_file), str(config.key_file) if config.key_file else None)
    return ctx


class MqttUpstream:
    """Publishes outbox messages to one broker.

    Args:
        config: the ``[mqtt]`` section.
        store: the report store holding the outbox.
        run_in_store: runs a store method on the store's thread (``IngestService.run_in_store``).
        stored: event set whenever new reports (and outbox messages) were committed.
        metrics: ``outbox_depth``, ``mqtt_published``, ``link_state{link="mqtt"}``.
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
        self._tls: ssl.SSLContext | None = None  # made at the first connect (run): files unreadable are logged

    def _tls_context(self) -> ssl.SSLContext:
        """See :func:`tls_context`; an unusable file raises RuntimeError (not taken for a broker failure)."""
        try:
            return tls_context(self._config)
        except (OSError, ValueError) as exc:
            raise RuntimeError("cannot use the TLS files of [mqtt] (ca_file, cert_file, key_file): %s" % exc) from exc

    def _client(self) -> aiomqtt.Client:
        cfg = self._config
        # paho's keepalive (PINGREQ when idle, connection dropped when unanswered) finds a broker that
        # went silent; a closed socket is seen at once. Either way aiomqtt ends its messages iterator.
        client = aiomqtt.Client(cfg.host, cfg.port, identifier=self._client_id, keepalive=cfg.keepalive_s,
                                timeout=PUBLISH_TIMEOUT_S, username=cfg.username, password=cfg.password,
                                tls_context=self._tls)
        client.pending_calls_threshold = PENDING_CALLS_WARN_ABOVE
        return client

    async def _peek(self) -> list[OutboxMessage]:
        msgs = await self._run(self._store.outbox_peek, DRAIN_CHUNK)  # type: ignore[misc]
        assert isinstance(msgs, list)
        return msgs

    async def run(self) -> None:
        """Connect, drain, wait for more; reconnect with backoff while the broker is down.

        The backoff (:data:`BACKOFF_MIN_S` doubling to :data:`BACKOFF_MAX_S`) starts over only once
        messages are delivered or the outbox is empty, not at each connection: a broker that accepts
        the connection and then fails every publish is retried with backoff too.
        """
        self._metrics.link_state.labels("mqtt").set(0)
        while True:
            try:
                if self._tls is None and self._config.tls:
                    self._tls = self._tls_context()
                _LIBRARY_LOG.last = None
                async with self._client() as client:
                    self.connected, self.problem = True, None
                    self._metrics.link_state.labels("mqtt").set(1)
                    self._log_connected()
                    await self._drain_forever(client)
            except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
                problem, why = self._diagnose(exc)
                self._log_down(why, lost=self.connected, retry_s=self._backoff)
                self.connected, self.problem = False, problem
                self._metrics.link_state.labels("mqtt").set(0)
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
                self.problem = "mqtt upstream failing (%s: %s)" % (type(exc).__name__, exc)
                self._metrics.link_state.labels("mqtt").set(0)
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
                return ("mqtt broker refused the credentials",
                        "the broker refused the credentials (%s, %s); check [mqtt] username and password_file"
                        % (exc, who))
            return "mqtt broker refused the connection (%s)" % exc, "the broker refused the connection (%s)" % exc
        text = str(exc)
        if cfg.tls and ("SSL" in text or "certificate" in text.lower() or isinstance(exc, ssl.SSLError)):
            hint = " (is [mqtt] ca_file the CA that signed the broker's certificate?)" if "CERTIFICATE" in text else ""
            return "mqtt broker TLS handshake failed", "TLS handshake failed: %s%s" % (text, hint)
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
        return "mqtt broker unreachable", text
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
        delivered ones of its chunk be published again."""
        lost = asyncio.ensure_future(self._until_lost(client))
        try:
            while True:
                self._stored.clear()
                msgs = await self._peek()
                if not msgs:
                    self._backoff = BACKOFF_MIN_S  # all delivered: the next failure starts a new backoff
                    await self._unless_lost(self._stored.wait(), lost, IDLE_POLL_S)
                    continue
                # paho sends in call order; all of a chunk must be PUBACKed before it leaves the outbox.
                done, outcome = await self._unless_lost(self._publish_chunk(client, msgs), lost, PUBLISH_TIMEOUT_S)
                if not done or outcome is None:
                    raise asyncio.TimeoutError("no PUBACK for %d message(s) within %.0f s" % (len(msgs),
                                                                                          PUBLISH_TIMEOUT_S))
                delivered, refused, failure = outcome
                if refused:
                    await self._refuse(refused)
                if delivered:
                    await self._run(self._store.outbox_delete, delivered)  # type: ignore[misc]
                    self._metrics.mqtt_published.inc(len(delivered))
                    self._backoff = BACKOFF_MIN_S
                self._metrics.outbox_depth.set(self._store.outbox_depth)
                if failure is not None:
                    raise failure
        finally:
            lost.cancel()
            await asyncio.gather(lost, return_exceptions=True)

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
        shown = topic if len(topic) <= 120 else "%s... (%d bytes)" % (topic[:80], len(topic.encode()))
        log.warning("MQTT client refused %d message(s) it cannot send (%s; topic %r): dropped them, the reports stay"
                    " stored; check [mqtt] topic_prefix", counted[0], why, shown)

    def flush_logs(self) -> None:
        """Log the refused messages a rate limit held back (called when the gateway stops)."""
        self._refused_warning.flush()

    async def _publish_chunk(self, client: aiomqtt.Client, msgs: list[OutboxMessage]
                             ) -> tuple[list[int], list[tuple[OutboxMessage, str, str]], BaseException | None]:
        """Publish ``msgs`` (QoS 1) and wait for every PUBACK.

        Returns:
            the ids delivered, the messages the client refused locally ``(message, topic, why)``, and the
            first other failure (the connection), or None. When this is cancelled, the publishes are too.
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
