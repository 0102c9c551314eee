"""A report failing alone with a store bug (a poison record, isolated by splitting its batch) while the other
reports are stored is the warning ``reports_failing`` in the gateway's health, with its own counter.

Was: IngestService.reports_problem was on no health check, and every failure of such a report counted in
``civicedge_store_commit_failures_total``, whose alert CivicedgeCommitsFailing pages on any increase: one
poison report, re-sent every few seconds, paged every 10 min while everything else was stored.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import KEYS, make_env
from helpers import report_frame

from gateway.config import load_config
from gateway.health import WARNING, overall
from gateway.pipeline import Link
from gateway.protocol import parse_frame
from gateway.service import Gateway
from gateway.storage import ReportRecord
from gateway.storage import store as store_module

POISON = ("bin-2", 3)


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < end, what
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_a_poison_report_is_a_reports_failing_warning_not_a_failing_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if (rec.device, rec.seq) == POISON:
            raise KeyError("a bug")  # a deterministic bug this one record sets off
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)
    master, slave = os.openpty()
    port = os.ttyname(slave)
    gw = Gateway(load_config(make_env(tmp_path, serial=(port,))))
    await gw.start()
    acked: dict[str, int] = {}

    async def ack(frame: bytes) -> None:
        parsed = parse_frame(frame)
        acked[parsed.device_id] = max(acked.get(parsed.device_id, 0), parsed.seq)

    link = Link(name="serial:test", kind="serial", send=ack)
    try:
        await _until(lambda: gw.metrics.value("civicedge_link_state", {"link": "serial:" + port}) == 1, "link up")
        assert gw.health() == []
        for seq in (1, 2, 3, 4):
            gw.ingest.feed(report_frame("bin-2", seq, KEYS["bin-2"]), link)
        for seq in (1, 2):
            gw.ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), link)
        await _until(lambda: acked.get("bin-1") == 2 and acked.get("bin-2") == 2, "the others acknowledged")
        await _until(lambda: gw.metrics.value("civicedge_store_report_failures_total") >= 1, "failure counted")

        problems = gw.health()
        assert [(p.code, p.severity) for p in problems] == [("reports_failing", WARNING)], problems
        assert "bin-2 seq 3 (KeyError, failed 1 time(s)" in problems[0], problems[0]
        assert overall(problems) == WARNING
        assert gw.metrics.value("civicedge_store_report_failures_total") == 1
        assert gw.metrics.value("civicedge_store_commit_failures_total") == 0  # CivicedgeCommitsFailing pages on it

        # The device re-sends it (alone in its batch): counted again, still a warning, never a failing commit.
        for n in (2, 3):
            gw.ingest.feed(report_frame(*POISON, KEYS["bin-2"]), link)
            await _until(lambda: gw.metrics.value("civicedge_store_report_failures_total") == n, "re-send counted")
            assert [p.code for p in gw.health()] == ["reports_failing"]
        assert gw.metrics.value("civicedge_store_commit_failures_total") == 0
        assert acked["bin-2"] == 2  # the ACK never passes it

        # A damaged store says why things fail: reports_failing is not listed beside it (as commits_failing).
        gw.store.mark_damaged("PRAGMA quick_check found: On tree page 3 cell 0: invalid page number")
        assert [p.code for p in gw.health()] == ["store_damaged"]
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)
