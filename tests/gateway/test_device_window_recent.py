"""``DeviceWindow.recent`` (:class:`~gateway.pipeline.device_window.RecentDigests`): a compact mapping of a
device's committed seqs to their digest prefixes, answering as the dict of bytes it replaced did."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest

from gateway.pipeline import device_window
from gateway.pipeline.device_window import DIGEST_PREFIX, REPLAY_WINDOW, RecentDigests, digest_prefix


def _digest(i: int) -> str:
    return hashlib.sha256(b"%d" % i).hexdigest()


def test_digest_prefix_is_the_first_bytes_of_the_hex_digest() -> None:
    d = _digest(1)
    assert digest_prefix(d) == int.from_bytes(bytes.fromhex(d)[:DIGEST_PREFIX], "big")
    assert digest_prefix(d) != digest_prefix(_digest(2))


def test_it_answers_as_a_dict_under_random_operations() -> None:
    """Inserts in and out of order, overwrites, unknown digests (None) and trims, checked against a dict."""
    rng = random.Random(7)
    recent = RecentDigests([5, 3, 9, 3])  # loaded at start: digests not known
    model: dict[int, int | None] = {3: None, 5: None, 9: None}
    top = 9
    for step in range(5000):
        op = rng.random()
        if op < 0.6:
            top += rng.choice((1, 1, 1, 2, 32))  # mostly rising, with gaps (seqs skipped at a reboot)
            seq = top
        elif op < 0.9:
            seq = rng.randint(max(0, top - 600), top)  # a late or re-sent seq below the top
        else:
            floor = top - REPLAY_WINDOW
            recent.keep_above(floor)
            model = {s: d for s, d in model.items() if s > floor}
            continue
        value = None if rng.random() < 0.1 else digest_prefix(_digest(step))
        recent[seq] = value
        model[seq] = value
        probe = rng.randint(max(0, top - 700), top + 5)
        assert (probe in recent) == (probe in model)
        if probe in model:
            assert recent[probe] == model[probe]
        assert len(recent) == len(model)
    assert list(recent.items()) == sorted(model.items())
    assert 0xFFFFFFFF not in recent
    recent[0xFFFFFFFF] = digest_prefix("f" * 64)  # the last seq (u32) and the highest prefix fit
    assert recent[0xFFFFFFFF] == 2 ** 64 - 1
    with pytest.raises(KeyError):
        recent[top + 1000]
    assert "5" not in recent and None not in recent


def test_a_prefix_of_zero_reads_as_not_known() -> None:
    """0 marks a digest not known here (asked of the store, which answers the same): odds 2**-64."""
    recent = RecentDigests()
    recent[7] = 0
    assert 7 in recent and recent[7] is None


def test_a_full_window_takes_a_fraction_of_the_dict_of_bytes_it_replaced() -> None:
    """2 * REPLAY_WINDOW seqs (the most a window keeps between trims): about 12 bytes each, where the dict of
    8-byte ``bytes`` took about 109 (tracemalloc: 55.8 MB per 1,000 devices, now 6.6 MB)."""
    digests = [digest_prefix(_digest(i)) for i in range(2 * REPLAY_WINDOW)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        recent = RecentDigests()
        for i, d in enumerate(digests):
            recent[1_000_000 + i] = d
        after = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, device_window.__file__)])
        size = sum(s.size_diff for s in after.compare_to(
            before.filter_traces([tracemalloc.Filter(True, device_window.__file__)]), "filename"))
    finally:
        tracemalloc.stop()
    assert len(recent) == 2 * REPLAY_WINDOW
    assert 8 * 2 * REPLAY_WINDOW < size < 20 * 2 * REPLAY_WINDOW, size  # measured where it is held


def test_it_iterates_and_compares_as_a_dict_of_its_seqs() -> None:
    """Review 2: without ``__iter__``, ``for s in recent`` fell back to ``__getitem__`` (KeyError: 0) and
    ``recent == {...}`` was always False."""
    recent = RecentDigests([7, 3])
    recent[9] = 0x1122
    assert list(recent) == [3, 7, 9]
    assert recent == {3: None, 7: None, 9: 0x1122}
    assert recent != {3: None, 7: None, 9: 0x1123}
    other = RecentDigests([3, 7])
    other[9] = 0x1122
    assert recent == other
    with pytest.raises(TypeError):
        hash(recent)
