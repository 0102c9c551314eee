"""The BLE slot policy (gateway.transports.ble_slots): pure unit tests, no radio."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.transports import ble_slots
from gateway.transports.ble_slots import DropNotices, NameFilter, SlotPolicy

LONG_ID = "streetlight-north-district-0001"  # 31 bytes: advertised shortened to its first 29


def test_names_admitted_are_registered_ids_or_their_29_byte_shortened_form() -> None:
    names = NameFilter(["bin-1", "sl-1", LONG_ID])
    assert names.admits("bin-1") and names.admits("sl-1") and names.admits(LONG_ID)
    assert names.admits(LONG_ID[:29])  # the firmware's shortened local name
    for name in (None, "", "bin", "bin-", "bin-10", "BIN-1", "x0", LONG_ID[:28], LONG_ID[:30], LONG_ID + "x"):
        assert not names.admits(name), name
    assert not NameFilter([]).admits("bin-1")


def test_a_29_byte_id_is_matched_whole_not_as_a_prefix() -> None:
    exact = "a" * 29
    names = NameFilter([exact, "b" * 29 + "c"])
    assert names.admits(exact) and names.admits("b" * 29)
    assert not names.admits("a" * 28)


def test_candidates_are_not_taken_in_address_order() -> None:
    """Five strangers, three stranger slots: over many fresh gateways each address wins about as often."""
    addresses = ["C0:00:00:00:00:0%d" % i for i in range(1, 5)] + ["F3:12:9A:00:00:01"]
    wins: Counter[str] = Counter()
    rng = random.Random(7)
    for _ in range(500):
        policy = SlotPolicy(4, rng=rng)
        wins.update(policy.choose(addresses, open_links=(), now=1.0))
    assert sum(wins.values()) == 500 * 3
    assert all(200 < wins[a] < 400 for a in addresses), wins  # 300 each if fair


def test_least_recently_served_first() -> None:
    policy = SlotPolicy(1, rng=random.Random(1))
    policy.attempt("C0:00:00:00:00:01", now=10.0)
    policy.ended("C0:00:00:00:00:01", now=10.0, up_for=20.0, unverified_drop=False)  # 0.5 s backoff
    policy.attempt("C0:00:00:00:00:02", now=11.0)
    policy.ended("C0:00:00:00:00:02", now=11.0, up_for=20.0, unverified_drop=False)
    # never served beats served; then the one served longest ago
    assert policy.choose(["C0:00:00:00:00:01", "C0:00:00:00:00:02", "F0:00:00:00:00:09"], open_links=(),
                         now=20.0) == ["F0:00:00:00:00:09"]
    assert policy.choose(["C0:00:00:00:00:02", "C0:00:00:00:00:01"], open_links=(), now=20.0) == ["C0:00:00:00:00:01"]


def test_known_addresses_first_and_one_slot_kept_for_them() -> None:
    policy = SlotPolicy(4, rng=random.Random(2))
    policy.attempt("EE:00:00:00:00:01", now=1.0)
    policy.verified("EE:00:00:00:00:01")
    policy.ended("EE:00:00:00:00:01", now=2.0, up_for=1.0, unverified_drop=False)  # link lost, 0.5 s
    strangers = ["C0:00:00:00:00:0%d" % i for i in range(1, 6)]
    # the known board goes first, though it was served more recently than strangers never tried
    picked = policy.choose(strangers + ["EE:00:00:00:00:01"], open_links=(), now=5.0)
    assert picked[0] == "EE:00:00:00:00:01" and len(picked) == 4
    # three strangers hold links: the fourth slot is not given to a stranger...
    held = strangers[:3]
    assert policy.choose(strangers, open_links=held, now=5.0) == []
    # ...but to a known board
    assert policy.choose(strangers + ["EE:00:00:00:00:01"], open_links=held, now=5.0) == ["EE:00:00:00:00:01"]
    # a single slot is not reserved
    assert SlotPolicy(1).choose(strangers[:1], open_links=(), now=5.0) == strangers[:1]
    # full: nothing
    assert policy.choose(["EE:00:00:00:00:01"], open_links=strangers[:4], now=5.0) == []


def test_backoff_after_a_link_dropped_without_a_verified_frame() -> None:
    policy = SlotPolicy(4)
    fake = "C0:00:00:00:00:01"
    delays = []
    for _ in range(10):
        policy.attempt(fake, now=100.0)
        delays.append(policy.ended(fake, now=100.0, up_for=10.0, unverified_drop=True))
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0, 900.0, 900.0]
    assert ble_slots.UNVERIFIED_BACKOFF_MAX_S == 900.0  # the cap docs/ble.md §8 states
    assert policy.strikes(fake) == 10
    assert policy.not_before(fake) == 1000.0
    assert policy.choose([fake], open_links=(), now=999.0) == []
    assert policy.choose([fake], open_links=(), now=1000.0) == [fake]
    # an address that did deliver a verified frame (a board with nothing to send) waits less,
    # and a verified frame clears the strikes
    board = "EE:00:00:00:00:01"
    policy.verified(board)
    assert [policy.ended(board, now=0.0, up_for=10.0, unverified_drop=True) for _ in range(3)] == [5.0, 10.0, 20.0]
    policy.verified(board)
    assert policy.ended(board, now=0.0, up_for=10.0, unverified_drop=True) == 5.0


def test_an_address_whose_device_was_revoked_or_re_keyed_is_a_stranger_again() -> None:
    """distrust: the link's verified frames vouch for nothing once the registry withdrew its device."""
    policy = SlotPolicy(4, rng=random.Random(3))
    board = "EE:00:00:00:00:01"
    policy.attempt(board, now=1.0)
    policy.verified(board)
    policy.ended(board, now=2.0, up_for=1.0, unverified_drop=True)  # a strike before: cleared by distrust
    policy.verified(board)
    policy.distrust(board)
    assert not policy.known(board)
    # a stranger's backoff from the first strike, not a known board's 5 s
    assert policy.ended(board, now=10.0, up_for=9.0, unverified_drop=True) == ble_slots.UNVERIFIED_BACKOFF_S
    # and no kept slot: three strangers hold links, the fourth is not given to it
    strangers = ["C0:00:00:00:00:0%d" % i for i in range(1, 4)]
    assert policy.choose([board], open_links=strangers, now=100.0) == []
    policy.distrust("F0:00:00:00:00:09")  # an address never seen: nothing to forget
    assert not policy.known("F0:00:00:00:00:09")


