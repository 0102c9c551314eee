"""BLE slots against attackers on the virtual radio (real Bumble stack, real gateway service).

Fake peripherals (tests/radio/idle_peripheral.py) advertise the civicedge service at the lowest
addresses, have no key and send nothing, as in the security review's dos.py. The gateway runs
in-process with its BLE transport built as ``gateway.service`` should build it (with the registry).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import make_env
from helpers import until
from procs import REPO, EventProcess
from test_ble_transport import BleDevice, ble_section, stored

from gateway.config import load_config
from gateway.registry import Registry
from gateway.service import Gateway
from gateway.transports.ble_link import LINK_CHECK_S, BleTransport
from gateway.transports.ble_slots import UNVERIFIED_BACKOFF_S, SlotPolicy

pytestmark = pytest.mark.timeout(180)
IDLE = REPO / "tests" / "radio" / "idle_peripheral.py"
AUTH_TIMEOUT_S = 2.0
# Tests that drop no link for want of a verified frame give the real device this long for its first
# one: on a loaded CI machine (2 cores, 3 workers) it took over AUTH_TIMEOUT_S, its link was dropped,
# counted and paused 30 s, and the test failed on a count or a deadline that is not its subject.
REAL_AUTH_TIMEOUT_S = 10.0


class Fake(EventProcess):
    """idle_peripheral.py as a subprocess; collects its JSON events."""

    def __init__(self, radio: str, address: str, name: str) -> None:
        self.address, self.name = address, name
        super().__init__([str(IDLE), radio, "--address", address, "--name", name])
        end = time.monotonic() + 60  # a Python + Bumble start: over 20 s on a loaded 2-core machine
        while not any(e["event"] == "ready" for e in list(self.events)):
            assert time.monotonic() < end and self.proc.poll() is None, "fake %s did not start" % address
            time.sleep(0.05)

    def times(self, event: str) -> list[float]:
        return [e["t"] for e in list(self.events) if e["event"] == event]


def gateway(tmp_path: Path, radio: str, max_connections: int, auth_timeout_s: float = AUTH_TIMEOUT_S,
            policy: SlotPolicy | None = None,
            monotonic: Callable[[], float] = time.monotonic) -> tuple[Gateway, BleTransport]:
    """The gateway service, its BLE transport given the registry (the wiring service.py needs)."""
    gw = Gateway(load_config(make_env(tmp_path, extra=ble_section(radio, max_connections))))
    ble = BleTransport(gw.config.ble, metrics=gw.metrics, registry=gw.registry, auth_timeout_s=auth_timeout_s,
                       policy=policy, monotonic=monotonic)
    gw.transports = [t for t in gw.transports if t.name != "ble"] + [ble]
    return gw, ble


# A real device whose first frame is late (a loaded CI machine starves its process) is dropped as
# unverified after the auth timeout and served again after the gateway's 30 s reconnect delay: by
# design (impersonators hold no slot). Its reports must arrive even then.
STORED_WITHIN_S = 45.0


async def wait_stored(db: Path, device: str, seqs: list[int], timeout: float) -> float:
    """Seconds until ``seqs`` of ``device`` are stored; fails after ``timeout``."""
    start = time.monotonic()
    while stored(db, device) != seqs:
        assert time.monotonic() - start < timeout, "stored %s: %r" % (device, stored(db, device))
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_only_registered_non_revoked_names_are_connected(tmp_path: Path, radio: str) -> None:
    """dos.py: four fakes with made-up names at the lowest addresses; plus one named after a revoked device."""
    fakes = [Fake(radio, "C0:00:00:00:00:0%d" % (i + 1), "x%d" % i) for i in range(4)]
    real = BleDevice(radio, "bin-1", send=(1, 3))
    gw, ble = gateway(tmp_path, radio, max_connections=4, auth_timeout_s=REAL_AUTH_TIMEOUT_S)
    gw.registry.revoke("bin-2")
    fakes.append(Fake(radio, "C0:00:00:00:00:05", "bin-2"))
    await gw.start()
    try:
        await wait_stored(gw.config.storage.path, "bin-1", [1, 2, 3], STORED_WITHIN_S)
        await asyncio.sleep(4 * gw.config.ble.scan_interval_s + 1)  # more scans: still nobody else
        assert all(f.times("connect") == [] for f in fakes), [(f.name, f.events) for f in fakes]
        assert ble.connected == 1
    finally:
        await gw.stop()
        real.close()
        for f in fakes:
            f.close()


@pytest.mark.timeout(300)  # a device dropped twice on a loaded machine waits out 90 s of pauses (below)
@pytest.mark.parametrize("max_connections", [4, 1])
async def test_impersonators_are_dropped_and_the_real_device_gets_a_slot(
        tmp_path: Path, radio: str, max_connections: int, caplog: pytest.LogCaptureFixture) -> None:
    """Fakes named after registered devices (no key, nothing sent) at the lowest addresses hold the
    slots when the real device starts advertising."""
    fakes = [Fake(radio, "C0:00:00:00:00:0%d" % (i + 1), name) for i, name in enumerate(("bin-2", "bin-2", "sl-1",
                                                                                          "sl-1"))]
    gw, ble = gateway(tmp_path, radio, max_connections=max_connections)
    caplog.set_level(logging.WARNING, logger="gateway.transports.ble_link")
    real: BleDevice | None = None
    await gw.start()
    try:
        # strangers get every slot but the one kept for known boards (all of it with one slot)
        holding = min(max_connections, 3)
        end = time.monotonic() + 10
        while ble.connected < holding:
            assert time.monotonic() < end, ble.connected
            await asyncio.sleep(0.05)
        real = await asyncio.to_thread(BleDevice, radio, "bin-1", send=(1, 3))
        real_address = next(e["address"] for e in list(real.events) if e["event"] == "ready")

        def real_count(event: str) -> int:
            return sum(1 for e in list(real.events) if e["event"] == event)

        # The property: the fakes do not keep it from a slot. Worst case: every fake is served once
        # before it (AUTH_TIMEOUT_S each, one at a time with one slot).
        bound = 4 * (AUTH_TIMEOUT_S + 2.5) + 5
        started = time.monotonic()
        while not real_count("connect"):
            assert time.monotonic() - started < bound, ("bin-1 got no slot", real.events)
            await asyncio.sleep(0.05)
        print("bin-1 connected %.1f s after it started, with %d slot(s)" % (time.monotonic() - started,
                                                                              max_connections))
        # Its reports: on a loaded machine its first link (and then its second) can miss the scaled-down
        # auth timeout and be dropped like a fake's, by design, and paused 30 s (then 60 s) before it is
        # served again. Was one 23 s bound on the reports, which such a drop broke under load; the bound
        # that is this test's subject, a slot, is the one above.
        took = await wait_stored(gw.config.storage.path, "bin-1", [1, 2, 3],
                                 STORED_WITHIN_S + 2 * UNVERIFIED_BACKOFF_S)
        print("bin-1 stored %.1f s after its first connect" % took)
        # every fake that got a slot lost it AUTH_TIMEOUT_S after connecting
        connected = [f for f in fakes if f.times("connect")]
        assert len(connected) >= holding
        end = time.monotonic() + AUTH_TIMEOUT_S + 5
        while any(len(f.times("disconnect")) < len(f.times("connect")) for f in connected):
            assert time.monotonic() < end, [(f.address, f.events) for f in connected]
            await asyncio.sleep(0.1)
        for f in connected:
            connects, disconnects = f.times("connect"), f.times("disconnect")
            for held in (d - c for c, d in zip(connects, disconnects)):
                assert AUTH_TIMEOUT_S - 0.5 < held < AUTH_TIMEOUT_S + 2.0, (f.address, held)
            # backed off, not given the slot again at once: a second link (only when the run outlasts
            # the pause, after a drop of bin-1 above) comes a whole pause after the first was dropped
            for again, dropped in zip(connects[1:], disconnects):
                assert again - dropped > UNVERIFIED_BACKOFF_S - 0.5, f.events

        def drops() -> int:  # bin-1's links dropped before its reports were stored count too
            return sum(len(f.times("disconnect")) for f in fakes) + real_count("disconnect")

        # a disconnect reaches the peripheral just after the gateway counted the drop: wait for the count
        await until(lambda: ble.unverified_dropped == drops(), "unverified drops %d, seen %d"
                    % (ble.unverified_dropped, drops()))
        assert gw.metrics.value("civicedge_ble_unverified_dropped_total") == ble.unverified_dropped
        # One WARNING per paused address, each naming the address and the device: two fakes share each
        # name, and the operator must tell which address a pause is on (was one per name, the second
        # address's pause at DEBUG only).
        warnings = [r.getMessage() for r in caplog.records if "no frame from it verified" in r.getMessage()]
        addresses = [(f.address, f.name) for f in fakes] + [(real_address, "bin-1")]
        warned = [a for w in warnings for a in addresses if "%s (%s)" % a in w]
        assert len(warned) == len(warnings) == len(set(warned)), warnings  # one line per address
        assert {(f.address, f.name) for f in connected} <= set(warned), warnings
        # the real device keeps its slot once its reports are stored
        assert real_count("connect") == real_count("disconnect") + 1, real.events
    finally:
        await gw.stop()
        if real is not None:
            real.close()
        for f in fakes:
            f.close()


async def test_a_board_that_never_sends_over_ble_is_paused_longer_each_time_and_warned_twice(
        tmp_path: Path, radio: str, caplog: pytest.LogCaptureFixture) -> None:
    """The QA case (a streetlight whose UART delivers sends nothing over BLE), with the pauses
    scaled down: 1 s doubling to a cap of 4 s instead of 30 s to an hour. Each link is dropped
    after the auth timeout, the next one waits the longer pause, and the log has one WARNING
    when the pause starts and one when it reaches the cap, not one per drop."""
    board = Fake(radio, "D3:25:B6:A0:45:7D", "sl-1")  # the registered streetlight, its frames elsewhere
    pauses = [1.0, 2.0, 4.0, 4.0, 4.0]
    policy = SlotPolicy(4, unverified_backoff_s=1.0, known_idle_backoff_s=1.0, pause_max_s=4.0)
    gw, ble = gateway(tmp_path, radio, max_connections=4, policy=policy)
    caplog.set_level(logging.DEBUG, logger="gateway.transports.ble_link")
    await gw.start()
    try:
        end = time.monotonic() + sum(pauses) + len(pauses) * (AUTH_TIMEOUT_S + 3.0) + 10
        while len(board.times("connect")) < len(pauses) + 1:
            assert time.monotonic() < end, board.events
            await asyncio.sleep(0.1)
        connects, disconnects = board.times("connect"), board.times("disconnect")
        for i, pause in enumerate(pauses):
            waited = connects[i + 1] - disconnects[i]
            # paused as set (minus the disconnect's way to the board), reconnected soon after
            assert pause - 0.3 < waited < pause + 4 * gw.config.ble.scan_interval_s + 3.0, (i, waited, board.events)
        drops = [r for r in caplog.records if "BLE dropped" in r.getMessage()]
        assert len(drops) >= len(pauses)
        warnings = [r.getMessage() for r in drops if r.levelno == logging.WARNING]
        assert len(warnings) == 2, warnings
        assert "not reconnected for 1 s, doubling per such drop up to 4 s" in warnings[0]
        assert "Likely cause: it sends its frames over another link" in warnings[0]
        assert "harmless for its data" in warnings[0]
        assert "(sl-1) again" in warnings[1] and "once every 4 s (the cap)" in warnings[1]
        assert ble.unverified_dropped == len(drops)
    finally:
        await gw.stop()
        board.close()


class MovedClock:
    """The gateway's monotonic clock under [sim_clock]: real time plus what the simulation moved it on."""

    def __init__(self) -> None:
        self.moved = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.moved


