"""What the transparency page publishes besides the policy's fields (QA, journalist audit of "nothing
identifying leaves a sensor"): the policy file itself and its SHA-256, what the guarantees do not cover,
who publishes the page, and unambiguous ε names."""

from __future__ import annotations

import copy
import hashlib
import html
import json
import re
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy, policy_path
from gateway.storage.store import ReportRecord
from gateway.upstream.mqtt import encode_report
from gateway.web.app import create_app
from gateway.web.catalogue import OpenDataMeta
from gateway.web.context import COMPRESS_MIN_BYTES
from gateway.web.transparency import build_transparency, render_transparency_html

from .support import ADMIN_TOKEN, NOW, Fleet


async def _client(fleet: Fleet, policy: dict[str, Any], open_data: OpenDataMeta | None = None) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=policy,
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN,
                     retention=fleet.retention, clock=lambda: float(NOW), open_data=open_data)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    return client


@pytest.fixture
async def city_client(fleet: Fleet) -> AsyncIterator[TestClient]:
    """The app with ``[opendata] publisher`` and ``contact`` set."""
    c = await _client(fleet, load_policy(), OpenDataMeta(publisher="City of Example, Open Data Office",
                                                          contact="opendata@example.org"))
    try:
        yield c
    finally:
        await c.close()


def _section(page: str, sid: str) -> str:
    found = re.search(r'<section id="%s">(.*?)</section>' % sid, page, re.S)
    assert found, f"no section {sid}"
    return found.group(1)


