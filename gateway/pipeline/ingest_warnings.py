"""The ingest service's rate-limited warnings: refused frames (unregistered, revoked, retired, failed HMAC,
policy), values altered or dropped on the way in, seqs given up or lost, releases and outbox messages not stored.

Part of :class:`gateway.pipeline.ingest.IngestService` (a mixin holding that state and those lines); each
line names devices and links only, never a key, tag or frame.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from gateway.errors import RejectedReport
from gateway.log_limit import CountedWarning, LogLimiter, more_since
from gateway.metrics import GatewayMetrics
from gateway.pipeline.link import Link
from gateway.pipeline.verify import OutOfRange
from gateway.storage.store import ReportRecord, WindowDuplicate

# The ingest service's logger, as before these lines had a module of their own: operators and tests filter on it.
log = logging.getLogger("gateway.pipeline.ingest")

OVERLOAD_LOG_EVERY_S = 10.0
# While the broker is down and the outbox at its cap every commit drops: one warning per minute, with the count.
OUTBOX_DROP_LOG_EVERY_S = 60.0
# A board whose clock was set back far re-releases every period since: one warning per minute, with the count.
WINDOW_DUP_LOG_EVERY_S = 60.0
# Frames from unregistered (never added, or revoked) devices are rejected at INFO; a WARNING per reason
# at most once a minute names them, so a board left out of the registry shows at the default log level.
UNREGISTERED_LOG_EVERY_S = 60.0
UNREGISTERED_NAMED = 5  # device ids named in one such line (more are "and others"; ids are unauthenticated)
UNREGISTERED_LINKS_NAMED = 3
# Frames of a registered device whose tag fails (reason hmac): a board left on its old key after a key
# rotation loses all its data, each frame otherwise only an INFO line. One WARNING per device at most
# once per 10 min, with the count (never the key or the tag). Registered ids only: bounded by the registry.
HMAC_LOG_EVERY_S = 600.0
# Frames of a retired device (its board moved to another gateway, or taken out of service, and still in
# reach): refused, never acknowledged, not a security event. One WARNING per device at most once per 10 min,
# with the count, naming `devices reinstate`. Authentic frames of registered ids only: bounded by the registry.
RETIRED_LOG_EVERY_S = 600.0
# An authentic report the policy gate refuses is acknowledged past (the device deletes it): its data is
# lost, most likely because the board runs another policy.json. One warning per minute, with the count.
POLICY_LOG_EVERY_S = 60.0
# A non-personal value outside its field's policy valid_range (a faulty sensor) is dropped, the rest of
# its report stored. A sensor gone wrong sends one in every report: one WARNING per device and field at
# most once a minute, with the count.
RANGE_LOG_EVERY_S = 60.0
# A gap in a device's seqs passed after the timed hold (a device without 'h'): data the city may have lost
# (reports acknowledged after a restored backup) or seqs skipped at a reboot. One WARNING per device at
# most once per 10 min, with the number of seqs given up since.
GAP_LOG_EVERY_S = 600.0
# Seqs a device's 'h' says it no longer holds that were acknowledged before and are not in this store
# (gateway.pipeline.seq_gaps: a restored older backup, a replaced store, a board on two gateways): one
# WARNING per device per gateway run, at the first such stretch. A restore shows at the first contact after
# the start; a board on two gateways (docs/scale-out.md) would otherwise warn every time the other one
# acknowledged it, so later stretches are DEBUG lines, counted in civicedge_seqs_not_held_total.
# An authentic report under a seq stored with another frame (a board whose seq counter restarted under an id
# with stored reports): refused, never acknowledged. One WARNING per device at most once per 10 min, with the count.
REUSED_LOG_EVERY_S = 600.0
MAX_DEVICE_WARNINGS = 1024  # devices with their own warning limit per kind of warning (a fleet's old boards)
# A table of per-device warnings: keyed by device id, or (device id, field) for a warning per field.
DeviceWarnings = dict[str | tuple[str, str], CountedWarning]


class UnregisteredFrames:
    """Frames from devices of one rejection reason (``unknown_device`` or ``revoked``) since the last
    warning about them: the first few ids and links, bounded (a flood of made-up ids must not grow it)."""

    def __init__(self, reason: str, clock: Callable[[], float]) -> None:
        self.reason = reason
        self.limit = LogLimiter(UNREGISTERED_LOG_EVERY_S, clock)
        self._clock = clock
        self.frames = 0
        self._since = 0.0
        self._devices: dict[str, None] = {}  # insertion order: the first seen are named
        self._more_devices = False
        self._links: dict[str, None] = {}
        self._more_links = False

    def add(self, device: str, link: str) -> None:
        """Count one frame from ``device`` on ``link``."""
        if not self.frames:
            self._since = self._clock()
        self.frames += 1
        if device not in self._devices:
            if len(self._devices) < UNREGISTERED_NAMED:
                self._devices[device] = None
            else:
                self._more_devices = True
        if link not in self._links:
            if len(self._links) < UNREGISTERED_LINKS_NAMED:
                self._links[link] = None
            else:
                self._more_links = True

    def take(self) -> str:
        """The warning for the frames counted so far (device ids and links only, never a key); start over."""
        devices = ", ".join(self._devices) + (" and others" if self._more_devices else "")
        links = ", ".join(self._links) + (" and others" if self._more_links else "")
        elapsed = self._clock() - self._since
        count = "1 frame" if self.frames == 1 else "%d frames in the last %.0f s" % (self.frames, elapsed)
        if self.reason == "revoked":
            line = ("revoked device(s) %s still sending (%s) on %s: their frames are not stored; a revoked id "
                    "stays revoked (power the board off, or provision it under a new id)" % (devices, count, links))
        else:
            line = ("frames from unregistered device(s) %s (%s) on %s: register with `civicedge gateway devices "
                    "add --id ID ...` (their frames are not stored until then)" % (devices, count, links))
        self.frames, self._devices, self._more_devices, self._links, self._more_links = 0, {}, False, {}, False
        return line


class IngestWarnings:
    """The warnings of :class:`~gateway.pipeline.ingest.IngestService` (its base class): each rate-limited, per
    device where a fleet's boards must each be named, counting what it held back."""

    # set by IngestService
    _metrics: GatewayMetrics

    def _init_warnings(self, log_clock: Callable[[], float]) -> None:
        """Make the warnings, spaced by ``log_clock``."""
        self._drop_warning = CountedWarning(
            OUTBOX_DROP_LOG_EVERY_S, log_clock, "MQTT outbox at its cap: dropped %d more message(s) since the last "
            "such line; the reports stay stored, only their upstream copies are lost", log)
        self._window_dup_warning = CountedWarning(
            WINDOW_DUP_LOG_EVERY_S, log_clock, "%d more release(s) for periods already stored acknowledged, not "
            "stored, since the last such line", log)
        self._unregistered = {r: UnregisteredFrames(r, log_clock) for r in ("unknown_device", "revoked")}
        self._log_clock = log_clock
        self._hmac_warnings: DeviceWarnings = {}  # device id -> its warning (see _hmac_failed)
        self._retired_warnings: DeviceWarnings = {}  # device id -> its warning (see _retired_frame)
        self._policy_warning = CountedWarning(
            POLICY_LOG_EVERY_S, log_clock, "%d more report(s) refused by the privacy policy gate since the last "
            "such line", log)
        self._coarse_warning = CountedWarning(
            POLICY_LOG_EVERY_S, log_clock, "%d more report(s) with values off the gateway policy's quantum stored "
            "rounded to it since the last such line", log)
        # reports with non-personal fields dropped (sent over a shorter period than their release_every_s:
        # a board on older firmware), warned per device, so each such board is named
        self._dropped_warnings: DeviceWarnings = {}
        # values dropped outside their valid_range (a faulty sensor), warned per (device, field)
        self._range_warnings: DeviceWarnings = {}
        # seq gaps given up after the timed hold, warned per device (see _gap_given_up)
        self._gap_warnings: DeviceWarnings = {}
        self._lost_warned: set[str] = set()  # devices _seqs_lost warned about in this run
        # reports under seqs committed with another frame (a restarted counter), warned per device
        self._reused_warnings: DeviceWarnings = {}
        self._poison_warnings: DeviceWarnings = {}  # device id -> its ERROR limit (see _reports_failed)

    def _flush_warnings(self) -> None:
        """At stop: log what every warning held back."""
        for warning in (self._drop_warning, self._window_dup_warning, self._policy_warning, self._coarse_warning,
                        *self._hmac_warnings.values(), *self._dropped_warnings.values(),
                        *self._range_warnings.values(), *self._gap_warnings.values(),
                        *self._reused_warnings.values(), *self._retired_warnings.values(),
                        *self._poison_warnings.values()):
            warning.flush()
        self._unregistered_ended()

    def _seqs_lost(self, dev: str, first: int, last: int) -> None:
        """Warn that seqs ``first..last`` of ``dev``, which it no longer holds, were acknowledged before but are
        not in this store (:func:`~gateway.pipeline.seq_gaps.acknowledged_before`): once per device per run
        (later stretches at DEBUG; all are counted in ``civicedge_seqs_not_held_total``)."""
        if dev in self._lost_warned:
            log.debug("%s: seqs %d..%d acknowledged before, not in this store (warned once in this run)",
                      dev, first, last)
            return
        if len(self._lost_warned) < MAX_DEVICE_WARNINGS:  # authentic ids only (h is signed): bounded anyway
            self._lost_warned.add(dev)
        log.warning("%s: seqs %d..%d were acknowledged before but are not in this store: the device no longer holds "
                    "them (its 'h'), more than a reboot skips, with its outbox below its cap; acknowledging past "
                    "them. Likely a restored older backup, a store moved or replaced, or another gateway acknowledged "
                    "them (a board on two gateways); or, once, a board re-provisioned with a --seq-start far above "
                    "its last seq. Their reports are not here (in the newer store or the other gateway, if anywhere). "
                    "Said once per device until the gateway restarts; later such seqs count in "
                    "civicedge_seqs_not_held_total", dev, first, last)

    def _gap_given_up(self, dev: str, first: int, last: int) -> None:
        """Warn that seqs ``first..last`` of ``dev`` are acknowledged past without arriving, at most once per
        :data:`GAP_LOG_EVERY_S` per device, counting the seqs given up since the last such line."""
        self._metrics.seqs_given_up.inc(last - first + 1)
        counted = self._device_warning(self._gap_warnings, dev, GAP_LOG_EVERY_S,
                                       "seq(s) of %s given up since the last such line (never arrived, acknowledged "
                                       "past)").count(last - first + 1)
        if counted is None:
            return
        log.warning("%s: gap accepted seqs=%d..%d: never arrived, acknowledging past them: reports the device sent "
                    "and no longer holds are lost (a store restored from a backup misses those acknowledged after "
                    "it), or seqs it skipped at a reboot were never sent (boards without 'h' in their reports cannot "
                    "tell the gateway which)%s", dev, first, last,
                    more_since(counted[0] - (last - first + 1), "seq(s) of this device given up"))

    def _outbox_dropped(self, n: int) -> None:
        """Warn about upstream messages dropped at the outbox cap, at most once per interval, with the count."""
        counted = self._drop_warning.count(n)
        if counted is not None:
            dropped, commits = counted
            log.warning("MQTT outbox at its cap ([mqtt] outbox_max_bytes): dropped %d message(s)%s; the reports stay "
                        "stored, only their upstream copies are lost", dropped,
                        " in %d commit(s) since the last such line" % commits if commits > 1 else "")

    def _window_duplicates(self, dups: list[WindowDuplicate]) -> None:
        """Count releases not stored because their period's release was, and warn at most once per
        :data:`WINDOW_DUP_LOG_EVERY_S` naming the last one and counting the others since the last such
        line (a board re-releases every period since its clock was set back: one line each would flood)."""
        self._metrics.duplicate_windows.inc(len(dups))
        counted = self._window_dup_warning.count(len(dups))
        if counted is None:
            return
        d = dups[-1]
        log.warning("%s: %s release of %s for the period %s (w=%d, l=%d s) is already stored (seq %d): seq %d "
                    "acknowledged, not stored (its clock was set back?)%s", d.device, d.type, ",".join(d.fields),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.w)), d.w, d.l, d.kept_seq, d.seq,
                    more_since(counted[0] - 1, "such release(s)"))

    @staticmethod
    def _unregistered_frame(frames: UnregisteredFrames, device: str, link: Link) -> None:
        """Count a frame from an unknown or revoked device; warn with the ones since the last such line
        at most once per :data:`UNREGISTERED_LOG_EVERY_S` (each frame is also an INFO rejection)."""
        frames.add(device, link.name)
        if frames.limit.allow() is not None:
            log.warning("%s", frames.take())

    def _device_warning(self, table: DeviceWarnings, device: str, every_s: float,
                        held: str, *, fld: str | None = None) -> CountedWarning:
        """``device``'s own rate-limited warning in ``table``, made on first use (``held``: the line for
        the count held back, with ``%s`` for the device). With ``fld``, one per device and field (keyed
        ``(device, fld)``, ``%s`` is ``"<device> <fld>"``). At :data:`MAX_DEVICE_WARNINGS` entries the
        table starts afresh, logging what it held: a flood of ids cannot grow it."""
        key: str | tuple[str, str] = device if fld is None else (device, fld)
        warning = table.get(key)
        if warning is None:
            if len(table) >= MAX_DEVICE_WARNINGS:
                for held_back in table.values():
                    held_back.flush()
                table.clear()
            who = device if fld is None else "%s %s" % (device, fld)
            warning = table[key] = CountedWarning(every_s, self._log_clock,
                                                  "%d more " + held % who.replace("%", "%%"), log)
        return warning

    def _hmac_failed(self, device: str, link: Link) -> None:
        """Warn that frames of the registered ``device`` fail their HMAC check, at most once per
        :data:`HMAC_LOG_EVERY_S` per device, counting the others since the last such line. Names the
        device and link only: never the key, the tag or the frame."""
        counted = self._device_warning(self._hmac_warnings, device, HMAC_LOG_EVERY_S,
                                       "frame(s) of %s failed their HMAC check since the last such line (not stored, "
                                       "not acknowledged)").count()
        if counted is None:
            return
        log.warning("frames of registered device %s fail their HMAC check on %s: not stored and not acknowledged, so "
                    "the board keeps its reports (until its outbox cap, then it drops the oldest); it most likely still "
                    "holds an old key, not the registry's (was its key rotated? `civicedge gateway devices "
                    "rotate-key`, or re-provisioned elsewhere). Without loss: give the registry the board's key (the "
                    "\"key\" of its /identity.json, `mpremote connect PORT cat :/identity.json`) with `PUT "
                    "/api/admin/devices/%s` and \"replace\": true, its registered kind, zone and location "
                    "(docs/api.md); then it delivers what it holds. Only if the board may not keep that key: re-key "
                    "it (`civicedge provision ... --force --take-over --discard-unsent`, docs/field.md), which drops "
                    "its un-sent reports. Or someone sends frames under its id%s",
                    device, link.name, device, more_since(counted[0] - 1, "such frame(s)"))

    def _retired_frame(self, device: str, link: Link) -> None:
        """Warn that the retired ``device`` still sends, at most once per :data:`RETIRED_LOG_EVERY_S` per
        device, counting the others since the last such line."""
        counted = self._device_warning(self._retired_warnings, device, RETIRED_LOG_EVERY_S,
                                       "frame(s) of retired device %s refused since the last such line (not stored, "
                                       "not acknowledged)").count()
        if counted is None:
            return
        log.warning("retired device %s still sends on %s: its frames are refused and not acknowledged, so the board "
                    "keeps its reports for the gateway that serves it now. If it is back with this gateway: "
                    "`civicedge gateway devices reinstate %s` (or POST /api/admin/devices/%s/reinstate)%s",
                    device, link.name, device, device, more_since(counted[0] - 1, "such frame(s)"))

    def _policy_refused(self, exc: RejectedReport) -> None:
        """Warn about an authentic report the policy gate refused, at most once per
        :data:`POLICY_LOG_EVERY_S`, naming its device, seq and rule (the gate's messages quote no
        personal value) and counting the others since the last such line."""
        counted = self._policy_warning.count()
        if counted is None:
            return
        rule = str(exc).split(": ", 1)[-1]  # the verifier's message is "<device> seq <n>: <rule>"
        log.warning("%s seq %s refused by the privacy policy gate: %s; it is authentic, so it is acknowledged and "
                    "deleted on the device: its data is lost (a board flashed with a looser policy.json than the "
                    "gateway's? docs/privacy.md, policy changes)%s", exc.device_id, exc.seq, rule,
                    more_since(counted[0] - 1, "policy refusal(s)"))

    def _dropped(self, device: str, seq: int, fields: tuple[str, ...]) -> None:
        """Count the fields dropped from a stored report and warn, at most once per
        :data:`POLICY_LOG_EVERY_S` for each device, naming them."""
        self._metrics.fields_dropped.labels("release_period").inc(len(fields))
        counted = self._device_warning(self._dropped_warnings, device, POLICY_LOG_EVERY_S,
                                       "report(s) of %s with fields over a shorter period than their release period "
                                       "dropped since the last such line").count()
        if counted is None:
            return
        log.warning("%s seq %d: %s sent over a shorter period than its release period (policy release_every_s), "
                    "dropped: not stored or published, the rest of the report kept (the board runs older firmware: "
                    "flash the new firmware)%s", device, seq, ", ".join(fields),
                    more_since(counted[0] - 1, "such report(s) of this device"))

    def _out_of_range(self, rec: ReportRecord, values: tuple[OutOfRange, ...]) -> None:
        """Count the values dropped from a stored report outside their field's ``valid_range`` and warn,
        at most once per :data:`RANGE_LOG_EVERY_S` for each device and field, naming the device, the
        field, the value and the range (ranges are on non-personal fields only, so the value says nothing
        about people)."""
        self._metrics.fields_dropped.labels("out_of_range").inc(len(values))
        for v in values:
            self._metrics.values_out_of_range.labels(rec.kind, v.field).inc()
            counted = self._device_warning(self._range_warnings, rec.device, RANGE_LOG_EVERY_S,
                                           "%s value(s) outside the policy valid_range dropped since the last "
                                           "such line", fld=v.field).count()
            if counted is None:
                continue
            log.warning("%s seq %d: %s = %d is outside its valid_range [%d, %d] (policy), dropped: not stored or "
                        "published, the rest of the report kept (a faulty sensor or firmware: check the board)%s",
                        rec.device, rec.seq, v.field, v.value, v.low, v.high,
                        more_since(counted[0] - 1, "such value(s) of this device and field"))

    def _coarsened(self, device: str, seq: int, fields: tuple[str, ...]) -> None:
        """Warn, at most once per :data:`POLICY_LOG_EVERY_S`, that a report was stored with values rounded
        to the gateway policy's quantum (the board runs a policy with a finer one)."""
        counted = self._coarse_warning.count()
        if counted is None:
            return
        log.warning("%s seq %d: %s off the gateway policy's quantum, stored rounded to it (the board runs another "
                    "policy.json: flash it with the gateway's)%s", device, seq, ", ".join(fields),
                    more_since(counted[0] - 1, "such report(s)"))

    def _unregistered_ended(self) -> None:
        """At stop: log the frames from unregistered devices held back by the limit."""
        for frames in self._unregistered.values():
            if frames.frames:
                log.warning("%s", frames.take())
            frames.limit.reset()
