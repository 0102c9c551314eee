"""Verification rejections by reason, and in-process ingest: commit before ACK, dedup, replay window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from conftest import KEYS
from helpers import body_for, mot_release, report_frame

from gateway.errors import ProtocolError, RejectedReport
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.pipeline.ingest import REPLAY_WINDOW
from gateway.protocol import FRAME_ACK, FRAME_REPORT, build_frame, decode_body, parse_frame, verify_tag
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: report_frame("nobody", 1, KEYS["bin-1"]), "unknown_device"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-2"]), "hmac"),
        (lambda: b"\x03" + report_frame("bin-1", 1, KEYS["bin-1"])[1:], "version"),
        (lambda: b"\x01" + report_frame("bin-1", 1, KEYS["bin-1"])[1:], "hmac"),  # v2 -> v1: the tag covers it
        (lambda: b"\x01\x01\x05bin-1" + bytes(1030), "oversize"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], x=1), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], m={"fill": 1, "mot": 3}), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], e={"lux": 1}), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="alarm", a=["lamp_fail"]), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], k="streetlight"), "kind"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], m={"bat": 1.5}), "body"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="alarm"), "body"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], l=600), "policy"),  # the kind's window is the policy's
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], w=1000), "body"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="hour", l=900, m={}), "body"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="hour", l=3600), "policy"),  # bat is reported in win
        # fill leaves only as the level at the end of each 6 h (policy release_every_s): not over a longer
        # period (in a 15-minute window it is dropped, the rest kept: test_policy_gate), nor in an alarm
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], l=43200, w=43200 * 40000, m={"fill": 40}), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="alarm", l=60, a=["fire"], m={"temp": 80, "fill": 90}), "policy"),
        # unhashable values where the verifier looks names up: refused, never a TypeError
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t=["win"]), "body"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="alarm", l=60, a=[["fire"]]), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="alarm", l=60, a=[{"fire": 1}]), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], m={"bat": True}), "body"),
        (lambda: build_frame(FRAME_REPORT, "bin-1", 1, b"\x91\x01", KEYS["bin-1"]), "body"),
        (lambda: build_frame(FRAME_ACK, "bin-1", 1, {"t": 1}, KEYS["bin-1"]), "type"),
        # a boot report carries nothing but its time (protocol §2)
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="boot", l=60, m={"bat": 10}), "body"),
        # ... and never a personal field's accounting (the policy releases lid in day reports only)
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="boot", l=60, m={}, e={"lid": 500}), "policy"),
        (lambda: report_frame("bin-1", 1, KEYS["bin-1"], t="boot", l=900, m={}), "body"),
    ],
)
def test_rejections(registry: Registry, make: object, reason: str) -> None:
    verifier = Verifier(registry, load_policy())
    with pytest.raises((ProtocolError, RejectedReport)) as info:
        verifier.verify(make(), link="serial:x", now=0.0)  # type: ignore[operator]
    assert info.value.reason == reason


def test_revoked_and_rotated(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    verifier.verify(report_frame("bin-2", 1, KEYS["bin-2"]), link="l", now=0)
    registry.rotate_key("bin-2")
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("bin-2", 2, KEYS["bin-2"]), link="l", now=0)
    assert info.value.reason == "hmac"
    verifier.verify(report_frame("bin-2", 2, registry.key("bin-2")), link="l", now=0)
    registry.revoke("bin-2")
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("bin-2", 3, registry.key("bin-2")), link="l", now=0)
    assert info.value.reason == "revoked"


def test_valid_alarm_and_streetlight(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    v = verifier.verify(report_frame("bin-1", 4, KEYS["bin-1"], t="alarm", l=60, m={}, a=["fire"]), link="l", now=5)
    assert v.record.a == ["fire"] and v.record.zone == "north"
    v = verifier.verify(report_frame("sl-1", 1, KEYS["sl-1"], kind="streetlight"), link="l", now=5)
    assert v.record.m == {"lux": 10, "lvl": 60, "lamp": 0} and v.record.e == {}
    v = verifier.verify(build_frame(FRAME_REPORT, "sl-1", 2, mot_release(1, 7), KEYS["sl-1"]), link="l", now=5)
    assert v.record.m["mot"] == 7 and v.record.e == {"mot": 500}


def test_a_boot_report_is_accepted_with_its_time_only(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    v = verifier.verify(report_frame("bin-1", 7, KEYS["bin-1"], t="boot", l=60, w=946684800, m={}), link="l", now=5)
    assert (v.record.type, v.record.w, v.record.l, v.record.m, v.record.e) == ("boot", 946684800, 60, {}, {})


def test_a_revoke_by_another_process_is_seen_within_the_cache_time(registry: Registry) -> None:
    """The verifier caches registry lookups; a revoke through the gateway's own Registry drops the
    cache at once (above), one made by another process (the CLI, another Registry on the same
    directory) is seen once the cache time has passed."""
    verifier = Verifier(registry, load_policy(), cache_s=0.2)
    verifier.verify(report_frame("bin-2", 1, KEYS["bin-2"]), link="l", now=0)
    cli = Registry(registry.path)
    cli.revoke("bin-2")
    cli.close()
    verifier.verify(report_frame("bin-2", 2, KEYS["bin-2"]), link="l", now=0)  # still cached
    time.sleep(0.25)
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("bin-2", 3, KEYS["bin-2"]), link="l", now=0)
    assert info.value.reason == "revoked"


class Collector:
    """Records ACKs sent on a link (the link callback is the gateway's own interface)."""

    def __init__(self, name: str = "serial:test") -> None:
        self.acks: list[tuple[str, int]] = []
        self.link = Link(name=name, kind="serial", send=self.send)

    async def send(self, frame: bytes) -> None:
        parsed = parse_frame(frame)
        assert parsed.type == FRAME_ACK and verify_tag(parsed, KEYS[parsed.device_id])
        assert isinstance(decode_body(parsed.body)["t"], int)
        self.acks.append((parsed.device_id, parsed.seq))


async def _settle(ingest: IngestService) -> None:
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not ingest._tasks and ingest._queue.empty():
            return


async def test_ingest_commit_ack_dedup_and_window(registry: Registry, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=20, batch_max=5)
    await ingest.start()
    c = Collector()
    for seq in range(1, 13):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), c.link)
    ingest.feed(report_frame("bin-1", 3, KEYS["bin-1"]), c.link)  # retransmission
    ingest.feed(ProtocolError("x", reason="cobs"), c.link)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 12
    assert metrics.value("civicedge_reports_stored_total") == 12
    assert metrics.value("civicedge_reports_duplicate_total") == 1
    assert metrics.value("civicedge_rejections_total", {"reason": "cobs"}) == 1
    # every ACK covers only committed reports
    q = ReportQueries(db)
    stored = {r.seq for r in q.reports(device="bin-1")}
    assert all(set(range(1, s + 1)) <= stored for _, s in c.acks)
    await ingest.stop()
    ingest.close()
    ingest.store.close()

    # restart: the window is restored from the store
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=20, gap_hold_s=0.0)
    await ingest.start()
    c2 = Collector()
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"]), c2.link)  # stored -> re-ACK, not stored again
    big = 12 + REPLAY_WINDOW + 10
    ingest.feed(report_frame("bin-1", big, KEYS["bin-1"]), c2.link)
    await _settle(ingest)
    ingest.feed(report_frame("bin-1", 13, KEYS["bin-1"]), c2.link)  # never stored, older than the window
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"]), c2.link)  # stored long ago: still a duplicate
    await _settle(ingest)
    assert ("bin-1", 12) in c2.acks and ("bin-1", big) in c2.acks
    assert metrics.value("civicedge_rejections_total", {"reason": "replay"}) == 1
    assert q.count_reports() == 13
    await ingest.stop()
    ingest.close()


