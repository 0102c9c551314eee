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
import time
from typing import Awaitable, Callable

import aiomqtt

from gateway.config.model import MqttConfig
from gateway.metrics import GatewayMetrics
from gateway.storage.store import OutboxMessage, ReportRecord, ReportStore

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


def topic_for(prefix: str, gateway_id: str, rec: ReportRecord) -> str:
    """Return ``<prefix>/<gateway>/<kind>/<device>/<type>``."""
    return "%s/%s/%s/%s/%s" % (prefix, gateway_id, rec.kind, rec.device, rec.type)


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

    async def _peek(self) -> list[OutboxMessage]:
        msgs = await self._run(self._store.outbox_peek, DRAIN_CHUNK)  # type: ignore[misc]
        assert isinstance(msgs, list)
        return msgs

    async def run(self) -> None:
        """Connect, drain, wait for more; reconnect with backoff while the broker is down."""
        backoff = BACKOFF_MIN_S
        self._metrics.link_state.labels("mqtt").set(0)
        while True:
            try:
                # paho's keepalive (PINGREQ when idle, connection dropped when unanswered) finds a broker that
                # went silent; a closed socket is seen at once. Either way aiomqtt ends its messages iterator.
                client = aiomqtt.Client(self._config.host, self._config.port, identifier=self._client_id,
                                        keepalive=self._config.keepalive_s, timeout=PUBLISH_TIMEOUT_S)
                client.pending_calls_threshold = PENDING_CALLS_WARN_ABOVE
                async with client:
                    self.connected = True
                    self._metrics.link_state.labels("mqtt").set(1)
                    self._log_connected()
                    backoff = BACKOFF_MIN_S
                    await self._drain_forever(client)
            except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
                self._log_down(exc, lost=self.connected, retry_s=backoff)
                self.connected = False
                self._metrics.link_state.labels("mqtt").set(0)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
            except Exception as exc:  # noqa: BLE001 - e.g. the outbox unreadable for a moment
                # Not the broker: without this the task would end, the outbox would grow unseen and
                # /healthz would call the broker unreachable. Say what failed and start over.
                log.error("MQTT upstream failed (%s: %s); starting over in %.1f s, the outbox keeps its messages",
                          type(exc).__name__, exc, backoff, exc_info=log.isEnabledFor(logging.DEBUG))
                self.connected = False
                self._metrics.link_state.labels("mqtt").set(0)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _where(self) -> str:
        return "%s:%d" % (self._config.host, self._config.port)

    def _log_down(self, exc: BaseException, *, lost: bool, retry_s: float) -> None:
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
        :class:`asyncio.TimeoutError` when a chunk is not acknowledged within :data:`PUBLISH_TIMEOUT_S`."""
        lost = asyncio.ensure_future(self._until_lost(client))
        try:
            while True:
                self._stored.clear()
                msgs = await self._peek()
                if not msgs:
                    await self._unless_lost(self._stored.wait(), lost, IDLE_POLL_S)
                    continue
                # paho sends in call order; all of a chunk must be PUBACKed before it leaves the outbox.
                if not await self._unless_lost(self._publish_chunk(client, msgs), lost, PUBLISH_TIMEOUT_S):
                    raise asyncio.TimeoutError("no PUBACK for %d message(s) within %.0f s" % (len(msgs),
                                                                                          PUBLISH_TIMEOUT_S))
                await self._run(self._store.outbox_delete, [m.id for m in msgs])  # type: ignore[misc]
                self._metrics.mqtt_published.inc(len(msgs))
                self._metrics.outbox_depth.set(self._store.outbox_depth)
        finally:
            lost.cancel()
            await asyncio.gather(lost, return_exceptions=True)

    @staticmethod
    async def _publish_chunk(client: aiomqtt.Client, msgs: list[OutboxMessage]) -> None:
        """Publish ``msgs`` (QoS 1) and wait for every PUBACK; when one fails or this is cancelled, the
        others are cancelled too (a bare gather left them waiting on a client that was gone)."""
        tasks = [asyncio.ensure_future(client.publish(m.topic, m.payload, qos=1)) for m in msgs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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
    async def _unless_lost(aw: Awaitable[object], lost: "asyncio.Future[None]", timeout_s: float) -> bool:
        """Await ``aw`` for up to ``timeout_s`` unless the connection is lost first.

        Returns:
            True when ``aw`` completed, False on the timeout (``aw`` is then cancelled).

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
            return True  # done (a chunk PUBACKed just before a loss still leaves the outbox)
        if lost in done:
            lost.result()
        if task in done:
            task.result()
        return False
