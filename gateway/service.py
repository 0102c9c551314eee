"""The gateway service: wires config, registry, store, ingest, transports, upstream, web, retention.

Lifecycle: :meth:`Gateway.start` then :meth:`Gateway.stop`; ``stop`` (SIGTERM) stops the links,
commits and acknowledges everything in flight, gives the outbox a moment to drain, and closes the
store. After a SIGKILL nothing acknowledged is lost: ACKs follow commits.

Every transport runs under a supervisor: a transport task that ends before the stop (an exception
its own retries did not catch, or a return) is logged at ERROR with the reason, its link is marked
down (``civicedge_link_state`` 0, a ``/healthz`` reason) and it is started again after
:data:`LINK_RESTART_MIN_S`, doubling up to :data:`LINK_RESTART_MAX_S` while it keeps failing; the
transport is closed first (bounded by :data:`LINK_CLOSE_S`) so it starts again from nothing. A task
that ends because the gateway is stopping (``stop`` sets :attr:`Gateway._stopping` first, or the
supervisor itself is being cancelled: a transport may swallow the cancel and return) is not an
error and is not restarted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from gateway.ack_time import AckTime
from gateway.config.model import GatewayConfig
from gateway.config.sim_clock import SimClock
from gateway.errors import StorageError, TransportError
from gateway.health import Problem, all_links_down
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import IngestService
from gateway.pipeline.verify import Verifier
from gateway.policy_check import check_policy
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.retention_clock import CONFIRM_FILE as RETENTION_CONFIRM_FILE
from gateway.retention_clock import META_KEY as RETENTION_META_KEY
from gateway.retention_clock import (CONFIRM_POLL_S, SKIPPED_RETRY_S, RetentionClock, confirm_command_for,
                                     elapsed_clock)
from gateway.storage import disk_space
from gateway.storage.damage import DOCS as DAMAGE_DOCS
from gateway.storage.damage import QuickCheck, damaged_error, is_corrupt, unclean_stop
from gateway.storage.row_retention import RowPass
from gateway.storage.store import ReportStore
from gateway.storage.restore_marker import check_no_restore_marker
from gateway.storage.store_devices import check_registry_present
from gateway.storage.store_files import real_store_path
from gateway.transports.base import Transport
from gateway.transports.serial_link import SerialTransport
from gateway.upstream.mqtt import HEALTH_STALLED, MqttUpstream, encode_report
from gateway.version import gateway_version
from gateway.web.errors import BadParameter
from gateway.web.hosts import host_port
from gateway.web.retention import RetentionSettings

log = logging.getLogger(__name__)

DRAIN_ON_STOP_S = 3.0
# Each step of a stop after the ingest drain (links, upstream, transports) gets this long, so the
# gateway exits in bounded time (a service manager's stop timeout) even if a radio stack hangs.
STOP_STEP_S = 3.0
# How often the store's files are checked (deleted or replaced under the running gateway); commits
# check too, this tells the operator also when no reports arrive.
STORE_WATCH_S = 5.0
# What to do about store_gone, the same in its ERROR and in /healthz: a restart alone would open a new
# empty store at the path (or fail), and leave the old file where it went.
STORE_GONE_ACTION = ("nothing more is committed or acknowledged (the devices keep their reports); stop the gateway, "
                     "put the store back (or restore it: docs/gateway.md, Backups) and start it again")
# A transport task that ended unexpectedly is restarted after this long, doubling while it keeps ending
# within LINK_STABLE_S of its start, up to the max.
LINK_RESTART_MIN_S = 1.0
LINK_RESTART_MAX_S = 60.0
LINK_STABLE_S = 60.0
# A transport that ended is closed before it is restarted; its close gets this long.
LINK_CLOSE_S = 5.0
# Every link down is the critical all_links_down only once it has lasted this long without a break: brief
# outages are normal (a USB port re-enumerating, a BLE restart until its first scan ends) and monitors page
# on critical (/healthz has no delay of its own). Meanwhile each link has its own link_down/ble_down warning.
ALL_LINKS_DOWN_AFTER_S = 60.0


def _log_cut_job(job: "asyncio.Future[object]") -> None:
    """Log the failure of a retention batch a stop cut off and waited for (nothing else awaits its result)."""
    if not job.cancelled() and job.exception() is not None:
        log.warning("stopping: the retention batch running at the stop failed: %s", job.exception())


class Gateway:
    """One gateway instance.

    Args:
        config: validated configuration.
        policy: privacy policy (default: firmware/policy.json).
        health_monotonic: the clock for how long every link has been down (:data:`ALL_LINKS_DOWN_AFTER_S`);
            ``time.monotonic`` (real time also under ``[sim_clock]``: an outage is the operator's).

    Attributes:
        metrics: the gateway's metrics (``metrics.registry`` is the CollectorRegistry for /metrics).
        registry: the device registry. store: the report store. ingest: the ingest service.
        transports: the links. upstream: the MQTT forwarder or None.
        clock: the gateway's unix-time clock (simulated under ``[sim_clock]``), used by ingest,
            the web surface, the collection plan and retention alike.
    """

    def __init__(self, config: GatewayConfig, *, policy: dict[str, Any] | None = None,
                 health_monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.policy = policy if policy is not None else load_policy()
        for warning in check_policy(self.policy):  # what `run --check` prints; an operator reads the start log
            log.warning("privacy policy: %s", warning.message)
        # What the retention task removes by, whether or not the web surface (its admin API sets it) is up: a
        # retention shortened through PUT /api/admin/retention (retention.json) applies with [http] off too.
        # Read before the store opens: a file it refuses leaves nothing open. interval_s: a retention set below
        # it through the admin API is warned about (values outlive it).
        try:
            self._retention_source = RetentionSettings(self.policy, path=config.data_dir / "retention.json",
                                                       overrides=config.retention_overrides,
                                                       interval_s=config.retention_interval_s)
        except BadParameter as exc:  # in the words and reason of `run --check` (gateway.cli.run_check)
            raise StorageError(exc.message, reason="bad_retention_file") from exc
        self.metrics = GatewayMetrics(config.id)
        # its size and free disk, read at each scrape, and min_free_mb for the disk alert rules
        self.metrics.watch_store(config.storage.path, config.storage.min_free_mb)
        check_no_restore_marker(config.data_dir)  # a restore cut off in its swap: half old, half restored files
        # Before Registry() creates an empty one: a registry moved away while the store knows devices would
        # have every frame of theirs refused (gateway.storage.store_devices).
        check_registry_present(config.registry_dir, config.storage.path, config.source)
        self.registry = Registry(config.registry_dir)
        # Read before the store opens it: a -wal holding pages is what a gateway that did not stop cleanly
        # leaves (gateway.storage.damage.unclean_stop); said with the start-up check of the file.
        self._unclean = unclean_stop(real_store_path(config.storage.path))
        encoder = encode_report(config.mqtt.topic_prefix, config.id) if config.mqtt else None
        self.store = ReportStore(
            config.storage.path, gateway_id=config.id, outbox_encoder=encoder,
            outbox_max_bytes=config.mqtt.outbox_max_bytes if config.mqtt else 0,
            outbox_policy=config.mqtt.outbox_policy if config.mqtt else "drop_oldest",
            backup_before_migration=config.storage.backup_before_migration,
        )
        self.metrics.store_damaged.set_function(lambda: 0.0 if self.store.damage.problem is None else 1.0)
        # read at each scrape from what /healthz reads (a stat per file): a deletion a commit or a retention
        # pass found before the next watch shows in both at once
        self.metrics.store_gone.set_function(lambda: 0.0 if self.store.file_problem() is None else 1.0)
        self._check: QuickCheck | None = None  # the start-up quick_check while it runs
        self._damage_logged = False
        sim_clock = config.sim_clock
        # Under [sim_clock]: virtual time, following the simulation's file if it has one, never stepping back.
        clock: Callable[[], float] = time.time if sim_clock is None else SimClock(sim_clock)
        # The gap hold waits for a device's re-sends, which run on the device's clock: under
        # [sim_clock] it is measured in simulated time too.
        monotonic = time.monotonic if sim_clock is None else clock
        # One time source for everything the gateway stamps or asks about "now": ingest, the web's
        # "last 24 h" views and open alarms, today's collection plan, retention.
        self.clock = clock
        # when retention removed values dates open data's Last-Modified, as the publication marks: by this clock
        self.store.removal_clock = clock
        # Retention removes for good: it checks the clock against the data and (real clock only) against
        # the time elapsed before each pass (gateway/retention_clock.py).
        confirm = confirm_command_for(config.source)
        # (elapsed time that counts suspend: a resumed host or VM is not a forward step of its clock)
        self.retention_clock = RetentionClock(config.retention_interval_s,
                                              elapsed_clock() if sim_clock is None else None, confirm_command=confirm)
        # Read at each scrape: a step recorded at a stop, or by a pass cut off or failing, shows too.
        self.metrics.retention_clock_offset.set_function(lambda: self.retention_clock.offset)
        # ACKs carry no time to boards that disagree while the clock is suspect (gateway/ack_time.py)
        self.ack_time = AckTime(self.retention_clock, clock, confirm_command=confirm,
                                on_withheld=self.metrics.ack_time_withheld.inc)
        self.ingest = IngestService(store=self.store, verifier=Verifier(self.registry, self.policy),
                                    metrics=self.metrics, batch_ms=config.storage.batch_ms,
                                    batch_max=config.storage.batch_max, clock=clock,
                                    gap_hold_s=config.ack_gap_hold_s, monotonic=monotonic,
                                    max_in_flight=config.storage.max_in_flight,
                                    # "one line per 10 s" is for the people reading the log: wall time
                                    log_monotonic=time.monotonic, time_sync=self.ack_time)
        self.transports: list[Transport] = [
            SerialTransport(p.port, baud=p.baud, metrics=self.metrics, flow=self.ingest.room) for p in config.serial
        ]
        if config.ble.enabled:
            from gateway.transports.ble_link import BleTransport

            # its pauses follow the simulated clock under [sim_clock] (docs/ble.md §8, Which clock)
            self.transports.append(BleTransport(config.ble, metrics=self.metrics, registry=self.registry,
                                                monotonic=monotonic))
        self.upstream: MqttUpstream | None = None
        if config.mqtt is not None:
            self.upstream = MqttUpstream(config.mqtt, store=self.store, run_in_store=self.ingest.run_in_store,
                                         stored=self.ingest.stored, metrics=self.metrics, gateway_id=config.id)
        # The retention clock's meta row as last saved; None until the retention task has read it (then
        # nothing of the clock checks is saved at a stop: it would overwrite what the store holds).
        self._retention_saved: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._link_failures: dict[str, str] = {}  # link name -> why its task ended (until it is restarted)
        self._health_monotonic = health_monotonic
        self._all_down_since: float | None = None  # when a look at the health first found every link down
        self._disk = disk_space.DiskHealth()
        self._stopping = False  # set first thing in stop(): a transport task that ends now is not restarted
        self._web: Any = None
        self._queries: Any = None  # the web's read connection, closed before the store checkpoints
        # The web's store reads' findings (StoreFleetSource.store_problems: /healthz adds them itself, health()
        # for STATUS=); None while the web surface is not up.
        self._store_read_problems: Callable[[], list[Problem]] | None = None
        # The admin API's RegistryAdmin.close: the stop waits for its writes (a device removal) before it
        # closes the registry under them.
        self._admin_close: Callable[[float], bool] | None = None
        self.http_port: int | None = None

    def retention(self) -> dict[tuple[str, str], int]:
        """Effective retention in days per (kind, field): the policy's, the config's ``[retention.<kind>]`` and
        the admin API's (``retention.json``, and what it sets while the gateway runs), with ``[http]`` off too."""
        return self._retention_source.effective()

    async def start(self) -> None:
        """Start ingest, every transport, upstream, the retention task and (if available) the web surface.

        Raises:
            TransportError: reason ``open_failed``: the ``[mqtt]`` TLS files cannot be used (nothing started).
        """
        if self.upstream is not None:
            self.upstream.check_tls()  # else run would retry the unusable files once a minute forever
        for problem in self.config.open_data.problems:
            # Loaded leniently by `gateway run`: metadata must not stop collection, but the operator must
            # see it (run --check refuses it). Not a /healthz reason: a reason there is 503 "degraded",
            # which monitors read as down, while ingest works.
            log.error("%s; [opendata] is published without this key until the config is fixed (run --check "
                      "refuses it)", problem)
        self.metrics.config_problems.set(len(self.config.open_data.problems))
        await self.ingest.start()
        self.metrics.outbox_depth.set(self.store.outbox_depth)
        # Retention first: its first store call (what its checks knew, the last report's time) is queued on
        # the store's thread before any report from the links is stored by the clock it checks.
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        for transport in self.transports:
            self._tasks.append(asyncio.create_task(self._supervise(transport), name=transport.name))
        if self.upstream is not None:
            self._tasks.append(asyncio.create_task(self.upstream.run(), name="mqtt"))
        self._tasks.append(asyncio.create_task(self._watch_store(), name="store-watch"))
        self._tasks.append(asyncio.create_task(self._check_store(), name="store-check"))
        if self.config.http is not None:
            await self._start_web()
        log.info("gateway %s running (civicedge %s): %d serial port(s), BLE %s, upstream %s, store %s",
                 self.config.id, gateway_version(), len(self.config.serial), "on" if self.config.ble.enabled else "off",
                    "%s:%d" % (self.config.mqtt.host, self.config.mqtt.port) if self.config.mqtt else "none",
                    self.config.storage.path)

    async def _supervise(self, transport: Transport) -> None:
        """Run ``transport`` until cancelled; log, mark down and restart it whenever it ends (module docstring)."""
        delay = LINK_RESTART_MIN_S
        while True:
            started = time.monotonic()
            error: BaseException | None = None
            try:
                await transport.run(self.ingest.feed)
                why = "its task returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever ended it is logged and the link restarted
                error = exc
                why = "%s: %s" % (type(exc).__name__, exc)
            if self._stopping or _cancelling():
                # The gateway stops: the transport was cancelled and returned (or failed while stopping);
                # not a failure, and nothing to restart. stop() closes it.
                log.debug("link %s ended while the gateway stops (%s)", transport.name, why)
                return
            if time.monotonic() - started >= LINK_STABLE_S:
                delay = LINK_RESTART_MIN_S
            self.metrics.link_state.labels(transport.name).set(0)
            self._link_failures[transport.name] = "link %s failed (%s); restarting it" % (transport.name, why)
            log.error("link %s ended unexpectedly (%s); it is down, restarting it in %.0f s", transport.name, why,
                      delay, exc_info=error)
            error = None  # the traceback holds the transport's frames: not kept over the wait
            await _close_transport(transport)
            await asyncio.sleep(delay)
            delay = min(LINK_RESTART_MAX_S, delay * 2)
            if self._stopping:
                return
            self._link_failures.pop(transport.name, None)
            log.info("link %s restarted", transport.name)

    async def _save_meta(self, key: str, value: str) -> None:
        """Write a ``meta`` row of the store on the store's thread (the web layer reads it read-only)."""
        await self.ingest.run_in_store(self.store.save_meta, key, value)

    async def _start_web(self) -> None:
        http = self.config.http
        assert http is not None
        try:
            from aiohttp import web

            from gateway.storage.queries import ReportQueries
            from gateway.web.app import create_app
            from gateway.web.connlimit import CappedSite, connection_cap, raise_fd_limit
            from gateway.web.context import CONTEXT_KEY
            from gateway.web.exposure import exposure_warning
            from gateway.web.opendata import OpenDataMeta
            from gateway.web.published_marks import published_meta_writer
        except ImportError as exc:
            log.info("web surface not available (%s); HTTP disabled", exc)
            return
        token = None
        if http.admin_token_file is not None:
            from gateway.config.loader import read_admin_token

            token = read_admin_token(http.admin_token_file)  # checked again: it may have changed since the load
        from gateway.routes.web import routes_for_gateway  # GET /api/routes/plan, [routes] of the config

        # A read that finds the file damaged records it where the writer looks before each commit.
        self._queries = ReportQueries(self.config.storage.path, damage=self.store.damage)
        plan_routes = routes_for_gateway(self.config, self.registry, clock=self.clock)
        app = create_app(store=self._queries, registry=self.registry, policy=self.policy,
                         metrics_registry=self.metrics.registry, admin_token=token,
                         admin_token_file=http.admin_token_file, retention=self._retention_source,  # the task's
                         health_checks=[self._health], links_in_health_checks=True, clock=self.clock,
                         ble_enabled=self.config.ble.enabled,
                         allowed_hosts=(*http.allowed_hosts, http.listen), trusted_proxies=http.trusted_proxies,
                         admin_networks=http.admin_networks, extra_routes=plan_routes,
                         store_batch_ms=self.config.storage.batch_ms,
                         ingest_settled=self.ingest.settled,  # a device removal waits for its reports' commits
                         open_data=OpenDataMeta.of(self.config.open_data),
                         # published: keys only, here too: the retention row holds a data-protection hold
                         save_meta=published_meta_writer(self._save_meta))
        # Before aiohttp waits for open requests: a plan being solved (up to its time limit, 300 s) would hold
        # the stop past systemd's TimeoutStopSec; its waiters get 503 planner_stopped at once.
        app.on_shutdown.append(plan_routes.close)
        self._store_read_problems = getattr(app[CONTEXT_KEY].fleet, "store_problems", None)
        self._admin_close = getattr(app[CONTEXT_KEY].admin, "close", None)
        # shutdown_timeout: a request still answered at stop (a client that stopped reading a CSV export) is cancelled
        # after a step, as every other part of the stop; aiohttp's default 60 s outlasted the run's grace period.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_STEP_S)
        await runner.setup()
        # A flood of idle connections must not use up the descriptors the links and the store need.
        cap = connection_cap(http.max_connections, raise_fd_limit(http.max_connections))
        site = CappedSite(runner, http.listen, http.port, max_connections=cap)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise TransportError("cannot serve HTTP on %s: %s" % (host_port(http.listen, http.port), exc.strerror),
                                 reason="open_failed", link="http") from exc
        self._web = runner
        sockets = getattr(site._server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else http.port
        log.info("HTTP on %s (at most %d connections)", host_port(http.listen, self.http_port), cap)
        # Once, at start: the operators' reads answer anyone who reaches the port (and a token would cross
        # the network in clear text); said, not refused, since a firewall may keep the port to the operators.
        exposed = exposure_warning(http.listen, self.http_port, admin_token=token is not None)
        if exposed is not None:
            log.warning("%s", exposed)

    def health(self) -> list[Problem]:
        """The gateway's health problems (``/healthz`` reasons, each with its code and severity:
        :mod:`gateway.health`), what ``STATUS=`` shows; empty when healthy: its own, after the web's store reads'
        (``store_wal_unchecked``, in ``/healthz``'s order; none with ``[http]`` off). Cheap, on the event loop: no
        store read, one ``statvfs``, at most one read of the ``-shm``'s header."""
        reads = self._store_read_problems
        return (reads() if reads is not None else []) + self._health()

    def _health(self) -> list[Problem]:
        reasons = []
        damaged = self.store.damage.problem
        if damaged is not None:
            reasons.append(Problem("store_damaged", "report store damaged, nothing is committed or acknowledged "
                                   "until a restart on a recovered or restored file: %s" % damaged))
        gone = self.store.file_problem()
        if gone is not None:
            reasons.append(Problem("store_gone", "%s: %s" % (gone, STORE_GONE_ACTION)))
        failing = self.ingest.store_problem
        if failing is not None and gone is None and damaged is None:  # the damage says why commits fail
            reasons.append(Problem("commits_failing", failing))
        failing_alone = self.ingest.reports_problem  # a bug some reports set off: the others are stored
        if failing_alone is not None and gone is None and damaged is None:
            reasons.append(Problem("reports_failing", failing_alone))
        # one statvfs; held until free space is clearly back above the threshold (no 200/503 flapping)
        disk = self._disk.problem(disk_space.measure(self.config.storage.path, self.config.storage.min_free_mb))
        if disk is not None:  # disk_low (warning) or, below an eighth of min_free_mb, disk_critical
            reasons.append(disk)
        if self.retention_clock.problem is not None:
            held = self.retention_clock.problem
            reasons.append(Problem("retention_held", held) if held.startswith("retention held")
                           else Problem("retention_skipped", "retention skipped: %s" % held))
        offset = self.retention_clock.offset_problem()  # removal late by unconfirmed steps: confirm the clock
        if offset is not None:
            reasons.append(Problem("retention_clock_offset", offset))
        withheld = self.ack_time.problem()  # ACKs without the time to boards that disagree: confirm the clock
        if withheld is not None:
            reasons.append(withheld)
        # What fails: unreachable, refused the credentials, TLS handshake failed, ...; or, connected
        # between the broker's closes, stalled behind one message the broker keeps closing on.
        if self.upstream is not None and (not self.upstream.connected or self.upstream.problem == HEALTH_STALLED):
            reasons.append(Problem("mqtt_stalled" if self.upstream.problem == HEALTH_STALLED else "mqtt_down",
                                   "%s (outbox depth %d)" % (self.upstream.problem or "mqtt broker unreachable",
                                                             self.store.outbox_depth)))
        links: list[Problem] = []
        for t in self.transports:
            code = "ble_down" if t.name == "ble" else "link_down"
            failed = self._link_failures.get(t.name)
            if failed is not None:
                links.append(Problem(code, failed, t.name))
            elif self.metrics.value("civicedge_link_state", {"link": t.name}) == 0:
                # BLE's link_state is 0 also while its first scan runs after a start: down only with a
                # problem (radio/adapter unreachable), as it is reported.
                problem = getattr(t, "problem", None)
                if problem:
                    links.append(Problem(code, "%s is down: %s" % (t.name, problem), t.name))
                elif isinstance(t, SerialTransport):
                    links.append(Problem(code, "%s is down" % t.name, t.name))
        every_link = self._every_link_down([p.subject or "" for p in links])
        if every_link is not None:
            # Listed ahead of the links' own warnings, the order /healthz and STATUS= show (a STATUS= too
            # long for one line keeps its critical codes whatever the order: notify_status.status_text).
            reasons.append(every_link)
        return reasons + links

    def _every_link_down(self, down: list[str]) -> Problem | None:
        """``all_links_down`` for the links ``down`` once every configured link has been down for
        :data:`ALL_LINKS_DOWN_AFTER_S`, as seen by the looks at the health (``/healthz``, ``STATUS=`` every
        few seconds) without one finding a link up; None before that, and with no link configured."""
        if not down or len(down) != len(self.transports):
            self._all_down_since = None
            return None
        now = self._health_monotonic()
        if self._all_down_since is None:
            self._all_down_since = now
        return all_links_down(down) if now - self._all_down_since >= ALL_LINKS_DOWN_AFTER_S else None

    async def _watch_store(self) -> None:
        """Log an ERROR once when the store's file is deleted or replaced (every commit fails from then on) or
        found damaged, and a WARNING (at most once per disk_space.WARN_EVERY_S) while its disk is low.

        The file is looked at on the store's thread (ReportStore.check_file): once found gone nothing more is
        written, and a file with no name left is copied by the store (``<path>.salvaged``), all before the
        ERROR that names the copy, or the commands that copy it out, is logged."""
        logged: str | None = None
        low_warned = -float("inf")
        while True:
            gone = await self.ingest.run_in_store(self.store.check_file)
            assert gone is None or isinstance(gone, str)
            if gone is not None and gone != logged:
                # whether what it held is lost (deleted) or still on disk (moved away) is in the message
                log.error("%s: %s", gone, STORE_GONE_ACTION)
            logged = gone
            self._log_damage()
            low = disk_space.measure(self.config.storage.path, self.config.storage.min_free_mb).low
            now = time.monotonic()
            if low is None and low_warned > -float("inf"):
                log.info("report store disk space back above [storage] min_free_mb")
                low_warned = -float("inf")
            elif low is not None and now - low_warned >= disk_space.WARN_EVERY_S:
                log.warning("%s", low)
                low_warned = now
            await asyncio.sleep(STORE_WATCH_S)

    def _log_damage(self) -> None:
        """Log the store's damage at ERROR, once, when it was found (by any read or write, or the check)."""
        damaged = self.store.damage.problem
        if damaged is not None and not self._damage_logged:
            self._damage_logged = True
            log.error("%s; from now on no report is committed or acknowledged (the devices keep them and re-send "
                      "them)", damaged)

    async def _check_store(self) -> None:
        """``PRAGMA quick_check`` of the store once, in the background after start (gateway.storage.damage).

        Every start, not only after an unclean stop: damage from the disk (bit rot, a bad sector, a torn
        write the drive acknowledged) reaches a cleanly stopped file too, and the check reads the file on
        a worker thread while reports are committed meanwhile (seconds per million reports). What it
        finds stops commits (the devices keep their reports) and degrades ``/healthz`` until a restart.
        """
        why = "after an unclean stop (a -wal was left)" if self._unclean else "at start"
        check = self._check = QuickCheck(real_store_path(self.config.storage.path))
        started = time.monotonic()
        try:
            problems = await asyncio.to_thread(check.run)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is said, never fatal
            if is_corrupt(exc):
                self.store.mark_damaged(str(damaged_error(self.config.storage.path, exc, "checking it " + why)))
                self._log_damage()
            else:
                log.warning("report store %s: quick_check %s could not run: %s", self.config.storage.path, why, exc)
            return
        finally:
            self._check = None
        if problems is None:
            return  # interrupted: the gateway stops
        took = time.monotonic() - started
        if problems:
            self.store.mark_damaged(
                "report store %s is damaged (PRAGMA quick_check %s found: %s%s); stop the gateway, then recover what "
                "is readable into a new file (sqlite3 .dump) or restore the last backup (%s)"
                % (self.config.storage.path, why, "; ".join(problems[:3]),
                   "; ..." if len(problems) > 3 else "", DAMAGE_DOCS))
            self._log_damage()
        else:
            log.info("report store %s checked %s: sound (quick_check, %.1f s)", self.config.storage.path, why, took)

    async def _retention_loop(self) -> None:
        # The store's last count of a held large removal: (time.monotonic(), removal time, retention). The
        # count runs inside the store's write transaction, on its only writer thread: while the hold lasts
        # it is repeated once an interval (or when the retention or the clock moved back), not every minute.
        counted: tuple[float, float, dict[tuple[str, str], int]] | None = None
        while True:
            delay = self.config.retention_interval_s
            left_confirm = False  # a failed pass left the operator's confirmation unread
            failed = False
            if self.store.damage.problem is not None or self.store.file_gone:
                # Every write is refused now (logged once, /healthz degraded): nothing to try until a restart.
                await asyncio.sleep(min(delay, SKIPPED_RETRY_S))
                continue
            try:
                if self._retention_saved is None:
                    # First on the store's thread (the task starts before the links), in one call: what the
                    # checks knew before this start, and the last report stored before it.
                    first = await self.ingest.run_in_store(
                        lambda: (self.store.retention_meta(), self.store.last_received_at()))
                    assert isinstance(first, tuple)
                    self.retention_clock.restore(first[0])
                    self._retention_saved, last = self.retention_clock.state(), first[1]
                    if self.retention_clock.confirm_cut_off:  # (saved "in use": saved as cut off by this pass)
                        self._retention_saved = first[0]
                else:
                    last = await self.ingest.run_in_store(self.store.last_received_at)
                assert last is None or isinstance(last, float)
                now = self.clock()
                confirmed, given = self._retention_confirmed()
                if confirmed:
                    self.retention_clock.confirm(now, given)
                was = (self.retention_clock.offset, self.retention_clock.hold_reason)
                removal_time = self.retention_clock.removal_time(now, last)
                if (self.retention_clock.offset, self.retention_clock.hold_reason) != was or confirmed:
                    # A step recorded, a hold begun or ended, or the operator's confirmation taken (its file is
                    # gone: a start after a stop or kill during this pass says it was used up): saved before the
                    # store work (a pass may count or remove for long), or a stop cutting it off would lose it.
                    await self._save_retention_state()
                if removal_time is None:  # the clock is implausible or retention held (logged): try again soon
                    # (a pass cut off before waits too: it is finished under a checked clock only)
                    self.metrics.retention_skipped.labels(self.retention_clock.reason).inc()
                    delay = min(delay, SKIPPED_RETRY_S)
                else:
                    await self._finish_cut_pass(removal_time)
                    days = self.retention()
                    hold = self.retention_clock.large_removal_hold(days)
                    if hold is not None and self._held_count_current(counted, removal_time, days):
                        # still held as the store counted it (the clock was checked again, the store is not)
                        self.metrics.retention_skipped.labels("held").inc()
                        delay = min(delay, SKIPPED_RETRY_S)
                    else:
                        rows = await self.ingest.run_in_store(self.store.begin_retention, days, removal_time, hold)
                        assert isinstance(rows, RowPass) and rows.values is not None
                        await self._run_pass(rows)
                        if hold is not None and hold.held:  # a field held it all, or rows held the row part
                            counted = (time.monotonic(), removal_time, dict(days))
                            self.retention_clock.held(now, hold.held, rows_only=rows.values.stage != "held")
                            self.metrics.retention_skipped.labels(self.retention_clock.reason).inc()
                            delay = min(delay, SKIPPED_RETRY_S)
                        else:
                            counted = None
                            self.retention_clock.ran(removal_time, days)
                # (a hold begun, released or its span grown; a pass that ran)
                await self._save_retention_state()
            except Exception as exc:  # noqa: BLE001 - a failed pass is logged and retried next interval
                if isinstance(exc, StorageError) and exc.reason == "file_gone":
                    # the store watch logs the ERROR, once; no pass until a restart (the check above)
                    log.info("retention pass not run: the report store's file is gone (see the ERROR before)")
                else:
                    log.error("retention pass failed: %s", exc)
                self.retention_clock.not_run()
                left_confirm = (self.config.data_dir / RETENTION_CONFIRM_FILE).exists()
                failed = True
            # A confirmation a failed pass left is taken by the next pass, not at once (that would repeat a
            # failing pass every few seconds); so is a clock step after a failed pass.
            await self._retention_wait(delay, wake_on_confirm=not left_confirm, wake_on_step=not failed)

    async def _retention_wait(self, delay: float, *, wake_on_confirm: bool, wake_on_step: bool = True) -> None:
        """Sleep ``delay`` s until the next retention pass, or less: once the operator's confirmation
        (``civicedge gateway retention --confirm``) appears, within :data:`CONFIRM_POLL_S`, not at the next pass
        an ``interval_s`` (an hour, say) later; and once the wall clock stepped against the monotonic clock
        (:meth:`RetentionClock.stepped_since_pass`), so the pass records and saves the step before a restart
        could forget it. One ``stat`` and one clock comparison per look, on the loop; no store read."""
        confirm = self.config.data_dir / RETENTION_CONFIRM_FILE
        end = time.monotonic() + delay
        poll = wake_on_confirm or wake_on_step
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, CONFIRM_POLL_S) if poll else left)
            if wake_on_confirm and confirm.exists():
                return  # (the pass takes it and says so)
            if wake_on_step and self.retention_clock.stepped_since_pass(self.clock()):
                return  # (the pass logs the step)

    async def _finish_cut_pass(self, removal_time: float) -> None:
        """Finish a pass cut off by a stop (or failed) after it was decided, before a new one: by its own
        retention, not held again, and by the earlier of its saved removal time and ``removal_time`` (this pass's,
        the clock checked): a pass decided by a clock that was ahead is dropped by the store (a WARNING) rather
        than removing values still inside their retention (gateway/storage/field_retention.py)."""
        cut = await self.ingest.run_in_store(self.store.resume_retention, removal_time)
        if cut is None:
            return
        assert isinstance(cut, RowPass) and cut.values is not None
        await self._run_pass(cut)
        self.retention_clock.resumed(self.clock(), cut.values.now, cut.retention_days, list(cut.values.rows_held or []))
        if cut.held:
            self.metrics.retention_skipped.labels(self.retention_clock.reason).inc()

    async def _run_pass(self, rows: RowPass) -> None:
        """Run the pass ``rows`` to its end, one job per batch (counting, values, rows): ingest waits for one
        batch at most, not for the whole pass. Each job gets the effective retention (a field the admin API
        keeps longer now loses no more values). What a pass cut off or failing part-way removed is counted
        and logged too."""
        job: asyncio.Future[object] | None = None
        try:
            while True:
                job = asyncio.ensure_future(self.ingest.run_in_store(self.store.retention_batch, rows,
                                                                     self.retention()))
                # shielded: a cancel (the stop) does not drop the job's result while it still runs
                if not await asyncio.shield(job):
                    break
        finally:
            if job is not None and not job.done():
                # Cancelled while a job runs on the store's thread: its removal commits all the same, so it is
                # waited for (one bounded batch) before the pass's count is read.
                await asyncio.wait([job], timeout=STOP_STEP_S)
                # Its failure (the store gone under the stop, say) is said here, not left to asyncio's
                # "exception was never retrieved" whenever the task is collected; one still running is said
                # when it ends.
                if job.done():
                    _log_cut_job(job)
                else:
                    job.add_done_callback(_log_cut_job)
            self.metrics.retention_removed.inc(rows.readings)
            values = rows.values
            if values is not None and values.stage not in ("rows", "done", "held") and rows.readings:
                log.info("retention removed %d reading(s) before the pass was cut off (the rest goes when it is "
                         "finished)", rows.readings)
            elif values is not None and values.stage == "rows" and not rows.done and rows.rows:
                log.info("retention removed %d report row(s) before the pass was cut off (the rest goes when it is "
                         "finished)", rows.rows)

    def _held_count_current(self, counted: tuple[float, float, dict[tuple[str, str], int]] | None,
                            removal_time: float, days: dict[tuple[str, str], int]) -> bool:
        """Whether the store's count of a held large removal (``counted``) still stands for this pass: taken
        less than an interval ago, for the same retention and a removal time not earlier (a retention set
        back or a clock put right may end the hold, so those are counted at once)."""
        return (counted is not None and time.monotonic() - counted[0] < self.config.retention_interval_s
                and counted[2] == days and removal_time >= counted[1])

    async def _save_clock_step(self) -> None:
        """At a stop, before the store closes: a clock step since the last retention pass is recorded and saved
        (else the next start would trust the clock it stepped to, and set boards' clocks by it). Only once the
        retention task has read the saved state; a failure is logged, the stop goes on."""
        if self._retention_saved is None or self.store.file_gone or self.store.damage.problem is not None:
            return
        try:
            if self.retention_clock.stepped_since_pass(self.clock()):
                last = await self.ingest.run_in_store(self.store.last_received_at)
                assert last is None or isinstance(last, float)
                self.retention_clock.note_stop(self.clock(), last)
            # Saved whenever it differs from what was last saved, step or not: a pass cut off by this stop may
            # have recorded a step (or begun a hold) it had no time to save, and no step is seen since it.
            await self._save_retention_state()
        except Exception as exc:  # noqa: BLE001 - the stop goes on; the step is then forgotten (logged)
            log.error("stopping: the gateway clock step since the last retention pass could not be saved: %s", exc)

    async def _save_retention_state(self) -> None:
        """Save the retention clock's state in the store's ``meta`` row when it differs from what was last saved."""
        state = self.retention_clock.state()
        if state != self._retention_saved:
            await self._save_meta(RETENTION_META_KEY, state)
            self._retention_saved = state

    def _retention_confirmed(self) -> tuple[bool, float | None]:
        """Whether the operator confirmed retention (``civicedge gateway retention --confirm``), and when (the
        file's time; None if it cannot be read); the file is removed: one confirmation, one pass. Never kept
        for a pass after a restart: it confirmed the clock as it read then."""
        path = self.config.data_dir / RETENTION_CONFIRM_FILE
        try:
            given: float | None = path.stat().st_mtime
        except OSError:
            given = None
        try:
            path.unlink()
        except FileNotFoundError:
            return False, None
        return True, given

    async def stop(self) -> None:
        """Drain and stop: stop accepting, commit and ACK what is in flight, close links, upstream, web, store."""
        self._stopping = True  # before anything is cancelled: a link task that ends now is not restarted
        log.info("gateway %s stopping", self.config.id)
        # Links stay open while in-flight reports are committed, so their ACKs still go out.
        await self.ingest.stop()
        link_tasks = [t for t in self._tasks
                      if t.get_name() not in ("mqtt", "retention", "store-watch", "store-check")]
        await _cancel(link_tasks, "links")
        if self.upstream is not None and self.store.outbox_depth and self.upstream.connected:
            deadline = time.monotonic() + DRAIN_ON_STOP_S
            while self.store.outbox_depth and self.upstream.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        check = self._check
        if check is not None:
            # Stopped and waited for: a reader left on the store would keep its WAL from being checkpointed.
            check.interrupt()
            await _bounded_wait([t for t in self._tasks if t.get_name() == "store-check"], "the store check",
                                failures=logging.DEBUG)
        await _cancel([t for t in self._tasks if t not in link_tasks], "upstream and housekeeping")
        await self._save_clock_step()
        if self.upstream is not None:
            self.upstream.flush_logs()  # refused messages a rate limit held back
        # All transports at once, one bound for all; one that fails or hangs does not keep the store open.
        closing = [asyncio.create_task(t.close(), name=type(t).__name__) for t in self.transports]
        await _bounded_wait(closing, "transports", failures=logging.WARNING)
        if self._web is not None:
            self._store_read_problems = None  # (its reads end with the web surface)
            await self._web.cleanup()
        admin_close, self._admin_close = self._admin_close, None
        if admin_close is not None and not await asyncio.to_thread(admin_close, STOP_STEP_S):
            # The registry closes under it: a removal then fails at its next registry step, leaving the device
            # retired for its removal at worst (a new removal or a reinstate finishes it).
            log.warning("an admin registry write (a device removal) was still running %.0f s into the stop; "
                        "the registry is closed anyway (see `civicedge gateway devices list` for a device left "
                        "retired by it)", STOP_STEP_S)
        if self._queries is not None:
            self._queries.close()
        self.ingest.close()
        self.store.close()
        self.registry.close()
        log.info("gateway %s stopped (outbox depth %d)", self.config.id, self.store.outbox_depth)