async def test_one_cumulative_ack_per_device_and_link_per_commit(registry: Registry, tmp_path: Path) -> None:
    """Ten reports of a device committed together are acknowledged by one ACK of the highest seq, on
    each link they came from; another device gets its own."""
    db = tmp_path / "r.sqlite"
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=GatewayMetrics("gw"), batch_ms=300, batch_max=1000)
    await ingest.start()
    a, b = Collector("serial:a"), Collector("ble:b")
    for seq in range(1, 11):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), a.link)
    ingest.feed(report_frame("bin-2", 1, KEYS["bin-2"]), a.link)
    ingest.feed(report_frame("sl-1", 1, KEYS["sl-1"], kind="streetlight"), b.link)
    ingest.feed(report_frame("sl-1", 2, KEYS["sl-1"], kind="streetlight"), b.link)
    await _settle(ingest)
    assert ReportQueries(db).count_reports() == 13
    assert sorted(a.acks) == [("bin-1", 10), ("bin-2", 1)]
    assert b.acks == [("sl-1", 2)]
    await ingest.stop()
    ingest.close()


async def test_ack_waits_for_commit(registry: Registry, tmp_path: Path) -> None:
    """With a long batch interval, no ACK leaves before the commit."""
    db = tmp_path / "r.sqlite"
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=GatewayMetrics("gw"), batch_ms=400, batch_max=1000)
    await ingest.start()
    c = Collector()
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), c.link)
    await asyncio.sleep(0.15)
    assert c.acks == [] and ReportQueries(db).count_reports() == 0
    await _settle(ingest)
    assert c.acks == [("bin-1", 1)] and ReportQueries(db).count_reports() == 1
    await ingest.stop()
    ingest.close()


