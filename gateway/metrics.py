"""Prometheus metrics of one gateway, on its own CollectorRegistry (served at /metrics by gateway.web)."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, disable_created_metrics

from gateway.storage.disk_space import MIB, open_store_free_bytes
from gateway.version import gateway_version

REJECTION_REASONS = (
    "oversize", "cobs", "fragment", "version", "malformed", "body", "unknown_device", "revoked", "retired", "hmac",
    "replay", "policy", "kind", "type", "seq_reused", "registry_unreadable",
)
# Why an open BLE link was closed on a registry check (docs/ble.md §8): its device was revoked, is no
# longer registered, or its key is no longer the one the link authenticated with.
BLE_DEAUTHORIZED_REASONS = ("revoked", "retired", "unknown_device", "key_changed")
# Why a non-personal field was left out of a stored report: sent over a shorter period than its
# release_every_s (a board on older firmware); outside its valid_range (a faulty sensor).
FIELD_DROP_REASONS = ("release_period", "out_of_range")
# Why a retention pass was skipped: the gateway clock is behind / too far ahead of the last stored report.
RETENTION_SKIP_REASONS = ("clock_behind", "clock_ahead", "held")


class GatewayMetrics:
    """Counters and gauges of one gateway instance.

    Attributes:
        registry: the CollectorRegistry to expose (``prometheus_client.generate_latest(registry)``).
        reports_in: frames received from devices, by link type (``serial``/``ble``), counted on arrival
            before any check: stored, duplicate, rejected or shed alike.
        reports_stored: reports newly committed. duplicates: retransmissions re-acknowledged.
        duplicate_windows: releases acknowledged and not stored because a release for the same period and
            fields ``(device, type, w, l, fields of e)`` was stored under another seq (a board whose clock
            was set back far).
        rejections: rejected frames by reason.
        fields_dropped: non-personal fields left out of reports otherwise stored, by reason
            (:data:`FIELD_DROP_REASONS`).
        values_out_of_range: non-personal values left out of stored reports because they are outside
            their field's policy ``valid_range`` (a faulty sensor), by kind and field.
        outbox_depth / outbox_bytes / outbox_max_bytes / outbox_dropped / outbox_refused / mqtt_published:
            upstream outbox (messages, payload bytes and the cap on those bytes).
        link_state: 1 when a link (``serial:<port>``, ``ble``, ``mqtt``) is up, else 0 (set through
            :meth:`set_link`, which also counts ``link_disconnects``).
        link_disconnects: times a link went from up to down (a flap between two scrapes shows here).
        seqs_given_up: device seqs acknowledged past without a stored report after the timed hold, for
            boards without ``h`` (those reports are lost, or were skipped at a reboot and never sent).
        seqs_not_held: device seqs acknowledged past without a stored report because the board's ``h``
            says it no longer holds them (skipped at a reboot, or dropped at its outbox cap).
        ble_connected: currently connected BLE devices.
        ble_deauthorized: open BLE links closed because the registry no longer vouches for their
            device, by reason (:data:`BLE_DEAUTHORIZED_REASONS`).
        ingest_backlog: reports received and not yet committed and acknowledged.
        ingest_paused: 1 while the backlog is at its cap and serial links are not read.
        ingest_pauses: times the backlog reached its cap and serial reads paused.
        ingest_shed: frames not taken at twice the cap (not acknowledged: the device re-sends).
        store_commit_failures: batches whose commit failed (disk full, store damaged, deleted...), and
            re-sent reports whose stored digest could not be read; their reports were not acknowledged.
        store_report_failures: reports failing alone with an unexpected error (a bug each one sets off)
            while the others of their commit were stored and acknowledged, counted at each failure (their
            devices re-send them); not in ``store_commit_failures`` (``/healthz`` ``reports_failing``).
        store_damaged: 1 once the report store was found damaged (gateway.storage.damage), until restart.
        store_gone: 1 while the report store's file was deleted, moved or replaced under the running
            gateway (``/healthz`` ``store_gone``: nothing is committed or acknowledged), else 0.
        retention_skipped: retention passes skipped because the gateway clock is implausible, by reason
            (:data:`RETENTION_SKIP_REASONS`, see gateway/retention_clock.py).
        retention_removed: field values (readings) removed by retention.
        ack_time_withheld: ACKs sent without the gateway's time to a board whose clock disagrees while the
            gateway clock is suspect (gateway/ack_time.py; ``/healthz`` ``ack_time_withheld``).
        retention_clock_offset: the forward steps of the gateway clock retention does not follow (s; saved
            over a restart until a step back undoes them or the operator confirms), 0 when none.
        config_problems: config keys refused at start and left at their defaults (``[opendata]`` keys
            ``gateway run`` loads leniently, each logged as an ERROR); 0 when the config is clean.
    """

    def __init__(self, gateway_id: str) -> None:
        # No <counter>_created series: a start time per counter doubles the exposition and nothing reads it
        # (process_start_time_seconds says when the gateway started). Process-wide, as prometheus_client has it.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # cached: labels() takes a lock and builds a key on every call, once per received frame
        self.reports_in = functools.lru_cache(maxsize=16)(
            Counter("civicedge_reports_in", "Frames received from devices, by link type, counted on arrival before "
                    "any check (stored, duplicate, rejected or shed alike)", ["link_type"], registry=r).labels)
        self.reports_stored = Counter("civicedge_reports_stored", "Reports committed to storage", registry=r)
        self.last_commit = Gauge("civicedge_last_commit_timestamp_seconds",
                                 "Unix time of the last successful commit of received reports (0: none since start)",
                                 registry=r)
        self.duplicates = Counter("civicedge_reports_duplicate", "Retransmitted reports re-acknowledged", registry=r)
        self.duplicate_windows = Counter(
            "civicedge_reports_duplicate_window",
            "Releases acknowledged, not stored: a release of their period and fields was stored under another seq",
            registry=r)
        self.rejections = Counter("civicedge_rejections", "Rejected frames by reason", ["reason"], registry=r)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        self.fields_dropped = Counter(
            "civicedge_fields_dropped",
            "Non-personal fields left out of stored reports (the rest kept), by reason: release_period: sent over "
            "a shorter period than the field's release_every_s (a board on older firmware); out_of_range: outside "
            "the field's policy valid_range (a faulty sensor)", ["reason"], registry=r)
        for reason in FIELD_DROP_REASONS:
            self.fields_dropped.labels(reason)
        self.values_out_of_range = Counter(
            "civicedge_values_out_of_range",
            "Non-personal values left out of stored reports because they are outside their field's policy "
            "valid_range (a faulty sensor), by kind and field", ["kind", "field"], registry=r)
        self.outbox_depth = Gauge("civicedge_outbox_depth", "MQTT messages waiting in the outbox", registry=r)
        self.outbox_bytes = Gauge("civicedge_outbox_bytes", "Payload bytes of the MQTT messages waiting in the outbox",
                                  registry=r)
        self.outbox_max_bytes = Gauge(
            "civicedge_outbox_max_bytes", "Cap on civicedge_outbox_bytes ([mqtt] outbox_max_bytes): at it messages "
            "are dropped (civicedge_outbox_dropped_total); 0 without [mqtt]", registry=r)
        self.outbox_dropped = Counter("civicedge_outbox_dropped", "MQTT messages dropped at the outbox cap",
                                      registry=r)
        self.outbox_refused = Counter("civicedge_outbox_refused", "MQTT messages the client refused to send "
                                      "(e.g. a topic too long), dropped from the outbox", registry=r)
        self.mqtt_published = Counter("civicedge_mqtt_published", "MQTT messages acknowledged by the broker",
                                      registry=r)
        self.link_state = Gauge("civicedge_link_state", "1 if the link is up", ["link"], registry=r)
        self.link_disconnects = Counter(
            "civicedge_link_disconnects", "Times a link (serial:<port>, ble, mqtt) went from up to down, "
            "a gateway stop included", ["link"], registry=r)
        self.ble_connected = Gauge("civicedge_ble_connected", "Connected BLE devices", registry=r)
        self.ble_unverified_dropped = Counter(
            "civicedge_ble_unverified_dropped",
            "BLE links dropped because no frame from them verified within the auth timeout", registry=r)
        self.ble_deauthorized = Counter(
            "civicedge_ble_deauthorized", "Open BLE links closed: device revoked, unregistered or its key changed",
            ["reason"], registry=r)
        for reason in BLE_DEAUTHORIZED_REASONS:
            self.ble_deauthorized.labels(reason)
        self.config_problems = Gauge("civicedge_config_problems",
                                     "Config keys refused at start and left at their defaults (see the ERROR log)",
                                     registry=r)
        self.ingest_backlog = Gauge("civicedge_ingest_backlog", "Reports received, not yet committed and ACKed",
                                    registry=r)
        self.ingest_paused = Gauge("civicedge_ingest_paused", "1 while serial links are not read (backlog at cap)",
                                   registry=r)
        self.ingest_pauses = Counter("civicedge_ingest_pauses", "Times serial reads paused at the backlog cap",
                                     registry=r)
        self.ingest_shed = Counter("civicedge_ingest_shed", "Frames not taken at twice the backlog cap (re-sent later)",
                                   registry=r)
        self.store_commit_failures = Counter("civicedge_store_commit_failures",
                                             "Report batches whose commit failed, and re-sent reports whose stored digest could "
                                             "not be read (not acknowledged)", registry=r)
        self.store_report_failures = Counter(
            "civicedge_store_report_failures", "Reports that failed alone with an unexpected error (a civicedge bug "
            "each one sets off) while the others of their commit were stored and acknowledged; counted at each "
            "failure (not acknowledged: their devices re-send them)", registry=r)
        self.store_damaged = Gauge(
            "civicedge_store_damaged", "1 once the report store was found damaged (SQLite: malformed, not a "
            "database; a quick_check at start): no reports are committed or acknowledged until a restart on a "
            "recovered or restored file", registry=r)
        self.store_gone = Gauge(
            "civicedge_store_gone", "1 while the report store's file is deleted, moved away or replaced under the "
            "running gateway (its data directory moved, its mount gone): nothing is committed or acknowledged "
            "until it is put back and the gateway restarted", registry=r)
        self.retention_skipped = Counter(
            "civicedge_retention_skipped", "Retention passes skipped: the gateway clock is implausible "
            "(behind or far ahead of the last stored report)", ["reason"], registry=r)
        for reason in RETENTION_SKIP_REASONS:
            self.retention_skipped.labels(reason)
        self.retention_removed = Counter("civicedge_retention_removed", "Field values removed by retention",
                                         registry=r)
        self.ack_time_withheld = Counter(
            "civicedge_ack_time_withheld", "ACKs sent without the gateway's time to a board whose clock disagrees "
            "while the gateway clock is suspect (stepped forward or ahead of the stored reports, not confirmed)",
            registry=r)
        self.retention_clock_offset = Gauge(
            "civicedge_retention_clock_offset_seconds", "Forward steps of the gateway clock retention does not "
            "follow (it removes by the clock less this) until a step back undoes them or the operator confirms",
            registry=r)
        self.seqs_given_up = Counter(
            "civicedge_seqs_given_up", "Device seqs acknowledged past without a stored report after the timed "
            "hold (ack_gap_hold_s) of boards whose reports carry no 'h' (older firmware): reports lost, or seqs "
            "the board skipped at a reboot; see civicedge_seqs_not_held_total for boards that send 'h'",
            registry=r)
        self.seqs_not_held = Counter(
            "civicedge_seqs_not_held", "Device seqs acknowledged past without a stored report because the "
            "board's 'h' says it no longer holds them: skipped at a reboot or dropped at its own outbox cap "
            "(the gateway cannot tell which)", registry=r)
        self.ack_gap_waits = Counter(
            "civicedge_ack_gap_waits", "Seq gaps the device still held after ack_gap_hold_s (ACKs wait for them)",
            registry=r)
        self.info = Gauge("civicedge_gateway_info", "Gateway identity and the civicedge version it runs",
                          ["gateway", "version"], registry=r)
        self.info.labels(gateway_id, gateway_version()).set(1)
        # process_resident_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds,
        # process_cpu_seconds_total, process_virtual_memory_bytes (from /proc/self; none where it is absent).
        ProcessCollector(registry=r)

    def watch_store(self, path: Path, min_free_mb: int = 0) -> None:
        """Expose the size of the report store at ``path`` and the free space of its file system, read
        at each scrape: ``civicedge_store_size_bytes`` (the database and its write-ahead log) and
        ``civicedge_store_wal_bytes`` (its write-ahead log alone),
        ``civicedge_store_disk_free_bytes`` (what the gateway's user may still write there), with
        ``civicedge_store_disk_min_free_bytes``, ``[storage] min_free_mb`` (``min_free_mb``) in bytes, the
        threshold the alert rules compare free space with (0: no warning). NaN while
        they cannot be read: the store's file not found (its directory moved or deleted, its file system
        unmounted; never the free space or size of whatever is there instead). A symlinked ``path`` is
        followed at each scrape: the write-ahead log lies beside the real file, on its file system."""

        def size() -> float:
            real = os.path.realpath(path)
            total = 0
            for file in (real, real + "-wal"):
                try:
                    total += os.stat(file).st_size
                except FileNotFoundError:
                    if file == real:
                        return math.nan  # the store's file gone: its size is unknown, not 0
                    continue  # no WAL between a checkpoint and the next write
                except OSError:
                    return math.nan
            return float(total)

        def free() -> float:
            got = open_store_free_bytes(path)
            return math.nan if got is None else float(got)

        Gauge("civicedge_store_size_bytes", "Bytes of the report store's database file and its write-ahead log",
              registry=self.registry).set_function(size)
        def wal() -> float:
            try:
                return float(os.stat(os.path.realpath(path) + "-wal").st_size)
            except FileNotFoundError:
                return 0.0  # none between a clean checkpoint and the next write
            except OSError:
                return math.nan

        Gauge("civicedge_store_wal_bytes", "Bytes of the report store's write-ahead log (-wal); over 64 MiB, web reads "
              "wait for a checkpoint", registry=self.registry).set_function(wal)
        Gauge("civicedge_store_disk_free_bytes", "Bytes free for the gateway on the report store's file system",
              registry=self.registry).set_function(free)
        Gauge("civicedge_store_disk_min_free_bytes", "[storage] min_free_mb in bytes: below it /healthz warns "
              "disk_low, below an eighth of it disk_critical (0: no warning)",
              registry=self.registry).set(min_free_mb * MIB)

    def set_link(self, link: str, up: bool) -> None:
        """Set ``civicedge_link_state{link}`` and count a disconnect when an up link goes down. Called on
        state changes only (not per frame): the current value is read back from the registry."""
        # created at 0 with the link's first state: increase() misses a counter's first sample
        disconnects = self.link_disconnects.labels(link)
        if not up and self.value("civicedge_link_state", {"link": link}) == 1:
            disconnects.inc()
        self.link_state.labels(link).set(1 if up else 0)

    def reject(self, reason: str) -> None:
        """Count one rejection."""
        self.rejections.labels(reason).inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Return a sample's current value (0.0 if absent); for tests and health checks."""
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else float(v)
