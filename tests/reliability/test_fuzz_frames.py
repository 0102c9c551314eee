"""Guarantee 1: frame fuzzing. Mutated valid frames (bit flips, truncation, extension, header edits,
COBS damage, oversized lengths, wrong versions) and random fragment streams against gateway.protocol
and the Verifier: only the gateway's own error types, no accepted forgery (anything that verifies is
byte-identical to a frame a device really built), and, fed through a real IngestService with SQLite,
every rejection counted by reason in the metrics.

Default: ~10k mutation cases plus hypothesis; CIVICEDGE_FULL=1: 120k mutation cases and more examples.
"""

from __future__ import annotations

import random
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ProtocolError, RejectedReport
from gateway.metrics import REJECTION_REASONS, GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.protocol import (FragmentReassembler, SerialDeframer, cobs_decode, cobs_encode, encode_serial,
                              fragment_frame, parse_frame)
from gateway.protocol.frame import FRAME_ACK, FRAME_CONFIG, MAX_FRAME, build_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore

from .support import FULL, KEYS, WINDOW_T0, AckLink, report, settle

MUTATION_CASES = 120_000 if FULL else 10_000
INGEST_CASES = 20_000 if FULL else 2_000
EXAMPLES = 2_000 if FULL else 150


def valid_frames() -> list[bytes]:
    """Frames a device really builds: several devices, seqs, kinds, an alarm, a day release."""
    out = [report(dev, seq) for dev in KEYS for seq in (1, 2, 3, 255, 256, 70_000)]
    out.append(report("bin-1", 9, t="alarm", l=60, m={}, a=["fire"]))
    six_h = 21600  # the streetlight's 6-hourly noisy motion release, and one suppressed below k
    out.append(report("sl-1", 10, l=six_h, w=WINDOW_T0 - WINDOW_T0 % six_h, m={"mot": 7}, e={"mot": 500}))
    out.append(report("sl-1", 11, l=six_h, w=WINDOW_T0 - WINDOW_T0 % six_h + six_h, m={}, e={"mot": 500}))
    return out


def _mutators(frames: list[bytes]) -> list[Callable[[random.Random, bytes], bytes]]:
    def bit_flips(r: random.Random, f: bytes) -> bytes:
        b = bytearray(f)
        if not b:
            return f
        for _ in range(r.randint(1, 4)):
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        return bytes(b)

    def byte_set(r: random.Random, f: bytes) -> bytes:
        b = bytearray(f)
        if not b:
            return f
        b[r.randrange(len(b))] = r.randrange(256)
        return bytes(b)

    def truncate(r: random.Random, f: bytes) -> bytes:
        return f[: r.randrange(len(f) + 1)]

    def cut_middle(r: random.Random, f: bytes) -> bytes:
        i = r.randrange(len(f) + 1)
        return f[:i] + f[i + r.randint(1, 8):]

    def extend(r: random.Random, f: bytes) -> bytes:
        return f + r.randbytes(r.randint(1, 40))

    def insert(r: random.Random, f: bytes) -> bytes:
        i = r.randrange(len(f) + 1)
        return f[:i] + r.randbytes(r.randint(1, 8)) + f[i:]

    def oversize(r: random.Random, f: bytes) -> bytes:
        return f + r.randbytes(max(0, MAX_FRAME - len(f)) + r.randint(1, 3000))

    def version(r: random.Random, f: bytes) -> bytes:
        # A downgrade/upgrade of the version byte (0x01 and 0x02 exist; the tag covers it).
        return bytes([r.choice([0, 1, 3, 0x10, 0xFF])]) + f[1:]

    def frame_type(r: random.Random, f: bytes) -> bytes:
        return f[:1] + bytes([r.choice([0, FRAME_ACK, FRAME_CONFIG, 4, 0x81])]) + f[2:]

    def id_len(r: random.Random, f: bytes) -> bytes:
        if len(f) < 3:
            return f
        return f[:2] + bytes([r.choice([0, 1, max(0, f[2] - 1), min(255, f[2] + 1), 33, 255])]) + f[3:]

    def swap_id(r: random.Random, f: bytes) -> bytes:
        # Spoof: another registered device's header, the original tag.
        if len(f) < 3:
            return f
        other = r.choice(list(KEYS)).encode()
        return f[:2] + bytes([len(other)]) + other + f[3 + f[2]:]

    def seq_edit(r: random.Random, f: bytes) -> bytes:
        off = 3 + f[2] if len(f) > 2 else 0
        if len(f) < off + 4:
            return f
        (seq,) = struct.unpack_from(">I", f, off)
        new = r.choice([0, seq + 1, seq - 1, 0xFFFFFFFF, r.randrange(2**32)]) & 0xFFFFFFFF
        return f[:off] + struct.pack(">I", new) + f[off + 4:]

    def splice(r: random.Random, f: bytes) -> bytes:
        g = r.choice(frames)
        return f[: r.randrange(len(f) + 1)] + g[r.randrange(len(g)):]

    def tag_from_other(r: random.Random, f: bytes) -> bytes:
        return f[:-16] + r.choice(frames)[-16:]

    def random_bytes(r: random.Random, f: bytes) -> bytes:
        return r.randbytes(r.randint(0, 1100))

    return [bit_flips, byte_set, truncate, cut_middle, extend, insert, oversize, version, frame_type, id_len,
            swap_id, seq_edit, splice, tag_from_other, random_bytes]