async def test_a_pause_follows_the_gateways_clock_when_a_simulation_moves_it_on(tmp_path: Path, radio: str) -> None:
    """A pause (30 s here) is timed by the clock the gateway gives the transport (its simulated clock
    under [sim_clock]), not by real time: moved on past the pause, the board is connected again at
    once; until then it is not."""
    board = Fake(radio, "D3:25:B6:A0:45:7D", "sl-1")  # registered, sends nothing: dropped and paused
    clock = MovedClock()
    gw, ble = gateway(tmp_path, radio, max_connections=4, monotonic=clock)
    await gw.start()
    try:
        end = time.monotonic() + AUTH_TIMEOUT_S + 15
        while not board.times("disconnect"):
            assert time.monotonic() < end, board.events
            await asyncio.sleep(0.1)
        await asyncio.sleep(4 * gw.config.ble.scan_interval_s + 1)
        assert len(board.times("connect")) == 1, board.events  # paused (30 s of the gateway's clock)
        assert ble.unverified_dropped == 1
        clock.moved += 31.0  # the simulation moves on 31 s
        end = time.monotonic() + 4 * gw.config.ble.scan_interval_s + 10
        while len(board.times("connect")) < 2:
            assert time.monotonic() < end, board.events
            await asyncio.sleep(0.1)
    finally:
        await gw.stop()
        board.close()


