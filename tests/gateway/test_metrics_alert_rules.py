"""scripts/prometheus/civicedge-alerts.yml: well formed, every rule labelled and documented, and every
``civicedge_*``/``process_*`` metric and label value its expressions name is one a running gateway's /metrics
exports (a renamed metric would leave an alert that never fires)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.service import Gateway
from gateway.storage.disk_space import CRITICAL_SHARE, MIB

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from support import pty_gateway_config  # noqa: E402 - tests/web/support.py: a gateway config on a pty

pytestmark = pytest.mark.timeout(60)
RULES = Path(__file__).resolve().parents[2] / "scripts" / "prometheus" / "civicedge-alerts.yml"
HTTP_PORT = 19062  # this suite's port range
NO_BROKER_PORT = 19064  # nothing listens: the upstream runs, down, as a gateway with its broker gone
METRIC = re.compile(r"\b((?:civicedge|process)_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(civicedge_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"')
# label values that depend on the gateway's links, not on its code
FREE_LABELS = {"link", "job", "instance"}


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_rule_has_a_severity_and_says_what_to_do() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) and len(names) >= 20, names
    for rule in rules:
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
        assert rule["labels"] == {"severity": "page"} or rule["labels"] == {"severity": "ticket"}, rule  # type: ignore[comparison-overlap]
        notes = rule["annotations"]
        assert isinstance(notes, dict) and {"summary", "description", "runbook"} <= set(notes), rule
        assert "docs/" in notes["runbook"], rule
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", str(rule["for"])), rule


async def _scrape_running_gateway(tmp_path: Path) -> str:
    master, slave = os.openpty()
    config = pty_gateway_config(tmp_path, "gw-alerts", slave, http={"listen": "127.0.0.1", "port": HTTP_PORT},
                                mqtt={"host": "127.0.0.1", "port": NO_BROKER_PORT})
    gw = Gateway(config)
    gw.registry.add("bin-7", kind="bin", zone="harbour", lat="51.9", lon="4.48")
    await gw.start()
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(50):  # the serial link opens in the background
                async with http.get("http://127.0.0.1:%d/metrics" % HTTP_PORT) as r:
                    assert r.status == 200
                    text = await r.text()
                if 'civicedge_link_state{link="serial:' in text:
                    return text
                await asyncio.sleep(0.1)
            return text
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


async def test_every_metric_the_rules_name_is_exported(tmp_path: Path) -> None:
    text = await _scrape_running_gateway(tmp_path)
    exported: dict[str, list[dict[str, str]]] = {}
    for fam in text_string_to_metric_families(text):
        exported.setdefault(fam.name, [])
        for s in fam.samples:
            exported.setdefault(s.name, []).append(s.labels)
    assert exported["civicedge_fleet_view_up"] == [{}]
    used: set[str] = set()
    for rule in _rules():
        expr = str(rule["expr"])
        names = set(METRIC.findall(expr))
        assert names or 'up{job="civicedge"}' in expr, rule["alert"]  # Prometheus' own `up` of the scrape job
        missing = sorted(n for n in names if not exported.get(n))  # a family without samples counts as missing
        assert not missing, "%s names metrics a gateway does not export: %s" % (rule["alert"], missing)
        used |= names
        for name, matchers in SELECTOR.findall(expr):
            for label, op, value in MATCHER.findall(matchers):
                if label in FREE_LABELS:
                    continue
                seen = {labels.get(label) for labels in exported[name]}
                wanted = value.split("|") if op == "=~" else [value]
                unknown = [v for v in wanted if v not in seen]
                assert not unknown, "%s: %s{%s} never takes %s (exported: %s)" % (rule["alert"], name, label,
                                                                                 unknown, sorted(map(str, seen)))
    # the signals the SRE review asked for are all alerted on
    assert {"civicedge_devices", "civicedge_open_alarms", "civicedge_seqs_given_up_total", "civicedge_outbox_bytes",
            "civicedge_outbox_max_bytes", "civicedge_link_disconnects_total", "civicedge_fleet_view_up"} <= used


def test_a_board_stuck_in_seq_reused_is_alerted_on() -> None:
    """A board counting under stored seqs loses every report until it is re-provisioned: one refusal alerts."""
    rules = [r for r in _rules() if 'reason="seq_reused"' in str(r["expr"])]
    assert [r["alert"] for r in rules] == ["CivicedgeSeqReused"]
    assert rules[0]["labels"] == {"severity": "ticket"}
    assert "docs/field.md" in rules[0]["annotations"]["runbook"]  # type: ignore[index]


def test_a_clock_stepped_ahead_while_running_is_alerted_on() -> None:
    """A forward step while running withholds ACK time without skipping retention (its data check agrees
    with reports stamped by the jumped clock): the withheld counter alerts on its own."""
    rules = [r for r in _rules() if "civicedge_ack_time_withheld_total" in str(r["expr"])]
    assert [r["alert"] for r in rules] == ["CivicedgeAckTimeWithheld"]
    assert rules[0]["labels"] == {"severity": "ticket"}
    assert "retention --confirm" in rules[0]["annotations"]["description"]  # type: ignore[index]


def _inhibit_examples() -> list[object]:
    """The Alertmanager inhibit_rules example as the rules file's comment and docs/gateway.md give it."""
    text = RULES.read_text(encoding="utf-8")
    start = text.index("#   inhibit_rules:")
    lines = []
    for line in text[start:].splitlines():
        if not line.strip().startswith("#   "):
            break
        lines.append(line.strip()[4:])
    docs = (RULES.parents[2] / "docs" / "gateway.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(inhibit_rules:\n.*?)```", docs, re.S)
    assert block is not None, "docs/gateway.md, Alert rules: no inhibit_rules example"
    return [yaml.safe_load("\n".join(lines)), yaml.safe_load(block.group(1))]