def test_ordinary_backoff_doubles_and_resets_after_a_stable_link() -> None:
    policy = SlotPolicy(4)
    a = "C0:00:00:00:00:01"
    assert [policy.ended(a, now=0.0, up_for=1.0, unverified_drop=False) for _ in range(8)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.ended(a, now=0.0, up_for=ble_slots.STABLE_S, unverified_drop=False) == 0.5


def test_peer_table_is_bounded_and_keeps_known_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ble_slots, "MAX_PEERS", 10)
    policy = SlotPolicy(4)
    policy.verified("EE:00:00:00:00:01")
    for i in range(100):
        policy.attempt("C0:00:00:00:%02X:00" % i, now=float(i))
    assert len(policy._peers) <= 10
    assert policy.known("EE:00:00:00:00:01")


AUTH_S = 20.0  # [ble] auth_timeout_s: how long each unproductive link holds a slot
SL = "D3:25:B6:A0:45:7D"


def test_a_flood_of_addresses_does_not_reset_a_long_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pruning forgets the fewest strikes first: a paused board is not forgotten for a flood of
    made-up addresses (each dropped once) and does not come back unpaused, and the table stays bounded."""
    monkeypatch.setattr(ble_slots, "MAX_PEERS", 10)
    policy = SlotPolicy(4)
    for _ in range(4):  # paused 30, 60, 120, 240 s
        policy.attempt(SL, now=0.0)
        policy.ended(SL, now=0.0, up_for=AUTH_S, unverified_drop=True)
    assert policy.not_before(SL) == 240.0
    for i in range(100):  # 100 made-up addresses, each connected once and dropped, after the board
        fake = "C0:00:00:00:%02X:00" % i
        policy.attempt(fake, now=1.0 + i)
        policy.ended(fake, now=1.0 + i, up_for=AUTH_S, unverified_drop=True)
        assert len(policy._peers) <= 10
    assert policy.strikes(SL) == 4
    assert policy.choose([SL], open_links=(), now=200.0) == []  # still paused
    assert policy.choose([SL], open_links=(), now=240.0) == [SL]
    # the next drop doubles on: 480 s, not a first 30 s
    assert policy.ended(SL, now=240.0, up_for=AUTH_S, unverified_drop=True) == 480.0


def test_a_table_of_known_boards_alone_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ble_slots, "MAX_PEERS", 10)
    policy = SlotPolicy(4)
    for i in range(50):
        policy.attempt("EE:00:00:00:%02X:00" % i, now=float(i))
        policy.verified("EE:00:00:00:%02X:00" % i)
    assert len(policy._peers) <= 10
    assert policy.known("EE:00:00:00:31:00")  # the last one served is kept


def run_unproductive(policy: SlotPolicy, address: str, start: float, until: float, *,
                     busy_every: int = 0) -> list[float]:
    """Connect ``address`` whenever its pause allows (one scan a second) until ``until``; every link
    delivers nothing and is dropped after AUTH_S (every ``busy_every``-th attempt instead fails
    because another central holds the board). Returns the times links were opened."""
    now, opened, attempts = start, [], 0
    while now < until:
        if policy.choose([address], open_links=(), now=now) == [address]:
            policy.attempt(address, now)
            attempts += 1
            if busy_every and attempts % busy_every == 0:
                now += 10.0  # connect timeout: the other gateway holds the board's one central slot
                policy.ended(address, now, up_for=10.0, unverified_drop=False)
                continue
            opened.append(now)
            now += AUTH_S
            policy.ended(address, now, up_for=AUTH_S, unverified_drop=True)
            continue
        now += 1.0
    return opened


def test_a_streetlight_whose_uart_delivers_elsewhere_is_paused_longer_and_longer() -> None:
    """The QA case: a streetlight heard over BLE sends nothing there (its UART delivers), so every
    link is dropped after AUTH_S. Was: 30, 60, then 120 s between links for ever (≈ 600 links a day
    holding the board's one central slot); now the pause doubles to the cap of 15 min."""
    policy = SlotPolicy(4)
    day = 24 * 3600.0
    opened = run_unproductive(policy, SL, 0.0, day, busy_every=3)
    gaps = [b - a for a, b in zip(opened, opened[1:])]
    for i, gap in enumerate(gaps):
        pause = min(ble_slots.UNVERIFIED_BACKOFF_S * 2 ** i, ble_slots.UNVERIFIED_BACKOFF_MAX_S)
        # a failed attempt in between (10 s, then at most 30 s) neither resets nor stretches the pause
        assert AUTH_S + pause <= gap <= AUTH_S + pause + 10.0 + 30.0 + 1.0, (i, gaps)
    assert gaps[-1] >= ble_slots.UNVERIFIED_BACKOFF_MAX_S  # at the cap, and capped: never starved longer
    assert 80 <= len(opened) <= 110, len(opened)  # about four links an hour once at the cap (was ~600 a day)
    late = [t for t in opened if t >= 6 * 3600.0]
    assert len(late) <= 18 * 4 + 1, late  # hours 6..24: at most one link per 15 min


def test_a_verified_frame_ends_the_pause_at_once() -> None:
    """A board that had frames after all (its UART stopped) is not held to the pause: the frame
    that verified (also one committed just after its link was dropped at the auth timeout) lifts
    it, and the next drop starts again from the first pause."""
    policy = SlotPolicy(4)
    run_unproductive(policy, SL, 0.0, 4 * 3600.0)
    assert policy.strikes(SL) >= 8
    dropped_at = 4 * 3600.0 + 60.0
    policy.attempt(SL, dropped_at - AUTH_S)
    policy.ended(SL, dropped_at, up_for=AUTH_S, unverified_drop=True)
    assert policy.not_before(SL) == dropped_at + 900.0
    policy.verified(SL)  # its frame, committed after the drop
    assert policy.strikes(SL) == 0
    assert policy.choose([SL], open_links=(), now=dropped_at + 0.1) == [SL]
    assert policy.ended(SL, dropped_at + 30.0, up_for=AUTH_S, unverified_drop=True) == ble_slots.KNOWN_IDLE_BACKOFF_S


def test_pauses_are_configurable_and_checked() -> None:
    policy = SlotPolicy(1, unverified_backoff_s=1.0, known_idle_backoff_s=0.5, pause_max_s=4.0)
    assert [policy.ended("A", now=0.0, up_for=2.0, unverified_drop=True) for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="pause_max_s"):
        SlotPolicy(1, unverified_backoff_s=60.0, pause_max_s=30.0)
    with pytest.raises(ValueError, match="above 0"):
        SlotPolicy(1, known_idle_backoff_s=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_drop_notices_tell_a_device_once_when_its_pause_starts_and_once_at_the_cap() -> None:
    clock = Clock()
    policy = SlotPolicy(4)
    notices = DropNotices(policy.pause_max_s, clock)
    told = []
    for _ in range(12):  # 30 s ... 900 s, 900 s, ...
        clock.now += 3600.0
        told.append(notices.dropped("sl-01", policy.ended(SL, clock.now, up_for=AUTH_S, unverified_drop=True)))
    assert told[0] == ("start", 0)
    assert told[5] == ("cap", 4)  # the pause reached 900 s; four drops told at DEBUG meanwhile
    assert [i for i, t in enumerate(told) if t is not None] == [0, 5]
    # another device is told on its own
    assert notices.dropped("bin-01", 30.0) == ("start", 6)  # the six drops after the cap, held back
    # a verified frame ends the streak (True: a WARNING had told of it); the next drop starts one
    assert notices.verified("sl-01") is True
    assert notices.verified("sl-01") is False
    assert notices.dropped("sl-01", 5.0) == ("start", 0)
    assert notices.dropped("sl-01", 10.0) is None


def test_drop_notices_are_bounded_in_a_flood_and_owed_not_lost() -> None:
    """Made-up names (no registry) are a new device each: at most DROP_WARN_BURST WARNINGs per
    window; a device held back is told at its next drop after the window."""
    clock = Clock()
    notices = DropNotices(3600.0, clock)
    names = ["x%d" % i for i in range(ble_slots.DROP_WARN_BURST + 5)]
    told = [notices.dropped(n, 30.0) for n in names]
    assert sum(t is not None for t in told) == ble_slots.DROP_WARN_BURST
    assert told[-1] is None
    clock.now += ble_slots.DROP_WARN_WINDOW_S
    assert notices.dropped(names[-1], 60.0) == ("start", 5)
    assert notices.dropped(names[0], 60.0) is None  # told already