async def test_a_registered_device_that_is_revoked_later_is_not_reconnected(tmp_path: Path, radio: str) -> None:
    """The transport re-reads the registry: a revoked id stops getting slots."""
    real = BleDevice(radio, "bin-1", send=(1, 2))
    gw, ble = gateway(tmp_path, radio, max_connections=4, auth_timeout_s=REAL_AUTH_TIMEOUT_S)
    await gw.start()
    try:
        await wait_stored(gw.config.storage.path, "bin-1", [1, 2], STORED_WITHIN_S)
        gw.registry.revoke("bin-1")
        real.command("drop")

        def count(event: str) -> int:
            return sum(1 for e in list(real.events) if e["event"] == event)

        # every link closed (a first link dropped at the auth timeout on a loaded machine, whose frames
        # were committed just after, is followed at once by a second: the verified frame ends its pause)
        end = time.monotonic() + 10
        while count("disconnect") < count("connect"):
            assert time.monotonic() < end, real.events
            await asyncio.sleep(0.05)
        connects = count("connect")
        await asyncio.sleep(4 * gw.config.ble.scan_interval_s + 2)
        assert count("connect") == connects, real.events
        assert ble.connected == 0
    finally:
        await gw.stop()
        real.close()


def change_registry(gw: Gateway, change: str) -> None:
    """Revoke or re-key bin-1 through the gateway's registry, or revoke it through another Registry on
    the same files, as ``civicedge gateway devices revoke`` in another process does (the gateway's
    ``registry.changes`` does not move then)."""
    if change == "revoke":
        gw.registry.revoke("bin-1")
    elif change == "revoke_elsewhere":
        other = Registry(gw.config.registry_dir, create=False)
        try:
            other.revoke("bin-1")
        finally:
            other.close()
    else:
        gw.registry.rotate_key("bin-1")