def mutations(n: int, seed: int) -> list[bytes]:
    """``n`` deterministic mutations of valid frames (one to three mutators stacked)."""
    frames = valid_frames()
    muts = _mutators(frames)
    r = random.Random(seed)
    out = []
    for _ in range(n):
        f = r.choice(frames)
        for _ in range(r.choice((1, 1, 1, 2, 3))):
            f = r.choice(muts)(r, f)
        out.append(f)
    return out


def classify(verifier: Verifier, raw: bytes, valid: set[bytes]) -> str:
    """Run the verifier; return ``"ok"`` or the rejection reason. Anything else propagates and fails."""
    try:
        verifier.verify(raw, link="serial:fuzz", now=0.0)
    except (ProtocolError, RejectedReport) as exc:
        assert exc.reason in REJECTION_REASONS, "reason %r is not a counted reason" % exc.reason
        return exc.reason
    assert raw in valid, "FORGERY ACCEPTED: %s" % raw.hex()
    return "ok"


def test_mutated_frames_never_crash_or_forge(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    valid = set(valid_frames())
    started = time.monotonic()
    reasons = Counter(classify(verifier, raw, valid) for raw in mutations(MUTATION_CASES, seed=9))
    elapsed = time.monotonic() - started
    print("\nfuzz: %d mutation cases in %.1f s: %s" % (MUTATION_CASES, elapsed, dict(reasons)))
    # The mix really exercises every layer of the verifier, not just the first check.
    for reason in ("oversize", "version", "malformed", "unknown_device", "hmac"):
        assert reasons[reason] > 0, reason
    assert sum(reasons.values()) == MUTATION_CASES


def test_authentic_but_bad_bodies_are_refused_not_forged(registry: Registry) -> None:
    """Correctly tagged frames with broken bodies (as a compromised device could send): refused by reason."""
    key = KEYS["bin-1"]
    verifier = Verifier(registry, load_policy())
    cases = {
        b"\xc1": "body", b"\x91\x01": "body", b"\x80\x80": "body", b"\x81\xa1t\xcb" + bytes(8): "body",
        b"\x81\xa1x\x01": "policy",
    }
    for raw_body, reason in cases.items():
        frame = build_frame(1, "bin-1", 5, raw_body, key)
        with pytest.raises(RejectedReport) as info:
            verifier.verify(frame, link="l", now=0)
        assert info.value.reason == reason, raw_body


# Any msgpack value a compromised device could put in a body: scalars of every type and nested
# arrays and maps (unhashable where the verifier looks names up).
_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_BODY_KEYS = ("t", "k", "w", "l", "m", "e", "a", "fw", "h")


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device=st.sampled_from(sorted(KEYS)), changes=st.dictionaries(st.sampled_from(_BODY_KEYS + ("x",)),
                                                                       _ANY | st.dictionaries(
                                                                           st.sampled_from(("fill", "temp", "mot",
                                                                                            "lux", "fire")),
                                                                           _ANY, max_size=3),
                                                                       min_size=1, max_size=3),
       drop=st.sets(st.sampled_from(_BODY_KEYS), max_size=2))
