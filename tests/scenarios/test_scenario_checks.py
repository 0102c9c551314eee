"""Expectation checks against stored data: each one can fail, and says why."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from gateway.resources import load_policy
from hil.scenarios import load_scenario
from hil.scenarios.checks import (StoredData, check_alarm, check_eps, check_field, check_no_loss, check_reports_min,
                                  evaluate)
from hil.scenarios.reports import render_html, stimulus_series, write_junit
from hil.scenarios.runner import ScenarioResult

NIGHT = load_scenario("night-with-pedestrians")   # starts 2026-11-21T23:20Z
W0 = NIGHT.start_ms // 1000
DAY2 = W0 + 3600  # 00:20 next UTC day


def test_eps_within_budget_passes_and_over_budget_fails() -> None:
    policy = load_policy()
    ok = StoredData([("sl-night-1", 1, "win", W0, {"mot": 500}), ("sl-night-1", 2, "win", DAY2, {"mot": 500})], [], [])
    assert check_eps(NIGHT, ok, policy).passed
    # Five releases of 500 milli-eps on one UTC day: a budget reset by a reboot would look like this.
    over = StoredData([("sl-night-1", s, "win", DAY2 + s * 60, {"mot": 500}) for s in range(5)], [], [])
    result = check_eps(NIGHT, over, policy)
    assert not result.passed
    assert "sl-night-1 mot 2026-11-22: 2500 milli-eps > budget 2000" in result.message
    assert not check_eps(NIGHT, StoredData([], [], []), policy).passed  # nothing released: cannot hold


def test_no_loss_reports_missing_extra_and_duplicates() -> None:
    data = StoredData([("sl-night-1", 1, "win", W0, {}), ("sl-night-1", 1, "win", W0, {}),
                       ("sl-night-1", 9, "win", W0, {})], [], [])
    result = check_no_loss(NIGHT, data, {"sl-night-1": {1, 2}})
    assert not result.passed
    assert "missing 1: sl-night-1#2" in result.message
    assert "never seen in an outbox 1: sl-night-1#9" in result.message
    assert "1 duplicate" in result.message
    good = StoredData([("sl-night-1", 1, "win", W0, {}), ("sl-night-1", 2, "win", W0, {})], [], [])
    assert check_no_loss(NIGHT, good, {"sl-night-1": {1, 2}}).passed
    assert not check_no_loss(NIGHT, StoredData([], [], []), {"sl-night-1": set()}).passed


def test_reports_min_does_not_count_boot_reports() -> None:
    """A boot report (a board asking for the time) carries no measurements: it is no report a
    scenario can expect (night-with-pedestrians wants at least 6)."""
    wins = [("sl-night-1", s, "win", W0 + 900 * s, {}) for s in range(1, 6)]
    boots = [("sl-night-1", 10 + s, "boot", W0, {}) for s in range(3)]
    res = check_reports_min(NIGHT, StoredData(wins + boots, [], []))
    assert not res.passed and "5 reports stored" in res.message and "3 boot report(s) not counted" in res.message
    assert check_reports_min(NIGHT, StoredData(wins + wins[:1] + boots, [], [])).passed


def test_field_and_alarm_timing() -> None:
    sc = load_scenario("bin-fills-and-fire")  # fill >= 80 by +50m; fire within +30m
    t0 = sc.start_ms // 1000
    late = StoredData([], [("bin-fill-1", "fill", t0 + 3600, 900, 90), ("bin-fill-1", "fill", t0, 900, 40)],
                      [("bin-fire-2", "fire", t0 + 3600)])
    fill = check_field(sc, late, 0)
    assert not fill.passed and "fill never >= 80 by +50m" in fill.message and "held later" in fill.message
    fire = check_alarm(sc, late, "fire")
    assert not fire.passed and "came too late" in fire.message
    in_time = StoredData([], [("bin-fill-1", "fill", t0 + 900, 900, 80)], [("bin-fire-2", "fire", t0 + 1200)])
    assert check_field(sc, in_time, 0).passed and check_alarm(sc, in_time, "fire").passed
    none = check_alarm(sc, StoredData([], [], [("bin-fill-1", "tip", t0)]), "fire")
    assert not none.passed and "alarms stored: tip" in none.message


def test_reports_from_a_failed_result(tmp_path: Path) -> None:
    data = StoredData([("sl-night-1", 1, "win", W0, {"mot": 500})], [("sl-night-1", "lux", W0, 900, 30)], [])
    checks = evaluate(NIGHT, data, {"sl-night-1": {1, 2}, "sl-night-2": set()}, load_policy())
    result = ScenarioResult(NIGHT, checks, data, {"sl-night-1": {1, 2}}, tmp_path, 1.0, NIGHT.start_ms + 60_000, 0)
    assert not result.passed
    root = ET.parse(write_junit(result, tmp_path / "r.xml")).getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == NIGHT.expect.count() == len(checks)
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert failures and any("missing 1: sl-night-1#2" in (f.get("message") or "") for f in failures)
    page = render_html(result)
    assert page.count("<svg") == 2 and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    storm = load_scenario("reboot-storm")
    stim, faults = stimulus_series(storm.boards[0].stimuli_doc, storm.start_ms, storm.start_ms + 40 * 60_000)
    assert any(s.name == "pir pulses" and s.pulses and len(s.points) >= 30 for s in stim)
    assert len(faults) == 7 and sum(line == "reset" for _, line in faults) == 5


def test_releases_acknowledged_and_not_stored_count_for_no_loss_and_eps() -> None:
    """A re-release of a period already released (a board whose clock was set back) is acknowledged
    and not stored: no_loss counts its seq as accounted for, and its ε spend counts toward the day's
    budget (firmware re-spending ε after a rollback must still fail the check)."""
    policy = load_policy()
    stored = [("sl-night-1", s, "win", DAY2 + s * 60, {"mot": 500}) for s in range(1, 4)]
    again = [("sl-night-1", 4, "win", DAY2 + 60, {"mot": 500}), ("sl-night-1", 5, "win", DAY2 + 120, {"mot": 500})]
    data = StoredData(stored, [], [], not_stored=again)
    loss = check_no_loss(NIGHT, data, {"sl-night-1": {1, 2, 3, 4, 5}})
    assert loss.passed, loss.message
    assert loss.message.startswith("5 reports generated by the firmware, 3 stored, 2 acknowledged and not stored")
    assert not check_no_loss(NIGHT, StoredData(stored, [], []), {"sl-night-1": {1, 2, 3, 4, 5}}).passed
    eps = check_eps(NIGHT, data, policy)
    assert not eps.passed and "sl-night-1 mot 2026-11-22: 2500 milli-eps > budget 2000" in eps.message
    assert check_eps(NIGHT, StoredData(stored, [], [], not_stored=again[:1]), policy).passed
    # the run's end cuts them as it cuts stored reports
    assert [s for _, s, *_ in data.up_to({"sl-night-1": 4}).not_stored] == [4]


def test_read_store_reads_the_releases_not_stored(tmp_path: Path) -> None:
    from gateway.storage import ReportRecord, ReportStore
    from hil.scenarios.checks import read_store

    def rec(seq: int, m: dict[str, int], e: dict[str, int]) -> ReportRecord:
        return ReportRecord(device="sl-night-1", seq=seq, kind="streetlight", zone="z", type="win", w=DAY2, l=900,
                            m=m, e=e, a=[], fw="1", received_at=DAY2 + 5.0, link="serial:x", digest="%064x" % seq)

    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    store.insert_batch([rec(1, {"lux": 3}, {}), rec(2, {"mot": 4}, {"mot": 500}), rec(3, {"lux": 5}, {}),
                        rec(4, {"mot": 6}, {"mot": 500})])
    store.close()
    data = read_store(tmp_path / "r.sqlite")
    assert [s for _, s, *_ in data.reports] == [1, 2, 3]  # the aggregate again is stored, the release not
    assert data.not_stored == [("sl-night-1", 4, "win", DAY2, {"mot": 500})]


def test_read_store_keeps_the_reports_when_the_not_stored_table_is_of_another_shape(tmp_path: Path) -> None:
    """A window_duplicates table without the spend column (a v3 development build) made read_store return
    nothing at all, and no_loss then called every report missing."""
    import sqlite3

    from gateway.storage import ReportRecord, ReportStore
    from hil.scenarios.checks import read_store

    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    store.insert_batch([ReportRecord(device="sl-night-1", seq=1, kind="streetlight", zone="z", type="win", w=DAY2,
                                     l=900, m={"lux": 3}, e={}, a=[], fw="1", received_at=DAY2 + 5.0, link="serial:x",
                                     digest="%064x" % 1)])
    store.close()
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    conn.execute("DROP TABLE window_duplicates")
    conn.execute("CREATE TABLE window_duplicates (device TEXT, seq INTEGER, type TEXT, w INTEGER)")
    conn.commit()
    conn.close()
    data = read_store(tmp_path / "r.sqlite")
    assert [s for _, s, *_ in data.reports] == [1] and data.not_stored == []


def test_the_store_of_a_work_dir_with_hash_or_question_mark_is_read(tmp_path: Path) -> None:
    """read_store (the checks) and the run's progress line open the store by a file: URI; a hand-built
    ``file:PATH?mode=ro`` ended the file name at a '#' or '?' of the work dir's path, so the checks
    failed on a store that exists and the progress line counted no reports."""
    from gateway.storage import ReportRecord, ReportStore
    from hil.scenarios.checks import read_store
    from hil.scenarios.runner import ScenarioRun

    run = ScenarioRun(NIGHT, tmp_path / "night#2?fast")
    run.db.parent.mkdir(parents=True, exist_ok=True)
    store = ReportStore(run.db, gateway_id="gw")
    store.insert_batch([ReportRecord(device="sl-night-1", seq=1, kind="streetlight", zone="z", type="win", w=DAY2,
                                     l=900, m={"lux": 3}, e={}, a=[], fw="1", received_at=DAY2 + 5.0, link="serial:x",
                                     digest="%064x" % 1)])
    store.close()
    data = read_store(run.db)
    assert [(d, s) for d, s, *_ in data.reports] == [("sl-night-1", 1)] and data.readings[0][:2] == ("sl-night-1", "lux")
    progress = run._progress(NIGHT.start_ms, "running")
    assert (progress.reports, progress.alarms) == (1, 0)