@pytest.mark.parametrize("change", ["revoke", "revoke_elsewhere", "rotate_key"])
async def test_an_open_link_is_closed_when_its_device_is_revoked_or_re_keyed(
        tmp_path: Path, radio: str, change: str, caplog: pytest.LogCaptureFixture) -> None:
    """The defect: an authenticated link outlived its device's revocation (or key rotation), holding a
    slot while every frame on it was rejected. It is closed within about LINK_CHECK_S, counted, and
    the address is not connected again at once (revoked: never; re-keyed: a stranger's backoff)."""
    real = BleDevice(radio, "bin-1", send=(1, 2))
    gw, ble = gateway(tmp_path, radio, max_connections=4, auth_timeout_s=REAL_AUTH_TIMEOUT_S)
    caplog.set_level(logging.WARNING, logger="gateway.transports.ble_link")
    await gw.start()
    try:
        await wait_stored(gw.config.storage.path, "bin-1", [1, 2], STORED_WITHIN_S)
        assert ble.connected == 1
        changed = time.time()  # the clock of the log records' timestamps
        change_registry(gw, change)
        await asyncio.to_thread(real.wait, lambda e: e["event"] == "disconnect", LINK_CHECK_S + 10)
        closed = [r for r in caplog.records if "BLE closed the link" in r.getMessage()]
        assert closed, caplog.text
        # timed by the gateway's own record of closing it: the disconnect's way through the radio to
        # the device process is not the gateway's doing, and on a loaded machine took seconds
        took = closed[0].created - changed
        print("%s: link closed %.1f s after the registry change" % (change, took))
        assert took < LINK_CHECK_S + 2.0
        reason = "key_changed" if change == "rotate_key" else "revoked"
        assert ble.deauthorized == 1 and ble.unverified_dropped == 0
        assert gw.metrics.value("civicedge_ble_deauthorized_total", {"reason": reason}) == 1
        # the board re-advertises and has more to send: it gets no slot (and nothing is stored)
        real.command("send 3 4")
        await asyncio.sleep(4 * gw.config.ble.scan_interval_s + 2)
        assert sum(1 for e in real.events if e["event"] == "connect") == 1, real.events
        assert ble.connected == 0
        assert stored(gw.config.storage.path, "bin-1") == [1, 2]
    finally:
        await gw.stop()
        real.close()