async def test_the_policy_file_is_served_byte_for_byte_and_its_sha256_is_on_the_page(client: TestClient) -> None:
    """M2: the page said "Privacy policy version 1", a number that stayed 1 while what the policy says
    changed several times; a citizen had nothing to compare with a release."""
    file_bytes = policy_path().read_bytes()
    digest = hashlib.sha256(file_bytes).hexdigest()

    doc = await (await client.get("/transparency.json")).json()
    assert doc["policy_sha256"] == digest
    page = await (await client.get("/transparency")).text()
    section = _section(page, "policy-file")
    # the hash as a reader copies it (the <wbr> line-break opportunities copy as nothing)
    assert digest in section.replace("<wbr>", "") and 'href="policy.json"' in section and "sha256sum" in section
    assert "Privacy policy version" not in page
    # the file's "version" is named for what it is: the version of the file's layout, not of its content
    assert "version of its layout" in section and "not of what it says" in section

    resp = await client.get("/policy.json", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    # the bytes on the wire are the file's, for sha256sum, although JSON answers this large are compressed
    assert len(file_bytes) >= COMPRESS_MIN_BYTES and "Content-Encoding" not in resp.headers
    assert await resp.read() == file_bytes
    assert resp.headers["ETag"] == f'"{digest}"' and resp.headers["Cache-Control"] == "no-cache"
    # the headers every answer of the gateway carries
    assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Referrer-Policy"] == "no-referrer"

    again = await client.get("/policy.json", headers={"If-None-Match": f'W/"{digest}"'})
    assert again.status == 304 and again.headers["ETag"] == f'"{digest}"' and await again.read() == b""
    other = await client.get("/policy.json", headers={"If-None-Match": '"0000"'})
    assert other.status == 200 and await other.read() == file_bytes

    head = await client.head("/policy.json")
    assert head.status == 200 and head.headers["ETag"] == f'"{digest}"'

    bad = await client.get("/policy.json?version=2")
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "version"


async def test_a_policy_other_than_the_file_is_never_served_under_its_name(fleet: Fleet) -> None:
    """A gateway given a policy that was not read from the policy file (by the program embedding it)
    must not publish the file's bytes or hash as the policy in force."""
    policy = copy.deepcopy(load_policy())
    policy["statement"] = "a different statement than the file's"
    c = await _client(fleet, policy)
    try:
        doc = await (await c.get("/transparency.json")).json()
        assert doc["policy_sha256"] is None
        page = await (await c.get("/transparency")).text()
        section = _section(page, "policy-file")
        assert "cannot be served" in section and "href=" not in section
        resp = await c.get("/policy.json")
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "policy_file_changed"
    finally:
        await c.close()


async def test_publisher_and_contact_are_shown_and_said_not_set_otherwise(client: TestClient,
                                                                           city_client: TestClient) -> None:
    """L4: the citizen page did not say who publishes it or whom to ask."""
    doc = await (await city_client.get("/transparency.json")).json()
    assert (doc["publisher"], doc["contact"]) == ("City of Example, Open Data Office", "opendata@example.org")
    page = await (await city_client.get("/transparency")).text()
    line = re.search(r'<p id="publisher">(.*?)</p>', page, re.S)
    assert line and "City of Example, Open Data Office" in line.group(1) and "opendata@example.org" in line.group(1)

    doc = await (await client.get("/transparency.json")).json()
    assert (doc["publisher"], doc["contact"]) == ("not set", None)
    page = await (await client.get("/transparency")).text()
    line = re.search(r'<p id="publisher">(.*?)</p>', page, re.S)
    assert line
    text = re.sub(r"<[^>]+>", "", line.group(1))
    assert re.search(r"Published by: not set \(", text) and re.search(r"Contact: not set \(", text), text


async def test_the_page_says_what_it_does_not_cover(client: TestClient) -> None:
    """M4: docs/privacy.md's caveats (unencrypted radio, backups outside retention, a lost privacy
    ledger, public device ids and locations) were not on the citizen page."""
    doc = await (await client.get("/transparency.json")).json()
    items = doc["not_covered"]
    text = " ".join(items)
    assert "signed, not encrypted" in text and "Bluetooth name" in text and "when each message was sent" in text
    assert "civicedge gateway backup" in text and "schema-v<N>.bak" in text and "retention" in text
    assert "ledger" in text and "per ledger lifetime" in text and "mot and lid" in text
    assert "id, kind, zone and location" in text
    page = await (await client.get("/transparency")).text()
    section = _section(page, "not-covered")
    assert "What this does not cover" in section
    for item in items:
        assert html.escape(item) in section


def test_without_noisy_counts_no_ledger_caveat() -> None:
    """The ledger caveat follows the policy: a policy without noisy counts has no per-day ε to qualify."""
    policy = copy.deepcopy(load_policy())
    for kind in policy["kinds"].values():
        kind["fields"] = {n: f for n, f in kind["fields"].items() if f["release"] != "noisy_count"}
    items = build_transparency(policy)["not_covered"]
    assert not any("ledger" in x for x in items) and any("signed, not encrypted" in x for x in items)
    policy["kinds"] = {"bin": policy["kinds"]["bin"]}
    assert "Each waste bin signs" in build_transparency(policy)["not_covered"][0]


def test_the_provenance_chain_is_described_as_what_a_citizen_can_check() -> None:
    """M2: "chained so that a deletion or change shows" promised what nobody outside can see: the
    chain is checked by operators or auditors with export-log and verify-log; it is not published."""
    page = render_transparency_html(build_transparency(load_policy()))
    kept = _section(page, "kept-without-limit")
    assert "so that a deletion or change shows" not in kept
    assert "export-log" in kept and "verify-log" in kept and "not published" in kept


def _record(**changes: Any) -> ReportRecord:
    rec = ReportRecord(device="bin-01", seq=7, kind="bin", zone="north", type="day", w=NOW - 86400, l=86400,
                       m={"lid": 12}, e={"lid": 500}, a=[], fw="0.2.0", received_at=NOW + 0.123,
                       link="ble:AA:BB:CC:DD:EE:FF", digest="ab" * 32)
    return rec._replace(**changes)


def test_the_mqtt_recipient_line_names_everything_a_message_carries() -> None:
    """M4: the policy said the broker gets "released fields per report, with device id and seq", but
    each message also carries the arrival time to the millisecond and the report's digest (and zone,
    firmware, link, ε, alarm codes). Every payload key must be named; a new key fails this test."""
    _, body = encode_report("civicedge", "gw-1")(_record())
    keys = set(json.loads(body))
    # what each key is called in the recipients line
    named = {"device": "device id", "seq": "(seq)", "zone": "zone", "w": "period", "l": "period",
             "m": "released fields", "e": "ε it spent", "a": "alarm codes", "fw": "firmware version",
             "received_at": "to the millisecond", "link": "link it came by", "digest": "fingerprint"}
    # about the message, not the device or its surroundings: payload version, sender, kind and report type
    about_message = {"v", "gateway", "kind", "type"}
    assert keys == set(named) | about_message, keys ^ (set(named) | about_message)
    (mqtt,) = [r["gets"] for r in load_policy()["recipients"] if "MQTT" in r["who"]]
    missing = {k: words for k, words in named.items() if words not in mqtt}
    assert not missing, (missing, mqtt)


def test_a_level_released_once_per_period_is_not_called_an_aggregate() -> None:
    """L1: the bin's fill was described as "aggregate over the period (no individual events)" though
    what leaves the device is its last reading in each 6-hour period (the CSV's aggregate ``last``)."""
    doc = build_transparency(load_policy())
    fields = {f["field"]: f for k in doc["kinds"] for f in k["fields"]}
    assert "aggregate" not in fields["fill"]["release_text"]
    assert "value at the end of the period" in fields["fill"]["release_text"]
    assert fields["fill"]["leaves_device"].startswith(fields["fill"]["release_text"])
    assert "once every 6 h" in fields["fill"]["leaves_device"]
    # a field summarised over its window keeps the aggregate wording
    assert fields["lux"]["release_text"] == "aggregate over the period (no individual events)"


def test_the_daily_budget_and_the_daily_maximum_have_distinct_names() -> None:
    """L2: /transparency.json gave lid "eps_per_day": "2" next to "eps_per_day_max": "0.5"."""
    doc = build_transparency(load_policy())
    lid = next(f for k in doc["kinds"] for f in k["fields"] if f["field"] == "lid")
    assert (lid["eps_daily_budget"], lid["eps_daily_budget_milli"]) == ("2", 2000)
    assert lid["eps_per_day_max"] == "0.5"
    # the old names stay for one release, deprecated (docs/api.md), with the same values
    assert (lid["eps_per_day"], lid["eps_per_day_milli"]) == ("2", 2000)


def test_the_page_says_the_daily_guarantee_adds_up_over_the_retention() -> None:
    """L3: the per-day ε adds up across days, over the days the counts are kept (the effective retention)."""
    policy = load_policy()
    page = render_transparency_html(build_transparency(policy))
    eps = _section(page, "epsilon")
    assert "adds up across days" in eps and "the 365 days its mot counts are kept" in eps
    assert "up to ε 730 (365 × ε 2)" in eps
    shorter = render_transparency_html(build_transparency(policy, retention={"streetlight": {"mot": 14}}))
    # lid (365 days × ε 0.5) now goes furthest
    assert "up to ε 182.5 (365 × ε 0.5)" in _section(shorter, "epsilon")

