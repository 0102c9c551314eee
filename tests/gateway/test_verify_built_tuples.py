"""What Verifier.verify builds without the NamedTuples' constructors (tuple.__new__, fields in order) is what
the constructors build: every field where it belongs, and the absent e/a of one report never shared with another."""

from __future__ import annotations

from conftest import KEYS
from helpers import report_frame

from gateway.pipeline import Verifier
from gateway.pipeline.verify import Verified
from gateway.protocol.frame import Frame, parse_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage.provenance import frame_digest
from gateway.storage.store import ReportRecord


def test_verified_record_and_frame_hold_each_field_in_place(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    raw = report_frame("sl-1", 7, KEYS["sl-1"], kind="streetlight")
    got = verifier.verify(raw, link="serial:/dev/x", now=1234.5)
    assert type(got) is Verified and got == Verified(*got)
    assert type(got.frame) is Frame and got.frame == parse_frame(raw) == Frame(*got.frame)
    assert (got.frame.device_id, got.frame.seq, got.frame.signed + got.frame.tag) == ("sl-1", 7, raw)
    assert got.key == KEYS["sl-1"] and got.device.id == "sl-1"
    assert (got.held, got.coarsened, got.dropped, got.out_of_range) == (None, (), (), ())
    rec = got.record
    assert type(rec) is ReportRecord and rec == ReportRecord(*rec) and len(rec) == len(ReportRecord._fields)
    assert (rec.device, rec.seq, rec.kind, rec.zone, rec.type) == ("sl-1", 7, "streetlight", "north", "win")
    assert (rec.received_at, rec.link, rec.digest) == (1234.5, "serial:/dev/x", frame_digest(raw))
    assert rec.l == 900 and rec.w % 900 == 0 and rec.fw is not None


def test_absent_e_and_a_are_fresh_per_record(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    one = verifier.verify(report_frame("sl-1", 1, KEYS["sl-1"], kind="streetlight"), link="l", now=1.0).record
    two = verifier.verify(report_frame("sl-1", 2, KEYS["sl-1"], kind="streetlight"), link="l", now=1.0).record
    assert one.e == two.e == {} and one.a == two.a == []
    one.e["x"] = 1  # a record's e or a changed by someone never shows up in another's
    one.a.append("y")
    assert two.e == {} and two.a == []
