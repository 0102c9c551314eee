"""The per-day epsilon ledger and noisy release across reboots, power loss and clock rollback.

Each ``flash_run`` is one boot of the device on the same (host-persisted) flash.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable

DAY = 86400
D = 20400 * DAY  # some UTC midnight in 2025

SETUP = (
    "from civic.privacy.ledger import Ledger, BudgetError\n"
    "L = Ledger('/flash/ledger.json', {'mot': 2000, 'lid': 1000})\n"
)


def _spend(flash_run: Callable[..., Any], flash: Path, calls: list[tuple[str, int, int]]) -> list[str]:
    code = SETUP + "".join(f"print(L.spend({f!r}, {m}, {t}))\n" for f, m, t in calls)
    return flash_run(code, flash).stdout.split()


def test_daily_budget_refused_across_reboots(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    noon = D + 12 * 3600
    assert _spend(flash_run, flash, [("mot", 500, noon)] * 3) == ["True"] * 3
    # reboot: the fourth release still fits, the fifth does not; the other field is separate
    assert _spend(flash_run, flash, [("mot", 500, noon + 60), ("mot", 500, noon + 120), ("lid", 1000, noon)]) == [
        "True", "False", "True"]
    # many reboots later on the same day: still refused
    for _ in range(2):
        assert _spend(flash_run, flash, [("mot", 1, D + DAY - 1), ("lid", 1, noon)]) == ["False", "False"]
    # next UTC day: fresh budget
    assert _spend(flash_run, flash, [("mot", 2000, D + DAY), ("mot", 1, D + DAY + 5)]) == ["True", "False"]


def test_clock_rollback_never_grants_a_fresh_budget(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    assert _spend(flash_run, flash, [("mot", 2000, D + 5 * DAY)]) == ["True"]
    # RTC goes back one day, then to the epoch (unset RTC after power loss): refused
    assert _spend(flash_run, flash, [("mot", 500, D + 4 * DAY), ("mot", 500, D), ("mot", 500, 0)]) == ["False"] * 3
    # reboot while the clock is still wrong: still refused, also for the latest seen day itself
    assert _spend(flash_run, flash, [("mot", 500, D + 3 * DAY), ("mot", 500, D + 5 * DAY + 100)]) == ["False", "False"]
    # time passes the latest seen day: budget again
    assert _spend(flash_run, flash, [("mot", 500, D + 6 * DAY)]) == ["True"]
    code = SETUP + f"print(L.latest_day, L.remaining('mot', {D + 6 * DAY}), L.remaining('mot', {D}), L.refused)\n"
    assert flash_run(code, flash).stdout.split() == [str(D // DAY + 6), "1500", "0", "0"]


def test_power_loss_mid_write_keeps_the_old_ledger(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    assert _spend(flash_run, flash, [("mot", 1500, D)]) == ["True"]
    # power lost while the next grant's temp file was half written: the rename never happened
    code = SETUP + (
        "import os\nf = open('/flash/ledger.json.tmp', 'wb'); f.write(b'\\x00\\x01{\"day\": 0, \"sp'); f.close()\n"
        "raise OSError(5)  # power loss\n"
    )
    assert flash_run(code, flash, expect_error=True).error is not None
    assert (flash / "ledger.json.tmp").exists()
    assert _spend(flash_run, flash, [("mot", 1000, D), ("mot", 500, D)]) == ["False", "True"]


def test_damaged_ledger_fails_closed(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    assert _spend(flash_run, flash, [("mot", 500, D)]) == ["True"]
    data = bytearray((flash / "ledger.json").read_bytes())
    data[-3] ^= 0x55
    (flash / "ledger.json").write_bytes(bytes(data))
    # the current day counts as spent; the next day is fresh
    assert _spend(flash_run, flash, [("mot", 1, D), ("lid", 1, D), ("mot", 1, D + DAY)]) == ["False", "False", "True"]


def test_a_ledger_with_wrong_typed_values_fails_closed(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """A well-formed file (good checksum) whose ``spent`` or ``last`` values are not ints >= 0 is
    treated as damaged: the day counts as spent, nothing raises (review: ``{"mot": null}`` in
    ``last`` raised TypeError out of ``spend``, killing the app task at each release)."""
    docs = [{"spent": {}, "last": {"mot": None}}, {"spent": {}, "last": {"mot": "x"}},
            {"spent": {}, "last": {"mot": 1e20}}, {"spent": {}, "last": {"mot": True}},
            {"spent": {"mot": None}}, {"spent": {"mot": "500"}}, {"spent": {"mot": -5000}},
            {"spent": {"mot": 2.5}}, {"spent": {}, "last": 5}, {"spent": {}, "last": None},
            {"spent": {"mot": 500}}, {"spent": {"mot": 500}, "last": {"mot": D}}]
    code = (
        "import json\nfrom civic.store import atomic\nfrom civic.privacy.ledger import Ledger\n"
        f"for doc in {docs!r}:\n"
        f"    doc['day'] = {D // DAY}\n"
        "    atomic.write('/flash/l.json', json.dumps(doc).encode())\n"
        "    atomic.remove('/flash/l.json.hw')  # each doc on a device of its own\n"
        "    L = Ledger('/flash/l.json', {'mot': 2000})\n"
        f"    print(L.spend('mot', 500, {D} + 100, {D}, {D} + 21600), L.remaining('mot', {D} + 100),"
        f" L.spend('mot', 500, {D} + {DAY}, {D} + {DAY}, {D} + {DAY} + 21600))\n"
    )
    got = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert got[:10] == ["False 0 True"] * 10                   # fail closed today; the next day is fresh
    assert got[10:] == ["True 1000 True"] * 2                  # well-typed files (old format without last) load


def test_ledger_rejects_bad_requests(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    code = SETUP + (
        "for args in (('wifi', 1, 0), ('mot', 0, 0), ('mot', -5, 0)):\n"
        "    try:\n        L.spend(*args)\n        print('GRANTED')\n"
        "    except BudgetError as e:\n        print(e.field)\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.split() == ["wifi", "mot", "mot"]


RELEASER = (
    "import json\nfrom civic import policy\nfrom civic.privacy.ledger import Ledger\n"
    "from civic.privacy.release import Releaser, ReleaseError\n"
    "P = policy.parse(open('/flash/policy.json').read(), 'streetlight')\n"
    "R = Releaser(P.fields, Ledger('/flash/ledger.json', P.day_budgets()))\n"
)


def test_releaser_charges_ledger_and_stops_at_budget(flash_run: Callable[..., Any], tmp_path: Path,
                                                     repo_root: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "policy.json").write_bytes((repo_root / "firmware" / "policy.json").read_bytes())
    code = RELEASER + f"for i in range(3):\n    print(R.release('mot', 40, {D} + i * 21600))\n"
    out = flash_run(code, flash, seed=5).stdout.splitlines()
    assert len(out) == 3 and all(line.endswith(", 500)") for line in out)
    # reboot: one more release fits in the day's 2000 milli-eps, then nothing
    code = RELEASER + f"for i in range(3):\n    print(R.release('mot', 40, {D} + 70000 + i))\n"
    out = flash_run(code, flash, seed=6).stdout.splitlines()
    assert out[0].endswith(", 500)") and out[1:] == ["(None, 0)", "(None, 0)"]
    code = RELEASER + (
        "for f in ('lux', 'wifi'):\n    try:\n        R.release(f, 1, 0)\n"
        "    except ReleaseError as e:\n        print('refused', e.field)\n"
    )
    assert flash_run(code, flash).stdout.splitlines() == ["refused lux", "refused wifi"]


def test_releaser_waits_for_a_true_rng(flash_run: Callable[..., Any], tmp_path: Path, repo_root: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "policy.json").write_bytes((repo_root / "firmware" / "policy.json").read_bytes())
    code = RELEASER + (
        "from civic.privacy.release import RngNotReady\nradio = [False]\nR.rng_ready = lambda: radio[0]\n"
        f"try:\n    R.release('mot', 10, {D})\nexcept RngNotReady as e:\n    print('deferred', e.field)\n"
        f"print(R.ledger.remaining('mot', {D}))\nradio[0] = True\nprint(R.release('mot', 10, {D})[1], R.ledger.remaining('mot', {D}))\n"
    )
    assert flash_run(code, flash).stdout.splitlines() == ["deferred mot", "2000", "500 1500"]


def _model(ops: list[tuple[str, int, int]], budget: int) -> list[str]:
    """Reference model of the ledger rules (CPython)."""
    latest, spent, out = -1, 0, []
    for op, day, amount in ops:
        if op == "reboot":
            continue
        if day < latest:
            out.append("False")
            continue
        if day > latest:
            latest, spent = day, 0
        if spent + amount > budget:
            out.append("False")
        else:
            spent += amount
            out.append("True")
    return out


def test_ledger_matches_reference_model(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """Random clocks (forward, back, same day), spends and reboots against a CPython model."""
    rng = random.Random(7)  # host-side test data only; the device never uses `random`
    ops: list[tuple[str, int, int]] = []
    day = 20000
    for _ in range(3000 if os.environ.get("CIVICEDGE_FULL") == "1" else 300):
        r = rng.random()
        if r < 0.1:
            ops.append(("reboot", 0, 0))
            continue
        if r < 0.3:
            day += rng.choice([1, 1, 2, -1, -3, 0])
        ops.append(("spend", day, rng.choice([100, 300, 500, 700])))
    code = (
        "from civic.privacy.ledger import Ledger\nL = Ledger('/flash/l.json', {'mot': 1000})\nout = []\n"
        f"for op, day, amount in {ops!r}:\n"
        "    if op == 'reboot':\n        L = Ledger('/flash/l.json', {'mot': 1000})\n"
        "    else:\n        out.append(str(L.spend('mot', amount, day * 86400 + 4000)))\n"
        "print(' '.join(out))\n"
    )
    got = flash_run(code, tmp_path / "flash").stdout.split()
    assert got == _model(ops, 1000)
    assert "True" in got and "False" in got


def test_a_period_is_released_once_across_reboots_and_clock_changes(flash_run: Callable[..., Any],
                                                                    tmp_path: Path) -> None:
    """The ledger keeps the end of the last period released per field, written with the grant:
    the same period again (a reset before the app saved its state, a clock set back) is refused."""
    code = (
        "from civic.privacy.ledger import Ledger\nL = Ledger('/flash/l.json', {'lid': 2000, 'mot': 2000})\n"
        f"print(L.spend('lid', 500, {D} + 100, {D} - 86400, {D}))\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.split() == ["True"]
    code = (
        "from civic.privacy.ledger import Ledger\nL = Ledger('/flash/l.json', {'lid': 2000, 'mot': 2000})\n"
        f"print(L.spend('lid', 500, {D} + 200, {D} - 86400, {D}))\n"          # same period after a reboot
        f"print(L.spend('lid', 500, {D} + 86400, {D} - 86400, {D}))\n"        # ... on a later day
        f"print(L.spend('mot', 500, {D} + 300, {D} - 21600, {D}))\n"          # other fields are separate
        f"print(L.spend('lid', 500, {D} + 86400 + 5, {D}, {D} + 86400))\n"    # the next period
        "print(L.refused, L.remaining('lid', " + str(D) + " + 86400))\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == ["False", "False", "True", "True", "2 1500"]


def test_an_unreadable_ledger_fails_closed(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """A ledger file that exists but cannot be read (a flash read error, EIO) is damage, not absence:
    the day counts as spent (privacy audit F2: it started afresh with a full budget)."""
    flash = tmp_path / "flash"
    assert _spend(flash_run, flash, [("mot", 500, D + 3600 * i) for i in range(4)]) == ["True"] * 4
    code = (
        "import builtins, errno\n_open = open\n"
        "def failing(p, mode='r', *a, _o=_open):\n"
        "    if p == '/flash/ledger.json' and 'r' in mode:\n        raise OSError(errno.EIO)\n"
        "    return _o(p, mode, *a)\n"
        "builtins.open = failing\n" + SETUP
        + f"print(L.remaining('mot', {D}), L.spend('mot', 500, {D} + 50000), L.spend('mot', 500, {D + DAY}))\n"
        "builtins.open = _open\n"
    )
    assert flash_run(code, flash).stdout.split() == ["0", "False", "True"]


H6 = 6 * 3600


def _spend_periods(flash_run: Callable[..., Any], flash: Path, calls: list[tuple[int, int]]) -> list[str]:
    code = SETUP + "".join(f"print(L.spend('mot', 500, {t}, {s}, {s + H6}))\n" for t, s in calls)
    return flash_run(code, flash).stdout.split()


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55
    path.write_bytes(bytes(data))


def test_damaged_ledger_and_a_clock_behind_reopen_nothing(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """Privacy audit F3, scenario A: the ledger is damaged and the clock is behind (an earlier day
    than the latest granted). The high-water file (day and period ends, written before the ledger)
    survives: every day up to the latest of it and today stays closed, and the periods released
    are still refused when the clock is right again. Before, the fail-closed rule landed on the
    wrong (earlier) day and the latest day and its periods were open again."""
    flash = tmp_path / "flash"
    day5 = D + 5 * DAY
    assert _spend_periods(flash_run, flash, [(day5 + (i + 1) * H6 - 60, day5 + i * H6) for i in range(4)]) == ["True"] * 4
    _damage(flash / "ledger.json")
    assert _spend_periods(flash_run, flash, [(D + 2 * DAY + 100, D + 2 * DAY)]) == ["False"]
    assert _spend_periods(flash_run, flash, [(D + 3 * DAY + 100, D + 3 * DAY)]) == ["False"]
    assert _spend_periods(flash_run, flash, [(day5 + 4 * H6 - 20, day5 + i * H6) for i in range(4)]) == ["False"] * 4
    # the day after: a fresh budget, and the periods released on day 5 are still refused
    day6 = day5 + DAY
    assert _spend_periods(flash_run, flash, [(day6 + 10, day5 + 3 * H6), (day6 + H6, day6)]) == ["False", "True"]


def test_damage_found_on_a_later_day_closes_that_day(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """The fail-closed day is the later of the high-water day and today."""
    flash = tmp_path / "flash"
    assert _spend(flash_run, flash, [("mot", 500, D)]) == ["True"]
    _damage(flash / "ledger.json")
    assert _spend(flash_run, flash, [("mot", 1, D + 3 * DAY), ("mot", 1, D), ("mot", 1, D + 4 * DAY)]) == [
        "False", "False", "True"]


def test_a_deleted_ledger_fails_closed_while_the_high_water_file_is_there(flash_run: Callable[..., Any],
                                                                           tmp_path: Path) -> None:
    """Scenario B: the ledger file deleted (console access) with the high-water file left: the day
    and its periods stay closed. Both deleted: only the residual today-is-fresh (a fresh device)."""
    flash = tmp_path / "flash"
    assert _spend_periods(flash_run, flash, [(D + (i + 1) * H6 - 60, D + i * H6) for i in range(4)]) == ["True"] * 4
    (flash / "ledger.json").unlink()
    assert _spend_periods(flash_run, flash, [(D + 4 * H6 - 30, D + i * H6) for i in range(4)]) == ["False"] * 4
    assert _spend_periods(flash_run, flash, [(D + DAY + 10, D + 3 * H6), (D + DAY + H6, D + DAY)]) == ["False", "True"]
    (flash / "ledger.json").unlink()
    (flash / "ledger.json.hw").unlink()
    assert _spend_periods(flash_run, flash, [(D + DAY + H6 + 10, D + DAY)]) == ["True"]


def test_a_damaged_high_water_file_alone_changes_nothing(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """A damaged high-water file beside a readable ledger: the ledger decides; the next grant rewrites
    the high-water file. A power loss after the high-water write and before the ledger's: the later
    values win, so the cut grant counts as spent (nothing was released; at most its epsilon is lost)."""
    flash = tmp_path / "flash"
    assert _spend(flash_run, flash, [("mot", 500, D)]) == ["True"]
    _damage(flash / "ledger.json.hw")
    assert _spend(flash_run, flash, [("mot", 500, D + 10)]) == ["True"]
    _damage(flash / "ledger.json")  # the rewritten high-water file still knows day D
    assert _spend(flash_run, flash, [("mot", 1, D + 20), ("mot", 1, D + DAY)]) == ["False", "True"]
    # power lost between the two writes of a grant on a later day: the ledger (day D+1) decides
    code = SETUP + (
        "from civic.store import atomic\n"
        "def cut(path, payload, _w=atomic.write):\n"
        "    _w(path, payload)\n"
        "    if path.endswith('.hw'):\n        raise OSError(5)  # power loss\n"
        "atomic.write = cut\n"
        f"L.spend('mot', 500, {D + 2 * DAY})\n"
    )
    assert flash_run(code, flash, expect_error=True).error is not None
    assert _spend(flash_run, flash, [("mot", 2000, D + 2 * DAY), ("mot", 1500, D + 2 * DAY + 1),
                                     ("mot", 1, D + 2 * DAY + 2)]) == ["False", "True", "False"]


def _copy(flash: Path, src: str, dst: str) -> None:
    (flash / dst).write_bytes((flash / src).read_bytes())


def test_an_older_ledger_copied_back_beside_a_newer_high_water_file_reopens_nothing(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """Privacy audit LOW-2: an older valid /ledger.json copied back while the newer high-water file
    survived decided alone, so periods released since could be released again (fresh noise: a
    listener averages them). The later of the two files' values now win: day, spend, period ends."""
    flash = tmp_path / "flash"
    assert _spend_periods(flash_run, flash, [(D + H6, D)]) == ["True"]          # 00-06 h, at 06 h
    _copy(flash, "ledger.json", "old.json")
    assert _spend_periods(flash_run, flash, [(D + 2 * H6, D + H6)]) == ["True"]  # 06-12 h, at 12 h
    _copy(flash, "old.json", "ledger.json")                                      # the older ledger back
    # the 06-12 h period again (the audit's probe: it was granted), and the 00-06 h one
    assert _spend_periods(flash_run, flash, [(D + 2 * H6 + 30, D + H6), (D + 2 * H6 + 40, D)]) == ["False", "False"]
    # the day's spend is the newer file's too: 1000 of 2000 spent, so two more releases fit, not three
    assert _spend_periods(flash_run, flash, [(D + 3 * H6, D + 2 * H6), (D + 4 * H6 - 10, D + 3 * H6)]) == [
        "True", "True"]
    _copy(flash, "old.json", "ledger.json")
    code = SETUP + f"print(L.remaining('mot', {D + 4 * H6 - 5}), L.spend('mot', 1, {D + 4 * H6 - 5}))\n"
    assert flash_run(code, flash).stdout.split() == ["0", "False"]
    # a later day in the newer file: that day and its spend, not the older file's day
    assert _spend_periods(flash_run, flash, [(D + DAY + H6, D + DAY)]) == ["True"]
    _copy(flash, "old.json", "ledger.json")
    code = SETUP + (f"print(L.latest_day, L.remaining('mot', {D + DAY + H6 + 9}), "
                    f"L.spend('mot', 500, {D + DAY + H6 + 9}, {D + DAY}, {D + DAY + H6}))\n")
    assert flash_run(code, flash).stdout.split() == [str(D // DAY + 1), "1500", "False"]


def test_a_high_water_file_of_older_firmware_ahead_of_the_ledger_fails_closed(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """A high-water file without a spend (older firmware) ahead of the ledger: its day's spend is
    unknown, so the day counts as spent; one level with the ledger changes nothing."""
    flash = tmp_path / "flash"
    assert _spend_periods(flash_run, flash, [(D + H6, D)]) == ["True"]
    (flash / "ledger.json.hw").unlink()
    code = SETUP + (
        "from civic.store import atomic\nimport json\n"
        f"atomic.write('/flash/ledger.json.hw', json.dumps({{'day': {D // DAY}, 'last': {{'mot': {D + H6}}}}}).encode())\n"
        f"print(Ledger('/flash/ledger.json', {{'mot': 2000}}).remaining('mot', {D + H6 + 5}))\n"
        f"atomic.write('/flash/ledger.json.hw', json.dumps({{'day': {D // DAY}, 'last': {{'mot': {D + 2 * H6}}}}}).encode())\n"
        f"print(Ledger('/flash/ledger.json', {{'mot': 2000}}).remaining('mot', {D + H6 + 5}))\n"
    )
    assert flash_run(code, flash).stdout.split() == ["1500", "0"]