def test_the_inhibit_example_names_real_alerts_and_labels_both_carry() -> None:
    """One outage of every link would page twice (CivicedgeAllLinksDown, then CivicedgeLinkDown per link):
    the documented inhibition must name rules that exist and labels both alerts have."""
    rules = {str(r["alert"]): r for r in _rules()}
    comment, docs = _inhibit_examples()
    assert comment == docs  # the rules file and the docs give the same example
    [inhibit] = comment["inhibit_rules"]  # type: ignore[index]
    names = {}
    for side in ("source_matchers", "target_matchers"):
        [matcher] = inhibit[side]
        label, op, value = MATCHER.fullmatch(matcher).groups()  # type: ignore[union-attr]
        assert (label, op) == ("alertname", "="), matcher
        assert value in rules, "%s names no rule: %s" % (side, value)
        names[side] = value
    assert names == {"source_matchers": "CivicedgeAllLinksDown", "target_matchers": "CivicedgeLinkDown"}
    # The source keeps only the labels it aggregates by; `equal` must be among them (else it never matches).
    by = re.search(r"by \(([^)]*)\)", str(rules["CivicedgeAllLinksDown"]["expr"]))
    assert by is not None and set(inhibit["equal"]) <= {s.strip() for s in by.group(1).split(",")}
    assert "by (" not in str(rules["CivicedgeLinkDown"]["expr"])  # the target keeps every label


def test_the_disk_rules_compare_with_the_gateways_own_min_free_mb() -> None:
    """QA drill: no metric exported ``[storage] min_free_mb``, so the rules repeated the default's numbers
    (256 MiB, 32 MiB) and a gateway set otherwise paged or stayed silent against its own /healthz."""
    rules = {str(r["alert"]): str(r["expr"]).strip() for r in _rules()}
    assert rules["CivicedgeDiskLow"] == "civicedge_store_disk_free_bytes < civicedge_store_disk_min_free_bytes"
    assert rules["CivicedgeDiskCritical"] == (
        "civicedge_store_disk_free_bytes < civicedge_store_disk_min_free_bytes / %d" % CRITICAL_SHARE)
    for name in ("CivicedgeDiskLow", "CivicedgeDiskCritical"):
        assert not re.search(r"\d{2,}", rules[name]), rules[name]  # no threshold of its own


@pytest.mark.parametrize("min_free_mb", [0, 64])
def test_min_free_mb_is_exported_in_bytes(tmp_path: Path, min_free_mb: int) -> None:
    from gateway.metrics import GatewayMetrics

    (tmp_path / "reports.sqlite").write_bytes(b"x" * 4096)
    metrics = GatewayMetrics("gw")
    metrics.watch_store(tmp_path / "reports.sqlite", min_free_mb)
    assert metrics.value("civicedge_store_disk_min_free_bytes") == min_free_mb * MIB
