"""The transparency page is generated from the privacy policy: changing the policy changes it."""

from __future__ import annotations

import copy
import html
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from .support import NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.transparency import (
    PolicyFormatError,
    build_transparency,
    format_duration,
    format_milli,
    render_transparency_html,
)

from .support import EXAMPLES


def test_every_policy_field_is_on_the_page_with_its_parameters() -> None:
    policy = load_policy()
    page = render_transparency_html(build_transparency(policy))
    for kind, kspec in policy["kinds"].items():
        assert html.escape(kspec["title"]) in page
        for name, spec in kspec["fields"].items():
            row = re.search(r'<tr data-field="%s">(.*?)</tr>' % re.escape(name), page, re.S)
            assert row, name
            text = row.group(1)
            assert html.escape(spec["label"]) in text
            assert html.escape(spec["purpose"]) in text
            assert f"{spec['retention_days']} days" in text
            if spec["release"] == "noisy_count":
                assert f"ε {format_milli(spec['eps_per_release_milli'])} per release" in text
                # the real per-day maximum: the budget, or fewer releases' worth (the lid's one a day)
                per_day = -(-86400 // spec.get("release_every_s", 86400))
                most = min(spec["eps_per_day_milli"], per_day * spec["eps_per_release_milli"])
                assert f"at most ε {format_milli(most)} per day" in text
                assert f"k = {spec['k']}" in text
            if spec["report"] == "win" and "release_every_s" in spec:
                # released once per its own period (6 h of passes), not per window: the page says so
                every = format_duration(spec["release_every_s"])
                assert f"once every {every}" in text and "per window" not in text, text
        for code, alarm in kspec.get("alarms", {}).items():
            assert html.escape(alarm["label"]) in page and code in page
    for item in policy["not_collected"]:
        assert html.escape(item) in page
    for r in policy["recipients"]:
        assert html.escape(r["who"]) in page and html.escape(r["gets"]) in page
    assert html.escape(policy["statement"]) in page


def test_json_form_has_per_kind_privacy_parameters() -> None:
    doc = build_transparency(load_policy())
    kinds = {k["kind"]: k for k in doc["kinds"]}
    mot = next(f for f in kinds["streetlight"]["fields"] if f["field"] == "mot")
    assert (mot["eps_per_release"], mot["eps_per_day"], mot["k"]) == ("0.5", "2", 5)
    assert mot["personal"] is True and mot["retention_days"] == 365
    assert kinds["bin"]["personal_fields"] == ["lid"]
    lid = next(f for f in kinds["bin"]["fields"] if f["field"] == "lid")
    assert "per day" in lid["leaves_device"]


def test_the_bin_fill_period_and_what_alarms_carry_are_on_the_page() -> None:
    """fill steps up with each deposit, so it leaves only as the level at the end of each 6 h (privacy
    audit): the page says so, and what each alarm carries (the fire alarm its temperature only)."""
    doc = build_transparency(load_policy())
    bin_kind = next(k for k in doc["kinds"] if k["kind"] == "bin")
    fill = next(f for f in bin_kind["fields"] if f["field"] == "fill")
    assert fill["period_s"] == 21600 and fill["release_every_s"] == 21600
    assert "once every 6 h" in fill["leaves_device"]
    assert {a["code"]: a["fields"] for a in bin_kind["alarms"]} == {"fire": ["temp"], "tip": []}
    page = render_transparency_html(doc)
    row = re.search(r'<tr data-field="fill">(.*?)</tr>', page, re.S)
    assert row and "only its value at the end of each 6 h" in row.group(1), row
    # its changes still date a deposit to the 6 h period: the page must not claim they tell nothing
    assert "tell when people used the device only to the 6 h period" in row.group(1), row
    assert "do not tell" not in row.group(1), row
    assert "<code>fire</code>: Fire: temperature above threshold or rising fast (carries temp)" in page
    assert "<code>tip</code>: Bin tipped over (carries no measurement)" in page


def _modified_policy() -> dict[str, Any]:
    policy = copy.deepcopy(load_policy())
    mot = policy["kinds"]["streetlight"]["fields"]["mot"]
    mot["eps_per_release_milli"] = 250
    mot["eps_per_day_milli"] = 1000
    mot["k"] = 8
    mot["retention_days"] = 30
    policy["kinds"]["bin"]["fields"]["fill"]["purpose"] = "plan rounds on <weekdays> & holidays"
    policy["recipients"].append({"who": "university research lab", "gets": "daily zone totals"})
    del policy["kinds"]["bin"]["fields"]["bat"]
    return policy


def test_changing_the_policy_changes_the_page() -> None:
    before = render_transparency_html(build_transparency(load_policy()))
    after = render_transparency_html(build_transparency(_modified_policy()))
    assert before != after
    mot = re.search(r'<tr data-field="mot">(.*?)</tr>', after, re.S).group(1)
    assert "ε 0.25 per release" in mot and "ε 1 per day" in mot and "k = 8" in mot and "30 days" in mot
    assert "at most ε 1 per day" in mot  # 4 releases of 0.25 = 1, the budget
    assert "university research lab" in after and "university research lab" not in before
    assert 'data-field="bat"' in before and 'data-field="bat"' not in after
    # Policy text is escaped, never injected as markup.
    assert "plan rounds on &lt;weekdays&gt; &amp; holidays" in after


async def test_served_page_follows_the_policy_the_app_was_given(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=_modified_policy(),
                     metrics_registry=None, admin_token=None, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        page = await (await c.get("/transparency")).text()
        assert "ε 0.25 per release" in page
        doc = await (await c.get("/transparency.json")).json()
        bin_fields = [f["field"] for k in doc["kinds"] if k["kind"] == "bin" for f in k["fields"]]
        assert "bat" not in bin_fields


def test_policy_missing_what_the_page_must_show_is_a_specific_error() -> None:
    policy = copy.deepcopy(load_policy())
    del policy["kinds"]["streetlight"]["fields"]["mot"]["k"]
    with pytest.raises(PolicyFormatError) as exc:
        build_transparency(policy)
    assert exc.value.param == "kinds.streetlight.fields.mot.k"


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(min_value=-10**9, max_value=10**9))
def test_format_milli_is_exact(milli: int) -> None:
    text = format_milli(milli)
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * 1000 + (int(frac.ljust(3, "0")) if frac else 0)
    assert (-value if text.startswith("-") else value) == milli
    assert not text.endswith("0") or "." not in text


async def test_retention_shortened_by_the_city_shows_on_the_page(client: TestClient) -> None:
    from .support import admin_headers

    resp = await client.put("/api/admin/retention", headers=admin_headers(), json={"kind": "bin", "field": "temp", "days": 14})
    assert resp.status == 200
    page = await (await client.get("/transparency")).text()
    row = re.search(r'<tr data-field="temp">(.*?)</tr>', page, re.S).group(1)
    assert "14 days (policy allows 90)" in row
    doc = await (await client.get("/transparency.json")).json()
    temp = next(f for k in doc["kinds"] if k["kind"] == "bin" for f in k["fields"] if f["field"] == "temp")
    assert (temp["retention_days"], temp["policy_retention_days"]) == (14, 90)


async def test_retention_of_one_day_is_singular(client: TestClient) -> None:
    """QA: 'days: 1' showed "1 days (policy allows 90)"."""
    from .support import admin_headers

    resp = await client.put("/api/admin/retention", headers=admin_headers(), json={"kind": "bin", "field": "temp", "days": 1})
    assert resp.status == 200
    page = await (await client.get("/transparency")).text()
    row = re.search(r'<tr data-field="temp">(.*?)</tr>', page, re.S).group(1)
    assert "1 day (policy allows 90)" in row and "1 days" not in row


def test_retention_longer_than_the_policy_is_never_shown() -> None:
    doc = build_transparency(load_policy(), retention={"bin": {"temp": 9999}})
    temp = next(f for k in doc["kinds"] if k["kind"] == "bin" for f in k["fields"] if f["field"] == "temp")
    assert temp["retention_days"] == 90 and "policy_retention_days" not in temp


def test_the_page_says_what_epsilon_protects_and_the_real_daily_maximum() -> None:
    """Privacy audit F5: ε protects one counted event per release, not a person, and adds up over
    a person's events and over devices; a field released once a day (lid, ε 0.5) shows ε 0.5 per
    day, not its ε 2 budget."""
    policy = copy.deepcopy(load_policy())
    page = render_transparency_html(build_transparency(policy))
    rows = {f: re.search(r'<tr data-field="%s">(.*?)</tr>' % f, page, re.S).group(1) for f in ("mot", "lid")}
    assert "at most ε 0.5 per day" in rows["lid"] and "ε 2 per day" not in rows["lid"], rows["lid"]
    assert "(1 release a day)" in rows["lid"]
    assert "at most ε 2 per day" in rows["mot"] and "(4 releases a day)" in rows["mot"]
    for row in rows.values():
        assert "one counted event" in row and "not a person" in row and "m × ε" in row
    assert "one counted event of the PIR motion sensor" in rows["mot"]
    section = re.search(r'<section id="epsilon">(.*?)</section>', page, re.S)
    assert section, "no section on what ε protects"
    text = section.group(1)
    assert "not a" in text and "person" in text and "20 releases, up to ε 10 at ε 0.5 per release" in text
    assert "refractory" in text
    # the maximum follows the policy: 12-hourly releases of ε 0.5 under a budget of ε 2 -> ε 1
    policy["kinds"]["streetlight"]["fields"]["mot"]["release_every_s"] = 43200
    doc = build_transparency(policy)
    mot = next(f for k in doc["kinds"] for f in k["fields"] if f["field"] == "mot")
    assert (mot["releases_per_day"], mot["eps_per_day_max"], mot["eps_per_day"]) == (2, "1", "2")
    assert "at most ε 1 per day" in render_transparency_html(doc)
    # a page without noisy fields has no ε section
    for kind in policy["kinds"].values():
        kind["fields"] = {n: f for n, f in kind["fields"].items() if f["release"] != "noisy_count"}
    assert 'id="epsilon"' not in render_transparency_html(build_transparency(policy))


async def test_the_public_page_links_only_public_paths_and_carries_its_style(client: TestClient) -> None:
    """QA: behind the reverse proxy docs/api.md suggests, the page lost its stylesheet (/static/style.css)
    and linked the operator's dashboard and /openapi.json, never /opendata. (The same in a real
    browser behind a proxy: test_web_transparency_browser.py.)"""
    import base64
    import hashlib

    from gateway.web.pages import PUBLIC_PATHS

    resp = await client.get("/transparency")
    page = await resp.text()
    refs = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert "opendata" in refs and "transparency.json" in refs
    for ref in refs:
        path = ref if ref.startswith(("/", "data:")) else "/" + ref  # relative to /transparency
        assert path.startswith("data:") or path in PUBLIC_PATHS or path.startswith("/opendata/"), ref
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in resp.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