async def test_a_link_that_hangs_or_fails_on_an_ack_does_not_hold_up_others(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ACK send that hangs is given up after ACK_TIMEOUT_S and one that fails is dropped (the device
    re-sends); reports stay stored and the other link's ACK goes out at once."""
    from gateway.pipeline import ingest as ingest_mod

    monkeypatch.setattr(ingest_mod, "ACK_TIMEOUT_S", 2.0)
    db = tmp_path / "r.sqlite"
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=GatewayMetrics("gw"), batch_ms=20, batch_max=1000)
    await ingest.start()
    sends: list[str] = []
    events: list[str] = []  # in the order they happened: no claim rests on how fast a loaded machine is

    async def hang(frame: bytes) -> None:
        sends.append("hang")
        try:
            await asyncio.sleep(30)
        finally:
            events.append("hang given up")

    async def fail(frame: bytes) -> None:
        sends.append("fail")
        raise OSError("pty gone")

    good = Collector("serial:good")

    async def good_send(frame: bytes) -> None:
        await good.send(frame)
        events.append("good acked")

    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), Link(name="ble:hang", kind="ble", send=hang))
    ingest.feed(report_frame("bin-2", 1, KEYS["bin-2"]), Link(name="serial:fail", kind="serial", send=fail))
    ingest.feed(report_frame("sl-1", 1, KEYS["sl-1"], kind="streetlight"), Link(name="serial:good", kind="serial",
                                                                                 send=good_send))
    started = time.monotonic()
    while ingest._tasks or not ingest._queue.empty() or "hang given up" not in events:
        assert time.monotonic() - started < 15, events  # the hang alone is 30 s
        await asyncio.sleep(0.01)
    # not behind the hanging link: acknowledged while that send still hung (2 s), which was then given
    # up after ACK_TIMEOUT_S, not left for its 30 s (the bound above)
    assert events == ["good acked", "hang given up"], events
    assert sorted(sends) == ["fail", "hang"] and good.acks == [("sl-1", 1)]
    assert ReportQueries(db).count_reports() == 3
    await ingest.stop()
    ingest.close()


def test_msgpack_body_is_what_firmware_sends() -> None:
    raw = msgpack.packb(body_for("bin", 1))
    assert decode_body(raw)["m"]["bat"] == 10


async def test_ack_held_at_gap_until_filled_or_expired(registry: Registry, tmp_path: Path) -> None:
    """A frame lost on the link must not be dropped by a cumulative ACK of later frames."""
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=GatewayMetrics("gw"), batch_ms=10,
                           gap_hold_s=0.5)
    await ingest.start()
    c = Collector()
    for seq in (1, 2, 4, 5):  # 3 was lost on the link
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), c.link)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 2
    ingest.feed(report_frame("bin-1", 3, KEYS["bin-1"]), c.link)  # the device re-sends its outbox
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 5
    ingest.feed(report_frame("bin-1", 40, KEYS["bin-1"]), c.link)  # reboot skipped 6..39: never coming
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 5
    await asyncio.sleep(0.6)
    ingest.feed(report_frame("bin-1", 40, KEYS["bin-1"]), c.link)  # re-sent after no ACK
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 40
    await ingest.stop()
    ingest.close()


def _clocked_ingest(registry: Registry, tmp_path: Path, now: list[float],
                    metrics: GatewayMetrics | None = None) -> IngestService:
    """An ingest with a 15 s gap hold measured on ``now[0]`` (advanced by the test)."""
    return IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                         verifier=Verifier(registry, load_policy()), metrics=metrics or GatewayMetrics("gw"),
                         batch_ms=10, gap_hold_s=15.0, monotonic=lambda: now[0])


async def test_gaps_are_held_from_when_each_became_visible_not_one_after_another(registry: Registry,
                                                                                  tmp_path: Path) -> None:
    """A board that rebooted twice skips two seq blocks: both gaps are held at once, each for
    ``gap_hold_s`` from when the first seq past it arrived (the clock here is the injected one)."""
    now = [1000.0]
    ingest = _clocked_ingest(registry, tmp_path, now)
    await ingest.start()
    c = Collector()

    async def send(*seqs: int) -> int:
        for seq in seqs:
            ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), c.link)
        await _settle(ingest)
        return max(s for _, s in c.acks)

    assert await send(1, 10, 20) == 1  # 2..9 and 11..19 never come (seq blocks skipped at boot)
    now[0] += 14.0
    assert await send(20) == 1  # re-sent: both gaps still held
    now[0] += 2.0
    assert await send(20) == 20  # 16 s: both accepted together, not 15 s each in turn
    assert await send(30) == 20  # a new gap, 21..29, visible from now
    now[0] += 14.0
    assert await send(30) == 20
    now[0] += 1.5
    assert await send(30) == 30
    await ingest.stop()
    ingest.close()


