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
from procs import REPO, EventProcess
from test_ble_transport import BleDevice, ble_section, stored

from gateway.config import load_config
from gateway.registry import Registry
from gateway.service import Gateway
from gateway.transports.ble_link import LINK_CHECK_S, BleTransport
from gateway.transports.ble_slots import SlotPolicy

pytestmark = pytest.mark.timeout(180)
IDLE = REPO / "tests" / "radio" / "idle_peripheral.py"
AUTH_TIMEOUT_S = 2.0


class Fake(EventProcess):
    """idle_peripheral.py as a subprocess; collects its JSON events."""

    def __init__(self, radio: str, address: str, name: str) -> None:
        self.address, self.name = address, name
        super().__init__([str(IDLE), radio, "--address", address, "--name", name])
        end = time.monotonic() + 20
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
    gw, ble = gateway(tmp_path, radio, max_connections=4)
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
        # Worst case: every fake is served once before it (AUTH_TIMEOUT_S each, one at a time with one slot).
        bound = 4 * (AUTH_TIMEOUT_S + 2.5) + 5
        took = await wait_stored(gw.config.storage.path, "bin-1", [1, 2, 3], bound)
        print("bin-1 stored %.1f s after it started, with %d slot(s)" % (took, max_connections))
        # every fake that got a slot lost it AUTH_TIMEOUT_S after connecting
        connected = [f for f in fakes if f.times("connect")]
        assert len(connected) >= holding
        end = time.monotonic() + AUTH_TIMEOUT_S + 5
        while any(len(f.times("disconnect")) < len(f.times("connect")) for f in connected):
            assert time.monotonic() < end, [(f.address, f.events) for f in connected]
            await asyncio.sleep(0.1)
        for f in connected:
            held = f.times("disconnect")[0] - f.times("connect")[0]
            assert AUTH_TIMEOUT_S - 0.5 < held < AUTH_TIMEOUT_S + 2.0, (f.address, held)
            assert len(f.times("connect")) == 1, f.events  # backed off, not given the slot again at once
        drops = sum(len(f.times("disconnect")) for f in fakes)
        assert ble.unverified_dropped == drops
        assert gw.metrics.value("civicedge_ble_unverified_dropped_total") == drops
        # One WARNING per paused address, each naming the address and the device: two fakes share each
        # name, and the operator must tell which address a pause is on (was one per name, the second
        # address's pause at DEBUG only).
        warnings = [r.getMessage() for r in caplog.records if "no frame from it verified" in r.getMessage()]
        warned = [(f.address, f.name) for w in warnings for f in fakes if "%s (%s)" % (f.address, f.name) in w]
        assert len(warned) == len(warnings) == len(set(warned)), warnings  # one line per address
        assert {(f.address, f.name) for f in connected} <= set(warned), warnings
        # the real device keeps its slot
        assert not any(e["event"] == "disconnect" for e in real.events)
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
    gw, ble = gateway(tmp_path, radio, max_connections=4)
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
    gw, ble = gateway(tmp_path, radio, max_connections=4)
    caplog.set_level(logging.WARNING, logger="gateway.transports.ble_link")
    await gw.start()
    try:
        await wait_stored(gw.config.storage.path, "bin-1", [1, 2], STORED_WITHIN_S)
        assert ble.connected == 1
        change_registry(gw, change)
        changed = time.monotonic()
        await asyncio.to_thread(real.wait, lambda e: e["event"] == "disconnect", LINK_CHECK_S + 10)
        took = time.monotonic() - changed
        print("%s: link closed %.1f s after the registry change" % (change, took))
        assert took < LINK_CHECK_S + 2.0
        reason = "key_changed" if change == "rotate_key" else "revoked"
        assert ble.deauthorized == 1 and ble.unverified_dropped == 0
        assert gw.metrics.value("civicedge_ble_deauthorized_total", {"reason": reason}) == 1
        assert [r.getMessage() for r in caplog.records if "BLE closed the link" in r.getMessage()], caplog.text
        # the board re-advertises and has more to send: it gets no slot (and nothing is stored)
        real.command("send 3 4")
        await asyncio.sleep(4 * gw.config.ble.scan_interval_s + 2)
        assert sum(1 for e in real.events if e["event"] == "connect") == 1, real.events
        assert ble.connected == 0
        assert stored(gw.config.storage.path, "bin-1") == [1, 2]
    finally:
        await gw.stop()
        real.close()


async def test_a_link_not_yet_authenticated_is_closed_when_its_name_is_revoked(tmp_path: Path, radio: str) -> None:
    """A link admitted under a name that is revoked before any frame verified on it does not wait out
    the auth timeout."""
    fake = Fake(radio, "C0:00:00:00:00:01", "sl-1")
    gw, ble = gateway(tmp_path, radio, max_connections=4, auth_timeout_s=60.0)
    await gw.start()
    try:
        end = time.monotonic() + 15
        while not fake.times("connect"):
            assert time.monotonic() < end, fake.events
            await asyncio.sleep(0.05)
        gw.registry.revoke("sl-1")
        changed = time.monotonic()
        while not fake.times("disconnect"):
            assert time.monotonic() - changed < LINK_CHECK_S + 2.0, fake.events
            await asyncio.sleep(0.05)
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
        await asyncio.to_thread(replayer.wait, lambda e: e["event"] == "ack", 20)  # re-acknowledged, as it must
        await asyncio.to_thread(replayer.wait, lambda e: e["event"] == "disconnect", AUTH_TIMEOUT_S + 8)
        assert ble.unverified_dropped == dropped + 1
        assert stored(gw.config.storage.path, "bin-1") == [1, 2]
    finally:
        await gw.stop()
        if replayer is not None:
            replayer.close()
