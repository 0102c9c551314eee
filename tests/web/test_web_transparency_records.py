"""The transparency page says how long alarms and report records (device, time received, link) are kept
(QA MEDIUM, privacy transparency: it gave "kept for" per field only, and nothing for alarms or reception
times), and what outlives every retention. Fails before: no such text, no ``report_records`` in the JSON."""

from __future__ import annotations

import html

from gateway.resources import load_policy
from gateway.storage.row_retention import row_retention_days
from gateway.web.transparency import REPORT_RECORD_ITEMS, build_transparency, render_transparency_html


def test_each_kind_says_how_long_its_alarms_and_report_records_are_kept() -> None:
    policy = load_policy()
    doc = build_transparency(policy)
    # the same figure the store removes rows by (every field of the policy, as the service passes them)
    store_days = row_retention_days({(k, f): int(s["retention_days"]) for k, ks in policy["kinds"].items()
                                     for f, s in ks["fields"].items()})
    by_kind = {k["kind"]: k for k in doc["kinds"]}
    assert {k: v["report_records"]["retention_days"] for k, v in by_kind.items()} == store_days
    assert by_kind["bin"]["report_records"]["text"] == (
        "Alarms (code and minute) and the record of each report are kept for 730 days, the longest retention "
        "of this kind's fields, then deleted. A report's record: device, zone, report number, report type, "
        "period, time received (to the millisecond), link it came on (serial port or Bluetooth address), alarm "
        "codes, firmware version, the gateway that received it, fingerprint (SHA-256 hash) of the authenticated message.")
    # the page's text lists what the JSON lists (zone and frame digest included: both stay in the row)
    assert by_kind["bin"]["report_records"]["kept"] == REPORT_RECORD_ITEMS
    assert all(item in by_kind["bin"]["report_records"]["text"] for item in REPORT_RECORD_ITEMS)
    page = html.unescape(render_transparency_html(doc))
    assert ('<p class="records" data-retention-days="730">Alarms (code and minute) and the record of each report'
            in page)
    assert '<section id="kept-without-limit"><h2>Kept without a time limit (no values)</h2>' in page
    assert "highest report number deleted" in page and "provenance log" in page


def test_a_shortened_retention_shortens_the_records_too() -> None:
    policy = load_policy()
    fields = policy["kinds"]["bin"]["fields"]
    doc = build_transparency(policy, retention={"bin": {f: 30 for f in fields}})
    bin_ = next(k for k in doc["kinds"] if k["kind"] == "bin")
    assert bin_["report_records"]["retention_days"] == 30
    assert "are kept for 30 days" in render_transparency_html(doc)


def test_what_is_kept_without_a_limit_names_the_ack_floor_and_the_publication_marks() -> None:
    """Fails before: the list left out the ACK floor (ack_floor: device, highest acknowledged seq) and the
    open data's publication marks (published:* in meta: a report id and its receive time), and called the
    frame digest "no value" without saying what it is."""
    page = html.unescape(render_transparency_html(build_transparency(load_policy())))
    assert "highest report number the gateway acknowledged" in page
    assert "the number of the newest report published and when it was received" in page
    assert "SHA-256 hash) of the authenticated message" in page
    assert "cannot be read back without the device's key" in page and "no time, link or value" not in page