async def test_a_gap_the_device_still_holds_is_waited_for_however_long(registry: Registry, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Protocol §2 ``h``: a link that keeps one frame back (a BLE man-in-the-middle suppressing a fire
    alarm) and relays the later ones can no longer make the cumulative ACK cover it, however long it
    keeps it back; seqs the device says it no longer holds (skipped at a reboot, dropped at its
    outbox cap, also around an alarm it kept) are passed at once, without the timed hold."""
    now = [1000.0]
    metrics = GatewayMetrics("gw")
    ingest = _clocked_ingest(registry, tmp_path, now, metrics)
    await ingest.start()
    c = Collector()
    alarm = {"t": "alarm", "l": 60, "m": {}, "a": ["fire"], "w": 1_800_000_000}

    async def send(seq: int, h: list[int], **over: object) -> int:
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], h=h, **over), c.link)
        await _settle(ingest)
        return max((s for _, s in c.acks), default=0)

    assert await send(1, []) == 1
    # 2 is a fire alarm the link keeps back; 3 (framed while 2 was held) gets through
    assert await send(3, [2, 2]) == 1
    for _ in range(5):
        now[0] += 3600.0
        assert await send(3, [2, 2]) == 1  # re-sent every hour: the ACK never covers 2
    assert metrics.ack_gap_waits._value.get() == 1  # counted (and logged) once per gap
    assert "seqs 2..2 have not arrived" in caplog.text
    assert await send(2, [], **alarm) == 3
    # a reboot skipped 4..35 (its seq block): nothing was held below 36, ACKed at once
    assert await send(36, []) == 36
    # 37 (an alarm) and 38 were lost on the link, then the cap dropped 38 but kept the alarm: 39 says so
    assert await send(39, [37, 37]) == 36
    assert await send(40, [37, 37, 39, 39]) == 36
    assert await send(37, [], **alarm) == 40
    await ingest.stop()
    ingest.close()


async def test_a_clock_stepped_back_does_not_stretch_the_gap_hold(registry: Registry, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Under ``[sim_clock] follow_file`` the gap hold's clock may step back (a bad write of the time
    file, corrected): gaps seen while it was ahead are held ``gap_hold_s`` from the step, not that
    plus the step (a day back held ACKs at the floor for a simulated day)."""
    now = [100_000.0]
    metrics = GatewayMetrics("gw")
    ingest = _clocked_ingest(registry, tmp_path, now, metrics)
    await ingest.start()
    c = Collector()

    async def send(dev: str, seq: int, **over: object) -> int:
        ingest.feed(report_frame(dev, seq, KEYS[dev], **over), c.link)
        await _settle(ingest)
        return max((s for d, s in c.acks if d == dev), default=0)

    assert await send("bin-1", 1) == 1
    assert await send("bin-1", 10) == 1  # timed hold (no h): 2..9 missing
    assert await send("bin-2", 1, h=[]) == 1
    assert await send("bin-2", 3, h=[2, 2]) == 1  # the device holds 2: waited for, warned after the hold
    now[0] -= 86_400.0  # the clock steps back a day
    assert await send("bin-1", 10) == 1
    assert await send("bin-2", 3, h=[2, 2]) == 1
    now[0] += 16.0
    assert await send("bin-1", 10) == 10  # 16 s after the step: passed
    assert await send("bin-2", 3, h=[2, 2]) == 1  # still waited for, and now warned about
    assert metrics.ack_gap_waits._value.get() == 1
    assert "seqs 2..2 have not arrived for 16 s" in caplog.text
    await ingest.stop()
    ingest.close()


async def test_frames_from_unregistered_devices_are_warned_about_once_a_minute(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A board whose key was never registered (or was revoked) showed only as an INFO rejection and a
    counter: a WARNING per reason, at most one a minute (log clock), names the ids and the link."""
    import logging

    wall = [0.0]
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=GatewayMetrics("gw"),
                           batch_ms=10, log_monotonic=lambda: wall[0])
    await ingest.start()
    usb = Collector("serial:/dev/ttyUSB0")
    caplog.set_level(logging.WARNING, logger="gateway")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    ingest.feed(report_frame("sl-0042", 1, KEYS["sl-1"], kind="streetlight"), usb.link)
    assert warnings() == ["frames from unregistered device(s) sl-0042 (1 frame) on serial:/dev/ttyUSB0: register "
                          "with `civicedge gateway devices add --id ID ...` (their frames are not stored until then)"]
    wall[0] = 1.0
    for seq in range(2, 18):
        ingest.feed(report_frame("sl-0042", seq, KEYS["sl-1"], kind="streetlight"), usb.link)
    assert len(warnings()) == 1  # held back by the limit, counted
    wall[0] = 60.0
    ingest.feed(report_frame("sl-0042", 18, KEYS["sl-1"], kind="streetlight"), usb.link)
    assert len(warnings()) == 2
    assert "device(s) sl-0042 (17 frames in the last 59 s) on serial:/dev/ttyUSB0" in warnings()[1]

    registry.revoke("bin-2")
    ingest.feed(report_frame("bin-2", 5, KEYS["bin-2"]), usb.link)  # its own limit: logged at once
    assert warnings()[2].startswith("revoked device(s) bin-2 still sending (1 frame) on serial:/dev/ttyUSB0: ")
    wall[0] = 61.0
    for n in range(7):  # more ids than one line names
        ingest.feed(report_frame("x-%d" % n, 1, KEYS["bin-1"]), usb.link)
    assert len(warnings()) == 3
    await ingest.stop()  # what the limit held back is logged at stop
    assert "device(s) x-0, x-1, x-2, x-3, x-4 and others (7 frames in the last 0 s)" in warnings()[3]
    assert len(warnings()) == 4
    ingest.close()


async def test_a_held_back_frame_is_stored_however_many_later_reports_passed(registry: Registry,
                                                                            tmp_path: Path) -> None:
    """Kept back past the replay window (a bin skips a 32-seq block at every wake: 8 reports) and
    past the memory bound, the ACK still never covers it, memory stays bounded, and once it
    arrives it is stored, not refused as a replay."""
    from gateway.pipeline.ingest import ABOVE_MAX

    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=GatewayMetrics("gw"), batch_ms=2,
                           gap_hold_s=0.0)
    await ingest.start()
    c = Collector()
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"], h=[]), c.link)
    seqs = [2 + 32 * i for i in range(1, ABOVE_MAX + 40)]  # 2 is kept back; one report per wake
    for seq in seqs:
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], h=[2, 2]), c.link)
        if seq % 64 == 2:
            await _settle(ingest)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 1
    assert len(ingest._windows["bin-1"].above) <= ABOVE_MAX
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"], h=[], t="alarm", l=60, m={}, a=["fire"], w=1_800_000_000),
                c.link)
    await _settle(ingest)
    assert ingest.store.has("bin-1", 2)
    for seq in seqs:  # the device re-sends what it holds: the forgotten seqs are known again
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], h=[2, 2]), c.link)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == seqs[-1]
    await ingest.stop()
    ingest.close()


async def test_reports_refused_for_good_keep_memory_bounded(registry: Registry, tmp_path: Path) -> None:
    """Authentic reports refused (policy) count as done for the gaps below them, but get no ACK, the
    path that bounds memory: thousands of them must not grow the per-device state without limit."""
    from gateway.pipeline.ingest import ABOVE_MAX

    ingest = _clocked_ingest(registry, tmp_path, [0.0])
    await ingest.start()
    c = Collector()
    for seq in range(2, 3 * ABOVE_MAX):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], h=[], m={"fill": 10, "mac": 1}), c.link)
    await _settle(ingest)
    assert 0 < len(ingest._windows["bin-1"].above) <= ABOVE_MAX
    await ingest.stop()
    ingest.close()


async def test_firmware_rolled_back_to_no_h_gets_the_timed_hold_again(registry: Registry, tmp_path: Path) -> None:
    now = [1000.0]
    ingest = _clocked_ingest(registry, tmp_path, now)
    await ingest.start()
    c = Collector()
    for seq, h in ((1, []), (3, [2, 2])):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], h=h), c.link)
    await _settle(ingest)
    ingest.feed(report_frame("bin-1", 40, KEYS["bin-1"]), c.link)  # old firmware again, after a reboot
    await _settle(ingest)
    ingest.feed(report_frame("bin-1", 3, KEYS["bin-1"], h=[2, 2]), c.link)  # a re-sent older frame with h
    await _settle(ingest)
    now[0] += 16.0
    ingest.feed(report_frame("bin-1", 40, KEYS["bin-1"]), c.link)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 40  # its reboot skip (and 2) passed after the hold, as before h
    await ingest.stop()
    ingest.close()


@pytest.mark.parametrize("h", [[1], [0, 1], [2, 1], [1, 5], [1, 2, 3, 4], [3, 4, 1, 2], [True, 1], [1, "2"], 7,
                               list(range(1, 5)) * 9])
def test_held_runs_must_fit_the_seq(registry: Registry, h: object) -> None:
    """``h`` is ascending runs ``first <= last`` of seqs from 1 below the frame's seq, a hole between runs."""
    with pytest.raises(RejectedReport, match="h must be|h = ") as info:
        Verifier(registry, load_policy()).verify(report_frame("bin-1", 5, KEYS["bin-1"], h=h), link="l", now=0)
    assert info.value.reason == "body"


def test_personal_count_release_period_from_policy(registry: Registry) -> None:
    """The streetlight releases its noisy PIR count every 6 h (policy release_every_s) in a "win" report."""
    verifier = Verifier(registry, load_policy())
    six_h = 21600
    v = verifier.verify(report_frame("sl-1", 1, KEYS["sl-1"], kind="streetlight", w=six_h * 80000, l=six_h,
                                     m={"mot": 12}, e={"mot": 500}), link="l", now=5)
    assert v.record.l == six_h and v.record.m == {"mot": 12}
    with pytest.raises(RejectedReport, match="may carry only mot") as info:  # aggregates keep the 15-min window
        verifier.verify(report_frame("sl-1", 2, KEYS["sl-1"], kind="streetlight", w=six_h * 80000, l=six_h,
                                     m={"mot": 12, "lux": 30}, e={"mot": 500}), link="l", now=5)
    assert info.value.reason == "policy"
    with pytest.raises(RejectedReport, match="not 7200"):
        verifier.verify(report_frame("sl-1", 3, KEYS["sl-1"], kind="streetlight", w=7200 * 400000, l=7200,
                                     m={"lux": 30}), link="l", now=5)
    with pytest.raises(RejectedReport, match="mot is released only in win reports over 21600 s") as info:
        verifier.verify(report_frame("sl-1", 4, KEYS["sl-1"], kind="streetlight", w=7200 * 400000, l=7200,
                                     m={"mot": 12}, e={"mot": 500}), link="l", now=5)
    assert info.value.reason == "policy"


async def test_backlog_cap_pauses_then_sheds_and_recovers(registry: Registry, tmp_path: Path) -> None:
    """Overload: the store is stuck. At max_in_flight ``room`` clears (serial links stop reading),
    at twice that frames are shed unacknowledged and counted; once the store moves again the
    backlog drains, ``room`` is set, and the shed frames are stored when the device re-sends."""
    import threading

    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=5, batch_max=50, max_in_flight=20)
    await ingest.start()
    gate = threading.Event()
    blocker = asyncio.ensure_future(ingest.run_in_store(gate.wait))  # the writer thread is busy
    c = Collector()
    try:
        for seq in range(1, 61):
            ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), c.link)
            if seq == 19:
                assert ingest.room.is_set()
            if seq == 20:
                assert not ingest.room.is_set()
                assert metrics.value("civicedge_ingest_paused") == 1
        backlog = metrics.value("civicedge_ingest_backlog")
        assert backlog == 40                             # 40 reports taken
        assert metrics.value("civicedge_ingest_shed_total") == 20   # seqs 41..60 were not taken
        assert c.acks == []
    finally:
        gate.set()
        await blocker
    await _settle(ingest)
    assert ingest.room.is_set() and metrics.value("civicedge_ingest_paused") == 0
    assert metrics.value("civicedge_ingest_backlog") == 0
    assert max(s for _, s in c.acks) == 40
    for seq in range(41, 61):                            # the device re-sends what was not ACKed
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), c.link)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 60
    assert ReportQueries(db).count_reports() == 60
    await ingest.stop()
    ingest.close()