def test_authentic_bodies_of_any_shape_are_refused_by_reason(registry: Registry, device: str,
                                                            changes: dict[str, object], drop: set[str]) -> None:
    """A device with a valid key (compromised, or buggy firmware) sends a body with any value of any
    type in any field: the verifier accepts it only as a well-formed report, and otherwise refuses it
    with a counted reason; it never raises anything else (a TypeError here once escaped into the
    transport's read loop)."""
    from .support import body_for
    kind = "streetlight" if device.startswith("sl") else "bin"
    body = {k: v for k, v in body_for(kind, 7).items() if k not in drop}
    body.update(changes)
    frame = build_frame(1, device, 7, body, KEYS[device])
    verifier = Verifier(registry, load_policy())
    try:
        verified = verifier.verify(frame, link="serial:fuzz", now=0.0)
    except (ProtocolError, RejectedReport) as exc:
        assert exc.reason in REJECTION_REASONS, exc.reason
        return
    rec = verified.record
    assert rec.type in ("win", "hour", "day", "alarm") and rec.kind == kind
    assert all(type(v) is int for v in rec.m.values()) and all(type(v) is int for v in rec.e.values())
    assert all(type(c) is str for c in rec.a)
    held = verified.held or ()
    assert all(type(v) is int and 0 < v < 7 for v in held) and list(held) == sorted(held)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=1200))
def test_random_bytes_as_frames(registry: Registry, data: bytes) -> None:
    classify(Verifier(registry, load_policy()), data, set(valid_frames()))


@settings(max_examples=EXAMPLES, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=20), seed=st.integers(0, 2**32 - 1))
def test_serial_stream_of_garbage_and_damaged_cobs(chunks: list[bytes], seed: int) -> None:
    """Garbage and damaged COBS between real frames: only ProtocolError items, and intact frames survive."""
    r = random.Random(seed)
    frames = valid_frames()
    stream = bytearray()
    sent: list[bytes] = []
    for chunk in chunks:
        stream += chunk + b"\x00"  # garbage, then resync at the delimiter
        f = r.choice(frames)
        sent.append(f)
        stream += encode_serial(f)
    deframer = SerialDeframer()
    out: list[bytes | ProtocolError] = []
    pos = 0
    while pos < len(stream):  # split the stream at random read boundaries
        step = r.randint(1, 200)
        out += deframer.feed(bytes(stream[pos:pos + step]))
        pos += step
    got = [x for x in out if isinstance(x, bytes)]
    for item in out:
        assert isinstance(item, (bytes, ProtocolError))
        if isinstance(item, ProtocolError):
            assert item.reason in ("cobs", "oversize")
    # Every intact frame comes out, in order (garbage may decode to extra chunks in between).
    it = iter(got)
    assert all(any(g == f for g in it) for f in sent)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.binary(min_size=1, max_size=1300))
def test_cobs_decode_only_raises_protocol_error(data: bytes) -> None:
    try:
        decoded = cobs_decode(data)
    except ProtocolError as exc:
        assert exc.reason == "cobs"
    else:
        assert cobs_decode(cobs_encode(decoded)) == decoded


