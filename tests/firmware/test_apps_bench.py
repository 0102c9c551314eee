"""The memory/wire benchmark (bench/firmware_memory.py) still runs a full cycle of each app."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.resources import firmware_dir, policy_path
from hil.field.firmware_copy import stage_firmware

BENCH = Path(__file__).resolve().parents[2] / "bench" / "firmware_memory.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firmware_memory", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("board", "types"), [
    ("streetlight-esp32", {"win", "hour"}),
    ("bin-esp32c3", {"win", "day"}),
])
def test_cycle_produces_reports_smaller_than_json(board: str, types: set[str]) -> None:
    r = load_bench().run_cycle(board, firmware_dir() / "lib")
    assert types <= set(r["types"])
    assert len(r["frames"]) == len(r["types"]) == len(r["wire"]) == len(r["json"])
    assert all(w < j for w, j in zip(r["wire"], r["json"]))          # msgpack frame beats JSON
    assert all(25 <= f <= 1024 for f in r["frames"])                 # protocol frame bounds
    assert 0 < r["per_report"] < 16 * 1024 and r["floor"] > 0 and r["code"] > 0
    assert 0 < r["code"] < r["resident"] <= r["live_max"] < r["high_water"]


def test_the_streetlight_does_not_grow_its_live_heap_tick_after_tick() -> None:
    # 190 ticks of 5 s: once the first reports have set up their state, the live heap (measured
    # on a collected heap at the start of each step) must stay flat; a leak of one small object
    # per tick would show as >= 16 bytes per tick here.
    r = load_bench().run_cycle("streetlight-esp32", firmware_dir() / "lib")
    ticks = [live for name, live, _ in r["trace"] if name == "tick"]
    assert len(ticks) > 150
    settled = ticks[len(ticks) // 3:]
    assert max(settled) - min(settled) < 256, "live heap grew from %d to %d over %d ticks" % (
        settled[0], settled[-1], len(settled))


def test_the_bench_board_holds_the_policy_civicedge_flash_writes(tmp_path: Path) -> None:
    # The bench measures what a board really loads: the device copy flash stages, not the full file
    # (which an older flash wrote, and which the firmware still loads: --full-policy).
    bench = load_bench()
    staged = {b.device_path: b.local_path.read_bytes() for b in stage_firmware(tmp_path, compile_mpy=False)}
    assert bench.policy_text().encode() == staged["/policy.json"]
    assert bench.policy_text(full=True).encode() == policy_path().read_bytes()
    assert repr(bench.policy_text()) in bench._script("streetlight-esp32", [])


def test_the_device_copy_lowers_the_boot_high_water() -> None:
    bench = load_bench()
    lib = firmware_dir() / "lib"
    copy = bench.run_cycle("streetlight-esp32", lib)
    full = bench.run_cycle("streetlight-esp32", lib, copy["modules"], full_policy=True)
    assert copy["types"] == full["types"]          # the same reports from either file
    # building the device parses the policy: the copy leaves out ~half of the text and its keys. The
    # boot's high-water (imports and build, before the report cycle): the cycle's own peak (a
    # release's padded noise draws, civic.privacy.dlaplace.PAD_DRAWS) is the same with either file
    full_boot, copy_boot = _boot_high_water(full), _boot_high_water(copy)
    assert full_boot - copy_boot > 2048, (full_boot, copy_boot)


def _boot_high_water(run: dict[str, Any]) -> int:
    steps = run["trace"]
    names = [n for n, _, _ in steps]
    return max(end for _, _, end in steps[:names.index("cycle start") + 1])