@pytest.mark.parametrize("sim_time", [False, True])
async def test_repeated_pauses_are_counted_each_time_and_logged_once_per_burst(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture, sim_time: bool) -> None:
    """A gateway near its cap pauses and resumes many times a second; /metrics counts every pause
    but the log has one "pausing" line (and its "reading again") per 10 s, saying how many it left out.
    Under [sim_clock] (``sim_time``) those are 10 s of wall time (demo QA: at 600x a full disk logged ten
    ERROR lines a second): simulated time running on changes nothing."""
    import threading

    now = [1000.0]
    wall = [1000.0]
    metrics = GatewayMetrics("gw")
    clocks = ({"monotonic": lambda: now[0] * 600, "log_monotonic": lambda: wall[0]} if sim_time
              else {"monotonic": lambda: now[0]})
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=1, batch_max=50,
                           max_in_flight=8, **clocks)
    await ingest.start()
    c = Collector()
    seq = 0

    async def one_pause() -> None:
        nonlocal seq
        gate = threading.Event()
        blocker = asyncio.ensure_future(ingest.run_in_store(gate.wait))
        while ingest.room.is_set():
            seq += 1
            ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), c.link)
        gate.set()
        await blocker
        await _settle(ingest)
        assert ingest.room.is_set()

    caplog.set_level("INFO", logger="gateway.pipeline.ingest")
    try:
        for _ in range(5):
            await one_pause()
            now[0] += 1.0  # 600 simulated seconds a pause under sim_time
        now[0] += 5.0
        await one_pause()
        if sim_time:  # 10 s of simulated time and more: one line, the wall clock did not move
            pausing = [r.getMessage() for r in caplog.records if "pausing serial reads" in r.getMessage()]
            assert metrics.value("civicedge_ingest_pauses_total") == 6 and len(pausing) == 1, pausing
            wall[0] += 10.0
            await one_pause()
        pausing = [r.getMessage() for r in caplog.records if "pausing serial reads" in r.getMessage()]
        resumed = [r for r in caplog.records if "reading again" in r.getMessage()]
        assert metrics.value("civicedge_ingest_pauses_total") == (7 if sim_time else 6)
        assert len(pausing) == 2 and len(resumed) == 2, pausing
        assert "more pause" not in pausing[0]
        assert f"({5 if sim_time else 4} more pause(s) since the last such line)" in pausing[1]
        assert max(s for _, s in c.acks) == seq and len(c.acks) >= 1
    finally:
        await ingest.stop()
        ingest.close()