@settings(max_examples=EXAMPLES, deadline=None)
@given(frags=st.lists(st.binary(max_size=250), max_size=40))
def test_random_fragment_streams(frags: list[bytes]) -> None:
    """Random BLE notifications: only frames (<= 1024 bytes) and ProtocolError(fragment/oversize) come out."""
    reasm = FragmentReassembler()
    for frag in frags:
        for item in reasm.feed(frag):
            if isinstance(item, ProtocolError):
                assert item.reason in ("fragment", "oversize")
            else:
                assert isinstance(item, bytes) and 0 < len(item) <= MAX_FRAME


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mtu=st.integers(23, 247))
def test_fragment_streams_with_loss_and_reorder_never_splice(seed: int, mtu: int) -> None:
    """Real fragments with drops, duplicates and swaps: whatever reassembles is a whole frame that was sent."""
    r = random.Random(seed)
    frames = valid_frames()
    sent = [r.choice(frames) for _ in range(6)]
    frags = [fr for i, f in enumerate(sent) for fr in fragment_frame(f, mtu, i % 256)]
    for _ in range(r.randint(0, 4)):
        i = r.randrange(len(frags))
        op = r.randrange(3)
        if op == 0:
            del frags[i]
        elif op == 1:
            frags.insert(i, frags[i])
        elif i + 1 < len(frags):
            frags[i], frags[i + 1] = frags[i + 1], frags[i]
        if not frags:
            break
    reasm = FragmentReassembler()
    for frag in frags:
        for item in reasm.feed(frag):
            if isinstance(item, bytes):
                assert item in sent, "reassembled a frame that was never sent"


@pytest.mark.timeout(120)
async def test_ingest_counts_every_rejection_by_reason(registry: Registry, tmp_path: Path) -> None:
    """Mutated frames, link-level errors and valid frames through a real IngestService + SQLite: the metrics
    count exactly the rejections the verifier reports, by reason; only the valid frames are stored, once."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw-fuzz")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw-fuzz"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=10, gap_hold_s=0.0)
    await ingest.start()
    link = AckLink()
    valid = set(valid_frames())
    expected: Counter[str] = Counter()
    oracle = Verifier(registry, load_policy())
    fed_valid: set[bytes] = set()
    fed_valid_count = 0
    try:
        # The real frames first, in seq order as a device sends them; copies among the mutations are then
        # re-acknowledged duplicates (never ``replay``: they are stored).
        for raw in sorted(valid, key=lambda f: (parse_frame(f).device_id, parse_frame(f).seq)):
            assert classify(oracle, raw, valid) == "ok"
            ingest.feed(raw, link.link)
        await settle(ingest)
        for raw in mutations(INGEST_CASES, seed=21):
            reason = classify(oracle, raw, valid)
            if reason == "ok":
                fed_valid.add(raw)
                fed_valid_count += 1
            else:
                expected[reason] += 1
            ingest.feed(raw, link.link)
        # link-level decode errors the transports hand over
        deframer = SerialDeframer()
        for item in deframer.feed(b"\x05\x01\x00" + b"\xff" * 2000 + b"\x00"):
            assert isinstance(item, ProtocolError)
            expected[item.reason] += 1
            ingest.feed(item, link.link)
        await settle(ingest)
    finally:
        await ingest.stop()
        ingest.close()
        ingest.store.close()
    counted = {reason: metrics.value("civicedge_rejections_total", {"reason": reason}) for reason in REJECTION_REASONS}
    assert {k: v for k, v in counted.items() if v} == {k: float(v) for k, v in expected.items()}
    stored = ReportQueries(db).count_reports()
    assert stored == metrics.value("civicedge_reports_stored_total")
    assert fed_valid <= valid
    assert stored == len(valid)
    assert metrics.value("civicedge_reports_duplicate_total") == fed_valid_count
    assert fed_valid_count > 0, "the mutations never reproduced a valid frame: duplicates path untested"
    assert metrics.value("civicedge_reports_in_total", {"link_type": "serial"}) == INGEST_CASES + len(valid)