def _cancelling() -> bool:
    """True while the current task is being cancelled (a cancel the code it awaited swallowed)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _close_transport(transport: Transport) -> None:
    """Close a transport that ended, before it is restarted (bounded; a failure is logged, not raised)."""
    close = getattr(transport, "close", None)
    if close is None:
        return
    try:
        async with asyncio.timeout(LINK_CLOSE_S):
            await close()
    except TimeoutError:
        log.warning("link %s did not close within %.0f s; restarting it anyway", transport.name, LINK_CLOSE_S)
    except Exception as exc:  # noqa: BLE001 - a transport that cannot close is still restarted
        log.warning("link %s: closing it before the restart failed (%s: %s)", transport.name,
                    type(exc).__name__, exc)


async def _cancel(tasks: list["asyncio.Task[Any]"], what: str) -> None:
    """Cancel ``tasks`` and wait up to :data:`STOP_STEP_S` for them; name the ones that hang."""
    for task in tasks:
        task.cancel()
    await _bounded_wait(tasks, what, failures=logging.DEBUG)


async def _bounded_wait(tasks: list["asyncio.Task[Any]"], what: str, *, failures: int) -> None:
    """Wait up to :data:`STOP_STEP_S` for ``tasks``; log those that failed (at ``failures``) or hang."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=STOP_STEP_S)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.log(failures, "stopping %s: %s ended with %r", what, task.get_name(), task.exception())
    if pending:
        log.warning("stopping %s: %s did not finish within %.0f s; left behind", what,
                    ", ".join(sorted(t.get_name() for t in pending)), STOP_STEP_S)