async def test_a_refused_authentic_report_is_acknowledged_past_and_warned_about(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A report refused by the policy gate (here: a board flashed with a looser policy.json, ε 2000 per
    release) is authentic: the ACK floor moves over it, so the device deletes it from its outbox. That
    loses data, so a WARNING (at most one a minute, log clock) names the device and the rule, never a
    personal field's value."""
    import logging

    wall = [0.0]
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=10,
                           log_monotonic=lambda: wall[0])
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    def feed(seq: int, body: dict[str, object]) -> None:
        ingest.feed(build_frame(FRAME_REPORT, "sl-1", seq, {**body, "h": []}, KEYS["sl-1"]), c.link)

    feed(1, body_for("streetlight", 1))
    feed(2, mot_release(1, 13, e={"mot": 2000}))
    await _settle(ingest)
    assert c.acks == [("sl-1", 2)]  # seq 1's ACK covers the refused seq 2: the device deletes it
    assert len(warnings()) == 1
    assert warnings()[0].startswith("sl-1 seq 2 refused by the privacy policy gate: e[mot] = 2000 milli-epsilon is "
                                    "above the policy's per-release epsilon 500; ")
    assert "acknowledged" in warnings()[0] and "13" not in warnings()[0]
    feed(3, body_for("streetlight", 3))
    await _settle(ingest)
    assert c.acks[-1] == ("sl-1", 3)
    assert not ingest.store.has("sl-1", 2) and ingest.store.has("sl-1", 3)
    wall[0] = 1.0
    feed(4, mot_release(2, 3))  # below k: refused, counted, held back by the limit
    feed(5, body_for("streetlight", 5))
    await _settle(ingest)
    assert c.acks[-1] == ("sl-1", 5) and len(warnings()) == 1
    assert metrics.value("civicedge_rejections_total", {"reason": "policy"}) == 2
    wall[0] = 61.0
    feed(6, mot_release(3, 4))
    await _settle(ingest)
    assert len(warnings()) == 2
    assert warnings()[1].startswith("sl-1 seq 6 refused by the privacy policy gate: mot is below k = 5")
    assert warnings()[1].endswith("(1 more policy refusal(s) since the last such line)")
    feed(7, mot_release(4, 2))
    await ingest.stop()  # what the limit held back is logged at stop
    assert warnings()[2] == "1 more report(s) refused by the privacy policy gate since the last such line"
    ingest.close()


