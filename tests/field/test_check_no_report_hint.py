"""``check``'s "accepted no report" names the gateway's ``seq_reused`` refusal besides hmac and
unknown_device: a board counting under the seqs stored under its id (a take-over without a seq floor)
reports fine over a working link and is refused, and its fix is provision's ``--seq-start``."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gateway.pipeline.ingest import IngestService
from gateway.storage import ReportRecord, ReportStore
from hil.field.check import DbWatch, wait_new_report
from hil.field.errors import NoReportError


def test_no_report_names_seq_reused_its_log_line_and_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw")
    try:  # the old board's report, stored before check marks the store: not a new one
        store.insert_batch([ReportRecord(device="sl-0031", seq=1, kind="streetlight", zone="centre", type="win",
                                         w=1_790_000_100, l=900, m={"lux": 1}, e={}, a=[], fw="0.1.0",
                                         received_at=1_790_000_100.0, link="serial:/dev/x", digest="%064x" % 1)])
    finally:
        store.close()
    watch = DbWatch(db, "sl-0031")
    watch.mark()
    with pytest.raises(NoReportError) as none:
        wait_new_report(watch, device_id="sl-0031", timeout_s=0.3, poll_s=0.05)
    text = str(none.value)
    assert "accepted no report from sl-0031 within 0.3 s" in text
    assert "hmac" in text and "unknown_device" in text and "seq_reused" in text, text
    assert "civicedge provision --port PORT --id sl-0031 ... --seq-start N" in text, text
    assert "--gateway URL / --db PATH" in text, text
    # The line it quotes is the one the gateway logs for the refusal (gateway/pipeline/ingest.py).
    quoted = re.search(r"'sl-0031 seq \.\.\. (.+?)'", text)
    assert quoted is not None, text
    assert quoted.group(1) in inspect.getsource(IngestService._seq_reused)