async def test_a_link_not_yet_authenticated_is_closed_when_its_name_is_revoked(
        tmp_path: Path, radio: str, caplog: pytest.LogCaptureFixture) -> None:
    """A link admitted under a name that is revoked before any frame verified on it does not wait out
    the auth timeout."""
    fake = Fake(radio, "C0:00:00:00:00:01", "sl-1")
    gw, ble = gateway(tmp_path, radio, max_connections=4, auth_timeout_s=60.0)
    caplog.set_level(logging.INFO, logger="gateway.transports.ble_link")

    def logged(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    await gw.start()
    try:
        # the gateway's link is up (subscribed, its checks running), not only the peripheral's connect
        await until(lambda: logged("BLE connected to C0:00:00:00:00:01"), "no link to the fake", timeout=30)
        changed = time.time()  # the clock of the log records' timestamps
        gw.registry.revoke("sl-1")
        end = time.monotonic() + LINK_CHECK_S + 15  # the disconnect's way to the fake: slow under load
        while not fake.times("disconnect"):
            assert time.monotonic() < end, fake.events
            await asyncio.sleep(0.05)
        # timed by the gateway's own record of closing it (as in the test above)
        closed = logged("BLE closed the link to C0:00:00:00:00:01")
        assert closed and closed[0].created - changed < LINK_CHECK_S + 2.0, (changed, caplog.text)
        assert ble.deauthorized == 1 and ble.unverified_dropped == 0
        assert gw.metrics.value("civicedge_ble_deauthorized_total", {"reason": "revoked"}) == 1
        await asyncio.sleep(4 * gw.config.ble.scan_interval_s + 1)
        assert len(fake.times("connect")) == 1, fake.events  # it re-advertises at once: not reconnected
    finally:
        await gw.stop()
        fake.close()


async def test_a_replayed_stored_frame_does_not_authenticate_a_link(tmp_path: Path, radio: str) -> None:
    """A peripheral re-sending a captured frame of a registered device gets the ACK the ingest sends
    for any stored frame; only a newly stored report authenticates a link, so it is dropped."""
    gw, ble = gateway(tmp_path, radio, max_connections=4)
    await gw.start()
    replayer: BleDevice | None = None
    try:
        real = await asyncio.to_thread(BleDevice, radio, "bin-1", send=(1, 2))
        await wait_stored(gw.config.storage.path, "bin-1", [1, 2], STORED_WITHIN_S)
        await asyncio.to_thread(real.close)
        while ble.connected:
            await asyncio.sleep(0.1)
        dropped = ble.unverified_dropped
        replayer = await asyncio.to_thread(BleDevice, radio, "bin-1", send=(1, 1), replay=True)
        # Deadlines generous for a loaded machine (the drop is timed by the gateway: AUTH_TIMEOUT_S after
        # the connect; here only that it comes is asserted).
        await asyncio.to_thread(replayer.wait, lambda e: e["event"] == "ack", 40)  # re-acknowledged, as it must
        await asyncio.to_thread(replayer.wait, lambda e: e["event"] == "disconnect", AUTH_TIMEOUT_S + 30)
        # every link of it dropped as unverified (a second one, once its known address's 5 s pause is over,
        # when the first disconnect was slow to reach it): counted as the gateway counted them
        replayed = replayer

        def links_dropped() -> int:
            return sum(1 for e in list(replayed.events) if e["event"] == "disconnect")

        await until(lambda: ble.unverified_dropped - dropped == links_dropped(),
                    "the replayer's links were not all counted as unverified drops")
        assert links_dropped() >= 1
        assert stored(gw.config.storage.path, "bin-1") == [1, 2]
    finally:
        await gw.stop()
        if replayer is not None:
            replayer.close()