async def test_a_value_off_the_gateway_quantum_is_stored_rounded_and_warned_about(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A board flashed with a finer lux quantum than the gateway's: its windows are stored, lux rounded
    to the gateway's quantum, with a WARNING at most once a minute naming the device and the field."""
    import copy
    import logging

    policy = copy.deepcopy(load_policy())
    policy["kinds"]["streetlight"]["fields"]["lux"]["quantum"] = 20
    wall = [0.0]
    db = tmp_path / "r.sqlite"
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, policy),
                           metrics=GatewayMetrics("gw"), batch_ms=10, log_monotonic=lambda: wall[0])
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway")
    for seq, lux in ((1, 130), (2, 150), (3, 120)):
        ingest.feed(report_frame("sl-1", seq, KEYS["sl-1"], kind="streetlight", m={"lux": lux, "lvl": 60, "lamp": 0}),
                    c.link)
    await _settle(ingest)
    await ingest.stop()
    ingest.close()
    assert c.acks[-1] == ("sl-1", 3)
    q = ReportQueries(db)
    try:
        assert [r.m["lux"] for r in q.reports(device="sl-1")] == [140, 160, 120]
    finally:
        q.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2  # the first at once, the second (held back by the limit) at stop
    assert warned[0].startswith("sl-1 seq 1: lux off the gateway policy's quantum, stored rounded to it")
    assert warned[1] == ("1 more report(s) with values off the gateway policy's quantum stored rounded to it since "
                         "the last such line")


async def test_a_resent_copy_of_a_stored_report_is_not_warned_about_as_stored_rounded(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Security QA: a report replayed after a restart (already stored) was acknowledged, not stored, yet
    logged "... stored rounded to it" and counted in the stop summary. The warning now waits for the commit."""
    import copy
    import logging

    policy = copy.deepcopy(load_policy())
    policy["kinds"]["streetlight"]["fields"]["lux"]["quantum"] = 20
    db = tmp_path / "r.sqlite"
    frame = report_frame("sl-1", 1, KEYS["sl-1"], kind="streetlight", m={"lux": 130, "lvl": 60, "lamp": 0})
    caplog.set_level(logging.WARNING, logger="gateway")
    for run in range(2):  # the second gateway run gets the same frame again
        store = ReportStore(db, gateway_id="gw")
        ingest = IngestService(store=store, verifier=Verifier(registry, policy), metrics=GatewayMetrics("gw"),
                               batch_ms=10)
        await ingest.start()
        c = Collector()
        ingest.feed(frame, c.link)
        await _settle(ingest)
        await ingest.stop()
        ingest.close()
        store.close()
        assert c.acks == [("sl-1", 1)], run
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "rounded" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("sl-1 seq 1: lux off the gateway policy's quantum"), warned


async def test_fill_in_the_windows_of_old_bin_firmware_is_dropped_counted_and_warned_per_device(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rollout: a gateway on the 6-hourly fill policy gets 15-minute windows with fill from bins still on
    older firmware. fill is dropped (never stored or published: its steps date the deposits), the rest of
    each window is stored, each dropped field is counted, and a WARNING at most once a minute per device
    names the device, the field and the remedy."""
    import logging

    wall = [0.0]
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=10, log_monotonic=lambda: wall[0])
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway")
    for device, seq in (("bin-1", 1), ("bin-1", 2), ("bin-2", 1)):
        ingest.feed(report_frame(device, seq, KEYS[device], m={"fill": 40, "temp": 12, "bat": 80}), c.link)
        await _settle(ingest)
    await ingest.stop()
    ingest.close()
    q = ReportQueries(db)
    try:
        assert [(r.device, r.seq, r.m) for r in q.reports(device="bin-1") + q.reports(device="bin-2")] == [
            ("bin-1", 1, {"temp": 12, "bat": 80}), ("bin-1", 2, {"temp": 12, "bat": 80}),
            ("bin-2", 1, {"temp": 12, "bat": 80})]
    finally:
        q.close()
    assert metrics.value("civicedge_fields_dropped_total", {"reason": "release_period"}) == 3
    assert metrics.value("civicedge_rejections_total", {"reason": "policy"}) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3, warned  # bin-1 and bin-2 at once; bin-1's second (held back) at stop
    assert warned[0].startswith("bin-1 seq 1: fill sent over a shorter period than its release period")
    assert "flash the new firmware" in warned[0] and warned[1].startswith("bin-2 seq 1: fill")
    assert warned[2] == ("1 more report(s) of bin-1 with fields over a shorter period than their release period "
                         "dropped since the last such line")


