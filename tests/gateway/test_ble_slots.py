"""The BLE slot policy (gateway.transports.ble_slots): pure unit tests, no radio."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.transports import ble_slots
from gateway.transports.ble_slots import NameFilter, SlotPolicy

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
    for _ in range(5):
        policy.attempt(fake, now=100.0)
        delays.append(policy.ended(fake, now=100.0, up_for=10.0, unverified_drop=True))
    assert delays == [30.0, 60.0, 120.0, 120.0, 120.0]
    assert policy.not_before(fake) == 220.0
    assert policy.choose([fake], open_links=(), now=219.0) == []
    assert policy.choose([fake], open_links=(), now=220.0) == [fake]
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