async def test_a_late_report_with_a_dropped_field_is_counted_and_warned_once_stored(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A seq below one already committed (a frame a link kept back) is checked against the store by a
    handler task and then queued without an ACK of its own: its dropped fill is counted and warned about
    from its commit, as a new report's is; its copy re-sent after that commit is neither."""
    import logging

    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=10)
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway")
    late = report_frame("bin-1", 1, KEYS["bin-1"], m={"fill": 40, "temp": 12, "bat": 80})
    for frame in (report_frame("bin-1", 2, KEYS["bin-1"], m={"temp": 13, "bat": 80}), late, late):
        ingest.feed(frame, c.link)
        await _settle(ingest)
    await ingest.stop()
    ingest.close()
    assert c.acks == [("bin-1", 2), ("bin-1", 2)]  # none while seq 1 was missing; the copy re-acknowledged
    q = ReportQueries(db)
    try:
        assert [(r.seq, r.m) for r in q.reports(device="bin-1")] == [(1, {"temp": 12, "bat": 80}),
                                                                     (2, {"temp": 13, "bat": 80})]
    finally:
        q.close()
    assert metrics.value("civicedge_fields_dropped_total", {"reason": "release_period"}) == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("bin-1 seq 1: fill sent over a shorter period"), warned


async def test_two_copies_of_a_late_report_at_once_are_stored_counted_and_warned_once(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review of 5529daa: two copies of a late report (below a committed seq) in the same tick, a link's
    late delivery and the device's re-send on another link. Each handler task asked the store, found
    nothing pending, and queued its copy: the batch's stored report was counted and warned about twice
    (a held-back "1 more report(s) of bin-1 ..." line at stop) and each link was told it was fresh. The
    second task now sees the first copy queued and only acknowledges it after its commit."""
    import dataclasses
    import logging

    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=10)
    await ingest.start()
    c, c2 = Collector(), Collector("ble:aa")
    fresh = {c.link.name: 0, c2.link.name: 0}

    def counter(name: str) -> Callable[[], None]:
        def count() -> None:
            fresh[name] += 1
        return count

    link, link2 = (dataclasses.replace(x.link, fresh=counter(x.link.name)) for x in (c, c2))
    caplog.set_level(logging.WARNING, logger="gateway")
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"], m={"temp": 13, "bat": 80}), link)
    await _settle(ingest)
    assert c.acks == [] and fresh[link.name] == 1  # seq 1 missing: no ACK yet
    late = report_frame("bin-1", 1, KEYS["bin-1"], m={"fill": 40, "temp": 12, "bat": 80})
    ingest.feed(late, link)  # the link's late delivery
    ingest.feed(late, link2)  # and the device's re-send on another link, in the same tick
    await _settle(ingest)
    await ingest.stop()
    ingest.close()
    assert c.acks == [("bin-1", 2)] and c2.acks == [("bin-1", 2)]  # one ACK each, after the commit
    assert fresh[link.name] + fresh[link2.name] == 2  # seq 2, and one of the two copies of seq 1
    q = ReportQueries(db)
    try:
        assert [(r.seq, r.m) for r in q.reports(device="bin-1")] == [(1, {"temp": 12, "bat": 80}),
                                                                     (2, {"temp": 13, "bat": 80})]
    finally:
        q.close()
    assert metrics.value("civicedge_fields_dropped_total", {"reason": "release_period"}) == 1
    assert metrics.value("civicedge_reports_duplicate_total") == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("bin-1 seq 1: fill sent over a shorter period"), warned
